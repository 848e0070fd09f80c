//! The durable spend and audit store: one SQLite file in the data directory (WAL), the only
//! writer of spend records.
//!
//! **Reservations.** Before a remote call the router [`Ledger::reserve`]s the call's estimate.
//! In one `BEGIN IMMEDIATE` transaction the ledger sums the day's settled actual amounts and
//! every open reservation (pending or in doubt) at its reserved amount, adds the estimate, checks
//! every cap (`crate::guard::budget::check_caps`) and inserts the reservation only if all fit, so
//! no interleaving of threads or processes can push a day past a cap. After the call the
//! reservation is [`Ledger::settle`]d with the actual usage (idempotent), or
//! [`Ledger::release`]d when the request provably never left (connection refused).
//!
//! **In doubt.** A reservation still pending when its process died may or may not have reached
//! the upstream. When the ledger is opened, every pending row of an earlier boot becomes
//! `in_doubt`: it counts at its reserved amount for its day, for good, and is never re-sent or
//! settled. Boots are told apart by a row in the `boot` table; one process at a time owns the
//! file (an exclusive lock on `<file>.lock`), so a live process's reservations are never taken
//! for a dead one's. [`Ledger::open_reader`] (for `edgellm usage`) takes no lock and changes
//! nothing. [`Ledger::open_appender`] (for `edgellm model`, which runs beside a server) takes no
//! lock either and only appends: audit rows and the download budget's rows
//! (`ledger/download.rs`), never reservations.
//!
//! **Durability.** In WAL mode every commit is written to the WAL before it returns, so a
//! settlement that returned survives a crash of the process (kill -9, OOM) with the default
//! `synchronous = NORMAL`. `[budget] ledger_sync = "full"` also syncs the WAL on every commit,
//! which survives a power cut too, at one fsync per commit: on this development VM that caps a
//! gateway at ~400 remote requests/s with >1 ms added per request (docs/budgets.md).
//!
//! **Blocking and group commit.** rusqlite is synchronous (and with `full` sync a commit waits
//! for an fsync). The owner's request-path writes go through [`Ledger::commit`], an async call
//! that hands them to the writer thread (`ledger/writer.rs`), which commits all writes queued
//! meanwhile in one transaction; the synchronous methods ([`Ledger::reserve`], ...) do the same
//! writes on the calling thread, one transaction each, for the CLIs, the action audit sink and
//! tests. Both lock the one connection, so they never interleave inside a transaction.
//!
//! **Days.** A reservation belongs to the budget day (in the configured zone) on which it was
//! reserved, and stays there when it settles after midnight.

// Explicit paths: they resolve the same whether this file is `src/ledger.rs` of the crate or
// mounted elsewhere with `#[path]` (where a plain `mod audit;` would look beside this file).
#[path = "ledger/audit.rs"]
mod audit;
#[path = "ledger/download.rs"]
mod download;
#[path = "ledger/open.rs"]
mod open;
#[path = "ledger/schema.rs"]
mod schema;
#[cfg(test)]
#[path = "ledger/tests.rs"]
mod tests;
#[path = "ledger/writer.rs"]
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;

use crate::guard::budget::{
    self, Amount, Budget, BudgetError, Caps, DEFAULT_RETENTION_DAYS, Remaining, Totals,
};

pub use audit::{AuditEntry, AuditKind, AuditRecord, Outcome, PromptDirection, PromptLogEntry};
pub use schema::SCHEMA_VERSION;
pub use writer::{Write, Written};

/// The ledger's file name inside the data directory.
pub const FILE_NAME: &str = "ledger.sqlite3";

/// The durable store. See the module doc.
pub struct Ledger {
    // Dropped in this order: the writer finishes its queue, the checkpointer its last pass,
    // then the connection closes and the owner lock goes last.
    /// The owner's writer thread ([`Ledger::commit`]); `None` for a reader.
    writer: Option<writer::Writer>,
    /// Dropping it stops the owner's checkpoint thread.
    _checkpointer: Option<std::sync::mpsc::Sender<()>>,
    /// Shared with the writer thread; everything else locks it for one call.
    conn: Arc<Mutex<Connection>>,
    /// This process's boot id; `None` for a reader, which refuses to write, and an appender.
    boot: Option<i64>,
    /// Opened by [`Ledger::open_appender`]: audit and download rows only.
    appends: bool,
    options: LedgerOptions,
    /// Held for the ledger's life: one owning process per file.
    _owner_lock: Option<File>,
}

