//! The local generation service: what every API endpoint calls to run a request on the device.
//!
//! It owns admission (slots + a bounded queue, then "overloaded"), the request limits, prompt
//! formatting and tokenization, structured-output constraints (JSON mode and JSON schemas become
//! a grammar; the output is validated against the schema), tool turns (the tools become a grammar
//! too, see `crate::tools`; the calls are read back and checked), the request timeout, and
//! metrics. It knows nothing of HTTP or wire formats.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::constraint::{Constraint, Spec};
use crate::engine::{
    self, BiasTarget, ChatMessage, Engine, EngineError, EngineSlot, Event, GenerateRequest,
    LogitBias, SamplingParams, Summary, TokenEvent,
};
use crate::metrics::Metrics;
use crate::route::LocalFailure;
use crate::tools::{ToolCall, ToolSet, Turn};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("the model is still loading")]
    Loading,
    /// The model did not load (a container that does not open, a sha256 that differs): the
    /// server stays up to say so.
    #[error("the local model is unavailable: {0}")]
    Unavailable(String),
    #[error("all {slots} slots are busy and {queued} requests are queued; retry later")]
    Overloaded { slots: u32, queued: usize },
    #[error("prompt has {tokens} tokens, more than the limit of {limit}")]
    PromptTooLong { tokens: usize, limit: usize },
    /// A token id in `field` (`prompt`, `logit_bias`) that the vocabulary does not have.
    #[error("token id {token} is outside the vocabulary (0..{n_vocab})")]
    TokenOutOfRange {
        field: &'static str,
        token: i64,
        n_vocab: usize,
    },
    #[error("max_tokens {requested} exceeds the limit of {limit}")]
    MaxTokensTooLarge { requested: u32, limit: u32 },
    #[error("invalid JSON schema: {0}")]
    InvalidSchema(String),
    /// The request's schema or grammar cannot constrain decoding; `field` names where it came
    /// from (`response_format`, `grammar`, `tools`, ...).
    #[error("{error}")]
    InvalidConstraint {
        field: &'static str,
        error: crate::constraint::ConstraintError,
    },
    /// The tools' schemas could not become a grammar for the local model.
    #[error("the tools cannot constrain the local model: {0}")]
    InvalidTools(String),
    #[error("the output does not match the JSON schema: {0}")]
    OutputInvalid(String),
    #[error("the request took longer than the {0:?} timeout")]
    Timeout(Duration),
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A remote tier failed (after its answer had started, or as the only tier tried).
    #[error("tier {tier} failed: {error}")]
    Upstream {
        tier: String,
        error: crate::upstream::UpstreamError,
    },
    /// Every tier was tried or skipped; the message lists each one's reason.
    #[error("no tier could answer: {0}")]
    AllTiersFailed(String),
    /// No tier answered and a tier off the device was refused because today's budget is spent:
    /// retrying helps only once the budget day turns, `retry_after_secs` from now.
    #[error("today's remote budget is spent: {detail}")]
    BudgetSpent {
        detail: String,
        retry_after_secs: u64,
    },
}

impl ServiceError {
    /// The error's kind, for the routing decision (`route::local_failure`).
    pub fn failure(&self) -> LocalFailure {
        match self {
            ServiceError::Overloaded { .. } | ServiceError::Engine(EngineError::KvFull { .. }) => {
                LocalFailure::Overloaded
            }
            ServiceError::PromptTooLong { .. }
            | ServiceError::MaxTokensTooLarge { .. }
            | ServiceError::Engine(EngineError::ContextOverflow { .. }) => LocalFailure::Context,
            ServiceError::Timeout(_) => LocalFailure::Timeout,
            ServiceError::InvalidSchema(_)
            | ServiceError::InvalidConstraint { .. }
            | ServiceError::TokenOutOfRange { .. }
            | ServiceError::Engine(
                EngineError::EmptyPrompt
                | EngineError::InvalidParameter(_)
                | EngineError::Constraint(_),
            ) => LocalFailure::Invalid,
            _ => LocalFailure::Error,
        }
    }
}

