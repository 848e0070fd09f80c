//! Budgets for remote calls, decided without IO: the `[budget]` configuration, the calendar day
//! a moment belongs to, the cost estimate made before a request leaves the device, the actual
//! cost once the upstream reported usage, and the cap check itself. The ledger (`crate::ledger`)
//! stores the amounts and runs [`check_caps`] inside its transaction; nothing here touches a file.
//!
//! Money is integer micro-dollars (1 USD = 1,000,000 micros) everywhere past the configuration:
//! sums of `f64` drift, sums of integers do not. Prices are converted with `ceil`, so the ledger
//! never undercounts a request by a rounding error.

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::{Offset, TimeZone};
use serde::{Deserialize, Serialize};

/// Default retention of audit rows and settled reservations, in days.
pub const DEFAULT_RETENTION_DAYS: u32 = 30;

/// How many bytes of prompt text count as one input token in an estimate. Remote tokenizers are
/// unknown here; BPE tokenizers average about 4 bytes per token on English text and fewer on
/// code or other scripts, so `ceil(bytes / 4)` is an estimate, not a bound. A cap check made with
/// it is settled later with the upstream's real count.
pub const BYTES_PER_INPUT_TOKEN: u64 = 4;

/// The `[budget]` section as written in TOML. Every cap is optional; an absent cap is no limit.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// The zone whose calendar day budgets reset on: `"UTC"` (default), an IANA name such as
    /// `"Europe/Berlin"` (read from the system's zoneinfo), or a fixed offset such as `"+02:00"`.
    pub timezone: Option<String>,
    pub max_requests_per_day: Option<u64>,
    pub max_input_tokens_per_day: Option<u64>,
    pub max_output_tokens_per_day: Option<u64>,
    pub max_cost_usd_per_day: Option<f64>,
    /// The most output tokens one remote request may ask for; a request's `max_tokens` is
    /// lowered to it (see [`output_tokens_for`]).
    pub max_tokens_per_request: Option<u64>,
    /// Days audit rows and settled reservations are kept (default 30).
    pub retention_days: Option<u32>,
    /// Keep already-redacted prompts and answers in the local `prompt_log` table (default off).
    #[serde(default)]
    pub prompt_log: bool,
    /// Days prompt-log rows are kept (default: `retention_days`).
    pub prompt_log_retention_days: Option<u32>,
    /// `"normal"` (default): each commit is durable against a crash of the process (kill -9,
    /// OOM); `"full"`: also against a power cut, at one fsync per commit.
    pub ledger_sync: Option<String>,
}

/// The validated budget: what the ledger and the router use.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub caps: Caps,
    pub timezone: TimeZone,
    pub retention_days: u32,
    /// `Some(retention in days)` when prompt logging is on.
    pub prompt_log_retention_days: Option<u32>,
    /// Sync the ledger's WAL on every commit (`ledger_sync = "full"`).
    pub full_sync: bool,
}

/// Limits for one device and one calendar day, plus the per-request output cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Caps {
    pub max_requests: Option<u64>,
    pub max_input_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
    pub max_cost_micros: Option<u64>,
    pub max_tokens_per_request: Option<u64>,
}

/// Token and money amounts of one request: an estimate before sending, the actual usage after.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amount {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micros: u64,
}

/// Sums over many requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micros: u64,
}

/// Headroom per daily cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Remaining {
    pub requests: Option<u64>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cost_micros: Option<u64>,
}

/// A remote tier's prices in USD per million tokens, as configured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    #[serde(default)]
    pub input_usd_per_mtok: f64,
    #[serde(default)]
    pub output_usd_per_mtok: f64,
}

/// Which cap a request would break. `name()` is the configuration key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cap {
    RequestsPerDay,
    InputTokensPerDay,
    OutputTokensPerDay,
    CostPerDay,
    TokensPerRequest,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// `used` is what the day (or the request) already holds, `requested` what this request adds;
    /// money caps are in micro-dollars.
    #[error("budget cap {} exceeded: {used} used + {requested} requested > {limit}", cap.name())]
    Exceeded {
        cap: Cap,
        used: u64,
        requested: u64,
        limit: u64,
    },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BudgetConfigError {
    #[error(
        "budget.timezone {name:?}: not UTC, a fixed offset like \"+02:00\", or a zone in the system's zoneinfo ({detail})"
    )]
    TimeZone { name: String, detail: String },
    #[error("budget.{field} must be a finite number >= 0, not {value}")]
    NotANonNegativeNumber { field: &'static str, value: f64 },
    #[error("budget.{field} must be at least 1 day")]
    ZeroRetention { field: &'static str },
    #[error("budget.ledger_sync must be \"normal\" or \"full\", not {0:?}")]
    LedgerSync(String),
}

impl Cap {
    pub fn name(self) -> &'static str {
        match self {
            Cap::RequestsPerDay => "max_requests_per_day",
            Cap::InputTokensPerDay => "max_input_tokens_per_day",
            Cap::OutputTokensPerDay => "max_output_tokens_per_day",
            Cap::CostPerDay => "max_cost_usd_per_day",
            Cap::TokensPerRequest => "max_tokens_per_request",
        }
    }
}