/// What the ledger needs from the `[budget]` configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerOptions {
    pub timezone: TimeZone,
    pub retention_days: u32,
    /// `Some(days)` when prompt logging is on.
    pub prompt_log_retention_days: Option<u32>,
    /// `synchronous = FULL` (durable against a power cut) instead of `NORMAL` (against a crash
    /// of the process).
    pub full_sync: bool,
    /// Prompt-log text is sealed with this key (`[keys] encrypt_prompt_log`): what reaches the
    /// file is ciphertext that only this device's key opens.
    pub prompt_key: Option<std::sync::Arc<crate::vault::LocalKey>>,
}

/// What the router sends to [`Ledger::reserve`].
#[derive(Debug, Clone, Copy)]
pub struct ReserveRequest<'a> {
    pub request_id: &'a str,
    pub tier: &'a str,
    pub model: &'a str,
    pub estimate: Amount,
}

/// A reservation the current process holds; settle or release it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub id: i64,
    pub request_id: String,
    pub day: Date,
    pub reserved: Amount,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationState {
    Pending,
    InDoubt,
    Settled,
    Released,
}

/// What [`Ledger::settle`] and [`Ledger::release`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    Now,
    /// It was already in the asked-for state; nothing changed.
    Already,
}

/// One reservation row, for `edgellm usage --detail` and tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReservationRow {
    pub id: i64,
    pub request_id: String,
    pub day: Date,
    pub created: Timestamp,
    pub tier: String,
    pub model: String,
    pub state: ReservationState,
    pub reserved: Amount,
    pub actual: Option<Amount>,
    pub outcome: Option<String>,
}

/// A day's spend, split by state, and what is left under each cap. `counted` is what the caps
/// see: settled at actual amounts, pending and in doubt at reserved amounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayUsage {
    pub day: Date,
    pub settled: Totals,
    pub pending: Totals,
    pub in_doubt: Totals,
    pub counted: Totals,
    pub remaining: Remaining,
}

/// Rows removed by [`Ledger::purge`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub audit: usize,
    pub reservations: usize,
    pub prompt_log: usize,
    pub downloads: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("ledger {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ledger {} is in use by another edgellm process", path.display())]
    Locked { path: PathBuf },
    #[error("ledger schema version {found} is newer than this edgellm understands ({supported})")]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("ledger has no schema yet (nothing was ever recorded)")]
    NoSchema,
    #[error(transparent)]
    Budget(#[from] BudgetError),
    #[error("reservation {id} is {state:?}; it can no longer be settled or released")]
    NotOpen { id: i64, state: ReservationState },
    #[error("reservation {id} does not exist (purged, or from another ledger)")]
    UnknownReservation { id: i64 },
    #[error("ledger was opened read-only")]
    ReadOnly,
    #[error(
        "the daily download budget is spent: {used} of {cap} bytes fetched on {day}, and this \
         pull needs {needed} more (delivery.daily_download_bytes)"
    )]
    DownloadBudget {
        day: Date,
        used: u64,
        needed: u64,
        cap: u64,
    },
    /// The transaction holding this write failed as a whole; nothing of it is in the file.
    #[error("ledger commit failed: {0}")]
    Commit(String),
    #[error("ledger: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("ledger JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("ledger export: {0}")]
    Write(std::io::Error),
}

impl Default for LedgerOptions {
    fn default() -> Self {
        LedgerOptions {
            timezone: TimeZone::UTC,
            retention_days: DEFAULT_RETENTION_DAYS,
            prompt_log_retention_days: None,
            full_sync: false,
            prompt_key: None,
        }
    }
}

impl LedgerOptions {
    /// Prompt-log text as it is stored: sealed when a prompt key is set.
    fn seal_prompt(&self, text: &str) -> String {
        match &self.prompt_key {
            Some(key) => key.seal(text),
            None => text.to_string(),
        }
    }

    /// Stored prompt-log text as read: opened when it is sealed and the key opens it; sealed
    /// text without its key stays as stored (ciphertext, never a guess).
    fn open_prompt(&self, stored: String) -> String {
        match &self.prompt_key {
            Some(key) if crate::vault::LocalKey::is_sealed(&stored) => {
                key.open(&stored).unwrap_or(stored)
            }
            _ => stored,
        }
    }

