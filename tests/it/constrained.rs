//! Structured output against the real server and model: the regression corpus of shapes that
//! once aborted, exhausted or wedged the process, 2,000+ generated schema and grammar mutations
//! (0 exits, resident memory bounded, every error in OpenAI's shape, the next request answers),
//! 500 random valid schemas whose output always validates, and forced tokens (jump-forward)
//! giving the same bytes as sampling every token.

use futures::StreamExt;
use serde_json::{Value, json};

use crate::server::Server;

fn client() -> reqwest::Client {
    crate::support::http_client()
}

/// Sends raw bytes as a JSON body; the status and the parsed answer (Null if not JSON).
async fn send(
    client: &reqwest::Client,
    server: &Server,
    path: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let response = client
        .post(server.url(path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: no answer (did the server die?): {e:?}"));
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn send_json(
    client: &reqwest::Client,
    server: &Server,
    path: &str,
    body: &Value,
) -> (u16, Value) {
    send(client, server, path, body.to_string().into_bytes()).await
}

fn assert_error_shape(body: &Value, context: &str) {
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{context}: {body}"
    );
    assert!(error["type"].is_string(), "{context}: {body}");
    assert!(
        error.get("param").is_some() && error.get("code").is_some(),
        "{context}: {body}"
    );
}

fn resident_kib(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn assert_alive(server: &mut Server) {
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server exited"
    );
}

/// An ordinary request answers with text.
async fn ordinary_request_answers(client: &reqwest::Client, server: &Server) {
    let body = json!({"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0});
    let (status, answer) = send_json(client, server, "/v1/completions", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["choices"][0]["text"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{answer}"
    );
}

/// The constraint machinery warmed up (vocabulary trie built, first compiles done), so the
/// resident memory measured after it is the baseline.
async fn warm_up(client: &reqwest::Client, server: &Server) {
    for body in [
        json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "response_format": {"type": "json_object"}}),
        json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}}}),
    ] {
        let (status, answer) = send_json(client, server, "/v1/chat/completions", &body).await;
        assert_eq!(status, 200, "{answer}");
    }
    let body = json!({"prompt": "hi", "n_predict": 3, "grammar": "root ::= [a-z]+"});
    let (status, answer) = send_json(client, server, "/completion", &body).await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_corpus_never_takes_the_server_down() {
    let mut server = Server::start(&[]);
    let client = client();
    warm_up(&client, &server).await;
    let corpus = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/constraint/regressions.jsonl"),
    )
    .unwrap();
    let mut count = 0;
    for line in corpus.lines().filter(|l| !l.trim().is_empty()) {
        let case: Value = serde_json::from_str(line).unwrap();
        let name = case["name"].as_str().unwrap();
        let path = case["path"].as_str().unwrap();
        let mut body = case["body"].clone();
        if let Some(n) = case["alternatives"].as_u64() {
            let alternatives: Vec<String> = (0..n).map(|i| format!("\"w{i}x\"")).collect();
            body["grammar"] = json!(format!("root ::= {}", alternatives.join(" | ")));
        }
        if let Some(n) = case["nested"].as_u64() {
            let n = n as usize;
            body["grammar"] = json!(format!("root ::= {}\"a\"{}", "(".repeat(n), ")".repeat(n)));
        }
        let bytes = match body["raw"].as_str() {
            Some(raw) => raw.as_bytes().to_vec(),
            None => body.to_string().into_bytes(),
        };
        let (status, answer) = send(&client, &server, path, bytes).await;
        let expected = case["status"].as_u64().unwrap() as u16;
        assert_eq!(status, expected, "{name}: {answer}");
        if status != 200 {
            assert_error_shape(&answer, name);
            if let Some(param) = case["param"].as_str() {
                assert_eq!(answer["error"]["param"], param, "{name}: {answer}");
            }
        }
        assert_alive(&mut server);
        count += 1;
    }
    assert!(count >= 30, "{count} cases");
    ordinary_request_answers(&client, &server).await;
    // The answer to a known path with the wrong method is OpenAI-shaped too.
    let response = client
        .get(server.url("/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    let body: Value = response.json().await.unwrap();
    assert_error_shape(&body, "405");
}

/// A deterministic generator (xorshift), so a failing case can be replayed by its index.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const NUMBERS: &[&str] = &[
    "-1",
    "0",
    "1",
    "2",
    "3",
    "7",
    "64",
    "1000000000",
    "1.5",
    "-0.5",
    "\"x\"",
    "null",
    "true",
    "1e308",
];
const KEYWORDS: &[&str] = &[
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minProperties",
    "maxProperties",
];
const PATTERNS: &[&str] = &[
    "^[a-c]+$",
    "((",
    "a{2,1}",
    "^(a|aa)*$",
    "[z-a]",
    "\\d{3}-\\d{4}",
    ".*",
    "(?i)abc",
];

