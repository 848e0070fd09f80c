//! The bridge against a real Mosquitto broker and a real webhook receiver: end to end, bad
//! payloads, a broker restart, backlog overflow, shutdown, and config validation.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::actions::testutil::{Mosquitto, Publisher, Subscriber, WebhookReceiver, eventually};
use crate::actions::{MemoryAuditSink, RawAction, validate_actions};
use crate::tasks::{RawTask, Task, TaskGeneration, TaskRequest, validate_tasks};

const WAIT: Duration = Duration::from_secs(10);

/// Answers every run with a summary of its data block and one `notify` call; optionally waits
/// for a permit per run, and reports each run's data.
struct FakeModel {
    permits: Option<Arc<Semaphore>>,
    calls: mpsc::UnboundedSender<String>,
}

impl TaskModel for FakeModel {
    fn generate(
        &self,
        request: TaskRequest,
    ) -> std::pin::Pin<
        Box<dyn Future<Output = Result<TaskGeneration, crate::tasks::ModelFailure>> + Send + '_>,
    > {
        Box::pin(async move {
            let lines: Vec<&str> = request.user.lines().collect();
            let data = lines[1..lines.len() - 1].join("|");
            let _ = self.calls.send(data.clone());
            if let Some(permits) = &self.permits {
                permits.acquire().await.map_err(|e| e.to_string())?.forget();
            }
            let text = json!({
                "result": {"severity": "warning", "summary": data},
                "actions": [{"name": "notify", "arguments": {"severity": "warning", "summary": "from mqtt"}}],
            });
            Ok(TaskGeneration {
                text: text.to_string(),
                tier: "local".into(),
            })
        })
    }
}

struct Setup {
    broker: Mosquitto,
    receiver: WebhookReceiver,
    counters: Arc<MqttCounters>,
    calls: mpsc::UnboundedReceiver<String>,
    shutdown: CancellationToken,
    bridge: tokio::task::JoinHandle<()>,
    task: Task,
}

fn output_schema() -> Value {
    json!({"type":"object","properties":{"severity":{"type":"string","enum":["info","warning","critical"]},"summary":{"type":"string"}},"required":["severity","summary"],"additionalProperties":false})
}

async fn setup(mqtt_extra: &str, sub_extra: &str, permits: Option<Arc<Semaphore>>) -> Setup {
    let broker = Mosquitto::start();
    let receiver = WebhookReceiver::start(200).await;
    let text = format!(
        r#"
[[actions]]
name = "notify"
description = "Tell the operator."
parameters = '{{"type":"object","properties":{{"severity":{{"type":"string","enum":["info","warning","critical"]}},"summary":{{"type":"string","maxLength":200}}}},"required":["severity","summary"],"additionalProperties":false}}'
[actions.webhook]
url = "{url}"

[[tasks]]
name = "triage"
instructions = "Triage these log lines."
output = '{output}'
actions = ["notify"]
max_input_bytes = 8192

[mqtt]
broker = "{broker}"
client_id = "edgellm-test-{id}"
reconnect_min_ms = 100
reconnect_max_ms = 400
{mqtt_extra}

[[mqtt.subscriptions]]
topic = "site/+/logs"
task = "triage"
window_ms = 300
max_batch_messages = 10
max_message_bytes = 1024
reply_topic = "site/{{1}}/triage"
{sub_extra}
"#,
        url = receiver.url("/notify"),
        output = output_schema(),
        broker = broker.address(),
        id = uuid::Uuid::new_v4().simple(),
    );
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        actions: Vec<RawAction>,
        tasks: Vec<RawTask>,
        mqtt: RawMqtt,
    }
    let file: File = toml::from_str(&text).unwrap();
    let registry = Arc::new(
        ActionRegistry::new(
            validate_actions(&file.actions, &|_| None).unwrap(),
            Arc::new(MemoryAuditSink::new()),
        )
        .unwrap(),
    );
    let tasks = validate_tasks(&file.tasks, &registry).unwrap();
    let config = file.mqtt.validate(&tasks, &|_| None).unwrap();
    let (tx, calls) = mpsc::unbounded_channel();
    let model = Arc::new(FakeModel { permits, calls: tx });
    let bridge = MqttBridge::new(config, &tasks, model, registry, false).unwrap();
    let counters = bridge.counters();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(bridge.run(shutdown.clone()));
    Setup {
        broker,
        receiver,
        counters,
        calls,
        shutdown,
        bridge: handle,
        task: tasks[0].clone(),
    }
}

