//! The health gate a model passes before it becomes active: it decodes (a short greedy
//! completion, timed), it answers each configured golden prompt with the text it must contain,
//! and, when it replaces a running model, it decodes at no less than a configured fraction of
//! that model's rate measured the same way. Blocking: call it off the async runtime.

use serde::Deserialize;

use crate::engine::{Engine, Event, GenerateRequest, SamplingParams};

/// Tokens the timed decode produces.
pub const DECODE_TOKENS: u32 = 16;

/// A prompt whose greedy completion must contain `contains`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenPrompt {
    pub prompt: String,
    pub contains: String,
    #[serde(default = "default_golden_tokens")]
    pub max_tokens: u32,
}

fn default_golden_tokens() -> u32 {
    32
}

/// What a model must show before it replaces the running one (`[activation]` in the serve
/// configuration).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// The new model's decode rate must be at least this fraction of the running model's.
    #[serde(default = "default_min_decode_ratio")]
    pub min_decode_ratio: f64,
    #[serde(default)]
    pub golden: Vec<GoldenPrompt>,
}

fn default_min_decode_ratio() -> f64 {
    0.5
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            min_decode_ratio: default_min_decode_ratio(),
            golden: Vec::new(),
        }
    }
}

impl GateConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.min_decode_ratio.is_finite() && (0.0..=1.0).contains(&self.min_decode_ratio)) {
            return Err(format!(
                "activation.min_decode_ratio = {} is not between 0 and 1",
                self.min_decode_ratio
            ));
        }
        for (i, golden) in self.golden.iter().enumerate() {
            if golden.prompt.is_empty() || golden.contains.is_empty() {
                return Err(format!(
                    "activation.golden[{i}]: prompt and contains must not be empty"
                ));
            }
            if !(1..=1024).contains(&golden.max_tokens) {
                return Err(format!(
                    "activation.golden[{i}].max_tokens = {} is not between 1 and 1024",
                    golden.max_tokens
                ));
            }
        }
        Ok(())
    }
}

/// A greedy completion of `prompt`: its text and its rate in tokens per second of llama.cpp's
/// compute time. Rates are compared in compute time because a server measures the running
/// model once, as it loads, and a new model while it serves traffic: every decode runs on the
/// one compute thread, so the new model's wall-clock rate would count the time it waited for
/// the running model's batches.
pub fn greedy(engine: &Engine, prompt: &str, max_tokens: u32) -> anyhow::Result<(String, f64)> {
    let params = SamplingParams {
        temperature: 0.0,
        max_tokens,
        stop_at_eog: false,
        ..SamplingParams::default()
    };
    let mut events = engine.submit(GenerateRequest::new(engine.tokenize(prompt), params))?;
    let (mut text, mut tokens) = (String::new(), 0);
    loop {
        match events.blocking_recv() {
            Some(Event::Token(token)) => {
                tokens += 1;
                text.push_str(&token.text);
            }
            Some(Event::Done(summary)) => {
                anyhow::ensure!(tokens > 0, "the model decoded no token");
                return Ok((text, summary.compute_tokens_per_second()));
            }
            Some(Event::Failed(error)) => return Err(error.into()),
            None => anyhow::bail!("the engine stopped"),
        }
    }
}

/// The timed decode every gate runs: tokens per second of compute time.
pub fn decode_rate(engine: &Engine) -> anyhow::Result<f64> {
    greedy(engine, "The weather station reported", DECODE_TOKENS).map(|(_, rate)| rate)
}

/// Runs the golden prompts and, when the running model's decode rate is given (measured by
/// `decode_rate`), compares the candidate's with it. Returns the candidate's decode rate (the
/// better of two tries); an error names the check that failed.
pub fn check(
    candidate: &Engine,
    running_rate: Option<f64>,
    config: &GateConfig,
) -> anyhow::Result<f64> {
    let mut rate = decode_rate(candidate)?;
    for (i, golden) in config.golden.iter().enumerate() {
        let (text, _) = greedy(candidate, &golden.prompt, golden.max_tokens)?;
        anyhow::ensure!(
            text.contains(&golden.contains),
            "golden prompt {i}: the answer does not contain {:?} (it was {:?})",
            golden.contains,
            text.chars().take(200).collect::<String>()
        );
    }
    if let Some(old) = running_rate {
        rate = rate.max(decode_rate(candidate)?);
        anyhow::ensure!(
            rate >= config.min_decode_ratio * old,
            "decodes at {rate:.1} tokens/s, below {} of the running model's {old:.1}",
            config.min_decode_ratio
        );
    }
    Ok(rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_settings_out_of_range_are_named() {
        let parse = |text: &str| -> Result<(), String> {
            toml::from_str::<GateConfig>(text)
                .map_err(|e| e.to_string())?
                .validate()
        };
        assert_eq!(parse(""), Ok(()));
        assert_eq!(
            parse("min_decode_ratio = 0.8\ngolden = [{ prompt = \"2+2=\", contains = \"4\" }]"),
            Ok(())
        );
        let cases = [
            ("min_decode_ratio = 1.5", "min_decode_ratio"),
            ("min_decode_ratio = nan", "min_decode_ratio"),
            (
                "golden = [{ prompt = \"\", contains = \"x\" }]",
                "golden[0]",
            ),
            (
                "golden = [{ prompt = \"p\", contains = \"x\", max_tokens = 0 }]",
                "golden[0].max_tokens",
            ),
            (
                "golden = [{ prompt = \"p\", expect = \"x\" }]",
                "unknown field",
            ),
        ];
        for (text, want) in cases {
            let error = parse(text).unwrap_err();
            assert!(error.contains(want), "{text}: {error}");
        }
    }
}