impl BudgetConfig {
    pub fn validate(&self) -> Result<Budget, BudgetConfigError> {
        let timezone = match &self.timezone {
            None => TimeZone::UTC,
            Some(name) => parse_timezone(name)?,
        };
        let max_cost_micros = match self.max_cost_usd_per_day {
            None => None,
            Some(usd) if usd.is_finite() && usd >= 0.0 => Some(usd_to_micros_floor(usd)),
            Some(value) => {
                return Err(BudgetConfigError::NotANonNegativeNumber {
                    field: "max_cost_usd_per_day",
                    value,
                });
            }
        };
        let retention_days = self.retention_days.unwrap_or(DEFAULT_RETENTION_DAYS);
        if retention_days == 0 {
            return Err(BudgetConfigError::ZeroRetention {
                field: "retention_days",
            });
        }
        let prompt_log_days = self.prompt_log_retention_days.unwrap_or(retention_days);
        if prompt_log_days == 0 {
            return Err(BudgetConfigError::ZeroRetention {
                field: "prompt_log_retention_days",
            });
        }
        let full_sync = match self.ledger_sync.as_deref() {
            None | Some("normal") => false,
            Some("full") => true,
            Some(other) => return Err(BudgetConfigError::LedgerSync(other.to_string())),
        };
        Ok(Budget {
            full_sync,
            caps: Caps {
                max_requests: self.max_requests_per_day,
                max_input_tokens: self.max_input_tokens_per_day,
                max_output_tokens: self.max_output_tokens_per_day,
                max_cost_micros,
                max_tokens_per_request: self.max_tokens_per_request,
            },
            timezone,
            retention_days,
            prompt_log_retention_days: self.prompt_log.then_some(prompt_log_days),
        })
    }
}

impl Prices {
    pub fn validate(&self) -> Result<(), BudgetConfigError> {
        for (field, value) in [
            ("input_usd_per_mtok", self.input_usd_per_mtok),
            ("output_usd_per_mtok", self.output_usd_per_mtok),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(BudgetConfigError::NotANonNegativeNumber { field, value });
            }
        }
        Ok(())
    }
}

impl Totals {
    pub fn add(&mut self, amount: &Amount) {
        self.requests = self.requests.saturating_add(1);
        self.input_tokens = self.input_tokens.saturating_add(amount.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(amount.output_tokens);
        self.cost_micros = self.cost_micros.saturating_add(amount.cost_micros);
    }

    pub fn sum(&self, other: &Totals) -> Totals {
        Totals {
            requests: self.requests.saturating_add(other.requests),
            input_tokens: self.input_tokens.saturating_add(other.input_tokens),
            output_tokens: self.output_tokens.saturating_add(other.output_tokens),
            cost_micros: self.cost_micros.saturating_add(other.cost_micros),
        }
    }
}

/// `"UTC"`, `"Z"`, a fixed offset `"+HH:MM"` / `"-HH:MM"` / `"+HH"`, or an IANA zone name.
pub fn parse_timezone(name: &str) -> Result<TimeZone, BudgetConfigError> {
    let error = |detail: String| BudgetConfigError::TimeZone {
        name: name.to_string(),
        detail,
    };
    let trimmed = name.trim();
    if trimmed.eq_ignore_ascii_case("utc") || trimmed == "Z" {
        return Ok(TimeZone::UTC);
    }
    if let Some(sign) = trimmed.chars().next().filter(|c| *c == '+' || *c == '-') {
        let seconds = parse_offset_seconds(&trimmed[1..])
            .ok_or_else(|| error("a fixed offset is +HH:MM or -HH:MM".to_string()))?;
        let seconds = if sign == '-' { -seconds } else { seconds };
        let offset = Offset::from_seconds(seconds).map_err(|e| error(e.to_string()))?;
        return Ok(TimeZone::fixed(offset));
    }
    TimeZone::get(trimmed).map_err(|e| error(e.to_string()))
}

/// The calendar day `now` falls on in `tz`: the key budgets are summed under.
pub fn day_of(now: Timestamp, tz: &TimeZone) -> Date {
    tz.to_datetime(now).date()
}

/// Whole seconds from `now` to the start of the next calendar day in `tz`, at least 1.
pub fn seconds_to_next_day(now: Timestamp, tz: &TimeZone) -> u64 {
    let next = day_of(now, tz)
        .tomorrow()
        .and_then(|day| tz.to_timestamp(day.to_datetime(jiff::civil::Time::midnight())));
    match next {
        Ok(start) => {
            let secs = start.duration_since(now).as_secs();
            u64::try_from(secs).unwrap_or(0).max(1)
        }
        // Only at the end of jiff's calendar (year 9999): say a day.
        Err(_) => 86_400,
    }
}

/// Input tokens a prompt of `bytes` bytes is estimated at: `ceil(bytes / 4)`.
pub fn estimate_input_tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(BYTES_PER_INPUT_TOKEN)
}

