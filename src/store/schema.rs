//! Schema migrations, applied in order and recorded in `user_version`.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE intake (
    id           INTEGER PRIMARY KEY,
    received_at  TEXT NOT NULL,
    body         BLOB NOT NULL,
    processed_at TEXT
);
CREATE INDEX intake_pending ON intake (id) WHERE processed_at IS NULL;

CREATE TABLE incidents (
    id          INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    starts_at   TEXT NOT NULL,
    alertname   TEXT NOT NULL,
    labels      TEXT NOT NULL,
    annotations TEXT NOT NULL,
    group_key   TEXT NOT NULL DEFAULT '',
    state       TEXT NOT NULL,
    phase       TEXT NOT NULL,
    deliveries  INTEGER NOT NULL,
    first_seen  TEXT NOT NULL,
    last_seen   TEXT NOT NULL,
    ends_at     TEXT,
    resolved_at TEXT,
    rule        TEXT,
    priority    TEXT,
    target      TEXT,
    UNIQUE (fingerprint, starts_at)
);
CREATE INDEX incidents_state ON incidents (state, id);
CREATE INDEX incidents_phase ON incidents (phase);
CREATE INDEX incidents_fp_seen ON incidents (fingerprint, first_seen);

CREATE TABLE decisions (
    id          INTEGER PRIMARY KEY,
    incident_id INTEGER NOT NULL REFERENCES incidents (id),
    at          TEXT NOT NULL,
    guard       TEXT NOT NULL,
    verdict     TEXT NOT NULL,
    reason      TEXT NOT NULL
);
CREATE INDEX decisions_incident ON decisions (incident_id);

