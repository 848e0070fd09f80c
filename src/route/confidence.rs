//! Confidence of a local answer from the log probabilities of its tokens: the signals
//! (docs/routing-quality.md), the optional logistic combiner over them, and whether an answer is
//! "low confidence" under the configured thresholds. Pure.
//!
//! Forced tokens (appended by a constraint without sampling) are left out by the caller: they
//! were certain under the constraint and say nothing of the model.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Triggers;
use crate::engine::Spread;

/// Every signal of one answer. Log probabilities are natural logs (≤ 0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Signals {
    /// Mean token log probability (length-normalised).
    pub mean: f32,
    /// The lowest mean over any window of `confidence_window` tokens.
    pub window_min: f32,
    /// The lowest token log probability.
    pub min: f32,
    /// The 10th and 25th percentiles of the token log probabilities (linear interpolation
    /// between order statistics, NumPy's default).
    pub q10: f32,
    pub q25: f32,
    /// Summed log probability: the whole answer's probability (length-biased; for short
    /// answers, such as a choice between options, the natural signal).
    pub sum: f32,
    /// The first token's log probability (the choice the rest of the answer follows).
    #[serde(default)]
    pub first: f32,
    pub tokens: usize,
    /// The first token's log probability minus the runner-up's (≥ 0 under greedy decoding);
    /// `None` when the engine returned no alternatives.
    pub first_margin: Option<f32>,
    /// Mean over the tokens of the entropy (nats) of the top-N alternatives plus one bucket for
    /// the rest of the vocabulary; `None` without alternatives.
    pub mean_entropy: Option<f32>,
}

/// One signal, by the name the config, the metrics and `edgellm calibrate` use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    Mean,
    WindowMin,
    Min,
    Q10,
    Q25,
    Sum,
    First,
    FirstMargin,
    MeanEntropy,
    /// The answer's length in tokens: no confidence on its own, a correction for the combiner.
    Tokens,
}

impl Feature {
    pub const ALL: [Feature; 10] = [
        Feature::Mean,
        Feature::WindowMin,
        Feature::Min,
        Feature::Q10,
        Feature::Q25,
        Feature::Sum,
        Feature::First,
        Feature::FirstMargin,
        Feature::MeanEntropy,
        Feature::Tokens,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Feature::Mean => "mean",
            Feature::WindowMin => "window_min",
            Feature::Min => "min",
            Feature::Q10 => "q10",
            Feature::Q25 => "q25",
            Feature::Sum => "sum",
            Feature::First => "first",
            Feature::Tokens => "tokens",
            Feature::FirstMargin => "first_margin",
            Feature::MeanEntropy => "mean_entropy",
        }
    }

    /// The signal's value, in its own units.
    pub fn value(self, s: &Signals) -> Option<f32> {
        match self {
            Feature::Mean => Some(s.mean),
            Feature::WindowMin => Some(s.window_min),
            Feature::Min => Some(s.min),
            Feature::Q10 => Some(s.q10),
            Feature::Q25 => Some(s.q25),
            Feature::Sum => Some(s.sum),
            Feature::First => Some(s.first),
            Feature::Tokens => Some(s.tokens as f32),
            Feature::FirstMargin => s.first_margin,
            Feature::MeanEntropy => s.mean_entropy,
        }
    }

    /// Higher means more confident for every signal but entropy and length.
    pub fn higher_is_confident(self) -> bool {
        !matches!(self, Feature::MeanEntropy | Feature::Tokens)
    }

    /// The value oriented so that higher is always more confident (entropy negated).
    pub fn confidence(self, s: &Signals) -> Option<f32> {
        let v = self.value(s)?;
        Some(if self.higher_is_confident() { v } else { -v })
    }

    /// Whether computing it needs the engine's top-N alternatives.
    pub fn needs_spread(self) -> bool {
        matches!(self, Feature::FirstMargin | Feature::MeanEntropy)
    }
}

