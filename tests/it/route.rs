//! Local-first routing against the real engine and a stand-in upstream on loopback: one test per
//! escalation reason (whole and streamed), the caller-visible fields, retries, the breaker.

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::server::Server;
use crate::support::network_opt_in;
use crate::upstream_stub::{ANSWER, Mode, Stub};

fn client() -> reqwest::Client {
    crate::support::http_client()
}

/// `[routing]` lines, then a local tier and a remote `cloud` tier on the stub.
fn config(stub: &Stub, extra: &str) -> String {
    tiers_config(extra, &[("cloud", "openai_chat", &stub.base)])
}

fn tiers_config(extra: &str, remotes: &[(&str, &str, &str)]) -> String {
    let mut text = format!(
        "[model]\nslots = 1\nctx_size = 1024\n[routing]\n{extra}\n[[tiers]]\nname = \"local\"\ntype = \"local\"\n"
    );
    for (name, kind, url) in remotes {
        text.push_str(&format!(
            "[[tiers]]\nname = \"{name}\"\ntype = \"{kind}\"\nurl = \"{url}\"\nmodel = \"big\"\ntimeout_secs = 2\nconnect_timeout_ms = 500\n"
        ));
    }
    text.push_str(&network_opt_in());
    text
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map_or("", |v| v.to_str().unwrap_or(""))
    }

    /// `x-edgellm-tier` and `x-edgellm-reason`.
    fn route(&self) -> (&str, &str) {
        (
            self.header("x-edgellm-tier"),
            self.header("x-edgellm-reason"),
        )
    }
}

async fn send(server: &Server, path: &str, body: Value, headers: &[(&str, &str)]) -> Answer {
    let mut request = client().post(server.url(path)).json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        text: response.text().await.unwrap_or_default(),
    }
}

fn chat(content: &str, max_tokens: u32, stream: bool) -> Value {
    json!({"messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
           "temperature": 0, "stream": stream})
}

/// The streamed text of chat SSE chunks, and the `edgellm` object of the last one.
fn chat_stream(text: &str) -> (String, Value) {
    let mut content = String::new();
    let mut edgellm = Value::Null;
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        if let Some(delta) = chunk["choices"][0]["delta"]["content"].as_str() {
            content.push_str(delta);
        }
        if chunk["edgellm"].is_object() {
            edgellm = chunk["edgellm"].clone();
        }
    }
    (content, edgellm)
}

fn long_prompt() -> String {
    "The quick brown fox jumps over the lazy dog. ".repeat(150)
}

#[tokio::test]
async fn no_tiers_still_says_local() {
    let server = Server::start(&[]);
    let answer = send(
        &server,
        "/v1/chat/completions",
        chat("Say hi.", 4, false),
        &[],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.route(), ("local", "default"));
    assert!(answer.header("x-edgellm-local-ms").parse::<u64>().is_ok());
    let body = answer.json();
    assert_eq!(body["edgellm"]["tier"], "local");
    assert_eq!(body["edgellm"]["reason"], "default");
    let streamed = send(
        &server,
        "/v1/chat/completions",
        chat("Say hi.", 4, true),
        &[],
    )
    .await;
    assert_eq!(streamed.route(), ("local", "default"));
    assert_eq!(chat_stream(&streamed.text).1["tier"], "local");
}

#[tokio::test]
async fn context_escalates_before_local_work_whole_and_streamed() {
    let stub = Stub::start(Mode::Ok);
    let server = Server::start_with_config(Some(&config(&stub, "")), &[]);
    let prompt = long_prompt();
    let answer = send(
        &server,
        "/v1/chat/completions",
        chat(&prompt, 16, false),
        &[],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.route(), ("cloud", "context"));
    let body = answer.json();
    assert_eq!(body["choices"][0]["message"]["content"], ANSWER);
    assert_eq!(body["model"], "big");
    assert_eq!(body["edgellm"]["attempts"][0]["reason"], "context");
    assert!(answer.header("x-edgellm-local-ms").parse::<u64>().unwrap() < 1000);
    let sent = &stub.received()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.body["model"], "big");
    assert_eq!(sent.body["max_tokens"], 16);
    assert!(
        sent.body["messages"][0]["content"]
            .as_str()
            .unwrap()
            .starts_with("The quick")
    );

    let streamed = send(
        &server,
        "/v1/chat/completions",
        chat(&prompt, 16, true),
        &[],
    )
    .await;
    assert_eq!(streamed.route(), ("cloud", "context"));
    let (text, edgellm) = chat_stream(&streamed.text);
    assert_eq!(text, ANSWER);
    assert_eq!(edgellm["reason"], "context");
    assert!(streamed.text.trim_end().ends_with("data: [DONE]"));

    // Completions and llama.cpp's /completion route the same way.
    let completion = send(
        &server,
        "/v1/completions",
        json!({"prompt": prompt, "max_tokens": 8}),
        &[],
    )
    .await;
    assert_eq!(completion.route(), ("cloud", "context"));
    assert_eq!(completion.json()["choices"][0]["text"], ANSWER);
    let llama = send(
        &server,
        "/completion",
        json!({"prompt": prompt, "n_predict": 8}),
        &[],
    )
    .await;
    assert_eq!(llama.route(), ("cloud", "context"));
    assert_eq!(llama.json()["content"], ANSWER);
}

