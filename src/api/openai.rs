//! OpenAI wire types (Chat Completions, Completions, Responses) and their conversion into the
//! service's [`Generation`]. Unknown fields are ignored, as OpenAI's API does; wrong types are
//! rejected by the extractor with the field's name; impossible values are rejected here.

use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::tools::{self, ToolCallIn, ToolChoiceIn, ToolIn};
use crate::engine::{BiasTarget, ChatMessage, LogitBias, SamplingParams, TokenEvent};
use crate::service::{Generation, OutputFormat, Prompt};

/// `stop`: one string or a list of up to 4.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StopField {
    One(String),
    Many(Vec<String>),
}

impl StopField {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StopField::One(s) => vec![s],
            StopField::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    /// llama-server also takes a `schema` here.
    JsonObject {
        schema: Option<Value>,
    },
    JsonSchema {
        json_schema: JsonSchemaSpec,
    },
}

#[derive(Debug, Deserialize)]
pub struct JsonSchemaSpec {
    pub name: Option<String>,
    pub schema: Option<Value>,
    pub strict: Option<bool>,
}

impl ResponseFormat {
    fn into_output_format(self) -> Result<OutputFormat, ApiError> {
        Ok(match self {
            ResponseFormat::Text => OutputFormat::Text,
            ResponseFormat::JsonObject { schema: None } => OutputFormat::JsonObject,
            ResponseFormat::JsonObject {
                schema: Some(schema),
            } if schema.is_object() => OutputFormat::JsonSchema(schema),
            ResponseFormat::JsonObject { schema: Some(_) } => {
                return Err(ApiError::invalid(
                    "response_format.schema",
                    "the schema must be a JSON object",
                ));
            }
            ResponseFormat::JsonSchema { json_schema } => match json_schema.schema {
                Some(schema) if schema.is_object() => OutputFormat::JsonSchema(schema),
                Some(_) => {
                    return Err(ApiError::invalid(
                        "response_format.json_schema.schema",
                        "the schema must be a JSON object",
                    ));
                }
                None => OutputFormat::JsonObject,
            },
        })
    }
}

/// A message's `content`: a string, or a list of parts of which only text is supported.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

impl Content {
    fn into_text(self, param: &str) -> Result<String, ApiError> {
        match self {
            Content::Text(text) => Ok(text),
            Content::Parts(parts) => {
                let mut out = String::new();
                for part in parts {
                    match (part.kind.as_str(), part.text) {
                        ("text" | "input_text" | "output_text", Some(text)) => out.push_str(&text),
                        (kind, _) => {
                            return Err(ApiError::invalid(
                                param,
                                format!(
                                    "content part type '{kind}' is not supported; only text is"
                                ),
                            ));
                        }
                    }
                }
                Ok(out)
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct MessageIn {
    pub role: String,
    pub content: Option<Content>,
    /// An assistant message's calls (its `content` may then be null).
    pub tool_calls: Option<Vec<ToolCallIn>>,
    /// The call a `tool` message answers.
    pub tool_call_id: Option<String>,
}

const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];

pub fn messages_to_chat(
    messages: Vec<MessageIn>,
    param: &str,
) -> Result<Vec<ChatMessage>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid(
            param,
            format!("'{param}' must contain at least one message"),
        ));
    }
    if messages.len() >= 2
        && messages[messages.len() - 2..]
            .iter()
            .all(|m| m.role == "assistant")
    {
        // One trailing assistant message is a prefill the answer continues; two are ambiguous.
        return Err(ApiError::invalid(
            param,
            format!("'{param}' cannot end with two or more assistant messages"),
        ));
    }
    messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            if !ROLES.contains(&m.role.as_str()) {
                return Err(ApiError::invalid(
                    &format!("{param}[{i}].role"),
                    format!("unknown role '{}'", m.role),
                ));
            }
            let content = match m.content {
                Some(content) => content.into_text(&format!("{param}[{i}].content"))?,
                None => String::new(),
            };
            let tool_calls = match m.tool_calls {
                Some(_) if m.role != "assistant" => {
                    return Err(ApiError::invalid(
                        &format!("{param}[{i}].tool_calls"),
                        "only assistant messages carry tool_calls",
                    ));
                }
                Some(calls) => tools::history_calls(calls, &format!("{param}[{i}].tool_calls"))?,
                None => Vec::new(),
            };
            if m.role == "tool" && m.tool_call_id.is_none() {
                return Err(ApiError::invalid(
                    &format!("{param}[{i}].tool_call_id"),
                    "a tool message needs the tool_call_id it answers",
                ));
            }
            Ok(ChatMessage {
                role: m.role,
                content,
                tool_calls,
                tool_call_id: m.tool_call_id,
            })
        })
        .collect()
}

