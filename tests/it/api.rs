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

/// `--ui-mcp-proxy`: `/cors-proxy` forwards to loopback services only, with only the headers
/// the client names (never its own key or cookies), follows no redirect, streams the answer
/// back without its cookies, and cannot be looped through itself; a client without the key
/// gets 401, and hostile targets get 400 or 403 in OpenAI's shape.
#[tokio::test]
async fn the_mcp_proxy_reaches_loopback_services_only() {
    use axum::http::HeaderMap;
    use axum::routing::{get, post};

    // The loopback service behind the proxy: echoes the headers it was sent.
    let target = axum::Router::new()
        .route(
            "/capture",
            get(|headers: HeaderMap| async move {
                let seen: serde_json::Map<String, Value> = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), Value::from(v.to_str().unwrap())))
                    .collect();
                (
                    [("set-cookie", "s=1"), ("x-target", "yes")],
                    axum::Json(Value::Object(seen)),
                )
            }),
        )
        .route("/empty", post(|| async { StatusCode::NO_CONTENT }))
        .route(
            "/moved",
            get(|| async { (StatusCode::FOUND, [("location", "http://example.com/")]) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, target).await.unwrap() });

    let mut raw = edgellm::config::RawConfig::default();
    raw.server.ui_mcp_proxy = Some(true);
    raw.server.api_keys = Some(vec!["sk-proxy".into()]);
    let app = crate::support::app_without_model_from(raw);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let client = crate::support::http_client();
    let proxy = |url: String| format!("http://127.0.0.1:{port}/cors-proxy?url={url}");
    let capture = format!("http://127.0.0.1:{target_port}/capture");
    let response = client
        .get(proxy(capture.clone()))
        .bearer_auth("sk-proxy")
        .header("x-api-key", "sk-proxy")
        .header("cookie", "session=secret")
        .header("proxy-authorization", "Basic secret")
        .header("x-llama-server-proxy-header-accept", "application/json")
        .header(
            "x-llama-server-proxy-header-authorization",
            "Bearer explicit",
        )
        .header("x-llama-server-proxy-header-host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-target"], "yes");
    assert!(response.headers().get("set-cookie").is_none());
    let seen: Value = response.json().await.unwrap();
    assert_eq!(seen["accept"], "application/json", "{seen}");
    assert_eq!(seen["authorization"], "Bearer explicit", "{seen}");
    assert_eq!(seen["host"], format!("127.0.0.1:{target_port}"), "{seen}");
    for absent in ["cookie", "x-api-key", "proxy-authorization"] {
        assert!(seen.get(absent).is_none(), "{absent} crossed: {seen}");
    }

    let response = client
        .post(proxy(format!("http://127.0.0.1:{target_port}/empty")))
        .bearer_auth("sk-proxy")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert!(response.bytes().await.unwrap().is_empty());

    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(proxy(format!("http://localhost:{target_port}/moved")))
        .bearer_auth("sk-proxy")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 302, "no redirect is followed");
    assert_eq!(response.headers()["location"], "http://example.com/");

    // Through itself, the key forwarded by name: the inner request is refused. Without the
    // key named, it never crosses (edgellm's own /v1/models answers the proxied request 401).
    let nested = format!(
        "http://127.0.0.1:{port}/cors-proxy%3Furl%3D{}",
        capture.replace(':', "%3A").replace('/', "%2F")
    );
    let response = client
        .get(proxy(nested))
        .bearer_auth("sk-proxy")
        .header(
            "x-llama-server-proxy-header-authorization",
            "Bearer sk-proxy",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "proxy_refused", "{body}");
    let response = client
        .get(proxy(format!("http://127.0.0.1:{port}/v1/models")))
        .bearer_auth("sk-proxy")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    for (url, status) in [
        ("http://example.com/".to_string(), 403),
        ("http://10.1.2.3/".to_string(), 403),
        ("file:///etc/passwd".to_string(), 400),
        ("http://u:p@127.0.0.1/".to_string(), 400),
        ("".to_string(), 400),
    ] {
        let response = client
            .get(proxy(url.clone()))
            .bearer_auth("sk-proxy")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{url}");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"]["message"].is_string(), "{url}: {body}");
    }
    let response = client
        .put(proxy(capture.clone()))
        .bearer_auth("sk-proxy")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let response = client.get(proxy(capture)).send().await.unwrap();
    assert_eq!(response.status(), 401);
}
