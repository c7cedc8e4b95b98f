//! The embedded store: one SQLite file (WAL) in the data directory, authoritative for this
//! replica. SQL lives only here.
//!
//! One connection behind a mutex serves the whole process:
//! - the intake writer, a dedicated OS thread that takes webhook bodies from a channel and
//!   commits them in groups (one fsync for many requests), answering each sender only after
//!   its row is durable ([`IntakeWriter`]);
//! - the engine and the API, through [`Store`]'s methods. They are local and take
//!   microseconds, so the engine makes them inline.
//!
//! One connection, not one per user: SQLite allows one writer at a time, and when several
//! connections compete its busy handler sleeps in steps of up to 100 ms and a deferred
//! transaction that wants to write fails at once with "database is locked". Our own mutex
//! hands the connection over as soon as it is free.
//!
//! Durability: `journal_mode=WAL`. Every commit survives a process crash. Two commits are
//! also fsynced (`synchronous=FULL`) because something outside depends on them: an intake
//! group, before Alertmanager gets its 200, and the start of a runbook, before any container
//! is touched. The engine's other bookkeeping commits at `synchronous=NORMAL`; in WAL mode a
//! FULL commit flushes every frame before it, so after a power cut at most the records since
//! the last of those two are lost, never an acknowledged alert or a started runbook.
//! Processing advances the intake cursor in the same transaction that applies the deliveries
//! to incidents, so a crash never applies one twice.

mod apply;
pub mod body;
mod intake;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

pub use intake::{IntakeHandle, IntakeWriter};

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "remediator.db";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}: {source}; check that the data directory exists and is writable")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot create the data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store query failed ({what}): {source}")]
    Query {
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("the intake writer has stopped; restart the service")]
    WriterGone,
    #[error("deliveries stored by a previous version could not be applied yet (see the error logged before); new ones wait for them")]
    Backlog,
}

trait Ctx<T> {
    fn ctx(self, what: &'static str) -> Result<T, StoreError>;
}

impl<T> Ctx<T> for rusqlite::Result<T> {
    fn ctx(self, what: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Query { what, source })
    }
}

/// Fixed-width UTC text, so that text order is time order in SQL.
pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

pub(crate) fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let setup = || -> rusqlite::Result<()> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // 2 MiB of page cache is plenty for this working set and keeps the RSS down.
        conn.pragma_update(None, "cache_size", -2048)?;
        Ok(())
    };
    setup().map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(conn)
}

/// Runs `f` (which commits) with this connection's commits fsynced; see the module docs.
pub(crate) fn fsynced<T>(
    conn: &mut Connection,
    f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.pragma_update(None, "synchronous", "FULL")
        .ctx("synchronous=FULL")?;
    let out = f(conn);
    conn.pragma_update(None, "synchronous", "NORMAL")
        .ctx("synchronous=NORMAL")?;
    out
}

/// What applying a delivery did to an incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncidentEvent {
    /// A new firing: the engine decides what to do.
    Opened(i64),
    /// An open incident's alert resolved.
    Resolved(i64),
}

/// Work stored but not yet done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Deliveries stored but not applied to incidents (only after an upgrade).
    pub intake: i64,
    /// Opened and resolved incidents the engine has not handled yet.
    pub engine: i64,
    /// Messages not yet delivered.
    pub outbox: i64,
}

/// An incident as stored and as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentRecord {
    pub id: i64,
    pub fingerprint: String,
    pub alertname: String,
    pub state: String,
    pub phase: String,
    pub starts_at: String,
    pub ends_at: Option<String>,
    pub resolved_at: Option<String>,
    pub first_seen: String,
    pub last_seen: String,
    pub deliveries: i64,
    pub rule: Option<String>,
    pub priority: Option<String>,
    pub target: Option<String>,
    pub group_key: String,
    pub labels: serde_json::Value,
    pub annotations: serde_json::Value,
    /// Seconds from the alert's start to its end, once resolved.
    pub time_to_recover_seconds: Option<f64>,
    pub acked_by: Option<String>,
    pub acked_at: Option<String>,
    /// The Slack channel and `ts` of the incident's root message, once posted.
    pub slack_channel: Option<String>,
    pub slack_ts: Option<String>,
    /// The intake id of the latest delivery that carried this alert (the `delivery` of the
    /// webhook's response).
    pub last_delivery: Option<i64>,
}