/// The sampling fields Chat Completions, Completions and llama.cpp's API share.
#[derive(Debug, Default)]
pub struct Sampling {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i32>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub seed: Option<i64>,
    pub max_tokens: Option<u32>,
    pub stop: Option<StopField>,
    pub top_logprobs: usize,
    /// OpenAI's `{"token id": bias}` map or llama.cpp's `[[token id or text, bias], ...]`.
    pub logit_bias: Option<Value>,
}

impl Sampling {
    /// Validated sampling parameters; absent fields take the server's `defaults` (`[sampling]`).
    pub fn into_params(self, defaults: &SamplingParams) -> Result<SamplingParams, ApiError> {
        let defaults = defaults.clone();
        let stop = self.stop.map(StopField::into_vec).unwrap_or_default();
        if stop.len() > 4 {
            return Err(ApiError::invalid(
                "stop",
                "at most 4 stop sequences are allowed",
            ));
        }
        if self.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
            return Err(ApiError::invalid(
                "temperature",
                "temperature must be between 0 and 2",
            ));
        }
        for (name, value) in [
            ("frequency_penalty", self.frequency_penalty),
            ("presence_penalty", self.presence_penalty),
        ] {
            if value.is_some_and(|v| !(-2.0..=2.0).contains(&v)) {
                return Err(ApiError::invalid(
                    name,
                    format!("{name} must be between -2 and 2"),
                ));
            }
        }
        if self.max_tokens == Some(0) {
            return Err(ApiError::invalid(
                "max_tokens",
                "max_tokens must be at least 1",
            ));
        }
        let logit_bias = match self.logit_bias {
            None | Some(Value::Null) => Vec::new(),
            Some(value) => logit_bias(value)?,
        };
        let params = SamplingParams {
            logit_bias,
            temperature: self.temperature.unwrap_or(defaults.temperature),
            top_p: self.top_p.unwrap_or(defaults.top_p),
            top_k: self.top_k.unwrap_or(defaults.top_k),
            min_p: self.min_p.unwrap_or(defaults.min_p),
            repeat_penalty: self.repeat_penalty.unwrap_or(defaults.repeat_penalty),
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            // OpenAI seeds are 64-bit; llama.cpp's are 32-bit.
            seed: self.seed.map(|s| s as u32).or(defaults.seed),
            max_tokens: self.max_tokens.unwrap_or(0),
            stop,
            top_logprobs: self.top_logprobs,
            ..defaults
        };
        params.validate().map_err(|e| {
            let message = e.to_string();
            let field = message
                .trim_start_matches("invalid sampling parameter: ")
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string();
            ApiError::invalid(&field, message)
        })?;
        Ok(params)
    }
}

