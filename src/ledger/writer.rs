//! The owner's writer thread: every write a request makes on its way through the gateway
//! (its reservation before it is sent, its settlement and audit row after) goes through
//! [`Ledger::commit`] to this one thread, which commits whatever queued up while its last
//! commit ran in one transaction (group commit) and answers each caller once that transaction
//! is in the WAL. So concurrent requests share commits instead of queueing for the connection's
//! mutex one commit at a time, and the async runtime hands a write over with a channel send
//! instead of a hop through the blocking pool.
//!
//! **Results are per write.** A reservation refused by a cap, or a settlement of a reservation
//! that is no longer open, fails alone (each write is one modifying statement, which SQLite
//! rolls back on its own); the others in the batch go on. When the transaction itself fails
//! (it cannot begin, SQLite rolled it back after a disk or I/O error, or the commit fails),
//! every write of the batch fails with [`LedgerError::Commit`]: no caller is told a write
//! landed that is not in the file.
//!
//! **The WAL stays bounded.** The checkpointer thread (`open.rs`) copies the WAL into the
//! database without blocking this one; under sustained load it may never catch up with a
//! writer that writes between its passes, and SQLite only restarts the WAL from its start
//! after a checkpoint that caught up. So when the WAL grows past [`WAL_LIMIT_BYTES`] the
//! writer itself checkpoints between two batches, where no write can come between (`PASSIVE`:
//! it waits for nobody; what the checkpointer already copied is not copied again), the next
//! write restarts the WAL, and `journal_size_limit` cuts the file back to that size.

use std::ffi::c_int;
use std::fmt::Display;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::oneshot;

use super::audit::{PromptDirection, insert_audit, insert_prompt};
use super::{
    AuditRecord, Closed, Ledger, LedgerError, Outcome, Reservation, ReserveRequest, lock,
    release_in, reserve_in, settle_in,
};
use crate::guard::budget::{self, Amount, Caps};

/// The WAL file size past which the writer restarts the WAL itself (see the module doc).
pub(super) const WAL_LIMIT_BYTES: u64 = 4 << 20;

/// Jobs taken into one transaction at most: a long batch would hold its first caller's
/// answer back behind the rest.
const MAX_BATCH_JOBS: usize = 128;

/// One write for [`Ledger::commit`].
#[derive(Debug, Clone)]
pub enum Write {
    /// [`Ledger::reserve`]: the estimate against the caps of the day `now` falls on.
    Reserve {
        request_id: String,
        tier: String,
        model: String,
        estimate: Amount,
        caps: Caps,
        now: Timestamp,
    },
    /// [`Ledger::settle`].
    Settle {
        reservation: Reservation,
        actual: Amount,
        outcome: Outcome,
        now: Timestamp,
    },
    /// [`Ledger::release`].
    Release {
        reservation: Reservation,
        now: Timestamp,
    },
    /// [`Ledger::record_audit`].
    Audit(AuditRecord),
    /// [`Ledger::log_prompt`] (see [`Ledger::log_prompt_later`]).
    Prompt {
        request_id: String,
        direction: PromptDirection,
        redacted_text: String,
        now: Timestamp,
    },
}

/// What one [`Write`] did, in the order the writes were given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    Reserved(Reservation),
    Closed(Closed),
    Audited(i64),
    Logged,
}

type Results = Vec<Result<Written, LedgerError>>;

struct Job {
    writes: Vec<Write>,
    reply: oneshot::Sender<Results>,
}

/// The handle the owning [`Ledger`] keeps: dropping it lets the thread finish the queued
/// writes and waits for it.
pub(super) struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    state: Arc<WriterState>,
    /// Jobs sent and not yet answered.
    queued: Arc<AtomicUsize>,
    /// Whether a caller may commit on its own thread when nothing is queued (see
    /// [`Ledger::commit`]).
    inline: bool,
}

/// What the thread needs of the ledger.
pub(super) struct WriterState {
    pub conn: Arc<Mutex<Connection>>,
    pub boot: i64,
    pub timezone: TimeZone,
    /// The WAL's size after the last commit, from [`watch_wal`].
    pub wal_bytes: Arc<AtomicU64>,
}

/// Keeps the size of `conn`'s WAL after each of its commits (SQLite's WAL hook tells the
/// frames; no file is looked at), for [`WriterState::bound_wal`].
pub(super) fn watch_wal(conn: &mut Connection) -> Result<Arc<AtomicU64>, LedgerError> {
    let page_size: i64 = conn.pragma_query_value(None, "page_size", |row| row.get(0))?;
    let frame_bytes = u64::try_from(page_size).unwrap_or(0);
    let wal_bytes = Arc::new(AtomicU64::new(0));
    let seen = wal_bytes.clone();
    conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, frames: c_int| {
        let frames = u64::try_from(frames).unwrap_or(0);
        seen.store(frames.saturating_mul(frame_bytes), Ordering::Relaxed);
        Ok(())
    }))?;
    Ok(wal_bytes)
}

