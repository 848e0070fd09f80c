//! `POST /completion`: llama.cpp server's native shape, so code written for `llama-server` works
//! unchanged (`prompt`, `n_predict`, `stop`, `stream`, `n_probs`, `cache_prompt`, `grammar`,
//! `json_schema`, `logit_bias`, `response_fields`; `content`, `tokens`, `stop`,
//! `tokens_predicted`, `tokens_evaluated`, `generation_settings`, `timings`).
//!
//! `prompt` takes every form llama-server takes: text, token ids, text and ids mixed (one
//! prompt), `{"prompt_string": ...}`, or a list of those (several prompts: the answer is then a
//! list, one object per prompt, generated one after another).

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
use super::openai::{Sampling, StopField, token_string};
use super::routed::{meta_json, route_override, with_headers};
use super::{AppState, RequestRecord};
use crate::embeddings::{EmbedInput, Piece};
use crate::engine::{BiasTarget, LogitBias, SamplingParams, StopReason, Summary, TokenEvent};
use crate::service::{Generation, OutputFormat, Prompt, Step};

/// Most prompts one `/completion` request may carry.
const MAX_PROMPTS: usize = 16;

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub prompt: Value,
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
    /// Chunks with `prompt_progress` (and `timings`) while a streamed prompt is read.
    pub return_progress: Option<bool>,
    pub n_probs: Option<usize>,
    /// `n_probs` as probabilities after the sampler chain (`prob`, `top_probs`).
    pub post_sampling_probs: Option<bool>,
    /// Accepted for compatibility: edgellm always reuses a slot's matching prompt prefix.
    #[serde(rename = "cache_prompt")]
    pub _cache_prompt: Option<bool>,
    /// -1 means random, as in llama.cpp.
    pub seed: Option<i64>,
    pub ignore_eos: Option<bool>,
    pub grammar: Option<String>,
    pub json_schema: Option<Value>,
    pub logit_bias: Option<Value>,
    /// Answer only these fields (`a/b` reads `b` inside `a`), under their paths as keys.
    pub response_fields: Option<Vec<String>>,
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
        logit_bias: request.logit_bias,
    }
    .into_params(&state.config.sampling)?;
    if request.ignore_eos.unwrap_or(false) {
        // As llama-server: the end-of-generation tokens are forbidden, so generation goes on
        // to `n_predict` (and past one, should a constraint force it, it is not a stop).
        params.stop_at_eog = false;
        let info = state.service.model_info()?;
        params
            .logit_bias
            .extend(info.eog_tokens.iter().map(|&token| LogitBias {
                target: BiasTarget::Token(i64::from(token)),
                bias: f32::NEG_INFINITY,
            }));
    }
    params.post_sampling_probs = request.post_sampling_probs.unwrap_or(false) && n_probs > 0;
    let format = super::openai::llama_format(request.json_schema, request.grammar)?
        .unwrap_or(OutputFormat::Text);
    let settings = generation_settings(&params, n_predict.unwrap_or(-1), n_probs);
    let stream = request.stream.unwrap_or(false);
    let mut prompts = prompts(&state, &request.prompt).await?;
    if prompts.len() > 1 && stream {
        return Err(ApiError::invalid(
            "prompt",
            "several prompts cannot be streamed; send one per request",
        ));
    }
    let generation = |prompt| Generation {
        sources: Vec::new(),
        prompt,
        params: params.clone(),
        format: format.clone(),
        tools: None,
    };
    if !stream {
        // The headers say where the last prompt was answered.
        let mut bodies = Vec::new();
        let mut last_meta = None;
        for prompt in prompts {
            let generation = generation(prompt);
            let prompt_text = prompt_for_log(&generation.prompt);
            record.prompt_text(prompt_text.clone());
            let running = state.router.start(generation, route, mode(false)).await?;
            let model = answered_model(&state, &running);
            let meta = running.meta.clone();
            let collected = collect_recorded(running, &record).await?;
            let mut body = final_object(&model, &collected.summary, &collected.text);
            body["tokens"] = json!(collected.tokens.iter().map(|t| t.token).collect::<Vec<_>>());
            body["prompt"] = json!(prompt_text);
            body["generation_settings"] = settings.clone();
            if n_probs > 0 {
                body["completion_probabilities"] = json!(
                    collected
                        .tokens
                        .iter()
                        .map(probabilities)
                        .collect::<Vec<_>>()
                );
            }
            body["edgellm"] = meta_json(&meta);
            if let Some(fields) = request.response_fields.as_ref().filter(|f| !f.is_empty()) {
                body = only_fields(&body, fields);
            }
            bodies.push(body);
            last_meta = Some(meta);
        }
        // `prompts` refuses an empty list, so one prompt at least was answered.
        let meta = last_meta.ok_or_else(|| ApiError::invalid("prompt", "no prompt"))?;
        let body = match bodies.len() {
            1 => bodies.remove(0),
            _ => Value::Array(bodies),
        };
        return Ok(with_headers(axum::Json(body).into_response(), &meta));
    }
    let mut generation = generation(prompts.remove(0));
    generation.params.prompt_progress = request.return_progress.unwrap_or(false);
    record.prompt_text(prompt_for_log(&generation.prompt));
    let mut running = state.router.start(generation, route, mode(stream)).await?;
    let model = answered_model(&state, &running);
    let meta = running.meta.clone();
    let edgellm = meta_json(&meta);
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
                Ok(Step::Progress(progress)) => {
                    let body = json!({"index": 0, "content": "", "tokens": [], "stop": false, "id_slot": -1,
                        "tokens_predicted": 0, "tokens_evaluated": progress.total,
                        "prompt_progress": progress_json(&progress), "timings": progress_timings(&progress)});
                    yield Ok(SseEvent::default().data(body.to_string()));
                }
                // llama.cpp's API offers no tools.
                Ok(Step::ToolCalls(_)) => {}
                Ok(Step::Done(summary)) => {
                    record.tokens(summary.prompt_tokens, summary.generated_tokens);
                    record.answer_part(&summary.tail_text);
                    let mut body = final_object(&model, &summary, &summary.tail_text);
                    body["tokens"] = json!([]);
                    body["generation_settings"] = settings.clone();
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
        "timings": timings(summary),
    })
}

