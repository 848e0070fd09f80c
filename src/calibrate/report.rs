//! From records to the calibration report: the fit/report split, every signal's figures with
//! bootstrap intervals, the combiner, the chosen signal's threshold, and the files (JSON,
//! Markdown, SVG, the config snippet). Pure but for `write`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;

use super::Record;
use super::measure::{self, Figures, Intervals, Scored};
use crate::route::Triggers;
use crate::route::confidence::{self, Combiner, Feature, Signals};

pub struct Options {
    pub fit_share: f64,
    pub target_share: f64,
    pub target_quality: Option<f64>,
    pub bootstrap: usize,
    pub seed: u64,
    /// The configured `confidence_window` (the window the records' `window_min` used).
    pub window: usize,
}

/// A signal as calibration compares them: one of the features, or the fitted combiner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Candidate {
    Feature(Feature),
    Combined,
}

impl Candidate {
    pub fn name(self) -> &'static str {
        match self {
            Candidate::Feature(f) => f.as_str(),
            Candidate::Combined => "combined",
        }
    }

    /// Whether the router can act on it (a `[routing]` key exists).
    fn configurable(self) -> bool {
        !matches!(self, Candidate::Feature(Feature::Min | Feature::Tokens))
    }

    /// Higher is more confident; `NEG_INFINITY` without tokens.
    fn confidence(self, signals: Option<&Signals>, combiner: &Combiner) -> f32 {
        let value = signals.and_then(|s| match self {
            Candidate::Feature(f) => f.confidence(s),
            Candidate::Combined => combiner.probability(s),
        });
        value.unwrap_or(f32::NEG_INFINITY)
    }
}

const COMBINED_FEATURES: [Feature; 10] = Feature::ALL;

