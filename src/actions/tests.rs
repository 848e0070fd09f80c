//! Actions: config validation, the refusal reasons, and each executor against real peers
//! (an axum webhook receiver, a Mosquitto broker, /bin programs).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::testutil::{Mosquitto, Subscriber, WebhookReceiver};
use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(toml_text: &str) -> Result<Vec<ActionSpec>, ActionError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        actions: Vec<RawAction>,
    }
    let file: File = toml::from_str(toml_text).expect("toml parses");
    validate_actions(&file.actions, &no_env)
}

fn make_registry(toml_text: &str) -> (ActionRegistry, Arc<MemoryAuditSink>) {
    let sink = Arc::new(MemoryAuditSink::new());
    let registry = ActionRegistry::new(parse(toml_text).unwrap(), sink.clone()).unwrap();
    (registry, sink)
}

fn allow(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn ctx(allowlist: &BTreeSet<String>) -> CallContext<'_> {
    CallContext {
        request_id: "req-1",
        task: None,
        allowlist,
        dry_run: false,
    }
}

fn call(name: &str, arguments: Value) -> ActionCall {
    ActionCall {
        name: name.into(),
        arguments,
    }
}

fn webhook_toml(url: &str, extra: &str) -> String {
    format!(
        r#"
[[actions]]
name = "notify"
description = "Notify the operator"
{extra}
[actions.parameters]
type = "object"
required = ["severity", "summary"]
additionalProperties = false
[actions.parameters.properties.severity]
type = "string"
enum = ["info", "warning", "critical"]
[actions.parameters.properties.summary]
type = "string"
maxLength = 200
[actions.webhook]
method = "PUT"
url = "{url}"
headers = {{ "x-edgellm-key" = "k1" }}
timeout_ms = 2000
"#
    )
}

#[test]
fn config_refuses_bad_declarations() {
    let base_params = r#"parameters = '{"type":"object","properties":{"unit":{"type":"string"}},"required":["unit"],"additionalProperties":false}'"#;
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "missing additionalProperties false",
            r#"[[actions]]
name = "a"
description = "d"
parameters = '{"type":"object","properties":{"x":{"type":"string"}}}'
[actions.program]
path = "/bin/true""#
                .into(),
            "additionalProperties = false",
        ),
        (
            "two executors",
            format!(
                "[[actions]]\nname = \"a\"\ndescription = \"d\"\n{base_params}\n[actions.program]\npath = \"/bin/true\"\n[actions.webhook]\nurl = \"http://127.0.0.1:1/x\"\n"
            ),
            "more than one executor",
        ),
        (
            "no executor",
            format!("[[actions]]\nname = \"a\"\ndescription = \"d\"\n{base_params}\n"),
            "exactly one executor",
        ),
        (
            "relative program path",
            format!(
                "[[actions]]\nname = \"a\"\ndescription = \"d\"\n{base_params}\n[actions.program]\npath = \"bin/restart\"\n"
            ),
            "must be absolute",
        ),
        (
            "placeholder inside an element",
            format!(
                "[[actions]]\nname = \"a\"\ndescription = \"d\"\n{base_params}\n[actions.program]\npath = \"/bin/echo\"\nargs = [\"--unit={{unit}}\"]\n"
            ),
            "whole element",
        ),
        (
            "placeholder naming no required parameter",
            format!(
                "[[actions]]\nname = \"a\"\ndescription = \"d\"\n{base_params}\n[actions.program]\npath = \"/bin/echo\"\nargs = [\"{{other}}\"]\n"
            ),
            "required parameter",
        ),
        (
            "wildcard in topic template",
            format!(
                "[[actions]]\nname = \"a\"\ndescription = \"d\"\n{base_params}\n[actions.mqtt]\nbroker = \"127.0.0.1:1883\"\ntopic = \"site/+/cmd\"\n"
            ),
            "wildcard",
        ),
        (
            "unsupported schema keyword",
            r#"[[actions]]
name = "a"
description = "d"
parameters = '{"type":"object","properties":{"x":{"type":"string","pattern":"^a"}},"additionalProperties":false}'
[actions.program]
path = "/bin/true""#
                .into(),
            "`pattern` is not supported",
        ),
        (
            "bad rate limit",
            format!(
                "[[actions]]\nname = \"a\"\ndescription = \"d\"\nrate_limit = \"often\"\n{base_params}\n[actions.program]\npath = \"/bin/true\"\n"
            ),
            "rate_limit",
        ),
        (
            "ftp webhook",
            format!(
                "[[actions]]\nname = \"a\"\ndescription = \"d\"\n{base_params}\n[actions.webhook]\nurl = \"ftp://example.com/x\"\n"
            ),
            "http(s)",
        ),
        (
            "duplicate name",
            format!(
                "[[actions]]\nname = \"a\"\ndescription = \"d\"\n{base_params}\n[actions.program]\npath = \"/bin/true\"\n\
                 [[actions]]\nname = \"a\"\ndescription = \"d\"\n{base_params}\n[actions.program]\npath = \"/bin/true\"\n"
            ),
            "duplicate",
        ),
    ];
    for (label, text, expected) in cases {
        let error = parse(&text).expect_err(label).to_string();
        assert!(error.contains(expected), "{label}: {error}");
    }
}

