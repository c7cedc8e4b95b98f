//! Durable intake with group commit.
//!
//! Every webhook body goes through a bounded channel to one OS thread that owns its own
//! SQLite connection. The thread takes everything waiting (up to [`MAX_GROUP`]), inserts it
//! in one transaction, commits (one fsync), and only then answers each request. A request is
//! acknowledged to Alertmanager only after its row is durable; under load many requests share
//! one fsync, which is what keeps throughput up.
//!
//! A failed commit answers every request of the group with the error (the HTTP layer turns it
//! into 503, so Alertmanager retries); the thread stays up and tries again with the next group.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::Utc;
use rusqlite::{params, Connection};
use tokio::sync::{mpsc, oneshot, Notify};

use super::{fsynced, ts, Ctx, Store, StoreError};

/// The most rows one transaction takes.
const MAX_GROUP: usize = 512;

type Reply = oneshot::Sender<Result<i64, Arc<StoreError>>>;

pub struct IntakeWriter;

/// Cheap to clone; one per HTTP worker.
#[derive(Clone)]
pub struct IntakeHandle {
    tx: mpsc::Sender<(Vec<u8>, Reply)>,
    in_flight: Arc<AtomicUsize>,
}

impl IntakeWriter {
    /// Starts the writer thread on `store`. It writes through the store's own connection, so
    /// every write of the process is serialised by one mutex and SQLite never answers
    /// "database is locked". `committed` is notified after every commit.
    pub fn spawn(store: Arc<Store>, committed: Arc<Notify>) -> Result<IntakeHandle, StoreError> {
        let (tx, rx) = mpsc::channel(1024);
        let path = store.path().to_path_buf();
        std::thread::Builder::new()
            .name("intake-writer".into())
            .spawn(move || run(&store, rx, committed))
            .map_err(|e| StoreError::CreateDir { path, source: e })?;
        Ok(IntakeHandle {
            tx,
            in_flight: Arc::new(AtomicUsize::new(0)),
        })
    }
}

impl IntakeHandle {
    /// Returns the intake row's id once the body is durably committed.
    pub async fn submit(&self, body: Vec<u8>) -> Result<i64, Arc<StoreError>> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let _done = InFlight(&self.in_flight);
        let (reply, wait) = oneshot::channel();
        self.tx
            .send((body, reply))
            .await
            .map_err(|_| Arc::new(StoreError::WriterGone))?;
        wait.await.map_err(|_| Arc::new(StoreError::WriterGone))?
    }
}

impl IntakeHandle {
    /// Webhook requests waiting for their commit right now: the engine gives way while
    /// there are any (acknowledging Alertmanager comes before processing).
    pub fn in_flight(&self) -> Arc<AtomicUsize> {
        self.in_flight.clone()
    }
}

/// Decrements the in-flight count however the request ends.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn run(store: &Store, mut rx: mpsc::Receiver<(Vec<u8>, Reply)>, committed: Arc<Notify>) {
    let mut group: Vec<(Vec<u8>, Reply)> = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(item) => group.push(item),
                Err(_) => break,
            }
        }
        let result = fsynced(&mut store.conn(), |conn| insert_group(conn, &group));
        match result {
            Ok(ids) => {
                committed.notify_one();
                for ((_, reply), id) in group.drain(..).zip(ids) {
                    let _ = reply.send(Ok(id));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, rows = group.len(), "intake commit failed; answering 503 so Alertmanager retries");
                let e = Arc::new(e);
                for (_, reply) in group.drain(..) {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Inserts the group in one transaction and returns the rows' ids in order.
fn insert_group(conn: &mut Connection, group: &[(Vec<u8>, Reply)]) -> Result<Vec<i64>, StoreError> {
    let tx = conn.transaction().ctx("begin intake")?;
    let now = ts(Utc::now());
    let mut ids = Vec::with_capacity(group.len());
    {
        let mut stmt = tx
            .prepare_cached("INSERT INTO intake (received_at, body) VALUES (?1, ?2)")
            .ctx("insert intake")?;
        for (body, _) in group {
            stmt.execute(params![now, body]).ctx("insert intake")?;
            ids.push(tx.last_insert_rowid());
        }
    }
    tx.commit().ctx("commit intake")?;
    Ok(ids)
}
