//! A stand-in upstream: a real HTTP server on 127.0.0.1 speaking OpenAI Chat Completions and
//! Responses (whole and streamed), which can be told to fail, stall, trickle, reset or answer
//! slowly, to answer with a tool call (valid or not) or with text that is not JSON, and records
//! every request it receives.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

pub const ANSWER: &str = "Hello from upstream.";
/// The call [`Mode::ToolCall`] answers with.
pub const CALL_NAME: &str = "get_weather";
pub const CALL_ARGUMENTS: &str = r#"{"city":"Oslo","unit":"c"}"#;
pub const CALL_ID: &str = "call_stub1";
/// Arguments that do not match `get_weather`'s parameters (no `city`, a bad `unit`).
const BAD_ARGUMENTS: &str = r#"{"town":"Oslo","unit":"kelvin"}"#;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Ok,
    /// 500 with an error body.
    Fail,
    /// Never answers.
    Stall,
    /// Sends the first bytes of the answer, then breaks the connection.
    Trickle,
    /// Breaks the connection before any response byte.
    Reset,
    /// Answers after a delay.
    Slow(Duration),
    /// Answers with one call of `get_weather` ([`CALL_ARGUMENTS`]).
    ToolCall,
    /// Answers with a call of `get_weather` whose arguments do not match its parameters.
    BadToolCall,
    /// Answers with text that is not JSON.
    NotJson,
    /// Answers with what [`Stub::set_answers`] maps the last user message to (`"unknown"` when
    /// it maps nothing): a stronger model that knows a fixture's answers.
    Lookup,
    /// Answers (chat only) with every text it received (message contents and tool-call
    /// arguments, joined by " | ", then every string of `tools` and `response_format`, if
    /// sent; as `{"echo": TEXT}` when a `response_format` was sent), streamed in 3-character
    /// pieces.
    Echo,
}

/// What [`Mode::Echo`] answers for `messages`.
pub fn echo_text(messages: &Value) -> String {
    let mut parts = Vec::new();
    for message in messages.as_array().into_iter().flatten() {
        if let Some(content) = message["content"].as_str() {
            parts.push(content.to_string());
        }
        for call in message["tool_calls"].as_array().into_iter().flatten() {
            if let Some(arguments) = call["function"]["arguments"].as_str() {
                parts.push(arguments.to_string());
            }
        }
    }
    parts.join(" | ")
}

/// Every string in `value` (object keys left out), in order.
pub fn json_strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(text) => out.push(text.clone()),
        Value::Array(items) => items.iter().for_each(|item| json_strings(item, out)),
        Value::Object(map) => map.values().for_each(|item| json_strings(item, out)),
        _ => {}
    }
}

/// What an answering mode says.
#[derive(Clone, Copy)]
enum Reply {
    Text(&'static str),
    Call(&'static str),
}

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub body: Value,
}

struct Shared {
    mode: Mutex<Mode>,
    received: Mutex<Vec<Received>>,
    /// Every header value and body byte received, in order.
    bytes: Mutex<Vec<u8>>,
    /// What [`Mode::Lookup`] answers, by the last user message.
    answers: Mutex<std::collections::HashMap<String, String>>,
}

pub struct Stub {
    /// The API base (`http://127.0.0.1:PORT/v1`).
    pub base: String,
    shared: Arc<Shared>,
}

impl Stub {
    pub fn start(mode: Mode) -> Stub {
        Stub::serve(mode, None)
    }

    /// The same server behind TLS with a fresh self-signed certificate for `localhost`; the
    /// certificate's PEM file is written to `ca_file` (the client must be told to trust it).
    pub fn start_tls(mode: Mode, ca_file: &std::path::Path) -> Stub {
        let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(ca_file, key.cert.pem()).unwrap();
        let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![key.cert.der().clone()],
            tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(
                key.signing_key.serialize_der().into(),
            ),
        )
        .unwrap();
        Stub::serve(
            mode,
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
        )
    }

