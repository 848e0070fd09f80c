//! Fleet model delivery over an OCI registry: `edgellm model push` cuts a GGUF into chunks (at
//! tensor boundaries, content-defined inside large tensors), uploads the chunks the registry
//! does not hold yet in packs (blobs of consecutive chunks) and signs a manifest of them;
//! `edgellm model pull` checks that signature against the device's trusted keys before it
//! downloads anything, takes every chunk it can from models already on the device, fetches the
//! others with range requests on the packs, checks each chunk's digest before writing it, and
//! puts the file in place only when it is whole.
//!
//! - `chunk.rs`: where a GGUF is cut (pure over the header, streaming over the file)
//! - `manifest.rs`: the signed manifest, signing keys and trusted keys
//! - `registry.rs`: the OCI distribution API over HTTP (references, blobs, manifests)
//! - `auth.rs`: registry credentials (Docker config.json) and Basic / bearer-token challenges
//! - `slots.rs`: the active and previous model, the boot counter
//! - `gate.rs`: the health gate a model passes before it becomes active
//! - `policy.rs`: `[delivery]` (the links a pull may use, the daily download budget) and the
//!   audit rows of every step
//! - `durable.rs`: small files written so that a power cut leaves the old or the new one
//! - `push.rs`, `pull.rs`: the two commands

pub mod auth;
pub mod chunk;
pub mod durable;
pub mod gate;
pub mod manifest;
pub mod policy;
pub mod pull;
pub mod push;
pub mod registry;
pub mod slots;

/// Why a push or a pull stopped. Each names what is wrong in one line.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("{0}")]
    Reference(String),
    #[error("registry {url}: {reason}")]
    Registry { url: String, reason: String },
    #[error("manifest refused: {0}")]
    Manifest(String),
    #[error("key: {0}")]
    Key(String),
    #[error("chunk {digest}: {reason}")]
    Chunk { digest: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Model(String),
    /// The download budget refused the pull, or its rows could not be written.
    #[error("{0}; nothing downloaded")]
    Ledger(crate::ledger::LedgerError),
}

impl DeliveryError {
    /// A short class for the audit log's outcome (`error:<class>` or `blocked:<class>`).
    pub fn class(&self) -> &'static str {
        match self {
            DeliveryError::Reference(_) => "reference",
            DeliveryError::Registry { .. } => "registry",
            DeliveryError::Manifest(_) => "manifest",
            DeliveryError::Key(_) => "key",
            DeliveryError::Chunk { .. } => "chunk",
            DeliveryError::Io { .. } => "io",
            DeliveryError::Model(_) => "model",
            DeliveryError::Ledger(crate::ledger::LedgerError::DownloadBudget { .. }) => {
                "download_budget"
            }
            DeliveryError::Ledger(_) => "ledger",
        }
    }
}

pub(crate) fn io_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> DeliveryError {
    let path = path.to_path_buf();
    move |source| DeliveryError::Io { path, source }
}

/// `sha256:` and the lowercase hex digest of `bytes`, as OCI names blobs.
pub fn digest_of(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Whether `digest` is a well-formed `sha256:` digest (digests end up in URLs and file names).
pub fn is_sha256_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}
