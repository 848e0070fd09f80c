//! `/cors-proxy`: llama-server's web UI reaches MCP servers through it (`--ui-mcp-proxy`).
//!
//! Off by default (403). When `[server] ui_mcp_proxy` is on it forwards GET and POST to this
//! device's own loopback services only (127.0.0.0/8, ::1, `localhost`): whatever leaves the
//! device still goes to a configured tier, through the egress guard. What crosses:
//! - request headers only where the client names them (`x-llama-server-proxy-header-NAME`),
//!   never its own `Authorization`, `X-Api-Key`, cookies or proxy credentials, and never
//!   hop-by-hop headers;
//! - no redirects are followed (a 3xx goes back to the client as it is);
//! - the answer streams back with its status and headers, less the hop-by-hop ones, CORS
//!   headers (edgellm's own policy answers those) and `Set-Cookie`;
//! - a request that came through the proxy cannot use it again (no loops).

use std::net::IpAddr;
use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::{ApiError, AppState};

/// The prefix that marks a header the client wants forwarded (llama-server's).
const FORWARD_PREFIX: &str = "x-llama-server-proxy-header-";
/// Set on every forwarded request; a proxy request that carries it is refused.
const PROXIED: &str = "x-edgellm-proxied";
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub async fn cors_proxy(
    State(state): State<AppState>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !state.config.ui_mcp_proxy {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "the MCP proxy is off: start with --ui-mcp-proxy ([server] ui_mcp_proxy = true) to \
             let /cors-proxy reach this device's loopback services",
        )
        .with_code("proxy_disabled"));
    }
    if method != Method::GET && method != Method::POST {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            format!("/cors-proxy forwards GET and POST, not {method}"),
        ));
    }
    if headers.contains_key(PROXIED) {
        return Err(refused(
            "a request that came through /cors-proxy cannot use it again",
        ));
    }
    // The query string decoded by the URL parser's own form decoder; the first `url` counts.
    let named = query.as_deref().and_then(|query| {
        reqwest::Url::parse(&format!("http://q/?{query}"))
            .ok()?
            .query_pairs()
            .find(|(key, _)| key == "url")
            .map(|(_, value)| value.into_owned())
    });
    let url = target_url(named.as_deref())?;
    let forwarded = forwarded_headers(&headers)?;
    tracing::info!(
        method = %method,
        host = url.host_str().unwrap_or_default(),
        port = url.port_or_known_default().unwrap_or_default(),
        path = url.path(),
        "cors-proxy: forwarding"
    );
    let Some(client) = client() else {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "/cors-proxy: the HTTP client could not be built",
        ));
    };
    let request = client
        .request(method, url)
        .headers(forwarded)
        .header(PROXIED, "1")
        .timeout(state.config.limits.request_timeout)
        .body(body);
    let upstream = request.send().await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "server_error",
            format!(
                "/cors-proxy: the target did not answer: {}",
                crate::upstream::chain(&e)
            ),
        )
    })?;
    let mut response = Response::builder().status(upstream.status());
    for (name, value) in upstream.headers() {
        if !strip_from_answer(name) {
            response = response.header(name, value);
        }
    }
    let body = Body::from_stream(upstream.bytes_stream());
    Ok(response
        .body(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "server_error", e.to_string()))?
        .into_response())
}

/// The target: an http(s) URL without credentials whose host is a loopback address.
fn target_url(url: Option<&str>) -> Result<reqwest::Url, ApiError> {
    let Some(text) = url.filter(|u| !u.is_empty()) else {
        return Err(ApiError::invalid(
            "url",
            "the query parameter url is required",
        ));
    };
    let url = reqwest::Url::parse(text)
        .map_err(|e| ApiError::invalid("url", format!("not a URL: {e}")))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(ApiError::invalid(
            "url",
            format!("unsupported scheme {:?}: http or https", url.scheme()),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ApiError::invalid(
            "url",
            "credentials in the target URL are not supported",
        ));
    }
    // The parser has put the host in its canonical form (`2130706433` is `127.0.0.1`).
    let host = url.host_str().unwrap_or_default();
    let loopback = match host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    };
    if !loopback {
        return Err(refused(&format!(
            "/cors-proxy forwards to this device's loopback services only, not {:?}: what \
             leaves the device goes to a configured tier, through the egress guard",
            url.host_str().unwrap_or_default()
        )));
    }
    Ok(url)
}

