//! Log probabilities from raw logits: the chosen token's, and the top-N alternatives.
//!
//! Computed on the model's own distribution (temperature 1, before any sampler), which is what
//! confidence scoring needs. Runs once per generated token over the whole vocabulary, so it is
//! written to vectorise: a max pass, then a sum of exponentials.

pub const MAX_TOP_LOGPROBS: usize = 20;

/// `log(sum(exp(logits)))`, computed stably.
pub fn log_sum_exp(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return max;
    }
    // Eight independent accumulators let the compiler keep the loop in SIMD registers.
    let mut lanes = [0f32; 8];
    let chunks = logits.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += (x - max).exp();
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    sum += rest.iter().map(|&x| (x - max).exp()).sum::<f32>();
    max + sum.ln()
}

/// Index of the largest logit (greedy choice); ties go to the lowest index, as llama.cpp's.
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    let mut best_value = f32::NEG_INFINITY;
    for (i, &x) in logits.iter().enumerate() {
        if x > best_value {
            best_value = x;
            best = i;
        }
    }
    best
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_sum_exp_matches_naive() {
        let logits: Vec<f32> = (0..1003)
            .map(|i| ((i * 37) % 101) as f32 * 0.1 - 3.0)
            .collect();
        let naive = logits.iter().map(|&x| (x as f64).exp()).sum::<f64>().ln();
        assert!((log_sum_exp(&logits) as f64 - naive).abs() < 1e-4);
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
