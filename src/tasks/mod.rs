//! Tasks: the fully-local pattern (data → local model → structured result → local action) as
//! configured `[[tasks]]`. A run puts the untrusted input in a nonce-delimited DATA block,
//! asks the model for JSON constrained by a *run schema* whose `actions` can only name the
//! actions allowed for this run, validates the answer against that schema, and hands each call
//! to [`ActionRegistry::execute`], which checks the allowlist and arguments again.
//!
//! Invariants: the allowlist of a run is the task's list, narrowed (never widened) by the
//! request's; model output that does not parse or validate is an error, never a result; the
//! input never appears outside the DATA block.

mod model;
pub mod prompt;
pub mod runtime;
pub mod schema;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::actions::config::{check_schema_subset, schema_value};
use crate::actions::{ActionCall, ActionOutcome, ActionRegistry, CallContext};
pub use model::RouterModel;
use prompt::DataBoundary;
pub use runtime::{RunError, TaskRuntime};

/// Default generation budget of a task run.
pub const DEFAULT_MAX_TOKENS: u32 = 512;
/// Default cap on the input of a run.
pub const DEFAULT_MAX_INPUT_BYTES: usize = 16 * 1024;
/// Default cap on the number of calls one run may request.
pub const DEFAULT_MAX_ACTIONS: usize = 4;
/// Hard cap on `max_actions`.
pub const MAX_ACTIONS_LIMIT: usize = 32;

/// Why a [`TaskModel`] failed; the gateway's model returns a
/// [`ServiceError`](crate::service::ServiceError) here, which the API maps to its status.
pub type ModelFailure = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("task {task}: {message}")]
    Config { task: String, message: String },
    #[error("input is {bytes} bytes, over the task's max_input_bytes of {limit}")]
    InputTooLarge { bytes: usize, limit: usize },
    #[error("the model failed: {0}")]
    Model(ModelFailure),
    #[error("the model's output is not JSON: {0}")]
    OutputNotJson(String),
    #[error("the model's output does not match the run schema: {0}")]
    OutputInvalid(String),
    #[error("cannot build the run schema: {0}")]
    Schema(String),
}

/// One `[[tasks]]` entry as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTask {
    pub name: String,
    /// What the model should do with the data (system message).
    pub instructions: String,
    /// JSON schema of the result: a TOML table, or a string holding JSON.
    pub output: Value,
    /// Action names this task may request.
    #[serde(default)]
    pub actions: Vec<String>,
    pub max_tokens: Option<u32>,
    pub max_input_bytes: Option<usize>,
    /// Cap on calls per run (the run schema's `maxItems`).
    pub max_actions: Option<usize>,
    /// Calls a run must request (the run schema's `minItems`) while any action is allowed;
    /// default 0. With `min_actions = max_actions = 1` a constrained model makes exactly one.
    pub min_actions: Option<usize>,
}

/// A validated task.
#[derive(Debug, Clone)]
pub struct Task {
    pub name: String,
    pub instructions: String,
    pub output: Value,
    pub actions: BTreeSet<String>,
    pub max_tokens: u32,
    pub max_input_bytes: usize,
    pub max_actions: usize,
    pub min_actions: usize,
}

impl RawTask {
    /// `known_actions`: the configured action names (a task naming another is refused).
    pub fn validate(&self, known_actions: &dyn Fn(&str) -> bool) -> Result<Task, TaskError> {
        let err = |message: String| TaskError::Config {
            task: self.name.clone(),
            message,
        };
        if self.name.trim().is_empty() {
            return Err(err("name must not be empty".into()));
        }
        if self.instructions.trim().is_empty() {
            return Err(err("instructions must not be empty".into()));
        }
        let output = schema_value(&self.output).map_err(&err)?;
        check_schema_subset(&output).map_err(|e| err(format!("output: {e}")))?;
        let mut actions = BTreeSet::new();
        for name in &self.actions {
            if !known_actions(name) {
                return Err(err(format!(
                    "action {name:?} is not configured in [[actions]]"
                )));
            }
            actions.insert(name.clone());
        }
        let max_actions = self.max_actions.unwrap_or(DEFAULT_MAX_ACTIONS);
        if max_actions > MAX_ACTIONS_LIMIT {
            return Err(err(format!(
                "max_actions must be at most {MAX_ACTIONS_LIMIT}"
            )));
        }
        let min_actions = self.min_actions.unwrap_or(0);
        if min_actions > max_actions {
            return Err(err("min_actions must be at most max_actions".into()));
        }
        let max_tokens = self.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
        let max_input_bytes = self.max_input_bytes.unwrap_or(DEFAULT_MAX_INPUT_BYTES);
        if max_tokens == 0 || max_input_bytes == 0 {
            return Err(err("max_tokens and max_input_bytes must be positive".into()));
        }
        Ok(Task {
            name: self.name.clone(),
            instructions: self.instructions.clone(),
            output,
            actions,
            max_tokens,
            max_input_bytes,
            max_actions,
            min_actions,
        })
    }
}

