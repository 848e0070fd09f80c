//! The routing decision: which tier answers a request, and why. Pure logic, no IO.
//!
//! A request walks the configured tiers in order. Before the local tier does any work,
//! [`local_pre_decision`] looks at the signals (queue depth, thermal state) and may skip it; while
//! it generates, [`deadline`] and [`confidence`] say whether to give up on it; each remote tier has
//! a [`breaker::Breaker`]. Every skip or escalation is a named [`Reason`]. The IO (engine, HTTP,
//! sysfs, clocks) lives in `crate::router`, `crate::upstream` and `crate::thermal`, which feed
//! these functions plain values.
//!
//! Where each [`Reason`] is decided, all here: [`local_pre_decision`] (thermal, overloaded),
//! [`local_failure`] (what a local error means), [`deadline`] and [`confidence`] (while local
//! generates), [`breaker`] (breaker_open), [`remote_skip`] (unsupported, upstream_error, policy
//! when no guard exists), [`escalates`] (which reasons may go on). The egress guard's refusals
//! are `Reason::Policy` or `Reason::Budget` from `guard/` (`crate::egress` does their IO).

pub mod breaker;
pub mod confidence;
pub mod deadline;
pub mod policy;

use std::time::Duration;

pub use policy::{RemoteApi, RemoteTier, RoutingPolicy, Tier, TierKind, Triggers};

/// Why a tier answered, or why it was left. `[routing] escalate_on` names them as
/// [`Reason::as_str`] writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum Reason {
    /// The first tier answered; nothing escalated.
    Default,
    /// The request's override chose (or skipped) this tier.
    Override,
    /// Local failed or the model is not loaded.
    LocalError,
    /// Prompt + max tokens do not fit the local context.
    Context,
    /// No first token in time, or the decode rate says the answer cannot finish in time.
    Deadline,
    /// The local answer's log probabilities are below the threshold.
    LowConfidence,
    /// The local queue is too deep, or the predicted wait exceeds the deadline.
    Overloaded,
    /// The device is throttling.
    Thermal,
    /// The tier's circuit breaker is open.
    BreakerOpen,
    /// The request cannot be sent to this tier (token-id prompts to a remote API).
    Unsupported,
    /// The remote tier failed (connection, status, timeout, protocol).
    UpstreamError,
    /// The egress guard kept the request on the device: opt-in, network, a redaction policy
    /// that blocks, or a guard that could not decide (fail closed).
    Policy,
    /// Today's remote budget is spent.
    Budget,
}

impl Reason {
    pub const ALL: [Reason; 13] = [
        Reason::Default,
        Reason::Override,
        Reason::LocalError,
        Reason::Context,
        Reason::Deadline,
        Reason::LowConfidence,
        Reason::Overloaded,
        Reason::Thermal,
        Reason::BreakerOpen,
        Reason::Unsupported,
        Reason::UpstreamError,
        Reason::Policy,
        Reason::Budget,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Default => "default",
            Reason::Override => "override",
            Reason::LocalError => "local_error",
            Reason::Context => "context",
            Reason::Deadline => "deadline",
            Reason::LowConfidence => "low_confidence",
            Reason::Overloaded => "overloaded",
            Reason::Thermal => "thermal",
            Reason::BreakerOpen => "breaker_open",
            Reason::Unsupported => "unsupported",
            Reason::UpstreamError => "upstream_error",
            Reason::Policy => "policy",
            Reason::Budget => "budget",
        }
    }

    pub fn parse(text: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

/// A reason read from configuration: the names [`Reason::as_str`] writes, and no others.
impl TryFrom<String> for Reason {
    type Error = String;

    fn try_from(text: String) -> Result<Reason, String> {
        Reason::parse(&text).ok_or_else(|| format!("unknown reason {text:?}"))
    }
}

/// The per-request override (header `x-edgellm-route` or body field `edgellm.route`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteOverride {
    #[default]
    Auto,
    /// Only local tiers; no fallback.
    Local,
    /// Skip local tiers.
    Remote,
    /// The first eligible tier only: nothing escalates.
    NoFallback,
}

impl RouteOverride {
    pub fn parse(text: &str) -> Option<RouteOverride> {
        match text.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "auto" | "" => Some(RouteOverride::Auto),
            "local" => Some(RouteOverride::Local),
            "remote" => Some(RouteOverride::Remote),
            "no_fallback" => Some(RouteOverride::NoFallback),
            _ => None,
        }
    }
}

