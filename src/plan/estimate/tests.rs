use super::*;

const MIB_F: f64 = MIB as f64;

/// Gemma 3 270M as its GGUF header describes it (see tests/it/plan.rs for the header read).
fn gemma3_270m() -> ModelSpec {
    let swa_layers: Vec<bool> = (0..18).map(|il| il % 6 < 5).collect();
    ModelSpec {
        architecture: "gemma3".into(),
        name: Some("Gemma 3 270m".into()),
        n_layer: 18,
        n_embd: 640,
        n_ff: 2048,
        n_head: 4,
        n_head_kv: vec![1; 18],
        head_dim_k: 256,
        head_dim_v: 256,
        n_vocab: 262_144,
        n_ctx_train: 32_768,
        swa_window: 512,
        n_swa_layers: 15,
        swa_layers,
        weight_bytes: 246_587_904,
        n_params: 268_098_176,
        token_embd_bytes: 178_257_920,
        tied_output: true,
        main_type: GgmlType::Q5_K,
        bits_per_weight: 7.36,
        // The 27 q4_K matrices (attn_output 1024x640 and 9 ffn_down 2048x640): 12.66 MiB.
        matrices: (0..27)
            .map(|i| {
                if i < 18 {
                    (GgmlType::Q4_K, 640, 368_640)
                } else {
                    (GgmlType::Q4_K, 640, 737_280)
                }
            })
            .collect(),
    }
}

fn cfg(n_ctx: u64, kv_type: GgmlType) -> RuntimeConfig {
    RuntimeConfig {
        n_ctx,
        kv_type,
        repack: RepackRules::X86Avx2 { avx512: true },
        ..RuntimeConfig::default()
    }
}

/// KV bytes as llama.cpp allocates them: (ctx, type, full-layer cells, SWA cells, bytes).
#[test]
fn kv_cache_matches_llama_cpp_exactly() {
    let f16_cell = 2 * 256 * 2; // K and V rows of 256 f16
    let q8_cell = 2 * 8 * 34; // 8 q8_0 blocks of 34 bytes each
    let cases: &[(u64, GgmlType, u64, u64, u64)] = &[
        (
            512,
            GgmlType::F16,
            512,
            512,
            (3 * 512 + 15 * 512) * f16_cell,
        ),
        (
            2048,
            GgmlType::F16,
            2048,
            768,
            (3 * 2048 + 15 * 768) * f16_cell,
        ),
        (
            8192,
            GgmlType::F16,
            8192,
            768,
            (3 * 8192 + 15 * 768) * f16_cell,
        ),
        (
            32768,
            GgmlType::F16,
            32768,
            768,
            (3 * 32768 + 15 * 768) * f16_cell,
        ),
        (
            2048,
            GgmlType::Q8_0,
            2048,
            768,
            (3 * 2048 + 15 * 768) * q8_cell,
        ),
        // Padding: 1000 becomes 1024 cells.
        (
            1000,
            GgmlType::F16,
            1024,
            768,
            (3 * 1024 + 15 * 768) * f16_cell,
        ),
    ];
    let spec = gemma3_270m();
    for &(n_ctx, ty, cells, swa_cells, bytes) in cases {
        let kv = kv_cache(&spec, &cfg(n_ctx, ty)).unwrap();
        assert_eq!(
            (kv.cells, kv.swa_cells, kv.bytes + kv.swa_bytes),
            (cells, swa_cells, bytes),
            "{n_ctx} {ty}"
        );
    }
    // The llama.cpp log figures (MiB, two decimals) for f16 at 2048 and 32768.
    assert_eq!(
        kv_cache(&spec, &cfg(2048, GgmlType::F16)).unwrap().bytes as f64 / MIB_F,
        6.0
    );
    let big = kv_cache(&spec, &cfg(32768, GgmlType::F16)).unwrap();
    assert_eq!((big.bytes + big.swa_bytes) as f64 / MIB_F, 107.25);
}

#[test]
fn swa_full_and_slots() {
    let spec = gemma3_270m();
    let full = kv_cache(
        &spec,
        &RuntimeConfig {
            swa_full: true,
            ..cfg(4096, GgmlType::F16)
        },
    )
    .unwrap();
    assert_eq!(full.swa_cells, 4096);
    // Four server slots: 1024 cells each, and a window per slot.
    let slots = kv_cache(
        &spec,
        &RuntimeConfig {
            n_seq: 4,
            ..cfg(4096, GgmlType::F16)
        },
    )
    .unwrap();
    assert_eq!((slots.cells, slots.swa_cells), (1024, 768));
    assert_eq!(slots.bytes, 3 * 1024 * 1024 * 4);
    assert_eq!(slots.swa_bytes, 15 * 768 * 1024 * 4);
}

