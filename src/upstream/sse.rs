//! Server-sent events from an upstream's byte stream: `event:` and `data:` lines, one message per
//! blank line.

use bytes::Bytes;
use futures::{Stream, StreamExt};

use super::UpstreamError;

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
        let mut buffer: Vec<u8> = Vec::new();
        let mut message = Message::default();
        while let Some(chunk) = bytes.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    yield Err(error(e));
                    return;
                }
            };
            buffer.extend_from_slice(&chunk);
            while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    if !message.data.is_empty() || message.event.is_some() {
                        yield Ok(std::mem::take(&mut message));
                    }
                } else if let Some(value) = line.strip_prefix("data:") {
                    if !message.data.is_empty() {
                        message.data.push('\n');
                    }
                    message.data.push_str(value.strip_prefix(' ').unwrap_or(value));
                } else if let Some(value) = line.strip_prefix("event:") {
                    message.event = Some(value.trim().to_string());
                }
            }
        }
        if !message.data.is_empty() {
            yield Ok(message);
        }
    }
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