/// A guard's (or the matcher's) stored decision.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DecisionRecord {
    pub at: String,
    pub guard: String,
    pub verdict: String,
    pub reason: String,
}

/// A step's stored record.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StepRecord {
    pub id: i64,
    pub phase: String,
    pub seq: i64,
    pub kind: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub outcome: String,
    pub detail: String,
}

/// A runbook run, as the rate limiter replays it after a restart.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub incident_id: i64,
    pub rule: String,
    pub target: String,
    pub started_at: DateTime<Utc>,
}

/// A message waiting for the notifiers (delivered by the notify layer).
#[derive(Debug, Clone, Serialize)]
pub struct MessageRecord {
    pub id: i64,
    pub incident_id: i64,
    pub sink: String,
    pub kind: String,
    pub text: String,
    pub created_at: String,
    /// When it was sent (or logged); `None` while pending.
    pub delivered_at: Option<String>,
    pub attempts: i64,
    pub last_error: Option<String>,
}

/// A message due for delivery.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub incident_id: i64,
    pub kind: String,
    pub text: String,
    pub data: serde_json::Value,
    pub attempts: i64,
}

/// Messages that a sink refused for good, by error, until a reload retries them.
#[derive(Debug, Clone, Serialize)]
pub struct BlockedSummary {
    pub sink: String,
    pub error: String,
    pub messages: i64,
}

pub struct Store {
    conn: Mutex<Connection>,
    /// Taken only with `conn` held (see [`apply::Identities`]).
    identities: Mutex<apply::Identities>,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store in `data_dir` and brings its schema up to date.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::CreateDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        let conn = open_connection(&path)?;
        schema::migrate(&conn).map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        Ok(Store {
            conn: Mutex::new(conn),
            identities: Mutex::default(),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A cheap query, for readiness.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.conn()
            .query_row(
                "SELECT count(*) FROM intake WHERE id > (SELECT position FROM cursors WHERE name = 'engine')",
                [],
                |r| r.get::<_, i64>(0),
            )
            .ctx("ping")
            .map(|_| ())
    }

    /// Stores a body without applying it, as versions before the engine queue did (tests of
    /// the backlog path; everything else uses [`Store::ingest`] or the [`IntakeWriter`]).
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

    /// One incident, with its latest annotations.
    pub fn incident(&self, id: i64) -> Result<Option<IncidentRecord>, StoreError> {
        let conn = self.conn();
        let mut inc = conn
            .prepare_cached(&format!("{INCIDENT_SELECT} WHERE id = ?1"))
            .ctx("get incident")?
            .query_row([id], incident_row)
            .optional()
            .ctx("get incident")?;
        if let Some(inc) = inc.as_mut() {
            latest_annotations(&conn, inc)?;
        }
        Ok(inc)
    }

    /// At most `limit` incidents, newest first, with ids below `before` when given: keyset
    /// paging, where a page's last id is the next page's `before`. `state` is `open` or
    /// `resolved`. Each form walks an index (the rowid, or `incidents_state (state, id)`) from
    /// `before` down, so a page costs the same however deep it is.
    pub fn list_incidents(
        &self,
        state: Option<&str>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<IncidentRecord>, StoreError> {
        let conn = self.conn();
        let before = before.unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match state {
            None => conn
                .prepare_cached(&format!(
                    "{INCIDENT_SELECT} WHERE id < ?1 ORDER BY id DESC LIMIT ?2"
                ))
                .and_then(|mut stmt| {
                    stmt.query_map(params![before, limit], incident_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                }),
            Some(state) => conn
                .prepare_cached(&format!(
                    "{INCIDENT_SELECT} WHERE state = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3"
                ))
                .and_then(|mut stmt| {
                    stmt.query_map(params![state, before, limit], incident_row)?
                        .collect::<rusqlite::Result<Vec<_>>>()
                }),
        };
        let mut list = rows.ctx("list incidents")?;
        for inc in &mut list {
            latest_annotations(&conn, inc)?;
        }
        Ok(list)
    }

    /// Incidents in a phase, oldest first (crash recovery).
    pub fn incidents_in_phase(&self, phase: &str) -> Result<Vec<i64>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT id FROM incidents WHERE phase = ?1 ORDER BY id")
            .ctx("incidents in phase")?;
        let rows = stmt
            .query_map([phase], |r| r.get(0))
            .ctx("incidents in phase")?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .ctx("incidents in phase")
    }

    pub fn set_phase(&self, id: i64, phase: &str) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE incidents SET phase = ?2 WHERE id = ?1",
                params![id, phase],
            )
            .ctx("set phase")
            .map(|_| ())
    }

