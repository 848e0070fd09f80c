//! The run schema: what the model may answer in one task run.
//!
//! ```text
//! {"result": <task output schema>,
//!  "actions": [ anyOf over the allowed actions only:
//!               {"name": {"const": "<action>"}, "arguments": <its parameters schema>} ],
//!               maxItems: max_actions, minItems: min_actions (when > 0) }
//! ```
//!
//! A constrained local decoder cannot even spell a call to an action outside this run's
//! allowlist. Only keywords llama.cpp's JSON-schema-to-GBNF converter handles are used (no
//! `$ref`, `oneOf` or patterns); the inner schemas were checked for that at config time.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::Task;
use crate::actions::ActionRegistry;

/// Builds the schema for a run allowed to call `allowed` (names must be configured actions).
pub fn run_schema(
    task: &Task,
    allowed: &BTreeSet<String>,
    actions: &ActionRegistry,
) -> Result<Value, String> {
    let mut variants = Vec::with_capacity(allowed.len());
    for name in allowed {
        let spec = actions
            .get(name)
            .ok_or_else(|| format!("task {} allows unknown action {name}", task.name))?;
        variants.push(json!({
            "type": "object",
            "properties": {
                "name": {"const": name},
                "arguments": spec.parameters,
            },
            "required": ["name", "arguments"],
            "additionalProperties": false,
        }));
    }
    let actions_schema = if variants.is_empty() || task.max_actions == 0 {
        json!({"type": "array", "maxItems": 0})
    } else {
        let mut schema = json!({
            "type": "array",
            "items": {"anyOf": variants},
            "maxItems": task.max_actions,
        });
        // Only while something is allowed: a request that narrows the allowlist to nothing
        // gets `maxItems: 0` above, never an unsatisfiable schema.
        if task.min_actions > 0 {
            schema["minItems"] = json!(task.min_actions);
        }
        schema
    };
    Ok(json!({
        "type": "object",
        "properties": {
            "result": task.output,
            "actions": actions_schema,
        },
        "required": ["result", "actions"],
        "additionalProperties": false,
    }))
}
