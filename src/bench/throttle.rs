//! Throttling detection over a sustained run's samples. Pure: the samples come in as data, so the
//! rules are tested on supplied series.
//!
//! Three signals, any of which flags the run:
//! - the CPU frequency stays below 90% of its maximum for more than 5 s;
//! - a thermal zone reaches one of its trip points;
//! - the last minute's decode rate is more than 10% below the first minute's (for runs shorter
//!   than two minutes the windows are the first and last half of the run).

use serde::Serialize;

use super::series::Sample;

/// The thresholds; [`ThrottleRules::default`] holds the documented ones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThrottleRules {
    pub frequency_ratio: f64,
    pub frequency_seconds: f64,
    pub decode_drop: f64,
    pub window_s: f64,
}

impl Default for ThrottleRules {
    fn default() -> Self {
        ThrottleRules {
            frequency_ratio: 0.9,
            frequency_seconds: 5.0,
            decode_drop: 0.10,
            window_s: 60.0,
        }
    }
}

/// One reason the run counts as throttled.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// The busiest CPU ran below the threshold ratio of its maximum for `seconds` from `start_s`.
    FrequencyBelowMax {
        start_s: f64,
        seconds: f64,
        lowest_ratio: f64,
    },
    /// A thermal zone reached a trip point (first time, per zone and trip).
    TripPointCrossed {
        zone: String,
        zone_type: String,
        trip_type: String,
        trip_c: f64,
        temp_c: f64,
        at_s: f64,
    },
    /// The last window's decode rate fell below the first window's by more than the threshold.
    DecodeRateDrop {
        window_s: f64,
        first_tokens_per_second: f64,
        last_tokens_per_second: f64,
        drop_percent: f64,
    },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::FrequencyBelowMax {
                start_s,
                seconds,
                lowest_ratio,
            } => write!(
                f,
                "CPU frequency below 90% of max for {seconds:.1} s from t={start_s:.1} s (lowest {:.0}%)",
                lowest_ratio * 100.0
            ),
            Finding::TripPointCrossed {
                zone,
                zone_type,
                trip_type,
                trip_c,
                temp_c,
                at_s,
            } => write!(
                f,
                "{zone} ({zone_type}) reached its {trip_type} trip point {trip_c:.1} °C at t={at_s:.1} s ({temp_c:.1} °C)"
            ),
            Finding::DecodeRateDrop {
                window_s,
                first_tokens_per_second,
                last_tokens_per_second,
                drop_percent,
            } => write!(
                f,
                "decode rate of the last {window_s:.0} s ({last_tokens_per_second:.1} tokens/s) is {drop_percent:.1}% below the first {window_s:.0} s ({first_tokens_per_second:.1} tokens/s)"
            ),
        }
    }
}

/// The verdict, with what the machine made observable.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThrottleVerdict {
    pub throttled: bool,
    /// Whether any sample had cpufreq readings (otherwise the frequency rule could not apply).
    pub frequency_available: bool,
    /// Whether any sample had thermal zones (otherwise the trip-point rule could not apply).
    pub thermal_available: bool,
    pub findings: Vec<Finding>,
}

/// Applies the rules to samples taken every `interval_s` seconds.
pub fn detect(samples: &[Sample], interval_s: f64, rules: &ThrottleRules) -> ThrottleVerdict {
    let mut findings = frequency_findings(samples, interval_s, rules);
    findings.extend(trip_findings(samples));
    findings.extend(decode_drop(samples, interval_s, rules));
    ThrottleVerdict {
        throttled: !findings.is_empty(),
        frequency_available: samples.iter().any(|s| s.sysfs.frequency_ratio().is_some()),
        thermal_available: samples.iter().any(|s| !s.sysfs.zones.is_empty()),
        findings,
    }
}

/// Runs of consecutive samples below the ratio; each reading holds for one interval.
fn frequency_findings(samples: &[Sample], interval_s: f64, rules: &ThrottleRules) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut run: Option<(f64, f64, f64)> = None; // (start, last, lowest)
    let mut close = |run: &mut Option<(f64, f64, f64)>| {
        if let Some((start, last, lowest)) = run.take() {
            let seconds = last - start + interval_s;
            if seconds > rules.frequency_seconds {
                findings.push(Finding::FrequencyBelowMax {
                    start_s: start - interval_s,
                    seconds,
                    lowest_ratio: lowest,
                });
            }
        }
    };
    for sample in samples {
        match sample.sysfs.frequency_ratio() {
            Some(ratio) if ratio < rules.frequency_ratio => {
                let (start, _, lowest) = run.unwrap_or((sample.t_s, sample.t_s, ratio));
                run = Some((start, sample.t_s, lowest.min(ratio)));
            }
            _ => close(&mut run),
        }
    }
    close(&mut run);
    findings
}