    pub fn set_match(
        &self,
        id: i64,
        rule: &str,
        priority: &str,
        target: Option<&str>,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE incidents SET rule = ?2, priority = ?3, target = ?4 WHERE id = ?1",
                params![id, rule, priority, target],
            )
            .ctx("set match")
            .map(|_| ())
    }

    pub fn record_decision(
        &self,
        id: i64,
        guard: &str,
        verdict: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO decisions (incident_id, at, guard, verdict, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, ts(now), guard, verdict, reason],
            )
            .ctx("record decision")
            .map(|_| ())
    }

    pub fn decisions(&self, id: i64) -> Result<Vec<DecisionRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT at, guard, verdict, reason FROM decisions WHERE incident_id = ?1 ORDER BY id")
            .ctx("decisions")?;
        let rows = stmt
            .query_map([id], |r| {
                Ok(DecisionRecord {
                    at: r.get(0)?,
                    guard: r.get(1)?,
                    verdict: r.get(2)?,
                    reason: r.get(3)?,
                })
            })
            .ctx("decisions")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().ctx("decisions")
    }

    pub fn start_step(
        &self,
        id: i64,
        phase: &str,
        seq: usize,
        kind: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO steps (incident_id, phase, seq, kind, started_at, outcome, detail) VALUES (?1, ?2, ?3, ?4, ?5, 'running', '')",
            params![id, phase, seq as i64, kind, ts(now)],
        )
        .ctx("start step")?;
        Ok(conn.last_insert_rowid())
    }

    pub fn finish_step(
        &self,
        step_id: i64,
        outcome: &str,
        detail: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE steps SET outcome = ?2, detail = ?3, ended_at = ?4 WHERE id = ?1",
                params![step_id, outcome, detail, ts(now)],
            )
            .ctx("finish step")
            .map(|_| ())
    }

    pub fn steps(&self, id: i64) -> Result<Vec<StepRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, phase, seq, kind, started_at, ended_at, outcome, detail FROM steps WHERE incident_id = ?1 ORDER BY id",
            )
            .ctx("steps")?;
        let rows = stmt
            .query_map([id], |r| {
                Ok(StepRecord {
                    id: r.get(0)?,
                    phase: r.get(1)?,
                    seq: r.get(2)?,
                    kind: r.get(3)?,
                    started_at: r.get(4)?,
                    ended_at: r.get(5)?,
                    outcome: r.get(6)?,
                    detail: r.get(7)?,
                })
            })
            .ctx("steps")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().ctx("steps")
    }

    /// Marks steps left `running` by a crash as `interrupted`.
    pub fn interrupt_running_steps(
        &self,
        id: i64,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        self.conn()
            .execute(
                "UPDATE steps SET outcome = 'interrupted', ended_at = ?2, detail = 'the service stopped while this step ran' WHERE incident_id = ?1 AND outcome = 'running'",
                params![id, ts(now)],
            )
            .ctx("interrupt steps")
    }

    /// Records that a runbook starts (run row and phase `remediating`), fsynced: the next thing
    /// is acting on a container, and a restart must know it happened.
    pub fn start_run(
        &self,
        id: i64,
        rule: &str,
        target: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        fsynced(&mut self.conn(), |conn| {
            let tx = conn.transaction().ctx("begin run")?;
            tx.execute(
                "INSERT INTO runs (incident_id, rule, target, started_at) VALUES (?1, ?2, ?3, ?4)",
                params![id, rule, target, ts(now)],
            )
            .ctx("start run")?;
            tx.execute(
                "UPDATE incidents SET phase = 'remediating' WHERE id = ?1",
                [id],
            )
            .ctx("start run")?;
            tx.commit().ctx("commit run")
        })
    }

    pub fn finish_run(&self, id: i64, outcome: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE runs SET outcome = ?2, ended_at = ?3 WHERE incident_id = ?1",
                params![id, outcome, ts(now)],
            )
            .ctx("finish run")
            .map(|_| ())
    }

    /// Runs started at or after `since`, oldest first.
    pub fn runs_since(&self, since: DateTime<Utc>) -> Result<Vec<RunRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT incident_id, rule, target, started_at FROM runs WHERE started_at >= ?1 ORDER BY started_at")
            .ctx("runs since")?;
        let rows = stmt
            .query_map([ts(since)], |r| {
                let started: String = r.get(3)?;
                Ok(RunRecord {
                    incident_id: r.get(0)?,
                    rule: r.get(1)?,
                    target: r.get(2)?,
                    started_at: parse_ts(&started).unwrap_or_default(),
                })
            })
            .ctx("runs since")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().ctx("runs since")
    }

    /// How many runs of `rule` on `target` started at or after `since`.
    pub fn count_runs(
        &self,
        rule: &str,
        target: &str,
        since: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        self.conn()
            .query_row(
                "SELECT count(*) FROM runs WHERE rule = ?1 AND target = ?2 AND started_at >= ?3",
                params![rule, target, ts(since)],
                |r| r.get(0),
            )
            .ctx("count runs")
    }

    /// How many incidents of this fingerprint started at or after `since` (flapping).
    pub fn count_firings(
        &self,
        fingerprint: &str,
        since: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        self.conn()
            .query_row(
                "SELECT count(*) FROM incidents WHERE fingerprint = ?1 AND first_seen >= ?2",
                params![fingerprint, ts(since)],
                |r| r.get(0),
            )
            .ctx("count firings")
    }

    /// Another open incident of the same rule and target that already ran or is running.
    pub fn open_run_for(
        &self,
        rule: &str,
        target: &str,
        except: i64,
    ) -> Result<Option<i64>, StoreError> {
        self.conn()
            .query_row(
                "SELECT r.incident_id FROM runs r JOIN incidents i ON i.id = r.incident_id
                 WHERE r.rule = ?1 AND r.target = ?2 AND i.state = 'open' AND i.id != ?3
                 ORDER BY r.incident_id LIMIT 1",
                params![rule, target, except],
                |r| r.get(0),
            )
            .optional()
            .ctx("open run for")
    }

    /// Stores a Slack message for the incident's thread; it is never dropped.
    pub fn enqueue_message(
        &self,
        id: i64,
        kind: &str,
        text: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        self.enqueue(id, "slack", kind, text, &serde_json::Value::Null, now)
    }

    /// Stores a message for one sink (`slack`, `pagerduty`), with structured data for it.
    pub fn enqueue(
        &self,
        id: i64,
        sink: &str,
        kind: &str,
        text: &str,
        data: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let conn = self.conn();
        let data = if data.is_null() {
            "{}".to_string()
        } else {
            data.to_string()
        };
        conn.execute(
            "INSERT INTO outbox (incident_id, sink, kind, text, data, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![id, sink, kind, text, data, ts(now)],
        )
        .ctx("enqueue message")?;
        Ok(conn.last_insert_rowid())
    }

    /// For each incident, its oldest undelivered message of `sink` if it is due: later
    /// messages wait behind it, so an incident's messages go out in order.
    pub fn due_outbox(
        &self,
        sink: &str,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT o.id, o.incident_id, o.kind, o.text, o.data, o.attempts FROM outbox o
                 WHERE o.sink = ?1 AND o.delivered_at IS NULL AND o.blocked = 0
                   AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= ?2)
                   AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.sink = o.sink AND p.incident_id = o.incident_id
                                   AND p.delivered_at IS NULL AND p.id < o.id)
                 ORDER BY o.id LIMIT ?3",
            )
            .ctx("due outbox")?;
        let rows = stmt
            .query_map(params![sink, ts(now), limit as i64], |r| {
                let data: String = r.get(4)?;
                Ok(OutboxRow {
                    id: r.get(0)?,
                    incident_id: r.get(1)?,
                    kind: r.get(2)?,
                    text: r.get(3)?,
                    data: serde_json::from_str(&data).unwrap_or_default(),
                    attempts: r.get(5)?,
                })
            })
            .ctx("due outbox")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().ctx("due outbox")
    }

    pub fn outbox_delivered(
        &self,
        msg: i64,
        result: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE outbox SET delivered_at = ?2, result = ?3, attempts = attempts + 1, last_error = NULL WHERE id = ?1",
                params![msg, ts(now), result],
            )
            .ctx("outbox delivered")
            .map(|_| ())
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

    /// Holds a message the sink refused for good; it and the incident's later messages wait
    /// for [`Store::outbox_unblock_all`].
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
                "SELECT sink, coalesce(last_error, ''), count(*) FROM outbox WHERE blocked = 1 AND delivered_at IS NULL
                 GROUP BY sink, last_error ORDER BY sink",
            )
            .ctx("outbox blocked")?;
        let rows = stmt
            .query_map([], |r| {
                Ok(BlockedSummary {
                    sink: r.get(0)?,
                    error: r.get(1)?,
                    messages: r.get(2)?,
                })
            })
            .ctx("outbox blocked")?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .ctx("outbox blocked")
    }

    /// Whether the incident has a message of this sink and kind (sent or not).
    /// Whether the incident has a decision recorded under `guard`.
    pub fn has_decision(&self, id: i64, guard: &str) -> Result<bool, StoreError> {
        self.conn()
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM decisions WHERE incident_id = ?1 AND guard = ?2)",
            )
            .ctx("has decision")?
            .query_row(params![id, guard], |r| r.get(0))
            .ctx("has decision")
    }

    pub fn has_message(&self, id: i64, sink: &str, kind: &str) -> Result<bool, StoreError> {
        self.conn()
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM outbox WHERE incident_id = ?1 AND sink = ?2 AND kind = ?3)",
                params![id, sink, kind],
                |r| r.get(0),
            )
            .ctx("has message")
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

    /// Records the first acknowledgement; returns false when it was already acknowledged.
    pub fn acknowledge(&self, id: i64, by: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.conn()
            .execute(
                "UPDATE incidents SET acked_by = ?2, acked_at = ?3 WHERE id = ?1 AND acked_by IS NULL",
                params![id, by, ts(now)],
            )
            .ctx("acknowledge")
            .map(|n| n == 1)
    }

    /// Open, unacknowledged incidents that matched a rule (the escalation timers' work).
    pub fn escalation_candidates(&self) -> Result<Vec<IncidentRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "{INCIDENT_SELECT} WHERE state = 'open' AND acked_by IS NULL AND rule IS NOT NULL ORDER BY id"
            ))
            .ctx("escalation candidates")?;
        let rows = stmt
            .query_map([], incident_row)
            .ctx("escalation candidates")?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .ctx("escalation candidates")
    }

    /// Marks a tier as fired; false if it already was (so a restart never fires it twice).
    pub fn fire_tier(&self, id: i64, tier: usize, now: DateTime<Utc>) -> Result<bool, StoreError> {
        self.conn()
            .execute(
                "INSERT OR IGNORE INTO tiers_fired (incident_id, tier, at) VALUES (?1, ?2, ?3)",
                params![id, tier as i64, ts(now)],
            )
            .ctx("fire tier")
            .map(|n| n == 1)
    }

    pub fn messages(&self, id: i64) -> Result<Vec<MessageRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, incident_id, sink, kind, text, created_at, delivered_at, attempts, last_error
                 FROM outbox WHERE incident_id = ?1 ORDER BY id",
            )
            .ctx("messages")?;
        let rows = stmt
            .query_map([id], |r| {
                Ok(MessageRecord {
                    id: r.get(0)?,
                    incident_id: r.get(1)?,
                    sink: r.get(2)?,
                    kind: r.get(3)?,
                    text: r.get(4)?,
                    created_at: r.get(5)?,
                    delivered_at: r.get(6)?,
                    attempts: r.get(7)?,
                    last_error: r.get(8)?,
                })
            })
            .ctx("messages")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().ctx("messages")
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

    /// Counts for `/metrics` and `/-/ready`.
    pub fn backlog(&self) -> Result<Backlog, StoreError> {
        let conn = self.conn();
        let count = |sql: &str, what: &'static str| -> Result<i64, StoreError> {
            conn.query_row(sql, [], |r| r.get(0)).ctx(what)
        };
        Ok(Backlog {
            intake: count(
                "SELECT count(*) FROM intake WHERE id > (SELECT position FROM cursors WHERE name = 'engine')",
                "intake backlog",
            )?,
            engine: count("SELECT count(*) FROM engine_queue", "engine queue")?,
            outbox: count(
                "SELECT count(*) FROM outbox WHERE delivered_at IS NULL",
                "outbox backlog",
            )?,
        })
    }
}

