//! The measurement phases, in order: warm-up, llama-bench style prefill/decode repetitions, the
//! latency run at the chosen concurrency, and the sustained run with its sampler. With two
//! targets every phase but the sustained run alternates between them round by round.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::BenchError;
use super::progress::Progress;
use super::report::{Phase, RequestRecord};
use super::series::Sample;
use super::sysfs;
use super::target::{Outcome, RequestSpec, Target};
use crate::engine::ProcessMemory;

/// The validated run settings.
#[derive(Debug, Clone)]
pub struct Plan {
    pub requests: usize,
    pub concurrency: usize,
    pub prompt_tokens: usize,
    pub gen_tokens: u32,
    pub repetitions: usize,
    pub duration: Duration,
    pub interval: Duration,
    pub sysfs_root: PathBuf,
    /// Sample resident memory (an embedded engine is measured).
    pub sample_memory: bool,
}

/// What the phases produced.
pub struct Measurements {
    pub records: Vec<RequestRecord>,
    pub samples: Vec<Sample>,
}

struct Shared {
    started: Instant,
    next_id: AtomicU64,
    records: Mutex<Vec<RequestRecord>>,
    progress: Progress,
}

/// Which measurement a request is for: target index, phase, round and its sizes.
#[derive(Debug, Clone, Copy)]
struct Job {
    target: usize,
    phase: Phase,
    round: usize,
    prompt_tokens: usize,
    max_tokens: u32,
}

impl Shared {
    async fn request(
        &self,
        target: &Target,
        job: Job,
        tokens: Option<&Arc<AtomicU64>>,
    ) -> Result<(), BenchError> {
        let spec = RequestSpec {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            prompt_tokens: job.prompt_tokens,
            max_tokens: job.max_tokens,
        };
        let start_s = self.started.elapsed().as_secs_f64();
        let outcome = target.request(spec, tokens).await?;
        let record = record(job, start_s, &outcome);
        if let Ok(mut records) = self.records.lock() {
            records.push(record);
        }
        Ok(())
    }
}

fn record(job: Job, start_s: f64, o: &Outcome) -> RequestRecord {
    RequestRecord {
        target: job.target,
        phase: job.phase,
        round: job.round,
        start_s,
        prompt_tokens: o.prompt_tokens,
        generated_tokens: o.generated_tokens,
        ttft_ms: o.ttft.as_secs_f64() * 1000.0,
        e2e_ms: o.e2e.as_secs_f64() * 1000.0,
        prefill_tokens_per_second: o.prefill_tokens_per_second,
        decode_tokens_per_second: o.decode_tokens_per_second,
        timing: o.timing,
    }
}

/// Runs every phase against the targets (the first is the primary one).
pub async fn measure(
    targets: &[Arc<Target>],
    plan: &Plan,
    progress: Progress,
) -> Result<Measurements, BenchError> {
    let shared = Arc::new(Shared {
        started: Instant::now(),
        next_id: AtomicU64::new(1),
        records: Mutex::new(Vec::new()),
        progress,
    });
    for (i, target) in targets.iter().enumerate() {
        shared.progress.update("warm-up", i, targets.len(), "");
        let spec = RequestSpec {
            id: shared.next_id.fetch_add(1, Ordering::Relaxed),
            prompt_tokens: 0,
            max_tokens: 4,
        };
        target.request(spec, None).await?;
    }
    let total = plan.repetitions * targets.len() * 2;
    for round in 0..plan.repetitions {
        for (phase, prompt, generate) in [
            (Phase::Prefill, plan.prompt_tokens, 1),
            (Phase::Decode, 0, plan.gen_tokens),
        ] {
            for (index, target) in targets.iter().enumerate() {
                let done = shared.records.lock().map_or(0, |r| r.len());
                shared.progress.update("pp/tg", done, total, "");
                let job = Job {
                    target: index,
                    phase,
                    round,
                    prompt_tokens: prompt,
                    max_tokens: generate,
                };
                shared.request(target, job, None).await?;
            }
        }
    }
    let blocks = if targets.len() > 1 {
        plan.repetitions.min(plan.requests).max(1)
    } else {
        1
    };
    let mut count = Count {
        done: 0,
        total: plan.requests * targets.len(),
    };
    for round in 0..blocks {
        let size = plan.requests / blocks + usize::from(round < plan.requests % blocks);
        for (index, target) in targets.iter().enumerate() {
            let job = Job {
                target: index,
                phase: Phase::Latency,
                round,
                prompt_tokens: plan.prompt_tokens,
                max_tokens: plan.gen_tokens,
            };
            latency(&shared, target, job, size, plan.concurrency, count).await?;
            count.done += size;
        }
    }
    let samples = if plan.duration.is_zero() {
        Vec::new()
    } else {
        sustained(&shared, &targets[0], plan).await?
    };
    shared.progress.finish();
    let records = shared
        .records
        .lock()
        .map(|mut r| std::mem::take(&mut *r))
        .unwrap_or_default();
    Ok(Measurements { records, samples })
}