/// Explicit limits on what one request may ask for.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_prompt_tokens: usize,
    /// Most tokens a request may generate (also the default when it does not say, unless
    /// `default_max_tokens` is set).
    pub max_tokens: u32,
    /// What a request that does not say gets (llama-server's `-n`), at most `max_tokens`.
    pub default_max_tokens: Option<u32>,
    /// Requests waiting for a slot beyond the busy ones; more get 503 with Retry-After.
    pub queue_depth: usize,
    pub request_timeout: Duration,
}

impl Limits {
    /// The tokens a request that does not say how many may generate.
    pub fn unsaid_max_tokens(&self) -> u32 {
        self.default_max_tokens
            .unwrap_or(self.max_tokens)
            .min(self.max_tokens)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1 << 20,
            max_prompt_tokens: 8192,
            max_tokens: 1024,
            default_max_tokens: None,
            queue_depth: 16,
            request_timeout: Duration::from_secs(300),
        }
    }
}

/// What to generate from.
#[derive(Debug, Clone)]
pub enum Prompt {
    Text(String),
    Tokens(Vec<i32>),
    Chat(Vec<ChatMessage>),
}

/// Constraints on the shape of the output.
#[derive(Debug, Clone, Default)]
pub enum OutputFormat {
    #[default]
    Text,
    JsonObject,
    JsonSchema(serde_json::Value),
    /// A GBNF grammar (llama.cpp's `grammar`): answered on the device only, since no remote
    /// API can be held to it.
    Grammar(String),
}

/// One request, in the service's terms. `params.max_tokens == 0` means "as many as allowed".
#[derive(Debug, Clone)]
pub struct Generation {
    pub prompt: Prompt,
    pub params: SamplingParams,
    pub format: OutputFormat,
    /// The tools the model may call, if the request offered any.
    pub tools: Option<ToolSet>,
    /// Provenance of text added to the prompt (`pack:NAME#CHUNK`), for the audit log.
    pub sources: Vec<String>,
}

/// The local service; cheap to clone.
#[derive(Clone)]
pub struct LocalService {
    engine: Arc<EngineSlot>,
    limits: Limits,
    slots: u32,
    in_flight: Arc<AtomicUsize>,
    /// Compiles run off the runtime, a few at a time.
    compiling: Arc<tokio::sync::Semaphore>,
    pub metrics: Arc<Metrics>,
}

impl LocalService {
    pub fn new(engine: Arc<EngineSlot>, limits: Limits, slots: u32, metrics: Arc<Metrics>) -> Self {
        LocalService {
            engine,
            limits,
            slots,
            in_flight: Arc::new(AtomicUsize::new(0)),
            compiling: Arc::new(tokio::sync::Semaphore::new(COMPILES_AT_ONCE)),
            metrics,
        }
    }

    /// The engine now; a request keeps this handle to its end (an activation may replace the
    /// engine meanwhile).
    pub fn engine(&self) -> Option<Engine> {
        self.engine.get()
    }

    /// The engine for a request that needs it, woken when it sleeps; or why there is none:
    /// still loading, or failed to load.
    pub async fn require_engine(&self) -> Result<Engine, ServiceError> {
        self.engine.touch();
        match self.engine.wake().await {
            Some(result) => Ok(result?),
            None => Err(self.missing()),
        }
    }

    /// What the model is, awake or asleep, without waking it; or why there is none.
    pub fn model_info(&self) -> Result<Arc<engine::ModelInfo>, ServiceError> {
        self.engine.info().ok_or_else(|| self.missing())
    }

    /// The engine's counters, awake or asleep.
    pub fn engine_load(&self) -> Option<Arc<engine::EngineLoad>> {
        self.engine.load()
    }

    /// The model was put to sleep for being idle (`[model] sleep_idle_secs`).
    pub fn is_asleep(&self) -> bool {
        self.engine.is_asleep()
    }

    fn missing(&self) -> ServiceError {
        match self.engine.failure() {
            Some(reason) => ServiceError::Unavailable(reason.to_string()),
            None => ServiceError::Loading,
        }
    }

