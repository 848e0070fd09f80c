//! The embedded llama.cpp engine: one worker thread owns the model's context and serves many
//! generation requests at once (parallel sequences in one context, continuous batching).
//!
//! Only this module touches llama.cpp. The rest of the program talks to it through [`Engine`]:
//! [`Engine::submit`] sends a [`GenerateRequest`] in and gets a channel of [`Event`]s back (token
//! pieces with log probabilities, then one [`Summary`]). Dropping that receiver cancels the
//! request at the next token.

mod compute;
mod config;
pub mod embed;
mod logprob;
mod memory;
mod sampling;
mod template;
pub mod text;
mod vocab;
mod worker;

pub use config::{EngineConfig, KvType};
pub use logprob::Spread;
pub use memory::{BufferSizes, ProcessMemory};
pub use template::{
    ChatMessage, TemplateKind, ToolCall, apply_plain, builtin_names as builtin_template_names,
};

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc as SyncArc, OnceLock};
use std::time::Duration;

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use tokio::sync::mpsc;

use crate::constraint::{Compiler, Constraint};

/// Errors of the engine, each one line a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("model file not found: {0}")]
    ModelNotFound(PathBuf),
    #[error("cannot use model file {path}: {reason}")]
    InvalidModel { path: PathBuf, reason: String },
    #[error("llama.cpp failed to load the model from {path}: {reason}")]
    LoadFailed { path: PathBuf, reason: String },
    #[error("llama.cpp failed to create a context: {0}")]
    ContextFailed(String),
    #[error(
        "prompt does not fit the context: {prompt_tokens} prompt tokens + {max_tokens} requested tokens > context size {n_ctx}"
    )]
    ContextOverflow {
        prompt_tokens: usize,
        max_tokens: u32,
        n_ctx: u32,
    },
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("invalid sampling parameter: {0}")]
    InvalidParameter(String),
    /// The request's constraint (schema, grammar) is unusable, or failed mid-generation.
    #[error(transparent)]
    Constraint(#[from] crate::constraint::ConstraintError),
    #[error("chat template failed: {0}")]
    Template(String),
    /// An encrypted model that does not open here, or a model whose sha256 is not the one
    /// configured.
    #[error("cannot load {path}: {error}")]
    Vault {
        path: PathBuf,
        error: Box<crate::vault::VaultError>,
    },
    #[error("llama.cpp decode failed: {0}")]
    Decode(String),
    /// With `kv_unified`, the slots together outgrew the context they share.
    #[error(
        "context size has been exceeded: the requests decoding together outgrew the {n_ctx} \
         context cells the slots share (kv_unified)"
    )]
    KvFull { n_ctx: u32 },
    #[error("the engine has stopped")]
    Stopped,
}

/// Sampling settings of one request. `temperature <= 0` means greedy decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    pub top_k: i32,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    pub repeat_last_n: i32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    /// Seed of the sampler's random generator; `None` picks a random one.
    pub seed: Option<u32>,
    pub max_tokens: u32,
    /// Generation ends at the first occurrence of any of these; the stop string is not emitted.
    pub stop: Vec<String>,
    /// How many most likely alternatives to report with each token (0 for none).
    pub top_logprobs: usize,
    /// Compute each token's [`Spread`] over this many alternatives (0 for none): confidence
    /// routing's margin and entropy, apart from what the client asked to see.
    pub spread_top: usize,
    /// Also report probabilities after the sampler chain (top-k, top-p, min-p, temperature):
    /// the chosen token's and the `top_logprobs` most likely (llama-server's
    /// `post_sampling_probs`).
    pub post_sampling_probs: bool,
    /// Stop at end-of-generation tokens (false only for benchmarks that must run exactly N tokens).
    pub stop_at_eog: bool,
    /// Report the prompt's processing as it goes ([`Event::Progress`], llama-server's
    /// `return_progress`).
    pub prompt_progress: bool,
    /// Added to a token's logit before sampling (`f32::NEG_INFINITY` forbids it). Text targets
    /// are the API's; the service turns them into token ids before the engine sees them.
    pub logit_bias: Vec<LogitBias>,
}

