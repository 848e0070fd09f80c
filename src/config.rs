//! `edgellm serve` configuration: a TOML file, overridden by `EDGELLM_*` environment variables and
//! command-line flags (flags win). The raw file is parsed strictly (an unknown key is an error that
//! names it) and then validated into [`ServeConfig`], the type the server uses.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::egress::Egress;
use crate::engine::{EngineConfig, KvType};
use crate::route::{Reason, RemoteApi, RemoteTier, RoutingPolicy, Tier, TierKind};
use crate::service::Limits;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("cannot read API key file {path}: {source}")]
    KeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "API key file {path} holds no key: refusing to start an open server (put one key per line, or remove api_key_file)"
    )]
    EmptyKeyFile { path: PathBuf },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The TOML file as written. Every section and key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub model: RawModel,
    /// `[keys]`: the device key that opens encrypted models.
    #[serde(default)]
    pub keys: crate::vault::KeyConfig,
    #[serde(default)]
    pub limits: RawLimits,
    /// `[sampling]`: what a request gets for the sampling settings it does not set.
    #[serde(default)]
    pub sampling: RawSampling,
    #[serde(default)]
    pub routing: RawRouting,
    /// The ordered tiers; none means the embedded engine alone.
    #[serde(default)]
    pub tiers: Vec<RawTier>,
    /// The egress guard: what is redacted before anything leaves the device.
    #[serde(default)]
    pub redaction: crate::guard::redact::RedactionConfig,
    /// The egress guard: opt-in and the networks remote tiers may use.
    #[serde(default)]
    pub network: crate::guard::network::NetworkPolicy,
    /// The egress guard: daily caps on remote use, ledger retention.
    #[serde(default)]
    pub budget: crate::guard::budget::BudgetConfig,
    /// Allowlisted actions a model's output may trigger.
    #[serde(default)]
    pub actions: Vec<crate::actions::RawAction>,
    /// Named prompt + schema + allowed actions.
    #[serde(default)]
    pub tasks: Vec<crate::tasks::RawTask>,
    /// The MQTT bridge (off when absent).
    pub mqtt: Option<crate::mqtt::RawMqtt>,
    /// `[telemetry]`: push metrics to a remote-write receiver (docs/telemetry.md).
    pub telemetry: Option<crate::telemetry::RawTelemetry>,
    /// `[embedding]`: the embedding model served beside the generation model.
    pub embedding: Option<crate::embeddings::RawEmbedding>,
    /// `[[packs]]`: knowledge packs requests may answer from.
    #[serde(default)]
    pub packs: Vec<crate::pack::PackSpec>,
    /// `[activation]`: the health gate a newly activated model passes before `serve` switches
    /// to it (docs/delivery.md).
    #[serde(default)]
    pub activation: crate::delivery::gate::GateConfig,
    /// `[delivery]`: the links model pulls may use, the daily download budget.
    #[serde(default)]
    pub delivery: crate::delivery::policy::DeliveryPolicy,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub api_keys: Option<Vec<String>>,
    pub api_key_file: Option<PathBuf>,
    pub log_prompts: Option<bool>,
    /// Browser origins that may call the gateway: "*", "localhost", or origins
    /// [default: ["localhost"]].
    pub cors_origins: Option<Vec<String>>,
    /// Serve `GET /slots` (llama-server's `--slots`) [default: false].
    pub slots_endpoint: Option<bool>,
    /// Serve `GET /metrics` (Prometheus text) [default: true]; `false` answers it 501, as
    /// llama-server without `--metrics`.
    pub metrics: Option<bool>,
    /// Let `/cors-proxy` forward GET and POST to this device's loopback services (llama-server's
    /// `--ui-mcp-proxy`, used by its web UI to reach MCP servers) [default: false: 403].
    pub ui_mcp_proxy: Option<bool>,
    pub shutdown_grace_secs: Option<u64>,
    /// Where the ledger (spend and audit database) lives [default: $EDGELLM_HOME].
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub path: Option<PathBuf>,
    /// The model name clients use (`model` field); defaults to the file name without `.gguf`.
    /// Several, comma-separated, as llama-server's `--alias`: `/v1/models` lists them all and
    /// the first in alphabetical order is the model's id.
    pub alias: Option<String>,
    /// Tags `/v1/models` lists for the model (llama-server's `--tags`), comma-separated.
    pub tags: Option<String>,
    pub threads: Option<u32>,
    pub threads_batch: Option<u32>,
    pub ctx_size: Option<u32>,
    /// Every slot may use the whole context, sharing its cells (llama-server's `--kv-unified`)
    /// [default: false: each slot has ctx_size / slots].
    pub kv_unified: Option<bool>,
    /// Unload the model after this many seconds without a request that needs it; the next
    /// such request loads it again (llama-server's `--sleep-idle-seconds`) [default: never].
    pub sleep_idle_secs: Option<u64>,
    pub batch_size: Option<u32>,
    pub ubatch_size: Option<u32>,
    pub kv_type: Option<KvType>,
    /// How tokens a schema or grammar forces are appended: exact, canonical, off [default: exact].
    pub jump_forward: Option<crate::constraint::JumpForward>,
    /// One of llama.cpp's built-in chat templates (`chatml`, `llama3`, ...) instead of the
    /// GGUF's own; an unknown name refuses the start.
    pub chat_template: Option<String>,
    pub slots: Option<u32>,
    /// The model's sha256 (64 hex digits): checked before every load; a mismatch refuses to
    /// start. For an encrypted model, the plaintext's (its header names it).
    pub sha256: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_body_bytes: Option<usize>,
    pub max_prompt_tokens: Option<usize>,
    pub max_tokens: Option<u32>,
    /// What a request that does not say gets (llama-server's `-n`) [default: max_tokens].
    pub default_max_tokens: Option<u32>,
    pub queue_depth: Option<usize>,
    pub request_timeout_secs: Option<u64>,
}

