//! The content-addressed chunk store, `$EDGELLM_HOME/chunks/sha256/<hex>`. A chunk is written
//! only after its digest was checked, to a temporary name, fsync'd, renamed and its directory
//! fsync'd: a chunk that exists is whole and correct, so the store is also the pull's journal
//! (after a kill or power cut a pull fetches only what is not there yet).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{DeliveryError, digest_of, io_error, is_sha256_digest};

#[derive(Clone)]
pub struct ChunkStore {
    dir: PathBuf,
}

impl ChunkStore {
    pub fn open(root: &Path) -> Result<ChunkStore, DeliveryError> {
        let dir = root.join("sha256");
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        Ok(ChunkStore { dir })
    }

    fn path(&self, digest: &str) -> Option<PathBuf> {
        is_sha256_digest(digest).then(|| self.dir.join(&digest["sha256:".len()..]))
    }

    /// Whether the store holds the chunk at its declared size.
    pub fn has(&self, digest: &str, size: u64) -> bool {
        self.path(digest)
            .and_then(|p| std::fs::metadata(p).ok())
            .is_some_and(|m| m.is_file() && m.len() == size)
    }

    /// Checks `bytes` against `digest`, then stores them durably.
    pub fn put(&self, digest: &str, bytes: &[u8]) -> Result<(), DeliveryError> {
        let path = self.path(digest).ok_or_else(|| DeliveryError::Chunk {
            digest: digest.to_string(),
            reason: "not a sha256 digest".into(),
        })?;
        let actual = digest_of(bytes);
        if actual != digest {
            return Err(DeliveryError::Chunk {
                digest: digest.to_string(),
                reason: format!(
                    "the registry sent bytes whose digest is {actual}; nothing written"
                ),
            });
        }
        write_durably(&path, bytes)
    }

    /// Drops a chunk (found damaged), so that the next pull fetches it again.
    pub fn remove(&self, digest: &str) {
        if let Some(path) = self.path(digest) {
            let _ = std::fs::remove_file(path);
        }
    }

    pub fn read(&self, digest: &str) -> Result<Vec<u8>, DeliveryError> {
        let path = self.path(digest).ok_or_else(|| DeliveryError::Chunk {
            digest: digest.to_string(),
            reason: "not a sha256 digest".into(),
        })?;
        std::fs::read(&path).map_err(io_error(&path))
    }
}

/// Writes `bytes` to a temporary name beside `path`, fsyncs, renames, fsyncs the directory: a
/// reader finds the old file or the whole new one, also after a power cut.
pub fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), DeliveryError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let temp = path.with_extension("partial");
    let mut file = std::fs::File::create(&temp).map_err(io_error(&temp))?;
    file.write_all(bytes).map_err(io_error(&temp))?;
    file.sync_all().map_err(io_error(&temp))?;
    std::fs::rename(&temp, path).map_err(io_error(path))?;
    sync_dir(dir)
}

pub fn sync_dir(dir: &Path) -> Result<(), DeliveryError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}
