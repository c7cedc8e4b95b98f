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
    Silenced { by: Vec<SilenceFact> },
    /// Muted by these inhibiting alerts.
    Inhibited { by: Vec<InhibitorFact> },
    /// No longer active (resolved, or unknown to every peer asked).
    Gone,
}

/// A silence that mutes an alert: its id always; who made it, why and until when once the
/// silence itself was read (empty or `None` when it could not be).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SilenceFact {
    pub id: String,
    pub created_by: String,
    pub comment: String,
    pub ends_at: Option<DateTime<Utc>>,
}

impl SilenceFact {
    /// A silence known only by its id.
    pub fn id(id: impl Into<String>) -> SilenceFact {
        SilenceFact {
            id: id.into(),
            created_by: String::new(),
            comment: String::new(),
            ends_at: None,
        }
    }
}

/// An alert that inhibits another: its fingerprint always, its `alertname` when the
/// inhibiting alert was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InhibitorFact {
    pub fingerprint: String,
    pub alertname: Option<String>,
}

text_enum! {
    /// What to do when no Alertmanager peer answers the check before a destructive step
    /// (`alertmanager.on_unreachable`).
    pub enum OnUnreachable as "value of alertmanager.on_unreachable" {
        /// Go on, and say so in the thread: an Alertmanager outage must not stop remediation.
        Go = "go",
        /// Stop the runbook before it touches anything.
        Stop = "stop",
    }
}

text_enum! {
    /// What a replica does with a new firing when Redis cannot be asked who acts on it
    /// (`coordination.on_redis_down`).
    pub enum OnRedisDown as "value of coordination.on_redis_down" {
        /// Open the incident, tell the thread and page people, but act on nothing: two
        /// replicas may both page, none runs a runbook unclaimed.
        Page = "page",
        /// Act as a single replica would: another replica may act on the same firing.
        Act = "act",
    }
}

impl AlertNow {
    /// Why a runbook stops, for a person who reads the thread (`None` for an active alert):
    /// "silenced in Alertmanager by silence 1a2b (alice: "db work", until 14:00 UTC)".
    pub fn stop_reason(&self, now: DateTime<Utc>) -> Option<String> {
        match self {
            AlertNow::Active => None,
            AlertNow::Silenced { by } => {
                let each: Vec<String> = by
                    .iter()
                    .map(|s| {
                        let mut about = Vec::new();
                        match (s.created_by.is_empty(), s.comment.is_empty()) {
                            (false, false) => {
                                about.push(format!("{}: \"{}\"", s.created_by, s.comment))
                            }
                            (false, true) => about.push(s.created_by.clone()),
                            (true, false) => about.push(format!("\"{}\"", s.comment)),
                            (true, true) => {}
                        }
                        if let Some(until) = s.ends_at {
                            about.push(format!("until {}", until_text(until, now)));
                        }
                        if about.is_empty() {
                            s.id.clone()
                        } else {
                            format!("{} ({})", s.id, about.join(", "))
                        }
                    })
                    .collect();
                let noun = if by.len() == 1 { "silence" } else { "silences" };
                Some(format!(
                    "silenced in Alertmanager by {noun} {}",
                    each.join(", ")
                ))
            }
            AlertNow::Inhibited { by } => {
                let each: Vec<String> = by
                    .iter()
                    .map(|i| match &i.alertname {
                        Some(name) => format!("{name} (fingerprint {})", i.fingerprint),
                        None => format!("the alert of fingerprint {}", i.fingerprint),
                    })
                    .collect();
                Some(format!("inhibited in Alertmanager by {}", each.join(", ")))
            }
            AlertNow::Gone => Some("no longer firing in Alertmanager".to_owned()),
        }
    }
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
    fn stop_reasons_name_the_silence_its_author_and_the_inhibiting_alert() {
        let now = Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).unwrap();
        let full = SilenceFact {
            id: "8c1f".into(),
            created_by: "alice".into(),
            comment: "db work".into(),
            ends_at: Some(Utc.with_ymd_and_hms(2026, 12, 2, 14, 0, 0).unwrap()),
        };
        let cases = [
            (AlertNow::Active, None),
            (
                AlertNow::Silenced {
                    by: vec![full.clone()],
                },
                Some(r#"silenced in Alertmanager by silence 8c1f (alice: "db work", until 14:00 UTC)"#),
            ),
            (
                AlertNow::Silenced {
                    by: vec![full, SilenceFact::id("9d2e")],
                },
                Some(r#"silenced in Alertmanager by silences 8c1f (alice: "db work", until 14:00 UTC), 9d2e"#),
            ),
            (
                AlertNow::Inhibited {
                    by: vec![
                        InhibitorFact {
                            fingerprint: "1e48178e9e293490".into(),
                            alertname: Some("PostgresDown".into()),
                        },
                        InhibitorFact {
                            fingerprint: "00ff".into(),
                            alertname: None,
                        },
                    ],
                },
                Some("inhibited in Alertmanager by PostgresDown (fingerprint 1e48178e9e293490), the alert of fingerprint 00ff"),
            ),
            (AlertNow::Gone, Some("no longer firing in Alertmanager")),
        ];
        for (now_is, want) in cases {
            assert_eq!(now_is.stop_reason(now).as_deref(), want, "{now_is:?}");
        }
    }

    #[test]
    fn until_names_the_day_only_when_it_is_not_today() {
        let now = Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).unwrap();
        let today = Utc.with_ymd_and_hms(2026, 12, 2, 14, 0, 0).unwrap();
        let tomorrow = Utc.with_ymd_and_hms(2026, 12, 3, 1, 30, 0).unwrap();
        assert_eq!(until_text(today, now), "14:00 UTC");
        assert_eq!(until_text(tomorrow, now), "2026-12-03 01:30 UTC");
    }
}
