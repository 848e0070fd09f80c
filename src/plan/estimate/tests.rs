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

fn slots(n_ctx: u64, n_seq: u64, kv_type: GgmlType) -> RuntimeConfig {
    RuntimeConfig {
        n_seq,
        ..cfg(n_ctx, kv_type)
    }
}

/// KV bytes as llama.cpp allocates them with the engine's unified pool:
/// (ctx, slots, type, full-layer cells, SWA cells, bytes). The sliding-window cells are
/// `pad(min(n_ctx, 512 x slots + 128), 256)`.
#[test]
fn kv_cache_matches_llama_cpp_exactly() {
    let f16_cell = 2 * 256 * 2; // K and V rows of 256 f16
    let q8_cell = 2 * 8 * 34; // 8 q8_0 blocks of 34 bytes each
    let f16 = GgmlType::F16;
    let cases: &[(u64, u64, GgmlType, u64, u64, u64)] = &[
        // One slot: the window is 512 + 128 = 640 cells, padded to 768 (all 512 at ctx 512).
        (512, 1, f16, 512, 512, (3 * 512 + 15 * 512) * f16_cell),
        (2048, 1, f16, 2048, 768, (3 * 2048 + 15 * 768) * f16_cell),
        (8192, 1, f16, 8192, 768, (3 * 8192 + 15 * 768) * f16_cell),
        (32768, 1, f16, 32768, 768, (3 * 32768 + 15 * 768) * f16_cell),
        (
            2048,
            1,
            GgmlType::Q8_0,
            2048,
            768,
            (3 * 2048 + 15 * 768) * q8_cell,
        ),
        // Padding: 1000 becomes 1024 cells.
        (1000, 1, f16, 1024, 768, (3 * 1024 + 15 * 768) * f16_cell),
        // The server's defaults: four windows in the pool, 4 x 512 + 128 = 2176 -> 2304 cells;
        // llama.cpp reported 3 x 8192 + 15 x 2304 cells of 1 KiB = 57.75 MiB.
        (8192, 4, f16, 8192, 2304, (3 * 8192 + 15 * 2304) * f16_cell),
        // Two slots: 1024 + 128 = 1152 -> 1280 cells.
        (8192, 2, f16, 8192, 1280, (3 * 8192 + 15 * 1280) * f16_cell),
        // Four windows do not fit a 2048-cell pool: the whole pool.
        (2048, 4, f16, 2048, 2048, (3 * 2048 + 15 * 2048) * f16_cell),
    ];
    let spec = gemma3_270m();
    for &(n_ctx, n_seq, ty, cells, swa_cells, bytes) in cases {
        let kv = kv_cache(&spec, &slots(n_ctx, n_seq, ty)).unwrap();
        assert_eq!(
            (kv.cells, kv.swa_cells, kv.streams, kv.bytes + kv.swa_bytes),
            (cells, swa_cells, 1, bytes),
            "{n_ctx} x{n_seq} {ty}"
        );
    }
    // The llama.cpp log figures (MiB, two decimals) for f16 at 2048 and 32768, and 4 slots.
    assert_eq!(
        kv_cache(&spec, &cfg(2048, f16)).unwrap().bytes as f64 / MIB_F,
        6.0
    );
    let big = kv_cache(&spec, &cfg(32768, f16)).unwrap();
    assert_eq!((big.bytes + big.swa_bytes) as f64 / MIB_F, 107.25);
    let server = kv_cache(&spec, &slots(8192, 4, f16)).unwrap();
    assert_eq!((server.bytes + server.swa_bytes) as f64 / MIB_F, 57.75);
}

#[test]
fn swa_full_and_per_slot_streams() {
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
    // Without a unified pool, four slots get a stream of 1024 cells each, with one window
    // (512 + 128 -> 768 cells) per stream.
    let streams = kv_cache(
        &spec,
        &RuntimeConfig {
            kv_unified: false,
            ..slots(4096, 4, GgmlType::F16)
        },
    )
    .unwrap();
    assert_eq!(
        (streams.cells, streams.swa_cells, streams.streams),
        (1024, 768, 4)
    );
    assert_eq!(streams.bytes, 3 * 1024 * 1024 * 4);
    assert_eq!(streams.swa_bytes, 15 * 768 * 1024 * 4);
}

