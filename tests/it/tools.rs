//! Tool calling through the public surface: local tool turns on the real model (required, named,
//! auto, none; whole and streamed; with tool results in the history), bad definitions, and remote
//! tiers (the stand-in upstream) answering with valid and invalid calls in both wire formats.

use std::collections::HashSet;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::server::Server;
use crate::upstream_stub::{CALL_ARGUMENTS, CALL_ID, CALL_NAME, Mode, Stub};

fn weather_parameters() -> Value {
    json!({"type": "object",
           "properties": {"city": {"type": "string", "maxLength": 30}, "unit": {"type": "string", "enum": ["c", "f"]}},
           "required": ["city", "unit"], "additionalProperties": false})
}

fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                          "parameters": weather_parameters()}},
        {"type": "function", "function": {"name": "get_time", "description": "Current time",
                                          "parameters": {"type": "object", "properties": {}}}},
    ])
}

/// A chat request offering the two tools, with `extra` fields merged in.
fn ask(extra: Value) -> Value {
    let mut body = json!({"messages": [{"role": "user", "content": "What is the weather in Oslo?"}],
                          "tools": tools(), "temperature": 0, "max_tokens": 80});
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    body
}

/// A history with one call and its result.
fn history() -> Value {
    json!([
        {"role": "user", "content": "What is the weather in Oslo?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\",\"unit\":\"c\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "4 C and rain"},
    ])
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    fn tier(&self) -> &str {
        self.headers
            .get("x-edgellm-tier")
            .map_or("", |v| v.to_str().unwrap_or(""))
    }
}

async fn send(server: &Server, body: Value, route: &str) -> Answer {
    edgellm::upstream::install_crypto_provider();
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(180))
        .build()
        .unwrap()
        .post(server.url("/v1/chat/completions"))
        .header("x-edgellm-route", route)
        .json(&body)
        .send()
        .await
        .unwrap();
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        text: response.text().await.unwrap(),
    }
}

/// Checks an answer's calls as a careful client would, and returns them.
fn valid_calls(body: &Value) -> Vec<Value> {
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{body}");
    assert_eq!(choice["message"]["content"], Value::Null, "{body}");
    let calls = choice["message"]["tool_calls"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!calls.is_empty(), "{body}");
    let weather = jsonschema::validator_for(&weather_parameters()).unwrap();
    let mut ids = HashSet::new();
    for call in &calls {
        assert_eq!(call["type"], "function", "{call}");
        let id = call["id"].as_str().unwrap();
        assert!(
            id.starts_with("call_") && ids.insert(id.to_string()),
            "{body}"
        );
        let arguments: Value =
            serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
        match call["function"]["name"].as_str().unwrap() {
            "get_weather" => assert!(weather.is_valid(&arguments), "{arguments}"),
            "get_time" => assert_eq!(arguments, json!({})),
            other => panic!("unknown tool {other}"),
        }
    }
    calls
}

/// Reassembles a streamed chat answer as a client does: content pieces, tool-call fragments
/// gathered by index, the finish reason, and the `edgellm` object.
fn reassemble(sse: &str) -> (Value, Value) {
    let mut content = String::new();
    let mut calls: Vec<Value> = Vec::new();
    let mut finish = Value::Null;
    let mut edgellm = Value::Null;
    for data in sse.lines().filter_map(|l| l.strip_prefix("data: ")) {
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        assert!(chunk.get("error").is_none(), "{chunk}");
        if chunk["edgellm"].is_object() {
            edgellm = chunk["edgellm"].clone();
        }
        let choice = &chunk["choices"][0];
        content.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
        for fragment in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let index = fragment["index"].as_u64().unwrap() as usize;
            if calls.len() <= index {
                calls.resize(
                    index + 1,
                    json!({"type": "function", "function": {"name": "", "arguments": ""}}),
                );
            }
            if let Some(id) = fragment["id"].as_str() {
                calls[index]["id"] = json!(id);
            }
            for key in ["name", "arguments"] {
                if let Some(piece) = fragment["function"][key].as_str() {
                    let joined =
                        format!("{}{piece}", calls[index]["function"][key].as_str().unwrap());
                    calls[index]["function"][key] = json!(joined);
                }
            }
        }
        if !choice["finish_reason"].is_null() {
            finish = choice["finish_reason"].clone();
        }
    }
    let mut message = json!({"role": "assistant", "content": if calls.is_empty() { json!(content) } else { Value::Null }});
    if !calls.is_empty() {
        message["tool_calls"] = json!(calls);
    }
    (
        json!({"choices": [{"index": 0, "message": message, "finish_reason": finish}]}),
        edgellm,
    )
}

