//! [`LedgerAuditSink`]: action audit records into the ledger's audit log, written by one
//! dedicated thread so that [`AuditSink::record`] never blocks the async executor on SQLite.
//!
//! The row (`kind = action`) holds: the request id; the action's name in `tier` (where the
//! attempt went) or `unknown` when the model named no configured action (a name the model made
//! up is untrusted text and never stored); the task in `reason` (`task:<name>`, or `call`);
//! the outcome as `ok`, `error:<kind>` or `blocked:<refusal>`; the argument bytes in
//! `bytes_sent` when the executor ran; and in `detail` the argument SHA-256, byte size,
//! duration, HTTP status or exit code and the dry-run flag. Argument values are never stored.
//!
//! Shutdown: records are queued on an unbounded channel; [`LedgerAuditSink::close`] stops
//! accepting, lets the thread write everything queued and joins it, so in a normal shutdown
//! no record is lost. Records arriving after `close` are logged as a warning and dropped.

use std::collections::BTreeSet;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::{AuditRecord, AuditSink};
use crate::ledger::{AuditKind, AuditRecord as AuditRow, Ledger, Outcome};

/// The name recorded for a call naming no configured action.
pub const UNKNOWN_ACTION: &str = "unknown";

/// Writes action audit records to the ledger on a dedicated thread.
pub struct LedgerAuditSink {
    known: BTreeSet<String>,
    queue: Mutex<Option<mpsc::Sender<AuditRow>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl LedgerAuditSink {
    /// `known`: the configured action names (anything else is recorded as `unknown`).
    pub fn start(ledger: Arc<Ledger>, known: BTreeSet<String>) -> std::io::Result<LedgerAuditSink> {
        let (tx, rx) = mpsc::channel::<AuditRow>();
        let writer = std::thread::Builder::new()
            .name("edgellm-audit".into())
            .spawn(move || {
                for row in rx {
                    if let Err(error) = ledger.record_audit(&row) {
                        tracing::warn!(%error, request_id = %row.request_id, "cannot write an action audit row");
                    }
                }
            })?;
        Ok(LedgerAuditSink {
            known,
            queue: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Writes what is queued and stops the writer thread. Blocks until done: call it from a
    /// blocking context (`spawn_blocking`) after the last action could run.
    pub fn close(&self) {
        drop(lock(&self.queue).take());
        if let Some(writer) = lock(&self.writer).take() {
            let _ = writer.join();
        }
    }
}

impl AuditSink for LedgerAuditSink {
    fn record(&self, record: AuditRecord) {
        let row = audit_row(&record, &self.known);
        let sent = lock(&self.queue)
            .as_ref()
            .is_some_and(|tx| tx.send(row).is_ok());
        if !sent {
            tracing::warn!(request_id = %record.request_id, "action audit record after shutdown: dropped");
        }
    }
}

/// An action attempt as a ledger audit row (see the module doc for the mapping).
pub fn audit_row(record: &AuditRecord, known: &BTreeSet<String>) -> AuditRow {
    let action = known_name(&record.action, known);
    let reason = record.reason.as_deref().unwrap_or("");
    let outcome = match record.outcome {
        "executed" => Outcome::Ok,
        "refused" => Outcome::Blocked(reason.to_string()),
        _ => Outcome::Error(failure_kind(reason, record.status_code)),
    };
    let ran = matches!(record.outcome, "executed" | "failed");
    let mut detail = format!(
        "args_sha256={} args_bytes={} duration_ms={}",
        record.arguments_sha256,
        record.argument_bytes,
        record.duration.as_millis()
    );
    if let Some(code) = record.status_code {
        detail.push_str(&format!(" status={code}"));
    }
    if record.dry_run {
        detail.push_str(" dry_run=true");
    }
    AuditRow {
        time: jiff::Timestamp::try_from(record.at).unwrap_or_else(|_| jiff::Timestamp::now()),
        kind: AuditKind::Action,
        request_id: record.request_id.clone(),
        tier: Some(action.to_string()),
        model: None,
        reason: record
            .task
            .as_ref()
            .map_or_else(|| "call".to_string(), |t| format!("task:{t}")),
        redactions: Default::default(),
        bytes_sent: if ran { record.argument_bytes as u64 } else { 0 },
        bytes_received: 0,
        tokens_sent: 0,
        tokens_received: 0,
        cost_micros: 0,
        outcome,
        detail: Some(detail),
        sources: Vec::new(),
    }
}

/// The action's name if configured, else [`UNKNOWN_ACTION`]: names the model made up are
/// untrusted text and go neither into the audit log nor into metric labels.
pub fn known_name<'a>(name: &'a str, known: &BTreeSet<String>) -> &'a str {
    if known.contains(name) {
        name
    } else {
        UNKNOWN_ACTION
    }
}

/// A short class for a failed execution: `timeout`, `status_<code>` or `failed`.
fn failure_kind(reason: &str, status_code: Option<i64>) -> String {
    if reason.contains("timed out") || reason.contains("timeout") {
        "timeout".into()
    } else if let Some(code) = status_code {
        format!("status_{code}")
    } else {
        "failed".into()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    fn record(action: &str, outcome: &'static str, reason: Option<&str>) -> AuditRecord {
        AuditRecord {
            at: SystemTime::now(),
            action: action.into(),
            request_id: "req-1".into(),
            task: Some("triage".into()),
            outcome,
            reason: reason.map(str::to_string),
            status_code: None,
            duration: Duration::from_millis(3),
            argument_bytes: 12,
            arguments_sha256: "ab".repeat(32),
            dry_run: false,
        }
    }

    #[test]
    fn outcomes_map_to_ok_error_blocked() {
        let known: BTreeSet<String> = ["notify".to_string()].into();
        let cases = [
            (record("notify", "executed", None), "ok", 12),
            (
                record("notify", "refused", Some("not_allowed")),
                "blocked:not_allowed",
                0,
            ),
            (
                record("notify", "failed", Some("program timed out after 1s")),
                "error:timeout",
                12,
            ),
            (
                AuditRecord {
                    status_code: Some(502),
                    ..record("notify", "failed", Some("webhook answered 502"))
                },
                "error:status_502",
                12,
            ),
        ];
        for (record, outcome, bytes) in cases {
            let row = audit_row(&record, &known);
            assert_eq!(row.outcome.to_string(), outcome);
            assert_eq!(row.kind, AuditKind::Action);
            assert_eq!(row.tier.as_deref(), Some("notify"));
            assert_eq!(row.reason, "task:triage");
            assert_eq!(row.bytes_sent, bytes);
            let detail = row.detail.unwrap();
            assert!(
                detail.contains(&format!("args_sha256={}", "ab".repeat(32))),
                "{detail}"
            );
        }
    }

    #[test]
    fn unknown_action_names_are_not_stored() {
        let known: BTreeSet<String> = ["notify".to_string()].into();
        let row = audit_row(
            &record("rm -rf / <script>", "refused", Some("unknown_action")),
            &known,
        );
        assert_eq!(row.tier.as_deref(), Some(UNKNOWN_ACTION));
        assert_eq!(row.outcome.to_string(), "blocked:unknown_action");
    }

    #[test]
    fn close_writes_everything_queued() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Arc::new(
            Ledger::open_in(dir.path(), Default::default(), jiff::Timestamp::now()).unwrap(),
        );
        let sink = LedgerAuditSink::start(ledger.clone(), ["notify".to_string()].into()).unwrap();
        for _ in 0..200 {
            sink.record(record("notify", "executed", None));
        }
        sink.close();
        sink.record(record("notify", "executed", None));
        let rows = ledger
            .audit_list(
                jiff::Timestamp::UNIX_EPOCH,
                jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60),
                1000,
            )
            .unwrap();
        assert_eq!(rows.len(), 200);
    }
}
