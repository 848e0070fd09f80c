//! Embeddings: OpenAI's `POST /v1/embeddings` and llama-server's `POST /embedding` (also
//! `/embeddings`), in their shapes, on the local embedding model.

use axum::extract::State;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::json::ApiJson;
use crate::embeddings::{EmbedInput, EmbedRequest, Normalize, Piece};

/// OpenAI's request. `model` and `user` are accepted and not used: the device has one
/// embedding model, and the answer names it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsRequest {
    pub input: Value,
    #[serde(default)]
    #[allow(dead_code)] // accepted, not used: the answer names the model that embedded
    pub model: Option<String>,
    #[serde(default)]
    pub encoding_format: Option<String>,
    #[serde(default)]
    pub dimensions: Option<u32>,
    #[serde(default)]
    #[allow(dead_code)] // accepted, not used
    pub user: Option<String>,
}

/// `input` in any of OpenAI's four forms (a string, an array of strings, an array of token
/// ids, an array of arrays of token ids) and llama-server's: a flat array mixing text and ids is
/// one prompt, and an entry may be `{"prompt_string": text}` or `{"content": [{"type": "text",
/// "text": ...}, ...]}` (text parts only: the embedding model takes no media).
pub fn parse_input(input: &Value, field: &str) -> Result<Vec<EmbedInput>, ApiError> {
    let bad = |m: &str| ApiError::invalid(field, format!("{field}: {m}"));
    match input {
        Value::String(text) => Ok(vec![EmbedInput::Text(text.clone())]),
        Value::Object(_) => Ok(vec![entry(input).map_err(|m| bad(&m))?]),
        Value::Array(items) if items.is_empty() => Err(bad("must not be an empty array")),
        Value::Array(items) if items.iter().all(Value::is_number) => Ok(vec![EmbedInput::Tokens(
            token_ids(items).ok_or_else(|| bad("token ids must be integers"))?,
        )]),
        Value::Array(items) if items.iter().any(Value::is_number) => {
            Ok(vec![mixed(items).map_err(|m| bad(&m))?])
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(text) => Ok(EmbedInput::Text(text.clone())),
                Value::Object(_) => entry(item).map_err(|m| bad(&format!("item {i}: {m}"))),
                Value::Array(ids) if !ids.is_empty() => {
                    mixed(ids).map_err(|m| bad(&format!("item {i}: {m}")))
                }
                _ => Err(bad(&format!(
                    "item {i} must be a string, a non-empty array of token ids, or an object"
                ))),
            })
            .collect(),
        _ => Err(bad(
            "must be a string, an array of strings, or an array of token ids",
        )),
    }
}

/// A flat array of token ids and text pieces: one prompt.
fn mixed(items: &[Value]) -> Result<EmbedInput, String> {
    if items.iter().all(Value::is_number) {
        return token_ids(items)
            .map(EmbedInput::Tokens)
            .ok_or_else(|| "token ids must be integers".to_string());
    }
    items
        .iter()
        .map(|item| match item {
            Value::String(text) => Ok(Piece::Text(text.clone())),
            Value::Number(n) => n
                .as_i64()
                .map(Piece::Token)
                .ok_or_else(|| "token ids must be integers".to_string()),
            _ => Err("a mixed prompt holds only text and token ids".to_string()),
        })
        .collect::<Result<_, _>>()
        .map(EmbedInput::Mixed)
}

/// llama-server's object entries.
fn entry(item: &Value) -> Result<EmbedInput, String> {
    if let Some(text) = item.get("prompt_string") {
        return text
            .as_str()
            .map(|t| EmbedInput::Text(t.to_string()))
            .ok_or_else(|| "prompt_string must be a string".to_string());
    }
    let Some(Value::Array(parts)) = item.get("content") else {
        return Err(
            "an object entry needs \"prompt_string\" or a \"content\" array of parts".to_string(),
        );
    };
    let mut text = String::new();
    for part in parts {
        match (part.get("type").and_then(Value::as_str), part.get("text")) {
            (Some("text"), Some(Value::String(piece))) => text.push_str(piece),
            (Some("text"), _) => return Err("a text part needs \"text\"".to_string()),
            (Some(kind), _) => {
                return Err(format!(
                    "content part type {kind:?}: the embedding model takes text only"
                ));
            }
            (None, _) => return Err("a content part needs a \"type\"".to_string()),
        }
    }
    Ok(EmbedInput::Text(text))
}

