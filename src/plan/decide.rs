//! The deployment decision, in the terms of the field guide's checklist: fully local,
//! local-first with cloud fallback, or cloud; a model size class and quantization to start from;
//! and the reasons, each with its number. Pure: it decides from [`Facts`] and [`Goals`].

use serde::Serialize;

const MIB: f64 = (1u64 << 20) as f64;
const GIB: f64 = (1u64 << 30) as f64;
/// Share of the bandwidth bound llama.cpp's decoding reached in docs/plan-accuracy.md.
const REALIZED_SHARE: f64 = 0.40;

/// Service goals (step 1 of the checklist). All optional.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Goals {
    /// Minimum decode speed, tokens per second (interactive chat wants 5 to 15).
    pub min_decode_tps: Option<f64>,
    /// Latency targets for one response, milliseconds.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    /// The context the product needs, tokens.
    pub required_ctx: Option<u64>,
    pub offline_required: bool,
    /// Data must not leave the device.
    pub no_egress: bool,
    /// Share of the available memory held back (0.15 = 15%).
    pub headroom: f64,
    /// The request the latency targets are about: prompt and response lengths, tokens.
    pub prompt_tokens: u64,
    pub response_tokens: u64,
}

impl Default for Goals {
    fn default() -> Self {
        Goals {
            min_decode_tps: None,
            p50_ms: None,
            p95_ms: None,
            required_ctx: None,
            offline_required: false,
            no_egress: false,
            headroom: 0.15,
            prompt_tokens: 512,
            response_tokens: 128,
        }
    }
}

/// The numbers the decision rests on, computed by the planner.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Facts {
    pub microcontroller: bool,
    pub has_accelerator: bool,
    pub ram_available: u64,
    /// Memory the plan may use: available less headroom.
    pub budget: u64,
    pub bandwidth: f64,
    pub n_params: u64,
    pub quant: String,
    pub weights: u64,
    /// The context the decision is judged at (required, else the plan's working context).
    pub ctx: u64,
    pub kv_at_ctx: u64,
    pub total_at_ctx: u64,
    /// Largest context that fits the budget (None: not even 256 tokens).
    pub max_ctx: Option<u64>,
    pub n_ctx_train: u64,
    pub decode_tps_bound: f64,
    pub prefill_tps: f64,
    pub overhead_dominated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Deployment {
    FullyLocal,
    LocalFirstCloudFallback,
    Cloud,
}

impl std::fmt::Display for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Deployment::FullyLocal => "fully local",
            Deployment::LocalFirstCloudFallback => "local-first with cloud fallback",
            Deployment::Cloud => "cloud",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub deployment: Deployment,
    /// Whether this model on this device meets every goal.
    pub meets_goals: bool,
    /// Model size class to start from on this device (step 3 of the checklist).
    pub suggested_size_class: String,
    pub suggested_quantization: String,
    /// Lower bound on one response's latency (prompt at the prefill estimate, response at the
    /// decode bound), milliseconds.
    pub latency_floor_ms: f64,
    pub reasons: Vec<String>,
}

pub fn mib(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= GIB {
        format!("{:.2} GiB", b / GIB)
    } else {
        format!("{:.1} MiB", b / MIB)
    }
}

