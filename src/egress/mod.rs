//! The egress guard at work: every request bound for a remote tier passes through
//! [`EgressGuard::admit`] before a byte is sent, and [`EgressGuard::settle`] after.
//!
//! `admit` checks the gates (opt-in and the network, read from sysfs/procfs), redacts the text
//! that would leave (each value becomes a numbered placeholder; the mapping stays in the
//! returned [`Admitted`] and never leaves the device or reaches a log), caps `max_tokens`, and
//! reserves the estimated spend in the ledger. It fails closed: when it cannot decide (a
//! detector fault, the ledger unreadable) nothing is sent. `settle` records the real usage and
//! one audit row (counts and sizes, never text). The decisions themselves are the pure
//! functions of `guard/`; this module does their IO.
//!
//! The guard also owns what comes back: [`EgressGuard::finish`] takes the result of the call an
//! admission let out and restores the placeholders in a whole answer (then settles), settles a
//! failure, or wraps a stream in an [`EgressStream`] that yields only restored text and settles
//! when it ends or is dropped. The router never restores or settles anything.

mod schema;
mod stream;

pub use stream::{EgressStream, RemoteAnswer};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::Timestamp;

use crate::guard::budget::{self, Amount, Prices};
use crate::guard::network;
use crate::guard::redact::{Refused as RedactRefused, Restorer, Session};
use crate::ledger::{
    AuditKind, AuditRecord, Ledger, LedgerError, Outcome, Reservation, Write, Written,
};
use crate::route::{Reason, RemoteTier};
use crate::upstream::{UpstreamError, UpstreamRequest, Usage};

/// The egress guard's validated settings.
#[derive(Debug, Clone)]
pub struct Egress {
    pub redactor: crate::guard::redact::Redactor,
    pub network: crate::guard::network::NetworkPolicy,
    pub budget: crate::guard::budget::Budget,
}

/// Why a request may not leave for a tier: `Reason::Policy` or `Reason::Budget`.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub reason: Reason,
    /// What refused, for metrics: `opt_in`, `offline`, `metered`, `redaction`, `budget`, ...
    pub label: &'static str,
    pub detail: String,
}

/// A request the guard let out: the redacted request to send, and what settling needs.
pub struct Admitted {
    pub request: UpstreamRequest,
    session: Session,
    reservation: Option<Reservation>,
    record: AuditRecord,
    prices: Prices,
}

impl Admitted {
    /// The answer as the caller must see it: placeholders put back.
    pub fn restore(&self, text: &str) -> String {
        self.session.restore(text)
    }

    /// For a streamed answer: restores placeholders split across chunks.
    pub fn restorer(&self) -> Restorer {
        self.session.restorer()
    }
}