/// The bridge is subscribed once a probe message on a matching topic is counted.
async fn wait_subscribed(s: &Setup, publisher: &mut Publisher) {
    for _ in 0..100 {
        let before = s.counters.snapshot().received;
        publisher.publish("site/probe/logs", Vec::new()).await;
        let counted = eventually(Duration::from_millis(200), || {
            s.counters.snapshot().received > before
        })
        .await;
        if counted {
            return;
        }
    }
    panic!("the bridge never subscribed");
}

async fn stop(s: Setup) {
    s.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), s.bridge)
        .await
        .expect("the bridge stops on shutdown")
        .unwrap();
}

#[tokio::test]
async fn a_log_batch_becomes_one_reply_and_one_action() {
    let s = setup("", "", None).await;
    let mut replies = Subscriber::start(s.broker.port, "site/+/triage").await;
    let mut publisher = Publisher::start(s.broker.port).await;
    wait_subscribed(&s, &mut publisher).await;
    let base = s.counters.snapshot();
    for line in ["nginx: worker died", "nginx: worker died", "disk /var 97%"] {
        publisher.publish("site/north/logs", line).await;
    }
    let (topic, payload) = replies.next(WAIT).await.expect("a reply");
    assert_eq!(topic, "site/north/triage");
    let reply: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(reply["source_topic"], json!("site/north/logs"));
    assert_eq!(reply["message_count"], json!(3));
    assert_eq!(reply["task"], json!("triage"));
    assert_eq!(reply["tier"], json!("local"));
    assert!(
        jsonschema::is_valid(&output_schema(), &reply["result"]),
        "{reply}"
    );
    assert_eq!(
        reply["result"]["summary"],
        json!("nginx: worker died|nginx: worker died|disk /var 97%")
    );
    assert_eq!(
        reply["actions"],
        json!([{"name": "notify", "status": "executed", "reason": null}])
    );
    // Exactly once, and no second batch follows.
    assert!(replies.next(Duration::from_millis(800)).await.is_none());
    let hits = s.receiver.hits();
    assert_eq!(hits.len(), 1);
    assert_eq!(
        hits[0].body,
        json!({"severity": "warning", "summary": "from mqtt"})
    );
    let now = s.counters.snapshot();
    assert_eq!(now.received - base.received, 3);
    assert_eq!(now.tasks_run, 1);
    assert!(eventually(WAIT, || s.counters.snapshot().published == 1).await);
    assert_eq!(s.task.name, "triage");
    stop(s).await;
}

#[tokio::test]
async fn malformed_empty_and_oversized_payloads_are_counted_and_dropped() {
    let s = setup("", "", None).await;
    let mut replies = Subscriber::start(s.broker.port, "site/+/triage").await;
    let mut publisher = Publisher::start(s.broker.port).await;
    wait_subscribed(&s, &mut publisher).await;
    let base = s.counters.snapshot();
    publisher
        .publish("site/south/logs", vec![0xff, 0xfe, 0x80, b'a'])
        .await;
    publisher.publish("site/south/logs", Vec::new()).await;
    publisher.publish("site/south/logs", "   ").await;
    publisher.publish("site/south/logs", vec![b'x'; 1025]).await;
    publisher.publish("site/south/logs", "good line").await;
    let (_, payload) = replies.next(WAIT).await.expect("a reply");
    let reply: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(reply["message_count"], json!(1));
    assert_eq!(reply["result"]["summary"], json!("good line"));
    let now = s.counters.snapshot();
    assert_eq!(now.received - base.received, 5);
    assert_eq!(now.malformed - base.malformed, 3);
    assert_eq!(now.dropped_oversize - base.dropped_oversize, 1);
    assert_eq!(s.receiver.hits().len(), 1);
    stop(s).await;
}

#[tokio::test]
async fn the_bridge_reconnects_and_resubscribes_after_a_broker_restart() {
    let mut s = setup("", "", None).await;
    {
        let mut publisher = Publisher::start(s.broker.port).await;
        wait_subscribed(&s, &mut publisher).await;
    }
    let port = std::mem::replace(&mut s.broker, Mosquitto::start()).stop();
    // The placeholder broker above is on another port; drop it and restart on the same one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(std::mem::replace(&mut s.broker, Mosquitto::start_on(port)));
    assert!(
        eventually(WAIT, || s.counters.snapshot().reconnects >= 1).await,
        "no reconnect: {:?}",
        s.counters.snapshot()
    );
    let mut replies = Subscriber::start(port, "site/+/triage").await;
    let mut publisher = Publisher::start(port).await;
    wait_subscribed(&s, &mut publisher).await;
    publisher.publish("site/east/logs", "after restart").await;
    let (topic, payload) = replies.next(WAIT).await.expect("a reply after the restart");
    assert_eq!(topic, "site/east/triage");
    let reply: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(reply["result"]["summary"], json!("after restart"));
    stop(s).await;
}

