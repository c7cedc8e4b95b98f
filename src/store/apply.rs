//! Applying deliveries to incidents, in the same transaction that stores them.
//!
//! The intake writer stores each webhook body and applies its alerts to the incidents in one
//! transaction, fsynced before Alertmanager gets its 200 ([`ingest_group`]). So an
//! acknowledged alert is already an incident (the API shows it at once), a crash can never
//! leave a delivery stored but not applied, and nothing is applied twice. The body is parsed
//! once, by the HTTP handler; the writer works from that parse.
//!
//! What the engine must act on (an incident opened, an open incident resolved) goes into the
//! `engine_queue` table in that same transaction. The engine takes it from there in order and
//! deletes each entry once handled ([`Store::queued_events`], [`Store::dequeue_event`]), so a
//! restart resumes exactly where the engine stopped.
//!
//! Stored deliveries that were never applied exist only after an upgrade from a version that
//! applied them later, in the engine. The intake writer applies them, in order, before the
//! first new delivery ([`apply_backlog`]), reading each stored body through the borrowed view
//! [`StoredDelivery`].

use std::borrow::Cow;
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::{body, json, ts, Ctx, IncidentEvent, Store, StoreError};
use crate::alert::{
    parse_stored, Alert, AlertStatus, Labels, Notification, StoredAlert, StoredDelivery,
};
use crate::domain::{IncidentState, Phase};

/// One alert of a delivery, as applying it needs it: the parsed alert on the intake path, the
/// stored view when an old backlog is applied.
trait DeliveredAlert {
    /// `None` when a stored alert no longer has a readable identity (it is passed over).
    fn fingerprint(&self) -> Option<Cow<'_, str>>;
    fn status(&self) -> AlertStatus;
    fn starts_at(&self) -> DateTime<Utc>;
    fn ends_at(&self) -> Option<DateTime<Utc>>;
    /// Only read when the alert opens an incident.
    fn labels(&self) -> Cow<'_, Labels>;
    fn annotations_json(&self) -> Cow<'_, str>;
    fn generator_url(&self) -> &str;
}

impl DeliveredAlert for Alert {
    fn fingerprint(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(self.fingerprint.as_str()))
    }
    fn status(&self) -> AlertStatus {
        self.status
    }
    fn starts_at(&self) -> DateTime<Utc> {
        self.starts_at
    }
    fn ends_at(&self) -> Option<DateTime<Utc>> {
        self.ends_at
    }
    fn labels(&self) -> Cow<'_, Labels> {
        Cow::Borrowed(&self.labels)
    }
    fn annotations_json(&self) -> Cow<'_, str> {
        Cow::Owned(json(&self.annotations))
    }
    fn generator_url(&self) -> &str {
        &self.generator_url
    }
}

impl DeliveredAlert for StoredAlert<'_> {
    fn fingerprint(&self) -> Option<Cow<'_, str>> {
        StoredAlert::fingerprint(self)
            .ok()
            .map(|f| Cow::Owned(f.as_str().to_owned()))
    }
    fn status(&self) -> AlertStatus {
        self.status
    }
    fn starts_at(&self) -> DateTime<Utc> {
        StoredAlert::starts_at(self)
    }
    fn ends_at(&self) -> Option<DateTime<Utc>> {
        StoredAlert::ends_at(self)
    }
    fn labels(&self) -> Cow<'_, Labels> {
        Cow::Owned(StoredAlert::labels(self).unwrap_or_default())
    }
    fn annotations_json(&self) -> Cow<'_, str> {
        Cow::Borrowed(StoredAlert::annotations_json(self))
    }
    fn generator_url(&self) -> &str {
        StoredAlert::generator_url(self)
    }
}

/// `(fingerprint, startsAt)` → (incident id, still open) for firings the intake has seen: a
/// storm is mostly repeats, and this spares each of them a lookup. What it holds cannot go
/// stale: the identity of an incident never changes, and only applying a delivery changes its
/// state (open to resolved, once), always with the store's connection held and this updated
/// alongside. A rolled-back transaction may undo what it learned, so any failure clears it.
#[derive(Default)]
pub(crate) struct Identities {
    /// Keyed by `startsAt` (as stored) followed by the fingerprint.
    map: HashMap<String, (i64, bool)>,
}