impl Writer {
    pub(super) fn spawn(state: WriterState, inline: bool) -> std::io::Result<Writer> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let state = Arc::new(state);
        let queued = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (state, queued) = (state.clone(), queued.clone());
            std::thread::Builder::new()
                .name("ledger-writer".into())
                .spawn(move || run(state, queue, queued))?
        };
        Ok(Writer {
            jobs: Some(jobs),
            thread: Some(thread),
            state,
            queued,
            inline,
        })
    }

    /// Commits on the calling thread when nothing is queued and nobody holds the connection;
    /// `None` when the caller must queue.
    fn commit_here(&self, writes: &[Write]) -> Option<Results> {
        if !self.inline || self.queued.load(Ordering::Acquire) > 0 {
            return None;
        }
        let mut conn = self.state.conn.try_lock().ok()?;
        let results = self.state.commit_batch(&mut conn, &[writes]).pop();
        drop(conn);
        self.state.bound_wal();
        results
    }

    fn submit(&self, writes: Vec<Write>) -> oneshot::Receiver<Results> {
        let (reply, answer) = oneshot::channel();
        self.queued.fetch_add(1, Ordering::AcqRel);
        if let Some(jobs) = &self.jobs {
            // A send fails only when the thread is gone; the job (and its reply sender) is
            // dropped with the error, which the caller's receiver reports.
            let _ = jobs.send(Job { writes, reply });
        }
        answer
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Ledger {
    /// Queues one prompt-log row for the writer thread and returns at once: for a caller that
    /// must not block (a response body's drop on the async runtime). Nothing is queued when
    /// prompt logging is off or the ledger is read-only. Same invariant as
    /// [`Ledger::log_prompt`]: `redacted_text` has already been through the redaction guard.
    pub fn log_prompt_later(
        &self,
        request_id: &str,
        direction: PromptDirection,
        redacted_text: &str,
        now: Timestamp,
    ) {
        let Some(writer) = &self.writer else {
            return;
        };
        if self.options.prompt_log_retention_days.is_none() {
            return;
        }
        // The answer is not awaited: a failed insert is the writer's to log.
        drop(writer.submit(vec![Write::Prompt {
            request_id: request_id.to_string(),
            direction,
            redacted_text: self.options.seal_prompt(redacted_text),
            now,
        }]));
    }

    /// Commits `writes` through the writer thread (group commit, see the module doc); the
    /// results come back in order once the transaction holding them is in the WAL.
    pub async fn commit(&self, writes: Vec<Write>) -> Results {
        let count = writes.len();
        let failed = |error: fn() -> LedgerError| (0..count).map(|_| Err(error())).collect();
        let Some(writer) = &self.writer else {
            return failed(|| LedgerError::ReadOnly);
        };
        if let Some(results) = writer.commit_here(&writes) {
            return results;
        }
        match writer.submit(writes).await {
            Ok(results) => results,
            Err(_) => failed(|| LedgerError::Commit("the ledger's writer thread stopped".into())),
        }
    }
}

fn run(state: Arc<WriterState>, queue: mpsc::Receiver<Job>, queued: Arc<AtomicUsize>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_JOBS {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let writes_taken = batch.len();
        let writes: Vec<&[Write]> = batch.iter().map(|job| job.writes.as_slice()).collect();
        let results = state.commit_batch(&mut lock(&state.conn), &writes);
        for (job, results) in batch.into_iter().zip(results) {
            // The caller may have gone (a dropped request); what it wrote stays written.
            let _ = job.reply.send(results);
        }
        state.bound_wal();
        queued.fetch_sub(writes_taken, Ordering::Release);
    }
}

impl WriterState {
    /// Every job's writes in one transaction; see the module doc for what fails together.
    fn commit_batch(&self, conn: &mut Connection, batch: &[&[Write]]) -> Vec<Results> {
        let all_failed = |error: &dyn Display| -> Vec<Results> {
            batch
                .iter()
                .map(|writes| {
                    writes
                        .iter()
                        .map(|_| Err(LedgerError::Commit(error.to_string())))
                        .collect()
                })
                .collect()
        };
        let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(error) => return all_failed(&error),
        };
        let mut results = Vec::with_capacity(batch.len());
        for writes in batch {
            let mut job_results = Vec::with_capacity(writes.len());
            for write in writes.iter() {
                let result = self.apply(&tx, write);
                if let Err(error) = &result
                    && tx.is_autocommit()
                {
                    // SQLite rolled the whole transaction back (disk full, I/O error).
                    return all_failed(error);
                }
                job_results.push(result);
            }
            results.push(job_results);
        }
        match tx.commit() {
            Ok(()) => results,
            Err(error) => all_failed(&error),
        }
    }

    fn apply(&self, conn: &Connection, write: &Write) -> Result<Written, LedgerError> {
        match write {
            Write::Reserve {
                request_id,
                tier,
                model,
                estimate,
                caps,
                now,
            } => {
                let request = ReserveRequest {
                    request_id,
                    tier,
                    model,
                    estimate: *estimate,
                };
                let day = budget::day_of(*now, &self.timezone);
                reserve_in(conn, self.boot, day, &request, caps, *now).map(Written::Reserved)
            }
            Write::Settle {
                reservation,
                actual,
                outcome,
                now,
            } => {
                settle_in(conn, self.boot, reservation, actual, outcome, *now).map(Written::Closed)
            }
            Write::Release { reservation, now } => {
                release_in(conn, self.boot, reservation, *now).map(Written::Closed)
            }
            Write::Audit(record) => insert_audit(conn, record).map(Written::Audited),
            Write::Prompt {
                request_id,
                direction,
                redacted_text,
                now,
            } => insert_prompt(conn, request_id, *direction, redacted_text, *now)
                .map(|()| Written::Logged),
        }
    }

    /// Checkpoints the WAL when it outgrew [`WAL_LIMIT_BYTES`] (see the module doc).
    fn bound_wal(&self) {
        if self.wal_bytes.load(Ordering::Relaxed) <= WAL_LIMIT_BYTES {
            return;
        }
        // Busy (the checkpointer is in a pass of its own) is not an error: the next batch
        // tries again.
        let conn = lock(&self.conn);
        if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(%error, "ledger: WAL checkpoint failed");
        }
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
