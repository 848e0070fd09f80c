//! `edgellm redact`: what the egress guard would take out of a text, from the shell. Reads
//! stdin; the `[redaction]` section comes from `--config` (the built-in defaults without one).
//!
//! - plain: the whole input is one text; prints it as it would leave (placeholders in place);
//! - `--jsonl`: each input line is a JSON string or `{"text": ...}`; prints one JSON line per
//!   input, `{"found": [{"category", "value", "start", "end"}], "redacted": ..., "redact_us": ...}`
//!   (byte offsets; `redact_us` is what redacting the text took, as a request pays it).
//!   A line that is not JSON, not UTF-8 or over 16 MiB is answered with `{"error": ...}` and
//!   the run goes on.

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use serde_json::{Value, json};

use crate::config::RawConfig;
use crate::guard::redact::Redactor;

#[derive(Debug, Clone, clap::Args)]
pub struct RedactArgs {
    /// The configuration whose `[redaction]` section applies [default: the built-in detectors]
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// One JSON text per line in, one JSON line of findings per text out
    #[arg(long)]
    pub jsonl: bool,
}

/// Most bytes of one text (plain input) or one JSON line; more is refused, not truncated.
const MAX_TEXT: usize = 16 << 20;

pub fn run(args: &RedactArgs) -> anyhow::Result<()> {
    let redaction = match &args.config {
        Some(path) => RawConfig::from_file(path)?.redaction,
        None => Default::default(),
    };
    let redactor = Redactor::new(&redaction).context("[redaction]")?;
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if !args.jsonl {
        let mut text = String::new();
        stdin
            .lock()
            .take(MAX_TEXT as u64 + 1)
            .read_to_string(&mut text)
            .context("stdin is not UTF-8 text")?;
        anyhow::ensure!(text.len() <= MAX_TEXT, "stdin is over {MAX_TEXT} bytes");
        let redacted = redactor.session().redact(&text)?;
        out.write_all(redacted.as_bytes())?;
        return Ok(out.flush()?);
    }
    let mut input = stdin.lock();
    loop {
        // At most MAX_TEXT bytes of a line are held; the rest of a longer one is skipped.
        let mut line = Vec::new();
        let read = (&mut input)
            .take(MAX_TEXT as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if read == 0 {
            break;
        }
        let answer = if line.len() > MAX_TEXT && line.last() != Some(&b'\n') {
            let mut rest = Vec::new();
            while (&mut input).take(1 << 16).read_until(b'\n', &mut rest)? > 0
                && rest.last() != Some(&b'\n')
            {
                rest.clear();
            }
            Err(format!("line over {MAX_TEXT} bytes"))
        } else {
            match std::str::from_utf8(&line) {
                Ok(text) => one_line(&redactor, text.trim_end_matches(['\n', '\r'])),
                Err(_) => Err("line is not UTF-8 text".to_string()),
            }
        };
        let answer = answer.unwrap_or_else(|error| json!({ "error": error }));
        writeln!(out, "{answer}")?;
    }
    Ok(out.flush()?)
}

fn one_line(redactor: &Redactor, line: &str) -> Result<Value, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let text = match &value {
        Value::String(text) => text.as_str(),
        other => other["text"]
            .as_str()
            .ok_or("expected a JSON string or an object with a string `text`")?,
    };
    let found = redactor.findings(text).map_err(|e| e.to_string())?;
    let found: Vec<Value> = found
        .into_iter()
        .map(|(category, span)| {
            json!({"category": category, "value": &text[span.clone()], "start": span.start, "end": span.end})
        })
        .collect();
    let started = std::time::Instant::now();
    let redacted = redactor.session().redact(text).map_err(|e| e.to_string())?;
    let redact_us = started.elapsed().as_micros() as u64;
    Ok(json!({ "found": found, "redacted": redacted, "redact_us": redact_us }))
}
