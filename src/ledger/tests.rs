//! Ledger tests: caps, days, settle/release, restarts, retention, export, concurrency, and the
//! kill -9 test that re-executes this test binary as a worker and kills it at random moments.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use super::*;
use crate::guard::budget::{Cap, parse_timezone};

const NOW: &str = "2026-05-01T12:00:00Z";

fn ts(text: &str) -> Timestamp {
    text.parse().expect("timestamp")
}

fn amount(input_tokens: u64, output_tokens: u64, cost_micros: u64) -> Amount {
    Amount {
        input_tokens,
        output_tokens,
        cost_micros,
    }
}

fn request(request_id: &str, estimate: Amount) -> ReserveRequest<'_> {
    ReserveRequest {
        request_id,
        tier: "cloud",
        model: "gpt-test",
        estimate,
    }
}

fn open(dir: &Path, options: LedgerOptions, now: &str) -> Ledger {
    Ledger::open_in(dir, options, ts(now)).expect("open ledger")
}

fn exceeded_cap(result: Result<Reservation, LedgerError>) -> Option<Cap> {
    match result {
        Ok(_) => None,
        Err(LedgerError::Budget(BudgetError::Exceeded { cap, .. })) => Some(cap),
        Err(other) => panic!("unexpected error: {other}"),
    }
}

#[test]
fn each_cap_refuses_at_its_limit() {
    let cases = [
        (
            Caps {
                max_requests: Some(2),
                ..Caps::default()
            },
            amount(1, 1, 1),
            2,
            Cap::RequestsPerDay,
        ),
        (
            Caps {
                max_input_tokens: Some(250),
                ..Caps::default()
            },
            amount(100, 1, 1),
            2,
            Cap::InputTokensPerDay,
        ),
        (
            Caps {
                max_output_tokens: Some(99),
                ..Caps::default()
            },
            amount(1, 33, 1),
            3,
            Cap::OutputTokensPerDay,
        ),
        (
            Caps {
                max_cost_micros: Some(1_000),
                ..Caps::default()
            },
            amount(1, 1, 500),
            2,
            Cap::CostPerDay,
        ),
    ];
    for (caps, estimate, fit, cap) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = open(dir.path(), LedgerOptions::default(), NOW);
        for i in 0..fit {
            let id = format!("r{i}");
            ledger
                .reserve(&request(&id, estimate), &caps, ts(NOW))
                .unwrap_or_else(|e| panic!("{cap:?} #{i}: {e}"));
        }
        let refused = ledger.reserve(&request("over", estimate), &caps, ts(NOW));
        assert_eq!(exceeded_cap(refused), Some(cap));
        let usage = ledger.usage_at(ts(NOW), &caps).expect("usage");
        assert_eq!(
            usage.pending.requests, fit,
            "{cap:?}: the refused one left no row"
        );
    }
    // The per-request cap needs no day at all.
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = open(dir.path(), LedgerOptions::default(), NOW);
    let caps = Caps {
        max_tokens_per_request: Some(100),
        ..Caps::default()
    };
    let refused = ledger.reserve(&request("big", amount(1, 101, 0)), &caps, ts(NOW));
    assert_eq!(exceeded_cap(refused), Some(Cap::TokensPerRequest));
}

#[test]
fn settled_actual_amounts_replace_reserved_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = open(dir.path(), LedgerOptions::default(), NOW);
    let caps = Caps {
        max_cost_micros: Some(1_000),
        ..Caps::default()
    };
    let first = ledger
        .reserve(&request("a", amount(10, 10, 800)), &caps, ts(NOW))
        .expect("reserve");
    // 800 reserved: another 800 does not fit ...
    let refused = ledger.reserve(&request("b", amount(10, 10, 800)), &caps, ts(NOW));
    assert_eq!(exceeded_cap(refused), Some(Cap::CostPerDay));
    // ... until the first settles at its actual 100.
    ledger
        .settle(&first, &amount(5, 5, 100), &Outcome::Ok, ts(NOW))
        .expect("settle");
    ledger
        .reserve(&request("b", amount(10, 10, 800)), &caps, ts(NOW))
        .expect("fits now");
    let usage = ledger.usage_at(ts(NOW), &caps).expect("usage");
    assert_eq!(usage.settled.cost_micros, 100);
    assert_eq!(usage.pending.cost_micros, 800);
    assert_eq!(usage.counted.cost_micros, 900);
    assert_eq!(usage.remaining.cost_micros, Some(100));
    assert_eq!(usage.remaining.requests, None);
}

