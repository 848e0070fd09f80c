//! The embedding engine: an encoder model (BERT-style, pooled) on a worker thread of its own,
//! beside the generation engine. Inputs from every queued request are packed into one
//! llama.cpp batch (each input its own sequence, up to `n_batch` tokens and `MAX_SEQS`
//! sequences), encoded in one call, and each sequence's pooled vector is returned as llama.cpp
//! pooled it (normalising is the service's, `embeddings.rs`).
//!
//! What llama.cpp would abort on is refused before it sees it: an input longer than the model's
//! trained context (its position table), a batch larger than the micro-batch (the encoder's
//! `n_ubatch >= n_tokens` assertion), token ids outside the vocabulary.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::oneshot;

use super::{EngineError, memory};

/// Most sequences in one batch.
const MAX_SEQS: u32 = 64;

/// How the pooled vector is made from the token vectors (llama-server's `--pooling`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    Mean,
    Cls,
    Last,
    /// No pooling: one vector per token (llama-server's `/embedding` only).
    None,
}

impl Pooling {
    pub fn as_str(self) -> &'static str {
        match self {
            Pooling::Mean => "mean",
            Pooling::Cls => "cls",
            Pooling::Last => "last",
            Pooling::None => "none",
        }
    }

    fn llama(self) -> llama_cpp_2::context::params::LlamaPoolingType {
        use llama_cpp_2::context::params::LlamaPoolingType;
        match self {
            Pooling::Mean => LlamaPoolingType::Mean,
            Pooling::Cls => LlamaPoolingType::Cls,
            Pooling::Last => LlamaPoolingType::Last,
            Pooling::None => LlamaPoolingType::None,
        }
    }
}

/// How the embedding engine runs.
#[derive(Debug, Clone)]
pub struct EmbedConfig {
    pub model_path: PathBuf,
    /// Pooling instead of the model's own (`<arch>.pooling_type`).
    pub pooling: Option<Pooling>,
    pub n_threads: u32,
    /// Tokens per batch (and micro-batch: an encoder needs the whole batch in one). At least the
    /// model's trained context, so that any input that fits the model fits a batch.
    pub n_batch: u32,
    /// The device key, for an encrypted embedding model.
    pub keys: crate::vault::KeyConfig,
}

impl EmbedConfig {
    pub const DEFAULT_N_BATCH: u32 = 512;

    pub fn new(model_path: PathBuf) -> EmbedConfig {
        EmbedConfig {
            model_path,
            pooling: None,
            n_threads: super::config::default_threads(),
            n_batch: Self::DEFAULT_N_BATCH,
            keys: crate::vault::KeyConfig::default(),
        }
    }
}

/// What the loaded embedding model is.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EmbedInfo {
    pub id: String,
    pub path: PathBuf,
    pub architecture: String,
    pub n_params: u64,
    pub n_vocab: usize,
    /// Dimensions of each vector.
    pub n_embd: usize,
    /// Most tokens one input may have (the model's position table; at most `n_batch`).
    pub max_input_tokens: usize,
    pub pooling: &'static str,
}

/// Counters since start.
#[derive(Debug, Default)]
pub struct EmbedLoad {
    pub inputs: AtomicU64,
    pub tokens: AtomicU64,
    pub batches: AtomicU64,
    pub busy_micros: AtomicU64,
}

/// The answer to one job: a pooled vector per input, or with pooling `none` each input's
/// token vectors one after the other (`n_tokens * n_embd` values).
pub type Vectors = Result<Vec<Vec<f32>>, EngineError>;

struct Job {
    inputs: Vec<Vec<i32>>,
    reply: oneshot::Sender<Vectors>,
}

/// A handle to the embedding worker. Cheap to clone.
#[derive(Clone)]
pub struct Embedder {
    model: Arc<LlamaModel>,
    info: Arc<EmbedInfo>,
    jobs: Sender<Job>,
    load: Arc<EmbedLoad>,
}