/// One `logit_bias` entry: OpenAI's token-id map or llama.cpp's `[token or text, bias]` pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct LogitBias {
    pub target: BiasTarget,
    pub bias: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BiasTarget {
    Token(i64),
    /// Every token of this text (tokenized without special tokens), as llama.cpp does.
    Text(String),
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            seed: None,
            max_tokens: 128,
            stop: Vec::new(),
            top_logprobs: 0,
            spread_top: 0,
            post_sampling_probs: false,
            stop_at_eog: true,
            prompt_progress: false,
            logit_bias: Vec::new(),
        }
    }
}

impl SamplingParams {
    /// Checks ranges; the API layer maps the message to a 400 naming the field.
    pub fn validate(&self) -> Result<(), EngineError> {
        let bad = |what: &str| Err(EngineError::InvalidParameter(what.to_string()));
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad("temperature must be a number >= 0");
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return bad("top_p must be between 0 and 1");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p must be between 0 and 1");
        }
        if self.top_k < 0 {
            return bad("top_k must be >= 0");
        }
        if !self.repeat_penalty.is_finite() || self.repeat_penalty <= 0.0 {
            return bad("repeat_penalty must be > 0");
        }
        if self
            .logit_bias
            .iter()
            .any(|b| b.bias.is_nan() || b.bias == f32::INFINITY)
        {
            return bad("logit_bias values must be finite numbers, or false to forbid a token");
        }
        if self.top_logprobs.max(self.spread_top) > logprob::MAX_TOP_LOGPROBS {
            return Err(EngineError::InvalidParameter(format!(
                "top_logprobs must be at most {}",
                logprob::MAX_TOP_LOGPROBS
            )));
        }
        Ok(())
    }
}

/// One generation request: the prompt, already tokenized by [`Engine::tokenize`], and its settings.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt_tokens: Vec<i32>,
    pub params: SamplingParams,
    /// Restricts every sampled token to what the constraint allows, and appends the tokens it
    /// forces without sampling them (compiled by [`Engine::compiler`], off this thread).
    pub constraint: Option<Box<Constraint>>,
}

impl GenerateRequest {
    pub fn new(prompt_tokens: Vec<i32>, params: SamplingParams) -> Self {
        GenerateRequest {
            prompt_tokens,
            params,
            constraint: None,
        }
    }
}

/// One of the most likely tokens at a position.
#[derive(Debug, Clone, PartialEq)]
pub struct TopLogprob {
    pub token: i32,
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

/// The chosen token's probability in the distribution the sampler chain drew it from, and
/// that distribution's most likely tokens (probabilities, not logs).
#[derive(Debug, Clone, PartialEq)]
pub struct PostSampling {
    pub prob: f32,
    pub top: Vec<TokenProb>,
}

/// One of the most likely tokens after the sampler chain, with its probability.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenProb {
    pub token: i32,
    pub bytes: Vec<u8>,
    pub prob: f32,
}

/// A generated token.
#[derive(Debug, Clone)]
pub struct TokenEvent {
    pub token: i32,
    /// The token's raw bytes (a piece may be part of a multi-byte character).
    pub piece: Vec<u8>,
    /// Text released to the client by this token: assembled UTF-8 with stop strings held back.
    /// May be empty (held) or hold text of earlier tokens.
    pub text: String,
    /// Natural log of the probability the model gave this token (from the raw logits); 0 for
    /// a token the constraint forced (no logits were computed for it: it was certain).
    pub logprob: f32,
    pub top: Vec<TopLogprob>,
    /// The token's margin and entropy when `spread_top` asked for them (never for a forced
    /// token).
    pub spread: Option<Spread>,
    /// Probabilities after the sampler chain, when `post_sampling_probs` asked for them.
    pub post: Option<PostSampling>,
    /// Appended by the constraint without sampling (jump-forward).
    pub forced: bool,
    /// Time the constraint took to compute this token's mask (zero when unconstrained or
    /// forced).
    pub mask_time: Duration,
}

