use super::*;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// A 4 GiB-class device running a 2 GiB model at 4096 context, meeting a 5 tok/s minimum.
fn base() -> Facts {
    Facts {
        microcontroller: false,
        has_accelerator: false,
        ram_available: 4 * GIB,
        budget: 3 * GIB + 400 * MIB,
        bandwidth: 20e9,
        n_params: 3_000_000_000,
        quant: "q4_K".into(),
        weights: 2 * GIB,
        ctx: 4096,
        kv_at_ctx: 400 * MIB,
        total_at_ctx: 2 * GIB + 700 * MIB,
        max_ctx: Some(8192),
        n_ctx_train: 32768,
        decode_tps_bound: 9.0,
        prefill_tps: 60.0,
        overhead_dominated: false,
    }
}

/// (case, facts, goals, expected deployment, meets goals)
#[test]
fn checklist_cases() {
    let goals = Goals::default();
    let cases: Vec<(&str, Facts, Goals, Deployment, bool)> = vec![
        (
            "fits and fast enough",
            base(),
            goals.clone(),
            Deployment::FullyLocal,
            true,
        ),
        (
            "too slow for the goal: local first, cloud when slow",
            base(),
            Goals {
                min_decode_tps: Some(15.0),
                ..goals.clone()
            },
            Deployment::LocalFirstCloudFallback,
            false,
        ),
        (
            "required context does not fit: local up to 8192, cloud beyond",
            Facts {
                ctx: 32768,
                total_at_ctx: 5 * GIB,
                ..base()
            },
            Goals {
                required_ctx: Some(32768),
                ..goals.clone()
            },
            Deployment::LocalFirstCloudFallback,
            false,
        ),
        (
            "does not fit at all: cloud",
            Facts {
                max_ctx: None,
                total_at_ctx: 9 * GIB,
                weights: 8 * GIB,
                ..base()
            },
            goals.clone(),
            Deployment::Cloud,
            false,
        ),
        (
            "offline required: local even when goals are missed",
            Facts {
                max_ctx: None,
                total_at_ctx: 9 * GIB,
                ..base()
            },
            Goals {
                offline_required: true,
                ..goals.clone()
            },
            Deployment::FullyLocal,
            false,
        ),
        (
            "no egress: local",
            base(),
            Goals {
                no_egress: true,
                min_decode_tps: Some(15.0),
                ..goals.clone()
            },
            Deployment::FullyLocal,
            false,
        ),
        (
            "p95 target missed: fallback",
            base(),
            Goals {
                p95_ms: Some(1000.0),
                ..goals.clone()
            },
            Deployment::LocalFirstCloudFallback,
            false,
        ),
        (
            "p50 target met",
            base(),
            Goals {
                p50_ms: Some(30_000.0),
                ..goals.clone()
            },
            Deployment::FullyLocal,
            true,
        ),
        (
            "microcontroller: cloud",
            Facts {
                microcontroller: true,
                ..base()
            },
            Goals {
                offline_required: true,
                ..goals.clone()
            },
            Deployment::Cloud,
            false,
        ),
    ];
    for (name, facts, goals, deployment, meets) in cases {
        let d = decide(&facts, &goals);
        assert_eq!(
            (d.deployment, d.meets_goals),
            (deployment, meets),
            "{name}: {:#?}",
            d.reasons
        );
        assert!(!d.reasons.is_empty(), "{name}");
    }
}

#[test]
fn reasons_carry_numbers() {
    let d = decide(&base(), &Goals::default());
    let text = d.reasons.join("\n");
    assert!(
        text.contains("KV cache is 400.0 MiB of the 1.39 GiB left after weights"),
        "{text}"
    );
    assert!(
        text.contains("largest context that fits: 8192 tokens"),
        "{text}"
    );
    assert!(
        text.contains("decode bound 9.0 tok/s (meets) vs the 5 tok/s interactive minimum"),
        "{text}"
    );
}

#[test]
fn suggestions_follow_the_checklist_table() {
    let goals = Goals::default();
    // 8 GiB gateway-class budget and bandwidth: the 3B-8B class at 4 bits.
    let gateway = Facts {
        budget: 6 * GIB,
        bandwidth: 23e9,
        ..base()
    };
    let d = decide(&gateway, &goals);
    assert_eq!(
        (
            d.suggested_size_class.as_str(),
            d.suggested_quantization.as_str()
        ),
        ("3B-8B", "q4_K_M")
    );
    // A 2 GiB budget: under 1B or 1B-3B.
    let small = Facts {
        budget: 2 * GIB,
        bandwidth: 7e9,
        ..base()
    };
    let d = decide(&small, &goals);
    assert_eq!(d.suggested_size_class, "1B-3B");
    // Nothing fits in 300 MiB.
    let tiny = Facts {
        budget: 300 * MIB,
        ..base()
    };
    assert_eq!(decide(&tiny, &goals).suggested_size_class, "none fits");
}
