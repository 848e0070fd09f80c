//! Command-line definitions (clap). Only what the user typed is checked here; the commands build
//! their validated configuration from these arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::engine::KvType;

#[derive(Debug, Parser)]
#[command(
    name = "edgellm",
    version,
    about = "A local-first LLM gateway for edge devices"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one prompt on the local model and report speed and memory (the on-device smoke test).
    Run(RunArgs),
    /// Serve the local model over an OpenAI- and llama.cpp-compatible HTTP API.
    Serve(Box<ServeArgs>),
    /// Can this model run on this device, at what context, how fast?
    Plan(crate::plan::PlanArgs),
    /// Measure speed, tail latency and thermal behaviour (embedded engine or an HTTP endpoint).
    Bench(Box<crate::bench::BenchArgs>),
    /// Ask a running server how it stands: model, slots, queue, each tier and its breaker.
    Status(crate::status::StatusArgs),
    /// Today's remote spend against each budget cap, from the ledger.
    Usage(crate::usage::UsageArgs),
    /// List or export (--json: JSON lines) the audit log by time range, from the ledger.
    Audit(crate::usage::AuditArgs),
    /// Run one configured task on an input, in-process, and print the result as JSON.
    Task(Box<TaskArgs>),
    /// Model files on this device: import a sentence-transformers model as a GGUF.
    Model(crate::model::ModelArgs),
    /// Knowledge packs: build one from documents, query it.
    Pack(crate::pack::PackArgs),
    /// This device's key for encrypted models: make it (TPM, systemd-creds), show it, check it.
    Key(crate::vault::cli::KeyArgs),
    /// Measure how well each confidence signal picks the answers to escalate on a set of
    /// prompts, and write the routing thresholds for a target share or quality.
    Calibrate(Box<crate::calibrate::CalibrateArgs>),
    /// Show what the egress guard would redact in a text (stdin), with the `[redaction]` of a
    /// config file.
    Redact(crate::redact_cli::RedactArgs),
}

/// `edgellm task NAME --input FILE`: the serve configuration (file, flags, environment) is
/// loaded as `serve` loads it; actions run and are audited in the same ledger.
#[derive(Debug, Args)]
pub struct TaskArgs {
    /// The task's name (a [[tasks]] entry of the config)
    pub name: String,
    /// The input (untrusted data); `-` reads stdin
    #[arg(long)]
    pub input: PathBuf,
    /// Validate the model's action calls, execute none
    #[arg(long)]
    pub dry_run: bool,
    /// Print the outcome as one line of JSON (default: indented)
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Engine settings shared by the commands that load a model.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// GGUF model file [default: the installed default model]
    #[arg(short = 'm', long = "model", env = "EDGELLM_MODEL")]
    pub model: Option<PathBuf>,
    /// Threads for generation [default: number of cores]
    #[arg(short = 't', long = "threads")]
    pub threads: Option<u32>,
    /// Threads for prompt processing [default: --threads]
    #[arg(long = "threads-batch")]
    pub threads_batch: Option<u32>,
    /// Context size in tokens
    #[arg(short = 'c', long = "ctx-size", default_value_t = crate::engine::EngineConfig::DEFAULT_N_CTX)]
    pub ctx_size: u32,
    /// Logical batch size (most tokens per decode call)
    #[arg(short = 'b', long = "batch-size", default_value_t = crate::engine::EngineConfig::DEFAULT_N_BATCH)]
    pub batch_size: u32,
    /// Physical micro-batch size (sizes the compute buffer)
    #[arg(long = "ubatch-size", visible_alias = "ub", default_value_t = crate::engine::EngineConfig::DEFAULT_N_UBATCH)]
    pub ubatch_size: u32,
    /// KV-cache type
    #[arg(long = "kv-type", value_enum, default_value_t = KvType::F16)]
    pub kv_type: KvType,
    /// Print llama.cpp's own log to stderr
    #[arg(long)]
    pub verbose: bool,
    /// Read the model into memory instead of mapping it (llama.cpp's --no-mmap)
    #[arg(long)]
    pub no_mmap: bool,
    /// The device key for an encrypted model
    #[command(flatten)]
    pub keys: crate::vault::cli::KeyFlags,
}

