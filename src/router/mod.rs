//! The routing walk: each request goes through the configured tiers in order until one answers.
//!
//! `route/` decides (pure functions, every [`Reason`] is decided there); this module does the IO
//! those decisions need: `mod.rs` walks the tiers, [`local`] runs the local service and watches
//! its tokens against the deadlines and the confidence threshold, [`remote`] calls the tiers
//! reached over HTTP (retrying only what never reached them) behind their breakers. Off the
//! device the egress guard admits the request, restores the answer and settles it
//! (`crate::egress`); this module never restores or settles anything. A fallback happens only
//! before anything reached the client: what [`Router::start`] returns, a [`Routed`], is
//! committed to one tier, and its handlers never switch mid-answer.

mod local;
mod remote;
pub use local::SPREAD_TOP;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use crate::egress::{EgressGuard, EgressStream};
use crate::engine::EngineError;
use crate::metrics::Metrics;
use crate::route::{self, Reason, RemoteApi, RemoteSkip, RouteOverride, RoutingPolicy, TierKind};
use crate::service::{Generation, LocalService, Running, ServiceError, Step};
use crate::upstream::UpstreamError;

use remote::Remote;

/// Whether the caller wants the whole answer at once or streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Whole,
    Stream,
}

/// Where a request was answered and why: what the caller sees in headers and the body.
#[derive(Debug, Clone)]
pub struct RouteMeta {
    pub tier: String,
    pub reason: Reason,
    /// Time spent on the local tier before this answer (all of it when local answered).
    pub local_ms: u64,
    /// The remote model, when a remote tier answered.
    pub remote_model: Option<String>,
    /// Every tier left before the one that answered, in order.
    pub attempts: Vec<Attempt>,
}

#[derive(Debug, Clone)]
pub struct Attempt {
    pub tier: String,
    pub reason: Reason,
    pub detail: String,
}

/// The service-level router; one per server.
pub struct Router {
    local: LocalService,
    policy: RoutingPolicy,
    /// `Some` at the index of each tier reached over HTTP.
    remotes: Vec<Option<Remote>>,
    metrics: Arc<Metrics>,
    /// Every request for a tier off the device passes it; without one nothing leaves.
    egress: Option<Arc<EgressGuard>>,
    /// The served model's name: `gen_ai_request_model` of the local tier.
    local_model: String,
}

/// Why a tier did not answer.
struct Failure {
    reason: Reason,
    detail: String,
    /// The error itself, when the tier ran and failed (not when it was skipped).
    error: Option<ServiceError>,
    /// A client error (bad schema, bad parameter): no tier would do better; return it.
    fatal: bool,
}

impl Failure {
    fn skip(reason: Reason, detail: impl Into<String>) -> Self {
        Failure {
            reason,
            detail: detail.into(),
            error: None,
            fatal: false,
        }
    }

    fn remote_skip(skip: RemoteSkip, detail: impl Into<String>) -> Self {
        Failure::skip(route::remote_skip(skip), detail)
    }

    /// The local tier failed; `route::local_failure` says what that means.
    fn local(error: ServiceError) -> Self {
        let reason = route::local_failure(error.failure());
        Failure {
            reason: reason.unwrap_or(Reason::LocalError),
            detail: error.to_string(),
            fatal: reason.is_none(),
            error: Some(error),
        }
    }

    fn remote(tier: &str, error: UpstreamError) -> Self {
        Failure {
            reason: Reason::UpstreamError,
            detail: error.to_string(),
            error: Some(ServiceError::Upstream {
                tier: tier.to_string(),
                error,
            }),
            fatal: false,
        }
    }
}

/// A tier's answer, before the caller sees any of it.
struct Committed {
    source: Source,
    held: VecDeque<Step>,
    prompt_tokens: usize,
    /// Local answered because the egress guard refused the tier it would have escalated to.
    stayed: Option<Attempt>,
}

enum Source {
    Local(Running),
    /// Restored and settled by the egress guard when the tier is off the device.
    Remote {
        tier: String,
        events: Box<EgressStream>,
    },
    Finished,
}

/// The walk so far: what each tier left behind.
#[derive(Default)]
struct Walk {
    attempts: Vec<Attempt>,
    last_error: Option<ServiceError>,
    local_ms: u64,
}

impl Router {
    pub fn new(
        local: LocalService,
        policy: RoutingPolicy,
        metrics: Arc<Metrics>,
        egress: Option<Arc<EgressGuard>>,
    ) -> Router {
        let remotes = policy
            .tiers
            .iter()
            .map(|tier| {
                tier.endpoint()
                    .map(|endpoint| Remote::new(endpoint, &policy))
            })
            .collect();
        Router {
            local,
            policy,
            remotes,
            metrics,
            egress,
            local_model: "local".to_string(),
        }
    }

    /// Names the in-process model in the GenAI metrics (the served alias).
    pub fn with_local_model(mut self, name: &str) -> Router {
        self.local_model = name.to_string();
        self
    }

