//! Table tests of the routing decisions: no IO, no sleeping.

use std::time::{Duration, Instant};

use super::breaker::{Breaker, BreakerState};
use super::confidence::{Combiner, Feature, Signals, is_low, low_because, quantile, signals};
use super::deadline::{Progress, missed, wake_at};
use super::policy::{ThermalReading, throttling};
use super::*;
use crate::engine::Spread;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn remote(name: &str) -> Tier {
    let endpoint = RemoteTier {
        api: RemoteApi::ChatCompletions,
        url: "http://127.0.0.1:1/v1".into(),
        model: "m".into(),
        api_key: None,
        connect_timeout: ms(100),
        timeout: ms(1000),
        max_tokens: None,
        price_input_per_mtok: 0.0,
        price_output_per_mtok: 0.0,
        ca_pem: None,
    };
    Tier {
        name: name.into(),
        kind: if name == "lan" {
            TierKind::LocalServer(endpoint)
        } else {
            TierKind::Remote(endpoint)
        },
    }
}

fn tiers() -> Vec<Tier> {
    vec![
        Tier {
            name: "local".into(),
            kind: TierKind::Local,
        },
        remote("onprem"),
        remote("cloud"),
    ]
}

#[test]
fn overrides_pick_tiers() {
    let o = Some(Reason::Override);
    let cases = [
        (RouteOverride::Auto, vec![None, None, None]),
        (RouteOverride::Local, vec![None, o, o]),
        (RouteOverride::Remote, vec![o, None, None]),
        (RouteOverride::NoFallback, vec![None, o, o]),
    ];
    for (route, want) in cases {
        let got: Vec<_> = eligible(&tiers(), route).into_iter().map(|e| e.1).collect();
        assert_eq!(got, want, "{route:?}");
    }
    // A local server (on the device) counts as local for the overrides.
    let mut with_lan = tiers();
    with_lan.insert(1, remote("lan"));
    let got: Vec<_> = eligible(&with_lan, RouteOverride::Local)
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(got, vec![None, None, o, o]);
    let got: Vec<_> = eligible(&with_lan, RouteOverride::Remote)
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(got, vec![o, o, None, None]);
    assert_eq!(
        RouteOverride::parse("no-fallback"),
        Some(RouteOverride::NoFallback)
    );
    assert_eq!(RouteOverride::parse("Remote"), Some(RouteOverride::Remote));
    assert_eq!(RouteOverride::parse("cloud"), None);
}

#[test]
fn reasons_round_trip() {
    for reason in Reason::ALL {
        assert_eq!(Reason::parse(reason.as_str()), Some(reason));
    }
}

#[test]
fn local_pre_decision_table() {
    let triggers = Triggers {
        max_queued: Some(1),
        total_deadline: Some(ms(10_000)),
        ..Triggers::default()
    };
    let signals = |in_flight, mean: Option<u64>, throttling| LocalSignals {
        in_flight,
        slots: 2,
        mean_request: mean.map(ms),
        throttling,
    };
    let cases = [
        (signals(0, None, None), None),
        (signals(2, None, Some(false)), None), // would wait first in line: allowed
        (signals(3, None, None), Some(Reason::Overloaded)), // second in line: too deep
        (signals(2, Some(11_000), None), Some(Reason::Overloaded)), // predicted wait > deadline
        (signals(1, Some(11_000), None), None), // a free slot: no wait
        (signals(0, None, Some(true)), Some(Reason::Thermal)),
    ];
    for (i, (s, want)) in cases.into_iter().enumerate() {
        assert_eq!(local_pre_decision(&triggers, &s), want, "case {i}");
    }
    let off = Triggers {
        overloaded: false,
        thermal: false,
        ..triggers
    };
    assert_eq!(
        local_pre_decision(&off, &signals(9, None, Some(true))),
        None
    );
}

#[test]
fn thermal_table() {
    let triggers = Triggers {
        max_celsius: Some(80.0),
        min_freq_ratio: Some(0.7),
        ..Triggers::default()
    };
    let cases = [
        (ThermalReading::default(), false),
        (
            ThermalReading {
                max_celsius: Some(79.9),
                min_freq_ratio: Some(1.0),
            },
            false,
        ),
        (
            ThermalReading {
                max_celsius: Some(80.0),
                min_freq_ratio: None,
            },
            true,
        ),
        (
            ThermalReading {
                max_celsius: Some(40.0),
                min_freq_ratio: Some(0.5),
            },
            true,
        ),
    ];
    for (reading, want) in cases {
        assert_eq!(throttling(&triggers, &reading), want, "{reading:?}");
    }
}

