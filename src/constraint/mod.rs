//! The constraint engine: JSON schemas, JSON mode, tool turns and GBNF grammars become a
//! per-request [`Constraint`] that gives a token mask for each step and the tokens the grammar
//! forces (jump-forward), on llguidance (the constrained-decoding engine llama.cpp, vLLM and
//! SGLang can use). No llama.cpp code runs here: the engine hands in the vocabulary as a
//! `toktrie` environment once, and applies the masks to its logits itself.
//!
//! Everything a request brings is checked before it compiles ([`schema::check`],
//! [`gbnf::to_lark`]), compiling is bounded by llguidance's limits (grammar size, lexer states
//! and fuel), and every call into llguidance runs under `catch_unwind`: a bad grammar fails
//! its own request with a [`ConstraintError`], never the process. A mask step is bounded by
//! lexer fuel and Earley items per step, so a hostile grammar cannot wedge the engine thread.

pub mod gbnf;
pub mod schema;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use llguidance::api::{ParserLimits, TopLevelGrammar};
use llguidance::{Matcher, ParserFactory};
use serde_json::{Value, json};
pub use toktrie::SimpleVob;
use toktrie::{InferenceCapabilities, TokEnv};

pub use gbnf::{GrammarError, GrammarLimits};
pub use schema::{SchemaError, SchemaLimits};

/// What a request constrains its output to.
#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    /// Any JSON object (`response_format: json_object`).
    JsonObject,
    /// A JSON schema; an object's properties come out in the order the schema lists them.
    JsonSchema(Value),
    /// A GBNF grammar (llama.cpp's `grammar` field).
    Gbnf(String),
}

/// Every bound the engine puts on a constraint.
#[derive(Debug, Clone)]
pub struct Limits {
    pub schema: SchemaLimits,
    pub grammar: GrammarLimits,
    /// llguidance's own: grammar size, lexer states (memory), fuel per compile and per mask.
    pub parser: ParserLimits,
}

impl Default for Limits {
    fn default() -> Self {
        let parser = ParserLimits {
            // ~1-2 KiB each: at most some tens of MiB for one request's lexer.
            max_lexer_states: 20_000,
            max_grammar_size: 200_000,
            ..ParserLimits::default()
        };
        Limits {
            schema: SchemaLimits::default(),
            grammar: GrammarLimits::default(),
            parser,
        }
    }
}

/// How tokens the constraint forces are appended (see [`Constraint::forced`]).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum JumpForward {
    /// Every token is sampled.
    Off,
    /// While the mask allows one token only, it skips sampling: the tokens sampling picks.
    #[default]
    Exact,
    /// llguidance's fast-forward: all bytes the grammar forces, tokenized at once.
    Canonical,
}

/// Why a constraint cannot be used; each is the request's fault (a 400).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConstraintError {
    #[error("invalid JSON schema: {0}")]
    Schema(#[from] SchemaError),
    #[error("invalid grammar: {0}")]
    Grammar(#[from] GrammarError),
    /// llguidance refused it (unsatisfiable, too large, unsupported, over a limit).
    #[error("{what} cannot be compiled: {message}")]
    Compile { what: &'static str, message: String },
    /// A mask step failed mid-generation (a limit per step, or an internal error).
    #[error("constrained decoding failed: {0}")]
    Step(String),
}

/// The compiler of one tokenizer: built once per model, shared by every request.
pub struct Compiler {
    factory: ParserFactory,
    limits: Limits,
    vocab_size: usize,
}

impl Compiler {
    /// Builds the token trie's slices (a few hundred milliseconds for a 262k vocabulary).
    pub fn new(tok_env: TokEnv, limits: Limits) -> Result<Compiler, String> {
        let vocab_size = tok_env.tok_trie().vocab_size();
        let caps = InferenceCapabilities {
            ff_tokens: true,
            ..InferenceCapabilities::default()
        };
        let slices = llguidance::earley::SlicedBiasComputer::general_slices();
        let mut factory = guarded(|| ParserFactory::new(&tok_env, caps, &slices))
            .and_then(|r| r.map_err(|e| e.to_string()))?;
        factory.quiet();
        *factory.limits_mut() = limits.parser.clone();
        Ok(Compiler {
            factory,
            limits,
            vocab_size,
        })
    }

    /// Checks and compiles `spec`; the first mask is computed here too, so a grammar that
    /// admits nothing fails now, not at the first token.
    pub fn compile(&self, spec: &Spec) -> Result<Constraint, ConstraintError> {
        let (grammar, what) = match spec {
            Spec::JsonObject => (json_grammar(schema::any_object()), "the JSON format"),
            Spec::JsonSchema(schema) => {
                schema::check(schema, &self.limits.schema)?;
                let bounded = schema::with_representable_numbers(schema.clone());
                (json_grammar(bounded), "the JSON schema")
            }
            Spec::Gbnf(text) => {
                let lark = gbnf::to_lark(text, &self.limits.grammar, self.vocab_size)?;
                (TopLevelGrammar::from_lark(lark), "the grammar")
            }
        };
        let failed = |message: String| ConstraintError::Compile { what, message };
        let parser = guarded(|| self.factory.create_parser(grammar))
            .map_err(failed)?
            .map_err(|e| failed(first_line(&e.to_string())))?;
        let mut constraint = Constraint {
            matcher: Matcher::new(Ok(parser)),
            eos: self.factory.tok_env().tok_trie().eos_token(),
            mask: None,
            mask_time: Duration::ZERO,
        };
        let mask = constraint.mask().map_err(|e| match e {
            ConstraintError::Step(message) => failed(message),
            other => other,
        })?;
        if mask.is_zero() {
            return Err(failed("no output can match it".into()));
        }
        Ok(constraint)
    }
}

/// llguidance's JSON options: compact separators (fewer tokens, more of them forced). A
/// schema's own `x-guidance` (which could set a whitespace regex) is replaced.
fn json_grammar(mut schema: Value) -> TopLevelGrammar {
    let options =
        json!({"item_separator": ",", "key_separator": ":", "whitespace_flexible": false});
    match schema.as_object_mut() {
        Some(object) => {
            object.insert("x-guidance".into(), options);
        }
        None => {
            // `true` / `false`: the same meaning, as an object.
            let accept = schema.as_bool().unwrap_or(true);
            schema = if accept {
                json!({"x-guidance": options})
            } else {
                json!({"not": {}, "x-guidance": options})
            };
        }
    }
    TopLevelGrammar::from_json_schema(schema)
}

fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or(message);
    line.chars().take(400).collect()
}

/// Runs `f`, turning a panic into an error message.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        let text = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        format!(
            "internal error in the constraint engine: {}",
            first_line(&text)
        )
    })
}

