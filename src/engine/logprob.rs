//! Log probabilities from raw logits: the chosen token's, and the top-N alternatives.
//!
//! Computed on the model's own distribution (temperature 1, before any sampler), which is what
//! confidence scoring needs. Runs once per generated token over the whole vocabulary, so it is
//! written to vectorise: a max pass, then a sum of exponentials.

pub const MAX_TOP_LOGPROBS: usize = 20;

/// How sure the model was of one token, from its top-N alternatives (what confidence routing
/// reads beside the chosen token's log probability).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// The most likely token's log probability minus the runner-up's.
    pub margin: f32,
    /// Entropy (nats) of the top N plus one outcome for the rest of the vocabulary.
    pub entropy: f32,
}

impl Spread {
    /// From the top-N log probabilities, most likely first.
    pub fn from_top(top: &[f32]) -> Spread {
        let margin = match top {
            [a, b, ..] => a - b,
            // One alternative: the runner-up has at most what it leaves.
            [a] => a - (1.0 - a.exp()).max(f32::MIN_POSITIVE).ln(),
            [] => 0.0,
        };
        let mut entropy = 0.0;
        let mut mass = 0.0;
        for &lp in top {
            let p = lp.exp();
            mass += p;
            entropy -= p * lp;
        }
        let rest = 1.0 - mass;
        if rest > 1e-7 {
            entropy -= rest * rest.ln();
        }
        Spread { margin, entropy }
    }
}

/// `log(sum(exp(logits)))`, computed stably.
pub fn log_sum_exp(logits: &[f32]) -> f32 {
    let max = max_logit(logits);
    if !max.is_finite() {
        return max;
    }
    // Sixteen independent accumulators and a branch-free exp keep this loop in SIMD registers:
    // it runs over the whole vocabulary (262k entries for Gemma 3) for every generated token.
    let mut lanes = [0f32; 16];
    let chunks = logits.chunks_exact(16);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += fast_exp(x - max);
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    sum += rest.iter().map(|&x| fast_exp(x - max)).sum::<f32>();
    max + sum.ln()
}

/// The largest logit (vectorised: per-lane maxima, then the maximum of the lanes).
pub fn max_logit(logits: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = logits.chunks_exact(16);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane = if x > *lane { x } else { *lane };
        }
    }
    lanes
        .iter()
        .chain(rest)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

/// Index of the largest logit (greedy choice); ties go to the lowest index, as llama.cpp's.
pub fn argmax(logits: &[f32]) -> usize {
    let max = max_logit(logits);
    logits.iter().position(|&x| x == max).unwrap_or(0)
}

/// `exp(x)` for `x <= 0`, branch-free so it vectorises; relative error below 4e-6.
///
/// `x = n ln2 + f ln2` with `n` the nearest integer to `x / ln2`; `2^f` for `|f| <= 1/2` from
/// its Taylor series, `2^n` written straight into the float's exponent bits.
#[inline(always)]
fn fast_exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let t = x.max(-87.0) * std::f32::consts::LOG2_E;
    let r = t + ROUND;
    let n = r - ROUND;
    let f = (t - n) * std::f32::consts::LN_2;
    let p = 1.0
        + f * (1.0
            + f * (0.5
                + f * (1.0 / 6.0 + f * (1.0 / 24.0 + f * (1.0 / 120.0 + f * (1.0 / 720.0))))));
    let exponent = (r.to_bits() as i32 - ROUND.to_bits() as i32 + 127) << 23;
    f32::from_bits(exponent as u32) * p
}

/// The `n` largest logits as `(index, logprob)`, most likely first.
pub fn top_n(logits: &[f32], n: usize, lse: f32) -> Vec<(usize, f32)> {
    if n == 0 {
        return Vec::new();
    }
    let mut best: Vec<(usize, f32)> = Vec::with_capacity(n + 1);
    for (i, &x) in logits.iter().enumerate() {
        if best.len() == n && x <= best[n - 1].1 {
            continue;
        }
        let at = best.partition_point(|&(_, v)| v >= x);
        best.insert(at, (i, x));
        best.truncate(n);
    }
    best.into_iter().map(|(i, x)| (i, x - lse)).collect()
}

/// Candidates kept when no top-k bounds the chain (the tail beyond them carries no mass a
/// top-p or min-p cut would keep).
const POST_SAMPLING_CANDIDATES: usize = 1024;

