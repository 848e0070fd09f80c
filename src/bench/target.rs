//! What a benchmark measures: the embedded engine, or an HTTP endpoint speaking llama.cpp's
//! `/completion` or OpenAI's `/v1/completions` (both streamed). Each request is timed the same way
//! for both: time to first token and end to end, from the client's side.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::BenchError;
use super::http::{self, BaseUrl};
use crate::engine::{Engine, EngineConfig, Event, GenerateRequest, SamplingParams};

/// Wire format of an HTTP target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// llama.cpp's `POST /completion` (edgellm, llama-server).
    Llama,
    /// OpenAI's `POST /v1/completions` (edgellm, llama-server, vLLM, Ollama, cloud APIs).
    Openai,
}

/// Text the prompts are cut from: ordinary gateway prose, so tokenization is typical.
const PROMPT_TEXT: &str = "The gateway collects readings from forty sensors on the packaging line, \
    forwards alarms over MQTT, and keeps a rolling log of Modbus timeouts, PLC restarts and \
    temperature excursions for the maintenance team. ";

/// One request: a prompt of about `prompt_tokens` tokens (0: a short sentence), then exactly
/// `max_tokens` generated (end-of-generation ignored where the API allows it). `id` makes the
/// prompt's first tokens unique, so no request reuses another's cached prompt.
#[derive(Debug, Clone, Copy)]
pub struct RequestSpec {
    pub id: u64,
    pub prompt_tokens: usize,
    pub max_tokens: u32,
}

/// Where a request's prefill and decode rates come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimingSource {
    /// The embedded engine's own timings.
    Engine,
    /// The server's `timings` object (llama.cpp API).
    Server,
    /// Derived from the client's times: prefill = prompt / TTFT, decode = (n-1) / (E2E - TTFT).
    Client,
}

/// The measurements of one finished request.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub ttft: Duration,
    pub e2e: Duration,
    pub prefill_tokens_per_second: f64,
    pub decode_tokens_per_second: f64,
    pub timing: TimingSource,
}

/// A measured target. Shared by the concurrent request tasks.
pub enum Target {
    Engine(Engine),
    Http(HttpTarget),
}

pub struct HttpTarget {
    pub base: BaseUrl,
    pub api: Api,
    pub model: String,
    /// Characters of [`PROMPT_TEXT`] per token, measured once against the server's tokenizer.
    chars_per_token: f64,
}

impl Target {
    /// Loads the model (seconds) with `slots` parallel sequences and enough context for them.
    pub fn engine(
        model: &std::path::Path,
        threads: Option<u32>,
        ctx_size: Option<u32>,
        slots: u32,
        tokens_per_request: u32,
    ) -> Result<Target, BenchError> {
        let mut config = EngineConfig::new(model.to_path_buf());
        if let Some(threads) = threads {
            config.n_threads = threads;
            config.n_threads_batch = threads;
        }
        config.slots = slots;
        config.n_batch = config.n_batch.max(slots);
        config.n_ctx = ctx_size.unwrap_or((tokens_per_request + 64) * slots);
        Ok(Target::Engine(Engine::start(config)?))
    }

    /// Connects to an HTTP target: finds the model name (OpenAI API) and measures how many
    /// characters of prompt text make a token on that server.
    pub async fn http(url: &str, api: Api, model: Option<String>) -> Result<Target, BenchError> {
        let base = BaseUrl::parse(url)?;
        let model = match (model, api) {
            (Some(model), _) => model,
            (None, Api::Openai) => first_model(&base).await.unwrap_or_else(|| "default".into()),
            (None, Api::Llama) => String::new(),
        };
        let mut target = HttpTarget {
            base,
            api,
            model,
            chars_per_token: 4.0,
        };
        let probe_chars = PROMPT_TEXT.len() * 4;
        let probe = target
            .complete(&http_prompt(0, probe_chars), 1, None)
            .await?;
        if probe.prompt_tokens > 0 {
            target.chars_per_token = probe_chars as f64 / probe.prompt_tokens as f64;
        }
        Ok(Target::Http(target))
    }

