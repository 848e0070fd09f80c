//! OpenAI's Responses API: `POST {url}/responses` with `input`; the answer's text is in
//! `output[].content[].text` (parts of type `output_text`). Tools go out as
//! `tools: [{"type":"function","name",...}]`; calls come back as `output` items of type
//! `function_call` (`call_id`, `name`, `arguments`), also in a stream's `response.completed`.
//! Earlier calls and their results go back in as `function_call` and `function_call_output`
//! input items.

use futures::StreamExt;
use serde_json::{Value, json};

use super::{
    EventStream, Http, Provider, UpstreamAnswer, UpstreamError, UpstreamEvent, UpstreamRequest,
    Usage, choice_str, stop_reason,
};
use crate::engine::{ChatMessage, StopReason, ToolCall};
use crate::tools::{ToolChoice, ToolSet, new_call_id};

#[derive(Debug, Clone)]
pub struct ResponsesClient {
    pub(super) http: Http,
}

impl ResponsesClient {
    fn body(&self, request: &UpstreamRequest, stream: bool) -> Value {
        let input: Vec<Value> = request.messages.iter().flat_map(items).collect();
        let mut body =
            json!({"model": self.http.model, "input": input, "stream": stream, "store": false});
        if let Some(tools) = &request.tools {
            add_tools(&mut body, tools);
        }
        super::put_sampling(&mut body, request, "max_output_tokens", false);
        match &request.json {
            Some(Value::Null) => body["text"] = json!({"format": {"type": "json_object"}}),
            Some(schema) => {
                body["text"] =
                    json!({"format": {"type": "json_schema", "name": "output", "schema": schema}});
            }
            None => {}
        }
        body
    }
}

/// A message as input items: a tool result is a `function_call_output`; an assistant's calls
/// are `function_call` items after its text.
fn items(m: &ChatMessage) -> Vec<Value> {
    if let Some(id) = &m.tool_call_id {
        return vec![json!({"type": "function_call_output", "call_id": id, "output": m.content})];
    }
    let mut out = Vec::new();
    if m.tool_calls.is_empty() || !m.content.is_empty() {
        out.push(json!({"role": m.role, "content": m.content}));
    }
    out.extend(m.tool_calls.iter().map(|c| {
        json!({"type": "function_call", "call_id": c.id, "name": c.name, "arguments": c.arguments})
    }));
    out
}

fn add_tools(body: &mut Value, tools: &ToolSet) {
    body["tools"] = tools
        .tools()
        .iter()
        .map(|t| {
            let mut tool = json!({"type": "function", "name": t.name, "parameters": t.parameters});
            if let Some(description) = &t.description {
                tool["description"] = json!(description);
            }
            tool
        })
        .collect();
    body["tool_choice"] = match tools.choice() {
        ToolChoice::Function(name) => json!({"type": "function", "name": name}),
        choice => json!(choice_str(choice)),
    };
    if !tools.tools().is_empty() {
        body["parallel_tool_calls"] = json!(tools.parallel());
    }
}

fn usage(value: &Value) -> Usage {
    Usage {
        input_tokens: value["input_tokens"].as_u64().unwrap_or(0) as usize,
        output_tokens: value["output_tokens"].as_u64().unwrap_or(0) as usize,
    }
}

/// The text of a Response object, and why it ended.
fn answer(response: &Value) -> Result<UpstreamAnswer, UpstreamError> {
    let output = response["output"]
        .as_array()
        .ok_or_else(|| UpstreamError::Protocol("no output array".into()))?;
    let text: String = output
        .iter()
        .filter_map(|item| item["content"].as_array())
        .flatten()
        .filter(|part| part["type"] == "output_text")
        .filter_map(|part| part["text"].as_str())
        .collect();
    let tool_calls = output
        .iter()
        .filter(|item| item["type"] == "function_call")
        .map(|item| ToolCall {
            id: item["call_id"]
                .as_str()
                .map_or_else(new_call_id, str::to_string),
            name: item["name"].as_str().unwrap_or_default().to_string(),
            arguments: item["arguments"].as_str().unwrap_or_default().to_string(),
        })
        .collect();
    let stop = match response["incomplete_details"]["reason"].as_str() {
        Some(reason) => stop_reason(reason),
        None => StopReason::EndOfGeneration,
    };
    Ok(UpstreamAnswer {
        text,
        tool_calls,
        stop_reason: stop,
        usage: usage(&response["usage"]),
    })
}

impl Provider for ResponsesClient {
    async fn infer(&self, request: &UpstreamRequest) -> Result<UpstreamAnswer, UpstreamError> {
        let response = self
            .http
            .post("/responses", &self.body(request, false))
            .await?;
        answer(&self.http.json(response).await?)
    }

    async fn infer_stream(&self, request: &UpstreamRequest) -> Result<EventStream, UpstreamError> {
        let response = self
            .http
            .post("/responses", &self.body(request, true))
            .await?;
        let mut messages = Box::pin(self.http.events(response));
        Ok(Box::pin(async_stream::stream! {
            while let Some(message) = messages.next().await {
                let message = match message {
                    Ok(m) => m,
                    Err(e) => { yield Err(e); return; }
                };
                let event = match message.json() {
                    Ok(v) => v,
                    Err(e) => { yield Err(e); return; }
                };
                let kind = message.event.as_deref().or(event["type"].as_str()).unwrap_or("");
                match kind {
                    "response.output_text.delta" => {
                        if let Some(delta) = event["delta"].as_str() && !delta.is_empty() {
                            yield Ok(UpstreamEvent::Delta(delta.to_string()));
                        }
                    }
                    "response.completed" | "response.incomplete" => {
                        match answer(&event["response"]) {
                            Ok(done) => {
                                if !done.tool_calls.is_empty() {
                                    yield Ok(UpstreamEvent::ToolCalls(done.tool_calls));
                                }
                                yield Ok(UpstreamEvent::Done { stop_reason: done.stop_reason, usage: done.usage });
                            }
                            Err(e) => yield Err(e),
                        }
                        return;
                    }
                    "error" | "response.failed" => {
                        yield Err(UpstreamError::Protocol(message.data.clone()));
                        return;
                    }
                    _ => {}
                }
            }
            yield Err(UpstreamError::Transport("the stream ended before the answer did".into()));
        }))
    }
}
