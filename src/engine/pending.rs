//! Decision points handled but not yet committed: the engine commits a batch of its queue in
//! one transaction, then tells what each one did (logs, metrics, span outcomes), so that
//! nothing is told of a commit that did not happen.

use std::collections::HashSet;

use crate::store::{Commit, Store, StoreError};

/// What one decision point tells once its commit is in.
type Told = Box<dyn FnOnce()>;

#[derive(Default)]
pub(super) struct Pending {
    commits: Vec<Commit>,
    told: Vec<Told>,
    incidents: HashSet<i64>,
}

impl Pending {
    /// Adds a decision point's commit, and what to tell once it is in.
    pub(super) fn add(&mut self, c: Commit, told: impl FnOnce() + 'static) {
        self.incidents.insert(c.incident());
        self.commits.push(c);
        self.told.push(Box::new(told));
    }

    /// Whether a commit of incident `id` waits: a second decision point of the incident reads
    /// what the first one wrote, so the first is committed before it is handled.
    pub(super) fn has(&self, id: i64) -> bool {
        self.incidents.contains(&id)
    }

    /// Commits everything added, in order, in one transaction (fsynced when any starts a
    /// run), then tells it. On error nothing was written or told, and nothing is kept: the
    /// queue entries are still queued, to be handled again.
    pub(super) fn commit(&mut self, store: &Store) -> Result<(), StoreError> {
        let result = store.commit_all(&self.commits);
        self.commits.clear();
        self.incidents.clear();
        let told = std::mem::take(&mut self.told);
        result?;
        for t in told {
            t();
        }
        Ok(())
    }
}
