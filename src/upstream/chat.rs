//! OpenAI Chat Completions: `POST {url}/chat/completions`.

use futures::StreamExt;
use serde_json::{Value, json};

use super::{
    EventStream, Http, Provider, UpstreamAnswer, UpstreamError, UpstreamEvent, UpstreamRequest,
    Usage, stop_reason,
};
use crate::engine::StopReason;

#[derive(Debug, Clone)]
pub struct ChatClient {
    pub(super) http: Http,
}

impl ChatClient {
    fn body(&self, request: &UpstreamRequest, stream: bool) -> Value {
        let messages: Vec<Value> = request
            .messages
            .iter()
            .map(|m| json!({"role": m.role, "content": m.content}))
            .collect();
        let mut body = json!({"model": self.http.model, "messages": messages, "stream": stream});
        if stream {
            body["stream_options"] = json!({"include_usage": true});
        }
        if let Some(n) = request.max_tokens {
            body["max_tokens"] = json!(n);
        }
        if let Some(t) = request.temperature {
            body["temperature"] = json!(t);
        }
        if let Some(p) = request.top_p {
            body["top_p"] = json!(p);
        }
        if !request.stop.is_empty() {
            body["stop"] = json!(request.stop);
        }
        if let Some(seed) = request.seed {
            body["seed"] = json!(seed);
        }
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
        let text = choice["message"]["content"]
            .as_str()
            .ok_or_else(|| UpstreamError::Protocol("no choices[0].message.content".into()))?;
        Ok(UpstreamAnswer {
            text: text.to_string(),
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
            while let Some(message) = messages.next().await {
                let message = match message {
                    Ok(m) => m,
                    Err(e) => { yield Err(e); return; }
                };
                if message.data == "[DONE]" {
                    yield Ok(UpstreamEvent::Done { stop_reason: finish, usage: totals });
                    return;
                }
                let chunk: Value = match serde_json::from_str(&message.data) {
                    Ok(v) => v,
                    Err(e) => { yield Err(UpstreamError::Protocol(e.to_string())); return; }
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
                if let Some(reason) = choice["finish_reason"].as_str() {
                    finish = stop_reason(reason);
                    finished = true;
                }
            }
            if finished {
                yield Ok(UpstreamEvent::Done { stop_reason: finish, usage: totals });
            } else {
                yield Err(UpstreamError::Transport("the stream ended before the answer did".into()));
            }
        }))
    }
}