/// Firings remembered; past this the cache starts again (a few hundred KiB at most).
const IDENTITIES_MAX: usize = 4096;

impl Identities {
    fn put(&mut self, key: String, id: i64, open: bool) {
        if self.map.len() >= IDENTITIES_MAX {
            self.map.clear();
        }
        self.map.insert(key, (id, open));
    }

    pub(crate) fn clear(&mut self) {
        self.map.clear();
    }
}

/// One webhook to store: its body as [`super::body::encode`] made it, and the handler's parse.
pub(crate) struct Delivery<'a> {
    pub encoded_body: &'a [u8],
    pub notification: &'a Notification,
    /// The `traceparent` of the request that brought it; queued with what it opened.
    pub trace: Option<&'a str>,
    /// A synthetic alert's origin: the incident it opens records it.
    pub started: Option<&'a crate::domain::Started>,
}

/// What storing a group did.
#[derive(Debug, Default)]
pub(crate) struct Ingested {
    /// The intake rows' ids, in the order of the deliveries.
    pub ids: Vec<i64>,
    /// How many entries it put on the engine's queue (0 for a storm of repeats).
    pub queued: usize,
}

/// Stores the deliveries and applies them to the incidents, in one transaction that the
/// caller commits (fsynced, for the intake). In order: a group that opens and resolves one
/// incident queues both, opened first.
pub(crate) fn ingest_group(
    conn: &mut Connection,
    known: &mut Identities,
    deliveries: &[Delivery<'_>],
    now: DateTime<Utc>,
) -> Result<Ingested, StoreError> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .ctx("begin intake")?;
    let now_s = ts(now);
    let mut out = Ingested {
        ids: Vec::with_capacity(deliveries.len()),
        queued: 0,
    };
    let mut events = Vec::new();
    let mut traces: Vec<Option<&str>> = Vec::new();
    for d in deliveries {
        tx.prepare_cached("INSERT INTO intake (received_at, body, encoding) VALUES (?1, ?2, ?3)")
            .ctx("insert intake")?
            .execute(params![now_s, d.encoded_body, body::LZ4])
            .ctx("insert intake")?;
        let id = tx.last_insert_rowid();
        out.ids.push(id);
        let n = &d.notification;
        let before = events.len();
        let group = Group {
            key: &n.group_key,
            external_url: &n.external_url,
        };
        apply_alerts(&tx, known, id, &group, &n.alerts, &now_s, &mut events)?;
        if let Some(started) = d.started {
            mark_started(&tx, &events[before..], started)?;
        }
        traces.resize(events.len().max(before), d.trace);
    }
    if let Some(last) = out.ids.last() {
        advance_cursor(&tx, *last)?;
    }
    out.queued = queue(&tx, &events, &traces)?;
    tx.commit().ctx("commit intake")?;
    Ok(out)
}

