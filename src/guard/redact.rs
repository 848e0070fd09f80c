//! Reversible redaction of secrets and personal data before a request leaves the device.
//!
//! A [`Redactor`] is compiled once from the `[redaction]` configuration. Each remote request gets
//! a [`Session`]: every text that would leave (messages, prompts, tool arguments) goes through
//! [`Session::redact`], which replaces each detected value with a numbered placeholder
//! (`<EMAIL_1>`, `<API_KEY_1>`; the same value gets the same placeholder for the whole request).
//! The answer is put back with [`Session::restore`] or, when streamed, a [`Restorer`].
//!
//! Invariants:
//! - pure: no IO, no logging; nothing here prints a value (the `Debug` impls print counts);
//! - fail closed: a block policy or an internal fault is an `Err` ([`Refused`]), never a
//!   partially redacted text; the caller keeps the request local;
//! - the mapping lives in the session (and in restorers cloned from it) and dies with it.
//!
//! What is detected, the policies and the streaming rule are described in `docs/redaction.md`.

mod address;
mod checks;
mod config;
#[cfg(test)]
mod corpus;
mod detectors;
mod person;
mod phone_fast;
mod restore;
mod scan;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

pub use self::config::{
    CategoryPolicy, DEFAULT_PHONE_REGIONS, NamedPattern, RedactError, RedactionConfig,
};
use self::config::{allow_set, category_list, deny_regex, user_regex};
use self::restore::RestoreTable;
pub use self::restore::Restorer;
use self::scan::{Candidate, Detector};

/// Why a text may not leave the device. Neither variant carries a value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// A category with the `block` policy was found (names sorted, deduplicated).
    #[error("blocked by redaction policy: {}", categories.join(", "))]
    Blocked { categories: Vec<String> },
    /// The scan itself failed; fail closed.
    #[error("redaction failed: {reason}")]
    Fault { reason: String },
}

/// One category: its stable name, placeholder label and policy.
struct CategoryInfo {
    name: String,
    label: String,
    policy: CategoryPolicy,
}

struct Inner {
    /// In priority order: lower index wins an overlap of equal standing.
    categories: Vec<CategoryInfo>,
    detectors: Vec<Detector>,
    allow_words: BTreeSet<String>,
    fault_trigger: Option<String>,
}

/// The compiled detectors and policies; cheap to clone, shared by all requests.
#[derive(Clone)]
pub struct Redactor {
    inner: Arc<Inner>,
}

impl Redactor {
    /// Validates the configuration and compiles every detector once.
    pub fn new(config: &RedactionConfig) -> Result<Redactor, RedactError> {
        let categories = category_list(config)?;
        let index = |name: &str| categories.iter().position(|c| c.name == name);
        let enabled = |i: usize| categories[i].policy != CategoryPolicy::Allow;
        let mut detectors = detectors::builtin_detectors(index, enabled)
            .map_err(|(category, source)| RedactError::Builtin { category, source })?;
        let regions = config::phone_regions(config)?;
        if let Some(phone) = index("phone").filter(|i| enabled(*i)) {
            detectors.extend(
                detectors::phone_detectors(phone, regions).map_err(|source| {
                    RedactError::Builtin {
                        category: "phone",
                        source,
                    }
                })?,
            );
        }
        let user = config
            .patterns
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("patterns[{i}]"), p.name.as_str(), p.regex.clone()));
        let serial = config
            .serial_patterns
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("serial_patterns[{i}]"), "serial", p.clone()));
        for (field, name, pattern) in user.chain(serial) {
            let category = index(name)
                .ok_or_else(|| RedactError::DuplicatePatternName { name: name.into() })?;
            let regex = user_regex(&field, &pattern)?;
            if enabled(category) {
                detectors.push(Detector::new(category, regex, |h| Some(h.value.clone())));
            }
        }
        if let Some(regex) = deny_regex(&config.deny_words)? {
            let category = index("deny_word").ok_or_else(|| RedactError::DuplicatePatternName {
                name: "deny_word".into(),
            })?;
            if enabled(category) {
                detectors.push(Detector::new(category, regex, |h| Some(h.value.clone())));
            }
        }
        let allow_words = allow_set(&config.allow_words, &config.deny_words)?;
        let fault_trigger = config.test_fault_trigger.clone().filter(|t| !t.is_empty());
        Ok(Redactor {
            inner: Arc::new(Inner {
                categories,
                detectors,
                allow_words,
                fault_trigger,
            }),
        })
    }

    /// A fresh mapping for one request.
    pub fn session(&self) -> Session {
        Session {
            redactor: self.clone(),
            mapping: Mapping::default(),
        }
    }

    /// Every category name this redactor knows, built-in and user-defined, in priority order.
    pub fn category_names(&self) -> Vec<&str> {
        self.inner
            .categories
            .iter()
            .map(|c| c.name.as_str())
            .collect()
    }

    /// What would be redacted in `text`: (category name, byte span), sorted by position, before
    /// any policy. For `edgellm redact` and evaluations; requests use [`Session::redact`].
    pub fn findings(&self, text: &str) -> Result<Vec<(&str, std::ops::Range<usize>)>, Refused> {
        Ok(self
            .detect(text)?
            .into_iter()
            .map(|c| (self.inner.categories[c.category].name.as_str(), c.span))
            .collect())
    }

    /// The accepted detections in `text`, sorted by position, before any policy.
    fn detect(&self, text: &str) -> Result<Vec<Candidate>, Refused> {
        if self
            .inner
            .fault_trigger
            .as_deref()
            .is_some_and(|t| text.contains(t))
        {
            return Err(Refused::Fault {
                reason: "injected fault (redaction.test_fault_trigger)".into(),
            });
        }
        let mut candidates = Vec::new();
        for detector in &self.inner.detectors {
            detector.scan(text, &mut candidates);
        }
        candidates.retain(|c| {
            text.get(c.span.clone())
                .is_none_or(|v| !self.inner.allow_words.contains(&v.to_ascii_lowercase()))
        });
        let found = scan::resolve(candidates);
        // Invariant: sorted, disjoint, on character boundaries. Anything else is a detector
        // bug, and a bug here must not let text out half-redacted.
        let mut last_end = 0;
        for c in &found {
            if c.span.start < last_end || c.span.is_empty() || text.get(c.span.clone()).is_none() {
                let name = &self.inner.categories[c.category].name;
                return Err(Refused::Fault {
                    reason: format!("detector `{name}` returned an invalid span"),
                });
            }
            last_end = c.span.end;
        }
        Ok(found)
    }
}

