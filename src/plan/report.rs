//! The plan: model, device, the memory table over contexts and KV types, speed, and the decision;
//! built from the pure model and rendered as a table or serialized as JSON.

use serde::Serialize;

use super::PlanError;
use super::decide::{Decision, Facts, Goals, decide, mib};
use super::device::DeviceProfile;
use super::estimate::{
    MemoryEstimate, RepackRules, RuntimeConfig, SpeedEstimate, estimate_memory, estimate_speed,
    max_context,
};
use super::ggml_type::GgmlType;
use super::model::ModelSpec;

/// What to tabulate, and how the engine runs the model.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanOptions {
    pub contexts: Vec<u64>,
    pub kv_types: Vec<GgmlType>,
    /// Parallel sequences (`edgellm serve` slots; 1 for `edgellm run`).
    pub n_seq: u64,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            contexts: vec![512, 2048, 4096, 8192, 16384, 32768],
            kv_types: vec![GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_0],
            n_seq: 1,
        }
    }
}

/// A complete plan (the JSON of `edgellm plan --json` and `GET /v1/plan`).
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub model: ModelSpec,
    pub device: DeviceProfile,
    pub runtime: RuntimeConfig,
    pub goals: Goals,
    /// Memory the plan may use: available less headroom.
    pub budget: u64,
    pub table: Vec<PlanRow>,
    pub max_context: Vec<MaxContext>,
    /// Speed at the working context with the first KV type.
    pub working_ctx: u64,
    pub speed: SpeedEstimate,
    pub decision: Decision,
    pub assumptions: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanRow {
    pub requested_ctx: u64,
    pub memory: MemoryEstimate,
    pub llama_buffers: u64,
    pub total: u64,
    pub fits: bool,
    pub beyond_trained_ctx: bool,
    pub decode_tps_bound: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MaxContext {
    pub kv_type: GgmlType,
    pub max_ctx: Option<u64>,
}

/// Builds the plan for `spec` on `device` under `goals`.
pub fn build_plan(
    spec: &ModelSpec,
    device: &DeviceProfile,
    goals: &Goals,
    options: &PlanOptions,
) -> Result<Plan, PlanError> {
    if !(0.0..1.0).contains(&goals.headroom) {
        return Err(PlanError::Args(format!(
            "headroom {} is not in [0, 1)",
            goals.headroom
        )));
    }
    let kv_types = if options.kv_types.is_empty() {
        vec![GgmlType::F16]
    } else {
        options.kv_types.clone()
    };
    let repack = if device.accelerator.is_some() {
        RepackRules::None
    } else {
        device.repack_rules()
    };
    let base = RuntimeConfig {
        n_seq: options.n_seq.max(1),
        repack,
        ..RuntimeConfig::default()
    };
    let budget = (device.ram_available as f64 * (1.0 - goals.headroom)) as u64;
    let throughput = device.throughput();

    let mut contexts = options.contexts.clone();
    contexts.extend(goals.required_ctx);
    contexts.sort_unstable();
    contexts.dedup();
    let mut table = Vec::new();
    for &kv_type in &kv_types {
        for &n_ctx in &contexts {
            let memory = estimate_memory(
                spec,
                &RuntimeConfig {
                    n_ctx,
                    kv_type,
                    ..base
                },
            )?;
            let speed = estimate_speed(spec, &memory, n_ctx, &throughput);
            table.push(PlanRow {
                requested_ctx: n_ctx,
                llama_buffers: memory.llama_buffers(),
                total: memory.total(),
                fits: memory.total() <= budget,
                beyond_trained_ctx: n_ctx > spec.n_ctx_train,
                decode_tps_bound: speed.decode_tps_bound,
                memory,
            });
        }
    }
    let mut max_ctx = Vec::new();
    for &kv_type in &kv_types {
        let max = max_context(spec, &RuntimeConfig { kv_type, ..base }, budget)?;
        max_ctx.push(MaxContext {
            kv_type,
            max_ctx: max,
        });
    }

    let working_ctx = goals.required_ctx.unwrap_or(spec.n_ctx_train.min(4096));
    let runtime = RuntimeConfig {
        n_ctx: working_ctx,
        kv_type: kv_types[0],
        ..base
    };
    let memory = estimate_memory(spec, &runtime)?;
    let speed = estimate_speed(spec, &memory, working_ctx, &throughput);
    let facts = Facts {
        microcontroller: device.microcontroller,
        has_accelerator: device.accelerator.is_some(),
        ram_available: device.ram_available,
        budget,
        bandwidth: throughput.bandwidth,
        n_params: spec.n_params,
        quant: spec.main_type.to_string(),
        weights: spec.weight_bytes,
        ctx: working_ctx,
        kv_at_ctx: memory.kv_bytes(),
        total_at_ctx: memory.total(),
        max_ctx: max_ctx[0].max_ctx,
        n_ctx_train: spec.n_ctx_train,
        decode_tps_bound: speed.decode_tps_bound,
        prefill_tps: speed.prefill_tps,
        overhead_dominated: speed.overhead_dominated,
    };
    let decision = decide(&facts, goals);
    Ok(Plan {
        model: spec.clone(),
        device: device.clone(),
        runtime,
        goals: goals.clone(),
        budget,
        table,
        max_context: max_ctx,
        working_ctx,
        speed,
        decision,
        assumptions: assumptions(&runtime, device, &kv_types),
    })
}

fn assumptions(
    runtime: &RuntimeConfig,
    device: &DeviceProfile,
    kv_types: &[GgmlType],
) -> Vec<String> {
    let mut list = vec![
        format!(
            "engine settings: n_batch {}, n_ubatch {}, flash attention {}, swa_full {}, {} slot(s) sharing one {} KV pool of n_ctx cells (each request limited to n_ctx / slots tokens), n_outputs_max = slots",
            runtime.n_batch,
            runtime.n_ubatch,
            if runtime.flash_attn { "on (auto on CPU)" } else { "off" },
            runtime.swa_full,
            runtime.n_seq,
            if runtime.kv_unified { "unified" } else { "per-slot" },
        ),
        "contexts are padded up to a multiple of 256 cells, as llama.cpp does; sliding-window layers keep pad(min(n_ctx, window x slots + n_ubatch), 256) cells".into(),
        "compute buffer: logits for one row per slot (n_vocab x slots f32), the attention masks over all cells, and one layer's activations".into(),
        "output buffer: n_vocab x slots f32 logits".into(),
        "runtime overhead: 48 MiB plus about 160 bytes per vocabulary entry (llama.cpp's tokenizer tables), outside llama.cpp's buffers".into(),
        "decode bound: every weight matrix (and the filled KV cache) is read once per token; real speed is lower".into(),
        "prefill: 2 FLOP per weight per token plus attention, at the device's sustained FLOP rate".into(),
    ];
    if kv_types.iter().any(|&t| t != GgmlType::F16) && device.accelerator.is_none() {
        list.push(
            "quantized KV types save memory, but on CPU llama.cpp decodes slower with them as the cache grows (docs/plan-accuracy.md: q8_0 at 32768 cells ran at under 2 tok/s where f16 ran at 44)".into(),
        );
    }
    match device.repack_rules() {
        RepackRules::None => {}
        rules => list.push(format!(
            "ggml's CPU backend keeps a repacked copy of some matrices ({rules:?}): the model column counts it as llama.cpp reports it, the total counts it once (the originals are mapped file pages the kernel can drop)"
        )),
    }
    if device.source == "preset" {
        list.push(format!(
            "bandwidth is the spec peak {:.1} GB/s x {:.0}% efficiency",
            device.bandwidth / 1e9,
            device.bandwidth_efficiency * 100.0
        ));
    }
    list
}

/// The plan as a readable table.
pub fn render(plan: &Plan) -> String {
    use std::fmt::Write;
    let m = &plan.model;
    let d = &plan.device;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "model:  {} ({}, {:.0}M params, {} main type, {:.2} bits/weight, {} weights)",
        m.name.as_deref().unwrap_or("unnamed"),
        m.architecture,
        m.n_params as f64 / 1e6,
        m.main_type,
        m.bits_per_weight,
        mib(m.weight_bytes)
    );
    let swa = if m.swa_window > 0 {
        format!(
            ", sliding window {} on {} of {} layers",
            m.swa_window, m.n_swa_layers, m.n_layer
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "        {} layers, {} heads / {} KV heads of {}, vocabulary {}, trained context {}{swa}",
        m.n_layer,
        m.n_head,
        m.n_head_kv.iter().max().copied().unwrap_or(0),
        m.head_dim_k,
        m.n_vocab,
        m.n_ctx_train
    );
    let _ = writeln!(
        out,
        "device: {} ({}): {} RAM, {} available, {} swap, {} cores, {:.1} GB/s bandwidth{}",
        d.name,
        d.source,
        mib(d.ram_total),
        mib(d.ram_available),
        mib(d.swap_total),
        d.cores,
        d.bandwidth * d.bandwidth_efficiency / 1e9,
        d.accelerator
            .as_deref()
            .map(|a| format!(", {a}"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "budget: {} ({:.0}% headroom held back)\n",
        mib(plan.budget),
        plan.goals.headroom * 100.0
    );
    let _ = writeln!(
        out,
        "{:>7} {:>5} {:>11} {:>11} {:>11} {:>10} {:>11} {:>10} {:>11} {:>5} {:>9}",
        "ctx",
        "KV",
        "model",
        "KV cache",
        "compute",
        "output",
        "llama.cpp",
        "runtime",
        "total",
        "fits",
        "decode<="
    );
    for row in &plan.table {
        let mem = &row.memory;
        let _ = writeln!(
            out,
            "{:>7} {:>5} {:>11} {:>11} {:>11} {:>10} {:>11} {:>10} {:>11} {:>5} {:>7.1}/s{}",
            mem.n_ctx,
            mem.kv_type.name(),
            mib(mem.weights + mem.repack),
            mib(mem.kv_bytes()),
            mib(mem.compute),
            mib(mem.output),
            mib(row.llama_buffers),
            mib(mem.runtime_overhead),
            mib(row.total),
            if row.fits { "yes" } else { "NO" },
            row.decode_tps_bound,
            if row.beyond_trained_ctx {
                "  (beyond trained context)"
            } else {
                ""
            }
        );
    }
    let maxes: Vec<String> = plan
        .max_context
        .iter()
        .map(|m| {
            format!(
                "{} {}",
                m.kv_type,
                m.max_ctx.map_or("none".to_string(), |c| c.to_string())
            )
        })
        .collect();
    let _ = writeln!(out, "\nlargest context that fits: {}", maxes.join(", "));
    let s = &plan.speed;
    let _ = writeln!(
        out,
        "speed at {} context: decode <= {:.1} tok/s ({} read per token), prefill ~ {:.0} tok/s (compute estimate){}",
        plan.working_ctx,
        s.decode_tps_bound,
        mib(s.bytes_per_token),
        s.prefill_tps,
        if s.overhead_dominated {
            "; overheads dominate at this size"
        } else {
            ""
        }
    );
    let dec = &plan.decision;
    let _ = writeln!(
        out,
        "\ndecision: {}{}",
        dec.deployment,
        if dec.meets_goals {
            " (meets the goals)"
        } else {
            " (goals not met)"
        }
    );
    let _ = writeln!(
        out,
        "start from: {} class at {} on this device",
        dec.suggested_size_class, dec.suggested_quantization
    );
    for reason in &dec.reasons {
        let _ = writeln!(out, "  - {reason}");
    }
    let _ = writeln!(out, "\nassumptions:");
    for a in &plan.assumptions {
        let _ = writeln!(out, "  - {a}");
    }
    out
}
