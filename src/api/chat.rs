//! `POST /v1/chat/completions` and `POST /v1/completions`: OpenAI's shapes, streaming included.
//! An answer with tool calls has `message.tool_calls`, `content: null` and `finish_reason:
//! "tool_calls"`; streamed, the calls come whole in one `delta.tool_calls` chunk once they are
//! complete and checked.

use std::convert::Infallible;

use axum::Extension;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde_json::{Value, json};

use super::error::ApiError;
use super::json::ApiJson;
use super::openai::{self, ChatRequest, CompletionRequest, Options};
use super::routed::{meta_json, route_override, with_headers};
use super::tools::{call_deltas, calls_json};
use super::{AppState, RequestRecord, request_id, unix_now};
use crate::engine::{Summary, TokenEvent, ToolCall};
use crate::route::RouteOverride;
use crate::router::{Mode, Routed};
use crate::service::{Generation, Prompt, Step};

pub async fn chat_completions(
    State(state): State<AppState>,
    Extension(record): Extension<RequestRecord>,
    headers: HeaderMap,
    ApiJson(mut request): ApiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    let mut edge = request.edgellm.take();
    let pack = edge
        .as_mut()
        .map(|e| (e.pack.take(), e.top_k.take()))
        .unwrap_or_default();
    let route = route_override(&headers, edge)?;
    let (mut generation, options) = request.into_generation()?;
    let retrieved = super::packs::retrieve(&state, pack, &mut generation).await?;
    let response = respond(state, record, route, generation, options, Shape::Chat).await?;
    Ok(super::packs::cite(response, retrieved.as_ref()).await)
}

pub async fn completions(
    State(state): State<AppState>,
    Extension(record): Extension<RequestRecord>,
    headers: HeaderMap,
    ApiJson(mut request): ApiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    let route = route_override(&headers, request.edgellm.take())?;
    let (generation, options) = request.into_generation()?;
    respond(state, record, route, generation, options, Shape::Completion).await
}

pub fn mode(stream: bool) -> Mode {
    if stream { Mode::Stream } else { Mode::Whole }
}

/// The model name to report: the remote tier's model when one answered.
pub fn answered_model(state: &AppState, routed: &Routed) -> String {
    routed
        .meta
        .remote_model
        .clone()
        .unwrap_or_else(|| state.model_name().to_string())
}

#[derive(Clone, Copy)]
enum Shape {
    Chat,
    Completion,
}

async fn respond(
    state: AppState,
    record: RequestRecord,
    route: RouteOverride,
    generation: Generation,
    options: Options,
    shape: Shape,
) -> Result<Response, ApiError> {
    record.prompt(&generation.prompt);
    let running = state
        .router
        .start(generation, route, mode(options.stream))
        .await?;
    let model = answered_model(&state, &running);
    let meta = running.meta.clone();
    if options.stream {
        return Ok(with_headers(
            stream(running, model, options, shape, record).await?,
            &meta,
        ));
    }
    let completion = collect_recorded(running, &record).await?;
    let id = request_id(match shape {
        Shape::Chat => "chatcmpl-",
        Shape::Completion => "cmpl-",
    });
    let finish = match completion.tool_calls.is_empty() {
        true => openai::finish_reason(&completion.summary.stop_reason),
        false => "tool_calls",
    };
    let body = match shape {
        Shape::Chat => {
            let logprobs = options
                .logprobs
                .then(|| json!({"content": completion.tokens.iter().map(openai::chat_logprob).collect::<Vec<_>>()}));
            let mut message =
                json!({"role": "assistant", "content": completion.text, "refusal": null});
            if !completion.tool_calls.is_empty() {
                message["tool_calls"] = calls_json(&completion.tool_calls);
                if completion.text.is_empty() {
                    message["content"] = Value::Null;
                }
            }
            json!({
                "id": id, "object": "chat.completion", "created": unix_now(), "model": model,
                "system_fingerprint": fingerprint(),
                "choices": [{"index": 0, "message": message,
                             "logprobs": logprobs, "finish_reason": finish}],
                "usage": openai::usage(&completion.summary),
            })
        }
        Shape::Completion => {
            let logprobs = options
                .logprobs
                .then(|| openai::completion_logprobs(&completion.tokens, 0));
            json!({
                "id": id, "object": "text_completion", "created": unix_now(), "model": model,
                "system_fingerprint": fingerprint(),
                "choices": [{"index": 0, "text": completion.text, "logprobs": logprobs, "finish_reason": finish}],
                "usage": openai::usage(&completion.summary),
            })
        }
    };
    let mut body = body;
    body["edgellm"] = meta_json(&meta);
    Ok(with_headers(axum::Json(body).into_response(), &meta))
}

pub struct Collected {
    pub text: String,
    pub tokens: Vec<TokenEvent>,
    pub tool_calls: Vec<ToolCall>,
    pub summary: Summary,
}

/// Runs a request to its end and reports its tokens and answer text to the request record.
pub async fn collect_recorded(
    running: Routed,
    record: &RequestRecord,
) -> Result<Collected, ApiError> {
    let collected = collect(running).await?;
    record.answer_part(&collected.text);
    record.tokens(
        collected.summary.prompt_tokens,
        collected.summary.generated_tokens,
    );
    Ok(collected)
}

