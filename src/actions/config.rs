//! `[[actions]]` configuration: the raw TOML shape (strict, unknown keys refused) and its
//! validation into [`ActionSpec`], the type the executors use. Everything the model cannot
//! change (URL, method, broker, topic template, program path, argv shape) is fixed here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::ActionError;
use super::rate::RateLimit;

/// Default time limit of one webhook call or program run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default cap on the captured stdout and stderr of a program, each.
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 4096;

/// One `[[actions]]` entry as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAction {
    pub name: String,
    pub description: String,
    /// JSON schema of the arguments: a TOML table, or a string holding JSON.
    pub parameters: Value,
    /// `"<count>/<unit>"`, unit one of s, sec, second, m, min, minute, h, hour.
    pub rate_limit: Option<String>,
    pub webhook: Option<RawWebhook>,
    pub mqtt: Option<RawMqttAction>,
    pub program: Option<RawProgram>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// POST, PUT, PATCH or DELETE (default POST).
    pub method: Option<String>,
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMqttAction {
    /// `host:port`.
    pub broker: String,
    /// e.g. `site/{site}/cmd`; each `{name}` is filled from a required scalar argument.
    pub topic: String,
    pub username: Option<String>,
    /// Name of the environment variable holding the password.
    pub password_env: Option<String>,
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProgram {
    /// Absolute path of the executable; never a shell unless you configure one yourself.
    pub path: PathBuf,
    /// argv after the program name; an element that is exactly `{name}` becomes that argument.
    #[serde(default)]
    pub args: Vec<String>,
    pub timeout_ms: Option<u64>,
    pub max_output_bytes: Option<usize>,
}

/// A validated action.
#[derive(Debug, Clone)]
pub struct ActionSpec {
    pub name: String,
    pub description: String,
    pub parameters: Value,
    pub rate_limit: Option<RateLimit>,
    pub executor: Executor,
}

/// Exactly one way to carry out an action.
#[derive(Debug, Clone)]
pub enum Executor {
    Webhook(WebhookSpec),
    Mqtt(MqttActionSpec),
    Program(ProgramSpec),
}

impl Executor {
    pub fn kind(&self) -> &'static str {
        match self {
            Executor::Webhook(_) => "webhook",
            Executor::Mqtt(_) => "mqtt",
            Executor::Program(_) => "program",
        }
    }
}

#[derive(Debug, Clone)]
pub struct WebhookSpec {
    pub method: reqwest::Method,
    pub url: reqwest::Url,
    pub headers: Vec<(reqwest::header::HeaderName, reqwest::header::HeaderValue)>,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct MqttActionSpec {
    pub host: String,
    pub port: u16,
    pub topic: TopicTemplate,
    pub credentials: Option<(String, String)>,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct ProgramSpec {
    pub path: PathBuf,
    pub args: Vec<ArgTemplate>,
    pub timeout: Duration,
    pub max_output_bytes: usize,
}

/// One argv element: fixed text, or a whole-element placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgTemplate {
    Literal(String),
    Argument(String),
}

/// An MQTT topic with `{name}` placeholders inside segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    pub parts: Vec<TopicPart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicPart {
    Literal(String),
    Argument(String),
}

