//! `/health`, `/metrics`, `/v1/models` and the 404 fallback.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::error::ApiError;

/// 503 while the model loads (as llama-server answers), then 200. A model that failed to load
/// (a container that does not open on this device, a sha256 that differs) keeps it at 503,
/// naming the model and why: the server stays up to say so.
pub async fn health(State(state): State<AppState>) -> Response {
    let failures: Vec<String> = [
        state
            .service
            .load_failure()
            .map(|r| format!("the local model is unavailable: {r}")),
        state
            .embeddings
            .load_failure()
            .map(|r| format!("the embedding model is unavailable: {r}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !failures.is_empty() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({
                "status": "error",
                "error": {"code": 503, "message": failures.join("; "),
                          "type": "unavailable_error"},
            })),
        )
            .into_response();
    }
    // Ready once every configured model is loaded (a model asleep for being idle is loaded
    // again by the next request that needs it).
    let embeddings_ready =
        state.embeddings.config().is_none() || state.embeddings.embedder().is_some();
    let model_ready = state.service.engine().is_some() || state.service.is_asleep();
    if model_ready && embeddings_ready {
        return axum::Json(json!({"status": "ok"})).into_response();
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}})),
    )
        .into_response()
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    if !state.config.metrics_endpoint {
        return ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_supported_error",
            "This server does not serve /metrics ([server] metrics = false or --no-metrics).",
        )
        .into_response();
    }
    let text = state.render_metrics(crate::metrics::Scraper::Http).await;
    (
        [
            (
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8".to_string(),
            ),
            // llama-server's header: when the counters started, so a scraper sees a restart.
            (
                header::HeaderName::from_static("process-start-time-unix"),
                state.started_unix.to_string(),
            ),
        ],
        text,
    )
        .into_response()
}

/// `GET /v1/status`: what `edgellm status` prints.
pub async fn status(State(state): State<AppState>) -> Response {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let service = &state.service;
    let in_flight = service.in_flight();
    let slots = service.slots() as usize;
    axum::Json(json!({
        "object": "edgellm.status",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": now.saturating_sub(state.started_unix),
        "model": {"id": state.model_name(), "loaded": service.engine().is_some(),
                  "asleep": service.is_asleep(), "error": service.load_failure()},
        "slots": {"total": slots, "busy": in_flight.min(slots)},
        "queued": in_flight.saturating_sub(slots),
        "tiers": state.router.tier_status(),
        "confidence": state.metrics.confidence_view(),
    }))
    .into_response()
}

pub async fn models(State(state): State<AppState>) -> Response {
    let mut model = json!({
        "id": state.model_name(),
        "object": "model",
        "created": state.started_unix,
        "owned_by": "edgellm",
        "aliases": state.config.model_aliases,
        "tags": state.config.model_tags,
    });
    if let Ok(info) = state.service.model_info() {
        model["meta"] = json!({
            "architecture": info.architecture,
            "n_params": info.n_params,
            "n_vocab": info.n_vocab,
            "n_ctx_train": info.n_ctx_train,
            "n_ctx_slot": info.n_ctx_slot,
            "slots": info.slots,
            "size": info.buffers.model_bytes,
            "kv_cache_bytes": info.buffers.kv_cache_bytes,
            "compute_bytes": info.buffers.compute_bytes,
            "resident_at_load": info.resident,
            "chat_template": info.template.as_str(),
            "path": info.path,
        });
    }
    axum::Json(json!({"object": "list", "data": [model]})).into_response()
}

/// The defaults a request gets for what it does not set, in llama-server's names.
fn default_params(state: &AppState) -> serde_json::Value {
    super::llama::generation_settings(&state.config.sampling, -1, 0)
}

/// `GET /props`: llama-server's server properties (model, slots, per-slot context, defaults,
/// chat template). Read-only: edgellm does not take `POST /props`.
pub async fn props(State(state): State<AppState>) -> Result<Response, ApiError> {
    // Read-only: it does not wake a sleeping model.
    let info = state.service.model_info()?;
    Ok(axum::Json(json!({
        "model_path": info.path,
        "model_alias": state.model_name(),
        "total_slots": info.slots,
        "default_generation_settings": {
            "id": 0,
            "n_ctx": info.n_ctx_slot,
            "is_processing": false,
            "params": default_params(&state),
        },
        "chat_template": info
            .template_name
            .clone()
            .or_else(|| info.template_text.clone())
            .unwrap_or_default(),
        "modalities": {"vision": false, "audio": false},
        "build_info": format!("edgellm {}", env!("CARGO_PKG_VERSION")),
        "is_sleeping": state.service.is_asleep(),
    }))
    .into_response())
}

/// `GET /slots`: one entry per slot (id, context, whether it is decoding), never a prompt.
/// Off unless `[server] slots_endpoint = true`, as llama-server's is off without `--slots`:
/// then a 501 in OpenAI's shape.
pub async fn slots(State(state): State<AppState>) -> Result<Response, ApiError> {
    if !state.config.slots_endpoint {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "not_supported_error",
            "This server does not serve /slots; start it with --slots-endpoint.",
        ));
    }
    // Read-only: it does not wake a sleeping model (whose slots are all idle).
    let info = state.service.model_info()?;
    let busy = state.service.engine_load().map_or(0, |load| {
        load.busy_slots.load(std::sync::atomic::Ordering::Relaxed)
    });
    // The worker counts busy slots, not which: the first `busy` are reported as processing.
    let slots: Vec<_> = (0..info.slots as usize)
        .map(|id| json!({"id": id, "n_ctx": info.n_ctx_slot, "is_processing": id < busy}))
        .collect();
    Ok(axum::Json(slots).into_response())
}

#[derive(Debug, serde::Deserialize)]
pub struct PlanQuery {
    /// A device preset or device file; default: this machine (probed once, then cached).
    device: Option<String>,
}

/// `GET /v1/plan`: `edgellm plan` for the served model, with the server's slot count.
pub async fn plan(
    State(state): State<AppState>,
    axum::extract::Query(query): axum::extract::Query<PlanQuery>,
) -> Result<Response, ApiError> {
    static THIS_MACHINE: std::sync::OnceLock<crate::plan::DeviceProfile> =
        std::sync::OnceLock::new();
    // The model served now (an activation may have replaced the one the server started with).
    let model = match state.service.engine() {
        Some(engine) => engine.info().load_path.clone(),
        None => state.config.engine.model_path.clone(),
    };
    let options = crate::plan::PlanOptions {
        n_seq: u64::from(state.config.engine.slots),
        ..Default::default()
    };
    let plan = tokio::task::spawn_blocking(move || {
        let device = match query.device.as_deref() {
            Some(spec) => crate::plan::resolve_device(Some(spec))?,
            None => THIS_MACHINE
                .get_or_init(crate::plan::probe::this_machine)
                .clone(),
        };
        crate::plan::plan_json_with(&model, &device, &crate::plan::Goals::default(), &options)
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            e.to_string(),
        )
    })?
    .map_err(|e| ApiError::invalid("device", e.to_string()))?;
    Ok(axum::Json(plan).into_response())
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("endpoint")
}

/// A known path with the wrong method: 405 in OpenAI's error shape.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        format!("{method} is not allowed on {}", uri.path()),
    )
    .with_code("method_not_allowed")
}
