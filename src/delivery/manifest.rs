//! The delivery manifest and its signatures.
//!
//! The manifest (`Body`) names the model (file name, size, sha256, a summary of its GGUF
//! header), lists the packs (registry blobs) that hold its chunks, and lists its chunks in file
//! order, each with the pack and offset it is read from. It is signed as bytes: the envelope carries the
//! exact JSON that was signed (base64) beside the signatures, so verifying never depends on
//! re-serialising. A signature is ed25519 over `SIGNING_CONTEXT` followed by those bytes. A pull
//! accepts the manifest only when a key the device trusts signed it and it has not expired, and
//! reads nothing else of it before that.

use std::path::Path;

use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::{DeliveryError, io_error, is_sha256_digest};

/// Domain separation: a signature over a manifest is never a valid signature over anything else.
const SIGNING_CONTEXT: &[u8] = b"edgellm model manifest v1\n";
pub const SCHEMA: u32 = 2;
/// The OCI media types edgellm pushes.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.edgellm.model.manifest.v1+json";
pub const PACK_MEDIA_TYPE: &str = "application/vnd.edgellm.model.pack.v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Body {
    pub schema: u32,
    /// The model's file name on the device.
    pub name: String,
    pub size: u64,
    /// sha256 of the whole file, lowercase hex.
    pub sha256: String,
    pub gguf: GgufSummary,
    /// An encrypted model container (`edgellm model encrypt`): pulled as `.gguf.enc`, its
    /// chunks are the container's header and segments. Absent for a plain GGUF.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
    /// Unix seconds.
    pub created: u64,
    pub expires: u64,
    /// The registry blobs the chunks are read from: chunks in file order, concatenated.
    pub packs: Vec<PackEntry>,
    pub chunks: Vec<ChunkEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackEntry {
    pub digest: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GgufSummary {
    pub architecture: String,
    pub tensors: usize,
    pub parameters: u64,
    pub weight_bytes: u64,
    pub context_length: Option<u64>,
    /// `edgellm plan`'s memory figures for `serve` with its default slots and an f16 KV cache:
    /// what the model needs at each context, so a device can refuse one it cannot hold before
    /// downloading it.
    pub memory: Vec<MemoryAtContext>,
}

impl GgufSummary {
    /// The summary an encrypted container's header gives (its tensors stay private).
    pub fn of_encrypted(model: &crate::vault::ModelSummary) -> GgufSummary {
        GgufSummary {
            architecture: model.architecture.clone(),
            tensors: 0,
            parameters: model.parameters,
            weight_bytes: model.size,
            context_length: None,
            memory: model.memory.clone(),
        }
    }

    /// The summary of a GGUF header, with `plan`'s memory figures.
    pub fn of(header: &crate::plan::GgufHeader) -> Result<GgufSummary, DeliveryError> {
        Ok(GgufSummary {
            architecture: header.architecture().unwrap_or("unknown").to_string(),
            tensors: header.tensors.len(),
            parameters: header.n_params(),
            weight_bytes: header.weight_bytes(),
            context_length: header.arch_get("context_length").and_then(|v| v.as_u64()),
            memory: memory_figures(header)?,
        })
    }
}

/// The memory `serve` needs for this model at 2k, 4k and 8k of context, with its default slots
/// and an f16 KV cache (`edgellm plan`'s estimate).
pub(crate) fn memory_figures(
    header: &crate::plan::GgufHeader,
) -> Result<Vec<MemoryAtContext>, DeliveryError> {
    let options = crate::plan::PlanOptions {
        contexts: vec![2048, 4096, 8192],
        kv_types: vec![crate::plan::GgmlType::F16],
        n_seq: u64::from(crate::config::ServeConfig::DEFAULT_SLOTS),
    };
    let device = crate::plan::probe::this_machine();
    let plan = crate::plan::ModelSpec::from_header(header)
        .and_then(|spec| crate::plan::build_plan(&spec, &device, &Default::default(), &options))
        .map_err(|e| DeliveryError::Model(format!("cannot plan the model: {e}")))?;
    Ok(plan
        .table
        .iter()
        .map(|row| MemoryAtContext {
            context: row.requested_ctx,
            bytes: row.total,
        })
        .collect())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryAtContext {
    pub context: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkEntry {
    pub digest: String,
    pub size: u64,
    /// Index into `packs`, and where in that pack the chunk starts.
    pub pack: u32,
    pub offset: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// base64 of the signed JSON bytes of `Body`.
    pub payload: String,
    pub signatures: Vec<SignatureEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureEntry {
    pub key_id: String,
    /// base64 of the 64-byte ed25519 signature.
    pub signature: String,
}

/// A key's id: the first 16 hex digits of the sha256 of its public key.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(sha2::Sha256::digest(key.as_bytes()))[..16].to_string()
}

/// Signs `body` with every key given (several during a key rotation).
pub fn sign(body: &Body, keys: &[SigningKey]) -> Result<Vec<u8>, DeliveryError> {
    let payload = serde_json::to_vec(body).map_err(|e| DeliveryError::Manifest(e.to_string()))?;
    let message = [SIGNING_CONTEXT, &payload].concat();
    let signatures = keys
        .iter()
        .map(|key| SignatureEntry {
            key_id: key_id(&key.verifying_key()),
            signature: base64::engine::general_purpose::STANDARD
                .encode(key.sign(&message).to_bytes()),
        })
        .collect();
    let envelope = Envelope {
        payload: base64::engine::general_purpose::STANDARD.encode(&payload),
        signatures,
    };
    serde_json::to_vec(&envelope).map_err(|e| DeliveryError::Manifest(e.to_string()))
}

/// Checks the envelope's signatures against `trusted` and only then reads the body; refuses an
/// expired manifest (`now` in unix seconds) and one whose chunk list does not add up.
pub fn verify(envelope: &[u8], trusted: &[VerifyingKey], now: u64) -> Result<Body, DeliveryError> {
    let bad = |m: String| DeliveryError::Manifest(m);
    if trusted.is_empty() {
        return Err(DeliveryError::Key(
            "no trusted keys: a device accepts no model until keys are configured".into(),
        ));
    }
    let envelope: Envelope =
        serde_json::from_slice(envelope).map_err(|e| bad(format!("not a signed manifest: {e}")))?;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(&envelope.payload)
        .map_err(|e| bad(format!("payload is not base64: {e}")))?;
    let message = [SIGNING_CONTEXT, &payload].concat();
    let signed_by = envelope.signatures.iter().find_map(|entry| {
        let key = trusted.iter().find(|k| key_id(k) == entry.key_id)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&entry.signature)
            .ok()?;
        let signature = Signature::from_slice(&bytes).ok()?;
        key.verify_strict(&message, &signature).ok().map(|_| key)
    });
    let Some(key) = signed_by else {
        let ids: Vec<&str> = envelope
            .signatures
            .iter()
            .map(|s| s.key_id.as_str())
            .collect();
        return Err(bad(format!(
            "no valid signature by a trusted key (signed by [{}]; trusted [{}])",
            ids.join(", "),
            trusted.iter().map(key_id).collect::<Vec<_>>().join(", ")
        )));
    };
    let body: Body = serde_json::from_slice(&payload)
        .map_err(|e| bad(format!("signed by {} but unreadable: {e}", key_id(key))))?;
    check_body(&body, now)?;
    Ok(body)
}

fn check_body(body: &Body, now: u64) -> Result<(), DeliveryError> {
    let bad = |m: String| Err(DeliveryError::Manifest(m));
    if body.schema != SCHEMA {
        return bad(format!(
            "schema {} (this edgellm reads {SCHEMA})",
            body.schema
        ));
    }
    if now > body.expires {
        return bad(format!(
            "expired {} s ago (expires {})",
            now - body.expires,
            body.expires
        ));
    }
    let name_ok = !body.name.is_empty()
        && body.name.len() <= 200
        && !body.name.starts_with('.')
        && body
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !name_ok {
        return bad(format!(
            "model name {:?} is not a plain file name",
            body.name
        ));
    }
    if body.sha256.len() != 64 || !is_sha256_digest(&format!("sha256:{}", body.sha256)) {
        return bad("sha256 is not 64 lowercase hex digits".into());
    }
    for pack in &body.packs {
        if !is_sha256_digest(&pack.digest) {
            return bad(format!("pack digest {:?} is not sha256", pack.digest));
        }
    }
    let mut total: u64 = 0;
    for chunk in &body.chunks {
        if !is_sha256_digest(&chunk.digest) {
            return bad(format!("chunk digest {:?} is not sha256", chunk.digest));
        }
        if chunk.size == 0 || chunk.size > u64::from(fastcdc::v2020::MAXIMUM_MAX) {
            return bad(format!("chunk {} has size {}", chunk.digest, chunk.size));
        }
        let inside = body.packs.get(chunk.pack as usize).is_some_and(|pack| {
            chunk
                .offset
                .checked_add(chunk.size)
                .is_some_and(|end| end <= pack.size)
        });
        if !inside {
            return bad(format!(
                "chunk {} lies outside pack {}",
                chunk.digest, chunk.pack
            ));
        }
        total = total.saturating_add(chunk.size);
    }
    if total != body.size {
        return bad(format!(
            "chunks add up to {total} bytes, the model is {}",
            body.size
        ));
    }
    Ok(())
}

/// Writes a new signing key (`path`, mode 0600, refused if it exists) and its public key
/// (`path.pub`); returns the key id.
pub fn keygen(path: &Path) -> Result<String, DeliveryError> {
    let mut secret = [0u8; 32];
    rand::fill(&mut secret);
    let key = SigningKey::from_bytes(&secret);
    let public = path.with_extension("pub");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io_error(path))?;
    std::io::Write::write_all(&mut file, format!("{}\n", hex::encode(secret)).as_bytes())
        .map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))?;
    std::fs::write(
        &public,
        format!("{}\n", hex::encode(key.verifying_key().as_bytes())),
    )
    .map_err(io_error(&public))?;
    Ok(key_id(&key.verifying_key()))
}