    pub fn label(&self) -> String {
        match self {
            Target::Engine(engine) => format!("edgellm engine ({})", engine.info().id),
            Target::Http(http) => format!(
                "{} ({})",
                http.base.display(""),
                match http.api {
                    Api::Llama => "llama.cpp API",
                    Api::Openai => "OpenAI API",
                }
            ),
        }
    }

    /// Runs one request to the end; `tokens` counts generated tokens as they arrive.
    pub async fn request(
        &self,
        spec: RequestSpec,
        tokens: Option<&Arc<AtomicU64>>,
    ) -> Result<Outcome, BenchError> {
        match self {
            Target::Engine(engine) => engine_request(engine, spec, tokens).await,
            Target::Http(http) => {
                let chars = (spec.prompt_tokens as f64 * http.chars_per_token).round() as usize;
                http.complete(&http_prompt(spec.id, chars), spec.max_tokens, tokens)
                    .await
            }
        }
    }
}

async fn engine_request(
    engine: &Engine,
    spec: RequestSpec,
    tokens: Option<&Arc<AtomicU64>>,
) -> Result<Outcome, BenchError> {
    let started = Instant::now();
    let prompt_tokens = engine_prompt(engine, spec)?;
    let params = SamplingParams {
        temperature: 0.0,
        max_tokens: spec.max_tokens,
        stop_at_eog: false,
        ..SamplingParams::default()
    };
    let mut events = engine.submit(GenerateRequest::new(prompt_tokens, params))?;
    let mut first = None;
    loop {
        match events.recv().await {
            // Not asked for.
            Some(Event::Progress(_)) => {}
            Some(Event::Token(_)) => {
                first.get_or_insert_with(|| started.elapsed());
                if let Some(tokens) = tokens {
                    tokens.fetch_add(1, Ordering::Relaxed);
                }
            }
            Some(Event::Done(summary)) => {
                let e2e = started.elapsed();
                return Ok(Outcome {
                    prompt_tokens: summary.prompt_tokens,
                    generated_tokens: summary.generated_tokens,
                    ttft: first.unwrap_or(e2e),
                    e2e,
                    prefill_tokens_per_second: summary.prefill_tokens_per_second(),
                    decode_tokens_per_second: summary.decode_tokens_per_second(),
                    timing: TimingSource::Engine,
                });
            }
            Some(Event::Failed(error)) => return Err(error.into()),
            None => return Err(crate::engine::EngineError::Stopped.into()),
        }
    }
}

fn engine_prompt(engine: &Engine, spec: RequestSpec) -> Result<Vec<i32>, BenchError> {
    let repeats = spec.prompt_tokens / 20 + 1;
    let text = if spec.prompt_tokens == 0 {
        format!("Request {}.", spec.id)
    } else {
        format!("Request {}. {}", spec.id, PROMPT_TEXT.repeat(repeats))
    };
    let mut tokens = engine.tokenize(&text);
    if spec.prompt_tokens > 0 {
        if tokens.len() < spec.prompt_tokens {
            return Err(BenchError::Args(format!(
                "cannot make a {}-token prompt",
                spec.prompt_tokens
            )));
        }
        tokens.truncate(spec.prompt_tokens);
    }
    Ok(tokens)
}

/// A prompt of about `chars` characters that starts with the request's id.
fn http_prompt(id: u64, chars: usize) -> String {
    let mut text = format!("Request {id}. ");
    while text.len() < chars {
        text.push_str(PROMPT_TEXT);
    }
    let mut end = chars.max(text.find(". ").map_or(0, |i| i + 1));
    while !text.is_char_boundary(end) {
        end += 1;
    }
    text.truncate(end);
    text
}

async fn first_model(base: &BaseUrl) -> Option<String> {
    let models = http::get_json(base, "/v1/models").await.ok()?;
    Some(models["data"][0]["id"].as_str()?.to_string())
}

/// What the server said in its events, gathered while they stream.
#[derive(Default)]
struct Streamed {
    first: Option<Duration>,
    chunks: usize,
    prompt_tokens: Option<usize>,
    generated_tokens: Option<usize>,
    server_prefill: Option<f64>,
    server_decode: Option<f64>,
}

