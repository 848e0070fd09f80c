//! The egress guard end to end: a real server, the real engine, a stand-in cloud on loopback
//! that records every byte it receives, and the real ledger file.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::server::Server;
use crate::support::{edgellm_bin, fake_network, network_opt_in};
use crate::upstream_stub::{Mode, Stub, echo_text};

/// The serial-number pattern the redaction corpus is written for.
const CORPUS_SERIAL_PATTERN: &str = r#"(?i:\b(?:s/n|sn|serial(?: number| no\.?)?)["']?[:#]?[ ]*["']?)([A-Z0-9][A-Z0-9-]{6,20}[A-Z0-9])\b"#;

fn client() -> reqwest::Client {
    crate::support::http_client()
}

/// Local then `cloud` on the stub; `routing` and `rest` are extra TOML for `[routing]` and
/// after the tiers.
fn config(stub: &Stub, routing: &str, rest: &str) -> String {
    format!(
        "[model]\nslots = 1\nctx_size = 1024\n[routing]\nbreaker_failures = 100000\n{routing}\n\
         [[tiers]]\nname = \"local\"\ntype = \"local\"\n\
         [[tiers]]\nname = \"cloud\"\ntype = \"openai_chat\"\nurl = \"{}\"\nmodel = \"big\"\ntimeout_secs = 10\n\
         price_input_per_mtok = 1.0\nprice_output_per_mtok = 2.0\n\
         [redaction]\nserial_patterns = ['''{CORPUS_SERIAL_PATTERN}''']\n{rest}",
        stub.base
    )
}

/// Routing that always wants to leave local (every answer is "low confidence").
const ALWAYS_ESCALATE: &str = "min_mean_logprob = 0.0\nhold_tokens = 4";

struct Reply {
    status: u16,
    tier: String,
    reason: String,
    retry_after: String,
    text: String,
}

async fn post(server: &Server, path: &str, body: &Value, remote: bool) -> Reply {
    let mut request = client().post(server.url(path)).json(body);
    if remote {
        request = request.header("x-edgellm-route", "remote");
    }
    let response = request.send().await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map_or(String::new(), |v| v.to_str().unwrap_or("").to_string())
    };
    let (tier, reason) = (header("x-edgellm-tier"), header("x-edgellm-reason"));
    let retry_after = header("retry-after");
    Reply {
        status: response.status().as_u16(),
        tier,
        reason,
        retry_after,
        text: response.text().await.unwrap_or_default(),
    }
}

/// The answer text of a chat or completions reply, whole or streamed.
fn answer_text(reply: &Reply, stream: bool) -> String {
    if !stream {
        let body: Value = serde_json::from_str(&reply.text).unwrap_or(Value::Null);
        let choice = &body["choices"][0];
        return choice["message"]["content"]
            .as_str()
            .or(choice["text"].as_str())
            .unwrap_or_default()
            .to_string();
    }
    let mut text = String::new();
    for line in reply.text.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        let choice = &chunk["choices"][0];
        if let Some(delta) = choice["delta"]["content"]
            .as_str()
            .or(choice["text"].as_str())
        {
            text.push_str(delta);
        }
    }
    text
}

/// The redaction corpus's positive lines: (text, planted values).
fn planted_lines() -> Vec<(String, Vec<String>)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/redaction/corpus.jsonl"
    );
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|line| {
            let entry: Value = serde_json::from_str(line).unwrap();
            let values: Vec<String> = entry["expect"]
                .as_array()?
                .iter()
                .filter_map(|e| e["value"].as_str().map(String::from))
                .collect();
            (!values.is_empty()).then(|| (entry["text"].as_str().unwrap().to_string(), values))
        })
        .collect()
}

/// Planted lines picked at random, those JSON carries unescaped (quotes, newlines and
/// backslashes would come back escaped); every value picked is recorded in `planted`.
struct Planter {
    lines: Vec<(String, Vec<String>)>,
    rng: Lcg,
    planted: BTreeSet<String>,
}

impl Planter {
    fn new(seed: u64) -> Planter {
        let lines = planted_lines()
            .into_iter()
            .filter(|(text, _)| !text.contains(['\n', '"', '\\']))
            .collect();
        Planter {
            lines,
            rng: Lcg(seed),
            planted: BTreeSet::new(),
        }
    }

    fn pick(&mut self) -> (String, Vec<String>) {
        let (text, values) = &self.lines[self.rng.below(self.lines.len())];
        self.planted.extend(values.iter().cloned());
        (text.clone(), values.clone())
    }
}

