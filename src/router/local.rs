//! The local tier in the walk: the pre-decision (thermal, overloaded), then the local service's
//! tokens watched against the deadlines and the confidence threshold while they are held back.
//! Leaving local is decided in `route/`; before leaving an answer it could still give, the walk
//! asks the egress guard whether a later tier would take the request at all.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{Attempt, Committed, Failure, Mode, Router, Source};
use crate::route::deadline::{self, Progress};
use crate::route::{self, LocalSignals, Reason, TierKind, confidence, policy};
use crate::service::{Generation, Running, Step};

/// Alternatives per token behind the margin and entropy signals (what `edgellm calibrate`
/// measures with).
pub const SPREAD_TOP: usize = 8;

/// The tiers after this one in the walk: (index, skipped by the override).
type Rest<'a> = &'a [(usize, Option<Reason>)];

/// The local answer while the walk may still leave it.
struct Watch<'a> {
    generation: &'a Generation,
    rest: Rest<'a>,
    /// A later tier exists that the request may escalate to.
    has_next: bool,
    /// Set when a trigger fired but the egress guard keeps the request here.
    stayed: Option<Attempt>,
}

impl Watch<'_> {
    /// A trigger fired: leave for the next tier, or stay when the egress guard refuses it.
    async fn leave(&mut self, router: &Router, failure: Failure) -> Result<(), Failure> {
        match router.escalation_refused(self.rest, self.generation).await {
            None => Err(failure),
            Some(refusal) => {
                self.stayed = Some(refusal);
                self.has_next = false;
                Ok(())
            }
        }
    }
}

impl Router {
    pub(super) async fn try_local(
        &self,
        generation: &Generation,
        mode: Mode,
        has_next: bool,
        rest: Rest<'_>,
    ) -> Result<Committed, Failure> {
        let mut watch = Watch {
            generation,
            rest,
            has_next,
            stayed: None,
        };
        if has_next && let Some(failure) = self.local_pre_decision() {
            watch.leave(self, failure).await?;
        }
        let started = Instant::now();
        let mut generation = generation.clone();
        if watch.has_next && self.policy.triggers.spread_needed() {
            generation.params.spread_top = SPREAD_TOP;
        }
        // More tokens than the local limit: a request a later tier may take escalates
        // (`context`); one that has nowhere else to go is answered within the limit (its
        // finish reason then says `length`).
        let limit = self.local.limits().max_tokens;
        if !watch.has_next && generation.params.max_tokens > limit {
            generation.params.max_tokens = limit;
        }
        let mut running = self.local.start(generation).await.map_err(Failure::local)?;
        let prompt_tokens = running.prompt_tokens;
        let (held, finished) = self.hold(&mut running, &mut watch, mode, started).await?;
        Ok(Committed {
            source: if finished {
                Source::Finished
            } else {
                Source::Local(running)
            },
            held,
            prompt_tokens,
            stayed: watch.stayed,
        })
    }

    /// Thermal or overloaded before any work, as `route::local_pre_decision` sees the signals.
    fn local_pre_decision(&self) -> Option<Failure> {
        let triggers = &self.policy.triggers;
        let throttling = triggers
            .thermal_enabled()
            .then(|| policy::throttling(triggers, &crate::thermal::read(&self.policy.sysfs_root)));
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
        let reason = route::local_pre_decision(triggers, &signals)?;
        let detail = match reason {
            Reason::Thermal => "the device is throttling".to_string(),
            _ => format!(
                "{} requests in flight for {} slots",
                signals.in_flight, signals.slots
            ),
        };
        Some(Failure::skip(reason, detail))
    }

