//! The request-log and auth layers.
//!
//! `request_log` writes one line per request when its response body is finished (so a streamed
//! answer is logged with its full latency): method, route, status, tokens, latency. Handlers
//! report token counts through the [`RequestRecord`] extension; they never log themselves.
//! Prompt text is in the log line only when `server.log_prompts` is on; prompts and answers go
//! to the ledger's prompt log only when `[budget] prompt_log` is on. Both get redacted text.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::Frame;
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};

#[derive(Debug, Default)]
struct Fields {
    prompt_tokens: Option<usize>,
    completion_tokens: Option<usize>,
    prompt_text: Option<String>,
    answer_text: Option<String>,
    /// Whether answer text is gathered at all (`Gateway::keeps_texts`).
    keep_texts: bool,
}

/// Per-request facts the handler reports to the log line.
#[derive(Debug, Clone, Default)]
pub struct RequestRecord(Arc<Mutex<Fields>>);

impl RequestRecord {
    pub fn tokens(&self, prompt: usize, completion: usize) {
        if let Ok(mut fields) = self.0.lock() {
            fields.prompt_tokens = Some(prompt);
            fields.completion_tokens = Some(completion);
        }
    }

    /// The prompt's text, kept only when the gateway keeps texts (it is redacted later).
    pub fn prompt_text(&self, text: String) {
        if let Ok(mut fields) = self.0.lock()
            && fields.keep_texts
        {
            fields.prompt_text = Some(text);
        }
    }

    /// [`Self::prompt_text`] of a request's prompt, formatted only when it is kept.
    pub fn prompt(&self, prompt: &crate::service::Prompt) {
        if self.0.lock().is_ok_and(|f| f.keep_texts) {
            self.prompt_text(super::chat::prompt_for_log(prompt));
        }
    }

    fn new(keep_texts: bool) -> RequestRecord {
        RequestRecord(Arc::new(Mutex::new(Fields {
            keep_texts,
            ..Fields::default()
        })))
    }

    /// Answer text as it is produced (a whole answer once, or a stream's pieces), for the
    /// ledger's prompt log; nothing is kept unless the gateway keeps texts.
    pub fn answer_part(&self, text: &str) {
        if let Ok(mut fields) = self.0.lock()
            && fields.keep_texts
        {
            fields.answer_text.get_or_insert_default().push_str(text);
        }
    }
}

pub async fn request_log(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let record = RequestRecord::new(state.keeps_texts());
    request.extensions_mut().insert(record.clone());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    state.metrics.count_request(&route, status);
    let line = LogLine {
        method: method.to_string(),
        route,
        status,
        started,
        record,
        log_prompts: state.config.log_prompts,
        redactor: state.config.egress.redactor.clone(),
        ledger: state.ledger.clone(),
    };
    let (parts, body) = response.into_parts();
    Response::from_parts(
        parts,
        Body::new(LoggedBody {
            inner: body,
            line: Some(line),
        }),
    )
}

struct LogLine {
    method: String,
    route: String,
    status: u16,
    started: Instant,
    record: RequestRecord,
    log_prompts: bool,
    redactor: crate::guard::redact::Redactor,
    ledger: Option<std::sync::Arc<crate::ledger::Ledger>>,
}

impl LogLine {
    fn emit(self) {
        let fields = self
            .record
            .0
            .lock()
            .map(|mut f| std::mem::take(&mut *f))
            .unwrap_or_default();
        let latency_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        // Logged texts never hold what the egress guard would redact: the log line and the
        // ledger's prompt log (its own retention, `[budget] prompt_log`) get the redacted text.
        let redact = |text: &str| {
            self.redactor
                .session()
                .redact(text)
                .unwrap_or_else(|_| "[not logged: redaction failed]".to_string())
        };
        let prompt = fields.prompt_text.as_deref().map(redact);
        let answer = fields.answer_text.as_deref().map(redact);
        if let Some(ledger) = &self.ledger {
            let id = format!("log-{}", uuid::Uuid::new_v4().simple());
            let now = jiff::Timestamp::now();
            // Queued for the ledger's writer thread: never a blocking insert on the runtime.
            // The ledger keeps them only when its prompt log is on.
            if let Some(text) = &prompt {
                ledger.log_prompt_later(&id, crate::ledger::PromptDirection::Prompt, text, now);
            }
            if let Some(text) = &answer {
                ledger.log_prompt_later(&id, crate::ledger::PromptDirection::Answer, text, now);
            }
        }
        let prompt = prompt.filter(|_| self.log_prompts);
        tracing::info!(
            method = %self.method,
            route = %self.route,
            status = self.status,
            prompt_tokens = fields.prompt_tokens,
            completion_tokens = fields.completion_tokens,
            latency_ms = format!("{latency_ms:.1}"),
            prompt = prompt,
            "request"
        );
    }
}

/// A response body that writes the request's log line when it is dropped (sent or abandoned).
struct LoggedBody {
    inner: Body,
    line: Option<LogLine>,
}

impl http_body::Body for LoggedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if let Some(line) = self.line.take() {
            line.emit();
        }
    }
}

/// With API keys configured, every endpoint but `/health` needs `Authorization: Bearer KEY`
/// (the scheme in any case, RFC 7235) or `x-api-key: KEY` (Anthropic's and llama-server's header).
pub async fn auth(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let keys = &state.config.api_keys;
    if keys.is_empty() || request.uri().path() == "/health" {
        return next.run(request).await;
    }
    let presented = presented_key(request.headers());
    let accepted = presented.is_some_and(|token| {
        // Compare against every key (no early exit) in constant time per key.
        keys.iter().fold(false, |ok, key| {
            ok | bool::from(key.as_bytes().ct_eq(token.as_bytes()))
        })
    });
    if accepted {
        next.run(request).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

/// The key a request presents, if any: `Authorization: <bearer in any case> KEY`, else `x-api-key`.
fn presented_key(headers: &axum::http::HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim_start().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        });
    bearer
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
}
