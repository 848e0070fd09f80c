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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RawConfig, ServeConfig};
    use crate::engine::{ChatMessage, StopReason};
    use crate::ledger::{Ledger, LedgerOptions, ReservationRow};
    use crate::route::{Reason, RemoteTier, TierKind};
    use crate::upstream::{UpstreamRequest, Usage};

    struct Setup {
        _dir: tempfile::TempDir,
        ledger: Arc<Ledger>,
        guard: Arc<EgressGuard>,
        tier: RemoteTier,
    }

    /// A real ledger and guard, opted in, with one priced cloud tier.
    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        // A wired default route, read from a fake tree (not this machine's network).
        let root = dir.path();
        std::fs::create_dir_all(root.join("proc/net")).unwrap();
        std::fs::write(
            root.join("proc/net/route"),
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
             eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n",
        )
        .unwrap();
        let eth0 = root.join("sys/class/net/eth0");
        std::fs::create_dir_all(&eth0).unwrap();
        std::fs::write(eth0.join("operstate"), "up\n").unwrap();
        std::fs::write(eth0.join("type"), "1\n").unwrap();
        let toml = format!(
            "[network]\nopt_in = true\nsys_root = \"{0}/sys\"\nproc_root = \"{0}/proc\"\n\
             [[tiers]]\nname = \"cloud\"\ntype = \"openai_chat\"\nurl = \"http://127.0.0.1:9/v1\"\n\
             model = \"m\"\nprice_input_per_mtok = 1.0\nprice_output_per_mtok = 1.0\n",
            root.display()
        );
        let config = ServeConfig::from_raw(RawConfig::from_toml(&toml).unwrap()).unwrap();
        let options = LedgerOptions::from_budget(&config.egress.budget);
        let ledger =
            Arc::new(Ledger::open_in(dir.path(), options, jiff::Timestamp::now()).unwrap());
        let guard = Arc::new(EgressGuard::new(config.egress.clone(), ledger.clone()));
        let tier = config
            .routing
            .tiers
            .iter()
            .find_map(|t| match &t.kind {
                TierKind::Remote(tier) => Some(tier.clone()),
                _ => None,
            })
            .unwrap();
        Setup {
            _dir: dir,
            ledger,
            guard,
            tier,
        }
    }

    /// Admits a prompt holding one e-mail address; returns the admission and its placeholder.
    async fn admit(setup: &Setup) -> (Admitted, String) {
        let request = UpstreamRequest {
            sources: Vec::new(),
            messages: vec![ChatMessage::new("user", "mail ops@example.com now")],
            max_tokens: Some(16),
            ..UpstreamRequest::default()
        };
        let admitted = setup
            .guard
            .admit("cloud", &setup.tier, request, Reason::Default, 16)
            .await
            .unwrap();
        let sent = &admitted.request.messages[0].content;
        assert!(!sent.contains("ops@example.com"), "{sent}");
        let start = sent.find('<').unwrap();
        let end = sent[start..].find('>').unwrap() + start + 1;
        let placeholder = sent[start..end].to_string();
        (admitted, placeholder)
    }

    fn stream(events: Vec<Result<UpstreamEvent, UpstreamError>>) -> EventStream {
        Box::pin(futures::stream::iter(events))
    }

    /// The guard's stream over `first` then `rest`, for `admitted`.
    async fn guarded(
        setup: &Setup,
        admitted: Admitted,
        first: UpstreamEvent,
        rest: Vec<Result<UpstreamEvent, UpstreamError>>,
    ) -> Box<EgressStream> {
        let answer = RemoteAnswer::Stream(Box::new(EgressStream::new(first, stream(rest))));
        match setup.guard.finish(admitted, Ok(answer)).await {
            Ok(RemoteAnswer::Stream(stream)) => stream,
            _ => panic!("a stream stays a stream"),
        }
    }

    fn rows(setup: &Setup) -> Vec<ReservationRow> {
        let day = setup.ledger.day_of(jiff::Timestamp::now());
        setup.ledger.reservations(day).unwrap()
    }

    async fn drain(stream: &mut EgressStream) -> (String, Vec<Result<(), String>>) {
        let mut text = String::new();
        let mut ends = Vec::new();
        while let Some(event) = stream.next().await {
            match event {
                Ok(UpstreamEvent::Delta(delta)) => text.push_str(&delta),
                Ok(UpstreamEvent::Done { .. }) => ends.push(Ok(())),
                Ok(UpstreamEvent::ToolCalls(_)) => {}
                Err(error) => ends.push(Err(error.to_string())),
            }
        }
        (text, ends)
    }

    #[tokio::test]
    async fn a_split_placeholder_is_restored_and_the_end_settles_once() {
        let setup = setup();
        let (admitted, placeholder) = admit(&setup).await;
        let (head, tail) = placeholder.split_at(3);
        let events = vec![
            Ok(UpstreamEvent::Delta(format!("write to {head}"))),
            Ok(UpstreamEvent::Delta(format!("{tail} today"))),
            Ok(UpstreamEvent::Done {
                stop_reason: StopReason::EndOfGeneration,
                usage: Usage {
                    input_tokens: 10,
                    output_tokens: 5,
                },
            }),
        ];
        let first = UpstreamEvent::Delta(String::new());
        let mut stream = guarded(&setup, admitted, first, events).await;
        let (text, ends) = drain(&mut stream).await;
        assert_eq!(text, "write to ops@example.com today");
        assert_eq!(ends, [Ok(())]);
        drop(stream);
        let rows = rows(&setup);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].outcome.as_deref(), Some("ok"), "{rows:?}");
        assert_eq!(rows[0].actual.unwrap().output_tokens, 5);
    }

    #[tokio::test]
    async fn a_stream_dropped_unfinished_settles_at_the_reserved_amount() {
        let setup = setup();
        let (admitted, _) = admit(&setup).await;
        let events = vec![Ok(UpstreamEvent::Delta("more".into()))];
        let first = UpstreamEvent::Delta("some ".into());
        let mut stream = guarded(&setup, admitted, first, events).await;
        assert!(matches!(
            stream.next().await,
            Some(Ok(UpstreamEvent::Delta(_)))
        ));
        drop(stream);
        // Settled on the runtime after the drop.
        let mut rows = rows(&setup);
        for _ in 0..200 {
            if rows[0].actual.is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            rows = self::rows(&setup);
        }
        assert_eq!(
            rows[0].outcome.as_deref(),
            Some("error:abandoned"),
            "{rows:?}"
        );
        assert_eq!(rows[0].actual, Some(rows[0].reserved));
    }

    #[tokio::test]
    async fn an_error_status_settles_at_zero_and_a_cut_stream_at_the_reserved_amount() {
        let setup = setup();
        let (admitted, _) = admit(&setup).await;
        let status = UpstreamError::Status {
            status: 429,
            body: "slow down".into(),
        };
        assert!(setup.guard.finish(admitted, Err(status)).await.is_err());
        let (admitted, _) = admit(&setup).await;
        let first = UpstreamEvent::Delta("cut ".into());
        let mut cut = guarded(&setup, admitted, first, Vec::new()).await;
        let (text, ends) = drain(&mut cut).await;
        assert_eq!(text, "cut ");
        assert!(ends.is_empty(), "the stream ends without Done: {ends:?}");
        let rows = rows(&setup);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0].outcome.as_deref(),
            Some("error:status_4xx"),
            "{rows:?}"
        );
        assert_eq!(rows[0].actual.unwrap().cost_micros, 0);
        assert_eq!(
            rows[1].outcome.as_deref(),
            Some("error:transport"),
            "{rows:?}"
        );
        assert_eq!(rows[1].actual, Some(rows[1].reserved));
    }
}