/// Parses `logit_bias` in either form. A key or first element that is an integer (or a string
/// of one, OpenAI's map keys) is a token id; other text stands for its tokens, as in llama.cpp.
/// A bias is a number, or `false` to forbid the token.
fn logit_bias(value: Value) -> Result<Vec<LogitBias>, ApiError> {
    fn bias(value: &Value, at: &str) -> Result<f32, ApiError> {
        match value {
            Value::Bool(false) => Ok(f32::NEG_INFINITY),
            Value::Number(n) => match n.as_f64().map(|v| v as f32) {
                Some(v) if v.is_finite() => Ok(v),
                _ => Err(ApiError::invalid(
                    at,
                    format!("{at} is too large; a bias is a finite number"),
                )),
            },
            _ => Err(ApiError::invalid(
                at,
                format!("{at} must be a number, or false to forbid the token"),
            )),
        }
    }
    fn target(key: &str) -> BiasTarget {
        match key.parse::<i64>() {
            Ok(token) => BiasTarget::Token(token),
            Err(_) => BiasTarget::Text(key.to_string()),
        }
    }
    match value {
        Value::Object(map) => map
            .iter()
            .map(|(key, value)| {
                Ok(LogitBias {
                    target: target(key),
                    bias: bias(value, &format!("logit_bias[{key:?}]"))?,
                })
            })
            .collect(),
        Value::Array(pairs) => pairs
            .iter()
            .enumerate()
            .map(|(i, pair)| {
                let at = format!("logit_bias[{i}]");
                let shape = || {
                    ApiError::invalid(&at, format!("{at} must be a [token id or text, bias] pair"))
                };
                let [key, value] = pair.as_array().map(Vec::as_slice).ok_or_else(shape)? else {
                    return Err(shape());
                };
                let target = match key {
                    Value::Number(n) => BiasTarget::Token(n.as_i64().ok_or_else(shape)?),
                    Value::String(text) => BiasTarget::Text(text.clone()),
                    _ => return Err(shape()),
                };
                Ok(LogitBias {
                    target,
                    bias: bias(value, &format!("{at}[1]"))?,
                })
            })
            .collect(),
        _ => Err(ApiError::invalid(
            "logit_bias",
            "logit_bias must be an object of token ids to biases, or a list of [token, bias] pairs",
        )),
    }
}

/// Most choices one request may ask for (each is a generation of its own).
pub const MAX_CHOICES: u32 = 8;

fn check_n(n: Option<u32>, stream: bool) -> Result<u32, ApiError> {
    match n {
        None => Ok(1),
        Some(0) => Err(ApiError::invalid("n", "n must be at least 1")),
        Some(n) if n > MAX_CHOICES => Err(ApiError::invalid(
            "n",
            format!("n must be at most {MAX_CHOICES}"),
        )),
        Some(n) if n > 1 && stream => Err(ApiError::invalid(
            "n",
            "n > 1 is not supported with stream: true",
        )),
        Some(n) => Ok(n),
    }
}

fn check_top_logprobs(logprobs: bool, top: Option<usize>) -> Result<usize, ApiError> {
    match top {
        Some(n) if n > 20 => Err(ApiError::invalid(
            "top_logprobs",
            "top_logprobs must be between 0 and 20",
        )),
        Some(n) if n > 0 && !logprobs => Err(ApiError::invalid(
            "top_logprobs",
            "top_logprobs requires logprobs: true",
        )),
        Some(n) => Ok(n),
        None => Ok(0),
    }
}

/// llama.cpp's own constraint fields (`json_schema`, `grammar`), as `/completion` takes them
/// and llama-server also takes them on the OpenAI routes. An empty grammar is none.
pub fn llama_format(
    json_schema: Option<Value>,
    grammar: Option<String>,
) -> Result<Option<OutputFormat>, ApiError> {
    let grammar = grammar.filter(|g| !g.trim().is_empty());
    match (json_schema, grammar) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "grammar",
            "grammar and json_schema cannot both be given",
        )),
        (None, Some(grammar)) => Ok(Some(OutputFormat::Grammar(grammar))),
        (Some(schema), None) if schema.is_object() => Ok(Some(OutputFormat::JsonSchema(schema))),
        (Some(_), None) => Err(ApiError::invalid(
            "json_schema",
            "json_schema must be an object",
        )),
        (None, None) => Ok(None),
    }
}

