//! How well a confidence signal picks the requests to escalate, as the routing literature
//! measures it (docs/routing-quality.md). Pure: scored items in, figures out.
//!
//! An item has the local answer's correctness, the stronger tier's correctness (1 for an
//! always-correct reference) and a confidence (higher = more confident; `NEG_INFINITY` for an
//! answer with no tokens). Escalating a share `s` of the traffic sends the `s·n` least confident
//! items to the stronger tier. Ties in confidence are broken at random in expectation: the curve
//! is linear across a group of equal confidences.

/// One scored item.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub confidence: f32,
    pub local: f64,
    pub strong: f64,
}

/// The cost-quality (deferral) curve: points of (share escalated, quality), share from 0 to 1,
/// at each boundary between groups of equal confidence.
pub fn curve(items: &[Scored]) -> Vec<(f64, f64)> {
    let n = items.len();
    if n == 0 {
        return Vec::new();
    }
    let mut sorted = items.to_vec();
    sorted.sort_by(|a, b| a.confidence.total_cmp(&b.confidence));
    let mut quality: f64 = sorted.iter().map(|i| i.local).sum();
    let mut points = vec![(0.0, quality / n as f64)];
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j < n && sorted[j].confidence == sorted[i].confidence {
            quality += sorted[j].strong - sorted[j].local;
            j += 1;
        }
        points.push((j as f64 / n as f64, quality / n as f64));
        i = j;
    }
    points
}

/// Area under the ROC curve of confidence as a predictor of a correct local answer (the
/// Mann–Whitney statistic, ties counted half). `None` when every answer is right or every one is
/// wrong. Items count as correct when `local >= 0.5`.
pub fn auroc(items: &[Scored]) -> Option<f64> {
    let mut sorted: Vec<&Scored> = items.iter().collect();
    sorted.sort_by(|a, b| a.confidence.total_cmp(&b.confidence));
    let positives = sorted.iter().filter(|i| i.local >= 0.5).count();
    let negatives = sorted.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    // Sum of the positives' ranks, tied groups taking their mean rank.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j < sorted.len() && sorted[j].confidence == sorted[i].confidence {
            j += 1;
        }
        let mean_rank = (i + 1 + j) as f64 / 2.0;
        let group_positives = sorted[i..j].iter().filter(|x| x.local >= 0.5).count();
        rank_sum += mean_rank * group_positives as f64;
        i = j;
    }
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

/// The gap between the local and the strong tier's quality, recovered at each point of the
/// curve: `(quality - weak) / (strong - weak)`. `None` when the strong tier is no better.
pub fn pgr_curve(points: &[(f64, f64)]) -> Option<Vec<(f64, f64)>> {
    let weak = points.first()?.1;
    let strong = points.last()?.1;
    let gap = strong - weak;
    if gap <= 1e-12 {
        return None;
    }
    Some(points.iter().map(|&(s, q)| (s, (q - weak) / gap)).collect())
}

/// Average performance gap recovered: the area under the PGR curve over the share escalated
/// (0.5 for a random router, 1 for a perfect one on an always-correct reference when every
/// wrong answer comes first... scaled by the share of wrong answers).
pub fn apgr(pgr: &[(f64, f64)]) -> f64 {
    pgr.windows(2)
        .map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0)
        .sum()
}

/// Call-performance threshold: the smallest share escalated at which the PGR reaches `target`
/// (interpolated along the curve).
pub fn cpt(pgr: &[(f64, f64)], target: f64) -> Option<f64> {
    if pgr.first()?.1 >= target {
        return Some(0.0);
    }
    for w in pgr.windows(2) {
        let ((s0, p0), (s1, p1)) = (w[0], w[1]);
        if p1 >= target {
            if p1 - p0 <= 0.0 {
                return Some(s1);
            }
            return Some(s0 + (target - p0) / (p1 - p0) * (s1 - s0));
        }
    }
    None
}

/// The figures of one signal on one set.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct Figures {
    pub auroc: Option<f64>,
    pub apgr: Option<f64>,
    pub cpt50: Option<f64>,
    pub cpt80: Option<f64>,
}

