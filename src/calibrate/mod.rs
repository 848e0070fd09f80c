//! `edgellm calibrate`: measures how well each confidence signal picks the local answers to
//! escalate, on a set of prompts, and writes the thresholds (or combiner weights) that reach a
//! target escalation share or quality (docs/routing-quality.md).
//!
//! Every item runs on the local tier exactly as the router's confidence check sees it (same
//! service, greedy, the same signals over the same tokens). With `--reference`, the same prompt
//! also goes to the configured tiers besides the embedded engine (a local server or a remote),
//! walked with their breakers and the egress guard: on an
//! unlabelled set their answer is the label (agreement), on a labelled set their correctness is
//! the cascade's second curve. The thresholds are fitted on one split and reported on the other.

pub mod items;
pub mod measure;
pub mod report;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use crate::engine::EngineSlot;
use std::time::Instant;

use anyhow::Context;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::cli::ServeArgs;
use crate::egress::EgressGuard;
use crate::engine::{Engine, SamplingParams};
use crate::metrics::Metrics;
use crate::route::confidence::{self, Signals};
use crate::route::{RouteOverride, TierKind};
use crate::router::{Mode, Router, SPREAD_TOP};
use crate::serve::{load_config, open_ledger};
use crate::service::{Generation, LocalService, OutputFormat, Prompt, Step};
use items::Item;

#[derive(Debug, clap::Args)]
pub struct CalibrateArgs {
    /// The set: JSON lines of {"id", "task", "prompt", "answers", "match", "max_tokens",
    /// "stop"}; without "answers", --reference labels it
    #[arg(long, required_unless_present = "records")]
    pub set: Option<PathBuf>,
    /// Where report.json, report.md, curve.svg, records.jsonl and routing.toml go
    #[arg(long, default_value = "calibration")]
    pub out: PathBuf,
    /// Also ask the configured remote tiers (through the egress guard): their answer labels an
    /// unlabelled set, and on a labelled set gives the real cascade's curve
    #[arg(long)]
    pub reference: bool,
    /// Reuse the answers and signals of an earlier run (its records.jsonl) instead of running
    /// the model: refit and report only
    #[arg(long)]
    pub records: Option<PathBuf>,
    /// The share of requests the written thresholds escalate (on the fit split)
    #[arg(long, default_value_t = 0.3, conflicts_with = "target_quality")]
    pub target_share: f64,
    /// Instead: the accuracy the cascade should keep (on the fit split); escalates as little as
    /// reaches it
    #[arg(long)]
    pub target_quality: Option<f64>,
    /// Share of each task's items the thresholds are fitted on (the rest is reported)
    #[arg(long, default_value_t = 0.5)]
    pub fit_share: f64,
    /// Bootstrap resamples for the intervals
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
    /// Seed of the split and the bootstrap
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Tokens per answer when an item names none
    #[arg(long, default_value_t = 16)]
    pub max_tokens: u32,
    /// Requests in flight at once [default: the configured slots]
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Only the first N items of each task
    #[arg(long)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// One item's outcome: what `records.jsonl` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub task: String,
    pub answer: String,
    /// Right against the gold answers, or agreeing with the reference on an unlabelled set.
    pub correct: bool,
    pub signals: Option<Signals>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_answer: Option<String>,
    /// The reference tier's own correctness on a labelled set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_correct: Option<bool>,
    pub millis: u64,
}

pub fn run(args: &CalibrateArgs) -> anyhow::Result<()> {
    if !(0.0..1.0).contains(&args.fit_share) || args.fit_share == 0.0 {
        anyhow::bail!("--fit-share must be between 0 and 1 (exclusive)");
    }
    if !(0.0..=1.0).contains(&args.target_share) {
        anyhow::bail!("--target-share must be between 0 and 1");
    }
    if args
        .target_quality
        .is_some_and(|q| !(0.0..=1.0).contains(&q))
    {
        anyhow::bail!("--target-quality must be between 0 and 1");
    }
    let config = load_config(&args.serve)?;
    let window = config.routing.triggers.confidence_window;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let started = Instant::now();
    let records = match &args.records {
        Some(path) => items::read_records(path)?,
        None => {
            let path = args.set.as_deref().context("--set is required")?;
            let set = items::read_set(path, args.limit)?;
            if !args.reference && set.iter().any(|i| i.answers.is_none()) {
                anyhow::bail!(
                    "{}: items without \"answers\" need --reference (a remote tier labels them)",
                    path.display()
                );
            }
            generate(args, config, &set)?
        }
    };
    let elapsed = started.elapsed();
    let mut file = std::fs::File::create(args.out.join("records.jsonl"))
        .context("cannot write records.jsonl")?;
    for record in &records {
        writeln!(file, "{}", serde_json::to_string(record)?)?;
    }
    let analysis = report::analyse(
        &records,
        &report::Options {
            fit_share: args.fit_share,
            target_share: args.target_share,
            target_quality: args.target_quality,
            bootstrap: args.bootstrap,
            seed: args.seed,
            window,
        },
    )?;
    let source = args
        .records
        .as_ref()
        .or(args.set.as_ref())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    report::write(&args.out, &analysis, &source, elapsed)?;
    print!("{}", report::summary(&analysis, elapsed));
    println!("wrote {}", args.out.display());
    Ok(())
}