#[tokio::test]
async fn responses_api_upstream_whole_and_streamed() {
    let stub = Stub::start(Mode::Ok);
    let toml = tiers_config("", &[("cloud", "openai_responses", &stub.base)]);
    let server = Server::start_with_config(Some(&toml), &[]);
    let answer = send(
        &server,
        "/v1/responses",
        json!({"input": long_prompt(), "max_output_tokens": 8}),
        &[],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.route(), ("cloud", "context"));
    let body = answer.json();
    assert_eq!(body["output"][0]["content"][0]["text"], ANSWER);
    assert_eq!(body["usage"]["output_tokens"], 4);
    assert_eq!(body["edgellm"]["tier"], "cloud");
    let sent = &stub.received()[0];
    assert_eq!(sent.path, "/v1/responses");
    assert_eq!(sent.body["max_output_tokens"], 8);

    let streamed = send(
        &server,
        "/v1/responses",
        json!({"input": long_prompt(), "stream": true}),
        &[],
    )
    .await;
    assert_eq!(streamed.route(), ("cloud", "context"));
    assert!(
        streamed.text.contains("\"delta\":\"Hello \""),
        "{}",
        streamed.text
    );
    assert!(streamed.text.contains("\"edgellm\":{"), "{}", streamed.text);
}

#[tokio::test]
async fn overloaded_queue_escalates_whole_and_streamed() {
    let stub = Stub::start(Mode::Ok);
    let server = Server::start_with_config(Some(&config(&stub, "max_queued = 0")), &[]);
    // A long local answer holds the one slot.
    let busy = client()
        .post(server.url("/v1/chat/completions"))
        .json(&chat("Count from one to one hundred.", 400, true))
        .send()
        .await
        .unwrap();
    assert_eq!(busy.headers()["x-edgellm-tier"], "local");
    let answer = send(
        &server,
        "/v1/chat/completions",
        chat("Say hi.", 8, false),
        &[],
    )
    .await;
    assert_eq!(answer.route(), ("cloud", "overloaded"), "{}", answer.text);
    let streamed = send(
        &server,
        "/v1/chat/completions",
        chat("Say hi.", 8, true),
        &[],
    )
    .await;
    assert_eq!(streamed.route(), ("cloud", "overloaded"));
    assert_eq!(chat_stream(&streamed.text).0, ANSWER);
    drop(busy);
}

#[tokio::test]
async fn thermal_trigger_from_supplied_sysfs() {
    let root = tempfile::tempdir().unwrap();
    let zone = root.path().join("class/thermal/thermal_zone0");
    let cpu = root.path().join("devices/system/cpu/cpu0/cpufreq");
    std::fs::create_dir_all(&zone).unwrap();
    std::fs::create_dir_all(&cpu).unwrap();
    std::fs::write(zone.join("temp"), "95000\n").unwrap();
    std::fs::write(cpu.join("scaling_cur_freq"), "2000000\n").unwrap();
    std::fs::write(cpu.join("scaling_max_freq"), "2000000\n").unwrap();
    let stub = Stub::start(Mode::Ok);
    let routing = format!(
        "sysfs_root = \"{}\"\nthermal_max_celsius = 85.0\nthermal_min_freq_ratio = 0.6",
        root.path().display()
    );
    let server = Server::start_with_config(Some(&config(&stub, &routing)), &[]);
    let hot = send(
        &server,
        "/v1/chat/completions",
        chat("Say hi.", 4, false),
        &[],
    )
    .await;
    assert_eq!(hot.route(), ("cloud", "thermal"), "{}", hot.text);
    let hot_stream = send(
        &server,
        "/v1/chat/completions",
        chat("Say hi.", 4, true),
        &[],
    )
    .await;
    assert_eq!(hot_stream.route(), ("cloud", "thermal"));
    // Cool, but the CPU runs at 40% of its maximum: still throttling.
    std::fs::write(zone.join("temp"), "45000\n").unwrap();
    std::fs::write(cpu.join("scaling_cur_freq"), "800000\n").unwrap();
    let slow = send(
        &server,
        "/v1/chat/completions",
        chat("Say hi.", 4, false),
        &[],
    )
    .await;
    assert_eq!(slow.route(), ("cloud", "thermal"));
    std::fs::write(cpu.join("scaling_cur_freq"), "2000000\n").unwrap();
    let cool = send(
        &server,
        "/v1/chat/completions",
        chat("Say hi.", 4, false),
        &[],
    )
    .await;
    assert_eq!(cool.route(), ("local", "default"));
}