    /// The GenAI attributes of an operation on tier `index`.
    fn gen_ai_key(&self, index: usize, operation: &'static str) -> crate::metrics::GenAiKey {
        let tier = &self.policy.tiers[index];
        let (provider, model) = match &tier.kind {
            TierKind::Local => ("llama.cpp", self.local_model.clone()),
            TierKind::LocalServer(remote) | TierKind::Remote(remote) => {
                (gen_ai_provider(remote), remote.model.clone())
            }
        };
        crate::metrics::GenAiKey {
            operation,
            provider,
            model,
            tier: tier.name.clone(),
        }
    }

    pub fn egress(&self) -> Option<&Arc<EgressGuard>> {
        self.egress.as_ref()
    }

    /// Every tier as `GET /v1/status` shows it: kind, API, endpoint and breaker (never a key).
    pub fn tier_status(&self) -> Vec<serde_json::Value> {
        let now = Instant::now();
        self.policy
            .tiers
            .iter()
            .zip(&self.remotes)
            .map(|(tier, remote)| match (tier.endpoint(), remote) {
                (Some(config), Some(remote)) => {
                    let breaker = remote
                        .breaker
                        .lock()
                        .map(|b| b.state(now).as_str())
                        .unwrap_or("unknown");
                    serde_json::json!({
                        "name": tier.name,
                        "kind": match tier.kind {
                            TierKind::LocalServer(_) => "local_server",
                            _ => "remote",
                        },
                        "api": match config.api {
                            route::RemoteApi::ChatCompletions => "openai_chat",
                            route::RemoteApi::Responses => "openai_responses",
                            route::RemoteApi::LlamaCompletion => "llama",
                        },
                        "url": config.url,
                        "model": config.model,
                        "breaker": breaker,
                        "usable": remote.upstream.is_ok(),
                    })
                }
                _ => serde_json::json!({"name": tier.name, "kind": "local"}),
            })
            .collect()
    }

    /// Each remote tier's breaker state: (tier, state name, gauge value).
    pub fn breaker_states(&self) -> Vec<(String, &'static str, u8)> {
        let now = Instant::now();
        self.policy
            .tiers
            .iter()
            .zip(&self.remotes)
            .filter_map(|(tier, remote)| {
                let state = remote.as_ref()?.breaker.lock().ok()?.state(now);
                Some((tier.name.clone(), state.as_str(), state.as_number()))
            })
            .collect()
    }

    /// Walks the tiers until one commits to an answer. Errors before any answer are the tier's
    /// own error when only one tier was considered (so a local-only server answers as before),
    /// and otherwise one error listing every tier's reason.
    pub async fn start(
        &self,
        mut generation: Generation,
        route: RouteOverride,
        mode: Mode,
    ) -> Result<Routed, ServiceError> {
        let started = Instant::now();
        if let crate::service::OutputFormat::JsonSchema(schema) = &mut generation.format {
            crate::service::tuple_items(schema);
        }
        let operation = match generation.prompt {
            crate::service::Prompt::Chat(_) => "chat",
            _ => "text_completion",
        };
        let plan = route::eligible(&self.policy.tiers, route);
        let mut walk = Walk::default();
        for (position, &(index, skip)) in plan.iter().enumerate() {
            let tier = &self.policy.tiers[index];
            if let Some(reason) = skip {
                walk.attempts.push(Attempt {
                    tier: tier.name.clone(),
                    reason,
                    detail: "left out by the request's override".into(),
                });
                continue;
            }
            let rest = &plan[position + 1..];
            let has_next = rest.iter().any(|e| e.1.is_none());
            let why = walk.attempts.last().map(|a: &Attempt| a.reason);
            let tier_started = Instant::now();
            let outcome = match &tier.kind {
                TierKind::Local => self.try_local(&generation, mode, has_next, rest).await,
                TierKind::LocalServer(_) | TierKind::Remote(_) => {
                    self.try_remote(index, &generation, mode, why).await
                }
            };
            if tier.on_device() {
                walk.local_ms += tier_started.elapsed().as_millis() as u64;
            }
            match outcome {
                Ok(committed) => {
                    return Ok(self.commit(index, committed, walk, route, started, operation));
                }
                Err(failure) if failure.fatal => {
                    return Err(failure
                        .error
                        .unwrap_or(ServiceError::AllTiersFailed(failure.detail)));
                }
                Err(failure) => {
                    let reason = failure.reason;
                    walk.attempts.push(Attempt {
                        tier: tier.name.clone(),
                        reason,
                        detail: failure.detail,
                    });
                    if failure.error.is_some() {
                        walk.last_error = failure.error;
                    }
                    if has_next && !route::escalates(&self.policy.triggers, reason) {
                        break;
                    }
                }
            }
        }
        Err(no_tier_answered(walk, self.egress.as_deref()))
    }

