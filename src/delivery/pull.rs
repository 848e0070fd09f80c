//! `edgellm model pull REF`: verify the signed manifest first, then build the model file from
//! what is already on the device and what the registry sends, checking every chunk's digest
//! before its bytes are written, and put the file in place only when every chunk is there.
//!
//! The file is built in `.<name>-<sha12>.partial` beside the models. A chunk comes from, in this
//! order: that partial file (a pull killed or cut by a power loss left it there; its chunks are
//! read back and kept only when their digest matches, so the partial file is its own journal
//! and nothing unverified survives into the model), another pulled model on the device that
//! holds the same chunk (read back and checked as well), or the registry. Chunks fetched from the
//! registry are read with `Range` requests on the packs that hold them, neighbouring chunks in
//! one request, several requests at once.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;
use serde::Serialize;

use super::durable::sync_dir;
use super::manifest::{self, Body};
use super::registry::{Reference, Registry};
use super::{DeliveryError, digest_of, io_error};

/// Range requests in flight at once: enough to hide each request's round trip (a registry far
/// away needs more than one) and to keep every core busy receiving and hashing.
const PARALLEL_FETCHES: usize = 4;
/// The most bytes one range request asks for: a whole pack (`push` writes packs of about
/// 32 MiB). A registry spends about 5 ms of CPU on each request whatever its size (Debian's
/// distribution 2.8 on loopback), so a fresh pull asks once per pack; what a killed pull
/// leaves half-received is at most one chunk per request in flight, whatever the range.
const MAX_RANGE: u64 = 64 << 20;

pub struct PullOptions<'a> {
    pub trusted: &'a [VerifyingKey],
    /// Directory the model file is written to (`$EDGELLM_HOME/models`).
    pub models: PathBuf,
    /// Bytes per second, `None` for no cap.
    pub rate_limit: Option<u64>,
    /// This device's RAM in bytes: a model whose signed memory figures exceed it at every
    /// context is refused before anything is downloaded. `None` skips the check.
    pub ram_total: Option<u64>,
    /// Called as chunks arrive with the progress so far.
    pub progress: &'a mut (dyn FnMut(&Progress) + Send),
    /// Where the bytes fetched are counted (the ledger's download rows) and the daily cap.
    pub budget: Option<DownloadBudget<'a>>,
    /// Sent when the registry asks for them.
    pub credentials: Option<super::auth::Credentials>,
}

pub struct DownloadBudget<'a> {
    pub ledger: &'a crate::ledger::Ledger,
    pub daily_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    pub chunks: usize,
    pub chunks_done: usize,
    pub fetched_chunks: usize,
    pub fetched_bytes: u64,
    /// Chunks found on the device: in an interrupted pull's partial file or in another model.
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

