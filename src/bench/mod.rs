//! `edgellm bench`: validate a deployment with measurements. Prefill and decode rates in
//! llama-bench's terms (pp512, tg128), time to first token and end-to-end latency percentiles at a
//! chosen concurrency, peak resident memory, a sustained run with CPU frequency and temperature
//! beside the tokens/s series and a throttling verdict, an optional background load, and an
//! alternating comparison of two targets.
//!
//! Code map:
//! - `stats`, `throttle`, `chart`, `report`: pure (numbers in, numbers or text out), table-tested;
//! - `series`: the sustained run's sample types;
//! - `sysfs` (CPU frequency and thermal zones), `http` (a minimal HTTP/1.1 + SSE client),
//!   `target` (the embedded engine or an HTTP endpoint), `load` (background load): the IO;
//! - `runner`: the phases, in order; `progress`: the one-line progress display.
//!
//! Invariant: only `sysfs`, `http`, `target`, `load`, `runner` and [`run`] do IO.

pub mod chart;
pub mod http;
pub mod load;
mod progress;
pub mod report;
pub mod runner;
pub mod series;
pub mod stats;
pub mod sysfs;
pub mod target;
pub mod throttle;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

pub use report::{Report, build, render_markdown, render_table};
pub use target::Api;

/// Why a benchmark could not run. Display is one line.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid argument: {0}")]
    Args(String),
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error(transparent)]
    Http(#[from] http::HttpError),
    #[error("{0}")]
    Target(String),
}

/// `edgellm bench` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// GGUF model file for the embedded engine [default: the installed default model]
    #[arg(
        short = 'm',
        long = "model",
        value_name = "PATH",
        conflicts_with = "url"
    )]
    pub model: Option<PathBuf>,
    /// Measure an HTTP endpoint instead (edgellm serve, llama-server, an OpenAI-compatible server)
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Wire format of HTTP targets
    #[arg(long, value_enum, default_value_t = Api::Llama)]
    pub api: Api,
    /// Model name sent to OpenAI-API targets [default: the first of GET /v1/models]
    #[arg(long, value_name = "NAME")]
    pub model_name: Option<String>,
    /// A second target (URL or model path), measured in alternation with the first
    #[arg(long, value_name = "URL|PATH")]
    pub compare: Option<String>,
    /// Threads of the embedded engine [default: number of cores]
    #[arg(short = 't', long)]
    pub threads: Option<u32>,
    /// Context size of the embedded engine [default: enough for --concurrency requests]
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx_size: Option<u32>,
    /// Requests in the latency run
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub requests: usize,
    /// Requests in flight at once (latency and sustained runs)
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub concurrency: usize,
    /// Prompt tokens per request (ppN)
    #[arg(long, default_value_t = 512, value_name = "N")]
    pub prompt_tokens: usize,
    /// Generated tokens per request (tgN)
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub gen_tokens: u32,
    /// Repetitions of the pp/tg measurement (and alternation rounds of a comparison)
    #[arg(short = 'r', long, default_value_t = 3, value_name = "N")]
    pub repetitions: usize,
    /// Length of the sustained run (10m, 90s, 0 for none)
    #[arg(long, default_value = "0", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Duration,
    /// Sampling interval of the sustained run
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub sample_interval: Duration,
    /// CPU-bound threads running beside the measurement
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub background_threads: usize,
    /// A shell command running beside the measurement (stopped at the end)
    #[arg(long, value_name = "COMMAND")]
    pub background_cmd: Option<String>,
    /// Where sysfs is mounted (tests point this at a fake tree)
    #[arg(long, default_value = "/", value_name = "DIR")]
    pub sysfs_root: PathBuf,
    /// Write report.md, chart.svg and report.json to this directory
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print the full report (every request and sample) as JSON instead of the table
    #[arg(long)]
    pub json: bool,
    /// No progress line on stderr
    #[arg(long)]
    pub no_progress: bool,
}

