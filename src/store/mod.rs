//! The embedded store: one SQLite file (WAL) in the data directory, authoritative for this
//! replica. SQL lives only here.
//!
//! Two kinds of connection:
//! - the intake writer, a dedicated OS thread that takes webhook bodies from a channel and
//!   commits them in groups (one fsync for many requests), answering each sender only after
//!   its row is durable ([`IntakeWriter`]);
//! - the [`Store`], one connection behind a mutex, for the engine and the API. Its calls are
//!   local and take microseconds, so the engine makes them inline.
//!
//! Durability: `journal_mode=WAL` with `synchronous=FULL`, so a committed intake row survives
//! a process crash and a power cut. Processing marks each intake row in the same transaction
//! that applies it to incidents, so a crash never applies one twice.

mod intake;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::alert::{AlertStatus, Notification};

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
}

impl StoreError {
    /// Every store error is worth retrying: the file may come back (disk freed, lock released).
    pub fn is_retriable(&self) -> bool {
        true
    }
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
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(())
    };
    setup().map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(conn)
}

/// What applying a delivery did to an incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncidentEvent {
    /// A new firing: the engine decides what to do.
    Opened(i64),
    /// An open incident's alert resolved.
    Resolved(i64),
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
    pub kind: String,
    pub text: String,
    pub created_at: String,
}

