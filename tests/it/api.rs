//! The router driven in-process (no socket), for states a live server passes through too quickly
//! to observe: the model still loading.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

fn loading_app() -> axum::Router {
    // An engine slot that is never filled: the model is "still loading".
    crate::support::app_without_model()
}

async fn call(request: Request<Body>) -> (StatusCode, Option<String>, Value) {
    let response = loading_app().oneshot(request).await.unwrap();
    let status = response.status();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        retry,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn health_is_503_while_the_model_loads() {
    let (status, _, body) = call(Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"]["message"], "Loading model");
}

#[tokio::test]
async fn generation_is_503_with_retry_after_while_loading() {
    let request = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(
            r#"{"messages":[{"role":"user","content":"hi"}]}"#,
        ))
        .unwrap();
    let (status, retry, body) = call(request).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry.as_deref(), Some("5"));
    assert_eq!(body["error"]["type"], "unavailable_error");
}

#[tokio::test]
async fn models_and_metrics_answer_while_loading() {
    let (status, _, body) = call(Request::get("/v1/models").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"][0]["id"], "gemma-3-270m-q4_k_m");
    let response = loading_app()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let text = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(text.contains("edgellm_model_loaded 0\n"), "{text}");
}
