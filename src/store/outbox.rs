//! The outbox: every notice, stored for its sink before it is sent, delivered in order per
//! incident and sink, retried, held when refused.

use chrono::{DateTime, Utc};
use rusqlite::{params, Row};
use serde::Serialize;

use super::codec::{collect, collect_each, field, Json, Ts};
use super::{ts, ts_serde, Ctx, Store, StoreError};
use crate::domain::{Notice, Sink};

/// A stored message, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MessageRecord {
    pub id: i64,
    pub incident_id: i64,
    pub sink: Sink,
    /// The notice's kind for its sink (`opened`, `step`, …; `trigger` for PagerDuty).
    pub kind: String,
    /// The notice's plain text.
    pub text: String,
    #[serde(with = "ts_serde")]
    pub created_at: DateTime<Utc>,
    /// When it was sent (or logged); `None` while pending.
    #[serde(with = "ts_serde::opt")]
    pub delivered_at: Option<DateTime<Utc>>,
    pub attempts: i64,
    pub last_error: Option<String>,
}

/// A notice due for delivery.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub incident_id: i64,
    pub sink: Sink,
    pub notice: Notice,
    pub attempts: i64,
    /// The `traceparent` of the decision that produced it.
    pub trace: Option<String>,
}

/// Messages that a sink refused for good, by error, until a reload retries them.
#[derive(Debug, Clone, Serialize)]
pub struct BlockedSummary {
    pub sink: Sink,
    pub error: String,
    pub messages: i64,
}

fn outbox_row(r: &Row<'_>) -> Result<OutboxRow, StoreError> {
    let id: i64 = r.get(0).ctx("outbox id")?;
    Ok(OutboxRow {
        id,
        incident_id: field(r, 1, "outbox", "incident_id", id)?,
        sink: field(r, 2, "outbox", "sink", id)?,
        notice: field::<Json<Notice>>(r, 3, "outbox", "notice", id)?.0,
        attempts: field(r, 4, "outbox", "attempts", id)?,
        trace: field(r, 5, "outbox", "trace", id)?,
    })
}

