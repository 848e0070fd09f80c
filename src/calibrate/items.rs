//! The calibration set (JSON lines) and how an answer is checked against it. Pure but for the
//! file reads.

use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;

use super::Record;

/// The longest prompt an item may carry (the set is a file a user made, not trusted input, but
/// a runaway line should not take the machine's memory).
const MAX_PROMPT_BYTES: usize = 256 * 1024;

/// How an answer is compared with the gold answers (after normalisation: lower case, no
/// punctuation, no articles, single spaces, as SQuAD's and TriviaQA's scorers do).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Match {
    /// The whole answer equals a gold answer.
    #[default]
    Exact,
    /// The answer starts with a gold answer (whole words).
    Prefix,
    /// A gold answer appears in the answer (whole words).
    Contains,
    /// The first number in the answer equals a gold answer's number.
    Number,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    pub id: String,
    #[serde(default = "default_task")]
    pub task: String,
    /// Sent as is (a completion prompt: few-shot prompts suit base models).
    pub prompt: String,
    /// Gold answers; none for an unlabelled set (`--reference` labels it).
    #[serde(default)]
    pub answers: Option<Vec<String>>,
    #[serde(default, rename = "match")]
    pub matching: Match,
    pub max_tokens: Option<u32>,
    /// Stop strings (default: a newline).
    pub stop: Option<Vec<String>>,
}

fn default_task() -> String {
    "default".into()
}

impl Item {
    pub fn is_correct(&self, answer: &str) -> bool {
        let Some(golds) = &self.answers else {
            return false;
        };
        golds
            .iter()
            .any(|gold| matches(self.matching, answer, gold))
    }
}

/// Whether `answer` matches `gold` under `how`.
pub fn matches(how: Match, answer: &str, gold: &str) -> bool {
    if how == Match::Number {
        return match (first_number(answer), first_number(gold)) {
            (Some(a), Some(g)) => (a - g).abs() < 1e-9,
            _ => false,
        };
    }
    let answer = normalize(answer);
    let gold = normalize(gold);
    if gold.is_empty() {
        return answer.is_empty();
    }
    match how {
        Match::Exact => answer == gold,
        Match::Prefix => answer == gold || answer.starts_with(&format!("{gold} ")),
        Match::Contains => format!(" {answer} ").contains(&format!(" {gold} ")),
        Match::Number => unreachable!(),
    }
}

/// Two answers agree (an unlabelled set's label): equal after normalisation, or the same number.
pub fn agree(a: &str, b: &str) -> bool {
    let (na, nb) = (normalize(a), normalize(b));
    if !na.is_empty() && na == nb {
        return true;
    }
    let numeric = |s: &str| s.chars().any(|c| c.is_ascii_digit());
    numeric(a) && numeric(b) && first_number(a).is_some() && first_number(a) == first_number(b)
}

/// Lower case, punctuation to spaces, articles (a, an, the) dropped, single spaces.
pub fn normalize(text: &str) -> String {
    let lowered: String = text
        .to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    lowered
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first number written in the text (`-12`, `3.5`, `1,024`).
pub fn first_number(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let negative = i > 0 && bytes[i - 1] == b'-';
            let mut j = i;
            let mut digits = String::new();
            while j < bytes.len() {
                let c = bytes[j];
                if c.is_ascii_digit() {
                    digits.push(c as char);
                } else if c == b','
                    && bytes.len() >= j + 4
                    && bytes[j + 1..j + 4].iter().all(u8::is_ascii_digit)
                    && !bytes.get(j + 4).is_some_and(u8::is_ascii_digit)
                {
                    // A thousands separator: skip it.
                } else if c == b'.' && bytes.get(j + 1).is_some_and(u8::is_ascii_digit) {
                    digits.push('.');
                } else {
                    break;
                }
                j += 1;
            }
            let value: f64 = digits.parse().ok()?;
            return Some(if negative { -value } else { value });
        }
        i += 1;
    }
    None
}

