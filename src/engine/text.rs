//! Turning a stream of token byte pieces into text: UTF-8 assembly and stop strings.
//!
//! Pure logic, no llama.cpp: a token's piece may end in the middle of a multi-byte character, and a
//! stop string may be split across several pieces. [`TextAssembler`] holds back exactly what is
//! still undecided and releases the rest; a matched stop string is never released.

/// Assembles UTF-8 text from byte pieces that may split multi-byte characters.
#[derive(Debug, Default)]
pub struct Utf8Assembler {
    pending: Vec<u8>,
}

impl Utf8Assembler {
    /// Appends `bytes` and returns the longest valid UTF-8 prefix of everything pending.
    ///
    /// Bytes that can never become valid UTF-8 are replaced by U+FFFD, so the stream never stalls.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(text) => {
                    out.push_str(text);
                    self.pending.clear();
                    return out;
                }
                Err(error) => {
                    let valid = error.valid_up_to();
                    // SAFETY-free: the prefix was just validated.
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match error.error_len() {
                        // An incomplete character at the end: keep it for the next piece.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Releases whatever is left at the end of the stream (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

/// What [`StopMatcher::push`] decided about the text seen so far.
#[derive(Debug, PartialEq, Eq)]
pub struct StopScan {
    /// Text that is certainly not part of a stop string and can be sent to the client.
    pub release: String,
    /// The stop string that matched, if any; generation ends and nothing after it is released.
    pub stopped: Option<String>,
}

/// Finds stop strings across piece boundaries, holding back only a possible stop-string prefix.
#[derive(Debug)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        let stops = stops.into_iter().filter(|s| !s.is_empty()).collect();
        StopMatcher {
            stops,
            held: String::new(),
        }
    }

    /// Adds text and returns what can be released now.
    pub fn push(&mut self, text: &str) -> StopScan {
        self.held.push_str(text);
        if self.stops.is_empty() {
            return StopScan {
                release: std::mem::take(&mut self.held),
                stopped: None,
            };
        }
        // Earliest full match wins (as llama.cpp's server does).
        let earliest = self
            .stops
            .iter()
            .filter_map(|stop| self.held.find(stop.as_str()).map(|at| (at, stop)))
            .min_by_key(|(at, _)| *at);
        if let Some((at, stop)) = earliest {
            let stop = stop.clone();
            let release = self.held[..at].to_string();
            self.held.clear();
            return StopScan {
                release,
                stopped: Some(stop),
            };
        }
        // Hold back the longest suffix of `held` that is a prefix of some stop string.
        let keep = self.partial_suffix_len();
        let split = self.held.len() - keep;
        let release = self.held[..split].to_string();
        self.held.drain(..split);
        StopScan {
            release,
            stopped: None,
        }
    }

    /// Releases held text at the end of the stream (it never completed a stop string).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    fn partial_suffix_len(&self) -> usize {
        let held = self.held.as_str();
        let mut best = 0;
        for stop in &self.stops {
            let max = stop.len().saturating_sub(1).min(held.len());
            for len in (best + 1..=max).rev() {
                let start = held.len() - len;
                if held.is_char_boundary(start) && stop.starts_with(&held[start..]) {
                    best = len;
                    break;
                }
            }
        }
        best
    }
}

/// UTF-8 assembly followed by stop-string matching: the whole text path of one generation.
#[derive(Debug)]
pub struct TextAssembler {
    utf8: Utf8Assembler,
    stops: StopMatcher,
}

impl TextAssembler {
    pub fn new(stops: Vec<String>) -> Self {
        TextAssembler {
            utf8: Utf8Assembler::default(),
            stops: StopMatcher::new(stops),
        }
    }

    pub fn push(&mut self, piece: &[u8]) -> StopScan {
        let text = self.utf8.push(piece);
        self.stops.push(&text)
    }