/// Parses `10m`, `90s`, `500ms`, `1h`, `1m30s` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return seconds_to_duration(seconds, text);
    }
    let mut total = 0.0;
    let mut rest = text;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{text:?}: a number needs a unit (ms, s, m, h)"))?;
        let value: f64 = rest[..split]
            .parse()
            .map_err(|_| format!("{text:?} is not a duration (10m, 90s, 500ms)"))?;
        let unit_end = rest[split..]
            .find(|c: char| c.is_ascii_digit())
            .map_or(rest.len(), |i| split + i);
        let factor = match &rest[split..unit_end] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            unit => return Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m, h)")),
        };
        total += value * factor;
        rest = &rest[unit_end..];
    }
    seconds_to_duration(total, text)
}

fn seconds_to_duration(seconds: f64, text: &str) -> Result<Duration, String> {
    if !seconds.is_finite() || seconds < 0.0 || text.is_empty() {
        return Err(format!("{text:?} is not a duration (10m, 90s, 500ms)"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

impl BenchArgs {
    /// Checks what the flags say together and makes the run plan.
    pub fn plan(&self, sample_memory: bool) -> Result<runner::Plan, BenchError> {
        let positive = |name: &str, value: usize| {
            if value == 0 {
                Err(BenchError::Args(format!("{name} must be at least 1")))
            } else {
                Ok(())
            }
        };
        positive("--requests", self.requests)?;
        positive("--concurrency", self.concurrency)?;
        positive("--prompt-tokens", self.prompt_tokens)?;
        positive("--gen-tokens", self.gen_tokens as usize)?;
        positive("--repetitions", self.repetitions)?;
        if !self.duration.is_zero() && self.sample_interval < Duration::from_millis(50) {
            return Err(BenchError::Args(
                "--sample-interval must be at least 50ms".into(),
            ));
        }
        Ok(runner::Plan {
            requests: self.requests,
            concurrency: self.concurrency,
            prompt_tokens: self.prompt_tokens,
            gen_tokens: self.gen_tokens,
            repetitions: self.repetitions,
            duration: self.duration,
            interval: self.sample_interval,
            sysfs_root: self.sysfs_root.clone(),
            sample_memory,
        })
    }

    fn settings(&self) -> report::Settings {
        report::Settings {
            requests: self.requests,
            concurrency: self.concurrency,
            prompt_tokens: self.prompt_tokens,
            gen_tokens: self.gen_tokens,
            repetitions: self.repetitions,
            duration_s: self.duration.as_secs_f64(),
            sample_interval_s: self.sample_interval.as_secs_f64(),
            background_threads: self.background_threads,
            background_cmd: self.background_cmd.clone(),
        }
    }
}

/// What a target argument names.
enum TargetSpec {
    Model(PathBuf),
    Url(String),
}

impl TargetSpec {
    fn parse(text: &str) -> TargetSpec {
        if text.contains("://") {
            TargetSpec::Url(text.to_string())
        } else {
            TargetSpec::Model(PathBuf::from(text))
        }
    }
}

/// Runs `edgellm bench`: measures, prints the table (or JSON), writes the report files.
pub fn run(args: &BenchArgs, default_model: &Path) -> anyhow::Result<()> {
    let report = measure(args, default_model)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_table(&report));
    }
    if let Some(dir) = &args.out {
        write_files(&report, dir)?;
        eprintln!(
            "wrote {0}/report.md, {0}/chart.svg and {0}/report.json",
            dir.display()
        );
    }
    Ok(())
}

/// Measures and builds the report (what [`run`] prints).
pub fn measure(args: &BenchArgs, default_model: &Path) -> anyhow::Result<Report> {
    let primary = match (&args.url, &args.model) {
        (Some(url), _) => TargetSpec::Url(url.clone()),
        (None, Some(model)) => TargetSpec::Model(model.clone()),
        (None, None) => TargetSpec::Model(default_model.to_path_buf()),
    };
    let mut specs = vec![primary];
    specs.extend(args.compare.as_deref().map(TargetSpec::parse));
    let sample_memory = specs.iter().any(|s| matches!(s, TargetSpec::Model(_)));
    let plan = args.plan(sample_memory)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;

    let mut targets = Vec::new();
    let mut infos = Vec::new();
    for spec in &specs {
        let (target, info) = match spec {
            TargetSpec::Model(path) => {
                let tokens = (args.prompt_tokens as u32).saturating_add(args.gen_tokens);
                let target = target::Target::engine(
                    path,
                    args.threads,
                    args.ctx_size,
                    args.concurrency as u32,
                    tokens,
                )?;
                let info = engine_info(&target, args.threads);
                (target, info)
            }
            TargetSpec::Url(url) => {
                let target = runtime
                    .block_on(target::Target::http(url, args.api, args.model_name.clone()))
                    .with_context(|| format!("cannot use {url}"))?;
                let info = http_info(&target);
                (target, info)
            }
        };
        targets.push(Arc::new(target));
        infos.push(info);
    }
    let first_snapshot = sysfs::read(&args.sysfs_root);
    let system = report::SystemInfo {
        logical_cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model: cpu_model(),
        frequency_available: first_snapshot.frequency_ratio().is_some(),
        thermal_available: !first_snapshot.zones.is_empty(),
    };

    let background = (args.background_threads > 0 || args.background_cmd.is_some())
        .then(|| {
            load::BackgroundLoad::start(args.background_threads, args.background_cmd.as_deref())
        })
        .transpose()?;
    let progress = progress::Progress::new(!args.no_progress);
    let measured = runtime.block_on(runner::measure(&targets, &plan, progress));
    let background = background.map(load::BackgroundLoad::stop);
    let measured = measured?;

    let peak = crate::engine::ProcessMemory::read().peak_resident_bytes;
    for info in infos.iter_mut().filter(|i| i.kind == "engine") {
        info.peak_resident_bytes = Some(peak);
    }
    Ok(build(report::Measured {
        settings: args.settings(),
        system,
        targets: infos,
        records: measured.records,
        samples: measured.samples,
        background,
    }))
}

fn engine_info(target: &target::Target, threads: Option<u32>) -> report::TargetInfo {
    let (model, load_time_s) = match target {
        target::Target::Engine(engine) => (
            Some(engine.info().id.clone()),
            Some(engine.info().load_time.as_secs_f64()),
        ),
        target::Target::Http(_) => (None, None),
    };
    report::TargetInfo {
        label: target.label(),
        kind: "engine",
        api: None,
        model,
        threads: Some(
            threads.unwrap_or(crate::engine::EngineConfig::new(PathBuf::new()).n_threads),
        ),
        load_time_s,
        peak_resident_bytes: None,
    }
}

fn http_info(target: &target::Target) -> report::TargetInfo {
    let (api, model) = match target {
        target::Target::Http(http) => (Some(http.api), Some(http.model.clone())),
        target::Target::Engine(_) => (None, None),
    };
    report::TargetInfo {
        label: target.label(),
        kind: "http",
        api,
        model,
        threads: None,
        load_time_s: None,
        peak_resident_bytes: None,
    }
}

fn cpu_model() -> Option<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        matches!(key.trim(), "model name" | "Model" | "Hardware").then(|| value.trim().to_string())
    })
}

