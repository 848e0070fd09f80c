//! Anthropic's Messages API, as llama-server serves it: `POST /v1/messages` (whole or streamed
//! as Anthropic's named SSE events) and `POST /v1/messages/count_tokens`, for clients written
//! against Anthropic's SDKs.
//!
//! A request is read in Anthropic's shape and turned into the OpenAI chat request the
//! `/v1/chat/completions` route takes (`system` becomes the system message, `tool_use` blocks an
//! assistant's `tool_calls`, `tool_result` blocks `tool` messages, `input_schema` a function's
//! `parameters`, `tool_choice` `any` OpenAI's `required`), so the same checks, limits, routing
//! walk and egress guard apply. Answers are content blocks (`text`, `tool_use`) with
//! `stop_reason` `end_turn`, `max_tokens`, `stop_sequence` or `tool_use`, and usage in
//! Anthropic's terms (`input_tokens` not read from the cache, `cache_read_input_tokens`).
//! Errors are Anthropic's `{"type": "error", "error": {"type", "message"}}` with the status
//! edgellm gives elsewhere. Images and documents are refused (400): the model reads text only.

use std::convert::Infallible;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::chat::{answered_model, collect_recorded, mode, sse};
use super::error::ApiError;
use super::json::ApiJson;
use super::openai::ChatRequest;
use super::routed::{EdgeOptions, meta_json, route_override, with_headers};
use super::{AppState, RequestRecord, request_id};
use crate::engine::{StopReason, Summary, ToolCall};
use crate::router::Routed;
use crate::service::Step;

/// An [`ApiError`] in Anthropic's shape.
pub struct AnthropicError(ApiError);

impl From<ApiError> for AnthropicError {
    fn from(error: ApiError) -> Self {
        AnthropicError(error)
    }
}

impl From<crate::service::ServiceError> for AnthropicError {
    fn from(error: crate::service::ServiceError) -> Self {
        AnthropicError(error.into())
    }
}

/// Anthropic's error type for a status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        _ => "api_error",
    }
}

fn error_body(error: &ApiError) -> Value {
    json!({"type": "error", "error": {"type": error_type(error.status), "message": error.message}})
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        let mut response = (self.0.status, axum::Json(error_body(&self.0))).into_response();
        if let Some(secs) = self.0.retry_after_secs
            && let Ok(value) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// One message: `content` is a string or an array of content blocks.
#[derive(Debug, Deserialize)]
pub struct MessageIn {
    pub role: String,
    pub content: Value,
}

/// The request. Fields edgellm does not use (`metadata`, `thinking`, `service_tier`, ...) are
/// accepted and ignored, as llama-server does.
#[derive(Debug, Deserialize)]
pub struct MessagesRequest {
    pub messages: Vec<MessageIn>,
    pub system: Option<Value>,
    pub max_tokens: Option<u32>,
    pub stop_sequences: Option<Vec<String>>,
    pub stream: Option<bool>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i32>,
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    /// Structured output: `{"format": {"type": "json_schema", "schema": {...}}}` (and the
    /// older top-level `output_format` of the same shape): constrained decoding, as
    /// `response_format` on the chat route.
    pub output_config: Option<Value>,
    pub output_format: Option<Value>,
    pub edgellm: Option<EdgeOptions>,
}

/// OpenAI's `response_format` for Anthropic's output format.
fn response_format(request: &MessagesRequest) -> Result<Option<Value>, ApiError> {
    let (format, param) = match (&request.output_config, &request.output_format) {
        (Some(config), _) if !config["format"].is_null() => {
            (&config["format"], "output_config.format")
        }
        (_, Some(format)) if !format.is_null() => (format, "output_format"),
        _ => return Ok(None),
    };
    if format["type"] != "json_schema" || !format["schema"].is_object() {
        return Err(ApiError::invalid(
            param,
            "the output format must be {\"type\": \"json_schema\", \"schema\": {...}}",
        ));
    }
    Ok(Some(json!({"type": "json_schema",
                   "json_schema": {"name": "output", "schema": format["schema"]}})))
}

/// The text of a `system` or `tool_result` content: a string, or text blocks joined.
fn text_of(content: &Value, param: &str) -> Result<String, ApiError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(blocks) => {
            let mut text = String::new();
            for (i, block) in blocks.iter().enumerate() {
                match block["type"].as_str() {
                    Some("text") => text.push_str(block["text"].as_str().unwrap_or_default()),
                    Some("image") | Some("document") => {
                        return Err(no_media(&format!("{param}[{i}]")));
                    }
                    _ => {
                        return Err(ApiError::invalid(
                            &format!("{param}[{i}]"),
                            "expected a text block",
                        ));
                    }
                }
            }
            Ok(text)
        }
        _ => Err(ApiError::invalid(
            param,
            "expected a string or an array of text blocks",
        )),
    }
}

