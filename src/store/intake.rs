//! Durable intake with group commit.
//!
//! Every webhook (its body and the handler's parse of it) goes through a bounded channel to
//! one OS thread. The thread takes everything waiting (up to [`MAX_GROUP`]), stores the bodies
//! and applies their alerts to the incidents in one transaction (see [`super::apply`]),
//! commits (one fsync), and only then answers each request. A request is acknowledged to
//! Alertmanager only after its delivery is durable and applied; under load many requests share
//! one fsync, which is what keeps throughput up.
//!
//! A failed commit answers every request of the group with the error (the HTTP layer turns it
//! into 503, so Alertmanager retries); the thread stays up and tries again with the next group.

use std::sync::Arc;

use crate::domain::Clock;
use tokio::sync::{mpsc, oneshot, Notify};

use super::apply::{ingest_group, Delivery};
use super::{fsynced, Store, StoreError};
use crate::alert::Notification;

/// The most rows one transaction takes.
const MAX_GROUP: usize = 512;

/// The longest the writer waits, before a group, for the engine to take what it queued and
/// to record the first steps of the runbooks it started ([`super::Precedence`]).
const GIVE_WAY: std::time::Duration = std::time::Duration::from_millis(10);

/// The answer, with the request's own memory handed back: the thread that allocated it frees
/// it (freeing another thread's allocations is slow with glibc's arenas, and the writer is
/// the intake's one serial stage).
type Reply = oneshot::Sender<(Result<i64, Arc<StoreError>>, Payload)>;

type Payload = (Vec<u8>, Notification);

/// A webhook waiting for the writer: its body, its parse, and who waits for the answer.
struct Item {
    payload: Payload,
    /// The delivery's `traceparent`, carried to the engine's queue.
    trace: Option<String>,
    /// A synthetic alert's origin (`remediator run`, `remediator drill`); `None` for a webhook.
    started: Option<crate::domain::Started>,
    reply: Reply,
}

pub struct IntakeWriter;

/// Cheap to clone; one per HTTP worker.
#[derive(Clone)]
pub struct IntakeHandle {
    tx: mpsc::Sender<Item>,
}

impl IntakeWriter {
    /// Starts the writer thread on `store`. It writes through the store's own connection, so
    /// every write of the process is serialised by one mutex and SQLite never answers
    /// "database is locked". `wake` is notified whenever the engine's queue got entries.
    /// `clock` stamps every delivery's `received_at`.
    pub fn spawn(
        store: Arc<Store>,
        wake: Arc<Notify>,
        clock: Arc<dyn Clock>,
    ) -> Result<IntakeHandle, StoreError> {
        let (tx, rx) = mpsc::channel(1024);
        let path = store.path().to_path_buf();
        std::thread::Builder::new()
            .name("intake-writer".into())
            .spawn(move || run(&store, rx, wake, &*clock))
            .map_err(|e| StoreError::CreateDir { path, source: e })?;
        Ok(IntakeHandle { tx })
    }
}

impl IntakeHandle {
    /// Returns the intake row's id once the delivery is durably stored and applied.
    /// `notification` is `body` as [`crate::alert::parse_webhook`] read it.
    pub async fn submit(
        &self,
        body: Vec<u8>,
        notification: Notification,
        trace: Option<String>,
    ) -> Result<i64, Arc<StoreError>> {
        self.submit_started(body, notification, trace, None).await
    }

    /// [`IntakeHandle::submit`] for a synthetic alert: the incident it opens records who
    /// started it and how (`started`).
    pub async fn submit_started(
        &self,
        body: Vec<u8>,
        notification: Notification,
        trace: Option<String>,
        started: Option<crate::domain::Started>,
    ) -> Result<i64, Arc<StoreError>> {
        // Compressed here, in the HTTP worker, not in the one writer thread.
        let encoded = super::body::encode(&body);
        drop(body);
        let (reply, wait) = oneshot::channel();
        self.tx
            .send(Item {
                payload: (encoded, notification),
                trace,
                started,
                reply,
            })
            .await
            .map_err(|_| Arc::new(StoreError::WriterGone))?;
        let (result, payload) = wait.await.map_err(|_| Arc::new(StoreError::WriterGone))?;
        drop(payload);
        result
    }
}

fn run(store: &Store, mut rx: mpsc::Receiver<Item>, wake: Arc<Notify>, clock: &dyn Clock) {
    // Deliveries stored but never applied (after an upgrade) go first, in order; until that
    // succeeds no new delivery is applied either.
    let mut caught_up = catch_up(store, &wake, clock).is_ok();
    let mut group: Vec<Item> = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(item) => group.push(item),
                Err(_) => break,
            }
        }
        if !caught_up {
            caught_up = catch_up(store, &wake, clock).is_ok();
        }
        let result = if caught_up {
            let deliveries: Vec<Delivery<'_>> = group
                .iter()
                .map(|i| Delivery {
                    encoded_body: &i.payload.0,
                    notification: &i.payload.1,
                    trace: i.trace.as_deref(),
                    started: i.started.as_ref(),
                })
                .collect();
            store.precedence().give_way(GIVE_WAY);
            let mut conn = store.conn();
            let mut known = store.identities();
            let out = fsynced(&mut conn, |conn| {
                ingest_group(conn, &mut known, &deliveries, clock.now())
            });
            if out.is_err() {
                known.clear();
            }
            out
        } else {
            Err(StoreError::Backlog)
        };
        match result {
            Ok(out) => {
                if out.queued > 0 {
                    store.precedence().queued(out.queued);
                    wake.notify_one();
                }
                for (item, id) in group.drain(..).zip(out.ids) {
                    let _ = item.reply.send((Ok(id), item.payload));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, rows = group.len(), "intake commit failed; answering 503 so Alertmanager retries");
                let e = Arc::new(e);
                for item in group.drain(..) {
                    let _ = item.reply.send((Err(e.clone()), item.payload));
                }
            }
        }
    }
}

fn catch_up(store: &Store, wake: &Notify, clock: &dyn Clock) -> Result<(), StoreError> {
    match store.apply_backlog(clock.now()) {
        Ok(0) => Ok(()),
        Ok(applied) => {
            tracing::info!(applied, "applied deliveries stored by a previous version");
            wake.notify_one();
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "could not apply the stored backlog; new deliveries wait for it (503)");
            Err(e)
        }
    }
}