/// One logits row per slot, in the compute buffer and the output buffer (llama.cpp's
/// `output_reserve(n_seq_max)`: 262,144 f32 per row, 1 MiB).
#[test]
fn logits_are_sized_for_one_row_per_slot() {
    let spec = gemma3_270m();
    let one = estimate_memory(&spec, &slots(8192, 1, GgmlType::F16)).unwrap();
    let four = estimate_memory(&spec, &slots(8192, 4, GgmlType::F16)).unwrap();
    assert_eq!((one.output, four.output), (MIB, 4 * MIB));
    // Same micro-batch, same full-attention cells: the compute buffers differ by three logits
    // rows and the masks of the 2304 - 768 extra window cells (128 f16 each).
    assert_eq!(four.compute - one.compute, 3 * MIB + (2304 - 768) * 128 * 2);
    // The old sizing (a row per micro-batch token, 128 MiB) is gone.
    assert!(one.compute < 16 * MIB, "{}", one.compute);
}

#[test]
fn q4_kv_refused_when_rows_are_not_whole_blocks() {
    let mut spec = gemma3_270m();
    spec.head_dim_k = 80;
    spec.head_dim_v = 80;
    let err = kv_cache(&spec, &cfg(2048, GgmlType::Q8_0)).unwrap_err();
    assert!(err.to_string().contains("multiple of 32"), "{err}");
}

/// llama.cpp's reported compute buffer and totals (model + KV + compute + output, MiB) for the
/// default model, created as the engine creates it, from docs/plan-accuracy.md:
/// (ctx, slots, KV type, compute, total). The model must land within max(5%, 64 MiB) and never
/// below what llama.cpp allocates by more than that.
#[test]
fn totals_within_tolerance_of_llama_cpp() {
    let (f16, q8) = (GgmlType::F16, GgmlType::Q8_0);
    let measured: &[(u64, u64, GgmlType, f64, f64)] = &[
        (512, 1, f16, 4.82, 262.64),
        (2048, 1, f16, 5.26, 271.33),
        (8192, 1, f16, 6.76, 290.83),
        (32768, 1, f16, 12.76, 368.83),
        (8192, 4, f16, 8.13, 317.70),
        (512, 1, q8, 5.35, 258.95),
        (2048, 1, q8, 5.79, 263.78),
        (8192, 1, q8, 7.29, 274.84),
        (32768, 1, q8, 13.29, 319.09),
        (8192, 4, q8, 7.66, 290.16),
    ];
    let spec = gemma3_270m();
    for &(n_ctx, n_seq, ty, compute, total) in measured {
        let m = estimate_memory(&spec, &slots(n_ctx, n_seq, ty)).unwrap();
        let ours = m.llama_buffers() as f64 / MIB_F;
        let tolerance = (total * 0.05).max(64.0);
        assert!(
            (ours - total).abs() <= tolerance && ours >= total,
            "{n_ctx} x{n_seq} {ty}: {ours:.2} vs {total:.2}"
        );
        // The compute buffer is modelled to within a few MiB, never under.
        let c = m.compute as f64 / MIB_F;
        assert!(
            c >= compute && c - compute < 5.0,
            "{n_ctx} x{n_seq} {ty}: compute {c:.2} vs {compute:.2}"
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
    // 339 MiB at 512 cells, 445 MiB at 32768 (docs/plan-accuracy.md): both budgets land between.
    let small = at(350).unwrap();
    let large = at(420).unwrap();
    assert!(small < large, "{small} {large}");
    assert_eq!(at(100_000), Some(32768));
    let m = estimate_memory(&spec, &RuntimeConfig { n_ctx: small, ..c }).unwrap();
    assert!(m.total() <= 350 * MIB);
    let over = estimate_memory(
        &spec,
        &RuntimeConfig {
            n_ctx: small + 256,
            ..c
        },
    )
    .unwrap();
    assert!(over.total() > 350 * MIB);
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
