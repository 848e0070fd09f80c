//! Registry credentials and the two ways registries ask for them (the distribution spec's
//! token authentication and HTTP Basic).
//!
//! Credentials come from a file in the Docker `config.json` format that registries' own tools
//! write (`docker login`, `oras login`, podman's `auth.json`): `{"auths": {"HOST[:PORT]":
//! {"auth": base64("user:password")}}}`, or `username` and `password` in the entry. A registry
//! that answers `401` with `WWW-Authenticate: Basic` gets the request again with those; one that
//! answers `Bearer realm=...,service=...,scope=...` (Harbor, GHCR, ECR, Docker Hub, distribution
//! with token auth) gets a token from the realm (with the credentials, or anonymously without
//! them) and the request again with it. Credentials never travel over plain HTTP to a host that
//! is not on loopback.

use std::path::Path;

use base64::Engine as _;

use super::DeliveryError;

/// The largest credentials file read (Docker's hold a few entries of a few hundred bytes).
const MAX_FILE_BYTES: u64 = 1 << 20;

/// A user name and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <password>)", self.username)
    }
}

/// What a `401` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// The credentials `path` holds for `host` (`HOST[:PORT]`); `None` when it has no entry for it.
/// A file that cannot be read or parsed, or an entry without a user and password, is an error:
/// a named credentials file that does not work refuses the command.
pub fn load(path: &Path, host: &str) -> Result<Option<Credentials>, DeliveryError> {
    let bad =
        |why: String| DeliveryError::Key(format!("registry credentials {}: {why}", path.display()));
    // Read at most a little past the limit: a named device or a runaway file is refused, not
    // read into memory.
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut std::io::Read::take(
            std::fs::File::open(path).map_err(|e| bad(e.to_string()))?,
            MAX_FILE_BYTES + 1,
        ),
        &mut text,
    )
    .map_err(|e| bad(e.to_string()))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(bad(format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    let file: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let auths = file
        .get("auths")
        .and_then(|a| a.as_object())
        .ok_or_else(|| bad("no \"auths\" object (the Docker config.json format)".into()))?;
    let entry = auths.iter().find_map(|(key, entry)| {
        let key = key
            .strip_prefix("https://")
            .or_else(|| key.strip_prefix("http://"))
            .unwrap_or(key);
        let key = key.split('/').next().unwrap_or(key);
        (key == host).then_some(entry)
    });
    let Some(entry) = entry else {
        return Ok(None);
    };
    let field = |name: &str| {
        entry
            .get(name)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
    };
    if let (Some(username), Some(password)) = (field("username"), field("password")) {
        return Ok(Some(Credentials {
            username: username.to_string(),
            password: password.to_string(),
        }));
    }
    let auth = field("auth").ok_or_else(|| {
        bad(format!(
            "the entry for {host} has neither \"auth\" nor \"username\" and \"password\""
        ))
    })?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            bad(format!(
                "the \"auth\" of {host} is not base64 of user:password"
            ))
        })?;
    match decoded.split_once(':') {
        Some((user, password)) if !user.is_empty() && !password.is_empty() => {
            Ok(Some(Credentials {
                username: user.to_string(),
                password: password.to_string(),
            }))
        }
        _ => Err(bad(format!(
            "the \"auth\" of {host} is not base64 of user:password"
        ))),
    }
}

/// Parses a `WWW-Authenticate` value; `None` for a scheme this client does not speak.
pub fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest);
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    Some(Challenge::Bearer {
        realm: get("realm")?,
        service: get("service"),
        scope: get("scope"),
    })
}

/// `key="value", key=value, ...` (RFC 7235 auth-params; quoted values may hold commas and
/// backslash escapes).
fn parse_params(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ','))
            .collect::<String>()
            .trim()
            .to_string();
        if key.is_empty() || chars.next() != Some('=') {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => value.extend(chars.next()),
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ','))
                .collect::<String>()
                .trim()
                .to_string();
        }
        out.push((key, value));
    }
}

/// Whether credentials may be sent to `url`: over HTTPS, or to a loopback host.
pub fn may_carry_credentials(url: &reqwest::Url) -> bool {
    url.scheme() == "https" || matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_as_registries_send_them() {
        assert_eq!(
            parse_challenge(r#"Basic realm="fleet""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:fleet/gemma:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into()),
                scope: Some("repository:fleet/gemma:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"bearer realm=https://h/t, scope="a\"b""#),
            Some(Challenge::Bearer {
                realm: "https://h/t".into(),
                service: None,
                scope: Some("a\"b".into()),
            })
        );
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None, "no realm");
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(parse_challenge(""), None);
    }

    #[test]
    fn credentials_files_in_the_docker_format() {
        let dir = tempfile::tempdir().unwrap();
        let file = |text: &str| {
            let path = dir.path().join(format!("{}.json", text.len()));
            std::fs::write(&path, text).unwrap();
            path
        };
        let encoded = base64::engine::general_purpose::STANDARD.encode("fleet:s3:cret");
        let path = file(&format!(
            r#"{{"auths": {{"https://reg.example.com:5000/v2/": {{"auth": "{encoded}"}}, "other.example.com": {{"username": "u", "password": "p"}}}}}}"#
        ));
        let found = load(&path, "reg.example.com:5000").unwrap().unwrap();
        assert_eq!(
            (found.username.as_str(), found.password.as_str()),
            ("fleet", "s3:cret")
        );
        assert_eq!(
            load(&path, "other.example.com").unwrap().unwrap().password,
            "p"
        );
        assert_eq!(load(&path, "reg.example.com").unwrap(), None);
        assert!(!format!("{found:?}").contains("s3:cret"));

        for (text, want) in [
            ("not json", "not JSON"),
            (r#"{"credsStore": "desktop"}"#, "no \"auths\""),
            (r#"{"auths": {"h:1": {}}}"#, "neither"),
            (r#"{"auths": {"h:1": {"auth": "!!"}}}"#, "not base64"),
            (
                r#"{"auths": {"h:1": {"auth": "dXNlcg=="}}}"#,
                "not base64 of user:password",
            ),
        ] {
            let error = load(&file(text), "h:1").unwrap_err().to_string();
            assert!(error.contains(want), "{text}: {error}");
        }
        let huge = file(&" ".repeat(MAX_FILE_BYTES as usize + 1));
        assert!(
            load(&huge, "h:1")
                .unwrap_err()
                .to_string()
                .contains("larger than")
        );
        let endless = load(Path::new("/dev/zero"), "h:1").unwrap_err();
        assert!(endless.to_string().contains("larger than"), "{endless}");
        let missing = load(&dir.path().join("absent.json"), "h:1").unwrap_err();
        assert!(missing.to_string().contains("absent.json"));
    }

    #[test]
    fn credentials_go_over_https_or_to_loopback_only() {
        for (url, ok) in [
            ("https://reg.example.com/v2/", true),
            ("http://127.0.0.1:5000/v2/", true),
            ("http://localhost:5000/token", true),
            ("http://[::1]:5000/v2/", true),
            ("http://reg.example.com/v2/", false),
            ("http://10.0.0.5:5000/token", false),
        ] {
            assert_eq!(may_carry_credentials(&url.parse().unwrap()), ok, "{url}");
        }
    }
}