/// Which tiers a request may use, in order, after its override. A tier left out by the override
/// is listed with `Some(Reason::Override)`.
pub fn eligible(tiers: &[Tier], route: RouteOverride) -> Vec<(usize, Option<Reason>)> {
    let mut out: Vec<(usize, Option<Reason>)> = tiers
        .iter()
        .enumerate()
        .map(|(i, tier)| {
            let local = tier.on_device();
            let skip = match route {
                RouteOverride::Local => !local,
                RouteOverride::Remote => local,
                RouteOverride::Auto | RouteOverride::NoFallback => false,
            };
            (i, skip.then_some(Reason::Override))
        })
        .collect();
    if route == RouteOverride::NoFallback {
        let mut seen = false;
        for entry in &mut out {
            if entry.1.is_none() {
                if seen {
                    entry.1 = Some(Reason::Override);
                }
                seen = true;
            }
        }
    }
    out
}

/// What the router knows about the local tier before it does any work.
#[derive(Debug, Clone, Default)]
pub struct LocalSignals {
    /// Requests admitted and not finished.
    pub in_flight: usize,
    pub slots: u32,
    /// Mean duration of recent local requests, when known.
    pub mean_request: Option<Duration>,
    /// `Some(true)` when the device is throttling (`None`: not read).
    pub throttling: Option<bool>,
}

/// Whether to skip the local tier before any work: `None` means try it. Only called when a later
/// tier exists to escalate to.
pub fn local_pre_decision(triggers: &Triggers, signals: &LocalSignals) -> Option<Reason> {
    if triggers.thermal && signals.throttling == Some(true) {
        return Some(Reason::Thermal);
    }
    if triggers.overloaded {
        // The place this request would take in the queue if admitted now.
        let position = (signals.in_flight + 1).saturating_sub(signals.slots as usize);
        if let Some(max_queued) = triggers.max_queued
            && position > max_queued
        {
            return Some(Reason::Overloaded);
        }
        if let (Some(total), Some(mean)) = (triggers.total_deadline, signals.mean_request) {
            let waves = position.div_ceil(signals.slots.max(1) as usize) as u32;
            if position > 0 && mean * waves > total {
                return Some(Reason::Overloaded);
            }
        }
    }
    None
}

/// What went wrong on the local tier, as the service classifies its own errors
/// (`ServiceError::failure`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalFailure {
    /// Every slot is busy and the queue is full.
    Overloaded,
    /// Prompt + max tokens do not fit the local context.
    Context,
    /// The request's timeout passed.
    Timeout,
    /// The request itself is wrong (schema, grammar, parameter, token id): no tier would do
    /// better.
    Invalid,
    /// Anything else: the model is not loaded, the engine failed, the output failed its check.
    Error,
}

impl LocalFailure {
    /// `error.type` in the GenAI metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            LocalFailure::Overloaded => "overloaded",
            LocalFailure::Context => "context_length",
            LocalFailure::Timeout => "timeout",
            LocalFailure::Invalid => "invalid_request",
            LocalFailure::Error => "error",
        }
    }
}

/// Why the local tier is left after `failure`; `None` when the failure is the request's own and
/// goes back to the caller as it is.
pub fn local_failure(failure: LocalFailure) -> Option<Reason> {
    match failure {
        LocalFailure::Overloaded => Some(Reason::Overloaded),
        LocalFailure::Context => Some(Reason::Context),
        LocalFailure::Timeout => Some(Reason::Deadline),
        LocalFailure::Invalid => None,
        LocalFailure::Error => Some(Reason::LocalError),
    }
}

/// Why a tier reached over HTTP is not called at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteSkip {
    /// Its client could not be built (a bad URL or certificate).
    NotUsable,
    /// The request cannot be put in its API's terms (token-id prompts, GBNF grammars).
    Unsupported,
    /// Its circuit breaker is open.
    BreakerOpen,
    /// Off the device with no egress guard (no ledger): nothing leaves.
    NoGuard,
}

/// The reason a tier is left for `skip`; a tier that was called and failed is always
/// `Reason::UpstreamError`.
pub fn remote_skip(skip: RemoteSkip) -> Reason {
    match skip {
        RemoteSkip::NotUsable => Reason::UpstreamError,
        RemoteSkip::Unsupported => Reason::Unsupported,
        RemoteSkip::BreakerOpen => Reason::BreakerOpen,
        RemoteSkip::NoGuard => Reason::Policy,
    }
}

/// Whether leaving a tier for `reason` may go on to the next tier (each trigger can be turned
/// off; a remote tier's failure always may).
pub fn escalates(triggers: &Triggers, reason: Reason) -> bool {
    match reason {
        Reason::LocalError => triggers.local_error,
        Reason::Context => triggers.context,
        Reason::Deadline => triggers.deadline,
        Reason::LowConfidence => triggers.low_confidence,
        Reason::Overloaded => triggers.overloaded,
        Reason::Thermal => triggers.thermal,
        Reason::Default
        | Reason::Override
        | Reason::BreakerOpen
        | Reason::Unsupported
        | Reason::UpstreamError
        | Reason::Policy
        | Reason::Budget => true,
    }
}

#[cfg(test)]
mod tests;
