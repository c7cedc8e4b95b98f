//! The fleet history: every replica copies its journal (incidents, decisions, steps, runs,
//! messages) to one Postgres, and the API reads the fleet's incidents from it.
//! tokio-postgres and deadpool-postgres are named only here (and `actions`' `check_postgres`
//! probe).
//!
//! - `schema`: the remote schema's versioned migrations; a newer remote schema is refused.
//! - `shipper`: the task that ships the local ship queue (`store::ship`) in batches, in local
//!   order, idempotently (`ON CONFLICT (replica_id, local_id)`), backing off while Postgres
//!   is down, slow or refusing. It runs beside the engine and never holds it, the intake or
//!   the outbox: they only ever write the local store.
//! - `fleet`: the fleet's incidents, one row per identity `(fingerprint, startsAt)`.
//!
//! The password (from the URL or `postgres.password_file`) is never logged: the server is
//! shown as `postgres://USER@HOST:PORT/DB`, and every error text is scrubbed of it.

mod fleet;
mod schema;
mod shipper;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::store::StoreError;

pub use fleet::{parse_cursor, FleetIncident, FleetPage, FleetReplica};

/// `postgres.*`: where the fleet history lives. No `url`: no history, nothing shipped.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresSettings {
    /// `postgres://USER[:PASSWORD]@HOST:PORT/DATABASE` (`REMEDIATOR_POSTGRES__URL`).
    pub url: Option<SecretString>,
    /// A file holding the password (its first line); wins over a password in the URL.
    pub password_file: Option<PathBuf>,
    /// Journal changes per shipped batch (one remote transaction).
    pub batch: usize,
    /// How long connecting, or shipping one batch, may take before it counts as a failure.
    #[serde(with = "crate::domain::duration::serde_text")]
    pub timeout: Duration,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        PostgresSettings {
            url: None,
            password_file: None,
            batch: 500,
            timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("postgres.url is not a valid connection string ({0}): use postgres://USER@HOST:PORT/DATABASE, with the password in postgres.password_file")]
    Url(String),
    #[error("cannot read postgres.password_file {path}: {source}; make it readable by the service, or put the password in postgres.url")]
    PasswordFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the fleet history at {target} cannot be reached: {detail}")]
    Unreachable { target: String, detail: String },
    #[error("the fleet history at {target} refused {what}: {detail}")]
    Refused {
        target: String,
        what: &'static str,
        detail: String,
    },
    #[error("the fleet history at {target} has schema version {found}, newer than this build knows ({known}): run the remediator version the other replicas run")]
    Newer {
        target: String,
        found: i64,
        known: i64,
    },
    #[error("reading the local journal to ship failed: {0}")]
    Store(#[from] StoreError),
}

/// How the history is doing, as `/-/ready` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShipState {
    /// Not reached yet since the start.
    Starting,
    /// Everything queued so far is in Postgres.
    CaughtUp,
    /// Shipping: a backlog remains.
    Behind,
    /// Postgres does not answer; the backlog waits.
    Unreachable,
    /// Postgres answers but refuses (authentication, a newer schema, a constraint).
    Refused,
}

/// The shipper's state for `/-/ready` and `/metrics`.
#[derive(Debug, Clone, Serialize)]
pub struct ShipStatus {
    pub state: ShipState,
    /// `postgres://USER@HOST:PORT/DB`, never the password.
    pub target: String,
    pub replica: String,
    /// Journal changes not yet in Postgres.
    pub backlog: i64,
    #[serde(with = "crate::store::ts_serde::opt")]
    pub last_shipped: Option<DateTime<Utc>>,
    /// The last failure (scrubbed of the password), until a batch goes.
    pub error: Option<String>,
}

/// The fleet history: the pool, this replica's id, and the shipper's status.
pub struct History {
    pool: Pool,
    replica: String,
    target: String,
    password: Option<SecretString>,
    batch: usize,
    timeout: Duration,
    status: Mutex<ShipStatus>,
}