#[tokio::test]
async fn deadline_first_token_and_decode_rate() {
    let stub = Stub::start(Mode::Ok);
    let server =
        Server::start_with_config(Some(&config(&stub, "first_token_deadline_ms = 1")), &[]);
    let answer = send(
        &server,
        "/v1/chat/completions",
        chat("Tell me a story.", 64, false),
        &[],
    )
    .await;
    assert_eq!(answer.route(), ("cloud", "deadline"), "{}", answer.text);
    let streamed = send(
        &server,
        "/v1/chat/completions",
        chat("Tell me a story.", 64, true),
        &[],
    )
    .await;
    assert_eq!(streamed.route(), ("cloud", "deadline"));
    drop(server);

    // 900 tokens cannot be decoded in 6 s here: known after a few tokens, not at the deadline.
    // Streamed answers are judged while their first tokens are held back.
    let routing = "total_deadline_ms = 6000\nhold_tokens = 8";
    let server = Server::start_with_config(Some(&config(&stub, routing)), &[]);
    for stream in [false, true] {
        let started = Instant::now();
        let answer = send(
            &server,
            "/v1/chat/completions",
            chat("Write a very long essay about rivers.", 900, stream),
            &[],
        )
        .await;
        assert_eq!(answer.route(), ("cloud", "deadline"), "{}", answer.text);
        let local_ms: u64 = answer.header("x-edgellm-local-ms").parse().unwrap();
        assert!(
            local_ms < 6000,
            "decided at {local_ms} ms (stream: {stream}): {}",
            answer.text
        );
        assert!(started.elapsed() < Duration::from_secs(20));
    }
}

