//! A minimal HTTP/1.1 client for plain `http://` endpoints: one request per connection
//! (`Connection: close`), JSON bodies, and server-sent-event responses read as they arrive so the
//! first token is timed when it reaches the client.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::wire::sse::SseReader;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("only plain http:// URLs are supported, got {0}")]
    Scheme(String),
    #[error("invalid URL {0}")]
    Url(String),
    #[error("cannot reach {url}: {source}")]
    Connect { url: String, source: std::io::Error },
    #[error("connection to {url} failed: {source}")]
    Io { url: String, source: std::io::Error },
    #[error("{url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("malformed response from {url}: {reason}")]
    Malformed { url: String, reason: String },
    #[error("no answer from {url} within {seconds} s")]
    Timeout { url: String, seconds: u64 },
}

/// A parsed `http://host:port/prefix` base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash (`""` or `/api`).
    pub prefix: String,
}

impl BaseUrl {
    pub fn parse(url: &str) -> Result<BaseUrl, HttpError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| HttpError::Scheme(url.to_string()))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .map_err(|_| HttpError::Url(url.to_string()))?,
            ),
            None => (authority, 80),
        };
        if host.is_empty() {
            return Err(HttpError::Url(url.to_string()));
        }
        let path = path.trim_end_matches('/');
        Ok(BaseUrl {
            host: host.to_string(),
            port,
            prefix: if path.is_empty() {
                String::new()
            } else {
                format!("/{path}")
            },
        })
    }

    pub fn display(&self, path: &str) -> String {
        format!("http://{}:{}{}{path}", self.host, self.port, self.prefix)
    }
}

/// An open response whose body is read event by event.
pub struct EventStream {
    reader: BufReader<TcpStream>,
    url: String,
    chunked: bool,
    /// Bytes left in the current chunk (chunked) or in the body (`Content-Length`).
    remaining: Option<usize>,
    done: bool,
    parser: SseReader,
    pending: std::collections::VecDeque<String>,
}

/// Sends `POST path` with a JSON body and returns the response's event stream once the status
/// line and headers have arrived. Non-2xx answers become [`HttpError::Status`] with the body.
pub async fn post_events(
    base: &BaseUrl,
    path: &str,
    body: &serde_json::Value,
) -> Result<EventStream, HttpError> {
    let body = body.to_string();
    let mut stream = open(base, "POST", path, Some(&body)).await?;
    let status = stream.status;
    if !(200..300).contains(&status) {
        let text = stream.body_text().await.unwrap_or_default();
        return Err(HttpError::Status {
            url: stream.events.url,
            status,
            body: text.chars().take(300).collect(),
        });
    }
    Ok(stream.events)
}

/// `GET path` and the body parsed as JSON.
pub async fn get_json(base: &BaseUrl, path: &str) -> Result<serde_json::Value, HttpError> {
    let mut stream = open(base, "GET", path, None).await?;
    let text = stream.body_text().await?;
    let url = stream.events.url.clone();
    if !(200..300).contains(&stream.status) {
        return Err(HttpError::Status {
            url,
            status: stream.status,
            body: text.chars().take(300).collect(),
        });
    }
    serde_json::from_str(&text).map_err(|e| HttpError::Malformed {
        url,
        reason: e.to_string(),
    })
}

struct Opened {
    status: u16,
    events: EventStream,
}

