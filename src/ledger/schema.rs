//! The ledger's SQLite schema and its version (`PRAGMA user_version`). A new database is created
//! at the current version; an older one is migrated step by step inside one transaction; a newer
//! one is refused, so an old binary never writes rows it does not understand.

use rusqlite::{Connection, TransactionBehavior};

use super::LedgerError;

/// The version this build writes.
pub const SCHEMA_VERSION: i64 = 4;

/// Version 1. Amounts are integers (tokens, micro-dollars); times are Unix milliseconds; `day`
/// is the budget day (`YYYY-MM-DD` in the configured zone) fixed when the row was reserved.
const V1: &str = "
CREATE TABLE boot (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_ms INTEGER NOT NULL,
    pid INTEGER NOT NULL
);
CREATE TABLE reservation (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    day TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    tier TEXT NOT NULL,
    model TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'in_doubt', 'settled', 'released')),
    boot INTEGER NOT NULL REFERENCES boot(id),
    reserved_input INTEGER NOT NULL,
    reserved_output INTEGER NOT NULL,
    reserved_cost INTEGER NOT NULL,
    actual_input INTEGER,
    actual_output INTEGER,
    actual_cost INTEGER,
    outcome TEXT,
    closed_ms INTEGER
);
CREATE INDEX reservation_day_state ON reservation(day, state);
CREATE INDEX reservation_state_boot ON reservation(state, boot);
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('egress', 'action')),
    request_id TEXT NOT NULL,
    tier TEXT,
    model TEXT,
    reason TEXT NOT NULL,
    redactions TEXT NOT NULL,
    bytes_sent INTEGER NOT NULL,
    tokens_sent INTEGER NOT NULL,
    tokens_received INTEGER NOT NULL,
    cost_micros INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX audit_time ON audit(time_ms, id);
CREATE TABLE prompt_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('prompt', 'answer')),
    redacted_text TEXT NOT NULL
);
CREATE INDEX prompt_log_time ON prompt_log(time_ms);
";

/// Brings the database to [`SCHEMA_VERSION`].
const V2: &str = "
CREATE TABLE day_total (
    day TEXT PRIMARY KEY,
    requests INTEGER NOT NULL DEFAULT 0,
    input INTEGER NOT NULL DEFAULT 0,
    output INTEGER NOT NULL DEFAULT 0,
    cost INTEGER NOT NULL DEFAULT 0
);
CREATE TRIGGER reservation_counted_insert AFTER INSERT ON reservation BEGIN
    INSERT INTO day_total (day) VALUES (NEW.day) ON CONFLICT (day) DO NOTHING;
    UPDATE day_total SET
        requests = requests + (NEW.state != 'released'),
        input = input + (CASE NEW.state WHEN 'settled' THEN COALESCE(NEW.actual_input, 0) WHEN 'released' THEN 0 ELSE NEW.reserved_input END),
        output = output + (CASE NEW.state WHEN 'settled' THEN COALESCE(NEW.actual_output, 0) WHEN 'released' THEN 0 ELSE NEW.reserved_output END),
        cost = cost + (CASE NEW.state WHEN 'settled' THEN COALESCE(NEW.actual_cost, 0) WHEN 'released' THEN 0 ELSE NEW.reserved_cost END)
    WHERE day = NEW.day;
END;
CREATE TRIGGER reservation_counted_update AFTER UPDATE ON reservation BEGIN
    UPDATE day_total SET
        requests = requests - (OLD.state != 'released') + (NEW.state != 'released'),
        input = input - (CASE OLD.state WHEN 'settled' THEN COALESCE(OLD.actual_input, 0) WHEN 'released' THEN 0 ELSE OLD.reserved_input END) + (CASE NEW.state WHEN 'settled' THEN COALESCE(NEW.actual_input, 0) WHEN 'released' THEN 0 ELSE NEW.reserved_input END),
        output = output - (CASE OLD.state WHEN 'settled' THEN COALESCE(OLD.actual_output, 0) WHEN 'released' THEN 0 ELSE OLD.reserved_output END) + (CASE NEW.state WHEN 'settled' THEN COALESCE(NEW.actual_output, 0) WHEN 'released' THEN 0 ELSE NEW.reserved_output END),
        cost = cost - (CASE OLD.state WHEN 'settled' THEN COALESCE(OLD.actual_cost, 0) WHEN 'released' THEN 0 ELSE OLD.reserved_cost END) + (CASE NEW.state WHEN 'settled' THEN COALESCE(NEW.actual_cost, 0) WHEN 'released' THEN 0 ELSE NEW.reserved_cost END)
    WHERE day = NEW.day;
END;
CREATE TRIGGER reservation_counted_delete AFTER DELETE ON reservation BEGIN
    UPDATE day_total SET
        requests = requests - (OLD.state != 'released'),
        input = input - (CASE OLD.state WHEN 'settled' THEN COALESCE(OLD.actual_input, 0) WHEN 'released' THEN 0 ELSE OLD.reserved_input END),
        output = output - (CASE OLD.state WHEN 'settled' THEN COALESCE(OLD.actual_output, 0) WHEN 'released' THEN 0 ELSE OLD.reserved_output END),
        cost = cost - (CASE OLD.state WHEN 'settled' THEN COALESCE(OLD.actual_cost, 0) WHEN 'released' THEN 0 ELSE OLD.reserved_cost END)
    WHERE day = OLD.day;