/// `[sampling]`: the server's defaults for requests (llama-server's `--temp`, `--seed`, ...).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSampling {
    pub temperature: Option<f32>,
    /// -1 picks a random seed per request.
    pub seed: Option<i64>,
    pub top_k: Option<i32>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
}

impl RawSampling {
    /// The defaults, checked as a request's settings are.
    fn into_params(self) -> Result<crate::engine::SamplingParams, ConfigError> {
        let defaults = crate::engine::SamplingParams::default();
        let seed = match self.seed {
            None | Some(-1) => None,
            Some(seed) => Some(u32::try_from(seed).map_err(|_| {
                ConfigError::Invalid(format!(
                    "sampling.seed {seed} must be -1 (random) or between 0 and {}",
                    u32::MAX
                ))
            })?),
        };
        let params = crate::engine::SamplingParams {
            temperature: self.temperature.unwrap_or(defaults.temperature),
            top_k: self.top_k.unwrap_or(defaults.top_k),
            top_p: self.top_p.unwrap_or(defaults.top_p),
            min_p: self.min_p.unwrap_or(defaults.min_p),
            seed,
            ..defaults
        };
        params
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("[sampling]: {e}")))?;
        Ok(params)
    }
}

/// `[routing]`: when a request leaves the local tier, and how remote tiers are called.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    /// Reasons that may escalate (default: all of local_error, context, deadline,
    /// low_confidence, overloaded, thermal).
    pub escalate_on: Option<Vec<Reason>>,
    pub first_token_deadline_ms: Option<u64>,
    pub total_deadline_ms: Option<u64>,
    pub min_mean_logprob: Option<f32>,
    pub min_window_logprob: Option<f32>,
    pub confidence_window: Option<usize>,
    pub min_q10_logprob: Option<f32>,
    pub min_q25_logprob: Option<f32>,
    pub min_sum_logprob: Option<f32>,
    pub min_first_logprob: Option<f32>,
    pub min_first_margin: Option<f32>,
    pub max_mean_entropy: Option<f32>,
    /// `[routing.confidence_combiner]`: logistic regression over the confidence signals (what
    /// `edgellm calibrate` writes).
    pub confidence_combiner: Option<crate::route::confidence::Combiner>,
    pub hold_tokens: Option<usize>,
    pub max_queued: Option<usize>,
    pub thermal_max_celsius: Option<f32>,
    pub thermal_min_freq_ratio: Option<f32>,
    pub sysfs_root: Option<PathBuf>,
    pub retries: Option<u32>,
    pub retry_backoff_ms: Option<u64>,
    pub breaker_failures: Option<u32>,
    pub breaker_cooldown_ms: Option<u64>,
}

/// One `[[tiers]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTier {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: RawTierType,
    pub url: Option<String>,
    pub model: Option<String>,
    /// The environment variable holding the API key (keys never live in the file).
    pub api_key_env: Option<String>,
    pub connect_timeout_ms: Option<u64>,
    pub timeout_secs: Option<u64>,
    pub max_tokens: Option<u32>,
    pub price_input_per_mtok: Option<f64>,
    pub price_output_per_mtok: Option<f64>,
    /// PEM file with extra root certificates for an https:// endpoint behind a private CA.
    pub ca_file: Option<PathBuf>,
    /// For a `local` tier with a `url`: which API the local server speaks.
    pub api: Option<RawLocalApi>,
}

/// The API of a local server (a `local` tier with a `url`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawLocalApi {
    /// OpenAI Chat Completions: llama-server's and Ollama's `/v1`.
    OpenaiChat,
    /// llama-server's native `POST /completion`.
    Llama,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawTierType {
    /// The embedded engine.
    Local,
    /// Any OpenAI-compatible Chat Completions endpoint.
    OpenaiChat,
    /// OpenAI's Responses API.
    OpenaiResponses,
}