/// Applies stored deliveries that were never applied (see the module docs), oldest first, in
/// transactions of `batch`. Returns how many it applied; 0 when there were none, which is
/// the normal case and costs one indexed query.
pub(crate) fn apply_backlog(
    conn: &mut Connection,
    known: &mut Identities,
    batch: usize,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let now_s = ts(now);
    let mut applied = 0;
    loop {
        let rows: Vec<(i64, Vec<u8>, Option<String>)> = {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, body, encoding FROM intake WHERE id > (SELECT position FROM cursors WHERE name = 'engine') ORDER BY id LIMIT ?1",
                )
                .ctx("intake backlog")?;
            let rows = stmt
                .query_map([batch as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .ctx("intake backlog")?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .ctx("intake backlog")?
        };
        let Some((last, ..)) = rows.last() else {
            return Ok(applied);
        };
        let last = *last;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .ctx("begin backlog")?;
        let mut events = Vec::new();
        for (id, stored, encoding) in &rows {
            let json = match body::decode(stored, encoding.as_deref()) {
                Ok(json) => json,
                Err(e) => {
                    tracing::error!(intake_id = id, error = %e, "stored delivery is unreadable; skipped");
                    continue;
                }
            };
            match parse_stored(&json) {
                Ok(StoredDelivery {
                    group_key,
                    external_url,
                    alerts,
                }) => {
                    let group = Group {
                        key: &group_key,
                        external_url: &external_url,
                    };
                    apply_alerts(&tx, known, *id, &group, &alerts, &now_s, &mut events)?
                }
                // Validated when it arrived; one that no longer parses (a body from a much
                // older version, say) stays in the intake table for a human, and is passed.
                Err(e) => {
                    tracing::error!(intake_id = id, error = %e, "stored delivery no longer parses; skipped")
                }
            }
        }
        advance_cursor(&tx, last)?;
        queue(&tx, &events, &[])?;
        tx.commit().ctx("commit backlog")?;
        applied += rows.len();
    }
}

/// The incidents a synthetic delivery opened record their origin and who started them.
fn mark_started(
    tx: &Transaction<'_>,
    opened: &[IncidentEvent],
    started: &crate::domain::Started,
) -> Result<(), StoreError> {
    for event in opened {
        if let IncidentEvent::Opened(id) = event {
            tx.prepare_cached("UPDATE incidents SET origin = ?2, started = ?3 WHERE id = ?1")
                .ctx("record the origin")?
                .execute(params![id, started.origin, json(started)])
                .ctx("record the origin")?;
        }
    }
    Ok(())
}

fn advance_cursor(tx: &Transaction<'_>, intake_id: i64) -> Result<(), StoreError> {
    tx.prepare_cached("UPDATE cursors SET position = max(position, ?1) WHERE name = 'engine'")
        .ctx("advance the intake cursor")?
        .execute([intake_id])
        .ctx("advance the intake cursor")?;
    Ok(())
}

/// Queues what the engine must act on, each with its delivery's `traceparent` (none for an
/// old backlog: `traces` may be shorter than `events`).
fn queue(
    tx: &Transaction<'_>,
    events: &[IncidentEvent],
    traces: &[Option<&str>],
) -> Result<usize, StoreError> {
    for (i, event) in events.iter().enumerate() {
        let trace = traces.get(i).copied().flatten();
        let (id, kind) = match event {
            IncidentEvent::Opened(id) => (id, "opened"),
            IncidentEvent::Resolved(id) => (id, "resolved"),
        };
        tx.prepare_cached(
            "INSERT INTO engine_queue (incident_id, kind, trace) VALUES (?1, ?2, ?3)",
        )
        .ctx("queue for the engine")?
        .execute(params![id, kind, trace])
        .ctx("queue for the engine")?;
    }
    Ok(events.len())
}

/// Applies one delivery's alerts: a known firing (same fingerprint and `startsAt`) only gets
/// `deliveries`, `last_seen` and its latest delivery; a resolution closes it (with its final
/// annotations); anything else opens an incident.
/// What a delivery says of all its alerts: the group, and the Alertmanager that sent it.
struct Group<'a> {
    key: &'a str,
    external_url: &'a str,
}

