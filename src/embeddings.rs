//! The local embedding service: the embedding model's limits, admission and normalisation,
//! between the HTTP handlers (`api/embeddings.rs`) and the engine's embedding worker
//! (`engine/embed.rs`). No HTTP and no wire formats here.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::engine::embed::{EmbedConfig, EmbedInputError, Embedder};

/// `[embedding]` as written in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEmbedding {
    /// The embedding GGUF [default: the installed default embedding model, when present].
    pub model: Option<PathBuf>,
    /// `false` serves no embedding model even when the default one is installed.
    pub enabled: Option<bool>,
    pub threads: Option<u32>,
    /// Tokens per batch (at least the model's context, 512 for MiniLM) [default: 512].
    pub batch_size: Option<u32>,
    /// `mean`, `cls`, `last` or `none` (one vector per token, `/embedding` only) instead of
    /// the model's own pooling.
    pub pooling: Option<crate::engine::embed::Pooling>,
    /// Most inputs in one request [default: 2048, OpenAI's].
    pub max_inputs: Option<usize>,
    /// Most tokens over all inputs of one request [default: 65536].
    pub max_request_tokens: Option<usize>,
    /// The model was trained for shorter vectors (Matryoshka), so `dimensions` may truncate
    /// [default: false].
    pub truncatable: Option<bool>,
}

/// The embedding service's validated settings.
#[derive(Debug, Clone)]
pub struct EmbeddingConfig {
    pub engine: EmbedConfig,
    pub max_inputs: usize,
    pub max_request_tokens: usize,
    pub truncatable: bool,
}

impl EmbeddingConfig {
    pub const DEFAULT_MAX_INPUTS: usize = 2048;
    pub const DEFAULT_MAX_REQUEST_TOKENS: usize = 65536;

    pub fn new(model: PathBuf) -> EmbeddingConfig {
        EmbeddingConfig {
            engine: EmbedConfig::new(model),
            max_inputs: Self::DEFAULT_MAX_INPUTS,
            max_request_tokens: Self::DEFAULT_MAX_REQUEST_TOKENS,
            truncatable: false,
        }
    }

    /// `None` when no embedding model is served: `enabled = false`, or nothing configured and
    /// the default model not installed. A configured model that is missing is the engine's
    /// error at start, not silence.
    pub fn from_raw(raw: Option<RawEmbedding>) -> Result<Option<EmbeddingConfig>, String> {
        let raw = raw.unwrap_or_default();
        if raw.enabled == Some(false) {
            if raw.model.is_some() {
                return Err("[embedding] enabled = false contradicts the model it names".into());
            }
            return Ok(None);
        }
        let model = match raw.model {
            Some(model) => model,
            None => {
                let default = crate::paths::default_embedding_model();
                if !default.exists() {
                    return Ok(None);
                }
                default
            }
        };
        let mut config = EmbeddingConfig::new(model);
        if let Some(t) = raw.threads {
            config.engine.n_threads = t;
        }
        if let Some(b) = raw.batch_size {
            config.engine.n_batch = b;
        }
        config.engine.pooling = raw.pooling;
        if let Some(n) = raw.max_inputs {
            config.max_inputs = n;
        }
        if let Some(n) = raw.max_request_tokens {
            config.max_request_tokens = n;
        }
        config.truncatable = raw.truncatable.unwrap_or(false);
        if config.engine.n_threads == 0 {
            return Err("[embedding] threads must be at least 1".into());
        }
        if !(16..=8192).contains(&config.engine.n_batch) {
            return Err("[embedding] batch_size must be between 16 and 8192".into());
        }
        if config.max_inputs == 0 || config.max_inputs > 100_000 {
            return Err("[embedding] max_inputs must be between 1 and 100000".into());
        }
        if config.max_request_tokens == 0 {
            return Err("[embedding] max_request_tokens must be at least 1".into());
        }
        Ok(Some(config))
    }
}

