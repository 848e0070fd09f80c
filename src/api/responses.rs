//! `POST /v1/responses`: OpenAI's Responses API for text, streaming included.

use std::convert::Infallible;

use axum::Extension;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::chat::{answered_model, collect_recorded, mode, sse};
use super::error::ApiError;
use super::json::ApiJson;
use super::openai::ResponsesRequest;
use super::routed::{meta_json, route_override, with_headers};
use super::{AppState, RequestRecord, request_id, unix_now};
use crate::engine::{StopReason, Summary};
use crate::service::Step;

/// `POST /v1/responses/input_tokens`: `{"input_tokens": n}`, the prompt tokens the local model
/// would read for this request, without generating (as `/v1/chat/completions/input_tokens`).
pub async fn input_tokens(
    State(state): State<AppState>,
    ApiJson(mut request): ApiJson<ResponsesRequest>,
) -> Result<Response, ApiError> {
    request.edgellm = None;
    let (generation, _) = request.into_generation(&state.config.sampling)?;
    let tokens = state.service.count_prompt_tokens(&generation).await?;
    Ok(axum::Json(serde_json::json!({ "input_tokens": tokens })).into_response())
}

pub async fn create(
    State(state): State<AppState>,
    Extension(record): Extension<RequestRecord>,
    headers: HeaderMap,
    ApiJson(mut request): ApiJson<ResponsesRequest>,
) -> Result<Response, ApiError> {
    let mut edge = request.edgellm.take();
    let pack = super::packs::take_pack(&mut edge);
    let route = route_override(&headers, edge)?;
    let progress = request.return_progress.unwrap_or(false);
    let timings_per_token = request.timings_per_token.unwrap_or(false);
    let (mut generation, stream) = request.into_generation(&state.config.sampling)?;
    generation.params.prompt_progress = progress && stream;
    let retrieved = super::packs::retrieve(&state, "/v1/responses", pack, &mut generation).await?;
    let citation = retrieved.as_ref().map(super::packs::citation);
    record.prompt(&generation.prompt);
    let mut running = state.router.start(generation, route, mode(stream)).await?;
    let meta = running.meta.clone();
    let edgellm = super::packs::with_citation(meta_json(&meta), citation.as_ref());
    let ids = Ids {
        response: request_id("resp_"),
        message: request_id("msg_"),
        created: unix_now(),
        model: answered_model(&state, &running),
    };
    if !stream {
        let collected = collect_recorded(running, &record).await?;
        let mut body = ids.response(&collected.text, Some(&collected.summary));
        body["edgellm"] = edgellm;
        return Ok(super::packs::cite(
            with_headers(axum::Json(body).into_response(), &meta),
            retrieved.as_ref(),
        ));
    }
    let started = std::time::Instant::now();
    let first = running.next().await?;
    // The first token's time (the prompt's end), for the timings on each delta.
    let mut first_at: Option<std::time::Instant> = None;
    let prompt_n = running.prompt_tokens;
    let events = async_stream::stream! {
        let mut sequence = 0u64;
        let mut event = |kind: &str, mut body: Value| -> Result<SseEvent, Infallible> {
            body["type"] = json!(kind);
            body["sequence_number"] = json!(sequence);
            sequence += 1;
            Ok(SseEvent::default().event(kind).data(body.to_string()))
        };
        let in_progress = ids.response("", None);
        yield event("response.created", json!({"response": in_progress}));
        yield event("response.in_progress", json!({"response": in_progress}));
        yield event("response.output_item.added", json!({"output_index": 0,
            "item": {"id": ids.message, "type": "message", "status": "in_progress", "role": "assistant", "content": []}}));
        yield event("response.content_part.added", json!({"item_id": ids.message, "output_index": 0, "content_index": 0,
            "part": {"type": "output_text", "text": "", "annotations": []}}));
        let mut text = String::new();
        let mut predicted = 0usize;
        let mut step = Ok(first);
        loop {
            match step {
                Ok(Step::Progress(progress)) => {
                    yield event("response.in_progress", json!({"response": in_progress,
                        "prompt_progress": super::llama::progress_json(&progress)}));
                }
                Ok(Step::Token(token)) => {
                    let first_at = *first_at.get_or_insert_with(std::time::Instant::now);
                    predicted += 1;
                    if !token.text.is_empty() {
                        text.push_str(&token.text);
                        let mut body = json!({"item_id": ids.message, "output_index": 0, "content_index": 0, "delta": token.text, "logprobs": []});
                        if timings_per_token {
                            body["timings"] = super::llama::timings_of(
                                0,
                                prompt_n,
                                first_at.duration_since(started).as_secs_f64() * 1000.0,
                                predicted,
                                first_at.elapsed().as_secs_f64() * 1000.0,
                            );
                        }
                        yield event("response.output_text.delta", body);
                    }
                }
                // Requests with tools are refused here, so no tier is asked for calls.
                Ok(Step::ToolCalls(_)) => {}
                Ok(Step::Done(summary)) => {
                    record.tokens(summary.prompt_tokens, summary.generated_tokens);
                    if !summary.tail_text.is_empty() {
                        text.push_str(&summary.tail_text);
                    }
                    record.answer_part(&text);
                    if !summary.tail_text.is_empty() {
                        yield event("response.output_text.delta", json!({"item_id": ids.message, "output_index": 0, "content_index": 0, "delta": summary.tail_text, "logprobs": []}));
                    }
                    yield event("response.output_text.done", json!({"item_id": ids.message, "output_index": 0, "content_index": 0, "text": text, "logprobs": []}));
                    yield event("response.content_part.done", json!({"item_id": ids.message, "output_index": 0, "content_index": 0,
                        "part": {"type": "output_text", "text": text, "annotations": []}}));
                    let mut done = ids.response(&text, Some(&summary));
                    done["edgellm"] = edgellm.clone();
                    yield event("response.output_item.done", json!({"output_index": 0, "item": done["output"][0]}));
                    let kind = if done["status"] == "incomplete" { "response.incomplete" } else { "response.completed" };
                    let mut body = json!({"response": done});
                    if timings_per_token {
                        body["timings"] = super::llama::timings(&summary);
                    }
                    yield event(kind, body);
                    break;
                }
                Err(error) => {
                    let error = ApiError::from(error);
                    yield event("error", json!({"code": error.code, "message": error.message, "param": error.param}));
                    break;
                }
            }
            step = running.next().await;
        }
    };
    Ok(super::packs::cite(
        with_headers(sse(events), &meta),
        retrieved.as_ref(),
    ))
}

