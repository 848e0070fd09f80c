//! Ollama's native API (`/api/*`), for clients written against Ollama (its Python and JS
//! clients, Home Assistant's integration, Open WebUI): `/api/chat` and `/api/generate` (NDJSON
//! streaming by default, `format` "json" or a JSON schema, `options`, `keep_alive` accepted),
//! `/api/tags`, `/api/show`, `/api/ps`, `/api/version`. Generation goes through the routing walk
//! and the egress guard like every other route; answers carry the `edgellm` routing object and
//! headers. Errors are Ollama's shape, `{"error": "message"}`, with the status edgellm would
//! give on its OpenAI routes. edgellm serves one local model: the `model` a request names is not
//! used to choose one (as on the OpenAI routes), and answers report edgellm's model name.
//! `/api/embed` and the older `/api/embeddings` answer from the embedding model.
//! Not served: `/api/pull`, `/api/push`, `/api/create`, `/api/copy`, `/api/delete` (models
//! reach a device another way).

use std::convert::Infallible;
use std::time::Instant;

use axum::Extension;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::chat::{collect_recorded, mode};
use super::error::ApiError;
use super::json::ApiJson;
use super::openai::{MessageIn, Sampling, StopField, messages_to_chat};
use super::routed::{meta_json, route_override, with_headers};
use super::{AppState, RequestRecord};
use crate::engine::{ChatMessage, StopReason, Summary};
use crate::router::Routed;
use crate::service::{Generation, OutputFormat, Prompt, Step};

/// The Ollama API version whose shapes these routes follow.
const API_VERSION: &str = "0.12.0";

/// An [`ApiError`] in Ollama's shape.
pub struct OllamaError(ApiError);

impl From<ApiError> for OllamaError {
    fn from(error: ApiError) -> Self {
        OllamaError(error)
    }
}

impl From<crate::service::ServiceError> for OllamaError {
    fn from(error: crate::service::ServiceError) -> Self {
        OllamaError(error.into())
    }
}

