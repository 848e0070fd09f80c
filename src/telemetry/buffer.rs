//! The store-and-forward buffer: one SQLite file (WAL) holding every scrape not yet acknowledged
//! by the receiver, oldest first, bounded in bytes. A scrape is deleted only after the receiver
//! answered 2xx for a request that held it; a crash between the two resends it, which a
//! Prometheus-compatible receiver stores once (same series, same timestamp, same value). When the
//! buffer is full the oldest scrapes go first, counted in a counter kept in the same file.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

pub const FILE_NAME: &str = "telemetry.db";

pub struct Buffer {
    db: Connection,
    max_bytes: u64,
}

/// One buffered scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub id: i64,
    pub body: Vec<u8>,
    pub samples: u64,
}

/// What the buffer holds now and has done since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub batches: u64,
    pub bytes: u64,
    /// Scrapes dropped (oldest first) because the buffer was full.
    pub dropped_batches: u64,
    pub dropped_samples: u64,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS batches (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  taken_ms INTEGER NOT NULL,
  samples INTEGER NOT NULL,
  body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sent_days (day TEXT PRIMARY KEY, bytes INTEGER NOT NULL);
";

impl Buffer {
    pub fn open(path: &Path, max_bytes: u64) -> rusqlite::Result<Buffer> {
        let db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        // Every insert and delete is durable before it returns: an acknowledged delete or a
        // stored scrape survives power loss.
        db.pragma_update(None, "synchronous", "FULL")?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        db.execute_batch(SCHEMA)?;
        Ok(Buffer { db, max_bytes })
    }

    /// Stores one scrape, first dropping the oldest ones that would not leave room for it.
    /// Returns how many were dropped. A scrape larger than the whole buffer is not stored.
    pub fn push(&mut self, taken_ms: i64, samples: u64, body: &[u8]) -> rusqlite::Result<u64> {
        let size = body.len() as u64;
        let tx = self.db.transaction()?;
        let mut dropped = 0u64;
        if size > self.max_bytes {
            bump(&tx, "dropped_batches", 1)?;
            bump(&tx, "dropped_samples", samples)?;
            tx.commit()?;
            return Ok(1);
        }
        let mut used: u64 = tx.query_row(
            "SELECT COALESCE(SUM(LENGTH(body)), 0) FROM batches",
            [],
            |r| r.get::<_, i64>(0),
        )? as u64;
        while used + size > self.max_bytes {
            let oldest: Option<(i64, i64, i64)> = tx
                .query_row(
                    "SELECT id, LENGTH(body), samples FROM batches ORDER BY id LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let Some((id, length, lost)) = oldest else {
                break;
            };
            tx.execute("DELETE FROM batches WHERE id = ?1", [id])?;
            used = used.saturating_sub(length as u64);
            dropped += 1;
            bump(&tx, "dropped_samples", lost as u64)?;
        }
        if dropped > 0 {
            bump(&tx, "dropped_batches", dropped)?;
        }
        tx.execute(
            "INSERT INTO batches (taken_ms, samples, body) VALUES (?1, ?2, ?3)",
            params![taken_ms, samples as i64, body],
        )?;
        tx.commit()?;
        Ok(dropped)
    }

    /// The oldest scrapes, at most `max_batches` of them and (past the first) `max_bytes`.
    pub fn oldest(&self, max_batches: usize, max_bytes: u64) -> rusqlite::Result<Vec<Batch>> {
        let mut statement = self
            .db
            .prepare_cached("SELECT id, body, samples FROM batches ORDER BY id LIMIT ?1")?;
        let rows = statement.query_map([max_batches as i64], |r| {
            Ok(Batch {
                id: r.get(0)?,
                body: r.get(1)?,
                samples: r.get::<_, i64>(2)? as u64,
            })
        })?;
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for row in rows {
            let batch = row?;
            bytes += batch.body.len() as u64;
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(batch);
        }
        Ok(out)
    }

    /// The receiver acknowledged these scrapes: delete them, and count `wire_bytes` against
    /// `day`'s telemetry budget, in one transaction.
    pub fn acknowledge(&mut self, ids: &[i64], day: &str, wire_bytes: u64) -> rusqlite::Result<()> {
        let tx = self.db.transaction()?;
        for id in ids {
            tx.execute("DELETE FROM batches WHERE id = ?1", [id])?;
        }
        add_sent(&tx, day, wire_bytes)?;
        tx.commit()
    }

    /// The receiver refused these scrapes for good (a 4xx other than 429): they are dropped,
    /// as Prometheus' own sender drops them, and counted.
    pub fn reject(&mut self, ids: &[i64], day: &str, wire_bytes: u64) -> rusqlite::Result<()> {
        let tx = self.db.transaction()?;
        for id in ids {
            tx.execute("DELETE FROM batches WHERE id = ?1", [id])?;
        }
        bump(&tx, "rejected_batches", ids.len() as u64)?;
        add_sent(&tx, day, wire_bytes)?;
        tx.commit()
    }

    /// Bytes sent on `day` (UTC, `YYYY-MM-DD`).
    pub fn sent_on(&self, day: &str) -> rusqlite::Result<u64> {
        let bytes: Option<i64> = self
            .db
            .query_row("SELECT bytes FROM sent_days WHERE day = ?1", [day], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(bytes.unwrap_or(0) as u64)
    }

    pub fn stats(&self) -> rusqlite::Result<Stats> {
        let (batches, bytes): (i64, i64) = self.db.query_row(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM batches",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(Stats {
            batches: batches as u64,
            bytes: bytes as u64,
            dropped_batches: self.counter("dropped_batches")?,
            dropped_samples: self.counter("dropped_samples")?,
        })
    }

    pub fn counter(&self, name: &str) -> rusqlite::Result<u64> {
        let value: Option<i64> = self
            .db
            .query_row("SELECT value FROM counters WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(value.unwrap_or(0) as u64)
    }
}

fn bump(tx: &rusqlite::Transaction<'_>, name: &str, by: u64) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO counters (name, value) VALUES (?1, ?2)
         ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
        params![name, by as i64],
    )?;
    Ok(())
}

fn add_sent(tx: &rusqlite::Transaction<'_>, day: &str, bytes: u64) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO sent_days (day, bytes) VALUES (?1, ?2)
         ON CONFLICT(day) DO UPDATE SET bytes = bytes + excluded.bytes",
        params![day, bytes as i64],
    )?;
    // A week of days is plenty to answer "today".
    tx.execute(
        "DELETE FROM sent_days WHERE day NOT IN (SELECT day FROM sent_days ORDER BY day DESC LIMIT 7)",
        [],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_first_and_deleted_only_when_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut buffer = Buffer::open(&path, 1 << 20).unwrap();
        for i in 0..5u8 {
            buffer.push(i64::from(i), 2, &[i; 10]).unwrap();
        }
        let first = buffer.oldest(3, 1 << 20).unwrap();
        assert_eq!(
            first.iter().map(|b| b.body[0]).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        // Not acknowledged: a reopened buffer (a restart) still has all five.
        drop(buffer);
        let mut buffer = Buffer::open(&path, 1 << 20).unwrap();
        assert_eq!(buffer.stats().unwrap().batches, 5);
        let ids: Vec<i64> = first.iter().map(|b| b.id).collect();
        buffer.acknowledge(&ids, "2026-12-03", 123).unwrap();
        let rest = buffer.oldest(10, 1 << 20).unwrap();
        assert_eq!(rest.iter().map(|b| b.body[0]).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(buffer.sent_on("2026-12-03").unwrap(), 123);
        assert_eq!(buffer.sent_on("2026-12-04").unwrap(), 0);
        // The byte limit keeps at least one scrape per request.
        assert_eq!(buffer.oldest(10, 1).unwrap().len(), 1);
        assert_eq!(buffer.oldest(10, 15).unwrap().len(), 1);
        assert_eq!(buffer.oldest(10, 20).unwrap().len(), 2);
    }

    #[test]
    fn a_full_buffer_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut buffer = Buffer::open(&dir.path().join(FILE_NAME), 100).unwrap();
        for i in 0..10u8 {
            buffer.push(i64::from(i), 3, &[i; 30]).unwrap();
        }
        let stats = buffer.stats().unwrap();
        assert_eq!(stats.batches, 3);
        assert!(stats.bytes <= 100);
        assert_eq!(stats.dropped_batches, 7);
        assert_eq!(stats.dropped_samples, 21);
        let kept = buffer.oldest(10, 1 << 20).unwrap();
        assert_eq!(
            kept.iter().map(|b| b.body[0]).collect::<Vec<_>>(),
            [7, 8, 9]
        );
        // Larger than the whole buffer: refused and counted, nothing else dropped.
        assert_eq!(buffer.push(11, 5, &[0; 101]).unwrap(), 1);
        let stats = buffer.stats().unwrap();
        assert_eq!((stats.batches, stats.dropped_batches), (3, 8));
        buffer.reject(&[kept[0].id], "2026-12-03", 10).unwrap();
        assert_eq!(buffer.counter("rejected_batches").unwrap(), 1);
        assert_eq!(buffer.stats().unwrap().batches, 2);
    }
}