#[test]
fn unknown_config_keys_are_refused() {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[allow(dead_code)]
        actions: Vec<RawAction>,
    }
    let text = "[[actions]]\nname = \"a\"\ndescription = \"d\"\nparameters = {}\nshell = true\n";
    let error = toml::from_str::<File>(text).err().unwrap().to_string();
    assert!(error.contains("shell"), "{error}");
}

#[tokio::test]
async fn webhook_goes_to_the_fixed_url_and_method_with_the_arguments_as_body() {
    let receiver = WebhookReceiver::start(200).await;
    let (registry, sink) = make_registry(&webhook_toml(&receiver.url("/hook/alerts"), ""));
    let allowed = allow(&["notify"]);
    let args = json!({"severity": "warning", "summary": "disk 91%"});
    let outcome = registry
        .execute(&call("notify", args.clone()), &ctx(&allowed))
        .await;
    assert_eq!(
        outcome.outcome,
        Outcome::Executed {
            execution: Execution::Webhook { http_status: 200 }
        }
    );
    let hits = receiver.hits();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].method, "PUT");
    assert_eq!(hits[0].path, "/hook/alerts");
    assert_eq!(hits[0].body, args);
    assert!(
        hits[0]
            .headers
            .contains(&("x-edgellm-key".into(), "k1".into()))
    );

    let records = sink.records();
    assert_eq!(records.len(), 1);
    let (bytes, sha) = fingerprint(&args);
    assert_eq!(records[0].outcome, "executed");
    assert_eq!(records[0].status_code, Some(200));
    assert_eq!(records[0].argument_bytes, bytes);
    assert_eq!(records[0].arguments_sha256, sha);
    assert_eq!(records[0].request_id, "req-1");
    // The values themselves are not in the record.
    assert!(!format!("{:?}", records[0]).contains("disk 91%"));
}

#[tokio::test]
async fn webhook_error_status_is_a_failure_that_reports_the_status() {
    let receiver = WebhookReceiver::start(503).await;
    let (registry, sink) = make_registry(&webhook_toml(&receiver.url("/h"), ""));
    let allowed = allow(&["notify"]);
    let outcome = registry
        .execute(
            &call("notify", json!({"severity": "info", "summary": "x"})),
            &ctx(&allowed),
        )
        .await;
    assert_eq!(outcome.status(), "failed");
    assert!(matches!(
        outcome.outcome,
        Outcome::Failed {
            execution: Some(Execution::Webhook { http_status: 503 }),
            ..
        }
    ));
    assert_eq!(sink.records()[0].status_code, Some(503));
}

#[tokio::test]
async fn refusals_name_their_reason_and_never_reach_the_executor() {
    let receiver = WebhookReceiver::start(200).await;
    let (registry, sink) = make_registry(&webhook_toml(&receiver.url("/h"), ""));
    let allowed = allow(&["notify"]);
    let nobody = allow(&[]);
    let cases = [
        (
            call("wipe_disk", json!({})),
            &allowed,
            RefusalReason::UnknownAction,
        ),
        (
            call("notify", json!({"severity": "info", "summary": "x"})),
            &nobody,
            RefusalReason::NotAllowed,
        ),
        (
            call(
                "notify",
                json!({"severity": "info", "summary": "x", "url": "http://evil"}),
            ),
            &allowed,
            RefusalReason::InvalidArguments,
        ),
        (
            call("notify", json!({"severity": "apocalyptic", "summary": "x"})),
            &allowed,
            RefusalReason::InvalidArguments,
        ),
        (
            call("notify", json!({"severity": "info"})),
            &allowed,
            RefusalReason::InvalidArguments,
        ),
        (
            call("notify", json!("severity=info")),
            &allowed,
            RefusalReason::InvalidArguments,
        ),
        (
            call("notify", json!({"severity": "info", "summary": 7})),
            &allowed,
            RefusalReason::InvalidArguments,
        ),
    ];
    for (c, list, expected) in cases {
        let outcome = registry.execute(&c, &ctx(list)).await;
        assert_eq!(outcome.refusal(), Some(expected), "{c:?}");
    }
    assert!(receiver.hits().is_empty());
    let reasons: Vec<_> = sink
        .records()
        .iter()
        .map(|r| r.reason.clone().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "unknown_action",
            "not_allowed",
            "invalid_arguments",
            "invalid_arguments",
            "invalid_arguments",
            "invalid_arguments",
            "invalid_arguments"
        ]
    );
}