/// The output tokens a remote request asks for: the request's `max_tokens` (or `default_max`
/// when it gave none), lowered to `max_tokens_per_request`. The router sends this value upstream
/// as the request's `max_tokens`, so the estimate is also a bound on what the upstream may bill.
pub fn output_tokens_for(requested: Option<u64>, default_max: u64, caps: &Caps) -> u64 {
    let wanted = requested.unwrap_or(default_max);
    caps.max_tokens_per_request
        .map_or(wanted, |cap| wanted.min(cap))
}

/// The estimate reserved before sending: input from the prompt's byte length, output from the
/// (capped) `max_tokens`, cost at the tier's prices.
pub fn estimate(prompt_bytes: usize, output_tokens: u64, prices: &Prices) -> Amount {
    let input_tokens = estimate_input_tokens(prompt_bytes);
    Amount {
        input_tokens,
        output_tokens,
        cost_micros: cost_micros(input_tokens, output_tokens, prices),
    }
}

/// The amount to settle once the upstream reported its usage.
pub fn actual_cost(input_tokens: u64, output_tokens: u64, prices: &Prices) -> Amount {
    Amount {
        input_tokens,
        output_tokens,
        cost_micros: cost_micros(input_tokens, output_tokens, prices),
    }
}

/// `tokens × USD per Mtok` is exactly micro-dollars; each side is rounded up on its own.
pub fn cost_micros(input_tokens: u64, output_tokens: u64, prices: &Prices) -> u64 {
    let side = |tokens: u64, usd_per_mtok: f64| -> u64 {
        // `as` saturates: a negative or NaN price (refused by `Prices::validate`) costs 0, an
        // absurd one u64::MAX, which any cost cap refuses.
        (tokens as f64 * usd_per_mtok).ceil() as u64
    };
    side(input_tokens, prices.input_usd_per_mtok)
        .saturating_add(side(output_tokens, prices.output_usd_per_mtok))
}

/// Whether a request of `estimate` fits beside what the day already holds (`used`: settled
/// actual amounts plus every open reservation at its reserved amount). Checks every cap; reports
/// the first one broken in the order requests, input, output, cost, per-request.
pub fn check_caps(used: &Totals, estimate: &Amount, caps: &Caps) -> Result<(), BudgetError> {
    if let Some(limit) = caps.max_tokens_per_request
        && estimate.output_tokens > limit
    {
        return Err(BudgetError::Exceeded {
            cap: Cap::TokensPerRequest,
            used: 0,
            requested: estimate.output_tokens,
            limit,
        });
    }
    let checks = [
        (Cap::RequestsPerDay, caps.max_requests, used.requests, 1),
        (
            Cap::InputTokensPerDay,
            caps.max_input_tokens,
            used.input_tokens,
            estimate.input_tokens,
        ),
        (
            Cap::OutputTokensPerDay,
            caps.max_output_tokens,
            used.output_tokens,
            estimate.output_tokens,
        ),
        (
            Cap::CostPerDay,
            caps.max_cost_micros,
            used.cost_micros,
            estimate.cost_micros,
        ),
    ];
    for (cap, limit, used, requested) in checks {
        if let Some(limit) = limit
            && used.saturating_add(requested) > limit
        {
            return Err(BudgetError::Exceeded {
                cap,
                used,
                requested,
                limit,
            });
        }
    }
    Ok(())
}

/// What is left under each cap after `used`; `None` where there is no cap.
pub fn remaining(used: &Totals, caps: &Caps) -> Remaining {
    let left = |limit: Option<u64>, used: u64| limit.map(|l| l.saturating_sub(used));
    Remaining {
        requests: left(caps.max_requests, used.requests),
        input_tokens: left(caps.max_input_tokens, used.input_tokens),
        output_tokens: left(caps.max_output_tokens, used.output_tokens),
        cost_micros: left(caps.max_cost_micros, used.cost_micros),
    }
}

