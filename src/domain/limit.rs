//! A rate limiter's stored state (see `engine::limits` for the algorithm).

use std::time::Duration;

use chrono::{DateTime, Utc};

/// A GCRA limiter's state, its theoretical arrival time, with the quota it was computed
/// under (`runs` at once, then one per `per`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitState {
    pub tat: DateTime<Utc>,
    pub runs: u32,
    pub per: Duration,
}