/// The headers the client named with the forwarding prefix, the prefix taken off.
fn forwarded_headers(headers: &HeaderMap) -> Result<HeaderMap, ApiError> {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let Some(rest) = name.as_str().strip_prefix(FORWARD_PREFIX) else {
            continue;
        };
        if rest.is_empty() || hop_by_hop(rest) || rest == PROXIED {
            continue;
        }
        let name = HeaderName::from_bytes(rest.as_bytes())
            .map_err(|e| ApiError::invalid("headers", format!("{rest}: {e}")))?;
        out.append(name, value.clone());
    }
    Ok(out)
}

/// Headers that belong to one connection (RFC 9110 7.6.1) or that the client library sets.
fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "host"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "proxy-authenticate"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
            | "accept-encoding"
    )
}

fn strip_from_answer(name: &HeaderName) -> bool {
    let name = name.as_str();
    hop_by_hop(name)
        || name == "server"
        || name == "set-cookie"
        || name.starts_with("access-control-")
}

fn refused(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "permission_error", message).with_code("proxy_refused")
}

/// The proxy's client: no redirects, no system proxy. `None` if it cannot be built (never a
/// default client, which would follow redirects off the device).
fn client() -> Option<&'static reqwest::Client> {
    static CLIENT: OnceLock<Option<reqwest::Client>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            crate::upstream::install_crypto_provider();
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(CONNECT_TIMEOUT)
                .no_proxy()
                .build()
                .ok()
        })
        .as_ref()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn only_loopback_targets_without_credentials() {
        for ok in [
            "http://127.0.0.1:8080/mcp",
            "http://127.9.9.9/",
            "http://[::1]:1/x",
            "https://LOCALHOST/",
        ] {
            assert!(target_url(Some(ok)).is_ok(), "{ok}");
        }
        for (bad, status) in [
            ("http://example.com/", StatusCode::FORBIDDEN),
            ("http://10.0.0.1/", StatusCode::FORBIDDEN),
            ("http://localhost.example.com/", StatusCode::FORBIDDEN),
            ("http://0x7f000001.example/", StatusCode::FORBIDDEN),
            ("http://[::ffff:8.8.8.8]/", StatusCode::FORBIDDEN),
            ("http://user:pw@127.0.0.1/", StatusCode::BAD_REQUEST),
            ("file:///etc/passwd", StatusCode::BAD_REQUEST),
            ("ftp://127.0.0.1/", StatusCode::BAD_REQUEST),
            ("not a url", StatusCode::BAD_REQUEST),
            ("", StatusCode::BAD_REQUEST),
        ] {
            let error = target_url(Some(bad)).expect_err(bad);
            assert_eq!(error.status, status, "{bad}");
        }
        // The URL parser reads these as the loopback address itself.
        assert!(target_url(Some("http://2130706433/")).is_ok());
        assert!(target_url(None).is_err());
    }

    #[test]
    fn only_named_headers_cross_and_never_hop_by_hop_ones() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer mine"),
            ("x-api-key", "mine"),
            ("cookie", "s=1"),
            ("proxy-authorization", "Basic x"),
            ("x-llama-server-proxy-header-accept", "application/json"),
            ("x-llama-server-proxy-header-authorization", "Bearer theirs"),
            ("x-llama-server-proxy-header-host", "evil"),
            ("x-llama-server-proxy-header-transfer-encoding", "chunked"),
            ("x-llama-server-proxy-header-x-edgellm-proxied", "0"),
            ("x-llama-server-proxy-header-", "empty"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let out = forwarded_headers(&headers).expect("headers");
        let names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["accept", "authorization"]);
        assert_eq!(out["authorization"], "Bearer theirs");
    }
}