fn apply_alerts<A: DeliveredAlert>(
    tx: &Transaction<'_>,
    known: &mut Identities,
    intake_id: i64,
    group: &Group<'_>,
    alerts: &[A],
    now_s: &str,
    events: &mut Vec<IncidentEvent>,
) -> Result<(), StoreError> {
    for alert in alerts {
        let Some(fingerprint) = alert.fingerprint() else {
            tracing::error!(
                intake_id,
                "stored alert has no readable fingerprint; skipped"
            );
            continue;
        };
        let mut key = ts(alert.starts_at());
        let starts_len = key.len();
        key.push_str(&fingerprint);
        let starts = &key[..starts_len];
        // The hot path of a storm: remembered identities, cached statements.
        let existing = match known.map.get(&key) {
            Some(&(id, open)) => Some((id, open)),
            None => tx
                .prepare_cached(
                    "SELECT id, state = 'open' FROM incidents WHERE fingerprint = ?1 AND starts_at = ?2",
                )
                .ctx("find incident")?
                .query_row(params![fingerprint, starts], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
                .ctx("find incident")?,
        };
        let ends = alert.ends_at().map(ts);
        let status = alert.status();
        match existing {
            Some((id, open)) => {
                // The wide row is left alone: its latest annotations are this delivery's,
                // read back from the body when someone asks (see `Store::incident`).
                tx.prepare_cached(
                    "UPDATE incident_seen SET deliveries = deliveries + 1, last_seen = ?2, last_intake_id = ?3 WHERE incident_id = ?1",
                )
                .ctx("touch incident")?
                .execute(params![id, now_s, intake_id])
                .ctx("touch incident")?;
                let resolves = status == AlertStatus::Resolved && open;
                known.put(key, id, open && !resolves);
                if resolves {
                    tx.prepare_cached(
                        "UPDATE incidents SET state = 'resolved', ends_at = ?2, resolved_at = ?3, annotations = ?4 WHERE id = ?1",
                    )
                    .ctx("resolve incident")?
                    .execute(params![
                        id,
                        ends.as_deref().unwrap_or(now_s),
                        now_s,
                        alert.annotations_json()
                    ])
                    .ctx("resolve incident")?;
                    events.push(IncidentEvent::Resolved(id));
                }
            }
            None => {
                let (state, phase) = match status {
                    AlertStatus::Firing => (IncidentState::Open, Phase::New),
                    // Resolved before we ever saw it firing: record it, act on nothing.
                    AlertStatus::Resolved => (IncidentState::Resolved, Phase::Missed),
                };
                let labels = alert.labels();
                let alertname = labels.get("alertname").map(String::as_str).unwrap_or("");
                tx.prepare_cached(
                    "INSERT INTO incidents (fingerprint, starts_at, alertname, labels, annotations, group_key,
                         state, phase, first_seen, ends_at, resolved_at, generator_url, external_url)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                )
                .ctx("insert incident")?
                .execute(params![
                    fingerprint,
                    starts,
                    alertname,
                    json(&*labels),
                    alert.annotations_json(),
                    group.key,
                    state,
                    phase,
                    now_s,
                    ends,
                    (status == AlertStatus::Resolved).then_some(now_s),
                    Some(alert.generator_url()).filter(|u| !u.is_empty()),
                    Some(group.external_url).filter(|u| !u.is_empty()),
                ])
                .ctx("insert incident")?;
                let id = tx.last_insert_rowid();
                tx.prepare_cached(
                    "INSERT INTO incident_seen (incident_id, deliveries, last_seen, last_intake_id) VALUES (?1, 1, ?2, ?3)",
                )
                .ctx("insert incident")?
                .execute(params![id, now_s, intake_id])
                .ctx("insert incident")?;
                known.put(key, id, status == AlertStatus::Firing);
                if status == AlertStatus::Firing {
                    events.push(IncidentEvent::Opened(id));
                }
            }
        }
    }
    Ok(())
}

/// An entry of the engine's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub id: i64,
    pub event: IncidentEvent,
    /// The `traceparent` of the delivery that queued it.
    pub trace: Option<String>,
}

impl Store {
    /// Stores and applies one delivery through this connection, fsynced, as the intake writer
    /// does for a group (drills and tests; the HTTP path uses the [`super::IntakeWriter`]).
    pub fn ingest(
        &self,
        raw: &[u8],
        notification: &Notification,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let encoded_body = &body::encode(raw);
        let mut conn = self.conn();
        let mut known = self.identities();
        let out = apply_backlog(&mut conn, &mut known, BACKLOG_BATCH, now).and_then(|_| {
            super::fsynced(&mut conn, |c| {
                let d = Delivery {
                    encoded_body,
                    notification,
                    trace: None,
                    started: None,
                };
                ingest_group(c, &mut known, &[d], now)
            })
        });
        if out.is_err() {
            known.clear();
        }
        Ok(out?.ids[0])
    }