/// How a sent (or attempted) request ended, for the ledger.
#[derive(Debug)]
pub enum Settlement {
    /// The upstream answered; its reported usage (zero when it reported none: the estimate is
    /// settled instead).
    Answered(Usage),
    /// It failed in a way that proves nothing was sent (connection refused): released.
    NotSent(&'static str),
    /// It failed after it may have reached the upstream: settled at the reserved amount when it
    /// may be `billed`, at zero when the upstream answered with an error status.
    Failed { kind: &'static str, billed: bool },
    /// The caller went away mid-answer: settled at the reserved amount.
    Abandoned,
}

impl Settlement {
    pub fn from_error(error: &UpstreamError) -> Settlement {
        if error.retryable() {
            Settlement::NotSent(error.kind())
        } else {
            Settlement::Failed {
                kind: error.kind(),
                billed: error.billed(),
            }
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct EgressMetrics {
    pub redactions: std::sync::Mutex<BTreeMap<String, u64>>,
    pub refused: std::sync::Mutex<BTreeMap<String, u64>>,
    pub admitted: AtomicU64,
}

impl EgressMetrics {
    fn count_refused(&self, what: &str) {
        if let Ok(mut refused) = self.refused.lock() {
            *refused.entry(what.to_string()).or_default() += 1;
        }
    }
}

pub struct EgressGuard {
    config: Egress,
    ledger: Arc<Ledger>,
    kinds: crate::netstate::KindCache,
    pub metrics: EgressMetrics,
}

impl EgressGuard {
    pub fn new(config: Egress, ledger: Arc<Ledger>) -> EgressGuard {
        EgressGuard {
            config,
            ledger,
            kinds: Default::default(),
            metrics: EgressMetrics::default(),
        }
    }

    /// The guard when there is a ledger to record in; without one no tier off the device is
    /// ever called (the router refuses it with reason `policy`).
    pub fn for_ledger(config: &Egress, ledger: Option<&Arc<Ledger>>) -> Option<Arc<EgressGuard>> {
        ledger.map(|ledger| Arc::new(EgressGuard::new(config.clone(), ledger.clone())))
    }

    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// Seconds until the budget day turns in the budget's zone (a `Retry-After` for a spent cap).
    pub fn seconds_to_next_budget_day(&self) -> u64 {
        budget::seconds_to_next_day(jiff::Timestamp::now(), &self.config.budget.timezone)
    }

    pub fn caps(&self) -> &budget::Caps {
        &self.config.budget.caps
    }

    /// Opt-in and the network the default route is on.
    fn gates(&self) -> Result<(), Refusal> {
        let policy = &self.config.network;
        let state = crate::netstate::read_cached(&policy.proc_root, &policy.sys_root, &self.kinds);
        network::check(policy, &state).map_err(|refusal| Refusal {
            reason: Reason::Policy,
            label: refusal.reason(),
            detail: format!("{}: {refusal}", refusal.reason()),
        })
    }

    /// Redacts every text that would leave; the session keeps the mapping.
    fn redact(&self, request: &mut UpstreamRequest) -> Result<Session, Refusal> {
        let mut session = self.config.redactor.session();
        let refused = |e: RedactRefused| match e {
            RedactRefused::Blocked { categories } => Refusal {
                reason: Reason::Policy,
                label: "redaction_block",
                detail: format!(
                    "redaction policy blocks {} from leaving the device",
                    categories.join(", ")
                ),
            },
            RedactRefused::Fault { reason } => Refusal {
                reason: Reason::Policy,
                label: "redaction_fault",
                detail: format!("redaction failed, nothing sent (fail closed): {reason}"),
            },
        };
        for message in &mut request.messages {
            message.content = session.redact(&message.content).map_err(refused)?;
            for call in &mut message.tool_calls {
                call.arguments =
                    try_map_json_strings(&call.arguments, &mut |text| session.redact(text))
                        .map_err(refused)?;
            }
        }
        for stop in &mut request.stop {
            *stop = session.redact(stop).map_err(refused)?;
        }
        // The schemas that leave with the request: literals redacted, structure kept.
        let schema_refused = |e: schema::SchemaError<RedactRefused>| match e {
            schema::SchemaError::Refused(e) => refused(e),
            schema::SchemaError::Pattern => Refusal {
                reason: Reason::Policy,
                label: "redaction_fault",
                detail: "a schema `pattern` holds a value redaction must remove and would not \
                         be a regex without it; nothing sent (fail closed)"
                    .into(),
            },
        };
        if let Some(json) = &mut request.json {
            schema::redact_schema(json, &mut |text| session.redact(text))
                .map_err(schema_refused)?;
        }
        if let Some(tools) = &request.tools {
            let mut redacted = Vec::with_capacity(tools.tools().len());
            for tool in tools.tools() {
                let description = match &tool.description {
                    Some(text) => Some(session.redact(text).map_err(refused)?),
                    None => None,
                };
                let mut parameters = tool.parameters.clone();
                schema::redact_schema(&mut parameters, &mut |text| session.redact(text))
                    .map_err(schema_refused)?;
                redacted.push(crate::tools::Tool {
                    name: tool.name.clone(),
                    description,
                    parameters,
                });
            }
            // Nothing redacted: the request keeps its tools and their compiled validators.
            let unchanged = redacted
                .iter()
                .zip(tools.tools())
                .all(|(r, t)| r.description == t.description && r.parameters == t.parameters);
            if unchanged {
                return Ok(session);
            }
            let set = crate::tools::ToolSet::new(redacted, tools.choice().clone(), tools.parallel())
                .map_err(|e| Refusal {
                    reason: Reason::Policy,
                    label: "redaction_fault",
                    detail: format!(
                        "tool {} is no longer a valid schema after redaction; nothing sent (fail closed): {}",
                        e.index, e.message
                    ),
                })?;
            request.tools = Some(set);
        }
        Ok(session)
    }

    fn prices(tier: &RemoteTier) -> Prices {
        Prices {
            input_usd_per_mtok: tier.price_input_per_mtok,
            output_usd_per_mtok: tier.price_output_per_mtok,
        }
    }

    /// The estimate reserved for `request` (whose `max_tokens` is capped here).
    fn estimate(
        &self,
        tier: &RemoteTier,
        request: &mut UpstreamRequest,
        default_max: u32,
    ) -> Amount {
        let output = budget::output_tokens_for(
            request.max_tokens.map(u64::from),
            u64::from(tier.max_tokens.unwrap_or(default_max)),
            self.caps(),
        );
        request.max_tokens = Some(output.min(u64::from(u32::MAX)) as u32);
        let bytes: usize = request.messages.iter().map(|m| m.content.len()).sum();
        budget::estimate(bytes, output, &Self::prices(tier))
    }

    /// Whether `tier` would take `request` now, without reserving anything: the gates, the
    /// redaction policy, today's budget. The router asks before leaving a local answer it
    /// could still give.
    pub async fn precheck(
        &self,
        tier_name: &str,
        tier: &RemoteTier,
        request: &UpstreamRequest,
        default_max: u32,
    ) -> Result<(), Refusal> {
        let refusal = match self.precheck_inner(tier, request, default_max).await {
            Ok(()) => return Ok(()),
            Err(refusal) => refusal,
        };
        // The request wanted to leave and stays: counted and audited like a refused admission.
        self.metrics.count_refused(refusal.label);
        self.write_audit(AuditRecord {
            sources: Vec::new(),
            time: Timestamp::now(),
            kind: AuditKind::Egress,
            request_id: format!("egress-{}", uuid::Uuid::new_v4().simple()),
            tier: Some(tier_name.to_string()),
            model: Some(tier.model.clone()),
            reason: "escalation".to_string(),
            redactions: BTreeMap::new(),
            bytes_sent: 0,
            bytes_received: 0,
            tokens_sent: 0,
            tokens_received: 0,
            cost_micros: 0,
            outcome: Outcome::Blocked(refusal.reason.as_str().to_string()),
            detail: Some(refusal.label.to_string()),
        })
        .await;
        Err(refusal)
    }

    async fn precheck_inner(
        &self,
        tier: &RemoteTier,
        request: &UpstreamRequest,
        default_max: u32,
    ) -> Result<(), Refusal> {
        self.gates()?;
        let mut request = request.clone();
        self.redact(&mut request)?;
        let estimate = self.estimate(tier, &mut request, default_max);
        let ledger = self.ledger.clone();
        let caps = *self.caps();
        let usage = tokio::task::spawn_blocking(move || ledger.usage_at(Timestamp::now(), &caps))
            .await
            .map_err(|e| ledger_refusal(&e.to_string()))?
            .map_err(|e| ledger_refusal(&e.to_string()))?;
        budget::check_caps(&usage.counted, &estimate, self.caps()).map_err(|e| Refusal {
            reason: Reason::Budget,
            label: "budget",
            detail: e.to_string(),
        })
    }

    /// Lets `request` out to `tier_name`, or says why not. See the module doc.
    pub async fn admit(
        &self,
        tier_name: &str,
        tier: &RemoteTier,
        mut request: UpstreamRequest,
        why: Reason,
        default_max: u32,
    ) -> Result<Admitted, Refusal> {
        let request_id = format!("egress-{}", uuid::Uuid::new_v4().simple());
        let mut record = AuditRecord {
            sources: Vec::new(),
            time: Timestamp::now(),
            kind: AuditKind::Egress,
            request_id: request_id.clone(),
            tier: Some(tier_name.to_string()),
            model: Some(tier.model.clone()),
            reason: why.as_str().to_string(),
            redactions: BTreeMap::new(),
            bytes_sent: 0,
            bytes_received: 0,
            tokens_sent: 0,
            tokens_received: 0,
            cost_micros: 0,
            outcome: Outcome::Ok,
            detail: None,
        };
        record.sources = request.sources.clone();
        let outcome = self
            .admit_inner(tier, &mut request, &mut record, default_max)
            .await;
        match outcome {
            Ok((session, reservation)) => {
                self.metrics.admitted.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut counts) = self.metrics.redactions.lock() {
                    for (category, n) in &record.redactions {
                        *counts.entry(category.clone()).or_default() += n;
                    }
                }
                Ok(Admitted {
                    request,
                    session,
                    reservation: Some(reservation),
                    record,
                    prices: Self::prices(tier),
                })
            }
            Err(refusal) => {
                self.metrics.count_refused(refusal.label);
                record.outcome = Outcome::Blocked(refusal.reason.as_str().to_string());
                record.detail = Some(refusal.label.to_string());
                self.write_audit(record).await;
                Err(refusal)
            }
        }
    }

    async fn admit_inner(
        &self,
        tier: &RemoteTier,
        request: &mut UpstreamRequest,
        record: &mut AuditRecord,
        default_max: u32,
    ) -> Result<(Session, Reservation), Refusal> {
        self.gates()?;
        let session = self.redact(request)?;
        record.redactions = session
            .counts()
            .into_iter()
            .map(|(category, n)| (category, n as u64))
            .collect();
        let estimate = self.estimate(tier, request, default_max);
        record.bytes_sent = request
            .messages
            .iter()
            .map(|m| m.content.len() as u64)
            .sum();
        record.tokens_sent = estimate.input_tokens;
        let reserve = Write::Reserve {
            request_id: record.request_id.clone(),
            tier: record.tier.clone().unwrap_or_default(),
            model: tier.model.clone(),
            estimate,
            caps: *self.caps(),
            now: Timestamp::now(),
        };
        let reserved = match self.ledger.commit(vec![reserve]).await.pop() {
            Some(Ok(Written::Reserved(reservation))) => Ok(reservation),
            Some(Err(error)) => Err(error),
            _ => Err(LedgerError::Commit("no reservation came back".into())),
        };
        match reserved {
            Ok(reservation) => Ok((session, reservation)),
            Err(LedgerError::Budget(exceeded)) => Err(Refusal {
                reason: Reason::Budget,
                label: "budget",
                detail: exceeded.to_string(),
            }),
            Err(other) => Err(ledger_refusal(&other.to_string())),
        }
    }

    /// Records how an admitted request ended: the ledger first (durable before the caller
    /// sees the answer), then its audit row.
    pub async fn settle(&self, mut admitted: Admitted, settlement: Settlement) {
        let Some(reservation) = admitted.reservation.take() else {
            return;
        };
        let reserved = reservation.reserved;
        let mut record = admitted.record.clone();
        let (actual, outcome) = match &settlement {
            Settlement::Answered(usage) if usage.input_tokens + usage.output_tokens > 0 => (
                Some(budget::actual_cost(
                    usage.input_tokens as u64,
                    usage.output_tokens as u64,
                    &admitted.prices,
                )),
                Outcome::Ok,
            ),
            Settlement::Answered(_) => (Some(reserved), Outcome::Ok),
            Settlement::NotSent(kind) => (None, Outcome::Error((*kind).to_string())),
            Settlement::Failed {
                kind,
                billed: false,
            } => (Some(Amount::default()), Outcome::Error((*kind).to_string())),
            Settlement::Failed { kind, billed: true } => {
                (Some(reserved), Outcome::Error((*kind).to_string()))
            }
            Settlement::Abandoned => (Some(reserved), Outcome::Error("abandoned".into())),
        };
        if let Some(amount) = actual {
            record.tokens_received = amount.output_tokens;
            record.cost_micros = amount.cost_micros;
            if let Settlement::Answered(usage) = &settlement
                && usage.input_tokens > 0
            {
                record.tokens_sent = usage.input_tokens as u64;
            }
        }
        record.outcome = outcome.clone();
        record.time = Timestamp::now();
        // One transaction: the settlement (what the caps count), then the audit row.
        let close = match actual {
            Some(actual) => Write::Settle {
                reservation,
                actual,
                outcome,
                now: Timestamp::now(),
            },
            None => Write::Release {
                reservation,
                now: Timestamp::now(),
            },
        };
        for result in self.ledger.commit(vec![close, Write::Audit(record)]).await {
            if let Err(error) = result {
                tracing::error!(%error, "cannot settle or audit an egress; the reservation stays counted");
            }
        }
    }

    /// Settles from a place that cannot wait (a dropped stream): on the runtime, in the background.
    pub fn settle_later(self: &Arc<Self>, admitted: Admitted, settlement: Settlement) {
        let guard = self.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move { guard.settle(admitted, settlement).await });
        }
    }

    /// How the call `admitted` let out ended, as the caller may see it: a whole answer with its
    /// placeholders put back (settled before it is returned), a stream that restores and
    /// settles as it goes, or the error (settled).
    pub async fn finish(
        self: &Arc<Self>,
        admitted: Admitted,
        result: Result<RemoteAnswer, UpstreamError>,
    ) -> Result<RemoteAnswer, UpstreamError> {
        match result {
            Err(error) => {
                self.settle(admitted, Settlement::from_error(&error)).await;
                Err(error)
            }
            Ok(RemoteAnswer::Whole(mut answer)) => {
                answer.text = admitted.restore(&answer.text);
                for call in &mut answer.tool_calls {
                    call.arguments = map_json_strings(&call.arguments, |t| admitted.restore(t));
                }
                // Durable before the answer is returned.
                self.settle(admitted, Settlement::Answered(answer.usage))
                    .await;
                Ok(RemoteAnswer::Whole(answer))
            }
            Ok(RemoteAnswer::Stream(stream)) => {
                Ok(RemoteAnswer::Stream(stream.guarded(self.clone(), admitted)))
            }
        }
    }

    async fn write_audit(&self, record: AuditRecord) {
        for result in self.ledger.commit(vec![Write::Audit(record)]).await {
            if let Err(error) = result {
                tracing::error!(%error, "cannot write an egress audit record");
            }
        }
    }
}

/// Applies `f` to every string inside the JSON text `json` (object keys left alone) and
/// serializes it again; text that is not JSON is passed to `f` whole.
pub fn try_map_json_strings<E>(
    json: &str,
    f: &mut dyn FnMut(&str) -> Result<String, E>,
) -> Result<String, E> {
    fn walk<E>(
        value: &mut serde_json::Value,
        f: &mut dyn FnMut(&str) -> Result<String, E>,
    ) -> Result<(), E> {
        match value {
            serde_json::Value::String(text) => *text = f(text)?,
            serde_json::Value::Array(items) => {
                for item in items {
                    walk(item, f)?;
                }
            }
            serde_json::Value::Object(map) => {
                for (_, item) in map.iter_mut() {
                    walk(item, f)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(mut value) => {
            walk(&mut value, f)?;
            Ok(value.to_string())
        }
        Err(_) => f(json),
    }
}

/// [`try_map_json_strings`] for a mapping that cannot fail (restoring placeholders).
pub fn map_json_strings(json: &str, f: impl Fn(&str) -> String) -> String {
    let result: Result<String, std::convert::Infallible> =
        try_map_json_strings(json, &mut |text| Ok(f(text)));
    match result {
        Ok(text) => text,
        Err(never) => match never {},
    }
}

fn ledger_refusal(error: &str) -> Refusal {
    Refusal {
        reason: Reason::Policy,
        label: "ledger_error",
        detail: format!(
            "the ledger cannot record this egress, nothing sent (fail closed): {error}"
        ),
    }
}
