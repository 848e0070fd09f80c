//! Knowledge packs (the field guide's Pattern B, retrieval on the device): documents split into
//! chunks with provenance, embedded by the local embedding model, stored in one SQLite file with
//! an FTS5 index (BM25) and the vectors; queried by hybrid ranking (BM25 + vector, reciprocal
//! rank fusion). docs/knowledge-packs.md.
//!
//! The file: `PRAGMA application_id` marks it as a pack, `PRAGMA user_version` is its schema
//! version; `meta` holds the embedding model it was built with (id, dimensions, sha256) and a
//! signature slot for delivery; `docs`, `chunks` (text, heading, offsets, int8 vector with its
//! scale) and `chunks_fts`. A pack opens read-only, and one that is not a pack, has another
//! schema version, or was embedded by another model is refused naming what is wrong.

pub mod chunk;
pub mod store;

use std::path::PathBuf;

use clap::{Args, Subcommand};

pub use store::{Hit, Mode, Pack, PackError, SearchOptions};

#[derive(Debug, Args)]
pub struct PackArgs {
    #[command(subcommand)]
    pub command: PackCommand,
}

#[derive(Debug, Subcommand)]
pub enum PackCommand {
    /// Build a pack from a directory of Markdown, text and HTML files
    Build(BuildArgs),
    /// Print a pack's best passages for a question
    Query(QueryArgs),
    /// Retrieval quality and latency on a labelled question set (JSONL: question, gold path)
    Eval(EvalArgs),
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The pack file
    pub pack: PathBuf,
    /// JSON lines {"question": "...", "gold": "path of the document that answers it"}
    pub questions: PathBuf,
    /// Recall is counted at this many passages
    #[arg(short = 'k', long, default_value_t = 5)]
    pub top_k: usize,
    /// Embedding GGUF [default: the installed default embedding model]
    #[arg(long, env = "EDGELLM_EMBEDDING_MODEL")]
    pub embedding_model: Option<PathBuf>,
    /// Threads for embedding questions [default: number of cores]
    #[arg(short = 't', long)]
    pub threads: Option<u32>,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The document directory (read recursively)
    pub dir: PathBuf,
    /// The pack file to write
    #[arg(short, long)]
    pub output: PathBuf,
    /// Embedding GGUF [default: the installed default embedding model]
    #[arg(long, env = "EDGELLM_EMBEDDING_MODEL")]
    pub embedding_model: Option<PathBuf>,
    /// Most tokens per chunk
    #[arg(long, default_value_t = store::DEFAULT_CHUNK_TOKENS)]
    pub chunk_tokens: usize,
    /// Threads for embedding [default: number of cores]
    #[arg(short = 't', long)]
    pub threads: Option<u32>,
    /// Print what was built as one line of JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The pack file
    pub pack: PathBuf,
    /// The question
    pub question: String,
    /// How many passages
    #[arg(short = 'k', long, default_value_t = 5)]
    pub top_k: usize,
    /// Ranking: hybrid (BM25 + vector, reciprocal rank fusion), bm25, vector
    #[arg(long, value_enum, default_value_t = Mode::Hybrid)]
    pub mode: Mode,
    /// Embedding GGUF [default: the installed default embedding model]
    #[arg(long, env = "EDGELLM_EMBEDDING_MODEL")]
    pub embedding_model: Option<PathBuf>,
    /// Print the hits as JSON lines
    #[arg(long)]
    pub json: bool,
}

fn embedder(
    model: &Option<PathBuf>,
    threads: Option<u32>,
) -> anyhow::Result<crate::engine::embed::Embedder> {
    let path = model
        .clone()
        .unwrap_or_else(crate::paths::default_embedding_model);
    let mut config = crate::engine::embed::EmbedConfig::new(path);
    if let Some(t) = threads {
        config.n_threads = t;
    }
    Ok(crate::engine::embed::Embedder::start(config)?)
}

pub fn run(args: &PackArgs) -> anyhow::Result<()> {
    match &args.command {
        PackCommand::Build(build) => {
            let embedder = embedder(&build.embedding_model, build.threads)?;
            let report = store::build(&build.dir, &build.output, &embedder, build.chunk_tokens)?;
            if build.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "wrote {}: {} documents, {} chunks, {} bytes, {:.0} chunks/s",
                    build.output.display(),
                    report.documents,
                    report.chunks,
                    report.bytes,
                    report.chunks_per_second
                );
                for skipped in &report.skipped {
                    println!("skipped {skipped}");
                }
            }
            Ok(())
        }
        PackCommand::Eval(eval) => {
            let pack = Pack::open(&eval.pack)?;
            let embedder = embedder(&eval.embedding_model, eval.threads)?;
            pack.check_embedder(embedder.info())?;
            let report = store::evaluate(&pack, &embedder, &eval.questions, eval.top_k)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        PackCommand::Query(query) => {
            let pack = Pack::open(&query.pack)?;
            let embedder = embedder(&query.embedding_model, None)?;
            pack.check_embedder(embedder.info())?;
            let hits = pack.search(
                &embedder,
                &query.question,
                &SearchOptions {
                    top_k: query.top_k,
                    mode: query.mode,
                },
            )?;
            for hit in hits {
                if query.json {
                    println!("{}", serde_json::to_string(&hit)?);
                } else {
                    println!(
                        "[{}] {:.4} {}{}{} ({}..{})\n{}\n",
                        hit.chunk_id,
                        hit.score,
                        hit.path,
                        if hit.heading.is_empty() { "" } else { " > " },
                        hit.heading,
                        hit.start,
                        hit.end,
                        hit.text
                    );
                }
            }
            Ok(())
        }
    }
}