/// A cap in USD becomes micros rounded down, so the cap is never loosened by rounding.
fn usd_to_micros_floor(usd: f64) -> u64 {
    (usd * 1_000_000.0).floor() as u64
}

/// `HH:MM`, `HHMM` or `HH` after the sign.
fn parse_offset_seconds(text: &str) -> Option<i32> {
    let (hours, minutes) = match text.split_once(':') {
        Some((h, m)) => (h, m),
        None if text.len() == 4 => text.split_at(2),
        None => (text, "0"),
    };
    let all_digits =
        |s: &str| !s.is_empty() && s.len() <= 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(hours) || !all_digits(minutes) {
        return None;
    }
    let hours: i32 = hours.parse().ok()?;
    let minutes: i32 = minutes.parse().ok()?;
    (hours <= 25 && minutes < 60).then_some(hours * 3600 + minutes * 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    #[test]
    fn config_defaults_and_validation() {
        let budget = BudgetConfig::default().validate().expect("valid");
        assert_eq!(budget.caps, Caps::default());
        assert_eq!(budget.timezone, TimeZone::UTC);
        assert_eq!(budget.retention_days, 30);
        assert_eq!(budget.prompt_log_retention_days, None);

        let config = BudgetConfig {
            max_cost_usd_per_day: Some(1.5),
            prompt_log: true,
            retention_days: Some(7),
            ..BudgetConfig::default()
        };
        let budget = config.validate().expect("valid");
        assert_eq!(budget.caps.max_cost_micros, Some(1_500_000));
        assert_eq!(budget.prompt_log_retention_days, Some(7));

        for bad in [
            BudgetConfig {
                max_cost_usd_per_day: Some(-1.0),
                ..BudgetConfig::default()
            },
            BudgetConfig {
                max_cost_usd_per_day: Some(f64::NAN),
                ..BudgetConfig::default()
            },
            BudgetConfig {
                retention_days: Some(0),
                ..BudgetConfig::default()
            },
            BudgetConfig {
                timezone: Some("Mars/Olympus".into()),
                ..BudgetConfig::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn config_rejects_unknown_fields() {
        let parsed: Result<BudgetConfig, _> =
            serde_json::from_str(r#"{"max_requests_per_dya": 3}"#);
        assert!(parsed.is_err());
    }

    #[test]
    fn seconds_to_the_next_budget_day() {
        let utc = TimeZone::UTC;
        let plus2 = TimeZone::fixed(Offset::from_seconds(7200).unwrap());
        let cases = [
            ("2026-12-02T23:59:30Z", &utc, 30),
            ("2026-12-02T00:00:00Z", &utc, 86_400),
            ("2026-12-02T12:00:00Z", &utc, 43_200),
            // 12:00 UTC is 14:00 at +02:00: ten hours to its midnight.
            ("2026-12-02T12:00:00Z", &plus2, 36_000),
            // 22:30 UTC is already 00:30 the next day at +02:00.
            ("2026-12-02T22:30:00Z", &plus2, 84_600),
            // Sub-second remainders round down, never to 0.
            ("2026-12-02T23:59:59.5Z", &utc, 1),
        ];
        for (now, tz, want) in cases {
            let now: Timestamp = now.parse().unwrap();
            assert_eq!(seconds_to_next_day(now, tz), want, "{now}");
        }
    }

    #[test]
    fn timezones_parse() {
        let cases = [
            ("UTC", Some(0)),
            ("utc", Some(0)),
            ("+02:00", Some(7200)),
            ("-05:30", Some(-19800)),
            ("+0530", Some(19800)),
            ("+03", Some(10800)),
            ("+2:0x", None),
            ("+", None),
        ];
        let noon = ts("2026-01-15T12:00:00Z");
        for (text, seconds) in cases {
            let parsed = parse_timezone(text);
            match seconds {
                Some(s) => {
                    let tz = parsed.expect(text);
                    assert_eq!(tz.to_offset(noon).seconds(), s, "{text}");
                }
                None => assert!(parsed.is_err(), "{text}"),
            }
        }
        let berlin = parse_timezone("Europe/Berlin").expect("zoneinfo");
        assert_eq!(berlin.to_offset(noon).seconds(), 3600);
    }

    #[test]
    fn day_of_follows_the_zone() {
        let berlin = parse_timezone("Europe/Berlin").expect("zoneinfo");
        let cases = [
            ("2026-03-10T22:59:59Z", "2026-03-10", "2026-03-10"),
            ("2026-03-10T23:00:00Z", "2026-03-10", "2026-03-11"),
            // Summer time: midnight in Berlin is 22:00 UTC.
            ("2026-07-01T21:59:59Z", "2026-07-01", "2026-07-01"),
            ("2026-07-01T22:00:00Z", "2026-07-01", "2026-07-02"),
        ];
        for (now, utc_day, berlin_day) in cases {
            assert_eq!(
                day_of(ts(now), &TimeZone::UTC).to_string(),
                utc_day,
                "{now}"
            );
            assert_eq!(day_of(ts(now), &berlin).to_string(), berlin_day, "{now}");
        }
    }

    #[test]
    fn estimates_round_up() {
        let cases = [(0, 0), (1, 1), (4, 1), (5, 2), (4000, 1000)];
        for (bytes, tokens) in cases {
            assert_eq!(estimate_input_tokens(bytes), tokens, "{bytes}");
        }
        let prices = Prices {
            input_usd_per_mtok: 0.15,
            output_usd_per_mtok: 0.6,
        };
        // 1000 input tokens at $0.15/Mtok = 150 micros; 3 output at $0.60 = 1.8 -> 2 micros.
        assert_eq!(
            estimate(4000, 3, &prices),
            Amount {
                input_tokens: 1000,
                output_tokens: 3,
                cost_micros: 152
            }
        );
        assert_eq!(actual_cost(1, 1, &prices).cost_micros, 2);
        assert_eq!(actual_cost(0, 0, &prices).cost_micros, 0);
        assert!(
            Prices {
                input_usd_per_mtok: -1.0,
                output_usd_per_mtok: 0.0
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn output_tokens_are_capped_per_request() {
        let caps = Caps {
            max_tokens_per_request: Some(512),
            ..Caps::default()
        };
        assert_eq!(output_tokens_for(Some(100), 1024, &caps), 100);
        assert_eq!(output_tokens_for(Some(4096), 1024, &caps), 512);
        assert_eq!(output_tokens_for(None, 1024, &caps), 512);
        assert_eq!(output_tokens_for(None, 1024, &Caps::default()), 1024);
    }

    #[test]
    fn check_caps_table() {
        let caps = Caps {
            max_requests: Some(3),
            max_input_tokens: Some(1000),
            max_output_tokens: Some(500),
            max_cost_micros: Some(10_000),
            max_tokens_per_request: Some(200),
        };
        let used = Totals {
            requests: 2,
            input_tokens: 900,
            output_tokens: 300,
            cost_micros: 9_000,
        };
        let amount = |i, o, c| Amount {
            input_tokens: i,
            output_tokens: o,
            cost_micros: c,
        };
        let cases = [
            (used, amount(100, 200, 1000), None),
            (used, amount(101, 0, 0), Some(Cap::InputTokensPerDay)),
            (used, amount(0, 201, 0), Some(Cap::TokensPerRequest)),
            (
                Totals {
                    output_tokens: 301,
                    ..used
                },
                amount(0, 200, 0),
                Some(Cap::OutputTokensPerDay),
            ),
            (used, amount(0, 0, 1001), Some(Cap::CostPerDay)),
            (
                Totals {
                    requests: 3,
                    ..used
                },
                amount(0, 0, 0),
                Some(Cap::RequestsPerDay),
            ),
        ];
        for (used, estimate, expected) in cases {
            let got = check_caps(&used, &estimate, &caps).err().map(|e| match e {
                BudgetError::Exceeded { cap, .. } => cap,
            });
            assert_eq!(got, expected, "{used:?} {estimate:?}");
        }
        assert_eq!(
            check_caps(&used, &amount(u64::MAX, 0, 0), &Caps::default()),
            Ok(())
        );
    }

    #[test]
    fn exceeded_names_the_config_key() {
        let error = BudgetError::Exceeded {
            cap: Cap::CostPerDay,
            used: 5,
            requested: 6,
            limit: 10,
        };
        assert_eq!(
            error.to_string(),
            "budget cap max_cost_usd_per_day exceeded: 5 used + 6 requested > 10"
        );
    }

    #[test]
    fn remaining_saturates() {
        let caps = Caps {
            max_requests: Some(2),
            ..Caps::default()
        };
        let used = Totals {
            requests: 5,
            ..Totals::default()
        };
        assert_eq!(
            remaining(&used, &caps),
            Remaining {
                requests: Some(0),
                ..Remaining::default()
            }
        );
    }
}