    /// End of stream: releases everything still held (no stop string can complete any more).
    pub fn finish(&mut self) -> String {
        let tail = self.utf8.finish();
        let mut scan = self.stops.push(&tail);
        if scan.stopped.is_none() {
            scan.release.push_str(&self.stops.finish());
        }
        scan.release
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&[u8]]) -> (String, Option<String>, Vec<String>) {
        let mut assembler = TextAssembler::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        let mut releases = Vec::new();
        for piece in pieces {
            let scan = assembler.push(piece);
            releases.push(scan.release.clone());
            out.push_str(&scan.release);
            if scan.stopped.is_some() {
                return (out, scan.stopped, releases);
            }
        }
        out.push_str(&assembler.finish());
        (out, None, releases)
    }

    /// (stop strings, pieces, expected text, expected stop string)
    type StopCase<'a> = (&'a [&'a str], &'a [&'a [u8]], &'a str, Option<&'a str>);
    /// (pieces, text released after each piece, whole text)
    type Utf8Case<'a> = (&'a [&'a [u8]], &'a [&'a str], &'a str);

    #[test]
    fn stop_strings_table() {
        let cases: &[StopCase] = &[
            (&[], &[b"hello", b" world"], "hello world", None),
            (&["\n\n"], &[b"a\n", b"\nb"], "a", Some("\n\n")),
            (
                &["User:"],
                &[b"ok ", b"Us", b"er", b": hi"],
                "ok ",
                Some("User:"),
            ),
            (&["User:"], &[b"ok Us", b"ually"], "ok Usually", None),
            (&["abc", "b"], &[b"xab"], "xa", Some("b")),
            (&["END"], &[b"the E", b"N"], "the EN", None),
            (&["</s>"], &[b"</", b"s", b">tail"], "", Some("</s>")),
            (&["stop"], &[b"nonstop"], "non", Some("stop")),
        ];
        for (stops, pieces, want, want_stop) in cases {
            let (got, stopped, _) = run(stops, pieces);
            assert_eq!(&got, want, "stops {stops:?} pieces {pieces:?}");
            assert_eq!(
                stopped.as_deref(),
                *want_stop,
                "stops {stops:?} pieces {pieces:?}"
            );
        }
    }

    #[test]
    fn holds_back_only_a_possible_prefix() {
        let (_, _, releases) = run(&["User:"], &[b"ok U", b"x"]);
        assert_eq!(releases, vec!["ok ".to_string(), "Ux".to_string()]);
    }

    #[test]
    fn utf8_split_multibyte_table() {
        let euro = "€".as_bytes(); // e2 82 ac
        let crab = "🦀".as_bytes(); // 4 bytes
        let cases: &[Utf8Case] = &[
            (&[&euro[..1], &euro[1..]], &["", "€"], "€"),
            (&[&euro[..2], &euro[2..], b"x"], &["", "€", "x"], "€x"),
            (
                &[&crab[..1], &crab[1..2], &crab[2..3], &crab[3..]],
                &["", "", "", "🦀"],
                "🦀",
            ),
            (&[b"a\xff", b"b"], &["a\u{fffd}", "b"], "a\u{fffd}b"),
        ];
        for (pieces, want_each, want) in cases {
            let mut utf8 = Utf8Assembler::default();
            let got: Vec<String> = pieces.iter().map(|p| utf8.push(p)).collect();
            assert_eq!(&got, want_each);
            assert_eq!(got.concat(), *want);
        }
    }

    #[test]
    fn incomplete_character_at_end_becomes_replacement() {
        let mut utf8 = Utf8Assembler::default();
        assert_eq!(utf8.push(&"€".as_bytes()[..2]), "");
        assert_eq!(utf8.finish(), "\u{fffd}");
    }

    #[test]
    fn stop_string_with_multibyte_prefix() {
        let (got, stopped, _) = run(&["€€"], &[b"a\xe2\x82", b"\xac\xe2", b"\x82\xac!"]);
        assert_eq!(got, "a");
        assert_eq!(stopped.as_deref(), Some("€€"));
    }
}
