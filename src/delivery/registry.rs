//! The OCI distribution API, as much of it as delivery needs: blob existence, monolithic blob
//! upload, manifest put and get, blob get. Every answer read into memory is bounded.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::DeliveryError;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The largest manifest edgellm reads or writes (distribution refuses more than 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// Whether `tag` is a tag edgellm accepts: letters, digits, '.', '_' and '-', at most 128 (a tag
/// becomes part of a registry URL).
pub fn is_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// `HOST[:PORT]/NAME[:TAG]`; plain HTTP for loopback hosts or when asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub host: String,
    pub name: String,
    pub tag: String,
    pub plain_http: bool,
}

impl Reference {
    pub fn parse(text: &str, plain_http: bool) -> Result<Reference, DeliveryError> {
        let bad = |why: &str| DeliveryError::Reference(format!("reference {text:?}: {why}"));
        let (host, rest) = text
            .split_once('/')
            .ok_or_else(|| bad("expected HOST[:PORT]/NAME[:TAG]"))?;
        if host.is_empty() || !(host.contains('.') || host.contains(':') || host == "localhost") {
            return Err(bad(
                "the registry host comes first (HOST[:PORT]/NAME[:TAG])",
            ));
        }
        let (name, tag) = match rest.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => (name, tag),
            _ => (rest, "latest"),
        };
        let name_ok = !name.is_empty()
            && name.split('/').all(|part| {
                !part.is_empty()
                    && part.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            });
        if !name_ok {
            return Err(bad(
                "a repository name is lowercase letters, digits, '.', '_', '-' and '/'",
            ));
        }
        if !is_tag(tag) {
            return Err(bad(
                "a tag is letters, digits, '.', '_' and '-', at most 128",
            ));
        }
        let hostname = host.rsplit_once(':').map_or(host, |(h, _)| h);
        let loopback = matches!(hostname, "localhost" | "127.0.0.1" | "[::1]");
        Ok(Reference {
            host: host.to_string(),
            name: name.to_string(),
            tag: tag.to_string(),
            plain_http: plain_http || loopback,
        })
    }

    fn base(&self) -> String {
        let scheme = if self.plain_http { "http" } else { "https" };
        format!("{scheme}://{}/v2/{}", self.host, self.name)
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.host, self.name, self.tag)
    }
}

/// Part of a blob being received: `next` gives its bytes piece by piece, and no more than were
/// asked for.
pub struct BlobRange {
    url: String,
    response: reqwest::Response,
    /// Bytes still to drop before the range starts (a registry that answered 200).
    skip: u64,
    /// Bytes of the range not received yet.
    left: u64,
}

impl BlobRange {
    pub async fn next(&mut self) -> Result<Option<bytes::Bytes>, DeliveryError> {
        while self.left > 0 {
            let piece = self
                .response
                .chunk()
                .await
                .map_err(|e| DeliveryError::Registry {
                    url: self.url.clone(),
                    reason: e.to_string(),
                })?;
            let Some(mut piece) = piece else {
                return Err(DeliveryError::Registry {
                    url: self.url.clone(),
                    reason: format!("the answer ended {} bytes short", self.left),
                });
            };
            let skip = self.skip.min(piece.len() as u64);
            self.skip -= skip;
            let _ = piece.split_to(skip as usize);
            piece.truncate(self.left.min(piece.len() as u64) as usize);
            if piece.is_empty() {
                continue;
            }
            self.left -= piece.len() as u64;
            return Ok(Some(piece));
        }
        Ok(None)
    }
}

/// An OCI image manifest (the fields edgellm writes and reads).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OciManifest {
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

pub struct Registry {
    client: reqwest::Client,
    reference: Reference,
    credentials: Option<super::auth::Credentials>,
    /// How requests are authorised now: learnt from the registry's first `401`.
    authorization: std::sync::Mutex<Option<Authorization>>,
}

#[derive(Debug, Clone)]
enum Authorization {
    Basic,
    Bearer(String),
}

impl Registry {
    pub fn new(reference: Reference) -> Result<Registry, DeliveryError> {
        crate::upstream::install_crypto_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| DeliveryError::Registry {
                url: reference.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Registry {
            client,
            reference,
            credentials: None,
            authorization: std::sync::Mutex::new(None),
        })
    }

    /// Sends `credentials` when the registry asks for them (`crate::delivery::auth`).
    pub fn with_credentials(mut self, credentials: Option<super::auth::Credentials>) -> Registry {
        self.credentials = credentials;
        self
    }

    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    fn fail(&self, url: &str, reason: impl std::fmt::Display) -> DeliveryError {
        DeliveryError::Registry {
            url: url.to_string(),
            reason: reason.to_string(),
        }
    }

