//! The OpenAI wire pieces edgellm both serves and sends: finish reasons, `tool_choice`'s string
//! forms, and tool calls (whole, as stream deltas, and read back).

use serde_json::{Value, json};

use crate::engine::{StopReason, ToolCall};
use crate::tools::ToolChoice;

/// `finish_reason` for a stop reason (`tool_calls` is decided by the caller, which knows
/// whether calls were made).
pub fn finish_reason(stop: &StopReason) -> &'static str {
    match stop {
        StopReason::Length => "length",
        _ => "stop",
    }
}

/// A stop reason from an upstream's `finish_reason` (Chat Completions), `incomplete_details`
/// reason (Responses) or llama-server's `stop_type`.
pub fn stop_reason(finish: &str) -> StopReason {
    match finish {
        "length" | "max_output_tokens" | "max_tokens" => StopReason::Length,
        _ => StopReason::EndOfGeneration,
    }
}

/// `tool_choice` as both OpenAI APIs spell its string forms (`None` for a named function).
pub fn tool_choice_str(choice: &ToolChoice) -> Option<&'static str> {
    match choice {
        ToolChoice::None => Some("none"),
        ToolChoice::Auto => Some("auto"),
        ToolChoice::Required => Some("required"),
        ToolChoice::Function(_) => None,
    }
}

/// `tool_choice`'s string forms read back.
pub fn parse_tool_choice(text: &str) -> Option<ToolChoice> {
    match text {
        "none" => Some(ToolChoice::None),
        "auto" => Some(ToolChoice::Auto),
        "required" => Some(ToolChoice::Required),
        _ => None,
    }
}

/// One Chat Completions tool call: `{"id", "type": "function", "function": {"name",
/// "arguments"}}`.
pub fn tool_call_json(call: &ToolCall) -> Value {
    json!({"id": call.id, "type": "function",
           "function": {"name": call.name, "arguments": call.arguments}})
}

/// A message's `tool_calls`.
pub fn tool_calls_json(calls: &[ToolCall]) -> Value {
    calls.iter().map(tool_call_json).collect()
}

/// A streamed answer's `delta.tool_calls`: each call whole, with its `index`.
pub fn tool_call_deltas(calls: &[ToolCall]) -> Value {
    calls
        .iter()
        .enumerate()
        .map(|(index, call)| {
            let mut value = tool_call_json(call);
            value["index"] = json!(index);
            value
        })
        .collect()
}

/// A message's `tool_calls` read back; a call without an id gets one from `new_id`.
pub fn read_tool_calls(calls: &Value, new_id: impl Fn() -> String) -> Vec<ToolCall> {
    calls
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| ToolCall {
            id: c["id"].as_str().map_or_else(&new_id, str::to_string),
            name: c["function"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            arguments: c["function"]["arguments"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_calls_round_trip_and_deltas_carry_their_index() {
        let calls = vec![
            ToolCall {
                id: "call_1".into(),
                name: "get_time".into(),
                arguments: "{}".into(),
            },
            ToolCall {
                id: "call_2".into(),
                name: "get_weather".into(),
                arguments: r#"{"city":"Oslo"}"#.into(),
            },
        ];
        let back = read_tool_calls(&tool_calls_json(&calls), || "new".into());
        assert_eq!(back, calls);
        let deltas = tool_call_deltas(&calls);
        assert_eq!(deltas[1]["index"], 1);
        assert_eq!(deltas[1]["function"]["name"], "get_weather");
        let missing = read_tool_calls(&json!([{"function": {"name": "f"}}]), || "new".into());
        assert_eq!(missing[0].id, "new");
        assert_eq!(missing[0].arguments, "");
    }

    #[test]
    fn choices_and_reasons_round_trip() {
        for choice in [ToolChoice::None, ToolChoice::Auto, ToolChoice::Required] {
            let text = tool_choice_str(&choice).unwrap();
            assert_eq!(
                tool_choice_str(&parse_tool_choice(text).unwrap()),
                Some(text)
            );
        }
        assert!(parse_tool_choice("sometimes").is_none());
        assert_eq!(finish_reason(&stop_reason("length")), "length");
        assert_eq!(finish_reason(&stop_reason("max_output_tokens")), "length");
        assert_eq!(finish_reason(&stop_reason("stop")), "stop");
    }
}