fn no_media(param: &str) -> ApiError {
    ApiError::invalid(
        param,
        "image input is not supported: the model reads text only",
    )
}

/// The OpenAI chat messages for Anthropic's `system` and `messages`.
fn openai_messages(system: Option<&Value>, messages: &[MessageIn]) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::new();
    if let Some(system) = system {
        let text = text_of(system, "system")?;
        if !text.is_empty() {
            out.push(json!({"role": "system", "content": text}));
        }
    }
    for (i, m) in messages.iter().enumerate() {
        let param = format!("messages[{i}]");
        if m.role != "user" && m.role != "assistant" {
            return Err(ApiError::invalid(
                &format!("{param}.role"),
                format!("role must be \"user\" or \"assistant\", not {:?}", m.role),
            ));
        }
        let blocks = match &m.content {
            Value::String(text) => {
                out.push(json!({"role": m.role, "content": text}));
                continue;
            }
            Value::Array(blocks) => blocks,
            _ => {
                return Err(ApiError::invalid(
                    &format!("{param}.content"),
                    "content must be a string or an array of content blocks",
                ));
            }
        };
        let mut text = String::new();
        let mut calls = Vec::new();
        let mut results = Vec::new();
        for (j, block) in blocks.iter().enumerate() {
            let at = format!("{param}.content[{j}]");
            match (block["type"].as_str(), m.role.as_str()) {
                (Some("text"), _) => text.push_str(block["text"].as_str().unwrap_or_default()),
                (Some("image") | Some("document"), _) => return Err(no_media(&at)),
                (Some("tool_use"), "assistant") => {
                    let (Some(id), Some(name)) = (block["id"].as_str(), block["name"].as_str())
                    else {
                        return Err(ApiError::invalid(
                            &at,
                            "a tool_use block needs an id and a name",
                        ));
                    };
                    let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                    calls.push(json!({"id": id, "type": "function",
                                      "function": {"name": name, "arguments": input.to_string()}}));
                }
                (Some("tool_result"), "user") => {
                    let Some(id) = block["tool_use_id"].as_str() else {
                        return Err(ApiError::invalid(
                            &at,
                            "a tool_result block needs a tool_use_id",
                        ));
                    };
                    let mut content = text_of(&block["content"], &format!("{at}.content"))?;
                    if block["is_error"].as_bool() == Some(true) {
                        content = format!("Error: {content}");
                    }
                    results.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
                }
                // Earlier turns' reasoning is not replayed to the model.
                (Some("thinking") | Some("redacted_thinking"), _) => {}
                (kind, role) => {
                    return Err(ApiError::invalid(
                        &at,
                        format!(
                            "a {role} message cannot hold a {} block",
                            kind.unwrap_or("typeless")
                        ),
                    ));
                }
            }
        }
        if m.role == "assistant" {
            let mut message = json!({"role": "assistant", "content": text});
            if !calls.is_empty() {
                message["tool_calls"] = Value::Array(calls);
                if text.is_empty() {
                    message["content"] = Value::Null;
                }
            }
            out.push(message);
        } else {
            // Tool results answer the assistant turn just before; the user's text follows.
            out.extend(results);
            if !text.is_empty() {
                out.push(json!({"role": "user", "content": text}));
            }
        }
    }
    Ok(out)
}

/// OpenAI's `tools`, `tool_choice` and `parallel_tool_calls`.
#[derive(Debug, Default, PartialEq)]
struct OpenAiTools {
    tools: Option<Value>,
    choice: Option<Value>,
    parallel: Option<bool>,
}

