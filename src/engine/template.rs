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

use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};

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
    /// One of llama.cpp's built-in templates, named in the configuration (`--chat-template`).
    Builtin,
    /// The model has no usable template: `System: ...\nUser: ...\nAssistant:`.
    Plain,
}

impl TemplateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TemplateKind::Gguf => "gguf",
            TemplateKind::Builtin => "builtin",
            TemplateKind::Plain => "plain",
        }
    }
}

/// Uses the GGUF's template when llama.cpp can apply it; a configured name must be one of
/// llama.cpp's built-in templates.
pub fn detect(model: &LlamaModel, name: Option<&str>) -> Result<TemplateKind, EngineError> {
    let probe = [ChatMessage::new("user", "hi")];
    if let Some(name) = name {
        if !builtin_names().iter().any(|known| known == name) {
            return Err(EngineError::Template(format!(
                "unknown chat template {name:?}; llama.cpp's built-in templates are: {}",
                builtin_names().join(", ")
            )));
        }
        return apply_gguf(model, Some(name), &probe).map(|_| TemplateKind::Builtin);
    }
    Ok(match apply_gguf(model, None, &probe) {
        Ok(_) => TemplateKind::Gguf,
        Err(_) => TemplateKind::Plain,
    })
}

/// The names of llama.cpp's built-in chat templates (`chatml`, `llama3`, `command-r`, ...).
pub fn builtin_names() -> Vec<String> {
    // SAFETY: with a null buffer llama.cpp only counts; then it fills at most `count` pointers
    // to static C strings.
    unsafe {
        let count = llama_cpp_sys_2::llama_chat_builtin_templates(std::ptr::null_mut(), 0);
        let Ok(len) = usize::try_from(count) else {
            return Vec::new();
        };
        let mut names = vec![std::ptr::null(); len];
        let filled = llama_cpp_sys_2::llama_chat_builtin_templates(names.as_mut_ptr(), len);
        names
            .into_iter()
            .take(usize::try_from(filled).unwrap_or(0))
            .filter(|p| !p.is_null())
            .map(|p| std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned())
            .collect()
    }
}

/// Formats `messages` and opens the assistant's turn. A final assistant message (text, no tool
/// calls) is a prefill: the turn opens with its text and the answer continues it, as
/// llama-server does (its `continue_final_message`).
pub fn apply(
    model: &LlamaModel,
    kind: TemplateKind,
    name: Option<&str>,
    messages: &[ChatMessage],
) -> Result<String, EngineError> {
    let (head, prefill) = split_prefill(messages);
    let mut prompt = match kind {
        TemplateKind::Gguf => apply_gguf(model, None, head)?,
        TemplateKind::Builtin => apply_gguf(model, name, head)?,
        TemplateKind::Plain => apply_plain(head),
    };
    if let Some(prefill) = prefill {
        if kind == TemplateKind::Plain {
            prompt.push(' ');
        }
        prompt.push_str(prefill);
    }
    Ok(prompt)
}

/// The messages before a prefill, and the prefill's text.
fn split_prefill(messages: &[ChatMessage]) -> (&[ChatMessage], Option<&str>) {
    match messages.split_last() {
        Some((last, head))
            if last.role == "assistant" && last.tool_calls.is_empty() && !head.is_empty() =>
        {
            (head, Some(last.content.as_str()))
        }
        _ => (messages, None),
    }
}

/// Applies the GGUF's template, or the built-in one `name` names.
fn apply_gguf(
    model: &LlamaModel,
    name: Option<&str>,
    messages: &[ChatMessage],
) -> Result<String, EngineError> {
    let template = match name {
        Some(name) => LlamaChatTemplate::new(name).map_err(|e| e.to_string()),
        None => model.chat_template(None).map_err(|e| e.to_string()),
    }
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
    fn a_final_assistant_message_is_continued() {
        let messages = [
            ChatMessage::new("user", "Name a colour."),
            ChatMessage::new("assistant", "The colour is"),
        ];
        let (head, prefill) = split_prefill(&messages);
        assert_eq!(head.len(), 1);
        assert_eq!(prefill, Some("The colour is"));
        assert_eq!(
            apply_plain(head) + " " + prefill.unwrap(),
            "User: Name a colour.\nAssistant: The colour is"
        );
        // Alone, or with tool calls, an assistant message is history, not a prefill.
        let alone = [ChatMessage::new("assistant", "Hello")];
        assert_eq!(split_prefill(&alone).1, None);
        let call = ChatMessage {
            tool_calls: vec![ToolCall {
                id: "c".into(),
                name: "f".into(),
                arguments: "{}".into(),
            }],
            ..ChatMessage::new("assistant", "")
        };
        assert_eq!(split_prefill(&[messages[0].clone(), call]).1, None);
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
