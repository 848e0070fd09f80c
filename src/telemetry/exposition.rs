//! Reads edgellm's own `/metrics` text (Prometheus exposition format 0.0.4) back into samples,
//! and bounds what is pushed: the push path scrapes the same text a pull scrape gets, so there
//! is one definition of every metric (`crate::metrics`), as in Prometheus' agent mode.
//!
//! Hostile input is expected even here: label values come from configuration (tier, task and
//! action names) and are escaped by the renderer; a line this parser cannot read is skipped and
//! counted, never fatal. [`SeriesCap`] is the hard cap on distinct series a device pushes.

use std::collections::HashSet;

/// One sample line: the metric name, its labels in the order written, the value.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// Whether the family is a gauge (or untyped): its level is the information, so an unchanged
    /// value is still re-sent at the keepalive. Counters and histograms carry theirs in changes.
    pub level: bool,
    /// Whether the line is a histogram's or summary's `_bucket`, `_sum`, `_count` (or quantile):
    /// these travel at their own, coarser cadence (`histogram_interval_secs`).
    pub histogram: bool,
}

/// Label values longer than this are cut (on a character boundary) before they are pushed.
pub const MAX_LABEL_VALUE: usize = 128;

/// The sample lines of `text`, and how many lines could not be read.
pub fn parse(text: &str) -> (Vec<Line>, usize) {
    let mut lines = Vec::new();
    let mut bad = 0;
    // The family the last `# TYPE` line named, and its kind.
    let mut typed: Option<(&str, &str)> = None;
    for raw in text.lines() {
        let raw = raw.trim();
        if let Some(rest) = raw.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            if let (Some(family), Some(kind)) = (words.next(), words.next()) {
                typed = Some((family, kind));
            }
            continue;
        }
        if raw.is_empty() || raw.starts_with('#') {
            continue;
        }
        match parse_line(raw) {
            Some(mut line) => {
                let (level, histogram) = match typed {
                    Some((family, kind)) if line.name.starts_with(family) => {
                        let distribution = matches!(kind, "histogram" | "summary");
                        let gauge = matches!(kind, "gauge" | "untyped") && family == line.name;
                        (gauge, distribution)
                    }
                    _ => (true, false),
                };
                line.level = level;
                line.histogram = histogram;
                lines.push(line)
            }
            None => bad += 1,
        }
    }
    (lines, bad)
}

