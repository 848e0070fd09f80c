//! Documents into chunks with provenance, pure (no IO): Markdown sections by heading, then
//! paragraphs packed up to a token budget; plain text by paragraphs; HTML reduced to text with
//! its headings first. Offsets are byte offsets into the text the chunker saw (the file itself
//! for Markdown and text; the extracted text for HTML).

/// One chunk before embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// The heading path (`Install > Network`), empty when the document has none.
    pub heading: String,
    pub text: String,
    pub start: usize,
    pub end: usize,
}

/// A paragraph: its text and where it is.
struct Para {
    heading: String,
    start: usize,
    end: usize,
}

/// Which syntax a document is in (from its file extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Text,
    Html,
}

impl Format {
    pub fn of(path: &std::path::Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "md" | "markdown" => Some(Format::Markdown),
            "txt" | "text" => Some(Format::Text),
            "html" | "htm" => Some(Format::Html),
            _ => None,
        }
    }
}

/// Splits `text` into chunks of at most `max_tokens` (counted by `count`, the embedding
/// model's tokenizer); a paragraph longer than that is split at word bounds.
pub fn chunk(
    text: &str,
    format: Format,
    max_tokens: usize,
    count: &dyn Fn(&str) -> usize,
) -> Vec<Chunk> {
    let paras = paragraphs(text, format == Format::Markdown);
    let mut chunks: Vec<Chunk> = Vec::new();
    let mut current: Option<(String, usize, usize)> = None;
    let flush = |current: &mut Option<(String, usize, usize)>, chunks: &mut Vec<Chunk>| {
        if let Some((heading, start, end)) = current.take() {
            let body = text[start..end].trim();
            if !body.is_empty() {
                chunks.push(Chunk {
                    heading,
                    text: body.to_string(),
                    start,
                    end,
                });
            }
        }
    };
    for para in paras {
        let para_text = &text[para.start..para.end];
        if count(para_text) > max_tokens {
            flush(&mut current, &mut chunks);
            for (start, end) in split_long(text, para.start, para.end, max_tokens, count) {
                current = Some((para.heading.clone(), start, end));
                flush(&mut current, &mut chunks);
            }
            continue;
        }
        match &mut current {
            Some((heading, start, end))
                if *heading == para.heading && count(&text[*start..para.end]) <= max_tokens =>
            {
                let _ = start;
                *end = para.end;
            }
            _ => {
                flush(&mut current, &mut chunks);
                current = Some((para.heading.clone(), para.start, para.end));
            }
        }
    }
    flush(&mut current, &mut chunks);
    chunks
}

/// Paragraphs (runs of non-blank lines), with the Markdown heading path they sit under.
/// Heading lines themselves are not paragraphs. Fenced code blocks stay whole.
fn paragraphs(text: &str, markdown: bool) -> Vec<Para> {
    let mut out = Vec::new();
    let mut headings: Vec<(usize, String)> = Vec::new();
    let mut start: Option<usize> = None;
    let mut in_fence = false;
    let mut offset = 0usize;
    let path = |headings: &[(usize, String)]| {
        headings
            .iter()
            .map(|(_, h)| h.as_str())
            .collect::<Vec<_>>()
            .join(" > ")
    };
    for line in text.split_inclusive('\n') {
        let line_start = offset;
        offset += line.len();
        let trimmed = line.trim();
        if markdown && trimmed.starts_with("```") {
            in_fence = !in_fence;
        }
        let heading = if markdown && !in_fence {
            markdown_heading(trimmed)
        } else {
            None
        };
        if trimmed.is_empty() && !in_fence || heading.is_some() {
            if let Some(s) = start.take() {
                out.push(Para {
                    heading: path(&headings),
                    start: s,
                    end: line_start,
                });
            }
            if let Some((level, title)) = heading {
                headings.retain(|(l, _)| *l < level);
                headings.push((level, title));
            }
            continue;
        }
        if start.is_none() {
            start = Some(line_start);
        }
    }
    if let Some(s) = start {
        out.push(Para {
            heading: path(&headings),
            start: s,
            end: text.len(),
        });
    }
    out
}

fn markdown_heading(line: &str) -> Option<(usize, String)> {
    let level = line.bytes().take_while(|&b| b == b'#').count();
    if level == 0 || level > 6 {
        return None;
    }
    let rest = &line[level..];
    if !rest.starts_with(' ') {
        return None;
    }
    let title = rest.trim().trim_end_matches('#').trim();
    (!title.is_empty()).then(|| (level, title.to_string()))
}

/// Pieces of `text[start..end]` of at most `max_tokens` each, each cut at the last space or
/// newline that fits, else (one word longer than the budget) at a character bound.
fn split_long(
    text: &str,
    start: usize,
    end: usize,
    max_tokens: usize,
    count: &dyn Fn(&str) -> usize,
) -> Vec<(usize, usize)> {
    // Candidate cut points: spaces and newlines.
    let span = &text[start..end];
    let mut cuts: Vec<usize> = span
        .bytes()
        .enumerate()
        .skip(1)
        .filter(|(_, b)| *b == b' ' || *b == b'\n')
        .map(|(i, _)| start + i)
        .collect();
    cuts.push(end);
    let mut pieces = Vec::new();
    let mut piece_start = start;
    let mut last_good: Option<usize> = None;
    let mut i = 0;
    while i < cuts.len() {
        let cut = cuts[i];
        if count(&text[piece_start..cut]) <= max_tokens {
            last_good = Some(cut);
            i += 1;
            continue;
        }
        match last_good.take() {
            Some(good) if good > piece_start => {
                pieces.push((piece_start, good));
                piece_start = good;
            }
            _ => {
                // One word longer than the budget: cut it at a character bound.
                let mut hard = piece_start;
                for (offset, ch) in text[piece_start..cut].char_indices() {
                    let next = piece_start + offset + ch.len_utf8();
                    if count(&text[piece_start..next]) > max_tokens {
                        break;
                    }
                    hard = next;
                }
                let hard = if hard == piece_start {
                    piece_start + text[piece_start..].chars().next().map_or(1, char::len_utf8)
                } else {
                    hard
                };
                pieces.push((piece_start, hard));
                piece_start = hard;
            }
        }
    }
    if piece_start < end {
        pieces.push((piece_start, end));
    }
    pieces
        .into_iter()
        .filter(|(s, e)| !text[*s..*e].trim().is_empty())
        .collect()
}

