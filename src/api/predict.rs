//! `POST /predict`: Vertex AI's prediction protocol, as llama-server serves it. Each instance
//! names an endpoint (`"@requestFormat": "chatCompletions"`, the camelCase of its path, or the
//! path itself) and is that endpoint's request; the answer lists each endpoint's answer (or
//! its error) in order. Instances go through the whole app (authentication, limits, the
//! request log) as requests of their own, as many at once as there are slots; streaming is not
//! served here.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Request};
use futures::StreamExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::AppState;
use super::error::ApiError;
use super::json::ApiJson;

/// Most instances one request may carry (llama-server's limit).
const MAX_INSTANCES: usize = 128;

/// The endpoints an instance may name, in the order their aliases are taken.
const PATHS: [&str; 14] = [
    "/v1/chat/completions",
    "/v1/chat/completions/input_tokens",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/rerank",
    "/completion",
    "/embedding",
    "/tokenize",
    "/detokenize",
    "/apply-template",
    "/rerank",
];

/// llama-server's alias of a path: `/v1/chat/completions` -> `chatCompletions`.
fn alias(path: &str) -> String {
    let path = path.strip_prefix("/v1").unwrap_or(path);
    let mut out = String::new();
    let mut capital = false;
    for c in path.trim_start_matches('/').chars() {
        if matches!(c, '/' | '-' | '_') {
            capital = true;
        } else {
            out.extend(if capital {
                c.to_uppercase().collect::<Vec<_>>()
            } else {
                vec![c]
            });
            capital = false;
        }
    }
    out
}

/// The path an instance's `@requestFormat` names (the first path with that alias wins).
fn path_for(format: &str) -> Option<&'static str> {
    PATHS
        .iter()
        .find(|p| alias(p) == format)
        .or_else(|| PATHS.iter().find(|p| **p == format))
        .copied()
}

pub async fn predict(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Value>,
) -> Result<axum::Json<Value>, ApiError> {
    let Some(instances) = body.get("instances").and_then(Value::as_array) else {
        return Err(ApiError::invalid(
            "instances",
            "the body must have an array field named instances",
        ));
    };
    if instances.len() > MAX_INSTANCES {
        return Err(ApiError::invalid(
            "instances",
            format!("at most {MAX_INSTANCES} instances per request"),
        ));
    }
    let app = super::app(state.clone());
    let at_once = (state.service.slots() as usize).max(1);
    let predictions: Vec<Value> = futures::stream::iter(instances.iter().cloned())
        .map(|instance| one(app.clone(), &headers, instance))
        .buffered(at_once)
        .collect()
        .await;
    Ok(axum::Json(json!({ "predictions": predictions })))
}

/// One instance's answer, or its error in OpenAI's shape.
async fn one(app: axum::Router, headers: &HeaderMap, instance: Value) -> Value {
    let error = |message: String| ApiError::invalid("instances", message).body();
    let Value::Object(mut payload) = instance else {
        return error("each instance must be a JSON object".into());
    };
    let Some(Value::String(format)) = payload.remove("@requestFormat") else {
        return error("each instance must include a string @requestFormat".into());
    };
    let Some(path) = path_for(&format) else {
        return error(format!("no endpoint for @requestFormat {format:?}"));
    };
    payload.insert("stream".into(), Value::Bool(false));
    let mut request = Request::builder().method(Method::POST).uri(path);
    for (name, value) in headers {
        if name != axum::http::header::CONTENT_LENGTH {
            request = request.header(name, value);
        }
    }
    let Ok(request) = request
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .body(Body::from(Value::Object(payload).to_string()))
    else {
        return error("the instance could not be sent".into());
    };
    let Ok(response) = app.oneshot(request).await;
    match axum::body::to_bytes(response.into_body(), usize::MAX).await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) => error(format!("the answer could not be read: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_llama_servers() {
        assert_eq!(alias("/v1/chat/completions"), "chatCompletions");
        assert_eq!(alias("/apply-template"), "applyTemplate");
        assert_eq!(path_for("chatCompletions"), Some("/v1/chat/completions"));
        assert_eq!(path_for("completions"), Some("/v1/completions"));
        assert_eq!(path_for("completion"), Some("/completion"));
        assert_eq!(path_for("rerank"), Some("/v1/rerank"));
        assert_eq!(path_for("/tokenize"), Some("/tokenize"));
        assert_eq!(path_for("/v1/tasks/x"), None);
        assert_eq!(path_for("predict"), None);
    }
}
