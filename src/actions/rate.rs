//! Per-action rate limits: `"<count>/<unit>"` parsed once, enforced as a sliding window over
//! the start times of executed calls. Pure logic; the caller passes the clock.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// At most `count` executions per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub count: u32,
    pub per: Duration,
}

impl RateLimit {
    /// `"10/min"`, `"1/s"`, `"100/hour"`.
    pub fn parse(text: &str) -> Result<RateLimit, String> {
        let bad = || format!("rate_limit {text:?} must look like \"10/min\" (units: s, min, hour)");
        let (count, unit) = text.split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        if count == 0 {
            return Err(format!("rate_limit {text:?}: count must be at least 1"));
        }
        Ok(RateLimit { count, per })
    }
}

/// The sliding window of one action.
#[derive(Debug)]
pub struct RateWindow {
    limit: RateLimit,
    starts: VecDeque<Instant>,
}

impl RateWindow {
    pub fn new(limit: RateLimit) -> RateWindow {
        RateWindow {
            limit,
            starts: VecDeque::new(),
        }
    }

    /// Whether a call may start at `now`; when `take` is set and it may, the call is counted.
    pub fn admit(&mut self, now: Instant, take: bool) -> bool {
        while let Some(first) = self.starts.front() {
            if now.saturating_duration_since(*first) >= self.limit.per {
                self.starts.pop_front();
            } else {
                break;
            }
        }
        let free = self.starts.len() < self.limit.count as usize;
        if free && take {
            self.starts.push_back(now);
        }
        free
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms_and_refuses_others() {
        let cases = [
            ("10/min", Some((10, 60))),
            ("1/s", Some((1, 1))),
            ("5 / hour", Some((5, 3600))),
            ("0/s", None),
            ("10", None),
            ("x/min", None),
            ("3/day", None),
        ];
        for (text, expected) in cases {
            let got = RateLimit::parse(text)
                .ok()
                .map(|l| (l.count, l.per.as_secs()));
            assert_eq!(got, expected, "{text}");
        }
    }

    #[test]
    fn window_admits_count_then_refuses_until_the_oldest_expires() {
        let mut window = RateWindow::new(RateLimit {
            count: 2,
            per: Duration::from_secs(60),
        });
        let t0 = Instant::now();
        assert!(window.admit(t0, true));
        assert!(window.admit(t0 + Duration::from_secs(1), true));
        assert!(!window.admit(t0 + Duration::from_secs(2), true));
        // A peek does not take a slot.
        assert!(!window.admit(t0 + Duration::from_secs(59), false));
        assert!(window.admit(t0 + Duration::from_secs(60), false));
        assert!(window.admit(t0 + Duration::from_secs(60), true));
        assert!(!window.admit(t0 + Duration::from_secs(60), true));
    }
}