#[test]
fn day_boundary_in_berlin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = LedgerOptions {
        timezone: parse_timezone("Europe/Berlin").expect("zoneinfo"),
        ..LedgerOptions::default()
    };
    let ledger = open(dir.path(), options, "2026-03-10T22:00:00Z");
    let caps = Caps {
        max_requests: Some(1),
        ..Caps::default()
    };
    let estimate = amount(1, 1, 1);
    // 23:59:59 in Berlin (UTC+1), then the Berlin midnight (23:00 UTC).
    let late = ledger
        .reserve(
            &request("late", estimate),
            &caps,
            ts("2026-03-10T22:59:59Z"),
        )
        .expect("first of March 10");
    assert_eq!(late.day.to_string(), "2026-03-10");
    let refused = ledger.reserve(&request("x", estimate), &caps, ts("2026-03-10T22:59:59Z"));
    assert_eq!(exceeded_cap(refused), Some(Cap::RequestsPerDay));
    let next = ledger
        .reserve(
            &request("next", estimate),
            &caps,
            ts("2026-03-10T23:00:00Z"),
        )
        .expect("first of March 11, though UTC still says March 10");
    assert_eq!(next.day.to_string(), "2026-03-11");
    // Settling after midnight keeps the spend on the day it was reserved.
    ledger
        .settle(&late, &estimate, &Outcome::Ok, ts("2026-03-11T01:00:00Z"))
        .expect("settle");
    let march_10 = ledger.usage(late.day, &caps).expect("usage");
    assert_eq!(march_10.settled.requests, 1);
    assert_eq!(march_10.pending.requests, 0);
}

#[test]
fn settle_is_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = open(dir.path(), LedgerOptions::default(), NOW);
    let caps = Caps::default();
    let reservation = ledger
        .reserve(&request("a", amount(10, 10, 10)), &caps, ts(NOW))
        .expect("reserve");
    let actual = amount(7, 8, 9);
    let first = ledger.settle(&reservation, &actual, &Outcome::Ok, ts(NOW));
    let second = ledger.settle(&reservation, &amount(70, 80, 90), &Outcome::Ok, ts(NOW));
    assert_eq!(
        (first.expect("1"), second.expect("2")),
        (Closed::Now, Closed::Already)
    );
    let usage = ledger.usage_at(ts(NOW), &caps).expect("usage");
    assert_eq!(
        usage.settled,
        Totals {
            requests: 1,
            input_tokens: 7,
            output_tokens: 8,
            cost_micros: 9
        }
    );
    let rows = ledger.reservations(reservation.day).expect("rows");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].actual, Some(actual));
    assert_eq!(rows[0].outcome.as_deref(), Some("ok"));
    // A settled reservation cannot be released.
    assert!(matches!(
        ledger.release(&reservation, ts(NOW)),
        Err(LedgerError::NotOpen {
            state: ReservationState::Settled,
            ..
        })
    ));
}

#[test]
fn release_counts_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = open(dir.path(), LedgerOptions::default(), NOW);
    let caps = Caps {
        max_requests: Some(1),
        ..Caps::default()
    };
    let reservation = ledger
        .reserve(&request("a", amount(10, 10, 10)), &caps, ts(NOW))
        .expect("reserve");
    assert_eq!(
        ledger.release(&reservation, ts(NOW)).expect("release"),
        Closed::Now
    );
    assert_eq!(
        ledger.release(&reservation, ts(NOW)).expect("again"),
        Closed::Already
    );
    assert!(matches!(
        ledger.settle(&reservation, &amount(1, 1, 1), &Outcome::Ok, ts(NOW)),
        Err(LedgerError::NotOpen {
            state: ReservationState::Released,
            ..
        })
    ));
    let usage = ledger.usage_at(ts(NOW), &caps).expect("usage");
    assert_eq!(usage.counted, Totals::default());
    ledger
        .reserve(&request("b", amount(10, 10, 10)), &caps, ts(NOW))
        .expect("the released one left room");
}

