//! The benchmark report: built from the raw request records and samples (pure), rendered as the
//! terminal summary table, Markdown, and JSON (serde; every request and sample included).

use serde::Serialize;

use super::load::BackgroundSummary;
use super::series::Sample;
use super::stats::{MeanStd, Percentiles, mean, median};
use super::target::{Api, TimingSource};
use super::throttle::{ThrottleRules, ThrottleVerdict, detect};

/// Identifies the JSON layout; bumped when a field changes meaning or goes away.
pub const SCHEMA: &str = "edgellm-bench/1";

/// Which measurement a request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// llama-bench's ppN: an N-token prompt, one generated token.
    Prefill,
    /// llama-bench's tgN: a short prompt, N generated tokens.
    Decode,
    /// The latency run: requests at the chosen concurrency.
    Latency,
    /// The sustained run.
    Sustained,
}

/// One finished request.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    /// Index into the report's targets.
    pub target: usize,
    pub phase: Phase,
    /// Alternation round (comparisons pair the targets' results round by round).
    pub round: usize,
    /// Seconds since the benchmark started.
    pub start_s: f64,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub ttft_ms: f64,
    pub e2e_ms: f64,
    pub prefill_tokens_per_second: f64,
    pub decode_tokens_per_second: f64,
    pub timing: TimingSource,
}

/// What the benchmark was asked to do.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub requests: usize,
    pub concurrency: usize,
    pub prompt_tokens: usize,
    pub gen_tokens: u32,
    pub repetitions: usize,
    pub duration_s: f64,
    pub sample_interval_s: f64,
    pub background_threads: usize,
    pub background_cmd: Option<String>,
}

impl Settings {
    pub fn prefill_test(&self) -> String {
        format!("pp{}", self.prompt_tokens)
    }
    pub fn decode_test(&self) -> String {
        format!("tg{}", self.gen_tokens)
    }
}

/// The machine the benchmark ran on.
#[derive(Debug, Clone, Serialize)]
pub struct SystemInfo {
    pub logical_cpus: usize,
    pub cpu_model: Option<String>,
    pub frequency_available: bool,
    pub thermal_available: bool,
}

/// A target as the runner knows it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetInfo {
    pub label: String,
    /// `engine` or `http`.
    pub kind: &'static str,
    pub api: Option<Api>,
    pub model: Option<String>,
    pub threads: Option<u32>,
    pub load_time_s: Option<f64>,
    /// This process's peak resident memory (embedded engine only; with two embedded targets it
    /// covers both).
    pub peak_resident_bytes: Option<u64>,
}

/// Raw measurements, as the runner collected them.
#[derive(Debug, Clone)]
pub struct Measured {
    pub settings: Settings,
    pub system: SystemInfo,
    pub targets: Vec<TargetInfo>,
    pub records: Vec<RequestRecord>,
    pub samples: Vec<Sample>,
    pub background: Option<BackgroundSummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub edgellm_version: &'static str,
    pub settings: Settings,
    pub system: SystemInfo,
    pub targets: Vec<TargetReport>,
    pub comparison: Option<Comparison>,
    pub sustained: Option<SustainedReport>,
    pub background: Option<BackgroundSummary>,
    pub requests: Vec<RequestRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    #[serde(flatten)]
    pub info: TargetInfo,
    pub prefill: Option<RateReport>,
    pub decode: Option<RateReport>,
    pub latency: Option<LatencyReport>,
}

/// A llama-bench style rate: test name (`pp512`, `tg128`) and tokens/s mean ± stddev.
#[derive(Debug, Clone, Serialize)]
pub struct RateReport {
    pub test: String,
    pub tokens_per_second: MeanStd,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    pub requests: usize,
    pub concurrency: usize,
    pub ttft_ms: Percentiles,
    pub e2e_ms: Percentiles,
    pub generated_tokens: usize,
    /// Generated tokens over the latency run's wall time (all concurrent requests together).
    pub throughput_tokens_per_second: f64,
}