CREATE TABLE steps (
    id          INTEGER PRIMARY KEY,
    incident_id INTEGER NOT NULL REFERENCES incidents (id),
    phase       TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    ended_at    TEXT,
    outcome     TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX steps_incident ON steps (incident_id);

CREATE TABLE runs (
    incident_id INTEGER PRIMARY KEY REFERENCES incidents (id),
    rule        TEXT NOT NULL,
    target      TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    ended_at    TEXT,
    outcome     TEXT
);
CREATE INDEX runs_rule_target ON runs (rule, target, started_at);

CREATE TABLE outbox (
    id           INTEGER PRIMARY KEY,
    incident_id  INTEGER NOT NULL REFERENCES incidents (id),
    kind         TEXT NOT NULL,
    text         TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    delivered_at TEXT
);
CREATE INDEX outbox_pending ON outbox (id) WHERE delivered_at IS NULL;
"#,
    r#"
ALTER TABLE outbox ADD COLUMN sink TEXT NOT NULL DEFAULT 'slack';
ALTER TABLE outbox ADD COLUMN data TEXT NOT NULL DEFAULT '{}';
ALTER TABLE outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN next_attempt_at TEXT;
ALTER TABLE outbox ADD COLUMN last_error TEXT;
ALTER TABLE outbox ADD COLUMN blocked INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN result TEXT;
CREATE INDEX outbox_sink_pending ON outbox (sink, incident_id, id) WHERE delivered_at IS NULL;

ALTER TABLE incidents ADD COLUMN slack_channel TEXT;
ALTER TABLE incidents ADD COLUMN slack_ts TEXT;
ALTER TABLE incidents ADD COLUMN acked_by TEXT;
ALTER TABLE incidents ADD COLUMN acked_at TEXT;

CREATE TABLE tiers_fired (
    incident_id INTEGER NOT NULL REFERENCES incidents (id),
    tier        INTEGER NOT NULL,
    at          TEXT NOT NULL,
    PRIMARY KEY (incident_id, tier)
);
"#,
    r#"
-- Deliveries are processed strictly in id order, so one cursor replaces a per-row flag
-- (rewriting a ~3 KB row to flag it doubled the intake's writes).
CREATE TABLE cursors (
    name     TEXT PRIMARY KEY,
    position INTEGER NOT NULL
);
INSERT INTO cursors (name, position)
    VALUES ('engine', coalesce((SELECT max(id) FROM intake WHERE processed_at IS NOT NULL), 0));
DROP INDEX intake_pending;
"#,
    r#"
-- Deliveries are applied to incidents by the intake writer, in the transaction that stores
-- them; what the engine must act on waits here, in order, until it is handled.
CREATE TABLE engine_queue (
    id          INTEGER PRIMARY KEY,
    incident_id INTEGER NOT NULL REFERENCES incidents (id),
    kind        TEXT NOT NULL CHECK (kind IN ('opened', 'resolved'))
);
-- Incidents a previous version opened but had not acted on yet.
INSERT INTO engine_queue (incident_id, kind)
    SELECT id, 'opened' FROM incidents WHERE phase = 'new' ORDER BY id;
"#,
    r#"
-- What every repeat delivery changes lives in a narrow table of its own: a storm of repeats
-- then rewrites a few small pages instead of every incident's wide row (labels, annotations).
-- The latest annotations are read from the latest delivery's stored body (last_intake_id).
CREATE TABLE incident_seen (
    incident_id    INTEGER PRIMARY KEY REFERENCES incidents (id),
    deliveries     INTEGER NOT NULL,
    last_seen      TEXT NOT NULL,
    last_intake_id INTEGER
);
INSERT INTO incident_seen (incident_id, deliveries, last_seen)
    SELECT id, deliveries, last_seen FROM incidents;
ALTER TABLE incidents DROP COLUMN deliveries;
ALTER TABLE incidents DROP COLUMN last_seen;
"#,
    r#"
-- NULL: the JSON as received; 'lz4': compressed (see store/body.rs).
ALTER TABLE intake ADD COLUMN encoding TEXT;
"#,
    r#"
-- Typed notices: each outbox row carries its notice as JSON (see domain/notice.rs); rows an
-- older version stored keep their text and become `recorded` notices.
ALTER TABLE outbox ADD COLUMN notice TEXT;
-- The trace context a decision carries to the spans of its notices and of the engine.
ALTER TABLE outbox ADD COLUMN trace TEXT;
ALTER TABLE engine_queue ADD COLUMN trace TEXT;
-- What the root message shows for a matched incident: its RTO and who was told.
ALTER TABLE incidents ADD COLUMN rto_ms INTEGER;
ALTER TABLE incidents ADD COLUMN told TEXT;
-- Each rate limiter's GCRA state (engine/limits.rs), written with the run that spends it.
CREATE TABLE limits (
    key    TEXT PRIMARY KEY,
    tat    TEXT NOT NULL,
    runs   INTEGER NOT NULL,
    per_ms INTEGER NOT NULL
);
"#,
    r#"
-- Rows that could not be read (StoreError::Corrupt), set aside so that the rest goes on:
-- which row of which table, the error, when, and the incident it was for. The engine-queue
-- entry taken out for it, if any, is kept as it was stored (queue_id, kind, trace, and
-- incident_id: untyped, copied as they are), so that once the row is repaired it can be
-- queued again. No foreign keys: what it names may be damaged beyond reading.
CREATE TABLE quarantine (
    id           INTEGER PRIMARY KEY,
    source_table TEXT NOT NULL,
    row_id       INTEGER NOT NULL,
    error        TEXT NOT NULL,
    at           TEXT NOT NULL,
    incident_id,
    queue_id     INTEGER,
    kind,
    trace
);
CREATE INDEX quarantine_row ON quarantine (source_table, row_id);
"#,
    r#"
-- Pauses of the automation (store/pauses.rs): a rule, a service, both, or (neither) every
-- runbook, until a time; ended early by `resume` (ended_at, ended_by). Never deleted. Times
-- are fixed-width UTC text, so `until > now` is a text comparison.
CREATE TABLE pauses (
    id         INTEGER PRIMARY KEY,
    rule       TEXT,
    service    TEXT,
    created_by TEXT NOT NULL,
    reason     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    until      TEXT NOT NULL,
    ended_at   TEXT,
    ended_by   TEXT
);
CREATE INDEX pauses_open ON pauses (until) WHERE ended_at IS NULL;
"#,
    r#"
-- What the thread's root shows and links to: the rule's owner when it matched (a contact,
-- JSON), the alert's generatorURL and the Alertmanager it came from (the payload's
-- externalURL), written when the incident opens. And who used the root's buttons: the Slack
-- user who acknowledged, and the Silence and Pause presses (JSON: by, slack_user, at, until,
-- made), each once.
ALTER TABLE incidents ADD COLUMN owner TEXT;
ALTER TABLE incidents ADD COLUMN generator_url TEXT;
ALTER TABLE incidents ADD COLUMN external_url TEXT;
ALTER TABLE incidents ADD COLUMN acked_slack_user TEXT;
ALTER TABLE incidents ADD COLUMN silenced TEXT;
ALTER TABLE incidents ADD COLUMN paused TEXT;
"#,
    r#"
-- Where an incident came from (alertmanager, manual: `remediator run`, drill: `remediator
-- drill`), and for the last two what the person asked for (JSON: by, dry_run, break_with).
ALTER TABLE incidents ADD COLUMN origin TEXT NOT NULL DEFAULT 'alertmanager';
ALTER TABLE incidents ADD COLUMN started TEXT;
"#,
    r#"
-- The journal changes the fleet history has still to copy to Postgres (store/ship.rs), in
-- change order: written by TEMP triggers only while shipping is on, in the transaction of
-- the change; an entry is deleted once its row is in Postgres.
CREATE TABLE ship_queue (
    id     INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    row_id INTEGER NOT NULL
);
"#,
    r#"
-- An `approve` step's request and its answer (store/approvals.rs): one per step of a run,
-- kept across restarts so the wait resumes with its stored deadline.
CREATE TABLE approvals (
    id          INTEGER PRIMARY KEY,
    incident_id INTEGER NOT NULL REFERENCES incidents (id),
    phase       TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    who         TEXT NOT NULL,
    prompt      TEXT NOT NULL,
    choices     TEXT NOT NULL,
    asked_at    TEXT NOT NULL,
    deadline    TEXT NOT NULL,
    verdict     TEXT,
    decided_by  TEXT,
    slack_user  TEXT,
    choice      TEXT,
    decided_at  TEXT,
    UNIQUE (incident_id, phase, seq)
);
"#,
    r#"
-- The deliverer's due query walks one sink's undelivered messages oldest first and stops at
-- its limit. Without this index it read every undelivered message of the sink, with a
-- look-up each, and sorted them, at every pass: 200 ms a pass with 13k waiting after a storm.
CREATE INDEX outbox_sink_due ON outbox (sink, id) WHERE delivered_at IS NULL;
"#,
    r#"
-- A new firing inserted into two indexes keyed by its (random) fingerprint: in a storm of
-- new firings each one dirtied a leaf page of each, written whole to the WAL at every intake
-- commit. The flapping count (`fingerprint = ? AND first_seen >= ?`) is served as well by the
-- unique (fingerprint, starts_at) index: a fingerprint has a few incidents, one per firing.
DROP INDEX IF EXISTS incidents_fp_seen;
"#,
];

/// Rows without a notice become `recorded` notices: every row an older version stored, at the
/// migration, and again at every start, because an older build run on this store (a
/// rollback) keeps writing rows without one.
pub(super) const BACKFILL_NOTICES: &str = "UPDATE outbox SET notice = json_object(
    'kind', 'recorded', 'was', kind, 'text', text,
    'who', json(coalesce(json_extract(data, '$.who'), '[]')),
    'priority', json_extract(data, '$.priority'),
    'details', json(CASE WHEN data IN ('', '{}') THEN 'null' ELSE data END))
  WHERE notice IS NULL";

/// The schema version this build writes.
pub(super) const VERSION: i64 = MIGRATIONS.len() as i64;

/// The schema version a store has.
pub(super) fn version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

pub(super) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let current = version(conn)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        conn.execute_batch(&format!(
            "BEGIN; {sql}; PRAGMA user_version = {}; COMMIT;",
            i + 1
        ))?;
    }
    conn.execute_batch(BACKFILL_NOTICES)
}
