//! Opening the ledger's file: the connection and its pragmas (WAL, `synchronous = FULL`, busy
//! timeout), the owner lock (`<file>.lock`, one owning process at a time), and the start of a
//! boot, which puts every earlier boot's pending reservations in doubt.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};

use super::LedgerError;

/// The page size of a new ledger file (SQLite's default is 4096).
const PAGE_SIZE: i64 = 1024;

/// How long a statement waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) fn connect(
    path: &Path,
    flags: OpenFlags,
    full_sync: bool,
) -> Result<Connection, LedgerError> {
    let open_error = |source| LedgerError::Open {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open_with_flags(path, flags).map_err(open_error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
    if !flags.contains(OpenFlags::SQLITE_OPEN_READ_ONLY) {
        // Small pages for a new file (an existing one keeps its own): a request's writes
        // touch about a dozen pages, each a WAL frame, so the page size is what the WAL, its
        // fsync at every checkpoint and the page cache pay per request.
        conn.pragma_update(None, "page_size", PAGE_SIZE)
            .map_err(open_error)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(open_error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "ledger: WAL not available");
        }
    }
    // In WAL mode NORMAL keeps every commit across a crash of the process (the WAL is written
    // before the commit returns; only the fsync waits for a checkpoint); FULL adds a power cut.
    let sync = if full_sync { "FULL" } else { "NORMAL" };
    conn.pragma_update(None, "synchronous", sync)
        .map_err(open_error)?;
    Ok(conn)
}

pub(super) fn take_owner_lock(path: &Path) -> Result<File, LedgerError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| LedgerError::Io {
            path: lock_path.clone(),
            source,
        })?;
    // A lock is an open file description's, and a child this process forks holds a copy of it
    // until its exec closes it (the file is close-on-exec), as does an owner that is still
    // exiting: wait a bounded moment before calling the ledger someone else's.
    let deadline = std::time::Instant::now() + OWNER_LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LedgerError::Locked {
                    path: path.to_path_buf(),
                });
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(LedgerError::Io {
                    path: lock_path,
                    source,
                });
            }
        }
    }
}

/// How long opening the ledger waits for its owner lock before answering `Locked`.
const OWNER_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Records this process's boot and puts every earlier boot's pending reservation in doubt,
/// with an audit row for each (in the same transaction): the request may or may not have
/// reached its upstream, and it counts at its reserved amount for good.
pub(super) fn start_boot(conn: &mut Connection, now: Timestamp) -> Result<i64, LedgerError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO boot (started_ms, pid) VALUES (?1, ?2)",
        params![now.as_millisecond(), std::process::id()],
    )?;
    let boot = tx.last_insert_rowid();
    let lost: Vec<(String, String, String, i64, i64, i64, i64)> = tx
        .prepare(
            "SELECT request_id, tier, model, reserved_input, reserved_output, reserved_cost, boot
             FROM reservation WHERE state = 'pending' AND boot <> ?1 ORDER BY id",
        )?
        .query_map(params![boot], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    for (request_id, tier, model, input, output, cost, old_boot) in lost {
        super::audit::insert_audit(
            &tx,
            &super::AuditRecord {
                sources: Vec::new(),
                time: now,
                kind: super::AuditKind::Egress,
                request_id,
                tier: Some(tier),
                model: Some(model),
                reason: "restart".to_string(),
                redactions: std::collections::BTreeMap::new(),
                bytes_sent: 0,
                bytes_received: 0,
                tokens_sent: 0,
                tokens_received: 0,
                cost_micros: super::from_sql_int(cost),
                outcome: super::Outcome::Error("in_doubt".to_string()),
                detail: Some(format!(
                    "process of boot {old_boot} ended before settling; counted at the reserved \
                     {input} input and {output} output tokens"
                )),
            },
        )?;
    }
    let in_doubt = tx.execute(
        "UPDATE reservation SET state = 'in_doubt' WHERE state = 'pending' AND boot <> ?1",
        params![boot],
    )?;
    tx.commit()?;
    if in_doubt > 0 {
        tracing::warn!(
            in_doubt,
            "ledger: reservations of an earlier process were never settled; counted as spent"
        );
    }
    Ok(boot)
}

/// How often the owner's WAL is checkpointed into the database file while it is being
/// written: often, so that each pass (and its fsync of the WAL) is small and the writer's own
/// catch-up (`writer.rs`) rarely has anything left to do.
const CHECKPOINT_BUSY: Duration = Duration::from_millis(50);

/// ... and while nothing was written since the last pass (an idle device wakes once a second).
const CHECKPOINT_IDLE: Duration = Duration::from_secs(1);

/// A thread with its own connection that checkpoints the WAL (`PASSIVE`: it never blocks the
/// writer) every [`CHECKPOINT_BUSY`] while there are writes, every [`CHECKPOINT_IDLE`] while
/// there are none, until the returned sender is dropped; then one last time.
pub(super) fn spawn_checkpointer(path: &Path) -> Result<std::sync::mpsc::Sender<()>, LedgerError> {
    let conn = connect(path, OpenFlags::default(), false)?;
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("ledger-checkpoint".into())
        .spawn(move || {
            // (busy, frames in the WAL, frames checkpointed) of the last pass.
            let mut last_pass = None;
            let mut wait = CHECKPOINT_IDLE;
            loop {
                let last = !matches!(
                    stopped.recv_timeout(wait),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                );
                let pass = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                });
                match pass {
                    Ok(pass) => {
                        wait = if last_pass == Some(pass) {
                            CHECKPOINT_IDLE
                        } else {
                            CHECKPOINT_BUSY
                        };
                        last_pass = Some(pass);
                    }
                    Err(error) => tracing::warn!(%error, "ledger: checkpoint failed"),
                }
                if last {
                    break;
                }
            }
        })
        .map_err(|source| LedgerError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(stop)
}
