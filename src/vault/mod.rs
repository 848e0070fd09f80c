//! Models encrypted at rest (the field guide's "encrypt model files ... store keys in a TPM").
//!
//! - [`container`]: the encrypted model format (segments aligned with delivery chunks).
//! - [`recipient`]: device keys (X25519) and the data key wrapped per device.
//! - [`keystore`]: where this device's key is held (TPM, systemd-creds, development key file).
//! - [`tpm`]: the TPM 2.0 sealed object bound to PCRs.
//!
//! [`open_model`] is the one door the engine loads through: a plain GGUF is checked against a
//! configured sha256; a container is unsealed, authenticated and decrypted into a sealed memfd
//! that llama.cpp maps through `/proc/self/fd/N`. No plaintext byte reaches a filesystem.

pub mod cli;
pub mod container;
pub mod keystore;
pub mod recipient;
pub mod tpm;

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

pub use container::{Cipher, Content, ModelSummary, is_container};

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    KeyStore(String),
    #[error("{0}")]
    Recipient(String),
    #[error("TPM: {0}")]
    Tpm(String),
    #[error(
        "the TPM refuses to unseal the device key: PCR {} changed since the key was sealed (another boot chain or configuration)",
        pcr_list(.0)
    )]
    PcrMismatch(Vec<u8>),
    #[error(
        "this device (key {device}) is not a recipient of the model (it was encrypted for: {recipients})"
    )]
    NotARecipient { device: String, recipients: String },
    #[error(
        "the data key wrapped for this device (key {0}) does not unwrap: the container's recipient entry was modified"
    )]
    Unwrap(String),
    #[error("{0}")]
    Format(String),
    #[error("the container's header was modified (its MAC does not match)")]
    HeaderModified,
    #[error("the container is truncated: {have} of {want} bytes")]
    Truncated { have: u64, want: u64 },
    #[error("the container has {0} bytes after its last segment")]
    Trailing(u64),
    #[error("segment {at} holds segment {holds}'s data: the segments are out of order")]
    OutOfOrder { at: usize, holds: usize },
    #[error("segment {0}'s tag was modified")]
    TagModified(usize),
    #[error(
        "segment {index} (model bytes {start}..{end}) fails authentication: the container was modified"
    )]
    SegmentModified { index: usize, start: u64, end: u64 },
    #[error("{path} has sha256 {actual}, the configuration expects {expected}")]
    Sha256Mismatch {
        path: PathBuf,
        actual: String,
        expected: String,
    },
    #[error("cannot hold the decrypted model in memory: {0}")]
    Memory(std::io::Error),
    #[error("{0}")]
    Crypto(String),
}

fn pcr_list(pcrs: &[u8]) -> String {
    pcrs.iter().map(u8::to_string).collect::<Vec<_>>().join(",")
}

impl VaultError {
    /// A short class for audit rows and metrics (never a key or a path).
    pub fn class(&self) -> &'static str {
        match self {
            VaultError::Io { .. } | VaultError::Memory(_) => "io",
            VaultError::KeyStore(_) | VaultError::Recipient(_) => "key_store",
            VaultError::Tpm(_) => "tpm",
            VaultError::PcrMismatch(_) => "pcr_mismatch",
            VaultError::NotARecipient { .. } => "not_a_recipient",
            VaultError::Unwrap(_) => "unwrap",
            VaultError::Format(_) | VaultError::Truncated { .. } | VaultError::Trailing(_) => {
                "format"
            }
            VaultError::HeaderModified
            | VaultError::OutOfOrder { .. }
            | VaultError::TagModified(_)
            | VaultError::SegmentModified { .. } => "modified",
            VaultError::Sha256Mismatch { .. } => "sha256",
            VaultError::Crypto(_) => "crypto",
        }
    }
}

pub(crate) fn io_error(path: &Path) -> impl Fn(std::io::Error) -> VaultError + '_ {
    move |source| VaultError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a small file, refusing one larger than `limit` (a named device or a runaway file).
