//! The one API error type: every failure becomes OpenAI's `{"error": {...}}` shape here, with
//! its status code. Error causes map to responses in this one place.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::engine::EngineError;
use crate::service::ServiceError;
use crate::tasks::{RunError, TaskError};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    pub retry_after_secs: Option<u64>,
    /// Fields beside the message, as llama-server sends them (`n_prompt_tokens`, `n_ctx`);
    /// boxed, so that results carrying an ApiError stay small.
    pub extra: Option<Box<serde_json::Map<String, serde_json::Value>>>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            kind,
            param: None,
            code: None,
            retry_after_secs: None,
            extra: None,
        }
    }

    /// A 400 about one request field.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        ApiError {
            param: Some(param.to_string()),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
        }
    }

    /// A 503 while a model loads: retry in 5 s.
    pub fn loading() -> Self {
        ApiError {
            retry_after_secs: Some(5),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable_error",
                "Loading model",
            )
        }
    }

    /// A 503 for a model that failed to load: no retry helps until the device is mended.
    pub fn unavailable(message: String) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable_error",
            message,
        )
        .with_code("model_unavailable")
    }

    /// A 503 when admission is full: retry in 1 s.
    pub fn overloaded(message: String) -> Self {
        ApiError {
            retry_after_secs: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_overloaded",
                message,
            )
            .with_code("overloaded")
        }
    }

    /// A 504: the request ran past its timeout.
    pub fn timeout(message: String) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "timeout_error", message).with_code("timeout")
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// A 401. The type is llama-server's and Anthropic's (`authentication_error`); the code is
    /// OpenAI's. The OpenAI SDKs raise `AuthenticationError` from the status alone.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "Invalid or missing API key. Send it as 'Authorization: Bearer KEY'.",
        )
        .with_code("invalid_api_key")
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("{what} not found"),
        )
        .with_code("not_found")
    }

    /// The prompt and the answer it asks for do not fit: a 400 with OpenAI's code, llama-server's
    /// type and numbers, and a message holding both servers' phrases (clients such as LiteLLM
    /// match them to fall back to a model with a larger context).
    pub fn context_exceeded(message: &str, prompt_tokens: usize, n_ctx: usize) -> Self {
        ApiError {
            param: Some("messages".to_string()),
            code: Some("context_length_exceeded"),
            extra: Some(Box::new(serde_json::Map::from_iter([
                ("n_prompt_tokens".to_string(), json!(prompt_tokens)),
                ("n_ctx".to_string(), json!(n_ctx)),
            ]))),
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "exceed_context_size_error",
                format!(
                    "the request exceeds the available context size: {message} \
                     (this model's maximum context length is {n_ctx} tokens)"
                ),
            )
        }
    }

    pub fn body(&self) -> serde_json::Value {
        let mut error = json!({"message": self.message, "type": self.kind, "param": self.param, "code": self.code});
        for (key, value) in self.extra.iter().flat_map(|extra| extra.iter()) {
            error[key] = value.clone();
        }
        json!({ "error": error })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after_secs
            && let Ok(value) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 7235: a 401 names the scheme the client should use.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"edgellm\""),
            );
        }
        response
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        let message = error.to_string();
        match error {
            ServiceError::Loading => ApiError::loading(),
            ServiceError::Unavailable(_) => ApiError::unavailable(message),
            ServiceError::Overloaded { .. } => ApiError::overloaded(message),
            ServiceError::PromptTooLong { tokens, limit } => {
                ApiError::context_exceeded(&message, tokens, limit)
            }
            ServiceError::MaxTokensTooLarge { .. } => ApiError::invalid("max_tokens", message),
            ServiceError::InvalidSchema(_) => ApiError::invalid("response_format", message),
            ServiceError::InvalidConstraint { field, ref error } => {
                let code = match error {
                    crate::constraint::ConstraintError::Grammar(_) => "invalid_grammar",
                    _ if field == "grammar" => "invalid_grammar",
                    _ => "invalid_schema",
                };
                ApiError::invalid(field, message).with_code(code)
            }
            ServiceError::TokenOutOfRange { field, .. } => {
                ApiError::invalid(field, message).with_code("invalid_token")
            }
            ServiceError::InvalidTools(_) => ApiError::invalid("tools", message),
            ServiceError::OutputInvalid(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
                    .with_code("invalid_output")
            }
            ServiceError::Timeout(_) => ApiError::timeout(message),
            ServiceError::Engine(engine) => engine_error(engine, message),
            // The upstream's answer failed the request's tools or JSON schema: never passed on.
            ServiceError::Upstream {
                error: crate::upstream::UpstreamError::InvalidOutput(_),
                ..
            } => ApiError::new(StatusCode::BAD_GATEWAY, "upstream_error", message)
                .with_code("upstream_invalid_output"),
            ServiceError::Upstream { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "upstream_error", message)
                    .with_code("upstream_error")
            }
            // OpenAI's answer to a spent quota: 429 `insufficient_quota`, here with the time
            // to the next budget day.
            ServiceError::BudgetSpent {
                retry_after_secs, ..
            } => ApiError {
                retry_after_secs: Some(retry_after_secs),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "insufficient_quota", message)
                    .with_code("insufficient_quota")
            },
            ServiceError::AllTiersFailed(_) => ApiError {
                retry_after_secs: Some(1),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable_error",
                    message,
                )
                .with_code("all_tiers_failed")
            },
        }
    }
}