/// What can go wrong with an embedding request; `api/error.rs` maps each to a response.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(
        "no embedding model is configured: install the default one (scripts/install-model.sh) or set [embedding] model"
    )]
    NotConfigured,
    #[error("the embedding model is still loading")]
    Loading,
    #[error("the embedding model is unavailable: {0}")]
    Unavailable(String),
    #[error("input {index}: {error}")]
    Input {
        index: usize,
        error: EmbedInputError,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{count} inputs, more than the limit of {limit}")]
    TooManyInputs { count: usize, limit: usize },
    #[error("the inputs have {tokens} tokens in all, more than the limit of {limit}")]
    TooManyTokens { tokens: usize, limit: usize },
    #[error(
        "this embedding model returns {n_embd} dimensions and cannot be truncated; got dimensions {requested}"
    )]
    Dimensions { requested: u32, n_embd: usize },
    #[error("{queued} embedding requests are queued; retry later")]
    Overloaded { queued: usize },
    #[error("the request took longer than the {0:?} timeout")]
    Timeout(Duration),
    #[error(
        "the embedding model runs with pooling \"none\" (one vector per token), so it has no \
         pooled vector to answer this request with; /embedding returns the token vectors"
    )]
    Unpooled,
    #[error("{0}")]
    Engine(String),
}

/// One input: text, token ids as the client tokenized them, or llama-server's mixed prompt
/// (text pieces and token ids in one sequence).
#[derive(Debug, Clone, PartialEq)]
pub enum EmbedInput {
    Text(String),
    Tokens(Vec<i64>),
    Mixed(Vec<Piece>),
}

/// A piece of a mixed prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String),
    Token(i64),
}

/// How pooled vectors are normalised (llama-server's `embd_normalize`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Normalize {
    None,
    /// Scaled so the largest absolute value is 32760 (int16 range).
    MaxAbs,
    Taxicab,
    Euclidean,
    PNorm(i32),
}

impl Normalize {
    pub fn from_llama(n: i32) -> Normalize {
        match n {
            i32::MIN..=-1 => Normalize::None,
            0 => Normalize::MaxAbs,
            1 => Normalize::Taxicab,
            2 => Normalize::Euclidean,
            p => Normalize::PNorm(p),
        }
    }

    pub fn apply(self, v: &mut [f32]) {
        let sum = match self {
            Normalize::None => return,
            Normalize::MaxAbs => v.iter().fold(0f64, |m, x| m.max(f64::from(x.abs()))) / 32760.0,
            Normalize::Taxicab => v.iter().map(|x| f64::from(x.abs())).sum(),
            Normalize::Euclidean => v
                .iter()
                .map(|x| f64::from(*x) * f64::from(*x))
                .sum::<f64>()
                .sqrt(),
            Normalize::PNorm(p) => v
                .iter()
                .map(|x| f64::from(x.abs()).powi(p))
                .sum::<f64>()
                .powf(1.0 / f64::from(p)),
        };
        if sum > 0.0 {
            for x in v.iter_mut() {
                *x = (f64::from(*x) / sum) as f32;
            }
        }
    }
}

/// What one request asks.
#[derive(Debug, Clone)]
pub struct EmbedRequest {
    pub inputs: Vec<EmbedInput>,
    pub dimensions: Option<u32>,
    pub normalize: Normalize,
    /// Cut inputs longer than the model's context to fit (Ollama's `truncate`, its default),
    /// keeping the closing special token; otherwise they are refused.
    pub truncate: bool,
}

/// The answer: one vector per input, in order, and the tokens they took.
#[derive(Debug, Clone)]
pub struct Embedded {
    pub model: String,
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: usize,
    pub elapsed: Duration,
}

