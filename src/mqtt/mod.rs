//! The MQTT bridge: subscribes (QoS 1) to configured topic filters, batches messages per
//! concrete topic over a window, runs the subscription's task on each batch
//! ([`crate::tasks::run_task`]) and publishes the structured result (QoS 1) to a reply topic.
//!
//! Two tokio tasks: the connection task owns rumqttc's event loop (receives, resubscribes after
//! every reconnect, backs off exponentially on errors); the worker runs one batch at a time (an
//! edge device has one model). They share the [`batch::Batcher`], whose bounded backlog drops
//! the oldest batch on overflow. Bad input is counted and dropped, never fatal: payloads that
//! are not UTF-8 or empty (`malformed`), over `max_message_bytes` (`dropped_oversize`).

pub mod batch;
pub mod topic;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::actions::ActionRegistry;
use crate::actions::config::parse_host_port;
use crate::tasks::{RunOptions, Task, TaskModel, run_task};
use batch::{Batch, BatchLimits, Batcher};
use topic::{ReplyTemplate, TopicFilter};

pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_BACKLOG: usize = 64;
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(2);
pub const DEFAULT_MAX_BATCH_MESSAGES: usize = 50;
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4096;
pub const DEFAULT_RECONNECT_MIN: Duration = Duration::from_millis(500);
pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(30);
/// Packets above this make rumqttc drop the connection (then reconnect); keep it well above
/// `max_message_bytes` so that oversized messages are counted and dropped instead.
pub const DEFAULT_MAX_PACKET_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("[mqtt]: {0}")]
    Config(String),
    #[error("[mqtt] subscription {topic}: {message}")]
    Subscription { topic: String, message: String },
}

/// `[mqtt]` as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMqtt {
    /// `host:port`.
    pub broker: String,
    pub client_id: String,
    pub username: Option<String>,
    /// Name of the environment variable holding the password.
    pub password_env: Option<String>,
    pub keep_alive_s: Option<u64>,
    /// Most open batches, and most closed batches waiting for the worker.
    pub max_backlog: Option<usize>,
    pub reconnect_min_ms: Option<u64>,
    pub reconnect_max_ms: Option<u64>,
    pub max_packet_bytes: Option<usize>,
    #[serde(default)]
    pub subscriptions: Vec<RawSubscription>,
}

/// `[[mqtt.subscriptions]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSubscription {
    /// Filter, e.g. `site/+/logs`.
    pub topic: String,
    /// Name of a `[[tasks]]` entry.
    pub task: String,
    pub window_ms: Option<u64>,
    pub max_batch_messages: Option<usize>,
    pub max_message_bytes: Option<usize>,
    /// e.g. `site/{1}/triage`: `{N}` is the N-th `+` segment of the concrete topic.
    pub reply_topic: String,
}

/// Validated `[mqtt]`.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub credentials: Option<(String, String)>,
    pub keep_alive: Duration,
    pub max_backlog: usize,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub max_packet_bytes: usize,
    pub subscriptions: Vec<Subscription>,
}

#[derive(Debug, Clone)]
pub struct Subscription {
    pub filter: TopicFilter,
    pub task: String,
    pub limits: BatchLimits,
    pub max_message_bytes: usize,
    pub reply: ReplyTemplate,
}

