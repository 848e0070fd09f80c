//! The memory and speed model: pure functions of a [`ModelSpec`], a [`RuntimeConfig`] and a
//! device's figures. No IO, so it is tested table-driven.
//!
//! Memory follows what llama.cpp allocates (src/llama-context.cpp, llama-kv-cache*.cpp) for the
//! context the engine creates (src/engine/worker.rs, `create_context`):
//! - context: `n_ctx` is padded up to a multiple of 256. With a unified cache (the engine's
//!   setting) all `n_seq` slots share one pool of `n_ctx` cells; without, each slot gets its own
//!   stream of `pad(n_ctx / n_seq, 256)` cells;
//! - KV cache: per layer, K and V tensors of `n_head_kv * head_dim` elements per cell in the KV
//!   type; full-attention layers hold the whole pool, sliding-window layers
//!   `pad(min(pool, n_swa * n_seq + n_ubatch), 256)` cells when unified (every slot's window
//!   lives in the one pool), `pad(min(pool, n_swa + n_ubatch), 256)` per stream when not, and
//!   the whole pool with `swa_full`;
//! - model buffer: every tensor's bytes (the mapped file), plus a second copy of the matrices
//!   the CPU backend repacks into interleaved layouts (`CPU_REPACK`);
//! - compute buffer: the worst-case `n_ubatch` graph: logits for `min(n_ubatch, n_seq)` rows
//!   (the engine sets `n_outputs_max` = slots: one output per slot per batch), the attention
//!   masks (`cells * n_ubatch`, f16 with flash attention), and the activations of one layer;
//!   calibrated against llama.cpp's reports in docs/plan-accuracy.md;
//! - output buffer: `n_vocab` f32 logits for `max(n_outputs, n_seq)` rows, which is `n_seq`
//!   rows since no batch of the engine asks for more than one output per slot.

use serde::Serialize;

use super::PlanError;
use super::ggml_type::GgmlType;
use super::model::ModelSpec;

const MIB: u64 = 1 << 20;

/// How the engine creates the llama.cpp context. `Default` is edgellm's engine defaults.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RuntimeConfig {
    /// The context llama.cpp is created with (`-c`): the KV pool of all slots together.
    pub n_ctx: u64,
    pub kv_type: GgmlType,
    pub n_batch: u64,
    pub n_ubatch: u64,
    /// Parallel sequences (server slots); each request may use `n_ctx / n_seq` cells. Also the
    /// context's `n_outputs_max`: one logits row per slot.
    pub n_seq: u64,
    /// One KV pool shared by all slots (the engine's setting) rather than one stream per slot.
    pub kv_unified: bool,
    pub swa_full: bool,
    pub flash_attn: bool,
    pub repack: RepackRules,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            n_ctx: 2048,
            kv_type: GgmlType::F16,
            n_batch: 512,
            n_ubatch: 128,
            n_seq: 1,
            kv_unified: true,
            swa_full: false,
            flash_attn: true,
            repack: RepackRules::None,
        }
    }
}

/// Which weight matrices ggml's CPU backend copies into a repacked buffer (ggml-cpu/repack.cpp,
/// `ggml_repack_get_optimal_repack_type`), by the CPU's features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RepackRules {
    None,
    /// x86 with AVX2: q4_0, q4_K, iq4_nl, mxfp4 (rows % 8), and q2_K with AVX-512.
    X86Avx2 {
        avx512: bool,
    },
    /// Arm with NEON dot product: q4_0, iq4_nl, mxfp4, q8_0 (rows % 4), q4_K (rows % 8), and
    /// q5_K, q6_K with i8mm.
    ArmDotprod {
        i8mm: bool,
    },
}

