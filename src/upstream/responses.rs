//! OpenAI's Responses API: `POST {url}/responses` with `input`; the answer's text is in
//! `output[].content[].text` (parts of type `output_text`).

use futures::StreamExt;
use serde_json::{Value, json};

use super::{
    EventStream, Http, Provider, UpstreamAnswer, UpstreamError, UpstreamEvent, UpstreamRequest,
    Usage, stop_reason,
};
use crate::engine::StopReason;

#[derive(Debug, Clone)]
pub struct ResponsesClient {
    pub(super) http: Http,
}

impl ResponsesClient {
    fn body(&self, request: &UpstreamRequest, stream: bool) -> Value {
        let input: Vec<Value> = request
            .messages
            .iter()
            .map(|m| json!({"role": m.role, "content": m.content}))
            .collect();
        let mut body =
            json!({"model": self.http.model, "input": input, "stream": stream, "store": false});
        if let Some(n) = request.max_tokens {
            body["max_output_tokens"] = json!(n);
        }
        if let Some(t) = request.temperature {
            body["temperature"] = json!(t);
        }
        if let Some(p) = request.top_p {
            body["top_p"] = json!(p);
        }
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
    let stop = match response["incomplete_details"]["reason"].as_str() {
        Some(reason) => stop_reason(reason),
        None => StopReason::EndOfGeneration,
    };
    Ok(UpstreamAnswer {
        text,
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
                let event: Value = match serde_json::from_str(&message.data) {
                    Ok(v) => v,
                    Err(e) => { yield Err(UpstreamError::Protocol(e.to_string())); return; }
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
                            Ok(done) => yield Ok(UpstreamEvent::Done { stop_reason: done.stop_reason, usage: done.usage }),
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