/// Anthropic's `tools` and `tool_choice` as OpenAI's.
fn openai_tools(tools: Option<&[Value]>, choice: Option<&Value>) -> Result<OpenAiTools, ApiError> {
    let tools = match tools {
        None => None,
        Some(tools) => {
            let mut out = Vec::new();
            for (i, tool) in tools.iter().enumerate() {
                let param = format!("tools[{i}]");
                if tool["type"].as_str().is_some_and(|t| t != "custom") {
                    return Err(ApiError::invalid(
                        &param,
                        format!(
                            "tool type {} is not served: only client tools (name, description, input_schema)",
                            tool["type"]
                        ),
                    ));
                }
                let Some(name) = tool["name"].as_str() else {
                    return Err(ApiError::invalid(
                        &format!("{param}.name"),
                        "a tool needs a name",
                    ));
                };
                let mut function = json!({"name": name});
                if let Some(description) = tool.get("description") {
                    function["description"] = description.clone();
                }
                if let Some(schema) = tool.get("input_schema") {
                    function["parameters"] = schema.clone();
                }
                out.push(json!({"type": "function", "function": function}));
            }
            Some(Value::Array(out))
        }
    };
    let Some(choice) = choice else {
        return Ok(OpenAiTools {
            tools,
            ..OpenAiTools::default()
        });
    };
    let parallel = choice["disable_parallel_tool_use"].as_bool().map(|d| !d);
    let choice = match choice["type"].as_str() {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => match choice["name"].as_str() {
            Some(name) => json!({"type": "function", "function": {"name": name}}),
            None => {
                return Err(ApiError::invalid(
                    "tool_choice.name",
                    "tool_choice of type \"tool\" needs a name",
                ));
            }
        },
        _ => {
            return Err(ApiError::invalid(
                "tool_choice.type",
                "tool_choice.type must be auto, any, tool or none",
            ));
        }
    };
    Ok(OpenAiTools {
        tools,
        choice: Some(choice),
        parallel,
    })
}

/// The OpenAI chat request for an Anthropic one.
fn chat_request(request: &MessagesRequest, stream: bool) -> Result<ChatRequest, ApiError> {
    let messages = openai_messages(request.system.as_ref(), &request.messages)?;
    let OpenAiTools {
        tools,
        choice: tool_choice,
        parallel,
    } = openai_tools(request.tools.as_deref(), request.tool_choice.as_ref())?;
    let mut body = Map::new();
    body.insert("messages".into(), Value::Array(messages));
    body.insert("stream".into(), json!(stream));
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            body.insert(key.into(), value);
        }
    };
    put("max_tokens", request.max_tokens.map(|n| json!(n)));
    put("stop", request.stop_sequences.as_ref().map(|s| json!(s)));
    put("temperature", request.temperature.map(|t| json!(t)));
    put("top_p", request.top_p.map(|t| json!(t)));
    put("top_k", request.top_k.map(|t| json!(t)));
    put("tools", tools);
    put("tool_choice", tool_choice);
    put("parallel_tool_calls", parallel.map(|p| json!(p)));
    put("response_format", response_format(request)?);
    serde_json::from_value(Value::Object(body))
        .map_err(|e| ApiError::invalid("messages", format!("not a valid request: {e}")))
}

/// Anthropic's stop reason and stop sequence.
fn stop(summary: &Summary, called: bool) -> (&'static str, Value) {
    if called {
        return ("tool_use", Value::Null);
    }
    match &summary.stop_reason {
        StopReason::Length => ("max_tokens", Value::Null),
        StopReason::StopString(s) => ("stop_sequence", json!(s)),
        StopReason::EndOfGeneration => ("end_turn", Value::Null),
    }
}

fn usage(summary: &Summary) -> Value {
    json!({
        "input_tokens": summary.prompt_tokens.saturating_sub(summary.cached_tokens),
        "cache_read_input_tokens": summary.cached_tokens,
        "cache_creation_input_tokens": 0,
        "output_tokens": summary.generated_tokens,
    })
}

fn tool_use(call: &ToolCall) -> Value {
    let input: Value = serde_json::from_str(&call.arguments).unwrap_or_else(|_| json!({}));
    json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input})
}