#[test]
fn restart_puts_pending_in_doubt_forever() {
    let dir = tempfile::tempdir().expect("tempdir");
    let caps = Caps {
        max_cost_micros: Some(1_000),
        ..Caps::default()
    };
    let old = {
        let ledger = open(dir.path(), LedgerOptions::default(), NOW);
        let settled = ledger
            .reserve(&request("settled", amount(1, 1, 100)), &caps, ts(NOW))
            .expect("reserve");
        ledger
            .settle(&settled, &amount(1, 1, 50), &Outcome::Ok, ts(NOW))
            .expect("settle");
        ledger
            .reserve(&request("lost", amount(10, 20, 600)), &caps, ts(NOW))
            .expect("reserve")
    };
    let ledger = open(dir.path(), LedgerOptions::default(), NOW);
    let usage = ledger.usage_at(ts(NOW), &caps).expect("usage");
    assert_eq!(usage.pending, Totals::default());
    assert_eq!(
        usage.in_doubt,
        Totals {
            requests: 1,
            input_tokens: 10,
            output_tokens: 20,
            cost_micros: 600
        }
    );
    assert_eq!(usage.counted.cost_micros, 650);
    // One audit row says so: the lost request, its tier and model, at its reserved cost.
    let rows = ledger
        .audit_list(Timestamp::MIN, Timestamp::MAX, 100)
        .expect("audit");
    let restart: Vec<_> = rows
        .iter()
        .filter(|r| r.record.reason == "restart")
        .collect();
    assert_eq!(restart.len(), 1, "{rows:?}");
    let row = &restart[0].record;
    assert_eq!(
        (
            row.request_id.as_str(),
            row.tier.as_deref(),
            row.model.as_deref()
        ),
        ("lost", Some("cloud"), Some("gpt-test"))
    );
    assert_eq!(row.outcome, Outcome::Error("in_doubt".to_string()));
    assert_eq!(
        (row.kind, row.cost_micros, row.bytes_sent),
        (AuditKind::Egress, 600, 0)
    );
    let detail = row.detail.as_deref().unwrap_or_default();
    assert!(detail.contains("10 input and 20 output"), "{detail}");
    // Never settled later, not even by a process that kept the old handle's id.
    assert!(matches!(
        ledger.settle(&old, &amount(0, 0, 0), &Outcome::Ok, ts(NOW)),
        Err(LedgerError::NotOpen {
            state: ReservationState::InDoubt,
            ..
        })
    ));
    let refused = ledger.reserve(&request("more", amount(1, 1, 351)), &caps, ts(NOW));
    assert_eq!(exceeded_cap(refused), Some(Cap::CostPerDay));
    // A third open leaves it as it is.
    drop(ledger);
    let ledger = open(dir.path(), LedgerOptions::default(), NOW);
    let usage = ledger.usage_at(ts(NOW), &caps).expect("usage");
    assert_eq!(usage.in_doubt.requests, 1);
    // ... and writes no second audit row for it.
    let rows = ledger
        .audit_list(Timestamp::MIN, Timestamp::MAX, 100)
        .expect("audit");
    assert_eq!(
        rows.iter().filter(|r| r.record.reason == "restart").count(),
        1
    );
}

#[test]
fn one_owner_at_a_time_and_readers_write_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(FILE_NAME);
    assert!(matches!(
        Ledger::open_reader(&path, LedgerOptions::default()),
        Err(LedgerError::Open { .. } | LedgerError::NoSchema)
    ));
    let owner = open(dir.path(), LedgerOptions::default(), NOW);
    let pending = owner
        .reserve(&request("a", amount(1, 1, 1)), &Caps::default(), ts(NOW))
        .expect("reserve");
    assert!(matches!(
        Ledger::open(&path, LedgerOptions::default(), ts(NOW)),
        Err(LedgerError::Locked { .. })
    ));
    let reader = Ledger::open_reader(&path, LedgerOptions::default()).expect("reader");
    let usage = reader.usage_at(ts(NOW), &Caps::default()).expect("usage");
    assert_eq!(
        usage.pending.requests, 1,
        "the owner's pending row is not put in doubt"
    );
    assert!(matches!(
        reader.reserve(&request("b", amount(1, 1, 1)), &Caps::default(), ts(NOW)),
        Err(LedgerError::ReadOnly)
    ));
    assert_eq!(
        owner
            .settle(&pending, &amount(1, 1, 1), &Outcome::Ok, ts(NOW))
            .expect("settle"),
        Closed::Now
    );
    drop(reader);
    drop(owner);
    // With no owner running, a reader still opens the file.
    let reader = Ledger::open_reader(&path, LedgerOptions::default()).expect("reader");
    let usage = reader.usage_at(ts(NOW), &Caps::default()).expect("usage");
    assert_eq!(usage.settled.requests, 1);
}