/// One request's constraint: its parser state, and the mask for the next token.
pub struct Constraint {
    matcher: Matcher,
    /// The vocabulary's end-of-sequence token (never forced).
    eos: u32,
    mask: Option<SimpleVob>,
    /// Time spent computing the last mask.
    mask_time: Duration,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("stopped", &self.matcher.is_stopped())
            .finish_non_exhaustive()
    }
}

impl Clone for Constraint {
    fn clone(&self) -> Self {
        Constraint {
            matcher: self.matcher.deep_clone(),
            eos: self.eos,
            mask: self.mask.clone(),
            mask_time: self.mask_time,
        }
    }
}

impl Constraint {
    /// The tokens allowed next (computed once per position).
    pub fn mask(&mut self) -> Result<&SimpleVob, ConstraintError> {
        if self.mask.is_none() {
            let started = Instant::now();
            let matcher = &mut self.matcher;
            let mask = guarded(|| matcher.compute_mask_or_eos())
                .map_err(ConstraintError::Step)?
                .map_err(|e| ConstraintError::Step(first_line(&e.to_string())))?;
            self.mask_time = started.elapsed();
            self.mask = Some(mask);
        }
        self.mask
            .as_ref()
            .ok_or_else(|| ConstraintError::Step("no mask".into()))
    }

    /// How long the last mask took to compute.
    pub fn mask_time(&self) -> Duration {
        self.mask_time
    }

    /// Advances past a sampled token.
    pub fn accept(&mut self, token: u32) -> Result<(), ConstraintError> {
        self.mask = None;
        let matcher = &mut self.matcher;
        guarded(|| matcher.consume_token(token))
            .map_err(ConstraintError::Step)?
            .map_err(|e| ConstraintError::Step(first_line(&e.to_string())))
    }

    /// The tokens forced from here (at most `max`), already accepted. Where the grammar forces
    /// bytes, llguidance's mask allows only the tokenizer's split of them. `Exact`: while the
    /// mask allows one token only (what any sampler would pick); `Canonical`: llguidance's
    /// fast-forward, all forced bytes tokenized at once (no mask per token).
    pub fn forced(&mut self, max: usize, mode: JumpForward) -> Result<Vec<u32>, ConstraintError> {
        if max == 0 || self.matcher.is_stopped() {
            return Ok(Vec::new());
        }
        match mode {
            JumpForward::Off => Ok(Vec::new()),
            JumpForward::Exact => self.forced_exact(max),
            JumpForward::Canonical => self.forced_canonical(max),
        }
    }

    fn forced_exact(&mut self, max: usize) -> Result<Vec<u32>, ConstraintError> {
        let eos = self.eos;
        let mut tokens = Vec::new();
        while tokens.len() < max && !self.matcher.is_stopped() {
            let mask = self.mask()?;
            if mask.num_set() != 1 {
                break;
            }
            let Some(token) = mask.first_bit_set().map(|t| t as u32) else {
                break;
            };
            if token == eos {
                break;
            }
            self.accept(token)?;
            tokens.push(token);
        }
        Ok(tokens)
    }

    fn forced_canonical(&mut self, max: usize) -> Result<Vec<u32>, ConstraintError> {
        let matcher = &mut self.matcher;
        let mut tokens = guarded(|| matcher.compute_ff_tokens()).map_err(ConstraintError::Step)?;
        if let Some(error) = self.matcher.get_error() {
            return Err(ConstraintError::Step(first_line(&error)));
        }
        tokens.truncate(max);
        for &token in &tokens {
            self.accept(token)?;
        }
        Ok(tokens)
    }

    /// True when the grammar is complete and nothing can follow (only end of generation).
    pub fn finished(&self) -> bool {
        self.matcher.is_stopped()
    }
}

#[cfg(test)]
mod tests;
