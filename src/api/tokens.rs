//! llama-server's tokenizer endpoints: `POST /tokenize`, `POST /detokenize` and
//! `POST /apply-template`, in its shapes, on the local model's vocabulary and chat template.
//! Nothing here decodes; the work is bounded by the request body limit.

use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::json::ApiJson;
use super::openai::{MessageIn, messages_to_chat};
use crate::engine::Engine;
use crate::service::ServiceError;

async fn engine(state: &AppState) -> Result<Engine, ApiError> {
    Ok(state.service.require_engine().await?)
}

#[derive(Debug, Deserialize)]
pub struct TokenizeRequest {
    pub content: String,
    /// Add BOS (and whatever else the vocabulary adds around a text); default false.
    #[serde(default)]
    pub add_special: bool,
    /// Turn control-token text (`<start_of_turn>`) into its token; default true.
    #[serde(default = "yes")]
    pub parse_special: bool,
    /// Answer `{"id", "piece"}` objects instead of bare ids.
    #[serde(default)]
    pub with_pieces: bool,
}

fn yes() -> bool {
    true
}

/// `{"tokens": [ids]}`, or with `with_pieces` `{"tokens": [{"id", "piece"}]}` where a piece
/// is its text when it is valid UTF-8 and its byte values otherwise (a token may hold part of
/// a multi-byte character), as llama-server writes them.
pub async fn tokenize(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<TokenizeRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    let engine = engine(&state).await?;
    let ids = engine.tokenize_with(&request.content, request.add_special, request.parse_special);
    let tokens: Vec<Value> = if request.with_pieces {
        ids.iter()
            .map(|&id| {
                let bytes = engine.token_bytes(id);
                let piece = match String::from_utf8(bytes) {
                    Ok(text) => json!(text),
                    Err(error) => json!(error.into_bytes()),
                };
                json!({"id": id, "piece": piece})
            })
            .collect()
    } else {
        ids.iter().map(|&id| json!(id)).collect()
    };
    Ok(axum::Json(json!({ "tokens": tokens })))
}

#[derive(Debug, Deserialize)]
pub struct DetokenizeRequest {
    pub tokens: Vec<i64>,
}

/// `{"content": text}`; an id outside the vocabulary is a 400 naming it.
pub async fn detokenize(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<DetokenizeRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    let engine = engine(&state).await?;
    let n_vocab = engine.info().n_vocab;
    let mut bytes = Vec::new();
    for (i, &token) in request.tokens.iter().enumerate() {
        let id = i32::try_from(token)
            .ok()
            .filter(|&id| id >= 0 && (id as usize) < n_vocab)
            .ok_or_else(|| {
                ApiError::invalid(
                    &format!("tokens[{i}]"),
                    format!("token id {token} is outside the vocabulary (0..{n_vocab})"),
                )
                .with_code("invalid_token")
            })?;
        bytes.extend(engine.token_bytes(id));
    }
    Ok(axum::Json(
        json!({"content": String::from_utf8_lossy(&bytes)}),
    ))
}

#[derive(Debug, Deserialize)]
pub struct ApplyTemplateRequest {
    pub messages: Vec<MessageIn>,
}

/// `{"prompt": text}`: the messages formatted with the model's chat template, ready for
/// `/completion`, without generating.
pub async fn apply_template(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<ApplyTemplateRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    let engine = engine(&state).await?;
    let messages = messages_to_chat(request.messages, "messages")?;
    let prompt = engine
        .apply_chat_template(&messages)
        .map_err(|e| ApiError::from(ServiceError::Engine(e)))?;
    Ok(axum::Json(json!({ "prompt": prompt })))
}
