//! `POST /v1/chat/completions` and `POST /v1/completions`: OpenAI's shapes, streaming included.
//! An answer with tool calls has `message.tool_calls`, `content: null` and `finish_reason:
//! "tool_calls"`; streamed, the calls come whole in one `delta.tool_calls` chunk once they are
//! complete and checked.

use std::convert::Infallible;
use std::time::Instant;

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
    let pack = super::packs::take_pack(&mut edge);
    let route = route_override(&headers, edge)?;
    let (mut generation, mut options) = request.into_generation(&state.config.sampling)?;
    let retrieved =
        super::packs::retrieve(&state, "/v1/chat/completions", pack, &mut generation).await?;
    options.citation = retrieved.as_ref().map(super::packs::citation);
    let response = respond(state, record, route, generation, options, Shape::Chat).await?;
    Ok(super::packs::cite(response, retrieved.as_ref()))
}

/// `POST /v1/chat/completions/input_tokens` (llama-server's): `{"input_tokens": n}`, the prompt
/// tokens the local model would read for this request, tools' instructions included, without
/// generating.
pub async fn input_tokens(
    State(state): State<AppState>,
    ApiJson(mut request): ApiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    request.stream = None;
    request.n = None;
    let (generation, _) = request.into_generation(&state.config.sampling)?;
    let tokens = state.service.count_prompt_tokens(&generation).await?;
    Ok(axum::Json(json!({ "input_tokens": tokens })).into_response())
}

pub async fn completions(
    State(state): State<AppState>,
    Extension(record): Extension<RequestRecord>,
    headers: HeaderMap,
    ApiJson(mut request): ApiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    let route = route_override(&headers, request.edgellm.take())?;
    let (generation, options) = request.into_generation(&state.config.sampling)?;
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
    let verbose = options
        .verbose
        .then(|| local_prompt_text(&state, &generation))
        .flatten();
    if options.stream {
        let running = state.router.start(generation, route, Mode::Stream).await?;
        let model = answered_model(&state, &running);
        let meta = running.meta.clone();
        return Ok(with_headers(
            stream(running, model, options, shape, record).await?,
            &meta,
        ));
    }
    // `n` choices are `n` generations, one after another (a seed moves on by one per choice,
    // so a seeded request still gets different choices).
    let mut choices = Vec::new();
    let mut answered = None;
    for index in 0..options.n.max(1) {
        let mut generation = generation.clone();
        if let Some(seed) = generation.params.seed.as_mut() {
            *seed = seed.wrapping_add(index);
        }
        let running = state.router.start(generation, route, Mode::Whole).await?;
        let model = answered_model(&state, &running);
        let meta = running.meta.clone();
        choices.push(collect_recorded(running, &record).await?);
        answered = Some((model, meta));
    }
    let Some((model, meta)) = answered else {
        return Err(ApiError::invalid("n", "n must be at least 1"));
    };
    let id = request_id(match shape {
        Shape::Chat => "chatcmpl-",
        Shape::Completion => "cmpl-",
    });
    let finish = |completion: &Collected| match completion.tool_calls.is_empty() {
        true => openai::finish_reason(&completion.summary.stop_reason),
        false => "tool_calls",
    };
    let generated: usize = choices.iter().map(|c| c.summary.generated_tokens).sum();
    let mut usage = openai::usage(&choices[0].summary);
    usage["completion_tokens"] = json!(generated);
    usage["total_tokens"] = json!(choices[0].summary.prompt_tokens + generated);
    let mut body = match shape {
        Shape::Chat => {
            let choices: Vec<Value> = choices
                .iter()
                .enumerate()
                .map(|(index, completion)| {
                    let logprobs = options.logprobs.then(|| {
                        json!({"content": completion.tokens.iter().map(openai::chat_logprob).collect::<Vec<_>>()})
                    });
                    let mut message =
                        json!({"role": "assistant", "content": completion.text, "refusal": null});
                    if !completion.tool_calls.is_empty() {
                        message["tool_calls"] = calls_json(&completion.tool_calls);
                        if completion.text.is_empty() {
                            message["content"] = Value::Null;
                        }
                    }
                    json!({"index": index, "message": message, "logprobs": logprobs,
                           "finish_reason": finish(completion)})
                })
                .collect();
            json!({
                "id": id, "object": "chat.completion", "created": unix_now(), "model": model,
                "system_fingerprint": fingerprint(), "choices": choices, "usage": usage,
            })
        }
        Shape::Completion => {
            let choices: Vec<Value> = choices
                .iter()
                .enumerate()
                .map(|(index, completion)| {
                    let logprobs = options
                        .logprobs
                        .then(|| openai::completion_logprobs(&completion.tokens, 0));
                    json!({"index": index, "text": completion.text, "logprobs": logprobs,
                           "finish_reason": finish(completion)})
                })
                .collect();
            json!({
                "id": id, "object": "text_completion", "created": unix_now(), "model": model,
                "system_fingerprint": fingerprint(), "choices": choices, "usage": usage,
            })
        }
    };
    if let Some(prompt) = verbose.filter(|_| meta.remote_model.is_none()) {
        body["__verbose"] = json!({ "prompt": prompt });
    }
    body["edgellm"] = super::packs::with_citation(meta_json(&meta), options.citation.as_ref());
    Ok(with_headers(axum::Json(body).into_response(), &meta))
}

