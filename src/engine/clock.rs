//! Time, behind a trait so the engine's tests run on tokio's paused clock.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use chrono::{DateTime, Utc};

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Wall time that advances with tokio's clock: under `tokio::time::pause()` it moves only
/// when the test advances time.
pub struct TokioClock {
    base: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(base: DateTime<Utc>) -> TokioClock {
        TokioClock {
            base,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now() - self.start;
        self.base + chrono::Duration::from_std(elapsed).unwrap_or_default()
    }
}

/// The engine's clock as governor sees it. `replay_at` lets the guards feed a stored run's
/// start time back into a fresh limiter after a restart or a reload.
#[derive(Clone)]
pub(crate) struct GovernorClock {
    clock: Arc<dyn Clock>,
    replay: Arc<Mutex<Option<SystemTime>>>,
}

impl GovernorClock {
    pub(crate) fn new(clock: Arc<dyn Clock>) -> Self {
        GovernorClock {
            clock,
            replay: Arc::new(Mutex::new(None)),
        }
    }

    /// Runs `f` with the clock reading `at`.
    pub(crate) fn at<T>(&self, at: DateTime<Utc>, f: impl FnOnce() -> T) -> T {
        *self.replay.lock().unwrap_or_else(|p| p.into_inner()) = Some(at.into());
        let out = f();
        *self.replay.lock().unwrap_or_else(|p| p.into_inner()) = None;
        out
    }
}

impl governor::clock::Clock for GovernorClock {
    type Instant = SystemTime;

    fn now(&self) -> SystemTime {
        let replay = *self.replay.lock().unwrap_or_else(|p| p.into_inner());
        replay.unwrap_or_else(|| self.clock.now().into())
    }
}