fn mutated_schema(g: &mut Gen) -> Value {
    let bases = [
        json!({"type": "string"}),
        json!({"type": "integer"}),
        json!({"type": "number"}),
        json!({"type": "array", "items": {"type": "string"}}),
        json!({"type": "object", "properties": {"k": {"type": "string"}, "n": {"type": "integer"}}, "required": ["k"]}),
        json!({"enum": ["red", "green", 3, null]}),
        json!({"anyOf": [{"type": "string"}, {"type": "boolean"}]}),
    ];
    let mut schema = g.pick(&bases).clone();
    for _ in 0..1 + g.below(3) {
        match g.below(9) {
            0..=3 => {
                let key = *g.pick(KEYWORDS);
                let number = g.pick::<&str>(NUMBERS);
                let value: Value = serde_json::from_str(number).unwrap();
                schema[key] = value;
            }
            4 => schema["pattern"] = json!(g.pick(PATTERNS)),
            5 => {
                let enum_values: Vec<Value> =
                    (0..g.below(4)).map(|i| json!(format!("v{i}"))).collect();
                schema["enum"] = json!(enum_values);
            }
            6 => schema["type"] = json!(*g.pick(&["strin", "object", "null", "array", "boolean"])),
            7 => {
                for _ in 0..g.below(70) {
                    schema = json!({"type": "array", "items": schema});
                }
            }
            _ => {
                schema["$ref"] =
                    json!(*g.pick(&["#/$defs/x", "#", "http://127.0.0.1:9/s", "#/properties/k"]))
            }
        }
    }
    if g.chance(20) {
        schema = json!({"type": "object", "properties": {"inner": schema}, "required": ["inner"], "additionalProperties": g.chance(50)});
    }
    schema
}

const FRAGMENTS: &[&str] = &[
    "\"a\"",
    "\"yes\" | \"no\"",
    "[a-z]",
    "[z-a]",
    "[0-9]+",
    "[^\"\\\\]*",
    "x",
    ".",
    "<[1]>",
    "<[99999999]>",
    "(\"b\" | c)",
    "\"\\q\"",
    "\"\\x41\"",
    "[a-",
    "(",
    ")",
    "*",
    "{2,1}",
    "{1,3}",
    "{100000}",
    "\"ab\"{0,5}",
];

fn mutated_grammar(g: &mut Gen) -> String {
    let mut body = String::new();
    for _ in 0..1 + g.below(5) {
        let fragment = g.pick::<&str>(FRAGMENTS);
        body.push_str(fragment);
        body.push(' ');
    }
    if g.chance(15) {
        let depth = g.below(120);
        body = format!("{}{body}{}", "(".repeat(depth), ")".repeat(depth));
    }
    let mut grammar = format!("root ::= {body}");
    if g.chance(60) {
        grammar.push_str(&format!("\nx ::= {}\nc ::= \"c\"", g.pick(FRAGMENTS)));
    }
    if g.chance(10) {
        let cut = g.below(grammar.len() + 1);
        grammar.truncate(grammar.floor_char_boundary(cut));
    }
    grammar
}

