//! Knowledge packs in chat requests: `edgellm: {"pack": NAME, "top_k": K}` (or the pack with
//! `default = true`) adds the pack's best passages for the last user message to that message,
//! as data between markers; the answer cites them (`edgellm.pack`, `x-edgellm-pack-chunks`).
//! The passages are ordinary prompt text from then on: off the device they pass the egress
//! guard like everything else, and the audit row lists the chunk ids (`Generation::sources`).

use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use crate::pack::{Mode, Retrieved, SearchOptions};
use crate::service::{Generation, Prompt};

/// Retrieves passages when the request names a pack (or a pack is configured for `route`, the
/// API path, or as the default) and puts them in front of the last user message.
pub async fn retrieve(
    state: &AppState,
    route: &str,
    (name, top_k): (Option<String>, Option<usize>),
    generation: &mut Generation,
) -> Result<Option<Retrieved>, ApiError> {
    let packs = state.config.packs.clone();
    let Some((spec, pack)) = packs.find(name.as_deref(), route) else {
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

/// The citation an answer's `edgellm` object carries (`pack`): the pack's name and each
/// passage's chunk id, file, heading, offsets and score. Whole and streamed answers alike (on a
/// stream, the last chunk or event that carries the `edgellm` object).
pub fn citation(retrieved: &Retrieved) -> Value {
    json!({
        "name": retrieved.pack,
        "chunks": retrieved.hits.iter().map(|h| json!({
            "id": h.chunk_id, "path": h.path, "heading": h.heading,
            "start": h.start, "end": h.end, "score": h.score,
        })).collect::<Vec<_>>(),
    })
}

/// `edgellm` (an answer's routing object) with the citation, when the request used a pack.
pub fn with_citation(mut edgellm: Value, citation: Option<&Value>) -> Value {
    if let (Some(citation), Some(edge)) = (citation, edgellm.as_object_mut()) {
        edge.insert("pack".into(), citation.clone());
    }
    edgellm
}

/// The chunk ids in the `x-edgellm-pack-chunks` header, on every answer that used a pack.
pub fn cite(mut response: Response, retrieved: Option<&Retrieved>) -> Response {
    let Some(retrieved) = retrieved else {
        return response;
    };
    let ids: Vec<String> = retrieved
        .hits
        .iter()
        .map(|h| h.chunk_id.to_string())
        .collect();
    if let Ok(value) = HeaderValue::from_str(&ids.join(",")) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-edgellm-pack-chunks"), value);
    }
    response
}

/// The pack options of a request's `edgellm` object, taken out of it.
pub fn take_pack(edge: &mut Option<super::routed::EdgeOptions>) -> (Option<String>, Option<usize>) {
    edge.as_mut()
        .map(|e| (e.pack.take(), e.top_k.take()))
        .unwrap_or_default()
}
