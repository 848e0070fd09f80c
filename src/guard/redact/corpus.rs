//! Precision and recall of every category over the labelled corpus
//! (`tests/data/redaction/corpus.jsonl`). `--nocapture` prints the table that
//! `docs/redaction.md` shows.

use std::collections::{BTreeMap, BTreeSet};

use super::{RedactionConfig, Redactor};

const CORPUS: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/redaction/corpus.jsonl"
));

/// The serial pattern the corpus's `serial` lines are written for.
pub(super) const CORPUS_SERIAL_PATTERN: &str = r#"(?i:\b(?:s/n|sn|serial(?: number| no\.?)?)["']?[:#]?[ ]*["']?)([A-Z0-9][A-Z0-9-]{6,20}[A-Z0-9])\b"#;

/// Floors per category; every category is held to the targets (recall 1.0, precision 0.95).
const RECALL_FLOOR: f64 = 1.0;
const PRECISION_FLOOR: f64 = 0.95;

#[derive(serde::Deserialize)]
struct Line {
    text: String,
    expect: Vec<Expected>,
}

#[derive(serde::Deserialize)]
struct Expected {
    category: String,
    value: String,
}

#[derive(Default)]
struct Tally {
    true_pos: usize,
    false_pos: usize,
    false_neg: usize,
}

#[test]
fn corpus_precision_recall() {
    let config = RedactionConfig {
        serial_patterns: vec![CORPUS_SERIAL_PATTERN.into()],
        ..Default::default()
    };
    let redactor = Redactor::new(&config).unwrap();
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    for name in redactor.category_names() {
        if name != "deny_word" {
            tallies.insert(name.to_string(), Tally::default());
        }
    }
    let mut mistakes = Vec::new();
    let mut lines = 0;
    for (n, raw) in CORPUS
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        lines += 1;
        let line: Line =
            serde_json::from_str(raw).unwrap_or_else(|e| panic!("corpus line {}: {e}", n + 1));
        let expected: BTreeSet<(String, String)> = line
            .expect
            .into_iter()
            .map(|e| (e.category, e.value))
            .collect();
        let found: BTreeSet<(String, String)> = redactor
            .detect(&line.text)
            .unwrap()
            .into_iter()
            .map(|c| {
                (
                    redactor.inner.categories[c.category].name.clone(),
                    line.text[c.span].to_string(),
                )
            })
            .collect();
        for item in expected.union(&found) {
            let tally = tallies.entry(item.0.clone()).or_default();
            match (expected.contains(item), found.contains(item)) {
                (true, true) => tally.true_pos += 1,
                (true, false) => {
                    tally.false_neg += 1;
                    mistakes.push(format!("line {}: missed {item:?}", n + 1));
                }
                _ => {
                    tally.false_pos += 1;
                    mistakes.push(format!("line {}: false positive {item:?}", n + 1));
                }
            }
        }
    }
    println!("\ncorpus: {lines} lines\n");
    println!("| category | expected | found | true pos | precision | recall |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut below = Vec::new();
    for (name, t) in &tallies {
        let precision = ratio(t.true_pos, t.true_pos + t.false_pos);
        let recall = ratio(t.true_pos, t.true_pos + t.false_neg);
        println!(
            "| {name} | {} | {} | {} | {precision:.3} | {recall:.3} |",
            t.true_pos + t.false_neg,
            t.true_pos + t.false_pos,
            t.true_pos
        );
        if precision < PRECISION_FLOOR || recall < RECALL_FLOOR {
            below.push(name.clone());
        }
        assert!(
            t.true_pos + t.false_neg > 0 || name == "serial",
            "category {name} has no positive in the corpus"
        );
    }
    for m in &mistakes {
        println!("{m}");
    }
    assert!(lines >= 300, "corpus has only {lines} lines");
    assert!(below.is_empty(), "below the floors: {below:?}");
}

/// 1.0 for an empty denominator (nothing expected and nothing found is perfect).
fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        1.0
    } else {
        num as f64 / den as f64
    }
}
