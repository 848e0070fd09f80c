//! The audit log and the local prompt log, both in the ledger's database.
//!
//! An [`AuditRecord`] describes one attempt to send something off the device (`kind = egress`),
//! to act on the outside world (`kind = action`) or to change the model the device runs
//! (`kind = model`: a pull, an activation, a rollback, a gc; `crate::delivery`): when, for which request, where to, why,
//! how much was redacted (counts per category), how many bytes and tokens went out and came
//! back, what it cost and how it ended. It has no field for prompt text or for the values that
//! were redacted, by design: the audit log can be exported and shared without leaking them.
//!
//! The prompt log is off by default and holds only text the caller already redacted.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;

use jiff::Timestamp;
use rusqlite::{Connection, Row, params};
use serde::{Serialize, Serializer};

use super::{Ledger, LedgerError, from_sql_int, lock, to_sql_int};

/// One audited attempt. See the module doc for what it deliberately cannot hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    pub time: Timestamp,
    pub kind: AuditKind,
    pub request_id: String,
    /// The remote tier's name (`None` for an action without one).
    pub tier: Option<String>,
    pub model: Option<String>,
    /// Why the attempt was made, e.g. the routing reason (`low_confidence`, `context`, ...).
    pub reason: String,
    /// Redactions applied before sending, counted per category (`email`, `api_key`, ...).
    pub redactions: BTreeMap<String, u64>,
    pub bytes_sent: u64,
    /// Bytes downloaded (a model pull's chunks); 0 where nothing is counted.
    #[serde(default)]
    pub bytes_received: u64,
    pub tokens_sent: u64,
    pub tokens_received: u64,
    pub cost_micros: u64,
    pub outcome: Outcome,
    /// A short machine-made note (an HTTP status, an error class); never user text.
    pub detail: Option<String>,
    /// Where added prompt text came from (`pack:NAME#CHUNK` ids); never the text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
}

/// An audit row as stored, with its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub id: i64,
    #[serde(flatten)]
    pub record: AuditRecord,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    Egress,
    Action,
    Model,
}

/// How an attempt ended. Stored and exported as `ok`, `error:<kind>` or `blocked:<reason>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The attempt was made and failed; the kind is a short class (`timeout`, `http_502`, ...).
    Error(String),
    /// A guard stopped it before anything was sent; the reason is the guard's name.
    Blocked(String),
}

/// Which side of an exchange a prompt-log row holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptDirection {
    Prompt,
    Answer,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PromptLogEntry {
    pub id: i64,
    pub time: Timestamp,
    pub request_id: String,
    pub direction: PromptDirection,
    pub redacted_text: String,
}

/// How many audit rows a page of an export reads while holding the ledger's lock.
pub(super) const EXPORT_PAGE: usize = 500;

impl AuditKind {
    pub fn name(self) -> &'static str {
        match self {
            AuditKind::Egress => "egress",
            AuditKind::Action => "action",
            AuditKind::Model => "model",
        }
    }

    fn parse(text: &str) -> AuditKind {
        match text {
            "action" => AuditKind::Action,
            "model" => AuditKind::Model,
            _ => AuditKind::Egress,
        }
    }
}

impl PromptDirection {
    pub fn name(self) -> &'static str {
        match self {
            PromptDirection::Prompt => "prompt",
            PromptDirection::Answer => "answer",
        }
    }
}

impl Outcome {
    /// The stored form back; anything unrecognised is kept as an error kind.
    pub fn parse(text: &str) -> Outcome {
        if text == "ok" {
            Outcome::Ok
        } else if let Some(reason) = text.strip_prefix("blocked:") {
            Outcome::Blocked(reason.to_string())
        } else {
            Outcome::Error(text.strip_prefix("error:").unwrap_or(text).to_string())
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::Error(kind) => write!(f, "error:{kind}"),
            Outcome::Blocked(reason) => write!(f, "blocked:{reason}"),
        }
    }
}