impl RepackRules {
    fn repacks(self, ty: GgmlType, rows: u64) -> bool {
        let name = ty.name();
        match self {
            RepackRules::None => false,
            RepackRules::X86Avx2 { avx512 } => {
                rows.is_multiple_of(8)
                    && (matches!(name, "q4_0" | "q4_K" | "iq4_nl" | "mxfp4")
                        || (avx512 && name == "q2_K"))
            }
            RepackRules::ArmDotprod { i8mm } => match name {
                "q4_0" | "iq4_nl" | "mxfp4" | "q8_0" => rows.is_multiple_of(4),
                "q4_K" => rows.is_multiple_of(8),
                "q5_K" | "q6_K" => i8mm && rows.is_multiple_of(8),
                _ => false,
            },
        }
    }
}

/// The KV cache of one configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KvCache {
    /// Cells per stream of the full-attention layers (the padded `n_ctx` when unified).
    pub cells: u64,
    /// Cells per stream of the sliding-window layers (0 when there are none).
    pub swa_cells: u64,
    /// KV streams: 1 when unified, else one per slot.
    pub streams: u64,
    /// Bytes of the full-attention layers, all streams.
    pub bytes: u64,
    /// Bytes of the sliding-window layers, all streams.
    pub swa_bytes: u64,
}

/// What llama.cpp allocates for one configuration, in bytes, plus the runtime around it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MemoryEstimate {
    /// The context after llama.cpp's padding (a multiple of 256): full-attention cells, all
    /// streams.
    pub n_ctx: u64,
    pub kv_type: GgmlType,
    pub weights: u64,
    pub repack: u64,
    pub kv: KvCache,
    pub compute: u64,
    pub output: u64,
    /// Process, tokenizer and llama.cpp bookkeeping outside its buffers (an allowance).
    pub runtime_overhead: u64,
}

impl MemoryEstimate {
    /// What llama.cpp itself reports: model + KV + compute + output buffers.
    pub fn llama_buffers(&self) -> u64 {
        self.weights + self.repack + self.kv.bytes + self.kv.swa_bytes + self.compute + self.output
    }

    pub fn kv_bytes(&self) -> u64 {
        self.kv.bytes + self.kv.swa_bytes
    }

    /// Everything the process keeps resident. The repacked copies are counted and their
    /// originals are not: after loading, the originals are clean pages of the mapped file that
    /// are never read again, which the kernel drops under memory pressure.
    pub fn total(&self) -> u64 {
        self.weights + self.kv_bytes() + self.compute + self.output + self.runtime_overhead
    }
}