/// A small deterministic generator (the test must be reproducible).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Asserts that none of the planted values (those of 6 bytes or more, more than `at_least` of
/// them) is in `sent`; returns them.
fn none_left<'p>(sent: &[u8], planted: &'p BTreeSet<String>, at_least: usize) -> Vec<&'p String> {
    let planted: Vec<&String> = planted.iter().filter(|v| v.len() >= 6).collect();
    assert!(
        planted.len() > at_least,
        "{} distinct planted values",
        planted.len()
    );
    for value in &planted {
        assert!(
            !contains(sent, value.as_bytes()),
            "{value:?} left the device"
        );
    }
    planted
}

#[tokio::test]
async fn planted_values_never_leave_and_answers_come_back_restored() {
    let stub = Stub::start(Mode::Echo);
    let server = Server::start_with_config(Some(&config(&stub, "", &network_opt_in())), &[]);
    let lines = planted_lines();
    assert!(lines.len() > 150, "the corpus has its positives");
    let mut rng = Lcg(7);
    let mut planted: BTreeSet<String> = BTreeSet::new();
    let mut jobs = Vec::new();
    for i in 0..2000 {
        // Tool arguments travel as JSON: there, values that JSON escapes (quotes, newlines)
        // would come back escaped from the echoing stub, so those lines are picked elsewhere.
        let plain_only = i % 4 == 3;
        let mut pick = |plain: bool| loop {
            let (text, values) = &lines[rng.below(lines.len())];
            if plain && text.contains(['\n', '"', '\\']) {
                continue;
            }
            planted.extend(values.iter().cloned());
            break text.clone();
        };
        let (a, b) = (pick(plain_only), pick(false));
        let stream = i % 2 == 1;
        // (path, body, the messages the upstream is sent, stream)
        let job = match i % 4 {
            0 | 1 => {
                let messages = json!([{"role": "system", "content": format!("Context: {a}")},
                                      {"role": "user", "content": format!("Summarise this log line:\n{b}")}]);
                (
                    "/v1/chat/completions",
                    json!({"messages": messages, "max_tokens": 16, "stream": stream}),
                    messages,
                    stream,
                )
            }
            2 => {
                let prompt = format!("{a}\nand then\n{b}");
                (
                    "/v1/completions",
                    json!({"prompt": prompt, "max_tokens": 16, "stream": stream}),
                    json!([{"role": "user", "content": prompt}]),
                    stream,
                )
            }
            _ => {
                // Tool arguments and tool results carry planted values too.
                let arguments = json!({"note": a}).to_string();
                let messages = json!([
                    {"role": "user", "content": "File a ticket for this."},
                    {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "file_ticket", "arguments": arguments}}]},
                    {"role": "tool", "tool_call_id": "call_1", "content": b},
                ]);
                (
                    "/v1/chat/completions",
                    json!({"messages": messages, "max_tokens": 16, "stream": stream}),
                    messages,
                    stream,
                )
            }
        };
        jobs.push(job);
    }
    let server = &server;
    let results: Vec<(Reply, String, bool)> = futures::stream::iter(jobs)
        .map(|(path, body, messages, stream)| async move {
            let reply = post(server, path, &body, true).await;
            (reply, echo_text(&messages), stream)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for (reply, expected, stream) in &results {
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.tier, "cloud");
        assert_eq!(
            &answer_text(reply, *stream),
            expected,
            "the caller sees its own values again"
        );
    }
    assert_eq!(stub.received().len(), 2000);
    let sent = stub.bytes();
    let planted = none_left(&sent, &planted, 100);
    assert!(contains(&sent, b"<EMAIL_1>") && contains(&sent, b"<API_KEY_1>"));
    // Counted by category in /metrics and the audit log, never as text in the ledger file.
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("edgellm_redactions_total{category=\"email\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("edgellm_egress_requests_total 2000"));
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(server.data_dir.path()).unwrap() {
        stored.extend(std::fs::read(entry.unwrap().path()).unwrap_or_default());
    }
    assert!(stored.len() > 10_000, "the ledger holds the audit rows");
    for value in &planted {
        assert!(
            !contains(&stored, value.as_bytes()),
            "{value:?} is in the ledger"
        );
    }
}

/// Anthropic's `/v1/messages` goes through the same guard: `system`, text blocks, `tool_result`
/// blocks and tool descriptions leave redacted, whole and streamed, and the answer's text comes
/// back restored.
#[tokio::test]
async fn anthropic_messages_leave_redacted_and_come_back_restored() {
    let stub = Stub::start(Mode::Echo);
    let server = Server::start_with_config(Some(&config(&stub, "", &network_opt_in())), &[]);
    let mut planter = Planter::new(13);
    for i in 0..24 {
        let (a, b, c, d) = (
            planter.pick(),
            planter.pick(),
            planter.pick(),
            planter.pick(),
        );
        let stream = i % 2 == 1;
        let body = json!({
            "model": "any", "max_tokens": 16, "stream": stream, "system": a.0,
            "tools": [{"name": "file_ticket", "description": format!("Escalate to {}", d.0),
                       "input_schema": {"type": "object", "properties": {"note": {"type": "string"}}}}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": b.0}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "file_ticket", "input": {"note": "x"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": c.0}]},
            ],
        });
        let reply = post(&server, "/v1/messages", &body, true).await;
        assert_eq!(reply.status, 200, "{body}: {}", reply.text);
        assert_eq!(reply.tier, "cloud");
        let text: String = if stream {
            reply
                .text
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                .filter_map(|e| e["delta"]["text"].as_str().map(String::from))
                .collect()
        } else {
            let body: Value = serde_json::from_str(&reply.text).unwrap();
            body["content"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        for (_, values) in [&a, &b, &c] {
            for value in values {
                assert!(
                    text.contains(value.as_str()),
                    "{value:?} restored in {text}"
                );
            }
        }
    }
    assert_eq!(stub.received().len(), 24);
    none_left(&stub.bytes(), &planter.planted, 20);
}

