//! Putting the original values back into an answer: whole texts, and streamed chunks where a
//! placeholder may arrive split. Only exact, known placeholders are replaced; anything else that
//! looks like one (an invented `<EMAIL_9>`) is left as it is.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Placeholder -> original value, plus the sorted placeholders for prefix look-ups.
#[derive(Default)]
pub(super) struct RestoreTable {
    values: HashMap<String, String>,
    sorted: Vec<String>,
    max_len: usize,
}

impl RestoreTable {
    pub(super) fn new(pairs: impl IntoIterator<Item = (String, String)>) -> RestoreTable {
        let values: HashMap<String, String> = pairs.into_iter().collect();
        let mut sorted: Vec<String> = values.keys().cloned().collect();
        sorted.sort();
        let max_len = sorted.iter().map(String::len).max().unwrap_or(0);
        RestoreTable {
            values,
            sorted,
            max_len,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.values.len()
    }

    /// `s` is a proper prefix of some known placeholder.
    fn is_proper_prefix(&self, s: &str) -> bool {
        let i = self.sorted.partition_point(|p| p.as_str() < s);
        self.sorted
            .get(i)
            .is_some_and(|p| p.len() > s.len() && p.starts_with(s))
    }

    /// The known placeholder starting at the beginning of `s`, if any, as (length, value).
    fn placeholder_at<'a>(&'a self, s: &str) -> Option<(usize, &'a str)> {
        let window = s.get(..s.len().min(self.max_len)).unwrap_or(s);
        let close = window.find('>')?;
        let candidate = &s[..=close];
        self.values
            .get(candidate)
            .map(|v| (candidate.len(), v.as_str()))
    }

    /// Replaces the known placeholders in `text`. With `hold_partial`, a suffix that is the
    /// beginning of a known placeholder is not processed; its start offset is returned.
    fn replace_into(&self, text: &str, out: &mut String, hold_partial: bool) -> usize {
        if self.values.is_empty() {
            out.push_str(text);
            return text.len();
        }
        let mut done = 0;
        let mut search = 0;
        while let Some(rel) = text[search..].find('<') {
            let at = search + rel;
            let rest = &text[at..];
            if let Some((len, value)) = self.placeholder_at(rest) {
                out.push_str(&text[done..at]);
                out.push_str(value);
                done = at + len;
                search = done;
            } else if hold_partial && self.is_proper_prefix(rest) {
                out.push_str(&text[done..at]);
                return at;
            } else {
                search = at + 1;
            }
        }
        out.push_str(&text[done..]);
        text.len()
    }

    pub(super) fn restore(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        self.replace_into(text, &mut out, false);
        out
    }
}

/// Restores a streamed answer chunk by chunk. It holds back only a suffix that is still the
/// beginning of a known placeholder (`<`, `<EM`, `<EMAIL_1`), so at most the longest
/// placeholder's length minus one byte is ever held; with nothing redacted nothing is held.
/// Call [`Restorer::finish`] at the end of the stream to release what is held.
pub struct Restorer {
    table: Arc<RestoreTable>,
    held: String,
}

impl Restorer {
    pub(super) fn new(table: Arc<RestoreTable>) -> Restorer {
        Restorer {
            table,
            held: String::new(),
        }
    }

    /// Feeds one chunk; returns the restored text that can be sent on now.
    pub fn push(&mut self, chunk: &str) -> String {
        let mut text = std::mem::take(&mut self.held);
        text.push_str(chunk);
        let mut out = String::with_capacity(text.len());
        let kept = self.table.replace_into(&text, &mut out, true);
        self.held = text[kept..].to_string();
        out
    }

    /// Ends the stream: returns what was held back (an unfinished placeholder stays as typed).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Bytes held back right now (never more than [`Restorer::max_hold`]).
    pub fn held_len(&self) -> usize {
        self.held.len()
    }

    /// The most this restorer can ever hold back: the longest placeholder's length minus one.
    pub fn max_hold(&self) -> usize {
        self.table.max_len.saturating_sub(1)
    }
}

/// Prints sizes only: the mapping holds the secrets.
impl fmt::Debug for Restorer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Restorer")
            .field("placeholders", &self.table.len())
            .field("held_bytes", &self.held.len())
            .finish()
    }
}
