//! `POST /v1/tasks/{name}`: runs one configured task on untrusted input and answers
//! `{"object": "edgellm.task", "id", "task", "result", "actions", "tier"}`.

use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::json::ApiJson;
use super::{AppState, request_id};
use crate::tasks::{RunOptions, TaskOutcome};

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskBody {
    /// The data (logs, readings): untrusted, it only ever goes inside the prompt's data block.
    pub input: String,
    /// Narrows the task's allowlist (never widens it).
    pub actions: Option<Vec<String>>,
    /// Validate the model's calls, execute none.
    #[serde(default)]
    pub dry_run: bool,
}

pub async fn run(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<TaskBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let options = RunOptions {
        dry_run: body.dry_run,
        allowlist: body.actions,
        request_id: Some(request_id("task-")),
    };
    let outcome = state.tasks.run(&name, &body.input, &options).await?;
    Ok(axum::Json(task_json(&name, &outcome)))
}

/// The answer's shape, shared with `edgellm task`.
pub fn task_json(task: &str, outcome: &TaskOutcome) -> Value {
    json!({
        "object": "edgellm.task",
        "id": outcome.request_id,
        "task": task,
        "result": outcome.result,
        "actions": outcome.actions,
        "tier": outcome.tier,
    })
}