    fn serve(mode: Mode, tls: Option<tokio_rustls::TlsAcceptor>) -> Stub {
        let shared = Arc::new(Shared {
            mode: Mutex::new(mode),
            received: Mutex::new(Vec::new()),
            bytes: Mutex::new(Vec::new()),
            answers: Mutex::new(Default::default()),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let base = match tls {
            Some(_) => format!("https://localhost:{port}/v1"),
            None => format!("http://127.0.0.1:{port}/v1"),
        };
        let state = shared.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new()
                    .route("/v1/chat/completions", post(chat))
                    .route("/v1/responses", post(responses))
                    .with_state(state);
                let Some(acceptor) = tls else {
                    axum::serve(listener, app).await.unwrap();
                    return;
                };
                loop {
                    let (tcp, _) = listener.accept().await.unwrap();
                    let (acceptor, app) = (acceptor.clone(), app.clone());
                    tokio::spawn(async move {
                        let Ok(stream) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let service = hyper_util::service::TowerToHyperService::new(app);
                        let _ = hyper_util::server::conn::auto::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                    });
                }
            });
        });
        Stub { base, shared }
    }

    pub fn set(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    /// What [`Mode::Lookup`] answers to each last user message.
    pub fn set_answers(&self, answers: std::collections::HashMap<String, String>) {
        *self.shared.answers.lock().unwrap() = answers;
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Every byte that reached the stub: header values and bodies.
    pub fn bytes(&self) -> Vec<u8> {
        self.shared.bytes.lock().unwrap().clone()
    }
}

async fn chat(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    record_bytes(&shared, &headers, &body);
    answer(shared, "/v1/chat/completions", body).await
}

async fn responses(
    State(shared): State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    record_bytes(&shared, &headers, &body);
    answer(shared, "/v1/responses", body).await
}

fn record_bytes(shared: &Shared, headers: &axum::http::HeaderMap, body: &[u8]) {
    let mut bytes = shared.bytes.lock().unwrap();
    for (name, value) in headers {
        bytes.extend_from_slice(name.as_str().as_bytes());
        bytes.extend_from_slice(b": ");
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(b'\n');
    }
    bytes.extend_from_slice(body);
    bytes.push(b'\n');
}

async fn answer(shared: Arc<Shared>, path: &str, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let stream = body["stream"] == true;
    let body_messages = body["messages"].clone();
    let body_schemas = json!([body["tools"], body["response_format"]]);
    shared.received.lock().unwrap().push(Received {
        path: path.to_string(),
        body,
    });
    let mode = *shared.mode.lock().unwrap();
    let chat = path.ends_with("chat/completions");
    match mode {
        Mode::Lookup => {
            let last = body_messages
                .as_array()
                .and_then(|m| m.last())
                .and_then(|m| m["content"].as_str())
                .unwrap_or("")
                .to_string();
            let text = shared
                .answers
                .lock()
                .unwrap()
                .get(&last)
                .cloned()
                .unwrap_or_else(|| "unknown".into());
            axum::Json(json!({"id": "chatcmpl-lookup", "object": "chat.completion", "model": "big",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}}))
            .into_response()
        }
        Mode::Echo => {
            let mut text = echo_text(&body_messages);
            let mut strings = Vec::new();
            json_strings(&body_schemas, &mut strings);
            if !strings.is_empty() {
                text = format!("{text} | {}", strings.join(" | "));
            }
            // Asked for JSON: the same text as a JSON object, `{"echo": TEXT}`.
            if !body_schemas[1].is_null() {
                text = json!({ "echo": text }).to_string();
            }
            if !stream {
                return axum::Json(json!({"id": "chatcmpl-echo", "object": "chat.completion", "model": "big",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}}))
                .into_response();
            }
            let chars: Vec<char> = text.chars().collect();
            let mut parts: Vec<String> = chars
                .chunks(3)
                .map(|piece| {
                    let piece: String = piece.iter().collect();
                    format!(
                        "data: {}\n\n",
                        json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]})
                    )
                })
                .collect();
            parts.push(format!(
                "data: {}\n\n",
                json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 7, "completion_tokens": 4}})
            ));
            parts.push("data: [DONE]\n\n".to_string());
            let chunks = futures::stream::iter(
                parts
                    .into_iter()
                    .map(|p| Ok::<_, Infallible>(Bytes::from(p))),
            );
            (
                [("content-type", "text/event-stream")],
                Body::from_stream(chunks),
            )
                .into_response()
        }
        Mode::Fail => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": {"message": "stub failure", "type": "server_error"}})),
        )
            .into_response(),
        Mode::Stall => {
            tokio::time::sleep(Duration::from_secs(600)).await;
            StatusCode::OK.into_response()
        }
        Mode::Reset => panic!("stub: dropping the connection"),
        Mode::Trickle => {
            let first = if stream {
                sse_parts(chat, Reply::Text(ANSWER)).remove(0)
            } else {
                "{\"id\": \"partial".to_string()
            };
            let chunks = async_stream::stream! {
                yield Ok::<_, std::io::Error>(Bytes::from(first));
                tokio::time::sleep(Duration::from_millis(100)).await;
                yield Err(std::io::Error::other("stub: connection reset"));
            };
            let content_type = if stream {
                "text/event-stream"
            } else {
                "application/json"
            };
            ([("content-type", content_type)], Body::from_stream(chunks)).into_response()
        }
        Mode::Ok | Mode::Slow(_) | Mode::ToolCall | Mode::BadToolCall | Mode::NotJson => {
            if let Mode::Slow(delay) = mode {
                tokio::time::sleep(delay).await;
            }
            let reply = match mode {
                Mode::ToolCall => Reply::Call(CALL_ARGUMENTS),
                Mode::BadToolCall => Reply::Call(BAD_ARGUMENTS),
                Mode::NotJson => Reply::Text("certainly not JSON"),
                _ => Reply::Text(ANSWER),
            };
            if stream {
                let parts = sse_parts(chat, reply);
                let chunks = futures::stream::iter(
                    parts
                        .into_iter()
                        .map(|p| Ok::<_, Infallible>(Bytes::from(p))),
                );
                (
                    [("content-type", "text/event-stream")],
                    Body::from_stream(chunks),
                )
                    .into_response()
            } else if chat {
                let (message, finish) = match reply {
                    Reply::Text(text) => (json!({"role": "assistant", "content": text}), "stop"),
                    Reply::Call(arguments) => (
                        json!({"role": "assistant", "content": null, "tool_calls": [{"id": CALL_ID, "type": "function",
                               "function": {"name": CALL_NAME, "arguments": arguments}}]}),
                        "tool_calls",
                    ),
                };
                axum::Json(
                    json!({"id": "chatcmpl-stub", "object": "chat.completion", "model": "big",
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": {"prompt_tokens": 7, "completion_tokens": 4, "total_tokens": 11}}),
                )
                .into_response()
            } else {
                axum::Json(response_object(reply)).into_response()
            }
        }
    }
}

