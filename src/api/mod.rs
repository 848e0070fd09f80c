//! HTTP: the OpenAI- and llama.cpp-compatible API. Only this module knows wire formats.
//!
//! [`app`] builds the router over one [`crate::gateway::Gateway`]. The layers, outermost first, and why each sits where it does:
//! 1. `request_log`: one log line and one metric per request, so it must see every response,
//!    including auth failures and rejected bodies.
//! 2. `auth`: before any body is read or work is done; `/health` stays open for probes.
//! 3. the body limit: bodies over `limits.max_body_bytes` are refused while being read (413).

mod anthropic;
mod chat;
mod cors;
mod embeddings;
pub mod error;
mod json;
mod llama;
mod ollama;
pub mod openai;
mod packs;
mod predict;
mod proxy;
mod rerank;
mod responses;
pub(crate) mod resume;
mod routed;
mod system;
mod tasks;
mod telemetry;
mod tokens;
mod tools;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get, post};

pub use crate::gateway::unix_now;
pub use cors::CorsPolicy;
pub use error::ApiError;
pub use tasks::task_json;
pub use telemetry::RequestRecord;

/// Shared state of the handlers: the one gateway (`crate::gateway`).
pub type AppState = Arc<crate::gateway::Gateway>;

/// The HTTP app of `gateway`.
pub fn app(gateway: AppState) -> Router {
    routes(gateway)
}

fn routes(state: AppState) -> Router {
    let body_limit = state.config.limits.max_body_bytes;
    Router::new()
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/chat/completions", post(chat::chat_completions))
        .route(
            "/v1/chat/completions/input_tokens",
            post(chat::input_tokens),
        )
        .route("/chat/completions/input_tokens", post(chat::input_tokens))
        .route("/v1/completions", post(chat::completions))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/v1/responses", post(responses::create))
        .route("/responses", post(responses::create))
        .route("/v1/responses/input_tokens", post(responses::input_tokens))
        .route("/responses/input_tokens", post(responses::input_tokens))
        .route("/completion", post(llama::completion))
        .route("/v1/embeddings", post(embeddings::create))
        .route("/embeddings", post(embeddings::llama))
        .route("/embedding", post(embeddings::llama))
        .route("/rerank", post(rerank::rerank))
        .route("/predict", post(predict::predict))
        .route("/reranking", post(rerank::rerank))
        .route("/v1/rerank", post(rerank::rerank))
        .route("/v1/reranking", post(rerank::rerank))
        .route("/tokenize", post(tokens::tokenize))
        .route("/detokenize", post(tokens::detokenize))
        .route("/apply-template", post(tokens::apply_template))
        .route("/completions", post(llama::completion))
        .route("/v1/models", get(system::models))
        .route("/models", get(system::models))
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .route("/api/embed", post(ollama::embed))
        .route("/api/embeddings", post(ollama::embeddings))
        .route("/api/tags", get(ollama::tags))
        .route("/api/show", post(ollama::show))
        .route("/api/ps", get(ollama::ps))
        .route("/api/version", get(ollama::version))
        .route("/health", get(system::health))
        .route("/props", get(system::props))
        .route("/slots", get(system::slots))
        .route("/metrics", get(system::metrics))
        .route("/cors-proxy", any(proxy::cors_proxy))
        .route("/v1/plan", get(system::plan))
        .route("/v1/status", get(system::status))
        .route("/v1/tasks/{name}", post(tasks::run))
        .route("/v1/stream", get(resume::replay).delete(resume::stop))
        .route("/v1/streams/lookup", post(resume::lookup))
        .fallback(system::not_found)
        .method_not_allowed_fallback(system::method_not_allowed)
        // Innermost: a resumable stream is detached once the request is authenticated and
        // its answer has started.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            resume::layer,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            telemetry::auth,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            telemetry::request_log,
        ))
        // Outermost: a preflight is answered before authentication (browsers send it without
        // credentials).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cors::layer,
        ))
        .with_state(state)
}

pub fn request_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}
