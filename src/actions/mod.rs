//! Local actions a model may request: declared in config (`[[actions]]`), each with a JSON
//! schema for its arguments, an optional rate limit and exactly one executor (webhook, MQTT
//! publish, program). [`ActionRegistry::execute`] is the only way a call runs, and it runs only
//! if the name is on the caller's allowlist, the arguments validate, the rate limit admits it
//! and dry-run is off. Every attempt, refused or run, yields one [`AuditRecord`].
//!
//! Invariant: nothing the model writes chooses *where* an action goes. URL, method, broker,
//! topic structure, program path and argv shape come from config; arguments only fill values.

pub mod audit;
pub mod config;
pub mod ledger_sink;
mod mqtt_publish;
mod program;
pub mod rate;
mod webhook;

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use audit::{AuditRecord, AuditSink, MemoryAuditSink, fingerprint};
pub use config::{ActionSpec, Executor, RawAction, validate_actions};
pub use ledger_sink::LedgerAuditSink;
use rate::RateWindow;

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("action {action}: {message}")]
    Config { action: String, message: String },
    #[error("cannot build the HTTP client for webhooks: {0}")]
    HttpClient(String),
    #[error("cannot start the audit writer: {0}")]
    AuditWriter(String),
}

/// What the model asked for: an action name and its arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionCall {
    pub name: String,
    pub arguments: Value,
}

/// Who is calling and what they may call.
#[derive(Debug, Clone)]
pub struct CallContext<'a> {
    /// Request or task-run id, recorded in the audit log.
    pub request_id: &'a str,
    /// The task that produced the call, if any.
    pub task: Option<&'a str>,
    /// The only action names this call may use.
    pub allowlist: &'a BTreeSet<String>,
    /// Validate and rate-check, but do not execute.
    pub dry_run: bool,
}

/// Why a call was not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    UnknownAction,
    NotAllowed,
    InvalidArguments,
    RateLimited,
    DryRun,
}

impl RefusalReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::UnknownAction => "unknown_action",
            RefusalReason::NotAllowed => "not_allowed",
            RefusalReason::InvalidArguments => "invalid_arguments",
            RefusalReason::RateLimited => "rate_limited",
            RefusalReason::DryRun => "dry_run",
        }
    }
}

/// What an executor did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "executor", rename_all = "snake_case")]
pub enum Execution {
    Webhook {
        http_status: u16,
    },
    Mqtt {
        topic: String,
    },
    Program {
        exit_code: Option<i32>,
        stdout: String,
        stderr: String,
        truncated: bool,
    },
}

/// The result of one call.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// The executor ran and succeeded.
    Executed { execution: Execution },
    /// The executor ran (or tried to) and failed.
    Failed {
        error: String,
        execution: Option<Execution>,
    },
    /// The call was not run.
    Refused {
        reason: RefusalReason,
        message: String,
    },
}

/// One call and its outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionOutcome {
    pub name: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub duration_ms: u64,
}