impl EngineArgs {
    pub fn to_config(&self, slots: u32) -> crate::engine::EngineConfig {
        let mut config = crate::engine::EngineConfig::new(
            self.model
                .clone()
                .unwrap_or_else(crate::paths::default_model),
        );
        if let Some(threads) = self.threads {
            config.n_threads = threads;
            config.n_threads_batch = threads;
        }
        if let Some(threads) = self.threads_batch {
            config.n_threads_batch = threads;
        }
        config.n_ctx = self.ctx_size;
        config.n_batch = self.batch_size;
        config.n_ubatch = self.ubatch_size;
        config.kv_type = self.kv_type;
        config.slots = slots;
        config.verbose_llama_logs = self.verbose;
        config.keys = self.keys.config();
        config.use_mmap = !self.no_mmap;
        config
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// The prompt
    #[arg(
        short = 'p',
        long = "prompt",
        conflicts_with = "file",
        required_unless_present_any = ["file", "synthetic_prompt"]
    )]
    pub prompt: Option<String>,
    /// Read the prompt from a file
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Format the prompt as one user message with the model's chat template
    #[arg(long)]
    pub chat: bool,
    /// Tokens to generate
    #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
    pub n_predict: u32,
    /// Sampling temperature (0 = greedy)
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temperature: f32,
    #[arg(long = "top-k", default_value_t = 40)]
    pub top_k: i32,
    #[arg(long = "top-p", default_value_t = 0.95)]
    pub top_p: f32,
    #[arg(long = "min-p", default_value_t = 0.05)]
    pub min_p: f32,
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Random seed [default: random]
    #[arg(short = 's', long)]
    pub seed: Option<u32>,
    /// Stop at this string (repeatable); it is not printed
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation tokens (always produce --n-predict tokens)
    #[arg(long = "ignore-eos")]
    pub ignore_eos: bool,
    /// Print one JSON summary (with the text) instead of streaming
    #[arg(long)]
    pub json: bool,
    /// Benchmarks: use the first N tokens of a fixed text as the prompt (llama-bench's pp N)
    #[arg(long, hide = true)]
    pub synthetic_prompt: Option<usize>,
}