/// Why generation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end-of-generation token.
    EndOfGeneration,
    /// A stop string matched (it is not part of the text).
    StopString(String),
    /// `max_tokens` were generated.
    Length,
}

/// The final event of a request.
#[derive(Debug, Clone)]
pub struct Summary {
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV entries were reused from the slot's previous request.
    pub cached_tokens: usize,
    pub generated_tokens: usize,
    pub stop_reason: StopReason,
    /// Text still held back at the end (released now), usually empty.
    pub tail_text: String,
    /// Time spent waiting for a free slot.
    pub queue_time: Duration,
    /// Time llama.cpp computed the batches this request was in (shared batches counted whole;
    /// waiting for the compute thread not counted).
    pub compute_time: Duration,
    /// Time from admission to the first generated token (prompt processing).
    pub prefill_time: Duration,
    /// Time from the first to the last generated token.
    pub decode_time: Duration,
}

impl Summary {
    pub fn prefill_tokens_per_second(&self) -> f64 {
        per_second(self.prompt_tokens - self.cached_tokens, self.prefill_time)
    }

    pub fn decode_tokens_per_second(&self) -> f64 {
        per_second(self.generated_tokens.saturating_sub(1), self.decode_time)
    }

    /// Tokens per second of llama.cpp's own time: what the model costs on this device,
    /// whatever else the process was doing.
    pub fn compute_tokens_per_second(&self) -> f64 {
        per_second(self.generated_tokens, self.compute_time)
    }

    pub fn time_to_first_token(&self) -> Duration {
        self.queue_time + self.prefill_time
    }
}

fn per_second(count: usize, time: Duration) -> f64 {
    if time.is_zero() {
        0.0
    } else {
        count as f64 / time.as_secs_f64()
    }
}

/// How far the prompt's processing is: once before its first batch, then after each batch that
/// held some of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PromptProgress {
    /// Prompt tokens in all.
    pub total: usize,
    /// Of them, reused from the slot's cache.
    pub cache: usize,
    /// Of them, in the KV cache now (reused ones included).
    pub processed: usize,
    /// Since the request got its slot.
    pub elapsed: Duration,
}

/// What a request's receiver gets, in order: prompt progress (when asked for), tokens, then
/// exactly one `Done` or `Failed`.
#[derive(Debug)]
pub enum Event {
    Progress(PromptProgress),
    Token(TokenEvent),
    Done(Summary),
    Failed(EngineError),
}

/// Facts about the loaded model and context, for `run`, `/v1/models` and `/metrics`.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// The model file as configured (a plain GGUF or an encrypted container).
    pub path: PathBuf,
    /// Where its GGUF is read: `path`, or an encrypted model's memfd (`/proc/self/fd/N`, open
    /// while the engine is).
    pub load_path: PathBuf,
    pub id: String,
    pub architecture: String,
    pub n_params: u64,
    pub n_vocab: usize,
    pub n_ctx_train: u32,
    /// Context size of one slot (the total context is split evenly across slots).
    pub n_ctx_slot: u32,
    pub slots: u32,
    pub template: TemplateKind,
    /// The built-in template configured instead of the GGUF's (`--chat-template`).
    pub template_name: Option<String>,
    /// The GGUF's own chat template (`tokenizer.chat_template`), when it has one.
    pub template_text: Option<String>,
    /// The vocabulary's end-of-generation tokens (what `ignore_eos` forbids).
    pub eog_tokens: Vec<i32>,
    pub buffers: BufferSizes,
    pub load_time: Duration,
    pub resident: LoadMemory,
}

/// Resident memory of the process at the steps of loading (bytes), to see what each step costs:
/// the model step is llama.cpp's loader (tokenizer tables and tensor metadata; the weights
/// themselves are mapped and become resident when first used), the context step adds the KV
/// cache, compute buffers and the warm-up decode that pages the weights in.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct LoadMemory {
    pub before_model: u64,
    pub after_model: u64,
    pub after_context: u64,
}