// ---- Chat Completions ----

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub model: Option<String>,
    /// edgellm's own options (the routing override).
    pub edgellm: Option<super::routed::EdgeOptions>,
    pub messages: Vec<MessageIn>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i32>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    pub stop: Option<StopField>,
    pub seed: Option<i64>,
    pub n: Option<u32>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<usize>,
    pub response_format: Option<ResponseFormat>,
    /// llama-server's extensions: a JSON schema or a GBNF grammar for the answer.
    pub json_schema: Option<Value>,
    pub grammar: Option<String>,
    pub tools: Option<Vec<ToolIn>>,
    pub tool_choice: Option<ToolChoiceIn>,
    pub parallel_tool_calls: Option<bool>,
    pub logit_bias: Option<Value>,
    /// llama-server's: continue the last (assistant) message rather than start a new turn.
    pub continue_final_message: Option<bool>,
    pub add_generation_prompt: Option<bool>,
    /// llama-server's: `timings` on every streamed chunk, not only the last.
    pub timings_per_token: Option<bool>,
    /// llama-server's: chunks with `prompt_progress` while a streamed request's prompt is read.
    pub return_progress: Option<bool>,
    /// llama-server's: `__verbose` with the prompt the local model read.
    pub verbose: Option<bool>,
}

/// What a chat or completion handler needs besides the generation itself.
#[derive(Default)]
pub struct Options {
    pub stream: bool,
    pub include_usage: bool,
    pub logprobs: bool,
    /// How many choices (`n`), each generated on its own.
    pub n: u32,
    pub timings_per_token: bool,
    pub verbose: bool,
    /// The knowledge-pack citation for the answer's `edgellm` object (`api::packs`).
    pub citation: Option<Value>,
}

impl ChatRequest {
    pub fn into_generation(
        self,
        defaults: &SamplingParams,
    ) -> Result<(Generation, Options), ApiError> {
        let stream = self.stream.unwrap_or(false);
        let n = check_n(self.n, stream)?;
        self.check_continuation()?;
        let logprobs = self.logprobs.unwrap_or(false);
        let top_logprobs = check_top_logprobs(logprobs, self.top_logprobs)?;
        let mut params = Sampling {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            seed: self.seed,
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            stop: self.stop,
            top_logprobs,
            logit_bias: self.logit_bias,
        }
        .into_params(defaults)?;
        params.prompt_progress = stream && self.return_progress.unwrap_or(false);
        let format = self
            .response_format
            .map_or(Ok(OutputFormat::Text), ResponseFormat::into_output_format)?;
        let format = match (llama_format(self.json_schema, self.grammar)?, format) {
            (None, format) => format,
            (Some(llama), OutputFormat::Text) if self.tools.is_none() => llama,
            (Some(_), OutputFormat::Text) => {
                return Err(ApiError::invalid(
                    "tools",
                    "json_schema or grammar cannot be combined with tools",
                ));
            }
            (Some(_), _) => {
                return Err(ApiError::invalid(
                    "response_format",
                    "response_format cannot be combined with json_schema or grammar",
                ));
            }
        };
        let prompt = Prompt::Chat(messages_to_chat(self.messages, "messages")?);
        let tools = tools::tool_set(self.tools, self.tool_choice, self.parallel_tool_calls)?;
        let options = Options {
            citation: None,
            stream,
            include_usage: self.stream_options.is_some_and(|o| o.include_usage),
            logprobs,
            n,
            timings_per_token: self.timings_per_token.unwrap_or(false),
            verbose: self.verbose.unwrap_or(false),
        };
        Ok((
            Generation {
                sources: Vec::new(),
                prompt,
                params,
                format,
                tools,
            },
            options,
        ))
    }
}