    /// Sends `request` to `url`; a transport failure names the URL. A `401` that asks for
    /// Basic credentials or a bearer token is answered once: with the credentials, or with a
    /// token from the challenge's realm, and the request is sent again.
    async fn send(
        &self,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, DeliveryError> {
        let again = request.try_clone();
        let response = self
            .authorize(url, request)?
            .send()
            .await
            .map_err(|e| self.fail(url, e))?;
        if response.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let Some(again) = again else {
            return Ok(response);
        };
        let challenge = response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(super::auth::parse_challenge);
        let authorization = match challenge {
            Some(super::auth::Challenge::Basic) => {
                if self.credentials.is_none() {
                    return Err(self.fail(
                        url,
                        "the registry asks for credentials (--registry-auth or \
                         delivery.registry_auth: a Docker config.json with an entry for this host)",
                    ));
                }
                Authorization::Basic
            }
            Some(super::auth::Challenge::Bearer {
                realm,
                service,
                scope,
            }) => Authorization::Bearer(self.token(url, &realm, service, scope).await?),
            None => return Ok(response),
        };
        if let Ok(mut current) = self.authorization.lock() {
            *current = Some(authorization);
        }
        let response = self
            .authorize(url, again)?
            .send()
            .await
            .map_err(|e| self.fail(url, e))?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            let who = self.credentials.as_ref().map_or_else(
                || "anonymous".to_string(),
                |c| format!("user {}", c.username),
            );
            return Err(self.fail(url, format!("401 Unauthorized as {who}")));
        }
        Ok(response)
    }

    /// `request` with the authorisation learnt so far; credentials only over HTTPS or to
    /// loopback.
    fn authorize(
        &self,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, DeliveryError> {
        let current = self.authorization.lock().ok().and_then(|a| a.clone());
        Ok(match (current, &self.credentials) {
            (Some(Authorization::Bearer(token)), _) => request.bearer_auth(token),
            (Some(Authorization::Basic), Some(credentials)) => {
                self.check_transport(url)?;
                request.basic_auth(&credentials.username, Some(&credentials.password))
            }
            _ => request,
        })
    }

    fn check_transport(&self, url: &str) -> Result<(), DeliveryError> {
        let parsed: reqwest::Url = url.parse().map_err(|e| self.fail(url, e))?;
        if super::auth::may_carry_credentials(&parsed) {
            Ok(())
        } else {
            Err(self.fail(
                url,
                "credentials are not sent over plain HTTP to a host that is not on loopback",
            ))
        }
    }

    /// A bearer token from `realm` for `service` and `scope`: with the credentials when there
    /// are any, anonymously otherwise.
    async fn token(
        &self,
        url: &str,
        realm: &str,
        service: Option<String>,
        scope: Option<String>,
    ) -> Result<String, DeliveryError> {
        let mut token_url: reqwest::Url = realm
            .parse()
            .map_err(|e| self.fail(url, format!("the token realm {realm:?}: {e}")))?;
        for (key, value) in [("service", service), ("scope", scope)] {
            if let Some(value) = value {
                token_url.query_pairs_mut().append_pair(key, &value);
            }
        }
        let mut request = self.client.get(token_url);
        if let Some(credentials) = &self.credentials {
            self.check_transport(realm)?;
            request = request.basic_auth(&credentials.username, Some(&credentials.password));
        }
        let response = request.send().await.map_err(|e| self.fail(realm, e))?;
        let response = self
            .expect(realm, response, 200, "the token service")
            .await?;
        let bytes = self
            .read_bounded(realm, response, 64 << 10, &mut |_| None)
            .await?;
        let answer: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| self.fail(realm, format!("the token answer is not JSON: {e}")))?;
        answer
            .get("token")
            .or_else(|| answer.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .ok_or_else(|| self.fail(url, "the token service answered without a token"))
    }

    /// `response` unless its status differs from `want`; then an error with what the registry
    /// said (its first 4 KiB).
    async fn expect(
        &self,
        url: &str,
        response: reqwest::Response,
        want: u16,
        what: &str,
    ) -> Result<reqwest::Response, DeliveryError> {
        if response.status().as_u16() == want {
            return Ok(response);
        }
        let code = response.status();
        let text = response.text().await.unwrap_or_default();
        let text: String = text.trim().chars().take(4096).collect();
        Err(self.fail(url, format!("{what} answered {code}: {text}")))
    }

    pub async fn has_blob(&self, digest: &str) -> Result<bool, DeliveryError> {
        let url = format!("{}/blobs/{digest}", self.reference.base());
        let response = self.send(&url, self.client.head(&url)).await?;
        match response.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            code => Err(self.fail(&url, format!("HEAD answered {code}"))),
        }
    }

    /// Uploads one blob in one request (POST for a session, PUT with the digest).
    pub async fn put_blob(&self, digest: &str, bytes: Vec<u8>) -> Result<(), DeliveryError> {
        let url = format!("{}/blobs/uploads/", self.reference.base());
        let response = self.send(&url, self.client.post(&url)).await?;
        let response = self.expect(&url, response, 202, "upload start").await?;
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.fail(&url, "upload start without a Location"))?;
        let mut put_url = if location.starts_with('/') {
            let scheme = if self.reference.plain_http {
                "http"
            } else {
                "https"
            };
            format!("{scheme}://{}{location}", self.reference.host)
        } else {
            location.to_string()
        };
        put_url.push(if put_url.contains('?') { '&' } else { '?' });
        put_url.push_str(&format!("digest={digest}"));
        let request = self
            .client
            .put(&put_url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(bytes);
        let response = self.send(&url, request).await?;
        self.expect(&url, response, 201, "upload").await?;
        Ok(())
    }

