//! Table tests of the routing decisions: no IO, no sleeping.

use std::time::{Duration, Instant};

use super::breaker::{Breaker, BreakerState};
use super::confidence::{is_low, score};
use super::deadline::{Progress, missed, wake_at};
use super::policy::{ThermalReading, throttling};
use super::*;

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
    let s = score(&[-0.1, -0.1, -3.0, -3.0, -0.1], 2).unwrap();
    assert!((s.mean - (-1.26)).abs() < 1e-5);
    assert!((s.window_min - (-3.0)).abs() < 1e-5);
    assert_eq!(score(&[], 4), None);
    assert_eq!(score(&[-1.0], 8).unwrap().window_min, -1.0);
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
