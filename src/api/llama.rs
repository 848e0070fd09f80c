//! `POST /completion`: llama.cpp server's native shape, so code written for `llama-server` works
//! unchanged (`prompt`, `n_predict`, `stop`, `stream`, `n_probs`, `cache_prompt`, `grammar`,
//! `json_schema`; `content`, `stop`, `tokens_predicted`, `tokens_evaluated`, `timings`).

use std::convert::Infallible;

use axum::Extension;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::chat::{answered_model, collect_recorded, mode, prompt_for_log, sse};
use super::error::ApiError;
use super::json::ApiJson;
use super::openai::{PromptField, Sampling, StopField, token_string};
use super::routed::{meta_json, route_override, with_headers};
use super::{AppState, RequestRecord};
use crate::engine::{StopReason, Summary, TokenEvent};
use crate::service::{Generation, OutputFormat, Step};

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub prompt: PromptField,
    /// Tokens to predict; -1 (the default) means as many as the limits allow.
    pub n_predict: Option<i64>,
    /// OpenAI's name for `n_predict`, which llama-server also takes here (`n_predict` wins).
    pub max_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub top_k: Option<i32>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub stop: Option<Vec<String>>,
    pub stream: Option<bool>,
    pub n_probs: Option<usize>,
    /// Accepted for compatibility: edgellm always reuses a slot's matching prompt prefix.
    #[serde(rename = "cache_prompt")]
    pub _cache_prompt: Option<bool>,
    /// -1 means random, as in llama.cpp.
    pub seed: Option<i64>,
    pub ignore_eos: Option<bool>,
    pub grammar: Option<String>,
    pub json_schema: Option<Value>,
    /// edgellm's own options (the routing override).
    pub edgellm: Option<super::routed::EdgeOptions>,
}

pub async fn completion(
    State(state): State<AppState>,
    Extension(record): Extension<RequestRecord>,
    headers: HeaderMap,
    ApiJson(mut request): ApiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    let route = route_override(&headers, request.edgellm.take())?;
    let n_probs = request.n_probs.unwrap_or(0);
    if n_probs > 20 {
        return Err(ApiError::invalid(
            "n_probs",
            "n_probs must be between 0 and 20",
        ));
    }
    let (field, n_predict) = match (request.n_predict, request.max_tokens) {
        (None, Some(n)) => ("max_tokens", Some(n)),
        (n, _) => ("n_predict", n),
    };
    let max_tokens = match n_predict {
        None | Some(-1) => None,
        Some(n) if n >= 1 => Some(u32::try_from(n).unwrap_or(u32::MAX)),
        Some(_) => {
            return Err(ApiError::invalid(
                field,
                format!("{field} must be -1 or at least 1"),
            ));
        }
    };
    let mut params = Sampling {
        temperature: request.temperature,
        top_p: request.top_p,
        top_k: request.top_k,
        min_p: request.min_p,
        repeat_penalty: request.repeat_penalty,
        frequency_penalty: request.frequency_penalty,
        presence_penalty: request.presence_penalty,
        seed: request.seed.filter(|s| *s >= 0),
        max_tokens,
        stop: request.stop.map(StopField::Many),
        top_logprobs: n_probs,
    }
    .into_params()?;
    params.stop_at_eog = !request.ignore_eos.unwrap_or(false);
    let format = super::openai::llama_format(request.json_schema, request.grammar)?
        .unwrap_or(OutputFormat::Text);
    let generation = Generation {
        sources: Vec::new(),
        prompt: request.prompt.into_prompt()?,
        params,
        format,
        tools: None,
    };
    let prompt_text = prompt_for_log(&generation.prompt);
    record.prompt_text(prompt_text.clone());
    let stream = request.stream.unwrap_or(false);
    let mut running = state.router.start(generation, route, mode(stream)).await?;
    let model = answered_model(&state, &running);
    let meta = running.meta.clone();
    let edgellm = meta_json(&meta);
    if !stream {
        let collected = collect_recorded(running, &record).await?;
        let mut body = final_object(&model, &collected.summary, &collected.text);
        body["tokens"] = json!([]);
        body["prompt"] = json!(prompt_text);
        if n_probs > 0 {
            body["completion_probabilities"] = json!(
                collected
                    .tokens
                    .iter()
                    .map(probabilities)
                    .collect::<Vec<_>>()
            );
        }
        body["edgellm"] = edgellm;
        return Ok(with_headers(axum::Json(body).into_response(), &meta));
    }
    let first = running.next().await?;
    let events = async_stream::stream! {
        let mut step = Ok(first);
        let mut predicted = 0usize;
        loop {
            match step {
                Ok(Step::Token(token)) => {
                    record.answer_part(&token.text);
                    predicted += 1;
                    let mut body = json!({"index": 0, "content": token.text, "tokens": [token.token], "stop": false,
                        "id_slot": -1, "tokens_predicted": predicted, "tokens_evaluated": running.prompt_tokens});
                    if n_probs > 0 {
                        body["completion_probabilities"] = json!([probabilities(&token)]);
                    }
                    yield Ok::<_, Infallible>(SseEvent::default().data(body.to_string()));
                }
                // llama.cpp's API offers no tools.
                Ok(Step::ToolCalls(_)) => {}
                Ok(Step::Done(summary)) => {
                    record.tokens(summary.prompt_tokens, summary.generated_tokens);
                    record.answer_part(&summary.tail_text);
                    let mut body = final_object(&model, &summary, &summary.tail_text);
                    body["tokens"] = json!([]);
                    body["edgellm"] = edgellm.clone();
                    yield Ok(SseEvent::default().data(body.to_string()));
                    break;
                }
                Err(error) => {
                    yield Ok(SseEvent::default().data(ApiError::from(error).body().to_string()));
                    break;
                }
            }
            step = running.next().await;
        }
    };
    Ok(with_headers(sse(events), &meta))
}