/// The text the local model reads for `generation` (llama-server's `__verbose.prompt`).
fn local_prompt_text(state: &AppState, generation: &Generation) -> Option<String> {
    let engine = state.service.engine()?;
    match &generation.prompt {
        Prompt::Text(text) => Some(text.clone()),
        Prompt::Tokens(_) => None,
        Prompt::Chat(messages) => engine.apply_chat_template(messages).ok(),
    }
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
            // Not asked for.
            Step::Progress(_) => {}
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
/// llama-server's `timings` ride on the last chunk, and on every token's chunk with
/// `timings_per_token` (measured here: the prompt until the first token, then decoding).
async fn stream(
    mut running: Routed,
    model: String,
    options: Options,
    shape: Shape,
    record: RequestRecord,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let first = running.next().await?;
    let first_at = Instant::now();
    let prompt_n = running.prompt_tokens;
    let edgellm = super::packs::with_citation(meta_json(&running.meta), options.citation.as_ref());
    let id = request_id(match shape {
        Shape::Chat => "chatcmpl-",
        Shape::Completion => "cmpl-",
    });
    let created = unix_now();
    let object = match shape {
        Shape::Chat => "chat.completion.chunk",
        Shape::Completion => "text_completion",
    };
    // One chunk: `choice` (none when null), then top-level `extra` fields (usage, timings,
    // the `edgellm` object).
    let chunk = move |choice: Value, extra: Value| -> SseEvent {
        let choices = if choice.is_null() {
            json!([])
        } else {
            json!([choice])
        };
        let mut body = json!({"id": id, "object": object, "created": created, "model": model,
                              "system_fingerprint": fingerprint(), "choices": choices});
        if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
            body.extend(extra);
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
    let timings_now = move |predicted: usize| {
        super::llama::timings_of(
            0,
            prompt_n,
            first_at.duration_since(started).as_secs_f64() * 1000.0,
            predicted,
            first_at.elapsed().as_secs_f64() * 1000.0,
        )
    };
    let events = async_stream::stream! {
        if let Shape::Chat = shape {
            yield Ok::<_, Infallible>(chunk(json!({"index": 0, "delta": {"role": "assistant", "content": null}, "logprobs": null, "finish_reason": null}), json!({})));
        }
        let mut step = Ok(first);
        let mut called = false;
        let mut predicted = 0usize;
        loop {
            match step {
                Ok(Step::Token(token)) => {
                    record.answer_part(&token.text);
                    predicted += 1;
                    if !token.text.is_empty() || options.logprobs {
                        let extra = match options.timings_per_token {
                            true => json!({"timings": timings_now(predicted)}),
                            false => json!({}),
                        };
                        yield Ok(chunk(token_choice(&token.text, Some(&token)), extra));
                    }
                }
                // Asked for with `return_progress`: llama-server's chunk, an empty role delta.
                Ok(Step::Progress(progress)) => {
                    let choice = match shape {
                        Shape::Chat => json!({"index": 0, "delta": {"role": "assistant", "content": null}, "logprobs": null, "finish_reason": null}),
                        Shape::Completion => json!({"index": 0, "text": "", "logprobs": null, "finish_reason": null}),
                    };
                    yield Ok(chunk(choice, json!({"prompt_progress": super::llama::progress_json(&progress)})));
                }
                Ok(Step::ToolCalls(calls)) => {
                    called = !calls.is_empty();
                    yield Ok(chunk(json!({"index": 0, "delta": {"tool_calls": call_deltas(&calls)},
                                          "logprobs": null, "finish_reason": null}), json!({})));
                }
                Ok(Step::Done(summary)) => {
                    record.tokens(summary.prompt_tokens, summary.generated_tokens);
                    record.answer_part(&summary.tail_text);
                    if !summary.tail_text.is_empty() {
                        yield Ok(chunk(token_choice(&summary.tail_text, None), json!({})));
                    }
                    let finish = if called { "tool_calls" } else { openai::finish_reason(&summary.stop_reason) };
                    let last = match shape {
                        Shape::Chat => json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": finish}),
                        Shape::Completion => json!({"index": 0, "text": "", "logprobs": null, "finish_reason": finish}),
                    };
                    let timings = super::llama::timings(&summary);
                    // The `edgellm` object and the timings ride on the last chunk before [DONE].
                    if options.include_usage {
                        yield Ok(chunk(last, json!({})));
                        yield Ok(chunk(Value::Null, json!({"usage": openai::usage(&summary),
                                                           "timings": timings, "edgellm": edgellm})));
                    } else {
                        yield Ok(chunk(last, json!({"timings": timings, "edgellm": edgellm})));
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
