//! Tool calling (OpenAI's function tools) in the service's terms: the tools a request offers and
//! the choice it made, the JSON schema that constrains the local model's turn, reading that turn
//! back, and the one check every tier's tool calls pass before a client sees them.
//!
//! The local model answers a tool turn with one JSON object, which its grammar guarantees:
//! `{"tool_calls":[{"name":"get_weather","arguments":{...}}]}`, or, when `tool_choice` is `auto`,
//! possibly `{"content":"..."}`. Remote tiers answer in their own wire format (`upstream/`);
//! both end as [`ToolCall`]s checked by [`ToolSet::check`]. No wire format is known here.

use std::sync::Arc;

use serde_json::Value;

pub use crate::engine::ToolCall;

/// One function the model may call. `parameters` is a JSON schema for an object.
#[derive(Debug, Clone)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    pub parameters: Value,
}

/// What the request allows the model to do with its tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// Answer with text; call nothing.
    None,
    /// Call tools or answer with text, as the model decides.
    Auto,
    /// Call at least one tool.
    Required,
    /// Call this function.
    Function(String),
}

/// The tools of one request, with a compiled validator for each one's parameters.
#[derive(Clone)]
pub struct ToolSet {
    tools: Vec<Tool>,
    choice: ToolChoice,
    parallel: bool,
    validators: Arc<Vec<jsonschema::Validator>>,
}

impl std::fmt::Debug for ToolSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolSet")
            .field("tools", &self.tools)
            .field("choice", &self.choice)
            .field("parallel", &self.parallel)
            .finish()
    }
}

/// A tool whose `parameters` is not a usable JSON schema.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct InvalidParameters {
    /// The tool's position in the request's list.
    pub index: usize,
    pub message: String,
}

/// What a tool turn of the local model said.
#[derive(Debug, Clone, PartialEq)]
pub enum Turn {
    Calls(Vec<ToolCall>),
    /// A direct answer (`tool_choice: auto`): a JSON string for text, or the JSON value the
    /// request's `response_format` asked for.
    Content(Value),
}

