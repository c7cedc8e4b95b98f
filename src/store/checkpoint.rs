//! WAL checkpoints off the store's lock.
//!
//! SQLite's automatic checkpoint runs inside the commit that grows the WAL past its
//! threshold, on the committing connection: with one connection for the whole process that is
//! the intake writer's fsynced group or an engine batch, holding the store's mutex while it
//! copies the WAL into the database file. In a storm of new firings that was about an eighth
//! of the process's samples, every webhook and decision waiting behind it. Here a thread of
//! its own, on a connection of its own, runs a PASSIVE checkpoint every [`INTERVAL`]: it
//! takes none of our locks and never blocks a writer (a PASSIVE checkpoint copies what no
//! reader still needs and leaves the rest for the next one), and once it has copied the whole
//! WAL the next write starts the WAL again from the beginning. The store's connection keeps
//! an automatic checkpoint only as a backstop, at [`BACKSTOP_PAGES`] (should this thread fall
//! behind or fail, the WAL still cannot grow without bound).
//!
//! Durability is unchanged: what a checkpoint copies is already committed to the WAL (and
//! fsynced, for the commits that are), and the checkpoint fsyncs the WAL before it writes the
//! database file and the database file after.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::{Ctx, StoreError};

/// How often the WAL is checkpointed.
const INTERVAL: Duration = Duration::from_millis(100);

/// The store's own connection checkpoints only past this many WAL pages (16 MiB of 4 KiB
/// pages; SQLite's default is 1000).
pub(super) const BACKSTOP_PAGES: i64 = 4000;

/// The checkpoint thread; stopped and joined when dropped (with the store).
pub(super) struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread on its own connection to the database at `path`.
    pub(super) fn start(path: &Path) -> Result<Checkpointer, StoreError> {
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        // It reads no table: a small cache keeps its memory down.
        conn.pragma_update(None, "cache_size", -64)
            .ctx("checkpoint connection cache_size")?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("store-checkpoint".into())
            .spawn(move || run(&conn, &flag))
            .map_err(|source| StoreError::CreateDir {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Checkpointer {
            stop,
            handle: Some(handle),
        })
    }
}

fn run(conn: &Connection, stop: &(Mutex<bool>, Condvar)) {
    let (lock, wake) = stop;
    let mut stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
    let mut failing = false;
    loop {
        let (guard, _) = wake
            .wait_timeout_while(stopped, INTERVAL, |s| !*s)
            .unwrap_or_else(|p| p.into_inner());
        stopped = guard;
        if *stopped {
            return;
        }
        // Not while holding the flag: a drop would wait for the checkpoint.
        drop(stopped);
        let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0));
        match result {
            Ok(_) => failing = false,
            // Told once per run of failures; the store's own backstop still checkpoints.
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "background WAL checkpoint failed; retrying (the store checkpoints by itself past {BACKSTOP_PAGES} pages)");
            }
            Err(_) => {}
        }
        stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        wake.notify_all();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
