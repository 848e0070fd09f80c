//! Knowledge packs in chat requests: `edgellm: {"pack": NAME, "top_k": K}` (or the pack with
//! `default = true`) adds the pack's best passages for the last user message to that message,
//! as data between markers; the answer cites them (`edgellm.pack`, `x-edgellm-pack-chunks`).
//! The passages are ordinary prompt text from then on: off the device they pass the egress
//! guard like everything else, and the audit row lists the chunk ids (`Generation::sources`).

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use crate::pack::{Mode, Retrieved, SearchOptions};
use crate::service::{Generation, Prompt};

/// Largest answer body read back to add the citation (a whole chat answer is far smaller).
const MAX_CITED_BODY: usize = 16 << 20;

/// Retrieves passages when the request names a pack (or a default pack is configured) and
/// puts them in front of the last user message.
pub async fn retrieve(
    state: &AppState,
    (name, top_k): (Option<String>, Option<usize>),
    generation: &mut Generation,
) -> Result<Option<Retrieved>, ApiError> {
    let packs = state.config.packs.clone();
    let Some((spec, pack)) = packs.find(name.as_deref()) else {
        return match name {
            None => Ok(None),
            Some(name) => Err(ApiError::invalid(
                "edgellm.pack",
                format!(
                    "unknown pack {name:?}; configured: {}",
                    if packs.is_empty() {
                        "none".to_string()
                    } else {
                        packs.names().join(", ")
                    }
                ),
            )),
        };
    };
    let top_k = match top_k.or(spec.top_k).unwrap_or(4) {
        k @ 1..=32 => k,
        k => {
            return Err(ApiError::invalid(
                "edgellm.top_k",
                format!("top_k must be between 1 and 32, got {k}"),
            ));
        }
    };
    let Prompt::Chat(messages) = &mut generation.prompt else {
        return Err(ApiError::invalid(
            "edgellm.pack",
            "a pack needs a chat request",
        ));
    };
    let Some(last_user) = messages.iter_mut().rev().find(|m| m.role == "user") else {
        return Err(ApiError::invalid(
            "messages",
            "a pack request needs a user message to search for",
        ));
    };
    let embedder = state.embeddings.require_embedder()?.clone();
    pack.check_embedder(embedder.info()).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            e.to_string(),
        )
    })?;
    let question = last_user.content.clone();
    let pack = pack.clone();
    let search_question = question.clone();
    let hits = tokio::task::spawn_blocking(move || {
        pack.search(
            &embedder,
            &search_question,
            &SearchOptions {
                top_k,
                mode: Mode::Hybrid,
            },
        )
    })
    .await
    .map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            e.to_string(),
        )
    })?
    .map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            e.to_string(),
        )
    })?;
    let retrieved = Retrieved {
        pack: spec.name.clone(),
        hits,
    };
    last_user.content = retrieved.prompt(&question);
    generation.sources = retrieved.sources();
    Ok(Some(retrieved))
}

/// The citation: the chunk ids in a header on every answer, and in the `edgellm` object of a
/// whole (not streamed) JSON answer.
pub async fn cite(response: Response, retrieved: Option<&Retrieved>) -> Response {
    let Some(retrieved) = retrieved else {
        return response;
    };
    let ids: Vec<String> = retrieved
        .hits
        .iter()
        .map(|h| h.chunk_id.to_string())
        .collect();
    let (mut parts, body) = response.into_parts();
    if let Ok(value) = HeaderValue::from_str(&ids.join(",")) {
        parts
            .headers
            .insert(HeaderName::from_static("x-edgellm-pack-chunks"), value);
    }
    let is_json = parts
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Response::from_parts(parts, body);
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_CITED_BODY).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let mut value: Value = match serde_json::from_slice(&bytes) {
        Ok(value) => value,
        Err(_) => return Response::from_parts(parts, Body::from(bytes)),
    };
    if let Some(edge) = value.get_mut("edgellm").and_then(Value::as_object_mut) {
        edge.insert(
            "pack".into(),
            json!({
                "name": retrieved.pack,
                "chunks": retrieved.hits.iter().map(|h| json!({
                    "id": h.chunk_id, "path": h.path, "heading": h.heading,
                    "start": h.start, "end": h.end, "score": h.score,
                })).collect::<Vec<_>>(),
            }),
        );
    }
    let body = serde_json::to_vec(&value).unwrap_or_else(|_| bytes.to_vec());
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}