pub fn figures(items: &[Scored]) -> Figures {
    let points = curve(items);
    let pgr = pgr_curve(&points);
    Figures {
        auroc: auroc(items),
        apgr: pgr.as_deref().map(apgr),
        cpt50: pgr.as_deref().and_then(|p| cpt(p, 0.5)),
        cpt80: pgr.as_deref().and_then(|p| cpt(p, 0.8)),
    }
}

/// The mean of each figure over several sets (tasks), each figure over the sets that have it.
pub fn macro_average(sets: &[Figures]) -> Figures {
    let mean = |get: &dyn Fn(&Figures) -> Option<f64>| {
        let values: Vec<f64> = sets.iter().filter_map(get).collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    };
    Figures {
        auroc: mean(&|f| f.auroc),
        apgr: mean(&|f| f.apgr),
        cpt50: mean(&|f| f.cpt50),
        cpt80: mean(&|f| f.cpt80),
    }
}

/// A 95% interval (2.5th and 97.5th percentiles) of each figure.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct Intervals {
    pub auroc: Option<(f64, f64)>,
    pub apgr: Option<(f64, f64)>,
    pub cpt50: Option<(f64, f64)>,
    pub cpt80: Option<(f64, f64)>,
}

/// Percentile bootstrap of the macro-averaged figures: each of `rounds` resamples draws every
/// set's items with replacement (sets keep their sizes), then averages over the sets.
pub fn bootstrap(sets: &[Vec<Scored>], rounds: usize, seed: u64) -> Intervals {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut draws: Vec<Figures> = Vec::with_capacity(rounds);
    let mut sample = Vec::new();
    for _ in 0..rounds {
        let per_set: Vec<Figures> = sets
            .iter()
            .filter(|set| !set.is_empty())
            .map(|set| {
                sample.clear();
                sample.extend((0..set.len()).map(|_| set[rng.random_range(0..set.len())]));
                figures(&sample)
            })
            .collect();
        draws.push(macro_average(&per_set));
    }
    let interval = |get: &dyn Fn(&Figures) -> Option<f64>| {
        let mut values: Vec<f64> = draws.iter().filter_map(get).collect();
        // An interval over a minority of the draws would mislead.
        if values.len() * 2 < rounds.max(1) {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
        Some((at(0.025), at(0.975)))
    };
    Intervals {
        auroc: interval(&|f| f.auroc),
        apgr: interval(&|f| f.apgr),
        cpt50: interval(&|f| f.cpt50),
        cpt80: interval(&|f| f.cpt80),
    }
}

/// The confidence below which a share `share` of `values` falls: escalating every answer below
/// it escalates about that share. The midpoint between neighbouring values, so that a value
/// exactly at the threshold is unambiguous.
pub fn threshold_for_share(values: &[f32], share: f64) -> f32 {
    let mut sorted: Vec<f32> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return f32::NEG_INFINITY;
    }
    sorted.sort_by(f32::total_cmp);
    let k = ((share.clamp(0.0, 1.0) * values.len() as f64).round() as usize)
        .saturating_sub(values.len() - sorted.len());
    match k {
        0 => sorted[0] - 1e-3,
        k if k >= sorted.len() => sorted[sorted.len() - 1] + 1e-3,
        k => (sorted[k - 1] + sorted[k]) / 2.0,
    }
}

/// The smallest share to escalate for the cascade's quality to reach `target` (on the curve's
/// points), or `None` when even escalating everything does not.
pub fn share_for_quality(points: &[(f64, f64)], target: f64) -> Option<f64> {
    points.iter().find(|&&(_, q)| q >= target).map(|&(s, _)| s)
}