#[derive(Debug, Clone, Serialize)]
pub struct TaskSummary {
    pub task: String,
    pub items: usize,
    pub fit: usize,
    pub local_accuracy: f64,
    pub reference_accuracy: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SignalReport {
    pub signal: &'static str,
    pub configurable: bool,
    /// Macro AUROC on the fit split (what the choice is made on).
    pub fit_auroc: Option<f64>,
    /// Macro-averaged over the tasks on the report split, against an always-correct reference.
    pub report: Figures,
    pub intervals: Intervals,
    pub per_task: BTreeMap<String, Figures>,
    /// Against the real reference tier's answers (a labelled set run with `--reference`).
    pub cascade: Option<Figures>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Threshold {
    pub signal: &'static str,
    /// In the signal's own units (for `combined`, the probability).
    pub value: f32,
    pub fit_share_escalated: f64,
    pub report_share_escalated: f64,
    /// Accuracy on the report split: local only, with this threshold (always-correct
    /// reference), and everything escalated.
    pub report_accuracy_local: f64,
    pub report_accuracy_cascade: f64,
    /// With the real reference's answers, when they were recorded.
    pub report_accuracy_real_cascade: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub items: usize,
    pub fit_items: usize,
    pub report_items: usize,
    pub seed: u64,
    pub tasks: Vec<TaskSummary>,
    pub signals: Vec<SignalReport>,
    /// A perfect router's figures (report split, macro): escalating every wrong local answer
    /// first. APGR cannot exceed `1 - wrong/2` against an always-correct reference.
    pub oracle: Figures,
    pub chosen: &'static str,
    pub combiner: Combiner,
    pub threshold: Threshold,
    /// Share escalated vs accuracy on the report split (all tasks pooled).
    pub curves: Vec<Line>,
    pub snippet: String,
}

/// A stable pseudo-random number for an id: the split does not depend on the file's order.
fn hash(seed: u64, id: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // splitmix64's finaliser.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// Each task's records split in two: the fit part (the `fit_share` with the lowest hashes)
/// and the report part.
fn split<'a>(
    records: &'a [Record],
    options: &Options,
) -> BTreeMap<String, (Vec<&'a Record>, Vec<&'a Record>)> {
    let mut out = BTreeMap::new();
    for (task, mut list) in super::by_task(records) {
        list.sort_by_key(|r| hash(options.seed, &r.id));
        let fit = ((list.len() as f64) * options.fit_share).round() as usize;
        let fit = fit.clamp(1.min(list.len()), list.len().saturating_sub(1).max(1));
        let report = list.split_off(fit.min(list.len()));
        out.insert(task, (list, report));
    }
    out
}

fn scored(
    records: &[&Record],
    candidate: Candidate,
    combiner: &Combiner,
    real: bool,
) -> Vec<Scored> {
    records
        .iter()
        .map(|r| Scored {
            confidence: candidate.confidence(r.signals.as_ref(), combiner),
            local: f64::from(u8::from(r.correct)),
            strong: if real {
                f64::from(u8::from(r.reference_correct.unwrap_or(false)))
            } else {
                1.0
            },
        })
        .collect()
}

/// Fits the combiner on `records`: logistic regression of correctness on the signals, answers
/// without tokens left out.
pub fn fit_combiner(records: &[&Record]) -> Combiner {
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    for r in records {
        let Some(s) = &r.signals else { continue };
        let row: Option<Vec<f64>> = COMBINED_FEATURES
            .iter()
            .map(|f| f.value(s).map(f64::from))
            .collect();
        if let Some(row) = row {
            rows.push(row);
            labels.push(f64::from(u8::from(r.correct)));
        }
    }
    let (bias, weights) = measure::fit_logistic(&rows, &labels, 1e-2);
    Combiner {
        bias: bias as f32,
        weights: COMBINED_FEATURES
            .iter()
            .zip(weights)
            .map(|(f, w)| (*f, w as f32))
            .collect(),
        min_probability: 0.5,
    }
}

/// A task's fit-split items scored by combiners that never saw them: the pooled fit split in
/// five folds by id hash, each fold's items scored by a combiner fitted on the other four.
fn cross_fitted(task: &[&Record], fit_all: &[&Record], seed: u64) -> Vec<Scored> {
    const FOLDS: u64 = 5;
    let fold = |r: &Record| hash(seed ^ 0x5eed, &r.id) % FOLDS;
    let combiners: Vec<Combiner> = (0..FOLDS)
        .map(|k| {
            let rest: Vec<&Record> = fit_all.iter().copied().filter(|r| fold(r) != k).collect();
            fit_combiner(&rest)
        })
        .collect();
    task.iter()
        .map(|r| Scored {
            confidence: Candidate::Combined
                .confidence(r.signals.as_ref(), &combiners[fold(r) as usize]),
            local: f64::from(u8::from(r.correct)),
            strong: 1.0,
        })
        .collect()
}

pub fn analyse(records: &[Record], options: &Options) -> anyhow::Result<Analysis> {
    if records.is_empty() {
        bail!("no records to analyse");
    }
    let split = split(records, options);
    let fit_all: Vec<&Record> = split
        .values()
        .flat_map(|(f, _)| f.iter().copied())
        .collect();
    let report_all: Vec<&Record> = split
        .values()
        .flat_map(|(_, r)| r.iter().copied())
        .collect();
    if report_all.is_empty() || fit_all.is_empty() {
        bail!("too few records to fit on one part and report on the other");
    }
    let real = records.iter().all(|r| r.reference_correct.is_some());
    let mut combiner = fit_combiner(&fit_all);
    let accuracy = |list: &[&Record], get: &dyn Fn(&Record) -> bool| {
        list.iter().filter(|r| get(r)).count() as f64 / list.len().max(1) as f64
    };
    let tasks: Vec<TaskSummary> = split
        .iter()
        .map(|(task, (fit, report))| {
            let all: Vec<&Record> = fit.iter().chain(report).copied().collect();
            TaskSummary {
                task: task.clone(),
                items: all.len(),
                fit: fit.len(),
                local_accuracy: accuracy(&all, &|r| r.correct),
                reference_accuracy: real
                    .then(|| accuracy(&all, &|r| r.reference_correct == Some(true))),
            }
        })
        .collect();
    let candidates: Vec<Candidate> = Feature::ALL
        .iter()
        .map(|f| Candidate::Feature(*f))
        .chain([Candidate::Combined])
        .collect();
    let mut signals = Vec::new();
    for &candidate in &candidates {
        let fit_sets: Vec<Figures> = match candidate {
            // In-sample, a fitted combiner would always look best: its fit-split figure is
            // cross-fitted instead (each fold scored by a combiner fitted on the others).
            Candidate::Combined => split
                .values()
                .map(|(fit, _)| measure::figures(&cross_fitted(fit, &fit_all, options.seed)))
                .collect(),
            Candidate::Feature(_) => split
                .values()
                .map(|(fit, _)| measure::figures(&scored(fit, candidate, &combiner, false)))
                .collect(),
        };
        let report_sets: Vec<Vec<Scored>> = split
            .values()
            .map(|(_, report)| scored(report, candidate, &combiner, false))
            .collect();
        let per_task = split
            .keys()
            .zip(&report_sets)
            .map(|(task, set)| (task.clone(), measure::figures(set)))
            .collect::<BTreeMap<_, _>>();
        let report = measure::macro_average(&per_task.values().copied().collect::<Vec<_>>());
        let cascade = real.then(|| {
            let sets: Vec<Figures> = split
                .values()
                .map(|(_, r)| measure::figures(&scored(r, candidate, &combiner, true)))
                .collect();
            measure::macro_average(&sets)
        });
        signals.push(SignalReport {
            signal: candidate.name(),
            configurable: candidate.configurable(),
            fit_auroc: measure::macro_average(&fit_sets).auroc,
            report,
            intervals: measure::bootstrap(&report_sets, options.bootstrap, options.seed),
            per_task,
            cascade,
        });
    }
    let chosen = candidates
        .iter()
        .zip(&signals)
        .filter(|(c, _)| c.configurable())
        .max_by(|a, b| {
            let key = |s: &SignalReport| s.fit_auroc.unwrap_or(0.0);
            key(a.1).total_cmp(&key(b.1))
        })
        .map(|(c, _)| *c)
        .unwrap_or(Candidate::Feature(Feature::Mean));
    // The threshold, on the fit split pooled over tasks (what a deployment sees is a mix).
    let fit_scored = scored(&fit_all, chosen, &combiner, false);
    let share = match options.target_quality {
        Some(q) => measure::share_for_quality(&measure::curve(&fit_scored), q).unwrap_or(1.0),
        None => options.target_share,
    };
    let fit_values: Vec<f32> = fit_scored.iter().map(|s| s.confidence).collect();
    let oriented = measure::threshold_for_share(&fit_values, share);
    if chosen == Candidate::Combined {
        combiner.min_probability = oriented.clamp(0.0, 1.0);
    }
    let triggers = triggers_for(chosen, oriented, &combiner, options.window);
    let low = |r: &Record| match &r.signals {
        Some(s) => confidence::is_low(&triggers, s),
        None => true,
    };
    let escalated_share =
        |list: &[&Record]| list.iter().filter(|r| low(r)).count() as f64 / list.len().max(1) as f64;
    let cascade_accuracy = |list: &[&Record], real: bool| {
        list.iter()
            .filter(|r| {
                if low(r) {
                    !real || r.reference_correct == Some(true)
                } else {
                    r.correct
                }
            })
            .count() as f64
            / list.len().max(1) as f64
    };
    let threshold = Threshold {
        signal: chosen.name(),
        value: match chosen {
            Candidate::Feature(Feature::MeanEntropy) => -oriented,
            Candidate::Combined => combiner.min_probability,
            _ => oriented,
        },
        fit_share_escalated: escalated_share(&fit_all),
        report_share_escalated: escalated_share(&report_all),
        report_accuracy_local: accuracy(&report_all, &|r| r.correct),
        report_accuracy_cascade: cascade_accuracy(&report_all, false),
        report_accuracy_real_cascade: real.then(|| cascade_accuracy(&report_all, true)),
    };
    let mut curves = Vec::new();
    let pooled = |candidate, real| measure::curve(&scored(&report_all, candidate, &combiner, real));
    curves.push(Line {
        name: format!("{} (chosen)", chosen.name()),
        points: pooled(chosen, false),
    });
    if chosen != Candidate::Feature(Feature::Mean) {
        curves.push(Line {
            name: "mean (baseline)".into(),
            points: pooled(Candidate::Feature(Feature::Mean), false),
        });
    }
    let local = threshold.report_accuracy_local;
    curves.push(Line {
        name: "random".into(),
        points: vec![(0.0, local), (1.0, 1.0)],
    });
    let wrong = 1.0 - local;
    curves.push(Line {
        name: "oracle".into(),
        points: vec![(0.0, local), (wrong, 1.0), (1.0, 1.0)],
    });
    if real {
        curves.push(Line {
            name: format!("{}, real reference tier", chosen.name()),
            points: pooled(chosen, true),
        });
    }
    let oracle_sets: Vec<Figures> = split
        .values()
        .map(|(_, report)| {
            let items: Vec<Scored> = scored(report, Candidate::Combined, &combiner, false)
                .into_iter()
                .map(|s| Scored {
                    confidence: (s.local - s.strong) as f32,
                    ..s
                })
                .collect();
            measure::figures(&items)
        })
        .collect();
    let mut analysis = Analysis {
        oracle: measure::macro_average(&oracle_sets),
        items: records.len(),
        fit_items: fit_all.len(),
        report_items: report_all.len(),
        seed: options.seed,
        tasks,
        signals,
        chosen: chosen.name(),
        combiner,
        threshold,
        curves,
        snippet: String::new(),
    };
    analysis.snippet = snippet(&analysis, chosen, options);
    Ok(analysis)
}

/// The routing triggers the snippet configures (what the router will then do).
fn triggers_for(
    candidate: Candidate,
    oriented: f32,
    combiner: &Combiner,
    window: usize,
) -> Triggers {
    let mut t = Triggers {
        confidence_window: window,
        ..Triggers::default()
    };
    match candidate {
        Candidate::Feature(Feature::Mean) => t.min_mean_logprob = Some(oriented),
        Candidate::Feature(Feature::WindowMin) => t.min_window_logprob = Some(oriented),
        Candidate::Feature(Feature::Q10) => t.min_q10_logprob = Some(oriented),
        Candidate::Feature(Feature::Q25) => t.min_q25_logprob = Some(oriented),
        Candidate::Feature(Feature::Sum) => t.min_sum_logprob = Some(oriented),
        Candidate::Feature(Feature::First) => t.min_first_logprob = Some(oriented),
        Candidate::Feature(Feature::FirstMargin) => t.min_first_margin = Some(oriented),
        Candidate::Feature(Feature::MeanEntropy) => t.max_mean_entropy = Some(-oriented),
        Candidate::Combined => t.combiner = Some(combiner.clone()),
        Candidate::Feature(Feature::Min | Feature::Tokens) => {}
    }
    t
}

fn snippet(a: &Analysis, chosen: Candidate, options: &Options) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Written by `edgellm calibrate` ({} items; fitted on {}, reported on {}, split seed {}).",
        a.items, a.fit_items, a.report_items, a.seed
    );
    let _ = writeln!(
        s,
        "# Signal: {} (fit AUROC {}). Escalates {:.1}% of the fit split, {:.1}% of the report split.",
        chosen.name(),
        fmt(a
            .signals
            .iter()
            .find(|x| x.signal == chosen.name())
            .and_then(|x| x.fit_auroc)),
        a.threshold.fit_share_escalated * 100.0,
        a.threshold.report_share_escalated * 100.0
    );
    let _ = writeln!(
        s,
        "# Merge into [routing]; streams are judged over the first hold_tokens tokens only."
    );
    s.push_str("[routing]\n");
    let _ = writeln!(s, "confidence_window = {}", options.window);
    let v = a.threshold.value;
    match chosen {
        Candidate::Feature(Feature::Mean) => _ = writeln!(s, "min_mean_logprob = {v}"),
        Candidate::Feature(Feature::WindowMin) => _ = writeln!(s, "min_window_logprob = {v}"),
        Candidate::Feature(Feature::Q10) => _ = writeln!(s, "min_q10_logprob = {v}"),
        Candidate::Feature(Feature::Q25) => _ = writeln!(s, "min_q25_logprob = {v}"),
        Candidate::Feature(Feature::Sum) => _ = writeln!(s, "min_sum_logprob = {v}"),
        Candidate::Feature(Feature::First) => _ = writeln!(s, "min_first_logprob = {v}"),
        Candidate::Feature(Feature::FirstMargin) => _ = writeln!(s, "min_first_margin = {v}"),
        Candidate::Feature(Feature::MeanEntropy) => _ = writeln!(s, "max_mean_entropy = {v}"),
        Candidate::Combined => {
            let c = &a.combiner;
            s.push_str("\n[routing.confidence_combiner]\n");
            let _ = writeln!(s, "bias = {}", c.bias);
            let _ = writeln!(s, "min_probability = {}", c.min_probability);
            let weights: Vec<String> = c
                .weights
                .iter()
                .map(|(f, w)| format!("{} = {w}", f.as_str()))
                .collect();
            let _ = writeln!(s, "weights = {{ {} }}", weights.join(", "));
        }
        Candidate::Feature(Feature::Min | Feature::Tokens) => {}
    }
    s
}

