//! Summary statistics of measured values: nearest-rank percentiles, mean and standard deviation.
//! Pure.

use serde::Serialize;

/// The nearest-rank percentile of sorted values: the smallest value such that at least `p`
/// percent of the values are at or below it, so it is always an observed value ("95% of requests
/// took at most this long"). `None` for no values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Distribution of a set of measurements (latencies in ms, rates in tokens/s).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// `None` for no values; non-finite values are ignored.
    pub fn of(values: &[f64]) -> Option<Percentiles> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        Some(Percentiles {
            count: sorted.len(),
            min: *sorted.first()?,
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
            p50: percentile(&sorted, 50.0)?,
            p95: percentile(&sorted, 95.0)?,
            p99: percentile(&sorted, 99.0)?,
            max: *sorted.last()?,
        })
    }
}

/// Mean and sample standard deviation, as llama-bench reports its rates (`650.1 ± 3.2`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MeanStd {
    pub mean: f64,
    pub stddev: f64,
    pub count: usize,
}

impl MeanStd {
    pub fn of(values: &[f64]) -> Option<MeanStd> {
        if values.is_empty() {
            return None;
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let stddev = if values.len() < 2 {
            0.0
        } else {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        };
        Some(MeanStd {
            mean,
            stddev,
            count: values.len(),
        })
    }
}

/// The median (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_on_known_samples() {
        let one_to_hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        let cases: &[(&[f64], f64, Option<f64>)] = &[
            (&[], 50.0, None),
            (&[7.0], 50.0, Some(7.0)),
            (&[7.0], 99.0, Some(7.0)),
            (&one_to_hundred, 50.0, Some(50.0)),
            (&one_to_hundred, 95.0, Some(95.0)),
            (&one_to_hundred, 99.0, Some(99.0)),
            (&one_to_hundred, 100.0, Some(100.0)),
            (&one_to_hundred, 0.0, Some(1.0)),
            (&ten, 50.0, Some(5.0)),
            (&ten, 95.0, Some(10.0)),
            (&ten, 99.0, Some(10.0)),
            (&[1.0, 2.0, 3.0, 4.0], 75.0, Some(3.0)),
            (&[1.0, 2.0, 3.0, 4.0], 76.0, Some(4.0)),
        ];
        for (sorted, p, expected) in cases {
            assert_eq!(percentile(sorted, *p), *expected, "p{p} of {sorted:?}");
        }
    }

    #[test]
    fn percentiles_sort_and_skip_non_finite_values() {
        let values = [30.0, 10.0, f64::NAN, 20.0, 40.0, f64::INFINITY];
        let p = Percentiles::of(&values).unwrap();
        assert_eq!(
            p,
            Percentiles {
                count: 4,
                min: 10.0,
                mean: 25.0,
                p50: 20.0,
                p95: 40.0,
                p99: 40.0,
                max: 40.0
            }
        );
        assert_eq!(Percentiles::of(&[]), None);
        assert_eq!(Percentiles::of(&[f64::NAN]), None);
    }

    #[test]
    fn mean_std_and_median() {
        let m = MeanStd::of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_eq!(m.mean, 5.0);
        assert!((m.stddev - 2.138).abs() < 1e-3, "{}", m.stddev);
        assert_eq!(MeanStd::of(&[3.0]).unwrap().stddev, 0.0);
        assert_eq!(MeanStd::of(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(mean(&[1.0, 2.0]), Some(1.5));
    }
}