#[tokio::test]
async fn backlog_overflow_drops_the_oldest_batches() {
    let permits = Arc::new(Semaphore::new(0));
    let mut s = setup("max_backlog = 2", "", Some(permits.clone())).await;
    let mut replies = Subscriber::start(s.broker.port, "site/+/triage").await;
    let mut publisher = Publisher::start(s.broker.port).await;
    wait_subscribed(&s, &mut publisher).await;
    // The probe's empty payload was dropped as malformed; the first real batch blocks the model.
    publisher.publish("site/b0/logs", "m0").await;
    let first = tokio::time::timeout(WAIT, s.calls.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, "m0");
    let base = s.counters.snapshot();
    // Five one-message batches on five topics while the worker is busy: two fit.
    for i in 1..=5 {
        publisher
            .publish(&format!("site/b{i}/logs"), format!("m{i}"))
            .await;
    }
    assert!(eventually(WAIT, || s.counters.snapshot().received - base.received == 5).await);
    // Let the windows close.
    assert!(
        eventually(WAIT, || s.counters.snapshot().dropped_backlog == 3).await,
        "{:?}",
        s.counters.snapshot()
    );
    permits.add_permits(10);
    let mut seen = Vec::new();
    while let Some((_, payload)) = replies.next(Duration::from_secs(3)).await {
        let reply: Value = serde_json::from_slice(&payload).unwrap();
        seen.push(reply["result"]["summary"].as_str().unwrap().to_string());
    }
    assert_eq!(seen, ["m0", "m4", "m5"]);
    assert_eq!(s.counters.snapshot().dropped_backlog, 3);
    stop(s).await;
}

#[test]
fn mqtt_config_errors() {
    let sink = Arc::new(MemoryAuditSink::new());
    let registry = ActionRegistry::new(Vec::new(), sink).unwrap();
    let raw: RawTask = toml::from_str(
        "name = \"triage\"\ninstructions = \"x\"\noutput = { type = \"object\" }\nmax_input_bytes = 2048",
    )
    .unwrap();
    let tasks = validate_tasks(&[raw], &registry).unwrap();
    let base = "broker = \"127.0.0.1:1883\"\nclient_id = \"gw\"\n";
    let sub = |extra: &str| {
        format!(
            "{base}[[subscriptions]]\ntopic = \"site/+/logs\"\ntask = \"triage\"\nreply_topic = \"site/{{1}}/triage\"\n{extra}"
        )
    };
    let cases = [
        (
            "broker = \"nohost\"\nclient_id = \"gw\"\n".to_string(),
            "host:port",
        ),
        (format!("{base}keep_alive_s = 1\n"), "keep_alive_s"),
        (format!("{base}password_env = \"X\"\n"), "needs username"),
        (
            format!("{base}username = \"u\"\npassword_env = \"UNSET_VAR\"\n"),
            "UNSET_VAR",
        ),
        (sub("max_message_bytes = 4096"), "max_input_bytes"),
        (
            format!(
                "{base}[[subscriptions]]\ntopic = \"site/+/logs\"\ntask = \"nope\"\nreply_topic = \"x\"\n"
            ),
            "not configured",
        ),
        (
            format!(
                "{base}[[subscriptions]]\ntopic = \"site/+/logs\"\ntask = \"triage\"\nreply_topic = \"site/{{2}}/x\"\n"
            ),
            "'+' segment",
        ),
        (
            format!(
                "{base}[[subscriptions]]\ntopic = \"site/#\"\ntask = \"triage\"\nreply_topic = \"site/replies\"\n"
            ),
            "loop",
        ),
        (
            format!(
                "{base}[[subscriptions]]\ntopic = \"site/x#\"\ntask = \"triage\"\nreply_topic = \"r\"\n"
            ),
            "whole",
        ),
    ];
    for (text, expected) in cases {
        let raw: RawMqtt = toml::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let error = raw.validate(&tasks, &|_| None).unwrap_err().to_string();
        assert!(error.contains(expected), "{text}\n=> {error}");
    }
    let ok: RawMqtt = toml::from_str(&sub("max_message_bytes = 512\nwindow_ms = 100")).unwrap();
    let config = ok.validate(&tasks, &|_| None).unwrap();
    assert_eq!(config.subscriptions[0].limits.max_bytes, 2048);
    assert!(toml::from_str::<RawMqtt>(&format!("{base}qos = 2\n")).is_err());
}