/// The answer to `/embedding`: the rows of each input, in order: its pooled vector as the
/// one row, or with pooling `none` one unnormalised row per token (as llama-server answers).
#[derive(Debug, Clone)]
pub struct EmbeddedRows {
    pub model: String,
    pub rows: Vec<Vec<Vec<f32>>>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct EmbedMetrics {
    pub requests_ok: std::sync::atomic::AtomicU64,
    pub requests_failed: std::sync::atomic::AtomicU64,
}

/// The service: the embedder (once loaded), limits and admission. Cheap to clone.
#[derive(Clone)]
pub struct EmbeddingService {
    config: Option<Arc<EmbeddingConfig>>,
    embedder: Arc<OnceLock<Embedder>>,
    /// Why the embedding model did not load, when it did not.
    failure: Arc<OnceLock<String>>,
    admission: Arc<tokio::sync::Semaphore>,
    queue: usize,
    timeout: Duration,
    pub metrics: Arc<EmbedMetrics>,
    /// Where the GenAI semantic-convention families are kept (operation `embeddings`).
    gen_ai: Option<Arc<crate::metrics::Metrics>>,
}

impl EmbeddingService {
    pub fn new(config: Option<EmbeddingConfig>, limits: &crate::service::Limits) -> Self {
        let queue = limits.queue_depth.max(1);
        EmbeddingService {
            config: config.map(Arc::new),
            embedder: Arc::new(OnceLock::new()),
            failure: Arc::new(OnceLock::new()),
            admission: Arc::new(tokio::sync::Semaphore::new(queue)),
            queue,
            timeout: limits.request_timeout,
            metrics: Arc::new(EmbedMetrics::default()),
            gen_ai: None,
        }
    }

    /// Records each embedding request in the server's GenAI families too.
    pub fn with_gen_ai(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.gen_ai = Some(metrics);
        self
    }

    pub fn config(&self) -> Option<&EmbeddingConfig> {
        self.config.as_deref()
    }

    /// The loaded embedder (serve sets it once the model is loaded).
    pub fn cell(&self) -> &Arc<OnceLock<Embedder>> {
        &self.embedder
    }

    pub fn embedder(&self) -> Option<&Embedder> {
        self.embedder.get()
    }

    /// Records why the embedding model did not load (the first reason stays).
    pub fn fail(&self, reason: String) {
        let _ = self.failure.set(reason);
    }

    /// Why the embedding model did not load, when it did not.
    pub fn load_failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    /// The loaded embedder, or why there is none: still loading, or failed to load.
    pub fn require_embedder(&self) -> Result<&Embedder, EmbedError> {
        self.embedder.get().ok_or_else(|| match self.failure.get() {
            Some(reason) => EmbedError::Unavailable(reason.clone()),
            None => EmbedError::Loading,
        })
    }

    fn ready(&self) -> Result<(&Embedder, &EmbeddingConfig), EmbedError> {
        let config = self.config.as_deref().ok_or(EmbedError::NotConfigured)?;
        Ok((self.require_embedder()?, config))
    }

    /// Embeds every input into one pooled vector, or fails the whole request naming the first
    /// bad input.
    pub async fn embed(&self, request: EmbedRequest) -> Result<Embedded, EmbedError> {
        if self.embedder().is_some_and(Embedder::unpooled) {
            return Err(EmbedError::Unpooled);
        }
        let normalize = request.normalize;
        let keep = request.dimensions;
        let mut done = self.measured(request).await?;
        let keep = keep.map_or(usize::MAX, |d| d as usize);
        for v in &mut done.vectors {
            v.truncate(keep);
            normalize.apply(v);
        }
        Ok(done)
    }

    /// `/embedding`'s rows: [`EmbeddingService::embed`]'s vector as the one row of each input,
    /// or with pooling `none` its token vectors, unnormalised.
    pub async fn embed_rows(&self, request: EmbedRequest) -> Result<EmbeddedRows, EmbedError> {
        if !self.embedder().is_some_and(Embedder::unpooled) {
            let done = self.embed(request).await?;
            return Ok(EmbeddedRows {
                model: done.model,
                rows: done.vectors.into_iter().map(|v| vec![v]).collect(),
            });
        }
        let done = self.measured(request).await?;
        let n_embd = self.embedder().map_or(1, |e| e.info().n_embd).max(1);
        Ok(EmbeddedRows {
            model: done.model,
            rows: done
                .vectors
                .into_iter()
                .map(|flat| flat.chunks(n_embd).map(<[f32]>::to_vec).collect())
                .collect(),
        })
    }

