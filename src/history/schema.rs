//! The remote schema: versioned migrations in the Postgres schema `remediator`, recorded in
//! `remediator.schema_migrations` (one row per version applied, by which replica, when).
//! Replicas migrate under an advisory lock, so two starting at once apply each version once;
//! a remote schema newer than this build knows is refused, never altered.
//!
//! Every table is keyed by `(replica_id, local_id)`: a row is the copy of one replica's
//! journal row, and shipping it again is no duplicate. Values are the local store's text.

use super::{History, HistoryError};

/// Applied in order; append only.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE remediator.incidents (
    replica_id    TEXT NOT NULL,
    local_id      BIGINT NOT NULL,
    fingerprint   TEXT,
    starts_at     TEXT,
    alertname     TEXT,
    labels        TEXT,
    state         TEXT,
    phase         TEXT,
    first_seen    TEXT,
    ends_at       TEXT,
    resolved_at   TEXT,
    rule          TEXT,
    priority      TEXT,
    target        TEXT,
    acked_by      TEXT,
    acked_at      TEXT,
    slack_channel TEXT,
    slack_ts      TEXT,
    shipped_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (replica_id, local_id)
);
CREATE INDEX incidents_identity ON remediator.incidents (starts_at DESC, fingerprint DESC);

CREATE TABLE remediator.decisions (
    replica_id  TEXT NOT NULL,
    local_id    BIGINT NOT NULL,
    incident_id BIGINT NOT NULL,
    at          TEXT,
    guard       TEXT,
    verdict     TEXT,
    reason      TEXT,
    PRIMARY KEY (replica_id, local_id)
);
CREATE INDEX decisions_incident ON remediator.decisions (replica_id, incident_id);

CREATE TABLE remediator.steps (
    replica_id  TEXT NOT NULL,
    local_id    BIGINT NOT NULL,
    incident_id BIGINT NOT NULL,
    phase       TEXT,
    seq         TEXT,
    kind        TEXT,
    started_at  TEXT,
    ended_at    TEXT,
    outcome     TEXT,
    detail      TEXT,
    PRIMARY KEY (replica_id, local_id)
);
CREATE INDEX steps_incident ON remediator.steps (replica_id, incident_id);

-- A run's local id is its incident's.
CREATE TABLE remediator.runs (
    replica_id TEXT NOT NULL,
    local_id   BIGINT NOT NULL,
    rule       TEXT,
    target     TEXT,
    started_at TEXT,
    ended_at   TEXT,
    outcome    TEXT,
    PRIMARY KEY (replica_id, local_id)
);

CREATE TABLE remediator.messages (
    replica_id   TEXT NOT NULL,
    local_id     BIGINT NOT NULL,
    incident_id  BIGINT NOT NULL,
    sink         TEXT,
    kind         TEXT,
    notice       TEXT,
    created_at   TEXT,
    delivered_at TEXT,
    blocked      BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (replica_id, local_id)
);
CREATE INDEX messages_incident ON remediator.messages (replica_id, incident_id);
"#];

/// The remote schema version this build writes.
pub(super) const VERSION: i64 = MIGRATIONS.len() as i64;

/// Any number: the advisory lock every replica takes to migrate.
const MIGRATION_LOCK: i64 = 0x7265_6d65_6469;

impl History {
    /// Brings the remote schema to [`VERSION`], or refuses a newer one.
    pub(super) async fn migrate(&self) -> Result<(), HistoryError> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.pg_error("a transaction", &e))?;
        let setup = "CREATE SCHEMA IF NOT EXISTS remediator;
            CREATE TABLE IF NOT EXISTS remediator.schema_migrations (
                version    BIGINT PRIMARY KEY,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                replica_id TEXT NOT NULL
            );";
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(|e| self.pg_error("the migration lock", &e))?;
        tx.batch_execute(setup)
            .await
            .map_err(|e| self.pg_error("creating the schema", &e))?;
        let found: i64 = tx
            .query_one(
                "SELECT coalesce(max(version), 0) FROM remediator.schema_migrations",
                &[],
            )
            .await
            .map_err(|e| self.pg_error("reading the schema version", &e))?
            .get(0);
        if found > VERSION {
            return Err(HistoryError::Newer {
                target: self.target.clone(),
                found,
                known: VERSION,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let version = i as i64 + 1;
            tx.batch_execute(sql)
                .await
                .map_err(|e| self.pg_error("a schema migration", &e))?;
            tx.execute(
                "INSERT INTO remediator.schema_migrations (version, replica_id) VALUES ($1, $2)",
                &[&version, &self.replica],
            )
            .await
            .map_err(|e| self.pg_error("recording a schema migration", &e))?;
            tracing::info!(version, target = %self.target, "fleet history schema migrated");
        }
        tx.commit()
            .await
            .map_err(|e| self.pg_error("the schema migration", &e))
    }
}
