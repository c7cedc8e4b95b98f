//! The ship queue: what the fleet history (`history`) has still to copy to Postgres.
//!
//! Every change of a journal row (an incident, decision, step, run or message inserted, or an
//! incident, step, run or message updated later) appends `(source, row_id)` to `ship_queue` in
//! the same local transaction as the change itself: SQLite triggers write it, so no write path
//! of the store can forget to. The triggers are `TEMP`, created on our one connection only
//! when shipping is on ([`Store::start_shipping`]): a replica without `postgres.url` writes
//! nothing more per row. Whether the queue is complete (the triggers were there for every
//! change since it was last filled) is the `cursors` row `ship`: a start without shipping
//! deletes it, and a start with shipping that finds it missing queues every journal row once
//! (the remote side upserts, so a row shipped before is no duplicate).
//!
//! The shipper reads a batch in queue order ([`Store::ship_batch`]), each row in its current
//! state (a row queued twice is sent once, as it is now), and deletes the entries only after
//! the remote commit ([`Store::shipped`]). Values are copied as stored, unparsed: the history
//! is a copy of the journal, and a damaged row must not stop the rows after it.

use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, Row};
use serde::Serialize;

use super::{Ctx, Store, StoreError};

/// The triggers that queue every change of a journal row (see the module docs).
const TRIGGERS: &str = "
CREATE TEMP TRIGGER IF NOT EXISTS ship_incidents_insert AFTER INSERT ON main.incidents
    BEGIN INSERT INTO ship_queue (source, row_id) VALUES ('incidents', NEW.id); END;
CREATE TEMP TRIGGER IF NOT EXISTS ship_incidents_update AFTER UPDATE ON main.incidents
    BEGIN INSERT INTO ship_queue (source, row_id) VALUES ('incidents', NEW.id); END;
CREATE TEMP TRIGGER IF NOT EXISTS ship_decisions_insert AFTER INSERT ON main.decisions
    BEGIN INSERT INTO ship_queue (source, row_id) VALUES ('decisions', NEW.id); END;
CREATE TEMP TRIGGER IF NOT EXISTS ship_steps_insert AFTER INSERT ON main.steps
    BEGIN INSERT INTO ship_queue (source, row_id) VALUES ('steps', NEW.id); END;
CREATE TEMP TRIGGER IF NOT EXISTS ship_steps_update AFTER UPDATE ON main.steps
    BEGIN INSERT INTO ship_queue (source, row_id) VALUES ('steps', NEW.id); END;
CREATE TEMP TRIGGER IF NOT EXISTS ship_runs_insert AFTER INSERT ON main.runs
    BEGIN INSERT INTO ship_queue (source, row_id) VALUES ('runs', NEW.incident_id); END;
CREATE TEMP TRIGGER IF NOT EXISTS ship_runs_update AFTER UPDATE ON main.runs
    BEGIN INSERT INTO ship_queue (source, row_id) VALUES ('runs', NEW.incident_id); END;
CREATE TEMP TRIGGER IF NOT EXISTS ship_outbox_insert AFTER INSERT ON main.outbox
    BEGIN INSERT INTO ship_queue (source, row_id) VALUES ('outbox', NEW.id); END;
CREATE TEMP TRIGGER IF NOT EXISTS ship_outbox_update AFTER UPDATE OF delivered_at, blocked
    ON main.outbox
    BEGIN INSERT INTO ship_queue (source, row_id) VALUES ('outbox', NEW.id); END;
";

/// Every journal row, queued once, parents before children (a start that finds the queue
/// incomplete).
const REFILL: &str = "
DELETE FROM ship_queue;
INSERT INTO ship_queue (source, row_id) SELECT 'incidents', id FROM incidents ORDER BY id;
INSERT INTO ship_queue (source, row_id) SELECT 'decisions', id FROM decisions ORDER BY id;
INSERT INTO ship_queue (source, row_id) SELECT 'steps', id FROM steps ORDER BY id;
INSERT INTO ship_queue (source, row_id) SELECT 'runs', incident_id FROM runs ORDER BY incident_id;
INSERT INTO ship_queue (source, row_id) SELECT 'outbox', id FROM outbox ORDER BY id;
INSERT INTO cursors (name, position) VALUES ('ship', 1);
";

