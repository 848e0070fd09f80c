//! The `[redaction]` configuration: the raw serde types, their errors, and the checks that turn
//! them into categories, user regexes and word lists for [`super::Redactor::new`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Deserialize;

use super::CategoryInfo;
use super::detectors::{PERSONAL_CATEGORIES, SECRET_CATEGORIES};
use super::scan;

/// The `[redaction]` section, as written by the user. Every field is optional.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RedactionConfig {
    /// Category name -> policy; categories not listed are redacted.
    pub policy: BTreeMap<String, CategoryPolicy>,
    /// Extra named patterns; each name becomes a category (placeholder label: the name in
    /// upper case). With a capture group, group 1 is the value redacted.
    pub patterns: Vec<NamedPattern>,
    /// Device serial-number patterns (category `serial`), same capture rule as `patterns`.
    pub serial_patterns: Vec<String>,
    /// Regions (ISO 3166 alpha-2) whose national phone formats are recognised without a `+`
    /// country code; unset: [`DEFAULT_PHONE_REGIONS`].
    pub phone_regions: Option<Vec<String>>,
    /// Values that are never redacted even when a detector matches them (whole value,
    /// ASCII case-insensitive).
    pub allow_words: Vec<String>,
    /// Words that are always redacted (category `deny_word`; case-insensitive, whole words).
    pub deny_words: Vec<String>,
    /// For tests only: any text containing this string makes [`Session::redact`] fail as an
    /// internal detector fault would, so the fail-closed path can be exercised end to end.
    pub test_fault_trigger: Option<String>,
}

/// One user pattern: `{ name = "ticket", regex = "TCK-[0-9]{6}" }`.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NamedPattern {
    pub name: String,
    pub regex: String,
}

/// What happens to a category's findings.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CategoryPolicy {
    /// Replace with a placeholder, restore in the answer.
    #[default]
    Redact,
    /// Refuse to send the request anywhere remote (the caller keeps it local).
    Block,
    /// Do not look for it at all.
    Allow,
}

/// A configuration the redactor cannot be built from.
#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    #[error("redaction.policy: unknown category `{name}` (known: {known})")]
    UnknownCategory { name: String, known: String },
    #[error(
        "redaction.patterns: name `{name}` must be snake_case ([a-z][a-z0-9_]*, at most 40 bytes)"
    )]
    BadPatternName { name: String },
    #[error("redaction.patterns: name `{name}` is already a category")]
    DuplicatePatternName { name: String },
    #[error("redaction.{field}: not a usable regex: {source}")]
    BadRegex {
        field: String,
        #[source]
        source: regex::Error,
    },
    #[error("redaction.{field}: the regex matches the empty string")]
    EmptyMatch { field: String },
    #[error("redaction.{field}: empty word")]
    EmptyWord { field: String },
    #[error("redaction: allow_words[{allow}] and deny_words[{deny}] are the same word")]
    AllowDenyConflict { allow: usize, deny: usize },
    #[error(
        "redaction.phone_regions[{index}]: `{region}` is not a region code (ISO 3166 alpha-2, like `US`, `DE`, `BR`)"
    )]
    BadPhoneRegion { index: usize, region: String },
    #[error("redaction: built-in `{category}` detector does not compile: {source}")]
    Builtin {
        category: &'static str,
        #[source]
        source: regex::Error,
    },
}

/// Prints counts only: allow and deny words and patterns can themselves be sensitive.
impl fmt::Debug for RedactionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedactionConfig")
            .field("policy", &self.policy)
            .field("patterns", &self.patterns.len())
            .field("serial_patterns", &self.serial_patterns.len())
            .field("phone_regions", &self.phone_regions)
            .field("allow_words", &self.allow_words.len())
            .field("deny_words", &self.deny_words.len())
            .field("test_fault_trigger", &self.test_fault_trigger.is_some())
            .finish()
    }
}

/// Built-in and user categories in priority order, with their policies; checks names.
pub(super) fn category_list(config: &RedactionConfig) -> Result<Vec<CategoryInfo>, RedactError> {
    let builtin = |(name, label): &(&str, &str)| CategoryInfo {
        name: (*name).to_string(),
        label: (*label).to_string(),
        policy: CategoryPolicy::Redact,
    };
    let mut categories: Vec<CategoryInfo> = SECRET_CATEGORIES.iter().map(builtin).collect();
    let builtin_names: Vec<&str> = SECRET_CATEGORIES
        .iter()
        .chain(PERSONAL_CATEGORIES)
        .map(|(n, _)| *n)
        .collect();
    for pattern in &config.patterns {
        let name = &pattern.name;
        let snake = name.len() <= 40
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !snake {
            return Err(RedactError::BadPatternName { name: name.clone() });
        }
        if builtin_names.contains(&name.as_str()) || categories.iter().any(|c| &c.name == name) {
            // Two patterns may not share a name either: each is its own category.
            return Err(RedactError::DuplicatePatternName { name: name.clone() });
        }
        categories.push(CategoryInfo {
            name: name.clone(),
            label: name.to_ascii_uppercase(),
            policy: CategoryPolicy::Redact,
        });
    }
    categories.extend(PERSONAL_CATEGORIES.iter().map(builtin));
    for (name, policy) in &config.policy {
        match categories.iter_mut().find(|c| &c.name == name) {
            Some(c) => c.policy = *policy,
            None => {
                let known = categories
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(RedactError::UnknownCategory {
                    name: name.clone(),
                    known,
                });
            }
        }
    }
    Ok(categories)
}