/// One generated request: where it goes and its body.
fn mutated_case(g: &mut Gen) -> (&'static str, Value) {
    match g.below(5) {
        0 => (
            "/completion",
            json!({"prompt": "Answer:", "n_predict": 3, "grammar": mutated_grammar(g)}),
        ),
        1 => (
            "/completion",
            json!({"prompt": "Answer:", "n_predict": 3, "json_schema": mutated_schema(g)}),
        ),
        2 => (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
                   "response_format": {"type": "json_schema", "json_schema": {"name": "m", "schema": mutated_schema(g)}}}),
        ),
        3 => {
            let parameters = json!({"type": "object", "properties": {"p": mutated_schema(g)}});
            (
                "/v1/chat/completions",
                json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
                       "tools": [{"type": "function", "function": {"name": "f", "parameters": parameters}}]}),
            )
        }
        _ => (
            "/v1/responses",
            json!({"input": "hi", "max_output_tokens": 16,
                   "text": {"format": {"type": "json_schema", "name": "m", "schema": mutated_schema(g)}}}),
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_schema_and_grammar_mutations_are_answered_or_refused() {
    let mut server = Server::start(&[]);
    let client = client();
    warm_up(&client, &server).await;
    let baseline = resident_kib(&server);
    let mut g = Gen(0x9E37_79B9_7F4A_7C15);
    let cases: Vec<(usize, &'static str, Value)> = (0..2100)
        .map(|i| {
            let (path, body) = mutated_case(&mut g);
            (i, path, body)
        })
        .collect();
    let (mut answered, mut refused, mut peak) = (0, 0, baseline);
    for chunk in cases.chunks(100) {
        let results: Vec<(usize, u16, Value)> = futures::stream::iter(chunk.iter().cloned())
            .map(|(i, path, body)| {
                let client = client.clone();
                let server = &server;
                async move {
                    let (status, answer) = send_json(&client, server, path, &body).await;
                    (i, status, answer)
                }
            })
            .buffer_unordered(4)
            .collect()
            .await;
        for (i, status, answer) in results {
            let case = &cases[i];
            match status {
                200 => answered += 1,
                400 => {
                    refused += 1;
                    assert_error_shape(&answer, &format!("case {i} {} {}", case.1, case.2));
                }
                other => panic!(
                    "case {i}: status {other} for {} {}: {answer}",
                    case.1, case.2
                ),
            }
        }
        assert_alive(&mut server);
        peak = peak.max(resident_kib(&server));
        assert!(
            peak <= baseline + 64 * 1024,
            "resident memory {peak} KiB, more than 64 MiB above the {baseline} KiB baseline"
        );
    }
    assert!(
        answered >= 300 && refused >= 300,
        "answered {answered}, refused {refused}"
    );
    ordinary_request_answers(&client, &server).await;
}

/// A random valid schema with short, bounded values (so greedy output ends well inside
/// max_tokens): names and words come from this generator, not from anything the code ships.
fn valid_schema(g: &mut Gen, depth: usize) -> Value {
    let syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pu"];
    let word =
        |g: &mut Gen| -> String { (0..2 + g.below(2)).map(|_| *g.pick(&syllables)).collect() };
    let count = 1 + g.below(3);
    let mut properties = serde_json::Map::new();
    for _ in 0..count {
        let name = word(g);
        let value = match g.below(if depth == 0 { 7 } else { 6 }) {
            0 => json!({"type": "boolean"}),
            1 => {
                let low = g.below(50) as i64 - 10;
                json!({"type": "integer", "minimum": low, "maximum": low + g.below(500) as i64})
            }
            2 => json!({"type": "string", "maxLength": 1 + g.below(10)}),
            3 => {
                let values: Vec<String> = (0..2 + g.below(3)).map(|_| word(g)).collect();
                json!({"enum": values})
            }
            4 => {
                let values: Vec<String> = (0..2 + g.below(2)).map(|_| word(g)).collect();
                json!({"type": "array", "items": {"enum": values}, "maxItems": 1 + g.below(3)})
            }
            5 => json!({"type": ["string", "null"], "maxLength": 1 + g.below(6)}),
            _ => valid_schema(g, depth + 1),
        };
        properties.insert(name, value);
    }
    let required: Vec<String> = properties.keys().cloned().collect();
    json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
}

/// The first choice of a greedy chat answer constrained by `schema` (with log probabilities).
async fn constrained_choice(client: &reqwest::Client, server: &Server, schema: &Value) -> Value {
    let body = json!({
        "messages": [{"role": "user", "content": "Fill in the record as JSON."}],
        "max_tokens": 160, "temperature": 0, "logprobs": true,
        "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}},
    });
    let (status, answer) = send_json(client, server, "/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{schema}: {answer}");
    answer["choices"][0].clone()
}

/// The answer's content and finish reason.
async fn constrained_content(
    client: &reqwest::Client,
    server: &Server,
    schema: &Value,
) -> (String, String) {
    let choice = constrained_choice(client, server, schema).await;
    (
        choice["message"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        choice["finish_reason"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_of_500_random_valid_schemas_always_validates() {
    let server = Server::start(&[]);
    let client = client();
    let mut g = Gen(0xD1B5_4A32_D192_ED03);
    let schemas: Vec<Value> = (0..500).map(|_| valid_schema(&mut g, 0)).collect();
    let results: Vec<(usize, String, String)> = futures::stream::iter(schemas.iter().enumerate())
        .map(|(i, schema)| {
            let client = client.clone();
            let server = &server;
            async move {
                let (content, finish) = constrained_content(&client, server, schema).await;
                (i, content, finish)
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    let mut cut = 0;
    for (i, content, finish) in results {
        let schema = &schemas[i];
        if finish == "length" {
            cut += 1;
            continue;
        }
        assert_eq!(finish, "stop", "{schema}");
        let value: Value =
            serde_json::from_str(&content).unwrap_or_else(|e| panic!("{schema}: {content:?}: {e}"));
        let validator = jsonschema::validator_for(schema).unwrap();
        assert!(validator.is_valid(&value), "{schema}: {content}");
    }
    assert!(cut <= 25, "{cut} of 500 answers were cut by max_tokens");
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("edgellm_constraint_mask_seconds_count"),
        "{metrics}"
    );
}

/// The answer's tokens, each with whether it was forced (a forced token's log probability is
/// exactly 0: no logits were computed for it), and the content.
async fn constrained_tokens(
    client: &reqwest::Client,
    server: &Server,
    schema: &Value,
) -> (Vec<(String, bool)>, String) {
    let choice = constrained_choice(client, server, schema).await;
    let tokens = choice["logprobs"]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["token"].as_str().unwrap().to_string(),
                t["logprob"].as_f64() == Some(0.0),
            )
        })
        .collect();
    (
        tokens,
        choice["message"]["content"].as_str().unwrap().to_string(),
    )
}

/// Jump-forward appends exactly the tokens sampling would pick (the only one each mask
/// allows), and decoding them in one batch gives the same logits and KV entries, bit for bit,
/// as decoding them one by one (no weight repacking, and at most 7 rows a step: see the
/// engine's `MAX_FORCED_PER_STEP`): so under greedy decoding a forced run and a sampled run are byte-identical,
/// every one of them. The schemas are random valid ones, plus one whose constant is longer than
/// a step's forced batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_tokens_are_the_tokens_sampling_picks() {
    let forced = Server::start(&["--slots", "1"]);
    let sampled = Server::start(&["--slots", "1", "--jump-forward", "off"]);
    // 82 answers of up to 160 tokens, one after another, while the rest of the suite loads the
    // same two cores: more than the shared client's 120 s per request can be needed.
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(600))
        .build()
        .unwrap();
    let mut g = Gen(0x2545_F491_4F6C_DD1D);
    let long = "pump station four reports nominal pressure on every line, ".repeat(8);
    let mut schemas = vec![json!({"type": "object",
        "properties": {"status": {"const": long}, "note": {"type": "string", "maxLength": 40}},
        "required": ["status", "note"], "additionalProperties": false})];
    schemas.extend((0..40).map(|_| valid_schema(&mut g, 0)));
    let mut most_forced = 0;
    for schema in &schemas {
        let (with, with_text) = constrained_tokens(&client, &forced, schema).await;
        let (without, without_text) = constrained_tokens(&client, &sampled, schema).await;
        assert!(
            without.iter().all(|(_, f)| !f),
            "{schema}: forced tokens with jump-forward off"
        );
        let tokens = |run: &[(String, bool)]| run.iter().map(|t| t.0.clone()).collect::<Vec<_>>();
        assert_eq!(tokens(&with), tokens(&without), "{schema}: token by token");
        assert_eq!(with_text, without_text, "{schema}");
        most_forced = most_forced.max(with.iter().filter(|(_, f)| *f).count());
    }
    // The long constant forced more tokens than one step takes.
    assert!(
        most_forced > 6,
        "at most {most_forced} forced tokens in one answer"
    );
    let count = |metrics: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("edgellm_constraint_forced_tokens_total "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(count(&forced.metrics().await) > 100.0);
    assert_eq!(count(&sampled.metrics().await), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_by_max_tokens_is_finish_reason_length() {
    let server = Server::start(&[]);
    let client = client();
    let schema = json!({"type": "object", "properties": {"summary": {"type": "string", "minLength": 200}}, "required": ["summary"]});
    let body = json!({"messages": [{"role": "user", "content": "Summarise."}], "max_tokens": 6,
                      "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}});
    let (status, answer) = send_json(&client, &server, "/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["choices"][0]["finish_reason"], "length", "{answer}");
    let tools = json!([{"type": "function", "function": {"name": "note", "parameters": {"type": "object",
        "properties": {"text": {"type": "string", "minLength": 100}}, "required": ["text"]}}}]);
    let body = json!({"messages": [{"role": "user", "content": "Take a note."}], "max_tokens": 5,
                      "tools": tools, "tool_choice": "required"});
    let (status, answer) = send_json(&client, &server, "/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["choices"][0]["finish_reason"], "length", "{answer}");
    assert!(
        answer["choices"][0]["message"]["tool_calls"].is_null(),
        "{answer}"
    );
}

/// llama-server's top-level `json_schema` and `grammar` on `/v1/chat/completions` constrain the
/// answer (they were ignored before: unconstrained output with a 200); combined with each
/// other, with `response_format` or with tools, they are a 400 naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_takes_llama_server_json_schema_and_grammar() {
    let server = Server::start(&[]);
    let client = client();
    let messages = json!([{"role": "user", "content": "Is the pump running? Answer."}]);
    let schema = json!({"type": "object", "properties": {"running": {"type": "boolean"}},
                        "required": ["running"], "additionalProperties": false});
    let body =
        json!({"messages": messages, "max_tokens": 20, "temperature": 0, "json_schema": schema});
    let (status, answer) = send_json(&client, &server, "/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{answer}");
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    let value: Value = serde_json::from_str(content).unwrap_or_else(|e| panic!("{e}: {content}"));
    assert!(
        value["running"].is_boolean() && value.as_object().unwrap().len() == 1,
        "{value}"
    );
    let body =
        json!({"messages": messages, "max_tokens": 8, "grammar": "root ::= \"yes\" | \"no\""});
    let (status, answer) = send_json(&client, &server, "/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{answer}");
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content == "yes" || content == "no", "{content}");
    let tools =
        json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]);
    for (extra, field) in [
        (
            json!({"json_schema": schema, "grammar": "root ::= \"a\""}),
            "grammar",
        ),
        (
            json!({"grammar": "root ::= \"a\"", "response_format": {"type": "json_object"}}),
            "response_format",
        ),
        (json!({"json_schema": schema, "tools": tools}), "tools"),
        (json!({"json_schema": "not an object"}), "json_schema"),
    ] {
        let mut body = json!({"messages": messages, "max_tokens": 4});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, answer) = send_json(&client, &server, "/v1/chat/completions", &body).await;
        assert_eq!(status, 400, "{extra}: {answer}");
        assert_eq!(answer["error"]["param"], field, "{extra}: {answer}");
    }
}