/// An incident as stored, for the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShippedIncident {
    pub local_id: i64,
    pub fingerprint: Option<String>,
    pub starts_at: Option<String>,
    pub alertname: Option<String>,
    pub labels: Option<String>,
    pub state: Option<String>,
    pub phase: Option<String>,
    pub first_seen: Option<String>,
    pub ends_at: Option<String>,
    pub resolved_at: Option<String>,
    pub rule: Option<String>,
    pub priority: Option<String>,
    pub target: Option<String>,
    pub acked_by: Option<String>,
    pub acked_at: Option<String>,
    pub slack_channel: Option<String>,
    pub slack_ts: Option<String>,
}

/// A decision as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShippedDecision {
    pub local_id: i64,
    pub incident_id: i64,
    pub at: Option<String>,
    pub guard: Option<String>,
    pub verdict: Option<String>,
    pub reason: Option<String>,
}

/// A step as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShippedStep {
    pub local_id: i64,
    pub incident_id: i64,
    pub phase: Option<String>,
    pub seq: Option<String>,
    pub kind: Option<String>,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub outcome: Option<String>,
    pub detail: Option<String>,
}

/// A run as stored; its local id is its incident's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShippedRun {
    pub local_id: i64,
    pub rule: Option<String>,
    pub target: Option<String>,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub outcome: Option<String>,
}

/// An outbox message as stored (its notice as JSON text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShippedMessage {
    pub local_id: i64,
    pub incident_id: i64,
    pub sink: Option<String>,
    pub kind: Option<String>,
    pub notice: Option<String>,
    pub created_at: Option<String>,
    pub delivered_at: Option<String>,
    pub blocked: bool,
}

/// The rows of a prefix of the ship queue, each once, in its current state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShipBatch {
    /// The last queue entry the batch covers: [`Store::shipped`] takes it.
    pub through: i64,
    /// Queue entries covered (a row changed twice is two entries and one row).
    pub entries: usize,
    pub incidents: Vec<ShippedIncident>,
    pub decisions: Vec<ShippedDecision>,
    pub steps: Vec<ShippedStep>,
    pub runs: Vec<ShippedRun>,
    pub messages: Vec<ShippedMessage>,
}

impl ShipBatch {
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Rows the batch holds.
    pub fn rows(&self) -> usize {
        self.incidents.len()
            + self.decisions.len()
            + self.steps.len()
            + self.runs.len()
            + self.messages.len()
    }
}

/// Any stored value as text (NULL as `None`): the copy never refuses a row.
fn text(r: &Row<'_>, idx: usize) -> Option<String> {
    match r.get_ref(idx).ok()? {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
    }
}

fn one<T>(
    conn: &Connection,
    sql: &str,
    id: i64,
    what: &'static str,
    map: impl FnOnce(&Row<'_>) -> T,
) -> Result<Option<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).ctx(what)?;
    let mut rows = stmt.query(params![id]).ctx(what)?;
    Ok(rows.next().ctx(what)?.map(map))
}

impl Store {
    /// Turns shipping on for this process: the triggers on this connection, and the whole
    /// journal queued if the queue is not known to be complete.
    pub fn start_shipping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().ctx("start shipping")?;
        tx.execute_batch(TRIGGERS).ctx("ship triggers")?;
        let complete: bool = tx
            .query_row(
                "SELECT count(*) FROM cursors WHERE name = 'ship'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .ctx("ship cursor")?
            > 0;
        if !complete {
            tx.execute_batch(REFILL).ctx("queue the journal to ship")?;
        }
        tx.commit().ctx("start shipping")
    }

    /// Records that this process does not ship: changes from now on are not queued, so a
    /// later start with shipping queues the whole journal again.
    pub fn stop_shipping(&self) -> Result<(), StoreError> {
        self.conn()
            .execute_batch(
                "BEGIN; DELETE FROM cursors WHERE name = 'ship'; DELETE FROM ship_queue; COMMIT;",
            )
            .ctx("stop shipping")
    }

    /// Queue entries waiting to be shipped.
    pub fn ship_backlog(&self) -> Result<i64, StoreError> {
        self.conn()
            .query_row("SELECT count(*) FROM ship_queue", [], |r| r.get(0))
            .ctx("ship backlog")
    }

