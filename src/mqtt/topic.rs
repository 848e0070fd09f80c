//! MQTT topic filters (`site/+/logs`, `plant/#`) and reply-topic templates (`site/{1}/triage`,
//! where `{N}` is the N-th `+` segment of the concrete topic). Pure.

/// A subscription filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicFilter {
    pub text: String,
    segments: Vec<String>,
}

impl TopicFilter {
    pub fn parse(text: &str) -> Result<TopicFilter, String> {
        if text.is_empty() || text.contains('\0') {
            return Err(format!(
                "topic filter {text:?} must be non-empty without NUL"
            ));
        }
        let segments: Vec<String> = text.split('/').map(str::to_string).collect();
        for (i, segment) in segments.iter().enumerate() {
            let wildcard = segment.contains(['+', '#']);
            let ok = !wildcard || segment == "+" || (segment == "#" && i == segments.len() - 1);
            if !ok {
                return Err(format!(
                    "topic filter {text:?}: '+' must be a whole segment and '#' the whole last one"
                ));
            }
        }
        Ok(TopicFilter {
            text: text.to_string(),
            segments,
        })
    }

    /// Number of `+` segments.
    pub fn wildcards(&self) -> usize {
        self.segments.iter().filter(|s| *s == "+").count()
    }

    /// The `+` segments of `topic` when it matches, in order.
    pub fn captures(&self, topic: &str) -> Option<Vec<String>> {
        let parts: Vec<&str> = topic.split('/').collect();
        let mut captures = Vec::new();
        for (i, segment) in self.segments.iter().enumerate() {
            match segment.as_str() {
                "#" => {
                    // `#` also matches the parent level; topics starting with `$` are not
                    // matched by a leading wildcard (MQTT 4.7.2).
                    if i == 0 && topic.starts_with('$') {
                        return None;
                    }
                    return Some(captures);
                }
                "+" => {
                    let part = parts.get(i)?;
                    if i == 0 && part.starts_with('$') {
                        return None;
                    }
                    captures.push((*part).to_string());
                }
                literal => {
                    if parts.get(i) != Some(&literal) {
                        return None;
                    }
                }
            }
        }
        (parts.len() == self.segments.len()).then_some(captures)
    }
}

/// A reply topic with `{N}` placeholders (1-based) for the filter's `+` captures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTemplate {
    pub text: String,
    parts: Vec<ReplyPart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ReplyPart {
    Literal(String),
    Capture(usize),
}

impl ReplyTemplate {
    /// `wildcards`: how many `+` the subscription's filter has.
    pub fn parse(text: &str, wildcards: usize) -> Result<ReplyTemplate, String> {
        if text.is_empty() || text.contains(['+', '#', '\0']) {
            return Err(format!(
                "reply_topic {text:?} must be non-empty without wildcards or NUL"
            ));
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(ReplyPart::Literal(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .map(|i| open + i)
                .ok_or_else(|| format!("reply_topic {text:?}: unclosed placeholder"))?;
            let index: usize = rest[open + 1..close].parse().map_err(|_| {
                format!("reply_topic {text:?}: placeholders are {{1}}, {{2}}, ... (the filter's '+' segments)")
            })?;
            if index == 0 || index > wildcards {
                return Err(format!(
                    "reply_topic {text:?}: {{{index}}} but the filter has {wildcards} '+' segment(s)"
                ));
            }
            parts.push(ReplyPart::Capture(index - 1));
            rest = &rest[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("reply_topic {text:?}: stray '}}'"));
        }
        if !rest.is_empty() {
            parts.push(ReplyPart::Literal(rest.to_string()));
        }
        Ok(ReplyTemplate {
            text: text.to_string(),
            parts,
        })
    }

    /// The reply topic for a message whose `+` segments were `captures`.
    pub fn render(&self, captures: &[String]) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                ReplyPart::Literal(text) => out.push_str(text),
                ReplyPart::Capture(i) => {
                    let value = captures
                        .get(*i)
                        .ok_or_else(|| format!("no capture {{{}}}", i + 1))?;
                    if value.contains(['+', '#', '\0']) {
                        return Err(format!("capture {value:?} cannot go into a topic"));
                    }
                    out.push_str(value);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_and_capture_plus_segments() {
        let cases: &[(&str, &str, Option<&[&str]>)] = &[
            ("site/+/logs", "site/north/logs", Some(&["north"])),
            ("site/+/logs", "site/north/logs/x", None),
            ("site/+/logs", "site/logs", None),
            ("site/+/+", "site/a/b", Some(&["a", "b"])),
            ("site/#", "site/a/b/c", Some(&[])),
            ("site/#", "site", Some(&[])),
            ("+/x", "$SYS/x", None),
            ("#", "$SYS/broker", None),
            ("a/b", "a/b", Some(&[])),
            ("a/b", "a/c", None),
        ];
        for (filter, topic, expected) in cases {
            let got = TopicFilter::parse(filter).unwrap().captures(topic);
            let expected = expected.map(|e| e.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(got, expected, "{filter} vs {topic}");
        }
        for bad in ["", "a/b+/c", "a/#/b", "a/x#"] {
            assert!(TopicFilter::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reply_templates_fill_captures_and_refuse_bad_ones() {
        let t = ReplyTemplate::parse("site/{1}/triage/{2}", 2).unwrap();
        assert_eq!(
            t.render(&["n".into(), "7".into()]).unwrap(),
            "site/n/triage/7"
        );
        for (bad, wildcards) in [
            ("site/{2}/x", 1),
            ("site/{0}", 1),
            ("site/+/x", 1),
            ("a/{x}", 1),
            ("", 0),
        ] {
            assert!(ReplyTemplate::parse(bad, wildcards).is_err(), "{bad}");
        }
    }
}
