//! OpenAI Chat Completions: `POST {url}/chat/completions`. Tools go out as
//! `tools: [{"type":"function","function":{...}}]`; calls come back in `message.tool_calls`, or
//! streamed as `delta.tool_calls` fragments gathered by `index`.

use futures::StreamExt;
use serde_json::{Value, json};

use super::{
    EventStream, Http, Provider, UpstreamAnswer, UpstreamError, UpstreamEvent, UpstreamRequest,
    Usage, choice_str, stop_reason,
};
use crate::engine::{ChatMessage, StopReason, ToolCall};
use crate::tools::{ToolChoice, ToolSet, new_call_id};

#[derive(Debug, Clone)]
pub struct ChatClient {
    pub(super) http: Http,
}

impl ChatClient {
    fn body(&self, request: &UpstreamRequest, stream: bool) -> Value {
        let messages: Vec<Value> = request.messages.iter().map(message).collect();
        let mut body = json!({"model": self.http.model, "messages": messages, "stream": stream});
        if let Some(tools) = &request.tools {
            add_tools(&mut body, tools);
        }
        if stream {
            body["stream_options"] = json!({"include_usage": true});
        }
        super::put_sampling(&mut body, request, "max_tokens", true);
        match &request.json {
            Some(Value::Null) => body["response_format"] = json!({"type": "json_object"}),
            Some(schema) => {
                body["response_format"] = json!({"type": "json_schema",
                    "json_schema": {"name": "output", "schema": schema}});
            }
            None => {}
        }
        body
    }
}

fn message(m: &ChatMessage) -> Value {
    let mut out = json!({"role": m.role, "content": m.content});
    if !m.tool_calls.is_empty() {
        out["tool_calls"] = crate::wire::openai::tool_calls_json(&m.tool_calls);
        if m.content.is_empty() {
            out["content"] = Value::Null;
        }
    }
    if let Some(id) = &m.tool_call_id {
        out["tool_call_id"] = json!(id);
    }
    out
}

fn add_tools(body: &mut Value, tools: &ToolSet) {
    body["tools"] = tools
        .tools()
        .iter()
        .map(|t| {
            let mut function = json!({"name": t.name, "parameters": t.parameters});
            if let Some(description) = &t.description {
                function["description"] = json!(description);
            }
            json!({"type": "function", "function": function})
        })
        .collect();
    body["tool_choice"] = match tools.choice() {
        ToolChoice::Function(name) => json!({"type": "function", "function": {"name": name}}),
        choice => json!(choice_str(choice)),
    };
    if !tools.tools().is_empty() {
        body["parallel_tool_calls"] = json!(tools.parallel());
    }
}

/// The tool calls of a message (or of the fragments gathered from a stream).
fn tool_calls(calls: &Value) -> Vec<ToolCall> {
    crate::wire::openai::read_tool_calls(calls, new_call_id)
}

/// Adds one chunk's `delta.tool_calls` fragments to the calls gathered so far (by `index`).
fn gather(calls: &mut Vec<Value>, fragments: &Value) {
    for fragment in fragments.as_array().into_iter().flatten() {
        let index = fragment["index"].as_u64().unwrap_or(calls.len() as u64) as usize;
        if calls.len() <= index {
            calls.resize(
                index + 1,
                json!({"function": {"name": "", "arguments": ""}}),
            );
        }
        let call = &mut calls[index];
        if let Some(id) = fragment["id"].as_str() {
            call["id"] = json!(id);
        }
        for key in ["name", "arguments"] {
            if let Some(piece) = fragment["function"][key].as_str() {
                let joined = format!("{}{piece}", call["function"][key].as_str().unwrap_or(""));
                call["function"][key] = json!(joined);
            }
        }
    }
}

fn usage(value: &Value) -> Usage {
    Usage {
        input_tokens: value["prompt_tokens"].as_u64().unwrap_or(0) as usize,
        output_tokens: value["completion_tokens"].as_u64().unwrap_or(0) as usize,
    }
}

impl Provider for ChatClient {
    async fn infer(&self, request: &UpstreamRequest) -> Result<UpstreamAnswer, UpstreamError> {
        let response = self
            .http
            .post("/chat/completions", &self.body(request, false))
            .await?;
        let body = self.http.json(response).await?;
        let choice = &body["choices"][0];
        let calls = tool_calls(&choice["message"]["tool_calls"]);
        let text = match choice["message"]["content"].as_str() {
            Some(text) => text,
            None if !calls.is_empty() => "",
            None => {
                return Err(UpstreamError::Protocol(
                    "no choices[0].message.content".into(),
                ));
            }
        };
        Ok(UpstreamAnswer {
            text: text.to_string(),
            tool_calls: calls,
            stop_reason: stop_reason(choice["finish_reason"].as_str().unwrap_or("stop")),
            usage: usage(&body["usage"]),
        })
    }

    async fn infer_stream(&self, request: &UpstreamRequest) -> Result<EventStream, UpstreamError> {
        let response = self
            .http
            .post("/chat/completions", &self.body(request, true))
            .await?;
        let mut messages = Box::pin(self.http.events(response));
        Ok(Box::pin(async_stream::stream! {
            let mut finish = StopReason::EndOfGeneration;
            let mut totals = Usage::default();
            let mut finished = false;
            let mut calls = Vec::new();
            while let Some(message) = messages.next().await {
                let message = match message {
                    Ok(m) => m,
                    Err(e) => { yield Err(e); return; }
                };
                if message.data == "[DONE]" {
                    finished = true;
                    break;
                }
                let chunk = match message.json() {
                    Ok(v) => v,
                    Err(e) => { yield Err(e); return; }
                };
                if chunk.get("error").is_some() {
                    yield Err(UpstreamError::Protocol(chunk["error"].to_string()));
                    return;
                }
                if chunk["usage"].is_object() {
                    totals = usage(&chunk["usage"]);
                }
                let choice = &chunk["choices"][0];
                if let Some(text) = choice["delta"]["content"].as_str()
                    && !text.is_empty()
                {
                    yield Ok(UpstreamEvent::Delta(text.to_string()));
                }
                gather(&mut calls, &choice["delta"]["tool_calls"]);
                if let Some(reason) = choice["finish_reason"].as_str() {
                    finish = stop_reason(reason);
                    finished = true;
                }
            }
            if finished {
                if !calls.is_empty() {
                    yield Ok(UpstreamEvent::ToolCalls(tool_calls(&Value::Array(calls))));
                }
                yield Ok(UpstreamEvent::Done { stop_reason: finish, usage: totals });
            } else {
                yield Err(UpstreamError::Transport("the stream ended before the answer did".into()));
            }
        }))
    }
}