impl Store {
    /// For each incident, its oldest undelivered notice for `sink` if it is due: later ones
    /// wait behind it, so an incident's notices go out in order. The due ids are chosen from
    /// plain columns first, then each row is read on its own: one whose notice (or any other
    /// column) does not read is its own [`StoreError::Corrupt`], for the caller to hold
    /// ([`Store::outbox_block`]), and the other incidents' notices are still returned.
    pub fn due_outbox(
        &self,
        sink: Sink,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Result<OutboxRow, StoreError>>, StoreError> {
        let conn = self.conn();
        let ids: Vec<i64> = {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT o.id FROM outbox o
                     WHERE o.sink = ?1 AND o.delivered_at IS NULL AND o.blocked = 0
                       AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= ?2)
                       AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.sink = o.sink AND p.incident_id = o.incident_id
                                       AND p.delivered_at IS NULL AND p.id < o.id)
                     ORDER BY o.id LIMIT ?3",
                )
                .ctx("due outbox")?;
            let rows = stmt
                .query_map(params![sink, ts(now), limit as i64], |r| r.get(0))
                .ctx("due outbox")?;
            rows.collect::<rusqlite::Result<_>>().ctx("due outbox")?
        };
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, incident_id, sink, notice, attempts, trace FROM outbox WHERE id = ?1",
            )
            .ctx("due outbox row")?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let rows = stmt.query([id]).ctx("due outbox row")?;
            out.extend(collect_each(rows, "due outbox row", outbox_row)?);
        }
        Ok(out)
    }

    pub fn outbox_delivered(
        &self,
        msg: i64,
        result: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached(
                "UPDATE outbox SET delivered_at = ?2, result = ?3, attempts = attempts + 1, last_error = NULL WHERE id = ?1",
            )
            .ctx("outbox delivered")?
            .execute(params![msg, ts(now), result])
            .ctx("outbox delivered")
            .map(|_| ())
    }

    /// Marks several messages delivered, each with its result, in one transaction (a pass
    /// of a sink that only logs).
    pub fn outbox_delivered_all(
        &self,
        done: &[(i64, &str)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().ctx("begin outbox delivered")?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE outbox SET delivered_at = ?2, result = ?3, attempts = attempts + 1, last_error = NULL WHERE id = ?1",
                )
                .ctx("outbox delivered")?;
            let at = ts(now);
            for (msg, result) in done {
                stmt.execute(params![msg, at, result])
                    .ctx("outbox delivered")?;
            }
        }
        tx.commit().ctx("commit outbox delivered")
    }

    pub fn outbox_retry(
        &self,
        msg: i64,
        next: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2, last_error = ?3 WHERE id = ?1",
                params![msg, ts(next), error],
            )
            .ctx("outbox retry")
            .map(|_| ())
    }

    /// Holds a message the sink refused for good, or one that does not read (`error` is then
    /// the [`StoreError::Corrupt`] text); it and the incident's later messages wait for
    /// [`Store::outbox_unblock_all`].
    pub fn outbox_block(&self, msg: i64, error: &str) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE outbox SET attempts = attempts + 1, blocked = 1, last_error = ?2 WHERE id = ?1",
                params![msg, error],
            )
            .ctx("outbox block")
            .map(|_| ())
    }

    /// After a reload: every held message is tried again.
    pub fn outbox_unblock_all(&self) -> Result<usize, StoreError> {
        self.conn()
            .execute(
                "UPDATE outbox SET blocked = 0, next_attempt_at = NULL WHERE blocked = 1",
                [],
            )
            .ctx("outbox unblock")
    }

    pub fn outbox_blocked(&self) -> Result<Vec<BlockedSummary>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT min(id), sink, coalesce(last_error, ''), count(*) FROM outbox WHERE blocked = 1 AND delivered_at IS NULL
                 GROUP BY sink, last_error ORDER BY sink",
            )
            .ctx("outbox blocked")?;
        let rows = stmt.query([]).ctx("outbox blocked")?;
        collect(rows, "outbox blocked", |r| {
            let id: i64 = r.get(0).ctx("outbox id")?;
            Ok(BlockedSummary {
                sink: field(r, 1, "outbox", "sink", id)?,
                error: field(r, 2, "outbox", "last_error", id)?,
                messages: field(r, 3, "outbox", "count", id)?,
            })
        })
    }

    /// Whether the incident has a notice of this sink and kind (sent or not).
    pub fn has_message(&self, id: i64, sink: Sink, kind: &str) -> Result<bool, StoreError> {
        self.conn()
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM outbox WHERE incident_id = ?1 AND sink = ?2 AND kind = ?3)",
            )
            .ctx("has message")?
            .query_row(params![id, sink, kind], |r| r.get(0))
            .ctx("has message")
    }

    /// The `dedup_key` an older version paged the incident under (`remediator-incident-ID`,
    /// its local id), if it did: its acknowledgement and resolution must name the same alert.
    pub fn legacy_dedup_key(&self, id: i64) -> Result<Option<String>, StoreError> {
        use rusqlite::OptionalExtension;
        self.conn()
            .prepare_cached(
                "SELECT result FROM outbox WHERE incident_id = ?1 AND sink = ?2
                   AND delivered_at IS NOT NULL AND result LIKE 'remediator-incident-%'
                 ORDER BY id LIMIT 1",
            )
            .ctx("legacy dedup key")?
            .query_row(params![id, Sink::PagerDuty], |r| r.get(0))
            .optional()
            .ctx("legacy dedup key")
    }

    pub fn set_slack_root(&self, id: i64, channel: &str, root_ts: &str) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE incidents SET slack_channel = ?2, slack_ts = ?3 WHERE id = ?1",
                params![id, channel, root_ts],
            )
            .ctx("set slack root")
            .map(|_| ())
    }

    pub fn messages(&self, id: i64) -> Result<Vec<MessageRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, incident_id, sink, kind, text, created_at, delivered_at, attempts, last_error
                 FROM outbox WHERE incident_id = ?1 ORDER BY id",
            )
            .ctx("messages")?;
        let rows = stmt.query([id]).ctx("messages")?;
        collect(rows, "messages", message_row)
    }
}

fn message_row(r: &Row<'_>) -> Result<MessageRecord, StoreError> {
    let id: i64 = r.get(0).ctx("outbox id")?;
    let t = "outbox";
    Ok(MessageRecord {
        id,
        incident_id: field(r, 1, t, "incident_id", id)?,
        sink: field(r, 2, t, "sink", id)?,
        kind: field(r, 3, t, "kind", id)?,
        text: field(r, 4, t, "text", id)?,
        created_at: field::<Ts>(r, 5, t, "created_at", id)?.0,
        delivered_at: field::<Option<Ts>>(r, 6, t, "delivered_at", id)?.map(|x| x.0),
        attempts: field(r, 7, t, "attempts", id)?,
        last_error: field(r, 8, t, "last_error", id)?,
    })
}
