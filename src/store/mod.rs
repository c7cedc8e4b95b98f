//! The embedded store: one SQLite file (WAL) in the data directory, authoritative for this
//! replica. SQL lives only here, in one file per concern: `incidents` (the incident records),
//! `journal` (decisions, steps, runs, and the [`Commit`] that writes one decision point),
//! `outbox` (notices waiting for their sink), `escalation` (acknowledgements, fired tiers),
//! `intake`/`apply` (webhooks stored and applied), `precedence` (the engine's turn on the
//! connection before the intake writer's next group), `checkpoint` (the WAL's checkpoints, on
//! a thread and a connection of their own, off the lock below), `pauses` (who paused which
//! runbooks, until when), `quarantine` (damaged rows set aside), `ship` (what the fleet history has still to
//! copy to Postgres),
//! `codec` (how typed values are written).
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
//! group, before Alertmanager gets its 200, and the decision point that starts a runbook,
//! before any container is touched. The engine's other bookkeeping commits at
//! `synchronous=NORMAL`; in WAL mode a FULL commit flushes every frame before it, so after a
//! power cut at most the records since the last of those two are lost, never an acknowledged
//! alert or a started runbook.
//!
//! Rows are read into typed records; a value that does not parse is
//! [`StoreError::Corrupt`] naming the table and the row, never a default. The batches the
//! service works through (the engine's queue, the due outbox, the escalation candidates) are
//! read row by row, so that one damaged row is an error of its own and not of the batch: the
//! caller sets it aside ([`Store::quarantine_queued`], [`Store::quarantine_row`], a held
//! message) and goes on with the rest.

pub(crate) mod apply;
mod approvals;
pub mod body;
mod checkpoint;
mod codec;
mod escalation;
mod incidents;
mod intake;
mod journal;
mod outbox;
mod pauses;
mod precedence;
mod quarantine;
mod schema;
mod ship;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

pub use apply::Queued;
pub use incidents::{IncidentPage, IncidentRecord, MAX_PAGE};
pub use intake::{IntakeHandle, IntakeWriter};
pub use journal::{Commit, DecisionRecord, RunRecord, RunSummary, StepRecord};
pub use outbox::{BlockedSummary, MessageRecord, OutboxRow};
pub use pauses::{PauseEnd, PauseListing, PauseRecord};
pub use precedence::Precedence;
pub use quarantine::{QuarantineRecord, Quarantined};
pub use ship::{
    ShipBatch, ShippedDecision, ShippedIncident, ShippedMessage, ShippedRun, ShippedStep,
};

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
    #[error("no store at {path}: run `remediator serve` with this data directory first, or pass --data-dir")]
    Missing { path: PathBuf },
    #[error("the store at {path} has schema version {found}, newer than this build knows ({known}): use the remediator version that wrote it")]
    Newer {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("the store at {path} has schema version {found}, older than this build's {known}: start `remediator serve` once to migrate it")]
    Older {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("store query failed ({what}): {source}")]
    Query {
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("row {id} of table {table} is damaged (column {column}: {detail}); restore the store from a backup or repair that row")]
    Corrupt {
        table: &'static str,
        id: i64,
        column: &'static str,
        detail: String,
    },
    #[error("incident {0} was already acknowledged")]
    AlreadyAcknowledged(i64),
    #[error("the {1} button of incident {0} was already used")]
    AlreadyPressed(i64, crate::domain::Button),
    #[error("incident {0} has no approval waiting for an answer (it was answered, timed out, or never asked)")]
    NotWaiting(i64),
    #[error("the intake writer has stopped; restart the service")]
    WriterGone,
    #[error("deliveries stored by a previous version could not be applied yet (see the error logged before); new ones wait for them")]
    Backlog,
    #[cfg(test)]
    #[error("injected failure at commit {0}")]
    Injected(usize),
}

impl StoreError {
    /// The table and id of the row a [`StoreError::Corrupt`] names: a row that no retry will
    /// read, to be set aside so that the rest goes on. `None` for every other error.
    pub fn damaged_row(&self) -> Option<(&'static str, i64)> {
        match self {
            StoreError::Corrupt { table, id, .. } => Some((table, *id)),
            _ => None,
        }
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

/// Timestamps in API output, in the stored format.
pub(crate) mod ts_serde {
    use chrono::{DateTime, Utc};
    use serde::Serializer;

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::ts(*t))
    }

    pub mod opt {
        use super::*;

        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_some(&crate::store::ts(*t)),
                None => s.serialize_none(),
            }
        }
    }
}