impl IntoResponse for OllamaError {
    fn into_response(self) -> Response {
        let status = self.0.status;
        let retry = self.0.retry_after_secs;
        let mut response = (status, axum::Json(json!({"error": self.0.message}))).into_response();
        if let Some(secs) = retry
            && let Ok(value) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// `options`: the sampling settings Ollama clients send. Others (`num_ctx`, `num_thread`,
/// `mirostat`, ...) are accepted and ignored: the server's configuration decides them.
#[derive(Debug, Default, Deserialize)]
pub struct Options {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i32>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub seed: Option<i64>,
    /// Tokens to generate; -1 (or -2, "fill the context") means as many as the limits allow.
    pub num_predict: Option<i64>,
    pub stop: Option<StopField>,
}

/// `model` and `keep_alive` are accepted and not used (one model, always loaded).
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<MessageIn>,
    pub stream: Option<bool>,
    pub format: Option<Value>,
    pub options: Option<Options>,
    pub edgellm: Option<super::routed::EdgeOptions>,
}

#[derive(Debug, Deserialize)]
pub struct GenerateRequest {
    #[serde(default)]
    pub prompt: String,
    pub system: Option<String>,
    /// The prompt goes to the model as it is, without the chat template.
    #[serde(default)]
    pub raw: bool,
    pub stream: Option<bool>,
    pub format: Option<Value>,
    pub options: Option<Options>,
    pub edgellm: Option<super::routed::EdgeOptions>,
}

/// `format`: absent or "" (text), "json" (any JSON object), or a JSON schema.
fn output_format(format: Option<Value>) -> Result<OutputFormat, ApiError> {
    match format {
        None | Some(Value::Null) => Ok(OutputFormat::Text),
        Some(Value::String(s)) if s.is_empty() => Ok(OutputFormat::Text),
        Some(Value::String(s)) if s == "json" => Ok(OutputFormat::JsonObject),
        Some(schema @ Value::Object(_)) => Ok(OutputFormat::JsonSchema(schema)),
        Some(other) => Err(ApiError::invalid(
            "format",
            format!("format must be \"json\" or a JSON schema object, not {other}"),
        )),
    }
}

fn params(
    options: Option<Options>,
    defaults: &crate::engine::SamplingParams,
) -> Result<crate::engine::SamplingParams, ApiError> {
    let o = options.unwrap_or_default();
    let max_tokens = match o.num_predict {
        None | Some(-1) | Some(-2) => None,
        Some(n) if n >= 1 => Some(u32::try_from(n).unwrap_or(u32::MAX)),
        Some(_) => {
            return Err(ApiError::invalid(
                "options.num_predict",
                "num_predict must be -1, -2 or at least 1",
            ));
        }
    };
    Sampling {
        temperature: o.temperature,
        top_p: o.top_p,
        top_k: o.top_k,
        min_p: o.min_p,
        repeat_penalty: o.repeat_penalty,
        frequency_penalty: o.frequency_penalty,
        presence_penalty: o.presence_penalty,
        seed: o.seed,
        max_tokens,
        stop: o.stop,
        top_logprobs: 0,
        logit_bias: None,
    }
    .into_params(defaults)
}

#[derive(Clone, Copy)]
enum Shape {
    Chat,
    Generate,
}

pub async fn chat(
    State(state): State<AppState>,
    Extension(record): Extension<RequestRecord>,
    headers: HeaderMap,
    body: Result<ApiJson<ChatRequest>, ApiError>,
) -> Result<Response, OllamaError> {
    let ApiJson(mut request) = body?;
    let mut edge = request.edgellm.take();
    let pack = super::packs::take_pack(&mut edge);
    let route = route_override(&headers, edge)?;
    let mut generation = Generation {
        sources: Vec::new(),
        prompt: Prompt::Chat(messages_to_chat(request.messages, "messages")?),
        params: params(request.options, &state.config.sampling)?,
        format: output_format(request.format)?,
        tools: None,
    };
    let retrieved = super::packs::retrieve(&state, "/api/chat", pack, &mut generation).await?;
    let citation = retrieved.as_ref().map(super::packs::citation);
    let stream = request.stream.unwrap_or(true);
    let response = respond(
        state,
        record,
        route,
        generation,
        stream,
        (Shape::Chat, citation),
    )
    .await?;
    Ok(super::packs::cite(response, retrieved.as_ref()))
}

pub async fn generate(
    State(state): State<AppState>,
    Extension(record): Extension<RequestRecord>,
    headers: HeaderMap,
    body: Result<ApiJson<GenerateRequest>, ApiError>,
) -> Result<Response, OllamaError> {
    let ApiJson(mut request) = body?;
    let route = route_override(&headers, request.edgellm.take())?;
    if request.prompt.is_empty() {
        // Ollama's "load the model" call: nothing to generate.
        state.service.require_engine().await?;
        return Ok(axum::Json(json!({
            "model": state.model_name(), "created_at": now_rfc3339(),
            "response": "", "done": true, "done_reason": "load",
        }))
        .into_response());
    }
    let prompt = if request.raw {
        Prompt::Text(request.prompt)
    } else {
        let mut messages = Vec::new();
        if let Some(system) = request.system.filter(|s| !s.is_empty()) {
            messages.push(ChatMessage::new("system", &system));
        }
        messages.push(ChatMessage::new("user", &request.prompt));
        Prompt::Chat(messages)
    };
    let generation = Generation {
        sources: Vec::new(),
        prompt,
        params: params(request.options, &state.config.sampling)?,
        format: output_format(request.format)?,
        tools: None,
    };
    let stream = request.stream.unwrap_or(true);
    respond(
        state,
        record,
        route,
        generation,
        stream,
        (Shape::Generate, None),
    )
    .await
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now().to_string()
}

/// One NDJSON line or whole answer: the text under `message` (chat) or `response` (generate).
fn body(shape: Shape, model: &str, text: &str) -> Value {
    match shape {
        Shape::Chat => json!({"model": model, "created_at": now_rfc3339(),
                              "message": {"role": "assistant", "content": text}, "done": false}),
        Shape::Generate => json!({"model": model, "created_at": now_rfc3339(),
                                  "response": text, "done": false}),
    }
}

/// Marks `line` as the last: done, why, and Ollama's counters (durations in nanoseconds).
fn finish(line: &mut Value, summary: &Summary, started: Instant, edgellm: &Value) {
    let nanos = |d: std::time::Duration| d.as_nanos() as u64;
    line["done"] = json!(true);
    line["done_reason"] = json!(match summary.stop_reason {
        StopReason::Length => "length",
        _ => "stop",
    });
    line["total_duration"] = json!(nanos(started.elapsed()));
    line["load_duration"] = json!(0);
    line["prompt_eval_count"] = json!(summary.prompt_tokens);
    line["prompt_eval_duration"] = json!(nanos(summary.prefill_time));
    line["eval_count"] = json!(summary.generated_tokens);
    line["eval_duration"] = json!(nanos(summary.decode_time));
    line["edgellm"] = edgellm.clone();
}

async fn respond(
    state: AppState,
    record: RequestRecord,
    route: crate::route::RouteOverride,
    generation: Generation,
    stream: bool,
    (shape, citation): (Shape, Option<Value>),
) -> Result<Response, OllamaError> {
    record.prompt(&generation.prompt);
    let started = Instant::now();
    let running = state
        .router
        .start(generation, route, mode(stream))
        .await
        .map_err(ApiError::from)?;
    let model = super::chat::answered_model(&state, &running);
    let meta = running.meta.clone();
    if stream {
        return Ok(with_headers(
            ndjson(running, model, (shape, citation), record, started).await?,
            &meta,
        ));
    }
    let completion = collect_recorded(running, &record).await?;
    let mut answer = body(shape, &model, &completion.text);
    let edgellm = super::packs::with_citation(meta_json(&meta), citation.as_ref());
    finish(&mut answer, &completion.summary, started, &edgellm);
    Ok(with_headers(axum::Json(answer).into_response(), &meta))
}

/// Streams NDJSON lines, one per token, then the last with `done: true` and the counters. The
/// first step is awaited before the answer starts, so an early error is a plain error with its
/// status; a failure after that ends the stream with an `{"error": ...}` line.
async fn ndjson(
    mut running: Routed,
    model: String,
    (shape, citation): (Shape, Option<Value>),
    record: RequestRecord,
    started: Instant,
) -> Result<Response, OllamaError> {
    let first = running.next().await.map_err(ApiError::from)?;
    let line = |value: Value| -> Result<Bytes, Infallible> {
        let mut text = value.to_string();
        text.push('\n');
        Ok(Bytes::from(text))
    };
    let lines = async_stream::stream! {
        let mut step = Ok(first);
        loop {
            match step {
                Ok(Step::Token(token)) => {
                    record.answer_part(&token.text);
                    if !token.text.is_empty() {
                        yield line(body(shape, &model, &token.text));
                    }
                }
                Ok(Step::ToolCalls(_) | Step::Progress(_)) => {}
                Ok(Step::Done(summary)) => {
                    record.tokens(summary.prompt_tokens, summary.generated_tokens);
                    record.answer_part(&summary.tail_text);
                    let mut last = body(shape, &model, &summary.tail_text);
                    let edgellm = super::packs::with_citation(meta_json(&running.meta), citation.as_ref());
                    finish(&mut last, &summary, started, &edgellm);
                    yield line(last);
                    break;
                }
                Err(error) => {
                    yield line(json!({"error": ApiError::from(error).message}));
                    break;
                }
            }
            step = running.next().await;
        }
    };
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

/// The one model, as Ollama describes models.
fn model_entry(state: &AppState) -> Value {
    let name = state.model_name().to_string();
    let (size, details) = match state.service.model_info() {
        Ok(info) => (
            info.buffers.model_bytes,
            json!({"format": "gguf", "family": info.architecture,
                       "families": [info.architecture],
                       "parameter_size": parameter_size(info.n_params),
                       "quantization_level": quantization(&info.id)}),
        ),
        Err(_) => (0, json!({"format": "gguf"})),
    };
    json!({"name": name, "model": name, "modified_at": now_rfc3339(), "size": size,
           "digest": "", "details": details})
}

/// "268M", "1.5B": Ollama's parameter size.
fn parameter_size(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.1}B", n as f64 / 1e9)
    } else {
        format!("{}M", n / 1_000_000)
    }
}