END;
INSERT INTO day_total (day, requests, input, output, cost)
    SELECT day, SUM((reservation.state != 'released')), SUM((CASE reservation.state WHEN 'settled' THEN COALESCE(reservation.actual_input, 0) WHEN 'released' THEN 0 ELSE reservation.reserved_input END)),
           SUM((CASE reservation.state WHEN 'settled' THEN COALESCE(reservation.actual_output, 0) WHEN 'released' THEN 0 ELSE reservation.reserved_output END)), SUM((CASE reservation.state WHEN 'settled' THEN COALESCE(reservation.actual_cost, 0) WHEN 'released' THEN 0 ELSE reservation.reserved_cost END))
    FROM reservation GROUP BY day;
";

/// Where text added to a prompt came from (knowledge-pack chunk ids), per audit row.
const V3: &str = "ALTER TABLE audit ADD COLUMN sources TEXT;";

/// Model delivery (`crate::delivery`): audit rows of kind `model` (SQLite cannot change a CHECK
/// constraint in place, so the audit table is copied into one that allows it) with the bytes
/// received, and what each pull downloaded, for the daily download budget.
const V4: &str = "
CREATE TABLE audit_v4 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('egress', 'action', 'model')),
    request_id TEXT NOT NULL,
    tier TEXT,
    model TEXT,
    reason TEXT NOT NULL,
    redactions TEXT NOT NULL,
    bytes_sent INTEGER NOT NULL,
    tokens_sent INTEGER NOT NULL,
    tokens_received INTEGER NOT NULL,
    cost_micros INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT,
    sources TEXT,
    bytes_received INTEGER NOT NULL DEFAULT 0
);
INSERT INTO audit_v4 (id, time_ms, kind, request_id, tier, model, reason, redactions, bytes_sent,
        tokens_sent, tokens_received, cost_micros, outcome, detail, sources)
    SELECT id, time_ms, kind, request_id, tier, model, reason, redactions, bytes_sent,
        tokens_sent, tokens_received, cost_micros, outcome, detail, sources FROM audit;
DROP TABLE audit;
ALTER TABLE audit_v4 RENAME TO audit;
CREATE INDEX audit_time ON audit(time_ms, id);
CREATE TABLE download (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    day TEXT NOT NULL,
    -- The model's sha256: one pull of a model runs at a time (it locks its partial file).
    model TEXT NOT NULL,
    reserved INTEGER NOT NULL,
    fetched INTEGER NOT NULL DEFAULT 0,
    -- 1 while the pull runs, or after it was killed until the next pull of the same model.
    open INTEGER NOT NULL CHECK (open IN (0, 1)),
    started_ms INTEGER NOT NULL
);
CREATE INDEX download_day ON download(day, model);
";

pub fn migrate(conn: &mut Connection) -> Result<(), LedgerError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(LedgerError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found < 1 {
        tx.execute_batch(V1)?;
    }
    if found < 2 {
        // What each day counts against the caps, kept by triggers in the same transaction as
        // every reservation change: `reserve` reads one row instead of summing the day.
        tx.execute_batch(V2)?;
    }
    if found < 3 {
        tx.execute_batch(V3)?;
    }
    if found < 4 {
        tx.execute_batch(V4)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// The version stored in the file, for a reader that must not migrate.
pub fn version(conn: &Connection) -> Result<i64, LedgerError> {
    Ok(conn.pragma_query_value(None, "user_version", |row| row.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_3_file_keeps_its_audit_rows_and_takes_model_rows() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(V1).unwrap();
        conn.execute_batch(V2).unwrap();
        conn.execute_batch(V3).unwrap();
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn.execute(
            "INSERT INTO audit (id, time_ms, kind, request_id, tier, model, reason, redactions,
                 bytes_sent, tokens_sent, tokens_received, cost_micros, outcome, detail, sources)
             VALUES (7, 1000, 'egress', 'r7', 'cloud', 'm', 'context', '{\"email\":1}', 10, 2, 3,
                 4, 'ok', NULL, '[\"pack:a#1\"]')",
            [],
        )
        .unwrap();
        let model_row = "INSERT INTO audit (time_ms, kind, request_id, reason, redactions,
                 bytes_sent, tokens_sent, tokens_received, cost_micros, outcome)
             VALUES (2000, 'model', 'p', 'pull', '{}', 0, 0, 0, 0, 'ok')";
        assert!(
            conn.execute(model_row, []).is_err(),
            "version 3 allows no model rows"
        );

        migrate(&mut conn).unwrap();
        assert_eq!(version(&conn).unwrap(), SCHEMA_VERSION);
        let kept: (i64, String, String, i64, i64) = conn
            .query_row(
                "SELECT id, redactions, sources, bytes_sent, bytes_received FROM audit",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
        assert_eq!(
            kept,
            (7, "{\"email\":1}".into(), "[\"pack:a#1\"]".into(), 10, 0)
        );
        conn.execute(model_row, []).unwrap();
        // Ids go on after the copied rows.
        assert_eq!(conn.last_insert_rowid(), 8);
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        // Migrating again changes nothing.
        migrate(&mut conn).unwrap();
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 2);
    }
}