/// Prepared statements kept per connection: more than the store has distinct statements
/// (`prepare_cached` call sites), so none is parsed twice.
const STATEMENT_CACHE: usize = 128;

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
    // One connection runs every statement of the store (intake, engine, outbox, timers,
    // API): rusqlite's default cache of 16 prepared statements thrashed under a storm, and
    // SQLite parsed and planned the hot path's statements again for every incident.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // Plans that do not depend on bound values: without this, SQLite (built with STAT4)
    // marks statements whose plan a bound value could change (`LIMIT ?`, `id = ?`, ...) as
    // expired at every new binding, and re-prepares them at their next step: a quarter of
    // the engine's time in a storm went to re-parsing its cached statements.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(|source| StoreError::Open {
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
    // What `f` committed stays committed: failing to return to NORMAL only costs speed, and
    // must not turn a stored commit into a reported failure.
    if let Err(e) = conn.pragma_update(None, "synchronous", "NORMAL") {
        tracing::error!(error = %e, "could not set synchronous=NORMAL again; later commits stay fsynced");
    }
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

pub struct Store {
    conn: Mutex<Connection>,
    /// Taken only with `conn` held (see [`apply::Identities`]).
    identities: Mutex<apply::Identities>,
    /// The engine's claim on the connection before the intake writer's next group.
    precedence: Precedence,
    path: PathBuf,
    /// The WAL's checkpoints, on a thread of their own (a store opened to serve, not a
    /// read-only one).
    _checkpointer: Option<checkpoint::Checkpointer>,
    /// Commits to fail on purpose, counted from the store's opening (tests of every commit
    /// of the engine's paths).
    #[cfg(test)]
    faults: Mutex<Faults>,
}

#[cfg(test)]
#[derive(Default)]
struct Faults {
    commits: usize,
    fail: std::collections::HashSet<usize>,
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
        let found = schema::version(&conn).map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        if found > schema::VERSION {
            return Err(StoreError::Newer {
                path,
                found,
                known: schema::VERSION,
            });
        }
        schema::migrate(&conn).map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        // Checkpoints run on their own thread, off the store's lock (see `checkpoint`); this
        // connection checkpoints only as a backstop.
        conn.pragma_update(None, "wal_autocheckpoint", checkpoint::BACKSTOP_PAGES)
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
        let checkpointer = checkpoint::Checkpointer::start(&path)?;
        Ok(Store {
            _checkpointer: Some(checkpointer),
            ..Store::with(conn, path)
        })
    }

    /// Opens an existing store read-only (`simulate`): no migration, no checkpoint, no byte of
    /// the database written (SQLite may create the empty `-wal` and the `-shm` index beside
    /// it for the read). A store of another schema version is refused, with what to do.
    pub fn open_read_only(data_dir: &Path) -> Result<Store, StoreError> {
        let path = data_dir.join(DB_FILE);
        if !path.exists() {
            return Err(StoreError::Missing { path });
        }
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        let found = schema::version(&conn).map_err(open_err)?;
        if found != schema::VERSION {
            return Err(if found > schema::VERSION {
                StoreError::Newer {
                    path,
                    found,
                    known: schema::VERSION,
                }
            } else {
                StoreError::Older {
                    path,
                    found,
                    known: schema::VERSION,
                }
            });
        }
        Ok(Store::with(conn, path))
    }

    fn with(conn: Connection, path: PathBuf) -> Store {
        Store {
            conn: Mutex::new(conn),
            identities: Mutex::default(),
            precedence: Precedence::default(),
            path,
            _checkpointer: None,
            #[cfg(test)]
            faults: Mutex::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The engine's precedence over the intake writer's next group (see [`Precedence`]).
    pub fn precedence(&self) -> &Precedence {
        &self.precedence
    }

    pub(crate) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (transactions roll back).
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fails the commits numbered in `which` (0 is the first commit after this call).
    #[cfg(test)]
    pub(crate) fn fail_commits(&self, which: impl IntoIterator<Item = usize>) {
        let mut f = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        let base = f.commits;
        f.fail = which.into_iter().map(|n| base + n).collect();
    }

    /// Injected failures not yet reached.
    #[cfg(test)]
    pub(crate) fn faults_left(&self) -> usize {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .fail
            .len()
    }

    /// Commits counted so far.
    #[cfg(test)]
    pub(crate) fn commits(&self) -> usize {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .commits
    }

    /// Called at every engine-side commit; fails the ones a test asked for.
    fn fault_point(&self) -> Result<(), StoreError> {
        #[cfg(test)]
        {
            let mut f = self.faults.lock().unwrap_or_else(|p| p.into_inner());
            let n = f.commits;
            f.commits += 1;
            if f.fail.remove(&n) {
                return Err(StoreError::Injected(n));
            }
        }
        Ok(())
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

#[cfg(test)]
mod tests;
