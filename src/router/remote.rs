//! The tiers reached over HTTP in the walk: a server on the device, or on-prem and cloud tiers
//! behind the egress guard. Each has a client and a circuit breaker; a call is retried (with
//! jittered backoff) only when it failed before anything was sent. Off the device the guard
//! admits the request first and gets the result back (`EgressGuard::finish`): it restores the
//! answer and settles the spend, so nothing here does.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;

use super::{Committed, Failure, Mode, Router, Source};
use crate::egress::{EgressStream, RemoteAnswer};
use crate::engine::{StopReason, Summary, TokenEvent};
use crate::metrics::Metrics;
use crate::route::breaker::Breaker;
use crate::route::{Reason, RemoteSkip, RemoteTier, RoutingPolicy, TierKind};
use crate::service::{Generation, OutputFormat, Prompt, ServiceError, Step};
use crate::upstream::{
    Provider, Upstream, UpstreamAnswer, UpstreamError, UpstreamEvent, UpstreamRequest, Usage,
};

/// A tier reached over HTTP: its client (or why it cannot be built) and its breaker.
pub(super) struct Remote {
    pub(super) upstream: Result<Upstream, String>,
    pub(super) breaker: Mutex<Breaker>,
    pub(super) model: String,
    max_tokens: Option<u32>,
}

impl Remote {
    pub(super) fn new(endpoint: &RemoteTier, policy: &RoutingPolicy) -> Remote {
        Remote {
            upstream: Upstream::new(endpoint).map_err(|e| e.to_string()),
            breaker: Mutex::new(Breaker::new(
                policy.breaker_failures,
                policy.breaker_cooldown,
            )),
            model: endpoint.model.clone(),
            max_tokens: endpoint.max_tokens,
        }
    }
}

impl Router {
    /// Tier `index`, reached over HTTP; `why` is the reason the walk left the tier before it.
    pub(super) async fn try_remote(
        &self,
        index: usize,
        generation: &Generation,
        mode: Mode,
        why: Option<Reason>,
    ) -> Result<Committed, Failure> {
        let tier = &self.policy.tiers[index];
        let name = &tier.name;
        let (remote, upstream, request) = self.callable(index, generation)?;
        let result = match &tier.kind {
            TierKind::Remote(config) => {
                // Off the device, the egress guard decides what may leave; without one nothing does.
                let guard = self.egress.as_ref().ok_or_else(|| {
                    Failure::remote_skip(
                        RemoteSkip::NoGuard,
                        "no egress guard (ledger) is configured: nothing leaves the device",
                    )
                })?;
                let default_max = self.local.limits().unsaid_max_tokens();
                let why = why.unwrap_or(Reason::Default);
                let admitted = guard
                    .admit(name, config, request, why, default_max)
                    .await
                    .map_err(|refusal| Failure::skip(refusal.reason, refusal.detail))?;
                let result = self.call(name, upstream, &admitted.request, mode).await;
                self.count_breaker(remote, result.is_ok());
                guard.finish(admitted, result).await
            }
            _ => {
                let result = self.call(name, upstream, &request, mode).await;
                self.count_breaker(remote, result.is_ok());
                result
            }
        };
        Ok(committed(
            name,
            result.map_err(|e| Failure::remote(name, e))?,
        ))
    }

    /// Tier `index`'s client and the request in its API's terms, or why it is skipped (no
    /// usable client, a request it cannot take, an open breaker).
    fn callable(
        &self,
        index: usize,
        generation: &Generation,
    ) -> Result<(&Remote, &Upstream, UpstreamRequest), Failure> {
        let Some(remote) = &self.remotes[index] else {
            return Err(Failure::remote_skip(
                RemoteSkip::NotUsable,
                "not a remote tier",
            ));
        };
        let upstream = remote
            .upstream
            .as_ref()
            .map_err(|e| Failure::remote_skip(RemoteSkip::NotUsable, e.clone()))?;
        let request = upstream_request(generation, remote.max_tokens).ok_or_else(|| {
            Failure::remote_skip(
                RemoteSkip::Unsupported,
                "token-id prompts and GBNF grammars are answered on the device only",
            )
        })?;
        let allowed = remote
            .breaker
            .lock()
            .map(|mut b| b.allow(Instant::now()))
            .unwrap_or(true);
        if !allowed {
            return Err(Failure::remote_skip(
                RemoteSkip::BreakerOpen,
                format!(
                    "open after {} consecutive failures",
                    self.policy.breaker_failures
                ),
            ));
        }
        Ok((remote, upstream, request))
    }