/// Decides the deployment for `facts` under `goals`.
pub fn decide(facts: &Facts, goals: &Goals) -> Decision {
    let mut reasons = Vec::new();
    let must_stay_local = goals.offline_required || goals.no_egress;
    let latency_floor_ms = latency_floor_ms(facts, goals);
    let (size_class, quant) = suggest(facts, goals);

    if facts.microcontroller {
        reasons.push(format!(
            "a microcontroller with {} of RAM cannot hold the {} of weights; use it for intent detection and keyword spotting, and run the LLM elsewhere",
            mib(facts.ram_available),
            mib(facts.weights)
        ));
        return Decision {
            deployment: Deployment::Cloud,
            meets_goals: false,
            suggested_size_class: "none (not an LLM device)".into(),
            suggested_quantization: "none".into(),
            latency_floor_ms,
            reasons,
        };
    }

    let fits = facts.total_at_ctx <= facts.budget;
    let left_after_weights = facts.budget.saturating_sub(facts.weights);
    reasons.push(format!(
        "total at {} context is {} of the {} budget ({} available less {:.0}% headroom); KV cache is {} of the {} left after weights",
        facts.ctx,
        mib(facts.total_at_ctx),
        mib(facts.budget),
        mib(facts.ram_available),
        goals.headroom * 100.0,
        mib(facts.kv_at_ctx),
        mib(left_after_weights)
    ));
    match facts.max_ctx {
        Some(max) => reasons.push(format!(
            "largest context that fits: {max} tokens (trained: {})",
            facts.n_ctx_train
        )),
        None => reasons.push(format!(
            "the {} of weights and buffers do not fit in {} at any context",
            mib(facts.weights),
            mib(facts.budget)
        )),
    }
    let fits_somewhat = facts.max_ctx.is_some();

    let min_tps = goals.min_decode_tps.unwrap_or(5.0);
    let fast_enough = facts.decode_tps_bound >= min_tps;
    reasons.push(format!(
        "decode bound {:.1} tok/s ({}) vs the {min_tps:.0} tok/s {}",
        facts.decode_tps_bound,
        if fast_enough { "meets" } else { "under" },
        if goals.min_decode_tps.is_some() {
            "goal"
        } else {
            "interactive minimum"
        }
    ));
    if fast_enough {
        reasons.push(format!(
            "the bound is an upper bound: llama.cpp reached {:.0}% of it for the default model on the reference machine (docs/plan-accuracy.md), so expect about {:.1} tok/s; measure sustained speed on the device (checklist step 4)",
            REALIZED_SHARE * 100.0,
            facts.decode_tps_bound * REALIZED_SHARE
        ));
    }
    if facts.overhead_dominated {
        reasons.push("the model is so small that per-token overheads, not bandwidth, set its speed: the bound is loose".into());
    }
    let mut latency_ok = true;
    for (name, target) in [("p50", goals.p50_ms), ("p95", goals.p95_ms)] {
        let Some(target) = target else { continue };
        // The tail gets a 1.5x margin over the floor for thermals and other workloads.
        let floor = if name == "p95" {
            latency_floor_ms * 1.5
        } else {
            latency_floor_ms
        };
        let ok = floor <= target;
        latency_ok &= ok;
        reasons.push(format!(
            "{name} latency floor {floor:.0} ms for {} prompt + {} response tokens {} the {target:.0} ms target",
            goals.prompt_tokens,
            goals.response_tokens,
            if ok { "meets" } else { "misses" }
        ));
    }

    let meets_goals = fits && fast_enough && latency_ok;
    let deployment = if meets_goals || must_stay_local {
        Deployment::FullyLocal
    } else if fits_somewhat && facts.decode_tps_bound >= 1.0 {
        Deployment::LocalFirstCloudFallback
    } else {
        Deployment::Cloud
    };
    if must_stay_local {
        let why = if goals.offline_required {
            "offline operation is required"
        } else {
            "data may not leave the device"
        };
        if meets_goals {
            reasons.push(format!("{why}, and local inference meets the goals"));
        } else {
            reasons.push(format!(
                "{why}, so it must be local: the goals are not met with this model; start from a {size_class} model at {quant}"
            ));
        }
    } else if deployment == Deployment::LocalFirstCloudFallback {
        reasons.push(format!(
            "run locally up to {} tokens of context and fall back to the cloud beyond it or when too slow",
            facts.max_ctx.unwrap_or(0)
        ));
    }
    if !facts.has_accelerator && facts.ctx > 16384 {
        reasons.push("long context on CPU only: prefill dominates; GPU or NPU acceleration is the checklist's answer".into());
    }
    Decision {
        deployment,
        meets_goals,
        suggested_size_class: size_class,
        suggested_quantization: quant,
        latency_floor_ms,
        reasons,
    }
}

fn latency_floor_ms(facts: &Facts, goals: &Goals) -> f64 {
    let prefill = if facts.prefill_tps > 0.0 {
        goals.prompt_tokens as f64 / facts.prefill_tps
    } else {
        f64::INFINITY
    };
    let decode = if facts.decode_tps_bound > 0.0 {
        goals.response_tokens as f64 / facts.decode_tps_bound
    } else {
        f64::INFINITY
    };
    (prefill + decode) * 1000.0
}

/// The largest size class whose smallest member fits the budget at 4 bits (q4_K_M) with a
/// decode bound meeting the speed goal; q8_0 when even its largest member fits at 8 bits.
///
/// Rough sizing from the field guide: 4-bit is about 0.6 bytes per parameter with format
/// overhead, 8-bit about 1.07; a GQA model's f16 KV cache is about 16 KiB per token per
/// billion parameters.
fn suggest(facts: &Facts, goals: &Goals) -> (String, String) {
    // (smallest, largest member in billions of parameters, name)
    const CLASSES: &[(f64, f64, &str)] = &[
        (34.0, 70.0, "34B-70B"),
        (14.0, 34.0, "14B-34B"),
        (8.0, 14.0, "8B-14B"),
        (3.0, 8.0, "3B-8B"),
        (1.0, 3.0, "1B-3B"),
        (0.1, 1.0, "under 1B"),
    ];
    let ctx = goals.required_ctx.unwrap_or(4096) as f64;
    let min_tps = goals.min_decode_tps.unwrap_or(5.0);
    let overhead = 400.0 * MIB;
    let fits = |billions: f64, bytes_per_param: f64| {
        let weights = billions * 1e9 * bytes_per_param;
        let kv = 16.0 * 1024.0 * billions * ctx;
        weights + kv + overhead <= facts.budget as f64 && facts.bandwidth / weights >= min_tps
    };
    for &(smallest, largest, class) in CLASSES {
        if fits(smallest, 0.6) {
            let quant = if fits(largest, 1.07) {
                "q8_0"
            } else {
                "q4_K_M"
            };
            return (class.to_string(), quant.to_string());
        }
    }
    ("none fits".to_string(), "none: use the cloud".to_string())
}

#[cfg(test)]
mod tests;
