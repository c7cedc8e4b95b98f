//! The quarantine: rows that could not be read ([`StoreError::Corrupt`]), set aside so that
//! one damaged row does not stop everything else.
//!
//! - An engine-queue entry that does not read, or whose handling met a damaged row (its
//!   incident, say), leaves the queue in the transaction that records it here, with the
//!   entry copied as it was stored ([`Store::quarantine_queued`]).
//! - A damaged row that the service passes over where it stands (an incident the escalation
//!   timers or crash recovery cannot read) is recorded once ([`Store::quarantine_row`]).
//!
//! The service reads this table only for `/-/ready`. A person repairs the row (or restores a
//! backup), queues the entry again if one was taken out
//! (`INSERT INTO engine_queue (incident_id, kind, trace) SELECT incident_id, kind, trace FROM
//! quarantine WHERE id = N`) and deletes the quarantine row.

use chrono::{DateTime, Utc};
use rusqlite::{params, Row};
use serde::Serialize;

use super::codec::{collect, field, Ts};
use super::{ts, ts_serde, Ctx, Store, StoreError};

/// A quarantined row, as `/-/ready` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct QuarantineRecord {
    pub id: i64,
    /// The damaged row's table and id there.
    pub source_table: String,
    pub row_id: i64,
    /// The [`StoreError::Corrupt`] text: the column and what is wrong with it.
    pub error: String,
    #[serde(with = "ts_serde")]
    pub at: DateTime<Utc>,
    /// The incident it was for, when known.
    pub incident_id: Option<i64>,
    /// The engine-queue entry taken out for it (kept in the quarantine row), if any.
    pub queue_id: Option<i64>,
}

/// How many rows are quarantined, and the latest of them.
#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
pub struct Quarantined {
    pub count: i64,
    pub latest: Vec<QuarantineRecord>,
}

fn quarantine_row(r: &Row<'_>) -> Result<QuarantineRecord, StoreError> {
    let id: i64 = r.get(0).ctx("quarantine id")?;
    let t = "quarantine";
    Ok(QuarantineRecord {
        id,
        source_table: field(r, 1, t, "source_table", id)?,
        row_id: field(r, 2, t, "row_id", id)?,
        error: field(r, 3, t, "error", id)?,
        at: field::<Ts>(r, 4, t, "at", id)?.0,
        incident_id: field(r, 5, t, "incident_id", id)?,
        queue_id: field(r, 6, t, "queue_id", id)?,
    })
}

impl Store {
    /// Takes the engine-queue entry `queue_id` out of the queue into the quarantine, in one
    /// transaction, because row `row_id` of `table` could not be read while handling it
    /// (`error`, the [`StoreError::Corrupt`] text; the row may be the entry itself). Returns
    /// the quarantine row's id, `None` when the entry had already left the queue.
    pub fn quarantine_queued(
        &self,
        queue_id: i64,
        table: &str,
        row_id: i64,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError> {
        self.fault_point()?;
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .ctx("begin quarantine")?;
        // The entry's columns are copied as they are stored: one of them may be what is
        // damaged.
        let copied = tx
            .prepare_cached(
                "INSERT INTO quarantine (source_table, row_id, error, at, incident_id, queue_id, kind, trace)
                 SELECT ?2, ?3, ?4, ?5, incident_id, id, kind, trace FROM engine_queue WHERE id = ?1",
            )
            .ctx("quarantine queue entry")?
            .execute(params![queue_id, table, row_id, error, ts(now)])
            .ctx("quarantine queue entry")?;
        let id = (copied > 0).then(|| tx.last_insert_rowid());
        tx.prepare_cached("DELETE FROM engine_queue WHERE id = ?1")
            .ctx("dequeue quarantined")?
            .execute([queue_id])
            .ctx("dequeue quarantined")?;
        tx.commit().ctx("commit quarantine")?;
        Ok(id)
    }

    /// Records that row `row_id` of `table` could not be read and is passed over where it
    /// stands (nothing leaves a queue with it), once: `None` when that row is already in the
    /// quarantine.
    pub fn quarantine_row(
        &self,
        table: &str,
        row_id: i64,
        error: &str,
        incident_id: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError> {
        self.fault_point()?;
        let conn = self.conn();
        let added = conn
            .prepare_cached(
                "INSERT INTO quarantine (source_table, row_id, error, at, incident_id)
                 SELECT ?1, ?2, ?3, ?4, ?5
                 WHERE NOT EXISTS (SELECT 1 FROM quarantine WHERE source_table = ?1 AND row_id = ?2)",
            )
            .ctx("quarantine row")?
            .execute(params![table, row_id, error, ts(now), incident_id])
            .ctx("quarantine row")?;
        Ok((added > 0).then(|| conn.last_insert_rowid()))
    }

    /// How many rows are quarantined, and the `limit` latest, newest first (`/-/ready`).
    pub fn quarantined(&self, limit: usize) -> Result<Quarantined, StoreError> {
        let conn = self.conn();
        let count = conn
            .query_row("SELECT count(*) FROM quarantine", [], |r| r.get(0))
            .ctx("quarantine count")?;
        // `incident_id` is untyped (copied from a queue entry as it was): only an integer is
        // an incident id.
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, source_table, row_id, error, at,
                        CASE WHEN typeof(incident_id) = 'integer' THEN incident_id END, queue_id
                 FROM quarantine ORDER BY id DESC LIMIT ?1",
            )
            .ctx("quarantined")?;
        let rows = stmt.query([limit as i64]).ctx("quarantined")?;
        let latest = collect(rows, "quarantined", quarantine_row)?;
        Ok(Quarantined { count, latest })
    }
}