impl RawMqtt {
    /// Validates against the configured tasks; `env` looks up the password variable.
    pub fn validate(
        &self,
        tasks: &[Task],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<MqttConfig, MqttError> {
        let (host, port) = parse_host_port(&self.broker).map_err(MqttError::Config)?;
        if self.client_id.is_empty() || self.client_id.len() > 64 {
            return Err(MqttError::Config(
                "client_id must be 1 to 64 characters".into(),
            ));
        }
        let credentials = match (&self.username, &self.password_env) {
            (Some(user), Some(var)) => Some((
                user.clone(),
                env(var).ok_or_else(|| {
                    MqttError::Config(format!("environment variable {var} is not set"))
                })?,
            )),
            (Some(user), None) => Some((user.clone(), String::new())),
            (None, Some(_)) => return Err(MqttError::Config("password_env needs username".into())),
            (None, None) => None,
        };
        let keep_alive = self
            .keep_alive_s
            .map_or(DEFAULT_KEEP_ALIVE, Duration::from_secs);
        if keep_alive < Duration::from_secs(5) {
            return Err(MqttError::Config("keep_alive_s must be at least 5".into()));
        }
        let reconnect_min = self
            .reconnect_min_ms
            .map_or(DEFAULT_RECONNECT_MIN, Duration::from_millis);
        let reconnect_max = self
            .reconnect_max_ms
            .map_or(DEFAULT_RECONNECT_MAX, Duration::from_millis);
        if reconnect_min.is_zero() || reconnect_max < reconnect_min {
            return Err(MqttError::Config(
                "need 0 < reconnect_min_ms <= reconnect_max_ms".into(),
            ));
        }
        let max_backlog = self.max_backlog.unwrap_or(DEFAULT_MAX_BACKLOG);
        if max_backlog == 0 {
            return Err(MqttError::Config("max_backlog must be positive".into()));
        }
        let max_packet_bytes = self.max_packet_bytes.unwrap_or(DEFAULT_MAX_PACKET_BYTES);
        let subscriptions = self
            .subscriptions
            .iter()
            .map(|s| s.validate(tasks, max_packet_bytes))
            .collect::<Result<Vec<_>, _>>()?;
        // A reply topic that one of our own filters matches would feed results back as input.
        for s in &subscriptions {
            let sample = s.reply.render(&vec!["x".to_string(); s.filter.wildcards()]);
            let loops = sample
                .as_ref()
                .is_ok_and(|t| subscriptions.iter().any(|o| o.filter.captures(t).is_some()));
            if loops {
                return Err(MqttError::Subscription {
                    topic: s.filter.text.clone(),
                    message: format!(
                        "reply_topic {} matches a subscribed filter (a loop)",
                        s.reply.text
                    ),
                });
            }
        }
        Ok(MqttConfig {
            host,
            port,
            client_id: self.client_id.clone(),
            credentials,
            keep_alive,
            max_backlog,
            reconnect_min,
            reconnect_max,
            max_packet_bytes,
            subscriptions,
        })
    }
}

impl RawSubscription {
    fn validate(&self, tasks: &[Task], max_packet_bytes: usize) -> Result<Subscription, MqttError> {
        let err = |message: String| MqttError::Subscription {
            topic: self.topic.clone(),
            message,
        };
        let filter = TopicFilter::parse(&self.topic).map_err(&err)?;
        let reply = ReplyTemplate::parse(&self.reply_topic, filter.wildcards()).map_err(&err)?;
        let task = tasks.iter().find(|t| t.name == self.task).ok_or_else(|| {
            err(format!(
                "task {:?} is not configured in [[tasks]]",
                self.task
            ))
        })?;
        let max_message_bytes = self
            .max_message_bytes
            .unwrap_or(DEFAULT_MAX_MESSAGE_BYTES.min(task.max_input_bytes));
        if max_message_bytes == 0 || max_message_bytes > task.max_input_bytes {
            return Err(err(format!(
                "max_message_bytes must be between 1 and the task's max_input_bytes ({})",
                task.max_input_bytes
            )));
        }
        if max_message_bytes >= max_packet_bytes {
            return Err(err(
                "max_message_bytes must be below max_packet_bytes".into()
            ));
        }
        let window = self.window_ms.map_or(DEFAULT_WINDOW, Duration::from_millis);
        let max_messages = self
            .max_batch_messages
            .unwrap_or(DEFAULT_MAX_BATCH_MESSAGES);
        if max_messages == 0 {
            return Err(err("max_batch_messages must be positive".into()));
        }
        Ok(Subscription {
            filter,
            task: task.name.clone(),
            limits: BatchLimits {
                window,
                max_messages,
                max_bytes: task.max_input_bytes,
            },
            max_message_bytes,
            reply,
        })
    }
}

pub use crate::metrics::{MqttCounters, MqttCountersSnapshot};

fn bump(counter: &AtomicU64, by: u64) {
    if by > 0 {
        counter.fetch_add(by, Ordering::Relaxed);
    }
}

/// The bridge, ready to run.
pub struct MqttBridge {
    shared: Arc<Shared>,
}

struct Shared {
    config: MqttConfig,
    tasks: HashMap<String, Task>,
    model: Arc<dyn TaskModel>,
    actions: Arc<ActionRegistry>,
    dry_run: bool,
    counters: Arc<MqttCounters>,
    batcher: Mutex<Batcher>,
    wake: Notify,
}

impl MqttBridge {
    /// `tasks` must hold every task the subscriptions name; `dry_run` applies to all runs.
    pub fn new(
        config: MqttConfig,
        tasks: &[Task],
        model: Arc<dyn TaskModel>,
        actions: Arc<ActionRegistry>,
        dry_run: bool,
    ) -> Result<MqttBridge, MqttError> {
        let mut by_name = HashMap::new();
        for s in &config.subscriptions {
            let task =
                tasks
                    .iter()
                    .find(|t| t.name == s.task)
                    .ok_or_else(|| MqttError::Subscription {
                        topic: s.filter.text.clone(),
                        message: format!("task {:?} is not configured", s.task),
                    })?;
            by_name.insert(task.name.clone(), task.clone());
        }
        let batcher = Mutex::new(Batcher::new(config.max_backlog));
        Ok(MqttBridge {
            shared: Arc::new(Shared {
                config,
                tasks: by_name,
                model,
                actions,
                dry_run,
                counters: Arc::default(),
                batcher,
                wake: Notify::new(),
            }),
        })
    }