impl Opened {
    async fn body_text(&mut self) -> Result<String, HttpError> {
        let mut bytes = Vec::new();
        while let Some(chunk) = self.events.read_body().await? {
            bytes.extend_from_slice(&chunk);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

async fn open(
    base: &BaseUrl,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<Opened, HttpError> {
    let url = base.display(path);
    let connect = TcpStream::connect((base.host.as_str(), base.port));
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| HttpError::Timeout {
            url: url.clone(),
            seconds: CONNECT_TIMEOUT.as_secs(),
        })?
        .map_err(|source| HttpError::Connect {
            url: url.clone(),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    let io = |source| HttpError::Io {
        url: url.clone(),
        source,
    };
    let mut reader = BufReader::new(stream);
    let mut head = format!(
        "{method} {}{path} HTTP/1.1\r\nHost: {}:{}\r\nConnection: close\r\nAccept: text/event-stream, application/json\r\n",
        base.prefix, base.host, base.port
    );
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    head.push_str(body.unwrap_or(""));
    reader
        .get_mut()
        .write_all(head.as_bytes())
        .await
        .map_err(io)?;

    let malformed = |reason: &str| HttpError::Malformed {
        url: url.clone(),
        reason: reason.to_string(),
    };
    let mut line = String::new();
    reader.read_line(&mut line).await.map_err(io)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| malformed("no status line"))?;
    let (mut chunked, mut length) = (false, None);
    loop {
        line.clear();
        if reader.read_line(&mut line).await.map_err(io)? == 0 {
            return Err(malformed("headers cut short"));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "transfer-encoding" && value.to_ascii_lowercase().contains("chunked") {
            chunked = true;
        } else if name == "content-length" {
            length = value.parse::<usize>().ok();
        }
    }
    Ok(Opened {
        status,
        events: EventStream {
            reader,
            url,
            chunked,
            remaining: if chunked { Some(0) } else { length },
            done: !chunked && length == Some(0),
            parser: SseReader::default(),
            pending: Default::default(),
        },
    })
}

impl EventStream {
    /// The next event's `data` payload, or `None` at the end of the body.
    pub async fn next_event(&mut self) -> Result<Option<String>, HttpError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            match self.read_body().await? {
                Some(bytes) => self
                    .pending
                    .extend(self.parser.push(&bytes).into_iter().filter_map(|m| m.data)),
                None => return Ok(self.parser.finish().and_then(|m| m.data)),
            }
        }
    }

    /// The next piece of the body as it arrives (decoding chunked transfer encoding).
    async fn read_body(&mut self) -> Result<Option<Vec<u8>>, HttpError> {
        if self.done {
            return Ok(None);
        }
        let url = self.url.clone();
        let io = |source| HttpError::Io {
            url: url.clone(),
            source,
        };
        if self.chunked && self.remaining == Some(0) {
            let mut line = String::new();
            self.reader.read_line(&mut line).await.map_err(io)?;
            if line.trim().is_empty() {
                // The CRLF after the previous chunk's data.
                line.clear();
                self.reader.read_line(&mut line).await.map_err(io)?;
            }
            let size = line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size, 16).map_err(|_| HttpError::Malformed {
                url: url.clone(),
                reason: format!("bad chunk size {line:?}"),
            })?;
            if size == 0 {
                self.done = true;
                return Ok(None);
            }
            self.remaining = Some(size);
        }
        let mut buffer = vec![0u8; self.remaining.unwrap_or(8192).clamp(1, 8192)];
        let n = self.reader.read(&mut buffer).await.map_err(io)?;
        if n == 0 {
            self.done = true;
            return Ok(None);
        }
        buffer.truncate(n);
        if let Some(remaining) = &mut self.remaining {
            *remaining -= n.min(*remaining);
            if !self.chunked && *remaining == 0 {
                self.done = true;
            }
        }
        Ok(Some(buffer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let cases = [
            ("http://127.0.0.1:8080", Some(("127.0.0.1", 8080, ""))),
            ("http://localhost:9000/", Some(("localhost", 9000, ""))),
            ("http://gw/api/", Some(("gw", 80, "/api"))),
            ("https://api.example.com", None),
            ("http://:80", None),
            ("http://host:notaport", None),
        ];
        for (url, expected) in cases {
            let parsed = BaseUrl::parse(url).ok();
            let parsed = parsed
                .as_ref()
                .map(|b| (b.host.as_str(), b.port, b.prefix.as_str()));
            assert_eq!(parsed, expected, "{url}");
        }
    }
}
