//! The pack file: building it (walk, chunk, embed, write), opening it (checked, read-only) and
//! searching it (BM25 over FTS5, a scan of the int8 vectors, reciprocal rank fusion).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use rusqlite::{Connection, OpenFlags, params};

use super::chunk::{self, Format};
use crate::engine::embed::{EmbedInfo, Embedder};

/// `PRAGMA application_id` of a pack ("EDGP").
pub const APPLICATION_ID: i32 = 0x4544_4750;

/// Whether `path` is a SQLite file marked as a pack (its header's magic and application id,
/// read without opening it as a database).
pub fn is_pack_file(path: &Path) -> bool {
    let mut head = [0u8; 72];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .is_ok()
        && head.starts_with(b"SQLite format 3\0")
        && head[68..72] == APPLICATION_ID.to_be_bytes()
}

/// `PRAGMA user_version`: the pack schema this edgellm writes and reads.
pub const SCHEMA_VERSION: i32 = 1;
pub const DEFAULT_CHUNK_TOKENS: usize = 200;
/// Largest document read.
const MAX_FILE_BYTES: u64 = 16 << 20;
/// Most documents in one pack.
const MAX_FILES: usize = 100_000;
/// Candidates each ranking contributes to the fusion.
const CANDIDATES: usize = 50;
/// Reciprocal rank fusion's constant (Cormack et al. 2009).
const RRF_K: f64 = 60.0;
/// Chunks embedded per engine call.
const EMBED_BATCH: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("cannot open pack {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("{path} is not an edgellm knowledge pack")]
    NotAPack { path: PathBuf },
    #[error("{path} has pack schema version {found}; this edgellm reads version {SCHEMA_VERSION}")]
    Version { path: PathBuf, found: i32 },
    #[error(
        "pack {path} was embedded with {pack_model} ({pack_dims} dimensions), not with the loaded {model} ({dims}); rebuild it or load that model"
    )]
    WrongModel {
        path: PathBuf,
        pack_model: String,
        pack_dims: usize,
        model: String,
        dims: usize,
    },
    #[error("pack {path} is damaged: {reason}")]
    Damaged { path: PathBuf, reason: String },
    #[error("embedding failed: {0}")]
    Embed(String),
    #[error("{0}")]
    Build(String),
}

/// How hits are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Hybrid,
    Bm25,
    Vector,
}

#[derive(Debug, Clone)]
pub struct SearchOptions {
    pub top_k: usize,
    pub mode: Mode,
}

/// One passage found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Hit {
    pub chunk_id: i64,
    pub score: f64,
    pub path: String,
    pub heading: String,
    pub start: usize,
    pub end: usize,
    pub text: String,
}

/// What a build did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildReport {
    pub documents: usize,
    pub chunks: usize,
    pub tokens: usize,
    pub bytes: u64,
    pub seconds: f64,
    pub chunks_per_second: f64,
    pub skipped: Vec<String>,
}

/// An open pack: the database (read-only) and its vectors in memory.
pub struct Pack {
    path: PathBuf,
    conn: Mutex<Connection>,
    model: String,
    dims: usize,
    ids: Vec<i64>,
    vectors: Vec<i8>,
    scales: Vec<f32>,
}

impl std::fmt::Debug for Pack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pack")
            .field("path", &self.path)
            .field("model", &self.model)
            .field("chunks", &self.ids.len())
            .finish()
    }
}

/// int8 with one scale per vector (max-abs / 127).
pub fn quantize(v: &[f32]) -> (Vec<i8>, f32) {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if max == 0.0 {
        return (vec![0; v.len()], 0.0);
    }
    let scale = max / 127.0;
    let q = v
        .iter()
        .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (q, scale)
}

fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum()
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    crate::embeddings::Normalize::Euclidean.apply(&mut v);
    v
}

