//! Resumable streams (llama-server's `/v1/stream`): a streamed answer whose request carries
//! `X-Conversation-Id` is generated to its end whatever happens to the connection, and its SSE
//! bytes are kept, so a client that lost the connection (a device on flaky Wi-Fi) reads the rest
//! from where it stopped: `GET /v1/stream?conv_id=ID&from=OFFSET` replays from that byte offset
//! and follows the answer live until it ends; `DELETE /v1/stream?conv_id=ID` stops it and
//! forgets it (`204`, also when it was already gone).
//!
//! Bounded: at most [`MAX_SESSIONS`] sessions (a new one evicts the oldest finished one, and is
//! not kept when none has finished), the last [`MAX_BYTES`] of each (an offset before them is
//! a `410`), and a finished session is forgotten [`TTL`] after it ends. Only requests that ask
//! are detached from their connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;

pub const MAX_SESSIONS: usize = 64;
pub const MAX_BYTES: usize = 1 << 20;
pub const TTL: Duration = Duration::from_secs(300);
/// Longest conversation id taken.
const MAX_ID: usize = 256;

/// The header that asks for a resumable stream.
pub const HEADER: &str = "x-conversation-id";

/// The live and recent sessions, by conversation id.
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, Arc<Session>>>);

#[derive(Default)]
struct Session {
    /// Unix seconds when the answer started.
    started_unix: u64,
    buffer: Mutex<Buffer>,
    /// Woken on each new chunk, on the end and on a stop.
    changed: tokio::sync::Notify,
    stopped: AtomicBool,
}

#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    /// Bytes evicted from the front (the cap); `bytes[0]` is at this offset.
    dropped: usize,
    ended: Option<Instant>,
    /// Unix seconds at the end.
    ended_unix: Option<u64>,
}

impl Session {
    fn buffer(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, chunk: &[u8]) {
        let mut buffer = self.buffer();
        buffer.bytes.extend_from_slice(chunk);
        if buffer.bytes.len() > MAX_BYTES {
            let cut = buffer.bytes.len() - MAX_BYTES;
            buffer.bytes.drain(..cut);
            buffer.dropped += cut;
        }
        drop(buffer);
        self.changed.notify_waiters();
    }

    fn end(&self) {
        let mut buffer = self.buffer();
        buffer.ended = Some(Instant::now());
        buffer.ended_unix = Some(crate::gateway::unix_now());
        drop(buffer);
        self.changed.notify_waiters();
    }

    /// llama-server's description of a session (`POST /v1/streams/lookup`).
    fn describe(&self, id: &str) -> serde_json::Value {
        let buffer = self.buffer();
        serde_json::json!({
            "conversation_id": id,
            "is_done": buffer.ended.is_some(),
            "total_bytes": buffer.dropped + buffer.bytes.len(),
            "started_at": self.started_unix,
            "completed_at": buffer.ended_unix.unwrap_or(0),
        })
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// The bytes from `offset` on, whether the session has ended, or `Err` with the first
    /// offset still held when `offset` was evicted.
    fn read(&self, offset: usize) -> Result<(Vec<u8>, bool), usize> {
        let buffer = self.buffer();
        if offset < buffer.dropped {
            return Err(buffer.dropped);
        }
        let start = (offset - buffer.dropped).min(buffer.bytes.len());
        Ok((buffer.bytes[start..].to_vec(), buffer.ended.is_some()))
    }
}

impl Sessions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The map with the sessions that ended more than [`TTL`] ago removed.
    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        let mut map = self.map();
        map.retain(|_, s| s.buffer().ended.is_none_or(|t| t.elapsed() < TTL));
        map
    }

    /// A new session for `id` (replacing one of the same id), or `None` when all are live.
    fn open(&self, id: &str) -> Option<Arc<Session>> {
        let mut map = self.live();
        if let Some(old) = map.remove(id) {
            old.stop();
        }
        if map.len() >= MAX_SESSIONS {
            let oldest = map
                .iter()
                .filter_map(|(k, s)| s.buffer().ended.map(|t| (t, k.clone())))
                .min()?;
            map.remove(&oldest.1);
        }
        let session = Arc::new(Session {
            started_unix: crate::gateway::unix_now(),
            ..Session::default()
        });
        map.insert(id.to_string(), session.clone());
        Some(session)
    }

    /// The live and recent sessions whose id `wanted` accepts.
    fn matching(&self, wanted: impl Fn(&str) -> bool) -> Vec<(String, Arc<Session>)> {
        self.live()
            .iter()
            .filter(|(id, _)| wanted(id))
            .map(|(id, s)| (id.clone(), s.clone()))
            .collect()
    }

    fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.live().get(id).cloned()
    }

    fn remove(&self, id: &str) -> Option<Arc<Session>> {
        self.map().remove(id)
    }
}