fn trip_findings(samples: &[Sample]) -> Vec<Finding> {
    let mut findings: Vec<Finding> = Vec::new();
    let mut seen: Vec<(String, String)> = Vec::new();
    for sample in samples {
        for zone in &sample.sysfs.zones {
            // Zero or negative trip temperatures are placeholders for disabled trips.
            for trip in zone.trips.iter().filter(|t| t.temp_c > 0.0) {
                let key = (zone.zone.clone(), format!("{}@{}", trip.kind, trip.temp_c));
                if zone.temp_c >= trip.temp_c && !seen.contains(&key) {
                    seen.push(key);
                    findings.push(Finding::TripPointCrossed {
                        zone: zone.zone.clone(),
                        zone_type: zone.kind.clone(),
                        trip_type: trip.kind.clone(),
                        trip_c: trip.temp_c,
                        temp_c: zone.temp_c,
                        at_s: sample.t_s,
                    });
                }
            }
        }
    }
    findings
}

fn decode_drop(samples: &[Sample], interval_s: f64, rules: &ThrottleRules) -> Option<Finding> {
    let (first, last) = (samples.first()?, samples.last()?);
    if samples.len() < 2 {
        return None;
    }
    let start = first.t_s - interval_s;
    let span = last.t_s - start;
    let window_s = rules.window_s.min(span / 2.0);
    let rate = |keep: &dyn Fn(f64) -> bool| -> Option<f64> {
        let rates: Vec<f64> = samples
            .iter()
            .filter(|s| keep(s.t_s))
            .map(|s| s.tokens_per_second)
            .collect();
        super::stats::mean(&rates)
    };
    let first_rate = rate(&|t| t - start <= window_s + 1e-9)?;
    let last_rate = rate(&|t| t - interval_s >= last.t_s - window_s - 1e-9)?;
    if first_rate <= 0.0 || last_rate >= first_rate * (1.0 - rules.decode_drop) {
        return None;
    }
    Some(Finding::DecodeRateDrop {
        window_s,
        first_tokens_per_second: first_rate,
        last_tokens_per_second: last_rate,
        drop_percent: (1.0 - last_rate / first_rate) * 100.0,
    })
}

#[cfg(test)]
mod tests {
    use super::super::series::{CpuFreq, SysfsSnapshot, TripPoint, ZoneReading};
    use super::*;

    /// tokens/s, each CPU's MHz, the zone's °C.
    type Row = (f64, &'static [u64], Option<f64>);

    /// One sample per second: tokens/s, then each CPU's current frequency (max 2000 MHz), then
    /// one zone's temperature with a passive trip at 80 °C.
    fn series(rows: &[(f64, &[u64], Option<f64>)]) -> Vec<Sample> {
        rows.iter()
            .enumerate()
            .map(|(i, (tps, freqs, temp))| Sample {
                t_s: (i + 1) as f64,
                tokens_per_second: *tps,
                completed_requests: 0,
                resident_bytes: None,
                sysfs: SysfsSnapshot {
                    cpus: freqs
                        .iter()
                        .enumerate()
                        .map(|(cpu, mhz)| CpuFreq {
                            cpu: cpu as u32,
                            cur_khz: mhz * 1000,
                            max_khz: 2_000_000,
                        })
                        .collect(),
                    zones: temp
                        .iter()
                        .map(|t| ZoneReading {
                            zone: "thermal_zone0".into(),
                            kind: "cpu-thermal".into(),
                            temp_c: *t,
                            trips: vec![
                                TripPoint {
                                    kind: "passive".into(),
                                    temp_c: 80.0,
                                },
                                TripPoint {
                                    kind: "critical".into(),
                                    temp_c: 0.0,
                                },
                            ],
                        })
                        .collect(),
                },
            })
            .collect()
    }

    fn kinds(verdict: &ThrottleVerdict) -> Vec<&'static str> {
        verdict
            .findings
            .iter()
            .map(|f| match f {
                Finding::FrequencyBelowMax { .. } => "frequency",
                Finding::TripPointCrossed { .. } => "trip",
                Finding::DecodeRateDrop { .. } => "decode",
            })
            .collect()
    }