impl ActionOutcome {
    /// `executed`, `failed` or `refused`.
    pub fn status(&self) -> &'static str {
        match self.outcome {
            Outcome::Executed { .. } => "executed",
            Outcome::Failed { .. } => "failed",
            Outcome::Refused { .. } => "refused",
        }
    }

    pub fn refusal(&self) -> Option<RefusalReason> {
        match self.outcome {
            Outcome::Refused { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

struct Registered {
    spec: ActionSpec,
    validator: jsonschema::Validator,
    window: Option<Mutex<RateWindow>>,
}

/// The configured actions, their compiled schemas and rate windows, and the audit sink.
pub struct ActionRegistry {
    actions: BTreeMap<String, Registered>,
    audit: Arc<dyn AuditSink>,
    http: reqwest::Client,
}

impl std::fmt::Debug for ActionRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActionRegistry")
            .field("actions", &self.actions.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl ActionRegistry {
    pub fn new(
        specs: Vec<ActionSpec>,
        audit: Arc<dyn AuditSink>,
    ) -> Result<ActionRegistry, ActionError> {
        let mut actions = BTreeMap::new();
        for spec in specs {
            let validator =
                jsonschema::validator_for(&spec.parameters).map_err(|e| ActionError::Config {
                    action: spec.name.clone(),
                    message: format!("parameters: {e}"),
                })?;
            let window = spec.rate_limit.map(|l| Mutex::new(RateWindow::new(l)));
            let name = spec.name.clone();
            let registered = Registered {
                spec,
                validator,
                window,
            };
            if actions.insert(name.clone(), registered).is_some() {
                return Err(ActionError::Config {
                    action: name,
                    message: "duplicate action name".into(),
                });
            }
        }
        let http = webhook::client().map_err(|e| ActionError::HttpClient(e.to_string()))?;
        Ok(ActionRegistry {
            actions,
            audit,
            http,
        })
    }

    /// The action, if configured.
    pub fn get(&self, name: &str) -> Option<&ActionSpec> {
        self.actions.get(name).map(|r| &r.spec)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.actions.keys().map(String::as_str)
    }

    /// Checks a call against the allowlist and the schema, without rate limits or side effects.
    pub fn check(
        &self,
        call: &ActionCall,
        allowlist: &BTreeSet<String>,
    ) -> Result<(), (RefusalReason, String)> {
        let Some(action) = self.actions.get(&call.name) else {
            return Err((
                RefusalReason::UnknownAction,
                format!("no action named {:?}", call.name),
            ));
        };
        if !allowlist.contains(&call.name) {
            return Err((
                RefusalReason::NotAllowed,
                format!("action {} is not allowed here", call.name),
            ));
        }
        if let Some(error) = action.validator.iter_errors(&call.arguments).next() {
            return Err((
                RefusalReason::InvalidArguments,
                format!("{} at {}", error, error.instance_path()),
            ));
        }
        // Values that the schema allowed but an executor would refuse (topic structure, '-').
        let rendered = match &action.spec.executor {
            Executor::Mqtt(spec) => {
                mqtt_publish::render_topic(&spec.topic, &call.arguments).map(drop)
            }
            Executor::Program(spec) => program::render_args(spec, &call.arguments).map(drop),
            Executor::Webhook(_) => Ok(()),
        };
        rendered.map_err(|m| (RefusalReason::InvalidArguments, m))
    }

    /// Runs one call if everything admits it; always records one audit record.
    pub async fn execute(&self, call: &ActionCall, ctx: &CallContext<'_>) -> ActionOutcome {
        let at = SystemTime::now();
        let started = Instant::now();
        let outcome = match self.admit(call, ctx, started) {
            Err((reason, message)) => Outcome::Refused { reason, message },
            Ok(action) => self.run(action, call).await,
        };
        let duration = started.elapsed();
        let (argument_bytes, arguments_sha256) = fingerprint(&call.arguments);
        let (reason, status_code) = match &outcome {
            Outcome::Executed { execution } => (None, status_code(execution)),
            Outcome::Failed { error, execution } => (
                Some(error.clone()),
                execution.as_ref().and_then(status_code),
            ),
            Outcome::Refused { reason, .. } => (Some(reason.as_str().to_string()), None),
        };
        let result = ActionOutcome {
            name: call.name.clone(),
            outcome,
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        };
        if let Outcome::Refused { reason, message } = &result.outcome {
            tracing::info!(action = %call.name, request_id = ctx.request_id, reason = reason.as_str(), %message, "action refused");
        }
        self.audit.record(AuditRecord {
            at,
            action: call.name.clone(),
            request_id: ctx.request_id.to_string(),
            task: ctx.task.map(str::to_string),
            outcome: result.status(),
            reason,
            status_code,
            duration,
            argument_bytes,
            arguments_sha256,
            dry_run: ctx.dry_run,
        });
        result
    }

    fn admit(
        &self,
        call: &ActionCall,
        ctx: &CallContext<'_>,
        now: Instant,
    ) -> Result<&Registered, (RefusalReason, String)> {
        self.check(call, ctx.allowlist)?;
        let action = self.actions.get(&call.name).ok_or((
            RefusalReason::UnknownAction,
            format!("no action named {:?}", call.name),
        ))?;
        if let Some(window) = &action.window {
            let admitted = match window.lock() {
                Ok(mut window) => window.admit(now, !ctx.dry_run),
                Err(poisoned) => poisoned.into_inner().admit(now, !ctx.dry_run),
            };
            if !admitted {
                return Err((
                    RefusalReason::RateLimited,
                    format!("action {} is over its rate limit", call.name),
                ));
            }
        }
        if ctx.dry_run {
            return Err((
                RefusalReason::DryRun,
                "dry run: validated, not executed".into(),
            ));
        }
        Ok(action)
    }

    async fn run(&self, action: &Registered, call: &ActionCall) -> Outcome {
        let result = match &action.spec.executor {
            Executor::Webhook(spec) => webhook::call(&self.http, spec, &call.arguments).await,
            Executor::Mqtt(spec) => {
                match mqtt_publish::render_topic(&spec.topic, &call.arguments) {
                    Ok(topic) => mqtt_publish::publish(spec, &topic, &call.arguments)
                        .await
                        .map_err(|e| (e, None)),
                    Err(e) => Err((e, None)),
                }
            }
            Executor::Program(spec) => match program::render_args(spec, &call.arguments) {
                Ok(argv) => program::run(spec, &argv).await,
                Err(e) => Err((e, None)),
            },
        };
        match result {
            Ok(execution) => Outcome::Executed { execution },
            Err((error, execution)) => Outcome::Failed { error, execution },
        }
    }
}

fn status_code(execution: &Execution) -> Option<i64> {
    match execution {
        Execution::Webhook { http_status } => Some(i64::from(*http_status)),
        Execution::Program { exit_code, .. } => exit_code.map(i64::from),
        Execution::Mqtt { .. } => None,
    }
}