impl Serialize for Outcome {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl Ledger {
    /// Appends one audit row; returns its id.
    pub fn record_audit(&self, record: &AuditRecord) -> Result<i64, LedgerError> {
        self.appendable()?;
        insert_audit(&lock(&self.conn), record)
    }

    /// Audit rows with `from <= time < to`, oldest first, at most `limit`.
    pub fn audit_list(
        &self,
        from: Timestamp,
        to: Timestamp,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, LedgerError> {
        let conn = lock(&self.conn);
        audit_page(
            &conn,
            (from.as_millisecond(), 0),
            to.as_millisecond(),
            limit,
        )
    }

    /// Writes the audit rows with `from <= time < to` as JSON lines, oldest first; returns how
    /// many. Reads in pages so a slow writer does not hold the ledger's lock for long.
    pub fn write_jsonl<W: Write>(
        &self,
        mut writer: W,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<usize, LedgerError> {
        let mut after = (from.as_millisecond(), 0);
        let mut written = 0;
        loop {
            let page = {
                let conn = lock(&self.conn);
                audit_page(&conn, after, to.as_millisecond(), EXPORT_PAGE)?
            };
            for entry in &page {
                serde_json::to_writer(&mut writer, entry)?;
                writer.write_all(b"\n").map_err(LedgerError::Write)?;
                after = (entry.record.time.as_millisecond(), entry.id + 1);
            }
            written += page.len();
            if page.len() < EXPORT_PAGE {
                writer.flush().map_err(LedgerError::Write)?;
                return Ok(written);
            }
        }
    }

    /// Keeps one prompt or answer in the local prompt log, when `budget.prompt_log` is on;
    /// returns whether it was kept.
    ///
    /// Invariant: `redacted_text` has ALREADY been through the redaction guard. The ledger
    /// cannot tell redacted from raw text; passing raw text here breaks the promise that raw
    /// prompts never reach the disk.
    pub fn log_prompt(
        &self,
        request_id: &str,
        direction: PromptDirection,
        redacted_text: &str,
        now: Timestamp,
    ) -> Result<bool, LedgerError> {
        self.writable()?;
        if self.options.prompt_log_retention_days.is_none() {
            return Ok(false);
        }
        let text = self.options.seal_prompt(redacted_text);
        let conn = lock(&self.conn);
        insert_prompt(&conn, request_id, direction, &text, now)?;
        Ok(true)
    }

    /// Prompt-log rows with `from <= time < to`, oldest first, at most `limit`.
    pub fn prompt_log_list(
        &self,
        from: Timestamp,
        to: Timestamp,
        limit: usize,
    ) -> Result<Vec<PromptLogEntry>, LedgerError> {
        let conn = lock(&self.conn);
        let mut statement = conn.prepare_cached(
            "SELECT id, time_ms, request_id, direction, redacted_text FROM prompt_log
             WHERE time_ms >= ?1 AND time_ms < ?2 ORDER BY time_ms, id LIMIT ?3",
        )?;
        let rows = statement.query_map(
            params![from.as_millisecond(), to.as_millisecond(), limit_sql(limit)],
            |row| {
                let direction: String = row.get(3)?;
                Ok(PromptLogEntry {
                    id: row.get(0)?,
                    time: timestamp(row.get(1)?),
                    request_id: row.get(2)?,
                    direction: if direction == "answer" {
                        PromptDirection::Answer
                    } else {
                        PromptDirection::Prompt
                    },
                    redacted_text: self.options.open_prompt(row.get(4)?),
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Appends `record` on `conn` (alone, or inside the writer's transaction); returns its id.
pub(super) fn insert_audit(conn: &Connection, record: &AuditRecord) -> Result<i64, LedgerError> {
    let redactions = serde_json::to_string(&record.redactions)?;
    let sources = (!record.sources.is_empty())
        .then(|| serde_json::to_string(&record.sources))
        .transpose()?;
    conn.prepare_cached(
        "INSERT INTO audit (time_ms, kind, request_id, tier, model, reason, redactions,
             bytes_sent, tokens_sent, tokens_received, cost_micros, outcome, detail, sources,
             bytes_received)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?
    .execute(params![
        record.time.as_millisecond(),
        record.kind.name(),
        record.request_id,
        record.tier,
        record.model,
        record.reason,
        redactions,
        to_sql_int(record.bytes_sent),
        to_sql_int(record.tokens_sent),
        to_sql_int(record.tokens_received),
        to_sql_int(record.cost_micros),
        record.outcome.to_string(),
        record.detail,
        sources,
        to_sql_int(record.bytes_received),
    ])?;
    Ok(conn.last_insert_rowid())
}

/// Rows after the cursor `(time_ms, id)` (inclusive) and before `to_ms`.
fn audit_page(
    conn: &Connection,
    after: (i64, i64),
    to_ms: i64,
    limit: usize,
) -> Result<Vec<AuditEntry>, LedgerError> {
    // A reader may look at a file an older edgellm wrote (schema 2: no `sources` yet; before 4:
    // no `bytes_received`).
    let column_or = |name: &str, absent: &'static str| -> Result<String, LedgerError> {
        let found: i64 = conn.query_row(
            "SELECT COUNT(*) FROM pragma_table_info('audit') WHERE name = ?1",
            [name],
            |row| row.get(0),
        )?;
        Ok(if found > 0 {
            name.to_string()
        } else {
            absent.to_string()
        })
    };
    let sources = column_or("sources", "NULL")?;
    let received = column_or("bytes_received", "0")?;
    let mut statement = conn.prepare_cached(&format!(
        "SELECT id, time_ms, kind, request_id, tier, model, reason, redactions, bytes_sent,
                tokens_sent, tokens_received, cost_micros, outcome, detail, {sources}, {received}
         FROM audit
         WHERE (time_ms > ?1 OR (time_ms = ?1 AND id >= ?2)) AND time_ms < ?3
         ORDER BY time_ms, id LIMIT ?4"
    ))?;
    let mut rows = statement.query(params![after.0, after.1, to_ms, limit_sql(limit)])?;
    let mut entries = Vec::new();
    while let Some(row) = rows.next()? {
        entries.push(audit_entry(row)?);
    }
    Ok(entries)
}

fn audit_entry(row: &Row<'_>) -> Result<AuditEntry, LedgerError> {
    let kind: String = row.get(2)?;
    let redactions: String = row.get(7)?;
    let outcome: String = row.get(12)?;
    let sources: Option<String> = row.get(14)?;
    Ok(AuditEntry {
        id: row.get(0)?,
        record: AuditRecord {
            sources: match sources {
                Some(text) => serde_json::from_str(&text)?,
                None => Vec::new(),
            },
            time: timestamp(row.get(1)?),
            kind: AuditKind::parse(&kind),
            request_id: row.get(3)?,
            tier: row.get(4)?,
            model: row.get(5)?,
            reason: row.get(6)?,
            redactions: serde_json::from_str(&redactions)?,
            bytes_sent: from_sql_int(row.get(8)?),
            bytes_received: from_sql_int(row.get(15)?),
            tokens_sent: from_sql_int(row.get(9)?),
            tokens_received: from_sql_int(row.get(10)?),
            cost_micros: from_sql_int(row.get(11)?),
            outcome: Outcome::parse(&outcome),
            detail: row.get(13)?,
        },
    })
}

pub(super) fn timestamp(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn limit_sql(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// One prompt-log row (the text already redacted).
pub(super) fn insert_prompt(
    conn: &Connection,
    request_id: &str,
    direction: PromptDirection,
    redacted_text: &str,
    now: Timestamp,
) -> Result<(), LedgerError> {
    conn.execute(
        "INSERT INTO prompt_log (time_ms, request_id, direction, redacted_text)
         VALUES (?1, ?2, ?3, ?4)",
        params![
            now.as_millisecond(),
            request_id,
            direction.name(),
            redacted_text
        ],
    )?;
    Ok(())
}