/// A conversation id as taken: 1 to 256 visible ASCII characters.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Detaches a streamed answer whose request names a conversation: its body is read to the end
/// by a task of its own into the session, and the client reads the session.
pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let id = match request.headers().get(HEADER) {
        None => None,
        Some(value) => match value.to_str().ok().filter(|id| valid_id(id)) {
            Some(id) => Some(id.to_string()),
            // Refused rather than ignored: the client counts on resuming this stream.
            None => {
                return ApiError::invalid(
                    "X-Conversation-Id",
                    format!("X-Conversation-Id must be 1 to {MAX_ID} visible ASCII characters"),
                )
                .into_response();
            }
        },
    };
    let response = next.run(request).await;
    let Some(id) = id else {
        return response;
    };
    let streamed = response.status().is_success()
        && response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
    if !streamed {
        return response;
    }
    let Some(session) = state.streams.open(&id) else {
        tracing::warn!(
            sessions = MAX_SESSIONS,
            "every resumable stream is live: this one is not kept"
        );
        return response;
    };
    let (parts, body) = response.into_parts();
    let mut body = body.into_data_stream();
    let producer = session.clone();
    tokio::spawn(async move {
        loop {
            if producer.stopped.load(Ordering::SeqCst) {
                break;
            }
            // Only a stop wakes it while this task waits (it makes the other changes itself).
            let stopped = producer.changed.notified();
            tokio::select! {
                chunk = body.next() => match chunk {
                    Some(Ok(data)) => producer.push(&data),
                    Some(Err(_)) | None => break,
                },
                // A stop (DELETE): dropping the body cancels the generation.
                () = stopped => {}
            }
        }
        producer.end();
    });
    Response::from_parts(parts, follow(session, 0))
}

/// The session's bytes from `offset`, live until it ends or is stopped.
fn follow(session: Arc<Session>, offset: usize) -> Body {
    let stream = async_stream::stream! {
        let mut offset = offset;
        loop {
            let changed = session.changed.notified();
            let Ok((bytes, ended)) = session.read(offset) else {
                break;
            };
            offset += bytes.len();
            if !bytes.is_empty() {
                yield Ok::<_, std::convert::Infallible>(bytes::Bytes::from(bytes));
            }
            if ended || session.stopped.load(Ordering::SeqCst) {
                break;
            }
            changed.await;
        }
    };
    Body::from_stream(stream)
}

#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    conv_id: String,
    from: Option<String>,
}

/// `GET /v1/stream?conv_id=ID&from=OFFSET`.
pub async fn replay(
    State(state): State<AppState>,
    Query(query): Query<StreamQuery>,
) -> Result<Response, ApiError> {
    let session = state
        .streams
        .get(&query.conv_id)
        .ok_or_else(|| ApiError::not_found("stream"))?;
    let from = match query.from.as_deref() {
        None => 0,
        Some(text) => text
            .parse::<usize>()
            .map_err(|_| ApiError::invalid("from", "from must be a byte offset (0 or more)"))?,
    };
    if let Err(first) = session.read(from) {
        return Err(ApiError::new(
            StatusCode::GONE,
            "invalid_request_error",
            format!("offset {from} is no longer held; the stream is kept from offset {first}"),
        )
        .with_code("offset_lost"));
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        follow(session, from),
    )
        .into_response())
}

/// The most ids one lookup may name.
const MAX_LOOKUP_IDS: usize = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupRequest {
    conversation_ids: Vec<String>,
}

/// `POST /v1/streams/lookup {"conversation_ids": [...]}`: the sessions of the ids a client
/// already knows, each id matching itself and its `ID::MODEL` variants (llama-server's
/// convention), each session once. Ids are never listed otherwise.
pub async fn lookup(
    State(state): State<AppState>,
    super::json::ApiJson(request): super::json::ApiJson<LookupRequest>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    if request.conversation_ids.len() > MAX_LOOKUP_IDS {
        return Err(ApiError::invalid(
            "conversation_ids",
            format!("at most {MAX_LOOKUP_IDS} ids a lookup"),
        ));
    }
    let wanted: Vec<&String> = request
        .conversation_ids
        .iter()
        .filter(|id| !id.is_empty())
        .collect();
    let mut found = state.streams.matching(|id| {
        wanted.iter().any(|w| {
            id == w.as_str()
                || id
                    .strip_prefix(w.as_str())
                    .is_some_and(|r| r.starts_with("::"))
        })
    });
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(axum::Json(serde_json::Value::Array(
        found.iter().map(|(id, s)| s.describe(id)).collect(),
    )))
}

/// `DELETE /v1/stream?conv_id=ID`: stops the answer and forgets it; `204` either way.
pub async fn stop(State(state): State<AppState>, Query(query): Query<StreamQuery>) -> StatusCode {
    if let Some(session) = state.streams.remove(&query.conv_id) {
        session.stop();
    }
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_bounded() {
        let session = Session::default();
        session.push(&vec![b'a'; MAX_BYTES]);
        session.push(b"bc");
        assert_eq!(session.read(0), Err(2));
        let (tail, ended) = session.read(MAX_BYTES).unwrap();
        assert_eq!((tail.as_slice(), ended), (&b"bc"[..], false));
        session.end();
        assert!(session.read(MAX_BYTES + 2).unwrap().1);

        let sessions = Sessions::default();
        let live: Vec<_> = (0..MAX_SESSIONS)
            .map(|i| sessions.open(&format!("c{i}")).unwrap())
            .collect();
        assert!(sessions.open("one-more").is_none(), "all live: not kept");
        live[3].end();
        assert!(sessions.open("one-more").is_some());
        assert!(sessions.get("c3").is_none(), "the finished one made room");
        assert!(!valid_id("") && !valid_id("a b") && !valid_id(&"x".repeat(257)));
        assert!(valid_id("conv-stream-test::ggml-org/tinygemma3-GGUF:Q8_0"));
    }
}