/// Reads a signing key written by `keygen` (64 hex digits).
pub fn load_signing_key(path: &Path) -> Result<SigningKey, DeliveryError> {
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    let bytes = decode_key_hex(text.trim(), path)?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// Reads trusted public keys: each file holds one or more keys, one per line (64 hex digits;
/// `#` starts a comment). An empty file is an error, not "trust nothing" silently.
pub fn load_trusted_keys(paths: &[std::path::PathBuf]) -> Result<Vec<VerifyingKey>, DeliveryError> {
    let mut keys = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(io_error(path))?;
        let before = keys.len();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bytes = decode_key_hex(line, path)?;
            let key = VerifyingKey::from_bytes(&bytes).map_err(|e| {
                DeliveryError::Key(format!(
                    "{}: not an ed25519 public key: {e}",
                    path.display()
                ))
            })?;
            keys.push(key);
        }
        if keys.len() == before {
            return Err(DeliveryError::Key(format!(
                "{} holds no key",
                path.display()
            )));
        }
    }
    Ok(keys)
}

fn decode_key_hex(text: &str, path: &Path) -> Result<[u8; 32], DeliveryError> {
    let bytes = hex::decode(text)
        .map_err(|e| DeliveryError::Key(format!("{}: not hex: {e}", path.display())))?;
    bytes.try_into().map_err(|_| {
        DeliveryError::Key(format!(
            "{}: a key is 32 bytes (64 hex digits)",
            path.display()
        ))
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn body() -> Body {
        Body {
            schema: SCHEMA,
            name: "m.gguf".into(),
            size: 10,
            sha256: "ab".repeat(32),
            gguf: GgufSummary {
                architecture: "llama".into(),
                tensors: 1,
                parameters: 5,
                weight_bytes: 10,
                context_length: None,
                memory: vec![MemoryAtContext {
                    context: 2048,
                    bytes: 100,
                }],
            },
            encrypted: false,
            created: 100,
            expires: 200,
            packs: vec![PackEntry {
                digest: format!("sha256:{}", "2".repeat(64)),
                size: 10,
            }],
            chunks: vec![
                ChunkEntry {
                    digest: format!("sha256:{}", "0".repeat(64)),
                    size: 4,
                    pack: 0,
                    offset: 0,
                },
                ChunkEntry {
                    digest: format!("sha256:{}", "1".repeat(64)),
                    size: 6,
                    pack: 0,
                    offset: 4,
                },
            ],
        }
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn a_manifest_verifies_only_under_a_trusted_unexpired_key() {
        let signed = sign(&body(), &[key(1)]).unwrap();
        assert_eq!(
            verify(&signed, &[key(1).verifying_key()], 150).unwrap(),
            body()
        );
        let cases: [(&[VerifyingKey], u64, &str); 3] = [
            (
                &[key(2).verifying_key()],
                150,
                "no valid signature by a trusted key",
            ),
            (&[key(1).verifying_key()], 201, "expired"),
            (&[], 150, "no trusted keys"),
        ];
        for (trusted, now, want) in cases {
            let error = verify(&signed, trusted, now).unwrap_err().to_string();
            assert!(error.contains(want), "{error}");
        }
    }

    #[test]
    fn rotation_any_trusted_signature_suffices() {
        let signed = sign(&body(), &[key(1), key(2)]).unwrap();
        assert!(verify(&signed, &[key(2).verifying_key()], 150).is_ok());
    }

    #[test]
    fn a_changed_payload_or_signature_is_refused() {
        let signed = sign(&body(), &[key(1)]).unwrap();
        let mut envelope: Envelope = serde_json::from_slice(&signed).unwrap();
        let mut other = body();
        other.sha256 = "cd".repeat(32);
        envelope.payload =
            base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&other).unwrap());
        let tampered = serde_json::to_vec(&envelope).unwrap();
        let error = verify(&tampered, &[key(1).verifying_key()], 150).unwrap_err();
        assert!(error.to_string().contains("no valid signature"), "{error}");
    }

    #[test]
    fn signed_bodies_that_do_not_add_up_are_refused() {
        type Change = fn(&mut Body);
        let cases: [(Change, &str); 7] = [
            (|b| b.size = 11, "add up"),
            (|b| b.name = "../etc/passwd".into(), "plain file name"),
            (|b| b.chunks[0].digest = "sha256:../x".into(), "not sha256"),
            (|b| b.packs[0].digest = "sha256:".into(), "not sha256"),
            (|b| b.chunks[1].offset = 5, "outside pack 0"),
            (|b| b.chunks[1].pack = 1, "outside pack 1"),
            (|b| b.schema = 1, "schema 1"),
        ];
        for (change, want) in cases {
            let mut b = body();
            change(&mut b);
            let signed = sign(&b, &[key(1)]).unwrap();
            let error = verify(&signed, &[key(1).verifying_key()], 150).unwrap_err();
            assert!(error.to_string().contains(want), "{want}: {error}");
        }
    }

    #[test]
    fn trusted_key_files_that_hold_no_usable_key_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let good = hex::encode(key(1).verifying_key().as_bytes());
        let cases = [
            ("", "holds no key"),
            ("# rotation planned\n\n", "holds no key"),
            ("not hex at all", "not hex"),
            ("abcd", "64 hex digits"),
            (&*format!("{good}\nzz"), "not hex"),
        ];
        for (n, (text, want)) in cases.iter().enumerate() {
            let path = dir.path().join(format!("{n}.pub"));
            std::fs::write(&path, text).unwrap();
            let error = load_trusted_keys(std::slice::from_ref(&path))
                .unwrap_err()
                .to_string();
            assert!(
                error.contains(want) && error.contains(&format!("{n}.pub")),
                "{text:?}: {error}"
            );
        }
        let path = dir.path().join("good.pub");
        std::fs::write(&path, format!("# release key\n{good}  # 2026\n")).unwrap();
        assert_eq!(
            load_trusted_keys(&[path]).unwrap(),
            vec![key(1).verifying_key()]
        );
        let missing = dir.path().join("missing.pub");
        assert!(load_trusted_keys(&[missing]).is_err());
    }
}