#[test]
fn absurd_amounts_cannot_overflow_the_sums() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = open(dir.path(), LedgerOptions::default(), NOW);
    for id in ["a", "b", "c"] {
        ledger
            .reserve(
                &request(id, amount(u64::MAX, u64::MAX, u64::MAX)),
                &Caps::default(),
                ts(NOW),
            )
            .expect("no caps: stored, clamped");
    }
    let caps = Caps {
        max_cost_micros: Some(10),
        ..Caps::default()
    };
    let refused = ledger.reserve(&request("d", amount(0, 0, 0)), &caps, ts(NOW));
    assert_eq!(exceeded_cap(refused), Some(Cap::CostPerDay));
}

#[test]
fn schema_is_versioned_and_reopens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(FILE_NAME);
    {
        let ledger = open(dir.path(), LedgerOptions::default(), NOW);
        ledger
            .reserve(&request("a", amount(1, 1, 1)), &Caps::default(), ts(NOW))
            .expect("reserve");
    }
    {
        let conn = Connection::open(&path).expect("raw");
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .expect("version");
        assert_eq!(version, SCHEMA_VERSION);
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .expect("mode");
        assert_eq!(mode, "wal");
    }
    let ledger = open(dir.path(), LedgerOptions::default(), NOW);
    let usage = ledger.usage_at(ts(NOW), &Caps::default()).expect("usage");
    assert_eq!(usage.in_doubt.requests, 1);
    assert_eq!(ledger.integrity_check().expect("check"), Ok(()));
    drop(ledger);
    Connection::open(&path)
        .expect("raw")
        .pragma_update(None, "user_version", 99)
        .expect("bump");
    assert!(matches!(
        Ledger::open(&path, LedgerOptions::default(), ts(NOW)),
        Err(LedgerError::SchemaTooNew { found: 99, .. })
    ));
}

fn audit_record(time: &str, request_id: &str, outcome: Outcome) -> AuditRecord {
    AuditRecord {
        sources: Vec::new(),
        time: ts(time),
        kind: AuditKind::Egress,
        request_id: request_id.to_string(),
        tier: Some("cloud".into()),
        model: Some("gpt-test".into()),
        reason: "low_confidence".into(),
        redactions: BTreeMap::from([("email".to_string(), 2), ("api_key".to_string(), 1)]),
        bytes_sent: 1234,
        bytes_received: 0,
        tokens_sent: 300,
        tokens_received: 40,
        cost_micros: 77,
        outcome,
        detail: None,
    }
}

#[test]
fn audit_list_and_jsonl_export_in_time_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = open(dir.path(), LedgerOptions::default(), NOW);
    // Inserted out of order; listed by time.
    for (time, id, outcome) in [
        (
            "2026-05-01T10:00:02Z",
            "c",
            Outcome::Blocked("network".into()),
        ),
        ("2026-05-01T10:00:00Z", "a", Outcome::Ok),
        (
            "2026-05-01T10:00:01Z",
            "b",
            Outcome::Error("timeout".into()),
        ),
        ("2026-05-01T11:00:00Z", "late", Outcome::Ok),
    ] {
        ledger
            .record_audit(&audit_record(time, id, outcome))
            .expect("record");
    }
    let mut action = audit_record("2026-05-01T10:00:01Z", "act", Outcome::Ok);
    action.kind = AuditKind::Action;
    action.tier = None;
    action.detail = Some("http_200".into());
    ledger.record_audit(&action).expect("record");

    let from = ts("2026-05-01T10:00:00Z");
    let to = ts("2026-05-01T11:00:00Z");
    let listed = ledger.audit_list(from, to, 100).expect("list");
    let ids: Vec<&str> = listed
        .iter()
        .map(|e| e.record.request_id.as_str())
        .collect();
    assert_eq!(ids, ["a", "b", "act", "c"]);
    assert_eq!(listed[3].record.outcome, Outcome::Blocked("network".into()));
    assert_eq!(listed[2].record, action);
    assert_eq!(ledger.audit_list(from, to, 2).expect("list").len(), 2);

    let mut out = Vec::new();
    assert_eq!(ledger.write_jsonl(&mut out, from, to).expect("export"), 4);
    let text = String::from_utf8(out).expect("utf8");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["request_id"], "a");
    assert_eq!(lines[0]["time"], "2026-05-01T10:00:00Z");
    assert_eq!(lines[0]["kind"], "egress");
    assert_eq!(lines[0]["redactions"]["email"], 2);
    assert_eq!(lines[1]["outcome"], "error:timeout");
    assert_eq!(lines[2]["kind"], "action");
    assert_eq!(lines[3]["outcome"], "blocked:network");
}