/// What the items run on: the embedded engine's service, and the reference walk (every
/// configured tier but the embedded one, with its breakers and egress guard).
struct Tiers {
    service: LocalService,
    reference: Option<Router>,
}

/// Runs every item on the local tier (and the reference when asked), `concurrency` at a time.
fn generate(
    args: &CalibrateArgs,
    config: crate::config::ServeConfig,
    set: &[Item],
) -> anyhow::Result<Vec<Record>> {
    let concurrency = args
        .concurrency
        .unwrap_or(config.engine.slots as usize)
        .max(1);
    let window = config.routing.triggers.confidence_window;
    let mut policy = config.routing.clone();
    policy.tiers.retain(|t| !matches!(t.kind, TierKind::Local));
    if args.reference && policy.tiers.is_empty() {
        anyhow::bail!(
            "--reference needs a tier besides the embedded engine in the configuration ([[tiers]])"
        );
    }
    let ledger = open_ledger(&config)?;
    let engine = Engine::start(config.engine.clone()).context("cannot load the model")?;
    let cell = Arc::new(EngineSlot::default());
    cell.set(engine);
    let metrics = Arc::new(Metrics::default());
    let service = LocalService::new(
        cell,
        config.limits.clone(),
        config.engine.slots,
        metrics.clone(),
    );
    let tiers = Tiers {
        reference: args.reference.then(|| {
            let guard = EgressGuard::for_ledger(&config.egress, ledger.as_ref());
            Router::new(service.clone(), policy, metrics, guard)
        }),
        service,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let total = set.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let records = runtime.block_on(async {
        futures::stream::iter(set)
            .map(|item| {
                let tiers = &tiers;
                let done = &done;
                async move {
                    let record = one(tiers, item, args, window).await;
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    if n.is_multiple_of(50) || n == total {
                        eprintln!("calibrate: {n}/{total} items");
                    }
                    record
                }
            })
            .buffered(concurrency)
            .collect::<Vec<_>>()
            .await
    });
    // The egress guard's audit rows were committed as each reference call settled.
    drop(ledger);
    records.into_iter().collect()
}

async fn one(
    tiers: &Tiers,
    item: &Item,
    args: &CalibrateArgs,
    window: usize,
) -> anyhow::Result<Record> {
    let started = Instant::now();
    let generation = Generation {
        prompt: Prompt::Text(item.prompt.clone()),
        params: SamplingParams {
            temperature: 0.0,
            max_tokens: item.max_tokens.unwrap_or(args.max_tokens),
            stop: item.stop.clone().unwrap_or_else(|| vec!["\n".into()]),
            spread_top: SPREAD_TOP,
            ..SamplingParams::default()
        },
        format: OutputFormat::Text,
        tools: None,
        sources: Vec::new(),
    };
    let mut running = tiers
        .service
        .start(generation.clone())
        .await
        .with_context(|| format!("item {}: the local model refused it", item.id))?;
    let mut answer = String::new();
    let mut logprobs = Vec::new();
    let mut spreads = Vec::new();
    loop {
        match running
            .next()
            .await
            .with_context(|| format!("item {}", item.id))?
        {
            Step::Token(token) => {
                answer.push_str(&token.text);
                if !token.forced {
                    logprobs.push(token.logprob);
                    spreads.extend(token.spread);
                }
            }
            Step::ToolCalls(_) | Step::Progress(_) => {}
            Step::Done(summary) => {
                answer.push_str(&summary.tail_text);
                break;
            }
        }
    }
    let signals = confidence::signals(&logprobs, &spreads, window);
    let reference_answer = match &tiers.reference {
        Some(router) => {
            let mut generation = generation;
            generation.params.spread_top = 0;
            Some(reference(router, generation, &item.id).await?)
        }
        None => None,
    };
    let (correct, reference_correct) = match (&item.answers, &reference_answer) {
        (Some(_), reference) => (
            item.is_correct(&answer),
            reference.as_deref().map(|r| item.is_correct(r)),
        ),
        (None, Some(reference)) => (items::agree(&answer, reference), None),
        (None, None) => unreachable!("checked before generating"),
    };
    Ok(Record {
        id: item.id.clone(),
        task: item.task.clone(),
        answer,
        correct,
        signals,
        reference_answer,
        reference_correct,
        millis: started.elapsed().as_millis() as u64,
    })
}

/// The reference tiers' answer, walked as any request is (breakers, egress guard, audit).
async fn reference(router: &Router, generation: Generation, id: &str) -> anyhow::Result<String> {
    let mut routed = router
        .start(generation, RouteOverride::Auto, Mode::Whole)
        .await
        .with_context(|| format!("item {id}: the reference tier did not answer"))?;
    let mut text = String::new();
    loop {
        match routed.next().await.with_context(|| format!("item {id}"))? {
            Step::Token(token) => text.push_str(&token.text),
            Step::ToolCalls(_) | Step::Progress(_) => {}
            Step::Done(summary) => {
                text.push_str(&summary.tail_text);
                return Ok(text);
            }
        }
    }
}

/// Records grouped by task, in file order.
pub fn by_task(records: &[Record]) -> BTreeMap<String, Vec<&Record>> {
    let mut tasks: BTreeMap<String, Vec<&Record>> = BTreeMap::new();
    for record in records {
        tasks.entry(record.task.clone()).or_default().push(record);
    }
    tasks
}