/// Runs a request to its end.
pub async fn collect(mut running: Routed) -> Result<Collected, ApiError> {
    let mut tokens = Vec::new();
    let mut tool_calls = Vec::new();
    loop {
        match running.next().await? {
            Step::Token(token) => tokens.push(token),
            Step::ToolCalls(calls) => tool_calls = calls,
            Step::Done(summary) => {
                let mut text: String = tokens.iter().map(|t| t.text.as_str()).collect();
                text.push_str(&summary.tail_text);
                return Ok(Collected {
                    text,
                    tokens,
                    tool_calls,
                    summary,
                });
            }
        }
    }
}

/// Streams SSE chunks. The first step is awaited before the response starts, so an error that
/// happens before any token (a bad grammar, say) is still a plain JSON error with its status.
async fn stream(
    mut running: Routed,
    model: String,
    options: Options,
    shape: Shape,
    record: RequestRecord,
) -> Result<Response, ApiError> {
    let first = running.next().await?;
    let edgellm = meta_json(&running.meta);
    let id = request_id(match shape {
        Shape::Chat => "chatcmpl-",
        Shape::Completion => "cmpl-",
    });
    let created = unix_now();
    let chunk = move |choice: Value, usage: Option<Value>, edgellm: Option<&Value>| -> SseEvent {
        let (object, choices) = match shape {
            Shape::Chat => (
                "chat.completion.chunk",
                if choice.is_null() {
                    json!([])
                } else {
                    json!([choice])
                },
            ),
            Shape::Completion => (
                "text_completion",
                if choice.is_null() {
                    json!([])
                } else {
                    json!([choice])
                },
            ),
        };
        let mut body = json!({"id": id, "object": object, "created": created, "model": model,
                              "system_fingerprint": fingerprint(), "choices": choices});
        if let Some(usage) = usage {
            body["usage"] = usage;
        }
        if let Some(edgellm) = edgellm {
            body["edgellm"] = edgellm.clone();
        }
        SseEvent::default().data(body.to_string())
    };
    let token_choice = move |text: &str, token: Option<&TokenEvent>| -> Value {
        match shape {
            Shape::Chat => json!({"index": 0, "delta": {"content": text},
                                  "logprobs": token.filter(|_| options.logprobs).map(|t| json!({"content": [openai::chat_logprob(t)]})),
                                  "finish_reason": null}),
            Shape::Completion => json!({"index": 0, "text": text,
                                        "logprobs": token.filter(|_| options.logprobs).map(|t| openai::completion_logprobs(std::slice::from_ref(t), 0)),
                                        "finish_reason": null}),
        }
    };
    let events = async_stream::stream! {
        if let Shape::Chat = shape {
            yield Ok::<_, Infallible>(chunk(json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}), None, None));
        }
        let mut step = Ok(first);
        let mut called = false;
        loop {
            match step {
                Ok(Step::Token(token)) => {
                    record.answer_part(&token.text);
                    if !token.text.is_empty() || options.logprobs {
                        yield Ok(chunk(token_choice(&token.text, Some(&token)), None, None));
                    }
                }
                Ok(Step::ToolCalls(calls)) => {
                    called = !calls.is_empty();
                    yield Ok(chunk(json!({"index": 0, "delta": {"tool_calls": call_deltas(&calls)},
                                          "logprobs": null, "finish_reason": null}), None, None));
                }
                Ok(Step::Done(summary)) => {
                    record.tokens(summary.prompt_tokens, summary.generated_tokens);
                    record.answer_part(&summary.tail_text);
                    if !summary.tail_text.is_empty() {
                        yield Ok(chunk(token_choice(&summary.tail_text, None), None, None));
                    }
                    let finish = if called { "tool_calls" } else { openai::finish_reason(&summary.stop_reason) };
                    let last = match shape {
                        Shape::Chat => json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": finish}),
                        Shape::Completion => json!({"index": 0, "text": "", "logprobs": null, "finish_reason": finish}),
                    };
                    // The `edgellm` object rides on the last chunk before [DONE].
                    yield Ok(chunk(last, None, (!options.include_usage).then_some(&edgellm)));
                    if options.include_usage {
                        yield Ok(chunk(Value::Null, Some(openai::usage(&summary)), Some(&edgellm)));
                    }
                    yield Ok(SseEvent::default().data("[DONE]"));
                    break;
                }
                Err(error) => {
                    // Bytes were already sent: end the stream with an error event, never silently.
                    let error = ApiError::from(error);
                    yield Ok(SseEvent::default().data(error.body().to_string()));
                    break;
                }
            }
            step = running.next().await;
        }
    };
    Ok(sse(events))
}

pub fn sse<S: Stream<Item = Result<SseEvent, Infallible>> + Send + 'static>(events: S) -> Response {
    Sse::new(events).into_response()
}

fn fingerprint() -> String {
    format!("edgellm-{}", env!("CARGO_PKG_VERSION"))
}

pub fn prompt_for_log(prompt: &Prompt) -> String {
    match prompt {
        Prompt::Text(text) => text.clone(),
        Prompt::Tokens(tokens) => format!("{} tokens", tokens.len()),
        Prompt::Chat(messages) => messages
            .iter()
            .map(|m| format!("{}: {}", m.role, m.content))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}