#[test]
fn jsonl_export_pages_through_many_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = open(dir.path(), LedgerOptions::default(), NOW);
    // More rows than one page, many sharing a millisecond.
    for i in 0..(audit::EXPORT_PAGE * 2 + 7) {
        let time = format!("2026-05-01T10:00:0{}Z", i % 3);
        ledger
            .record_audit(&audit_record(&time, &format!("r{i}"), Outcome::Ok))
            .expect("record");
    }
    let mut out = Vec::new();
    let written = ledger
        .write_jsonl(
            &mut out,
            ts("2026-05-01T00:00:00Z"),
            ts("2026-05-02T00:00:00Z"),
        )
        .expect("export");
    assert_eq!(written, audit::EXPORT_PAGE * 2 + 7);
    let mut seen: Vec<String> = String::from_utf8(out)
        .expect("utf8")
        .lines()
        .map(|l| {
            let value: serde_json::Value = serde_json::from_str(l).expect("json");
            value["request_id"].as_str().expect("id").to_string()
        })
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), written);
}

#[test]
fn retention_purges_old_rows_but_keeps_counted_days() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = LedgerOptions {
        retention_days: 30,
        prompt_log_retention_days: Some(2),
        ..LedgerOptions::default()
    };
    let caps = Caps::default();
    let old_day = "2026-03-01T12:00:00Z";
    {
        let ledger = open(dir.path(), options.clone(), old_day);
        let settled = ledger
            .reserve(&request("settled", amount(1, 1, 1)), &caps, ts(old_day))
            .expect("reserve");
        ledger
            .settle(&settled, &amount(1, 1, 1), &Outcome::Ok, ts(old_day))
            .expect("settle");
        ledger
            .reserve(&request("lost", amount(1, 1, 1)), &caps, ts(old_day))
            .expect("reserve");
        ledger
            .record_audit(&audit_record(old_day, "old", Outcome::Ok))
            .expect("audit");
        ledger
            .log_prompt("old", PromptDirection::Prompt, "[EMAIL] hi", ts(old_day))
            .expect("log");
    }
    // 30 days later the old day is still inside the window: nothing goes but the prompt log.
    // The reopen found "lost" pending and audited it then (a second row, dated today).
    let ledger = open(dir.path(), options.clone(), "2026-03-31T12:00:00Z");
    let day = ledger.day_of(ts(old_day));
    assert_eq!(ledger.reservations(day).expect("rows").len(), 2);
    let audited = ledger
        .audit_list(Timestamp::MIN, Timestamp::MAX, 10)
        .expect("list");
    let reasons: Vec<_> = audited
        .iter()
        .map(|e| e.record.request_id.as_str())
        .collect();
    assert_eq!(reasons, ["old", "lost"]);
    assert!(
        ledger
            .prompt_log_list(Timestamp::MIN, Timestamp::MAX, 10)
            .expect("list")
            .is_empty()
    );
    let recent = ledger
        .reserve(
            &request("recent", amount(1, 1, 1)),
            &caps,
            ts("2026-03-31T12:00:00Z"),
        )
        .expect("reserve");
    // A periodic purge once the old day has left the window.
    let purged = ledger.purge(ts("2026-04-01T12:00:01Z")).expect("purge");
    assert_eq!(
        purged,
        Purged {
            audit: 1,
            reservations: 2,
            prompt_log: 0,
            downloads: 0
        }
    );
    assert!(ledger.reservations(day).expect("rows").is_empty());
    assert_eq!(ledger.reservations(recent.day).expect("rows").len(), 1);
}

