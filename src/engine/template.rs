//! Chat formatting: the chat template stored in the GGUF, or a plain fallback.
//!
//! llama.cpp's `llama_chat_apply_template` recognises the common template families (Gemma,
//! Llama 3, ChatML, ...) from the template text in the GGUF. A model without a template, or with
//! one llama.cpp does not recognise, gets the plain `Role: text` format below.
//!
//! Tool calling is rendered as text for both: an assistant message's tool calls are appended to
//! its content as `{"tool_calls":[{"name":...,"arguments":{...}}]}` (the shape the local model is
//! constrained to produce, see `crate::tools`), and a tool result is a message with role `tool`
//! whose content is the result. llama.cpp's template API takes only role and content.

use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};

use super::EngineError;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    /// The calls an assistant message made (OpenAI's `tool_calls`).
    pub tool_calls: Vec<ToolCall>,
    /// The call a `tool` message answers.
    pub tool_call_id: Option<String>,
}

/// One function call of the assistant: `arguments` is the JSON text of its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage {
            role: role.to_string(),
            content: content.to_string(),
            ..ChatMessage::default()
        }
    }

    /// The content as the model reads it: the text, then the tool calls as one JSON line.
    pub fn model_text(&self) -> String {
        if self.tool_calls.is_empty() {
            return self.content.clone();
        }
        // Written by hand so that `name` comes before `arguments`, as the model produces them
        // (serde_json's maps sort their keys).
        let calls: Vec<String> = self
            .tool_calls
            .iter()
            .map(|call| {
                let arguments = match serde_json::from_str::<serde_json::Value>(&call.arguments) {
                    Ok(value) => value.to_string(),
                    Err(_) => serde_json::Value::String(call.arguments.clone()).to_string(),
                };
                let name = serde_json::Value::String(call.name.clone());
                format!(r#"{{"name":{name},"arguments":{arguments}}}"#)
            })
            .collect();
        let json = format!(r#"{{"tool_calls":[{}]}}"#, calls.join(","));
        if self.content.is_empty() {
            json
        } else {
            format!("{}\n{json}", self.content)
        }
    }
}

/// Which template formats chat prompts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateKind {
    /// The template stored in the GGUF (`tokenizer.chat_template`).
    Gguf,
    /// The model has no usable template: `System: ...\nUser: ...\nAssistant:`.
    Plain,
}

impl TemplateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TemplateKind::Gguf => "gguf",
            TemplateKind::Plain => "plain",
        }
    }
}

/// Uses the GGUF's template when llama.cpp can apply it.
pub fn detect(model: &LlamaModel) -> TemplateKind {
    let probe = [ChatMessage::new("user", "hi")];
    match apply_gguf(model, &probe) {
        Ok(_) => TemplateKind::Gguf,
        Err(_) => TemplateKind::Plain,
    }
}

pub fn apply(
    model: &LlamaModel,
    kind: TemplateKind,
    messages: &[ChatMessage],
) -> Result<String, EngineError> {
    match kind {
        TemplateKind::Gguf => apply_gguf(model, messages),
        TemplateKind::Plain => Ok(apply_plain(messages)),
    }
}

fn apply_gguf(model: &LlamaModel, messages: &[ChatMessage]) -> Result<String, EngineError> {
    let template = model
        .chat_template(None)
        .map_err(|e| EngineError::Template(e.to_string()))?;
    let chat = messages
        .iter()
        .map(|m| LlamaChatMessage::new(m.role.clone(), m.model_text()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| EngineError::Template(e.to_string()))?;
    model
        .apply_chat_template(&template, &chat, true)
        .map_err(|e| EngineError::Template(e.to_string()))
}

/// The fallback format: one `Role: text` paragraph per message, then `Assistant:`.
pub fn apply_plain(messages: &[ChatMessage]) -> String {
    let mut out = String::new();
    for message in messages {
        let role = match message.role.as_str() {
            "system" | "developer" => "System",
            "assistant" => "Assistant",
            "tool" => "Tool",
            _ => "User",
        };
        out.push_str(role);
        out.push_str(": ");
        out.push_str(&message.model_text());
        out.push('\n');
    }
    out.push_str("Assistant:");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_template() {
        let messages = [
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", "Hi"),
        ];
        assert_eq!(
            apply_plain(&messages),
            "System: Be brief.\nUser: Hi\nAssistant:"
        );
    }

    #[test]
    fn plain_template_renders_tool_calls_and_results() {
        let call = ToolCall {
            id: "call_1".into(),
            name: "get_weather".into(),
            arguments: r#"{"city":"Oslo"}"#.into(),
        };
        let messages = [
            ChatMessage::new("user", "Weather in Oslo?"),
            ChatMessage {
                tool_calls: vec![call],
                ..ChatMessage::new("assistant", "")
            },
            ChatMessage {
                tool_call_id: Some("call_1".into()),
                ..ChatMessage::new("tool", "4 C, rain")
            },
        ];
        assert_eq!(
            apply_plain(&messages),
            "User: Weather in Oslo?\n\
             Assistant: {\"tool_calls\":[{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"}}]}\n\
             Tool: 4 C, rain\nAssistant:"
        );
    }
}