impl Embedder {
    /// Loads the model and starts the worker. Blocks until both are ready.
    pub fn start(config: EmbedConfig) -> Result<Embedder, EngineError> {
        if config.n_threads == 0 {
            return Err(EngineError::InvalidParameter(
                "threads must be at least 1".into(),
            ));
        }
        if !(16..=8192).contains(&config.n_batch) {
            return Err(EngineError::InvalidParameter(format!(
                "embedding batch must be between 16 and 8192 tokens, got {}",
                config.n_batch
            )));
        }
        let source =
            crate::vault::open_model(&config.model_path, &config.keys, None).map_err(|error| {
                EngineError::Vault {
                    path: config.model_path.clone(),
                    error: Box::new(error),
                }
            })?;
        super::check_model_file(source.load_path())?;
        let backend = super::backend()?;
        memory::install_capture();
        let model = super::load_model(backend, source.load_path(), true)?;
        let architecture = model
            .meta_val_str("general.architecture")
            .unwrap_or_default();
        let declared = model
            .meta_val_str(&format!("{architecture}.pooling_type"))
            .ok();
        let pooling = match (config.pooling, declared.as_deref()) {
            (Some(pooling), Some(_)) => pooling.as_str(),
            (None, Some("1")) => "mean",
            (None, Some("2")) => "cls",
            (None, Some("3")) => "last",
            _ => {
                return Err(EngineError::InvalidModel {
                    path: config.model_path.clone(),
                    reason: "not an embedding model: it declares no mean, CLS or last-token \
                             pooling (`<arch>.pooling_type`)"
                        .into(),
                });
            }
        };
        let n_ctx_train = usize::try_from(model.n_ctx_train()).unwrap_or(0);
        let max_input_tokens = n_ctx_train.min(config.n_batch as usize);
        let info = EmbedInfo {
            id: source
                .name()
                .map_or_else(|| super::model_id(&config.model_path), str::to_string),
            path: config.model_path.clone(),
            architecture: model
                .meta_val_str("general.architecture")
                .unwrap_or_default(),
            n_params: model.n_params(),
            n_vocab: usize::try_from(model.n_vocab()).unwrap_or(0),
            n_embd: usize::try_from(model.n_embd()).unwrap_or(0),
            max_input_tokens,
            pooling,
        };
        if info.n_embd == 0 || max_input_tokens < 2 {
            return Err(EngineError::InvalidModel {
                path: config.model_path.clone(),
                reason: "the model declares no embedding width or context".into(),
            });
        }
        let load = Arc::new(EmbedLoad::default());
        let (jobs, inbox) = std::sync::mpsc::channel::<Job>();
        let (ready, ready_rx) = std::sync::mpsc::channel();
        let worker_model = model.clone();
        let worker_load = load.clone();
        let n_embd = info.n_embd;
        std::thread::Builder::new()
            .name("edgellm-embed".into())
            .spawn(move || {
                // An encrypted model's memfd stays open as long as the model it holds.
                let _source = source;
                let context = match create_context(&worker_model, &config) {
                    Ok(context) => context,
                    Err(error) => {
                        let _ = ready.send(Err(error));
                        return;
                    }
                };
                let _ = ready.send(Ok(()));
                run(context, &config, n_embd, &worker_load, inbox);
            })
            .map_err(|e| EngineError::ContextFailed(e.to_string()))?;
        ready_rx.recv().map_err(|_| EngineError::Stopped)??;
        // SAFETY: malloc_trim only releases free heap memory; it has no preconditions.
        unsafe { libc::malloc_trim(0) };
        Ok(Embedder {
            model,
            info: Arc::new(info),
            jobs,
            load,
        })
    }

    pub fn info(&self) -> &EmbedInfo {
        &self.info
    }

    pub fn load(&self) -> &EmbedLoad {
        &self.load
    }

    /// Runs with pooling `none`: its answers are token vectors, not pooled ones.
    pub fn unpooled(&self) -> bool {
        self.info.pooling == "none"
    }

    /// Tokenizes one input as the model expects it (CLS ... SEP for BERT).
    pub fn tokenize(&self, text: &str) -> Vec<i32> {
        self.model
            .vocab()
            .tokenize(text.as_bytes(), true, false)
            .into_iter()
            .map(|t| t.0)
            .collect()
    }