/// The quantisation in a GGUF file name (`...-q4_k_m`), upper-cased as Ollama writes it.
fn quantization(id: &str) -> String {
    id.rsplit(['-', '.'])
        .find(|part| {
            let p = part.to_ascii_lowercase();
            p.starts_with('q') && p[1..].starts_with(|c: char| c.is_ascii_digit())
                || p == "f16"
                || p == "bf16"
                || p == "f32"
        })
        .map(str::to_ascii_uppercase)
        .unwrap_or_default()
}

pub async fn tags(State(state): State<AppState>) -> Response {
    axum::Json(json!({"models": [model_entry(&state)]})).into_response()
}

pub async fn ps(State(state): State<AppState>) -> Response {
    let models = match state.service.engine() {
        Some(_) => {
            let mut entry = model_entry(&state);
            entry["expires_at"] = json!("9999-12-31T23:59:59Z");
            entry["size_vram"] = json!(0);
            vec![entry]
        }
        None => Vec::new(),
    };
    axum::Json(json!({ "models": models })).into_response()
}

pub async fn version() -> Response {
    axum::Json(json!({ "version": API_VERSION })).into_response()
}

pub async fn show(
    State(state): State<AppState>,
    body: Result<ApiJson<Value>, ApiError>,
) -> Result<Response, OllamaError> {
    let ApiJson(_request) = body?;
    let info = state.service.model_info()?;
    let entry = model_entry(&state);
    Ok(axum::Json(json!({
        "modelfile": "",
        "parameters": "",
        "template": info.template_text.clone().unwrap_or_default(),
        "details": entry["details"],
        "model_info": {
            "general.architecture": info.architecture,
            "general.parameter_count": info.n_params,
            "general.context_length": info.n_ctx_train,
        },
        "capabilities": ["completion"],
        "modified_at": entry["modified_at"],
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_formats() {
        assert_eq!(parameter_size(268_098_176), "268M");
        assert_eq!(parameter_size(1_543_714_304), "1.5B");
        assert_eq!(quantization("gemma-3-270m-q4_k_m"), "Q4_K_M");
        assert_eq!(quantization("qwen2.5-coder-0.5b-instruct-q8_0"), "Q8_0");
        assert_eq!(quantization("tiny-f16"), "F16");
        assert_eq!(quantization("model"), "");
        assert!(matches!(output_format(None), Ok(OutputFormat::Text)));
        assert!(matches!(
            output_format(Some(json!("json"))),
            Ok(OutputFormat::JsonObject)
        ));
        assert!(matches!(
            output_format(Some(json!({"type": "object"}))),
            Ok(OutputFormat::JsonSchema(_))
        ));
        for bad in [json!("yaml"), json!(3), json!([1])] {
            assert_eq!(output_format(Some(bad)).unwrap_err().status, 400);
        }
        assert!(
            params(
                Some(Options {
                    num_predict: Some(0),
                    ..Options::default()
                }),
                &crate::engine::SamplingParams::default()
            )
            .is_err()
        );
        assert_eq!(
            params(
                Some(Options {
                    num_predict: Some(7),
                    ..Options::default()
                }),
                &crate::engine::SamplingParams::default()
            )
            .unwrap()
            .max_tokens,
            7
        );
    }
}

/// Ollama's `/api/embed` request.
#[derive(Debug, Deserialize)]
pub struct EmbedRequest {
    #[serde(default)]
    #[allow(dead_code)] // accepted, not used: the answer names the embedding model
    pub model: Option<String>,
    pub input: Value,
    /// Cut inputs longer than the model's context (Ollama's default) instead of failing.
    #[serde(default = "yes")]
    pub truncate: bool,
    #[serde(default)]
    pub dimensions: Option<u32>,
    #[serde(default)]
    #[allow(dead_code)] // accepted: the model stays loaded
    pub keep_alive: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)] // accepted: embedding has no sampling options
    pub options: Option<Value>,
}

fn yes() -> bool {
    true
}

/// `POST /api/embed`: `{"model", "embeddings": [[...]], "total_duration", "load_duration",
/// "prompt_eval_count"}`, L2-normalised as Ollama's are.
pub async fn embed(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<EmbedRequest>,
) -> Result<Response, OllamaError> {
    let inputs = super::embeddings::parse_input(&request.input, "input")?;
    let done = state
        .embeddings
        .embed(crate::embeddings::EmbedRequest {
            inputs,
            dimensions: request.dimensions,
            normalize: crate::embeddings::Normalize::Euclidean,
            truncate: request.truncate,
        })
        .await
        .map_err(ApiError::from)?;
    Ok(axum::Json(json!({
        "model": done.model,
        "embeddings": done.vectors,
        "total_duration": done.elapsed.as_nanos() as u64,
        "load_duration": 0,
        "prompt_eval_count": done.prompt_tokens,
    }))
    .into_response())
}

/// The older `/api/embeddings` request: one `prompt`.
#[derive(Debug, Deserialize)]
pub struct LegacyEmbedRequest {
    #[serde(default)]
    #[allow(dead_code)] // accepted, not used
    pub model: Option<String>,
    pub prompt: String,
    #[serde(default)]
    #[allow(dead_code)] // accepted
    pub keep_alive: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)] // accepted
    pub options: Option<Value>,
}

/// `POST /api/embeddings`: `{"embedding": [...]}` (not normalised, as Ollama's older endpoint).
pub async fn embeddings(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<LegacyEmbedRequest>,
) -> Result<Response, OllamaError> {
    let done = state
        .embeddings
        .embed(crate::embeddings::EmbedRequest {
            inputs: vec![crate::embeddings::EmbedInput::Text(request.prompt)],
            dimensions: None,
            normalize: crate::embeddings::Normalize::None,
            truncate: true,
        })
        .await
        .map_err(ApiError::from)?;
    let vector = done.vectors.into_iter().next().unwrap_or_default();
    Ok(axum::Json(json!({ "embedding": vector })).into_response())
}
