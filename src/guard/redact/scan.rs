//! Compiled detectors, one scan over a text, and overlap resolution between their findings.

use std::collections::BTreeMap;
use std::ops::Range;

use regex::{Regex, RegexBuilder};

/// What a validator sees of one regex match.
pub(super) struct Hit<'t> {
    pub text: &'t str,
    pub value: Range<usize>,
    pub key: Option<Range<usize>>,
}

/// Accepts a hit (possibly trimming the value span) or rejects it.
pub(super) type Check = fn(&Hit<'_>) -> Option<Range<usize>>;

/// A check that carries configuration (the phone regions).
pub(super) type BoxedCheck = Box<dyn Fn(&Hit<'_>) -> Option<Range<usize>> + Send + Sync>;

/// A detector that is not one regex and a check (postal addresses): it appends the spans it
/// accepts in the text.
pub(super) type Scanner = Box<dyn Fn(&str, &mut Vec<Range<usize>>) + Send + Sync>;

/// One compiled detector.
pub(super) struct Detector {
    pub category: usize,
    matcher: Matcher,
}

enum Matcher {
    Regex {
        regex: Regex,
        check: BoxedCheck,
        value_groups: Vec<usize>,
        key_group: Option<usize>,
    },
    Scanner(Scanner),
}

/// One accepted candidate: a byte span of the scanned text and its category (its index in the
/// redactor's category list, which is also its priority: lower wins).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Candidate {
    pub span: Range<usize>,
    pub category: usize,
}

/// Size limit of one compiled user pattern (bytes of the compiled program); built-in patterns
/// get the regex crate's default.
pub(super) const USER_REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles one pattern. Built-in patterns get ASCII word boundaries (`\b`), so the lazy DFA
/// never gives up on non-ASCII text; user patterns are taken as written, with a size limit.
pub(super) fn compile(pattern: &str, builtin: bool) -> Result<Regex, regex::Error> {
    if builtin {
        RegexBuilder::new(&pattern.replace(r"\b", r"(?-u:\b)")).build()
    } else {
        RegexBuilder::new(pattern)
            .size_limit(USER_REGEX_SIZE_LIMIT)
            .build()
    }
}

impl Detector {
    pub(super) fn new(category: usize, regex: Regex, check: Check) -> Detector {
        Detector::with_check(category, regex, Box::new(check))
    }

    pub(super) fn with_check(category: usize, regex: Regex, check: BoxedCheck) -> Detector {
        let mut value_groups = Vec::new();
        let mut key_group = None;
        for (i, name) in regex.capture_names().enumerate() {
            match name {
                Some("k") => key_group = Some(i),
                Some(n) if n.starts_with('v') => value_groups.push(i),
                _ => {}
            }
        }
        if value_groups.is_empty() && key_group.is_none() && regex.captures_len() > 1 {
            value_groups.push(1);
        }
        Detector {
            category,
            matcher: Matcher::Regex {
                regex,
                check,
                value_groups,
                key_group,
            },
        }
    }

    pub(super) fn scanner(category: usize, scanner: Scanner) -> Detector {
        Detector {
            category,
            matcher: Matcher::Scanner(scanner),
        }
    }

    /// Appends this detector's accepted candidates in `text`.
    pub(super) fn scan(&self, text: &str, out: &mut Vec<Candidate>) {
        let category = self.category;
        let (regex, check, value_groups, key_group) = match &self.matcher {
            Matcher::Regex {
                regex,
                check,
                value_groups,
                key_group,
            } => (regex, check, value_groups, *key_group),
            Matcher::Scanner(scanner) => {
                let mut spans = Vec::new();
                scanner(text, &mut spans);
                out.extend(
                    spans
                        .into_iter()
                        .filter(|s| !s.is_empty())
                        .map(|span| Candidate { span, category }),
                );
                return;
            }
        };
        let mut push = |value: Range<usize>, key: Option<Range<usize>>| {
            if value.is_empty() {
                return;
            }
            let hit = Hit { text, value, key };
            if let Some(span) = check(&hit) {
                out.push(Candidate { span, category });
            }
        };
        if value_groups.is_empty() && key_group.is_none() {
            for m in regex.find_iter(text) {
                push(m.range(), None);
            }
            return;
        }
        for caps in regex.captures_iter(text) {
            let value = value_groups
                .iter()
                .find_map(|i| caps.get(*i))
                .or_else(|| caps.get(0));
            let key = key_group.and_then(|i| caps.get(i)).map(|m| m.range());
            if let Some(value) = value {
                push(value.range(), key);
            }
        }
    }
}

/// Picks the winners among overlapping candidates: a candidate strictly inside another is
/// dropped (the longest wins), then the remaining ones are taken by priority (category order,
/// then longer, then earlier) as long as they do not overlap one already taken. The result is
/// sorted by position. Deterministic for a given input.
pub(super) fn resolve(mut candidates: Vec<Candidate>) -> Vec<Candidate> {
    candidates.sort_by(|a, b| {
        (a.span.start, std::cmp::Reverse(a.span.end), a.category).cmp(&(
            b.span.start,
            std::cmp::Reverse(b.span.end),
            b.category,
        ))
    });
    candidates.dedup_by(|later, earlier| later.span == earlier.span);
    let mut max_end = 0;
    let mut outer = Vec::with_capacity(candidates.len());
    for c in candidates {
        if c.span.end <= max_end && !outer.is_empty() {
            continue;
        }
        max_end = max_end.max(c.span.end);
        outer.push(c);
    }
    outer.sort_by(|a, b| {
        (a.category, std::cmp::Reverse(a.span.len()), a.span.start).cmp(&(
            b.category,
            std::cmp::Reverse(b.span.len()),
            b.span.start,
        ))
    });
    let mut taken: BTreeMap<usize, Candidate> = BTreeMap::new();
    for c in outer {
        let clash_before = taken
            .range(..c.span.end)
            .next_back()
            .is_some_and(|(_, t)| t.span.end > c.span.start);
        if !clash_before {
            taken.insert(c.span.start, c);
        }
    }
    taken.into_values().collect()
}
