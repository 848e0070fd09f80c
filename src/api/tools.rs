//! Tool calling on the Chat Completions wire: the request's `tools`, `tool_choice` and
//! `parallel_tool_calls` (checked here, each error naming its field as OpenAI's do), the
//! `tool_calls` of assistant messages in the history, and the `tool_calls` of an answer, whole
//! and as streaming deltas.

use std::collections::HashSet;

use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use crate::tools::{Tool, ToolCall, ToolChoice, ToolSet};

/// One entry of `tools`.
#[derive(Debug, Deserialize)]
pub struct ToolIn {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: Option<FunctionIn>,
}

#[derive(Debug, Deserialize)]
pub struct FunctionIn {
    pub name: String,
    pub description: Option<String>,
    pub parameters: Option<Value>,
    /// Accepted and ignored: every tier's calls are always checked against `parameters`.
    pub strict: Option<bool>,
}

/// `tool_choice`: `"none"`, `"auto"`, `"required"`, or `{"type":"function","function":{"name"}}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ToolChoiceIn {
    Mode(String),
    Named(NamedChoice),
}

#[derive(Debug, Deserialize)]
pub struct NamedChoice {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: NamedFunction,
}

#[derive(Debug, Deserialize)]
pub struct NamedFunction {
    pub name: String,
}

/// One of an assistant message's `tool_calls`.
#[derive(Debug, Deserialize)]
pub struct ToolCallIn {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub function: CalledFunction,
}

#[derive(Debug, Deserialize)]
pub struct CalledFunction {
    pub name: String,
    pub arguments: String,
}

/// The request's tools, checked; `None` when it offers none.
pub fn tool_set(
    tools: Option<Vec<ToolIn>>,
    choice: Option<ToolChoiceIn>,
    parallel: Option<bool>,
) -> Result<Option<ToolSet>, ApiError> {
    let tools = tools.unwrap_or_default();
    let choice = match choice {
        None => ToolChoice::Auto,
        Some(ToolChoiceIn::Mode(mode)) => match crate::wire::openai::parse_tool_choice(&mode) {
            Some(choice) => choice,
            None => {
                let other = mode.as_str();
                return Err(ApiError::invalid(
                    "tool_choice",
                    format!(
                        "invalid tool_choice '{other}': use 'none', 'auto', 'required' or a named function"
                    ),
                ));
            }
        },
        Some(ToolChoiceIn::Named(named)) if named.kind != "function" => {
            return Err(ApiError::invalid(
                "tool_choice.type",
                format!("unsupported tool_choice type '{}'", named.kind),
            ));
        }
        Some(ToolChoiceIn::Named(named)) => ToolChoice::Function(named.function.name),
    };
    if tools.is_empty() {
        return match choice {
            ToolChoice::Required | ToolChoice::Function(_) => Err(ApiError::invalid(
                "tool_choice",
                "tool_choice 'required' or a named function needs 'tools'",
            )),
            _ => Ok(None),
        };
    }
    let mut names = HashSet::new();
    let mut checked = Vec::with_capacity(tools.len());
    for (i, tool) in tools.into_iter().enumerate() {
        checked.push(tool_definition(i, tool, &mut names)?);
    }
    if let ToolChoice::Function(name) = &choice
        && !names.contains(name.as_str())
    {
        return Err(ApiError::invalid(
            "tool_choice",
            format!("tool_choice names function '{name}', which is not in 'tools'"),
        ));
    }
    ToolSet::new(checked, choice, parallel.unwrap_or(true))
        .map(Some)
        .map_err(|e| {
            ApiError::invalid(
                &format!("tools[{}].function.parameters", e.index),
                e.message,
            )
        })
}

