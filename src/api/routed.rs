//! What the caller sees of routing: the `x-edgellm-*` headers, the `edgellm` object in bodies and
//! in the last SSE chunk, and the per-request override (header `x-edgellm-route` or body field
//! `edgellm.route`: `auto`, `local`, `remote`, `no_fallback`).

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use crate::route::RouteOverride;
use crate::router::RouteMeta;

pub const ROUTE_HEADER: &str = "x-edgellm-route";

/// The `edgellm` body field a request may carry.
#[derive(Debug, Default, Deserialize)]
pub struct EdgeOptions {
    pub route: Option<String>,
    /// A knowledge pack to answer from (`[[packs]]` name).
    pub pack: Option<String>,
    /// Passages to add from it [default: the pack's `top_k`].
    pub top_k: Option<usize>,
}

/// The request's override: the body field wins over the header.
pub fn route_override(
    headers: &HeaderMap,
    body: Option<EdgeOptions>,
) -> Result<RouteOverride, ApiError> {
    let (text, param) = match body.and_then(|b| b.route) {
        Some(text) => (text, "edgellm.route"),
        None => match headers.get(ROUTE_HEADER) {
            Some(value) => (value.to_str().unwrap_or("?").to_string(), ROUTE_HEADER),
            None => return Ok(RouteOverride::Auto),
        },
    };
    RouteOverride::parse(&text).ok_or_else(|| {
        ApiError::invalid(
            param,
            format!("unknown route {text:?}: use auto, local, remote or no_fallback"),
        )
    })
}

/// The `edgellm` object.
pub fn meta_json(meta: &RouteMeta) -> Value {
    json!({
        "tier": meta.tier,
        "reason": meta.reason.as_str(),
        "local_ms": meta.local_ms,
        "attempts": meta.attempts.iter().map(|a| json!({
            "tier": a.tier, "reason": a.reason.as_str(), "detail": a.detail,
        })).collect::<Vec<_>>(),
    })
}

/// Adds `x-edgellm-tier`, `x-edgellm-reason` and `x-edgellm-local-ms`.
pub fn with_headers(mut response: Response, meta: &RouteMeta) -> Response {
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    set("x-edgellm-tier", &meta.tier);
    set("x-edgellm-reason", meta.reason.as_str());
    set("x-edgellm-local-ms", &meta.local_ms.to_string());
    response
}
