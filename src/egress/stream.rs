//! What comes back from a tier reached over HTTP: a whole answer, or an [`EgressStream`].
//!
//! An `EgressStream` wraps an upstream's event stream. Guarded (the tier is off the device), it
//! puts redacted values back as it goes (a placeholder split across deltas is held until it is
//! whole), restores tool-call arguments inside their JSON strings, and settles the admission
//! exactly once: at the last event (durable before that event is yielded), at a failure, or,
//! when dropped unfinished, at the reserved amount (the caller left; the upstream may have
//! billed it all). Unguarded (a server on the device), it passes events through.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::StreamExt;

use super::{Admitted, EgressGuard, Settlement, map_json_strings};
use crate::guard::redact::Restorer;
use crate::upstream::{EventStream, UpstreamAnswer, UpstreamError, UpstreamEvent};

/// A tier's answer before the caller sees it.
pub enum RemoteAnswer {
    Whole(UpstreamAnswer),
    Stream(Box<EgressStream>),
}

/// See the module doc.
pub struct EgressStream {
    events: EventStream,
    /// The first event, read before the router committed to this tier.
    first: Option<UpstreamEvent>,
    /// Restored events ready to yield (the restorer's tail, then `Done`).
    ready: VecDeque<UpstreamEvent>,
    /// Until settled: what restoring and settling need.
    open: Option<Open>,
}

struct Open {
    guard: Arc<EgressGuard>,
    admitted: Admitted,
    restorer: Restorer,
}

impl EgressStream {
    /// A stream whose `first` event has been read; unguarded until [`EgressGuard::finish`]
    /// guards it.
    pub fn new(first: UpstreamEvent, events: EventStream) -> EgressStream {
        EgressStream {
            events,
            first: Some(first),
            ready: VecDeque::new(),
            open: None,
        }
    }

    pub(super) fn guarded(
        mut self: Box<Self>,
        guard: Arc<EgressGuard>,
        admitted: Admitted,
    ) -> Box<Self> {
        self.open = Some(Open {
            guard,
            restorer: admitted.restorer(),
            admitted,
        });
        self
    }

    /// The next event the caller may see; `None` when the stream ended (after `Done`, or
    /// before it: then the answer is cut short).
    pub async fn next(&mut self) -> Option<Result<UpstreamEvent, UpstreamError>> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(Ok(event));
            }
            let event = match self.first.take() {
                Some(first) => Some(Ok(first)),
                None => self.events.next().await,
            };
            let Some(open) = self.open.as_mut() else {
                return event;
            };
            match event {
                Some(Ok(UpstreamEvent::Delta(text))) => {
                    let text = open.restorer.push(&text);
                    if !text.is_empty() {
                        return Some(Ok(UpstreamEvent::Delta(text)));
                    }
                }
                Some(Ok(UpstreamEvent::ToolCalls(mut calls))) => {
                    for call in &mut calls {
                        call.arguments =
                            map_json_strings(&call.arguments, |t| open.admitted.restore(t));
                    }
                    return Some(Ok(UpstreamEvent::ToolCalls(calls)));
                }
                Some(Ok(UpstreamEvent::Done { stop_reason, usage })) => {
                    let rest = open.restorer.finish();
                    self.settle(Settlement::Answered(usage)).await;
                    let done = UpstreamEvent::Done { stop_reason, usage };
                    if rest.is_empty() {
                        return Some(Ok(done));
                    }
                    self.ready.push_back(done);
                    return Some(Ok(UpstreamEvent::Delta(rest)));
                }
                Some(Err(error)) => {
                    self.settle(Settlement::from_error(&error)).await;
                    return Some(Err(error));
                }
                None => {
                    self.settle(Settlement::from_error(&UpstreamError::Truncated))
                        .await;
                    return None;
                }
            }
        }
    }

    async fn settle(&mut self, settlement: Settlement) {
        if let Some(open) = self.open.take() {
            open.guard.settle(open.admitted, settlement).await;
        }
    }
}

impl Drop for EgressStream {
    /// A caller that leaves mid-stream: the upstream may have billed it all, so the
    /// reservation is settled at its reserved amount.
    fn drop(&mut self) {
        if let Some(open) = self.open.take() {
            open.guard
                .settle_later(open.admitted, Settlement::Abandoned);
        }
    }
}
