//! `edgellm model pull REF`: verify the signed manifest first, fetch the chunks the store lacks
//! (each checked before it is written), assemble, check the whole file, and only then put it in
//! place.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;
use futures::StreamExt;
use serde::Serialize;
use sha2::Digest;

use super::manifest::{self, Body};
use super::registry::{Reference, Registry};
use super::store::{ChunkStore, sync_dir};
use super::{DeliveryError, digest_of, io_error};

/// Chunks fetched at once: enough to hide one request's round trip and one chunk's fsync behind
/// the others.
const PARALLEL_FETCHES: usize = 8;

pub struct PullOptions<'a> {
    pub trusted: &'a [VerifyingKey],
    /// Where chunks are kept (`$EDGELLM_HOME/chunks`).
    pub store: PathBuf,
    /// Directory the model file is written to (`$EDGELLM_HOME/models`).
    pub models: PathBuf,
    /// Bytes per second, `None` for no cap.
    pub rate_limit: Option<u64>,
    /// Called after each chunk with the progress so far.
    pub progress: &'a mut (dyn FnMut(&Progress) + Send),
}

#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    pub chunks: usize,
    pub chunks_done: usize,
    pub fetched_chunks: usize,
    pub fetched_bytes: u64,
    pub reused_chunks: usize,
    pub reused_bytes: u64,
    pub size: u64,
}

#[derive(Debug, Serialize)]
pub struct Pulled {
    pub reference: String,
    pub path: PathBuf,
    pub sha256: String,
    pub architecture: String,
    pub parameters: u64,
    pub progress: Progress,
}

pub async fn pull(reference: Reference, options: PullOptions<'_>) -> Result<Pulled, DeliveryError> {
    let registry = Registry::new(reference)?;
    let oci = registry.get_manifest().await?;
    if oci.config.media_type != manifest::CONFIG_MEDIA_TYPE {
        return Err(DeliveryError::Manifest(format!(
            "{} is not an edgellm model (config media type {})",
            registry.reference(),
            oci.config.media_type
        )));
    }
    let envelope = registry
        .get_blob(
            &oci.config.digest,
            super::registry::MAX_MANIFEST_BYTES * 4,
            &mut |_| None,
        )
        .await?;
    if digest_of(&envelope) != oci.config.digest {
        return Err(DeliveryError::Manifest(
            "the signed manifest's digest does not match".into(),
        ));
    }
    // Nothing of the manifest is used before its signature and expiry are checked.
    let body = manifest::verify(&envelope, options.trusted, super::push::unix_now())?;

    let store = ChunkStore::open(&options.store)?;
    let mut progress = Progress {
        chunks: body.chunks.len(),
        chunks_done: 0,
        fetched_chunks: 0,
        fetched_bytes: 0,
        reused_chunks: 0,
        reused_bytes: 0,
        size: body.size,
    };
    // Chunks this device lacks, each once (a file can repeat a chunk); everything else is reused.
    let mut missing: Vec<(String, u64)> = Vec::new();
    let mut wanted = std::collections::HashSet::new();
    for chunk in &body.chunks {
        if !store.has(&chunk.digest, chunk.size) && wanted.insert(chunk.digest.as_str()) {
            missing.push((chunk.digest.clone(), chunk.size));
        }
    }
    let missing_bytes: u64 = missing.iter().map(|(_, size)| size).sum();
    progress.reused_chunks = body.chunks.len() - missing.len();
    progress.reused_bytes = body.size - missing_bytes;
    progress.chunks_done = progress.reused_chunks;
    (options.progress)(&progress);

    let pacer = std::sync::Mutex::new(Pacer::new(options.rate_limit));
    let registry = &registry;
    let pacer = &pacer;
    let fetch_store = store.clone();
    let fetches = futures::stream::iter(missing.into_iter().map(|(digest, size)| {
        let store = fetch_store.clone();
        async move {
            let mut pace = |n| pacer.lock().ok().and_then(|mut p| p.took(n));
            let bytes = registry.get_blob(&digest, size as usize, &mut pace).await?;
            if bytes.len() as u64 != size {
                return Err(DeliveryError::Chunk {
                    digest,
                    reason: format!("{} bytes, the manifest says {size}", bytes.len()),
                });
            }
            tokio::task::spawn_blocking(move || store.put(&digest, &bytes))
                .await
                .map_err(|e| DeliveryError::Model(e.to_string()))??;
            Ok(size)
        }
    }))
    .buffer_unordered(PARALLEL_FETCHES);
    futures::pin_mut!(fetches);
    while let Some(done) = fetches.next().await {
        let size = done?;
        progress.fetched_chunks += 1;
        progress.fetched_bytes += size;
        progress.chunks_done += 1;
        (options.progress)(&progress);
    }

    let models = options.models.clone();
    let reference = registry.reference().to_string();
    let (path, body) = tokio::task::spawn_blocking(move || {
        let path = assemble(&store, &body, &models)?;
        let record = super::slots::Record { reference, body };
        super::slots::write_record(&path, &record)?;
        Ok::<_, DeliveryError>((path, record.body))
    })
    .await
    .map_err(|e| DeliveryError::Model(e.to_string()))??;
    Ok(Pulled {
        reference: registry.reference().to_string(),
        path,
        sha256: body.sha256,
        architecture: body.gguf.architecture,
        parameters: body.gguf.parameters,
        progress,
    })
}

