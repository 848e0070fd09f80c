//! CORS: which browser origins may call the gateway (`[server] cors_origins`).
//!
//! A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered
//! `200` before authentication, since browsers send it without credentials; the allow headers
//! are on it only when the origin is allowed, so the browser blocks every other page. Answers
//! to allowed origins carry `Access-Control-Allow-Origin` (the origin itself) and
//! `Access-Control-Allow-Credentials: true`, as llama-server sends them.
//!
//! The default is `["localhost"]`: pages served from this device (`localhost`, `127.0.0.1`,
//! `[::1]`, any port). llama-server reflects every origin by default; on a gateway that would let
//! any web page an operator opens drive the device's model and its actions, so `"*"` must be
//! asked for.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;

/// The origins browsers may call from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsPolicy {
    any: bool,
    localhost: bool,
    exact: Vec<String>,
}

impl Default for CorsPolicy {
    fn default() -> Self {
        CorsPolicy {
            any: false,
            localhost: true,
            exact: Vec::new(),
        }
    }
}

impl CorsPolicy {
    /// From the configured list: `"*"` (any origin), `"localhost"` (this device's own pages),
    /// or origins written out (`https://ui.example:8443`: scheme, host, optional port, nothing
    /// after). An empty list allows no origin.
    pub fn parse(entries: &[String]) -> Result<CorsPolicy, String> {
        let mut policy = CorsPolicy {
            any: false,
            localhost: false,
            exact: Vec::new(),
        };
        for entry in entries {
            let entry = entry.trim();
            match entry {
                "*" => policy.any = true,
                "localhost" => policy.localhost = true,
                _ => {
                    let well_formed = entry.split_once("://").is_some_and(|(scheme, rest)| {
                        matches!(scheme, "http" | "https")
                            && !rest.is_empty()
                            && !rest.contains(['/', '?', '#', '@', ' '])
                    });
                    if !well_formed {
                        return Err(format!(
                            "server.cors_origins: {entry:?} is not \"*\", \"localhost\" or an \
                             origin such as \"https://ui.example:8443\" (scheme://host[:port])"
                        ));
                    }
                    policy.exact.push(entry.to_ascii_lowercase());
                }
            }
        }
        Ok(policy)
    }

    pub fn allows(&self, origin: &str) -> bool {
        if self.any {
            return true;
        }
        let origin = origin.to_ascii_lowercase();
        (self.localhost && is_localhost(&origin)) || self.exact.contains(&origin)
    }
}

/// `http(s)://localhost`, `127.0.0.1` or `[::1]`, with an optional port and nothing else.
fn is_localhost(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host = ["localhost", "127.0.0.1", "[::1]"]
        .into_iter()
        .find(|host| rest.starts_with(host));
    let Some(host) = host else {
        return false;
    };
    match &rest[host.len()..] {
        "" => true,
        port => port.strip_prefix(':').is_some_and(|p| {
            !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
        }),
    }
}

const METHODS: &str = "GET, POST, DELETE, OPTIONS";

/// Answers preflights and adds the allow headers to answers for allowed origins. Runs before
/// authentication.
pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let Some(origin) = origin else {
        return next.run(request).await;
    };
    let allowed = state.config.cors.allows(&origin);
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let mut response = StatusCode::OK.into_response();
        if allowed {
            let requested = request
                .headers()
                .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
                .cloned();
            let headers = response.headers_mut();
            allow(headers, &origin);
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(METHODS),
            );
            // The headers asked for, by name: with credentials, browsers read "*" literally,
            // and never let it cover Authorization.
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                requested.unwrap_or(HeaderValue::from_static("*")),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
        }
        response
            .headers_mut()
            .insert(header::VARY, HeaderValue::from_static("Origin"));
        return response;
    }
    let mut response = next.run(request).await;
    if allowed {
        allow(response.headers_mut(), &origin);
    }
    response
        .headers_mut()
        .append(header::VARY, HeaderValue::from_static("Origin"));
    response
}

fn allow(headers: &mut HeaderMap, origin: &str) {
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_is_this_device_only() {
        let policy = CorsPolicy::default();
        for origin in [
            "http://localhost",
            "http://localhost:8080",
            "https://127.0.0.1",
            "http://127.0.0.1:3000",
            "http://[::1]",
            "http://[::1]:3000",
            "HTTP://LOCALHOST:1",
        ] {
            assert!(policy.allows(origin), "{origin}");
        }
        for origin in [
            "http://web.mydomain.fr",
            "http://evil.com",
            "http://notlocalhost",
            "http://localhost.evil.com",
            "http://localhost:80/x",
            "http://localhost:",
            "http://localhost:123456",
            "http://127.0.0.1.evil.com",
            "file://localhost",
            "null",
            "localhost",
        ] {
            assert!(!policy.allows(origin), "{origin}");
        }
    }

    #[test]
    fn configured_lists() {
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let any = CorsPolicy::parse(&list(&["*"])).unwrap();
        assert!(any.allows("http://evil.com") && any.allows("null"));
        let none = CorsPolicy::parse(&[]).unwrap();
        assert!(!none.allows("http://localhost"));
        let exact = CorsPolicy::parse(&list(&["https://UI.example:8443"])).unwrap();
        assert!(exact.allows("https://ui.example:8443"));
        assert!(!exact.allows("https://ui.example") && !exact.allows("http://localhost"));
        for bad in [
            "ui.example",
            "ftp://x",
            "https://",
            "https://x/path",
            "https://a b",
        ] {
            let error = CorsPolicy::parse(&list(&[bad])).unwrap_err();
            assert!(error.contains("cors_origins"), "{bad}: {error}");
        }
    }
}