impl RawConfig {
    pub fn from_file(path: &Path) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.into(),
            message,
        })
    }

    pub fn from_toml(text: &str) -> Result<RawConfig, String> {
        toml::from_str(text).map_err(|e| e.message().to_string())
    }
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Every address to listen on (`server.host` may list several, comma-separated).
    pub listen: Vec<SocketAddr>,
    pub engine: EngineConfig,
    /// The model's id (the first of `model_aliases`).
    pub model_alias: String,
    /// Every name of the model, sorted.
    pub model_aliases: Vec<String>,
    pub model_tags: Vec<String>,
    /// Bearer tokens accepted; empty means no authentication.
    pub api_keys: Vec<String>,
    pub log_prompts: bool,
    pub cors: crate::api::CorsPolicy,
    pub slots_endpoint: bool,
    /// `GET /metrics` is served.
    pub metrics_endpoint: bool,
    /// `/cors-proxy` forwards to loopback services (`crate::api` proxy module).
    pub ui_mcp_proxy: bool,
    /// The model sleeps (is unloaded) after this long without a request that needs it.
    pub sleep_idle: Option<Duration>,
    pub shutdown_grace: Duration,
    pub limits: Limits,
    /// What a request gets for the sampling settings it does not set (`[sampling]`).
    pub sampling: crate::engine::SamplingParams,
    pub routing: RoutingPolicy,
    /// Where the ledger lives.
    pub data_dir: PathBuf,
    pub egress: Egress,
    pub actions: Vec<crate::actions::ActionSpec>,
    pub tasks: Vec<crate::tasks::Task>,
    pub mqtt: Option<crate::mqtt::MqttConfig>,
    pub telemetry: Option<crate::telemetry::TelemetryConfig>,
    /// The embedding model and its limits; `None` serves no embeddings.
    pub embedding: Option<crate::embeddings::EmbeddingConfig>,
    /// The knowledge packs, opened (a configured pack that does not open refuses the start).
    pub packs: std::sync::Arc<crate::pack::Packs>,
    pub activation: crate::delivery::gate::GateConfig,
}

impl ServeConfig {
    pub const DEFAULT_SLOTS: u32 = 4;
    pub const DEFAULT_CTX: u32 = 8192;

