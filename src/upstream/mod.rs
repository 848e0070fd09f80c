//! Remote LLM clients behind one trait, [`Provider`], with `infer` and `infer_stream`: OpenAI
//! Chat Completions (OpenAI, vLLM, llama-server, Ollama's `/v1`) and OpenAI's Responses API.
//!
//! Errors say whether the request may have reached the upstream: only [`UpstreamError::Connect`]
//! (nothing was sent) is safe to retry, since anything later may already have been billed.
//!
//! Every answer passes the same check as local output before the router sees it
//! ([`check`]): tool calls against the request's tools, JSON output against its schema. An
//! answer that fails is [`UpstreamError::InvalidOutput`], so the router moves on to the next
//! tier as for any other remote failure. Streamed answers that must be checked (tools or JSON)
//! are held until complete.

mod chat;
mod check;
mod llama;
mod responses;
mod sse;

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;

use crate::engine::{ChatMessage, StopReason, ToolCall};
use crate::route::{RemoteApi, RemoteTier};
use crate::tools::ToolSet;

pub use chat::ChatClient;
pub use llama::LlamaClient;
pub use responses::ResponsesClient;

/// A request in the terms every remote API shares.
#[derive(Debug, Clone, Default)]
pub struct UpstreamRequest {
    pub messages: Vec<ChatMessage>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub stop: Vec<String>,
    pub seed: Option<u32>,
    /// `Some(schema)` for JSON output (`Value::Null`: any JSON object).
    pub json: Option<serde_json::Value>,
    /// The tools the model may call.
    pub tools: Option<ToolSet>,
    /// Provenance of text added to the prompt (`pack:NAME#CHUNK`): audited, never sent.
    pub sources: Vec<String>,
}

/// A whole answer.
#[derive(Debug, Clone)]
pub struct UpstreamAnswer {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub stop_reason: StopReason,
    pub usage: Usage,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub input_tokens: usize,
    pub output_tokens: usize,
}

/// One event of a streamed answer: text deltas, the tool calls (whole), then `Done`.
#[derive(Debug, Clone)]
pub enum UpstreamEvent {
    Delta(String),
    ToolCalls(Vec<ToolCall>),
    Done {
        stop_reason: StopReason,
        usage: Usage,
    },
}

pub type EventStream = Pin<Box<dyn Stream<Item = Result<UpstreamEvent, UpstreamError>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The connection could not be made: nothing was sent.
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    /// The connection broke or the answer could not be read.
    #[error("connection failed: {0}")]
    Transport(String),
    #[error("unexpected answer: {0}")]
    Protocol(String),
    /// The answer arrived but fails the request's tools or JSON schema.
    #[error("invalid output: {0}")]
    InvalidOutput(String),
    /// A stream ended before its last event.
    #[error("the stream ended before the answer did")]
    Truncated,
}

impl UpstreamError {
    /// The `kind` label of the upstream-error metric.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect",
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::Status { status, .. } if *status >= 500 => "status_5xx",
            UpstreamError::Status { .. } => "status_4xx",
            UpstreamError::Transport(_) | UpstreamError::Truncated => "transport",
            UpstreamError::Protocol(_) => "protocol",
            UpstreamError::InvalidOutput(_) => "invalid_output",
        }
    }

    /// Whether the upstream may bill it: it may have read the request and not refused it (an
    /// error status is not billed; a request never sent is not either).
    pub fn billed(&self) -> bool {
        !matches!(
            self,
            UpstreamError::Connect(_) | UpstreamError::Status { .. }
        )
    }

    /// Safe to send again: the upstream never saw the request.
    pub fn retryable(&self) -> bool {
        matches!(self, UpstreamError::Connect(_))
    }

    fn from_reqwest(error: reqwest::Error, timeout: Duration) -> Self {
        if error.is_connect() {
            UpstreamError::Connect(chain(&error))
        } else if error.is_timeout() {
            UpstreamError::Timeout(timeout)
        } else if error.is_decode() {
            UpstreamError::Protocol(chain(&error))
        } else {
            UpstreamError::Transport(chain(&error))
        }
    }
}

/// An error with its chain of causes, on one line.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A remote LLM API.
pub trait Provider {
    fn infer(
        &self,
        request: &UpstreamRequest,
    ) -> impl Future<Output = Result<UpstreamAnswer, UpstreamError>> + Send;

    /// Resolves once the answer's headers arrived with a success status.
    fn infer_stream(
        &self,
        request: &UpstreamRequest,
    ) -> impl Future<Output = Result<EventStream, UpstreamError>> + Send;
}

/// The configured providers (a fixed enum, as TensorZero does).
#[derive(Debug, Clone)]
pub enum Upstream {
    Chat(ChatClient),
    Responses(ResponsesClient),
    Llama(LlamaClient),
}