    /// Runs one request through the engine, counted in the metrics; the vectors as the engine
    /// returns them.
    async fn measured(&self, request: EmbedRequest) -> Result<Embedded, EmbedError> {
        let started = Instant::now();
        let result = self.embed_inner(request).await;
        // GenAI families: requests the model ran (or that failed while running), as the
        // generation path counts requests committed to a tier.
        let error = match &result {
            Ok(_) => None,
            Err(EmbedError::Timeout(_)) => Some("timeout"),
            Err(EmbedError::Engine(_)) => Some("engine_error"),
            Err(_) => Some(""),
        };
        if let (Some(metrics), Some(embedder)) = (&self.gen_ai, self.embedder.get())
            && error != Some("")
        {
            metrics.record_gen_ai(
                crate::metrics::GenAiKey {
                    operation: "embeddings",
                    provider: "llama.cpp",
                    model: embedder.info().id.clone(),
                    tier: "local".into(),
                },
                crate::metrics::GenAiObservation {
                    input_tokens: result.as_ref().map_or(0, |r| r.prompt_tokens),
                    output_tokens: 0,
                    duration_secs: started.elapsed().as_secs_f64(),
                    ttft_secs: None,
                    tpot_secs: None,
                    error,
                },
            );
        }
        let counter = if result.is_ok() {
            &self.metrics.requests_ok
        } else {
            &self.metrics.requests_failed
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        result
    }

    async fn embed_inner(&self, request: EmbedRequest) -> Result<Embedded, EmbedError> {
        let started = Instant::now();
        let (embedder, config) = self.ready()?;
        let n_embd = embedder.info().n_embd;
        if request.inputs.is_empty() {
            return Err(EmbedError::Invalid("input must not be empty".into()));
        }
        if request.inputs.len() > config.max_inputs {
            return Err(EmbedError::TooManyInputs {
                count: request.inputs.len(),
                limit: config.max_inputs,
            });
        }
        // `embed` truncates to the dimensions checked here.
        match request.dimensions {
            None => {}
            Some(d) if d as usize == n_embd => {}
            Some(0) => return Err(EmbedError::Invalid("dimensions must be at least 1".into())),
            Some(d) if config.truncatable && (d as usize) < n_embd => {}
            Some(d) => {
                return Err(EmbedError::Dimensions {
                    requested: d,
                    n_embd,
                });
            }
        }
        let _permit = self
            .admission
            .try_acquire()
            .map_err(|_| EmbedError::Overloaded { queued: self.queue })?;
        // Tokenizing is bounded by the body limit; it runs off the runtime's threads anyway.
        let tokenizer = embedder.clone();
        let max_tokens = config.max_request_tokens;
        let truncate = request.truncate;
        let tokenized = tokio::task::spawn_blocking(move || {
            let mut total = 0usize;
            let mut out = Vec::with_capacity(request.inputs.len());
            for (index, input) in request.inputs.into_iter().enumerate() {
                let tokens: Vec<i32> = match input {
                    EmbedInput::Text(text) => tokenizer.tokenize(&text),
                    EmbedInput::Mixed(pieces) => {
                        // The model's own specials around the pieces: what it puts around an
                        // empty text (CLS ... SEP for BERT).
                        let frame = tokenizer.tokenize("");
                        let (open, close) = frame.split_at(frame.len().saturating_sub(1));
                        let mut tokens = open.to_vec();
                        for piece in pieces {
                            match piece {
                                Piece::Text(text) => {
                                    tokens.extend(tokenizer.tokenize_plain(&text));
                                }
                                Piece::Token(id) => tokens.push(i32::try_from(id).unwrap_or(-1)),
                            }
                        }
                        tokens.extend_from_slice(close);
                        tokens
                    }
                    EmbedInput::Tokens(ids) => {
                        let n_vocab = tokenizer.info().n_vocab;
                        if let Some(&token) = ids.iter().find(|&&id| id < 0 || id >= n_vocab as i64)
                        {
                            return Err(EmbedError::Input {
                                index,
                                error: EmbedInputError::BadToken { token, n_vocab },
                            });
                        }
                        ids.into_iter().map(|id| id as i32).collect()
                    }
                };
                let mut tokens = tokens;
                let max = tokenizer.info().max_input_tokens;
                if truncate && tokens.len() > max {
                    let last = tokens[tokens.len() - 1];
                    tokens.truncate(max - 1);
                    tokens.push(last);
                }
                tokenizer
                    .check_input(&tokens)
                    .map_err(|error| EmbedError::Input { index, error })?;
                total += tokens.len();
                if total > max_tokens {
                    return Err(EmbedError::TooManyTokens {
                        tokens: total,
                        limit: max_tokens,
                    });
                }
                out.push(tokens);
            }
            Ok((out, total))
        })
        .await
        .map_err(|e| EmbedError::Engine(e.to_string()))??;
        let (inputs, prompt_tokens) = tokenized;
        let receiver = embedder
            .embed(inputs)
            .map_err(|e| EmbedError::Engine(e.to_string()))?;
        let left = self.timeout.saturating_sub(started.elapsed());
        let vectors = tokio::time::timeout(left, receiver)
            .await
            .map_err(|_| EmbedError::Timeout(self.timeout))?
            .map_err(|_| EmbedError::Engine("the embedding engine stopped".into()))?
            .map_err(|e| EmbedError::Engine(e.to_string()))?;
        Ok(Embedded {
            model: embedder.info().id.clone(),
            vectors,
            prompt_tokens,
            elapsed: started.elapsed(),
        })
    }
}

/// Cosine similarity of two vectors (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        dot += f64::from(*x) * f64::from(*y);
        na += f64::from(*x) * f64::from(*x);
        nb += f64::from(*y) * f64::from(*y);
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    (dot / (na.sqrt() * nb.sqrt())) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisations_match_llama_server() {
        let mut v = vec![3.0, -4.0];
        Normalize::Euclidean.apply(&mut v);
        assert_eq!(v, vec![0.6, -0.8]);
        let mut v = vec![1.0, -3.0];
        Normalize::Taxicab.apply(&mut v);
        assert_eq!(v, vec![0.25, -0.75]);
        let mut v = vec![1.0, -2.0];
        Normalize::MaxAbs.apply(&mut v);
        assert_eq!(v, vec![16380.0, -32760.0]);
        let mut v = vec![1.0, 2.0];
        Normalize::None.apply(&mut v);
        assert_eq!(v, vec![1.0, 2.0]);
        assert_eq!(Normalize::from_llama(-1), Normalize::None);
        assert_eq!(Normalize::from_llama(3), Normalize::PNorm(3));
        let mut zero = vec![0.0, 0.0];
        Normalize::Euclidean.apply(&mut zero);
        assert_eq!(zero, vec![0.0, 0.0]);
    }

    #[test]
    fn config_defaults_and_refusals() {
        let none = EmbeddingConfig::from_raw(Some(RawEmbedding {
            enabled: Some(false),
            ..Default::default()
        }))
        .unwrap();
        assert!(none.is_none());
        let config = EmbeddingConfig::from_raw(Some(RawEmbedding {
            model: Some("/x.gguf".into()),
            ..Default::default()
        }))
        .unwrap()
        .unwrap();
        assert_eq!(config.max_inputs, 2048);
        assert!(!config.truncatable);
        let bad = EmbeddingConfig::from_raw(Some(RawEmbedding {
            model: Some("/x.gguf".into()),
            batch_size: Some(4),
            ..Default::default()
        }));
        assert!(bad.unwrap_err().contains("batch_size"));
        let contradiction = EmbeddingConfig::from_raw(Some(RawEmbedding {
            enabled: Some(false),
            model: Some("/x.gguf".into()),
            ..Default::default()
        }));
        assert!(contradiction.is_err());
    }

    #[test]
    fn cosine_of_vectors() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 0.0]) - 1.0).abs() < 1e-6);
        assert!(cosine(&[1.0, 0.0], &[0.0, 1.0]).abs() < 1e-6);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }
}