impl RawAction {
    /// Validates one entry; `env` looks up environment variables (injectable for tests).
    pub fn validate(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ActionSpec, ActionError> {
        let name = self.name.trim();
        let err = |message: String| ActionError::Config {
            action: self.name.clone(),
            message,
        };
        if name.is_empty()
            || name != self.name
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        {
            return Err(err(
                "name must be non-empty ASCII letters, digits, '_', '-' or '.'".into(),
            ));
        }
        let parameters = schema_value(&self.parameters).map_err(&err)?;
        check_parameters_schema(&parameters).map_err(&err)?;
        let rate_limit = match &self.rate_limit {
            Some(text) => Some(RateLimit::parse(text).map_err(&err)?),
            None => None,
        };
        let executor = match (&self.webhook, &self.mqtt, &self.program) {
            (Some(w), None, None) => Executor::Webhook(validate_webhook(w).map_err(&err)?),
            (None, Some(m), None) => {
                Executor::Mqtt(validate_mqtt(m, &parameters, env).map_err(&err)?)
            }
            (None, None, Some(p)) => {
                Executor::Program(validate_program(p, &parameters).map_err(&err)?)
            }
            (None, None, None) => {
                return Err(err(
                    "needs exactly one executor: [actions.webhook], [actions.mqtt] or [actions.program]"
                        .into(),
                ));
            }
            _ => {
                return Err(err(
                    "has more than one executor; configure exactly one of webhook, mqtt, program"
                        .into(),
                ));
            }
        };
        Ok(ActionSpec {
            name: self.name.clone(),
            description: self.description.clone(),
            parameters,
            rate_limit,
            executor,
        })
    }
}

/// Validates all `[[actions]]` entries; names must be unique.
pub fn validate_actions(
    raw: &[RawAction],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<ActionSpec>, ActionError> {
    let mut seen = BTreeSet::new();
    let mut specs = Vec::with_capacity(raw.len());
    for action in raw {
        if !seen.insert(action.name.clone()) {
            return Err(ActionError::Config {
                action: action.name.clone(),
                message: "duplicate action name".into(),
            });
        }
        specs.push(action.validate(env)?);
    }
    Ok(specs)
}

/// A schema given as a TOML table is used as is; a string is parsed as JSON.
pub fn schema_value(value: &Value) -> Result<Value, String> {
    match value {
        Value::String(text) => {
            serde_json::from_str(text).map_err(|e| format!("schema string is not JSON: {e}"))
        }
        other => Ok(other.clone()),
    }
}

/// The keywords a schema may use: a small subset every tier reads alike (the local constraint
/// engine, remote APIs' structured output) and the validator checks exactly. `$ref`, `oneOf`,
/// `pattern`, `not`, `if` and friends are refused.
const ALLOWED_KEYWORDS: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "anyOf",
    "const",
    "enum",
    "items",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "description",
    "title",
];

/// Checks that `schema` only uses [`ALLOWED_KEYWORDS`] (recursively) and compiles.
pub fn check_schema_subset(schema: &Value) -> Result<(), String> {
    check_keywords(schema, "#")?;
    jsonschema::validator_for(schema).map_err(|e| format!("invalid JSON schema: {e}"))?;
    Ok(())
}

fn check_keywords(schema: &Value, at: &str) -> Result<(), String> {
    let Value::Object(map) = schema else {
        return match schema {
            Value::Bool(true) => Ok(()),
            _ => Err(format!("{at}: a schema must be an object")),
        };
    };
    for (key, value) in map {
        if !ALLOWED_KEYWORDS.contains(&key.as_str()) {
            return Err(format!(
                "{at}: keyword `{key}` is not supported (allowed: {})",
                ALLOWED_KEYWORDS.join(", ")
            ));
        }
        match key.as_str() {
            "properties" => {
                let Value::Object(props) = value else {
                    return Err(format!("{at}/properties must be an object"));
                };
                for (name, sub) in props {
                    check_keywords(sub, &format!("{at}/properties/{name}"))?;
                }
            }
            "items" => check_keywords(value, &format!("{at}/items"))?,
            "anyOf" => {
                let Value::Array(subs) = value else {
                    return Err(format!("{at}/anyOf must be an array"));
                };
                for (i, sub) in subs.iter().enumerate() {
                    check_keywords(sub, &format!("{at}/anyOf/{i}"))?;
                }
            }
            "additionalProperties" if !matches!(value, Value::Bool(_)) => {
                return Err(format!("{at}/additionalProperties must be true or false"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Parameters: an object schema that refuses unknown properties at the top level.
fn check_parameters_schema(schema: &Value) -> Result<(), String> {
    check_schema_subset(schema).map_err(|e| format!("parameters: {e}"))?;
    if schema.get("type") != Some(&Value::String("object".into())) {
        return Err("parameters: top-level `type` must be \"object\"".into());
    }
    if schema.get("additionalProperties") != Some(&Value::Bool(false)) {
        return Err("parameters: top level must set `additionalProperties = false`".into());
    }
    Ok(())
}

/// A placeholder must name a required property of a scalar type, so a validated call always
/// has a value for it.
fn check_placeholder(parameters: &Value, name: &str) -> Result<(), String> {
    let required = parameters
        .get("required")
        .and_then(Value::as_array)
        .is_some_and(|r| r.iter().any(|v| v.as_str() == Some(name)));
    if !required {
        return Err(format!(
            "placeholder {{{name}}} must name a required parameter"
        ));
    }
    let ty = parameters
        .get("properties")
        .and_then(|p| p.get(name))
        .and_then(|p| p.get("type"))
        .and_then(Value::as_str);
    match ty {
        Some("string" | "integer" | "number" | "boolean") => Ok(()),
        _ => Err(format!(
            "placeholder {{{name}}} must name a parameter of type string, integer, number or boolean"
        )),
    }
}

fn timeout(ms: Option<u64>) -> Result<Duration, String> {
    match ms {
        None => Ok(DEFAULT_TIMEOUT),
        Some(0) => Err("timeout_ms must be positive".into()),
        Some(ms) => Ok(Duration::from_millis(ms)),
    }
}

fn validate_webhook(raw: &RawWebhook) -> Result<WebhookSpec, String> {
    let method = match raw
        .method
        .as_deref()
        .unwrap_or("POST")
        .to_ascii_uppercase()
        .as_str()
    {
        "POST" => reqwest::Method::POST,
        "PUT" => reqwest::Method::PUT,
        "PATCH" => reqwest::Method::PATCH,
        "DELETE" => reqwest::Method::DELETE,
        other => {
            return Err(format!(
                "webhook method {other} not supported (POST, PUT, PATCH, DELETE)"
            ));
        }
    };
    let url = reqwest::Url::parse(&raw.url).map_err(|e| format!("webhook url: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("webhook url must be http(s)://host/...".into());
    }
    let mut headers = Vec::with_capacity(raw.headers.len());
    for (name, value) in &raw.headers {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| format!("webhook header name {name:?}: {e}"))?;
        let value = reqwest::header::HeaderValue::from_str(value)
            .map_err(|e| format!("webhook header {name}: {e}"))?;
        headers.push((name, value));
    }
    Ok(WebhookSpec {
        method,
        url,
        headers,
        timeout: timeout(raw.timeout_ms)?,
    })
}

/// `host:port` (a bracketed IPv6 host is accepted).
pub fn parse_host_port(text: &str) -> Result<(String, u16), String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("broker {text:?} must be host:port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port
        .parse()
        .map_err(|_| format!("broker {text:?}: port must be a number"))?;
    if host.is_empty() || port == 0 {
        return Err(format!("broker {text:?} must be host:port"));
    }
    Ok((host.to_string(), port))
}

fn validate_mqtt(
    raw: &RawMqttAction,
    parameters: &Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<MqttActionSpec, String> {
    let (host, port) = parse_host_port(&raw.broker)?;
    let topic = TopicTemplate::parse(&raw.topic)?;
    for part in &topic.parts {
        if let TopicPart::Argument(name) = part {
            check_placeholder(parameters, name)?;
        }
    }
    let credentials = match (&raw.username, &raw.password_env) {
        (Some(user), Some(var)) => {
            let password =
                env(var).ok_or_else(|| format!("environment variable {var} is not set"))?;
            Some((user.clone(), password))
        }
        (Some(user), None) => Some((user.clone(), String::new())),
        (None, Some(_)) => return Err("password_env needs username".into()),
        (None, None) => None,
    };
    Ok(MqttActionSpec {
        host,
        port,
        topic,
        credentials,
        timeout: timeout(raw.timeout_ms)?,
    })
}

fn validate_program(raw: &RawProgram, parameters: &Value) -> Result<ProgramSpec, String> {
    if !raw.path.is_absolute() {
        return Err(format!(
            "program path {} must be absolute",
            raw.path.display()
        ));
    }
    let mut args = Vec::with_capacity(raw.args.len());
    for arg in &raw.args {
        match placeholder_name(arg) {
            Some(name) => {
                check_placeholder(parameters, name)?;
                args.push(ArgTemplate::Argument(name.to_string()));
            }
            None if arg.contains('{') || arg.contains('}') => {
                return Err(format!(
                    "program arg {arg:?}: a placeholder must be a whole element like \"{{unit}}\""
                ));
            }
            None => args.push(ArgTemplate::Literal(arg.clone())),
        }
    }
    let max_output_bytes = raw.max_output_bytes.unwrap_or(DEFAULT_MAX_OUTPUT_BYTES);
    Ok(ProgramSpec {
        path: raw.path.clone(),
        args,
        timeout: timeout(raw.timeout_ms)?,
        max_output_bytes,
    })
}

/// `{name}` → `name` when the whole text is one placeholder.
fn placeholder_name(text: &str) -> Option<&str> {
    let inner = text.strip_prefix('{')?.strip_suffix('}')?;
    let valid = !inner.is_empty()
        && inner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    valid.then_some(inner)
}

impl TopicTemplate {
    pub fn parse(text: &str) -> Result<TopicTemplate, String> {
        if text.is_empty() || text.contains(['+', '#', '\0']) {
            return Err(format!(
                "topic {text:?} must be non-empty and contain no wildcard (+, #) or NUL"
            ));
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(TopicPart::Literal(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .map(|i| open + i)
                .ok_or_else(|| format!("topic {text:?}: unclosed placeholder"))?;
            let name = placeholder_name(&rest[open..=close])
                .ok_or_else(|| format!("topic {text:?}: bad placeholder"))?;
            parts.push(TopicPart::Argument(name.to_string()));
            rest = &rest[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("topic {text:?}: stray '}}'"));
        }
        if !rest.is_empty() {
            parts.push(TopicPart::Literal(rest.to_string()));
        }
        Ok(TopicTemplate { parts })
    }
}