pub(super) fn json(v: &impl Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "{}".into())
}

const INCIDENT_SELECT: &str =
    "SELECT id, fingerprint, alertname, state, phase, starts_at, ends_at, resolved_at,
    first_seen, seen.last_seen, seen.deliveries, rule, priority, target, group_key, labels,
    annotations, acked_by, acked_at, slack_channel, slack_ts, seen.last_intake_id
    FROM incidents JOIN incident_seen AS seen ON seen.incident_id = incidents.id";

/// Repeats do not rewrite an incident's row: while it is open, its latest annotations are the
/// ones in the body of its latest delivery (the stored row keeps those it opened with, and
/// those it resolved with).
fn latest_annotations(conn: &Connection, inc: &mut IncidentRecord) -> Result<(), StoreError> {
    let Some(intake_id) = inc.last_delivery.filter(|_| inc.state == "open") else {
        return Ok(());
    };
    let row: Option<(Vec<u8>, Option<String>)> = conn
        .prepare_cached("SELECT body, encoding FROM intake WHERE id = ?1")
        .ctx("latest delivery")?
        .query_row([intake_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .ctx("latest delivery")?;
    let found = row.and_then(|(stored, encoding)| {
        let json = body::decode(&stored, encoding.as_deref()).ok()?;
        crate::alert::annotations_of(&json, &inc.fingerprint, parse_ts(&inc.starts_at)?)
    });
    if let Some(annotations) = found {
        inc.annotations = annotations;
    }
    Ok(())
}

fn incident_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<IncidentRecord> {
    let starts_at: String = r.get(5)?;
    let ends_at: Option<String> = r.get(6)?;
    let state: String = r.get(3)?;
    let ttr = match (
        state.as_str(),
        parse_ts(&starts_at),
        ends_at.as_deref().and_then(parse_ts),
    ) {
        ("resolved", Some(s), Some(e)) => Some((e - s).num_milliseconds() as f64 / 1000.0),
        _ => None,
    };
    let labels: String = r.get(15)?;
    let annotations: String = r.get(16)?;
    Ok(IncidentRecord {
        id: r.get(0)?,
        fingerprint: r.get(1)?,
        alertname: r.get(2)?,
        state,
        phase: r.get(4)?,
        starts_at,
        ends_at,
        resolved_at: r.get(7)?,
        first_seen: r.get(8)?,
        last_seen: r.get(9)?,
        deliveries: r.get(10)?,
        rule: r.get(11)?,
        priority: r.get(12)?,
        target: r.get(13)?,
        group_key: r.get(14)?,
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        annotations: serde_json::from_str(&annotations).unwrap_or_default(),
        time_to_recover_seconds: ttr,
        acked_by: r.get(17)?,
        acked_at: r.get(18)?,
        slack_channel: r.get(19)?,
        slack_ts: r.get(20)?,
        last_delivery: r.get(21)?,
    })
}

#[cfg(test)]
mod tests;