#[tokio::test]
async fn dry_run_validates_but_does_not_execute() {
    let receiver = WebhookReceiver::start(200).await;
    let (registry, sink) = make_registry(&webhook_toml(&receiver.url("/h"), ""));
    let allowed = allow(&["notify"]);
    let dry = CallContext {
        dry_run: true,
        ..ctx(&allowed)
    };
    let valid = call("notify", json!({"severity": "info", "summary": "x"}));
    assert_eq!(
        registry.execute(&valid, &dry).await.refusal(),
        Some(RefusalReason::DryRun)
    );
    // An invalid call is still reported as invalid, not as dry-run.
    let invalid = call("notify", json!({"severity": "info"}));
    assert_eq!(
        registry.execute(&invalid, &dry).await.refusal(),
        Some(RefusalReason::InvalidArguments)
    );
    assert!(receiver.hits().is_empty());
    assert!(
        sink.records()
            .iter()
            .all(|r| r.dry_run && r.outcome == "refused")
    );
}

#[tokio::test]
async fn rate_limit_refuses_calls_over_the_limit() {
    let receiver = WebhookReceiver::start(200).await;
    let (registry, _sink) =
        make_registry(&webhook_toml(&receiver.url("/h"), "rate_limit = \"2/min\""));
    let allowed = allow(&["notify"]);
    let valid = call("notify", json!({"severity": "info", "summary": "x"}));
    // Dry runs do not use up the budget.
    let dry = CallContext {
        dry_run: true,
        ..ctx(&allowed)
    };
    registry.execute(&valid, &dry).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(registry.execute(&valid, &ctx(&allowed)).await.refusal());
    }
    assert_eq!(
        statuses,
        [
            None,
            None,
            Some(RefusalReason::RateLimited),
            Some(RefusalReason::RateLimited)
        ]
    );
    assert_eq!(receiver.hits().len(), 2);
}

fn program_toml(path: &str, args: &str) -> String {
    format!(
        r#"
[[actions]]
name = "restart"
description = "Restart a unit"
parameters = '{{"type":"object","properties":{{"unit":{{"type":"string","maxLength":200}},"count":{{"type":"integer"}}}},"required":["unit","count"],"additionalProperties":false}}'
[actions.program]
path = "{path}"
args = {args}
timeout_ms = 3000
max_output_bytes = 64
"#
    )
}

#[tokio::test]
async fn program_argv_is_substituted_without_shell_interpretation() {
    let (registry, _) = make_registry(&program_toml(
        "/bin/echo",
        r#"["restart", "{unit}", "{count}"]"#,
    ));
    let allowed = allow(&["restart"]);
    let hostile = [
        "$(touch /tmp/pwned)",
        "a; rm -rf /",
        "*",
        "`id`",
        "x && echo hi",
        "$HOME",
    ];
    for unit in hostile {
        let outcome = registry
            .execute(
                &call("restart", json!({"unit": unit, "count": 3})),
                &ctx(&allowed),
            )
            .await;
        let Outcome::Executed {
            execution: Execution::Program {
                stdout, exit_code, ..
            },
        } = outcome.outcome
        else {
            panic!("{unit}: {outcome:?}");
        };
        assert_eq!(exit_code, Some(0));
        // echo printed the text verbatim: no substitution, no globbing, no second command.
        assert_eq!(stdout, format!("restart {unit} 3\n"), "{unit}");
    }
}