    #[test]
    fn throttling_rules_on_supplied_series() {
        let steady = |n: usize,
                      freqs: &'static [u64],
                      temp: f64|
         -> Vec<(f64, &'static [u64], Option<f64>)> {
            (0..n).map(|_| (40.0, freqs, Some(temp))).collect()
        };
        let full_static: &'static [u64] = &[2000, 1200];
        let low_static: &'static [u64] = &[1500, 1500];
        let mut five_low = steady(4, full_static, 60.0);
        five_low.extend(steady(5, low_static, 60.0));
        five_low.extend(steady(4, full_static, 60.0));
        let mut six_low = steady(4, full_static, 60.0);
        six_low.extend(steady(6, low_static, 60.0));
        six_low.extend(steady(4, full_static, 60.0));
        let mut six_low_at_end = steady(4, full_static, 60.0);
        six_low_at_end.extend(steady(6, low_static, 60.0));
        let mut hot = steady(5, full_static, 70.0);
        hot.extend(steady(2, full_static, 80.5));
        hot.extend(steady(3, full_static, 79.0));
        hot.extend(steady(1, full_static, 81.0));
        let mut slowing = steady(10, full_static, 60.0);
        slowing.extend((0..10).map(|_| (35.0, full_static, Some(60.0))));
        let mut slightly_slower = steady(10, full_static, 60.0);
        slightly_slower.extend((0..10).map(|_| (37.0, full_static, Some(60.0))));
        let cases: Vec<(&str, Vec<Row>, Vec<&str>)> = vec![
            (
                "steady, cool, at full speed",
                steady(20, full_static, 60.0),
                vec![],
            ),
            ("5 s below 90% is tolerated", five_low, vec![]),
            ("6 s below 90%", six_low, vec!["frequency"]),
            ("below 90% until the end", six_low_at_end, vec!["frequency"]),
            ("trip point crossed (reported once)", hot, vec!["trip"]),
            (
                "decode rate 12.5% lower at the end",
                slowing,
                vec!["decode"],
            ),
            (
                "decode rate 7.5% lower is tolerated",
                slightly_slower,
                vec![],
            ),
            ("no sysfs at all", vec![(40.0, &[][..], None); 8], vec![]),
            ("empty series", vec![], vec![]),
        ];
        for (name, rows, expected) in cases {
            let verdict = detect(&series(&rows), 1.0, &ThrottleRules::default());
            assert_eq!(kinds(&verdict), expected, "{name}: {verdict:?}");
            assert_eq!(verdict.throttled, !expected.is_empty(), "{name}");
        }
    }

    #[test]
    fn findings_carry_where_and_how_much() {
        let full: &'static [u64] = &[2000];
        let low: &'static [u64] = &[1000];
        let mut rows: Vec<(f64, &[u64], Option<f64>)> = vec![(40.0, full, Some(50.0)); 3];
        rows.extend(vec![(40.0, low, Some(85.0)); 7]);
        let verdict = detect(&series(&rows), 1.0, &ThrottleRules::default());
        assert_eq!(
            verdict.findings,
            vec![
                Finding::FrequencyBelowMax {
                    start_s: 3.0,
                    seconds: 7.0,
                    lowest_ratio: 0.5
                },
                Finding::TripPointCrossed {
                    zone: "thermal_zone0".into(),
                    zone_type: "cpu-thermal".into(),
                    trip_type: "passive".into(),
                    trip_c: 80.0,
                    temp_c: 85.0,
                    at_s: 4.0
                },
            ]
        );
        assert!(verdict.frequency_available && verdict.thermal_available);
        let none = detect(&series(&[(1.0, &[], None)]), 1.0, &ThrottleRules::default());
        assert!(!none.frequency_available && !none.thermal_available);
    }

    #[test]
    fn decode_windows_are_minutes_on_long_runs() {
        // 180 s: first minute 50 tokens/s, middle 20, last minute 44 (12% below the first).
        let rows: Vec<(f64, &[u64], Option<f64>)> = (0..180)
            .map(|i| {
                (
                    if i < 60 {
                        50.0
                    } else if i < 120 {
                        20.0
                    } else {
                        44.0
                    },
                    &[][..],
                    None,
                )
            })
            .collect();
        let verdict = detect(&series(&rows), 1.0, &ThrottleRules::default());
        match verdict.findings.as_slice() {
            [
                Finding::DecodeRateDrop {
                    window_s,
                    first_tokens_per_second,
                    last_tokens_per_second,
                    drop_percent,
                },
            ] => {
                assert_eq!(*window_s, 60.0);
                assert_eq!(*first_tokens_per_second, 50.0);
                assert_eq!(*last_tokens_per_second, 44.0);
                assert!((drop_percent - 12.0).abs() < 1e-9);
            }
            other => panic!("expected one decode drop, got {other:?}"),
        }
    }
}
