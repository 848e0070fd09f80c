//! HTTP: the OpenAI- and llama.cpp-compatible API. Only this module knows wire formats.
//!
//! [`app`] builds the router. The layers, outermost first, and why each sits where it does:
//! 1. `request_log`: one log line and one metric per request, so it must see every response,
//!    including auth failures and rejected bodies.
//! 2. `auth`: before any body is read or work is done; `/health` stays open for probes.
//! 3. the body limit: bodies over `limits.max_body_bytes` are refused while being read (413).

mod chat;
pub mod error;
mod json;
mod llama;
pub mod openai;
mod responses;
mod routed;
mod system;
mod tasks;
mod telemetry;
mod tools;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::config::ServeConfig;
use crate::metrics::Metrics;
use crate::service::LocalService;
use crate::tasks::TaskRuntime;

pub use error::ApiError;
pub use tasks::task_json;
pub use telemetry::RequestRecord;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    pub service: LocalService,
    pub config: Arc<ServeConfig>,
    pub metrics: Arc<Metrics>,
    /// Unix time the server started (the `created` of the model list).
    pub started_unix: u64,
    /// The spend and audit store; open when anything can leave the device or act (remote tiers,
    /// actions), `None` otherwise.
    pub ledger: Option<Arc<crate::ledger::Ledger>>,
}

impl AppState {
    pub fn model_name(&self) -> &str {
        &self.config.model_alias
    }
}

/// The HTTP app and the parts `serve` shares with the MQTT bridge, built once per server.
pub struct Gateway {
    pub app: Router,
    /// The routing walk (tiers, breakers) the handlers use.
    pub router: Arc<crate::router::Router>,
    /// Tasks, the action registry (audited to the ledger) and the model of task runs.
    pub tasks: Arc<TaskRuntime>,
}

/// The app; when tasks cannot be set up (the audit writer or the webhook client cannot start)
/// the error is logged and `/v1/tasks/*` answers 503. `serve` uses [`gateway`], which fails.
pub fn app(state: AppState) -> Router {
    let router = routing_walk(&state);
    match task_runtime(&state, &router) {
        Ok(tasks) => routes(state, router, Some(Arc::new(tasks))),
        Err(error) => {
            tracing::error!(%error, "tasks and actions are unavailable");
            routes(state, router, None)
        }
    }
}

/// The app and its shared parts, or why tasks and actions cannot be set up.
pub fn gateway(state: AppState) -> Result<Gateway, crate::actions::ActionError> {
    let router = routing_walk(&state);
    let tasks = Arc::new(task_runtime(&state, &router)?);
    Ok(Gateway {
        app: routes(state, router.clone(), Some(tasks.clone())),
        router,
        tasks,
    })
}

/// The routing walk (tiers, breakers), built once per app from the validated config.
fn routing_walk(state: &AppState) -> Arc<crate::router::Router> {
    let egress =
        crate::egress::EgressGuard::for_ledger(&state.config.egress, state.ledger.as_ref());
    Arc::new(crate::router::Router::new(
        state.service.clone(),
        state.config.routing.clone(),
        state.metrics.clone(),
        egress,
    ))
}

fn task_runtime(
    state: &AppState,
    router: &Arc<crate::router::Router>,
) -> Result<TaskRuntime, crate::actions::ActionError> {
    TaskRuntime::new(
        &state.config,
        router.clone(),
        state.ledger.clone(),
        state.metrics.clone(),
    )
}

fn routes(state: AppState, router: Arc<crate::router::Router>, tasks: tasks::Tasks) -> Router {
    let body_limit = state.config.limits.max_body_bytes;
    Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/chat/completions", post(chat::chat_completions))
        .route("/v1/completions", post(chat::completions))
        .route("/v1/responses", post(responses::create))
        .route("/completion", post(llama::completion))
        .route("/completions", post(llama::completion))
        .route("/v1/models", get(system::models))
        .route("/models", get(system::models))
        .route("/health", get(system::health))
        .route("/metrics", get(system::metrics))
        .route("/v1/plan", get(system::plan))
        .route("/v1/status", get(system::status))
        .route("/v1/tasks/{name}", post(tasks::run))
        .fallback(system::not_found)
        .method_not_allowed_fallback(system::method_not_allowed)
        .layer(axum::Extension(router))
        .layer(axum::Extension(tasks))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            telemetry::auth,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            telemetry::request_log,
        ))
        .with_state(state)
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub fn request_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}
