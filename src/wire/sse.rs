//! Server-sent events, read incrementally from a byte stream: `event:` and `data:` lines (data
//! over several lines joined with `\n`, one leading space dropped), one message per blank line;
//! comments and other fields ignored. The one reader behind the remote clients
//! (`upstream/sse.rs`) and the benchmark client (`bench/http.rs`).

/// One event.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Message {
    pub event: Option<String>,
    /// `None` when the event had no `data:` line.
    pub data: Option<String>,
}

#[derive(Debug, Default)]
pub struct SseReader {
    buffer: Vec<u8>,
    message: Message,
}

impl SseReader {
    /// The messages `bytes` completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Message> {
        self.buffer.extend_from_slice(bytes);
        let mut messages = Vec::new();
        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if self.message.data.is_some() || self.message.event.is_some() {
                    messages.push(std::mem::take(&mut self.message));
                }
            } else if let Some(value) = line.strip_prefix("data:") {
                let value = value.strip_prefix(' ').unwrap_or(value);
                match &mut self.message.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.message.data = Some(value.to_string()),
                }
            } else if let Some(value) = line.strip_prefix("event:") {
                self.message.event = Some(value.trim().to_string());
            }
        }
        messages
    }

    /// The stream ended: a message left without its closing blank line (or its last line's
    /// newline), if it holds data.
    pub fn finish(&mut self) -> Option<Message> {
        let mut messages = self.push(b"\n");
        if self.message.data.is_some() {
            messages.push(std::mem::take(&mut self.message));
        }
        messages.pop().filter(|m| m.data.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(messages: Vec<Message>) -> Vec<String> {
        messages.into_iter().filter_map(|m| m.data).collect()
    }

    #[test]
    fn events_split_across_reads() {
        let mut reader = SseReader::default();
        let mut events = data(reader.push(b"data: {\"a\":1}\n\nda"));
        events.extend(data(reader.push(b"ta: x\r\n")));
        events.extend(data(
            reader.push(b"data: y\r\n\r\n: comment\n\nevent: e\ndata: [DONE]\n\n"),
        ));
        events.extend(data(reader.push(b"data: tail")));
        events.extend(reader.finish().and_then(|m| m.data));
        assert_eq!(events, ["{\"a\":1}", "x\ny", "[DONE]", "tail"]);
    }

    #[test]
    fn event_names_are_kept() {
        let mut reader = SseReader::default();
        let got = reader.push(b"event: a\ndata: 1\n\nevent: b\n\n");
        assert_eq!(got[0].event.as_deref(), Some("a"));
        assert_eq!(got[0].data.as_deref(), Some("1"));
        assert_eq!(got[1].event.as_deref(), Some("b"));
        assert_eq!(got[1].data, None);
        assert_eq!(reader.finish(), None);
    }
}