#[tokio::test]
async fn low_confidence_whole_and_held_stream() {
    let stub = Stub::start(Mode::Ok);
    // No real answer has a mean log probability above -0.0001.
    let routing = "min_mean_logprob = -0.0001\nhold_tokens = 4";
    let server = Server::start_with_config(Some(&config(&stub, routing)), &[]);
    let answer = send(
        &server,
        "/v1/chat/completions",
        chat("Name a colour.", 8, false),
        &[],
    )
    .await;
    assert_eq!(
        answer.route(),
        ("cloud", "low_confidence"),
        "{}",
        answer.text
    );
    assert!(
        answer.json()["edgellm"]["attempts"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("mean -"),
        "{}",
        answer.text
    );
    assert!(answer.text.contains("< -0.0001 over"), "{}", answer.text);
    let streamed = send(
        &server,
        "/v1/chat/completions",
        chat("Name a colour.", 8, true),
        &[],
    )
    .await;
    assert_eq!(streamed.route(), ("cloud", "low_confidence"));
    assert_eq!(
        chat_stream(&streamed.text).0,
        ANSWER,
        "no local token leaked"
    );
    drop(server);
    let lenient = config(&stub, "min_mean_logprob = -100.0\nhold_tokens = 4");
    let server = Server::start_with_config(Some(&lenient), &[]);
    let answer = send(
        &server,
        "/v1/chat/completions",
        chat("Name a colour.", 8, true),
        &[],
    )
    .await;
    assert_eq!(answer.route(), ("local", "default"));
}

/// No remote API can be held to a GBNF grammar: a grammar request is never sent (the stand-in
/// records nothing), never answered remotely with the grammar dropped.
#[tokio::test]
async fn a_gbnf_grammar_never_goes_to_a_remote_tier() {
    let stub = Stub::start(Mode::Ok);
    let server = Server::start_with_config(Some(&config(&stub, "")), &[]);
    let body = json!({"prompt": "Answer yes or no:", "n_predict": 4, "grammar": "root ::= \"yes\" | \"no\""});
    let remote = send(
        &server,
        "/completion",
        body.clone(),
        &[("x-edgellm-route", "remote")],
    )
    .await;
    assert_ne!(remote.status, 200, "{}", remote.text);
    assert!(
        remote.text.contains("answered on the device only"),
        "{}",
        remote.text
    );
    let local = send(&server, "/completion", body, &[]).await;
    assert_eq!(local.status, 200, "{}", local.text);
    assert_eq!(local.route().0, "local");
    let content = local.json()["content"].as_str().unwrap().to_string();
    assert!(content == "yes" || content == "no", "{content}");
    assert!(stub.received().is_empty());
}

#[tokio::test]
async fn overrides_force_local_remote_or_no_fallback() {
    let stub = Stub::start(Mode::Ok);
    let server = Server::start_with_config(Some(&config(&stub, "")), &[]);
    let remote = send(
        &server,
        "/v1/chat/completions",
        chat("Say hi.", 4, false),
        &[("x-edgellm-route", "remote")],
    )
    .await;
    assert_eq!(remote.route(), ("cloud", "override"));
    let mut body = chat("Say hi.", 4, true);
    body["edgellm"] = json!({"route": "remote"});
    let remote_stream = send(&server, "/v1/chat/completions", body, &[]).await;
    assert_eq!(remote_stream.route(), ("cloud", "override"));
    // Forced local: a prompt too long for the device is refused, not escalated.
    let mut body = chat(&long_prompt(), 4, false);
    body["edgellm"] = json!({"route": "local"});
    let local = send(&server, "/v1/chat/completions", body, &[]).await;
    assert_eq!(local.status, 400, "{}", local.text);
    assert_eq!(local.json()["error"]["code"], "context_length_exceeded");
    let pinned = send(
        &server,
        "/v1/chat/completions",
        chat(&long_prompt(), 4, false),
        &[("x-edgellm-route", "no_fallback")],
    )
    .await;
    assert_eq!(pinned.status, 400);
    let bad = send(
        &server,
        "/v1/chat/completions",
        chat("x", 4, false),
        &[("x-edgellm-route", "moon")],
    )
    .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["param"], "x-edgellm-route");
    let local_ok = send(
        &server,
        "/v1/chat/completions",
        chat("Say hi.", 4, false),
        &[("x-edgellm-route", "local")],
    )
    .await;
    assert_eq!(local_ok.route(), ("local", "override"));
}

#[tokio::test]
async fn no_retry_after_bytes_and_stream_ends_with_error() {
    let stub = Stub::start(Mode::Trickle);
    let server = Server::start_with_config(Some(&config(&stub, "retries = 3")), &[]);
    let remote = [("x-edgellm-route", "remote")];
    let answer = send(
        &server,
        "/v1/chat/completions",
        chat("Say hi.", 4, false),
        &remote,
    )
    .await;
    assert_eq!(answer.status, 502, "{}", answer.text);
    assert_eq!(
        stub.received().len(),
        1,
        "a request that reached the upstream is never resent"
    );
    // Streamed: the first delta reached the client, so the break shows as an error event.
    let streamed = send(
        &server,
        "/v1/chat/completions",
        chat("Say hi.", 4, true),
        &remote,
    )
    .await;
    assert_eq!(stub.received().len(), 2);
    assert_eq!(streamed.route(), ("cloud", "override"));
    assert!(streamed.text.contains("Hello"), "{}", streamed.text);
    assert!(streamed.text.contains("\"error\""), "{}", streamed.text);
    assert!(!streamed.text.contains("[DONE]"));
    // A connection reset before any response byte is not resent either.
    stub.set(Mode::Reset);
    let reset = send(
        &server,
        "/v1/chat/completions",
        chat("Say hi.", 4, false),
        &remote,
    )
    .await;
    assert_eq!(reset.status, 502);
    assert_eq!(stub.received().len(), 3);
}