/// Validates all `[[tasks]]` against the configured actions; names must be unique.
pub fn validate_tasks(raw: &[RawTask], actions: &ActionRegistry) -> Result<Vec<Task>, TaskError> {
    let mut seen = HashSet::new();
    let known = |name: &str| actions.get(name).is_some();
    raw.iter()
        .map(|task| {
            if !seen.insert(task.name.clone()) {
                return Err(TaskError::Config {
                    task: task.name.clone(),
                    message: "duplicate task name".into(),
                });
            }
            task.validate(&known)
        })
        .collect()
}

/// One constrained generation, as the gateway's router performs it.
pub trait TaskModel: Send + Sync {
    /// One generation constrained to `schema`; returns the raw text (JSON) and where it was answered.
    fn generate(
        &self,
        request: TaskRequest,
    ) -> Pin<Box<dyn Future<Output = Result<TaskGeneration, ModelFailure>> + Send + '_>>;
}

#[derive(Debug, Clone, PartialEq)]
pub struct TaskRequest {
    pub system: String,
    pub user: String,
    pub schema: Value,
    pub max_tokens: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TaskGeneration {
    pub text: String,
    pub tier: String,
}

/// Per-run choices of the caller.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Validate calls but execute none.
    pub dry_run: bool,
    /// A request's allowlist: intersected with the task's, so it can only narrow it.
    pub allowlist: Option<Vec<String>>,
    /// Id recorded with each action; a fresh UUID when absent.
    pub request_id: Option<String>,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct TaskOutcome {
    pub request_id: String,
    pub result: Value,
    pub actions: Vec<ActionOutcome>,
    pub tier: String,
}

/// The allowlist of a run: the task's, intersected with the request's if given.
pub fn effective_allowlist(task: &Task, requested: Option<&[String]>) -> BTreeSet<String> {
    match requested {
        None => task.actions.clone(),
        Some(list) => list
            .iter()
            .filter(|name| task.actions.contains(*name))
            .cloned()
            .collect(),
    }
}

/// Runs `task` on `input`: one constrained generation, validation, then the allowed calls.
pub async fn run_task(
    task: &Task,
    input: &str,
    model: &dyn TaskModel,
    actions: &ActionRegistry,
    options: &RunOptions,
) -> Result<TaskOutcome, TaskError> {
    if input.len() > task.max_input_bytes {
        return Err(TaskError::InputTooLarge {
            bytes: input.len(),
            limit: task.max_input_bytes,
        });
    }
    let request_id = options
        .request_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let allowed = effective_allowlist(task, options.allowlist.as_deref());
    let run_schema = schema::run_schema(task, &allowed, actions).map_err(TaskError::Schema)?;
    let validator =
        jsonschema::validator_for(&run_schema).map_err(|e| TaskError::Schema(e.to_string()))?;
    let boundary = DataBoundary::random();
    let request = TaskRequest {
        system: prompt::system_message(&task.instructions, &boundary, &allowed, actions),
        user: prompt::user_message(input, &boundary),
        schema: run_schema,
        max_tokens: task.max_tokens,
    };
    let generation = model.generate(request).await.map_err(TaskError::Model)?;
    let answer: Value = serde_json::from_str(generation.text.trim())
        .map_err(|e| TaskError::OutputNotJson(e.to_string()))?;
    if let Some(error) = validator.iter_errors(&answer).next() {
        return Err(TaskError::OutputInvalid(format!(
            "{error} at {}",
            error.instance_path()
        )));
    }
    let (result, calls) = split_answer(answer)?;
    let ctx = CallContext {
        request_id: &request_id,
        task: Some(&task.name),
        allowlist: &allowed,
        dry_run: options.dry_run,
    };
    let mut outcomes = Vec::with_capacity(calls.len());
    for call in &calls {
        outcomes.push(actions.execute(call, &ctx).await);
    }
    Ok(TaskOutcome {
        request_id,
        result,
        actions: outcomes,
        tier: generation.tier,
    })
}

/// `{"result": .., "actions": [..]}` → the result and the calls (already schema-valid).
fn split_answer(answer: Value) -> Result<(Value, Vec<ActionCall>), TaskError> {
    let Value::Object(mut map) = answer else {
        return Err(TaskError::OutputInvalid("not an object".into()));
    };
    let result = map.remove("result").unwrap_or(Value::Null);
    let calls = match map.remove("actions") {
        None => Vec::new(),
        Some(list) => serde_json::from_value(list)
            .map_err(|e| TaskError::OutputInvalid(format!("actions: {e}")))?,
    };
    Ok((result, calls))
}