/// `edgellm serve` options. Each flag overrides the config file; each has an `EDGELLM_*`
/// environment variable that does the same (a flag beats its variable).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML configuration file (sections [server], [model], [limits]; see docs/configuration.md)
    #[arg(long, env = "EDGELLM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on; several, comma-separated (`127.0.0.1,::1`) [default: 127.0.0.1]
    #[arg(long, env = "EDGELLM_HOST")]
    pub host: Option<String>,
    /// Port to listen on [default: 8080]
    #[arg(long, env = "EDGELLM_PORT")]
    pub port: Option<u16>,
    /// GGUF model file, or the reference of a pulled model (HOST[:PORT]/NAME[:TAG]) [default:
    /// the active model, else the installed default model]
    #[arg(short = 'm', long = "model", env = "EDGELLM_MODEL")]
    pub model: Option<PathBuf>,
    /// Embedding GGUF served on /v1/embeddings [default: the installed default embedding model]
    #[arg(long, env = "EDGELLM_EMBEDDING_MODEL")]
    pub embedding_model: Option<PathBuf>,
    /// Embedding pooling instead of the model's own (llama-server's --pooling)
    #[arg(long, value_enum, env = "EDGELLM_POOLING")]
    pub pooling: Option<crate::engine::embed::Pooling>,
    /// Model name reported to clients; several, comma-separated (the first alphabetically is
    /// the id) [default: the file name without .gguf]
    #[arg(short = 'a', long, env = "EDGELLM_MODEL_ALIAS")]
    pub alias: Option<String>,
    /// Tags listed for the model in /v1/models, comma-separated
    #[arg(long, env = "EDGELLM_MODEL_TAGS")]
    pub tags: Option<String>,
    /// Threads for generation [default: number of cores]
    #[arg(short = 't', long, env = "EDGELLM_THREADS")]
    pub threads: Option<u32>,
    /// Threads for prompt processing [default: --threads]
    #[arg(long, env = "EDGELLM_THREADS_BATCH")]
    pub threads_batch: Option<u32>,
    /// Total context size, split evenly across slots [default: 8192]
    #[arg(short = 'c', long = "ctx-size", env = "EDGELLM_CTX_SIZE")]
    pub ctx_size: Option<u32>,
    /// Every slot may use the whole context, the slots sharing its cells (llama-server's
    /// --kv-unified); when they outgrow it together, the requests decoding then fail
    #[arg(long, env = "EDGELLM_KV_UNIFIED")]
    pub kv_unified: bool,
    /// Unload the model after this many idle seconds; the next request that needs it loads it
    /// again (llama-server's --sleep-idle-seconds) [default: never]
    #[arg(long = "sleep-idle-seconds", env = "EDGELLM_SLEEP_IDLE_SECONDS")]
    pub sleep_idle_seconds: Option<u64>,
    /// Requests decoded in parallel (llama-server's --parallel) [default: 4]
    #[arg(long, visible_alias = "parallel", env = "EDGELLM_SLOTS")]
    pub slots: Option<u32>,
    /// Logical batch size [default: 512]
    #[arg(short = 'b', long = "batch-size", env = "EDGELLM_BATCH_SIZE")]
    pub batch_size: Option<u32>,
    /// Micro-batch size; sizes the compute buffer [default: 128]
    #[arg(long = "ubatch-size", env = "EDGELLM_UBATCH_SIZE")]
    pub ubatch_size: Option<u32>,
    /// KV-cache type [default: f16]
    #[arg(long = "kv-type", value_enum, env = "EDGELLM_KV_TYPE")]
    pub kv_type: Option<KvType>,
    /// Tokens a schema or grammar forces skip sampling and are decoded together: `exact` (while
    /// the mask allows one token only), `canonical` (llguidance's fast-forward: all forced bytes
    /// tokenized at once) or `off` [default: exact]
    #[arg(long, value_enum, env = "EDGELLM_JUMP_FORWARD")]
    pub jump_forward: Option<crate::constraint::JumpForward>,
    /// Sampling temperature of requests that do not set one; 0 is greedy [default: 0.8]
    #[arg(long = "temp", env = "EDGELLM_TEMPERATURE")]
    pub temperature: Option<f32>,
    /// Seed of requests that do not set one; -1 picks a random one per request [default: -1]
    #[arg(short = 's', long, env = "EDGELLM_SEED", allow_negative_numbers = true)]
    pub seed: Option<i64>,
    /// Top-k of requests that do not set one; 0 turns it off [default: 40]
    #[arg(long = "top-k", env = "EDGELLM_TOP_K")]
    pub top_k: Option<i32>,
    /// Top-p of requests that do not set one; 1 turns it off [default: 0.95]
    #[arg(long = "top-p", env = "EDGELLM_TOP_P")]
    pub top_p: Option<f32>,
    /// Min-p of requests that do not set one; 0 turns it off [default: 0.05]
    #[arg(long = "min-p", env = "EDGELLM_MIN_P")]
    pub min_p: Option<f32>,
    /// One of llama.cpp's built-in chat templates (chatml, llama3, gemma, ...) instead of the
    /// model's own
    #[arg(long, env = "EDGELLM_CHAT_TEMPLATE")]
    pub chat_template: Option<String>,
    /// Accepted API key (repeatable); with any key set, every endpoint but /health needs one
    #[arg(long = "api-key", env = "EDGELLM_API_KEY", value_delimiter = ',')]
    pub api_keys: Vec<String>,
    /// File with one API key per line
    #[arg(long, env = "EDGELLM_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Largest request body in bytes [default: 1048576]
    #[arg(long, env = "EDGELLM_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Most prompt tokens per request [default: 8192]
    #[arg(long, env = "EDGELLM_MAX_PROMPT_TOKENS")]
    pub max_prompt_tokens: Option<usize>,
    /// Most tokens a request may generate, and the default [default: 1024]
    #[arg(long, env = "EDGELLM_MAX_TOKENS")]
    pub max_tokens: Option<u32>,
    /// Tokens a request that does not say gets, at most --max-tokens (llama-server's
    /// -n/--n-predict) [default: --max-tokens]
    #[arg(long = "n-predict", env = "EDGELLM_N_PREDICT")]
    pub default_max_tokens: Option<u32>,
    /// Requests that may wait for a slot; beyond that 503 with Retry-After [default: 16]
    #[arg(long, env = "EDGELLM_QUEUE_DEPTH")]
    pub queue_depth: Option<usize>,
    /// Seconds a request may take in all [default: 300]
    #[arg(long, env = "EDGELLM_REQUEST_TIMEOUT")]
    pub request_timeout: Option<u64>,
    /// Seconds in-flight requests get to finish after SIGINT/SIGTERM [default: 10]
    #[arg(long, env = "EDGELLM_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<u64>,
    /// Where the ledger (spend and audit database) lives [default: $EDGELLM_HOME]
    #[arg(long, env = "EDGELLM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Browser origins that may call the gateway, comma-separated: "*", "localhost" (this
    /// device's own pages) or origins such as https://ui.example:8443 [default: localhost]
    #[arg(long, env = "EDGELLM_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Serve GET /slots (per-slot state, never prompts), as llama-server's --slots does
    #[arg(long, env = "EDGELLM_SLOTS_ENDPOINT")]
    pub slots_endpoint: bool,
    /// Answer GET /metrics with 501 instead of Prometheus text (it is served by default)
    #[arg(long, env = "EDGELLM_NO_METRICS")]
    pub no_metrics: bool,
    /// Let /cors-proxy forward GET and POST to this device's loopback services, as
    /// llama-server's web UI uses it to reach MCP servers (off: 403)
    #[arg(long = "ui-mcp-proxy", env = "EDGELLM_UI_MCP_PROXY")]
    pub ui_mcp_proxy: bool,
    /// Include prompt text in the request log (off by default: prompts may hold personal data)
    #[arg(long, env = "EDGELLM_LOG_PROMPTS")]
    pub log_prompts: bool,
    /// Log lines as JSON
    #[arg(long, env = "EDGELLM_LOG_JSON")]
    pub log_json: bool,
    /// Print llama.cpp's own log to stderr
    #[arg(long)]
    pub verbose: bool,
}

