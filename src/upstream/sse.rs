//! Server-sent events from an upstream's byte stream, read by the one SSE reader
//! (`crate::wire::sse`).

use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::UpstreamError;
use crate::wire::sse::SseReader;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Message {
    pub event: Option<String>,
    pub data: String,
}

impl Message {
    /// The message's data as JSON; anything else is a protocol error.
    pub fn json(&self) -> Result<serde_json::Value, UpstreamError> {
        serde_json::from_str(&self.data).map_err(|e| UpstreamError::Protocol(e.to_string()))
    }
}

pub fn messages<S, E, F>(
    bytes: S,
    error: F,
) -> impl Stream<Item = Result<Message, UpstreamError>> + Send
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Send + 'static,
    F: Fn(E) -> UpstreamError + Send + 'static,
{
    async_stream::stream! {
        let mut bytes = std::pin::pin!(bytes);
        let mut reader = SseReader::default();
        while let Some(chunk) = bytes.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    yield Err(error(e));
                    return;
                }
            };
            for message in reader.push(&chunk) {
                if let Some(message) = upstream_message(message) {
                    yield Ok(message);
                }
            }
        }
        if let Some(message) = reader.finish().and_then(upstream_message) {
            yield Ok(message);
        }
    }
}

/// A message as the clients read it: empty data without an event name is nothing.
fn upstream_message(message: crate::wire::sse::Message) -> Option<Message> {
    let data = message.data.unwrap_or_default();
    (!data.is_empty() || message.event.is_some()).then_some(Message {
        event: message.event,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn splits_messages_across_chunks() {
        let chunks = ["event: a\nda", "ta: {\"x\":1}\n\n", "data: [DONE]\r\n\r\n"];
        let bytes = futures::stream::iter(chunks.map(|c| Ok::<_, ()>(Bytes::from(c))));
        let got: Vec<_> = messages(bytes, |_| UpstreamError::Protocol("x".into()))
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(
            got,
            [
                Message {
                    event: Some("a".into()),
                    data: "{\"x\":1}".into()
                },
                Message {
                    event: None,
                    data: "[DONE]".into()
                },
            ]
        );
    }
}