/// Live counters the worker keeps (read by `/metrics` and the router).
#[derive(Debug, Default)]
pub struct EngineLoad {
    pub busy_slots: AtomicUsize,
    pub queued: AtomicUsize,
    /// llama.cpp decode calls, and the sequences they carried (llama-server's `n_decode_total`
    /// and `n_busy_slots_per_decode`).
    pub decodes: AtomicU64,
    pub decoded_sequences: AtomicU64,
}

/// The engine a server answers with: empty while the model loads, replaced when a new model
/// is activated. A request takes a handle once and keeps it, so requests in flight finish on the
/// engine they started on; an engine's worker stops when its last handle is dropped.
/// A model that failed to load leaves it empty with the reason (`fail`), which `/health` and
/// every request that needs the model then name.
///
/// With an idle timeout (`[model] sleep_idle_secs`) the server puts the engine to sleep
/// (`sleep`): the slot lets go of it (its model, context and KV cache are freed once the last
/// handle is gone) and keeps what describes it, its configuration and its counters; the next
/// request that needs the model loads it again (`wake`).
#[derive(Default)]
pub struct EngineSlot {
    engine: std::sync::RwLock<Option<Engine>>,
    failure: OnceLock<String>,
    asleep: std::sync::Mutex<Option<Asleep>>,
    /// One wake at a time; the others wait for it.
    waking: tokio::sync::Mutex<()>,
    /// When a request last needed the engine.
    used: std::sync::Mutex<Option<std::time::Instant>>,
}

/// What a sleeping engine leaves behind.
struct Asleep {
    config: EngineConfig,
    info: Arc<ModelInfo>,
    load: Arc<EngineLoad>,
}

impl EngineSlot {
    /// Records why the model did not load (the first reason stays).
    pub fn fail(&self, reason: String) {
        let _ = self.failure.set(reason);
    }

    /// Why the model did not load, when it did not.
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    /// The engine, when it is loaded and awake.
    pub fn get(&self) -> Option<Engine> {
        self.engine
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Puts `engine` in the slot (it is awake); returns the one it replaced.
    pub fn set(&self, engine: Engine) -> Option<Engine> {
        let mut slot = self
            .engine
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *self.asleep() = None;
        self.touch();
        slot.replace(engine)
    }

    pub fn is_loaded(&self) -> bool {
        self.engine
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_some()
    }

    /// Notes that a request needs the engine now (the idle timeout counts from the last one).
    pub fn touch(&self) {
        *self.used.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
    }

    /// How long since a request last needed the engine (since it was set, if none has).
    pub fn idle_for(&self) -> Duration {
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map_or(Duration::ZERO, |t| t.elapsed())
    }

    fn asleep(&self) -> std::sync::MutexGuard<'_, Option<Asleep>> {
        self.asleep
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn is_asleep(&self) -> bool {
        self.asleep().is_some()
    }

    /// What the model is, awake or asleep.
    pub fn info(&self) -> Option<Arc<ModelInfo>> {
        match self.get() {
            Some(engine) => Some(engine.info.clone()),
            None => self.asleep().as_ref().map(|a| a.info.clone()),
        }
    }

    /// The engine's counters, awake or asleep (they go on across a sleep).
    pub fn load(&self) -> Option<Arc<EngineLoad>> {
        match self.get() {
            Some(engine) => Some(engine.load.clone()),
            None => self.asleep().as_ref().map(|a| a.load.clone()),
        }
    }

    /// Lets go of the engine when it has nothing to do: nothing decoding or queued, and no
    /// wake in progress. Returns whether it went to sleep.
    pub fn sleep(&self) -> bool {
        let Ok(_waking) = self.waking.try_lock() else {
            return false;
        };
        let mut slot = self
            .engine
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(engine) = slot.as_ref() else {
            return false;
        };
        if engine.load.busy_slots.load(Ordering::SeqCst) > 0
            || engine.load.queued.load(Ordering::SeqCst) > 0
        {
            return false;
        }
        let Some(engine) = slot.take() else {
            return false;
        };
        *self.asleep() = Some(Asleep {
            config: engine.config.as_ref().clone(),
            info: engine.info.clone(),
            load: engine.load.clone(),
        });
        true
    }

    /// The engine, loading it again when it sleeps (seconds; concurrent callers share one
    /// load). `None` when there is neither an engine nor a sleeping one.
    pub async fn wake(&self) -> Option<Result<Engine, EngineError>> {
        if let Some(engine) = self.get() {
            return Some(Ok(engine));
        }
        let _waking = self.waking.lock().await;
        if let Some(engine) = self.get() {
            return Some(Ok(engine));
        }
        let (config, load) = {
            let asleep = self.asleep();
            let asleep = asleep.as_ref()?;
            (asleep.config.clone(), asleep.load.clone())
        };
        let started = std::time::Instant::now();
        let loaded = tokio::task::spawn_blocking(move || Engine::start_with(config, load)).await;
        let engine = match loaded {
            Ok(Ok(engine)) => engine,
            Ok(Err(error)) => return Some(Err(error)),
            Err(panic) => return Some(Err(EngineError::ContextFailed(panic.to_string()))),
        };
        tracing::info!(
            model = %engine.info.id, load_ms = started.elapsed().as_millis() as u64,
            "model awake"
        );
        // The constraint compiler (it holds the model) went with the sleeping engine.
        engine.prepare_constraints();
        self.set(engine.clone());
        Some(Ok(engine))
    }
}

/// A handle to the engine's worker thread. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    model: Arc<LlamaModel>,
    info: Arc<ModelInfo>,
    /// What it was started with (a sleeping engine is started again from it).
    config: Arc<EngineConfig>,
    /// An encrypted model's memfd stays open as long as the model it holds.
    _source: Arc<crate::vault::ModelSource>,
    commands: std::sync::mpsc::Sender<worker::Command>,
    load: Arc<EngineLoad>,
    compiler: CompilerCell,
}

