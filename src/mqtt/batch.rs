//! Batching of MQTT messages per concrete topic, and the bounded backlog of batches waiting for
//! the task worker. Pure: the caller passes the clock.
//!
//! A batch opens with the first message on a topic and closes when its window ends, when it
//! reaches `max_messages`, or when the next message would take it over `max_bytes` (the task's
//! `max_input_bytes`). Memory is bounded by `max_backlog`: at most that many open batches (a
//! new topic closes the oldest open one early) and that many closed ones waiting (a new one
//! drops the oldest waiting batch, whose messages are counted as dropped).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Batching limits of one subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub window: Duration,
    pub max_messages: usize,
    pub max_bytes: usize,
}

/// Messages of one concrete topic, ready for a task run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub topic: String,
    /// Index of the subscription in the config.
    pub subscription: usize,
    pub messages: Vec<String>,
}

impl Batch {
    /// The task input: messages joined by newlines.
    pub fn input(&self) -> String {
        self.messages.join("\n")
    }
}

#[derive(Debug)]
struct Open {
    batch: Batch,
    bytes: usize,
    opened: Instant,
    deadline: Instant,
}

#[derive(Debug)]
pub struct Batcher {
    max_backlog: usize,
    open: HashMap<String, Open>,
    ready: VecDeque<Batch>,
}

impl Batcher {
    pub fn new(max_backlog: usize) -> Batcher {
        Batcher {
            max_backlog: max_backlog.max(1),
            open: HashMap::new(),
            ready: VecDeque::new(),
        }
    }

    /// Adds one message; returns how many messages were dropped to make room.
    pub fn push(
        &mut self,
        topic: &str,
        subscription: usize,
        payload: String,
        limits: BatchLimits,
        now: Instant,
    ) -> u64 {
        let mut dropped = 0;
        let full = self.open.get(topic).is_some_and(|open| {
            open.batch.messages.len() >= limits.max_messages
                || open.bytes + 1 + payload.len() > limits.max_bytes
        });
        if full {
            dropped += self.close(topic);
        }
        if !self.open.contains_key(topic) && self.open.len() >= self.max_backlog {
            let oldest = self
                .open
                .iter()
                .min_by_key(|(_, open)| open.opened)
                .map(|(t, _)| t.clone());
            if let Some(oldest) = oldest {
                dropped += self.close(&oldest);
            }
        }
        let open = self.open.entry(topic.to_string()).or_insert_with(|| Open {
            batch: Batch {
                topic: topic.to_string(),
                subscription,
                messages: Vec::new(),
            },
            bytes: 0,
            opened: now,
            deadline: now + limits.window,
        });
        open.bytes += payload.len() + usize::from(!open.batch.messages.is_empty());
        open.batch.messages.push(payload);
        if open.batch.messages.len() >= limits.max_messages {
            dropped += self.close(topic);
        }
        dropped
    }

    /// Closes every batch whose window has ended; returns messages dropped to make room.
    pub fn flush_due(&mut self, now: Instant) -> u64 {
        let mut due: Vec<(Instant, String)> = self
            .open
            .iter()
            .filter(|(_, open)| open.deadline <= now)
            .map(|(topic, open)| (open.opened, topic.clone()))
            .collect();
        due.sort();
        due.into_iter().map(|(_, topic)| self.close(&topic)).sum()
    }

    /// When the next open batch's window ends.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.open.values().map(|open| open.deadline).min()
    }

    /// The oldest closed batch.
    pub fn pop_ready(&mut self) -> Option<Batch> {
        self.ready.pop_front()
    }

    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }

    fn close(&mut self, topic: &str) -> u64 {
        let Some(open) = self.open.remove(topic) else {
            return 0;
        };
        let mut dropped = 0;
        while self.ready.len() >= self.max_backlog {
            if let Some(old) = self.ready.pop_front() {
                dropped += old.messages.len() as u64;
            }
        }
        self.ready.push_back(open.batch);
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: BatchLimits = BatchLimits {
        window: Duration::from_millis(100),
        max_messages: 3,
        max_bytes: 20,
    };

    fn topics(batcher: &mut Batcher) -> Vec<(String, Vec<String>)> {
        std::iter::from_fn(|| batcher.pop_ready())
            .map(|b| (b.topic, b.messages))
            .collect()
    }

    fn s(items: &[&str]) -> Vec<String> {
        items.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn batches_per_topic_over_the_window() {
        let t0 = Instant::now();
        let mut b = Batcher::new(8);
        b.push("a", 0, "1".into(), LIMITS, t0);
        b.push("b", 0, "x".into(), LIMITS, t0 + Duration::from_millis(10));
        b.push("a", 0, "2".into(), LIMITS, t0 + Duration::from_millis(50));
        assert_eq!(b.flush_due(t0 + Duration::from_millis(99)), 0);
        assert_eq!(b.ready_len(), 0);
        assert_eq!(b.next_deadline(), Some(t0 + Duration::from_millis(100)));
        b.flush_due(t0 + Duration::from_millis(100));
        assert_eq!(topics(&mut b), [("a".into(), s(&["1", "2"]))]);
        b.flush_due(t0 + Duration::from_millis(200));
        assert_eq!(topics(&mut b), [("b".into(), s(&["x"]))]);
    }

    #[test]
    fn a_batch_closes_at_max_messages_and_before_max_bytes() {
        let t0 = Instant::now();
        let mut b = Batcher::new(8);
        for m in ["1", "2", "3", "4"] {
            b.push("a", 0, m.into(), LIMITS, t0);
        }
        assert_eq!(topics(&mut b), [("a".into(), s(&["1", "2", "3"]))]);
        b.flush_due(t0 + LIMITS.window);
        assert_eq!(topics(&mut b), [("a".into(), s(&["4"]))]);
        // 9 + 1 + 9 = 19 fits in 20 bytes; a third would not.
        b.push("a", 0, "123456789".into(), LIMITS, t0);
        b.push("a", 0, "123456789".into(), LIMITS, t0);
        b.push("a", 0, "x".into(), LIMITS, t0);
        assert_eq!(
            topics(&mut b),
            [("a".into(), s(&["123456789", "123456789"]))]
        );
        assert_eq!(b.pop_ready(), None);
        b.flush_due(t0 + LIMITS.window);
        assert_eq!(b.pop_ready().unwrap().input(), "x");
    }

    #[test]
    fn backlog_overflow_drops_the_oldest_batches_and_counts_their_messages() {
        let t0 = Instant::now();
        let one = BatchLimits {
            max_messages: 1,
            ..LIMITS
        };
        let mut b = Batcher::new(2);
        let mut dropped = 0;
        for (i, topic) in ["t1", "t2", "t3", "t4", "t5"].iter().enumerate() {
            dropped += b.push(topic, 0, format!("m{i}"), one, t0);
        }
        assert_eq!(dropped, 3);
        assert_eq!(
            topics(&mut b),
            [("t4".into(), s(&["m3"])), ("t5".into(), s(&["m4"]))]
        );
    }

    #[test]
    fn too_many_open_topics_close_the_oldest_early() {
        let t0 = Instant::now();
        let mut b = Batcher::new(2);
        b.push("a", 0, "1".into(), LIMITS, t0);
        b.push("b", 0, "2".into(), LIMITS, t0 + Duration::from_millis(1));
        b.push("c", 0, "3".into(), LIMITS, t0 + Duration::from_millis(2));
        assert_eq!(topics(&mut b), [("a".into(), s(&["1"]))]);
    }
}