#[test]
fn prompt_log_is_off_unless_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let ledger = open(dir.path(), LedgerOptions::default(), NOW);
        let kept = ledger
            .log_prompt("a", PromptDirection::Prompt, "hello [EMAIL]", ts(NOW))
            .expect("log");
        assert!(!kept);
    }
    let options = LedgerOptions {
        prompt_log_retention_days: Some(7),
        ..LedgerOptions::default()
    };
    let ledger = open(dir.path(), options, NOW);
    for (direction, text) in [
        (PromptDirection::Prompt, "hello [EMAIL]"),
        (PromptDirection::Answer, "hi"),
    ] {
        assert!(
            ledger
                .log_prompt("a", direction, text, ts(NOW))
                .expect("log")
        );
    }
    let rows = ledger
        .prompt_log_list(Timestamp::MIN, Timestamp::MAX, 10)
        .expect("list");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].redacted_text, "hello [EMAIL]");
    assert_eq!(rows[1].direction, PromptDirection::Answer);
}

#[test]
fn prompt_log_later_goes_through_the_writer_thread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(crate::ledger::FILE_NAME);
    {
        let ledger = open(dir.path(), LedgerOptions::default(), NOW);
        ledger.log_prompt_later("off", PromptDirection::Prompt, "x", ts(NOW));
    }
    let options = LedgerOptions {
        prompt_log_retention_days: Some(7),
        ..LedgerOptions::default()
    };
    {
        let ledger = open(dir.path(), options.clone(), NOW);
        ledger.log_prompt_later("a", PromptDirection::Prompt, "hello [EMAIL]", ts(NOW));
        ledger.log_prompt_later("b", PromptDirection::Answer, "hi", ts(NOW));
        // Dropping the ledger lets the writer finish its queue.
    }
    assert!(path.exists());
    let ledger = open(dir.path(), options, NOW);
    let rows = ledger
        .prompt_log_list(Timestamp::MIN, Timestamp::MAX, 10)
        .expect("list");
    let ids: Vec<&str> = rows.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(
        ids,
        ["a", "b"],
        "queued rows are written in order; nothing while off"
    );
    assert_eq!(rows[0].redacted_text, "hello [EMAIL]");
}

#[test]
fn fifty_threads_never_overrun_a_cost_cap() {
    const THREADS: usize = 50;
    const COST: u64 = 300;
    const CAP: u64 = 10_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = Arc::new(open(dir.path(), LedgerOptions::default(), NOW));
    let caps = Caps {
        max_cost_micros: Some(CAP),
        ..Caps::default()
    };
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let ledger = Arc::clone(&ledger);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let id = format!("t{i}");
                exceeded_cap(ledger.reserve(&request(&id, amount(1, 1, COST)), &caps, ts(NOW)))
            })
        })
        .collect();
    let results: Vec<Option<Cap>> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    let accepted = results.iter().filter(|r| r.is_none()).count() as u64;
    assert_eq!(accepted, CAP / COST);
    assert!(results.iter().flatten().all(|cap| *cap == Cap::CostPerDay));
    let usage = ledger.usage_at(ts(NOW), &caps).expect("usage");
    assert_eq!(usage.pending.cost_micros, accepted * COST);
    assert!(usage.counted.cost_micros <= CAP);
}

/// Set (to `<db path>|<round>`) in the child process of the crash test: the test then acts as
/// the worker that gets killed.
const CRASH_WORKER_ENV: &str = "EDGELLM_LEDGER_CRASH_WORKER";
/// The crash test's function name; its full name is derived from `module_path!()`, so the test
/// finds itself wherever this module is mounted (`ledger::tests::...` in both crates).
const CRASH_TEST: &str = "kill_9_never_loses_a_settled_record";
const CRASH_ROUNDS: usize = 20;

/// The libtest name of a test in this module: `module_path!()` without the crate name.
fn test_path(name: &str) -> String {
    let module = module_path!();
    let module = module.split_once("::").map_or(module, |(_, rest)| rest);
    format!("{module}::{name}")
}