struct Ids {
    response: String,
    message: String,
    created: u64,
    model: String,
}

impl Ids {
    /// The Response object; `summary` is `None` while it is in progress.
    fn response(&self, text: &str, summary: Option<&Summary>) -> Value {
        let (status, incomplete, output, usage) = match summary {
            None => ("in_progress", Value::Null, json!([]), Value::Null),
            Some(summary) => {
                let cut = summary.stop_reason == StopReason::Length;
                let status = if cut { "incomplete" } else { "completed" };
                let message = json!({"id": self.message, "type": "message", "status": status, "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}]});
                let usage = json!({
                    "input_tokens": summary.prompt_tokens,
                    "input_tokens_details": {"cached_tokens": summary.cached_tokens},
                    "output_tokens": summary.generated_tokens,
                    "output_tokens_details": {"reasoning_tokens": 0},
                    "total_tokens": summary.prompt_tokens + summary.generated_tokens,
                });
                let incomplete = if cut {
                    json!({"reason": "max_output_tokens"})
                } else {
                    Value::Null
                };
                (status, incomplete, json!([message]), usage)
            }
        };
        json!({
            "id": self.response, "object": "response", "created_at": self.created, "status": status,
            "model": self.model, "output": output, "usage": usage, "error": null,
            "incomplete_details": incomplete, "instructions": null, "parallel_tool_calls": false,
            "tool_choice": "none", "tools": [], "text": {"format": {"type": "text"}},
        })
    }
}
