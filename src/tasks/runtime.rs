//! [`TaskRuntime`]: what a server (or one `edgellm task` run) needs to run tasks, built once from
//! the validated config: the tasks by name, the action registry whose audit records go to the
//! ledger (and are counted in metrics), and the gateway's model ([`RouterModel`]). The HTTP
//! endpoint, the CLI and the MQTT bridge share one registry, so rate limits are shared too.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{RouterModel, RunOptions, Task, TaskError, TaskModel, TaskOutcome, run_task};
use crate::actions::ledger_sink::known_name;
use crate::actions::{ActionError, ActionRegistry, AuditRecord, AuditSink, LedgerAuditSink};
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::router::Router;

/// Why a named run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no task named {0:?}")]
    UnknownTask(String),
    #[error(transparent)]
    Task(#[from] TaskError),
}

/// Tasks, actions and model of one gateway.
pub struct TaskRuntime {
    tasks: BTreeMap<String, Task>,
    registry: Arc<ActionRegistry>,
    model: Arc<RouterModel>,
    ledger_sink: Option<Arc<LedgerAuditSink>>,
    metrics: Arc<Metrics>,
}

impl TaskRuntime {
    /// Audit records go to `ledger` when there is one (there is whenever actions are
    /// configured, see `serve`); without actions nothing is ever recorded.
    pub fn new(
        tasks: &[Task],
        actions: &[crate::actions::ActionSpec],
        router: Arc<Router>,
        ledger: Option<Arc<Ledger>>,
        metrics: Arc<Metrics>,
    ) -> Result<TaskRuntime, ActionError> {
        let known: BTreeSet<String> = actions.iter().map(|a| a.name.clone()).collect();
        let ledger_sink = match ledger {
            Some(ledger) => Some(Arc::new(
                LedgerAuditSink::start(ledger, known.clone())
                    .map_err(|e| ActionError::AuditWriter(e.to_string()))?,
            )),
            None => None,
        };
        let counting = CountingSink {
            inner: ledger_sink.clone().map(|s| s as Arc<dyn AuditSink>),
            metrics: metrics.clone(),
            known,
        };
        let registry = ActionRegistry::new(actions.to_vec(), Arc::new(counting))?;
        Ok(TaskRuntime {
            tasks: tasks.iter().map(|t| (t.name.clone(), t.clone())).collect(),
            registry: Arc::new(registry),
            model: Arc::new(RouterModel::new(router)),
            ledger_sink,
            metrics,
        })
    }

    pub fn task(&self, name: &str) -> Option<&Task> {
        self.tasks.get(name)
    }

    pub fn tasks(&self) -> Vec<Task> {
        self.tasks.values().cloned().collect()
    }

    pub fn registry(&self) -> Arc<ActionRegistry> {
        self.registry.clone()
    }

    pub fn model(&self) -> Arc<dyn TaskModel> {
        self.model.clone()
    }

    /// Runs the named task once; counts the run in `edgellm_task_runs_total`.
    pub async fn run(
        &self,
        name: &str,
        input: &str,
        options: &RunOptions,
    ) -> Result<TaskOutcome, RunError> {
        let task = self
            .tasks
            .get(name)
            .ok_or_else(|| RunError::UnknownTask(name.to_string()))?;
        let result = run_task(task, input, self.model.as_ref(), &self.registry, options).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(TaskError::InputTooLarge { .. }) => "input_too_large",
            Err(TaskError::Model(_)) => "model_error",
            Err(TaskError::OutputNotJson(_) | TaskError::OutputInvalid(_)) => "invalid_output",
            Err(_) => "error",
        };
        self.metrics.count_task_run(&task.name, outcome);
        Ok(result?)
    }

    /// Writes the audit records still queued and stops the writer; blocks (see
    /// [`LedgerAuditSink::close`]). Call once no action can run any more.
    pub fn close(&self) {
        if let Some(sink) = &self.ledger_sink {
            sink.close();
        }
    }
}

/// Counts each attempt in `edgellm_actions_total`, then hands it on (or drops it when there is
/// no ledger, which only happens when no action is configured).
struct CountingSink {
    inner: Option<Arc<dyn AuditSink>>,
    metrics: Arc<Metrics>,
    known: BTreeSet<String>,
}

impl AuditSink for CountingSink {
    fn record(&self, record: AuditRecord) {
        let outcome = match record.outcome {
            "refused" => record.reason.as_deref().unwrap_or("refused"),
            other => other,
        };
        self.metrics
            .count_action(known_name(&record.action, &self.known), outcome);
        if let Some(inner) = &self.inner {
            inner.record(record);
        }
    }
}