/// HTML to text the chunker reads as Markdown: headings become `#` lines, block elements
/// paragraph breaks, `script`/`style` are dropped, the common entities decoded. Not a full
/// HTML parser: malformed markup degrades to its text.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        out.push_str(&decode_entities(&rest[..open]));
        let after = &rest[open + 1..];
        let Some(close) = after.find('>') else {
            out.push_str(&decode_entities(&rest[open..]));
            rest = "";
            break;
        };
        let tag = after[..close].trim();
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        let closing = tag.starts_with('/');
        rest = &after[close + 1..];
        match name.as_str() {
            "script" | "style" if !closing => {
                let end_tag = format!("</{name}");
                match rest.to_ascii_lowercase().find(&end_tag) {
                    Some(end) => {
                        rest = &rest[end..];
                    }
                    None => rest = "",
                }
            }
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                if closing {
                    out.push_str("\n\n");
                } else {
                    let level = usize::from(name.as_bytes()[1] - b'0');
                    out.push_str("\n\n");
                    out.push_str(&"#".repeat(level));
                    out.push(' ');
                }
            }
            "p" | "div" | "section" | "article" | "li" | "ul" | "ol" | "table" | "tr" | "pre"
            | "blockquote" | "br" | "hr" | "header" | "footer" | "main" | "nav" => {
                out.push_str("\n\n");
            }
            "td" | "th" => out.push(' '),
            _ => {}
        }
    }
    out.push_str(&decode_entities(rest));
    out
}

fn decode_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    text.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> usize {
        s.split_whitespace().count()
    }

    #[test]
    fn markdown_sections_keep_their_heading_path() {
        let doc = "# Install\n\nUnpack it.\n\n## Network\n\nSet the IP.\nThen reboot.\n\n# Use\n\nRun it.\n";
        let chunks = chunk(doc, Format::Markdown, 100, &words);
        let got: Vec<(&str, &str)> = chunks
            .iter()
            .map(|c| (c.heading.as_str(), c.text.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("Install", "Unpack it."),
                ("Install > Network", "Set the IP.\nThen reboot."),
                ("Use", "Run it."),
            ]
        );
        for c in &chunks {
            assert_eq!(
                doc[c.start..c.end].trim(),
                c.text,
                "offsets point at the text"
            );
        }
    }

    #[test]
    fn paragraphs_are_packed_up_to_the_budget_and_long_ones_split() {
        let doc = "one two three\n\nfour five\n\nsix seven eight nine\n";
        let chunks = chunk(doc, Format::Text, 5, &words);
        assert_eq!(chunks[0].text, "one two three\n\nfour five");
        assert_eq!(chunks[1].text, "six seven eight nine");
        let long = "a b c d e f g h i j k l m n o p q r s t u v w x y z";
        let chunks = chunk(long, Format::Text, 4, &words);
        assert!(chunks.iter().all(|c| words(&c.text) <= 4), "{chunks:?}");
        let joined: Vec<&str> = chunks.iter().flat_map(|c| c.text.split(' ')).collect();
        assert_eq!(joined.join(" "), long, "nothing lost or repeated");
        // A single word beyond any budget is cut at character bounds, never mid-character.
        let chars = |s: &str| s.chars().count();
        let chunks = chunk("ääääääääää", Format::Text, 3, &chars);
        assert!(chunks.iter().all(|c| chars(&c.text) <= 3));
        assert_eq!(
            chunks.iter().map(|c| c.text.as_str()).collect::<String>(),
            "ääääääääää"
        );
    }

    #[test]
    fn fenced_code_is_not_a_heading() {
        let doc = "# A\n\n```\n# not a heading\n\nstill code\n```\n";
        let chunks = chunk(doc, Format::Markdown, 100, &words);
        assert!(chunks.iter().all(|c| c.heading == "A"), "{chunks:?}");
    }

    #[test]
    fn html_becomes_headed_text() {
        let html = "<html><head><style>p{}</style><script>var x='<h1>';</script></head>\
                    <body><h1>Valve &amp; pump</h1><p>Close it&nbsp;first.</p><p>Then open.</p></body></html>";
        let text = html_to_text(html);
        let chunks = chunk(&text, Format::Markdown, 100, &words);
        assert_eq!(chunks.len(), 1, "{chunks:?}");
        assert_eq!(chunks[0].heading, "Valve & pump");
        assert!(chunks[0].text.contains("Close it first."));
        assert!(!text.contains("var x"));
        // Malformed markup degrades to its text.
        assert_eq!(html_to_text("a < b").trim(), "a < b");
        assert_eq!(html_to_text("<p>unclosed").trim(), "unclosed");
    }
}