/// Writes the chunks in order to a temporary file, checks its sha256 and GGUF header, then
/// renames it into place as `<stem>-<first 12 of sha256>.gguf`: each release has a file of its
/// own, so pulling a new release never touches the active or the previous model's file.
fn assemble(store: &ChunkStore, body: &Body, models: &Path) -> Result<PathBuf, DeliveryError> {
    std::fs::create_dir_all(models).map_err(io_error(models))?;
    let stem = body.name.strip_suffix(".gguf").unwrap_or(&body.name);
    let path = models.join(format!("{stem}-{}.gguf", &body.sha256[..12]));
    let temp = models.join(format!(".{}.partial", body.name));
    let mut file = std::fs::File::create(&temp).map_err(io_error(&temp))?;
    let mut hasher = sha2::Sha256::new();
    for chunk in &body.chunks {
        let bytes = store.read(&chunk.digest)?;
        if digest_of(&bytes) != chunk.digest {
            // The store was damaged on disk after the chunk was written; drop it so the next
            // pull fetches it again.
            store.remove(&chunk.digest);
            return Err(DeliveryError::Chunk {
                digest: chunk.digest.clone(),
                reason: "damaged in the chunk store; run the pull again".into(),
            });
        }
        hasher.update(&bytes);
        file.write_all(&bytes).map_err(io_error(&temp))?;
    }
    let sha256 = hex::encode(hasher.finalize());
    if sha256 != body.sha256 {
        let _ = std::fs::remove_file(&temp);
        return Err(DeliveryError::Model(format!(
            "assembled file has sha256 {sha256}, the manifest says {}",
            body.sha256
        )));
    }
    file.sync_all().map_err(io_error(&temp))?;
    drop(file);
    if let Err(e) = crate::plan::gguf::read_header(&temp) {
        let _ = std::fs::remove_file(&temp);
        return Err(DeliveryError::Model(format!(
            "not a GGUF the engine can load: {e}"
        )));
    }
    std::fs::rename(&temp, &path).map_err(io_error(&path))?;
    sync_dir(models)?;
    Ok(path)
}

/// The bandwidth cap: after each piece, how long to wait so that the bytes so far took at
/// least bytes / rate seconds.
struct Pacer {
    rate: Option<u64>,
    started: Instant,
    bytes: u64,
}

impl Pacer {
    fn new(rate: Option<u64>) -> Pacer {
        Pacer {
            rate,
            started: Instant::now(),
            bytes: 0,
        }
    }

    fn took(&mut self, n: usize) -> Option<Duration> {
        let rate = self.rate.filter(|r| *r > 0)?;
        self.bytes += n as u64;
        let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
        due.checked_sub(self.started.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_waits_out_what_the_cap_allows() {
        assert_eq!(Pacer::new(None).took(1 << 30), None);
        let mut pacer = Pacer::new(Some(1_000_000));
        let wait = pacer.took(2_000_000).unwrap();
        assert!(wait > Duration::from_millis(1900) && wait <= Duration::from_secs(2));
    }
}