impl From<RunError> for ApiError {
    fn from(error: RunError) -> Self {
        let message = error.to_string();
        let invalid_output = |message: String| {
            ApiError::new(StatusCode::BAD_GATEWAY, "server_error", message)
                .with_code("invalid_model_output")
        };
        match error {
            RunError::UnknownTask(name) => ApiError::not_found(&format!("task {name:?}")),
            RunError::Task(TaskError::InputTooLarge { .. }) => ApiError {
                param: Some("input".into()),
                ..ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "invalid_request_error",
                    message,
                )
                .with_code("input_too_large")
            },
            RunError::Task(TaskError::OutputNotJson(_) | TaskError::OutputInvalid(_)) => {
                invalid_output(message)
            }
            // The gateway's model fails with the routing walk's own errors: same statuses as
            // a chat request, except that output failing the schema is the model's fault.
            RunError::Task(TaskError::Model(failure)) => match failure.downcast::<ServiceError>() {
                Ok(service) => match *service {
                    ServiceError::OutputInvalid(_) => invalid_output(message),
                    other => ApiError::from(other),
                },
                Err(_) => ApiError::new(StatusCode::BAD_GATEWAY, "server_error", message)
                    .with_code("model_error"),
            },
            RunError::Task(TaskError::Config { .. } | TaskError::Schema(_)) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
            }
        }
    }
}

fn engine_error(error: EngineError, message: String) -> ApiError {
    match error {
        EngineError::ContextOverflow {
            prompt_tokens,
            n_ctx,
            ..
        } => ApiError::context_exceeded(&message, prompt_tokens, n_ctx as usize),
        EngineError::EmptyPrompt => ApiError::invalid("prompt", message),
        EngineError::InvalidParameter(_) => {
            let param = parameter_named_in(&message).to_string();
            ApiError::invalid(&param, message)
        }
        EngineError::Constraint(_) => {
            ApiError::invalid("response_format", message).with_code("constraint_failed")
        }
        _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message),
    }
}

/// Sampling-parameter messages start with the parameter's name ("top_p must be ...").
fn parameter_named_in(message: &str) -> &str {
    let rest = message
        .strip_prefix("invalid sampling parameter: ")
        .unwrap_or(message);
    rest.split_whitespace().next().unwrap_or("")
}

impl From<crate::embeddings::EmbedError> for ApiError {
    fn from(error: crate::embeddings::EmbedError) -> Self {
        use crate::embeddings::EmbedError;
        let message = error.to_string();
        match error {
            // llama-server answers 501 when it serves no embedding model.
            EmbedError::NotConfigured => {
                ApiError::new(StatusCode::NOT_IMPLEMENTED, "not_supported_error", message)
                    .with_code("no_embedding_model")
            }
            EmbedError::Loading => ApiError::loading(),
            EmbedError::Unavailable(_) => ApiError::unavailable(message),
            EmbedError::Input {
                error: crate::engine::embed::EmbedInputError::TooLong { tokens, max },
                ..
            } => {
                let mut e = ApiError::context_exceeded(&message, tokens, max);
                e.param = Some("input".into());
                e
            }
            EmbedError::Input { .. } | EmbedError::Invalid(_) => {
                ApiError::invalid("input", message)
            }
            EmbedError::TooManyInputs { .. } | EmbedError::TooManyTokens { .. } => {
                ApiError::invalid("input", message).with_code("too_many_inputs")
            }
            EmbedError::Dimensions { .. } => ApiError::invalid("dimensions", message),
            EmbedError::Unpooled => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
                    .with_code("unpooled_model")
            }
            EmbedError::Overloaded { .. } => ApiError::overloaded(message),
            EmbedError::Timeout(_) => ApiError::timeout(message),
            EmbedError::Engine(_) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
            }
        }
    }
}
