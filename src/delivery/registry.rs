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
        Ok(Registry { client, reference })
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

    /// Sends `request` to `url`; a transport failure names the URL.
    async fn send(
        &self,
        url: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, DeliveryError> {
        request.send().await.map_err(|e| self.fail(url, e))
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