    pub fn counters(&self) -> Arc<MqttCounters> {
        self.shared.counters.clone()
    }

    /// Runs until `shutdown` is cancelled. Batches not yet run are abandoned.
    pub async fn run(self, shutdown: CancellationToken) {
        let config = &self.shared.config;
        let mut options =
            MqttOptions::new(config.client_id.clone(), config.host.clone(), config.port);
        options.set_keep_alive(config.keep_alive);
        options.set_clean_session(true);
        options.set_max_packet_size(config.max_packet_bytes, config.max_packet_bytes);
        if let Some((user, password)) = &config.credentials {
            options.set_credentials(user.clone(), password.clone());
        }
        let (client, events) = AsyncClient::new(options, 64);
        let worker = tokio::spawn(worker(
            self.shared.clone(),
            client.clone(),
            shutdown.clone(),
        ));
        connection(self.shared.clone(), client, events, shutdown).await;
        let _ = worker.await;
    }
}

/// Owns the event loop: receive, resubscribe on every CONNACK, back off on errors.
async fn connection(
    shared: Arc<Shared>,
    client: AsyncClient,
    mut events: rumqttc::EventLoop,
    shutdown: CancellationToken,
) {
    let config = &shared.config;
    let mut backoff = config.reconnect_min;
    let mut connected_before = false;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            event = events.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if connected_before {
                    bump(&shared.counters.reconnects, 1);
                    tracing::info!(broker = %config.host, "mqtt reconnected");
                }
                connected_before = true;
                backoff = config.reconnect_min;
                for s in &config.subscriptions {
                    if let Err(e) = client.try_subscribe(s.filter.text.clone(), QoS::AtLeastOnce) {
                        tracing::warn!(topic = %s.filter.text, error = %e, "mqtt subscribe failed");
                    }
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                receive(&shared, &publish.topic, &publish.payload);
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => bump(&shared.counters.published, 1),
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "mqtt connection error");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(config.reconnect_max);
            }
        }
    }
    // Best effort: a clean DISCONNECT so the broker does not wait for keep-alive.
    if client.try_disconnect().is_ok() {
        let _ = tokio::time::timeout(Duration::from_millis(500), events.poll()).await;
    }
}

/// One incoming message: checks, then into the batcher.
fn receive(shared: &Shared, topic: &str, payload: &[u8]) {
    let counters = &shared.counters;
    let Some((index, subscription)) = shared
        .config
        .subscriptions
        .iter()
        .enumerate()
        .find(|(_, s)| s.filter.captures(topic).is_some())
    else {
        return;
    };
    bump(&counters.received, 1);
    if payload.len() > subscription.max_message_bytes {
        bump(&counters.dropped_oversize, 1);
        return;
    }
    let text = match std::str::from_utf8(payload) {
        Ok(text) if !text.trim().is_empty() => text.to_string(),
        _ => {
            bump(&counters.malformed, 1);
            return;
        }
    };
    let dropped = match shared.batcher.lock() {
        Ok(mut batcher) => batcher.push(topic, index, text, subscription.limits, Instant::now()),
        Err(poisoned) => {
            poisoned
                .into_inner()
                .push(topic, index, text, subscription.limits, Instant::now())
        }
    };
    bump(&counters.dropped_backlog, dropped);
    shared.wake.notify_one();
}