/// Progress of the latency run over all blocks.
#[derive(Debug, Clone, Copy)]
struct Count {
    done: usize,
    total: usize,
}

/// `requests` requests on `concurrency` workers.
async fn latency(
    shared: &Arc<Shared>,
    target: &Arc<Target>,
    job: Job,
    requests: usize,
    concurrency: usize,
    count: Count,
) -> Result<(), BenchError> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.min(requests) {
        let (shared, target, next) = (shared.clone(), target.clone(), next.clone());
        workers.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < requests {
                shared.request(&target, job, None).await?;
                let done = count.done + next.load(Ordering::Relaxed).min(requests);
                shared.progress.update("latency", done, count.total, "");
            }
            Ok::<(), BenchError>(())
        });
    }
    while let Some(result) = workers.join_next().await {
        result.map_err(|e| BenchError::Target(format!("request task failed: {e}")))??;
    }
    Ok(())
}

/// Requests back to back on `concurrency` workers until the duration is over; a sample every
/// interval. Requests still running at the end are cancelled and not recorded.
async fn sustained(
    shared: &Arc<Shared>,
    target: &Arc<Target>,
    plan: &Plan,
) -> Result<Vec<Sample>, BenchError> {
    let tokens = Arc::new(AtomicU64::new(0));
    let failure: Arc<Mutex<Option<BenchError>>> = Arc::new(Mutex::new(None));
    let completed = || {
        shared.records.lock().map_or(0, |r| {
            r.iter().filter(|r| r.phase == Phase::Sustained).count() as u64
        })
    };
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..plan.concurrency {
        let (shared, target, tokens, failure) = (
            shared.clone(),
            target.clone(),
            tokens.clone(),
            failure.clone(),
        );
        let job = Job {
            target: 0,
            phase: Phase::Sustained,
            round: 0,
            prompt_tokens: plan.prompt_tokens,
            max_tokens: plan.gen_tokens,
        };
        workers.spawn(async move {
            loop {
                let result = shared.request(&target, job, Some(&tokens)).await;
                if let Err(error) = result {
                    if let Ok(mut failure) = failure.lock() {
                        failure.get_or_insert(error);
                    }
                    return;
                }
            }
        });
    }
    let started = Instant::now();
    let total_s = plan.duration.as_secs_f64();
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + plan.interval, plan.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut last_tokens, mut last_completed, mut last_t) = (0u64, 0u64, 0.0f64);
    let mut samples = Vec::new();
    loop {
        ticker.tick().await;
        let t_s = started.elapsed().as_secs_f64();
        let (now_tokens, now_completed) = (tokens.load(Ordering::Relaxed), completed());
        samples.push(Sample {
            t_s,
            tokens_per_second: (now_tokens - last_tokens) as f64 / (t_s - last_t).max(1e-9),
            completed_requests: now_completed - last_completed,
            resident_bytes: plan
                .sample_memory
                .then(|| ProcessMemory::read().resident_bytes),
            sysfs: sysfs::read(&plan.sysfs_root),
        });
        (last_tokens, last_completed, last_t) = (now_tokens, now_completed, t_s);
        let rate = samples.last().map_or(0.0, |s| s.tokens_per_second);
        shared.progress.update(
            "sustained",
            t_s.min(total_s) as usize,
            total_s.ceil() as usize,
            &format!("s, {rate:.1} tokens/s"),
        );
        if let Some(error) = failure.lock().ok().and_then(|mut f| f.take()) {
            workers.abort_all();
            return Err(error);
        }
        if t_s + 1e-3 >= total_s {
            break;
        }
    }
    workers.abort_all();
    while workers.join_next().await.is_some() {}
    Ok(samples)
}