/// Logistic regression by gradient descent on standardised features with a small L2 penalty.
/// Returns `(bias, weights)` on the features' own units.
pub fn fit_logistic(rows: &[Vec<f64>], labels: &[f64], l2: f64) -> (f64, Vec<f64>) {
    let n = rows.len();
    let d = rows.first().map_or(0, Vec::len);
    if n == 0 || d == 0 {
        return (0.0, vec![0.0; d]);
    }
    let mean: Vec<f64> = (0..d)
        .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n as f64)
        .collect();
    let sd: Vec<f64> = (0..d)
        .map(|j| {
            let v = rows.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n as f64;
            if v.sqrt() > 1e-9 { v.sqrt() } else { 1.0 }
        })
        .collect();
    let z: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| (0..d).map(|j| (r[j] - mean[j]) / sd[j]).collect())
        .collect();
    let mut w = vec![0.0; d];
    let mut b = 0.0;
    let rate = 0.5;
    for _ in 0..3000 {
        let mut gw = vec![0.0; d];
        let mut gb = 0.0;
        for (x, &y) in z.iter().zip(labels) {
            let p = sigmoid(b + x.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>());
            let e = p - y;
            gb += e;
            for j in 0..d {
                gw[j] += e * x[j];
            }
        }
        b -= rate * gb / n as f64;
        for j in 0..d {
            w[j] -= rate * (gw[j] / n as f64 + l2 * w[j]);
        }
    }
    let weights: Vec<f64> = (0..d).map(|j| w[j] / sd[j]).collect();
    let bias = b - (0..d).map(|j| w[j] * mean[j] / sd[j]).sum::<f64>();
    (bias, weights)
}