fn response_object(reply: Reply) -> Value {
    let item = match reply {
        Reply::Text(text) => json!({"type": "message", "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}]}),
        Reply::Call(arguments) => {
            json!({"type": "function_call", "id": "fc_stub", "call_id": CALL_ID,
                    "name": CALL_NAME, "arguments": arguments, "status": "completed"})
        }
    };
    json!({"id": "resp_stub", "object": "response", "status": "completed", "model": "big",
        "output": [item],
        "usage": {"input_tokens": 7, "output_tokens": 4, "total_tokens": 11}})
}

/// The SSE messages of a streamed answer, in order: text in two deltas, or a tool call whose
/// arguments come in two fragments.
fn sse_parts(chat: bool, reply: Reply) -> Vec<String> {
    let (text, arguments) = match reply {
        Reply::Text(text) => (text, None),
        Reply::Call(arguments) => ("", Some(arguments)),
    };
    let (first, second) = text.split_at(text.len().min(6));
    match (chat, arguments) {
        (true, Some(arguments)) => chat_call_parts(arguments),
        (false, Some(arguments)) => responses_call_parts(reply, arguments),
        (true, None) => chat_text_parts(first, second),
        (false, None) => responses_text_parts(reply, first, second),
    }
}

fn chat_call_parts(arguments: &str) -> Vec<String> {
    let (a, b) = arguments.split_at(9);
    let chunk = |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    vec![
        chunk(json!({"role": "assistant", "content": null}), Value::Null),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": CALL_ID, "type": "function", "function": {"name": CALL_NAME, "arguments": ""}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": a}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": b}}]}),
            Value::Null,
        ),
        chunk(json!({}), json!("tool_calls")),
        "data: [DONE]\n\n".to_string(),
    ]
}

fn responses_call_parts(reply: Reply, arguments: &str) -> Vec<String> {
    let (a, b) = arguments.split_at(9);
    let event = |kind: &str, body: Value| {
        let mut body = body;
        body["type"] = json!(kind);
        format!("event: {kind}\ndata: {body}\n\n")
    };
    vec![
        event(
            "response.output_item.added",
            json!({"output_index": 0,
            "item": {"type": "function_call", "id": "fc_stub", "call_id": CALL_ID, "name": CALL_NAME, "arguments": ""}}),
        ),
        event(
            "response.function_call_arguments.delta",
            json!({"item_id": "fc_stub", "output_index": 0, "delta": a}),
        ),
        event(
            "response.function_call_arguments.delta",
            json!({"item_id": "fc_stub", "output_index": 0, "delta": b}),
        ),
        event(
            "response.completed",
            json!({"response": response_object(reply)}),
        ),
    ]
}

fn chat_text_parts(first: &str, second: &str) -> Vec<String> {
    let delta = |text: &str| {
        format!(
            "data: {}\n\n",
            json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
        )
    };
    vec![
        delta(first),
        delta(second),
        format!(
            "data: {}\n\n",
            json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        ),
        format!(
            "data: {}\n\n",
            json!({"object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 4}})
        ),
        "data: [DONE]\n\n".to_string(),
    ]
}

fn responses_text_parts(reply: Reply, first: &str, second: &str) -> Vec<String> {
    let delta = |text: &str| {
        format!(
            "event: response.output_text.delta\ndata: {}\n\n",
            json!({"type": "response.output_text.delta", "delta": text})
        )
    };
    vec![
        delta(first),
        delta(second),
        format!(
            "event: response.completed\ndata: {}\n\n",
            json!({"type": "response.completed", "response": response_object(reply)})
        ),
    ]
}