/// `POST /v1/messages`.
pub async fn messages(
    State(state): State<AppState>,
    Extension(record): Extension<RequestRecord>,
    headers: HeaderMap,
    body: Result<ApiJson<MessagesRequest>, ApiError>,
) -> Result<Response, AnthropicError> {
    let ApiJson(mut request) = body?;
    let route = route_override(&headers, request.edgellm.take())?;
    let stream = request.stream.unwrap_or(false);
    let (generation, _) =
        chat_request(&request, stream)?.into_generation(&state.config.sampling)?;
    // An estimate for `message_start`: it does not wake a sleeping model.
    let input_estimate = if stream && state.service.engine().is_some() {
        state.service.count_prompt_tokens(&generation).await.ok()
    } else {
        None
    };
    record.prompt(&generation.prompt);
    let running = state
        .router
        .start(generation, route, mode(stream))
        .await
        .map_err(ApiError::from)?;
    let model = answered_model(&state, &running);
    let meta = running.meta.clone();
    if stream {
        let response = events(running, model, record, input_estimate.unwrap_or(0)).await?;
        return Ok(with_headers(response, &meta));
    }
    let completion = collect_recorded(running, &record).await?;
    let mut content = Vec::new();
    if !completion.text.is_empty() || completion.tool_calls.is_empty() {
        content.push(json!({"type": "text", "text": completion.text}));
    }
    content.extend(completion.tool_calls.iter().map(tool_use));
    let (stop_reason, stop_sequence) = stop(&completion.summary, !completion.tool_calls.is_empty());
    let body = json!({
        "id": request_id("msg_"), "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": stop_reason, "stop_sequence": stop_sequence,
        "usage": usage(&completion.summary), "edgellm": meta_json(&meta),
    });
    Ok(with_headers(axum::Json(body).into_response(), &meta))
}

