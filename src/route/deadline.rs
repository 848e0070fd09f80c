//! The deadline check while the local tier generates: no first token in time, or a decode rate
//! that cannot finish `max_tokens` within the total deadline. Decided as soon as it is known.

use std::time::Duration;

use super::Triggers;

/// Tokens needed before the decode rate is trusted.
pub const MIN_TOKENS_FOR_RATE: usize = 4;

/// Where a local generation stands, measured from the request's start.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub elapsed: Duration,
    pub first_token_at: Option<Duration>,
    pub tokens: usize,
    pub max_tokens: u32,
}

/// Whether the deadline is already missed, or certain to be missed at the measured rate
/// (assuming the answer may use all of `max_tokens`).
pub fn missed(triggers: &Triggers, progress: &Progress) -> bool {
    if !triggers.deadline {
        return false;
    }
    if let Some(first) = triggers.first_token_deadline
        && progress.tokens == 0
        && progress.elapsed >= first
    {
        return true;
    }
    let Some(total) = triggers.total_deadline else {
        return false;
    };
    if progress.elapsed >= total {
        return true;
    }
    match progress.first_token_at {
        Some(first_at) if progress.tokens >= MIN_TOKENS_FOR_RATE => {
            let decoding = progress.elapsed.saturating_sub(first_at).as_secs_f64();
            if decoding <= 0.0 {
                return false;
            }
            let rate = (progress.tokens - 1) as f64 / decoding;
            let remaining = (progress.max_tokens as usize).saturating_sub(progress.tokens) as f64;
            progress.elapsed.as_secs_f64() + remaining / rate > total.as_secs_f64()
        }
        _ => false,
    }
}

/// How long after the start to wait for the next token before the deadline is missed anyway.
pub fn wake_at(triggers: &Triggers, progress: &Progress) -> Option<Duration> {
    if !triggers.deadline {
        return None;
    }
    let first = triggers
        .first_token_deadline
        .filter(|_| progress.tokens == 0);
    match (first, triggers.total_deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