    /// Validates a raw configuration (already merged with environment and flags).
    pub fn from_raw(raw: RawConfig) -> Result<ServeConfig, ConfigError> {
        let invalid = |m: String| ConfigError::Invalid(m);
        let host = raw.server.host.unwrap_or_else(|| "127.0.0.1".into());
        let port = raw.server.port.unwrap_or(8080);
        // One address or several, comma-separated, as llama-server takes them.
        let mut listen: Vec<SocketAddr> = Vec::new();
        for one in host.split(',').map(str::trim) {
            let address: SocketAddr = format!("{one}:{port}")
                .parse()
                .or_else(|_| format!("[{one}]:{port}").parse())
                .map_err(|_| invalid(format!("server.host {one:?} is not an IP address")))?;
            if listen.contains(&address) {
                return Err(invalid(format!("server.host lists {one} twice")));
            }
            listen.push(address);
        }

        let model_path = match raw.model.path {
            Some(path) => crate::delivery::slots::resolve_reference(&crate::paths::home(), path)
                .map_err(invalid)?,
            None => crate::paths::default_model(),
        };
        let mut engine = EngineConfig::new(model_path);
        if let Some(t) = raw.model.threads {
            engine.n_threads = t;
            engine.n_threads_batch = t;
        }
        if let Some(t) = raw.model.threads_batch {
            engine.n_threads_batch = t;
        }
        engine.slots = raw.model.slots.unwrap_or(Self::DEFAULT_SLOTS);
        engine.n_ctx = raw.model.ctx_size.unwrap_or(Self::DEFAULT_CTX);
        engine.kv_unified = raw.model.kv_unified.unwrap_or(false);
        engine.n_batch = raw
            .model
            .batch_size
            .unwrap_or(EngineConfig::DEFAULT_N_BATCH);
        // A micro-batch left at its default follows a smaller batch down, as llama.cpp clamps
        // it; one set explicitly above the batch is refused.
        engine.n_ubatch = raw
            .model
            .ubatch_size
            .unwrap_or(EngineConfig::DEFAULT_N_UBATCH.min(engine.n_batch));
        engine.kv_type = raw.model.kv_type.unwrap_or(KvType::F16);
        engine.jump_forward = raw.model.jump_forward.unwrap_or_default();
        if let Some(name) = &raw.model.chat_template {
            let known = crate::engine::builtin_template_names();
            if !known.contains(name) {
                return Err(invalid(format!(
                    "model.chat_template {name:?} is not one of llama.cpp's built-in templates: {}",
                    known.join(", ")
                )));
            }
        }
        engine.chat_template = raw.model.chat_template.clone();
        if let Some(sha) = &raw.model.sha256 {
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(format!(
                    "model.sha256 {sha:?} is not a sha256 (64 hex digits)"
                )));
            }
            engine.sha256 = Some(sha.to_ascii_lowercase());
        }
        engine.keys = raw.keys.clone();
        engine.validate().map_err(|e| invalid(e.to_string()))?;
        let list = |field: &str, text: &str| -> Result<Vec<String>, ConfigError> {
            let mut names = std::collections::BTreeSet::new();
            for name in text.split(',').map(str::trim) {
                if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
                    return Err(invalid(format!(
                        "model.{field}: {name:?} is not a name (1 to 128 characters, no control characters)"
                    )));
                }
                names.insert(name.to_string());
            }
            Ok(names.into_iter().collect())
        };
        let model_aliases = match &raw.model.alias {
            Some(text) => list("alias", text)?,
            None => {
                let name = engine
                    .model_path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let name = name.strip_suffix(".enc").unwrap_or(&name);
                vec![name.strip_suffix(".gguf").unwrap_or(name).to_string()]
            }
        };
        // The id is the first alias in alphabetical order, as llama-server takes it.
        let model_alias = model_aliases.first().cloned().unwrap_or_default();
        let model_tags = match &raw.model.tags {
            Some(text) => list("tags", text)?,
            None => Vec::new(),
        };

        let mut api_keys = raw.server.api_keys.unwrap_or_default();
        if let Some(path) = raw.server.api_key_file {
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::KeyFile {
                path: path.clone(),
                source,
            })?;
            let keys = read_keys(&text);
            // Fail closed: a key file that was meant to protect the server but holds no key
            // (empty, only comments, truncated by a bad provisioning step) must not open it.
            if keys.is_empty() {
                return Err(ConfigError::EmptyKeyFile { path });
            }
            api_keys.extend(keys);
        }
        if api_keys.iter().any(|k| k.len() < 8) {
            return Err(invalid("API keys must be at least 8 characters".into()));
        }

        let defaults = Limits::default();
        let limits = Limits {
            max_body_bytes: raw.limits.max_body_bytes.unwrap_or(defaults.max_body_bytes),
            max_prompt_tokens: raw
                .limits
                .max_prompt_tokens
                .unwrap_or(defaults.max_prompt_tokens),
            max_tokens: raw.limits.max_tokens.unwrap_or(defaults.max_tokens),
            default_max_tokens: raw.limits.default_max_tokens,
            queue_depth: raw.limits.queue_depth.unwrap_or(defaults.queue_depth),
            request_timeout: raw
                .limits
                .request_timeout_secs
                .map_or(defaults.request_timeout, Duration::from_secs),
        };
        if limits.max_body_bytes < 1024 {
            return Err(invalid(
                "limits.max_body_bytes must be at least 1024".into(),
            ));
        }
        if limits.max_tokens == 0 || limits.max_prompt_tokens == 0 {
            return Err(invalid(
                "limits.max_tokens and limits.max_prompt_tokens must be at least 1".into(),
            ));
        }
        if let Some(n) = limits.default_max_tokens
            && (n == 0 || n > limits.max_tokens)
        {
            return Err(invalid(format!(
                "limits.default_max_tokens ({n}) must be between 1 and limits.max_tokens ({})",
                limits.max_tokens
            )));
        }
        if limits.request_timeout.is_zero() {
            return Err(invalid(
                "limits.request_timeout_secs must be at least 1".into(),
            ));
        }
        let routing = routing_policy(raw.routing, raw.tiers)?;
        let egress = Egress {
            redactor: crate::guard::redact::Redactor::new(&raw.redaction)
                .map_err(|e| invalid(format!("[redaction]: {e}")))?,
            network: raw.network,
            budget: raw
                .budget
                .validate()
                .map_err(|e| invalid(format!("[budget]: {e}")))?,
        };
        let env = |var: &str| std::env::var(var).ok();
        let actions = crate::actions::validate_actions(&raw.actions, &env)
            .map_err(|e| invalid(format!("[[actions]]: {e}")))?;
        // The registry checks the argument schemas compile; the server builds its own with the
        // ledger as audit sink.
        let registry = crate::actions::ActionRegistry::new(
            actions.clone(),
            std::sync::Arc::new(crate::actions::MemoryAuditSink::new()),
        )
        .map_err(|e| invalid(format!("[[actions]]: {e}")))?;
        let tasks = crate::tasks::validate_tasks(&raw.tasks, &registry)
            .map_err(|e| invalid(format!("[[tasks]]: {e}")))?;
        let mqtt = match &raw.mqtt {
            None => None,
            Some(mqtt) => Some(
                mqtt.validate(&tasks, &env)
                    .map_err(|e| invalid(format!("[mqtt]: {e}")))?,
            ),
        };
        let cors = match &raw.server.cors_origins {
            Some(list) => crate::api::CorsPolicy::parse(list).map_err(ConfigError::Invalid)?,
            None => crate::api::CorsPolicy::default(),
        };
        let telemetry = match &raw.telemetry {
            None => None,
            Some(section) => Some(
                section
                    .validate(&model_alias, &env)
                    .map_err(|e| invalid(format!("[telemetry]: {e}")))?,
            ),
        };
        let embedding =
            crate::embeddings::EmbeddingConfig::from_raw(raw.embedding).map_err(invalid)?;
        if !raw.packs.is_empty() && embedding.is_none() {
            return Err(invalid(
                "[[packs]] need an embedding model: set [embedding] model or install the default one"
                    .into(),
            ));
        }
        if !raw.packs.is_empty()
            && embedding
                .as_ref()
                .is_some_and(|e| e.engine.pooling == Some(crate::engine::embed::Pooling::None))
        {
            return Err(invalid(
                "[[packs]] need pooled vectors: [embedding] pooling = \"none\" gives one per token"
                    .into(),
            ));
        }
        let packs =
            std::sync::Arc::new(crate::pack::Packs::open(&raw.packs, &raw.keys).map_err(invalid)?);
        let sampling = raw.sampling.into_params()?;
        raw.activation.validate().map_err(invalid)?;
        Ok(ServeConfig {
            activation: raw.activation,
            sampling,
            packs,
            embedding,
            telemetry,
            data_dir: raw.server.data_dir.unwrap_or_else(crate::paths::home),
            egress,
            actions,
            tasks,
            mqtt,
            routing,
            listen,
            engine,
            model_alias,
            model_aliases,
            model_tags,
            api_keys,
            log_prompts: raw.server.log_prompts.unwrap_or(false),
            cors,
            slots_endpoint: raw.server.slots_endpoint.unwrap_or(false),
            metrics_endpoint: raw.server.metrics.unwrap_or(true),
            ui_mcp_proxy: raw.server.ui_mcp_proxy.unwrap_or(false),
            sleep_idle: raw
                .model
                .sleep_idle_secs
                .filter(|&s| s > 0)
                .map(Duration::from_secs),
            shutdown_grace: Duration::from_secs(raw.server.shutdown_grace_secs.unwrap_or(10)),
            limits,
        })
    }
}