    /// Applies stored deliveries never applied (see the module docs). Returns how many.
    pub fn apply_backlog(&self, now: DateTime<Utc>) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        let mut known = self.identities();
        let out = apply_backlog(&mut conn, &mut known, BACKLOG_BATCH, now);
        if out.is_err() {
            known.clear();
        }
        out
    }

    /// Lock order: the connection first, then this.
    pub(crate) fn identities(&self) -> std::sync::MutexGuard<'_, Identities> {
        self.identities.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The oldest entries of the engine's queue: (queue id, event). The entry leaves the
    /// queue in the [`super::Commit`] of the decision point that handles it. Each entry is
    /// read on its own: one that does not read is its own [`StoreError::Corrupt`] (naming
    /// `engine_queue` and its id, for [`Store::quarantine_queued`]), and the others are
    /// still returned, in order.
    pub fn queued_events(
        &self,
        limit: usize,
    ) -> Result<Vec<Result<Queued, StoreError>>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, incident_id, kind, trace FROM engine_queue ORDER BY id LIMIT ?1",
            )
            .ctx("engine queue")?;
        let rows = stmt.query([limit as i64]).ctx("engine queue")?;
        super::codec::collect_each(rows, "engine queue", |r| {
            let id: i64 = r.get(0).ctx("queue id")?;
            let incident: i64 = super::codec::field(r, 1, "engine_queue", "incident_id", id)?;
            let kind: String = super::codec::field(r, 2, "engine_queue", "kind", id)?;
            let event = match kind.as_str() {
                "opened" => IncidentEvent::Opened(incident),
                "resolved" => IncidentEvent::Resolved(incident),
                other => {
                    return Err(StoreError::Corrupt {
                        table: "engine_queue",
                        id,
                        column: "kind",
                        detail: format!("{other:?} is neither opened nor resolved"),
                    })
                }
            };
            let trace = super::codec::field(r, 3, "engine_queue", "trace", id)?;
            Ok(Queued { id, event, trace })
        })
    }

    /// Removes a handled entry from the engine's queue (tests; the engine dequeues in its
    /// commits).
    #[cfg(test)]
    pub fn dequeue_event(&self, queue_id: i64) -> Result<(), StoreError> {
        self.conn()
            .prepare_cached("DELETE FROM engine_queue WHERE id = ?1")
            .ctx("dequeue")?
            .execute([queue_id])
            .ctx("dequeue")
            .map(|_| ())
    }

    /// Stores a body without applying it, as versions before the engine queue did (tests of
    /// the backlog path; everything else uses [`Store::ingest`] or the intake writer).
    #[cfg(test)]
    pub(crate) fn insert_intake(&self, body: &[u8], now: DateTime<Utc>) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO intake (received_at, body) VALUES (?1, ?2)",
            params![ts(now), body],
        )
        .ctx("insert intake")?;
        Ok(conn.last_insert_rowid())
    }

    /// Deletes stored webhook bodies received before `cutoff`, oldest first, at most `limit`
    /// (so the intake writer never waits long). Only deliveries already applied go, and never
    /// the newest row: SQLite would hand its id out again. An open incident whose latest
    /// delivery is gone shows the annotations it opened with. Returns how many were deleted.
    pub fn prune_intake(&self, cutoff: DateTime<Utc>, limit: usize) -> Result<usize, StoreError> {
        self.conn()
            .prepare_cached(
                "DELETE FROM intake WHERE id IN (
                    SELECT id FROM (SELECT id, received_at FROM intake ORDER BY id LIMIT ?2)
                    WHERE received_at < ?1
                      AND id <= (SELECT position FROM cursors WHERE name = 'engine')
                      AND id < (SELECT max(id) FROM intake))",
            )
            .ctx("prune intake")?
            .execute(params![ts(cutoff), limit as i64])
            .ctx("prune intake")
    }
}

/// Stored deliveries applied per transaction when catching up.
pub(crate) const BACKLOG_BATCH: usize = 64;