    pub fn from_budget(budget: &Budget) -> LedgerOptions {
        LedgerOptions {
            timezone: budget.timezone.clone(),
            retention_days: budget.retention_days,
            prompt_log_retention_days: budget.prompt_log_retention_days,
            full_sync: budget.full_sync,
            prompt_key: None,
        }
    }
}

impl ReservationState {
    pub fn name(self) -> &'static str {
        match self {
            ReservationState::Pending => "pending",
            ReservationState::InDoubt => "in_doubt",
            ReservationState::Settled => "settled",
            ReservationState::Released => "released",
        }
    }

    fn parse(text: &str) -> ReservationState {
        match text {
            "pending" => ReservationState::Pending,
            "settled" => ReservationState::Settled,
            "released" => ReservationState::Released,
            _ => ReservationState::InDoubt,
        }
    }
}

impl Ledger {
    /// Opens (creating if needed) `<data_dir>/ledger.sqlite3` as its owner.
    pub fn open_in(
        data_dir: &Path,
        options: LedgerOptions,
        now: Timestamp,
    ) -> Result<Ledger, LedgerError> {
        Ledger::open(&data_dir.join(FILE_NAME), options, now)
    }

    /// Opens (creating if needed) the ledger at `path` as its owning process: takes the owner
    /// lock, migrates the schema, starts a boot, turns earlier boots' pending reservations into
    /// in-doubt ones, and purges expired rows.
    pub fn open(
        path: &Path,
        options: LedgerOptions,
        now: Timestamp,
    ) -> Result<Ledger, LedgerError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| LedgerError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let owner_lock = open::take_owner_lock(path)?;
        let mut conn = open::connect(path, OpenFlags::default(), options.full_sync)?;
        schema::migrate(&mut conn)?;
        let boot = open::start_boot(&mut conn, now)?;
        // Checkpoints (copying the WAL into the database, with its fsync) run on their own
        // connection and thread, never inside a request's commit.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.pragma_update(None, "journal_size_limit", writer::WAL_LIMIT_BYTES as i64)?;
        // After `wal_autocheckpoint`, which replaces any WAL hook.
        let wal_bytes = writer::watch_wal(&mut conn)?;
        let checkpointer = open::spawn_checkpointer(path)?;
        let conn = Arc::new(Mutex::new(conn));
        let writer = writer::Writer::spawn(
            writer::WriterState {
                conn: conn.clone(),
                boot,
                timezone: options.timezone.clone(),
                wal_bytes,
            },
            !options.full_sync,
        )
        .map_err(|source| LedgerError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let ledger = Ledger {
            writer: Some(writer),
            _checkpointer: Some(checkpointer),
            conn,
            boot: Some(boot),
            appends: true,
            options,
            _owner_lock: Some(owner_lock),
        };
        ledger.purge(now)?;
        Ok(ledger)
    }

    /// Opens an existing ledger to read usage and audit rows while (maybe) another process
    /// owns it. Writes nothing: reservations stay as their owner left them, so a dead owner's
    /// pending rows show as pending until the next owner opens the file.
    pub fn open_reader(path: &Path, options: LedgerOptions) -> Result<Ledger, LedgerError> {
        let conn = open::connect(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            false,
        )?;
        match schema::version(&conn)? {
            0 => return Err(LedgerError::NoSchema),
            found if found > SCHEMA_VERSION => {
                return Err(LedgerError::SchemaTooNew {
                    found,
                    supported: SCHEMA_VERSION,
                });
            }
            _ => {}
        }
        Ok(Ledger {
            writer: None,
            _checkpointer: None,
            conn: Arc::new(Mutex::new(conn)),
            boot: None,
            appends: false,
            options,
            _owner_lock: None,
        })
    }

