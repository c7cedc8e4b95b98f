//! The containers remediator is changing itself, so that the deploy watch does not take its
//! own recreate for a deploy. The recreate stays compose-faithful (labels copied verbatim,
//! no mark of ours), so its events are told apart by what only it uses:
//!
//! - the old container's id (its `stop`, `destroy`), known before anything is done;
//! - the temporary name `<old id[:12]>_<name>` of the replacement, which embeds that id: its
//!   `create` carries it as `name`, its `rename` to the final name as `oldName`, before the
//!   create has even answered with the new id;
//! - the new container's id, once the create answered.
//!
//! Never the final name of a recreate: the next `docker-compose up` reuses it, and that one is
//! a deploy. The `up` step's compose create is the exception, by necessity (its ids are not
//! known before it ends): the names compose gives (`<project>_<service>_1`,
//! `<project>-<service>-1`) count only while the compose command runs, then its new ids. The
//! `remove` step registers the containers it destroys, by id.
//! And only events stamped before the change ended (give or take [`SLACK`]): the new
//! container's later rename or destroy is someone else's deploy. Entries outlive the change
//! by [`KEEP`], for events that arrive late or are replayed after a reconnect (`since`). They live in memory: after a restart of remediator its own recent
//! recreates, replayed at startup (`docker.deploy_replay`), read as deploys, which only errs
//! on the side of leaving a service alone.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// How long a finished change is remembered: longer than any deploy grace worth setting.
pub(super) const KEEP: Duration = Duration::from_secs(3600);
/// The daemon stamps events with its clock, we end changes with ours: the same host's, but
/// read at different moments.
pub(super) const SLACK: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Change {
    key: u64,
    ids: Vec<String>,
    names: Vec<String>,
    /// `None` while the change is going on.
    ended: Option<DateTime<Utc>>,
}

/// Shared by the Docker steps (which register what they change) and the deploy watch (which
/// asks). A std mutex: held for a few comparisons, never across an `.await`.
#[derive(Debug, Default)]
pub struct OwnChanges {
    changes: Mutex<(u64, Vec<Change>)>,
}

/// A change in progress; it ends (and starts its [`KEEP`]) when dropped.
pub(super) struct OwnChange<'a> {
    of: &'a OwnChanges,
    key: u64,
}

impl OwnChanges {
    /// Registers a change of the containers `ids`, and of the names only it uses.
    pub(super) fn begin(&self, ids: &[&str], names: &[&str]) -> OwnChange<'_> {
        let mut guard = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let (next, changes) = &mut *guard;
        let keep = chrono::Duration::from_std(KEEP).unwrap_or_default();
        let now = Utc::now();
        changes.retain(|c| c.ended.is_none_or(|e| e + keep > now));
        *next += 1;
        changes.push(Change {
            key: *next,
            ids: ids.iter().map(|s| s.to_string()).collect(),
            names: names.iter().map(|s| s.to_string()).collect(),
            ended: None,
        });
        OwnChange {
            of: self,
            key: *next,
        }
    }

    /// Whether an event of container `id`, named `names` (its `name`, and `oldName` on a
    /// rename; a leading `/` is ignored), stamped `at`, belongs to one of our changes.
    pub(super) fn is_ours(&self, id: &str, names: &[&str], at: DateTime<Utc>) -> bool {
        let slack = chrono::Duration::from_std(SLACK).unwrap_or_default();
        let guard = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        guard.1.iter().any(|c| {
            let during = c.ended.is_none_or(|e| at <= e + slack);
            during
                && (c.ids.iter().any(|i| i == id)
                    || names
                        .iter()
                        .map(|n| n.trim_start_matches('/'))
                        .any(|n| c.names.iter().any(|m| m == n)))
        })
    }

    fn with(&self, key: u64, f: impl FnOnce(&mut Change)) {
        let mut guard = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = guard.1.iter_mut().find(|c| c.key == key) {
            f(c);
        }
    }
}

impl OwnChange<'_> {
    /// A container the change made (the replacement, once the create answered).
    pub(super) fn add_id(&self, id: &str) {
        self.of.with(self.key, |c| c.ids.push(id.to_string()));
    }
}

impl Drop for OwnChange<'_> {
    fn drop(&mut self) {
        self.of.with(self.key, |c| c.ended = Some(Utc::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_recreate_is_told_by_the_old_id_the_temporary_name_and_the_new_id_only() {
        let own = OwnChanges::default();
        let old = "f1407111813e9792485b86ad780a9689d8c623973305dc0208eddb61abf2fdaa";
        let tmp = "f1407111813e_p_redis_1";
        let now = Utc::now;
        {
            let change = own.begin(&[old], &[tmp]);
            // The create's event may come before the create answers: the name tells it.
            assert!(own.is_ours("5b18210e0366", &[tmp], now()));
            change.add_id("5b18210e0366");
            assert!(
                own.is_ours(old, &["p_redis_1"], now()),
                "the old one's destroy"
            );
            assert!(
                own.is_ours("5b18210e0366", &["p_redis_1", &format!("/{tmp}")], now()),
                "the rename to the final name"
            );
        }
        // After the change, late or replayed events of it are still ours…
        assert!(own.is_ours(old, &["p_redis_1"], now() - chrono::Duration::seconds(2)));
        assert!(own.is_ours("5b18210e0366", &["p_redis_1"], now()));
        // …but the next deploy, reusing the final name, is not, nor what it does to the
        // container we made.
        assert!(!own.is_ours("0d1e2f", &["p_redis_1"], now()));
        let later = now() + chrono::Duration::seconds(5);
        assert!(!own.is_ours(
            "5b18210e0366",
            &["5b18210e0366_p_redis_1", "/p_redis_1"],
            later
        ));
    }
}