/// Anthropic's event stream: `message_start`, `ping`, per content block `content_block_start`,
/// `content_block_delta`s and `content_block_stop`, then `message_delta` (stop reason, usage)
/// and `message_stop`. The first step is awaited before the answer starts, so an early error
/// is a plain error with its status; a later one ends the stream with an `error` event.
async fn events(
    mut running: Routed,
    model: String,
    record: RequestRecord,
    input_estimate: usize,
) -> Result<Response, AnthropicError> {
    let first = running.next().await.map_err(ApiError::from)?;
    let edgellm = meta_json(&running.meta);
    let event = |name: &str, data: Value| -> Result<SseEvent, Infallible> {
        Ok(SseEvent::default().event(name).data(data.to_string()))
    };
    let start = json!({"type": "message_start", "message": {
        "id": request_id("msg_"), "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": input_estimate, "cache_read_input_tokens": 0,
                  "cache_creation_input_tokens": 0, "output_tokens": 0}}});
    let stream = async_stream::stream! {
        yield event("message_start", start);
        yield event("ping", json!({"type": "ping"}));
        let mut step = Ok(first);
        // The index of the next block, and whether a text block is open (at `index - 1`).
        let mut index = 0;
        let mut text_open = false;
        let mut called = false;
        loop {
            let text = match &step {
                Ok(Step::Token(token)) => Some(token.text.clone()),
                Ok(Step::Done(summary)) => Some(summary.tail_text.clone()),
                _ => None,
            };
            if let Some(text) = text.filter(|t| !t.is_empty()) {
                record.answer_part(&text);
                if !text_open {
                    yield event("content_block_start", json!({"type": "content_block_start",
                        "index": index, "content_block": {"type": "text", "text": ""}}));
                    text_open = true;
                    index += 1;
                }
                yield event("content_block_delta", json!({"type": "content_block_delta",
                    "index": index - 1, "delta": {"type": "text_delta", "text": text}}));
            }
            match step {
                Ok(Step::Token(_) | Step::Progress(_)) => {}
                Ok(Step::ToolCalls(calls)) => {
                    if text_open {
                        yield event("content_block_stop", json!({"type": "content_block_stop", "index": index - 1}));
                        text_open = false;
                    }
                    for call in &calls {
                        called = true;
                        let mut block = tool_use(call);
                        block["input"] = json!({});
                        yield event("content_block_start", json!({"type": "content_block_start",
                            "index": index, "content_block": block}));
                        yield event("content_block_delta", json!({"type": "content_block_delta",
                            "index": index, "delta": {"type": "input_json_delta", "partial_json": call.arguments}}));
                        yield event("content_block_stop", json!({"type": "content_block_stop", "index": index}));
                        index += 1;
                    }
                }
                Ok(Step::Done(summary)) => {
                    record.tokens(summary.prompt_tokens, summary.generated_tokens);
                    if index == 0 {
                        // Every answer holds at least one block, as Anthropic's do.
                        yield event("content_block_start", json!({"type": "content_block_start",
                            "index": 0, "content_block": {"type": "text", "text": ""}}));
                        text_open = true;
                        index = 1;
                    }
                    if text_open {
                        yield event("content_block_stop", json!({"type": "content_block_stop", "index": index - 1}));
                    }
                    let (stop_reason, stop_sequence) = stop(&summary, called);
                    yield event("message_delta", json!({"type": "message_delta",
                        "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                        "usage": usage(&summary), "edgellm": edgellm}));
                    yield event("message_stop", json!({"type": "message_stop"}));
                    break;
                }
                Err(error) => {
                    // Bytes were already sent: end the stream with an error event, never silently.
                    yield event("error", error_body(&ApiError::from(error)));
                    break;
                }
            }
            step = running.next().await;
        }
    };
    Ok(sse(stream))
}

/// `POST /v1/messages/count_tokens`: `{"input_tokens": n}`, the prompt tokens the local model
/// would read for these messages, system and tools (the tools' instructions included).
pub async fn count_tokens(
    State(state): State<AppState>,
    body: Result<ApiJson<CountRequest>, ApiError>,
) -> Result<Response, AnthropicError> {
    let ApiJson(request) = body?;
    let request = MessagesRequest {
        messages: request.messages,
        system: request.system,
        max_tokens: None,
        stop_sequences: None,
        stream: None,
        temperature: None,
        top_p: None,
        top_k: None,
        tools: request.tools,
        tool_choice: request.tool_choice,
        output_config: None,
        output_format: None,
        edgellm: None,
    };
    let (generation, _) = chat_request(&request, false)?.into_generation(&state.config.sampling)?;
    let tokens = state.service.count_prompt_tokens(&generation).await?;
    Ok(axum::Json(json!({ "input_tokens": tokens })).into_response())
}

/// `count_tokens` takes the messages request without `max_tokens` and sampling.
#[derive(Debug, Deserialize)]
pub struct CountRequest {
    pub messages: Vec<MessageIn>,
    pub system: Option<Value>,
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(v: Value) -> Vec<MessageIn> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn blocks_become_openai_messages() {
        let m = messages(json!([
            {"role": "user", "content": [{"type": "text", "text": "What is"}, {"type": "text", "text": " the weather?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "text", "text": "Here:"},
                {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "sunny"}]},
                {"type": "tool_result", "tool_use_id": "t2", "is_error": true, "content": "no city"}]},
        ]));
        let out =
            openai_messages(Some(&json!([{"type": "text", "text": "Be brief."}])), &m).unwrap();
        assert_eq!(
            Value::Array(out),
            json!([
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is the weather?"},
                {"role": "assistant", "content": "Let me look.", "tool_calls": [{"id": "t1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
                {"role": "tool", "tool_call_id": "t2", "content": "Error: no city"},
                {"role": "user", "content": "Here:"},
            ])
        );
    }

    #[test]
    fn bad_blocks_and_tools_name_their_param() {
        let cases = [
            (
                json!([{"role": "system", "content": "x"}]),
                "messages[0].role",
            ),
            (
                json!([{"role": "user", "content": 3}]),
                "messages[0].content",
            ),
            (
                json!([{"role": "user", "content": [{"type": "image", "source": {}}]}]),
                "messages[0].content[0]",
            ),
            (
                json!([{"role": "user", "content": [{"type": "tool_use", "id": "a", "name": "b"}]}]),
                "messages[0].content[0]",
            ),
            (
                json!([{"role": "assistant", "content": [{"type": "tool_use", "name": "b"}]}]),
                "messages[0].content[0]",
            ),
            (
                json!([{"role": "user", "content": [{"type": "tool_result"}]}]),
                "messages[0].content[0]",
            ),
        ];
        for (m, param) in cases {
            let error = openai_messages(None, &messages(m.clone())).unwrap_err();
            assert_eq!(error.status, 400, "{m}");
            assert_eq!(error.param.as_deref(), Some(param), "{m}");
        }
        let web = [json!({"type": "web_search_20250305", "name": "web_search"})];
        assert_eq!(
            openai_tools(Some(&web), None).unwrap_err().param.as_deref(),
            Some("tools[0]")
        );
        let any = openai_tools(
            None,
            Some(&json!({"type": "any", "disable_parallel_tool_use": true})),
        )
        .unwrap();
        assert_eq!(
            (any.choice, any.parallel),
            (Some(json!("required")), Some(false))
        );
        let named = openai_tools(None, Some(&json!({"type": "tool", "name": "f"}))).unwrap();
        assert_eq!(
            named.choice,
            Some(json!({"type": "function", "function": {"name": "f"}}))
        );
        assert!(openai_tools(None, Some(&json!({"type": "sometimes"}))).is_err());
        assert_eq!(
            error_type(StatusCode::SERVICE_UNAVAILABLE),
            "overloaded_error"
        );
        assert_eq!(
            error_type(StatusCode::PAYLOAD_TOO_LARGE),
            "request_too_large"
        );
    }
}