/// The request's prompts, in every form llama-server takes (see the module's comment). Mixed
/// text and token ids become token ids here: the first text piece gets the model's BOS, as
/// llama-server tokenizes them.
async fn prompts(state: &AppState, prompt: &Value) -> Result<Vec<Prompt>, ApiError> {
    if prompt.get("multimodal_data").is_some() {
        return Err(ApiError::invalid(
            "prompt",
            "multimodal_data: this model takes text only",
        ));
    }
    let inputs = super::embeddings::parse_input(prompt, "prompt")?;
    if inputs.len() > MAX_PROMPTS {
        return Err(ApiError::invalid(
            "prompt",
            format!("at most {MAX_PROMPTS} prompts per request"),
        ));
    }
    let id = |token: i64| {
        i32::try_from(token).map_err(|_| {
            ApiError::invalid(
                "prompt",
                format!("token id {token} is outside the vocabulary"),
            )
            .with_code("invalid_token")
        })
    };
    // Mixed prompts are tokenized here, with the model (woken if it sleeps).
    let engine = if inputs.iter().any(|i| matches!(i, EmbedInput::Mixed(_))) {
        Some(state.service.require_engine().await?)
    } else {
        None
    };
    inputs
        .into_iter()
        .map(|input| match (input, &engine) {
            (EmbedInput::Text(text), _) => Ok(Prompt::Text(text)),
            (EmbedInput::Tokens(tokens), _) => Ok(Prompt::Tokens(
                tokens.into_iter().map(id).collect::<Result<_, _>>()?,
            )),
            (EmbedInput::Mixed(_), None) => Err(crate::service::ServiceError::Loading.into()),
            (EmbedInput::Mixed(pieces), Some(engine)) => {
                let mut tokens = Vec::new();
                for (i, piece) in pieces.into_iter().enumerate() {
                    match piece {
                        Piece::Text(text) if i == 0 => tokens.extend(engine.tokenize(&text)),
                        Piece::Text(text) => {
                            tokens.extend(engine.tokenize_with(&text, false, true))
                        }
                        Piece::Token(token) => tokens.push(id(token)?),
                    }
                }
                Ok(Prompt::Tokens(tokens))
            }
        })
        .collect()
}