fn fmt(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.3}"))
}

fn fmt_interval(v: Option<(f64, f64)>) -> String {
    v.map_or("-".into(), |(a, b)| format!("[{a:.3}, {b:.3}]"))
}

/// The console summary.
pub fn summary(a: &Analysis, elapsed: Duration) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} items in {:.1} s; fitted on {}, reported on {}",
        a.items,
        elapsed.as_secs_f64(),
        a.fit_items,
        a.report_items
    );
    for t in &a.tasks {
        let _ = writeln!(
            s,
            "  task {:<20} {:>5} items, local accuracy {:.3}{}",
            t.task,
            t.items,
            t.local_accuracy,
            t.reference_accuracy
                .map_or(String::new(), |r| format!(", reference {r:.3}"))
        );
    }
    let _ = writeln!(
        s,
        "{:<14} {:>9} {:>22} {:>22} {:>8} {:>8}",
        "signal", "fit AUROC", "AUROC (report, 95%)", "APGR (report, 95%)", "CPT50", "CPT80"
    );
    for x in &a.signals {
        let _ = writeln!(
            s,
            "{:<14} {:>9} {:>22} {:>22} {:>8} {:>8}",
            x.signal,
            fmt(x.fit_auroc),
            format!(
                "{} {}",
                fmt(x.report.auroc),
                fmt_interval(x.intervals.auroc)
            ),
            format!("{} {}", fmt(x.report.apgr), fmt_interval(x.intervals.apgr)),
            fmt(x.report.cpt50),
            fmt(x.report.cpt80)
        );
    }
    let _ = writeln!(
        s,
        "{:<14} {:>9} {:>22} {:>22} {:>8} {:>8}",
        "(oracle)",
        "",
        fmt(a.oracle.auroc),
        fmt(a.oracle.apgr),
        fmt(a.oracle.cpt50),
        fmt(a.oracle.cpt80)
    );
    let t = &a.threshold;
    let _ = writeln!(
        s,
        "chosen: {} = {:.4}: escalates {:.1}% (fit) / {:.1}% (report); report accuracy {:.3} local -> {:.3} cascade{}",
        t.signal,
        t.value,
        t.fit_share_escalated * 100.0,
        t.report_share_escalated * 100.0,
        t.report_accuracy_local,
        t.report_accuracy_cascade,
        t.report_accuracy_real_cascade
            .map_or(String::new(), |r| format!(
                " ({r:.3} with the real reference)"
            ))
    );
    s
}