fn pad(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

/// The KV cache llama.cpp allocates; fails when the KV type cannot hold a row of this model.
pub fn kv_cache(spec: &ModelSpec, cfg: &RuntimeConfig) -> Result<KvCache, PlanError> {
    let n_seq = cfg.n_seq.max(1);
    let n_ctx = pad(cfg.n_ctx.max(1), 256);
    let (cells, streams) = if cfg.kv_unified {
        (n_ctx, 1)
    } else {
        (pad(n_ctx / n_seq, 256).max(256), n_seq)
    };
    let swa_cells = if spec.swa_window == 0 {
        0
    } else if cfg.swa_full {
        cells
    } else {
        // A unified pool holds every slot's window; a stream holds one.
        let windows = if cfg.kv_unified { n_seq } else { 1 };
        pad(cells.min(spec.swa_window * windows + micro_batch(cfg)), 256)
    };
    let (mut bytes, mut swa_bytes) = (0u64, 0u64);
    for (il, &n_head_kv) in spec.n_head_kv.iter().enumerate() {
        if n_head_kv == 0 {
            continue;
        }
        let row = |head_dim: u64| {
            cfg.kv_type.row_bytes(n_head_kv * head_dim).ok_or_else(|| {
                PlanError::Model(format!(
                    "KV type {} needs rows that are a multiple of {} elements; layer {il} has {}",
                    cfg.kv_type,
                    cfg.kv_type.block_size(),
                    n_head_kv * head_dim
                ))
            })
        };
        let per_cell = row(spec.head_dim_k)? + row(spec.head_dim_v)?;
        if spec.swa_layers.get(il).copied().unwrap_or(false) {
            swa_bytes += per_cell * swa_cells * streams;
        } else {
            bytes += per_cell * cells * streams;
        }
    }
    Ok(KvCache {
        cells,
        swa_cells,
        streams,
        bytes,
        swa_bytes,
    })
}

/// llama.cpp's `n_ubatch`: at most `n_batch`, which is at most the requested (unpadded) context.
fn micro_batch(cfg: &RuntimeConfig) -> u64 {
    let n_batch = cfg.n_batch.min(cfg.n_ctx.max(1));
    cfg.n_ubatch.min(n_batch).max(1)
}

/// Everything llama.cpp allocates for `cfg`, and the runtime allowance.
pub fn estimate_memory(spec: &ModelSpec, cfg: &RuntimeConfig) -> Result<MemoryEstimate, PlanError> {
    let kv = kv_cache(spec, cfg)?;
    let n_seq = cfg.n_seq.max(1);
    let n_tokens = micro_batch(cfg);
    let n_embd_q = spec.n_head * spec.head_dim_k;
    let n_embd_kv = spec.n_head_kv.iter().copied().max().unwrap_or(0) * spec.head_dim_k;

    // The worst-case graph: logits for the outputs of a micro-batch, one per slot
    // (`n_outputs_max` = slots) ...
    let logits = spec.n_vocab * n_tokens.min(n_seq) * 4;
    // ... the KQ masks of both caches, one row per token over every cell of every stream (f16
    // with flash attention, f32 without) ...
    let mask_elem = if cfg.flash_attn { 2 } else { 4 };
    let masks = (kv.cells + kv.swa_cells) * n_tokens * mask_elem;
    // ... and one layer's activations: gate, up and their product, Q, K, V, the residual.
    let mut activations =
        n_tokens * 4 * (3 * spec.n_ff + n_embd_q + 2 * n_embd_kv + 3 * spec.n_embd);
    if cfg.flash_attn && cfg.kv_type != GgmlType::F16 {
        // Flash attention over a quantized cache converts Q as well.
        activations += n_tokens * 4 * n_embd_q;
    }
    if !cfg.flash_attn {
        // Without flash attention the KQ scores and their softmax are materialized.
        activations += kv.cells * n_tokens * spec.n_head * 4 * 2;
    }
    let compute = logits + masks + activations;

    let repack = spec
        .matrices
        .iter()
        .filter(|&&(ty, rows, _)| cfg.repack.repacks(ty, rows))
        .map(|&(_, _, bytes)| bytes)
        .sum();

    Ok(MemoryEstimate {
        n_ctx: kv.cells * kv.streams,
        kv_type: cfg.kv_type,
        weights: spec.weight_bytes,
        repack,
        kv,
        compute,
        // `output_reserve(n_seq_max)`: `n_vocab * max(n_outputs, n_seq)` f32, allocated as is.
        output: spec.n_vocab * n_seq * 4,
        runtime_overhead: runtime_overhead(spec),
    })
}

/// Memory outside llama.cpp's buffers: the edgellm process and its HTTP stack, ggml's tensor
/// bookkeeping, and the tokenizer. Measured for `edgellm serve` with the default model: 10.7 MiB
/// before the model loads, and about 41 MiB of llama.cpp vocabulary and loader tables for its
/// 262,144 entries (164 bytes each). The 48 MiB base also covers the worker threads' malloc
/// arenas and the repacked matrices' originals, resident until the kernel reclaims them.
pub fn runtime_overhead(spec: &ModelSpec) -> u64 {
    48 * MIB + spec.n_vocab * 160
}

/// The largest context (a multiple of 256, at most the trained context) whose total memory stays
/// within `budget` bytes, or `None` when not even 256 tokens fit.
pub fn max_context(
    spec: &ModelSpec,
    cfg: &RuntimeConfig,
    budget: u64,
) -> Result<Option<u64>, PlanError> {
    let fits = |n_ctx: u64| -> Result<bool, PlanError> {
        let m = estimate_memory(spec, &RuntimeConfig { n_ctx, ..*cfg })?;
        Ok(m.total() <= budget)
    };
    let step = 256 * cfg.n_seq.max(1);
    let limit = pad(spec.n_ctx_train.max(256), 256) * cfg.n_seq.max(1);
    if !fits(step)? {
        return Ok(None);
    }
    // Memory grows with the context: binary search over multiples of `step`.
    let (mut lo, mut hi) = (1u64, limit / step);
    if fits(hi * step)? {
        return Ok(Some(hi * step));
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid * step)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(Some(lo * step))
}

/// A device's performance figures the speed model needs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Throughput {
    /// Memory bandwidth a single inference stream can use, bytes per second.
    pub bandwidth: f64,
    /// Sustained arithmetic for quantized matrix products, floating-point operations per second.
    pub flops: f64,
}