/// Reads the set: every line an item; ids unique; at most `limit` items per task.
pub fn read_set(path: &Path, limit: Option<usize>) -> anyhow::Result<Vec<Item>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the set {}", path.display()))?;
    let mut items = Vec::new();
    let mut ids = std::collections::HashSet::new();
    let mut per_task: std::collections::HashMap<String, usize> = Default::default();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let item: Item = serde_json::from_str(line)
            .with_context(|| format!("{} line {}", path.display(), n + 1))?;
        if item.prompt.len() > MAX_PROMPT_BYTES {
            bail!(
                "{} line {}: the prompt is over {MAX_PROMPT_BYTES} bytes",
                path.display(),
                n + 1
            );
        }
        if item.answers.as_ref().is_some_and(Vec::is_empty) {
            bail!(
                "{} line {}: \"answers\" is empty (leave it out for an unlabelled item)",
                path.display(),
                n + 1
            );
        }
        if !ids.insert(item.id.clone()) {
            bail!(
                "{} line {}: id {:?} is used twice",
                path.display(),
                n + 1,
                item.id
            );
        }
        let count = per_task.entry(item.task.clone()).or_default();
        if limit.is_some_and(|l| *count >= l) {
            continue;
        }
        *count += 1;
        items.push(item);
    }
    if items.is_empty() {
        bail!("{}: no items", path.display());
    }
    Ok(items)
}

/// The records of an earlier run.
pub fn read_records(path: &Path) -> anyhow::Result<Vec<Record>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the records {}", path.display()))?;
    let records: Vec<Record> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(n, line)| {
            serde_json::from_str(line).with_context(|| format!("{} line {}", path.display(), n + 1))
        })
        .collect::<anyhow::Result<_>>()?;
    if records.is_empty() {
        bail!("{}: no records", path.display());
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_and_matching() {
        assert_eq!(normalize("  The Eiffel-Tower! "), "eiffel tower");
        assert!(matches(Match::Exact, "Paris.", "paris"));
        assert!(!matches(Match::Exact, "Paris, France", "paris"));
        assert!(matches(Match::Prefix, "Paris, France", "paris"));
        assert!(!matches(Match::Prefix, "Parisian", "paris"));
        assert!(matches(Match::Contains, "it is in Paris now", "Paris"));
        assert!(!matches(Match::Contains, "Parisian", "paris"));
        assert!(matches(Match::Number, "The answer is 1,024.", "1024"));
        assert!(matches(Match::Number, "-7 apples", "-7"));
        assert!(matches(Match::Number, "3.50", "3.5"));
        assert!(!matches(Match::Number, "12", "13"));
        assert!(!matches(Match::Number, "none", "0"));
        assert!(agree("Yes.", "yes"));
        assert!(agree("42 people", "It is 42"));
        assert!(!agree("", ""));
        assert!(!agree("no", "yes"));
    }

    #[test]
    fn first_number_reads_what_is_written() {
        assert_eq!(first_number("x = 12, y = 4"), Some(12.0));
        assert_eq!(first_number("1,5"), Some(1.0));
        assert_eq!(first_number("10,000 km"), Some(10000.0));
        assert_eq!(first_number("v2.5"), Some(2.5));
        assert_eq!(first_number("end."), None);
    }

    #[test]
    fn the_set_is_checked() {
        let dir = std::env::temp_dir().join(format!("edgellm-set-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let ok = write(
            "ok.jsonl",
            "{\"id\":\"a\",\"task\":\"t\",\"prompt\":\"1+1=\",\"answers\":[\"2\"],\"match\":\"number\"}\n\n{\"id\":\"b\",\"task\":\"t\",\"prompt\":\"2+2=\",\"answers\":[\"4\"]}\n{\"id\":\"c\",\"prompt\":\"x\"}\n",
        );
        let items = read_set(&ok, None).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].matching, Match::Number);
        assert_eq!(items[2].task, "default");
        assert!(items[2].answers.is_none());
        assert_eq!(read_set(&ok, Some(1)).unwrap().len(), 2);
        let twice = write(
            "twice.jsonl",
            "{\"id\":\"a\",\"prompt\":\"x\"}\n{\"id\":\"a\",\"prompt\":\"y\"}\n",
        );
        assert!(
            read_set(&twice, None)
                .unwrap_err()
                .to_string()
                .contains("used twice")
        );
        let unknown = write(
            "unknown.jsonl",
            "{\"id\":\"a\",\"prompt\":\"x\",\"gold\":1}\n",
        );
        let error = format!("{:#}", read_set(&unknown, None).unwrap_err());
        assert!(
            error.contains("line 1") && error.contains("gold"),
            "{error}"
        );
        let empty = write(
            "empty.jsonl",
            "{\"id\":\"a\",\"prompt\":\"x\",\"answers\":[]}\n",
        );
        assert!(
            read_set(&empty, None)
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