impl History {
    /// Reads the settings (and the password file) and builds the pool; connects to nothing
    /// yet, so a Postgres that is down delays no start. `None` without `postgres.url`.
    pub fn new(
        settings: &PostgresSettings,
        replica: &str,
    ) -> Result<Option<History>, HistoryError> {
        let Some(url) = &settings.url else {
            return Ok(None);
        };
        let file_password = match &settings.password_file {
            Some(path) => Some(read_password(path)?),
            None => None,
        };
        let url_password = url_password(url.expose_secret());
        let scrub_with = file_password.clone().or_else(|| url_password.clone());
        let mut config: tokio_postgres::Config =
            url.expose_secret()
                .parse()
                .map_err(|e: tokio_postgres::Error| {
                    HistoryError::Url(scrub(&e.to_string(), scrub_with.as_ref()))
                })?;
        if let Some(p) = &file_password {
            config.password(p.expose_secret());
        }
        config.connect_timeout(settings.timeout);
        config.application_name(format!("remediator {replica}"));
        let target = describe(&config);
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(4)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(settings.timeout))
            .create_timeout(Some(settings.timeout))
            .recycle_timeout(Some(settings.timeout))
            .build()
            .map_err(|e| HistoryError::Url(e.to_string()))?;
        Ok(Some(History {
            pool,
            replica: replica.to_owned(),
            status: Mutex::new(ShipStatus {
                state: ShipState::Starting,
                target: target.clone(),
                replica: replica.to_owned(),
                backlog: 0,
                last_shipped: None,
                error: None,
            }),
            target,
            password: scrub_with,
            batch: settings.batch.max(1),
            timeout: settings.timeout,
        }))
    }

    /// This replica's id, as its rows carry it.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// `postgres://USER@HOST:PORT/DB`.
    pub fn target(&self) -> &str {
        &self.target
    }

    pub fn status(&self) -> ShipStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut ShipStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// A tokio-postgres or pool error as ours, without the password.
    fn pg_error(&self, what: &'static str, e: &tokio_postgres::Error) -> HistoryError {
        match e.as_db_error() {
            Some(db) => HistoryError::Refused {
                target: self.target.clone(),
                what,
                detail: self.scrub(&format!("{} ({})", db.message(), db.code().code())),
            },
            None => HistoryError::Unreachable {
                target: self.target.clone(),
                detail: self.scrub(&error_chain(e)),
            },
        }
    }

    fn pool_error(&self, e: deadpool_postgres::PoolError) -> HistoryError {
        match e {
            deadpool_postgres::PoolError::Backend(e) => self.pg_error("the connection", &e),
            other => HistoryError::Unreachable {
                target: self.target.clone(),
                detail: self.scrub(&error_chain(&other)),
            },
        }
    }

    fn scrub(&self, text: &str) -> String {
        scrub(text, self.password.as_ref())
    }

    /// `fut` within `postgres.timeout`: a slow Postgres is a failure like a down one.
    async fn within<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = Result<T, HistoryError>>,
    ) -> Result<T, HistoryError> {
        tokio::time::timeout(self.timeout, fut)
            .await
            .unwrap_or_else(|_| {
                Err(HistoryError::Unreachable {
                    target: self.target.clone(),
                    detail: format!(
                        "{what} took longer than postgres.timeout ({})",
                        crate::domain::duration::format(self.timeout)
                    ),
                })
            })
    }

    /// A client from the pool, within `postgres.timeout`.
    async fn client(&self) -> Result<deadpool_postgres::Object, HistoryError> {
        self.pool.get().await.map_err(|e| self.pool_error(e))
    }
}

/// The password file's first line.
fn read_password(path: &std::path::Path) -> Result<SecretString, HistoryError> {
    let text = std::fs::read_to_string(path).map_err(|source| HistoryError::PasswordFile {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(SecretString::from(
        text.lines()
            .next()
            .unwrap_or("")
            .trim_end_matches('\r')
            .to_owned(),
    ))
}

/// The password of a `postgres://user:password@…` URL (percent-decoded), to scrub it.
fn url_password(url: &str) -> Option<SecretString> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))?;
    let userinfo = &rest[..rest.find('@')?];
    let (_, password) = userinfo.split_once(':')?;
    let decoded = percent_encoding::percent_decode_str(password)
        .decode_utf8_lossy()
        .into_owned();
    (!decoded.is_empty()).then(|| SecretString::from(decoded))
}

/// Replaces every occurrence of the password (as given and percent-encoded) in `text`.
fn scrub(text: &str, password: Option<&SecretString>) -> String {
    let Some(p) = password
        .map(|p| p.expose_secret())
        .filter(|p| !p.is_empty())
    else {
        return text.to_owned();
    };
    let encoded =
        percent_encoding::utf8_percent_encode(p, percent_encoding::NON_ALPHANUMERIC).to_string();
    text.replace(p, "[REDACTED]")
        .replace(&encoded, "[REDACTED]")
}

/// An error with its sources, `a: b: c` (a source already in the text once is not repeated).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let line = s.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = s.source();
    }
    text
}

/// `postgres://USER@HOST:PORT/DB`: the server as logs and errors may show it.
fn describe(c: &tokio_postgres::Config) -> String {
    let host = c
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = c.get_ports().first().copied().unwrap_or(5432);
    let user = c.get_user().unwrap_or("");
    let db = c.get_dbname().unwrap_or(user);
    format!("postgres://{user}@{host}:{port}/{db}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> PostgresSettings {
        PostgresSettings {
            url: Some(SecretString::from(url.to_owned())),
            ..PostgresSettings::default()
        }
    }

    #[tokio::test]
    async fn the_password_is_never_shown() {
        let h = History::new(
            &settings("postgres://fleet:s3cr%2Ft@db.example:6543/history"),
            "a",
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.target(), "postgres://fleet@db.example:6543/history");
        assert_eq!(h.scrub("x s3cr/t y s3cr%2Ft"), "x [REDACTED] y [REDACTED]");
        let e = History::new(&settings("postgres://fleet:hunter2@db:notaport/x"), "a")
            .err()
            .unwrap();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(e.to_string().contains("postgres.url"), "{e}");
    }

    #[tokio::test]
    async fn the_password_file_wins_and_is_read_to_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\nignored\n").unwrap();
        let s = PostgresSettings {
            password_file: Some(file),
            ..settings("postgres://fleet:from-url@db/history")
        };
        let h = History::new(&s, "a").unwrap().unwrap();
        assert_eq!(h.scrub("from-file"), "[REDACTED]");
        let missing = PostgresSettings {
            password_file: Some(dir.path().join("nope")),
            ..s
        };
        let e = History::new(&missing, "a").err().unwrap().to_string();
        assert!(
            e.contains("postgres.password_file") && e.contains("nope"),
            "{e}"
        );
    }

    #[test]
    fn no_url_no_history() {
        assert!(History::new(&PostgresSettings::default(), "a")
            .unwrap()
            .is_none());
    }
}