impl ChatRequest {
    /// A trailing assistant message is always continued (llama-server's assistant prefill);
    /// `continue_final_message` asks for exactly that, so it needs one and excludes a new turn.
    fn check_continuation(&self) -> Result<(), ApiError> {
        let ends_with_assistant = self.messages.last().is_some_and(|m| m.role == "assistant");
        match (self.continue_final_message, self.add_generation_prompt) {
            (Some(true), Some(true)) => Err(ApiError::invalid(
                "continue_final_message",
                "continue_final_message and add_generation_prompt cannot both be true",
            )),
            (Some(true), _) if !ends_with_assistant => Err(ApiError::invalid(
                "continue_final_message",
                "continue_final_message needs the last message to be the assistant's",
            )),
            (_, Some(false)) if !ends_with_assistant => Err(ApiError::invalid(
                "add_generation_prompt",
                "add_generation_prompt: false is supported only to continue a final assistant message",
            )),
            _ => Ok(()),
        }
    }
}

// ---- Completions ----

/// `prompt`: a string, a list with one string, or token ids.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptField {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<i32>),
}

impl PromptField {
    pub fn into_prompt(self) -> Result<Prompt, ApiError> {
        match self {
            PromptField::Text(text) => Ok(Prompt::Text(text)),
            PromptField::Texts(mut texts) if texts.len() == 1 => Ok(Prompt::Text(texts.remove(0))),
            PromptField::Texts(_) => Err(ApiError::invalid(
                "prompt",
                "only a single prompt per request is supported",
            )),
            PromptField::Tokens(tokens) => Ok(Prompt::Tokens(tokens)),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub model: Option<String>,
    /// edgellm's own options (the routing override).
    pub edgellm: Option<super::routed::EdgeOptions>,
    pub prompt: PromptField,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i32>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub max_tokens: Option<u32>,
    pub stop: Option<StopField>,
    pub seed: Option<i64>,
    pub n: Option<u32>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    /// Completions API: the number of top alternatives (0-5), not a boolean.
    pub logprobs: Option<usize>,
    pub echo: Option<bool>,
    pub response_format: Option<ResponseFormat>,
    pub logit_bias: Option<Value>,
}

impl CompletionRequest {
    pub fn into_generation(
        self,
        defaults: &SamplingParams,
    ) -> Result<(Generation, Options), ApiError> {
        let stream = self.stream.unwrap_or(false);
        let n = check_n(self.n, stream)?;
        if self.echo == Some(true) {
            return Err(ApiError::invalid("echo", "echo is not supported"));
        }
        if self.logprobs.is_some_and(|n| n > 5) {
            return Err(ApiError::invalid(
                "logprobs",
                "logprobs must be between 0 and 5",
            ));
        }
        let params = Sampling {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            seed: self.seed,
            max_tokens: Some(self.max_tokens.unwrap_or(16)),
            stop: self.stop,
            top_logprobs: self.logprobs.unwrap_or(0),
            logit_bias: self.logit_bias,
        }
        .into_params(defaults)?;
        let format = self
            .response_format
            .map_or(Ok(OutputFormat::Text), ResponseFormat::into_output_format)?;
        let options = Options {
            citation: None,
            stream,
            include_usage: self.stream_options.is_some_and(|o| o.include_usage),
            logprobs: self.logprobs.is_some(),
            n,
            ..Options::default()
        };
        Ok((
            Generation {
                sources: Vec::new(),
                prompt: self.prompt.into_prompt()?,
                params,
                format,
                tools: None,
            },
            options,
        ))
    }
}

// ---- Responses ----

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ResponsesInput {
    Text(String),
    Items(Vec<MessageIn>),
}

#[derive(Debug, Deserialize)]
pub struct ResponsesText {
    pub format: Option<ResponsesFormat>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponsesFormat {
    Text,
    JsonObject,
    JsonSchema {
        schema: Option<Value>,
        name: Option<String>,
        strict: Option<bool>,
    },
}

#[derive(Debug, Deserialize)]
pub struct ResponsesRequest {
    pub model: Option<String>,
    /// edgellm's own options (the routing override).
    pub edgellm: Option<super::routed::EdgeOptions>,
    pub input: ResponsesInput,
    pub instructions: Option<String>,
    pub max_output_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub stream: Option<bool>,
    /// llama-server's: `response.in_progress` events with `prompt_progress` while a streamed
    /// request's prompt is read.
    pub return_progress: Option<bool>,
    /// llama-server's: `timings` on each streamed delta and on the completed event.
    pub timings_per_token: Option<bool>,
    pub text: Option<ResponsesText>,
    /// Tool calling is served on `/v1/chat/completions` only; a request with tools is refused.
    pub tools: Option<Vec<Value>>,
}

impl ResponsesRequest {
    pub fn into_generation(
        self,
        defaults: &SamplingParams,
    ) -> Result<(Generation, bool), ApiError> {
        if self.tools.as_ref().is_some_and(|t| !t.is_empty()) {
            return Err(ApiError::invalid(
                "tools",
                "tool calling is supported on /v1/chat/completions; /v1/responses is text-only",
            ));
        }
        let mut messages = Vec::new();
        if let Some(instructions) = self.instructions {
            messages.push(ChatMessage::new("system", &instructions));
        }
        match self.input {
            ResponsesInput::Text(text) => messages.push(ChatMessage::new("user", &text)),
            ResponsesInput::Items(items) => messages.extend(messages_to_chat(items, "input")?),
        }
        let params = Sampling {
            temperature: self.temperature,
            top_p: self.top_p,
            max_tokens: self.max_output_tokens,
            ..Sampling::default()
        }
        .into_params(defaults)
        .map_err(|mut e| {
            if e.param.as_deref() == Some("max_tokens") {
                e.param = Some("max_output_tokens".into());
            }
            e
        })?;
        let format = match self.text.and_then(|t| t.format) {
            None | Some(ResponsesFormat::Text) => OutputFormat::Text,
            Some(ResponsesFormat::JsonObject) => OutputFormat::JsonObject,
            Some(ResponsesFormat::JsonSchema {
                schema: Some(schema),
                ..
            }) if schema.is_object() => OutputFormat::JsonSchema(schema),
            Some(ResponsesFormat::JsonSchema { .. }) => {
                return Err(ApiError::invalid(
                    "text.format.schema",
                    "a json_schema format needs a 'schema' object",
                ));
            }
        };
        Ok((
            Generation {
                sources: Vec::new(),
                prompt: Prompt::Chat(messages),
                params,
                format,
                tools: None,
            },
            self.stream.unwrap_or(false),
        ))
    }
}

// ---- Response pieces ----

pub fn token_string(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One entry of a chat `logprobs.content` list.
pub fn chat_logprob(token: &TokenEvent) -> Value {
    json!({
        "token": token_string(&token.piece),
        "logprob": token.logprob,
        "bytes": token.piece,
        "top_logprobs": token.top.iter().map(|t| json!({
            "token": token_string(&t.bytes),
            "logprob": t.logprob,
            "bytes": t.bytes,
        })).collect::<Vec<_>>(),
    })
}

/// The legacy Completions `logprobs` object for a list of tokens.
pub fn completion_logprobs(tokens: &[TokenEvent], mut offset: usize) -> Value {
    let mut text_offset = Vec::with_capacity(tokens.len());
    for token in tokens {
        text_offset.push(offset);
        offset += token.piece.len();
    }
    json!({
        "tokens": tokens.iter().map(|t| token_string(&t.piece)).collect::<Vec<_>>(),
        "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
        "top_logprobs": tokens.iter().map(|t| {
            t.top.iter().map(|a| (token_string(&a.bytes), json!(a.logprob))).collect::<serde_json::Map<_, _>>()
        }).collect::<Vec<_>>(),
        "text_offset": text_offset,
    })
}

pub use crate::wire::openai::finish_reason;

pub fn usage(summary: &crate::engine::Summary) -> Value {
    json!({
        "prompt_tokens": summary.prompt_tokens,
        "completion_tokens": summary.generated_tokens,
        "total_tokens": summary.prompt_tokens + summary.generated_tokens,
        "prompt_tokens_details": {"cached_tokens": summary.cached_tokens},
    })
}