/// Validates `[routing]` and `[[tiers]]` into the policy the router uses.
fn routing_policy(raw: RawRouting, tiers: Vec<RawTier>) -> Result<RoutingPolicy, ConfigError> {
    let invalid = |m: String| ConfigError::Invalid(m);
    let mut policy = RoutingPolicy::default();
    if !tiers.is_empty() {
        policy.tiers = tiers
            .into_iter()
            .map(validate_tier)
            .collect::<Result<_, _>>()?;
    }
    let mut names: Vec<&str> = policy.tiers.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(invalid(format!("two tiers are named {:?}", pair[0])));
    }
    let t = &mut policy.triggers;
    if let Some(reasons) = raw.escalate_on {
        let escalatable = [
            Reason::LocalError,
            Reason::Context,
            Reason::Deadline,
            Reason::LowConfidence,
            Reason::Overloaded,
            Reason::Thermal,
        ];
        if let Some(other) = reasons.iter().find(|r| !escalatable.contains(r)) {
            return Err(invalid(format!(
                "routing.escalate_on: {:?} is not a reason that escalates (one of local_error, context, deadline, low_confidence, overloaded, thermal)",
                other.as_str()
            )));
        }
        let on = reasons;
        t.local_error = on.contains(&Reason::LocalError);
        t.context = on.contains(&Reason::Context);
        t.deadline = on.contains(&Reason::Deadline);
        t.low_confidence = on.contains(&Reason::LowConfidence);
        t.overloaded = on.contains(&Reason::Overloaded);
        t.thermal = on.contains(&Reason::Thermal);
    }
    t.first_token_deadline = raw.first_token_deadline_ms.map(Duration::from_millis);
    t.total_deadline = raw.total_deadline_ms.map(Duration::from_millis);
    t.min_mean_logprob = raw.min_mean_logprob;
    t.min_window_logprob = raw.min_window_logprob;
    t.confidence_window = raw.confidence_window.unwrap_or(t.confidence_window).max(1);
    t.min_q10_logprob = raw.min_q10_logprob;
    t.min_q25_logprob = raw.min_q25_logprob;
    t.min_sum_logprob = raw.min_sum_logprob;
    t.min_first_logprob = raw.min_first_logprob;
    t.min_first_margin = raw.min_first_margin;
    t.max_mean_entropy = raw.max_mean_entropy;
    for (name, value) in [
        ("min_mean_logprob", t.min_mean_logprob),
        ("min_window_logprob", t.min_window_logprob),
        ("min_q10_logprob", t.min_q10_logprob),
        ("min_q25_logprob", t.min_q25_logprob),
        ("min_sum_logprob", t.min_sum_logprob),
        ("min_first_logprob", t.min_first_logprob),
        ("min_first_margin", t.min_first_margin),
        ("max_mean_entropy", t.max_mean_entropy),
    ] {
        if value.is_some_and(|v| !v.is_finite()) {
            return Err(invalid(format!("routing.{name} must be a finite number")));
        }
    }
    if let Some(combiner) = raw.confidence_combiner {
        let finite = combiner.bias.is_finite() && combiner.weights.values().all(|w| w.is_finite());
        if !finite {
            return Err(invalid(
                "routing.confidence_combiner: bias and weights must be finite numbers".into(),
            ));
        }
        if combiner.weights.is_empty() {
            return Err(invalid(
                "routing.confidence_combiner: weights is empty (name at least one signal: mean, window_min, min, q10, q25, sum, first, first_margin, mean_entropy, tokens)".into(),
            ));
        }
        if !(0.0..=1.0).contains(&combiner.min_probability) {
            return Err(invalid(
                "routing.confidence_combiner.min_probability must be between 0 and 1".into(),
            ));
        }
        t.combiner = Some(combiner);
    }
    t.hold_tokens = raw.hold_tokens.unwrap_or(t.hold_tokens);
    t.max_queued = raw.max_queued;
    t.max_celsius = raw.thermal_max_celsius;
    t.min_freq_ratio = raw.thermal_min_freq_ratio;
    if let Some(root) = raw.sysfs_root {
        policy.sysfs_root = root;
    }
    policy.retries = raw.retries.unwrap_or(policy.retries);
    policy.retry_backoff = raw
        .retry_backoff_ms
        .map_or(policy.retry_backoff, Duration::from_millis);
    policy.breaker_failures = raw.breaker_failures.unwrap_or(policy.breaker_failures);
    policy.breaker_cooldown = raw
        .breaker_cooldown_ms
        .map_or(policy.breaker_cooldown, Duration::from_millis);
    if policy.breaker_failures == 0 {
        return Err(invalid(
            "routing.breaker_failures must be at least 1".into(),
        ));
    }
    Ok(policy)
}