/// Text in tool definitions, schemas, `instructions` and `stop` leaves redacted like the
/// messages do, the schemas stay valid, and the answer comes back with the values restored.
#[tokio::test]
async fn tool_definitions_and_schemas_leave_redacted_and_answers_come_back_restored() {
    let stub = Stub::start(Mode::Echo);
    let server = Server::start_with_config(Some(&config(&stub, "", &network_opt_in())), &[]);
    let mut planter = Planter::new(11);
    for i in 0..48 {
        let (a, b, c, d) = (
            planter.pick(),
            planter.pick(),
            planter.pick(),
            planter.pick(),
        );
        let stream = i % 2 == 1;
        let (path, body) = match i % 3 {
            0 => {
                let tools = json!([{"type": "function", "function": {
                    "name": "file_ticket",
                    "description": format!("Files a ticket. Escalate to {}", a.0),
                    "parameters": {"type": "object", "required": ["site"], "properties": {
                        "site": {"type": "string", "description": b.0, "enum": [c.0, "other"], "default": c.0},
                        "note": {"type": "string", "examples": [d.0]}}}}}]);
                (
                    "/v1/chat/completions",
                    json!({"messages": [{"role": "user", "content": "File a ticket."}],
                           "tools": tools, "tool_choice": "auto", "max_tokens": 16, "stream": stream}),
                )
            }
            1 => {
                let schema = json!({"type": "object", "description": a.0, "required": ["echo"],
                    "properties": {"echo": {"type": "string", "description": b.0}},
                    "examples": [{"echo": c.0}], "$comment": d.0});
                (
                    "/v1/chat/completions",
                    json!({"messages": [{"role": "user", "content": "Say it."}],
                           "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
                           "stop": [d.0], "max_tokens": 16, "stream": stream}),
                )
            }
            _ => {
                let schema = json!({"type": "object", "title": a.0,
                    "properties": {"echo": {"type": "string", "default": b.0}}});
                (
                    "/v1/responses",
                    json!({"instructions": format!("You work for {}", c.0), "input": d.0,
                           "text": {"format": {"type": "json_schema", "name": "x", "schema": schema}},
                           "max_output_tokens": 16, "stream": false}),
                )
            }
        };
        let reply = post(&server, path, &body, true).await;
        assert_eq!(reply.status, 200, "{body}: {}", reply.text);
        assert_eq!(reply.tier, "cloud");
        let text = if path == "/v1/responses" {
            let body: Value = serde_json::from_str(&reply.text).unwrap();
            body["output"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|item| item["content"].as_array().cloned().unwrap_or_default())
                .filter_map(|part| part["text"].as_str().map(String::from))
                .collect()
        } else {
            answer_text(&reply, stream)
        };
        for (_, values) in [&a, &b, &c, &d] {
            for value in values {
                assert!(
                    text.contains(value.as_str()),
                    "{value:?} restored in {text}"
                );
            }
        }
    }
    let received = stub.received();
    assert_eq!(received.len(), 48);
    // The schemas left as valid schemas, tools and all.
    for request in &received {
        if let Some(tools) = request.body["tools"].as_array() {
            let parameters = tools[0]["function"]["parameters"].clone();
            let parameters = if parameters.is_null() {
                tools[0]["parameters"].clone()
            } else {
                parameters
            };
            assert!(
                jsonschema::validator_for(&parameters).is_ok(),
                "{parameters}"
            );
            assert_eq!(tools.len(), 1);
        }
    }
    let redacted_descriptions = received
        .iter()
        .filter(|r| {
            r.body["tools"][0]["function"]["description"]
                .as_str()
                .is_some_and(|d| d.starts_with("Files a ticket. Escalate to ") && d.contains("_1>"))
        })
        .count();
    assert!(
        redacted_descriptions > 5,
        "tool descriptions leave with placeholders"
    );
    none_left(&stub.bytes(), &planter.planted, 40);
}