fn crash_estimate(i: u64) -> Amount {
    amount(100 + i, 50, 1_000 + i)
}

fn crash_actual(i: u64) -> Amount {
    amount(90 + i, 40, 500 + i)
}

/// The worker: reserve -> settle in a loop, reporting each step after it returned.
fn crash_worker(spec: &str) {
    let (path, round) = spec.rsplit_once('|').expect("worker spec");
    let ledger = Ledger::open(Path::new(path), LedgerOptions::default(), ts(NOW)).expect("open");
    let started = Instant::now();
    // Bounded, in case the parent died before killing us.
    for i in 0..1_000_000u64 {
        if started.elapsed() > Duration::from_secs(30) {
            break;
        }
        let id = format!("r{round}-{i}");
        let reservation = ledger
            .reserve(&request(&id, crash_estimate(i)), &Caps::default(), ts(NOW))
            .expect("reserve");
        println!("reserved {id}");
        let actual = crash_actual(i);
        ledger
            .settle(&reservation, &actual, &Outcome::Ok, ts(NOW))
            .expect("settle");
        println!("settled {id} {}", actual.cost_micros);
    }
}

#[test]
fn kill_9_never_loses_a_settled_record() {
    if let Ok(spec) = std::env::var(CRASH_WORKER_ENV) {
        crash_worker(&spec);
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(FILE_NAME);
    let exe = std::env::current_exe().expect("current exe");
    let mut reserved: Vec<String> = Vec::new();
    let mut settled: HashMap<String, u64> = HashMap::new();
    for round in 0..CRASH_ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                &test_path(CRASH_TEST),
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_WORKER_ENV, format!("{}|{round}", path.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn worker");
        let stdout = child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<String>>()
        });
        std::thread::sleep(Duration::from_millis(rand::random_range(5..=200)));
        // `Child::kill` is SIGKILL on Unix: no destructor, no flush, no rollback runs.
        child.kill().expect("kill");
        child.wait().expect("wait");
        for line in reader.join().expect("reader") {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["reserved", id] => reserved.push(id.to_string()),
                ["settled", id, cost] => {
                    let cost = cost.parse().expect("cost");
                    assert!(settled.insert(id.to_string(), cost).is_none(), "{id} twice");
                }
                _ => {}
            }
        }
    }
    assert!(
        !settled.is_empty(),
        "no worker got as far as one settlement"
    );

    let ledger = Ledger::open(&path, LedgerOptions::default(), ts(NOW)).expect("reopen");
    assert_eq!(ledger.integrity_check().expect("check"), Ok(()));
    let day = ledger.day_of(ts(NOW));
    let rows = ledger.reservations(day).expect("rows");
    let mut by_id: HashMap<&str, &ReservationRow> = HashMap::new();
    for row in &rows {
        assert!(
            by_id.insert(row.request_id.as_str(), row).is_none(),
            "duplicate row for {}",
            row.request_id
        );
    }
    let index = |id: &str| -> u64 {
        id.rsplit_once('-')
            .and_then(|(_, i)| i.parse().ok())
            .expect("id index")
    };
    for (id, cost) in &settled {
        let row = by_id
            .get(id.as_str())
            .unwrap_or_else(|| panic!("{id} lost"));
        assert_eq!(row.state, ReservationState::Settled, "{id}");
        assert_eq!(row.actual, Some(crash_actual(index(id))), "{id}");
        assert_eq!(row.actual.map(|a| a.cost_micros), Some(*cost), "{id}");
    }
    let mut expected_in_doubt = Totals::default();
    let mut expected_settled = Totals::default();
    for row in &rows {
        let i = index(&row.request_id);
        assert_eq!(row.reserved, crash_estimate(i), "{}", row.request_id);
        match row.state {
            ReservationState::Settled => {
                assert_eq!(row.actual, Some(crash_actual(i)));
                expected_settled.add(&crash_actual(i));
            }
            ReservationState::InDoubt => {
                assert!(!settled.contains_key(&row.request_id));
                expected_in_doubt.add(&row.reserved);
            }
            state => panic!("{} left {state:?}", row.request_id),
        }
    }
    for id in &reserved {
        assert!(
            by_id.contains_key(id.as_str()),
            "reported reserved {id} lost"
        );
    }
    let usage = ledger.usage(day, &Caps::default()).expect("usage");
    assert_eq!(usage.settled, expected_settled);
    assert_eq!(usage.in_doubt, expected_in_doubt);
    assert_eq!(usage.pending, Totals::default());
    eprintln!(
        "crash test: {} rounds, {} settled reported, {} rows, {} in doubt",
        CRASH_ROUNDS,
        settled.len(),
        rows.len(),
        expected_in_doubt.requests
    );
}