fn final_object(model: &str, summary: &Summary, content: &str) -> Value {
    let (stop_type, stopping_word) = match &summary.stop_reason {
        StopReason::EndOfGeneration => ("eos", String::new()),
        StopReason::StopString(word) => ("word", word.clone()),
        StopReason::Length => ("limit", String::new()),
    };
    let prompt_n = summary.prompt_tokens - summary.cached_tokens;
    let prompt_ms = summary.prefill_time.as_secs_f64() * 1000.0;
    let predicted_ms = summary.decode_time.as_secs_f64() * 1000.0;
    let per = |ms: f64, n: usize| if n == 0 { 0.0 } else { ms / n as f64 };
    let rate = |ms: f64, n: usize| {
        if ms <= 0.0 {
            0.0
        } else {
            n as f64 * 1000.0 / ms
        }
    };
    let decoded = summary.generated_tokens.saturating_sub(1);
    json!({
        "index": 0,
        "content": content,
        "id_slot": -1,
        "stop": true,
        "model": model,
        "tokens_predicted": summary.generated_tokens,
        "tokens_evaluated": summary.prompt_tokens,
        "tokens_cached": summary.cached_tokens,
        "truncated": false,
        "has_new_line": content.contains('\n'),
        "stop_type": stop_type,
        "stopping_word": stopping_word,
        "timings": {
            "cache_n": summary.cached_tokens,
            "prompt_n": prompt_n,
            "prompt_ms": prompt_ms,
            "prompt_per_token_ms": per(prompt_ms, prompt_n),
            "prompt_per_second": rate(prompt_ms, prompt_n),
            "predicted_n": summary.generated_tokens,
            "predicted_ms": predicted_ms,
            "predicted_per_token_ms": per(predicted_ms, decoded),
            "predicted_per_second": rate(predicted_ms, decoded),
        },
    })
}

fn probabilities(token: &TokenEvent) -> Value {
    json!({
        "id": token.token,
        "token": token_string(&token.piece),
        "logprob": token.logprob,
        "bytes": token.piece,
        "top_logprobs": token.top.iter().map(|t| json!({
            "id": t.token, "token": token_string(&t.bytes), "logprob": t.logprob, "bytes": t.bytes,
        })).collect::<Vec<_>>(),
    })
}