/// The distribution the sampler chain draws from, computed the way the chain computes it:
/// top-k, then top-p over the top-k renormalised, then min-p relative to the most likely, then
/// temperature. Returns the probability of `chosen` in it (0 when a constraint or bias chose a
/// token outside it) and its `n` most likely tokens with their probabilities. Greedy decoding
/// (temperature 0) is certainty on the chosen token. Penalties and biases are not in it.
pub fn post_sampling(
    logits: &[f32],
    top_k: i32,
    top_p: f32,
    min_p: f32,
    temperature: f32,
    chosen: usize,
    n: usize,
) -> (f32, Vec<(usize, f32)>) {
    if temperature <= 0.0 {
        return (1.0, vec![(chosen, 1.0)]);
    }
    let k = usize::try_from(top_k)
        .ok()
        .filter(|&k| k > 0)
        .unwrap_or(POST_SAMPLING_CANDIDATES)
        .min(logits.len());
    // Raw logits, most likely first.
    let mut kept = top_n(logits, k, 0.0);
    let Some(&(_, max)) = kept.first() else {
        return (0.0, Vec::new());
    };
    if top_p < 1.0 {
        let total: f32 = kept.iter().map(|&(_, l)| (l - max).exp()).sum();
        let mut mass = 0.0;
        let mut keep = kept.len();
        for (i, &(_, l)) in kept.iter().enumerate() {
            mass += (l - max).exp() / total;
            if mass >= top_p {
                keep = i + 1;
                break;
            }
        }
        kept.truncate(keep.max(1));
    }
    if min_p > 0.0 {
        let floor = max + min_p.ln();
        kept.retain(|&(_, l)| l >= floor);
    }
    let scaled_max = max / temperature;
    let total: f32 = kept
        .iter()
        .map(|&(_, l)| (l / temperature - scaled_max).exp())
        .sum();
    let probs: Vec<(usize, f32)> = kept
        .iter()
        .map(|&(id, l)| (id, (l / temperature - scaled_max).exp() / total))
        .collect();
    let prob = probs
        .iter()
        .find(|&&(id, _)| id == chosen)
        .map_or(0.0, |&(_, p)| p);
    (prob, probs.into_iter().take(n).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_sampling_follows_the_chain() {
        // Logits of probabilities 0.5, 0.25, 0.125, 0.0625, ... (log base e of each).
        let logits: Vec<f32> = (0..12).map(|i| -(i as f32 + 1.0) * 2f32.ln()).collect();
        // No cut, temperature 1: the distribution itself, renormalised over the vocabulary.
        let (prob, top) = post_sampling(&logits, 0, 1.0, 0.0, 1.0, 1, 3);
        let total: f32 = (1..=12).map(|i| 0.5f32.powi(i)).sum();
        assert!((prob - 0.25 / total).abs() < 1e-6);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), [0, 1, 2]);
        // top-k 2: two tokens, renormalised (2/3 and 1/3).
        let (prob, top) = post_sampling(&logits, 2, 1.0, 0.0, 1.0, 0, 10);
        assert_eq!(top.len(), 2);
        assert!((prob - 2.0 / 3.0).abs() < 1e-6);
        // top-p 0.7 over the top 3 (4/7, 2/7, 1/7): the first two reach it.
        let (_, top) = post_sampling(&logits, 3, 0.7, 0.0, 1.0, 0, 10);
        assert_eq!(top.len(), 2);
        // min-p 0.2: tokens at least a fifth as likely as the first (0.5, 0.25, 0.125).
        let (_, top) = post_sampling(&logits, 0, 1.0, 0.2, 1.0, 0, 10);
        assert_eq!(top.len(), 3);
        let sum: f32 = top.iter().map(|t| t.1).sum();
        assert!((sum - 1.0).abs() < 1e-6);
        // Temperature 0.5 sharpens: 0.5^2 : 0.25^2 = 4 : 1 over two tokens.
        let (prob, _) = post_sampling(&logits, 2, 1.0, 0.0, 0.5, 0, 10);
        assert!((prob - 0.8).abs() < 1e-6);
        // Greedy is certainty; a chosen token outside the kept set has probability 0.
        assert_eq!(post_sampling(&logits, 2, 1.0, 0.0, 0.0, 5, 10).0, 1.0);
        assert_eq!(post_sampling(&logits, 2, 1.0, 0.0, 1.0, 5, 10).0, 0.0);
    }

    #[test]
    fn log_sum_exp_matches_naive() {
        let logits: Vec<f32> = (0..1003)
            .map(|i| ((i * 37) % 101) as f32 * 0.1 - 3.0)
            .collect();
        let naive = logits.iter().map(|&x| (x as f64).exp()).sum::<f64>().ln();
        assert!((log_sum_exp(&logits) as f64 - naive).abs() < 1e-4);
    }

    #[test]
    fn fast_exp_is_accurate() {
        // Down to -80: below that exp(x) < 2e-35, far under f32's resolution of a sum near 1.
        for i in 0..=1600 {
            let x = -(i as f32) * 0.05;
            let want = x.exp();
            let got = fast_exp(x);
            assert!(
                (got - want).abs() <= want * 4e-6 + 1e-37,
                "exp({x}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn probabilities_sum_to_one() {
        let logits = [1.0f32, 2.0, 3.0, -1.0, 0.5];
        let lse = log_sum_exp(&logits);
        let total: f32 = logits.iter().map(|&x| (x - lse).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
    }

    #[test]
    fn top_n_and_argmax_table() {
        let cases: &[(&[f32], usize, &[usize], usize)] = &[
            (&[0.1, 0.9, 0.5], 2, &[1, 2], 1),
            (&[3.0, 3.0, 1.0], 1, &[0], 0),
            (&[-1.0, -2.0], 5, &[0, 1], 0),
            (&[5.0], 0, &[], 0),
        ];
        for (logits, n, want, want_max) in cases {
            let lse = log_sum_exp(logits);
            let got: Vec<usize> = top_n(logits, *n, lse).into_iter().map(|(i, _)| i).collect();
            assert_eq!(&got, want);
            assert_eq!(argmax(logits), *want_max);
        }
    }
}