    fn count_breaker(&self, remote: &Remote, ok: bool) {
        if let Ok(mut breaker) = remote.breaker.lock() {
            match ok {
                true => breaker.success(),
                false => breaker.failure(Instant::now()),
            }
        }
    }

    /// Calls a tier, retrying (with jittered backoff) only failures that sent nothing. A
    /// stream is returned once its first event arrived: a failure before it can still fall back.
    async fn call(
        &self,
        tier: &str,
        upstream: &Upstream,
        request: &UpstreamRequest,
        mode: Mode,
    ) -> Result<RemoteAnswer, UpstreamError> {
        let mut attempt = 0u32;
        loop {
            let result = match mode {
                Mode::Whole => upstream.infer(request).await.map(RemoteAnswer::Whole),
                Mode::Stream => match upstream.infer_stream(request).await {
                    Ok(mut events) => match events.next().await {
                        Some(Ok(first)) => Ok(RemoteAnswer::Stream(Box::new(EgressStream::new(
                            first, events,
                        )))),
                        Some(Err(e)) => Err(e),
                        None => Err(UpstreamError::Transport("empty stream".into())),
                    },
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(answer) => return Ok(answer),
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

/// What the walk commits to: a whole answer as steps, or the stream.
fn committed(tier: &str, answer: RemoteAnswer) -> Committed {
    match answer {
        RemoteAnswer::Whole(answer) => Committed {
            source: Source::Finished,
            prompt_tokens: answer.usage.input_tokens,
            held: whole_steps(answer),
            stayed: None,
        },
        RemoteAnswer::Stream(events) => Committed {
            source: Source::Remote {
                tier: tier.to_string(),
                events,
            },
            held: VecDeque::new(),
            prompt_tokens: 0,
            stayed: None,
        },
    }
}

/// The request in a remote API's terms; `None` for prompts only the local model can read.
pub(super) fn upstream_request(
    generation: &Generation,
    cap: Option<u32>,
) -> Option<UpstreamRequest> {
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
        sources: generation.sources.clone(),
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

fn token(text: String) -> TokenEvent {
    TokenEvent {
        token: -1,
        piece: text.as_bytes().to_vec(),
        text,
        logprob: 0.0,
        top: Vec::new(),
        spread: None,
        post: None,
        forced: false,
        mask_time: Duration::ZERO,
    }
}

fn summary(usage: Usage, stop_reason: StopReason) -> Summary {
    Summary {
        prompt_tokens: usage.input_tokens,
        cached_tokens: 0,
        generated_tokens: usage.output_tokens,
        stop_reason,
        tail_text: String::new(),
        queue_time: Duration::ZERO,
        compute_time: Duration::ZERO,
        prefill_time: Duration::ZERO,
        decode_time: Duration::ZERO,
    }
}

/// A whole answer as steps: its text, its tool calls (if any), the end.
fn whole_steps(answer: UpstreamAnswer) -> VecDeque<Step> {
    let mut steps = VecDeque::from([Step::Token(token(answer.text))]);
    if !answer.tool_calls.is_empty() {
        steps.push_back(Step::ToolCalls(answer.tool_calls));
    }
    steps.push_back(Step::Done(summary(answer.usage, answer.stop_reason)));
    steps
}

/// A stream's next event as a step; the end of the stream before `Done` is an error.
pub(super) fn step(
    metrics: &Metrics,
    tier: &str,
    event: Option<Result<UpstreamEvent, UpstreamError>>,
) -> Result<Step, ServiceError> {
    let error = match event {
        Some(Ok(UpstreamEvent::Delta(text))) => return Ok(Step::Token(token(text))),
        Some(Ok(UpstreamEvent::ToolCalls(calls))) => return Ok(Step::ToolCalls(calls)),
        Some(Ok(UpstreamEvent::Done { stop_reason, usage })) => {
            return Ok(Step::Done(summary(usage, stop_reason)));
        }
        Some(Err(error)) => {
            metrics.count_upstream_error(tier, error.kind());
            error
        }
        None => UpstreamError::Truncated,
    };
    Err(ServiceError::Upstream {
        tier: tier.to_string(),
        error,
    })
}