fn parse_line(raw: &str) -> Option<Line> {
    let name_end = raw
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(raw.len());
    let name = &raw[..name_end];
    if !valid_metric_name(name) {
        return None;
    }
    let mut rest = &raw[name_end..];
    let mut labels = Vec::new();
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        loop {
            // label name
            let start = chars.peek()?.0;
            if body[start..].starts_with('}') {
                chars.next();
                rest = &body[start + 1..];
                break;
            }
            let eq = body[start..].find('=')? + start;
            let label = body[start..eq].trim();
            if !valid_label_name(label) {
                return None;
            }
            while chars.peek()?.0 <= eq {
                chars.next();
            }
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                match chars.next()?.1 {
                    '"' => break,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        '\\' => value.push('\\'),
                        '"' => value.push('"'),
                        _ => return None,
                    },
                    c => value.push(c),
                }
            }
            labels.push((label.to_string(), value));
            match chars.next()?.1 {
                ',' => continue,
                '}' => {
                    rest = match chars.peek() {
                        Some(&(at, _)) => &body[at..],
                        None => "",
                    };
                    break;
                }
                _ => return None,
            }
        }
    }
    let mut fields = rest.split_whitespace();
    let value = parse_value(fields.next()?)?;
    // An optional timestamp may follow; edgellm's renderer writes none.
    Some(Line {
        level: true,
        histogram: false,
        name: name.to_string(),
        labels,
        value,
    })
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `value` cut to [`MAX_LABEL_VALUE`] bytes on a character boundary.
pub fn bound_value(value: &str) -> &str {
    if value.len() <= MAX_LABEL_VALUE {
        return value;
    }
    let mut end = MAX_LABEL_VALUE;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

/// The hard cap on distinct series one device pushes. A series seen once keeps its place for the
/// life of the process (so a dashboard's series does not flap); a new one past the cap is dropped
/// at every scrape it appears in, and counted.
#[derive(Debug)]
pub struct SeriesCap {
    max: usize,
    admitted: HashSet<String>,
}

impl SeriesCap {
    pub fn new(max: usize) -> Self {
        SeriesCap {
            max,
            admitted: HashSet::new(),
        }
    }

    /// Whether the series `key` (name and labels, one string) may be pushed.
    pub fn admit(&mut self, key: &str) -> bool {
        if self.admitted.contains(key) {
            return true;
        }
        if self.admitted.len() >= self.max {
            return false;
        }
        self.admitted.insert(key.to_string());
        true
    }

    pub fn active(&self) -> usize {
        self.admitted.len()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn gauges_are_told_from_counters_and_histograms() {
        let text = "# TYPE a_total counter\na_total 1\n# TYPE g gauge\ng 2\n# TYPE h histogram\nh_bucket{le=\"1\"} 0\nh_sum 0\nh_count 0\nuntyped_one 3\n";
        let (lines, bad) = parse(text);
        assert_eq!(bad, 0);
        let kinds: Vec<(&str, bool, bool)> = lines
            .iter()
            .map(|l| (l.name.as_str(), l.level, l.histogram))
            .collect();
        assert_eq!(
            kinds,
            [
                ("a_total", false, false),
                ("g", true, false),
                ("h_bucket", false, true),
                ("h_sum", false, true),
                ("h_count", false, true),
                ("untyped_one", true, false)
            ]
        );
    }

    use super::*;

    #[test]
    fn reads_what_the_renderer_writes() {
        let text = "# HELP x y\n# TYPE x counter\nedgellm_x_total 3\nllamacpp:prompt_tokens_total 1.5\nedgellm_b_bucket{le=\"+Inf\"} 4\nedgellm_t{tier=\"a \\\"b\\\" \\\\ c\\nd\",state=\"open\"} NaN\n";
        let (lines, bad) = parse(text);
        assert_eq!(bad, 0);
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0].name, "edgellm_x_total");
        assert_eq!(lines[0].value, 3.0);
        assert_eq!(lines[1].name, "llamacpp:prompt_tokens_total");
        assert_eq!(
            lines[2].labels,
            vec![("le".to_string(), "+Inf".to_string())]
        );
        assert_eq!(lines[3].labels[0].1, "a \"b\" \\ c\nd");
        assert_eq!(
            lines[3].labels[1],
            ("state".to_string(), "open".to_string())
        );
        assert!(lines[3].value.is_nan());
    }

    #[test]
    fn unreadable_lines_are_counted_not_fatal() {
        let corpus = [
            "9bad 1",
            "x{",
            "x{a=\"1\"",
            "x{a=1} 2",
            "x{a=\"\\q\"} 1",
            "x{1a=\"v\"} 1",
            "x",
            "x one",
            "x{a=\"v\"}",
            "x{a=\"v\"b=\"w\"} 1",
            "{a=\"v\"} 1",
            "x{a=\"ü\"} 1",
        ];
        let (lines, bad) = parse(&corpus.join("\n"));
        assert_eq!(bad, corpus.len() - 1, "{lines:?}");
        assert_eq!(lines[0].labels[0].1, "ü");
    }

    #[test]
    fn the_cap_keeps_the_first_series_and_refuses_new_ones() {
        let mut cap = SeriesCap::new(2);
        assert!(cap.admit("a"));
        assert!(cap.admit("b"));
        assert!(!cap.admit("c"));
        assert!(cap.admit("a"));
        assert_eq!(cap.active(), 2);
    }

    #[test]
    fn long_values_are_cut_on_a_character_boundary() {
        let long = "é".repeat(100);
        let cut = bound_value(&long);
        assert!(cut.len() <= MAX_LABEL_VALUE && cut.len() >= MAX_LABEL_VALUE - 1);
        assert!(long.starts_with(cut));
    }
}