#[test]
fn q4_kv_refused_when_rows_are_not_whole_blocks() {
    let mut spec = gemma3_270m();
    spec.head_dim_k = 80;
    spec.head_dim_v = 80;
    let err = kv_cache(&spec, &cfg(2048, GgmlType::Q8_0)).unwrap_err();
    assert!(err.to_string().contains("multiple of 32"), "{err}");
}

/// llama.cpp's reported totals (model + KV + compute + output, MiB) for the default model with
/// the engine defaults, from docs/plan-accuracy.md: the model must land within
/// max(5%, 64 MiB) and never below what llama.cpp allocates by more than that.
#[test]
fn totals_within_tolerance_of_llama_cpp() {
    let measured: &[(u64, GgmlType, f64, f64)] = &[
        (512, GgmlType::F16, 129.82, 387.64),
        (2048, GgmlType::F16, 130.57, 396.64),
        (8192, GgmlType::F16, 131.76, 415.83),
        (32768, GgmlType::F16, 137.76, 493.83),
        (512, GgmlType::Q8_0, 130.66, 384.26),
        (2048, GgmlType::Q8_0, 131.10, 389.09),
        (8192, GgmlType::Q8_0, 132.29, 399.84),
        (32768, GgmlType::Q8_0, 138.29, 444.09),
    ];
    let spec = gemma3_270m();
    for &(n_ctx, ty, compute, total) in measured {
        let m = estimate_memory(&spec, &cfg(n_ctx, ty)).unwrap();
        let ours = m.llama_buffers() as f64 / MIB_F;
        let tolerance = (total * 0.05).max(64.0);
        assert!(
            (ours - total).abs() <= tolerance,
            "{n_ctx} {ty}: {ours:.2} vs {total:.2}"
        );
        // The compute buffer is modelled to within a few MiB, never under.
        let c = m.compute as f64 / MIB_F;
        assert!(
            c >= compute && c - compute < 8.0,
            "{n_ctx} {ty}: compute {c:.2} vs {compute:.2}"
        );
        let model_mib = (m.weights + m.repack) as f64 / MIB_F;
        assert!(
            (model_mib - 247.82).abs() < 0.01,
            "model buffer {model_mib:.2}"
        );
    }
}

#[test]
fn max_context_is_monotonic_and_capped_at_training() {
    let spec = gemma3_270m();
    let c = cfg(0, GgmlType::F16);
    let at = |budget_mib: u64| max_context(&spec, &c, budget_mib * MIB).unwrap();
    assert_eq!(at(100), None);
    let small = at(500).unwrap();
    let large = at(800).unwrap();
    assert!(small < large, "{small} {large}");
    assert_eq!(at(100_000), Some(32768));
    let m = estimate_memory(&spec, &RuntimeConfig { n_ctx: small, ..c }).unwrap();
    assert!(m.total() <= 500 * MIB);
    let over = estimate_memory(
        &spec,
        &RuntimeConfig {
            n_ctx: small + 256,
            ..c
        },
    )
    .unwrap();
    assert!(over.total() > 500 * MIB);
}

#[test]
fn decode_bound_reads_tied_output_and_kv() {
    let spec = gemma3_270m();
    let m = estimate_memory(&spec, &cfg(2048, GgmlType::F16)).unwrap();
    let device = Throughput {
        bandwidth: 10e9,
        flops: 100e9,
    };
    let s = estimate_speed(&spec, &m, 2048, &device);
    // Tied output: the whole embedding table is read per token; plus all 2048 cells of the
    // full-attention layers and the 768-cell window.
    assert_eq!(
        s.bytes_per_token,
        246_587_904 + 3 * 2048 * 1024 + 15 * 768 * 1024
    );
    assert!((s.decode_tps_bound - 10e9 / s.bytes_per_token as f64).abs() < 1e-9);
    assert!(!s.overhead_dominated);
    let fast = Throughput {
        bandwidth: 1e12,
        flops: 1e12,
    };
    assert!(estimate_speed(&spec, &m, 2048, &fast).overhead_dominated);
}
