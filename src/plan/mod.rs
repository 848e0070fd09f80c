//! `edgellm plan`: will this model run on this device, at what context, how fast.
//!
//! Code map:
//! - `gguf`: the GGUF header reader (the gate before llama.cpp) and a writer for tests;
//! - `ggml_type`: ggml tensor types and their sizes;
//! - `model`: the model's shape, from the header;
//! - `estimate`: the memory and speed model, pure;
//! - `device`: presets and device files; `probe`: this machine (the only IO besides files);
//! - `decide`: the deployment decision, pure;
//! - `report`: the plan, as a table or JSON.
//!
//! Invariant: `estimate` and `decide` do no IO; everything they know comes in as arguments.

pub mod decide;
pub mod device;
pub mod estimate;
pub mod ggml_type;
pub mod gguf;
pub mod model;
pub mod probe;
pub mod report;

use std::path::{Path, PathBuf};

pub use decide::{Decision, Deployment, Goals};
pub use device::DeviceProfile;
pub use ggml_type::GgmlType;
pub use gguf::{GgufError, GgufHeader, read_header};
pub use model::ModelSpec;
pub use report::{Plan, PlanOptions, build_plan, render};

/// Why a plan could not be made. Display is one line.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("cannot plan this model: {0}")]
    Model(String),
    #[error("device: {0}")]
    Device(String),
    #[error("invalid argument: {0}")]
    Args(String),
    #[error("cannot serialize the plan: {0}")]
    Json(#[from] serde_json::Error),
}

/// `edgellm plan` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct PlanArgs {
    /// GGUF model file (default: the installed default model).
    #[arg(value_name = "MODEL")]
    pub model_path: Option<PathBuf>,
    /// GGUF model file, as an option.
    #[arg(
        short = 'm',
        long = "model",
        value_name = "MODEL",
        conflicts_with = "model_path"
    )]
    pub model: Option<PathBuf>,
    /// Device: a preset (mcu, rpi4, rpi5, gateway-8gb, gateway-16gb, gateway-32gb,
    /// jetson-orin-nano, jetson-agx-orin, phone-npu) or a TOML device file. Default: this machine.
    #[arg(long, value_name = "PRESET|FILE.toml")]
    pub device: Option<String>,
    /// Context lengths to tabulate (comma-separated).
    #[arg(long = "ctx", value_delimiter = ',', value_name = "N,...")]
    pub ctx: Vec<u64>,
    /// KV cache types to tabulate; the first one is used for the decision.
    #[arg(
        long = "kv-type",
        value_delimiter = ',',
        value_name = "f16|q8_0|q4_0,..."
    )]
    pub kv_type: Vec<String>,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
    /// Minimum decode speed, tokens per second (interactive chat wants 5-15).
    #[arg(long, value_name = "TOK/S")]
    pub min_tps: Option<f64>,
    /// p50 latency target for one response, milliseconds.
    #[arg(long, value_name = "MS")]
    pub p50_ms: Option<f64>,
    /// p95 latency target for one response, milliseconds.
    #[arg(long, value_name = "MS")]
    pub p95_ms: Option<f64>,
    /// Context the product needs, tokens.
    #[arg(long, value_name = "TOKENS")]
    pub required_ctx: Option<u64>,
    /// Prompt and response length the latency targets are about.
    #[arg(long, default_value_t = 512, value_name = "TOKENS")]
    pub prompt_tokens: u64,
    #[arg(long, default_value_t = 128, value_name = "TOKENS")]
    pub response_tokens: u64,
    /// Offline operation is required.
    #[arg(long)]
    pub offline: bool,
    /// Data may not leave the device.
    #[arg(long)]
    pub no_egress: bool,
    /// Memory held back from the available RAM: a percentage ("15%") or a fraction ("0.15").
    #[arg(long, default_value = "15%", value_name = "PERCENT")]
    pub headroom: String,
    /// Parallel sequences (server slots): they share one KV pool of the context's cells, each
    /// request limited to ctx / slots tokens; one logits row each.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub slots: u64,
}

impl PlanArgs {
    /// The goals the flags describe.
    pub fn goals(&self) -> Result<Goals, PlanError> {
        Ok(Goals {
            min_decode_tps: self.min_tps,
            p50_ms: self.p50_ms,
            p95_ms: self.p95_ms,
            required_ctx: self.required_ctx,
            offline_required: self.offline,
            no_egress: self.no_egress,
            headroom: parse_headroom(&self.headroom)?,
            prompt_tokens: self.prompt_tokens,
            response_tokens: self.response_tokens,
        })
    }

