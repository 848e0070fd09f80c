//! The writer thread: group commit keeps the caps exact and every result its own, a failed
//! transaction fails every write in it, and the WAL stays bounded under sustained writes.

use std::sync::Arc;

use jiff::Timestamp;

use super::*;
use crate::guard::budget::{BudgetError, Cap, Caps, Totals};
use crate::ledger::{AuditKind, LedgerOptions, ReservationState};

const NOW: &str = "2026-05-01T12:00:00Z";

fn now() -> Timestamp {
    NOW.parse().expect("timestamp")
}

fn reserve(id: &str, caps: Caps) -> Write {
    Write::Reserve {
        request_id: id.to_string(),
        tier: "cloud".into(),
        model: "gpt-test".into(),
        estimate: Amount {
            input_tokens: 10,
            output_tokens: 20,
            cost_micros: 30,
        },
        caps,
        now: now(),
    }
}

fn audit(id: &str) -> Write {
    Write::Audit(AuditRecord {
        sources: Vec::new(),
        time: now(),
        kind: AuditKind::Egress,
        request_id: id.to_string(),
        tier: Some("cloud".into()),
        model: Some("gpt-test".into()),
        reason: "default".into(),
        redactions: Default::default(),
        bytes_sent: 2,
        bytes_received: 0,
        tokens_sent: 1,
        tokens_received: 9,
        cost_micros: 0,
        outcome: Outcome::Ok,
        detail: None,
    })
}

fn settle(reservation: Reservation) -> Write {
    Write::Settle {
        reservation,
        actual: Amount {
            input_tokens: 7,
            output_tokens: 8,
            cost_micros: 9,
        },
        outcome: Outcome::Ok,
        now: now(),
    }
}

/// The jobs `batch` as the writer thread would commit them, in one transaction.
fn commit_one_batch(ledger: &Ledger, batch: &[&[Write]]) -> Vec<Results> {
    let state = &ledger.writer.as_ref().expect("owner").state;
    state.commit_batch(&mut lock(&state.conn), batch)
}

/// (reservations of today, audit rows) in the file.
fn row_counts(ledger: &Ledger) -> (usize, usize) {
    let rows = ledger.reservations(ledger.day_of(now())).expect("rows");
    let audit = ledger
        .audit_list(Timestamp::MIN, Timestamp::MAX, 10_000)
        .expect("audit");
    (rows.len(), audit.len())
}

fn open(dir: &std::path::Path) -> Arc<Ledger> {
    Arc::new(Ledger::open_in(dir, LedgerOptions::default(), now()).expect("open ledger"))
}

/// 200 concurrent callers against a 120-request cap, each reserving, then settling with its
/// audit row: exactly 120 get through, whatever the batches were, and every settled request
/// has its row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commits_keep_the_cap_exact_and_each_result_their_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = open(dir.path());
    let caps = Caps {
        max_requests: Some(120),
        ..Caps::default()
    };
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                let id = format!("r{i}");
                let mut reserved = ledger.commit(vec![reserve(&id, caps)]).await;
                match reserved.pop().expect("one result") {
                    Ok(Written::Reserved(reservation)) => {
                        assert_eq!(reservation.request_id, id);
                        let closed = ledger.commit(vec![settle(reservation), audit(&id)]).await;
                        assert!(
                            matches!(
                                closed.as_slice(),
                                [Ok(Written::Closed(Closed::Now)), Ok(Written::Audited(_))]
                            ),
                            "{closed:?}"
                        );
                        true
                    }
                    Err(LedgerError::Budget(BudgetError::Exceeded { cap, .. })) => {
                        assert_eq!(cap, Cap::RequestsPerDay);
                        false
                    }
                    other => panic!("unexpected: {other:?}"),
                }
            })
        })
        .collect();
    let mut through = 0;
    for task in tasks {
        through += usize::from(task.await.expect("task"));
    }
    assert_eq!(through, 120);
    let usage = ledger.usage_at(now(), &caps).expect("usage");
    assert_eq!(
        usage.settled,
        Totals {
            requests: 120,
            input_tokens: 120 * 7,
            output_tokens: 120 * 8,
            cost_micros: 120 * 9,
        }
    );
    assert_eq!(usage.pending, Totals::default());
    let rows = ledger.reservations(ledger.day_of(now())).expect("rows");
    assert!(rows.iter().all(|r| r.state == ReservationState::Settled));
    assert_eq!(row_counts(&ledger), (120, 120));
}

