//! `edgellm serve` through real HTTP on loopback, against the real engine and default model.

use std::time::Duration;

use serde_json::{Value, json};

use crate::server::Server;

fn client() -> reqwest::Client {
    crate::support::http_client()
}

async fn post(server: &Server, path: &str, body: Value) -> (u16, Value) {
    server.post(path, body).await
}

/// The JSON body of a GET.
async fn get_json(server: &Server, path: &str) -> Value {
    crate::support::get_json(reqwest::Url::parse(&server.url(path)).unwrap()).await
}

fn assert_openai_error(body: &Value, param: Option<&str>) {
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(error["type"].is_string(), "{body}");
    if let Some(param) = param {
        assert_eq!(error["param"], param, "{body}");
    }
}

/// Runs `tests/py/SCRIPT` with `base` as its argument; fails with its output when it does.
fn python_client(script: &str, base: &str) {
    let path = format!("{}/tests/py/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = std::process::Command::new("python3")
        .args([&path, base])
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{script} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The OpenAI API through the official `openai` Python client (tests/py/openai_client.py).
#[test]
fn official_openai_python_client() {
    let server = Server::start(&[]);
    python_client("openai_client.py", &server.url("/v1"));
}

/// Ollama's native API through the official `ollama` Python client (tests/py/ollama_client.py).
#[test]
fn official_ollama_python_client() {
    let server = Server::start(&[]);
    python_client("ollama_client.py", &server.base);
}

/// Anthropic's Messages API through the official `anthropic` Python client
/// (tests/py/anthropic_client.py).
#[test]
fn official_anthropic_python_client() {
    let server = Server::start(&[]);
    python_client("anthropic_client.py", &server.base);
}

/// LiteLLM's SDK with edgellm as its backend (tests/py/litellm_client.py), its context-window
/// error included.
#[test]
fn litellm_sdk_client() {
    let server = Server::start(&[]);
    python_client("litellm_client.py", &server.url("/v1"));
}

/// LiteLLM's proxy with edgellm as its only backend (tests/py/litellm_proxy.py): the proxy's
/// context-window fallback fires on edgellm's overflow error, and refusals cause no cooldown.
#[test]
fn litellm_proxy_in_front() {
    let server = Server::start(&[]);
    python_client("litellm_proxy.py", &server.base);
}

/// LangChain's `ChatOpenAI` and `OpenAIEmbeddings` (tests/py/langchain_client.py).
#[test]
fn langchain_chat_openai_client() {
    let server = Server::start(&[]);
    python_client("langchain_client.py", &server.url("/v1"));
}

/// Anthropic's event stream read as bytes: named events in order, block indices that open and
/// close in pairs, the routing object on `message_delta`; errors in Anthropic's shape.
#[tokio::test]
async fn anthropic_event_stream_and_errors() {
    let server = Server::start(&[]);
    let response = client()
        .post(server.url("/v1/messages"))
        .json(&json!({"model": "any", "max_tokens": 5, "stream": true,
                      "messages": [{"role": "user", "content": "Hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-edgellm-tier"], "local");
    let text = response.text().await.unwrap();
    let mut names = Vec::new();
    let mut datas = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let name = block
            .lines()
            .find_map(|l| l.strip_prefix("event: "))
            .unwrap();
        let data: Value = serde_json::from_str(
            block
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(data["type"], name, "{block}");
        names.push(name.to_string());
        datas.push(data);
    }
    assert_eq!(names[..2], ["message_start", "ping"], "{text}");
    assert_eq!(
        names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    assert_eq!(names[2], "content_block_start");
    assert!(names.iter().filter(|n| *n == "content_block_delta").count() >= 1);
    assert!(
        datas[0]["message"]["usage"]["input_tokens"]
            .as_u64()
            .unwrap()
            > 3
    );
    let delta = &datas[datas.len() - 2];
    assert_eq!(delta["delta"]["stop_reason"], "max_tokens", "{text}");
    assert_eq!(delta["usage"]["output_tokens"], 5);
    assert_eq!(delta["edgellm"]["tier"], "local");

    for (body, status) in [
        (json!({"max_tokens": 5}), 422),
        (
            json!({"max_tokens": 5, "messages": [{"role": "tool", "content": "x"}]}),
            400,
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "maybe"}}),
            400,
        ),
    ] {
        let response = client()
            .post(server.url("/v1/messages"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let got = response.status().as_u16();
        let error: Value = response.json().await.unwrap();
        assert!(
            got == status || (status == 422 && got == 400),
            "{body}: {got} {error}"
        );
        assert_eq!(error["type"], "error", "{error}");
        assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
    }
    let response = client()
        .post(server.url("/v1/messages/count_tokens"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
}

/// Ollama's NDJSON stream, read as bytes: one JSON object a line, the `edgellm` routing object
/// and the counters on the last; errors in Ollama's `{"error": "..."}` shape.
#[tokio::test]
async fn ollama_ndjson_stream_and_errors() {
    let server = Server::start(&[]);
    let response = client()
        .post(server.url("/api/generate"))
        .json(
            &json!({"model": "any", "prompt": "Hello", "raw": true, "options": {"num_predict": 5}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    assert_eq!(response.headers()["x-edgellm-tier"], "local");
    let text = response.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let last = lines.last().unwrap();
    assert_eq!(last["done"], true, "{text}");
    assert_eq!(last["done_reason"], "length", "{text}");
    assert_eq!(last["eval_count"], 5);
    assert_eq!(last["edgellm"]["tier"], "local");
    assert!(lines[..lines.len() - 1].iter().all(|l| l["done"] == false));
    let (status, loaded) = post(&server, "/api/generate", json!({"model": "any"})).await;
    assert_eq!(status, 200);
    assert_eq!(loaded["done_reason"], "load");
    for (path, body) in [
        (
            "/api/chat",
            json!({"messages": [{"role": "wizard", "content": "x"}]}),
        ),
        ("/api/chat", json!({"messages": "x"})),
        (
            "/api/generate",
            json!({"prompt": "x", "options": {"num_predict": 0}}),
        ),
    ] {
        let (status, answer) = post(&server, path, body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["error"].is_string(), "{body}: {answer}");
    }
}

#[tokio::test]
async fn llama_server_style_completion() {
    let server = Server::start(&[]);
    // As llama-server's clients send it (the field guide's local_completion()).
    let body = json!({"prompt": "Given this log snippet, propose the top 3 root causes:\n- PLC timeout on Modbus read\n",
                      "n_predict": 16, "temperature": 0.2, "stop": ["\n\nUser:"], "cache_prompt": true});
    let (status, answer) = post(&server, "/completion", body.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["content"].is_string());
    assert_eq!(answer["stop"], true);
    assert!(answer["tokens_predicted"].as_u64().unwrap() >= 1);
    assert!(answer["tokens_evaluated"].as_u64().unwrap() > 5);
    for key in [
        "prompt_n",
        "prompt_ms",
        "prompt_per_second",
        "predicted_n",
        "predicted_ms",
        "predicted_per_second",
    ] {
        assert!(
            answer["timings"][key].is_number(),
            "timings.{key} missing: {answer}"
        );
    }
    // The same prompt again reuses the slot's cached prefix.
    let (_, again) = post(&server, "/completion", body).await;
    assert!(again["tokens_cached"].as_u64().unwrap() > 5, "{again}");

    // Streaming: one JSON object per token, the last with stop=true and timings; n_probs.
    let response = client()
        .post(server.url("/completion"))
        .json(&json!({"prompt": "Sensor status:", "n_predict": 5, "stream": true, "n_probs": 2}))
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.len() >= 2, "{text}");
    let (last, tokens) = events.split_last().unwrap();
    assert_eq!(last["stop"], true);
    assert!(last["timings"]["predicted_n"].as_u64().unwrap() >= 1);
    for token in tokens {
        assert_eq!(token["stop"], false);
        assert_eq!(
            token["completion_probabilities"][0]["top_logprobs"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }
}

#[tokio::test]
async fn bad_requests_get_openai_errors() {
    // Four slots of 512 tokens: a 600-word prompt does not fit one.
    let server = Server::start(&["--max-body-bytes", "4096", "-c", "2048"]);
    let chat = "/v1/chat/completions";
    let malformed = client()
        .post(server.url(chat))
        .header("content-type", "application/json")
        .body("{\"messages\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    assert_openai_error(&malformed.json().await.unwrap(), None);

    let cases = [
        (json!({"messages": "hello"}), "messages"),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}),
            "temperature",
        ),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 5}),
            "temperature",
        ),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "n": 9}),
            "n",
        ),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "n": 2, "stream": true}),
            "n",
        ),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": -1}),
            "max_tokens",
        ),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "top_p": 1.5}),
            "top_p",
        ),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "logprobs": true, "top_logprobs": 50}),
            "top_logprobs",
        ),
        (
            json!({"messages": [{"role": "wizard", "content": "hi"}]}),
            "messages[0].role",
        ),
        (json!({"messages": []}), "messages"),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "xml"}}),
            "response_format.type",
        ),
    ];
    for (body, param) in cases {
        let (status, answer) = post(&server, chat, body.clone()).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        assert_openai_error(&answer, Some(param));
    }
    // Unknown fields are ignored, as OpenAI's API does.
    let (status, _) = post(&server, chat, json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "made_up_field": {"x": 1}})).await;
    assert_eq!(status, 200);

    let big = "x".repeat(8192);
    let (status, answer) = post(
        &server,
        chat,
        json!({"messages": [{"role": "user", "content": big}]}),
    )
    .await;
    assert_eq!(status, 413, "{answer}");
    assert_openai_error(&answer, None);

    let (status, answer) = post(
        &server,
        "/v1/completions",
        // More than one slot's share of the context (a max_tokens over the limit alone is
        // answered within the limit: see config_file_and_flags_combine).
        json!({"prompt": "word ".repeat(600), "max_tokens": 8}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_openai_error(&answer, None);

    let unknown = client()
        .get(server.url("/v1/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn context_overflow_names_the_numbers() {
    let server = Server::start(&["-c", "512", "--slots", "1"]);
    let (status, answer) = post(
        &server,
        "/v1/completions",
        json!({"prompt": "reading ok. ".repeat(100), "max_tokens": 400}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "context_length_exceeded");
    // llama-server's type and numbers, and the phrases clients such as LiteLLM match to fall
    // back to a model with a larger context.
    assert_eq!(answer["error"]["type"], "exceed_context_size_error");
    assert_eq!(answer["error"]["n_ctx"], 512, "{answer}");
    assert!(answer["error"]["n_prompt_tokens"].as_u64().unwrap() > 100);
    let message = answer["error"]["message"].as_str().unwrap();
    for phrase in [
        "context size 512",
        "exceeds the available context size",
        "maximum context length is 512 tokens",
    ] {
        assert!(message.contains(phrase), "{phrase}: {answer}");
    }
}

#[tokio::test]
async fn auth_with_keys_and_without() {
    let open = Server::start(&[]);
    assert_eq!(
        client()
            .get(open.url("/v1/models"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    drop(open);

    let server = Server::start(&["--api-key", "secret-key-1"]);
    let models = server.url("/v1/models");
    let missing = client().get(&models).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    assert_eq!(
        missing.headers()["www-authenticate"],
        "Bearer realm=\"edgellm\""
    );
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert_eq!(body["error"]["type"], "authentication_error");
    let wrong = client()
        .get(&models)
        .bearer_auth("secret-key-2")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = client()
        .get(&models)
        .bearer_auth("secret-key-1")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    // RFC 7235: the scheme is case-insensitive; x-api-key is the other header clients send.
    for (name, value, want) in [
        ("authorization", "bearer secret-key-1", 200),
        ("authorization", "BEARER secret-key-1", 200),
        ("x-api-key", "secret-key-1", 200),
        ("authorization", "Basic secret-key-1", 401),
        ("authorization", "Bearersecret-key-1", 401),
        ("x-api-key", "secret-key-2", 401),
    ] {
        let status = client()
            .get(&models)
            .header(name, value)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, want, "{name}: {value}");
    }
    let chat = client()
        .post(server.url("/v1/chat/completions"))
        .json(&json!({"messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 401, "auth comes before body validation");
    assert_eq!(
        client()
            .get(server.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client()
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
async fn more_clients_than_slots_queue_then_get_503() {
    let server = Server::start(&["--slots", "1", "--queue-depth", "1"]);
    let long = json!({"prompt": "Write a long maintenance report:", "max_tokens": 300, "stream": true, "temperature": 0});
    // A holds the only slot (its first chunk has arrived).
    let mut a = client()
        .post(server.url("/v1/completions"))
        .json(&long)
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), 200);
    assert!(a.chunk().await.unwrap().is_some());
    // B waits in the queue.
    let b = tokio::spawn({
        let url = server.url("/v1/completions");
        async move {
            let response = client()
                .post(url)
                .json(&json!({"prompt": "Hi", "max_tokens": 2}))
                .send()
                .await
                .unwrap();
            response.status().as_u16()
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // C finds slot and queue full.
    let c = client()
        .post(server.url("/v1/completions"))
        .json(&json!({"prompt": "Hi", "max_tokens": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(c.status(), 503);
    assert_eq!(c.headers()["retry-after"], "1");
    let body: Value = c.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded");
    // Dropping A (a client disconnect) frees the slot: B gets it and finishes.
    drop(a);
    let b_status = tokio::time::timeout(Duration::from_secs(60), b)
        .await
        .expect("B finishes")
        .unwrap();
    assert_eq!(b_status, 200);
}

#[tokio::test]
async fn disconnect_mid_stream_frees_the_slot() {
    let server = Server::start(&["--slots", "1"]);
    let mut stream = client()
        .post(server.url("/v1/chat/completions"))
        .json(&json!({"messages": [{"role": "user", "content": "Tell a very long story."}], "max_tokens": 1000, "stream": true}))
        .send()
        .await
        .unwrap();
    assert!(stream.chunk().await.unwrap().is_some());
    drop(stream);
    // The slot is free again within a few tokens: a short request completes and metrics agree.
    let (status, _) = post(
        &server,
        "/v1/completions",
        json!({"prompt": "Hi", "max_tokens": 2}),
    )
    .await;
    assert_eq!(status, 200);
    let metrics = server.metrics().await;
    assert!(metrics.contains("edgellm_slots_busy 0\n"), "{metrics}");
}

#[tokio::test]
async fn metrics_in_prometheus_format() {
    let server = Server::start(&[]);
    let (status, _) = post(
        &server,
        "/v1/completions",
        json!({"prompt": "Hello", "max_tokens": 3}),
    )
    .await;
    assert_eq!(status, 200);
    let text = server.metrics().await;
    for line in [
        "edgellm_requests_total{endpoint=\"/v1/completions\",status=\"200\"} 1",
        "# TYPE edgellm_time_to_first_token_seconds histogram",
        "# TYPE edgellm_decode_tokens_per_second histogram",
        "# TYPE edgellm_slots gauge\nedgellm_slots 4\n",
        "edgellm_queue_depth 0",
        "edgellm_model_loaded 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(
        text.contains("edgellm_generated_tokens_total 3\n"),
        "{text}"
    );
}

/// llama-server's options for a shared context and a closed /metrics: with `--kv-unified`
/// each of 4 slots may use the whole 256-token context (an 80-token answer, which one slot's
/// quarter could not hold, is whole); when the requests together outgrow it, each says so with
/// a 500 naming the exhausted context and the slots take requests again. `--no-metrics` answers
/// /metrics 501; `/cors-proxy` (llama-server's URL proxy) is refused.
#[tokio::test]
async fn kv_unified_no_metrics_and_no_proxy() {
    let server = Server::start(&["-c", "256", "--slots", "4", "--kv-unified", "--no-metrics"]);
    let completion = |n: u32| {
        let server = &server;
        async move {
            post(
                server,
                "/completion",
                json!({"prompt": "A", "n_predict": n, "ignore_eos": true}),
            )
            .await
        }
    };
    let (status, body) = completion(80).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["timings"]["predicted_n"], 80, "{body}");
    // 4 x (2 + 70) tokens > 256: none fits beside the others.
    let answers = futures::future::join_all((0..4).map(|_| completion(70))).await;
    let mut exceeded = 0;
    for (status, body) in &answers {
        if *status == 200 {
            assert_eq!(body["timings"]["predicted_n"], 70, "{body}");
        } else {
            assert_eq!(*status, 500, "{body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains("context size has been exceeded"), "{body}");
            exceeded += 1;
        }
    }
    assert!(exceeded > 0, "{answers:?}");
    let (status, body) = completion(40).await;
    assert_eq!(status, 200, "the slots serve again: {body}");

    let response = crate::support::http_client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 501);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "not_supported_error", "{body}");
    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let response = crate::support::http_client()
            .request(method, server.url("/cors-proxy?url=http://127.0.0.1:1/"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403);
    }
}

/// `--sleep-idle-seconds`: after a second without a request that needs it the model is
/// unloaded (its file is no longer mapped), while /health, /props, /v1/models and /metrics
/// answer without waking it; the next generation or token count loads it again and answers,
/// and the engine's counters go on across the sleep.
#[tokio::test]
async fn an_idle_model_sleeps_and_wakes() {
    let server = Server::start(&["--sleep-idle-seconds", "1"]);
    let model = crate::support::default_model();
    let model = model.file_name().unwrap().to_str().unwrap().to_string();
    let mapped = || {
        std::fs::read_to_string(format!("/proc/{}/maps", server.pid()))
            .unwrap()
            .contains(&model)
    };
    let get = |path: &'static str| {
        let url = server.url(path);
        async move {
            let response = crate::support::http_client().get(url).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    let asleep = || async {
        let (status, body) = get("/props").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()["is_sleeping"] == true
    };
    let wait_asleep = || async {
        for _ in 0..300 {
            if asleep().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the model did not go to sleep");
    };
    wait_asleep().await;
    // The worker lets go of the model once its last handle is gone (the constraint
    // compiler's build, seconds after a load, holds one).
    for _ in 0..600 {
        if !mapped() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!mapped(), "the model file is still mapped while asleep");
    for path in ["/health", "/v1/models", "/metrics"] {
        let (status, body) = get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let metrics = server.metrics().await;
    assert_eq!(sample(&metrics, "edgellm_model_asleep"), 1.0, "{metrics}");
    assert_eq!(sample(&metrics, "edgellm_model_loaded"), 0.0, "{metrics}");
    assert!(asleep().await, "read-only endpoints do not wake the model");

    let (status, body) = post(
        &server,
        "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(!asleep().await);
    assert!(mapped());
    let decodes = sample(&server.metrics().await, "llamacpp:n_decode_total");
    assert!(decodes > 0.0);

    wait_asleep().await;
    assert_eq!(
        sample(&server.metrics().await, "llamacpp:n_decode_total"),
        decodes,
        "the counters stay while asleep"
    );
    let (status, body) = post(
        &server,
        "/v1/responses/input_tokens",
        json!({"input": "Hello world"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["input_tokens"].as_u64().unwrap() > 0, "{body}");
    assert!(!asleep().await, "counting tokens needs the model");
    let (status, body) = post(
        &server,
        "/completion",
        json!({"prompt": "Hello", "n_predict": 2}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(sample(&server.metrics().await, "llamacpp:n_decode_total") > decodes);
}

/// The JSON payloads of an SSE stream.
async fn sse_payloads(server: &Server, path: &str, body: Value) -> Vec<Value> {
    let response = crate::support::http_client()
        .post(server.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// llama-server's `return_progress`: a streamed prompt longer than the batch (`-b 32`) is
/// reported before its first token, once before any of it is read and after each batch, up
/// to the whole prompt; on `/completion` as chunks with `prompt_progress` and `timings`, on
/// `/v1/chat/completions` as chunks with an empty role delta and `prompt_progress`, on
/// `/v1/responses` as `response.in_progress` events (with `timings_per_token`, deltas and the
/// completed event carry `timings`). Without the option there is none.
#[tokio::test]
async fn return_progress_reports_a_long_prompt() {
    let server = Server::start(&["-b", "32", "--ubatch-size", "32"]);
    let prompt = "the quick brown fox jumps over the lazy dog ".repeat(8);
    let chunks = sse_payloads(
        &server,
        "/completion",
        json!({"prompt": prompt, "n_predict": 4, "stream": true, "return_progress": true}),
    )
    .await;
    let progress: Vec<&Value> = chunks
        .iter()
        .take_while(|c| c.get("prompt_progress").is_some())
        .collect();
    assert!(progress.len() > 2, "{chunks:?}");
    let total = progress[0]["prompt_progress"]["total"].as_u64().unwrap();
    assert_eq!(
        progress[0]["prompt_progress"]["processed"],
        progress[0]["prompt_progress"]["cache"]
    );
    assert_eq!(progress[0]["timings"]["prompt_n"], 0);
    let mut last = (0, 0.0);
    for chunk in &progress {
        let processed = chunk["prompt_progress"]["processed"].as_u64().unwrap();
        let ms = chunk["timings"]["prompt_ms"].as_f64().unwrap();
        assert!(processed >= last.0 && ms >= last.1, "{progress:?}");
        assert!(
            processed - last.0 <= 32,
            "one batch at a time: {progress:?}"
        );
        last = (processed, ms);
    }
    assert_eq!(last.0, total, "the last report is the whole prompt");
    assert!(last.1 > 0.0);
    assert!(
        chunks[progress.len()..]
            .iter()
            .all(|c| c.get("prompt_progress").is_none()),
        "progress comes before the first token: {chunks:?}"
    );
    assert_eq!(chunks.last().unwrap()["tokens_evaluated"], total);
    let plain = sse_payloads(
        &server,
        "/completion",
        json!({"prompt": prompt, "n_predict": 2, "stream": true}),
    )
    .await;
    assert!(plain.iter().all(|c| c.get("prompt_progress").is_none()));

    // On /v1/chat/completions: llama-server's chunks, an empty role delta with the progress.
    let chat = sse_payloads(
        &server,
        "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": prompt}], "max_tokens": 4,
               "stream": true, "return_progress": true}),
    )
    .await;
    let reports: Vec<&Value> = chat
        .iter()
        .filter(|c| c.get("prompt_progress").is_some())
        .collect();
    assert!(reports.len() > 2, "{chat:?}");
    for report in &reports {
        assert_eq!(report["object"], "chat.completion.chunk", "{report}");
        assert_eq!(
            report["choices"][0]["delta"]["role"], "assistant",
            "{report}"
        );
        assert!(
            report["choices"][0]["delta"]["content"].is_null(),
            "{report}"
        );
    }
    let last = &reports.last().unwrap()["prompt_progress"];
    assert_eq!(last["processed"], last["total"], "{reports:?}");
    let first_token = chat
        .iter()
        .position(|c| c["choices"][0]["delta"]["content"].is_string())
        .unwrap();
    assert!(
        chat[first_token..]
            .iter()
            .all(|c| c.get("prompt_progress").is_none()),
        "progress comes before the first token: {chat:?}"
    );
    let plain_chat = sse_payloads(
        &server,
        "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": prompt}], "max_tokens": 2, "stream": true}),
    )
    .await;
    assert!(
        plain_chat
            .iter()
            .all(|c| c.get("prompt_progress").is_none())
    );

    let events = sse_payloads(
        &server,
        "/v1/responses",
        json!({"input": prompt, "max_output_tokens": 4, "stream": true,
               "return_progress": true, "timings_per_token": true}),
    )
    .await;
    let reports: Vec<&Value> = events
        .iter()
        .filter(|e| e.get("prompt_progress").is_some())
        .collect();
    assert!(reports.len() > 1, "{events:?}");
    assert!(reports.iter().all(|e| e["type"] == "response.in_progress"));
    let completed = events
        .iter()
        .find(|e| e["type"] == "response.completed" || e["type"] == "response.incomplete")
        .unwrap();
    assert!(
        completed["timings"]["prompt_per_second"].as_f64().unwrap() > 0.0,
        "{completed}"
    );
    assert!(
        events
            .iter()
            .filter(|e| e["type"] == "response.output_text.delta")
            .all(|e| e["timings"]["predicted_per_second"].is_number()),
        "{events:?}"
    );
}

/// Resumable streams (llama-server's `/v1/stream`): a streamed answer asked for with
/// `X-Conversation-Id` goes on when its client disconnects, and `GET /v1/stream` gives the rest
/// from the byte offset the client had read, up to `[DONE]`; from 0 it is the whole stream.
/// `DELETE` stops an answer still running (its slot frees) and forgets it: then a `404`. A
/// stream asked for without the header is not kept; a malformed id is a `400`.
/// `POST /v1/streams/lookup` describes the sessions of the ids a client names.
#[tokio::test]
async fn a_stream_resumes_after_a_disconnect() {
    use futures::StreamExt;
    let server = Server::start(&[]);
    let client = crate::support::http_client();
    let id = "conv-1::org/model:Q8_0";
    let stream_url = |from: &str| {
        let mut url = reqwest::Url::parse(&server.url("/v1/stream")).unwrap();
        url.query_pairs_mut()
            .append_pair("conv_id", id)
            .append_pair("from", from);
        url
    };
    let body = json!({"stream": true, "max_tokens": 120, "temperature": 0,
                      "messages": [{"role": "user", "content": "Tell a long story about a lighthouse."}]});
    let response = client
        .post(server.url("/v1/chat/completions"))
        .header("X-Conversation-Id", id)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut chunks = response.bytes_stream();
    let first = chunks.next().await.unwrap().unwrap();
    drop(chunks);
    let rest = client
        .get(stream_url(&first.len().to_string()))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 200);
    let rest = rest.text().await.unwrap();
    let whole = format!("{}{rest}", String::from_utf8_lossy(&first));
    assert!(whole.trim_end().ends_with("data: [DONE]"), "{whole}");
    let payloads: Vec<Value> = whole
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let ends: Vec<_> = payloads
        .iter()
        .filter(|p| !p["choices"][0]["finish_reason"].is_null())
        .collect();
    assert_eq!(ends.len(), 1, "the answer ends once: {whole}");
    let replay = client.get(stream_url("0")).send().await.unwrap();
    assert_eq!(replay.text().await.unwrap(), whole);
    let bad = client.get(stream_url("x")).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    // The lookup finds it by its id or by the id before `::`, and only for ids named.
    let lookup = |ids: Value| {
        let client = &client;
        let url = server.url("/v1/streams/lookup");
        async move {
            let response = client
                .post(url)
                .json(&json!({"conversation_ids": ids}))
                .send()
                .await
                .unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    for ids in [
        json!([id]),
        json!(["conv-1"]),
        json!(["conv-1", id, "other"]),
    ] {
        let (status, found) = lookup(ids.clone()).await;
        assert_eq!(status, 200, "{found}");
        assert_eq!(found.as_array().unwrap().len(), 1, "{ids}: {found}");
        assert_eq!(found[0]["conversation_id"], id);
        assert_eq!(found[0]["is_done"], true);
        assert_eq!(
            found[0]["total_bytes"].as_u64().unwrap() as usize,
            whole.len()
        );
        assert!(
            found[0]["completed_at"].as_u64().unwrap() >= found[0]["started_at"].as_u64().unwrap()
        );
    }
    for ids in [json!([]), json!(["conv"]), json!([""])] {
        assert_eq!(lookup(ids).await, (reqwest::StatusCode::OK, json!([])));
    }
    let (status, error) = lookup(json!("conv-1")).await;
    assert_eq!(status, 400, "{error}");
    let many: Vec<String> = (0..300).map(|i| format!("c{i}")).collect();
    let (status, error) = lookup(json!(many)).await;
    assert_eq!(
        (status, error["error"]["param"].as_str()),
        (reqwest::StatusCode::BAD_REQUEST, Some("conversation_ids"))
    );

    // A long answer stopped while it runs.
    let long = json!({"stream": true, "max_tokens": 1000, "ignore_eos": true,
                      "messages": [{"role": "user", "content": "Count."}]});
    let response = client
        .post(server.url("/v1/chat/completions"))
        .header("X-Conversation-Id", id)
        .json(&long)
        .send()
        .await
        .unwrap();
    let mut chunks = response.bytes_stream();
    chunks.next().await.unwrap().unwrap();
    drop(chunks);
    let stopped = client.delete(stream_url("0")).send().await.unwrap();
    assert_eq!(stopped.status(), 204);
    let gone = client.get(stream_url("0")).send().await.unwrap();
    assert_eq!(gone.status(), 404);
    let mut idle = false;
    for _ in 0..100 {
        if sample(&server.metrics().await, "llamacpp:requests_processing") == 0.0 {
            idle = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(idle, "the stopped answer freed its slot");
    let again = client.delete(stream_url("0")).send().await.unwrap();
    assert_eq!(again.status(), 204, "idempotent");

    // A malformed id is refused before any work, not silently left unrecorded.
    for malformed in ["", "has space", &"x".repeat(257)] {
        let refused = client
            .post(server.url("/v1/chat/completions"))
            .header("X-Conversation-Id", malformed)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 400, "{malformed:?}");
        let error: Value = refused.json().await.unwrap();
        assert_eq!(error["error"]["param"], "X-Conversation-Id", "{error}");
    }

    // Without the header nothing is kept.
    let plain = sse_payloads(&server, "/v1/chat/completions", body).await;
    assert!(!plain.is_empty());
    assert_eq!(
        client.get(stream_url("0")).send().await.unwrap().status(),
        404
    );
}

/// The value of an unlabelled sample in Prometheus text.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
}

/// llama-server's `llamacpp:*` families and its `Process-Start-Time-Unix` header, with the
/// values its own test suite checks: processed and cached prompt tokens counted apart, and
/// the sums of what the answers' `timings` said.
#[tokio::test]
async fn llama_server_metric_families() {
    let server = Server::start(&["--slots", "1"]);
    let (mut processed, mut cached, mut predicted) = (0.0, 0.0, 0.0);
    // `max_tokens` is taken as `n_predict` on /completion, as llama-server takes it.
    for body in [
        json!({"prompt": "the quick brown fox jumps over the lazy dog", "n_predict": 4}),
        json!({"prompt": "the quick brown fox jumps over the lazy dog", "max_tokens": 3}),
    ] {
        let (status, answer) = post(&server, "/completion", body.clone()).await;
        assert_eq!(status, 200, "{answer}");
        let limit = body["n_predict"].as_f64().or(body["max_tokens"].as_f64());
        assert!(
            answer["timings"]["predicted_n"].as_f64() <= limit,
            "{answer}"
        );
        processed += answer["timings"]["prompt_n"].as_f64().unwrap();
        cached += answer["timings"]["cache_n"].as_f64().unwrap();
        predicted += answer["timings"]["predicted_n"].as_f64().unwrap();
    }
    assert!(
        cached > 0.0,
        "the second request reuses the first one's prompt"
    );
    let response = client().get(server.url("/metrics")).send().await.unwrap();
    let started: u64 = response.headers()["process-start-time-unix"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(started <= now && now - started < 600, "{started}");
    let text = response.text().await.unwrap();
    for (name, kind) in [
        ("prompt_tokens_total", "counter"),
        ("prompt_tokens_cached_total", "counter"),
        ("prompt_seconds_total", "counter"),
        ("tokens_predicted_total", "counter"),
        ("tokens_predicted_seconds_total", "counter"),
        ("n_decode_total", "counter"),
        ("n_tokens_max", "counter"),
        ("spec_decode_num_draft_tokens_total", "counter"),
        ("prompt_tokens_seconds", "gauge"),
        ("predicted_tokens_seconds", "gauge"),
        ("requests_processing", "gauge"),
        ("requests_deferred", "gauge"),
        ("n_busy_slots_per_decode", "gauge"),
    ] {
        assert!(
            text.contains(&format!("# TYPE llamacpp:{name} {kind}\n")),
            "{name}"
        );
        assert!(text.contains(&format!("# HELP llamacpp:{name} ")), "{name}");
    }
    assert_eq!(sample(&text, "llamacpp:prompt_tokens_total"), processed);
    assert_eq!(sample(&text, "llamacpp:prompt_tokens_cached_total"), cached);
    assert_eq!(sample(&text, "llamacpp:tokens_predicted_total"), predicted);
    assert!(sample(&text, "llamacpp:n_decode_total") >= predicted - 2.0);
    assert_eq!(sample(&text, "llamacpp:requests_processing"), 0.0);
    assert_eq!(sample(&text, "llamacpp:n_busy_slots_per_decode"), 1.0);
    assert!(sample(&text, "llamacpp:prompt_seconds_total") > 0.0);
    assert!(sample(&text, "llamacpp:n_tokens_max") > 9.0);
    // The throughput gauges are rates since the previous scrape, as llama-server's are.
    assert!(sample(&text, "llamacpp:predicted_tokens_seconds") > 0.0);
    let again = server.metrics().await;
    assert_eq!(sample(&again, "llamacpp:predicted_tokens_seconds"), 0.0);
    assert_eq!(sample(&again, "llamacpp:prompt_tokens_seconds"), 0.0);
    // The same two requests under OpenTelemetry's GenAI names.
    let gen_ai = |family: &str, extra: &str| -> f64 {
        let prefix = format!(
            "{family}{{gen_ai_operation_name=\"text_completion\",gen_ai_provider_name=\"llama.cpp\",gen_ai_request_model=\"gemma-3-270m-q4_k_m\",tier=\"local\"{extra}}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
    };
    let output = ",gen_ai_token_type=\"output\"";
    let input = ",gen_ai_token_type=\"input\"";
    assert_eq!(gen_ai("gen_ai_client_token_usage_count", output), 2.0);
    assert_eq!(gen_ai("gen_ai_client_token_usage_sum", output), predicted);
    assert!(gen_ai("gen_ai_client_token_usage_sum", input) >= processed);
    assert_eq!(
        gen_ai("gen_ai_client_operation_duration_seconds_count", ""),
        2.0
    );
    assert_eq!(
        gen_ai("gen_ai_server_time_to_first_token_seconds_count", ""),
        2.0
    );
    assert!(text.contains("# TYPE gen_ai_server_time_per_output_token_seconds histogram\n"));
}

#[test]
fn graceful_shutdown_finishes_in_flight_requests() {
    let server = Server::start(&["--shutdown-grace", "60"]);
    let url = server.url("/v1/completions");
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let in_flight = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async move {
            let mut response = client()
                .post(url)
                .json(&json!({"prompt": "Status report:", "max_tokens": 40, "stream": true, "temperature": 0}))
                .send()
                .await
                .unwrap();
            let mut text = String::from_utf8(response.chunk().await.unwrap().unwrap().to_vec()).unwrap();
            started_tx.send(()).unwrap();
            while let Some(chunk) = response.chunk().await.unwrap() {
                text.push_str(&String::from_utf8_lossy(&chunk));
            }
            text
        })
    });
    // SIGTERM while the answer is streaming.
    started_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("stream started");
    assert_eq!(unsafe { libc::kill(server.pid(), libc::SIGTERM) }, 0);
    let text = in_flight.join().unwrap();
    assert!(
        text.trim_end().ends_with("data: [DONE]"),
        "in-flight stream cut off: {text}"
    );
    let mut server = server;
    let status = server.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        std::net::TcpStream::connect(server.base.trim_start_matches("http://")).is_err(),
        "still accepting"
    );
}

#[test]
fn config_file_unknown_key_is_named_at_startup() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, b"[server]\nport = 8081\nthreds = 4\n").unwrap();
    let output = std::process::Command::new(crate::support::edgellm_bin())
        .args(["serve", "--config", file.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("threds"), "{stderr}");
}

#[test]
fn a_malformed_cors_origin_refuses_to_start() {
    let output = std::process::Command::new(crate::support::edgellm_bin())
        .args(["serve", "--port", "0", "--cors-origins", "ui.example"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cors_origins") && stderr.contains("ui.example"),
        "{stderr}"
    );
}

#[test]
fn an_api_key_file_without_keys_refuses_to_start() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, b"# provisioned later\n\n").unwrap();
    let path = file.path().to_str().unwrap();
    let output = std::process::Command::new(crate::support::edgellm_bin())
        .args(["serve", "--port", "0", "--api-key-file", path])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(path) && stderr.contains("holds no key"),
        "{stderr}"
    );
}

#[tokio::test]
async fn config_file_and_flags_combine() {
    let server = Server::start_with_config(
        Some("[model]\nalias = \"gw-model\"\nslots = 2\n[limits]\nmax_tokens = 5\n"),
        &["--slots", "3"],
    );
    let models: Value = get_json(&server, "/v1/models").await;
    assert_eq!(models["data"][0]["id"], "gw-model");
    assert_eq!(
        models["data"][0]["meta"]["slots"], 3,
        "the flag beats the file"
    );
    // More than the configured limit, with no other tier to take it: answered within the
    // limit, as llama-server clamps `n_predict` to its `-n`.
    let (status, answer) = post(
        &server,
        "/completion",
        json!({"prompt": "Count: one, two, three,", "n_predict": 60, "temperature": 0,
               "ignore_eos": true}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["tokens_predicted"], 5, "{answer}");
    assert_eq!(answer["stop_type"], "limit", "{answer}");
}

#[tokio::test]
async fn request_timeout_cancels_long_requests() {
    let server = Server::start(&["--request-timeout", "1", "--slots", "1"]);
    let body = json!({"prompt": "Write a long report:", "n_predict": 1000, "ignore_eos": true, "temperature": 0});
    let (status, answer) = post(&server, "/completion", body).await;
    assert_eq!(status, 504, "{answer}");
    assert_eq!(answer["error"]["code"], "timeout");
    // The timed-out request was cancelled: its slot is free again. (Not checked with a second
    // request: under a loaded test run, even a short one may exceed this server's 1 s timeout.)
    let mut busy = String::new();
    for _ in 0..100 {
        let metrics = server.metrics().await;
        busy = metrics
            .lines()
            .find(|l| l.starts_with("edgellm_slots_busy "))
            .unwrap_or("")
            .to_string();
        if busy == "edgellm_slots_busy 0" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("slot still busy after the timeout: {busy}");
}

#[tokio::test]
async fn api_keys_from_a_key_file() {
    let mut keys = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(
        &mut keys,
        b"# gateway keys
file-key-0001

file-key-0002
",
    )
    .unwrap();
    let server = Server::start(&["--api-key-file", keys.path().to_str().unwrap()]);
    let models = server.url("/v1/models");
    assert_eq!(client().get(&models).send().await.unwrap().status(), 401);
    for key in ["file-key-0001", "file-key-0002"] {
        assert_eq!(
            client()
                .get(&models)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    assert_eq!(
        client()
            .get(&models)
            .bearer_auth("# gateway keys")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
async fn one_log_line_per_request_without_prompt_text() {
    let log = tempfile::NamedTempFile::new().unwrap();
    let server = Server::start_with(None, &["--log-json"], Some(log.path()));
    let secret = "the door code is 4711-SECRET";
    let (status, _) = post(
        &server,
        "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": secret}], "max_tokens": 3}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = post(
        &server,
        "/v1/chat/completions",
        json!({"messages": "wrong"}),
    )
    .await;
    assert_eq!(status, 400);
    drop(server);
    let text = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        !text.contains("4711-SECRET"),
        "prompt text in the log:\n{text}"
    );
    let requests: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["fields"]["message"] == "request" && v["fields"]["route"] == "/v1/chat/completions"
        })
        .collect();
    assert_eq!(requests.len(), 2, "{text}");
    assert_eq!(requests[0]["fields"]["status"], 200);
    assert!(requests[0]["fields"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(requests[0]["fields"]["completion_tokens"].as_u64().unwrap() > 0);
    assert!(requests[0]["fields"]["latency_ms"].is_string());
    assert_eq!(requests[1]["fields"]["status"], 400);
}

#[tokio::test]
async fn logged_prompts_are_redacted() {
    let log = tempfile::NamedTempFile::new().unwrap();
    let server = Server::start_with(None, &["--log-json", "--log-prompts"], Some(log.path()));
    let content = "Mail ops@plant-7.example.com, key AKIAIOSFODNN7EXAMPLE, about valve 3";
    let (status, _) = post(
        &server,
        "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": content}], "max_tokens": 3}),
    )
    .await;
    assert_eq!(status, 200);
    drop(server);
    let text = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        text.contains("about valve 3"),
        "the prompt is logged:\n{text}"
    );
    assert!(
        text.contains("<EMAIL_1>") && text.contains("<API_KEY_1>"),
        "{text}"
    );
    assert!(
        !text.contains("ops@plant-7.example.com") && !text.contains("AKIAIOSFODNN7EXAMPLE"),
        "{text}"
    );
}

/// llama-server serves the Responses API without the `/v1` prefix too.
#[tokio::test]
async fn responses_without_the_v1_prefix() {
    let server = Server::start(&[]);
    for path in ["/responses", "/v1/responses"] {
        let (status, answer) = post(
            &server,
            path,
            json!({"input": "Hello", "max_output_tokens": 3}),
        )
        .await;
        assert_eq!(status, 200, "{path}: {answer}");
        assert_eq!(answer["object"], "response", "{path}: {answer}");
        assert_eq!(answer["status"], "incomplete", "{path}: {answer}");
    }
}

/// llama-server's tokenizer and server endpoints: `/tokenize` (ids, BOS on request, pieces as
/// text or bytes), `/detokenize` (round trip; an id outside the vocabulary is a 400),
/// `/apply-template`, `/props`, and `/slots` (501 unless enabled).
#[tokio::test]
async fn llama_server_tokenizer_and_props() {
    let server = Server::start(&["-c", "2048", "--slots", "2"]);
    let content = "What is the capital of France ?";
    let (status, tokens) = post(&server, "/tokenize", json!({"content": content})).await;
    assert_eq!(status, 200, "{tokens}");
    let ids = tokens["tokens"].as_array().unwrap().clone();
    assert!(ids.len() > 5, "{tokens}");
    let (status, text) = post(&server, "/detokenize", json!({"tokens": ids})).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(text["content"], content);
    let (_, with_bos) = post(
        &server,
        "/tokenize",
        json!({"content": content, "add_special": true}),
    )
    .await;
    assert_eq!(with_bos["tokens"][0], 2, "Gemma's BOS first: {with_bos}");
    assert_eq!(with_bos["tokens"].as_array().unwrap().len(), ids.len() + 1);
    // A control token's text is its one token unless parse_special is off.
    let (_, special) = post(&server, "/tokenize", json!({"content": "<start_of_turn>"})).await;
    assert_eq!(special["tokens"].as_array().unwrap().len(), 1, "{special}");
    let (_, literal) = post(
        &server,
        "/tokenize",
        json!({"content": "<start_of_turn>", "parse_special": false}),
    )
    .await;
    assert!(literal["tokens"].as_array().unwrap().len() > 1, "{literal}");
    let unicode = "unicode 媽 and emoji 🤗";
    let (status, pieces) = post(
        &server,
        "/tokenize",
        json!({"content": unicode, "with_pieces": true}),
    )
    .await;
    assert_eq!(status, 200, "{pieces}");
    let mut bytes = Vec::new();
    for token in pieces["tokens"].as_array().unwrap() {
        assert!(token["id"].as_i64().unwrap() > 0, "{token}");
        match &token["piece"] {
            Value::String(text) => bytes.extend(text.as_bytes()),
            Value::Array(raw) => bytes.extend(raw.iter().map(|b| b.as_u64().unwrap() as u8)),
            other => panic!("piece {other}"),
        }
    }
    assert_eq!(String::from_utf8(bytes).unwrap(), unicode);
    for bad in [json!([-1]), json!([262_144]), json!([1, 99_999_999_999i64])] {
        let (status, answer) = post(&server, "/detokenize", json!({"tokens": bad})).await;
        assert_eq!(status, 400, "{bad}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_token", "{answer}");
    }
    let (status, answer) = post(&server, "/tokenize", json!({"content": 5})).await;
    assert_eq!(status, 400, "{answer}");

    let (status, prompt) = post(
        &server,
        "/apply-template",
        json!({"messages": [{"role": "user", "content": "Hi there"}]}),
    )
    .await;
    assert_eq!(status, 200, "{prompt}");
    // The default model's GGUF carries no chat template: edgellm's plain format, the prompt
    // the chat routes give the model.
    let models: Value = get_json(&server, "/v1/models").await;
    assert_eq!(models["data"][0]["meta"]["chat_template"], "plain");
    assert_eq!(prompt["prompt"], "User: Hi there\nAssistant:");
    let (status, _) = post(&server, "/apply-template", json!({"messages": []})).await;
    assert_eq!(status, 400);

    let props: Value = get_json(&server, "/props").await;
    assert!(
        props["model_path"].as_str().unwrap().ends_with(".gguf"),
        "{props}"
    );
    assert_eq!(props["total_slots"], 2);
    assert_eq!(props["default_generation_settings"]["n_ctx"], 1024);
    assert_eq!(
        props["chat_template"], "",
        "no template in the GGUF: {props}"
    );
    assert_eq!(
        props["default_generation_settings"]["params"]["seed"],
        u32::MAX
    );

    let slots = client().get(server.url("/slots")).send().await.unwrap();
    assert_eq!(slots.status(), 501);
    let body: Value = slots.json().await.unwrap();
    assert_eq!(body["error"]["type"], "not_supported_error", "{body}");
    drop(server);
    let server = Server::start(&["-c", "2048", "--slots", "2", "--slots-endpoint"]);
    let slots: Value = get_json(&server, "/slots").await;
    assert_eq!(slots.as_array().unwrap().len(), 2, "{slots}");
    assert_eq!(slots[0]["n_ctx"], 1024);
    assert_eq!(slots[1]["is_processing"], false);
    assert!(slots[0].get("params").is_none() && slots[0].get("prompt").is_none());
}

/// CORS: a preflight is answered 200 before authentication; the allow headers are there only
/// for allowed origins (this device's own pages by default, or what `--cors-origins` lists),
/// and answers to an allowed origin carry them too.
#[tokio::test]
async fn cors_preflight_and_origins() {
    let preflight = |server: &Server, origin: &str| {
        client()
            .request(reqwest::Method::OPTIONS, server.url("/v1/chat/completions"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization,content-type",
            )
            .send()
    };
    let server = Server::start(&["--api-key", "secret-key-1"]);
    for origin in [
        "http://localhost:8080",
        "http://127.0.0.1",
        "http://[::1]:3000",
    ] {
        let answer = preflight(&server, origin).await.unwrap();
        assert_eq!(answer.status(), 200, "{origin}");
        let headers = answer.headers();
        assert_eq!(headers["access-control-allow-origin"], origin);
        assert_eq!(headers["access-control-allow-credentials"], "true");
        assert_eq!(
            headers["access-control-allow-methods"],
            "GET, POST, DELETE, OPTIONS"
        );
        assert_eq!(
            headers["access-control-allow-headers"],
            "authorization,content-type"
        );
    }
    for origin in ["http://evil.com", "http://localhost.evil.com", "null"] {
        let answer = preflight(&server, origin).await.unwrap();
        assert_eq!(answer.status(), 200, "{origin}");
        assert!(
            !answer.headers().contains_key("access-control-allow-origin"),
            "{origin}"
        );
    }
    // The real request still needs the key; its answer carries the allow headers.
    let models = client()
        .get(server.url("/v1/models"))
        .header("Origin", "http://localhost:8080")
        .bearer_auth("secret-key-1")
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
    assert_eq!(
        models.headers()["access-control-allow-origin"],
        "http://localhost:8080"
    );
    let refused = client()
        .get(server.url("/v1/models"))
        .header("Origin", "http://localhost:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    drop(server);

    let server = Server::start(&["--cors-origins", "https://ui.example:8443,localhost"]);
    let answer = preflight(&server, "https://ui.example:8443").await.unwrap();
    assert_eq!(
        answer.headers()["access-control-allow-origin"],
        "https://ui.example:8443"
    );
    let answer = preflight(&server, "https://other.example").await.unwrap();
    assert!(!answer.headers().contains_key("access-control-allow-origin"));
    drop(server);
    let server = Server::start(&["--cors-origins", "*"]);
    let answer = preflight(&server, "http://web.mydomain.fr").await.unwrap();
    assert_eq!(
        answer.headers()["access-control-allow-origin"],
        "http://web.mydomain.fr"
    );
}

/// `[budget] prompt_log = true` alone (no `--log-prompts`) keeps every request's prompt and
/// answer, redacted, in the ledger's prompt log, whole answers and streamed ones, and keeps
/// the prompt out of the request log line.
#[tokio::test]
async fn prompt_log_keeps_redacted_prompts_and_answers() {
    use edgellm::ledger::{Ledger, LedgerOptions, PromptDirection};
    let server = Server::start_with_config(Some("[budget]\nprompt_log = true\n"), &[]);
    let content = "Mail ops@plant-7.example.com about valve 3";
    // The schema keeps the answer free of anything the guard would redact (the model likes to
    // copy the address), so the logged answer must equal what the client got.
    let schema = json!({"type": "object", "properties": {"ok": {"type": "boolean"}},
                        "required": ["ok"], "additionalProperties": false});
    let (status, whole) = post(
        &server,
        "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": content}], "max_tokens": 12, "temperature": 0,
               "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}}),
    )
    .await;
    assert_eq!(status, 200, "{whole}");
    let whole = whole["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let streamed = client()
        .post(server.url("/completion"))
        .json(&json!({"prompt": "Valve 3 reads", "n_predict": 4, "stream": true, "temperature": 0}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let streamed: String = streamed
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["content"].as_str().map(str::to_string))
        .collect();
    let path = server.data_dir.path().join(edgellm::ledger::FILE_NAME);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let rows = loop {
        let ledger = Ledger::open_reader(&path, LedgerOptions::default()).unwrap();
        let rows = ledger
            .prompt_log_list(
                jiff::Timestamp::UNIX_EPOCH,
                jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1),
                100,
            )
            .unwrap();
        if rows.len() >= 4 || std::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let texts = |direction| {
        rows.iter()
            .filter(|r| r.direction == direction)
            .map(|r| r.redacted_text.clone())
            .collect::<Vec<_>>()
    };
    let prompts = texts(PromptDirection::Prompt);
    let answers = texts(PromptDirection::Answer);
    assert_eq!((prompts.len(), answers.len()), (2, 2), "{rows:?}");
    assert!(
        prompts[0].contains("about valve 3") && prompts[0].contains("<EMAIL_1>"),
        "{prompts:?}"
    );
    assert!(!prompts[0].contains("ops@plant-7.example.com"));
    assert!(prompts[1].contains("Valve 3 reads"), "{prompts:?}");
    // The answers are what the client got: a schema-bound object, and a continuation of a
    // prompt that holds nothing to redact.
    assert!(whole.starts_with("{\"ok\":"), "{whole}");
    assert!(!streamed.contains('@'), "{streamed}");
    assert_eq!(answers, [whole, streamed]);
    let log = std::fs::read_to_string(server.data_dir.path().join("server.log")).unwrap();
    assert!(
        !log.contains("about valve 3") && !log.contains("<EMAIL_1>"),
        "{log}"
    );
}

/// `--host` takes several addresses, comma-separated, as llama-server's does: one app answers on
/// each (two loopback addresses: 127/8 is all loopback).
#[tokio::test]
async fn several_hosts_each_answer() {
    let server = Server::start(&["--host", "127.0.0.1,127.0.0.2"]);
    let second = server.base.replace("127.0.0.1", "127.0.0.2");
    for base in [server.base.clone(), second] {
        let health = client().get(format!("{base}/health")).send().await.unwrap();
        assert_eq!(health.status(), 200, "{base}");
        let (status, body) = {
            let response = client()
                .post(format!("{base}/v1/completions"))
                .json(&json!({"prompt": "Hello", "max_tokens": 2}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        };
        assert_eq!(status, 200, "{base}: {body}");
    }
}

/// `--alias` takes several names, comma-separated, and `--tags` some tags, as llama-server's
/// do: `/v1/models` lists them, and the first alias in alphabetical order is the id.
#[tokio::test]
async fn model_aliases_and_tags_are_listed() {
    let server = Server::start(&[
        "--alias",
        "tinyllama-2,fim,code",
        "--tags",
        "chat,fim,small",
    ]);
    for path in ["/v1/models", "/models"] {
        let body = get_json(&server, path).await;
        let model = &body["data"][0];
        assert_eq!(body["data"].as_array().unwrap().len(), 1);
        assert_eq!(model["id"], "code", "{body}");
        assert_eq!(model["aliases"], json!(["code", "fim", "tinyllama-2"]));
        assert_eq!(model["tags"], json!(["chat", "fim", "small"]));
    }
}

/// The first token greedy decoding picks after `prompt`, with `extra` fields in the request.
async fn first_token(server: &Server, prompt: &str, extra: Value) -> (i64, String) {
    let mut body = json!({"prompt": prompt, "n_predict": 1, "temperature": 0, "n_probs": 1});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let (status, answer) = post(server, "/completion", body).await;
    assert_eq!(status, 200, "{answer}");
    let first = &answer["completion_probabilities"][0];
    (
        first["id"].as_i64().unwrap(),
        answer["content"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn logit_bias_forbids_and_favours_tokens() {
    let server = Server::start(&[]);
    let prompt = "The capital of France is";
    let (free, _) = first_token(&server, prompt, json!({})).await;
    // Forbidden by id, in every form a client sends it: the greedy choice moves elsewhere.
    for bias in [
        json!({ free.to_string(): -100 }),
        json!({ free.to_string(): false }),
        json!([[free, -100]]),
        json!([[free, false]]),
    ] {
        let (token, _) = first_token(&server, prompt, json!({ "logit_bias": bias })).await;
        assert_ne!(token, free, "{bias}");
    }
    // Favoured by text (llama.cpp's form): the text's token wins, sampled or greedy, and the
    // constrained path (a grammar) honours the bias among the tokens it allows.
    let (_, pieces) = post(
        &server,
        "/tokenize",
        json!({"content": " banana", "with_pieces": true}),
    )
    .await;
    let banana = pieces["tokens"][0]["id"].as_i64().unwrap();
    for extra in [
        json!({"logit_bias": [[" banana", 100]]}),
        json!({"logit_bias": {" banana": 100}, "temperature": 0.8, "seed": 7}),
        json!({"logit_bias": [[banana, 100]], "grammar": "root ::= \" apple\" | \" banana\" | \" cherry\""}),
    ] {
        let (token, text) = first_token(&server, prompt, extra.clone()).await;
        assert_eq!(token, banana, "{extra}");
        assert!(text.starts_with(" banana"), "{extra}: {text}");
    }
    // OpenAI's routes take the map; a chat answer avoids a forbidden first token too.
    let chat = json!({"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 1,
                      "temperature": 0, "logprobs": true});
    let (status, free_chat) = post(&server, "/v1/chat/completions", chat.clone()).await;
    assert_eq!(status, 200, "{free_chat}");
    let free_text = free_chat["choices"][0]["logprobs"]["content"][0]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, ids) = post(&server, "/tokenize", json!({ "content": free_text })).await;
    let free_id = ids["tokens"][0].as_i64().unwrap();
    let mut biased = chat.clone();
    biased["logit_bias"] = json!({ free_id.to_string(): -100 });
    let (status, answer) = post(&server, "/v1/chat/completions", biased).await;
    assert_eq!(status, 200, "{answer}");
    assert_ne!(
        answer["choices"][0]["logprobs"]["content"][0]["token"],
        free_text.as_str(),
        "{answer}"
    );
    // Malformed biases are 400s naming the field.
    for (bias, param) in [
        (json!({"99999999": -100}), "logit_bias"),
        (json!([[-1, 5]]), "logit_bias"),
        (json!({"5": "lots"}), "logit_bias[\"5\"]"),
        (json!({"5": true}), "logit_bias[\"5\"]"),
        (json!({"5": 1e300}), "logit_bias[\"5\"]"),
        (json!([[5]]), "logit_bias[0]"),
        (json!([[5, 1, 2]]), "logit_bias[0]"),
        (json!([[{"x": 1}, 1]]), "logit_bias[0]"),
        (json!("forbid"), "logit_bias"),
    ] {
        let (status, body) = post(
            &server,
            "/completion",
            json!({"prompt": prompt, "n_predict": 1, "logit_bias": bias}),
        )
        .await;
        assert_eq!(status, 400, "{bias}: {body}");
        assert_openai_error(&body, Some(param));
    }
}

/// The raw head of `GET path`: the status line and headers as the server wrote them.
fn raw_head(base: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nOrigin: http://localhost:3000\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_string()
}

/// llama-server's request extensions and server defaults, as its clients use them.
#[tokio::test]
async fn llama_server_request_extensions() {
    let server = Server::start(&["--seed", "42", "--temp", "0.7", "--chat-template", "chatml"]);
    // Server defaults: /props reports them, and two unseeded requests sample alike.
    let props = get_json(&server, "/props").await;
    assert_eq!(props["default_generation_settings"]["params"]["seed"], 42);
    assert_eq!(props["chat_template"], "chatml");
    let request = json!({"prompt": "Once upon a time", "n_predict": 12});
    let (_, first) = post(&server, "/completion", request.clone()).await;
    let (_, second) = post(&server, "/completion", request).await;
    assert_eq!(first["content"], second["content"]);
    assert_eq!(first["generation_settings"]["seed"], 42, "{first}");
    assert_eq!(first["generation_settings"]["temperature"], 0.7_f32);
    assert_eq!(
        first["tokens"].as_array().unwrap().len() as u64,
        first["tokens_predicted"].as_u64().unwrap()
    );
    // The named built-in template formats chats.
    let (_, applied) = post(
        &server,
        "/apply-template",
        json!({"messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert_eq!(
        applied["prompt"],
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );

    // Prompt forms: token ids, several prompts (a list back), mixed text and ids, objects.
    let (_, ids) = post(
        &server,
        "/tokenize",
        json!({"content": "The sky is", "add_special": true}),
    )
    .await;
    let ids = ids["tokens"].clone();
    let greedy = |prompt: Value| json!({"prompt": prompt, "n_predict": 6, "temperature": 0});
    let (status, one) = post(&server, "/completion", greedy(ids.clone())).await;
    assert_eq!(status, 200, "{one}");
    let (status, two) = post(&server, "/completion", greedy(json!([ids, "The sky is"]))).await;
    assert_eq!(status, 200, "{two}");
    let two = two.as_array().unwrap();
    assert_eq!(two.len(), 2);
    assert_eq!(two[0]["content"], one["content"]);
    assert_eq!(two[1]["content"], one["content"]);
    let (status, object) = post(
        &server,
        "/completion",
        greedy(json!({"prompt_string": "The sky is"})),
    )
    .await;
    assert_eq!(status, 200, "{object}");
    assert_eq!(object["content"], one["content"]);
    let mut mixed = ids.as_array().unwrap().clone();
    let last = mixed.pop().unwrap();
    let (_, last_text) = post(&server, "/detokenize", json!({"tokens": [last]})).await;
    mixed.push(last_text["content"].clone());
    let (status, mixed) = post(&server, "/completion", greedy(Value::Array(mixed))).await;
    assert_eq!(status, 200, "{mixed}");
    assert_eq!(mixed["content"], one["content"]);
    for (bad, param) in [
        (
            json!({"prompt_string": "x", "multimodal_data": ["AAAA"]}),
            "prompt",
        ),
        (json!([]), "prompt"),
        (json!([1.5]), "prompt"),
        (json!(vec!["x"; 17]), "prompt"),
    ] {
        let (status, body) = post(&server, "/completion", greedy(bad.clone())).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_openai_error(&body, Some(param));
    }
    let mut fields = greedy(ids.clone());
    fields["response_fields"] = json!(["content", "generation_settings/n_predict"]);
    let (_, only) = post(&server, "/completion", fields).await;
    assert_eq!(
        only,
        json!({"content": one["content"], "generation_settings/n_predict": 6})
    );

    // ignore_eos forbids the end-of-generation tokens (listed with a null, minus-infinity
    // bias, as llama-server lists them) and runs to n_predict.
    let mut endless = greedy(ids.clone());
    endless["ignore_eos"] = json!(true);
    endless["n_predict"] = json!(24);
    let (status, endless) = post(&server, "/completion", endless).await;
    assert_eq!(status, 200, "{endless}");
    assert_eq!(endless["tokens_predicted"], 24, "{endless}");
    let biases = endless["generation_settings"]["logit_bias"]
        .as_array()
        .unwrap();
    assert!(
        !biases.is_empty()
            && biases
                .iter()
                .all(|b| b["bias"].is_null() && b["token"].is_i64())
    );
    assert_eq!(one["generation_settings"]["logit_bias"], json!([]));

    // Probabilities after the sampler chain: top-k 3 leaves three tokens, renormalised.
    let (status, sampled) = post(
        &server,
        "/completion",
        json!({"prompt": "The sky is", "n_predict": 4, "n_probs": 5, "top_k": 3,
               "temperature": 1.0, "post_sampling_probs": true}),
    )
    .await;
    assert_eq!(status, 200, "{sampled}");
    for entry in sampled["completion_probabilities"].as_array().unwrap() {
        let prob = entry["prob"].as_f64().unwrap();
        assert!(prob > 0.0 && prob <= 1.0, "{entry}");
        let top = entry["top_probs"].as_array().unwrap();
        assert!(!top.is_empty() && top.len() <= 3, "{entry}");
        let sum: f64 = top.iter().map(|t| t["prob"].as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-4, "{entry}");
        assert!(top.iter().any(|t| t["id"] == entry["id"]), "{entry}");
        assert!(entry.get("logprob").is_none());
    }

    // Chat: n choices, usage over all of them.
    let chat = "/v1/chat/completions";
    let ask = json!({"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 4});
    let mut several = ask.clone();
    several["n"] = json!(3);
    let (status, answer) = post(&server, chat, several).await;
    assert_eq!(status, 200, "{answer}");
    let choices = answer["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (i, choice) in choices.iter().enumerate() {
        assert_eq!(choice["index"], i);
        assert_eq!(choice["message"]["role"], "assistant");
    }
    assert_eq!(answer["usage"]["completion_tokens"], 12, "{answer}");
    // What the prompt costs, without generating, is what generating it reports.
    let (status, counted) = post(&server, "/v1/chat/completions/input_tokens", ask.clone()).await;
    assert_eq!(status, 200, "{counted}");
    let (_, generated) = post(&server, chat, ask.clone()).await;
    assert_eq!(counted["input_tokens"], generated["usage"]["prompt_tokens"]);
    // Assistant prefill: the answer continues the last assistant message.
    let prefill = json!({"messages": [{"role": "user", "content": "Name a colour."},
                                      {"role": "assistant", "content": "My favourite colour is"}],
                         "max_tokens": 3, "verbose": true});
    let (status, continued) = post(&server, chat, prefill.clone()).await;
    assert_eq!(status, 200, "{continued}");
    assert!(
        continued["__verbose"]["prompt"]
            .as_str()
            .unwrap()
            .ends_with("<|im_start|>assistant\nMy favourite colour is"),
        "{continued}"
    );
    let mut both = prefill.clone();
    both["continue_final_message"] = json!(true);
    both["add_generation_prompt"] = json!(true);
    let (status, body) = post(&server, chat, both).await;
    assert_eq!(status, 400, "{body}");
    assert_openai_error(&body, Some("continue_final_message"));
    let mut twice = prefill.clone();
    twice["messages"]
        .as_array_mut()
        .unwrap()
        .push(json!({"role": "assistant", "content": "again"}));
    let (status, body) = post(&server, chat, twice).await;
    assert_eq!(status, 400, "{body}");
    // JSON mode with llama-server's `schema`, in draft-07 tuple form.
    let (status, body) = post(
        &server,
        chat,
        json!({"messages": [{"role": "user", "content": "Numbers?"}], "max_tokens": 24,
               "response_format": {"type": "json_object", "schema": {"type": "array",
                   "items": [{"type": "integer", "minimum": 0, "maximum": 99}],
                   "additionalItems": false, "minItems": 1}}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let content: Value =
        serde_json::from_str(body["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert!(
        content
            .as_array()
            .is_some_and(|a| a.len() == 1 && a[0].is_i64()),
        "{content}"
    );

    // Streaming: the role chunk has null content; timings per token, and on the last chunk.
    let response = client()
        .post(server.url(chat))
        .json(
            &json!({"messages": [{"role": "user", "content": "Count to five."}], "max_tokens": 5,
                      "stream": true, "timings_per_token": true,
                      "stream_options": {"include_usage": true}}),
        )
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    let chunks: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|l| *l != "[DONE]")
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks[0]["choices"][0]["delta"]["content"].is_null());
    assert!(chunks[0].get("timings").is_none());
    let predicted: Vec<u64> = chunks
        .iter()
        .filter(|c| c["choices"][0]["delta"]["content"].is_string())
        .map(|c| c["timings"]["predicted_n"].as_u64().unwrap())
        .collect();
    assert!(!predicted.is_empty(), "{text}");
    assert!(predicted.windows(2).all(|w| w[0] < w[1]), "{predicted:?}");
    let last = chunks.last().unwrap();
    assert!(last["choices"].as_array().unwrap().is_empty());
    assert_eq!(
        last["timings"]["predicted_n"],
        last["usage"]["completion_tokens"]
    );

    // Header names go out in title case, as llama-server writes them.
    let head = raw_head(&server.base, "/metrics");
    assert!(head.contains("\r\nProcess-Start-Time-Unix: "), "{head}");
    assert!(
        head.contains("\r\nAccess-Control-Allow-Origin: http://localhost:3000"),
        "{head}"
    );
}

/// Vertex AI's `/predict`: each instance is the request of the endpoint it names, answered in
/// order; it passes authentication like any request, and a bad instance is an error entry.
#[tokio::test]
async fn vertex_predict_dispatches_instances() {
    let key = "predict-test-key-0123";
    let server = Server::start(&["--api-key", key]);
    let send = |body: Value, with_key: bool| {
        let mut request = client().post(server.url("/predict")).json(&body);
        if with_key {
            request = request.bearer_auth(key);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let body = json!({"instances": [
        {"@requestFormat": "chatCompletions", "max_tokens": 4, "stream": true,
         "messages": [{"role": "user", "content": "Say hello."}]},
        {"@requestFormat": "tokenize", "content": "Hello world"},
        {"@requestFormat": "/completion", "prompt": "The sky is", "n_predict": 3},
        {"@requestFormat": "chatCompletions", "messages": "not a list"},
        {"@requestFormat": "predict"},
        {"max_tokens": 4},
    ]});
    let (status, refused) = send(body.clone(), false).await;
    assert_eq!(status, 401, "{refused}");
    let (status, answer) = send(body, true).await;
    assert_eq!(status, 200, "{answer}");
    let predictions = answer["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 6);
    assert_eq!(predictions[0]["object"], "chat.completion", "{answer}");
    assert!(predictions[0]["choices"][0]["message"]["content"].is_string());
    assert!(!predictions[1]["tokens"].as_array().unwrap().is_empty());
    assert_eq!(predictions[2]["tokens_predicted"], 3);
    assert_eq!(predictions[3]["error"]["param"], "messages", "{answer}");
    assert!(predictions[4]["error"]["message"].is_string());
    assert!(
        predictions[5]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("@requestFormat")
    );
    let (status, body) = send(json!({"instances": "x"}), true).await;
    assert_eq!(status, 400, "{body}");
    assert_openai_error(&body, Some("instances"));
}