    pub async fn put_manifest(&self, manifest: &OciManifest) -> Result<String, DeliveryError> {
        let url = format!("{}/manifests/{}", self.reference.base(), self.reference.tag);
        let bytes = serde_json::to_vec(manifest).map_err(|e| self.fail(&url, e))?;
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(self.fail(
                &url,
                format!("manifest of {} bytes is too large", bytes.len()),
            ));
        }
        let digest = super::digest_of(&bytes);
        let request = self
            .client
            .put(&url)
            .header(reqwest::header::CONTENT_TYPE, OCI_MANIFEST)
            .body(bytes);
        let response = self.send(&url, request).await?;
        self.expect(&url, response, 201, "manifest put").await?;
        Ok(digest)
    }

    /// The manifest tagged `tag`; `None` when the registry has no such tag.
    pub async fn get_manifest(&self, tag: &str) -> Result<Option<OciManifest>, DeliveryError> {
        let url = format!("{}/manifests/{tag}", self.reference.base());
        let request = self
            .client
            .get(&url)
            .header(reqwest::header::ACCEPT, OCI_MANIFEST);
        let response = self.send(&url, request).await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let bytes = self
            .read_bounded(&url, response, MAX_MANIFEST_BYTES, &mut |_| None)
            .await?;
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| self.fail(&url, format!("not an OCI manifest: {e}")))
    }

    /// One blob, at most `limit` bytes; `pace` is called with each piece's length (the
    /// bandwidth cap waits there).
    pub async fn get_blob(
        &self,
        digest: &str,
        limit: usize,
        pace: &mut (dyn FnMut(usize) -> Option<Duration> + Send),
    ) -> Result<Vec<u8>, DeliveryError> {
        let url = format!("{}/blobs/{digest}", self.reference.base());
        let response = self.send(&url, self.client.get(&url)).await?;
        self.read_bounded(&url, response, limit, pace).await
    }

    /// Bytes `start..end` of a blob, as a stream. A registry that ignores the `Range` header
    /// and sends the whole blob is read from its start: the bytes before `start` are skipped.
    pub async fn get_blob_range(
        &self,
        digest: &str,
        start: u64,
        end: u64,
    ) -> Result<BlobRange, DeliveryError> {
        let url = format!("{}/blobs/{digest}", self.reference.base());
        let request = self
            .client
            .get(&url)
            .header(reqwest::header::RANGE, format!("bytes={start}-{}", end - 1));
        let response = self.send(&url, request).await?;
        let (response, skip) = match response.status().as_u16() {
            200 => (response, start),
            _ => {
                let response = self.expect(&url, response, 206, "GET").await?;
                let content_range = response
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !content_range.starts_with(&format!("bytes {start}-")) {
                    return Err(self.fail(
                        &url,
                        format!("asked for bytes {start}.., got Content-Range {content_range:?}"),
                    ));
                }
                (response, 0)
            }
        };
        Ok(BlobRange {
            url,
            response,
            skip,
            left: end - start,
        })
    }

    /// A successful answer's body, refused past `limit` bytes.
    async fn read_bounded(
        &self,
        url: &str,
        response: reqwest::Response,
        limit: usize,
        pace: &mut (dyn FnMut(usize) -> Option<Duration> + Send),
    ) -> Result<Vec<u8>, DeliveryError> {
        let mut response = self.expect(url, response, 200, "GET").await?;
        let mut out = Vec::new();
        while let Some(piece) = response.chunk().await.map_err(|e| self.fail(url, e))? {
            if out.len() + piece.len() > limit {
                return Err(self.fail(url, format!("answer longer than {limit} bytes")));
            }
            out.extend_from_slice(&piece);
            if let Some(wait) = pace(piece.len()) {
                tokio::time::sleep(wait).await;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_or_name_what_is_wrong() {
        let r = Reference::parse("127.0.0.1:5000/models/gemma:v1", false).unwrap();
        assert_eq!(
            (
                r.host.as_str(),
                r.name.as_str(),
                r.tag.as_str(),
                r.plain_http
            ),
            ("127.0.0.1:5000", "models/gemma", "v1", true)
        );
        let r = Reference::parse("registry.example.com/fleet/gemma", false).unwrap();
        assert_eq!((r.tag.as_str(), r.plain_http), ("latest", false));
        for bad in [
            "gemma:v1",
            "/x",
            "host.example/",
            "host.example/Upper",
            "host.example/a:b c",
            "host.example/a//b",
        ] {
            assert!(Reference::parse(bad, false).is_err(), "{bad}");
        }
    }
}
