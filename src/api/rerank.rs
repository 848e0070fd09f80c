//! `POST /rerank` (also `/reranking`, `/v1/rerank`, `/v1/reranking`): llama-server's rerank
//! endpoint (Jina/Cohere's shape with `documents`, Hugging Face TEI's with `texts`), on the
//! embedding model.
//!
//! The embedding model is a bi-encoder: a document's score is the cosine similarity of its
//! vector and the query's (-1 to 1), not a cross-encoder's relevance logit. The order is what a
//! client reads; the scores of a cross-encoder (llama-server with a reranking model) are on
//! another scale.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::json::ApiJson;
use crate::embeddings::{EmbedInput, EmbedRequest, Normalize};

/// Most documents one request may rank.
const MAX_DOCUMENTS: usize = 1024;

#[derive(Debug, Deserialize)]
pub struct RerankRequest {
    pub query: Value,
    /// Jina/Cohere's field; the answer is `{"results": [...]}`.
    pub documents: Option<Value>,
    /// TEI's field; the answer is a bare list.
    pub texts: Option<Value>,
    pub top_n: Option<usize>,
    /// TEI's: include each text in its entry.
    #[serde(default)]
    pub return_text: bool,
    /// Accepted, not used: the device has one embedding model, and the answer names it.
    #[allow(dead_code)]
    pub model: Option<String>,
}

pub async fn rerank(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<RerankRequest>,
) -> Result<Response, ApiError> {
    let Value::String(query) = &request.query else {
        return Err(ApiError::invalid("query", "query must be a string"));
    };
    let (field, documents, tei) = match (&request.documents, &request.texts) {
        (Some(documents), None) => ("documents", documents, false),
        (None, Some(texts)) => ("texts", texts, true),
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "texts",
                "give documents or texts, not both",
            ));
        }
        (None, None) => {
            return Err(ApiError::invalid("documents", "documents is required"));
        }
    };
    let documents: Vec<String> = match documents {
        Value::Array(items) if !items.is_empty() && items.len() <= MAX_DOCUMENTS => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(text) => Ok(text.clone()),
                _ => Err(ApiError::invalid(
                    &format!("{field}[{i}]"),
                    format!("{field}[{i}] must be a string"),
                )),
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(ApiError::invalid(
                field,
                format!("{field} must be an array of 1 to {MAX_DOCUMENTS} strings"),
            ));
        }
    };
    let mut inputs = vec![EmbedInput::Text(query.clone())];
    inputs.extend(documents.iter().cloned().map(EmbedInput::Text));
    let done = state
        .embeddings
        .embed(EmbedRequest {
            inputs,
            dimensions: None,
            normalize: Normalize::Euclidean,
            truncate: false,
        })
        .await?;
    let Some((query_vector, document_vectors)) = done.vectors.split_first() else {
        return Err(ApiError::invalid("query", "nothing was embedded"));
    };
    let mut scored: Vec<(usize, f32)> = document_vectors
        .iter()
        .map(|vector| crate::embeddings::cosine(query_vector, vector))
        .enumerate()
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored.truncate(request.top_n.unwrap_or(scored.len()));
    if tei {
        let list: Vec<Value> = scored
            .iter()
            .map(|&(index, score)| {
                let mut entry = json!({"index": index, "score": score});
                if request.return_text {
                    entry["text"] = json!(documents[index]);
                }
                entry
            })
            .collect();
        return Ok(axum::Json(Value::Array(list)).into_response());
    }
    let results: Vec<Value> = scored
        .iter()
        .map(|&(index, score)| json!({"index": index, "relevance_score": score}))
        .collect();
    Ok(axum::Json(json!({
        "model": done.model,
        "object": "list",
        "usage": {"prompt_tokens": done.prompt_tokens, "total_tokens": done.prompt_tokens},
        "results": results,
    }))
    .into_response())
}