    /// The table's contexts, KV types and slots.
    pub fn options(&self) -> Result<PlanOptions, PlanError> {
        let mut options = PlanOptions {
            n_seq: self.slots.max(1),
            ..PlanOptions::default()
        };
        if !self.ctx.is_empty() {
            if let Some(&bad) = self.ctx.iter().find(|&&c| c == 0 || c > 1 << 24) {
                return Err(PlanError::Args(format!(
                    "context {bad} is out of range (1 to 16777216)"
                )));
            }
            options.contexts = self.ctx.clone();
        }
        if !self.kv_type.is_empty() {
            options.kv_types = self
                .kv_type
                .iter()
                .map(|name| parse_kv_type(name))
                .collect::<Result<_, _>>()?;
        }
        Ok(options)
    }
}

/// A KV cache type llama.cpp accepts for `-ctk`/`-ctv`.
pub fn parse_kv_type(name: &str) -> Result<GgmlType, PlanError> {
    match GgmlType::from_name(name) {
        Some(t)
            if [
                "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1",
            ]
            .contains(&t.name()) =>
        {
            Ok(t)
        }
        _ => Err(PlanError::Args(format!(
            "KV type '{name}' is not one of f16, bf16, f32, q8_0, q5_1, q5_0, q4_1, q4_0, iq4_nl"
        ))),
    }
}

/// "15%" or "0.15" -> 0.15.
pub fn parse_headroom(text: &str) -> Result<f64, PlanError> {
    let t = text.trim();
    let value = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    };
    match value {
        Ok(v) if (0.0..1.0).contains(&v) => Ok(v),
        _ => Err(PlanError::Args(format!(
            "headroom '{text}' is not a percentage below 100% (like 15%)"
        ))),
    }
}

/// Resolves `--device`: a preset, a device file, or (none) this machine probed.
pub fn resolve_device(device: Option<&str>) -> Result<DeviceProfile, PlanError> {
    match device {
        Some(spec) => device::resolve(spec),
        None => Ok(probe::this_machine()),
    }
}

/// Reads the model's header and makes the plan.
pub fn plan_for(
    model: &Path,
    device: &DeviceProfile,
    goals: &Goals,
    options: &PlanOptions,
) -> Result<Plan, PlanError> {
    let header = read_header(model)?;
    let spec = ModelSpec::from_header(&header)?;
    build_plan(&spec, device, goals, options)
}

/// The plan as JSON, with the default table and one sequence (for `GET /v1/plan`).
pub fn plan_json(
    model: &Path,
    device: &DeviceProfile,
    goals: &Goals,
) -> Result<serde_json::Value, PlanError> {
    plan_json_with(model, device, goals, &PlanOptions::default())
}

/// The plan as JSON with explicit options: the server passes `n_seq` = its slot count, which
/// sizes the sliding-window cache (a window per slot), the logits and the output buffer.
pub fn plan_json_with(
    model: &Path,
    device: &DeviceProfile,
    goals: &Goals,
    options: &PlanOptions,
) -> Result<serde_json::Value, PlanError> {
    let plan = plan_for(model, device, goals, options)?;
    to_json(&plan, model)
}

fn to_json(plan: &Plan, model: &Path) -> Result<serde_json::Value, PlanError> {
    let mut value = serde_json::to_value(plan)?;
    if let Some(object) = value.as_object_mut() {
        object.insert(
            "model_path".into(),
            serde_json::Value::String(model.display().to_string()),
        );
    }
    Ok(value)
}

/// `edgellm plan`: prints the table, or the JSON with `--json`.
pub fn run(args: &PlanArgs, default_model: &Path) -> anyhow::Result<()> {
    let model = args
        .model
        .as_deref()
        .or(args.model_path.as_deref())
        .unwrap_or(default_model);
    let goals = args.goals()?;
    let options = args.options()?;
    let device = resolve_device(args.device.as_deref())?;
    let plan = plan_for(model, &device, &goals, &options)
        .map_err(|e| anyhow::anyhow!("{}: {e}", model.display()))?;
    if args.json {
        let mut value = serde_json::to_value(&plan)?;
        if let Some(object) = value.as_object_mut() {
            object.insert(
                "model_path".into(),
                serde_json::Value::String(model.display().to_string()),
            );
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", render(&plan));
    }
    Ok(())
}
