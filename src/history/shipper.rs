//! The shipper: copies the local ship queue to Postgres, a batch per remote transaction, in
//! queue order, and deletes what it shipped from the queue only after the remote commit
//! (at-least-once; the remote upsert on `(replica_id, local_id)` makes a repeat harmless).
//!
//! It is the only reader of the queue and nothing waits for it: the intake, the engine and
//! the outbox write the local store only. While Postgres is down, slow (every batch within
//! `postgres.timeout`) or refusing, it backs off (100 ms doubling to 30 s), says so on
//! `/-/ready`, and counts the backlog; when Postgres answers again it goes on from the
//! oldest entry, so the history catches up in order.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use serde::Serialize;

use super::{History, HistoryError, ShipState};
use crate::domain::Clock;
use crate::metrics::Metrics;
use crate::store::{ShipBatch, Store};

/// How often an empty queue is looked at again.
const POLL: Duration = Duration::from_millis(200);
/// The longest wait between two attempts while Postgres fails.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// A remote table and its columns (besides `replica_id`, `local_id`), as the batch's JSON
/// carries them; `upsert`: a row that changes later (its latest state replaces the copy).
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, &'static str)],
    upsert: bool,
}

const INCIDENTS: Table = Table {
    name: "incidents",
    columns: &[
        ("fingerprint", "text"),
        ("starts_at", "text"),
        ("alertname", "text"),
        ("labels", "text"),
        ("state", "text"),
        ("phase", "text"),
        ("first_seen", "text"),
        ("ends_at", "text"),
        ("resolved_at", "text"),
        ("rule", "text"),
        ("priority", "text"),
        ("target", "text"),
        ("acked_by", "text"),
        ("acked_at", "text"),
        ("slack_channel", "text"),
        ("slack_ts", "text"),
    ],
    upsert: true,
};

const DECISIONS: Table = Table {
    name: "decisions",
    columns: &[
        ("incident_id", "bigint"),
        ("at", "text"),
        ("guard", "text"),
        ("verdict", "text"),
        ("reason", "text"),
    ],
    upsert: false,
};

const STEPS: Table = Table {
    name: "steps",
    columns: &[
        ("incident_id", "bigint"),
        ("phase", "text"),
        ("seq", "text"),
        ("kind", "text"),
        ("started_at", "text"),
        ("ended_at", "text"),
        ("outcome", "text"),
        ("detail", "text"),
    ],
    upsert: true,
};

const RUNS: Table = Table {
    name: "runs",
    columns: &[
        ("rule", "text"),
        ("target", "text"),
        ("started_at", "text"),
        ("ended_at", "text"),
        ("outcome", "text"),
    ],
    upsert: true,
};

const MESSAGES: Table = Table {
    name: "messages",
    columns: &[
        ("incident_id", "bigint"),
        ("sink", "text"),
        ("kind", "text"),
        ("notice", "text"),
        ("created_at", "text"),
        ("delivered_at", "text"),
        ("blocked", "boolean"),
    ],
    upsert: true,
};

/// `INSERT … SELECT … FROM jsonb_to_recordset($2) ON CONFLICT (replica_id, local_id) …`: a
/// whole table's part of a batch in one statement.
fn insert_sql(t: &Table) -> String {
    let names: Vec<&str> = t.columns.iter().map(|c| c.0).collect();
    let record: Vec<String> = t
        .columns
        .iter()
        .map(|(n, ty)| format!("{n} {ty}"))
        .collect();
    let on_conflict = if t.upsert {
        let set: Vec<String> = names
            .iter()
            .map(|n| format!("{n} = EXCLUDED.{n}"))
            .collect();
        let extra = if t.name == "incidents" {
            ", shipped_at = now()"
        } else {
            ""
        };
        format!("DO UPDATE SET {}{extra}", set.join(", "))
    } else {
        "DO NOTHING".to_owned()
    };
    format!(
        "INSERT INTO remediator.{table} (replica_id, local_id, {cols})
         SELECT $1, r.local_id, {rcols}
         FROM jsonb_to_recordset($2::jsonb) AS r(local_id bigint, {record})
         ORDER BY r.local_id
         ON CONFLICT (replica_id, local_id) {on_conflict}",
        table = t.name,
        cols = names.join(", "),
        rcols = names
            .iter()
            .map(|n| format!("r.{n}"))
            .collect::<Vec<_>>()
            .join(", "),
        record = record.join(", "),
    )
}

fn rows_json<T: Serialize>(rows: &[T]) -> serde_json::Value {
    // Plain data (strings, numbers, booleans): serialising it cannot fail.
    serde_json::to_value(rows).unwrap_or(serde_json::Value::Array(vec![]))
}