/// Runs closed batches one at a time, sleeping until the next window ends.
async fn worker(shared: Arc<Shared>, client: AsyncClient, shutdown: CancellationToken) {
    loop {
        let (next, deadline) = {
            let mut batcher = match shared.batcher.lock() {
                Ok(b) => b,
                Err(poisoned) => poisoned.into_inner(),
            };
            let dropped = batcher.flush_due(Instant::now());
            bump(&shared.counters.dropped_backlog, dropped);
            (batcher.pop_ready(), batcher.next_deadline())
        };
        if let Some(batch) = next {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = process(&shared, &client, batch) => {}
                // Windows keep closing (and the backlog bound keeps holding) during a long run.
                _ = flush_while_busy(&shared) => {}
            }
            continue;
        }
        let sleep = match deadline {
            Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)),
            None => tokio::time::sleep(Duration::from_secs(3600)),
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = shared.wake.notified() => {}
            _ = sleep => {}
        }
    }
}

/// Closes batches whose window ended, until the caller stops polling it (never returns).
async fn flush_while_busy(shared: &Shared) {
    loop {
        let deadline = {
            let mut batcher = match shared.batcher.lock() {
                Ok(b) => b,
                Err(poisoned) => poisoned.into_inner(),
            };
            let dropped = batcher.flush_due(Instant::now());
            bump(&shared.counters.dropped_backlog, dropped);
            batcher.next_deadline()
        };
        let sleep = match deadline {
            Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)),
            None => tokio::time::sleep(Duration::from_secs(3600)),
        };
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = sleep => {}
        }
    }
}

/// Runs the task on one batch and publishes the reply.
async fn process(shared: &Shared, client: &AsyncClient, batch: Batch) {
    let counters = &shared.counters;
    let Some(subscription) = shared.config.subscriptions.get(batch.subscription) else {
        return;
    };
    let Some(task) = shared.tasks.get(&subscription.task) else {
        bump(&counters.task_errors, 1);
        return;
    };
    let options = RunOptions {
        dry_run: shared.dry_run,
        allowlist: None,
        request_id: Some(format!("mqtt-{}", uuid::Uuid::new_v4())),
    };
    let input = batch.input();
    let outcome = match run_task(
        task,
        &input,
        shared.model.as_ref(),
        &shared.actions,
        &options,
    )
    .await
    {
        Ok(outcome) => outcome,
        Err(error) => {
            bump(&counters.task_errors, 1);
            tracing::warn!(task = %task.name, topic = %batch.topic, %error, "mqtt task run failed");
            return;
        }
    };
    bump(&counters.tasks_run, 1);
    let captures = subscription
        .filter
        .captures(&batch.topic)
        .unwrap_or_default();
    let reply_topic = match subscription.reply.render(&captures) {
        Ok(topic) => topic,
        Err(error) => {
            tracing::warn!(topic = %batch.topic, %error, "mqtt reply topic");
            return;
        }
    };
    let actions: Vec<_> = outcome
        .actions
        .iter()
        .map(|a| json!({"name": a.name, "status": a.status(), "reason": a.refusal().map(|r| r.as_str())}))
        .collect();
    let reply = json!({
        "task": task.name,
        "request_id": outcome.request_id,
        "source_topic": batch.topic,
        "message_count": batch.messages.len(),
        "tier": outcome.tier,
        "result": outcome.result,
        "actions": actions,
    });
    if let Err(error) = client
        .publish(
            reply_topic,
            QoS::AtLeastOnce,
            false,
            reply.to_string().into_bytes(),
        )
        .await
    {
        tracing::warn!(%error, "mqtt reply publish failed");
    }
}
