//! The validated routing configuration: the ordered tiers and the escalation triggers.
//! `crate::config` builds it from the TOML's `[routing]` and `[[tiers]]`.

use std::path::PathBuf;
use std::time::Duration;

/// Everything the router decides with.
#[derive(Debug, Clone)]
pub struct RoutingPolicy {
    /// In order; a request walks them until one answers. Always holds at least one tier.
    pub tiers: Vec<Tier>,
    pub triggers: Triggers,
    /// Retries of a remote call that failed before any byte was sent or received.
    pub retries: u32,
    pub retry_backoff: Duration,
    /// Consecutive failures that open a remote tier's breaker, and how long it stays open.
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
    /// Where `class/thermal` and `devices/system/cpu` are read (`/sys` on a device).
    pub sysfs_root: PathBuf,
}

impl Default for RoutingPolicy {
    /// The embedded engine alone: what `edgellm serve` does with no tiers configured.
    fn default() -> Self {
        RoutingPolicy {
            tiers: vec![Tier {
                name: "local".into(),
                kind: TierKind::Local,
            }],
            triggers: Triggers::default(),
            retries: 1,
            retry_backoff: Duration::from_millis(50),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
            sysfs_root: PathBuf::from("/sys"),
        }
    }
}

impl RoutingPolicy {
    pub fn has_remote(&self) -> bool {
        self.tiers.iter().any(|t| !t.on_device())
    }
}

#[derive(Debug, Clone)]
pub struct Tier {
    pub name: String,
    pub kind: TierKind,
}

impl Tier {
    /// On this device: the embedded engine or a local server. Nothing sent to it leaves the
    /// device, so the egress guard does not apply.
    pub fn on_device(&self) -> bool {
        !matches!(self.kind, TierKind::Remote(_))
    }

    /// The endpoint of a tier reached over HTTP (a local server or a remote tier).
    pub fn endpoint(&self) -> Option<&RemoteTier> {
        match &self.kind {
            TierKind::Local => None,
            TierKind::LocalServer(endpoint) | TierKind::Remote(endpoint) => Some(endpoint),
        }
    }
}

/// What a tier is, and so where it runs.
#[derive(Debug, Clone)]
pub enum TierKind {
    /// The embedded engine.
    Local,
    /// A server on this device (llama-server, Ollama): it counts as local for overrides and
    /// metrics, and nothing sent to it leaves the device (the egress guard does not apply).
    LocalServer(RemoteTier),
    /// On-prem or cloud: off the device, every request passes the egress guard.
    Remote(RemoteTier),
}

/// Which wire API a remote tier speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteApi {
    /// `POST {url}/chat/completions` (OpenAI, vLLM, llama-server, Ollama's `/v1`).
    ChatCompletions,
    /// `POST {url}/responses` (OpenAI's Responses API).
    Responses,
    /// `POST {url}/completion` (llama-server's native API; local servers only).
    LlamaCompletion,
}

#[derive(Debug, Clone)]
pub struct RemoteTier {
    pub api: RemoteApi,
    /// The API base, e.g. `https://api.openai.com/v1` (no trailing slash).
    pub url: String,
    pub model: String,
    /// Read from the environment variable the config names; never from the file.
    pub api_key: Option<String>,
    pub connect_timeout: Duration,
    /// Whole-request limit (for a stream: until its last byte).
    pub timeout: Duration,
    /// Caps the request's max tokens for this tier.
    pub max_tokens: Option<u32>,
    /// Prices per million tokens (for budgets).
    pub price_input_per_mtok: f64,
    pub price_output_per_mtok: f64,
    /// Extra trusted root certificates (PEM) for an `https://` endpoint with a private CA; the
    /// system's roots are trusted as well.
    pub ca_pem: Option<Vec<u8>>,
}

