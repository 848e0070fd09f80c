//! Chat formatting: the chat template stored in the GGUF, or a plain fallback.
//!
//! llama.cpp's `llama_chat_apply_template` recognises the common template families (Gemma,
//! Llama 3, ChatML, ...) from the template text in the GGUF. A model without a template, or with
//! one llama.cpp does not recognise, gets the plain `Role: text` format below.

use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};

use super::EngineError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> Self {
        ChatMessage {
            role: role.to_string(),
            content: content.to_string(),
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
        .map(|m| LlamaChatMessage::new(m.role.clone(), m.content.clone()))
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
        out.push_str(&message.content);
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
}
