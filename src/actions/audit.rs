//! Audit records of action attempts and the sink they go to. Every attempt, refused or run,
//! yields exactly one record. Argument *values* are never recorded (the model wrote them from
//! untrusted input and they may carry secrets or personal data): only their byte size and a
//! SHA-256 of their canonical JSON, which lets an operator match a record against a known call.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use sha2::{Digest, Sha256};

/// One action attempt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    /// When the attempt started.
    pub at: SystemTime,
    /// The action name as the caller gave it (may be unknown).
    pub action: String,
    /// The request or task-run id the call belongs to.
    pub request_id: String,
    /// The task that produced the call, if any.
    pub task: Option<String>,
    /// `executed`, `failed` or `refused`.
    pub outcome: &'static str,
    /// Refusal reason (`not_allowed`, ...) or a one-line failure cause.
    pub reason: Option<String>,
    /// HTTP status of a webhook, exit code of a program.
    pub status_code: Option<i64>,
    pub duration: Duration,
    /// Size of the arguments' JSON text.
    pub argument_bytes: usize,
    /// Hex SHA-256 of the arguments' JSON text (serde_json's compact form).
    pub arguments_sha256: String,
    pub dry_run: bool,
}

/// Where audit records go. The gateway implements it over its SQLite audit log.
///
/// `record` is called on the async executor after each attempt: an implementation must not block
/// for long (hand the record to a channel or a blocking writer thread).
pub trait AuditSink: Send + Sync {
    fn record(&self, record: AuditRecord);
}

/// An in-memory sink for tests and dry runs.
#[derive(Debug, Default)]
pub struct MemoryAuditSink {
    records: Mutex<Vec<AuditRecord>>,
}

impl MemoryAuditSink {
    pub fn new() -> MemoryAuditSink {
        MemoryAuditSink::default()
    }

    /// A copy of everything recorded so far.
    pub fn records(&self) -> Vec<AuditRecord> {
        match self.records.lock() {
            Ok(records) => records.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl AuditSink for MemoryAuditSink {
    fn record(&self, record: AuditRecord) {
        match self.records.lock() {
            Ok(mut records) => records.push(record),
            Err(poisoned) => poisoned.into_inner().push(record),
        }
    }
}

/// `(byte size, hex sha256)` of the arguments' compact JSON text, as the executors send it.
pub fn fingerprint(arguments: &serde_json::Value) -> (usize, String) {
    let text = arguments.to_string();
    let digest = Sha256::digest(text.as_bytes());
    (text.len(), hex::encode(digest))
}