/// llama-server's `generation_settings`: the sampling a request ran with, in its names
/// (`seed` 4294967295 means a random one).
pub fn generation_settings(params: &SamplingParams, n_predict: i64, n_probs: usize) -> Value {
    json!({
        "seed": params.seed.unwrap_or(u32::MAX),
        "temperature": params.temperature,
        "top_k": params.top_k,
        "top_p": params.top_p,
        "min_p": params.min_p,
        "repeat_penalty": params.repeat_penalty,
        "repeat_last_n": params.repeat_last_n,
        "frequency_penalty": params.frequency_penalty,
        "presence_penalty": params.presence_penalty,
        "n_predict": n_predict,
        "n_probs": n_probs,
        "stop": params.stop,
        "ignore_eos": !params.stop_at_eog,
        // A forbidden token's bias (minus infinity) is null, as llama-server writes it.
        "logit_bias": params.logit_bias.iter().map(|b| {
            let bias = if b.bias.is_finite() { json!(b.bias) } else { Value::Null };
            match &b.target {
                BiasTarget::Token(token) => json!({"token": token, "bias": bias}),
                BiasTarget::Text(text) => json!({"token": text, "bias": bias}),
            }
        }).collect::<Vec<_>>(),
    })
}

/// `response_fields`: each path (`a/b` is `b` inside `a`) under its own name; a missing one is
/// left out, as in llama-server.
fn only_fields(body: &Value, fields: &[String]) -> Value {
    let mut out = serde_json::Map::new();
    for field in fields {
        let pointer = format!("/{field}");
        if let Some(value) = body.pointer(&pointer) {
            out.insert(field.clone(), value.clone());
        }
    }
    Value::Object(out)
}

/// llama-server's `timings` object for a finished request.
pub fn timings(summary: &Summary) -> Value {
    let prompt_n = summary.prompt_tokens - summary.cached_tokens;
    timings_of(
        summary.cached_tokens,
        prompt_n,
        summary.prefill_time.as_secs_f64() * 1000.0,
        summary.generated_tokens,
        summary.decode_time.as_secs_f64() * 1000.0,
    )
}

/// llama-server's `prompt_progress` object.
pub fn progress_json(progress: &crate::engine::PromptProgress) -> Value {
    json!({
        "total": progress.total,
        "cache": progress.cache,
        "processed": progress.processed,
        "time_ms": progress.elapsed.as_secs_f64() * 1000.0,
    })
}

/// The `timings` of a prompt still being read: nothing predicted yet.
pub fn progress_timings(progress: &crate::engine::PromptProgress) -> Value {
    timings_of(
        progress.cache,
        progress.processed - progress.cache,
        progress.elapsed.as_secs_f64() * 1000.0,
        0,
        0.0,
    )
}

/// llama-server's `timings` object from its parts (also while a stream is under way).
pub fn timings_of(
    cache_n: usize,
    prompt_n: usize,
    prompt_ms: f64,
    predicted_n: usize,
    predicted_ms: f64,
) -> Value {
    let per = |ms: f64, n: usize| if n == 0 { 0.0 } else { ms / n as f64 };
    let rate = |ms: f64, n: usize| {
        if ms <= 0.0 {
            0.0
        } else {
            n as f64 * 1000.0 / ms
        }
    };
    // The first token comes out of the prompt's decode: the rate counts the ones after it.
    let decoded = predicted_n.saturating_sub(1);
    json!({
        "cache_n": cache_n,
        "prompt_n": prompt_n,
        "prompt_ms": prompt_ms,
        "prompt_per_token_ms": per(prompt_ms, prompt_n),
        "prompt_per_second": rate(prompt_ms, prompt_n),
        "predicted_n": predicted_n,
        "predicted_ms": predicted_ms,
        "predicted_per_token_ms": per(predicted_ms, decoded),
        "predicted_per_second": rate(predicted_ms, decoded),
    })
}

fn probabilities(token: &TokenEvent) -> Value {
    if let Some(post) = &token.post {
        return json!({
            "id": token.token,
            "token": token_string(&token.piece),
            "prob": post.prob,
            "bytes": token.piece,
            "top_probs": post.top.iter().map(|t| json!({
                "id": t.token, "token": token_string(&t.bytes), "prob": t.prob, "bytes": t.bytes,
            })).collect::<Vec<_>>(),
        });
    }
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