/// Writes `report.md`, `chart.svg` and `report.json` into `dir` (created if needed).
pub fn write_files(report: &Report, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let latencies: Vec<chart::LatencySeries> = report
        .targets
        .iter()
        .enumerate()
        .map(|(index, target)| chart::LatencySeries {
            label: &target.info.label,
            e2e_ms: report
                .requests
                .iter()
                .filter(|r| r.target == index && r.phase == report::Phase::Latency)
                .map(|r| r.e2e_ms)
                .collect(),
        })
        .collect();
    let samples = report
        .sustained
        .as_ref()
        .map_or(&[][..], |s| &s.samples[..]);
    let files = [
        ("report.md", render_markdown(report)),
        ("chart.svg", chart::render(samples, &latencies)),
        ("report.json", serde_json::to_string_pretty(report)? + "\n"),
    ];
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases = [
            ("0", Some(0.0)),
            ("90", Some(90.0)),
            ("1.5", Some(1.5)),
            ("500ms", Some(0.5)),
            ("3s", Some(3.0)),
            ("10m", Some(600.0)),
            ("1m30s", Some(90.0)),
            ("2h", Some(7200.0)),
            ("2min", Some(120.0)),
            ("", None),
            ("-1", None),
            ("10x", None),
            ("m", None),
            ("ten minutes", None),
        ];
        for (text, expected) in cases {
            let parsed = parse_duration(text).ok().map(|d| d.as_secs_f64());
            assert_eq!(parsed, expected, "{text:?}");
        }
    }
}
