//! Confidence of a local answer from the log probabilities of its tokens.

use super::Triggers;

/// The mean log probability over the tokens, and the lowest mean over any window of them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Confidence {
    pub mean: f32,
    pub window_min: f32,
    pub tokens: usize,
}

/// `None` for no tokens. A window longer than the answer is the whole answer.
pub fn score(logprobs: &[f32], window: usize) -> Option<Confidence> {
    if logprobs.is_empty() {
        return None;
    }
    let n = logprobs.len();
    let mean = logprobs.iter().sum::<f32>() / n as f32;
    let window = window.clamp(1, n);
    let mut sum: f32 = logprobs[..window].iter().sum();
    let mut lowest = sum;
    for i in window..n {
        sum += logprobs[i] - logprobs[i - window];
        lowest = lowest.min(sum);
    }
    Some(Confidence {
        mean,
        window_min: lowest / window as f32,
        tokens: n,
    })
}

/// Whether a score is below the configured thresholds.
pub fn is_low(triggers: &Triggers, confidence: &Confidence) -> bool {
    triggers
        .min_mean_logprob
        .is_some_and(|m| confidence.mean < m)
        || triggers
            .min_window_logprob
            .is_some_and(|m| confidence.window_min < m)
}