/// Each write is its own result: settling an unknown reservation fails, the audit row beside
/// it in the same job and the other job in the same batch still land.
#[test]
fn a_write_that_fails_fails_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = open(dir.path());
    let unknown = Reservation {
        id: 999,
        request_id: "ghost".into(),
        day: ledger.day_of(now()),
        reserved: Amount::default(),
    };
    let first = [settle(unknown), audit("ghost")];
    let second = [reserve("real", Caps::default())];
    let results = commit_one_batch(&ledger, &[&first, &second]);
    assert!(
        matches!(
            results[0].as_slice(),
            [
                Err(LedgerError::UnknownReservation { id: 999 }),
                Ok(Written::Audited(_))
            ]
        ),
        "{results:?}"
    );
    assert!(matches!(results[1].as_slice(), [Ok(Written::Reserved(_))]));
    assert_eq!(row_counts(&ledger), (1, 1));
}

/// When SQLite rolls the transaction back (here a trigger raising ROLLBACK, as a full disk or
/// an I/O error would), no write of the batch is reported as done, and none is in the file.
#[test]
fn a_failed_transaction_fails_every_write_in_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = open(dir.path());
    lock(&ledger.conn)
        .execute_batch(
            "CREATE TEMP TRIGGER poison BEFORE INSERT ON audit WHEN NEW.request_id = 'poison'
             BEGIN SELECT RAISE(ROLLBACK, 'poisoned'); END;",
        )
        .expect("trigger");
    let first = [reserve("a", Caps::default())];
    let second = [audit("poison")];
    let third = [reserve("b", Caps::default())];
    let results = commit_one_batch(&ledger, &[&first, &second, &third]);
    let flat: Vec<_> = results.iter().flatten().collect();
    assert_eq!(flat.len(), 3);
    assert!(
        flat.iter()
            .all(|r| matches!(r, Err(LedgerError::Commit(why)) if why.contains("poisoned"))),
        "{results:?}"
    );
    assert!(
        ledger
            .reservations(ledger.day_of(now()))
            .expect("rows")
            .is_empty()
    );
    // The connection is fine afterwards.
    let again = commit_one_batch(&ledger, &[&first]);
    assert!(matches!(again[0].as_slice(), [Ok(Written::Reserved(_))]));
}

/// Sustained writes with no pause for the checkpointer to catch up: about 20 times the WAL
/// limit goes through the WAL, and the file never grows far past the limit (it would grow
/// without bound if only the checkpointer's passive passes could restart it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_wal_stays_bounded_under_sustained_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = open(dir.path());
    let wal = dir.path().join(format!("{}-wal", crate::ledger::FILE_NAME));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                for i in 0..1000 {
                    let id = format!("w{w}-{i}");
                    let mut reserved = ledger.commit(vec![reserve(&id, Caps::default())]).await;
                    let Some(Ok(Written::Reserved(reservation))) = reserved.pop() else {
                        panic!("reserve failed");
                    };
                    let closed = ledger.commit(vec![settle(reservation), audit(&id)]).await;
                    assert!(closed.iter().all(Result::is_ok), "{closed:?}");
                }
            })
        })
        .collect();
    let watch = {
        let wal = wal.clone();
        // The watcher holds the last handle: the ledger closes when the writers are done.
        tokio::spawn(async move {
            let mut largest = 0;
            loop {
                largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                if Arc::strong_count(&ledger) == 1 {
                    return largest;
                }
            }
        })
    };
    for writer in writers {
        writer.await.expect("writer");
    }
    let largest = watch.await.expect("watch");
    let written = {
        // Everything the run wrote is in the database file: 8000 settled reservations.
        let ledger = open_reader(dir.path());
        ledger
            .reservations(ledger.day_of(now()))
            .expect("rows")
            .len()
    };
    assert_eq!(written, 8000);
    assert!(
        largest <= 2 * WAL_LIMIT_BYTES,
        "the WAL reached {largest} bytes (limit {WAL_LIMIT_BYTES})"
    );
}

fn open_reader(dir: &std::path::Path) -> Ledger {
    Ledger::open_reader(
        &dir.join(crate::ledger::FILE_NAME),
        LedgerOptions::default(),
    )
    .expect("reader")
}