impl History {
    /// Ships until `stop` resolves.
    pub async fn run(
        self: Arc<Self>,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let backoff = || {
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(MAX_RETRY)
                .with_jitter()
                .without_max_times()
                .build()
        };
        let mut delays = backoff();
        let mut migrated = false;
        loop {
            let wait = match self.pass(&store, &mut migrated).await {
                Ok(Pass::Shipped { rows, backlog }) => {
                    delays = backoff();
                    metrics.history_shipped_rows.inc_by(rows as u64);
                    metrics.history_backlog.set(backlog);
                    let now = clock.now();
                    metrics.history_last_shipped.set(now.timestamp());
                    self.update(|s| {
                        s.state = if backlog > 0 {
                            ShipState::Behind
                        } else {
                            ShipState::CaughtUp
                        };
                        s.backlog = backlog;
                        s.last_shipped = Some(now);
                        s.error = None;
                    });
                    Duration::ZERO
                }
                Ok(Pass::Empty) => {
                    delays = backoff();
                    metrics.history_backlog.set(0);
                    self.update(|s| {
                        s.state = ShipState::CaughtUp;
                        s.backlog = 0;
                        s.error = None;
                    });
                    POLL
                }
                Err(e) => {
                    metrics.history_ship_failures.inc();
                    let backlog = store.ship_backlog().unwrap_or(-1);
                    if backlog >= 0 {
                        metrics.history_backlog.set(backlog);
                    }
                    let state = match e {
                        HistoryError::Refused { .. } | HistoryError::Newer { .. } => {
                            ShipState::Refused
                        }
                        _ => ShipState::Unreachable,
                    };
                    let wait = delays.next().unwrap_or(MAX_RETRY);
                    tracing::warn!(error = %e, backlog, retry_in = ?wait, "the fleet history is behind; intake, runbooks and Slack go on");
                    self.update(|s| {
                        s.state = state;
                        if backlog >= 0 {
                            s.backlog = backlog;
                        }
                        s.error = Some(e.to_string());
                    });
                    wait
                }
            };
            if wait.is_zero() {
                // Still yield to a stop between two batches of a catch-up.
                if futures_util::FutureExt::now_or_never(&mut stop).is_some() {
                    return;
                }
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = &mut stop => return,
            }
        }
    }

    /// One batch: migrate first if not yet, read the oldest entries, ship them, mark them.
    async fn pass(&self, store: &Arc<Store>, migrated: &mut bool) -> Result<Pass, HistoryError> {
        if !*migrated {
            self.within("migrating the schema", self.migrate()).await?;
            *migrated = true;
        }
        let (s, limit) = (store.clone(), self.batch);
        let batch = blocking(move || s.ship_batch(limit)).await?;
        if batch.is_empty() {
            return Ok(Pass::Empty);
        }
        self.within("shipping a batch", self.ship(&batch)).await?;
        let (s, through) = (store.clone(), batch.through);
        let backlog = blocking(move || {
            s.shipped(through)?;
            s.ship_backlog()
        })
        .await?;
        tracing::debug!(
            rows = batch.rows(),
            through,
            backlog,
            "shipped to the fleet history"
        );
        Ok(Pass::Shipped {
            rows: batch.rows(),
            backlog,
        })
    }

    /// The batch in one remote transaction.
    async fn ship(&self, batch: &ShipBatch) -> Result<(), HistoryError> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(|e| self.pg_error("a transaction", &e))?;
        let parts = [
            (
                &INCIDENTS,
                rows_json(&batch.incidents),
                batch.incidents.is_empty(),
            ),
            (
                &DECISIONS,
                rows_json(&batch.decisions),
                batch.decisions.is_empty(),
            ),
            (&STEPS, rows_json(&batch.steps), batch.steps.is_empty()),
            (&RUNS, rows_json(&batch.runs), batch.runs.is_empty()),
            (
                &MESSAGES,
                rows_json(&batch.messages),
                batch.messages.is_empty(),
            ),
        ];
        for (table, rows, empty) in parts {
            if empty {
                continue;
            }
            let sql = insert_sql(table);
            tx.execute(sql.as_str(), &[&self.replica, &rows])
                .await
                .map_err(|e| self.pg_error("the batch", &e))?;
        }
        tx.commit()
            .await
            .map_err(|e| self.pg_error("the batch's commit", &e))
    }
}

enum Pass {
    Shipped { rows: usize, backlog: i64 },
    Empty,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, HistoryError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(HistoryError::from),
        Err(e) => Err(HistoryError::Unreachable {
            target: "the local store".into(),
            detail: format!("the store task failed: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_insert_names_its_conflict_target() {
        let sql = insert_sql(&DECISIONS);
        assert!(
            sql.contains("ON CONFLICT (replica_id, local_id) DO NOTHING"),
            "{sql}"
        );
        let sql = insert_sql(&STEPS);
        assert!(
            sql.contains("ON CONFLICT (replica_id, local_id) DO UPDATE SET incident_id = EXCLUDED.incident_id"),
            "{sql}"
        );
    }
}