impl ServeArgs {
    /// Lays the flags (and their environment variables) over a raw config file.
    pub fn overlay(&self, raw: &mut crate::config::RawConfig) {
        fn set<T: Clone>(slot: &mut Option<T>, value: &Option<T>) {
            if value.is_some() {
                slot.clone_from(value);
            }
        }
        set(&mut raw.server.host, &self.host);
        set(&mut raw.server.port, &self.port);
        if !self.api_keys.is_empty() {
            raw.server.api_keys = Some(self.api_keys.clone());
        }
        set(&mut raw.server.api_key_file, &self.api_key_file);
        set(&mut raw.server.shutdown_grace_secs, &self.shutdown_grace);
        if self.slots_endpoint {
            raw.server.slots_endpoint = Some(true);
        }
        if self.no_metrics {
            raw.server.metrics = Some(false);
        }
        if self.ui_mcp_proxy {
            raw.server.ui_mcp_proxy = Some(true);
        }
        if !self.cors_origins.is_empty() {
            raw.server.cors_origins = Some(self.cors_origins.clone());
        }
        set(&mut raw.server.data_dir, &self.data_dir);
        if self.log_prompts {
            raw.server.log_prompts = Some(true);
        }
        set(&mut raw.model.path, &self.model);
        set(&mut raw.model.alias, &self.alias);
        set(&mut raw.model.tags, &self.tags);
        if let Some(path) = &self.embedding_model {
            raw.embedding.get_or_insert_default().model = Some(path.clone());
        }
        if let Some(pooling) = self.pooling {
            raw.embedding.get_or_insert_default().pooling = Some(pooling);
        }
        set(&mut raw.model.threads, &self.threads);
        set(&mut raw.model.threads_batch, &self.threads_batch);
        set(&mut raw.model.ctx_size, &self.ctx_size);
        if self.kv_unified {
            raw.model.kv_unified = Some(true);
        }
        set(&mut raw.model.sleep_idle_secs, &self.sleep_idle_seconds);
        set(&mut raw.model.slots, &self.slots);
        set(&mut raw.model.batch_size, &self.batch_size);
        set(&mut raw.model.ubatch_size, &self.ubatch_size);
        set(&mut raw.model.kv_type, &self.kv_type);
        set(&mut raw.model.jump_forward, &self.jump_forward);
        set(&mut raw.model.chat_template, &self.chat_template);
        set(&mut raw.limits.max_body_bytes, &self.max_body_bytes);
        set(&mut raw.limits.max_prompt_tokens, &self.max_prompt_tokens);
        set(&mut raw.limits.max_tokens, &self.max_tokens);
        set(&mut raw.limits.default_max_tokens, &self.default_max_tokens);
        set(&mut raw.limits.queue_depth, &self.queue_depth);
        set(&mut raw.limits.request_timeout_secs, &self.request_timeout);
        set(&mut raw.sampling.temperature, &self.temperature);
        set(&mut raw.sampling.seed, &self.seed);
        set(&mut raw.sampling.top_k, &self.top_k);
        set(&mut raw.sampling.top_p, &self.top_p);
        set(&mut raw.sampling.min_p, &self.min_p);
    }
}