#[tokio::test]
async fn a_detector_fault_or_a_blocked_category_keeps_the_request_local() {
    let stub = Stub::start(Mode::Ok);
    let rest = format!(
        "test_fault_trigger = \"EDGELLM-FAULT\"\npolicy = {{ private_key = \"block\" }}\n{}",
        network_opt_in()
    );
    let server = Server::start_with_config(Some(&config(&stub, ALWAYS_ESCALATE, &rest)), &[]);
    let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----";
    for content in ["The marker EDGELLM-FAULT makes the detector fail.", key] {
        for stream in [false, true] {
            let body = json!({"messages": [{"role": "user", "content": content}],
                              "max_tokens": 4, "temperature": 0, "stream": stream});
            // Local wants to escalate; the guard says no: the local answer is kept.
            let kept = post(&server, "/v1/chat/completions", &body, false).await;
            assert_eq!(kept.status, 200, "{}", kept.text);
            assert_eq!(
                (kept.tier.as_str(), kept.reason.as_str()),
                ("local", "policy")
            );
            assert!(kept.text.contains("\"policy\""), "{}", kept.text);
            // Forced remote: nothing answers, and the error says why.
            let refused = post(&server, "/v1/chat/completions", &body, true).await;
            assert_eq!(refused.status, 503, "{}", refused.text);
            assert!(refused.text.contains("policy"), "{}", refused.text);
        }
    }
    assert!(stub.received().is_empty(), "nothing left the device");
    let fine = json!({"messages": [{"role": "user", "content": "Hello there."}], "max_tokens": 4});
    let sent = post(&server, "/v1/chat/completions", &fine, false).await;
    assert_eq!(
        (sent.tier.as_str(), sent.reason.as_str()),
        ("cloud", "low_confidence")
    );
    assert_eq!(stub.received().len(), 1);
}

#[tokio::test]
async fn opt_in_and_network_gates_from_supplied_sysfs() {
    let stub = Stub::start(Mode::Ok);
    let net = tempfile::tempdir().unwrap();
    let set = |iface: Option<&str>, kind: &str, up: bool| {
        let _ = std::fs::remove_dir_all(net.path().join("sys"));
        let _ = std::fs::remove_dir_all(net.path().join("proc"));
        fake_network(net.path(), iface, kind, up);
    };
    set(Some("eth0"), "ethernet", true);
    let network = format!(
        "[network]\nopt_in = true\nallowed_kinds = [\"ethernet\", \"cellular\"]\ndeny_metered = true\n\
         sys_root = \"{0}/sys\"\nproc_root = \"{0}/proc\"\n",
        net.path().display()
    );
    let server = Server::start_with_config(Some(&config(&stub, ALWAYS_ESCALATE, &network)), &[]);
    let cases = [
        (Some("eth0"), "ethernet", true, "cloud", "low_confidence"),
        (None, "ethernet", true, "local", "offline"),
        (Some("eth0"), "ethernet", false, "local", "offline"),
        (Some("wwan0"), "cellular", true, "local", "metered"),
        (
            Some("wlan0"),
            "wifi",
            true,
            "local",
            "network.allowed_kinds",
        ),
        (Some("eth1"), "ethernet", true, "cloud", "low_confidence"),
    ];
    for (iface, kind, up, tier, why) in cases {
        set(iface, kind, up);
        for stream in [false, true] {
            let body = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4,
                              "temperature": 0, "stream": stream});
            let reply = post(&server, "/v1/chat/completions", &body, false).await;
            assert_eq!(reply.status, 200, "{}", reply.text);
            assert_eq!(reply.tier, tier, "{iface:?} {kind} up={up}: {}", reply.text);
            if tier == "local" {
                assert_eq!(reply.reason, "policy");
            }
            assert!(reply.text.contains(why), "{why}: {}", reply.text);
        }
    }
    // Cloud is off unless the customer opted in.
    set(Some("eth0"), "ethernet", true);
    let off = Server::start_with_config(
        Some(&config(
            &stub,
            ALWAYS_ESCALATE,
            &network.replace("opt_in = true", "opt_in = false"),
        )),
        &[],
    );
    let body = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4});
    let reply = post(&off, "/v1/chat/completions", &body, false).await;
    assert_eq!(
        (reply.tier.as_str(), reply.reason.as_str()),
        ("local", "policy")
    );
    assert!(reply.text.contains("opt_in"), "{}", reply.text);
    let metrics = off.metrics().await;
    assert!(metrics.contains("edgellm_egress_blocked_total{reason=\"opt_in\"} 1"));
    assert_eq!(stub.received().len(), 4, "only the approved networks sent");
}