    /// The first `limit` queue entries' rows, in queue order, each once as it is now.
    pub fn ship_batch(&self, limit: usize) -> Result<ShipBatch, StoreError> {
        let conn = self.conn();
        let entries: Vec<(i64, String, i64)> = {
            let mut stmt = conn
                .prepare_cached("SELECT id, source, row_id FROM ship_queue ORDER BY id LIMIT ?1")
                .ctx("ship queue")?;
            let rows = stmt
                .query_map(params![limit as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .ctx("ship queue")?;
            rows.collect::<rusqlite::Result<_>>().ctx("ship queue")?
        };
        let mut batch = ShipBatch {
            through: entries.last().map_or(0, |e| e.0),
            entries: entries.len(),
            ..ShipBatch::default()
        };
        let mut seen = std::collections::HashSet::new();
        for (_, source, id) in entries {
            if !seen.insert((source.clone(), id)) {
                continue;
            }
            // A row that is gone (none is deleted today) has nothing left to ship.
            match source.as_str() {
                "incidents" => batch.incidents.extend(one(
                    &conn,
                    "SELECT id, fingerprint, starts_at, alertname, labels, state, phase,
                        first_seen, ends_at, resolved_at, rule, priority, target, acked_by,
                        acked_at, slack_channel, slack_ts FROM incidents WHERE id = ?1",
                    id,
                    "ship an incident",
                    |r| ShippedIncident {
                        local_id: id,
                        fingerprint: text(r, 1),
                        starts_at: text(r, 2),
                        alertname: text(r, 3),
                        labels: text(r, 4),
                        state: text(r, 5),
                        phase: text(r, 6),
                        first_seen: text(r, 7),
                        ends_at: text(r, 8),
                        resolved_at: text(r, 9),
                        rule: text(r, 10),
                        priority: text(r, 11),
                        target: text(r, 12),
                        acked_by: text(r, 13),
                        acked_at: text(r, 14),
                        slack_channel: text(r, 15),
                        slack_ts: text(r, 16),
                    },
                )?),
                "decisions" => batch.decisions.extend(one(
                    &conn,
                    "SELECT incident_id, at, guard, verdict, reason FROM decisions WHERE id = ?1",
                    id,
                    "ship a decision",
                    |r| ShippedDecision {
                        local_id: id,
                        incident_id: r.get(0).unwrap_or_default(),
                        at: text(r, 1),
                        guard: text(r, 2),
                        verdict: text(r, 3),
                        reason: text(r, 4),
                    },
                )?),
                "steps" => batch.steps.extend(one(
                    &conn,
                    "SELECT incident_id, phase, seq, kind, started_at, ended_at, outcome, detail
                        FROM steps WHERE id = ?1",
                    id,
                    "ship a step",
                    |r| ShippedStep {
                        local_id: id,
                        incident_id: r.get(0).unwrap_or_default(),
                        phase: text(r, 1),
                        seq: text(r, 2),
                        kind: text(r, 3),
                        started_at: text(r, 4),
                        ended_at: text(r, 5),
                        outcome: text(r, 6),
                        detail: text(r, 7),
                    },
                )?),
                "runs" => batch.runs.extend(one(
                    &conn,
                    "SELECT rule, target, started_at, ended_at, outcome FROM runs
                        WHERE incident_id = ?1",
                    id,
                    "ship a run",
                    |r| ShippedRun {
                        local_id: id,
                        rule: text(r, 0),
                        target: text(r, 1),
                        started_at: text(r, 2),
                        ended_at: text(r, 3),
                        outcome: text(r, 4),
                    },
                )?),
                "outbox" => batch.messages.extend(one(
                    &conn,
                    "SELECT incident_id, sink, kind, notice, created_at, delivered_at, blocked
                        FROM outbox WHERE id = ?1",
                    id,
                    "ship a message",
                    |r| ShippedMessage {
                        local_id: id,
                        incident_id: r.get(0).unwrap_or_default(),
                        sink: text(r, 1),
                        kind: text(r, 2),
                        notice: text(r, 3),
                        created_at: text(r, 4),
                        delivered_at: text(r, 5),
                        blocked: r.get::<_, i64>(6).unwrap_or_default() != 0,
                    },
                )?),
                other => tracing::warn!(
                    source = other,
                    row = id,
                    "a ship queue entry names no journal table; skipped"
                ),
            }
        }
        Ok(batch)
    }

    /// The queue entries through `through` reached Postgres: they are done.
    pub fn shipped(&self, through: i64) -> Result<(), StoreError> {
        self.conn()
            .execute("DELETE FROM ship_queue WHERE id <= ?1", params![through])
            .ctx("mark shipped")
            .map(|_| ())
    }
}