/// (name, arguments) of each call: what must agree between two answers (ids are fresh).
fn names_and_arguments(calls: &[Value]) -> Vec<(String, String)> {
    calls
        .iter()
        .map(|c| {
            (
                c["function"]["name"].as_str().unwrap().to_string(),
                c["function"]["arguments"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn local_tool_choice_required_named_auto_and_none() {
    let server = Server::start(&[]);
    // required, one call at most
    let answer = send(
        &server,
        ask(json!({"tool_choice": "required", "parallel_tool_calls": false})),
        "auto",
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(valid_calls(&answer.json()).len(), 1);
    // required, parallel: every call valid, ids unique
    let answer = send(&server, ask(json!({"tool_choice": "required"})), "auto").await;
    valid_calls(&answer.json());
    // a named function
    let answer = send(
        &server,
        ask(json!({"tool_choice": {"type": "function", "function": {"name": "get_time"}}})),
        "auto",
    )
    .await;
    let calls = valid_calls(&answer.json());
    assert!(
        calls.iter().all(|c| c["function"]["name"] == "get_time"),
        "{}",
        answer.text
    );
    // auto: calls that validate, or text
    let answer = send(&server, ask(json!({"tool_choice": "auto"})), "auto").await;
    let body = answer.json();
    if body["choices"][0]["finish_reason"] == "tool_calls" {
        valid_calls(&body);
    } else {
        assert!(
            body["choices"][0]["message"]["content"].is_string(),
            "{body}"
        );
    }
    // none: plain text, no calls
    let answer = send(
        &server,
        ask(json!({"tool_choice": "none", "max_tokens": 8})),
        "auto",
    )
    .await;
    let body = answer.json();
    assert!(
        body["choices"][0]["message"]["tool_calls"].is_null(),
        "{body}"
    );
    assert!(
        body["choices"][0]["message"]["content"].is_string(),
        "{body}"
    );
    assert_ne!(body["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn local_streamed_tool_calls_reassemble_to_the_whole_answer() {
    let server = Server::start(&["--slots", "1"]);
    let request = ask(json!({"tool_choice": "required"}));
    // Once first, so that both answers below start from the same cache state (the prompt's
    // KV entries reused, its last token decoded alone): decoding the whole prompt in one batch
    // gives logits that differ in the last bits, enough to flip a near-tie of this small model.
    send(&server, request.clone(), "auto").await;
    let whole = send(&server, request.clone(), "auto").await.json();
    let whole_calls = valid_calls(&whole);
    let mut streamed = request;
    streamed["stream"] = json!(true);
    let answer = send(&server, streamed, "auto").await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let (rebuilt, edgellm) = reassemble(&answer.text);
    let rebuilt_calls = valid_calls(&rebuilt);
    assert_eq!(
        names_and_arguments(&rebuilt_calls),
        names_and_arguments(&whole_calls)
    );
    assert_eq!(edgellm["tier"], "local");
}

#[tokio::test]
async fn local_multi_turn_with_tool_results_in_the_history() {
    let server = Server::start(&[]);
    for choice in [json!("auto"), json!("required")] {
        let answer = send(
            &server,
            ask(json!({"messages": history(), "tool_choice": choice})),
            "auto",
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        let body = answer.json();
        if body["choices"][0]["finish_reason"] == "tool_calls" {
            valid_calls(&body);
        } else {
            assert!(
                body["choices"][0]["message"]["content"].is_string(),
                "{body}"
            );
        }
    }
}

/// The router with a model that never loads: requests are checked before any tier is asked.
async fn in_process(path: &str, body: Value) -> (u16, Value) {
    let router = crate::support::app_without_model();
    let request = Request::post(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn bad_tool_definitions_are_400_naming_the_param() {
    let function = |name: &str, parameters: Value| json!({"type": "function", "function": {"name": name, "parameters": parameters}});
    let object = json!({"type": "object"});
    let cases = [
        (
            json!({"tools": [{"type": "code_interpreter"}]}),
            "tools[0].type",
        ),
        (
            json!({"tools": [function("a", object.clone()), function("a", object.clone())]}),
            "tools[1].function.name",
        ),
        (
            json!({"tools": [function("get weather!", object.clone())]}),
            "tools[0].function.name",
        ),
        (
            json!({"tools": [function("a", json!({"type": "array"}))]}),
            "tools[0].function.parameters",
        ),
        (
            json!({"tools": [function("a", json!({"type": "object", "required": 3}))]}),
            "tools[0].function.parameters",
        ),
        (
            json!({"tools": [function("a", object.clone())], "tool_choice": {"type": "function", "function": {"name": "b"}}}),
            "tool_choice",
        ),
        (
            json!({"tools": [function("a", object.clone())], "tool_choice": "always"}),
            "tool_choice",
        ),
        (json!({"tool_choice": "required"}), "tool_choice"),
        (
            json!({"messages": [{"role": "tool", "content": "4 C"}]}),
            "messages[0].tool_call_id",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x", "tool_calls": []}]}),
            "messages[0].tool_calls",
        ),
    ];
    for (fields, param) in cases {
        let mut body = json!({"messages": [{"role": "user", "content": "hi"}]});
        for (key, value) in fields.as_object().unwrap() {
            body[key] = value.clone();
        }
        let (status, answer) = in_process("/v1/chat/completions", body).await;
        assert_eq!(status, 400, "{fields}: {answer}");
        assert_eq!(answer["error"]["param"], param, "{fields}: {answer}");
        assert_eq!(answer["error"]["type"], "invalid_request_error");
    }
    let (status, answer) =
        in_process("/v1/responses", json!({"input": "hi", "tools": tools()})).await;
    assert_eq!(
        (status, answer["error"]["param"].clone()),
        (400, json!("tools")),
        "{answer}"
    );
}

/// Local, then a Chat Completions tier and a Responses tier, each on its own stub; breakers
/// that stay closed (these tests fail tiers on purpose).
fn remote_config(chat: &Stub, responses: Option<&Stub>) -> String {
    let mut text = String::from(
        "[model]\nslots = 1\nctx_size = 2048\n[routing]\nbreaker_failures = 1000\n[[tiers]]\nname = \"local\"\ntype = \"local\"\n",
    );
    let tier = |name: &str, kind: &str, url: &str| {
        format!(
            "[[tiers]]\nname = \"{name}\"\ntype = \"{kind}\"\nurl = \"{url}\"\nmodel = \"big\"\ntimeout_secs = 5\nconnect_timeout_ms = 500\n"
        )
    };
    text.push_str(&tier("chat", "openai_chat", &chat.base));
    if let Some(stub) = responses {
        text.push_str(&tier("resp", "openai_responses", &stub.base));
    }
    text.push_str(&crate::support::network_opt_in());
    text
}

/// The one call the stub makes, passed through as it was.
fn assert_stub_call(body: &Value) {
    let calls = valid_calls(body);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["id"], CALL_ID);
    assert_eq!(calls[0]["function"]["name"], CALL_NAME);
    assert_eq!(calls[0]["function"]["arguments"], CALL_ARGUMENTS);
}

#[tokio::test]
async fn remote_tool_calls_pass_through_chat_and_responses_whole_and_streamed() {
    let chat = Stub::start(Mode::ToolCall);
    let responses = Stub::start(Mode::ToolCall);
    let server = Server::start_with_config(Some(&remote_config(&chat, Some(&responses))), &[]);
    let request = ask(
        json!({"messages": history(), "tool_choice": "required", "parallel_tool_calls": false}),
    );
    for (stream, tier) in [
        (false, "chat"),
        (true, "chat"),
        (false, "resp"),
        (true, "resp"),
    ] {
        // The chat tier failing (500) sends the request on to the Responses tier.
        chat.set(if tier == "chat" {
            Mode::ToolCall
        } else {
            Mode::Fail
        });
        let mut body = request.clone();
        body["stream"] = json!(stream);
        let answer = send(&server, body, "remote").await;
        assert_eq!(
            (answer.status, answer.tier()),
            (200, tier),
            "{}",
            answer.text
        );
        if stream {
            let (rebuilt, edgellm) = reassemble(&answer.text);
            assert_stub_call(&rebuilt);
            assert_eq!(edgellm["tier"], tier);
        } else {
            assert_stub_call(&answer.json());
        }
    }
    // What each tier was sent, in its own wire format.
    let sent = chat.received().last().unwrap().body.clone();
    assert_eq!(
        sent["tools"][0]["function"]["name"], "get_weather",
        "{sent}"
    );
    assert_eq!(sent["tool_choice"], "required");
    assert_eq!(sent["parallel_tool_calls"], false);
    assert_eq!(
        sent["messages"][1]["tool_calls"][0]["id"], "call_1",
        "{sent}"
    );
    assert_eq!(sent["messages"][2]["tool_call_id"], "call_1", "{sent}");
    let sent = responses.received().last().unwrap().body.clone();
    assert_eq!(
        sent["tools"][0],
        json!({"type": "function", "name": "get_weather",
        "description": "Current weather in a city", "parameters": weather_parameters()})
    );
    assert_eq!(sent["tool_choice"], "required");
    let kinds: Vec<&Value> = sent["input"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["type"])
        .collect();
    assert_eq!(
        kinds,
        [
            &Value::Null,
            &json!("function_call"),
            &json!("function_call_output")
        ],
        "{sent}"
    );
    assert_eq!(sent["input"][2]["call_id"], "call_1");
}

#[tokio::test]
async fn invalid_remote_tool_calls_escalate_and_are_never_passed_on() {
    let chat = Stub::start(Mode::BadToolCall);
    let responses = Stub::start(Mode::ToolCall);
    let server = Server::start_with_config(Some(&remote_config(&chat, Some(&responses))), &[]);
    let request = ask(json!({"tool_choice": "auto"}));
    for stream in [false, true] {
        let mut body = request.clone();
        body["stream"] = json!(stream);
        let answer = send(&server, body, "remote").await;
        assert_eq!(
            (answer.status, answer.tier()),
            (200, "resp"),
            "{}",
            answer.text
        );
        let (body, edgellm) = if stream {
            reassemble(&answer.text)
        } else {
            (answer.json(), answer.json()["edgellm"].clone())
        };
        assert_stub_call(&body);
        let attempt = &edgellm["attempts"][1];
        assert_eq!(
            (attempt["tier"].as_str(), attempt["reason"].as_str()),
            (Some("chat"), Some("upstream_error")),
            "{edgellm}"
        );
        assert!(
            attempt["detail"]
                .as_str()
                .unwrap()
                .contains("do not match its parameters"),
            "{edgellm}"
        );
    }
    // Both tiers invalid: an error, whole and streamed, and no call reaches the client.
    responses.set(Mode::BadToolCall);
    for stream in [false, true] {
        let mut body = request.clone();
        body["stream"] = json!(stream);
        let answer = send(&server, body, "remote").await;
        assert_eq!(answer.status, 503, "{}", answer.text);
        assert_eq!(answer.json()["error"]["code"], "all_tiers_failed");
        assert!(!answer.text.contains("kelvin"), "{}", answer.text);
    }
}

#[tokio::test]
async fn invalid_remote_output_from_the_only_tier_is_502_upstream_invalid_output() {
    let chat = Stub::start(Mode::NotJson);
    let server = Server::start_with_config(Some(&remote_config(&chat, None)), &[]);
    let schema =
        json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}});
    let plain = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8});
    let cases = [
        (Mode::NotJson, json!({"response_format": schema})),
        (
            Mode::NotJson,
            json!({"response_format": {"type": "json_object"}}),
        ),
        (Mode::Ok, json!({"response_format": schema})),
        (Mode::BadToolCall, json!({"tools": tools()})),
        (
            Mode::ToolCall,
            json!({"tools": tools(), "tool_choice": "none"}),
        ),
        (Mode::ToolCall, json!({})),
    ];
    for (mode, fields) in cases {
        chat.set(mode);
        for stream in [false, true] {
            let mut body = plain.clone();
            for (key, value) in fields.as_object().unwrap() {
                body[key] = value.clone();
            }
            body["stream"] = json!(stream);
            let answer = send(&server, body, "remote").await;
            assert_eq!(
                answer.status, 502,
                "{mode:?} {fields} stream {stream}: {}",
                answer.text
            );
            assert_eq!(
                answer.json()["error"]["code"],
                "upstream_invalid_output",
                "{}",
                answer.text
            );
        }
    }
    // Text, with no format or tools asked for, passes.
    chat.set(Mode::Ok);
    let answer = send(&server, plain, "remote").await;
    assert_eq!(answer.status, 200, "{}", answer.text);
}
