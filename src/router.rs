//! The routing walk: each request goes through the configured tiers in order until one answers.
//!
//! `route/` decides (pure functions); this module does the IO those decisions need: it runs the
//! local service, watches its tokens against the deadlines and the confidence threshold, calls
//! remote tiers (retrying only what never reached them), keeps each remote tier's breaker, and
//! records metrics. A fallback happens only before anything reached the client: what it returns,
//! a [`Routed`], is committed to one tier, and its handlers never switch mid-answer.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::egress::{Admitted, EgressGuard, Settlement};
use crate::engine::{EngineError, StopReason, Summary, TokenEvent};
use crate::guard::redact::Restorer;
use crate::metrics::Metrics;
use crate::route::breaker::Breaker;
use crate::route::deadline::{self, Progress};
use crate::route::{
    self, LocalSignals, Reason, RouteOverride, RoutingPolicy, TierKind, confidence, policy,
};
use crate::service::{Generation, LocalService, OutputFormat, Prompt, Running, ServiceError, Step};
use crate::upstream::{
    EventStream, Provider, Upstream, UpstreamAnswer, UpstreamError, UpstreamEvent, UpstreamRequest,
    Usage,
};

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

struct Remote {
    upstream: Result<Upstream, String>,
    breaker: Mutex<Breaker>,
    model: String,
    max_tokens: Option<u32>,
}

/// The service-level router; one per server.
pub struct Router {
    local: LocalService,
    policy: RoutingPolicy,
    /// `Some` at the index of each remote tier.
    remotes: Vec<Option<Remote>>,
    metrics: Arc<Metrics>,
    /// Every request for a tier off the device passes it; without one nothing leaves.
    egress: Option<Arc<EgressGuard>>,
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

    fn local(error: ServiceError) -> Self {
        let reason = match &error {
            ServiceError::Overloaded { .. } => Some(Reason::Overloaded),
            ServiceError::PromptTooLong { .. }
            | ServiceError::MaxTokensTooLarge { .. }
            | ServiceError::Engine(EngineError::ContextOverflow { .. }) => Some(Reason::Context),
            ServiceError::Timeout(_) => Some(Reason::Deadline),
            ServiceError::InvalidSchema(_)
            | ServiceError::InvalidConstraint { .. }
            | ServiceError::TokenOutOfRange { .. }
            | ServiceError::Engine(
                EngineError::EmptyPrompt
                | EngineError::InvalidParameter(_)
                | EngineError::Constraint(_),
            ) => None,
            _ => Some(Reason::LocalError),
        };
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
                message: error.to_string(),
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
    /// A remote stream's egress state: restore its text, settle it at the end.
    egress: Option<StreamEgress>,
}

/// What a streamed remote answer carries until it ends.
struct StreamEgress {
    guard: Arc<EgressGuard>,
    admitted: Admitted,
    restorer: Restorer,
}

enum Source {
    Local(Running),
    Remote { tier: String, events: EventStream },
    Finished,
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
            .map(|tier| match &tier.kind {
                TierKind::Local => None,
                TierKind::Remote(remote) => Some(Remote {
                    upstream: Upstream::new(remote).map_err(|e| e.to_string()),
                    breaker: Mutex::new(Breaker::new(
                        policy.breaker_failures,
                        policy.breaker_cooldown,
                    )),
                    model: remote.model.clone(),
                    max_tokens: remote.max_tokens,
                }),
            })
            .collect();
        Router {
            local,
            policy,
            remotes,
            metrics,
            egress,
        }
    }

    pub fn egress(&self) -> Option<&Arc<EgressGuard>> {
        self.egress.as_ref()
    }

    pub fn local(&self) -> &LocalService {
        &self.local
    }