pub(super) fn user_regex(field: &str, pattern: &str) -> Result<regex::Regex, RedactError> {
    let regex = scan::compile(pattern, false).map_err(|source| RedactError::BadRegex {
        field: field.to_string(),
        source,
    })?;
    if regex.is_match("") {
        return Err(RedactError::EmptyMatch {
            field: field.to_string(),
        });
    }
    Ok(regex)
}

/// One case-insensitive alternation of the deny words, longest first, with word boundaries
/// on the sides that start or end with a word character.
pub(super) fn deny_regex(words: &[String]) -> Result<Option<regex::Regex>, RedactError> {
    let mut sorted: Vec<&String> = Vec::with_capacity(words.len());
    for (i, w) in words.iter().enumerate() {
        if w.trim().is_empty() {
            return Err(RedactError::EmptyWord {
                field: format!("deny_words[{i}]"),
            });
        }
        sorted.push(w);
    }
    if sorted.is_empty() {
        return Ok(None);
    }
    sorted.sort_by_key(|w| std::cmp::Reverse(w.len()));
    let word_char = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let alternatives: Vec<String> = sorted
        .iter()
        .map(|w| {
            let w = w.trim();
            let start = if word_char(w.chars().next()) {
                r"\b"
            } else {
                ""
            };
            let end = if word_char(w.chars().next_back()) {
                r"\b"
            } else {
                ""
            };
            format!("{start}{}{end}", regex::escape(w))
        })
        .collect();
    let pattern = format!("(?i:{})", alternatives.join("|"));
    scan::compile(&pattern, false)
        .map(Some)
        .map_err(|source| RedactError::BadRegex {
            field: "deny_words".into(),
            source,
        })
}

pub(super) fn allow_set(
    allow: &[String],
    deny: &[String],
) -> Result<BTreeSet<String>, RedactError> {
    let mut set = BTreeSet::new();
    for (i, w) in allow.iter().enumerate() {
        let w = w.trim().to_ascii_lowercase();
        if w.is_empty() {
            return Err(RedactError::EmptyWord {
                field: format!("allow_words[{i}]"),
            });
        }
        if let Some(j) = deny.iter().position(|d| d.trim().eq_ignore_ascii_case(&w)) {
            return Err(RedactError::AllowDenyConflict { allow: i, deny: j });
        }
        set.insert(w);
    }
    Ok(set)
}

/// The regions whose national phone formats are recognised when `phone_regions` is unset.
pub const DEFAULT_PHONE_REGIONS: &[&str] = &[
    "US", "CA", "GB", "DE", "FR", "ES", "IT", "NL", "PL", "BR", "MX", "CN", "IN",
];

/// Compiled regexes phonenumber's metadata may keep. Its own default (100) is less than the
/// patterns of a dozen regions, and a miss recompiles one (tens of milliseconds a number).
const PHONE_REGEX_CACHE: usize = 1024;

/// Sizes phonenumber's regex cache, once per process.
fn phone_cache() {
    static SIZED: std::sync::Once = std::sync::Once::new();
    SIZED.call_once(|| {
        if let Ok(mut cache) = phonenumber::metadata::DATABASE.cache().lock() {
            *cache = regex_cache::RegexCache::new(PHONE_REGEX_CACHE);
        }
    });
}

/// `phone_regions` checked and resolved (the defaults when unset).
pub(super) fn phone_regions(
    config: &RedactionConfig,
) -> Result<Vec<super::checks::PhoneRegion>, RedactError> {
    phone_cache();
    let given: Vec<String> = match &config.phone_regions {
        Some(regions) => regions.clone(),
        None => DEFAULT_PHONE_REGIONS
            .iter()
            .map(|r| r.to_string())
            .collect(),
    };
    given
        .iter()
        .enumerate()
        .map(|(index, region)| {
            region
                .to_ascii_uppercase()
                .parse::<phonenumber::country::Id>()
                .ok()
                .filter(|_| region.len() == 2)
                .and_then(super::checks::PhoneRegion::new)
                .ok_or_else(|| RedactError::BadPhoneRegion {
                    index,
                    region: region.clone(),
                })
        })
        .collect()
}
