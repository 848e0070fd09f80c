//! The daily download budget of model delivery (`delivery.daily_download_bytes`): what each
//! `edgellm model pull` fetched, by budget day.
//!
//! A pull [`Ledger::reserve_download`]s the bytes it still has to fetch before its first
//! request for a chunk: in one `BEGIN IMMEDIATE` transaction the day's downloads are summed (an
//! open row at the larger of what it reserved and what it fetched, a closed one at what it
//! fetched), the cap is checked, and the row is inserted only if the pull fits, so two pulls
//! cannot both take the last of a day. As ranges arrive the pull records what it has fetched
//! ([`Ledger::download_fetched`]), so a pull killed half-way counts what it really fetched plus
//! what it had reserved, never less. The next pull of the same model closes what the killed one
//! left open (one pull of a model runs at a time: it holds a lock on its partial file) at the
//! bytes it had fetched, and reserves what is still missing.
//!
//! Appenders write these rows (`edgellm model pull` runs beside a server that owns the ledger).

use jiff::Timestamp;
use jiff::civil::Date;
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{Ledger, LedgerError, from_sql_int, lock, to_sql_int};

/// A pull's row in the download table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadGrant {
    pub id: i64,
    pub day: Date,
}

impl Ledger {
    /// Admits a pull of `model` (its sha256) that will fetch `bytes`, against `cap` bytes a
    /// day (`None`: no cap, the pull is still recorded). See the module doc.
    pub fn reserve_download(
        &self,
        model: &str,
        bytes: u64,
        cap: Option<u64>,
        now: Timestamp,
    ) -> Result<DownloadGrant, LedgerError> {
        self.appendable()?;
        let day = self.day_of(now);
        let mut conn = lock(&self.conn);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE download SET open = 0, reserved = fetched WHERE model = ?1 AND open = 1",
            params![model],
        )?;
        let used = day_bytes(&tx, day)?;
        if let Some(cap) = cap
            && used.saturating_add(bytes) > cap
        {
            return Err(LedgerError::DownloadBudget {
                day,
                used,
                needed: bytes,
                cap,
            });
        }
        tx.execute(
            "INSERT INTO download (day, model, reserved, fetched, open, started_ms)
             VALUES (?1, ?2, ?3, 0, 1, ?4)",
            params![
                day.to_string(),
                model,
                to_sql_int(bytes),
                now.as_millisecond()
            ],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(DownloadGrant { id, day })
    }

    /// What the pull holding `grant` has fetched so far; `done` closes its row.
    pub fn download_fetched(
        &self,
        grant: DownloadGrant,
        fetched: u64,
        done: bool,
    ) -> Result<(), LedgerError> {
        self.appendable()?;
        let changed = lock(&self.conn).execute(
            "UPDATE download SET fetched = ?2, open = ?3 WHERE id = ?1",
            params![grant.id, to_sql_int(fetched), i64::from(!done)],
        )?;
        if changed == 0 {
            // Purged under the pull (it ran past the retention): nothing left to count on.
            tracing::warn!(id = grant.id, "download row is gone");
        }
        Ok(())
    }

    /// Bytes model pulls fetched (or hold reserved) on `day`.
    pub fn downloaded(&self, day: Date) -> Result<u64, LedgerError> {
        day_bytes(&lock(&self.conn), day)
    }
}

fn day_bytes(conn: &rusqlite::Connection, day: Date) -> Result<u64, LedgerError> {
    // A file an older edgellm wrote has no download table: nothing was downloaded through it.
    let table: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'download'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    if table.is_none() {
        return Ok(0);
    }
    let total: i64 = conn.query_row(
        "SELECT COALESCE(SUM(CASE open WHEN 1 THEN MAX(reserved, fetched) ELSE fetched END), 0)
         FROM download WHERE day = ?1",
        params![day.to_string()],
        |row| row.get(0),
    )?;
    Ok(from_sql_int(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::LedgerOptions;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn pulls_are_counted_against_the_day_and_a_killed_pull_is_closed_by_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite3");
        let ledger = Ledger::open_appender(&path, LedgerOptions::default()).unwrap();
        let now = at("2026-12-06T10:00:00Z");
        let day = ledger.day_of(now);

        let a = ledger
            .reserve_download("sha-a", 600, Some(1000), now)
            .unwrap();
        // Open at what it reserved, until it has fetched more.
        assert_eq!(ledger.downloaded(day).unwrap(), 600);
        let refused = ledger
            .reserve_download("sha-b", 500, Some(1000), now)
            .unwrap_err();
        assert!(
            matches!(
                refused,
                LedgerError::DownloadBudget {
                    used: 600,
                    needed: 500,
                    cap: 1000,
                    ..
                }
            ),
            "{refused}"
        );
        assert!(refused.to_string().contains("daily_download_bytes"));

        // Killed after 250 bytes: the next pull of the same model closes it at 250 and
        // reserves what is still missing.
        ledger.download_fetched(a, 250, false).unwrap();
        assert_eq!(ledger.downloaded(day).unwrap(), 600);
        let again = ledger
            .reserve_download("sha-a", 350, Some(1000), now)
            .unwrap();
        assert_eq!(ledger.downloaded(day).unwrap(), 250 + 350);
        ledger.download_fetched(again, 350, true).unwrap();
        assert_eq!(ledger.downloaded(day).unwrap(), 600);

        // Another process sees the same rows; the next day starts from nothing; no cap counts
        // but never refuses.
        let other = Ledger::open_appender(&path, LedgerOptions::default()).unwrap();
        assert!(
            other
                .reserve_download("sha-c", 401, Some(1000), now)
                .is_err()
        );
        let c = other
            .reserve_download("sha-c", 400, Some(1000), now)
            .unwrap();
        other.download_fetched(c, 400, true).unwrap();
        assert_eq!(ledger.downloaded(day).unwrap(), 1000);
        let tomorrow = at("2026-12-07T10:00:00Z");
        let d = ledger
            .reserve_download("sha-d", 1000, Some(1000), tomorrow)
            .unwrap();
        assert_eq!(d.day, ledger.day_of(tomorrow));
        assert!(
            ledger
                .reserve_download("sha-e", u64::MAX, None, now)
                .is_ok()
        );

        // A reader cannot write.
        let reader = Ledger::open_reader(&path, LedgerOptions::default()).unwrap();
        assert!(matches!(
            reader.reserve_download("sha-f", 1, None, now),
            Err(LedgerError::ReadOnly)
        ));
    }
}
