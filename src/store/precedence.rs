//! The engine's precedence over the intake writer's next group on the one connection.
//!
//! The intake writer holds the connection for a whole group (its statements and its fsync)
//! and, under a storm, takes it again as soon as it let it go: a mutex is not fair, and the
//! thread that just unlocked it is running while the one woken for it is not yet. The engine
//! takes the connection once per statement, about a dozen times between a new firing and its
//! run's commit, and waited a whole group at many of them: alert → first step under a repeat
//! storm was 8-10 ms at the median where the POST took 3. So before each group the writer
//! gives way, for at most a bound, while the engine has not yet taken what the writer queued
//! for it. Only while that is a little (up to [`GIVES_WAY_UP_TO`] entries): an engine far
//! behind, in a storm of new firings, shares the connection as before, so the intake is not
//! slowed down to the engine's pace.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// The most queue entries not yet taken for which the writer still gives way.
const GIVES_WAY_UP_TO: u64 = 64;

#[derive(Default)]
pub struct Precedence {
    /// Entries the intake writer queued for the engine, since the store was opened.
    queued: AtomicU64,
    /// Of those, how many the engine has taken: it reads `queued` before a pass over its
    /// queue and stores it here once the pass is over.
    taken: AtomicU64,
    lock: Mutex<()>,
    changed: Condvar,
}

impl Precedence {
    /// Whether the writer should wait: the engine has a little left to take.
    pub(crate) fn engine_first(&self) -> bool {
        let left = self
            .queued
            .load(Ordering::Acquire)
            .saturating_sub(self.taken.load(Ordering::Acquire));
        (1..=GIVES_WAY_UP_TO).contains(&left)
    }

    /// The writer: a commit of it queued `entries` for the engine (before the engine is
    /// woken).
    pub fn queued(&self, entries: usize) {
        self.queued.fetch_add(entries as u64, Ordering::AcqRel);
    }

    /// The engine, before a pass over its queue: what the pass will have taken once over.
    pub fn pass(&self) -> u64 {
        self.queued.load(Ordering::Acquire)
    }

    /// The engine: its pass is over (it found the queue empty, or it stopped); everything
    /// queued before [`Precedence::pass`] was taken, and the writer goes on.
    pub fn taken(&self, pass: u64) {
        self.taken.fetch_max(pass, Ordering::AcqRel);
        // Under the lock, so that a writer between its check and its wait is not missed.
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.changed.notify_all();
    }

    /// The writer, before it takes the connection for a group: waits while the engine has a
    /// little to take, for at most `bound`. Returns how long it waited.
    pub fn give_way(&self, bound: Duration) -> Duration {
        if !self.engine_first() {
            return Duration::ZERO;
        }
        let start = Instant::now();
        let guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let _ = self
            .changed
            .wait_timeout_while(guard, bound, |_| self.engine_first())
            .unwrap_or_else(|p| p.into_inner());
        start.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_writer_goes_on_at_once_when_the_engine_has_nothing_to_take() {
        let p = Precedence::default();
        assert_eq!(p.give_way(Duration::from_secs(10)), Duration::ZERO);
        p.queued(3);
        let pass = p.pass();
        p.taken(pass);
        assert_eq!(p.give_way(Duration::from_secs(10)), Duration::ZERO);
    }

    #[test]
    fn the_writer_waits_until_the_engines_pass_took_what_it_queued() {
        let p = Arc::new(Precedence::default());
        p.queued(1);
        let engine = {
            let p = p.clone();
            std::thread::spawn(move || {
                let pass = p.pass();
                std::thread::sleep(Duration::from_millis(50));
                p.taken(pass);
            })
        };
        let waited = p.give_way(Duration::from_secs(10));
        engine.join().unwrap();
        assert!(
            waited >= Duration::from_millis(40) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
        // A pass that began before more was queued leaves that to wait for.
        let pass = p.pass();
        p.queued(1);
        p.taken(pass);
        assert!(p.engine_first());
    }

    #[test]
    fn the_wait_is_bounded_and_an_engine_far_behind_gets_no_precedence() {
        let p = Precedence::default();
        p.queued(1);
        let waited = p.give_way(Duration::from_millis(20));
        assert!(
            waited >= Duration::from_millis(20) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
        p.queued(GIVES_WAY_UP_TO as usize);
        assert_eq!(p.give_way(Duration::from_secs(10)), Duration::ZERO);
    }
}