    /// The request committed to tier `index`: what the caller sees of where and why.
    fn commit(
        &self,
        index: usize,
        mut committed: Committed,
        mut walk: Walk,
        route: RouteOverride,
        started: Instant,
        operation: &'static str,
    ) -> Routed {
        let tier = &self.policy.tiers[index];
        if let Some(stayed) = committed.stayed.take() {
            walk.attempts.push(stayed);
        }
        let reason = match walk.attempts.last() {
            Some(attempt) => attempt.reason,
            None if route != RouteOverride::Auto => Reason::Override,
            None => Reason::Default,
        };
        let fell_back = walk.attempts.iter().any(|a| a.reason != Reason::Override);
        self.metrics
            .count_routed(&tier.name, reason.as_str(), fell_back);
        let meta = RouteMeta {
            tier: tier.name.clone(),
            reason,
            local_ms: walk.local_ms,
            remote_model: self.remotes[index].as_ref().map(|r| r.model.clone()),
            attempts: walk.attempts,
        };
        Routed {
            meta,
            prompt_tokens: committed.prompt_tokens,
            held: committed.held,
            source: committed.source,
            started,
            remote: !tier.on_device(),
            metrics: self.metrics.clone(),
            gen_ai: Some(self.gen_ai_key(index, operation)),
        }
    }
}

/// `gen_ai.provider.name`: the well-known value where the URL says which it is, otherwise what
/// the wire format is (OpenTelemetry allows a custom value).
fn gen_ai_provider(remote: &crate::route::RemoteTier) -> &'static str {
    let host = reqwest::Url::parse(&remote.url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        .unwrap_or_default();
    if host == "api.openai.com" {
        "openai"
    } else if host.ends_with(".openai.azure.com") {
        "azure.ai.openai"
    } else {
        match remote.api {
            RemoteApi::LlamaCompletion => "llama.cpp",
            RemoteApi::ChatCompletions | RemoteApi::Responses => "openai_compatible",
        }
    }
}

/// No tier answered: the one tier's own error, a spent budget when the guard refused a tier
/// for it, or every tier's reason.
fn no_tier_answered(walk: Walk, egress: Option<&EgressGuard>) -> ServiceError {
    let considered = walk
        .attempts
        .iter()
        .filter(|a| a.reason != Reason::Override)
        .count();
    let detail = || {
        walk.attempts
            .iter()
            .map(|a| format!("{}: {} ({})", a.tier, a.reason.as_str(), a.detail))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let budget_spent = walk.attempts.iter().any(|a| a.reason == Reason::Budget);
    match (walk.last_error, egress) {
        (Some(error), _) if considered == 1 && !budget_spent => error,
        (_, Some(egress)) if budget_spent => ServiceError::BudgetSpent {
            detail: detail(),
            retry_after_secs: egress.seconds_to_next_budget_day(),
        },
        _ => ServiceError::AllTiersFailed(detail()),
    }
}

/// A request committed to one tier. Steps come from what was held back while deciding, then
/// from the tier itself. Dropping it cancels the request (and, for a stream off the device,
/// settles it as abandoned: see `crate::egress::EgressStream`).
pub struct Routed {
    pub meta: RouteMeta,
    pub prompt_tokens: usize,
    held: VecDeque<Step>,
    source: Source,
    started: Instant,
    remote: bool,
    metrics: Arc<Metrics>,
    /// Taken when the operation is recorded in the GenAI families (once).
    gen_ai: Option<crate::metrics::GenAiKey>,
}

impl Routed {
    pub async fn next(&mut self) -> Result<Step, ServiceError> {
        let step = match self.held.pop_front() {
            Some(step) => Ok(step),
            None => match &mut self.source {
                Source::Local(running) => running.next().await,
                Source::Remote { tier, events } => {
                    remote::step(&self.metrics, tier, events.next().await)
                }
                Source::Finished => Err(EngineError::Stopped.into()),
            },
        };
        if let Ok(Step::Done(summary)) = &step {
            if self.prompt_tokens == 0 {
                self.prompt_tokens = summary.prompt_tokens;
            }
            let seconds = self.started.elapsed().as_secs_f64();
            if self.remote {
                self.metrics.remote_latency.observe(seconds);
            } else {
                self.metrics.local_latency.observe(seconds);
            }
            if let Some(key) = self.gen_ai.take() {
                let generated = summary.generated_tokens;
                self.metrics.record_gen_ai(
                    key,
                    crate::metrics::GenAiObservation {
                        input_tokens: self.prompt_tokens,
                        output_tokens: generated,
                        duration_secs: seconds,
                        ttft_secs: (generated > 0)
                            .then(|| summary.time_to_first_token().as_secs_f64()),
                        tpot_secs: (generated > 1)
                            .then(|| summary.decode_time.as_secs_f64() / (generated - 1) as f64),
                        error: None,
                    },
                );
            }
        }
        if let Err(error) = &step
            && let Some(key) = self.gen_ai.take()
        {
            self.metrics.record_gen_ai(
                key,
                crate::metrics::GenAiObservation {
                    duration_secs: self.started.elapsed().as_secs_f64(),
                    error: Some(error.failure().as_str()),
                    ..Default::default()
                },
            );
        }
        step
    }
}
