//! The health gate a model passes before it becomes active: it decodes (a short greedy
//! completion, timed), it answers each configured golden prompt with the text it must contain
//! and, where the prompt gives a JSON schema, with JSON that validates against it (decoded
//! under that schema, as a task would be), and, when it replaces a running model, it decodes at
//! no less than a configured fraction of that model's rate measured the same way. Blocking:
//! call it off the async runtime.

use serde::Deserialize;

use crate::engine::{Engine, Event, GenerateRequest, SamplingParams};

/// Tokens the timed decode produces.
pub const DECODE_TOKENS: u32 = 16;

/// A prompt whose greedy completion must contain `contains`, and/or, decoded under `schema`,
/// be JSON that validates against it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenPrompt {
    pub prompt: String,
    pub contains: Option<String>,
    pub schema: Option<serde_json::Value>,
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
            if golden.prompt.is_empty() {
                return Err(format!("activation.golden[{i}]: the prompt is empty"));
            }
            match (&golden.contains, &golden.schema) {
                (None, None) => {
                    return Err(format!(
                        "activation.golden[{i}]: give `contains` or `schema` (or both)"
                    ));
                }
                (Some(text), _) if text.is_empty() => {
                    return Err(format!("activation.golden[{i}].contains is empty"));
                }
                _ => {}
            }
            if let Some(schema) = &golden.schema {
                jsonschema::validator_for(schema)
                    .map_err(|e| format!("activation.golden[{i}].schema: {e}"))?;
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

    /// The context a gate-only engine needs: the longest golden answer, a prompt beside it.
    pub fn context_needed(&self) -> u32 {
        let longest = self.golden.iter().map(|g| g.max_tokens).max().unwrap_or(0);
        (longest + 256).max(512)
    }
}

/// A greedy completion of `prompt`: its text and its rate in tokens per second of llama.cpp's
/// compute time. Rates are compared in compute time because a server measures the running
/// model once, as it loads, and a new model while it serves traffic: every decode runs on the
/// one compute thread, so the new model's wall-clock rate would count the time it waited for
/// the running model's batches.
pub fn greedy(engine: &Engine, prompt: &str, max_tokens: u32) -> anyhow::Result<(String, f64)> {
    greedy_under(engine, prompt, max_tokens, None)
}

/// [`greedy`] under a JSON schema: the answer stops where the schema's JSON ends.
fn greedy_under(
    engine: &Engine,
    prompt: &str,
    max_tokens: u32,
    schema: Option<&serde_json::Value>,
) -> anyhow::Result<(String, f64)> {
    let params = SamplingParams {
        temperature: 0.0,
        max_tokens,
        stop_at_eog: schema.is_some(),
        ..SamplingParams::default()
    };
    let mut request = GenerateRequest::new(engine.tokenize(prompt), params);
    if let Some(schema) = schema {
        let spec = crate::constraint::Spec::JsonSchema(schema.clone());
        request.constraint = Some(Box::new(engine.compiler()?.compile(&spec)?));
    }
    let mut events = engine.submit(request)?;
    let (mut text, mut tokens) = (String::new(), 0);
    loop {
        match events.blocking_recv() {
            // Not asked for.
            Some(Event::Progress(_)) => {}
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
        let (text, _) = greedy_under(
            candidate,
            &golden.prompt,
            golden.max_tokens,
            golden.schema.as_ref(),
        )?;
        let shown = || text.chars().take(200).collect::<String>();
        if let Some(want) = &golden.contains {
            anyhow::ensure!(
                text.contains(want.as_str()),
                "golden prompt {i}: the answer does not contain {want:?} (it was {:?})",
                shown()
            );
        }
        if let Some(schema) = &golden.schema {
            let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                anyhow::anyhow!(
                    "golden prompt {i}: the answer is not JSON ({e}): {:?}",
                    shown()
                )
            })?;
            let validator = jsonschema::validator_for(schema)
                .map_err(|e| anyhow::anyhow!("golden prompt {i}: schema: {e}"))?;
            if let Some(error) = validator.iter_errors(&value).next() {
                anyhow::bail!(
                    "golden prompt {i}: the answer does not validate against its schema ({error}): {:?}",
                    shown()
                );
            }
        }
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
        assert_eq!(
            parse(
                "golden = [{ prompt = \"p\", schema = { type = \"object\", required = [\"a\"] } }]"
            ),
            Ok(())
        );
        let cases = [
            ("min_decode_ratio = 1.5", "min_decode_ratio"),
            ("min_decode_ratio = nan", "min_decode_ratio"),
            (
                "golden = [{ prompt = \"\", contains = \"x\" }]",
                "golden[0]",
            ),
            ("golden = [{ prompt = \"p\" }]", "`contains` or `schema`"),
            (
                "golden = [{ prompt = \"p\", contains = \"\" }]",
                "golden[0].contains",
            ),
            (
                "golden = [{ prompt = \"p\", schema = { type = \"no such type\" } }]",
                "golden[0].schema",
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