/// The constraint compiler of the model's vocabulary, built on first use or by
/// [`Engine::prepare_constraints`].
type CompilerCell = SyncArc<OnceLock<Result<SyncArc<Compiler>, String>>>;

impl Engine {
    /// Loads the model and starts the worker. Blocks until the model is loaded (seconds).
    pub fn start(config: EngineConfig) -> Result<Engine, EngineError> {
        Self::start_with(config, Arc::default())
    }

    /// [`Engine::start`] with the counters of the engine it replaces after a sleep.
    fn start_with(config: EngineConfig, load: Arc<EngineLoad>) -> Result<Engine, EngineError> {
        let started = std::time::Instant::now();
        config.validate()?;
        let source =
            crate::vault::open_model(&config.model_path, &config.keys, config.sha256.as_deref())
                .map_err(|error| EngineError::Vault {
                    path: config.model_path.clone(),
                    error: Box::new(error),
                })?;
        check_model_file(source.load_path())?;
        let backend = backend()?;
        memory::capture_llama_logs(config.verbose_llama_logs);
        // One start at a time: buffer sizes are read from the log lines this start produces.
        static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _starting = STARTING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let log_mark = memory::log_mark();
        let resident_before = ProcessMemory::read().resident_bytes;
        // No weight repacking (llama.cpp's extra buffer types): with it, a matmul over a batch of
        // rows runs another kernel than over one row, so the logits after a batch of forced
        // tokens differ in the last bits from decoding them one by one, and greedy output can
        // change (jump-forward would not be exact). Without it every row's result is the same
        // whatever it is batched with, and on this model it costs nothing measurable
        // (docs/performance.md, "Batch invariance").
        // An encrypted model's memfd is always mapped: read, it would be held twice.
        let mmap = config.use_mmap || matches!(source, crate::vault::ModelSource::Decrypted { .. });
        let model = load_model(backend, source.load_path(), mmap)?;
        let template = template::detect(&model, config.chat_template.as_deref())?;
        let resident_after_model = ProcessMemory::read().resident_bytes;
        let (commands, buffers) = worker::spawn(model.clone(), &config, load.clone(), log_mark)?;
        let mut info = ModelInfo {
            id: source
                .name()
                .map_or_else(|| model_id(&config.model_path), str::to_string),
            path: config.model_path.clone(),
            load_path: source.load_path().to_path_buf(),
            architecture: model
                .meta_val_str("general.architecture")
                .unwrap_or_default(),
            n_params: model.n_params(),
            n_vocab: usize::try_from(model.n_vocab()).unwrap_or(0),
            n_ctx_train: model.n_ctx_train(),
            n_ctx_slot: config.n_ctx_slot(),
            slots: config.slots,
            template,
            template_name: config.chat_template.clone(),
            template_text: model.meta_val_str("tokenizer.chat_template").ok(),
            eog_tokens: (0..model.n_vocab())
                .filter(|&id| model.vocab().is_eog(llama_cpp_2::token::LlamaToken(id)))
                .collect(),
            buffers,
            load_time: started.elapsed(),
            resident: LoadMemory {
                before_model: resident_before,
                after_model: resident_after_model,
                after_context: 0,
            },
        };
        // Loading leaves freed temporaries (header parsing, llama.cpp's loader) in malloc's arenas;
        // hand them back so a long-running server's idle memory is what it really holds.
        // SAFETY: malloc_trim only releases free heap memory; it has no preconditions.
        unsafe { libc::malloc_trim(0) };
        info.resident.after_context = ProcessMemory::read().resident_bytes;
        Ok(Engine {
            model,
            info: Arc::new(info),
            config: Arc::new(config),
            _source: Arc::new(source),
            commands,
            load,
            compiler: CompilerCell::default(),
        })
    }

