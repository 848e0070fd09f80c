//! `/health`, `/metrics`, `/v1/models` and the 404 fallback.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::error::ApiError;

/// 503 while the model loads (as llama-server answers), then 200.
pub async fn health(State(state): State<AppState>) -> Response {
    match state.service.engine() {
        Some(_) => axum::Json(json!({"status": "ok"})).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}})),
        )
            .into_response(),
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let engine = state.service.engine();
    let text = state
        .metrics
        .render(engine.map(|e| e.load()), state.config.engine.slots);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

pub async fn models(State(state): State<AppState>) -> Response {
    let mut model = json!({
        "id": state.model_name(),
        "object": "model",
        "created": state.started_unix,
        "owned_by": "edgellm",
    });
    if let Some(engine) = state.service.engine() {
        let info = engine.info();
        model["meta"] = json!({
            "architecture": info.architecture,
            "n_params": info.n_params,
            "n_vocab": info.n_vocab,
            "n_ctx_train": info.n_ctx_train,
            "n_ctx_slot": info.n_ctx_slot,
            "slots": info.slots,
            "size": info.buffers.model_bytes,
            "chat_template": info.template.as_str(),
            "path": info.path,
        });
    }
    axum::Json(json!({"object": "list", "data": [model]})).into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("endpoint")
}