    /// Opens (creating if needed) the ledger at `path` to append audit and download rows
    /// while a server may own it: no owner lock, no boot, no reservations. SQLite's locking
    /// (WAL, the busy timeout) orders its writes with the owner's.
    pub fn open_appender(path: &Path, options: LedgerOptions) -> Result<Ledger, LedgerError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| LedgerError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let mut conn = open::connect(path, OpenFlags::default(), options.full_sync)?;
        schema::migrate(&mut conn)?;
        Ok(Ledger {
            writer: None,
            _checkpointer: None,
            conn: Arc::new(Mutex::new(conn)),
            boot: None,
            appends: true,
            options,
            _owner_lock: None,
        })
    }

    pub fn options(&self) -> &LedgerOptions {
        &self.options
    }

    /// The budget day `now` falls on.
    pub fn day_of(&self, now: Timestamp) -> Date {
        budget::day_of(now, &self.options.timezone)
    }

    /// Reserves `request.estimate` against today's caps, or refuses with
    /// [`LedgerError::Budget`] naming the cap. See the module doc.
    pub fn reserve(
        &self,
        request: &ReserveRequest<'_>,
        caps: &Caps,
        now: Timestamp,
    ) -> Result<Reservation, LedgerError> {
        let boot = self.writable()?;
        let day = self.day_of(now);
        let mut conn = lock(&self.conn);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let reservation = reserve_in(&tx, boot, day, request, caps, now)?;
        tx.commit()?;
        Ok(reservation)
    }

    /// Records the actual usage of a sent request. Settling again changes nothing and returns
    /// [`Closed::Already`]; a reservation that is in doubt or released cannot be settled.
    pub fn settle(
        &self,
        reservation: &Reservation,
        actual: &Amount,
        outcome: &Outcome,
        now: Timestamp,
    ) -> Result<Closed, LedgerError> {
        let boot = self.writable()?;
        settle_in(&lock(&self.conn), boot, reservation, actual, outcome, now)
    }

    /// The request provably never left the device: the reservation counts for nothing.
    pub fn release(
        &self,
        reservation: &Reservation,
        now: Timestamp,
    ) -> Result<Closed, LedgerError> {
        let boot = self.writable()?;
        release_in(&lock(&self.conn), boot, reservation, now)
    }

    /// The spend of `day`, and what `caps` leave of it.
    pub fn usage(&self, day: Date, caps: &Caps) -> Result<DayUsage, LedgerError> {
        let conn = lock(&self.conn);
        let split = counted_totals(&conn, &day.to_string())?;
        let counted = split.counted();
        Ok(DayUsage {
            day,
            settled: split.settled,
            pending: split.pending,
            in_doubt: split.in_doubt,
            counted,
            remaining: budget::remaining(&counted, caps),
        })
    }

    /// [`Ledger::usage`] of the day `now` falls on.
    pub fn usage_at(&self, now: Timestamp, caps: &Caps) -> Result<DayUsage, LedgerError> {
        self.usage(self.day_of(now), caps)
    }

    /// Every reservation of `day`, oldest first.
    pub fn reservations(&self, day: Date) -> Result<Vec<ReservationRow>, LedgerError> {
        let conn = lock(&self.conn);
        let mut statement = conn.prepare_cached(
            "SELECT id, request_id, created_ms, tier, model, state, reserved_input,
                    reserved_output, reserved_cost, actual_input, actual_output, actual_cost,
                    outcome
             FROM reservation WHERE day = ?1 ORDER BY id",
        )?;
        let rows = statement.query_map(params![day.to_string()], |row| {
            let state: String = row.get(5)?;
            let actual: (Option<i64>, Option<i64>, Option<i64>) =
                (row.get(9)?, row.get(10)?, row.get(11)?);
            Ok(ReservationRow {
                id: row.get(0)?,
                request_id: row.get(1)?,
                day,
                created: audit::timestamp(row.get(2)?),
                tier: row.get(3)?,
                model: row.get(4)?,
                state: ReservationState::parse(&state),
                reserved: amount(row.get(6)?, row.get(7)?, row.get(8)?),
                actual: match actual {
                    (Some(i), Some(o), Some(c)) => Some(amount(i, o, c)),
                    _ => None,
                },
                outcome: row.get(12)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes audit rows older than the retention, prompt-log rows older than theirs, and
    /// closed or in-doubt reservations whose day lies wholly before the retention window (so a
    /// day's budget never loses a row while the day can still be charged). Runs on open; call
    /// it from a periodic task too.
    pub fn purge(&self, now: Timestamp) -> Result<Purged, LedgerError> {
        self.writable()?;
        let cutoff = |days: u32| now.checked_sub(SignedDuration::from_hours(24 * i64::from(days)));
        let audit_cutoff = cutoff(self.options.retention_days).unwrap_or(Timestamp::MIN);
        let prompt_days = self
            .options
            .prompt_log_retention_days
            .unwrap_or(self.options.retention_days);
        let prompt_cutoff = cutoff(prompt_days).unwrap_or(Timestamp::MIN);
        let day_cutoff = self.day_of(audit_cutoff).to_string();
        let mut conn = lock(&self.conn);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let purged = Purged {
            audit: tx.execute(
                "DELETE FROM audit WHERE time_ms < ?1",
                params![audit_cutoff.as_millisecond()],
            )?,
            reservations: tx.execute(
                "DELETE FROM reservation WHERE day < ?1 AND state <> 'pending'",
                params![day_cutoff],
            )?,
            prompt_log: tx.execute(
                "DELETE FROM prompt_log WHERE time_ms < ?1",
                params![prompt_cutoff.as_millisecond()],
            )?,
            downloads: tx.execute("DELETE FROM download WHERE day < ?1", params![day_cutoff])?,
        };
        tx.commit()?;
        Ok(purged)
    }

    /// `PRAGMA integrity_check`: `Ok(())` or the problems SQLite lists.
    pub fn integrity_check(&self) -> Result<Result<(), Vec<String>>, LedgerError> {
        let conn = lock(&self.conn);
        let mut statement = conn.prepare("PRAGMA integrity_check")?;
        let lines: Vec<String> = statement
            .query_map([], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(if lines == ["ok"] { Ok(()) } else { Err(lines) })
    }

    fn writable(&self) -> Result<i64, LedgerError> {
        self.boot.ok_or(LedgerError::ReadOnly)
    }

    /// Whether this handle may append audit and download rows (the owner or an appender).
    fn appendable(&self) -> Result<(), LedgerError> {
        if self.appends {
            Ok(())
        } else {
            Err(LedgerError::ReadOnly)
        }
    }
}

/// [`Ledger::reserve`] inside the caller's (`BEGIN IMMEDIATE`) transaction `conn`.
fn reserve_in(
    conn: &Connection,
    boot: i64,
    day: Date,
    request: &ReserveRequest<'_>,
    caps: &Caps,
    now: Timestamp,
) -> Result<Reservation, LedgerError> {
    let day_key = day.to_string();
    let used = day_counted(conn, &day_key)?;
    budget::check_caps(&used, &request.estimate, caps)?;
    conn.prepare_cached(
        "INSERT INTO reservation (request_id, day, created_ms, tier, model, state, boot,
             reserved_input, reserved_output, reserved_cost)
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        request.request_id,
        day_key,
        now.as_millisecond(),
        request.tier,
        request.model,
        boot,
        to_sql_int(request.estimate.input_tokens),
        to_sql_int(request.estimate.output_tokens),
        to_sql_int(request.estimate.cost_micros),
    ])?;
    Ok(Reservation {
        id: conn.last_insert_rowid(),
        request_id: request.request_id.to_string(),
        day,
        reserved: request.estimate,
    })
}

fn settle_in(
    conn: &Connection,
    boot: i64,
    reservation: &Reservation,
    actual: &Amount,
    outcome: &Outcome,
    now: Timestamp,
) -> Result<Closed, LedgerError> {
    let changed = conn
        .prepare_cached(
            "UPDATE reservation SET state = 'settled', actual_input = ?1, actual_output = ?2,
                 actual_cost = ?3, outcome = ?4, closed_ms = ?5
             WHERE id = ?6 AND boot = ?7 AND state = 'pending'",
        )?
        .execute(params![
            to_sql_int(actual.input_tokens),
            to_sql_int(actual.output_tokens),
            to_sql_int(actual.cost_micros),
            outcome.to_string(),
            now.as_millisecond(),
            reservation.id,
            boot,
        ])?;
    closed_or_state(conn, reservation.id, changed, ReservationState::Settled)
}

fn release_in(
    conn: &Connection,
    boot: i64,
    reservation: &Reservation,
    now: Timestamp,
) -> Result<Closed, LedgerError> {
    let changed = conn
        .prepare_cached(
            "UPDATE reservation SET state = 'released', closed_ms = ?1
             WHERE id = ?2 AND boot = ?3 AND state = 'pending'",
        )?
        .execute(params![now.as_millisecond(), reservation.id, boot])?;
    closed_or_state(conn, reservation.id, changed, ReservationState::Released)
}

/// Per-state sums of one day, as the caps count them.
#[derive(Debug, Default)]
struct SplitTotals {
    settled: Totals,
    pending: Totals,
    in_doubt: Totals,
}

impl SplitTotals {
    fn counted(&self) -> Totals {
        self.settled.sum(&self.pending).sum(&self.in_doubt)
    }
}

/// What `day` counts against the caps (settled at actual, open at reserved amounts), from the
/// trigger-kept `day_total` row.
fn day_counted(conn: &Connection, day: &str) -> Result<Totals, LedgerError> {
    let mut statement =
        conn.prepare_cached("SELECT requests, input, output, cost FROM day_total WHERE day = ?1")?;
    let mut rows = statement.query(params![day])?;
    Ok(match rows.next()? {
        Some(row) => Totals {
            requests: from_sql_int(row.get(0)?),
            input_tokens: from_sql_int(row.get(1)?),
            output_tokens: from_sql_int(row.get(2)?),
            cost_micros: from_sql_int(row.get(3)?),
        },
        None => Totals::default(),
    })
}

fn counted_totals(conn: &Connection, day: &str) -> Result<SplitTotals, LedgerError> {
    let mut statement = conn.prepare_cached(
        "SELECT state, COUNT(*),
                SUM(CASE state WHEN 'settled' THEN actual_input ELSE reserved_input END),
                SUM(CASE state WHEN 'settled' THEN actual_output ELSE reserved_output END),
                SUM(CASE state WHEN 'settled' THEN actual_cost ELSE reserved_cost END)
         FROM reservation
         WHERE day = ?1 AND state IN ('settled', 'pending', 'in_doubt')
         GROUP BY state",
    )?;
    let mut rows = statement.query(params![day])?;
    let mut split = SplitTotals::default();
    while let Some(row) = rows.next()? {
        let state: String = row.get(0)?;
        let totals = Totals {
            requests: from_sql_int(row.get(1)?),
            input_tokens: from_sql_int(row.get::<_, Option<i64>>(2)?.unwrap_or(0)),
            output_tokens: from_sql_int(row.get::<_, Option<i64>>(3)?.unwrap_or(0)),
            cost_micros: from_sql_int(row.get::<_, Option<i64>>(4)?.unwrap_or(0)),
        };
        match ReservationState::parse(&state) {
            ReservationState::Settled => split.settled = totals,
            ReservationState::Pending => split.pending = totals,
            _ => split.in_doubt = totals,
        }
    }
    Ok(split)
}

/// `changed` rows were updated to `target`; otherwise explain the row's state.
fn closed_or_state(
    conn: &Connection,
    id: i64,
    changed: usize,
    target: ReservationState,
) -> Result<Closed, LedgerError> {
    if changed > 0 {
        return Ok(Closed::Now);
    }
    let state: Option<String> = conn
        .query_row(
            "SELECT state FROM reservation WHERE id = ?1",
            params![id],
            |row| row.get(0),
        )
        .optional()?;
    match state.map(|s| ReservationState::parse(&s)) {
        None => Err(LedgerError::UnknownReservation { id }),
        Some(state) if state == target => Ok(Closed::Already),
        Some(state) => Err(LedgerError::NotOpen { id, state }),
    }
}

fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock leaves no half-done write: an open transaction rolls back
    // when it is dropped. The connection is still good.
    conn.lock().unwrap_or_else(PoisonError::into_inner)
}

fn amount(input: i64, output: i64, cost: i64) -> Amount {
    Amount {
        input_tokens: from_sql_int(input),
        output_tokens: from_sql_int(output),
        cost_micros: from_sql_int(cost),
    }
}

/// The largest amount stored (2^42, about 4.4e12 tokens or $4.4M in micros): far above any cap,
/// and low enough that SQLite's `SUM` over a million rows cannot overflow i64. A larger
/// estimate is still checked against the caps at its full value before it is stored.
const MAX_STORED_AMOUNT: u64 = 1 << 42;

fn to_sql_int(value: u64) -> i64 {
    i64::try_from(value.min(MAX_STORED_AMOUNT)).unwrap_or(i64::MAX)
}

fn from_sql_int(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}