/// When the local tier is left for the next one. Each trigger can be turned off; thresholds that
/// are `None` never fire.
#[derive(Debug, Clone)]
pub struct Triggers {
    pub local_error: bool,
    pub context: bool,
    pub deadline: bool,
    pub low_confidence: bool,
    pub overloaded: bool,
    pub thermal: bool,
    /// No first token within this: escalate.
    pub first_token_deadline: Option<Duration>,
    /// The whole answer must fit in this (checked against the measured decode rate).
    pub total_deadline: Option<Duration>,
    /// Below this mean token log probability the answer is "low confidence".
    pub min_mean_logprob: Option<f32>,
    /// Below this mean over any window of `confidence_window` tokens: "low confidence".
    pub min_window_logprob: Option<f32>,
    pub confidence_window: usize,
    /// Below these percentiles of the answer's token log probabilities: "low confidence".
    pub min_q10_logprob: Option<f32>,
    pub min_q25_logprob: Option<f32>,
    /// The whole answer's log probability below this.
    pub min_sum_logprob: Option<f32>,
    /// The first answer token's log probability below this.
    pub min_first_logprob: Option<f32>,
    /// The first answer token's lead over the runner-up (log probability) below this.
    pub min_first_margin: Option<f32>,
    /// The answer's mean top-N entropy (nats) above this.
    pub max_mean_entropy: Option<f32>,
    /// A logistic combiner over the signals, with its own minimum probability.
    pub combiner: Option<super::confidence::Combiner>,
    /// Streaming: tokens held back until confidence is known (0: no confidence check).
    pub hold_tokens: usize,
    /// Requests allowed to wait for a slot before new ones escalate.
    pub max_queued: Option<usize>,
    /// Throttling: any thermal zone at or above this, or
    pub max_celsius: Option<f32>,
    /// any CPU running below this fraction of its maximum frequency.
    pub min_freq_ratio: Option<f32>,
}

impl Default for Triggers {
    fn default() -> Self {
        Triggers {
            local_error: true,
            context: true,
            deadline: true,
            low_confidence: true,
            overloaded: true,
            thermal: true,
            first_token_deadline: None,
            total_deadline: None,
            min_mean_logprob: None,
            min_window_logprob: None,
            confidence_window: 4,
            min_q10_logprob: None,
            min_q25_logprob: None,
            min_sum_logprob: None,
            min_first_logprob: None,
            min_first_margin: None,
            max_mean_entropy: None,
            combiner: None,
            hold_tokens: 0,
            max_queued: None,
            max_celsius: None,
            min_freq_ratio: None,
        }
    }
}

impl Triggers {
    pub fn confidence_enabled(&self) -> bool {
        self.low_confidence
            && (self.min_mean_logprob.is_some()
                || self.min_window_logprob.is_some()
                || self.min_q10_logprob.is_some()
                || self.min_q25_logprob.is_some()
                || self.min_sum_logprob.is_some()
                || self.min_first_logprob.is_some()
                || self.min_first_margin.is_some()
                || self.max_mean_entropy.is_some()
                || self.combiner.is_some())
    }

    /// Whether a configured signal needs the engine's top-N alternatives of every token.
    pub fn spread_needed(&self) -> bool {
        self.min_first_margin.is_some()
            || self.max_mean_entropy.is_some()
            || self
                .combiner
                .as_ref()
                .is_some_and(|c| c.weights.keys().any(|f| f.needs_spread()))
    }

    pub fn thermal_enabled(&self) -> bool {
        self.thermal && (self.max_celsius.is_some() || self.min_freq_ratio.is_some())
    }
}

/// A sysfs reading: the hottest thermal zone and the slowest CPU relative to its maximum.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ThermalReading {
    pub max_celsius: Option<f32>,
    pub min_freq_ratio: Option<f32>,
}

/// Whether a reading means the device is throttling.
pub fn throttling(triggers: &Triggers, reading: &ThermalReading) -> bool {
    let hot =
        matches!((triggers.max_celsius, reading.max_celsius), (Some(limit), Some(t)) if t >= limit);
    let slow = matches!((triggers.min_freq_ratio, reading.min_freq_ratio), (Some(limit), Some(r)) if r < limit);
    hot || slow
}