pub fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(confidence: f32, local: f64) -> Scored {
        Scored {
            confidence,
            local,
            strong: 1.0,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn auroc_by_hand() {
        // Positives at 0.9, 0.6; negatives at 0.7, 0.2. Pairs (pos > neg): (0.9,0.7), (0.9,0.2),
        // (0.6,0.2) = 3 of 4.
        let items = [
            item(0.9, 1.0),
            item(0.7, 0.0),
            item(0.6, 1.0),
            item(0.2, 0.0),
        ];
        assert!(close(auroc(&items).unwrap(), 0.75));
        // A tie between a positive and a negative counts half: (0.5 vs 0.5) + (0.5 > 0.1) = 1.5/2.
        let tied = [item(0.5, 1.0), item(0.5, 0.0), item(0.1, 0.0)];
        assert!(close(auroc(&tied).unwrap(), 0.75));
        // Perfect and reversed orders; one class only.
        assert!(close(
            auroc(&[item(1.0, 1.0), item(0.0, 0.0)]).unwrap(),
            1.0
        ));
        assert!(close(
            auroc(&[item(0.0, 1.0), item(1.0, 0.0)]).unwrap(),
            0.0
        ));
        assert_eq!(auroc(&[item(0.3, 1.0), item(0.4, 1.0)]), None);
    }

    #[test]
    fn curve_apgr_and_cpt_by_hand() {
        // Four items, two wrong, always-correct strong tier. The wrong ones are the least
        // confident: escalating 1/4 -> quality 3/4, 2/4 -> 1, then flat.
        let items = [
            item(0.9, 1.0),
            item(0.8, 1.0),
            item(0.2, 0.0),
            item(0.1, 0.0),
        ];
        let points = curve(&items);
        let want = [
            (0.0, 0.5),
            (0.25, 0.75),
            (0.5, 1.0),
            (0.75, 1.0),
            (1.0, 1.0),
        ];
        assert_eq!(points.len(), want.len());
        for (p, w) in points.iter().zip(want) {
            assert!(close(p.0, w.0) && close(p.1, w.1), "{points:?}");
        }
        let pgr = pgr_curve(&points).unwrap();
        // PGR: 0, .5, 1, 1, 1 -> area = .25*(.25) + .25*(.75) + .5*1 = 0.75.
        assert!(close(apgr(&pgr), 0.75));
        assert!(close(cpt(&pgr, 0.5).unwrap(), 0.25));
        // 0.8 lies between (0.25, 0.5) and (0.5, 1): 0.25 + 0.3/0.5*0.25 = 0.4.
        assert!(close(cpt(&pgr, 0.8).unwrap(), 0.4));
        let f = figures(&items);
        assert_eq!(f.auroc, Some(1.0));
        assert!(close(f.cpt80.unwrap(), 0.4));
    }

    #[test]
    fn random_order_recovers_half_the_gap() {
        // All confidences equal: one tie group, a straight line from weak to strong.
        let items: Vec<Scored> = (0..10).map(|i| item(0.5, f64::from(i % 2))).collect();
        let points = curve(&items);
        assert_eq!(points, vec![(0.0, 0.5), (1.0, 1.0)]);
        let pgr = pgr_curve(&points).unwrap();
        assert!(close(apgr(&pgr), 0.5));
        assert!(close(cpt(&pgr, 0.5).unwrap(), 0.5));
        assert!(close(auroc(&items).unwrap(), 0.5));
    }

    #[test]
    fn a_strong_tier_that_is_no_better_has_no_gap() {
        let items = [
            Scored {
                confidence: 0.1,
                local: 1.0,
                strong: 1.0,
            },
            Scored {
                confidence: 0.2,
                local: 0.0,
                strong: 0.0,
            },
        ];
        assert_eq!(pgr_curve(&curve(&items)), None);
        // A real cascade: the strong tier right on one of the two wrong answers.
        let cascade = [
            Scored {
                confidence: 0.1,
                local: 0.0,
                strong: 1.0,
            },
            Scored {
                confidence: 0.2,
                local: 0.0,
                strong: 0.0,
            },
            Scored {
                confidence: 0.9,
                local: 1.0,
                strong: 1.0,
            },
        ];
        let points = curve(&cascade);
        assert!(close(points[1].1, 2.0 / 3.0) && close(points.last().unwrap().1, 2.0 / 3.0));
        assert!(close(
            cpt(&pgr_curve(&points).unwrap(), 1.0).unwrap(),
            1.0 / 3.0
        ));
    }

    #[test]
    fn macro_average_skips_missing_figures() {
        let a = Figures {
            auroc: Some(0.6),
            apgr: Some(0.5),
            cpt50: None,
            cpt80: None,
        };
        let b = Figures {
            auroc: Some(0.8),
            apgr: None,
            cpt50: Some(0.2),
            cpt80: None,
        };
        let m = macro_average(&[a, b]);
        assert!(close(m.auroc.unwrap(), 0.7));
        assert_eq!(m.apgr, Some(0.5));
        assert_eq!(m.cpt50, Some(0.2));
        assert_eq!(m.cpt80, None);
    }

    #[test]
    fn bootstrap_interval_holds_the_point_estimate_and_is_seeded() {
        let items: Vec<Scored> = (0..200)
            .map(|i| {
                item(
                    (i % 17) as f32 / 17.0,
                    if (i * 7) % 10 < 6 { 1.0 } else { 0.0 },
                )
            })
            .collect();
        let sets = vec![items.clone()];
        let a = bootstrap(&sets, 200, 7);
        assert_eq!(a, bootstrap(&sets, 200, 7));
        let point = figures(&items).auroc.unwrap();
        let (lo, hi) = a.auroc.unwrap();
        assert!(lo <= point && point <= hi, "{lo} {point} {hi}");
        assert!(hi - lo > 0.01 && hi - lo < 0.5);
    }

    #[test]
    fn thresholds_for_a_share_and_for_a_quality() {
        let values = [-3.0, -2.0, -1.0, -0.5];
        assert!((threshold_for_share(&values, 0.5) - (-1.5)).abs() < 1e-6);
        assert!(threshold_for_share(&values, 0.0) < -3.0);
        assert!(threshold_for_share(&values, 1.0) > -0.5);
        // Non-finite values (empty answers) count as escalated first.
        let with_empty = [f32::NEG_INFINITY, -2.0, -1.0, -0.5];
        assert!((threshold_for_share(&with_empty, 0.5) - (-1.5)).abs() < 1e-6);
        let points = [(0.0, 0.5), (0.25, 0.75), (0.5, 1.0)];
        assert_eq!(share_for_quality(&points, 0.7), Some(0.25));
        assert_eq!(share_for_quality(&points, 1.1), None);
    }

    #[test]
    fn logistic_fit_separates_and_reports_raw_units() {
        // y = 1 when x > 2 (x in raw units, far from zero mean): the weight is positive and the
        // decision boundary lands near 2.
        let rows: Vec<Vec<f64>> = (0..40).map(|i| vec![f64::from(i) / 10.0]).collect();
        let labels: Vec<f64> = (0..40).map(|i| if i > 20 { 1.0 } else { 0.0 }).collect();
        let (b, w) = fit_logistic(&rows, &labels, 1e-3);
        assert!(w[0] > 0.0);
        let boundary = -b / w[0];
        assert!((boundary - 2.05).abs() < 0.2, "{boundary}");
        assert!(sigmoid(b + w[0] * 3.5) > 0.9 && sigmoid(b + w[0] * 0.5) < 0.1);
    }
}