#[tokio::test]
async fn connect_failures_are_retried_then_fall_through() {
    let closed = format!("http://127.0.0.1:{}/v1", crate::server::free_port());
    // A slow answer within the tier's timeout is still an answer.
    let stub = Stub::start(Mode::Slow(Duration::from_millis(300)));
    let toml = tiers_config(
        "retries = 2\nretry_backoff_ms = 5",
        &[
            ("onprem", "openai_chat", &closed),
            ("cloud", "openai_chat", &stub.base),
        ],
    );
    let server = Server::start_with_config(Some(&toml), &[]);
    let answer = send(
        &server,
        "/v1/chat/completions",
        chat("Say hi.", 4, false),
        &[("x-edgellm-route", "remote")],
    )
    .await;
    assert_eq!(
        answer.route(),
        ("cloud", "upstream_error"),
        "{}",
        answer.text
    );
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("edgellm_upstream_errors_total{tier=\"onprem\",kind=\"connect\"} 3\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "edgellm_routed_requests_total{tier=\"cloud\",reason=\"upstream_error\"} 1\n"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn breaker_opens_and_recovers() {
    let stub = Stub::start(Mode::Fail);
    let toml = config(&stub, "breaker_failures = 2\nbreaker_cooldown_ms = 1500");
    let server = Server::start_with_config(Some(&toml), &[]);
    let remote = [("x-edgellm-route", "remote")];
    for _ in 0..2 {
        let answer = send(
            &server,
            "/v1/chat/completions",
            chat("Say hi.", 4, false),
            &remote,
        )
        .await;
        assert_eq!(answer.status, 502);
    }
    let metrics = || async { server.metrics().await };
    assert!(
        metrics()
            .await
            .contains("edgellm_breaker_state{tier=\"cloud\",state=\"open\"} 1")
    );
    let skipped = send(
        &server,
        "/v1/chat/completions",
        chat("Say hi.", 4, false),
        &remote,
    )
    .await;
    assert!(skipped.text.contains("breaker_open"), "{}", skipped.text);
    assert_eq!(stub.received().len(), 2, "an open breaker sends nothing");
    // `edgellm status` shows it too.
    let status = std::process::Command::new(crate::support::edgellm_bin())
        .args(["status", "--url", &server.base])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    let cloud = text.lines().find(|l| l.starts_with("cloud")).unwrap_or("");
    assert!(cloud.contains("remote") && cloud.contains("open"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("local")), "{text}");
    // In automatic routing the open breaker simply leaves the answer to local.
    stub.set(Mode::Ok);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(metrics().await.contains("state=\"half_open\"} 2"));
    let probe = send(
        &server,
        "/v1/chat/completions",
        chat("Say hi.", 4, false),
        &remote,
    )
    .await;
    assert_eq!(probe.route(), ("cloud", "override"), "{}", probe.text);
    assert!(
        metrics()
            .await
            .contains("edgellm_breaker_state{tier=\"cloud\",state=\"closed\"} 0")
    );
}

#[tokio::test]
async fn all_tiers_failing_lists_each_reason() {
    let failing = Stub::start(Mode::Fail);
    let stalled = Stub::start(Mode::Stall);
    let toml = tiers_config(
        "",
        &[
            ("onprem", "openai_chat", &failing.base),
            ("cloud", "openai_chat", &stalled.base),
        ],
    );
    let server = Server::start_with_config(Some(&toml), &[]);
    let started = Instant::now();
    let answer = send(
        &server,
        "/v1/chat/completions",
        chat(&long_prompt(), 4, false),
        &[],
    )
    .await;
    assert_eq!(answer.status, 503, "{}", answer.text);
    let body = answer.json();
    assert_eq!(body["error"]["code"], "all_tiers_failed");
    let message = body["error"]["message"].as_str().unwrap();
    for part in [
        "local: context",
        "onprem: upstream_error",
        "HTTP 500",
        "cloud: upstream_error",
    ] {
        assert!(message.contains(part), "{message} should contain {part}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the stalled tier's timeout applies"
    );
}

#[tokio::test]
async fn local_error_model_not_loaded_escalates_whole_and_streamed() {
    use std::sync::Arc;

    use axum::body::Body;
    use edgellm::api::app;
    use edgellm::config::{RawConfig, ServeConfig};
    use edgellm::gateway::Gateway;
    use edgellm::metrics::Metrics;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let stub = Stub::start(Mode::Ok);
    let raw = RawConfig::from_toml(&config(&stub, "")).unwrap();
    let config = Arc::new(ServeConfig::from_raw(raw).unwrap());
    let metrics = Arc::new(Metrics::default());
    let data = tempfile::tempdir().unwrap();
    let ledger = edgellm::ledger::Ledger::open_in(
        data.path(),
        edgellm::ledger::LedgerOptions::from_budget(&config.egress.budget),
        jiff::Timestamp::now(),
    )
    .unwrap();
    // An engine cell that is never filled: the model is still loading.
    let router = app(Arc::new(
        Gateway::new(
            config,
            Arc::new(edgellm::engine::EngineSlot::default()),
            Some(Arc::new(ledger)),
            metrics,
        )
        .unwrap(),
    ));
    for stream in [false, true] {
        let request = axum::http::Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body(Body::from(chat("Say hi.", 4, stream).to_string()))
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-edgellm-tier"], "cloud");
        assert_eq!(response.headers()["x-edgellm-reason"], "local_error");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("Hello"), "{text}");
        assert!(text.contains("\"local_error\""), "{text}");
    }
}

#[tokio::test]
async fn https_upstream_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let stub = Stub::start_tls(Mode::Ok, &ca);
    let tier = |ca_line: &str| {
        format!(
            "[[tiers]]\nname = \"cloud\"\ntype = \"openai_chat\"\nurl = \"{}\"\nmodel = \"big\"\ntimeout_secs = 5\n{ca_line}\n{}",
            stub.base,
            network_opt_in()
        )
    };
    let trusted =
        Server::start_with_config(Some(&tier(&format!("ca_file = \"{}\"", ca.display()))), &[]);
    for stream in [false, true] {
        let answer = send(
            &trusted,
            "/v1/chat/completions",
            chat("Say hi.", 4, stream),
            &[],
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(answer.route().0, "cloud");
        let text = if stream {
            chat_stream(&answer.text).0
        } else {
            answer.json()["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(text, ANSWER);
    }
    assert_eq!(stub.received().len(), 2);
    // Without the CA the certificate is refused and nothing is answered by that tier.
    let untrusted = Server::start_with_config(Some(&tier("")), &[]);
    let refused = send(
        &untrusted,
        "/v1/chat/completions",
        chat("Say hi.", 4, false),
        &[],
    )
    .await;
    assert_eq!(refused.status, 502, "{}", refused.text);
    assert!(
        refused.text.contains("certificate") || refused.text.contains("Certificate"),
        "{}",
        refused.text
    );
    assert_eq!(
        stub.received().len(),
        2,
        "no request body crossed an untrusted TLS session"
    );
}

#[tokio::test]
async fn local_server_tier_by_url_counts_as_local() {
    // A real llama.cpp-compatible server on loopback (edgellm's own /completion and /v1), as the
    // local tier of a second edgellm; remote stays for what the device cannot do.
    let device = Server::start(&["--ctx-size", "1024", "--slots", "1"]);
    let stub = Stub::start(Mode::Ok);
    for api in ["llama", "openai_chat"] {
        let url = match api {
            "llama" => device.base.clone(),
            _ => format!("{}/v1", device.base),
        };
        let toml = format!(
            "[[tiers]]\nname = \"device\"\ntype = \"local\"\nurl = \"{url}\"\napi = \"{api}\"\ntimeout_secs = 60\n\
             [[tiers]]\nname = \"cloud\"\ntype = \"openai_chat\"\nurl = \"{}\"\nmodel = \"big\"\n{}",
            stub.base,
            network_opt_in()
        );
        let gateway = Server::start_with_config(Some(&toml), &[]);
        for stream in [false, true] {
            let answer = send(
                &gateway,
                "/v1/chat/completions",
                chat("The capital of France is", 6, stream),
                &[],
            )
            .await;
            assert_eq!(answer.status, 200, "{api}: {}", answer.text);
            assert_eq!(answer.route(), ("device", "default"), "{api}");
            let text = if stream {
                chat_stream(&answer.text).0
            } else {
                answer.json()["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_string()
            };
            assert!(!text.is_empty(), "{api}: the local server's answer arrives");
            assert_ne!(text, ANSWER);
            assert!(answer.header("x-edgellm-local-ms").parse::<u64>().unwrap() > 0);
        }
        // The override `local` keeps the local server; `remote` skips it for the cloud.
        let local = send(
            &gateway,
            "/v1/chat/completions",
            chat("Hi", 2, false),
            &[("x-edgellm-route", "local")],
        )
        .await;
        assert_eq!(local.route(), ("device", "override"));
        let remote = send(
            &gateway,
            "/v1/chat/completions",
            chat("Hi", 2, false),
            &[("x-edgellm-route", "remote")],
        )
        .await;
        assert_eq!(remote.route(), ("cloud", "override"));
    }
    assert_eq!(
        stub.received().len(),
        2,
        "only the forced-remote requests left"
    );
}