    /// Every tier as `GET /v1/status` shows it: kind, API, endpoint and breaker (never a key).
    pub fn tier_status(&self) -> Vec<serde_json::Value> {
        let now = Instant::now();
        self.policy
            .tiers
            .iter()
            .zip(&self.remotes)
            .map(|(tier, remote)| match (&tier.kind, remote) {
                (TierKind::Remote(config), Some(remote)) => {
                    let breaker = remote
                        .breaker
                        .lock()
                        .map(|b| b.state(now).as_str())
                        .unwrap_or("unknown");
                    serde_json::json!({
                        "name": tier.name,
                        "kind": if config.on_device { "local_server" } else { "remote" },
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
        generation: Generation,
        route: RouteOverride,
        mode: Mode,
    ) -> Result<Routed, ServiceError> {
        let started = Instant::now();
        let plan = route::eligible(&self.policy.tiers, route);
        let mut attempts: Vec<Attempt> = Vec::new();
        let mut last_error = None;
        let mut local_ms = 0u64;
        for (position, &(index, skip)) in plan.iter().enumerate() {
            let tier = &self.policy.tiers[index];
            if let Some(reason) = skip {
                attempts.push(Attempt {
                    tier: tier.name.clone(),
                    reason,
                    detail: "left out by the request's override".into(),
                });
                continue;
            }
            let rest = &plan[position + 1..];
            let has_next = rest.iter().any(|e| e.1.is_none());
            let why = attempts.last().map(|a: &Attempt| a.reason);
            let outcome = match &tier.kind {
                TierKind::Local => {
                    let local_started = Instant::now();
                    let outcome = self.try_local(&generation, mode, has_next, rest).await;
                    local_ms += local_started.elapsed().as_millis() as u64;
                    outcome
                }
                TierKind::Remote(_) if tier.on_device() => {
                    let local_started = Instant::now();
                    let outcome = self.try_remote(index, &generation, mode, why).await;
                    local_ms += local_started.elapsed().as_millis() as u64;
                    outcome
                }
                TierKind::Remote(_) => self.try_remote(index, &generation, mode, why).await,
            };
            match outcome {
                Ok(mut committed) => {
                    if let Some(stayed) = committed.stayed.take() {
                        attempts.push(stayed);
                    }
                    let reason = match attempts.last() {
                        Some(attempt) => attempt.reason,
                        None if route != RouteOverride::Auto => Reason::Override,
                        None => Reason::Default,
                    };
                    let remote = !tier.on_device();
                    let fell_back = attempts.iter().any(|a| a.reason != Reason::Override);
                    self.metrics
                        .count_routed(&tier.name, reason.as_str(), fell_back);
                    let meta = RouteMeta {
                        tier: tier.name.clone(),
                        reason,
                        local_ms,
                        remote_model: self.remotes[index].as_ref().map(|r| r.model.clone()),
                        attempts,
                    };
                    return Ok(Routed {
                        meta,
                        prompt_tokens: committed.prompt_tokens,
                        held: committed.held,
                        source: committed.source,
                        egress: committed.egress,
                        started,
                        remote,
                        metrics: self.metrics.clone(),
                    });
                }
                Err(failure) => {
                    if failure.fatal {
                        return Err(failure
                            .error
                            .unwrap_or(ServiceError::AllTiersFailed(failure.detail)));
                    }
                    attempts.push(Attempt {
                        tier: tier.name.clone(),
                        reason: failure.reason,
                        detail: failure.detail,
                    });
                    if failure.error.is_some() {
                        last_error = failure.error;
                    }
                    if has_next && !route::escalates(&self.policy.triggers, failure.reason) {
                        break;
                    }
                }
            }
        }
        let considered = attempts
            .iter()
            .filter(|a| a.reason != Reason::Override)
            .count();
        match last_error {
            Some(error) if considered == 1 => Err(error),
            _ => Err(ServiceError::AllTiersFailed(
                attempts
                    .iter()
                    .map(|a| format!("{}: {} ({})", a.tier, a.reason.as_str(), a.detail))
                    .collect::<Vec<_>>()
                    .join("; "),
            )),
        }
    }

    async fn try_local(
        &self,
        generation: &Generation,
        mode: Mode,
        mut has_next: bool,
        rest: &[(usize, Option<Reason>)],
    ) -> Result<Committed, Failure> {
        let triggers = &self.policy.triggers;
        // Set when a trigger fired but the egress guard keeps the request here.
        let mut stayed: Option<Attempt> = None;
        if has_next {
            let throttling = triggers.thermal_enabled().then(|| {
                policy::throttling(triggers, &crate::thermal::read(&self.policy.sysfs_root))
            });
            let signals = LocalSignals {
                in_flight: self.local.in_flight(),
                slots: self.local.slots(),
                mean_request: self
                    .metrics
                    .request_duration
                    .mean()
                    .map(Duration::from_secs_f64),
                throttling,
            };
            if let Some(reason) = route::local_pre_decision(triggers, &signals) {
                let detail = match reason {
                    Reason::Thermal => "the device is throttling".to_string(),
                    _ => format!(
                        "{} requests in flight for {} slots",
                        signals.in_flight, signals.slots
                    ),
                };
                match self.escalation_refused(rest, generation).await {
                    None => return Err(Failure::skip(reason, detail)),
                    Some(refusal) => {
                        stayed = Some(refusal);
                        has_next = false;
                    }
                }
            }
        }
        let max_tokens = match generation.params.max_tokens {
            0 => self.local.limits().max_tokens,
            n => n,
        };
        let started = Instant::now();
        let mut running = self
            .local
            .start(generation.clone())
            .await
            .map_err(Failure::local)?;
        let prompt_tokens = running.prompt_tokens;
        let hold = match mode {
            Mode::Whole => usize::MAX,
            Mode::Stream if has_next => triggers.hold_tokens.max(1),
            Mode::Stream => 0,
        };
        let check_confidence = has_next
            && triggers.confidence_enabled()
            && (mode == Mode::Whole || triggers.hold_tokens > 0);
        let mut held = VecDeque::new();
        let mut logprobs = Vec::new();
        let mut progress = Progress {
            max_tokens,
            ..Progress::default()
        };
        let mut finished = false;
        while progress.tokens < hold {
            progress.elapsed = started.elapsed();
            let wake = if has_next {
                deadline::wake_at(triggers, &progress)
            } else {
                None
            };
            let step = match wake {
                // `Running::next` is a channel receive: dropping it at the deadline loses nothing.
                Some(at) => {
                    match tokio::time::timeout_at((started + at).into(), running.next()).await {
                        Ok(step) => step,
                        Err(_) => {
                            let failure = Failure::skip(
                                Reason::Deadline,
                                format!(
                                    "{} tokens after {} ms",
                                    progress.tokens,
                                    started.elapsed().as_millis()
                                ),
                            );
                            match self.escalation_refused(rest, generation).await {
                                None => return Err(failure),
                                Some(refusal) => {
                                    stayed = Some(refusal);
                                    has_next = false;
                                    continue;
                                }
                            }
                        }
                    }
                }
                None => running.next().await,
            }
            .map_err(Failure::local)?;
            match step {
                Step::Token(token) => {
                    progress.tokens += 1;
                    progress.elapsed = started.elapsed();
                    progress.first_token_at.get_or_insert(progress.elapsed);
                    // Forced tokens were certain under the constraint: they say nothing of
                    // the model's confidence.
                    if !token.forced {
                        logprobs.push(token.logprob);
                    }
                    held.push_back(Step::Token(token));
                    if has_next && deadline::missed(triggers, &progress) {
                        let failure = Failure::skip(
                            Reason::Deadline,
                            format!(
                                "{} tokens in {} ms cannot finish {} tokens in time",
                                progress.tokens,
                                progress.elapsed.as_millis(),
                                max_tokens
                            ),
                        );
                        match self.escalation_refused(rest, generation).await {
                            None => return Err(failure),
                            Some(refusal) => {
                                stayed = Some(refusal);
                                has_next = false;
                            }
                        }
                    }
                }
                Step::ToolCalls(calls) => held.push_back(Step::ToolCalls(calls)),
                Step::Done(summary) => {
                    held.push_back(Step::Done(summary));
                    finished = true;
                    break;
                }
            }
        }
        if check_confidence
            && has_next
            && let Some(score) = confidence::score(&logprobs, triggers.confidence_window)
            && confidence::is_low(triggers, &score)
        {
            let failure = Failure::skip(
                Reason::LowConfidence,
                format!(
                    "mean logprob {:.2}, lowest window {:.2} over {} tokens",
                    score.mean, score.window_min, score.tokens
                ),
            );
            match self.escalation_refused(rest, generation).await {
                None => return Err(failure),
                Some(refusal) => stayed = Some(refusal),
            }
        }
        Ok(Committed {
            source: if finished {
                Source::Finished
            } else {
                Source::Local(running)
            },
            held,
            prompt_tokens,
            stayed,
            egress: None,
        })
    }

    /// Before leaving a local answer it could still give: `None` when some later tier would take
    /// the request, else the first later tier's refusal by the egress guard (the request then
    /// stays local, and that refusal is its reason).
    async fn escalation_refused(
        &self,
        rest: &[(usize, Option<Reason>)],
        generation: &Generation,
    ) -> Option<Attempt> {
        let mut first = None;
        for &(index, skip) in rest {
            if skip.is_some() {
                continue;
            }
            let tier = &self.policy.tiers[index];
            let (TierKind::Remote(config), false) = (&tier.kind, tier.on_device()) else {
                return None;
            };
            let refusal = match (
                &self.egress,
                upstream_request(generation, config.max_tokens),
            ) {
                (_, None) => return None,
                (None, Some(_)) => crate::egress::Refusal {
                    reason: Reason::Policy,
                    label: "no_guard",
                    detail: "no egress guard (ledger) is configured".into(),
                },
                (Some(guard), Some(request)) => {
                    let default_max = self.local.limits().max_tokens;
                    match guard
                        .precheck(&tier.name, config, &request, default_max)
                        .await
                    {
                        Ok(()) => return None,
                        Err(refusal) => refusal,
                    }
                }
            };
            first.get_or_insert(Attempt {
                tier: tier.name.clone(),
                reason: refusal.reason,
                detail: refusal.detail,
            });
        }
        first
    }

    async fn try_remote(
        &self,
        index: usize,
        generation: &Generation,
        mode: Mode,
        why: Option<Reason>,
    ) -> Result<Committed, Failure> {
        let name = &self.policy.tiers[index].name;
        let Some(remote) = &self.remotes[index] else {
            return Err(Failure::skip(Reason::UpstreamError, "not a remote tier"));
        };
        let upstream = remote
            .upstream
            .as_ref()
            .map_err(|e| Failure::skip(Reason::UpstreamError, e.clone()))?;
        let request = upstream_request(generation, remote.max_tokens).ok_or_else(|| {
            Failure::skip(
                Reason::Unsupported,
                "token-id prompts and GBNF grammars are answered on the device only",
            )
        })?;
        if !remote
            .breaker
            .lock()
            .map(|mut b| b.allow(Instant::now()))
            .unwrap_or(true)
        {
            return Err(Failure::skip(
                Reason::BreakerOpen,
                format!(
                    "open after {} consecutive failures",
                    self.policy.breaker_failures
                ),
            ));
        }
        let tier = &self.policy.tiers[index];
        // Off the device, the egress guard decides what may leave; without one nothing does.
        let admitted = match (&tier.kind, tier.on_device()) {
            (_, true) => None,
            (TierKind::Remote(config), false) => {
                let guard = self.egress.as_ref().ok_or_else(|| {
                    Failure::skip(
                        Reason::Policy,
                        "no egress guard (ledger) is configured: nothing leaves the device",
                    )
                })?;
                let default_max = self.local.limits().max_tokens;
                let why = why.unwrap_or(Reason::Default);
                let admitted = guard
                    .admit(name, config, request.clone(), why, default_max)
                    .await
                    .map_err(|refusal| Failure::skip(refusal.reason, refusal.detail))?;
                Some((guard.clone(), admitted))
            }
            (TierKind::Local, false) => None,
        };
        let request = match &admitted {
            Some((_, admitted)) => admitted.request.clone(),
            None => request,
        };
        let result = self.call(name, upstream, &request, mode).await;
        if let Ok(mut breaker) = remote.breaker.lock() {
            match &result {
                Ok(_) => breaker.success(),
                Err(_) => breaker.failure(Instant::now()),
            }
        }
        let Some((guard, admitted)) = admitted else {
            return result.map_err(|e| Failure::remote(name, e));
        };
        let mut committed = match result {
            Ok(committed) => committed,
            Err(error) => {
                guard.settle(admitted, Settlement::from_error(&error)).await;
                return Err(Failure::remote(name, error));
            }
        };
        // Put the redacted values back before the caller sees anything.
        match mode {
            Mode::Whole => {
                let mut usage = Usage::default();
                for step in &mut committed.held {
                    restore_step(step, |text| admitted.restore(text));
                    if let Step::Done(summary) = step {
                        usage = Usage {
                            input_tokens: summary.prompt_tokens,
                            output_tokens: summary.generated_tokens,
                        };
                    }
                }
                // Durable before the answer is returned.
                guard.settle(admitted, Settlement::Answered(usage)).await;
            }
            Mode::Stream => {
                let mut restorer = admitted.restorer();
                let mut held = VecDeque::new();
                let mut done = None;
                for mut step in committed.held.drain(..) {
                    match &mut step {
                        Step::Token(token) => {
                            let text = restorer.push(&token.text);
                            if !text.is_empty() {
                                held.push_back(Step::Token(remote_token(text)));
                            }
                            continue;
                        }
                        Step::Done(summary) => {
                            done = Some(Usage {
                                input_tokens: summary.prompt_tokens,
                                output_tokens: summary.generated_tokens,
                            });
                            let rest = restorer.finish();
                            if !rest.is_empty() {
                                held.push_back(Step::Token(remote_token(rest)));
                            }
                        }
                        other => restore_step(other, |text| admitted.restore(text)),
                    }
                    held.push_back(step);
                }
                committed.held = held;
                match done {
                    Some(usage) => guard.settle(admitted, Settlement::Answered(usage)).await,
                    None => {
                        committed.egress = Some(StreamEgress {
                            guard,
                            admitted,
                            restorer,
                        })
                    }
                }
            }
        }
        Ok(committed)
    }

    /// Calls a remote tier, retrying (with jittered backoff) only failures that sent nothing.
    async fn call(
        &self,
        tier: &str,
        upstream: &Upstream,
        request: &UpstreamRequest,
        mode: Mode,
    ) -> Result<Committed, UpstreamError> {
        let mut attempt = 0u32;
        loop {
            let result = match mode {
                Mode::Whole => upstream.infer(request).await.map(|answer| Committed {
                    source: Source::Finished,
                    prompt_tokens: answer.usage.input_tokens,
                    held: remote_steps(answer),
                    stayed: None,
                    egress: None,
                }),
                Mode::Stream => match upstream.infer_stream(request).await {
                    // Wait for the first event: a failure before it can still fall back.
                    Ok(mut events) => match events.next().await {
                        Some(Ok(first)) => Ok(Committed {
                            held: VecDeque::from([remote_step(first)]),
                            source: Source::Remote {
                                tier: tier.to_string(),
                                events,
                            },
                            prompt_tokens: 0,
                            stayed: None,
                            egress: None,
                        }),
                        Some(Err(e)) => Err(e),
                        None => Err(UpstreamError::Transport("empty stream".into())),
                    },
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(committed) => return Ok(committed),
                Err(error) => {
                    self.metrics.count_upstream_error(tier, error.kind());
                    if !error.retryable() || attempt >= self.policy.retries {
                        return Err(error);
                    }
                    let jitter = 0.5 + rand::random::<f64>();
                    let backoff = self
                        .policy
                        .retry_backoff
                        .mul_f64(jitter * f64::from(1u32 << attempt.min(6)));
                    tokio::time::sleep(backoff).await;
                    attempt += 1;
                }
            }
        }
    }
}

/// The request in a remote API's terms; `None` for prompts only the local model can read.
fn upstream_request(generation: &Generation, cap: Option<u32>) -> Option<UpstreamRequest> {
    let messages = match &generation.prompt {
        Prompt::Chat(messages) => messages.clone(),
        Prompt::Text(text) => vec![crate::engine::ChatMessage::new("user", text)],
        Prompt::Tokens(_) => return None,
    };
    if let OutputFormat::Grammar(_) = generation.format {
        // No remote API can be held to a GBNF grammar: never sent (and never silently dropped).
        return None;
    }
    let params = &generation.params;
    let max_tokens = match (params.max_tokens, cap) {
        (0, cap) => cap,
        (n, Some(cap)) => Some(n.min(cap)),
        (n, None) => Some(n),
    };
    Some(UpstreamRequest {
        messages,
        max_tokens,
        temperature: Some(params.temperature),
        top_p: Some(params.top_p).filter(|p| *p < 1.0),
        stop: params.stop.clone(),
        seed: params.seed,
        json: match &generation.format {
            OutputFormat::Text | OutputFormat::Grammar(_) => None,
            OutputFormat::JsonObject => Some(serde_json::Value::Null),
            OutputFormat::JsonSchema(schema) => Some(schema.clone()),
        },
        tools: generation.tools.clone(),
    })
}

fn remote_token(text: String) -> TokenEvent {
    TokenEvent {
        token: -1,
        piece: text.as_bytes().to_vec(),
        text,
        logprob: 0.0,
        top: Vec::new(),
        forced: false,
        mask_time: Duration::ZERO,
    }
}

fn remote_summary(usage: Usage, stop_reason: StopReason) -> Summary {
    Summary {
        prompt_tokens: usage.input_tokens,
        cached_tokens: 0,
        generated_tokens: usage.output_tokens,
        stop_reason,
        tail_text: String::new(),
        queue_time: Duration::ZERO,
        prefill_time: Duration::ZERO,
        decode_time: Duration::ZERO,
    }
}

/// A whole remote answer as steps: its text, its tool calls (if any), the end.
fn remote_steps(answer: UpstreamAnswer) -> VecDeque<Step> {
    let mut steps = VecDeque::from([Step::Token(remote_token(answer.text))]);
    if !answer.tool_calls.is_empty() {
        steps.push_back(Step::ToolCalls(answer.tool_calls));
    }
    steps.push_back(Step::Done(remote_summary(answer.usage, answer.stop_reason)));
    steps
}

/// Restores placeholders in a step's text and tool-call arguments (inside their JSON strings,
/// so a restored value with quotes or newlines stays valid JSON).
fn restore_step(step: &mut Step, restore: impl Fn(&str) -> String) {
    match step {
        Step::Token(token) => {
            token.text = restore(&token.text);
            token.piece = token.text.as_bytes().to_vec();
        }
        Step::ToolCalls(calls) => {
            for call in calls {
                call.arguments = crate::egress::map_json_strings(&call.arguments, &restore);
            }
        }
        Step::Done(_) => {}
    }
}

fn remote_step(event: UpstreamEvent) -> Step {
    match event {
        UpstreamEvent::Delta(text) => Step::Token(remote_token(text)),
        UpstreamEvent::ToolCalls(calls) => Step::ToolCalls(calls),
        UpstreamEvent::Done { stop_reason, usage } => {
            Step::Done(remote_summary(usage, stop_reason))
        }
    }
}

/// A request committed to one tier. Steps come from what was held back while deciding, then
/// from the tier itself. Dropping it cancels the request.
pub struct Routed {
    pub meta: RouteMeta,
    pub prompt_tokens: usize,
    held: VecDeque<Step>,
    source: Source,
    egress: Option<StreamEgress>,
    started: Instant,
    remote: bool,
    metrics: Arc<Metrics>,
}

impl Routed {
    pub async fn next(&mut self) -> Result<Step, ServiceError> {
        let step = match self.held.pop_front() {
            Some(step) => Ok(step),
            None => match &mut self.source {
                Source::Local(running) => running.next().await,
                Source::Remote { tier, events } => loop {
                    let event = events.next().await;
                    let Some(egress) = self.egress.as_mut() else {
                        break remote_event(&self.metrics, tier, event);
                    };
                    match event {
                        Some(Ok(UpstreamEvent::Delta(text))) => {
                            let text = egress.restorer.push(&text);
                            if !text.is_empty() {
                                break Ok(Step::Token(remote_token(text)));
                            }
                        }
                        Some(Ok(UpstreamEvent::ToolCalls(mut calls))) => {
                            for call in &mut calls {
                                call.arguments =
                                    crate::egress::map_json_strings(&call.arguments, |text| {
                                        egress.admitted.restore(text)
                                    });
                            }
                            break Ok(Step::ToolCalls(calls));
                        }
                        Some(Ok(UpstreamEvent::Done { stop_reason, usage })) => {
                            let rest = egress.restorer.finish();
                            if let Some(egress) = self.egress.take() {
                                egress
                                    .guard
                                    .settle(egress.admitted, Settlement::Answered(usage))
                                    .await;
                            }
                            let done = Step::Done(remote_summary(usage, stop_reason));
                            if rest.is_empty() {
                                break Ok(done);
                            }
                            self.held.push_back(done);
                            break Ok(Step::Token(remote_token(rest)));
                        }
                        failed => {
                            let settlement = match &failed {
                                Some(Err(error)) => Settlement::from_error(error),
                                _ => Settlement::Failed("transport"),
                            };
                            if let Some(egress) = self.egress.take() {
                                egress.guard.settle(egress.admitted, settlement).await;
                            }
                            break remote_event(&self.metrics, tier, failed);
                        }
                    }
                },
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
        }
        step
    }
}

/// A remote stream's next event as a step (no egress guard between).
fn remote_event(
    metrics: &Metrics,
    tier: &str,
    event: Option<Result<UpstreamEvent, UpstreamError>>,
) -> Result<Step, ServiceError> {
    match event {
        Some(Ok(event)) => Ok(remote_step(event)),
        Some(Err(error)) => {
            metrics.count_upstream_error(tier, error.kind());
            Err(ServiceError::Upstream {
                tier: tier.to_string(),
                message: error.to_string(),
            })
        }
        None => Err(ServiceError::Upstream {
            tier: tier.to_string(),
            message: "the stream ended before the answer did".into(),
        }),
    }
}

impl Drop for Routed {
    /// A caller that leaves mid-stream: the upstream may have billed it all, so the
    /// reservation is settled at its reserved amount.
    fn drop(&mut self) {
        if let Some(egress) = self.egress.take() {
            egress
                .guard
                .settle_later(egress.admitted, Settlement::Abandoned);
        }
    }
}