/// Embeds texts in batches (blocking: call off the async runtime).
fn embed_texts(embedder: &Embedder, texts: &[String]) -> Result<Vec<Vec<f32>>, PackError> {
    let max = embedder.info().max_input_tokens;
    let mut out = Vec::with_capacity(texts.len());
    for batch in texts.chunks(EMBED_BATCH) {
        let inputs: Vec<Vec<i32>> = batch
            .iter()
            .map(|t| {
                let mut tokens = embedder.tokenize(t);
                if tokens.len() > max {
                    // Keep the start and the closing special token.
                    let last = tokens[tokens.len() - 1];
                    tokens.truncate(max - 1);
                    tokens.push(last);
                }
                tokens
            })
            .collect();
        let vectors = embedder
            .embed(inputs)
            .map_err(|e| PackError::Embed(e.to_string()))?
            .blocking_recv()
            .map_err(|_| PackError::Embed("the embedding engine stopped".into()))?
            .map_err(|e| PackError::Embed(e.to_string()))?;
        out.extend(vectors.into_iter().map(unit));
    }
    Ok(out)
}

/// The text a chunk is embedded as: its heading path, then its text.
fn embedding_text(heading: &str, text: &str) -> String {
    if heading.is_empty() {
        text.to_string()
    } else {
        format!("{heading}\n{text}")
    }
}