pub(crate) fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, VaultError> {
    let file = std::fs::File::open(path).map_err(io_error(path))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error(path))?;
    if bytes.len() as u64 > limit {
        return Err(VaultError::KeyStore(format!(
            "{} is larger than {limit} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

/// `[keys]`: where this device's key is and which backends may hold it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The key store [default: $EDGELLM_HOME/keys/device.json].
    pub store: Option<PathBuf>,
    /// Let a plain key file hold the device key (development only).
    #[serde(default)]
    pub allow_key_file: bool,
    /// The TPM to use, overriding the store's (`device:/dev/tpmrm0`, `swtpm:host=...,port=...`).
    pub tpm_tcti: Option<String>,
    /// Encrypt the ledger's prompt log (`[budget] prompt_log`) with a key derived from the
    /// device key.
    #[serde(default)]
    pub encrypt_prompt_log: bool,
}

/// A key for a local cache (the ledger's prompt log), derived from this device's key: what it
/// encrypts opens only where the device key unseals.
pub struct LocalKey(zeroize::Zeroizing<[u8; 32]>);

/// How a sealed text starts in the column that held plain text before.
const SEALED_TEXT: &str = "enc1:";

impl std::fmt::Debug for LocalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalKey(..)")
    }
}

impl PartialEq for LocalKey {
    fn eq(&self, other: &LocalKey) -> bool {
        use subtle::ConstantTimeEq;
        self.0[..].ct_eq(&other.0[..]).into()
    }
}

impl LocalKey {
    /// The key for `purpose`, from this device's key (one unseal).
    pub fn for_device(keys: &KeyConfig, purpose: &str) -> Result<LocalKey, VaultError> {
        let device = keystore::unlock(keys)?;
        Ok(LocalKey(device.derive(purpose.as_bytes())))
    }

    #[cfg(test)]
    pub fn from_bytes(bytes: [u8; 32]) -> LocalKey {
        LocalKey(zeroize::Zeroizing::new(bytes))
    }

    /// `enc1:` and base64 of a random 24-byte nonce and the XChaCha20-Poly1305 ciphertext.
    pub fn seal(&self, text: &str) -> String {
        use base64::Engine as _;
        use chacha20poly1305::aead::{Aead, KeyInit};
        let cipher = chacha20poly1305::XChaCha20Poly1305::new((&*self.0).into());
        let mut nonce = [0u8; 24];
        rand::fill(&mut nonce);
        // Encryption fails only past 256 GiB of text.
        let sealed = cipher
            .encrypt((&nonce).into(), text.as_bytes())
            .unwrap_or_default();
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        format!(
            "{SEALED_TEXT}{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    }

    /// The text [`LocalKey::seal`] sealed; `None` for text it did not seal with this key.
    pub fn open(&self, stored: &str) -> Option<String> {
        use base64::Engine as _;
        use chacha20poly1305::aead::{Aead, KeyInit};
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(stored.strip_prefix(SEALED_TEXT)?)
            .ok()?;
        if bytes.len() < 24 + 16 {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(24);
        let nonce: &[u8; 24] = nonce.try_into().ok()?;
        let cipher = chacha20poly1305::XChaCha20Poly1305::new((&*self.0).into());
        let plain = cipher.decrypt(nonce.into(), sealed).ok()?;
        String::from_utf8(plain).ok()
    }

    /// Whether `stored` is sealed text (of any key).
    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(SEALED_TEXT)
    }
}

/// A model file as the engine loads it.
#[derive(Debug)]
pub enum ModelSource {
    /// A plain GGUF (checked against its sha256 when one was configured).
    Plain(PathBuf),
    /// An encrypted container's plaintext in a sealed memfd, mapped through `load_path`.
    Decrypted {
        fd: OwnedFd,
        load_path: PathBuf,
        model: ModelSummary,
    },
}

impl ModelSource {
    /// The path llama.cpp and the GGUF reader open.
    pub fn load_path(&self) -> &Path {
        match self {
            ModelSource::Plain(path) => path,
            ModelSource::Decrypted { load_path, .. } => load_path,
        }
    }

    /// The model's name in an encrypted container's header.
    pub fn name(&self) -> Option<&str> {
        match self {
            ModelSource::Plain(_) => None,
            ModelSource::Decrypted { model, .. } => Some(&model.name),
        }
    }
}

/// Opens a model for loading: see the module's documentation. `sha256` is the plaintext's
/// expected digest (lowercase hex), when the configuration or a signed manifest gives one.
pub fn open_model(
    path: &Path,
    keys: &KeyConfig,
    sha256: Option<&str>,
) -> Result<ModelSource, VaultError> {
    if !container::is_container(path) {
        if let Some(expected) = sha256 {
            let actual = crate::model::import::sha256_file(path)
                .map_err(|e| VaultError::Format(format!("cannot hash {}: {e}", path.display())))?;
            if !actual.eq_ignore_ascii_case(expected) {
                return Err(VaultError::Sha256Mismatch {
                    path: path.to_path_buf(),
                    actual,
                    expected: expected.to_string(),
                });
            }
        }
        return Ok(ModelSource::Plain(path.to_path_buf()));
    }
    let unsealed = unseal(path, keys, Content::Model, sha256)?;
    Ok(ModelSource::Decrypted {
        fd: unsealed.fd,
        load_path: unsealed.load_path,
        model: unsealed.summary,
    })
}

/// An encrypted container's plaintext, authenticated, in a sealed memfd.
#[derive(Debug)]
pub struct Unsealed {
    pub fd: OwnedFd,
    /// `/proc/self/fd/N`: where this process opens the plaintext.
    pub load_path: PathBuf,
    pub summary: ModelSummary,
}

/// Unseals the container `path`, which must hold `want`, with this device's key: its header
/// checked against `sha256` (when given) and its MAC, every segment authenticated as it is
/// decrypted into a sealed memfd.
pub fn unseal(
    path: &Path,
    keys: &KeyConfig,
    want: Content,
    sha256: Option<&str>,
) -> Result<Unsealed, VaultError> {
    let mut file = std::fs::File::open(path).map_err(io_error(path))?;
    let header = container::read_header(&mut file, path)?;
    if header.body.model.content != want {
        return Err(VaultError::Format(format!(
            "{} holds {}, not {}",
            path.display(),
            header.body.model.content.noun(),
            want.noun()
        )));
    }
    if let Some(expected) = sha256
        && !header.body.model.sha256.eq_ignore_ascii_case(expected)
    {
        return Err(VaultError::Sha256Mismatch {
            path: path.to_path_buf(),
            actual: header.body.model.sha256.clone(),
            expected: expected.to_string(),
        });
    }
    let data_key = {
        let device = keystore::unlock(keys)?;
        header.unlock(&device)?
    };
    let fd = container::decrypt_to_memfd(&file, path, &header, &data_key)?;
    Ok(Unsealed {
        load_path: PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
        fd,
        summary: header.body.model,
    })
}

#[cfg(test)]
mod tests;