impl Upstream {
    pub fn new(tier: &RemoteTier) -> Result<Upstream, UpstreamError> {
        let http = Http::new(tier)?;
        Ok(match tier.api {
            RemoteApi::ChatCompletions => Upstream::Chat(ChatClient { http }),
            RemoteApi::Responses => Upstream::Responses(ResponsesClient { http }),
            RemoteApi::LlamaCompletion => Upstream::Llama(LlamaClient { http }),
        })
    }
}

impl Provider for Upstream {
    async fn infer(&self, request: &UpstreamRequest) -> Result<UpstreamAnswer, UpstreamError> {
        let answer = match self {
            Upstream::Chat(c) => c.infer(request).await,
            Upstream::Responses(c) => c.infer(request).await,
            Upstream::Llama(c) => c.infer(request).await,
        }?;
        check::answer(
            request,
            &answer.text,
            &answer.tool_calls,
            &answer.stop_reason,
        )?;
        Ok(answer)
    }

    async fn infer_stream(&self, request: &UpstreamRequest) -> Result<EventStream, UpstreamError> {
        let events = match self {
            Upstream::Chat(c) => c.infer_stream(request).await,
            Upstream::Responses(c) => c.infer_stream(request).await,
            Upstream::Llama(c) => c.infer_stream(request).await,
        }?;
        if request.tools.is_some() || request.json.is_some() {
            return check::held(request, events).await;
        }
        Ok(check::without_calls(events))
    }
}

/// The HTTP side every provider shares: one pooled client, the endpoint, the key.
#[derive(Debug, Clone)]
struct Http {
    client: reqwest::Client,
    url: String,
    model: String,
    api_key: Option<String>,
    timeout: Duration,
}

impl Http {
    fn new(tier: &RemoteTier) -> Result<Http, UpstreamError> {
        install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(tier.connect_timeout)
            .timeout(tier.timeout)
            .tcp_nodelay(true);
        if let Some(pem) = &tier.ca_pem {
            let roots = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| UpstreamError::Connect(chain(&e)))?;
            builder = builder.tls_certs_merge(roots);
        }
        let client = builder
            .build()
            .map_err(|e| UpstreamError::Connect(chain(&e)))?;
        Ok(Http {
            client,
            url: tier.url.trim_end_matches('/').to_string(),
            model: tier.model.clone(),
            api_key: tier.api_key.clone(),
            timeout: tier.timeout,
        })
    }

    /// POSTs `body` to `{url}{path}`; a non-success status is an error carrying the body.
    async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<reqwest::Response, UpstreamError> {
        let mut request = self.client.post(format!("{}{path}", self.url)).json(body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request
            .send()
            .await
            .map_err(|e| UpstreamError::from_reqwest(e, self.timeout))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(UpstreamError::Status {
                status: status.as_u16(),
                body: body.chars().take(300).collect(),
            });
        }
        Ok(response)
    }

    async fn json(&self, response: reqwest::Response) -> Result<serde_json::Value, UpstreamError> {
        let bytes = response
            .bytes()
            .await
            .map_err(|e| UpstreamError::from_reqwest(e, self.timeout))?;
        serde_json::from_slice(&bytes).map_err(|e| UpstreamError::Protocol(e.to_string()))
    }

    fn events(
        &self,
        response: reqwest::Response,
    ) -> impl Stream<Item = Result<sse::Message, UpstreamError>> + Send + use<> {
        let timeout = self.timeout;
        sse::messages(response.bytes_stream(), move |e| {
            UpstreamError::from_reqwest(e, timeout)
        })
    }
}

/// TLS uses rustls with the ring provider (no OpenSSL or aws-lc to build); reqwest picks up the
/// process-wide default, which is installed once here. Every `reqwest::Client` in the process
/// (also in tests) needs it installed before it is built.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Fails only when a provider is already installed, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The sampling fields the wire APIs share: `max_tokens_key` is each API's name for the output
/// cap; `stop_and_seed` whether it takes `stop` and `seed` (the Responses API does not).
fn put_sampling(
    body: &mut serde_json::Value,
    request: &UpstreamRequest,
    max_tokens_key: &str,
    stop_and_seed: bool,
) {
    use serde_json::json;
    if let Some(n) = request.max_tokens {
        body[max_tokens_key] = json!(n);
    }
    if let Some(t) = request.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(p) = request.top_p {
        body["top_p"] = json!(p);
    }
    if stop_and_seed && !request.stop.is_empty() {
        body["stop"] = json!(request.stop);
    }
    if let (true, Some(seed)) = (stop_and_seed, request.seed) {
        body["seed"] = json!(seed);
    }
}

use crate::wire::openai::{stop_reason, tool_choice_str as choice_str};