fn validate_tier(raw: RawTier) -> Result<Tier, ConfigError> {
    let name = raw.name;
    let invalid = |m: &str| ConfigError::Invalid(format!("tier {name:?}: {m}"));
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid("the name must be letters, digits, '-' or '_'"));
    }
    let (api, on_device) = match raw.kind {
        RawTierType::Local if raw.url.is_none() => {
            if raw.model.is_some() || raw.api_key_env.is_some() || raw.api.is_some() {
                return Err(invalid(
                    "the embedded local tier takes no model, api_key_env or api (give a url for a local server)",
                ));
            }
            return Ok(Tier {
                name,
                kind: TierKind::Local,
            });
        }
        RawTierType::Local => match raw.api.unwrap_or(RawLocalApi::OpenaiChat) {
            RawLocalApi::OpenaiChat => (RemoteApi::ChatCompletions, true),
            RawLocalApi::Llama => (RemoteApi::LlamaCompletion, true),
        },
        _ if raw.api.is_some() => return Err(invalid("api is only for a local tier with a url")),
        RawTierType::OpenaiChat => (RemoteApi::ChatCompletions, false),
        RawTierType::OpenaiResponses => (RemoteApi::Responses, false),
    };
    let url = raw.url.ok_or_else(|| invalid("url is required"))?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(invalid("url must start with http:// or https://"));
    }
    let model = match (raw.model, on_device) {
        (Some(model), _) => model,
        // llama-server answers with the model it loaded, whatever the request names.
        (None, true) => "local".to_string(),
        (None, false) => return Err(invalid("model is required")),
    };
    let ca_pem = match &raw.ca_file {
        None => None,
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| invalid(&format!("cannot read ca_file {}: {e}", path.display())))?;
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                invalid(&format!(
                    "ca_file {} holds no PEM certificate: {e}",
                    path.display()
                ))
            })?;
            Some(pem)
        }
    };
    let api_key = match raw.api_key_env {
        None => None,
        Some(var) => Some(std::env::var(&var).map_err(|_| {
            invalid(&format!(
                "the environment variable {var} (api_key_env) is not set"
            ))
        })?),
    };
    let price = |p: Option<f64>| match p {
        Some(p) if !(p >= 0.0 && p.is_finite()) => Err(invalid("prices must be 0 or more")),
        p => Ok(p.unwrap_or(0.0)),
    };
    let endpoint = RemoteTier {
        api,
        url,
        model,
        api_key,
        connect_timeout: Duration::from_millis(raw.connect_timeout_ms.unwrap_or(2000)),
        timeout: Duration::from_secs(raw.timeout_secs.unwrap_or(120).max(1)),
        max_tokens: raw.max_tokens,
        price_input_per_mtok: price(raw.price_input_per_mtok)?,
        price_output_per_mtok: price(raw.price_output_per_mtok)?,
        ca_pem,
    };
    Ok(Tier {
        kind: if on_device {
            TierKind::LocalServer(endpoint)
        } else {
            TierKind::Remote(endpoint)
        },
        name,
    })
}