    /// Why the model did not load, when it did not.
    pub fn load_failure(&self) -> Option<&str> {
        self.engine.failure()
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Requests admitted and not yet finished (decoding or waiting for a slot).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// How many prompt tokens `generation` would be for the local model, without admitting or
    /// starting it (Anthropic's `count_tokens`).
    pub async fn count_prompt_tokens(
        &self,
        generation: &Generation,
    ) -> Result<usize, ServiceError> {
        let engine = &self.require_engine().await?;
        let tools = generation.tools.as_ref().filter(|t| t.active());
        Ok(prompt_token_ids(engine, generation.prompt.clone(), tools)?.len())
    }

    /// Admits and starts a request. Fails fast (before any decoding) on every limit; a schema
    /// or grammar is checked and compiled off the runtime's threads, within the request's
    /// timeout.
    pub async fn start(&self, generation: Generation) -> Result<Running, ServiceError> {
        let engine = &self.require_engine().await?;
        let admission = self.admit()?;
        let started = Instant::now();
        let deadline = started + self.limits.request_timeout;
        let mut params = generation.params;
        let tools = generation.tools.filter(ToolSet::active);
        let schema = match &generation.format {
            OutputFormat::JsonSchema(schema) => Some(
                jsonschema::validator_for(schema)
                    .map_err(|e| ServiceError::InvalidSchema(e.to_string()))?,
            ),
            _ => None,
        };
        let spec = match (&tools, &generation.format) {
            (Some(tools), format) => {
                // A stop string could cut the JSON the constraint guarantees.
                params.stop.clear();
                Some(("tools", tool_spec(tools, format)?))
            }
            (None, OutputFormat::Text) => None,
            (None, OutputFormat::JsonObject) => Some(("response_format", Spec::JsonObject)),
            (None, OutputFormat::JsonSchema(schema)) => {
                Some(("response_format", Spec::JsonSchema(schema.clone())))
            }
            (None, OutputFormat::Grammar(text)) => Some(("grammar", Spec::Gbnf(text.clone()))),
        };
        let prompt_tokens = prompt_token_ids(engine, generation.prompt, tools.as_ref())?;
        if prompt_tokens.len() > self.limits.max_prompt_tokens {
            return Err(ServiceError::PromptTooLong {
                tokens: prompt_tokens.len(),
                limit: self.limits.max_prompt_tokens,
            });
        }
        if params.max_tokens > self.limits.max_tokens {
            return Err(ServiceError::MaxTokensTooLarge {
                requested: params.max_tokens,
                limit: self.limits.max_tokens,
            });
        }
        if params.max_tokens == 0 {
            let room = engine
                .info()
                .n_ctx_slot
                .saturating_sub(prompt_tokens.len() as u32);
            params.max_tokens = self.limits.unsaid_max_tokens().min(room).max(1);
        }
        params.validate()?;
        params.logit_bias = bias_token_ids(engine, std::mem::take(&mut params.logit_bias))?;
        engine.check_fits(prompt_tokens.len(), params.max_tokens)?;
        let constraint_field = spec.as_ref().map_or("response_format", |(field, _)| *field);
        let constraint = match spec {
            Some((field, spec)) => Some(self.compile(engine, field, spec, deadline).await?),
            None => None,
        };
        let prompt_len = prompt_tokens.len();
        let events = engine.submit(GenerateRequest {
            prompt_tokens,
            params,
            constraint,
        })?;
        Ok(Running {
            events,
            prompt_tokens: prompt_len,
            json: tools.is_none()
                && matches!(
                    generation.format,
                    OutputFormat::JsonObject | OutputFormat::JsonSchema(_)
                ),
            schema,
            constraint_field,
            tools: tools.map(Box::new),
            pending: None,
            text: String::new(),
            deadline,
            timeout: self.limits.request_timeout,
            started,
            metrics: self.metrics.clone(),
            _admission: admission,
        })
    }

    /// Compiles a constraint on a blocking thread; a compile still running at the deadline is
    /// abandoned (llguidance's fuel limits end it soon after).
    async fn compile(
        &self,
        engine: &Engine,
        field: &'static str,
        spec: Spec,
        deadline: Instant,
    ) -> Result<Box<Constraint>, ServiceError> {
        let timeout = self.limits.request_timeout;
        let work = async {
            let _permit = self
                .compiling
                .acquire()
                .await
                .map_err(|_| EngineError::Stopped)?;
            let engine = engine.clone();
            let started = Instant::now();
            let compiled = tokio::task::spawn_blocking(move || {
                let compiler = engine.compiler()?;
                compiler
                    .compile(&spec)
                    .map_err(|error| ServiceError::InvalidConstraint { field, error })
            })
            .await
            .map_err(|_| EngineError::Stopped)?;
            self.metrics
                .constraint_compile
                .observe(started.elapsed().as_secs_f64());
            compiled.map(Box::new)
        };
        tokio::time::timeout_at(deadline.into(), work)
            .await
            .map_err(|_| ServiceError::Timeout(timeout))?
    }

    /// Runs a request to the end.
    pub async fn complete(&self, generation: Generation) -> Result<Completion, ServiceError> {
        let mut running = self.start(generation).await?;
        let mut tokens = Vec::new();
        let mut tool_calls = Vec::new();
        loop {
            match running.next().await? {
                Step::Progress(_) => {}
                Step::Token(token) => tokens.push(token),
                Step::ToolCalls(calls) => tool_calls = calls,
                Step::Done(summary) => {
                    let text = tokens
                        .iter()
                        .map(|t| t.text.as_str())
                        .chain([summary.tail_text.as_str()])
                        .collect();
                    return Ok(Completion {
                        text,
                        tokens,
                        tool_calls,
                        summary,
                    });
                }
            }
        }
    }

    fn admit(&self) -> Result<Admission, ServiceError> {
        let capacity = self.slots as usize + self.limits.queue_depth;
        let previous = self.in_flight.fetch_add(1, Ordering::SeqCst);
        if previous >= capacity {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            self.metrics
                .rejected_overloaded
                .fetch_add(1, Ordering::Relaxed);
            return Err(ServiceError::Overloaded {
                slots: self.slots,
                queued: self.limits.queue_depth,
            });
        }
        Ok(Admission(self.in_flight.clone()))
    }
}

/// Holds a place among the in-flight requests until dropped.
struct Admission(Arc<AtomicUsize>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A finished request.
#[derive(Debug)]
pub struct Completion {
    pub text: String,
    pub tokens: Vec<TokenEvent>,
    pub tool_calls: Vec<ToolCall>,
    pub summary: Summary,
}

/// One step of a running request.
#[derive(Debug)]
pub enum Step {
    /// How far the prompt's processing is; only for a request that asked
    /// (`SamplingParams::prompt_progress`), before its first token.
    Progress(engine::PromptProgress),
    Token(TokenEvent),
    /// The answer's tool calls, checked against the request's tools; the step before `Done`.
    ToolCalls(Vec<ToolCall>),
    Done(Summary),
}

/// A request in progress. Dropping it cancels the request at the engine's next token.
pub struct Running {
    events: UnboundedReceiver<Event>,
    pub prompt_tokens: usize,
    json: bool,
    schema: Option<jsonschema::Validator>,
    /// The request field a constraint failing mid-generation is reported against.
    constraint_field: &'static str,
    /// Tool turn: the text is held back, read as a turn at the end.
    tools: Option<Box<ToolSet>>,
    /// The summary that follows a `ToolCalls` step.
    pending: Option<Box<Summary>>,
    text: String,
    deadline: Instant,
    timeout: Duration,
    started: Instant,
    metrics: Arc<Metrics>,
    _admission: Admission,
}

impl Running {
    /// The next token, or the summary at the end. JSON output is checked when generation ends:
    /// it must parse, and match the schema when one was given (unless cut off by `max_tokens`).
    /// A tool turn's text is held back (tokens carry their log probabilities, no text); at
    /// the end it becomes a `ToolCalls` step, or the `Done` summary's tail text for a direct
    /// answer.
    pub async fn next(&mut self) -> Result<Step, ServiceError> {
        if let Some(summary) = self.pending.take() {
            return Ok(Step::Done(*summary));
        }
        let event = tokio::time::timeout_at(self.deadline.into(), self.events.recv())
            .await
            .map_err(|_| ServiceError::Timeout(self.timeout))?;
        match event {
            Some(Event::Progress(progress)) => Ok(Step::Progress(progress)),
            Some(Event::Token(mut token)) => {
                self.metrics.record_constrained_token(&token);
                if self.json {
                    self.text.push_str(&token.text);
                } else if self.tools.is_some() {
                    self.text.push_str(&std::mem::take(&mut token.text));
                }
                Ok(Step::Token(token))
            }
            Some(Event::Done(mut summary)) => {
                if self.json && summary.stop_reason != engine::StopReason::Length {
                    self.text.push_str(&summary.tail_text);
                    self.check_json()?;
                }
                let calls = match self.tools.take() {
                    Some(tools) => self.read_turn(&tools, &mut summary)?,
                    None => None,
                };
                self.metrics.record_generation(&summary);
                self.metrics
                    .request_duration
                    .observe(self.started.elapsed().as_secs_f64());
                match calls {
                    Some(calls) => {
                        self.pending = Some(Box::new(summary));
                        Ok(Step::ToolCalls(calls))
                    }
                    None => Ok(Step::Done(summary)),
                }
            }
            Some(Event::Failed(EngineError::Constraint(error))) => {
                Err(ServiceError::InvalidConstraint {
                    field: self.constraint_field,
                    error,
                })
            }
            Some(Event::Failed(error)) => Err(error.into()),
            None => Err(EngineError::Stopped.into()),
        }
    }

    /// Reads a finished tool turn: its calls, or (a direct answer) its content put in the
    /// summary's tail text.
    fn read_turn(
        &mut self,
        tools: &ToolSet,
        summary: &mut Summary,
    ) -> Result<Option<Vec<ToolCall>>, ServiceError> {
        self.text.push_str(&std::mem::take(&mut summary.tail_text));
        if summary.stop_reason == engine::StopReason::Length {
            // Cut by max_tokens, as OpenAI answers it: finish_reason "length", the partial
            // turn as content, no tool calls.
            summary.tail_text = std::mem::take(&mut self.text);
            return Ok(None);
        }
        match tools.read_local(&self.text) {
            Ok(Turn::Calls(calls)) => Ok(Some(calls)),
            Ok(Turn::Content(Value::String(text))) => {
                summary.tail_text = text;
                Ok(None)
            }
            Ok(Turn::Content(value)) => {
                if let Some(schema) = &self.schema
                    && let Err(error) = schema.validate(&value)
                {
                    return Err(ServiceError::OutputInvalid(error.to_string()));
                }
                summary.tail_text = value.to_string();
                Ok(None)
            }
            Err(message) => Err(ServiceError::OutputInvalid(message)),
        }
    }

    fn check_json(&self) -> Result<(), ServiceError> {
        let value: serde_json::Value = serde_json::from_str(&self.text)
            .map_err(|e| ServiceError::OutputInvalid(format!("not JSON: {e}")))?;
        if let Some(schema) = &self.schema
            && let Err(error) = schema.validate(&value)
        {
            return Err(ServiceError::OutputInvalid(error.to_string()));
        }
        Ok(())
    }
}

/// How many constraints compile at once (each on a blocking thread).
const COMPILES_AT_ONCE: usize = 2;

/// The constraint of a tool turn; a direct answer (`auto`) is text, or JSON when the
/// request's `response_format` asks for it.
fn tool_spec(tools: &ToolSet, format: &OutputFormat) -> Result<Spec, ServiceError> {
    let content = match format {
        OutputFormat::Text => serde_json::json!({"type": "string"}),
        OutputFormat::JsonObject => serde_json::json!({"type": "object"}),
        OutputFormat::JsonSchema(schema) => schema.clone(),
        OutputFormat::Grammar(_) => {
            return Err(ServiceError::InvalidTools(
                "a grammar cannot be combined with tools".into(),
            ));
        }
    };
    // The turn schema is written as text to keep each call's `name` before its `arguments`;
    // serde_json keeps that order (preserve_order).
    serde_json::from_str(&tools.turn_schema(&content))
        .map(Spec::JsonSchema)
        .map_err(|e| ServiceError::InvalidTools(e.to_string()))
}

/// `logit_bias` with every text target replaced by its tokens (no special tokens, as
/// llama.cpp does), and every token id checked against the vocabulary.
fn bias_token_ids(
    engine: &Engine,
    entries: Vec<LogitBias>,
) -> Result<Vec<LogitBias>, ServiceError> {
    let n_vocab = engine.info().n_vocab;
    let mut ids = Vec::with_capacity(entries.len());
    for entry in entries {
        match entry.target {
            BiasTarget::Token(token) => {
                if usize::try_from(token).map_or(true, |t| t >= n_vocab) {
                    return Err(ServiceError::TokenOutOfRange {
                        field: "logit_bias",
                        token,
                        n_vocab,
                    });
                }
                ids.push(entry);
            }
            BiasTarget::Text(text) => {
                ids.extend(
                    engine
                        .tokenize_with(&text, false, false)
                        .into_iter()
                        .map(|t| LogitBias {
                            target: BiasTarget::Token(i64::from(t)),
                            bias: entry.bias,
                        }),
                );
            }
        }
    }
    Ok(ids)
}

/// Rewrites draft-07 tuple validation (`items` as an array, with `additionalItems`) into the
/// 2020-12 keywords every checker here reads (`prefixItems`, `items`), as llama.cpp accepts
/// both. Everywhere in the schema; nothing else changes.
pub fn tuple_items(schema: &mut serde_json::Value) {
    match schema {
        serde_json::Value::Object(map) => {
            if map.get("items").is_some_and(serde_json::Value::is_array) {
                if let Some(tuple) = map.remove("items") {
                    map.insert("prefixItems".into(), tuple);
                }
                if let Some(rest) = map.remove("additionalItems") {
                    map.insert("items".into(), rest);
                }
            }
            // Values (not schemas) are left as they are.
            map.iter_mut()
                .filter(|(key, _)| {
                    !matches!(key.as_str(), "const" | "enum" | "default" | "examples")
                })
                .for_each(|(_, value)| tuple_items(value));
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(tuple_items),
        _ => {}
    }
}

/// Token-id prompts must name tokens of the vocabulary.
fn check_token_ids(tokens: &[i32], n_vocab: usize) -> Result<(), ServiceError> {
    match tokens.iter().find(|&&t| t < 0 || t as usize >= n_vocab) {
        Some(bad) => Err(ServiceError::TokenOutOfRange {
            field: "prompt",
            token: i64::from(*bad),
            n_vocab,
        }),
        None => Ok(()),
    }
}

/// Tells the model about its tools: appended to the first system message, or one put first.
/// The tokens the local model reads for `prompt` (a chat with the tools' instructions in its
/// system message, through the chat template).
fn prompt_token_ids(
    engine: &Engine,
    prompt: Prompt,
    tools: Option<&ToolSet>,
) -> Result<Vec<i32>, ServiceError> {
    Ok(match prompt {
        Prompt::Text(text) => engine.tokenize(&text),
        Prompt::Tokens(tokens) => {
            check_token_ids(&tokens, engine.info().n_vocab)?;
            tokens
        }
        Prompt::Chat(mut messages) => {
            if let Some(tools) = tools {
                with_instructions(&mut messages, &tools.instructions());
            }
            engine.tokenize(&engine.apply_chat_template(&messages)?)
        }
    })
}

fn with_instructions(messages: &mut Vec<ChatMessage>, instructions: &str) {
    match messages.first_mut() {
        Some(first) if first.role == "system" || first.role == "developer" => {
            first.content = format!("{}\n\n{instructions}", first.content);
        }
        _ => messages.insert(0, ChatMessage::new("system", instructions)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::tuple_items;

    #[test]
    fn tuple_items_become_prefix_items_and_values_stay() {
        let mut schema = json!({
            "type": "object",
            "properties": {
                "pair": {"items": [{"type": "integer"}, {"type": "string"}], "additionalItems": false},
                "open": {"items": [{"type": "integer"}]},
                "list": {"items": {"type": "integer"}},
                "fixed": {"const": {"items": [1, 2]}, "enum": [{"items": [3]}]}
            }
        });
        tuple_items(&mut schema);
        assert_eq!(
            schema["properties"]["pair"],
            json!({"prefixItems": [{"type": "integer"}, {"type": "string"}], "items": false})
        );
        assert_eq!(
            schema["properties"]["open"],
            json!({"prefixItems": [{"type": "integer"}]})
        );
        assert_eq!(
            schema["properties"]["list"],
            json!({"items": {"type": "integer"}})
        );
        assert_eq!(
            schema["properties"]["fixed"],
            json!({"const": {"items": [1, 2]}, "enum": [{"items": [3]}]})
        );
    }
}
