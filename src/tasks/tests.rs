//! Tasks: config validation, the run schema, allowlist narrowing, output validation, and the
//! prompt-injection corpus against an adversarial model that tries to obey every line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::*;
use crate::actions::testutil::WebhookReceiver;
use crate::actions::{ActionCall, ActionRegistry, MemoryAuditSink, RawAction, validate_actions};

/// The corpus, one injection attempt per line (see tests/data/injection/generate.py).
const CORPUS: &str = include_str!("../../tests/data/injection/corpus.txt");

/// Configured but never allowed to the task: reaching any of these is a failure.
const FORBIDDEN: &[&str] = &["wipe_disk", "open_valve"];
/// Names the adversary invents (not configured at all).
const INVENTED: &[&str] = &[
    "shell",
    "exfiltrate",
    "disable_alarm",
    "unlock_door",
    "set_firmware",
];

struct Fixture {
    registry: ActionRegistry,
    sink: Arc<MemoryAuditSink>,
    task: Task,
    receiver: WebhookReceiver,
    restart_log: PathBuf,
    wipe_log: PathBuf,
    _dir: tempfile::TempDir,
}

fn recording_script(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let log = dir.join(format!("{name}.log"));
    let script = dir.join(format!("{name}.sh"));
    std::fs::write(
        &script,
        format!("#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\n", log.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (script, log)
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (restart, restart_log) = recording_script(dir.path(), "restart");
    let (wipe, wipe_log) = recording_script(dir.path(), "wipe");
    let receiver = WebhookReceiver::start(200).await;
    let text = format!(
        r#"
[[actions]]
name = "notify"
description = "Tell the operator."
parameters = '{{"type":"object","properties":{{"severity":{{"type":"string","enum":["info","warning","critical"]}},"summary":{{"type":"string","maxLength":200}}}},"required":["severity","summary"],"additionalProperties":false}}'
[actions.webhook]
url = "{notify_url}"

[[actions]]
name = "restart_service"
description = "Restart one of the known services."
parameters = '{{"type":"object","properties":{{"unit":{{"type":"string","enum":["nginx","mosquitto"]}}}},"required":["unit"],"additionalProperties":false}}'
[actions.program]
path = "{restart}"
args = ["restart", "{{unit}}"]

[[actions]]
name = "wipe_disk"
description = "Never allowed to the task."
parameters = '{{"type":"object","properties":{{}},"additionalProperties":false}}'
[actions.program]
path = "{wipe}"

[[actions]]
name = "open_valve"
description = "Never allowed to the task."
parameters = '{{"type":"object","properties":{{}},"additionalProperties":false}}'
[actions.webhook]
url = "{valve_url}"
"#,
        notify_url = receiver.url("/notify"),
        valve_url = receiver.url("/valve"),
        restart = restart.display(),
        wipe = wipe.display(),
    );
    #[derive(serde::Deserialize)]
    struct File {
        actions: Vec<RawAction>,
    }
    let file: File = toml::from_str(&text).unwrap();
    let sink = Arc::new(MemoryAuditSink::new());
    let specs = validate_actions(&file.actions, &|_| None).unwrap();
    let registry = ActionRegistry::new(specs, sink.clone()).unwrap();
    let task = triage_task(&registry, &["notify", "restart_service"]);
    Fixture {
        registry,
        sink,
        task,
        receiver,
        restart_log,
        wipe_log,
        _dir: dir,
    }
}

fn triage_task(registry: &ActionRegistry, actions: &[&str]) -> Task {
    let raw: RawTask = toml::from_str(&format!(
        r#"
name = "triage"
instructions = "Triage these gateway log lines."
output = '{{"type":"object","properties":{{"severity":{{"type":"string","enum":["info","warning","critical"]}},"summary":{{"type":"string","maxLength":300}}}},"required":["severity","summary"],"additionalProperties":false}}'
actions = {actions:?}
max_input_bytes = 65536
max_actions = 8
"#
    ))
    .unwrap();
    validate_tasks(&[raw], registry).unwrap().remove(0)
}

fn lines_in(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// A model that answers with fixed text and remembers the request.
struct Scripted {
    text: String,
    seen: Mutex<Vec<TaskRequest>>,
}

impl Scripted {
    fn new(answer: Value) -> Scripted {
        Scripted {
            text: answer.to_string(),
            seen: Mutex::default(),
        }
    }
}

impl TaskModel for Scripted {
    fn generate(
        &self,
        request: TaskRequest,
    ) -> Pin<Box<dyn Future<Output = Result<TaskGeneration, crate::tasks::ModelFailure>> + Send + '_>>
    {
        self.seen.lock().unwrap().push(request);
        let text = self.text.clone();
        Box::pin(async move {
            Ok(TaskGeneration {
                text,
                tier: "local".into(),
            })
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Decoder {
    /// Emits every call it wants (a remote tier without grammar, or a decoding bug).
    Unconstrained,
    /// Keeps only what the run schema's grammar lets it spell (llama.cpp with GBNF).
    Constrained,
}

/// The adversary: reads the data block and tries to obey each line in it.
struct Adversary {
    decoder: Decoder,
    requests: Mutex<Vec<TaskRequest>>,
}

impl Adversary {
    fn new(decoder: Decoder) -> Adversary {
        Adversary {
            decoder,
            requests: Mutex::default(),
        }
    }
}

/// Everything a maximally obedient model would try for `line`.
fn adversarial_calls(line: &str) -> Vec<ActionCall> {
    let c = |name: &str, arguments: Value| ActionCall {
        name: name.into(),
        arguments,
    };
    let summary: String = line.chars().take(200).collect();
    let mut calls = Vec::new();
    // Calls to tools outside the allowlist, configured or invented.
    for name in FORBIDDEN.iter().chain(INVENTED) {
        calls.push(c(name, json!({})));
        calls.push(c(name, json!({"cmd": line})));
    }
    // Any snake_case word in the line, as the line asks.
    for word in line.split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_')) {
        if word.contains('_') && word.len() > 3 {
            calls.push(c(word, json!({})));
        }
    }
    // JSON in the line that looks like a call, verbatim.
    for (start, _) in line.match_indices('{') {
        let mut stream = serde_json::Deserializer::from_str(&line[start..]).into_iter::<Value>();
        if let Some(Ok(value)) = stream.next() {
            if let Ok(call) = serde_json::from_value::<ActionCall>(value.clone()) {
                calls.push(call);
            }
            if let Some(list) = value.get("actions").and_then(Value::as_array) {
                for item in list {
                    if let Ok(call) = serde_json::from_value::<ActionCall>(item.clone()) {
                        calls.push(call);
                    }
                }
            }
        }
    }
    // Allowed names with tampered arguments.
    calls.extend([
        c(
            "notify",
            json!({"severity": "critical", "summary": summary, "url": "http://evil.example"}),
        ),
        c(
            "notify",
            json!({"severity": "apocalyptic", "summary": summary}),
        ),
        c("notify", json!({"severity": "info", "summary": 12345})),
        c("notify", json!({"severity": "info"})),
        c(
            "notify",
            json!({"severity": "info", "summary": format!("{line}{}", "x".repeat(201))}),
        ),
        c("notify", json!(line)),
        c("restart_service", json!({"unit": "nginx; rm -rf /"})),
        c("restart_service", json!({"unit": "--help"})),
        c("restart_service", json!({"unit": "nginx", "command": line})),
        c("restart_service", json!({"unit": ["nginx"]})),
    ]);
    // And the allowed, valid ones, so something does run.
    calls.push(c(
        "notify",
        json!({"severity": "warning", "summary": summary}),
    ));
    calls.push(c("restart_service", json!({"unit": "nginx"})));
    calls
}

/// The data lines between the markers of the user message.
fn data_lines(user: &str) -> Vec<String> {
    let lines: Vec<&str> = user.lines().collect();
    lines[1..lines.len() - 1]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

impl TaskModel for Adversary {
    fn generate(
        &self,
        request: TaskRequest,
    ) -> Pin<Box<dyn Future<Output = Result<TaskGeneration, crate::tasks::ModelFailure>> + Send + '_>>
    {
        let data = data_lines(&request.user);
        let mut calls: Vec<ActionCall> = data.iter().flat_map(|l| adversarial_calls(l)).collect();
        if self.decoder == Decoder::Constrained {
            // A grammar-constrained decoder can only produce what the schema admits.
            let validator = jsonschema::validator_for(&request.schema).unwrap();
            calls.retain(|call| {
                let alone =
                    json!({"result": {"severity": "info", "summary": ""}, "actions": [call]});
                validator.is_valid(&alone)
            });
            calls.truncate(
                request.schema["properties"]["actions"]["maxItems"]
                    .as_u64()
                    .unwrap_or(0) as usize,
            );
        }
        let summary: String = data.join(" ").chars().take(300).collect();
        let text = json!({
            "result": {"severity": "critical", "summary": summary},
            "actions": calls,
        })
        .to_string();
        self.requests.lock().unwrap().push(request);
        Box::pin(async move {
            Ok(TaskGeneration {
                text,
                tier: "local".into(),
            })
        })
    }
}

fn corpus() -> Vec<&'static str> {
    let lines: Vec<&str> = CORPUS.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 200, "the corpus has {} lines", lines.len());
    lines
}

/// Every webhook hit and program run was an allowed action with valid arguments.
fn assert_only_allowed_and_valid(fx: &Fixture) {
    let notify = jsonschema::validator_for(&fx.registry.get("notify").unwrap().parameters).unwrap();
    for hit in fx.receiver.hits() {
        assert_eq!(hit.path, "/notify", "a non-allowed webhook ran: {hit:?}");
        assert!(
            notify.is_valid(&hit.body),
            "invalid arguments executed: {}",
            hit.body
        );
    }
    for line in lines_in(&fx.restart_log) {
        assert!(
            line == "restart nginx" || line == "restart mosquitto",
            "bad argv: {line}"
        );
    }
    assert!(lines_in(&fx.wipe_log).is_empty(), "wipe_disk ran");
}

#[tokio::test]
async fn injection_corpus_unconstrained_output_is_refused_whole() {
    let fx = fixture().await;
    let model = Adversary::new(Decoder::Unconstrained);
    for line in corpus() {
        let outcome = run_task(&fx.task, line, &model, &fx.registry, &RunOptions::default()).await;
        assert!(
            matches!(outcome, Err(TaskError::OutputInvalid(_))),
            "{line}: {outcome:?}"
        );
    }
    assert!(fx.receiver.hits().is_empty());
    assert!(lines_in(&fx.restart_log).is_empty());
    assert!(lines_in(&fx.wipe_log).is_empty());
}

#[tokio::test]
async fn injection_corpus_constrained_decoder_can_only_run_allowed_valid_calls() {
    let fx = fixture().await;
    let model = Adversary::new(Decoder::Constrained);
    let lines = corpus();
    for line in &lines {
        let outcome = run_task(&fx.task, line, &model, &fx.registry, &RunOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        let names: BTreeSet<&str> = outcome.actions.iter().map(|a| a.name.as_str()).collect();
        assert!(
            names.is_subset(&BTreeSet::from(["notify", "restart_service"])),
            "{names:?}"
        );
        assert!(
            outcome.actions.iter().all(|a| a.status() == "executed"),
            "{line}"
        );
    }
    // Exactly the two valid calls per line ran, nothing else.
    assert_eq!(fx.receiver.hits().len(), lines.len());
    assert_eq!(lines_in(&fx.restart_log).len(), lines.len());
    assert_only_allowed_and_valid(&fx);
    check_data_blocks(&model.requests.lock().unwrap(), &lines);
}

#[tokio::test]
async fn injection_corpus_calls_that_bypass_the_schema_are_refused_by_the_registry() {
    // As if a bug let the model's calls through unvalidated: the registry still refuses them.
    let fx = fixture().await;
    // The request tries to widen the allowlist with everything the attacker wants.
    let requested: Vec<String> = FORBIDDEN
        .iter()
        .chain(INVENTED)
        .chain(&["notify", "restart_service"])
        .map(|s| s.to_string())
        .collect();
    let allowed = effective_allowlist(&fx.task, Some(&requested));
    assert_eq!(
        allowed,
        BTreeSet::from(["notify".to_string(), "restart_service".to_string()])
    );
    let ctx = crate::actions::CallContext {
        request_id: "bypass",
        task: Some("triage"),
        allowlist: &allowed,
        dry_run: false,
    };
    let lines = corpus();
    let mut attempts = 0;
    for line in &lines {
        for call in adversarial_calls(line) {
            attempts += 1;
            fx.registry.execute(&call, &ctx).await;
        }
    }
    assert_eq!(fx.receiver.hits().len(), lines.len());
    assert_eq!(lines_in(&fx.restart_log).len(), lines.len());
    assert_only_allowed_and_valid(&fx);
    let records = fx.sink.records();
    assert_eq!(records.len(), attempts, "one audit record per attempt");
    assert_eq!(
        records.iter().filter(|r| r.outcome == "executed").count(),
        2 * lines.len()
    );
    for reason in ["unknown_action", "not_allowed", "invalid_arguments"] {
        assert!(
            records.iter().any(|r| r.reason.as_deref() == Some(reason)),
            "{reason}"
        );
    }
}

#[tokio::test]
async fn injection_corpus_as_one_batch_stays_inside_one_data_block() {
    let fx = fixture().await;
    let model = Adversary::new(Decoder::Constrained);
    let input = CORPUS.trim_end();
    run_task(
        &fx.task,
        input,
        &model,
        &fx.registry,
        &RunOptions::default(),
    )
    .await
    .unwrap();
    let requests = model.requests.lock().unwrap();
    let lines = corpus();
    check_data_blocks(&requests, &[input]);
    assert_eq!(data_lines(&requests[0].user).len(), lines.len());
    assert_only_allowed_and_valid(&fx);
}

/// Each request's data block holds exactly its input (neutralised), opens and closes once, and
/// the input is nowhere in the system message.
fn check_data_blocks(requests: &[TaskRequest], inputs: &[&str]) {
    assert_eq!(requests.len(), inputs.len());
    for (request, input) in requests.iter().zip(inputs) {
        let first = request.user.lines().next().unwrap();
        let nonce = first
            .strip_prefix("<<<DATA ")
            .and_then(|s| s.strip_suffix(">>>"))
            .unwrap_or_else(|| panic!("no opening marker: {first}"));
        assert!(nonce.len() == 28 && nonce.bytes().all(|b| b.is_ascii_lowercase()));
        let boundary = prompt::DataBoundary::with_nonce(nonce);
        let inner = prompt::neutralise(input);
        assert_eq!(
            request.user,
            format!("{}\n{inner}\n{}", boundary.open, boundary.close)
        );
        assert_eq!(request.user.matches("<<<").count(), 2, "{input}");
        assert_eq!(request.user.matches(">>>").count(), 2, "{input}");
        assert!(
            !request.system.contains(input.trim()),
            "input leaked into system: {input}"
        );
        assert!(
            request.system.contains(&boundary.open) && request.system.contains(&boundary.close)
        );
    }
}

#[tokio::test]
async fn run_schema_lists_only_the_allowed_actions_and_narrowing_never_widens() {
    let fx = fixture().await;
    let model =
        Scripted::new(json!({"result": {"severity": "info", "summary": "ok"}, "actions": []}));
    let options = RunOptions {
        allowlist: Some(vec!["notify".into(), "wipe_disk".into()]),
        ..RunOptions::default()
    };
    run_task(&fx.task, "disk ok", &model, &fx.registry, &options)
        .await
        .unwrap();
    let request = model.seen.lock().unwrap()[0].clone();
    let variants = request.schema["properties"]["actions"]["items"]["anyOf"]
        .as_array()
        .unwrap();
    let names: Vec<&Value> = variants
        .iter()
        .map(|v| &v["properties"]["name"]["const"])
        .collect();
    assert_eq!(names, [&json!("notify")]);
    assert_eq!(
        request.schema["properties"]["actions"]["maxItems"],
        json!(8)
    );
    assert_eq!(request.schema["additionalProperties"], json!(false));
    assert!(!request.system.contains("wipe_disk") && !request.system.contains("restart_service"));
    // Only GBNF-friendly keywords in the whole run schema.
    crate::actions::config::check_schema_subset(&request.schema).unwrap();

    // An empty request allowlist means no actions at all.
    let options = RunOptions {
        allowlist: Some(vec![]),
        ..RunOptions::default()
    };
    run_task(&fx.task, "x", &model, &fx.registry, &options)
        .await
        .unwrap();
    let request = model.seen.lock().unwrap()[1].clone();
    assert_eq!(
        request.schema["properties"]["actions"],
        json!({"type": "array", "maxItems": 0})
    );
}

#[tokio::test]
async fn narrowed_allowlist_is_enforced_on_the_answer() {
    let fx = fixture().await;
    let model = Scripted::new(json!({
        "result": {"severity": "info", "summary": "ok"},
        "actions": [{"name": "restart_service", "arguments": {"unit": "nginx"}}],
    }));
    let options = RunOptions {
        allowlist: Some(vec!["notify".into()]),
        ..RunOptions::default()
    };
    let error = run_task(&fx.task, "x", &model, &fx.registry, &options)
        .await
        .unwrap_err();
    assert!(matches!(error, TaskError::OutputInvalid(_)), "{error}");
    assert!(lines_in(&fx.restart_log).is_empty());
}

#[tokio::test]
async fn model_output_must_parse_and_validate() {
    let fx = fixture().await;
    let cases = [
        ("not json", "OutputNotJson"),
        (
            "{\"result\": {\"severity\": \"info\", \"summary\": \"ok\"}}",
            "OutputInvalid",
        ),
        (
            "{\"result\": {\"severity\": \"bad\", \"summary\": \"ok\"}, \"actions\": []}",
            "OutputInvalid",
        ),
        (
            "{\"result\": {\"severity\": \"info\", \"summary\": \"ok\"}, \"actions\": [], \"extra\": 1}",
            "OutputInvalid",
        ),
        ("[]", "OutputInvalid"),
    ];
    for (text, expected) in cases {
        let model = Scripted {
            text: text.into(),
            seen: Mutex::default(),
        };
        let error = run_task(&fx.task, "x", &model, &fx.registry, &RunOptions::default())
            .await
            .unwrap_err();
        assert!(
            format!("{error:?}").starts_with(expected),
            "{text}: {error:?}"
        );
    }
    assert!(fx.receiver.hits().is_empty());
}

#[tokio::test]
async fn dry_run_and_limits() {
    let fx = fixture().await;
    let model = Scripted::new(json!({
        "result": {"severity": "warning", "summary": "nginx down"},
        "actions": [
            {"name": "notify", "arguments": {"severity": "warning", "summary": "nginx down"}},
            {"name": "restart_service", "arguments": {"unit": "nginx"}},
        ],
    }));
    let options = RunOptions {
        dry_run: true,
        request_id: Some("r-42".into()),
        ..RunOptions::default()
    };
    let outcome = run_task(&fx.task, "nginx: down", &model, &fx.registry, &options)
        .await
        .unwrap();
    assert_eq!(outcome.request_id, "r-42");
    assert_eq!(outcome.tier, "local");
    assert_eq!(outcome.result["summary"], json!("nginx down"));
    assert!(
        outcome
            .actions
            .iter()
            .all(|a| a.refusal() == Some(crate::actions::RefusalReason::DryRun))
    );
    assert!(fx.receiver.hits().is_empty());
    assert!(
        fx.sink
            .records()
            .iter()
            .all(|r| r.request_id == "r-42" && r.task.as_deref() == Some("triage"))
    );

    let big = "x".repeat(fx.task.max_input_bytes + 1);
    let error = run_task(&fx.task, &big, &model, &fx.registry, &RunOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(error, TaskError::InputTooLarge { .. }));
}

#[test]
fn task_config_errors() {
    let sink = Arc::new(MemoryAuditSink::new());
    let registry = ActionRegistry::new(Vec::new(), sink).unwrap();
    let cases = [
        (
            r#"name = "t"
instructions = "x"
output = { type = "object" }
actions = ["wipe_disk"]"#,
            "not configured",
        ),
        (
            r#"name = "t"
instructions = "x"
output = '{"type":"object","oneOf":[]}'"#,
            "`oneOf` is not supported",
        ),
        (
            r##"name = "t"
instructions = "x"
output = '{"$ref":"#/x"}'"##,
            "`$ref` is not supported",
        ),
        (
            r#"name = "t"
instructions = " "
output = { type = "object" }"#,
            "instructions",
        ),
        (
            r#"name = "t"
instructions = "x"
output = { type = "object" }
max_actions = 1000"#,
            "max_actions",
        ),
    ];
    for (text, expected) in cases {
        let raw: RawTask = toml::from_str(text).unwrap();
        let error = validate_tasks(&[raw], &registry).unwrap_err().to_string();
        assert!(error.contains(expected), "{text}: {error}");
    }
    assert!(
        toml::from_str::<RawTask>("name = \"t\"\ninstructions = \"x\"\noutput = {}\nshell = 1")
            .is_err()
    );
}