impl ToolSet {
    /// Compiles each tool's parameters. Names, types and the choice are the caller's to check.
    pub fn new(
        tools: Vec<Tool>,
        choice: ToolChoice,
        parallel: bool,
    ) -> Result<ToolSet, InvalidParameters> {
        let validators = tools
            .iter()
            .enumerate()
            .map(|(index, tool)| {
                jsonschema::validator_for(&tool.parameters).map_err(|e| InvalidParameters {
                    index,
                    message: format!("invalid JSON schema: {e}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ToolSet {
            tools,
            choice,
            parallel,
            validators: Arc::new(validators),
        })
    }

    pub fn tools(&self) -> &[Tool] {
        &self.tools
    }

    pub fn choice(&self) -> &ToolChoice {
        &self.choice
    }

    pub fn parallel(&self) -> bool {
        self.parallel
    }

    /// Whether the model may call a tool in this turn.
    pub fn active(&self) -> bool {
        self.choice != ToolChoice::None && !self.tools.is_empty()
    }

    /// The JSON schema (as text) of the local model's whole turn; `content` is the schema of a
    /// direct answer (a string unless `response_format` says otherwise). Written by hand so that
    /// each call's `name` comes before its `arguments`: the model picks the tool, then fills in
    /// its arguments (serde_json's maps would sort the keys the other way).
    pub fn turn_schema(&self, content: &Value) -> String {
        let call = |tool: &Tool| {
            format!(
                r#"{{"type":"object","properties":{{"name":{{"const":{}}},"arguments":{}}},"required":["name","arguments"],"additionalProperties":false}}"#,
                Value::String(tool.name.clone()),
                tool.parameters
            )
        };
        let items = match &self.choice {
            ToolChoice::Function(name) => self
                .tools
                .iter()
                .find(|t| &t.name == name)
                .map(call)
                .unwrap_or_else(|| "false".into()),
            _ => format!(
                r#"{{"anyOf":[{}]}}"#,
                self.tools.iter().map(call).collect::<Vec<_>>().join(",")
            ),
        };
        let max_items = if self.parallel {
            ""
        } else {
            r#","maxItems":1"#
        };
        let calls = format!(
            r#"{{"type":"object","properties":{{"tool_calls":{{"type":"array","items":{items},"minItems":1{max_items}}}}},"required":["tool_calls"],"additionalProperties":false}}"#
        );
        match self.choice {
            ToolChoice::Auto => format!(
                r#"{{"anyOf":[{calls},{{"type":"object","properties":{{"content":{content}}},"required":["content"],"additionalProperties":false}}]}}"#
            ),
            _ => calls,
        }
    }

    /// What the local model is told about its tools: a system message's text.
    pub fn instructions(&self) -> String {
        let mut text = String::from("You can call these functions:\n");
        for tool in &self.tools {
            text.push_str(&format!("- {}", tool.name));
            if let Some(description) = &tool.description {
                text.push_str(&format!(": {description}"));
            }
            text.push_str(&format!(" Parameters: {}\n", tool.parameters));
        }
        text.push_str(
            r#"To call functions, answer with JSON: {"tool_calls":[{"name":"...","arguments":{...}}]}"#,
        );
        if self.choice == ToolChoice::Auto {
            text.push_str(r#". To answer directly, answer with {"content":"..."}"#);
        }
        text
    }

    /// Reads the local model's turn (the text its grammar produced) and checks it.
    pub fn read_local(&self, text: &str) -> Result<Turn, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("the turn is not JSON: {e}"))?;
        if let Some(content) = value.get("content") {
            self.check(&[])?;
            return Ok(Turn::Content(content.clone()));
        }
        let calls = value["tool_calls"]
            .as_array()
            .ok_or("the turn has neither tool_calls nor content")?
            .iter()
            .map(|call| ToolCall {
                id: new_call_id(),
                name: call["name"].as_str().unwrap_or_default().to_string(),
                arguments: call["arguments"].to_string(),
            })
            .collect::<Vec<_>>();
        self.check(&calls)?;
        Ok(Turn::Calls(calls))
    }

    /// The check every tier's answer passes: the calls fit `tool_choice` and
    /// `parallel_tool_calls`, name known tools, and their arguments are JSON matching the tool's
    /// parameters. The message says what is wrong.
    pub fn check(&self, calls: &[ToolCall]) -> Result<(), String> {
        match &self.choice {
            ToolChoice::None if !calls.is_empty() => {
                return Err("tool_choice is none, but the answer calls a tool".into());
            }
            ToolChoice::Required if calls.is_empty() => {
                return Err("tool_choice is required, but the answer calls no tool".into());
            }
            ToolChoice::Function(name) => {
                if calls.is_empty() {
                    return Err(format!(
                        "tool_choice names {name}, but the answer calls no tool"
                    ));
                }
                if let Some(other) = calls.iter().find(|c| &c.name != name) {
                    return Err(format!(
                        "tool_choice names {name}, but the answer calls {}",
                        other.name
                    ));
                }
            }
            _ => {}
        }
        if !self.parallel && calls.len() > 1 {
            return Err(format!(
                "parallel_tool_calls is false, but the answer makes {} calls",
                calls.len()
            ));
        }
        for call in calls {
            let Some(index) = self.tools.iter().position(|t| t.name == call.name) else {
                return Err(format!("the answer calls an unknown tool '{}'", call.name));
            };
            let arguments: Value = serde_json::from_str(&call.arguments)
                .map_err(|e| format!("the arguments of {} are not JSON: {e}", call.name))?;
            if let Err(error) = self.validators[index].validate(&arguments) {
                let at = error.instance_path().to_string();
                let at = if at.is_empty() {
                    String::new()
                } else {
                    format!(" at {at}")
                };
                return Err(format!(
                    "the arguments of {} do not match its parameters{at}: {error}",
                    call.name
                ));
            }
        }
        Ok(())
    }
}

/// A fresh call id: `call_` and 24 random hexadecimal digits.
pub fn new_call_id() -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("call_{}", &hex[..24])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn weather(choice: ToolChoice, parallel: bool) -> ToolSet {
        let tools = vec![
            Tool {
                name: "get_weather".into(),
                description: Some("Weather in a city".into()),
                parameters: json!({"type": "object", "properties": {"city": {"type": "string"}},
                                   "required": ["city"], "additionalProperties": false}),
            },
            Tool {
                name: "get_time".into(),
                description: None,
                parameters: json!({"type": "object", "properties": {}}),
            },
        ];
        ToolSet::new(tools, choice, parallel).unwrap()
    }

    fn call(name: &str, arguments: &str) -> ToolCall {
        ToolCall {
            id: new_call_id(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    #[test]
    fn check_table() {
        let city = r#"{"city":"Oslo"}"#;
        let cases: [(ToolChoice, bool, Vec<ToolCall>, Option<&str>); 10] = [
            (ToolChoice::Auto, true, vec![], None),
            (
                ToolChoice::Auto,
                true,
                vec![call("get_weather", city)],
                None,
            ),
            (
                ToolChoice::Auto,
                true,
                vec![call("get_weather", city), call("get_time", "{}")],
                None,
            ),
            (
                ToolChoice::Auto,
                false,
                vec![call("get_weather", city), call("get_time", "{}")],
                Some("parallel_tool_calls is false"),
            ),
            (ToolChoice::Required, true, vec![], Some("calls no tool")),
            (
                ToolChoice::None,
                true,
                vec![call("get_time", "{}")],
                Some("tool_choice is none"),
            ),
            (
                ToolChoice::Function("get_time".into()),
                true,
                vec![call("get_weather", city)],
                Some("but the answer calls get_weather"),
            ),
            (
                ToolChoice::Auto,
                true,
                vec![call("send_mail", "{}")],
                Some("unknown tool 'send_mail'"),
            ),
            (
                ToolChoice::Auto,
                true,
                vec![call("get_weather", "{city")],
                Some("are not JSON"),
            ),
            (
                ToolChoice::Auto,
                true,
                vec![call("get_weather", r#"{"town":"Oslo"}"#)],
                Some("do not match its parameters"),
            ),
        ];
        for (choice, parallel, calls, expected) in cases {
            let result = weather(choice.clone(), parallel).check(&calls);
            match expected {
                None => assert!(result.is_ok(), "{choice:?} {calls:?}: {result:?}"),
                Some(text) => {
                    let message = result.expect_err(text);
                    assert!(message.contains(text), "{message}");
                }
            }
        }
    }

    #[test]
    fn turn_schema_puts_name_first_and_validates_its_own_examples() {
        let tools = weather(ToolChoice::Auto, false);
        let text = tools.turn_schema(&json!({"type": "string"}));
        assert!(
            text.contains(r#"{"name":{"const":"get_weather"},"arguments":{"#),
            "{text}"
        );
        let schema: Value = serde_json::from_str(&text).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        for (turn, valid) in [
            (
                json!({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}),
                true,
            ),
            (json!({"content": "hello"}), true),
            (json!({"tool_calls": []}), false),
            (
                json!({"tool_calls": [{"name": "get_time", "arguments": {}}, {"name": "get_time", "arguments": {}}]}),
                false,
            ),
            (
                json!({"tool_calls": [{"name": "get_weather", "arguments": {}}]}),
                false,
            ),
        ] {
            assert_eq!(validator.is_valid(&turn), valid, "{turn}");
        }
    }

    #[test]
    fn read_local_turns() {
        let tools = weather(ToolChoice::Auto, true);
        let Turn::Calls(calls) = tools
            .read_local(r#"{"tool_calls":[{"name":"get_weather","arguments":{"city":"Oslo"}},{"name":"get_time","arguments":{}}]}"#)
            .unwrap()
        else {
            panic!("calls expected");
        };
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].arguments, r#"{"city":"Oslo"}"#);
        assert_ne!(calls[0].id, calls[1].id);
        assert!(calls[0].id.starts_with("call_") && calls[0].id.len() == 29);
        assert_eq!(
            tools.read_local(r#"{"content":"hi"}"#).unwrap(),
            Turn::Content(json!("hi"))
        );
        let required = weather(ToolChoice::Required, true);
        assert!(required.read_local(r#"{"content":"hi"}"#).is_err());
    }
}