/// Logistic regression over signals: `P(correct) = 1 / (1 + exp(-(bias + Σ weight·value)))`,
/// weights on the signals' own units (what `edgellm calibrate` writes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Combiner {
    pub bias: f32,
    pub weights: BTreeMap<Feature, f32>,
    /// Below this probability the answer is "low confidence".
    pub min_probability: f32,
}

impl Combiner {
    /// `None` when a weighted signal is missing (no alternatives were computed).
    pub fn probability(&self, s: &Signals) -> Option<f32> {
        let mut z = self.bias;
        for (feature, weight) in &self.weights {
            z += weight * feature.value(s)?;
        }
        Some(1.0 / (1.0 + (-z).exp()))
    }
}

/// The signals of an answer's token log probabilities and, where the engine computed them, the
/// tokens' alternatives. `None` for no tokens. A window longer than the answer is the whole
/// answer.
pub fn signals(logprobs: &[f32], spreads: &[Spread], window: usize) -> Option<Signals> {
    if logprobs.is_empty() {
        return None;
    }
    let n = logprobs.len();
    let sum: f32 = logprobs.iter().sum();
    let window = window.clamp(1, n);
    let mut running: f32 = logprobs[..window].iter().sum();
    let mut lowest = running;
    for i in window..n {
        running += logprobs[i] - logprobs[i - window];
        lowest = lowest.min(running);
    }
    let mut sorted = logprobs.to_vec();
    sorted.sort_by(f32::total_cmp);
    let (first_margin, mean_entropy) = match spreads.first() {
        Some(first) => (
            Some(first.margin),
            Some(spreads.iter().map(|s| s.entropy).sum::<f32>() / spreads.len() as f32),
        ),
        None => (None, None),
    };
    Some(Signals {
        mean: sum / n as f32,
        window_min: lowest / window as f32,
        min: sorted[0],
        q10: quantile(&sorted, 0.10),
        q25: quantile(&sorted, 0.25),
        sum,
        first: logprobs[0],
        tokens: n,
        first_margin,
        mean_entropy,
    })
}

/// The `p` quantile of sorted values, interpolating linearly between order statistics.
pub fn quantile(sorted: &[f32], p: f32) -> f32 {
    let h = (sorted.len() - 1) as f32 * p;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f32) * (sorted[hi] - sorted[lo])
}

/// Which configured threshold an answer is below, if any (the first, in a fixed order).
pub fn low_because(triggers: &Triggers, s: &Signals) -> Option<String> {
    let below = |threshold: Option<f32>, value: Option<f32>| match (threshold, value) {
        (Some(t), Some(v)) => v < t,
        _ => false,
    };
    let checks = [
        (Feature::Mean, triggers.min_mean_logprob),
        (Feature::WindowMin, triggers.min_window_logprob),
        (Feature::Q10, triggers.min_q10_logprob),
        (Feature::Q25, triggers.min_q25_logprob),
        (Feature::Sum, triggers.min_sum_logprob),
        (Feature::First, triggers.min_first_logprob),
        (Feature::FirstMargin, triggers.min_first_margin),
    ];
    for (feature, threshold) in checks {
        if below(threshold, feature.value(s)) {
            return Some(format!(
                "{} {:.2} < {}",
                feature.as_str(),
                feature.value(s).unwrap_or_default(),
                threshold.unwrap_or_default()
            ));
        }
    }
    if let (Some(max), Some(entropy)) = (triggers.max_mean_entropy, s.mean_entropy)
        && entropy > max
    {
        return Some(format!("mean_entropy {entropy:.2} > {max}"));
    }
    if let Some(combiner) = &triggers.combiner
        && let Some(p) = combiner.probability(s)
        && p < combiner.min_probability
    {
        return Some(format!(
            "combined P(correct) {p:.2} < {}",
            combiner.min_probability
        ));
    }
    None
}

/// Whether a score is below the configured thresholds.
pub fn is_low(triggers: &Triggers, s: &Signals) -> bool {
    low_because(triggers, s).is_some()
}