    /// Tokenizes text without the model's special tokens (a piece of a mixed prompt).
    pub fn tokenize_plain(&self, text: &str) -> Vec<i32> {
        self.model
            .vocab()
            .tokenize(text.as_bytes(), false, false)
            .into_iter()
            .map(|t| t.0)
            .collect()
    }

    /// Checks one tokenized input: not empty, ids in the vocabulary, within the model's context.
    pub fn check_input(&self, tokens: &[i32]) -> Result<(), EmbedInputError> {
        if tokens.is_empty() {
            return Err(EmbedInputError::Empty);
        }
        if tokens.len() > self.info.max_input_tokens {
            return Err(EmbedInputError::TooLong {
                tokens: tokens.len(),
                max: self.info.max_input_tokens,
            });
        }
        if let Some(&bad) = tokens
            .iter()
            .find(|&&t| t < 0 || t as usize >= self.info.n_vocab)
        {
            return Err(EmbedInputError::BadToken {
                token: i64::from(bad),
                n_vocab: self.info.n_vocab,
            });
        }
        Ok(())
    }

    /// Queues inputs (each checked with [`Embedder::check_input`]); the reply is one pooled
    /// vector per input, in order. Dropping the receiver does not stop a batch
    /// already encoding (they take milliseconds).
    pub fn embed(&self, inputs: Vec<Vec<i32>>) -> Result<oneshot::Receiver<Vectors>, EngineError> {
        for input in &inputs {
            self.check_input(input)
                .map_err(|e| EngineError::InvalidParameter(e.to_string()))?;
        }
        let (reply, receiver) = oneshot::channel();
        self.jobs
            .send(Job { inputs, reply })
            .map_err(|_| EngineError::Stopped)?;
        Ok(receiver)
    }
}

/// Why one input cannot be embedded (the API maps these to 400s).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmbedInputError {
    #[error("the input is empty")]
    Empty,
    #[error(
        "the input is too large to process: {tokens} tokens; this embedding model takes at most {max}"
    )]
    TooLong { tokens: usize, max: usize },
    #[error("token id {token} is outside the vocabulary (0..{n_vocab})")]
    BadToken { token: i64, n_vocab: usize },
}

fn create_context<'m>(
    model: &'m LlamaModel,
    config: &EmbedConfig,
) -> Result<LlamaContext<'m>, EngineError> {
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(config.n_batch))
        .with_n_batch(config.n_batch)
        .with_n_ubatch(config.n_batch)
        .with_n_seq_max(MAX_SEQS)
        .with_embeddings(true)
        .with_pooling_type(config.pooling.map_or(
            llama_cpp_2::context::params::LlamaPoolingType::Unspecified,
            Pooling::llama,
        ))
        .with_n_threads(config.n_threads as i32)
        .with_n_threads_batch(config.n_threads as i32)
        .with_no_perf(true);
    model.new_context(super::backend()?, params).map_err(|e| {
        let reason = memory::last_log_lines(3).join(" | ");
        EngineError::ContextFailed(format!("{e}: {reason}"))
    })
}

/// One input waiting for a batch: which job, which of its inputs.
struct Pending {
    job: usize,
    index: usize,
}

struct OpenJob {
    inputs: Vec<Vec<i32>>,
    results: Vec<Option<Vec<f32>>>,
    left: usize,
    reply: Option<oneshot::Sender<Vectors>>,
}