fn documents(dir: &Path, skipped: &mut Vec<String>) -> Result<Vec<PathBuf>, PackError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let entries = std::fs::read_dir(&current)
            .map_err(|e| PackError::Build(format!("cannot read {}: {e}", current.display())))?;
        let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            // Symbolic links are not followed (no loops, nothing outside the directory).
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                if Format::of(&path).is_some() {
                    out.push(path);
                    if out.len() > MAX_FILES {
                        return Err(PackError::Build(format!(
                            "more than {MAX_FILES} documents under {}",
                            dir.display()
                        )));
                    }
                } else {
                    skipped.push(format!("{} (not Markdown, text or HTML)", path.display()));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Builds a pack from every Markdown, text and HTML file under `dir` (atomically: the pack
/// appears complete or not at all).
pub fn build(
    dir: &Path,
    output: &Path,
    embedder: &Embedder,
    chunk_tokens: usize,
) -> Result<BuildReport, PackError> {
    let started = Instant::now();
    let info = embedder.info();
    if chunk_tokens < 16 || chunk_tokens + 2 > info.max_input_tokens {
        return Err(PackError::Build(format!(
            "chunk size must be between 16 and {} tokens for {}",
            info.max_input_tokens - 2,
            info.id
        )));
    }
    let mut skipped = Vec::new();
    let files = documents(dir, &mut skipped)?;
    let partial = output.with_extension("pack.partial");
    let _ = std::fs::remove_file(&partial);
    let db_error = |e: rusqlite::Error| PackError::Build(format!("{}: {e}", partial.display()));
    let mut conn = Connection::open(&partial).map_err(db_error)?;
    conn.execute_batch(&format!(
        "PRAGMA application_id = {APPLICATION_ID};
         PRAGMA user_version = {SCHEMA_VERSION};
         PRAGMA journal_mode = OFF;
         PRAGMA synchronous = OFF;
         CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
         CREATE TABLE docs (id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE,
                            sha256 TEXT NOT NULL, bytes INTEGER NOT NULL);
         CREATE TABLE chunks (id INTEGER PRIMARY KEY, doc INTEGER NOT NULL REFERENCES docs(id),
                              heading TEXT NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL,
                              tokens INTEGER NOT NULL, text TEXT NOT NULL,
                              vector BLOB NOT NULL, scale REAL NOT NULL);
         CREATE VIRTUAL TABLE chunks_fts USING fts5(heading, text, content='chunks',
                              content_rowid='id', tokenize='porter unicode61 remove_diacritics 2');"
    ))
    .map_err(db_error)?;
    let count = |s: &str| embedder.tokenize(s).len().saturating_sub(2);
    let tx = conn.transaction().map_err(db_error)?;
    let (mut n_docs, mut n_chunks, mut n_tokens) = (0usize, 0usize, 0usize);
    for file in &files {
        let meta = std::fs::metadata(file)
            .map_err(|e| PackError::Build(format!("{}: {e}", file.display())))?;
        if meta.len() > MAX_FILE_BYTES {
            skipped.push(format!(
                "{} (larger than {MAX_FILE_BYTES} bytes)",
                file.display()
            ));
            continue;
        }
        let bytes = std::fs::read(file)
            .map_err(|e| PackError::Build(format!("{}: {e}", file.display())))?;
        let Ok(raw) = String::from_utf8(bytes.clone()) else {
            skipped.push(format!("{} (not UTF-8)", file.display()));
            continue;
        };
        let Some(format) = Format::of(file) else {
            continue;
        };
        let (text, format) = match format {
            Format::Html => (chunk::html_to_text(&raw), Format::Markdown),
            other => (raw, other),
        };
        let chunks = chunk::chunk(&text, format, chunk_tokens, &count);
        let relative = file
            .strip_prefix(dir)
            .unwrap_or(file)
            .to_string_lossy()
            .into_owned();
        let sha = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&bytes))
        };
        tx.execute(
            "INSERT INTO docs (path, sha256, bytes) VALUES (?1, ?2, ?3)",
            params![relative, sha, bytes.len() as i64],
        )
        .map_err(db_error)?;
        let doc = tx.last_insert_rowid();
        n_docs += 1;
        let texts: Vec<String> = chunks
            .iter()
            .map(|c| embedding_text(&c.heading, &c.text))
            .collect();
        let vectors = embed_texts(embedder, &texts)?;
        for (c, v) in chunks.iter().zip(vectors) {
            let (q, scale) = quantize(&v);
            let q: Vec<u8> = q.iter().map(|x| *x as u8).collect();
            let tokens = count(&c.text);
            tx.execute(
                "INSERT INTO chunks (doc, heading, start, end, tokens, text, vector, scale)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    doc,
                    c.heading,
                    c.start as i64,
                    c.end as i64,
                    tokens as i64,
                    c.text,
                    q,
                    f64::from(scale)
                ],
            )
            .map_err(db_error)?;
            let id = tx.last_insert_rowid();
            tx.execute(
                "INSERT INTO chunks_fts (rowid, heading, text) VALUES (?1, ?2, ?3)",
                params![id, c.heading, c.text],
            )
            .map_err(db_error)?;
            n_chunks += 1;
            n_tokens += tokens;
        }
    }
    let model_sha = crate::model::import::sha256_file(&info.path).unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for (key, value) in [
        ("schema_version", SCHEMA_VERSION.to_string()),
        ("embedding_model", info.id.clone()),
        ("embedding_dims", info.n_embd.to_string()),
        ("embedding_sha256", model_sha),
        ("chunk_tokens", chunk_tokens.to_string()),
        ("created_unix", now.to_string()),
    ] {
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)",
            params![key, value],
        )
        .map_err(db_error)?;
    }
    // The signature slot model delivery fills (empty: unsigned).
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('signature', NULL)",
        [],
    )
    .map_err(db_error)?;
    tx.commit().map_err(db_error)?;
    conn.execute_batch("INSERT INTO chunks_fts(chunks_fts) VALUES ('optimize'); VACUUM;")
        .map_err(db_error)?;
    drop(conn);
    let file = std::fs::File::open(&partial)
        .map_err(|e| PackError::Build(format!("{}: {e}", partial.display())))?;
    file.sync_all()
        .map_err(|e| PackError::Build(format!("{}: {e}", partial.display())))?;
    std::fs::rename(&partial, output)
        .map_err(|e| PackError::Build(format!("cannot move the pack into place: {e}")))?;
    let bytes = std::fs::metadata(output).map_or(0, |m| m.len());
    let seconds = started.elapsed().as_secs_f64();
    Ok(BuildReport {
        documents: n_docs,
        chunks: n_chunks,
        tokens: n_tokens,
        bytes,
        seconds,
        chunks_per_second: n_chunks as f64 / seconds.max(1e-9),
        skipped,
    })
}