fn token_ids(items: &[Value]) -> Option<Vec<i64>> {
    items.iter().map(Value::as_i64).collect()
}

/// `POST /v1/embeddings`.
pub async fn create(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<EmbeddingsRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "encoding_format",
                format!("encoding_format must be \"float\" or \"base64\", got {other:?}"),
            ));
        }
    };
    let inputs = parse_input(&request.input, "input")?;
    let done = state
        .embeddings
        .embed(EmbedRequest {
            inputs,
            dimensions: request.dimensions,
            normalize: Normalize::Euclidean,
            truncate: false,
        })
        .await?;
    let data: Vec<Value> = done
        .vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(axum::Json(json!({
        "object": "list",
        "data": data,
        "model": done.model,
        "usage": {"prompt_tokens": done.prompt_tokens, "total_tokens": done.prompt_tokens},
    })))
}

/// llama-server's non-OpenAI request: `content` (or `input`), `embd_normalize`.
#[derive(Debug, Deserialize)]
pub struct LlamaEmbeddingRequest {
    #[serde(default)]
    pub content: Option<Value>,
    #[serde(default)]
    pub input: Option<Value>,
    #[serde(default = "euclidean")]
    pub embd_normalize: i32,
}

fn euclidean() -> i32 {
    2
}

/// `POST /embedding`: `[{"index": i, "embedding": [[...]]}]`, the pooled vector as the one row,
/// or with pooling `none` one row per token (llama-server's shapes).
pub async fn llama(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<LlamaEmbeddingRequest>,
) -> Result<axum::Json<Value>, ApiError> {
    let (field, input) = match (&request.content, &request.input) {
        (Some(content), _) => ("content", content),
        (None, Some(input)) => ("input", input),
        (None, None) => {
            return Err(ApiError::invalid(
                "content",
                "\"content\" (or \"input\") is required",
            ));
        }
    };
    let inputs = parse_input(input, field)?;
    let done = state
        .embeddings
        .embed_rows(EmbedRequest {
            inputs,
            dimensions: None,
            normalize: Normalize::from_llama(request.embd_normalize),
            truncate: false,
        })
        .await?;
    let out: Vec<Value> = done
        .rows
        .iter()
        .enumerate()
        .map(|(index, rows)| json!({"index": index, "embedding": rows}))
        .collect();
    Ok(axum::Json(Value::Array(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_input_forms() {
        assert_eq!(
            parse_input(&json!("a"), "input").unwrap(),
            vec![EmbedInput::Text("a".into())]
        );
        assert_eq!(parse_input(&json!(["a", "b"]), "input").unwrap().len(), 2);
        assert_eq!(
            parse_input(&json!([1, 2, 3]), "input").unwrap(),
            vec![EmbedInput::Tokens(vec![1, 2, 3])]
        );
        assert_eq!(
            parse_input(&json!([[1], [2, 3]]), "input").unwrap(),
            vec![EmbedInput::Tokens(vec![1]), EmbedInput::Tokens(vec![2, 3])]
        );
        // llama-server's forms: a mixed prompt, object entries.
        assert_eq!(
            parse_input(&json!([12, "ab", 34]), "input").unwrap(),
            vec![EmbedInput::Mixed(vec![
                Piece::Token(12),
                Piece::Text("ab".into()),
                Piece::Token(34)
            ])]
        );
        let parts =
            json!({"content": [{"type": "text", "text": "a "}, {"type": "text", "text": "b"}]});
        assert_eq!(
            parse_input(&parts, "input").unwrap(),
            vec![EmbedInput::Text("a b".into())]
        );
        assert_eq!(
            parse_input(&json!(["x", {"prompt_string": "y"}]), "input")
                .unwrap()
                .len(),
            2
        );
        for bad in [
            json!([]),
            json!(3),
            json!(null),
            json!([1.5]),
            json!([[]]),
            json!([{}]),
            json!([1, null]),
            json!({"content": "string"}),
            json!({"content": [{"type": "unknown"}]}),
            json!({"content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}),
        ] {
            let error = parse_input(&bad, "input").unwrap_err();
            assert_eq!(error.status, axum::http::StatusCode::BAD_REQUEST, "{bad}");
            assert_eq!(error.param.as_deref(), Some("input"));
        }
    }
}