fn run(
    mut context: LlamaContext<'_>,
    config: &EmbedConfig,
    n_embd: usize,
    load: &EmbedLoad,
    inbox: Receiver<Job>,
) {
    let n_batch = config.n_batch as usize;
    let unpooled = config.pooling == Some(Pooling::None);
    let mut batch = LlamaBatch::new(n_batch, MAX_SEQS as i32);
    let mut jobs: Vec<OpenJob> = Vec::new();
    let mut queue: std::collections::VecDeque<Pending> = std::collections::VecDeque::new();
    loop {
        // Block for work when there is none; then take everything already queued.
        if queue.is_empty() {
            match inbox.recv() {
                Ok(job) => admit(job, &mut jobs, &mut queue),
                Err(_) => return,
            }
        }
        while let Ok(job) = inbox.try_recv() {
            admit(job, &mut jobs, &mut queue);
        }
        // Fill one batch.
        batch.clear();
        let mut members: Vec<Pending> = Vec::new();
        // Where each member's tokens start in the batch.
        let mut starts: Vec<usize> = Vec::new();
        let mut tokens = 0usize;
        while let Some(next) = queue.front() {
            let len = jobs[next.job].inputs[next.index].len();
            if members.len() as u32 >= MAX_SEQS || tokens + len > n_batch {
                break;
            }
            let Some(next) = queue.pop_front() else { break };
            let seq = members.len() as i32;
            let input: Vec<LlamaToken> = jobs[next.job].inputs[next.index]
                .iter()
                .map(|&t| LlamaToken(t))
                .collect();
            if batch.add_sequence(&input, seq, true).is_err() {
                fail(&mut jobs[next.job], "batch is full");
                continue;
            }
            starts.push(tokens);
            tokens += len;
            members.push(next);
        }
        if members.is_empty() {
            // Only inputs longer than a batch (refused at submission, so not reached).
            while let Some(p) = queue.pop_front() {
                fail(&mut jobs[p.job], "input longer than a batch");
            }
        } else {
            let started = Instant::now();
            let result = super::compute::run(|| context.encode(&mut batch));
            load.batches.fetch_add(1, Ordering::Relaxed);
            load.tokens.fetch_add(tokens as u64, Ordering::Relaxed);
            load.inputs
                .fetch_add(members.len() as u64, Ordering::Relaxed);
            match result {
                Err(e) => {
                    let reason = format!("llama.cpp encode failed: {e}");
                    for p in &members {
                        fail(&mut jobs[p.job], &reason);
                    }
                }
                Ok(()) => {
                    for (seq, p) in members.iter().enumerate() {
                        let vector = if unpooled {
                            let len = jobs[p.job].inputs[p.index].len();
                            token_vectors(&context, starts[seq], len, n_embd)
                        } else {
                            context
                                .embeddings_seq_ith(seq as i32)
                                .ok()
                                .filter(|v| v.len() >= n_embd)
                                .map(|v| v[..n_embd].to_vec())
                        };
                        match vector {
                            Some(vector) => {
                                let job = &mut jobs[p.job];
                                if job.reply.is_some() {
                                    job.results[p.index] = Some(vector);
                                    job.left -= 1;
                                }
                            }
                            None => fail(&mut jobs[p.job], "llama.cpp returned no embedding"),
                        }
                    }
                }
            }
            load.busy_micros
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        // Answer finished jobs; forget answered ones once nothing refers to them.
        for job in jobs.iter_mut() {
            if job.left == 0
                && let Some(reply) = job.reply.take()
            {
                let vectors = std::mem::take(&mut job.results)
                    .into_iter()
                    .map(Option::unwrap_or_default)
                    .collect();
                let _ = reply.send(Ok(vectors));
            }
        }
        if queue.is_empty() {
            jobs.clear();
        }
    }
}

/// The vectors of `len` tokens from batch position `start`, one after the other.
fn token_vectors(
    context: &LlamaContext<'_>,
    start: usize,
    len: usize,
    n_embd: usize,
) -> Option<Vec<f32>> {
    let mut out = Vec::with_capacity(len * n_embd);
    for position in start..start + len {
        let v = context.embeddings_ith(i32::try_from(position).ok()?).ok()?;
        out.extend_from_slice(v.get(..n_embd)?);
    }
    Some(out)
}

fn admit(job: Job, jobs: &mut Vec<OpenJob>, queue: &mut std::collections::VecDeque<Pending>) {
    let index = jobs.len();
    let n = job.inputs.len();
    if n == 0 {
        let _ = job.reply.send(Ok(Vec::new()));
        return;
    }
    for i in 0..n {
        queue.push_back(Pending {
            job: index,
            index: i,
        });
    }
    jobs.push(OpenJob {
        results: vec![None; n],
        left: n,
        inputs: job.inputs,
        reply: Some(job.reply),
    });
}

fn fail(job: &mut OpenJob, reason: &str) {
    if let Some(reply) = job.reply.take() {
        let _ = reply.send(Err(EngineError::Decode(reason.to_string())));
    }
}