pub struct Store {
    conn: Mutex<Connection>,
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
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A cheap query, for readiness.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.conn()
            .query_row(
                "SELECT count(*) FROM intake WHERE processed_at IS NULL",
                [],
                |r| r.get::<_, i64>(0),
            )
            .ctx("ping")
            .map(|_| ())
    }

    /// Stores one delivery through this connection (tests and drills; the HTTP path uses the
    /// group-commit [`IntakeWriter`]).
    pub fn insert_intake(&self, body: &[u8], now: DateTime<Utc>) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO intake (received_at, body) VALUES (?1, ?2)",
            params![ts(now), body],
        )
        .ctx("insert intake")?;
        Ok(conn.last_insert_rowid())
    }

    /// Unprocessed deliveries, oldest first.
    pub fn pending_intake(&self, limit: usize) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, body FROM intake WHERE processed_at IS NULL ORDER BY id LIMIT ?1",
            )
            .ctx("pending intake")?;
        let rows = stmt
            .query_map([limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))
            .ctx("pending intake")?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .ctx("pending intake")
    }

    /// Applies one delivery to the incidents and marks it processed, in one transaction.
    /// `notification` is `None` when the stored body no longer parses (it is then only marked).
    pub fn apply_delivery(
        &self,
        intake_id: i64,
        notification: Option<&Notification>,
        now: DateTime<Utc>,
    ) -> Result<Vec<IncidentEvent>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().ctx("begin delivery")?;
        let mut events = Vec::new();
        let now_s = ts(now);
        for alert in notification
            .map(|n| n.alerts.as_slice())
            .unwrap_or_default()
        {
            let starts = ts(alert.starts_at);
            let existing: Option<(i64, String)> = tx
                .query_row(
                    "SELECT id, state FROM incidents WHERE fingerprint = ?1 AND starts_at = ?2",
                    params![alert.fingerprint.as_str(), starts],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .ctx("find incident")?;
            let ends = alert.ends_at.map(ts);
            match (existing, alert.status) {
                (Some((id, state)), status) => {
                    tx.execute(
                        "UPDATE incidents SET deliveries = deliveries + 1, last_seen = ?2, annotations = ?3 WHERE id = ?1",
                        params![id, now_s, json(&alert.annotations)],
                    )
                    .ctx("touch incident")?;
                    if status == AlertStatus::Resolved && state == "open" {
                        tx.execute(
                            "UPDATE incidents SET state = 'resolved', ends_at = ?2, resolved_at = ?3 WHERE id = ?1",
                            params![id, ends.clone().unwrap_or_else(|| now_s.clone()), now_s],
                        )
                        .ctx("resolve incident")?;
                        events.push(IncidentEvent::Resolved(id));
                    }
                }
                (None, status) => {
                    let (state, phase) = match status {
                        AlertStatus::Firing => ("open", "new"),
                        // Resolved before we ever saw it firing: record it, act on nothing.
                        AlertStatus::Resolved => ("resolved", "missed"),
                    };
                    tx.execute(
                        "INSERT INTO incidents (fingerprint, starts_at, alertname, labels, annotations, group_key,
                             state, phase, deliveries, first_seen, last_seen, ends_at, resolved_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, ?9, ?9, ?10, ?11)",
                        params![
                            alert.fingerprint.as_str(),
                            starts,
                            alert.name(),
                            json(&alert.labels),
                            json(&alert.annotations),
                            notification.map(|n| n.group_key.as_str()).unwrap_or(""),
                            state,
                            phase,
                            now_s,
                            ends,
                            (status == AlertStatus::Resolved).then(|| now_s.clone()),
                        ],
                    )
                    .ctx("insert incident")?;
                    if status == AlertStatus::Firing {
                        events.push(IncidentEvent::Opened(tx.last_insert_rowid()));
                    }
                }
            }
        }
        tx.execute(
            "UPDATE intake SET processed_at = ?2 WHERE id = ?1",
            params![intake_id, now_s],
        )
        .ctx("mark intake processed")?;
        tx.commit().ctx("commit delivery")?;
        Ok(events)
    }

    pub fn incident(&self, id: i64) -> Result<Option<IncidentRecord>, StoreError> {
        let conn = self.conn();
        conn.query_row(
            &format!("{INCIDENT_SELECT} WHERE id = ?1"),
            [id],
            incident_row,
        )
        .optional()
        .ctx("get incident")
    }

    /// Newest first; `state` is `open` or `resolved`.
    pub fn list_incidents(
        &self,
        state: Option<&str>,
        limit: usize,
    ) -> Result<Vec<IncidentRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "{INCIDENT_SELECT} WHERE (?1 IS NULL OR state = ?1) ORDER BY id DESC LIMIT ?2"
            ))
            .ctx("list incidents")?;
        let rows = stmt
            .query_map(params![state, limit as i64], incident_row)
            .ctx("list incidents")?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .ctx("list incidents")
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

    pub fn start_run(
        &self,
        id: i64,
        rule: &str,
        target: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO runs (incident_id, rule, target, started_at) VALUES (?1, ?2, ?3, ?4)",
                params![id, rule, target, ts(now)],
            )
            .ctx("start run")
            .map(|_| ())
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

    /// Stores a message for the notifiers; it is never dropped.
    pub fn enqueue_message(
        &self,
        id: i64,
        kind: &str,
        text: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO outbox (incident_id, kind, text, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![id, kind, text, ts(now)],
        )
        .ctx("enqueue message")?;
        Ok(conn.last_insert_rowid())
    }

    pub fn messages(&self, id: i64) -> Result<Vec<MessageRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT id, incident_id, kind, text, created_at FROM outbox WHERE incident_id = ?1 ORDER BY id")
            .ctx("messages")?;
        let rows = stmt
            .query_map([id], |r| {
                Ok(MessageRecord {
                    id: r.get(0)?,
                    incident_id: r.get(1)?,
                    kind: r.get(2)?,
                    text: r.get(3)?,
                    created_at: r.get(4)?,
                })
            })
            .ctx("messages")?;
        rows.collect::<rusqlite::Result<Vec<_>>>().ctx("messages")
    }

    /// Counts for `/metrics`: unprocessed intake rows and undelivered outbox messages.
    pub fn backlog(&self) -> Result<(i64, i64), StoreError> {
        let conn = self.conn();
        let intake = conn
            .query_row(
                "SELECT count(*) FROM intake WHERE processed_at IS NULL",
                [],
                |r| r.get(0),
            )
            .ctx("intake backlog")?;
        let outbox = conn
            .query_row(
                "SELECT count(*) FROM outbox WHERE delivered_at IS NULL",
                [],
                |r| r.get(0),
            )
            .ctx("outbox backlog")?;
        Ok((intake, outbox))
    }
}

fn json(v: &impl Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "{}".into())
}

const INCIDENT_SELECT: &str = "SELECT id, fingerprint, alertname, state, phase, starts_at, ends_at, resolved_at,
    first_seen, last_seen, deliveries, rule, priority, target, group_key, labels, annotations FROM incidents";

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
    })
}

#[cfg(test)]
mod tests;