/// Prints the shape only (detector and category counts).
impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("categories", &self.inner.categories.len())
            .field("detectors", &self.inner.detectors.len())
            .field("allow_words", &self.inner.allow_words.len())
            .finish()
    }
}

/// One request's placeholders. Redact every outgoing text through the same session so that
/// numbering is shared; restore the answer with it (or a [`Restorer`] made from it).
pub struct Session {
    redactor: Redactor,
    mapping: Mapping,
}

#[derive(Default)]
struct Mapping {
    /// (placeholder, value, category) in order of first appearance.
    entries: Vec<(String, String, usize)>,
    by_value: HashMap<String, usize>,
    next_number: HashMap<usize, u32>,
}

impl Session {
    /// Redacts one text. On `Err` nothing is recorded and the text must not leave the device.
    pub fn redact(&mut self, text: &str) -> Result<String, Refused> {
        let found = self.redactor.detect(text)?;
        let categories = &self.redactor.inner.categories;
        let blocked: BTreeSet<&str> = found
            .iter()
            .filter(|c| categories[c.category].policy == CategoryPolicy::Block)
            .map(|c| categories[c.category].name.as_str())
            .collect();
        if !blocked.is_empty() {
            return Err(Refused::Blocked {
                categories: blocked.into_iter().map(String::from).collect(),
            });
        }
        let mut out = String::with_capacity(text.len());
        let mut done = 0;
        for c in &found {
            out.push_str(&text[done..c.span.start]);
            let value = &text[c.span.clone()];
            out.push_str(self.placeholder_for(value, c.category, text));
            done = c.span.end;
        }
        out.push_str(&text[done..]);
        Ok(out)
    }

    /// Distinct redacted values per category name, for the audit log.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for (_, _, category) in &self.mapping.entries {
            *counts
                .entry(self.redactor.inner.categories[*category].name.clone())
                .or_insert(0) += 1;
        }
        counts
    }

    /// Whether anything was redacted so far.
    pub fn is_empty(&self) -> bool {
        self.mapping.entries.is_empty()
    }

    /// A streaming restorer holding a copy of the current mapping.
    pub fn restorer(&self) -> Restorer {
        Restorer::new(Arc::new(self.table()))
    }

    /// Restores a whole answer; unknown placeholders are left as they are.
    pub fn restore(&self, text: &str) -> String {
        self.table().restore(text)
    }

    fn table(&self) -> RestoreTable {
        RestoreTable::new(
            self.mapping
                .entries
                .iter()
                .map(|(p, v, _)| (p.clone(), v.clone())),
        )
    }

    /// The placeholder for `value`, allocating the next number of its label if new. A number
    /// whose placeholder appears literally in `text` is skipped, so restoring never turns the
    /// user's own `<EMAIL_1>` into someone's address.
    fn placeholder_for(&mut self, value: &str, category: usize, text: &str) -> &str {
        let mapping = &mut self.mapping;
        let index = match mapping.by_value.get(value) {
            Some(i) => *i,
            None => {
                let label = &self.redactor.inner.categories[category].label;
                let counter = mapping.next_number.entry(category).or_insert(0);
                let placeholder = loop {
                    *counter += 1;
                    let p = format!("<{label}_{counter}>");
                    if !text.contains(&p) {
                        break p;
                    }
                };
                mapping
                    .entries
                    .push((placeholder, value.to_string(), category));
                mapping
                    .by_value
                    .insert(value.to_string(), mapping.entries.len() - 1);
                mapping.entries.len() - 1
            }
        };
        &mapping.entries[index].0
    }
}

/// Prints counts only; the mapping holds the values.
impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("counts", &self.counts())
            .finish()
    }
}