/// Writes report.json, report.md, curve.svg and routing.toml into `dir`.
pub fn write(dir: &Path, a: &Analysis, source: &str, elapsed: Duration) -> anyhow::Result<()> {
    let put = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).with_context(|| format!("cannot write {name}"))
    };
    put("report.json", &serde_json::to_string_pretty(a)?)?;
    put("routing.toml", &a.snippet)?;
    put("curve.svg", &svg(&a.curves))?;
    put("report.md", &markdown(a, source, elapsed))?;
    Ok(())
}

fn markdown(a: &Analysis, source: &str, elapsed: Duration) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Calibration report\n");
    let _ = writeln!(
        s,
        "Set `{source}`: {} items in {:.1} s. Thresholds and the combiner were fitted on {} items \
         (split seed {}); every figure below is on the other {} items, macro-averaged over the \
         tasks, against an always-correct reference unless marked. Intervals: percentile \
         bootstrap, 95%.\n",
        a.items,
        elapsed.as_secs_f64(),
        a.fit_items,
        a.seed,
        a.report_items
    );
    s.push_str("| task | items | local accuracy | reference accuracy |\n|---|---|---|---|\n");
    for t in &a.tasks {
        let _ = writeln!(
            s,
            "| {} | {} | {:.3} | {} |",
            t.task,
            t.items,
            t.local_accuracy,
            fmt(t.reference_accuracy)
        );
    }
    s.push_str("\n| signal | fit AUROC | AUROC | AUROC 95% | APGR | APGR 95% | CPT(50%) | CPT(80%) | cascade APGR |\n|---|---|---|---|---|---|---|---|---|\n");
    for x in &a.signals {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            x.signal,
            fmt(x.fit_auroc),
            fmt(x.report.auroc),
            fmt_interval(x.intervals.auroc),
            fmt(x.report.apgr),
            fmt_interval(x.intervals.apgr),
            fmt(x.report.cpt50),
            fmt(x.report.cpt80),
            fmt(x.cascade.and_then(|c| c.apgr))
        );
    }
    let _ = writeln!(
        s,
        "| (oracle: every wrong answer first) | | | | {} | | {} | {} | |",
        fmt(a.oracle.apgr),
        fmt(a.oracle.cpt50),
        fmt(a.oracle.cpt80)
    );
    s.push_str("\nAUROC per task (report split):\n\n| signal |");
    let tasks: Vec<&String> = a.tasks.iter().map(|t| &t.task).collect();
    for t in &tasks {
        let _ = write!(s, " {t} |");
    }
    s.push_str("\n|---|");
    for _ in &tasks {
        s.push_str("---|");
    }
    s.push('\n');
    for x in &a.signals {
        let _ = write!(s, "| {} |", x.signal);
        for t in &tasks {
            let _ = write!(s, " {} |", fmt(x.per_task.get(*t).and_then(|f| f.auroc)));
        }
        s.push('\n');
    }
    let t = &a.threshold;
    let _ = writeln!(
        s,
        "\nChosen: **{}** (best fit-split AUROC among the signals a `[routing]` key can use), \
         threshold {:.4}: escalates {:.1}% of the fit split and {:.1}% of the report split; \
         report accuracy {:.3} local only, {:.3} with those escalated to an always-correct \
         tier{}.\n",
        t.signal,
        t.value,
        t.fit_share_escalated * 100.0,
        t.report_share_escalated * 100.0,
        t.report_accuracy_local,
        t.report_accuracy_cascade,
        t.report_accuracy_real_cascade
            .map_or(String::new(), |r| format!(
                ", {r:.3} with the real reference tier"
            ))
    );
    let _ = writeln!(s, "```toml\n{}```", a.snippet);
    s
}