#[test]
fn confidence_table() {
    let s = signals(&[-0.1, -0.1, -3.0, -3.0, -0.1], &[], 2).unwrap();
    assert!((s.mean - (-1.26)).abs() < 1e-5);
    assert!((s.window_min - (-3.0)).abs() < 1e-5);
    assert_eq!(signals(&[], &[], 4), None);
    assert_eq!(signals(&[-1.0], &[], 8).unwrap().window_min, -1.0);
    let triggers = |mean, window| Triggers {
        min_mean_logprob: mean,
        min_window_logprob: window,
        ..Triggers::default()
    };
    let cases = [
        (triggers(Some(-1.0), None), true),
        (triggers(Some(-2.0), None), false),
        (triggers(None, Some(-2.5)), true),
        (triggers(None, Some(-3.5)), false),
        (triggers(None, None), false),
    ];
    for (t, want) in cases {
        assert_eq!(is_low(&t, &s), want, "{t:?}");
    }
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() < 1e-4
}

#[test]
fn signal_values_by_hand() {
    // Sorted: -3, -2, -1, -0.5, -0.1 (n = 5). q10: h = 0.4 -> -3 + 0.4 * 1 = -2.6;
    // q25: h = 1.0 -> -2. Sum -6.6, mean -1.32, min -3.
    let lp = [-0.1, -2.0, -0.5, -3.0, -1.0];
    let spreads = [
        Spread {
            margin: 0.7,
            entropy: 1.0,
        },
        Spread {
            margin: 0.1,
            entropy: 2.0,
        },
    ];
    let s = signals(&lp, &spreads, 2).unwrap();
    assert!(close(s.q10, -2.6), "{s:?}");
    assert!(close(s.q25, -2.0), "{s:?}");
    assert!(close(s.sum, -6.6) && close(s.mean, -1.32) && close(s.min, -3.0));
    assert!(close(s.first, -0.1));
    // Windows of two: -1.05, -1.25, -1.75, -2.0.
    assert!(close(s.window_min, -2.0), "{s:?}");
    assert_eq!(s.first_margin, Some(0.7));
    assert!(close(s.mean_entropy.unwrap(), 1.5));
    assert_eq!(s.tokens, 5);
    assert!(close(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5));
    assert!(close(quantile(&[7.0], 0.1), 7.0));
    // Entropy is oriented: lower entropy is more confident.
    assert_eq!(Feature::MeanEntropy.confidence(&s), Some(-1.5));
    assert_eq!(Feature::Q10.confidence(&s), Some(s.q10));
}

#[test]
fn spread_from_top_alternatives_by_hand() {
    // p = 0.5, 0.25, 0.125; the rest 0.125 is one more outcome.
    let top = [0.5f32.ln(), 0.25f32.ln(), 0.125f32.ln()];
    let s = Spread::from_top(&top);
    assert!(close(s.margin, 2f32.ln()));
    let h = -(0.5 * 0.5f32.ln() + 0.25 * 0.25f32.ln() + 2.0 * 0.125 * 0.125f32.ln());
    assert!(close(s.entropy, h), "{s:?} vs {h}");
    // All the mass in the top N: no rest term.
    let s = Spread::from_top(&[0.5f32.ln(), 0.5f32.ln()]);
    assert!(close(s.margin, 0.0) && close(s.entropy, 2f32.ln()));
    assert_eq!(Spread::from_top(&[]).margin, 0.0);
}

