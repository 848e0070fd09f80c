//! Engine settings: threads, context, batch sizes, KV-cache type, slots.

use std::path::PathBuf;

use super::EngineError;

/// KV-cache element type (llama.cpp's `-ctk/-ctv`). Quantized V cache needs flash attention,
/// which llama.cpp enables automatically on CPU when it is available.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum KvType {
    F16,
    Q8_0,
    Q4_0,
}

impl KvType {
    pub fn as_str(self) -> &'static str {
        match self {
            KvType::F16 => "f16",
            KvType::Q8_0 => "q8_0",
            KvType::Q4_0 => "q4_0",
        }
    }
}

/// How the engine runs a model. Defaults suit a small device: all cores, a 2048-token context,
/// and a 128-token micro-batch, which keeps the compute buffer of a 262k-vocabulary model at about
/// a quarter of llama.cpp's default (512) without slowing prompt processing.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub model_path: PathBuf,
    /// Threads for generation (one token per step).
    pub n_threads: u32,
    /// Threads for prompt processing (batches).
    pub n_threads_batch: u32,
    /// Total context size in tokens, split evenly across `slots` (unless `kv_unified`).
    pub n_ctx: u32,
    /// Every slot may use the whole context, the slots sharing its `n_ctx` cells
    /// (llama-server's `--kv-unified`): longer answers, but when the pool fills, the requests
    /// decoding then fail ("context size has been exceeded") after idle slots' caches are
    /// given up.
    pub kv_unified: bool,
    /// Logical batch: most tokens submitted to one decode call.
    pub n_batch: u32,
    /// Physical micro-batch: sizes the compute buffer (logits buffer = vocabulary × n_ubatch).
    pub n_ubatch: u32,
    pub kv_type: KvType,
    /// Parallel sequences decoded together (continuous batching).
    pub slots: u32,
    /// Forward llama.cpp's own log lines to stderr (they are captured and parsed either way).
    pub verbose_llama_logs: bool,
    /// How the tokens a constraint forces are appended (jump-forward).
    pub jump_forward: crate::constraint::JumpForward,
    /// One of llama.cpp's built-in chat templates, instead of the GGUF's (`--chat-template`).
    pub chat_template: Option<String>,
    /// Map the model file (llama.cpp's default) rather than read it into memory (`--no-mmap`).
    /// An encrypted model is mapped from its memfd either way.
    pub use_mmap: bool,
    /// Where the device key for an encrypted model is (`[keys]`).
    pub keys: crate::vault::KeyConfig,
    /// The plaintext's expected sha256 (`[model] sha256`, or the active slot's signed one):
    /// checked before the model is loaded.
    pub sha256: Option<String>,
}

impl EngineConfig {
    pub const DEFAULT_N_CTX: u32 = 2048;
    pub const DEFAULT_N_BATCH: u32 = 512;
    pub const DEFAULT_N_UBATCH: u32 = 128;

    pub fn new(model_path: PathBuf) -> Self {
        let threads = default_threads();
        EngineConfig {
            model_path,
            n_threads: threads,
            n_threads_batch: threads,
            n_ctx: Self::DEFAULT_N_CTX,
            kv_unified: false,
            n_batch: Self::DEFAULT_N_BATCH,
            n_ubatch: Self::DEFAULT_N_UBATCH,
            kv_type: KvType::F16,
            slots: 1,
            verbose_llama_logs: false,
            jump_forward: crate::constraint::JumpForward::Exact,
            chat_template: None,
            use_mmap: true,
            keys: crate::vault::KeyConfig::default(),
            sha256: None,
        }
    }

    /// Most tokens (prompt and answer) one slot may hold.
    pub fn n_ctx_slot(&self) -> u32 {
        if self.kv_unified {
            self.n_ctx
        } else {
            self.n_ctx / self.slots.max(1)
        }
    }

    pub fn validate(&self) -> Result<(), EngineError> {
        let bad = |what: String| Err(EngineError::InvalidParameter(what));
        if self.n_threads == 0 || self.n_threads_batch == 0 {
            return bad("threads must be at least 1".into());
        }
        if self.slots == 0 || self.slots > 64 {
            return bad(format!(
                "slots must be between 1 and 64, got {}",
                self.slots
            ));
        }
        if self.n_ctx / self.slots < 16 {
            return bad(format!(
                "context size {} is too small for {} slot(s): each slot needs at least 16 tokens",
                self.n_ctx, self.slots
            ));
        }
        if self.slots > self.n_batch {
            return bad(format!(
                "slots ({}) must not exceed the batch size ({})",
                self.slots, self.n_batch
            ));
        }
        if self.n_batch == 0 || self.n_ubatch == 0 || self.n_ubatch > self.n_batch {
            return bad(format!(
                "batch sizes must satisfy 1 <= ubatch ({}) <= batch ({})",
                self.n_ubatch, self.n_batch
            ));
        }
        Ok(())
    }
}

/// One thread per available core (llama.cpp's default is the physical core count, which is the
/// same on the small devices this targets).
pub fn default_threads() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(4)
}
