//! llama-server's native API: `POST {url}/completion` (a local server on the device).
//!
//! Chat messages become one prompt in the plain `Role: text` layout the embedded engine uses for
//! models without a template; llama-server applies no template on this endpoint.

use futures::StreamExt;
use serde_json::{Value, json};

use super::{
    EventStream, Http, Provider, UpstreamAnswer, UpstreamError, UpstreamEvent, UpstreamRequest,
    Usage,
};
use crate::engine::StopReason;

#[derive(Debug, Clone)]
pub struct LlamaClient {
    pub(super) http: Http,
}

impl LlamaClient {
    fn body(&self, request: &UpstreamRequest, stream: bool) -> Value {
        let prompt = crate::engine::apply_plain(&request.messages);
        let mut body = json!({"prompt": prompt, "stream": stream, "cache_prompt": true});
        super::put_sampling(&mut body, request, "n_predict", true);
        match &request.json {
            Some(Value::Null) => body["json_schema"] = json!({"type": "object"}),
            Some(schema) => body["json_schema"] = schema.clone(),
            None => {}
        }
        body
    }
}

fn usage(value: &Value) -> Usage {
    Usage {
        input_tokens: value["tokens_evaluated"].as_u64().unwrap_or(0) as usize,
        output_tokens: value["tokens_predicted"].as_u64().unwrap_or(0) as usize,
    }
}

fn stop_reason(value: &Value) -> StopReason {
    match value["stop_type"].as_str() {
        Some("limit") => StopReason::Length,
        _ if value["truncated"].as_bool() == Some(true) => StopReason::Length,
        _ => StopReason::EndOfGeneration,
    }
}

impl Provider for LlamaClient {
    async fn infer(&self, request: &UpstreamRequest) -> Result<UpstreamAnswer, UpstreamError> {
        let response = self
            .http
            .post("/completion", &self.body(request, false))
            .await?;
        let body = self.http.json(response).await?;
        let text = body["content"]
            .as_str()
            .ok_or_else(|| UpstreamError::Protocol("no content in the answer".into()))?;
        Ok(UpstreamAnswer {
            text: text.to_string(),
            tool_calls: Vec::new(),
            stop_reason: stop_reason(&body),
            usage: usage(&body),
        })
    }

    async fn infer_stream(&self, request: &UpstreamRequest) -> Result<EventStream, UpstreamError> {
        let response = self
            .http
            .post("/completion", &self.body(request, true))
            .await?;
        let mut messages = Box::pin(self.http.events(response));
        Ok(Box::pin(async_stream::stream! {
            while let Some(message) = messages.next().await {
                let message = match message {
                    Ok(m) => m,
                    Err(e) => { yield Err(e); return; }
                };
                let chunk = match message.json() {
                    Ok(v) => v,
                    Err(e) => { yield Err(e); return; }
                };
                if chunk.get("error").is_some() {
                    yield Err(UpstreamError::Protocol(chunk["error"].to_string()));
                    return;
                }
                if let Some(text) = chunk["content"].as_str()
                    && !text.is_empty()
                {
                    yield Ok(UpstreamEvent::Delta(text.to_string()));
                }
                if chunk["stop"].as_bool() == Some(true) {
                    yield Ok(UpstreamEvent::Done {
                        stop_reason: stop_reason(&chunk),
                        usage: usage(&chunk),
                    });
                    return;
                }
            }
            yield Err(UpstreamError::Transport("the stream ended before the answer did".into()));
        }))
    }
}