/// Speed bounds for one configuration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SpeedEstimate {
    /// Bytes read from memory per generated token: the weights every token touches and the KV
    /// cache up to the context.
    pub bytes_per_token: u64,
    /// Upper bound on generated tokens per second: bandwidth / bytes per token.
    pub decode_tps_bound: f64,
    /// Floating-point operations per prompt token.
    pub flops_per_token: f64,
    /// Estimated prompt-processing tokens per second (compute-bound).
    pub prefill_tps: f64,
    /// True when a token moves so few bytes (under 2 ms of bandwidth) that per-token overheads
    /// (thread sync, sampling over the vocabulary, graph setup) dominate and the bound is loose.
    pub overhead_dominated: bool,
}

/// Bandwidth bound for decoding and a compute estimate for prefill, at a KV fill of `n_ctx`.
pub fn estimate_speed(
    spec: &ModelSpec,
    mem: &MemoryEstimate,
    n_ctx: u64,
    device: &Throughput,
) -> SpeedEstimate {
    // Every token reads every matrix once; the embedding table only one row, unless it doubles
    // as the output projection. Repacked copies replace their originals (not read twice).
    let embd_skipped = if spec.tied_output {
        0
    } else {
        spec.token_embd_bytes
    };
    let weights_read = spec.weight_bytes.saturating_sub(embd_skipped);
    let kv_read = kv_bytes_read(mem, n_ctx);
    let bytes_per_token = weights_read + kv_read;
    let decode_tps_bound = if bytes_per_token == 0 {
        0.0
    } else {
        device.bandwidth / bytes_per_token as f64
    };
    // Prefill computes logits only for the last prompt token: the vocabulary matrices (the
    // embedding table, and the output projection when separate) cost nothing per token.
    let vocab_matrices = if spec.tied_output { 1 } else { 2 } * spec.n_vocab * spec.n_embd;
    let matmul_params = spec.n_params.saturating_sub(vocab_matrices);
    let attention =
        4.0 * spec.n_layer as f64 * (n_ctx as f64 / 2.0) * (spec.n_head * spec.head_dim_k) as f64;
    let flops_per_token = 2.0 * matmul_params as f64 + attention;
    let prefill_tps = if flops_per_token > 0.0 {
        device.flops / flops_per_token
    } else {
        0.0
    };
    SpeedEstimate {
        bytes_per_token,
        decode_tps_bound,
        flops_per_token,
        prefill_tps,
        overhead_dominated: device.bandwidth > 0.0
            && (bytes_per_token as f64 / device.bandwidth) < 0.002,
    }
}

/// KV bytes read for one token at a fill of `n_ctx`: the filled part of the full-attention
/// cache, and the window (at most) of the sliding-window cache.
fn kv_bytes_read(mem: &MemoryEstimate, n_ctx: u64) -> u64 {
    let share = |bytes: u64, cells: u64, used: u64| -> u64 {
        if cells == 0 {
            0
        } else {
            (bytes as u128 * used.min(cells) as u128 / cells as u128) as u64
        }
    };
    share(mem.kv.bytes, mem.n_ctx, n_ctx) + share(mem.kv.swa_bytes, mem.kv.swa_cells, n_ctx)
}

#[cfg(test)]
mod tests;