impl Pack {
    /// Opens a pack read-only and loads its vectors; refuses files that are not packs, other
    /// schema versions and damaged rows. An encrypted pack (`edgellm pack encrypt`) is
    /// unsealed with this device's key into a sealed memfd and read from there into an
    /// in-memory database: its plaintext never reaches a filesystem.
    pub fn open(path: &Path, keys: &crate::vault::KeyConfig) -> Result<Pack, PackError> {
        let open_error = |reason: String| PackError::Open {
            path: path.to_path_buf(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| open_error(e.to_string()))?;
        if !meta.is_file() {
            return Err(open_error("not a regular file".into()));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = if crate::vault::is_container(path) {
            // SQLite resolves /proc/self/fd links to the memfd's name, so it cannot open the
            // plaintext there: it reads it into its own memory (an in-memory database).
            let unsealed = crate::vault::unseal(path, keys, crate::vault::Content::Pack, None)
                .map_err(|e| open_error(e.to_string()))?;
            let mut conn = Connection::open_in_memory().map_err(|e| open_error(e.to_string()))?;
            let size = unsealed.summary.size as usize;
            conn.deserialize_read_exact(
                rusqlite::MAIN_DB,
                std::fs::File::from(unsealed.fd),
                size,
                true,
            )
            .map_err(|e| open_error(e.to_string()))?;
            conn
        } else {
            Connection::open_with_flags(path, flags).map_err(|e| open_error(e.to_string()))?
        };
        // Sorts and temporary indexes stay in memory: a query never spills pack text to a
        // temporary file.
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(|e| open_error(e.to_string()))?;
        let not_a_pack = || PackError::NotAPack {
            path: path.to_path_buf(),
        };
        let app: i32 = conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(|_| not_a_pack())?;
        if app != APPLICATION_ID {
            return Err(not_a_pack());
        }
        let version: i32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|_| not_a_pack())?;
        if version != SCHEMA_VERSION {
            return Err(PackError::Version {
                path: path.to_path_buf(),
                found: version,
            });
        }
        let damaged = |reason: String| PackError::Damaged {
            path: path.to_path_buf(),
            reason,
        };
        let meta_value = |key: &str| -> Result<String, PackError> {
            conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
                r.get::<_, String>(0)
            })
            .map_err(|e| damaged(format!("meta {key}: {e}")))
        };
        let model = meta_value("embedding_model")?;
        let dims: usize = meta_value("embedding_dims")?
            .parse()
            .map_err(|_| damaged("embedding_dims is not a number".into()))?;
        if dims == 0 || dims > 65536 {
            return Err(damaged(format!("embedding_dims {dims}")));
        }
        let mut ids = Vec::new();
        let mut vectors = Vec::new();
        let mut scales = Vec::new();
        {
            let mut statement = conn
                .prepare("SELECT id, vector, scale FROM chunks ORDER BY id")
                .map_err(|e| damaged(e.to_string()))?;
            let mut rows = statement.query([]).map_err(|e| damaged(e.to_string()))?;
            while let Some(row) = rows.next().map_err(|e| damaged(e.to_string()))? {
                let id: i64 = row.get(0).map_err(|e| damaged(e.to_string()))?;
                let blob: Vec<u8> = row.get(1).map_err(|e| damaged(e.to_string()))?;
                let scale: f64 = row.get(2).map_err(|e| damaged(e.to_string()))?;
                if blob.len() != dims || !scale.is_finite() {
                    return Err(damaged(format!(
                        "chunk {id}: a vector of {} bytes, expected {dims}",
                        blob.len()
                    )));
                }
                ids.push(id);
                vectors.extend(blob.into_iter().map(|b| b as i8));
                scales.push(scale as f32);
            }
        }
        Ok(Pack {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            model,
            dims,
            ids,
            vectors,
            scales,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn chunks(&self) -> usize {
        self.ids.len()
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// The loaded embedding model must be the one the pack was built with.
    pub fn check_embedder(&self, info: &EmbedInfo) -> Result<(), PackError> {
        if info.id != self.model || info.n_embd != self.dims {
            return Err(PackError::WrongModel {
                path: self.path.clone(),
                pack_model: self.model.clone(),
                pack_dims: self.dims,
                model: info.id.clone(),
                dims: info.n_embd,
            });
        }
        Ok(())
    }

    /// Vector ranking: chunk indexes by int8 dot product with the (unit) query, best first.
    pub fn vector_ranking(&self, query: &[f32], n: usize) -> Vec<(i64, f64)> {
        let (q, q_scale) = quantize(query);
        let mut scored: Vec<(usize, i32)> = self
            .vectors
            .chunks_exact(self.dims)
            .enumerate()
            .map(|(i, v)| (i, dot_i8(&q, v)))
            .collect();
        let n = n.min(scored.len());
        if n == 0 {
            return Vec::new();
        }
        // Exact dot in float only for the order: scale per vector.
        let key = |(i, d): &(usize, i32)| f64::from(*d) * f64::from(self.scales[*i]);
        scored.select_nth_unstable_by(n - 1, |a, b| key(b).total_cmp(&key(a)));
        scored.truncate(n);
        scored.sort_by(|a, b| key(b).total_cmp(&key(a)));
        scored
            .into_iter()
            .map(|(i, d)| {
                (
                    self.ids[i],
                    f64::from(d) * f64::from(self.scales[i]) * f64::from(q_scale),
                )
            })
            .collect()
    }

    /// BM25 ranking over FTS5 (the question's words, any of them), best first.
    pub fn bm25_ranking(&self, question: &str, n: usize) -> Result<Vec<(i64, f64)>, PackError> {
        let Some(query) = fts_query(question) else {
            return Ok(Vec::new());
        };
        let conn = self
            .conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let damaged = |e: rusqlite::Error| PackError::Damaged {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        let mut statement = conn
            .prepare_cached(
                "SELECT rowid, bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH ?1
                 ORDER BY bm25(chunks_fts) LIMIT ?2",
            )
            .map_err(damaged)?;
        let rows = statement
            .query_map(params![query, n as i64], |r| {
                Ok((r.get::<_, i64>(0)?, -r.get::<_, f64>(1)?))
            })
            .map_err(damaged)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(damaged)
    }

    /// The best `top_k` passages for a question (blocking: call off the async runtime).
    pub fn search(
        &self,
        embedder: &Embedder,
        question: &str,
        options: &SearchOptions,
    ) -> Result<Vec<Hit>, PackError> {
        let top_k = options.top_k.clamp(1, 100);
        let n = CANDIDATES.max(top_k);
        let vector = if options.mode == Mode::Bm25 {
            Vec::new()
        } else {
            let query = embed_texts(embedder, &[question.to_string()])?;
            self.vector_ranking(&query[0], n)
        };
        let bm25 = if options.mode == Mode::Vector {
            Vec::new()
        } else {
            self.bm25_ranking(question, n)?
        };
        let ranked: Vec<(i64, f64)> = match options.mode {
            Mode::Vector => vector,
            Mode::Bm25 => bm25,
            Mode::Hybrid => fuse(&[&bm25, &vector]),
        };
        ranked
            .into_iter()
            .take(top_k)
            .map(|(id, score)| self.hit(id, score))
            .collect()
    }

    fn hit(&self, id: i64, score: f64) -> Result<Hit, PackError> {
        let conn = self
            .conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        conn.query_row(
            "SELECT d.path, c.heading, c.start, c.end, c.text FROM chunks c
             JOIN docs d ON d.id = c.doc WHERE c.id = ?1",
            [id],
            |r| {
                Ok(Hit {
                    chunk_id: id,
                    score,
                    path: r.get(0)?,
                    heading: r.get(1)?,
                    start: r.get::<_, i64>(2)?.max(0) as usize,
                    end: r.get::<_, i64>(3)?.max(0) as usize,
                    text: r.get(4)?,
                })
            },
        )
        .map_err(|e| PackError::Damaged {
            path: self.path.clone(),
            reason: format!("chunk {id}: {e}"),
        })
    }
}

/// One mode's figures over a question set.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModeReport {
    pub mode: Mode,
    pub recall_at_k: f64,
    pub mrr: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalReport {
    pub pack: PathBuf,
    pub chunks: usize,
    pub questions: usize,
    pub k: usize,
    pub modes: Vec<ModeReport>,
}

#[derive(serde::Deserialize)]
struct Labelled {
    question: String,
    gold: String,
}

/// Recall@k, MRR and query latency (embed the question + search + fuse + read the hits) of
/// each ranking mode over a labelled question set.
pub fn evaluate(
    pack: &Pack,
    embedder: &Embedder,
    questions: &Path,
    k: usize,
) -> Result<EvalReport, PackError> {
    let text = std::fs::read_to_string(questions)
        .map_err(|e| PackError::Build(format!("{}: {e}", questions.display())))?;
    let labelled: Vec<Labelled> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                PackError::Build(format!("{} line {}: {e}", questions.display(), i + 1))
            })
        })
        .collect::<Result<_, _>>()?;
    let mut modes = Vec::new();
    for mode in [Mode::Bm25, Mode::Vector, Mode::Hybrid] {
        let (mut found, mut rr) = (0usize, 0f64);
        let mut times = Vec::with_capacity(labelled.len());
        for q in &labelled {
            let started = Instant::now();
            let hits = pack.search(embedder, &q.question, &SearchOptions { top_k: k, mode })?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            if let Some(rank) = hits.iter().position(|h| h.path == q.gold) {
                found += 1;
                rr += 1.0 / (rank as f64 + 1.0);
            }
        }
        times.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            times
                .get(((times.len() as f64 * p).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or(0.0)
        };
        let n = labelled.len().max(1) as f64;
        modes.push(ModeReport {
            mode,
            recall_at_k: found as f64 / n,
            mrr: rr / n,
            p50_ms: pct(0.5),
            p95_ms: pct(0.95),
        });
    }
    Ok(EvalReport {
        pack: pack.path.clone(),
        chunks: pack.chunks(),
        questions: labelled.len(),
        k,
        modes,
    })
}

/// Reciprocal rank fusion: each ranking adds 1 / (k + rank) to a chunk's score.
pub fn fuse(rankings: &[&[(i64, f64)]]) -> Vec<(i64, f64)> {
    let mut scores: std::collections::HashMap<i64, f64> = std::collections::HashMap::new();
    for ranking in rankings {
        for (rank, (id, _)) in ranking.iter().enumerate() {
            *scores.entry(*id).or_default() += 1.0 / (RRF_K + rank as f64 + 1.0);
        }
    }
    let mut fused: Vec<(i64, f64)> = scores.into_iter().collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    fused
}

/// Lucene's default English stop words: too common to rank by.
const STOP_WORDS: [&str; 33] = [
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it",
    "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these",
    "they", "this", "to", "was", "will", "with",
];

/// The question as an FTS5 query: its words (letters and digits) but stop words, each quoted,
/// any of them. Nothing the user types is FTS5 syntax.
pub fn fts_query(question: &str) -> Option<String> {
    let mut terms: Vec<String> = Vec::new();
    for word in question.split(|c: char| !c.is_alphanumeric()) {
        let word = word.to_lowercase();
        if word.chars().count() < 2 || terms.contains(&word) || STOP_WORDS.contains(&word.as_str())
        {
            continue;
        }
        terms.push(word);
        if terms.len() == 32 {
            break;
        }
    }
    (!terms.is_empty()).then(|| {
        terms
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(" OR ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fts_query_is_only_quoted_words() {
        assert_eq!(
            fts_query("How do I reset the NEAR(gateway)? \"x\" OR *").as_deref(),
            Some("\"how\" OR \"do\" OR \"reset\" OR \"near\" OR \"gateway\"")
        );
        assert_eq!(fts_query("? * -"), None);
    }

    #[test]
    fn rrf_rewards_agreement() {
        let bm25 = [(1, 9.0), (2, 5.0), (3, 1.0)];
        let vector = [(3, 0.9), (1, 0.8), (4, 0.1)];
        let fused = fuse(&[&bm25, &vector]);
        assert_eq!(fused[0].0, 1, "first and second beats first and absent");
        assert_eq!(fused[1].0, 3);
        assert_eq!(fused.len(), 4);
    }

    #[test]
    fn quantization_keeps_the_order() {
        let a = [0.6f32, 0.8, 0.0];
        let b = [0.8f32, 0.6, 0.0];
        let c = [0.0f32, 0.0, 1.0];
        let (qa, sa) = quantize(&a);
        let (qb, sb) = quantize(&b);
        let (qc, sc) = quantize(&c);
        let ab = f64::from(dot_i8(&qa, &qb)) * f64::from(sa * sb);
        let ac = f64::from(dot_i8(&qa, &qc)) * f64::from(sa * sc);
        assert!((ab - 0.96).abs() < 0.02, "{ab}");
        assert!(ac.abs() < 1e-6);
        assert_eq!(quantize(&[0.0, 0.0]).1, 0.0);
    }
}