fn tool_definition(i: usize, tool: ToolIn, names: &mut HashSet<String>) -> Result<Tool, ApiError> {
    if tool.kind != "function" {
        return Err(ApiError::invalid(
            &format!("tools[{i}].type"),
            format!(
                "unsupported tool type '{}': only 'function' is supported",
                tool.kind
            ),
        ));
    }
    let Some(function) = tool.function else {
        return Err(ApiError::invalid(
            &format!("tools[{i}].function"),
            "a function tool needs 'function'",
        ));
    };
    let name_param = format!("tools[{i}].function.name");
    if !valid_name(&function.name) {
        return Err(ApiError::invalid(
            &name_param,
            format!(
                "invalid function name '{}': use 1 to 64 letters, digits, '_' or '-'",
                function.name
            ),
        ));
    }
    if !names.insert(function.name.clone()) {
        return Err(ApiError::invalid(
            &name_param,
            format!("duplicate function name '{}'", function.name),
        ));
    }
    let parameters = function
        .parameters
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    if !parameters.is_object() || parameters.get("type").is_some_and(|t| t != "object") {
        return Err(ApiError::invalid(
            &format!("tools[{i}].function.parameters"),
            format!(
                "the parameters of '{}' must be a JSON schema of type 'object'",
                function.name
            ),
        ));
    }
    Ok(Tool {
        name: function.name,
        description: function.description,
        parameters,
    })
}

/// OpenAI's rule for function names: `^[a-zA-Z0-9_-]{1,64}$`.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// An assistant message's `tool_calls`, checked (`param` is the field's path).
pub fn history_calls(calls: Vec<ToolCallIn>, param: &str) -> Result<Vec<ToolCall>, ApiError> {
    calls
        .into_iter()
        .enumerate()
        .map(|(i, call)| match call.kind.as_deref() {
            None | Some("function") => Ok(ToolCall {
                id: call.id,
                name: call.function.name,
                arguments: call.function.arguments,
            }),
            Some(other) => Err(ApiError::invalid(
                &format!("{param}[{i}].type"),
                format!("unsupported tool call type '{other}'"),
            )),
        })
        .collect()
}

/// An answer's `message.tool_calls`.
pub fn calls_json(calls: &[ToolCall]) -> Value {
    crate::wire::openai::tool_calls_json(calls)
}

/// A streamed answer's `delta.tool_calls`: each call whole, with its `index`.
pub fn call_deltas(calls: &[ToolCall]) -> Value {
    crate::wire::openai::tool_call_deltas(calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(tools: Value, choice: Option<Value>) -> Result<Option<ToolSet>, ApiError> {
        let tools: Vec<ToolIn> = serde_json::from_value(tools).unwrap();
        let choice = choice.map(|c| serde_json::from_value(c).unwrap());
        tool_set(Some(tools), choice, None)
    }

    #[test]
    fn bad_definitions_name_their_param() {
        let get = |name: &str| json!({"type": "function", "function": {"name": name, "parameters": {"type": "object"}}});
        let cases = [
            (json!([{"type": "retrieval"}]), None, "tools[0].type"),
            (json!([get("a"), get("a")]), None, "tools[1].function.name"),
            (json!([get("has space")]), None, "tools[0].function.name"),
            (
                json!([get(&"x".repeat(65))]),
                None,
                "tools[0].function.name",
            ),
            (
                json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]),
                None,
                "tools[0].function.parameters",
            ),
            (
                json!([{"type": "function", "function": {"name": "f", "parameters": [1]}}]),
                None,
                "tools[0].function.parameters",
            ),
            (
                json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": 5}}}}}]),
                None,
                "tools[0].function.parameters",
            ),
            (
                json!([get("a")]),
                Some(json!({"type": "function", "function": {"name": "b"}})),
                "tool_choice",
            ),
            (json!([get("a")]), Some(json!("sometimes")), "tool_choice"),
            (json!([]), Some(json!("required")), "tool_choice"),
        ];
        for (tools, choice, param) in cases {
            let error = check(tools.clone(), choice).expect_err(param);
            assert_eq!(
                error.param.as_deref(),
                Some(param),
                "{tools}: {}",
                error.message
            );
            assert_eq!(error.status, 400);
        }
        assert!(
            check(json!([get("ok-name_1")]), Some(json!("required")))
                .unwrap()
                .is_some()
        );
        assert!(check(json!([]), Some(json!("auto"))).unwrap().is_none());
    }
}