    /// Builds the constraint compiler on a thread of its own now (a server calls this once the
    /// model is loaded, so its first constrained request does not wait; `run` and `bench`
    /// never pay for it).
    pub fn prepare_constraints(&self) {
        let engine = self.clone();
        let _ = std::thread::Builder::new()
            .name("edgellm-vocab".into())
            .spawn(move || {
                lower_this_threads_priority();
                let _ = engine.compiler();
            });
    }

    /// The constraint compiler; blocks while it is still being built (call it off the
    /// runtime's threads).
    pub fn compiler(&self) -> Result<SyncArc<Compiler>, EngineError> {
        let (model, limits) = (self.model.clone(), crate::constraint::Limits::default());
        self.compiler
            .get_or_init(|| build_compiler(model, limits))
            .clone()
            .map_err(EngineError::ContextFailed)
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn load(&self) -> &EngineLoad {
        &self.load
    }

    /// Tokenizes text as a prompt (adds BOS when the model wants it; parses special tokens, so a
    /// chat-templated prompt's turn markers become their control tokens).
    pub fn tokenize(&self, text: &str) -> Vec<i32> {
        let vocab = self.model.vocab();
        let add_bos = vocab.should_add_bos();
        vocab
            .tokenize(text.as_bytes(), add_bos, true)
            .into_iter()
            .map(|t| t.0)
            .collect()
    }

    /// Tokenizes text as llama-server's `/tokenize` does: BOS (and other special tokens the
    /// vocabulary adds) only when `add_special`, control-token text parsed when `parse_special`.
    pub fn tokenize_with(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<i32> {
        self.model
            .vocab()
            .tokenize(text.as_bytes(), add_special, parse_special)
            .into_iter()
            .map(|t| t.0)
            .collect()
    }

    /// The bytes of one token (ids outside the vocabulary are the caller's to refuse first).
    pub fn token_bytes(&self, token: i32) -> Vec<u8> {
        self.model
            .vocab()
            .token_to_piece(llama_cpp_2::token::LlamaToken(token), true, None)
    }

    /// The chat template the GGUF carries (`tokenizer.chat_template`), if any.
    /// Formats chat messages into a prompt with the model's chat template.
    pub fn apply_chat_template(&self, messages: &[ChatMessage]) -> Result<String, EngineError> {
        template::apply(
            &self.model,
            self.info.template,
            self.info.template_name.as_deref(),
            messages,
        )
    }

    /// Refuses a request whose prompt plus `max_tokens` does not fit one slot's context.
    pub fn check_fits(&self, prompt_tokens: usize, max_tokens: u32) -> Result<(), EngineError> {
        if prompt_tokens == 0 {
            return Err(EngineError::EmptyPrompt);
        }
        let n_ctx = self.info.n_ctx_slot;
        if prompt_tokens as u64 + u64::from(max_tokens) > u64::from(n_ctx) {
            return Err(EngineError::ContextOverflow {
                prompt_tokens,
                max_tokens,
                n_ctx,
            });
        }
        Ok(())
    }

    /// Queues a request. Events arrive on the returned receiver; drop it to cancel.
    pub fn submit(
        &self,
        request: GenerateRequest,
    ) -> Result<mpsc::UnboundedReceiver<Event>, EngineError> {
        request.params.validate()?;
        self.check_fits(request.prompt_tokens.len(), request.params.max_tokens)?;
        let (events, receiver) = mpsc::unbounded_channel();
        self.load.queued.fetch_add(1, Ordering::Relaxed);
        self.commands
            .send(worker::Command::Generate {
                request,
                events,
                queued_at: std::time::Instant::now(),
            })
            .map_err(|_| EngineError::Stopped)?;
        Ok(receiver)
    }
}

/// Background preparation yields the CPU to requests: on a 2-core device a vocabulary walk at
/// normal priority takes a core from the compute thread's OpenMP team, and every barrier of the
/// graphs computed meanwhile waits for it.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority has no memory preconditions; on Linux `who = 0` with PRIO_PROCESS names
    // the calling thread only. A failure leaves the priority as it was.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 15);
    }
}