#[tokio::test]
async fn program_refuses_option_like_values_and_reports_failures() {
    let (registry, _) = make_registry(&program_toml("/bin/echo", r#"["{unit}", "{count}"]"#));
    let allowed = allow(&["restart"]);
    let outcome = registry
        .execute(
            &call("restart", json!({"unit": "--help", "count": 1})),
            &ctx(&allowed),
        )
        .await;
    assert_eq!(outcome.refusal(), Some(RefusalReason::InvalidArguments));

    let (failing, _) = make_registry(&program_toml("/bin/false", r#"["{unit}", "{count}"]"#));
    let outcome = failing
        .execute(
            &call("restart", json!({"unit": "a", "count": 1})),
            &ctx(&allowed),
        )
        .await;
    assert!(matches!(
        outcome.outcome,
        Outcome::Failed {
            execution: Some(Execution::Program {
                exit_code: Some(1),
                ..
            }),
            ..
        }
    ));
}

#[tokio::test]
async fn program_environment_is_cleared_and_output_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("show.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nenv | sort\nhead -c 1000 /dev/zero | tr '\\0' x\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (registry, _) = make_registry(&program_toml(
        script.to_str().unwrap(),
        r#"["{unit}", "{count}"]"#,
    ));
    let allowed = allow(&["restart"]);
    let outcome = registry
        .execute(
            &call("restart", json!({"unit": "a", "count": 1})),
            &ctx(&allowed),
        )
        .await;
    let Outcome::Executed {
        execution: Execution::Program {
            stdout, truncated, ..
        },
    } = outcome.outcome
    else {
        panic!("{outcome:?}");
    };
    assert!(truncated);
    assert_eq!(stdout.len(), 64);
    for line in stdout.lines().filter(|l| l.contains('=')) {
        let key = line.split('=').next().unwrap();
        assert!(
            ["PATH", "LANG", "PWD", "SHLVL", "_"].contains(&key),
            "leaked env {line}"
        );
    }
}

#[tokio::test]
async fn program_timeout_kills_the_child() {
    let text = program_toml("/bin/sleep", r#"["{count}"]"#)
        .replace("timeout_ms = 3000", "timeout_ms = 200");
    let text = text.replace(r#""required":["unit","count"]"#, r#""required":["count"]"#);
    let (registry, _) = make_registry(&text);
    let allowed = allow(&["restart"]);
    let started = std::time::Instant::now();
    let outcome = registry
        .execute(
            &call("restart", json!({"unit": "a", "count": 30})),
            &ctx(&allowed),
        )
        .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let Outcome::Failed { error, .. } = outcome.outcome else {
        panic!("{outcome:?}");
    };
    assert!(error.contains("timed out"), "{error}");
}

fn mqtt_toml(broker: &str) -> String {
    format!(
        r#"
[[actions]]
name = "valve"
description = "Close a valve at a site"
parameters = '{{"type":"object","properties":{{"site":{{"type":"string","maxLength":32}},"valve":{{"type":"integer"}}}},"required":["site","valve"],"additionalProperties":false}}'
[actions.mqtt]
broker = "{broker}"
topic = "site/{{site}}/valve/{{valve}}/close"
timeout_ms = 5000
"#
    )
}

#[tokio::test]
async fn mqtt_publishes_on_the_template_topic_and_refuses_structural_values() {
    let broker = Mosquitto::start();
    let mut sub = Subscriber::start(broker.port, "site/#").await;
    let (registry, sink) = make_registry(&mqtt_toml(&broker.address()));
    let allowed = allow(&["valve"]);
    let args = json!({"site": "north", "valve": 7});
    let outcome = registry
        .execute(&call("valve", args.clone()), &ctx(&allowed))
        .await;
    assert_eq!(
        outcome.outcome,
        Outcome::Executed {
            execution: Execution::Mqtt {
                topic: "site/north/valve/7/close".into()
            }
        }
    );
    let (topic, payload) = sub.next(Duration::from_secs(5)).await.expect("message");
    assert_eq!(topic, "site/north/valve/7/close");
    assert_eq!(serde_json::from_slice::<Value>(&payload).unwrap(), args);

    for site in ["a/b", "+", "#", "", "x\0y", "north/#"] {
        let outcome = registry
            .execute(
                &call("valve", json!({"site": site, "valve": 1})),
                &ctx(&allowed),
            )
            .await;
        assert_eq!(
            outcome.refusal(),
            Some(RefusalReason::InvalidArguments),
            "{site:?}"
        );
    }
    assert!(sub.next(Duration::from_millis(300)).await.is_none());
    assert_eq!(sink.records().len(), 7);
}

#[tokio::test]
async fn mqtt_unreachable_broker_is_a_failure_not_a_hang() {
    let port = super::testutil::free_port();
    let text =
        mqtt_toml(&format!("127.0.0.1:{port}")).replace("timeout_ms = 5000", "timeout_ms = 1000");
    let (registry, _) = make_registry(&text);
    let allowed = allow(&["valve"]);
    let outcome = registry
        .execute(
            &call("valve", json!({"site": "n", "valve": 1})),
            &ctx(&allowed),
        )
        .await;
    assert_eq!(outcome.status(), "failed");
}