impl HttpTarget {
    async fn complete(
        &self,
        prompt: &str,
        max_tokens: u32,
        tokens: Option<&Arc<AtomicU64>>,
    ) -> Result<Outcome, BenchError> {
        let (path, body) = match self.api {
            Api::Llama => (
                "/completion",
                json!({"prompt": prompt, "n_predict": max_tokens, "stream": true,
                       "ignore_eos": true, "temperature": 0.0, "cache_prompt": true}),
            ),
            Api::Openai => (
                "/v1/completions",
                json!({"model": self.model, "prompt": prompt, "max_tokens": max_tokens,
                       "stream": true, "stream_options": {"include_usage": true},
                       "temperature": 0.0, "ignore_eos": true}),
            ),
        };
        let started = Instant::now();
        let mut events = http::post_events(&self.base, path, &body).await?;
        let mut seen = Streamed::default();
        while let Some(data) = events.next_event().await? {
            if data.trim() == "[DONE]" {
                break;
            }
            let event: Value = serde_json::from_str(&data).map_err(|e| {
                BenchError::Target(format!(
                    "{}: bad event {data:?}: {e}",
                    self.base.display(path)
                ))
            })?;
            if let Some(error) = event.get("error") {
                return Err(BenchError::Target(format!(
                    "{} failed mid-stream: {error}",
                    self.base.display(path)
                )));
            }
            let token = match self.api {
                Api::Llama => self.llama_event(&event, &mut seen),
                Api::Openai => openai_event(&event, &mut seen),
            };
            if token {
                seen.first.get_or_insert_with(|| started.elapsed());
                seen.chunks += 1;
                if let Some(tokens) = tokens {
                    tokens.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let e2e = started.elapsed();
        let ttft = seen.first.unwrap_or(e2e);
        let prompt_tokens = seen
            .prompt_tokens
            .unwrap_or_else(|| (prompt.len() as f64 / self.chars_per_token).round() as usize);
        let generated = seen.generated_tokens.unwrap_or(seen.chunks);
        let (prefill, decode, timing) = match (seen.server_prefill, seen.server_decode) {
            (Some(prefill), Some(decode)) => (prefill, decode, TimingSource::Server),
            _ => (
                rate(prompt_tokens, ttft),
                rate(generated.saturating_sub(1), e2e.saturating_sub(ttft)),
                TimingSource::Client,
            ),
        };
        Ok(Outcome {
            prompt_tokens,
            generated_tokens: generated,
            ttft,
            e2e,
            prefill_tokens_per_second: prefill,
            decode_tokens_per_second: decode,
            timing,
        })
    }

    /// A llama.cpp `/completion` event; true when it carries a token.
    fn llama_event(&self, event: &Value, seen: &mut Streamed) -> bool {
        if event["stop"].as_bool() == Some(true) {
            let count = |key: &str| event[key].as_u64().map(|n| n as usize);
            seen.prompt_tokens = count("tokens_evaluated");
            seen.generated_tokens = count("tokens_predicted");
            let timings = &event["timings"];
            seen.server_prefill = timings["prompt_per_second"].as_f64();
            seen.server_decode = timings["predicted_per_second"].as_f64();
            // The final event can carry the last token's text (llama-server does).
            return event["content"].as_str().is_some_and(|c| !c.is_empty())
                && seen.generated_tokens.is_some_and(|n| n > seen.chunks);
        }
        true
    }
}

/// An OpenAI completion chunk; true when it carries a token.
fn openai_event(event: &Value, seen: &mut Streamed) -> bool {
    if let Some(usage) = event.get("usage").filter(|u| u.is_object()) {
        seen.prompt_tokens = usage["prompt_tokens"].as_u64().map(|n| n as usize);
        seen.generated_tokens = usage["completion_tokens"].as_u64().map(|n| n as usize);
    }
    event["choices"][0]["text"]
        .as_str()
        .is_some_and(|t| !t.is_empty())
}

fn rate(count: usize, time: Duration) -> f64 {
    if time.is_zero() {
        0.0
    } else {
        count as f64 / time.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_prompts_are_unique_and_sized() {
        let a = http_prompt(1, 500);
        let b = http_prompt(2, 500);
        assert_eq!(a.len(), 500);
        assert!(a.starts_with("Request 1. The gateway"));
        assert_ne!(a[..12], b[..12]);
        assert_eq!(http_prompt(7, 0), "Request 7.");
    }
}