    /// Holds the local answer's first tokens back (all of them for a whole answer) while the
    /// deadlines and the confidence threshold may still send the request on. Returns what was
    /// held and whether the answer finished.
    async fn hold(
        &self,
        running: &mut Running,
        watch: &mut Watch<'_>,
        mode: Mode,
        started: Instant,
    ) -> Result<(VecDeque<Step>, bool), Failure> {
        let triggers = &self.policy.triggers;
        let hold = match mode {
            Mode::Whole => usize::MAX,
            Mode::Stream if watch.has_next => triggers.hold_tokens.max(1),
            Mode::Stream => 0,
        };
        let check_confidence = watch.has_next
            && triggers.confidence_enabled()
            && (mode == Mode::Whole || triggers.hold_tokens > 0);
        let mut held = VecDeque::new();
        let mut logprobs = Vec::new();
        let mut spreads = Vec::new();
        let mut progress = Progress {
            max_tokens: match watch.generation.params.max_tokens {
                0 => self.local.limits().unsaid_max_tokens(),
                n => n,
            },
            ..Progress::default()
        };
        let mut finished = false;
        while progress.tokens < hold {
            progress.elapsed = started.elapsed();
            let Some(step) = self
                .next_before_deadline(running, watch, &progress, started)
                .await?
            else {
                continue;
            };
            match step {
                Step::Token(token) => {
                    progress.tokens += 1;
                    progress.elapsed = started.elapsed();
                    progress.first_token_at.get_or_insert(progress.elapsed);
                    // Forced tokens were certain under the constraint: they say nothing of
                    // the model's confidence.
                    if !token.forced {
                        logprobs.push(token.logprob);
                        spreads.extend(token.spread);
                    }
                    held.push_back(Step::Token(token));
                    if watch.has_next && deadline::missed(triggers, &progress) {
                        watch.leave(self, cannot_finish(&progress)).await?;
                    }
                }
                // Reported when the client gets the answer's start (whose prompt it was).
                Step::Progress(p) => held.push_back(Step::Progress(p)),
                Step::ToolCalls(calls) => held.push_back(Step::ToolCalls(calls)),
                Step::Done(summary) => {
                    held.push_back(Step::Done(summary));
                    finished = true;
                    break;
                }
            }
        }
        if check_confidence && watch.has_next {
            self.judge_confidence(watch, &logprobs, &spreads).await?;
        }
        Ok((held, finished))
    }

    /// Low confidence over the held tokens: leave, unless the egress guard keeps the request.
    async fn judge_confidence(
        &self,
        watch: &mut Watch<'_>,
        logprobs: &[f32],
        spreads: &[crate::engine::Spread],
    ) -> Result<(), Failure> {
        let triggers = &self.policy.triggers;
        let Some(signals) = confidence::signals(logprobs, spreads, triggers.confidence_window)
        else {
            return Ok(());
        };
        let low = confidence::low_because(triggers, &signals);
        let combined = triggers
            .combiner
            .as_ref()
            .and_then(|c| c.probability(&signals));
        self.metrics
            .record_confidence(signals.mean.exp(), combined, low.is_some());
        if let Some(because) = low {
            let failure = Failure::skip(
                Reason::LowConfidence,
                format!("{because} over {} tokens", signals.tokens),
            );
            watch.leave(self, failure).await?;
        }
        Ok(())
    }

    /// The next local step, or `None` when the deadline passed first and the request stays
    /// (the caller asks again).
    async fn next_before_deadline(
        &self,
        running: &mut Running,
        watch: &mut Watch<'_>,
        progress: &Progress,
        started: Instant,
    ) -> Result<Option<Step>, Failure> {
        let wake = if watch.has_next {
            deadline::wake_at(&self.policy.triggers, progress)
        } else {
            None
        };
        let Some(at) = wake else {
            return running.next().await.map(Some).map_err(Failure::local);
        };
        // `Running::next` is a channel receive: dropping it at the deadline loses nothing.
        match tokio::time::timeout_at((started + at).into(), running.next()).await {
            Ok(step) => step.map(Some).map_err(Failure::local),
            Err(_) => {
                let failure = Failure::skip(
                    Reason::Deadline,
                    format!(
                        "{} tokens after {} ms",
                        progress.tokens,
                        started.elapsed().as_millis()
                    ),
                );
                watch.leave(self, failure).await?;
                Ok(None)
            }
        }
    }

    /// Before leaving a local answer it could still give: `None` when some later tier would take
    /// the request, else the first later tier's refusal by the egress guard (the request then
    /// stays local, and that refusal is its reason).
    async fn escalation_refused(&self, rest: Rest<'_>, generation: &Generation) -> Option<Attempt> {
        let mut first = None;
        for &(index, skip) in rest {
            if skip.is_some() {
                continue;
            }
            let tier = &self.policy.tiers[index];
            let TierKind::Remote(config) = &tier.kind else {
                return None;
            };
            let refusal = match (
                &self.egress,
                super::remote::upstream_request(generation, config.max_tokens),
            ) {
                (_, None) => return None,
                (None, Some(_)) => crate::egress::Refusal {
                    reason: Reason::Policy,
                    label: "no_guard",
                    detail: "no egress guard (ledger) is configured".into(),
                },
                (Some(guard), Some(request)) => {
                    let default_max = self.local.limits().unsaid_max_tokens();
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
}

/// The decode rate says the answer cannot finish before the total deadline.
fn cannot_finish(progress: &Progress) -> Failure {
    Failure::skip(
        Reason::Deadline,
        format!(
            "{} tokens in {} ms cannot finish {} tokens in time",
            progress.tokens,
            progress.elapsed.as_millis(),
            progress.max_tokens
        ),
    )
}