#[test]
fn every_threshold_and_the_combiner_name_what_fired() {
    let s = Signals {
        mean: -0.8,
        window_min: -1.5,
        min: -4.0,
        q10: -3.0,
        q25: -1.2,
        sum: -8.0,
        first: -0.4,
        tokens: 10,
        first_margin: Some(0.3),
        mean_entropy: Some(1.2),
    };
    let quiet = Triggers::default();
    assert_eq!(low_because(&quiet, &s), None);
    let cases: [(Triggers, Option<&str>); 10] = [
        (
            Triggers {
                min_sum_logprob: Some(-7.0),
                ..Triggers::default()
            },
            Some("sum -8.00 < -7"),
        ),
        (
            Triggers {
                min_first_logprob: Some(-0.3),
                ..Triggers::default()
            },
            Some("first -0.40 < -0.3"),
        ),
        (
            Triggers {
                min_q10_logprob: Some(-2.5),
                ..Triggers::default()
            },
            Some("q10 -3.00 < -2.5"),
        ),
        (
            Triggers {
                min_q10_logprob: Some(-3.5),
                ..Triggers::default()
            },
            None,
        ),
        (
            Triggers {
                min_q25_logprob: Some(-1.0),
                ..Triggers::default()
            },
            Some("q25 -1.20 < -1"),
        ),
        (
            Triggers {
                min_first_margin: Some(0.5),
                ..Triggers::default()
            },
            Some("first_margin 0.30 < 0.5"),
        ),
        (
            Triggers {
                max_mean_entropy: Some(1.0),
                ..Triggers::default()
            },
            Some("mean_entropy 1.20 > 1"),
        ),
        (
            Triggers {
                max_mean_entropy: Some(1.5),
                ..Triggers::default()
            },
            None,
        ),
        // z = 1 + 2 * -0.8 = -0.6: P = 0.354.
        (
            Triggers {
                combiner: Some(Combiner {
                    bias: 1.0,
                    weights: [(Feature::Mean, 2.0)].into(),
                    min_probability: 0.4,
                }),
                ..Triggers::default()
            },
            Some("combined P(correct) 0.35 < 0.4"),
        ),
        (
            Triggers {
                combiner: Some(Combiner {
                    bias: 1.0,
                    weights: [(Feature::Mean, 2.0)].into(),
                    min_probability: 0.3,
                }),
                ..Triggers::default()
            },
            None,
        ),
    ];
    for (t, want) in cases {
        assert!(t.confidence_enabled(), "{t:?}");
        assert_eq!(low_because(&t, &s).as_deref(), want, "{t:?}");
    }
    // A combiner over a signal the engine did not compute does not fire.
    let no_spread = Signals {
        first_margin: None,
        mean_entropy: None,
        ..s
    };
    let margin_combiner = Combiner {
        bias: -10.0,
        weights: [(Feature::FirstMargin, 1.0)].into(),
        min_probability: 0.5,
    };
    assert_eq!(margin_combiner.probability(&no_spread), None);
    let t = Triggers {
        combiner: Some(margin_combiner),
        ..Triggers::default()
    };
    assert!(t.spread_needed());
    assert_eq!(low_because(&t, &no_spread), None);
    assert!(
        !Triggers {
            min_q10_logprob: Some(-1.0),
            ..Triggers::default()
        }
        .spread_needed()
    );
}

#[test]
fn deadline_table() {
    let triggers = Triggers {
        first_token_deadline: Some(ms(500)),
        total_deadline: Some(ms(2000)),
        ..Triggers::default()
    };
    let p = |elapsed, first: Option<u64>, tokens, max_tokens| Progress {
        elapsed: ms(elapsed),
        first_token_at: first.map(ms),
        tokens,
        max_tokens,
    };
    let cases = [
        (p(100, None, 0, 100), false),
        (p(500, None, 0, 100), true),        // no first token in time
        (p(600, Some(400), 1, 100), false),  // one token: no rate yet
        (p(700, Some(400), 31, 100), false), // 100 tok/s: 69 more in 0.69 s, ends at 1.39 s
        (p(700, Some(400), 4, 100), true),   // 10 tok/s: 96 more need 9.6 s
        (p(700, Some(400), 4, 4), false),    // done anyway
        (p(2000, Some(400), 90, 100), true), // total passed
    ];
    for (i, (progress, want)) in cases.into_iter().enumerate() {
        assert_eq!(missed(&triggers, &progress), want, "case {i}");
    }
    assert_eq!(wake_at(&triggers, &p(0, None, 0, 10)), Some(ms(500)));
    assert_eq!(wake_at(&triggers, &p(0, Some(1), 1, 10)), Some(ms(2000)));
    let off = Triggers {
        deadline: false,
        ..triggers
    };
    assert!(!missed(&off, &p(5000, None, 0, 100)));
    assert_eq!(wake_at(&off, &p(0, None, 0, 10)), None);
}

#[test]
fn breaker_opens_probes_and_recovers() {
    let t0 = Instant::now();
    let mut breaker = Breaker::new(3, ms(1000));
    for _ in 0..2 {
        assert!(breaker.allow(t0));
        breaker.failure(t0);
    }
    assert_eq!(breaker.state(t0), BreakerState::Closed);
    breaker.failure(t0);
    assert_eq!(breaker.state(t0), BreakerState::Open);
    assert!(!breaker.allow(t0 + ms(999)));
    // Cool-down over: one probe, not two.
    assert_eq!(breaker.state(t0 + ms(1000)), BreakerState::HalfOpen);
    assert!(breaker.allow(t0 + ms(1000)));
    assert!(!breaker.allow(t0 + ms(1001)));
    // The probe fails: open again for a full cool-down.
    breaker.failure(t0 + ms(1100));
    assert_eq!(breaker.state(t0 + ms(2000)), BreakerState::Open);
    assert!(breaker.allow(t0 + ms(2100)));
    breaker.success();
    assert_eq!(breaker.state(t0 + ms(2100)), BreakerState::Closed);
    assert!(breaker.allow(t0 + ms(2100)));
}
