//! What holds a runbook back because people are at work: a pause someone set, a maintenance
//! window in force, a deploy of the target in progress, and what Alertmanager says of the
//! alert now. Pure facts, gathered by the engine (or `simulate`) and judged by the guards.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::phase::text_enum;

/// A pause covering an incident's rule or service: who set it, until when, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PauseFact {
    pub id: i64,
    pub by: String,
    pub until: DateTime<Utc>,
    pub reason: String,
}

/// A maintenance window in force now that covers an incident's rule or service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WindowFact {
    pub name: String,
    /// When the window's current interval ends, when that is known.
    pub until: Option<DateTime<Utc>>,
}

text_enum! {
    /// What a deploy did to a service's container, as Docker's event stream tells it.
    pub enum DeployAction as "deploy action" {
        Created = "created",
        Recreated = "recreated",
        Renamed = "renamed",
        Destroyed = "destroyed",
    }
}

/// A deploy of the target service seen within the deploy grace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeployFact {
    pub service: String,
    pub action: DeployAction,
    pub at: DateTime<Utc>,
}

/// What Alertmanager says of an alert just before a runbook's first destructive step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AlertNow {
    /// Firing and not muted: go on.
    Active,
    /// Muted by these silences.
    Silenced { by: Vec<String> },
    /// Muted by these inhibiting alerts.
    Inhibited { by: Vec<String> },
    /// No longer active (resolved, or unknown to every peer asked).
    Gone,
}

/// "14:00 UTC" today, "2026-12-03 14:00 UTC" on another day.
pub fn until_text(until: DateTime<Utc>, now: DateTime<Utc>) -> String {
    if until.date_naive() == now.date_naive() {
        until.format("%H:%M UTC").to_string()
    } else {
        until.format("%Y-%m-%d %H:%M UTC").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn until_names_the_day_only_when_it_is_not_today() {
        let now = Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).unwrap();
        let today = Utc.with_ymd_and_hms(2026, 12, 2, 14, 0, 0).unwrap();
        let tomorrow = Utc.with_ymd_and_hms(2026, 12, 3, 1, 30, 0).unwrap();
        assert_eq!(until_text(today, now), "14:00 UTC");
        assert_eq!(until_text(tomorrow, now), "2026-12-03 01:30 UTC");
    }
}