/// The cost-quality chart: share escalated (x) against accuracy (y), one line per curve.
pub fn svg(lines: &[Line]) -> String {
    const W: f64 = 720.0;
    const H: f64 = 480.0;
    const L: f64 = 70.0;
    const R: f64 = 520.0;
    const T: f64 = 30.0;
    const B: f64 = 420.0;
    const COLORS: [&str; 5] = ["#1f77b4", "#ff7f0e", "#7f7f7f", "#2ca02c", "#d62728"];
    let lowest = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(1.0f64, f64::min);
    let y0 = (lowest * 10.0).floor() / 10.0;
    let x = |v: f64| L + v * (R - L);
    let y = |v: f64| B - (v - y0) / (1.0 - y0).max(1e-9) * (B - T);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect x="0" y="0" width="{W}" height="{H}" fill="white"/>"#
    );
    let _ = writeln!(
        s,
        r#"<line x1="{L}" y1="{B}" x2="{R}" y2="{B}" stroke="black"/><line x1="{L}" y1="{T}" x2="{L}" y2="{B}" stroke="black"/>"#
    );
    for i in 0..=10 {
        let v = f64::from(i) / 10.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{v:.1}</text>"#,
            x(v),
            B + 16.0
        );
        let yv = y0 + (1.0 - y0) * v;
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{:.1}" text-anchor="end">{yv:.2}</text><line x1="{L}" y1="{:.1}" x2="{R}" y2="{:.1}" stroke="#eee"/>"##,
            L - 6.0,
            y(yv) + 4.0,
            y(yv),
            y(yv)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">share of requests escalated</text>"#,
        (L + R) / 2.0,
        B + 40.0
    );
    let _ = writeln!(
        s,
        r#"<text x="20" y="{}" transform="rotate(-90 20 {})" text-anchor="middle">accuracy (report split)</text>"#,
        (T + B) / 2.0,
        (T + B) / 2.0
    );
    for (i, line) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        // At most ~300 points a line: the chart is 450 pixels wide.
        let step = line.points.len().div_ceil(300).max(1);
        let path: Vec<String> = line
            .points
            .iter()
            .enumerate()
            .filter(|(k, _)| k % step == 0 || *k == line.points.len() - 1)
            .map(|(_, &(a, b))| format!("{:.1},{:.1}", x(a), y(b)))
            .collect();
        let dash = if line.name == "random" || line.name == "oracle" {
            r#" stroke-dasharray="5,4""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{}"/>"#,
            path.join(" ")
        );
        let ly = T + 10.0 + 20.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            R + 15.0,
            R + 40.0,
            R + 46.0,
            ly + 4.0,
            crate::bench::chart::escape(&line.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: usize, task: &str, mean: f32, correct: bool) -> Record {
        Record {
            id: format!("{task}-{id}"),
            task: task.into(),
            answer: String::new(),
            correct,
            signals: Some(Signals {
                mean,
                window_min: mean,
                min: mean,
                q10: mean,
                q25: mean,
                sum: mean,
                first: mean,
                tokens: 1,
                first_margin: Some(-mean),
                mean_entropy: Some(-mean),
            }),
            reference_answer: None,
            reference_correct: None,
            millis: 1,
        }
    }

    #[test]
    fn a_separating_signal_is_reported_and_its_threshold_escalates_the_target_share() {
        // Correct answers are confident (mean near 0), wrong ones are not, with some overlap.
        let records: Vec<Record> = (0..200)
            .map(|i| {
                let correct = i % 3 != 0;
                let noise = (i % 7) as f32 * 0.1;
                let mean = if correct { -0.3 - noise } else { -0.9 - noise };
                record(i, if i % 2 == 0 { "a" } else { "b" }, mean, correct)
            })
            .collect();
        let options = Options {
            fit_share: 0.5,
            target_share: 0.3,
            target_quality: None,
            bootstrap: 100,
            seed: 3,
            window: 4,
        };
        let a = analyse(&records, &options).unwrap();
        assert_eq!(a.items, 200);
        assert_eq!(a.fit_items + a.report_items, 200);
        let mean = a.signals.iter().find(|s| s.signal == "mean").unwrap();
        assert!(mean.report.auroc.unwrap() > 0.8, "{mean:?}");
        assert!(
            (a.threshold.fit_share_escalated - 0.3).abs() < 0.03,
            "{:?}",
            a.threshold
        );
        assert!(a.threshold.report_accuracy_cascade > a.threshold.report_accuracy_local);
        // The snippet is a [routing] table the config loader takes.
        assert!(a.snippet.contains("[routing]"), "{}", a.snippet);
        let raw: toml::Value = toml::from_str(&a.snippet).unwrap();
        assert!(raw.get("routing").is_some());
        // Same seed, same split and figures; another seed, another split.
        let again = analyse(&records, &options).unwrap();
        assert_eq!(again.threshold.value, a.threshold.value);
        let svg = svg(&a.curves);
        assert!(svg.starts_with("<svg") && svg.contains("oracle") && svg.contains("polyline"));
    }

    #[test]
    fn a_target_quality_escalates_as_little_as_reaches_it() {
        let records: Vec<Record> = (0..100)
            .map(|i| record(i, "t", -(i as f32) / 50.0, i < 60))
            .collect();
        let options = Options {
            fit_share: 0.5,
            target_share: 0.0,
            target_quality: Some(0.8),
            bootstrap: 20,
            seed: 1,
            window: 4,
        };
        let a = analyse(&records, &options).unwrap();
        // Local accuracy 0.6; wrong answers are exactly the least confident: reaching 0.8
        // takes half of them, 20% of the traffic.
        assert!(
            (a.threshold.fit_share_escalated - 0.2).abs() < 0.05,
            "{:?}",
            a.threshold
        );
    }
}