#[test]
fn the_day_total_kept_by_triggers_equals_the_sum_of_the_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let caps = Caps::default();
    let check = |ledger: &Ledger| {
        let day = ledger.day_of(ts(NOW)).to_string();
        let conn = lock(&ledger.conn);
        let kept = day_counted(&conn, &day).expect("day total");
        let summed = counted_totals(&conn, &day).expect("sum").counted();
        assert_eq!(kept, summed);
        kept
    };
    {
        let ledger = open(dir.path(), LedgerOptions::default(), NOW);
        for i in 0..12u64 {
            let id = format!("r{i}");
            let reservation = ledger
                .reserve(&request(&id, amount(10 + i, 20, 30 + i)), &caps, ts(NOW))
                .expect("reserve");
            match i % 3 {
                0 => {
                    ledger
                        .settle(&reservation, &amount(1, 2, 3), &Outcome::Ok, ts(NOW))
                        .expect("settle");
                }
                1 => {
                    ledger.release(&reservation, ts(NOW)).expect("release");
                }
                _ => {} // left pending: in doubt after the restart
            }
            check(&ledger);
        }
    }
    let reopened = open(dir.path(), LedgerOptions::default(), NOW);
    let kept = check(&reopened);
    // 4 settled at (1, 2, 3), 4 in doubt at their reserved amounts, 4 released (nothing).
    assert_eq!(kept.requests, 8);
    assert_eq!(kept.output_tokens, 4 * 2 + 4 * 20);
}

#[test]
fn an_encrypted_prompt_log_holds_only_ciphertext_that_only_its_key_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = std::sync::Arc::new(crate::vault::LocalKey::from_bytes([7; 32]));
    let options = LedgerOptions {
        prompt_log_retention_days: Some(7),
        prompt_key: Some(key.clone()),
        ..LedgerOptions::default()
    };
    {
        let ledger = open(dir.path(), options.clone(), NOW);
        assert!(
            ledger
                .log_prompt(
                    "a",
                    PromptDirection::Prompt,
                    "pump 7 at [ADDRESS_1]",
                    ts(NOW)
                )
                .expect("log")
        );
        ledger.log_prompt_later("b", PromptDirection::Answer, "seal replaced", ts(NOW));
    }
    // The file: sealed text only.
    let conn = rusqlite::Connection::open(dir.path().join(crate::ledger::FILE_NAME)).expect("db");
    let stored: Vec<String> = conn
        .prepare("SELECT redacted_text FROM prompt_log ORDER BY id")
        .expect("prepare")
        .query_map([], |row| row.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(stored.len(), 2);
    for text in &stored {
        assert!(crate::vault::LocalKey::is_sealed(text), "{text}");
        assert!(
            !text.contains("pump") && !text.contains("seal replaced"),
            "{text}"
        );
    }
    drop(conn);
    // Its key opens it; another key or none leaves the ciphertext as it is.
    let texts = |options: LedgerOptions| -> Vec<String> {
        open(dir.path(), options, NOW)
            .prompt_log_list(Timestamp::MIN, Timestamp::MAX, 10)
            .expect("list")
            .into_iter()
            .map(|r| r.redacted_text)
            .collect()
    };
    assert_eq!(
        texts(options.clone()),
        ["pump 7 at [ADDRESS_1]", "seal replaced"]
    );
    let other = LedgerOptions {
        prompt_key: Some(std::sync::Arc::new(crate::vault::LocalKey::from_bytes(
            [8; 32],
        ))),
        ..options.clone()
    };
    assert_eq!(texts(other), stored);
    assert_eq!(
        texts(LedgerOptions {
            prompt_key: None,
            ..options
        }),
        stored
    );
}