#[tokio::test]
async fn budget_caps_hold_under_50_concurrent_requests() {
    let stub = Stub::start(Mode::Slow(Duration::from_millis(50)));
    let budget = format!(
        "[budget]\nmax_requests_per_day = 20\nmax_cost_usd_per_day = 1.0\nmax_tokens_per_request = 64\n{}",
        network_opt_in()
    );
    let toml = config(&stub, ALWAYS_ESCALATE, &budget);
    let server = Server::start_with_config(Some(&toml), &[]);
    let server = &server;
    let replies: Vec<Reply> = futures::stream::iter(0..50)
        .map(|i| async move {
            let body = json!({"messages": [{"role": "user", "content": format!("Request {i}")}],
                              "max_tokens": 500});
            post(server, "/v1/chat/completions", &body, true).await
        })
        .buffer_unordered(50)
        .collect()
        .await;
    let answered = replies.iter().filter(|r| r.status == 200).count();
    assert_eq!(answered, 20, "exactly the cap's worth answered");
    for refused in replies.iter().filter(|r| r.status != 200) {
        // OpenAI's spent-quota answer, retried once the budget day (UTC here) turns.
        assert_eq!(refused.status, 429, "{}", refused.text);
        let error: Value = serde_json::from_str(&refused.text).unwrap();
        assert_eq!(error["error"]["type"], "insufficient_quota", "{error}");
        assert_eq!(error["error"]["code"], "insufficient_quota", "{error}");
        assert!(refused.text.contains("budget"), "{}", refused.text);
        let retry: u64 = refused.retry_after.parse().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let to_midnight = 86_400 - now % 86_400;
        let off = retry.abs_diff(to_midnight);
        assert!(off <= 5 || off >= 86_395, "{retry} vs {to_midnight}");
    }
    let received = stub.received();
    assert_eq!(received.len(), 20, "never past the cap");
    // The per-request cap lowered what was asked of the upstream.
    assert!(received.iter().all(|r| r.body["max_tokens"] == 64));
    // Spent: local keeps answering, with reason budget.
    let body = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4});
    let kept = post(server, "/v1/chat/completions", &body, false).await;
    assert_eq!(
        (kept.tier.as_str(), kept.reason.as_str()),
        ("local", "budget")
    );

    // `edgellm usage` and `edgellm audit` read the same ledger.
    let dir = server.data_dir.path().to_str().unwrap().to_string();
    let config_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config_file.path(), &toml).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(edgellm_bin())
            .args(args)
            .args([
                "--data-dir",
                &dir,
                "--config",
                config_file.path().to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let usage: Value = serde_json::from_str(&run(&["usage", "--json"])).unwrap();
    assert_eq!(usage["counted"]["requests"], 20, "{usage}");
    assert_eq!(usage["remaining"]["requests"], 0, "{usage}");
    // The stub reports 7 + 4 tokens per answer: settled at the real usage, priced per tier.
    assert_eq!(usage["settled"]["input_tokens"], 20 * 7, "{usage}");
    assert_eq!(usage["settled"]["cost_micros"], 20 * (7 + 8), "{usage}");
    let table = run(&["usage"]);
    assert!(
        table.contains("requests") && table.contains("20"),
        "{table}"
    );
    let audit = run(&["audit", "--json"]);
    let rows: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ok = rows.iter().filter(|r| r["outcome"] == "ok").count();
    let blocked = rows
        .iter()
        .filter(|r| r["outcome"].as_str().unwrap_or("").starts_with("blocked"))
        .count();
    assert_eq!((ok, blocked), (20, 31), "{audit}");
    assert!(rows.iter().all(|r| r["kind"] == "egress"));
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("edgellm_budget_remaining{kind=\"requests\"} 0"),
        "{metrics}"
    );
    assert!(metrics.contains("edgellm_egress_blocked_total{reason=\"budget\"} 31"));
}