/// The signed manifest tagged `tag`, verified against `trusted` at `now` (unix seconds);
/// `None` when the registry has no such tag. Nothing of it is read before its signature is
/// checked.
pub async fn signed_body(
    registry: &Registry,
    tag: &str,
    trusted: &[VerifyingKey],
    now: u64,
) -> Result<Option<Body>, DeliveryError> {
    let Some(oci) = registry.get_manifest(tag).await? else {
        return Ok(None);
    };
    let reference = registry.reference();
    if oci.config.media_type != manifest::CONFIG_MEDIA_TYPE {
        return Err(DeliveryError::Manifest(format!(
            "{}/{}:{tag} is not an edgellm model (config media type {})",
            reference.host, reference.name, oci.config.media_type
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
    manifest::verify(&envelope, trusted, now).map(Some)
}

pub async fn pull(reference: Reference, options: PullOptions<'_>) -> Result<Pulled, DeliveryError> {
    let registry = Registry::new(reference)?.with_credentials(options.credentials.clone());
    let tag = registry.reference().tag.clone();
    let body = signed_body(&registry, &tag, options.trusted, super::push::unix_now())
        .await?
        .ok_or_else(|| DeliveryError::Registry {
            url: registry.reference().to_string(),
            reason: "no such tag".into(),
        })?;

    if let Some(ram) = options.ram_total {
        fits(&body.gguf.memory, ram)?;
    }
    let models = options.models.clone();
    std::fs::create_dir_all(&models).map_err(io_error(&models))?;
    let name = body.name.strip_suffix(".enc").unwrap_or(&body.name);
    let stem = name.strip_suffix(".gguf").unwrap_or(name);
    let extension = if body.encrypted { "gguf.enc" } else { "gguf" };
    let path = models.join(format!("{stem}-{}.{extension}", &body.sha256[..12]));
    let partial = models.join(format!(".{stem}-{}.partial", &body.sha256[..12]));
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == body.size)
        && super::slots::read_record(&path).is_some_and(|r| r.body == body)
    {
        // Pulled before (`edgellm model verify` checks the file's bytes).
        let mut progress = Progress::none_yet(&body);
        progress.chunks_done = body.chunks.len();
        progress.reused_chunks = body.chunks.len();
        progress.reused_bytes = body.size;
        (options.progress)(&progress);
        return Ok(Pulled::new(registry.reference(), path, &body, progress));
    }
    let body = Arc::new(body);

    // What the device already holds; the rest is fetched.
    let (file, missing, mut progress) = {
        let (body, path, partial, models) =
            (body.clone(), path.clone(), partial.clone(), models.clone());
        tokio::task::spawn_blocking(move || gather(&body, &path, &partial, &models))
            .await
            .map_err(|e| DeliveryError::Model(e.to_string()))??
    };
    (options.progress)(&progress);

    // Admitted by the download budget before the first chunk is asked for.
    let ranges = ranges(&body, &missing);
    let needed: u64 = ranges.iter().map(|r| r.end - r.start).sum();
    let grant = match &options.budget {
        Some(budget) if needed > 0 => Some(
            budget
                .ledger
                .reserve_download(
                    &body.sha256,
                    needed,
                    budget.daily_bytes,
                    jiff::Timestamp::now(),
                )
                .map_err(DeliveryError::Ledger)?,
        ),
        _ => None,
    };
    let count = |fetched: u64, done: bool| {
        if let (Some(budget), Some(grant)) = (&options.budget, grant)
            && let Err(error) = budget.ledger.download_fetched(grant, fetched, done)
        {
            // The row still counts what was reserved, which is never less.
            tracing::warn!(%error, "cannot record the bytes fetched");
        }
    };

    // Bytes received so far are counted as they arrive: the ledger and the progress report
    // learn them every `COUNT_EVERY` bytes, so that a killed pull's row is short by less than
    // that.
    let fetch = Arc::new(Fetch {
        registry,
        body: body.clone(),
        file,
        partial,
        pacer: std::sync::Mutex::new(Pacer::new(options.rate_limit)),
        received: Received::default(),
    });
    let mut report = |progress: &mut Progress, done: bool| {
        progress.fetched_bytes = fetch.received.bytes.load(Ordering::Relaxed);
        count(progress.fetched_bytes, done);
        if !done {
            (options.progress)(progress);
        }
    };
    // Each range is a task of its own, so that on a multi-threaded runtime one range's digests
    // are computed while another's bytes arrive (hashing is a third of a pull's CPU). Dropping
    // the set (on the first failure) aborts the ranges still in flight.
    let mut ranges = ranges.into_iter();
    let mut running = tokio::task::JoinSet::new();
    let fetched = loop {
        while running.len() < PARALLEL_FETCHES {
            let Some(range) = ranges.next() else { break };
            let fetch = fetch.clone();
            running.spawn(async move {
                fetch.range(&range).await?;
                Ok::<_, DeliveryError>(range)
            });
        }
        let finished = tokio::select! {
            finished = running.join_next() => finished,
            () = fetch.received.crossed.notified() => {
                report(&mut progress, false);
                continue;
            }
        };
        let range = match finished {
            None => break Ok(()),
            Some(Ok(Ok(range))) => range,
            Some(Ok(Err(error))) => break Err(error),
            Some(Err(error)) => break Err(DeliveryError::Model(error.to_string())),
        };
        progress.fetched_chunks += range.chunks.len();
        progress.chunks_done += range.chunks.iter().map(|c| c.places.len()).sum::<usize>();
        report(&mut progress, false);
    };
    drop(running);
    report(&mut progress, true);
    fetched?;

    let record = super::slots::Record {
        reference: fetch.registry.reference().to_string(),
        body: (*body).clone(),
    };
    let (final_path, encrypted) = (path.clone(), body.encrypted);
    let finishing = fetch.clone();
    tokio::task::spawn_blocking(move || {
        finish(
            &finishing.file,
            &finishing.partial,
            &final_path,
            &models,
            encrypted,
        )?;
        super::slots::write_record(&final_path, &record)
    })
    .await
    .map_err(|e| DeliveryError::Model(e.to_string()))??;
    Ok(Pulled::new(
        fetch.registry.reference(),
        path,
        &body,
        progress,
    ))
}

impl Progress {
    fn none_yet(body: &Body) -> Progress {
        Progress {
            chunks: body.chunks.len(),
            chunks_done: 0,
            fetched_chunks: 0,
            fetched_bytes: 0,
            reused_chunks: 0,
            reused_bytes: 0,
            size: body.size,
        }
    }
}

impl Pulled {
    fn new(reference: &Reference, path: PathBuf, body: &Body, progress: Progress) -> Pulled {
        Pulled {
            reference: reference.to_string(),
            path,
            sha256: body.sha256.clone(),
            architecture: body.gguf.architecture.clone(),
            parameters: body.gguf.parameters,
            progress,
        }
    }
}

/// Refuses a model that needs more than `ram` bytes at the smallest context its manifest gives.
fn fits(memory: &[manifest::MemoryAtContext], ram: u64) -> Result<(), DeliveryError> {
    let Some(least) = memory.iter().min_by_key(|m| m.bytes) else {
        return Ok(());
    };
    if least.bytes <= ram {
        return Ok(());
    }
    Err(DeliveryError::Model(format!(
        "the model needs {} MiB at {} tokens of context (its signed plan figures), more than this \
         device's {} MiB of RAM; nothing downloaded (--ignore-memory to pull it anyway)",
        least.bytes >> 20,
        least.context,
        ram >> 20
    )))
}

/// A chunk the registry must send: where it lies in its pack and every place in the file it
/// goes (a file can repeat a chunk).
#[derive(Debug, Clone)]
struct Missing {
    digest: String,
    pack: u32,
    offset: u64,
    size: u64,
    places: Vec<u64>,
}

/// One range request: neighbouring missing chunks of one pack.
#[derive(Debug)]
struct Range {
    pack: u32,
    start: u64,
    end: u64,
    chunks: Vec<Missing>,
}

/// Opens (or creates) the partial file and fills it from what the device holds: the chunks a
/// killed pull left in it, then chunks of other pulled models. Returns the chunks still missing.
fn gather(
    body: &Body,
    path: &Path,
    partial: &Path,
    models: &Path,
) -> Result<(std::fs::File, Vec<Missing>, Progress), DeliveryError> {
    let mut progress = Progress::none_yet(body);
    let resumed = std::fs::metadata(partial).is_ok_and(|m| m.len() == body.size);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(partial)
        .map_err(io_error(partial))?;
    // One pull of a model at a time (`gc` leaves a locked partial file alone, and the download
    // budget closes a killed pull's row only when no other pull of the model runs).
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(DeliveryError::Model(format!(
                "another pull of this model is running ({} is locked)",
                partial.display()
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io_error(partial)(e)),
    }
    file.set_len(body.size).map_err(io_error(partial))?;

    // Chunks of the other pulled models, by digest: (file, offset, size).
    let mut local: HashMap<&str, (PathBuf, u64)> = HashMap::new();
    let records: Vec<(PathBuf, super::slots::Record)> = super::slots::pulled(models)
        .into_iter()
        .filter(|p| p != path)
        .filter_map(|p| super::slots::read_record(&p).map(|r| (p, r)))
        .collect();
    for (model, record) in &records {
        let mut at = 0;
        for chunk in &record.body.chunks {
            local
                .entry(chunk.digest.as_str())
                .or_insert((model.clone(), at));
            at += chunk.size;
        }
    }

    let mut missing: Vec<Missing> = Vec::new();
    let mut wanted: HashMap<&str, usize> = HashMap::new();
    let mut at = 0;
    let mut buffer = Vec::new();
    let mut sources: HashMap<PathBuf, std::fs::File> = HashMap::new();
    for chunk in &body.chunks {
        let place = at;
        at += chunk.size;
        buffer.resize(chunk.size as usize, 0);
        if resumed
            && file.read_exact_at(&mut buffer, place).is_ok()
            && digest_of(&buffer) == chunk.digest
        {
            progress.reused_chunks += 1;
            progress.reused_bytes += chunk.size;
            progress.chunks_done += 1;
            continue;
        }
        if let Some(&i) = wanted.get(chunk.digest.as_str()) {
            missing[i].places.push(place);
            continue;
        }
        let copied = local
            .get(chunk.digest.as_str())
            .is_some_and(|(source, from)| {
                if !sources.contains_key(source) {
                    match std::fs::File::open(source) {
                        Ok(f) => sources.insert(source.clone(), f),
                        Err(_) => return false,
                    };
                }
                let source = &sources[source];
                // A damaged model on the device is not a source: its chunk is fetched instead.
                source.read_exact_at(&mut buffer, *from).is_ok()
                    && digest_of(&buffer) == chunk.digest
                    && file.write_all_at(&buffer, place).is_ok()
            });
        if copied {
            progress.reused_chunks += 1;
            progress.reused_bytes += chunk.size;
            progress.chunks_done += 1;
            continue;
        }
        wanted.insert(&chunk.digest, missing.len());
        missing.push(Missing {
            digest: chunk.digest.clone(),
            pack: chunk.pack,
            offset: chunk.offset,
            size: chunk.size,
            places: vec![place],
        });
    }
    Ok((file, missing, progress))
}

/// Groups the missing chunks into range requests: chunks that follow each other in a pack, up
/// to `MAX_RANGE` bytes (a larger chunk is a request of its own).
fn ranges(body: &Body, missing: &[Missing]) -> Vec<Range> {
    let mut sorted: Vec<&Missing> = missing.iter().collect();
    sorted.sort_by_key(|m| (m.pack, m.offset));
    let mut out: Vec<Range> = Vec::new();
    for m in sorted {
        let end = m.offset + m.size;
        match out.last_mut() {
            Some(r) if r.pack == m.pack && r.end == m.offset && end - r.start <= MAX_RANGE => {
                r.end = end;
                r.chunks.push(m.clone());
            }
            _ => out.push(Range {
                pack: m.pack,
                start: m.offset,
                end,
                chunks: vec![m.clone()],
            }),
        }
    }
    debug_assert!(out.iter().all(|r| (r.pack as usize) < body.packs.len()));
    out
}

/// What the range tasks of one pull share.
struct Fetch {
    registry: Registry,
    body: Arc<Body>,
    file: std::fs::File,
    partial: PathBuf,
    pacer: std::sync::Mutex<Pacer>,
    received: Received,
}

/// Bytes received by a pull's ranges, and a signal each time they pass a multiple of
/// `COUNT_EVERY`.
#[derive(Default)]
struct Received {
    bytes: AtomicU64,
    crossed: tokio::sync::Notify,
}

impl Received {
    const COUNT_EVERY: u64 = 8 << 20;

    fn add(&self, n: u64) {
        let before = self.bytes.fetch_add(n, Ordering::Relaxed);
        if before / Self::COUNT_EVERY != (before + n) / Self::COUNT_EVERY {
            self.crossed.notify_one();
        }
    }
}

impl Fetch {
    /// Receives one range, checks each chunk's digest as soon as its last byte is in, and
    /// writes it to its places in the partial file. A chunk whose digest differs is refused
    /// before any of its bytes are written.
    async fn range(&self, range: &Range) -> Result<(), DeliveryError> {
        let Fetch {
            registry,
            body,
            file,
            partial,
            pacer,
            received,
        } = self;
        let pack = &body.packs[range.pack as usize].digest;
        let mut stream = registry
            .get_blob_range(pack, range.start, range.end)
            .await?;
        let mut chunks = range.chunks.iter();
        let mut current = chunks.next();
        let mut buffer: Vec<u8> = Vec::with_capacity(current.map_or(0, |c| c.size as usize));
        let mut writeback = Writeback::default();
        while let Some(mut piece) = stream.next().await? {
            received.add(piece.len() as u64);
            let wait = pacer.lock().ok().and_then(|mut p| p.took(piece.len()));
            if let Some(wait) = wait {
                tokio::time::sleep(wait).await;
            }
            while !piece.is_empty() {
                let Some(chunk) = current else {
                    break;
                };
                let take = (chunk.size as usize - buffer.len()).min(piece.len());
                buffer.extend_from_slice(&piece.split_to(take));
                if buffer.len() as u64 == chunk.size {
                    let actual = digest_of(&buffer);
                    if actual != chunk.digest {
                        return Err(DeliveryError::Chunk {
                            digest: chunk.digest.clone(),
                            reason: format!(
                                "the registry sent bytes whose digest is {actual} (pack {pack} \
                                 at offset {}); nothing written",
                                chunk.offset
                            ),
                        });
                    }
                    for &place in &chunk.places {
                        file.write_all_at(&buffer, place)
                            .map_err(io_error(partial))?;
                        if let Some(span) = writeback.wrote(place, chunk.size) {
                            start_writeback(file, span);
                        }
                    }
                    buffer.clear();
                    current = chunks.next();
                }
            }
        }
        if let Some(span) = writeback.take() {
            start_writeback(file, span);
        }
        Ok(())
    }
}

/// Starts the disk writing what a pull wrote without waiting for it, a few MiB at a time, so
/// that the disk works while the bytes arrive and the final fsync finds little left to do (it
/// took a third of a pull's time when it found all of it).
#[derive(Default)]
struct Writeback {
    low: u64,
    high: u64,
}

impl Writeback {
    const STEP: u64 = 4 << 20;

    /// `size` bytes were written at `place`: returns the span to start writing now, if any
    /// (a span reaches `STEP` bytes, or a write does not follow the last one).
    fn wrote(&mut self, place: u64, size: u64) -> Option<(u64, u64)> {
        let mut ready = None;
        if self.low == self.high {
            (self.low, self.high) = (place, place + size);
        } else if place == self.high {
            self.high += size;
        } else {
            ready = self.take();
            (self.low, self.high) = (place, place + size);
        }
        if self.high - self.low >= Self::STEP {
            // A write that broke the span and is itself a whole step: both are ready. The
            // earlier span is started first, this one at the next write or at the end.
            return ready.or_else(|| self.take());
        }
        ready
    }

    /// The span written and not yet started, if any.
    fn take(&mut self) -> Option<(u64, u64)> {
        let span = (self.low < self.high).then_some((self.low, self.high));
        self.low = self.high;
        span
    }
}

/// Asks the kernel to start writing `span` of `file` to disk, without waiting.
fn start_writeback(file: &std::fs::File, (low, high): (u64, u64)) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range only reads its arguments; the descriptor is open for as long as
    // `file` is borrowed. A failure only means the final fsync does the work.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            low as libc::off64_t,
            (high - low) as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Every chunk is in the partial file and was checked: make it durable, check that the engine
/// can read its header, and rename it into place as `<stem>-<first 12 of sha256>.gguf` (each
/// release has a file of its own, so a pull never touches the active or previous model).
fn finish(
    file: &std::fs::File,
    partial: &Path,
    path: &Path,
    models: &Path,
    encrypted: bool,
) -> Result<(), DeliveryError> {
    // The header is read (from the page cache) while the disk takes the bytes.
    let (synced, readable) = std::thread::scope(|scope| {
        let synced = scope.spawn(|| file.sync_all());
        let readable = readable_header(partial, encrypted);
        (synced.join(), readable)
    });
    let synced = synced.unwrap_or_else(|_| Err(std::io::Error::other("fsync thread panicked")));
    if let Err(e) = readable {
        let _ = std::fs::remove_file(partial);
        return Err(DeliveryError::Model(e));
    }
    synced.map_err(io_error(partial))?;
    std::fs::rename(partial, path).map_err(io_error(path))?;
    sync_dir(models)
}

/// Whether the engine can read the assembled file's header: a GGUF's, or an encrypted model
/// container's (its segments open only with a device key, at load).
fn readable_header(partial: &Path, encrypted: bool) -> Result<(), String> {
    let readable = if encrypted {
        // Its segments open only with a device key, at load; here its header must read.
        std::fs::File::open(partial)
            .map_err(|e| e.to_string())
            .and_then(|mut f| {
                crate::vault::container::read_header(&mut f, partial)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
    } else {
        crate::plan::gguf::read_header(partial)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    readable.map_err(|e| {
        let what = if encrypted {
            "an encrypted model container"
        } else {
            "a GGUF the engine can load"
        };
        format!("not {what}: {e}")
    })
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
    fn writeback_starts_every_step_and_where_the_writes_jump() {
        const MIB: u64 = 1 << 20;
        let mut w = Writeback::default();
        let mut started = Vec::new();
        // Chunks of 1 MiB in file order: a span every 4 MiB.
        for i in 0..9 {
            started.extend(w.wrote(i * MIB, MIB));
        }
        assert_eq!(started, [(0, 4 * MIB), (4 * MIB, 8 * MIB)]);
        // A jump (a chunk with a second place elsewhere) starts what came before it.
        assert_eq!(w.wrote(100 * MIB, MIB), Some((8 * MIB, 9 * MIB)));
        // A jump to a write that is a whole step itself: the earlier span first, then it.
        assert_eq!(w.wrote(200 * MIB, 5 * MIB), Some((100 * MIB, 101 * MIB)));
        assert_eq!(w.wrote(205 * MIB, MIB), Some((200 * MIB, 206 * MIB)));
        // The rest at the end, once.
        assert_eq!(w.wrote(206 * MIB, 100), None);
        assert_eq!(w.take(), Some((206 * MIB, 206 * MIB + 100)));
        assert_eq!(w.take(), None);
    }

    #[test]
    fn received_bytes_signal_each_count_step_they_pass() {
        use futures::FutureExt;
        let received = Received::default();
        received.add(Received::COUNT_EVERY - 1);
        assert!(received.crossed.notified().now_or_never().is_none());
        received.add(1);
        assert!(received.crossed.notified().now_or_never().is_some());
        // Several steps passed before anyone looked: one signal, the count is whole.
        received.add(3 * Received::COUNT_EVERY);
        assert!(received.crossed.notified().now_or_never().is_some());
        assert!(received.crossed.notified().now_or_never().is_none());
        assert_eq!(
            received.bytes.load(Ordering::Relaxed),
            4 * Received::COUNT_EVERY
        );
    }

    #[test]
    fn the_pacer_waits_out_what_the_cap_allows() {
        assert_eq!(Pacer::new(None).took(1 << 30), None);
        let mut pacer = Pacer::new(Some(1_000_000));
        let wait = pacer.took(2_000_000).unwrap();
        assert!(wait > Duration::from_millis(1900) && wait <= Duration::from_secs(2));
    }

    #[test]
    fn a_model_larger_than_the_device_is_refused_before_download() {
        let at = |context, bytes| manifest::MemoryAtContext { context, bytes };
        let figures = [at(8192, 900 << 20), at(2048, 500 << 20)];
        assert!(fits(&figures, 512 << 20).is_ok());
        assert!(fits(&[], 1).is_ok());
        let error = fits(&figures, 256 << 20).unwrap_err().to_string();
        assert!(
            error.contains("500 MiB at 2048 tokens") && error.contains("256 MiB of RAM"),
            "{error}"
        );
    }

    #[test]
    fn neighbouring_missing_chunks_share_a_request_up_to_the_range_limit() {
        let m = |pack, offset, size| Missing {
            digest: String::new(),
            pack,
            offset,
            size,
            places: vec![0],
        };
        let body = Body {
            packs: vec![
                manifest::PackEntry {
                    digest: String::new(),
                    size: 3 * MAX_RANGE,
                };
                2
            ],
            ..manifest::tests::body()
        };
        let half = MAX_RANGE / 2;
        // Out of order; a gap in pack 0; pack 1; three halves that overflow one request.
        let missing = [
            m(0, half, half),
            m(0, 0, half),
            m(0, 2 * MAX_RANGE, 10),
            m(1, 0, half),
            m(0, MAX_RANGE, half),
        ];
        let got: Vec<(u32, u64, u64, usize)> = ranges(&body, &missing)
            .iter()
            .map(|r| (r.pack, r.start, r.end, r.chunks.len()))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 0, MAX_RANGE, 2),
                (0, MAX_RANGE, MAX_RANGE + half, 1),
                (0, 2 * MAX_RANGE, 2 * MAX_RANGE + 10, 1),
                (1, 0, half, 1),
            ]
        );
    }
}