/// The keys in an API key file: one per line, blank lines and `#` comments ignored.
fn read_keys(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let cases = [
            ("[server]\nprot = 1\n", "prot"),
            ("[modle]\n", "modle"),
            ("[limits]\nqueue = 3\n", "queue"),
            ("[routing]\nhold = 3\n", "hold"),
            (
                "[[tiers]]\nname = \"c\"\ntype = \"local\"\napi_key = \"sk\"\n",
                "api_key",
            ),
            ("[[tiers]]\nname = \"c\"\ntype = \"grpc\"\n", "grpc"),
            ("[routing]\nescalate_on = [\"mood\"]\n", "mood"),
        ];
        for (text, key) in cases {
            let error = RawConfig::from_toml(text).unwrap_err();
            assert!(error.contains(key), "{error:?} should name {key}");
        }
    }

    #[test]
    fn packaged_example_config_is_valid() {
        let raw = RawConfig::from_toml(include_str!("../packaging/edgellm.toml")).unwrap();
        let config = ServeConfig::from_raw(raw).unwrap();
        assert_eq!(config.listen, ["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(config.engine.slots, 4);
    }

    #[test]
    fn aliases_and_tags_comma_separated() {
        let raw = RawConfig::from_toml(
            "[model]\nalias = \"tinyllama-2, fim,code\"\ntags = \"chat,fim,small\"\n",
        )
        .unwrap();
        let config = ServeConfig::from_raw(raw).unwrap();
        assert_eq!(config.model_alias, "code");
        assert_eq!(config.model_aliases, ["code", "fim", "tinyllama-2"]);
        assert_eq!(config.model_tags, ["chat", "fim", "small"]);
        for bad in ["a,,b", ",", "x\\u0007y"] {
            let raw = RawConfig::from_toml(&format!("[model]\nalias = \"{bad}\"\n")).unwrap();
            let error = ServeConfig::from_raw(raw).unwrap_err().to_string();
            assert!(error.contains("model.alias"), "{bad:?}: {error}");
        }
    }

    #[test]
    fn model_sha256_and_keys_load_or_are_refused_by_name() {
        let sha = "AB".repeat(32);
        let raw = RawConfig::from_toml(&format!(
            "[model]\nsha256 = \"{sha}\"\n[keys]\nallow_key_file = true\nencrypt_prompt_log = true\n"
        ))
        .unwrap();
        let config = ServeConfig::from_raw(raw).unwrap();
        assert_eq!(config.engine.sha256, Some("ab".repeat(32)));
        assert!(config.engine.keys.allow_key_file && config.engine.keys.encrypt_prompt_log);
        for bad in ["", "abc", &"g".repeat(64), &"a".repeat(65)] {
            let raw = RawConfig::from_toml(&format!("[model]\nsha256 = \"{bad}\"\n")).unwrap();
            let error = ServeConfig::from_raw(raw).unwrap_err().to_string();
            assert!(error.contains("model.sha256"), "{bad:?}: {error}");
        }
        let unknown = RawConfig::from_toml("[keys]\nsecret = \"00\"\n");
        assert!(unknown.is_err());
    }

    #[test]
    fn llama_server_defaults_load_or_are_refused_by_name() {
        let raw = RawConfig::from_toml(
            "[model]\nctx_size = 256\nslots = 4\nkv_unified = true\nsleep_idle_secs = 30\n\
             [limits]\nmax_tokens = 100\ndefault_max_tokens = 64\n[server]\nmetrics = false\n",
        )
        .unwrap();
        let config = ServeConfig::from_raw(raw).unwrap();
        assert_eq!(
            config.engine.n_ctx_slot(),
            256,
            "kv_unified: each slot may use all"
        );
        assert_eq!(config.sleep_idle, Some(Duration::from_secs(30)));
        assert_eq!(config.limits.unsaid_max_tokens(), 64);
        assert!(!config.metrics_endpoint);
        let split = ServeConfig::from_raw(
            RawConfig::from_toml("[model]\nctx_size = 256\nslots = 4\nsleep_idle_secs = 0\n")
                .unwrap(),
        )
        .unwrap();
        assert_eq!(split.engine.n_ctx_slot(), 64);
        assert_eq!(split.sleep_idle, None, "0 never sleeps");
        assert_eq!(split.limits.unsaid_max_tokens(), split.limits.max_tokens);
        assert!(split.metrics_endpoint);
        for body in [
            "[limits]\nmax_tokens = 100\ndefault_max_tokens = 101\n",
            "[limits]\ndefault_max_tokens = 0\n",
        ] {
            let error = ServeConfig::from_raw(RawConfig::from_toml(body).unwrap())
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("limits.default_max_tokens"),
                "{body}: {error}"
            );
        }
    }

    #[test]
    fn sampling_defaults_and_chat_templates_load_or_are_refused_by_name() {
        let raw = RawConfig::from_toml(
            "[model]\nchat_template = \"chatml\"\n[sampling]\ntemperature = 0.2\nseed = 42\ntop_k = 0\n",
        )
        .unwrap();
        let config = ServeConfig::from_raw(raw).unwrap();
        assert_eq!(config.engine.chat_template.as_deref(), Some("chatml"));
        assert_eq!(
            (config.sampling.temperature, config.sampling.seed),
            (0.2, Some(42))
        );
        assert_eq!(config.sampling.top_k, 0);
        let random = RawConfig::from_toml("[sampling]\nseed = -1\n").unwrap();
        assert_eq!(ServeConfig::from_raw(random).unwrap().sampling.seed, None);
        for (body, named) in [
            ("[sampling]\nseed = 4294967296\n", "sampling.seed"),
            ("[sampling]\nseed = -2\n", "sampling.seed"),
            ("[sampling]\ntemperature = -1.0\n", "temperature"),
            ("[sampling]\ntemperature = nan\n", "temperature"),
            ("[sampling]\ntop_p = 1.5\n", "top_p"),
            ("[sampling]\nmin_p = -0.1\n", "min_p"),
            ("[sampling]\ntop_k = -3\n", "top_k"),
            (
                "[model]\nchat_template = \"{% raw %}\"\n",
                "model.chat_template",
            ),
            ("[model]\nchat_template = \"\"\n", "model.chat_template"),
        ] {
            let raw = RawConfig::from_toml(body).unwrap();
            let error = ServeConfig::from_raw(raw).unwrap_err().to_string();
            assert!(error.contains(named), "{body:?}: {error}");
        }
        let unknown = RawConfig::from_toml("[sampling]\ntemprature = 0.2\n");
        assert!(unknown.unwrap_err().contains("temprature"));
    }

    #[test]
    fn several_hosts_comma_separated() {
        let raw =
            RawConfig::from_toml("[server]\nhost = \"127.0.0.1, ::1\"\nport = 9000\n").unwrap();
        let config = ServeConfig::from_raw(raw).unwrap();
        let expect: Vec<std::net::SocketAddr> = vec![
            "127.0.0.1:9000".parse().unwrap(),
            "[::1]:9000".parse().unwrap(),
        ];
        assert_eq!(config.listen, expect);
    }

    #[test]
    fn a_default_micro_batch_follows_a_smaller_batch_an_explicit_one_is_checked() {
        let small = RawConfig::from_toml("[model]\nbatch_size = 32\n").unwrap();
        let config = ServeConfig::from_raw(small).unwrap();
        assert_eq!((config.engine.n_batch, config.engine.n_ubatch), (32, 32));
        let explicit =
            RawConfig::from_toml("[model]\nbatch_size = 32\nubatch_size = 64\n").unwrap();
        let error = ServeConfig::from_raw(explicit).unwrap_err().to_string();
        assert!(error.contains("ubatch (64) <= batch (32)"), "{error}");
    }

    #[test]
    fn confidence_thresholds_and_the_combiner_load_or_are_refused_by_name() {
        use crate::route::confidence::Feature;
        let raw = RawConfig::from_toml(
            "[routing]\nmin_sum_logprob = -2.3\nmax_mean_entropy = 1.5\n[routing.confidence_combiner]\nbias = 1.25\nmin_probability = 0.4\nweights = { sum = 0.8, first_margin = 0.1, tokens = -0.05 }\n",
        )
        .unwrap();
        let t = ServeConfig::from_raw(raw).unwrap().routing.triggers;
        assert_eq!(t.min_sum_logprob, Some(-2.3));
        assert_eq!(t.max_mean_entropy, Some(1.5));
        let combiner = t.combiner.as_ref().unwrap();
        assert_eq!(combiner.weights[&Feature::FirstMargin], 0.1);
        assert_eq!(combiner.weights.len(), 3);
        assert!(t.confidence_enabled() && t.spread_needed());
        let refused = |body: &str| match RawConfig::from_toml(body) {
            Err(e) => e.to_string(),
            Ok(raw) => ServeConfig::from_raw(raw).unwrap_err().to_string(),
        };
        let combiner = |rest: &str| {
            format!("[routing.confidence_combiner]\nbias = 0.0\nmin_probability = 0.5\n{rest}\n")
        };
        for (body, want) in [
            (combiner("weights = {}"), "weights is empty"),
            (combiner("weights = { loudness = 1.0 }"), "loudness"),
            (
                "[routing.confidence_combiner]\nbias = 0.0\nmin_probability = 1.5\nweights = { sum = 1.0 }\n".into(),
                "min_probability must be between 0 and 1",
            ),
            ("[routing]\nmin_q10_logprob = nan\n".into(), "min_q10_logprob must be a finite number"),
        ] {
            let error = refused(&body);
            assert!(error.contains(want), "{body}: {error}");
        }
    }

    #[test]
    fn defaults_bind_loopback() {
        let config = ServeConfig::from_raw(RawConfig::default()).unwrap();
        assert_eq!(config.listen, ["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(config.engine.slots, 4);
        assert!(config.api_keys.is_empty());
        assert!(!config.log_prompts);
    }

    #[test]
    fn a_key_file_without_keys_refuses_to_start() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("empty", ""),
            ("blank", "\n  \n"),
            ("comments", "# keys go here\n#\n"),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            let mut raw = RawConfig::default();
            raw.server.api_key_file = Some(path.clone());
            let error = ServeConfig::from_raw(raw).unwrap_err();
            assert!(
                matches!(&error, ConfigError::EmptyKeyFile { path: p } if *p == path),
                "{name}: {error}"
            );
            assert!(error.to_string().contains(&path.display().to_string()));
        }
        let path = dir.path().join("one");
        std::fs::write(&path, "# fleet key\nsecret-key-1\n").unwrap();
        let mut raw = RawConfig::default();
        raw.server.api_key_file = Some(path);
        let config = ServeConfig::from_raw(raw).unwrap();
        assert_eq!(config.api_keys, ["secret-key-1"]);
    }

    #[test]
    fn invalid_values_table() {
        let cases = [
            ("[server]\nhost = \"not an ip\"\n", "server.host"),
            (
                "[server]\nhost = \"127.0.0.1,\"\n",
                "server.host \"\" is not",
            ),
            ("[server]\nhost = \"::1, ::1\"\n", "lists ::1 twice"),
            ("[model]\nslots = 0\n", "slots"),
            ("[server]\napi_keys = [\"short\"]\n", "at least 8"),
            ("[limits]\nmax_body_bytes = 10\n", "max_body_bytes"),
            (
                "[[tiers]]\nname = \"c\"\ntype = \"openai_chat\"\nmodel = \"m\"\n",
                "url is required",
            ),
            (
                "[[tiers]]\nname = \"c\"\ntype = \"openai_chat\"\nurl = \"ftp://x\"\nmodel = \"m\"\n",
                "http://",
            ),
            (
                "[[tiers]]\nname = \"l\"\ntype = \"local\"\nmodel = \"m\"\n",
                "embedded local tier",
            ),
            (
                "[[tiers]]\nname = \"c\"\ntype = \"openai_chat\"\nurl = \"http://x\"\nmodel = \"m\"\napi = \"llama\"\n",
                "only for a local tier",
            ),
            (
                "[[tiers]]\nname = \"c\"\ntype = \"openai_chat\"\nurl = \"https://x\"\nmodel = \"m\"\nca_file = \"/nonexistent/ca.pem\"\n",
                "ca_file",
            ),
            (
                "[[tiers]]\nname = \"l\"\ntype = \"local\"\n[[tiers]]\nname = \"l\"\ntype = \"local\"\n",
                "two tiers",
            ),
            (
                "[[tiers]]\nname = \"c\"\ntype = \"openai_chat\"\nurl = \"http://x\"\nmodel = \"m\"\napi_key_env = \"EDGELLM_TEST_UNSET_KEY_VAR\"\n",
                "EDGELLM_TEST_UNSET_KEY_VAR",
            ),
            ("[routing]\nescalate_on = [\"budget\"]\n", "budget"),
        ];
        for (text, want) in cases {
            let error = ServeConfig::from_raw(RawConfig::from_toml(text).unwrap())
                .unwrap_err()
                .to_string();
            assert!(error.contains(want), "{error} should mention {want}");
        }
    }
}