#[tokio::test]
async fn kill_9_at_random_points_loses_and_doubles_nothing() {
    let stub = Stub::start(Mode::Slow(Duration::from_millis(40)));
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap().to_string();
    let toml = config(&stub, "", &network_opt_in());
    let mut rng = Lcg(42);
    let mut answered = 0usize;
    for round in 0..5 {
        let mut server = Server::start_with_config(Some(&toml), &["--data-dir", &dir]);
        let base = server.base.clone();
        let kill_after = Duration::from_millis(20 + rng.below(150) as u64);
        let requests = futures::stream::iter(0..12)
            .map(|i| {
                let url = format!("{base}/v1/chat/completions");
                async move {
                    let body = json!({"messages": [{"role": "user", "content": format!("r{round} n{i}")}],
                                      "max_tokens": 8, "stream": i % 2 == 0});
                    let response = client()
                        .post(url)
                        .header("x-edgellm-route", "remote")
                        .json(&body)
                        .send()
                        .await;
                    match response {
                        Ok(r) if r.status() == 200 => {
                            let text = r.text().await.unwrap_or_default();
                            // Whole, or a stream that reached its end.
                            text.contains("\"choices\"")
                                && (i % 2 == 1 || text.contains("[DONE]"))
                        }
                        _ => false,
                    }
                }
            })
            .buffer_unordered(12)
            .collect::<Vec<bool>>();
        let killer = async {
            tokio::time::sleep(kill_after).await;
            unsafe {
                libc::kill(server.pid(), libc::SIGKILL);
            }
        };
        let (results, ()) = tokio::join!(requests, killer);
        let _ = server.child.wait();
        answered += results.iter().filter(|ok| **ok).count();
    }
    // A fresh owner: leftover pending reservations become in doubt.
    let ledger = edgellm::ledger::Ledger::open_in(
        data.path(),
        edgellm::ledger::LedgerOptions::from_budget(
            &edgellm::guard::budget::BudgetConfig::default()
                .validate()
                .unwrap(),
        ),
        jiff::Timestamp::now(),
    )
    .unwrap();
    assert!(ledger.integrity_check().unwrap().is_ok());
    let rows = ledger
        .reservations(ledger.day_of(jiff::Timestamp::now()))
        .unwrap();
    let ids: BTreeSet<&str> = rows.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids.len(), rows.len(), "no reservation twice");
    let state = |s: &str| {
        rows.iter()
            .filter(|r| serde_json::to_value(r.state).unwrap() == s)
            .count()
    };
    assert_eq!(state("pending"), 0);
    let (settled, in_doubt) = (state("settled"), state("in_doubt"));
    // Every request that reached the upstream was reserved first, and is settled or in doubt.
    assert!(
        settled + in_doubt >= stub.received().len(),
        "{settled} settled + {in_doubt} in doubt < {} sent",
        stub.received().len()
    );
    // Every answer a client fully received was settled before it was sent.
    assert!(
        settled >= answered,
        "{settled} settled < {answered} answered"
    );
    let usage = ledger
        .usage_at(jiff::Timestamp::now(), &Default::default())
        .unwrap();
    assert_eq!(
        usage.in_doubt.requests as usize, in_doubt,
        "in doubt is counted"
    );
    assert_eq!(usage.counted.requests as usize, settled + in_doubt);
    // Every reservation found in doubt has its audit row, naming the request.
    let audited: BTreeSet<String> = ledger
        .audit_list(jiff::Timestamp::MIN, jiff::Timestamp::MAX, 100_000)
        .unwrap()
        .into_iter()
        .filter(|e| e.record.reason == "restart")
        .map(|e| e.record.request_id)
        .collect();
    let doubted: BTreeSet<String> = rows
        .iter()
        .filter(|r| serde_json::to_value(r.state).unwrap() == "in_doubt")
        .map(|r| r.request_id.clone())
        .collect();
    assert_eq!(audited, doubted);
}