fn build_compiler(
    model: Arc<LlamaModel>,
    limits: crate::constraint::Limits,
) -> Result<SyncArc<Compiler>, String> {
    Compiler::new(vocab::tok_env(model), limits).map(SyncArc::new)
}

/// Checks the file before llama.cpp sees it: it must exist and have a sound GGUF header. llama.cpp
/// aborts the process on some malformed files; the header reader refuses them with a clear error.
fn check_model_file(path: &std::path::Path) -> Result<(), EngineError> {
    let invalid = |reason: &str| EngineError::InvalidModel {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => return Err(invalid("it is a directory, not a GGUF file")),
        Ok(meta) if !meta.is_file() => return Err(invalid("it is not a regular file")),
        Ok(_) => {}
        Err(error) if error.raw_os_error() == Some(libc::ELOOP) => {
            return Err(invalid(
                "too many levels of symbolic links (a symlink loop)",
            ));
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            if std::fs::symlink_metadata(path).is_ok() {
                return Err(invalid(
                    "it is a symbolic link to a file that does not exist",
                ));
            }
            return Err(EngineError::ModelNotFound(path.to_path_buf()));
        }
        Err(error) => return Err(invalid(&error.to_string())),
    }
    crate::plan::gguf::read_header(path)
        .map(|_| ())
        .map_err(|error| EngineError::InvalidModel {
            path: path.to_path_buf(),
            reason: error.to_string(),
        })
}

/// Loads a checked model file with weight repacking off (see `Engine::start`); a failure
/// carries llama.cpp's last log lines.
fn load_model(
    backend: &LlamaBackend,
    path: &std::path::Path,
    use_mmap: bool,
) -> Result<Arc<LlamaModel>, EngineError> {
    let params = LlamaModelParams::default()
        .with_use_extra_bufts(false)
        .with_use_mmap(use_mmap);
    LlamaModel::load_from_file(backend, path, &params)
        .map(Arc::new)
        .map_err(|_| EngineError::LoadFailed {
            path: path.to_path_buf(),
            reason: memory::last_log_lines(2).join(" | "),
        })
}

/// llama.cpp's backend is process-global and initialised once.
fn backend() -> Result<&'static LlamaBackend, EngineError> {
    static BACKEND: std::sync::OnceLock<Option<LlamaBackend>> = std::sync::OnceLock::new();
    BACKEND
        .get_or_init(|| LlamaBackend::init().ok())
        .as_ref()
        .ok_or_else(|| EngineError::ContextFailed("llama.cpp backend failed to initialise".into()))
}

fn model_id(path: &std::path::Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = name.strip_suffix(".enc").unwrap_or(&name);
    name.strip_suffix(".gguf").unwrap_or(name).to_string()
}