/// Target 0 against target 1, round by round; each ratio is target 0's value over target 1's.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub rounds: Vec<Ratios>,
    /// The median of the per-round ratios.
    pub median: Ratios,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Ratios {
    pub round: Option<usize>,
    pub prefill: Option<f64>,
    pub decode: Option<f64>,
    pub ttft: Option<f64>,
    pub e2e: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SustainedReport {
    pub target: usize,
    pub duration_s: f64,
    pub interval_s: f64,
    pub requests: usize,
    pub generated_tokens: usize,
    /// The distribution of the per-interval rates.
    pub tokens_per_second: Option<Percentiles>,
    pub throttling: ThrottleVerdict,
    pub samples: Vec<Sample>,
}

/// Summarises the raw measurements.
pub fn build(measured: Measured) -> Report {
    let Measured {
        settings,
        system,
        targets,
        records,
        samples,
        background,
    } = measured;
    let reports = targets
        .into_iter()
        .enumerate()
        .map(|(index, info)| target_report(index, info, &settings, &records))
        .collect::<Vec<_>>();
    let comparison = (reports.len() == 2).then(|| compare(&records, settings.repetitions));
    let sustained = (settings.duration_s > 0.0).then(|| {
        let sustained: Vec<&RequestRecord> = records
            .iter()
            .filter(|r| r.phase == Phase::Sustained)
            .collect();
        let rates: Vec<f64> = samples.iter().map(|s| s.tokens_per_second).collect();
        SustainedReport {
            target: 0,
            duration_s: settings.duration_s,
            interval_s: settings.sample_interval_s,
            requests: sustained.len(),
            generated_tokens: sustained.iter().map(|r| r.generated_tokens).sum(),
            tokens_per_second: Percentiles::of(&rates),
            throttling: detect(
                &samples,
                settings.sample_interval_s,
                &ThrottleRules::default(),
            ),
            samples,
        }
    });
    Report {
        schema: SCHEMA,
        edgellm_version: env!("CARGO_PKG_VERSION"),
        settings,
        system,
        targets: reports,
        comparison,
        sustained,
        background,
        requests: records,
    }
}

fn select(records: &[RequestRecord], target: usize, phase: Phase) -> Vec<&RequestRecord> {
    records
        .iter()
        .filter(|r| r.target == target && r.phase == phase)
        .collect()
}

fn target_report(
    index: usize,
    info: TargetInfo,
    settings: &Settings,
    records: &[RequestRecord],
) -> TargetReport {
    let rate = |phase: Phase, test: String, value: fn(&RequestRecord) -> f64| {
        let values: Vec<f64> = select(records, index, phase)
            .into_iter()
            .map(value)
            .collect();
        MeanStd::of(&values).map(|tokens_per_second| RateReport {
            test,
            tokens_per_second,
        })
    };
    let latency = select(records, index, Phase::Latency);
    let ttft: Vec<f64> = latency.iter().map(|r| r.ttft_ms).collect();
    let e2e: Vec<f64> = latency.iter().map(|r| r.e2e_ms).collect();
    let generated: usize = latency.iter().map(|r| r.generated_tokens).sum();
    let wall_s = rounds_wall_s(&latency);
    let latency = Percentiles::of(&ttft)
        .zip(Percentiles::of(&e2e))
        .map(|(ttft_ms, e2e_ms)| LatencyReport {
            requests: e2e.len(),
            concurrency: settings.concurrency,
            ttft_ms,
            e2e_ms,
            generated_tokens: generated,
            throughput_tokens_per_second: if wall_s > 0.0 {
                generated as f64 / wall_s
            } else {
                0.0
            },
        });
    TargetReport {
        info,
        prefill: rate(Phase::Prefill, settings.prefill_test(), |r| {
            r.prefill_tokens_per_second
        }),
        decode: rate(Phase::Decode, settings.decode_test(), |r| {
            r.decode_tokens_per_second
        }),
        latency,
    }
}

/// The wall time of the rounds together: each round from its first start to its last end.
fn rounds_wall_s(records: &[&RequestRecord]) -> f64 {
    let mut rounds: Vec<usize> = records.iter().map(|r| r.round).collect();
    rounds.dedup();
    rounds.sort_unstable();
    rounds.dedup();
    rounds
        .into_iter()
        .map(|round| {
            let in_round = records.iter().filter(|r| r.round == round);
            let start = in_round
                .clone()
                .map(|r| r.start_s)
                .fold(f64::INFINITY, f64::min);
            let end = in_round
                .map(|r| r.start_s + r.e2e_ms / 1000.0)
                .fold(f64::NEG_INFINITY, f64::max);
            (end - start).max(0.0)
        })
        .sum()
}

fn compare(records: &[RequestRecord], rounds: usize) -> Comparison {
    let round_mean =
        |target: usize, phase: Phase, round: usize, value: fn(&RequestRecord) -> f64| {
            let values: Vec<f64> = select(records, target, phase)
                .into_iter()
                .filter(|r| r.round == round)
                .map(value)
                .collect();
            mean(&values)
        };
    let ratio = |phase: Phase, round: usize, value: fn(&RequestRecord) -> f64| {
        let a = round_mean(0, phase, round, value)?;
        let b = round_mean(1, phase, round, value)?;
        (b > 0.0).then(|| a / b)
    };
    let rounds: Vec<Ratios> = (0..rounds.max(1))
        .map(|round| Ratios {
            round: Some(round),
            prefill: ratio(Phase::Prefill, round, |r| r.prefill_tokens_per_second),
            decode: ratio(Phase::Decode, round, |r| r.decode_tokens_per_second),
            ttft: ratio(Phase::Latency, round, |r| r.ttft_ms),
            e2e: ratio(Phase::Latency, round, |r| r.e2e_ms),
        })
        .collect();
    let med = |value: fn(&Ratios) -> Option<f64>| {
        median(&rounds.iter().filter_map(value).collect::<Vec<_>>())
    };
    let median = Ratios {
        round: None,
        prefill: med(|r| r.prefill),
        decode: med(|r| r.decode),
        ttft: med(|r| r.ttft),
        e2e: med(|r| r.e2e),
    };
    Comparison { rounds, median }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn rate_text(rate: &Option<RateReport>) -> String {
    rate.as_ref().map_or("-".into(), |r| {
        format!(
            "{:.1} ± {:.1}",
            r.tokens_per_second.mean, r.tokens_per_second.stddev
        )
    })
}

fn triple(p: Option<&Percentiles>) -> String {
    p.map_or("-".into(), |p| {
        format!("{:.0} / {:.0} / {:.0}", p.p50, p.p95, p.p99)
    })
}

fn ratio_text(ratio: Option<f64>) -> String {
    ratio.map_or("-".into(), |r| format!("{r:.3}"))
}

fn availability(available: bool) -> &'static str {
    if available {
        "available"
    } else {
        "not available"
    }
}

/// One row per target: the numbers a device report quotes.
fn target_rows(report: &Report) -> Vec<[String; 7]> {
    report
        .targets
        .iter()
        .map(|t| {
            let latency = t.latency.as_ref();
            [
                t.info.label.clone(),
                rate_text(&t.prefill),
                rate_text(&t.decode),
                triple(latency.map(|l| &l.ttft_ms)),
                triple(latency.map(|l| &l.e2e_ms)),
                latency.map_or("-".into(), |l| {
                    format!("{:.1}", l.throughput_tokens_per_second)
                }),
                t.info
                    .peak_resident_bytes
                    .map_or("-".into(), |b| format!("{:.0} MiB", mib(b))),
            ]
        })
        .collect()
}

fn headers(report: &Report) -> [String; 7] {
    let s = &report.settings;
    [
        "target".into(),
        format!("{} t/s", s.prefill_test()),
        format!("{} t/s", s.decode_test()),
        "TTFT p50/p95/p99 ms".into(),
        "E2E p50/p95/p99 ms".into(),
        format!("gen t/s @{}", s.concurrency),
        "peak RSS".into(),
    ]
}

fn sustained_lines(sustained: &SustainedReport, system: &SystemInfo) -> Vec<String> {
    let mut lines = vec![format!(
        "sustained {:.0} s: {} requests, {} tokens, tokens/s per {:.1} s interval: {}",
        sustained.duration_s,
        sustained.requests,
        sustained.generated_tokens,
        sustained.interval_s,
        sustained.tokens_per_second.map_or("-".into(), |p| format!(
            "mean {:.1}, p50 {:.1}, min {:.1}, max {:.1}",
            p.mean, p.p50, p.min, p.max
        ))
    )];
    let t = &sustained.throttling;
    lines.push(format!(
        "throttling: {} (CPU frequency: {}, thermal zones: {})",
        if t.throttled {
            "DETECTED"
        } else {
            "none detected"
        },
        availability(t.frequency_available || system.frequency_available),
        availability(t.thermal_available || system.thermal_available),
    ));
    lines.extend(t.findings.iter().map(|f| format!("  - {f}")));
    lines
}

fn comparison_line(report: &Report) -> Option<String> {
    let c = report.comparison.as_ref()?;
    let m = &c.median;
    Some(format!(
        "ratios {} / {} (median of {} rounds): prefill {}, decode {}, TTFT {}, E2E {}",
        report.targets.first()?.info.label,
        report.targets.get(1)?.info.label,
        c.rounds.len(),
        ratio_text(m.prefill),
        ratio_text(m.decode),
        ratio_text(m.ttft),
        ratio_text(m.e2e),
    ))
}

/// The summary table printed at the end of a run.
pub fn render_table(report: &Report) -> String {
    let mut rows = vec![headers(report)];
    rows.extend(target_rows(report));
    let widths: Vec<usize> = (0..7)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                if i == 0 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    if let Some(line) = comparison_line(report) {
        out.push_str(&line);
        out.push('\n');
    }
    if let Some(sustained) = &report.sustained {
        for line in sustained_lines(sustained, &report.system) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    if let Some(background) = &report.background {
        out.push_str(&background_line(background));
        out.push('\n');
    }
    out
}

fn background_line(background: &BackgroundSummary) -> String {
    let mut parts = Vec::new();
    if background.threads > 0 {
        parts.push(format!("{} CPU-bound threads", background.threads));
    }
    if let Some(command) = &background.command {
        parts.push(format!("`{command}`"));
    }
    let mut line = format!("background load: {}", parts.join(" and "));
    if let Some(status) = &background.command_exited_early {
        line.push_str(&format!(
            " (the command ended early: {status}; part of the run had no command load)"
        ));
    }
    line
}

/// The Markdown report (`report.md`), with the chart beside it as `chart.svg`.
pub fn render_markdown(report: &Report) -> String {
    let s = &report.settings;
    let mut md = String::from("# edgellm bench report\n\n");
    md.push_str(&format!(
        "- edgellm {}; {} logical CPUs{}\n- {} and {}: {} repetitions each; latency: {} requests at concurrency {} ({} prompt tokens, {} generated)\n",
        report.edgellm_version,
        report.system.logical_cpus,
        report.system.cpu_model.as_ref().map_or(String::new(), |m| format!(" ({m})")),
        s.prefill_test(),
        s.decode_test(),
        s.repetitions,
        s.requests,
        s.concurrency,
        s.prompt_tokens,
        s.gen_tokens,
    ));
    if let Some(background) = &report.background {
        md.push_str(&format!("- {}\n", background_line(background)));
    }
    md.push_str("\n## Results\n\n");
    let header = headers(report);
    md.push_str(&format!("| {} |\n", header.join(" | ")));
    md.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
    for row in target_rows(report) {
        md.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    md.push_str(
        "\nRates are mean ± standard deviation over the repetitions (llama-bench's terms); \
         latencies are nearest-rank percentiles measured at the client.\n",
    );
    if let Some(c) = &report.comparison {
        md.push_str(&format!(
            "\n## Comparison\n\nEach ratio is {} over {}, per alternation round.\n\n| round | prefill | decode | TTFT | E2E |\n|---|---:|---:|---:|---:|\n",
            report.targets[0].info.label, report.targets[1].info.label
        ));
        for r in c.rounds.iter().chain(std::iter::once(&c.median)) {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                r.round.map_or("**median**".into(), |n| (n + 1).to_string()),
                ratio_text(r.prefill),
                ratio_text(r.decode),
                ratio_text(r.ttft),
                ratio_text(r.e2e)
            ));
        }
    }
    if let Some(sustained) = &report.sustained {
        md.push_str("\n## Sustained run\n\n");
        for line in sustained_lines(sustained, &report.system) {
            md.push_str(&format!("{line}\n"));
        }
        md.push_str(&sample_table(&sustained.samples));
    }
    md.push_str("\n![tokens/s, temperature and latency](chart.svg)\n");
    md
}

/// About 20 rows of the series (every Nth sample), so the table stays readable.
fn sample_table(samples: &[Sample]) -> String {
    if samples.is_empty() {
        return String::new();
    }
    let step = samples.len().div_ceil(20);
    let mut md = String::from(
        "\n| t (s) | tokens/s | CPU MHz (mean) | CPU % of max | hottest zone °C | RSS MiB |\n|---:|---:|---:|---:|---:|---:|\n",
    );
    let opt = |v: Option<f64>, digits: usize| v.map_or("n/a".into(), |v| format!("{v:.digits$}"));
    for sample in samples.iter().step_by(step) {
        md.push_str(&format!(
            "| {:.1} | {:.1} | {} | {} | {} | {} |\n",
            sample.t_s,
            sample.tokens_per_second,
            opt(sample.sysfs.mean_frequency_mhz(), 0),
            opt(sample.sysfs.frequency_ratio().map(|r| r * 100.0), 0),
            opt(sample.sysfs.max_temperature_c(), 1),
            opt(sample.resident_bytes.map(mib), 0),
        ));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(
        target: usize,
        phase: Phase,
        round: usize,
        start_s: f64,
        e2e_ms: f64,
        rate: f64,
    ) -> RequestRecord {
        RequestRecord {
            target,
            phase,
            round,
            start_s,
            prompt_tokens: 512,
            generated_tokens: 10,
            ttft_ms: e2e_ms / 2.0,
            e2e_ms,
            prefill_tokens_per_second: rate,
            decode_tokens_per_second: rate / 10.0,
            timing: TimingSource::Engine,
        }
    }

    fn info(label: &str) -> TargetInfo {
        TargetInfo {
            label: label.into(),
            kind: "engine",
            api: None,
            model: None,
            threads: Some(2),
            load_time_s: None,
            peak_resident_bytes: Some(300 << 20),
        }
    }

    fn measured(targets: usize, records: Vec<RequestRecord>) -> Measured {
        Measured {
            settings: Settings {
                requests: 4,
                concurrency: 2,
                prompt_tokens: 512,
                gen_tokens: 10,
                repetitions: 2,
                duration_s: 0.0,
                sample_interval_s: 1.0,
                background_threads: 0,
                background_cmd: None,
            },
            system: SystemInfo {
                logical_cpus: 2,
                cpu_model: None,
                frequency_available: false,
                thermal_available: false,
            },
            targets: (0..targets).map(|i| info(&format!("t{i}"))).collect(),
            records,
            samples: Vec::new(),
            background: None,
        }
    }

    #[test]
    fn comparison_pairs_rounds_and_takes_the_median() {
        use Phase::*;
        let records = vec![
            record(0, Prefill, 0, 0.0, 0.0, 600.0),
            record(1, Prefill, 0, 0.0, 0.0, 500.0),
            record(0, Prefill, 1, 0.0, 0.0, 400.0),
            record(1, Prefill, 1, 0.0, 0.0, 500.0),
            record(0, Latency, 0, 10.0, 1000.0, 0.0),
            record(0, Latency, 0, 10.0, 3000.0, 0.0),
            record(1, Latency, 0, 20.0, 1000.0, 0.0),
            record(0, Latency, 1, 30.0, 1000.0, 0.0),
            record(1, Latency, 1, 40.0, 2000.0, 0.0),
        ];
        let report = build(measured(2, records));
        let c = report.comparison.as_ref().unwrap();
        let prefill: Vec<Option<f64>> = c.rounds.iter().map(|r| r.prefill).collect();
        assert_eq!(prefill, [Some(1.2), Some(0.8)]);
        let e2e: Vec<Option<f64>> = c.rounds.iter().map(|r| r.e2e).collect();
        assert_eq!(e2e, [Some(2.0), Some(0.5)]);
        assert_eq!(c.median.prefill, Some(1.0));
        assert_eq!(c.median.e2e, Some(1.25));
        assert_eq!(c.median.decode, None, "no decode runs");
        // Target 0: rounds of 3 s and 1 s, 30 tokens: 7.5 tokens/s.
        let latency = report.targets[0].latency.as_ref().unwrap();
        assert_eq!(latency.requests, 3);
        assert_eq!(latency.throughput_tokens_per_second, 7.5);
        assert_eq!(latency.e2e_ms.p50, 1000.0);
        assert_eq!(latency.e2e_ms.p99, 3000.0);
        let prefill = report.targets[0].prefill.as_ref().unwrap();
        assert_eq!(
            (prefill.test.as_str(), prefill.tokens_per_second.mean),
            ("pp512", 500.0)
        );
        assert!(report.targets[0].decode.is_none() && report.sustained.is_none());

        let table = render_table(&report);
        assert!(
            table.contains("pp512 t/s") && table.contains("500.0 ± 141.4"),
            "{table}"
        );
        assert!(
            table.contains("ratios t0 / t1 (median of 2 rounds): prefill 1.000"),
            "{table}"
        );
        let markdown = render_markdown(&report);
        assert!(
            markdown.contains("| **median** | 1.000 | - | 1.250 | 1.250 |"),
            "{markdown}"
        );
        assert!(markdown.contains("| t0 | 500.0 ± 141.4 |"), "{markdown}");
    }

    #[test]
    fn one_target_has_no_comparison_and_json_has_the_schema() {
        let report = build(measured(
            1,
            vec![record(0, Phase::Latency, 0, 0.0, 50.0, 0.0)],
        ));
        assert!(report.comparison.is_none());
        let json = serde_json::to_value(&report).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "background",
                "comparison",
                "edgellm_version",
                "requests",
                "schema",
                "settings",
                "sustained",
                "system",
                "targets"
            ]
        );
        assert_eq!(json["schema"], SCHEMA);
        assert_eq!(
            json["targets"][0]["label"], "t0",
            "target info is flattened"
        );
        assert_eq!(json["targets"][0]["latency"]["e2e_ms"]["p95"], 50.0);
        assert_eq!(json["requests"][0]["phase"], "latency");
    }
}
