//! What is said about an incident: one typed [`Notice`] per thing people are told, stored in
//! the outbox for a [`Sink`] and rendered by `notify` (Block Kit, mentions, PagerDuty events).
//!
//! The engine decides what a notice says (who is told, the RTO verdict); `notify` decides only
//! how it looks. [`Notice::summary`] is the plain text kept with every stored message, the
//! one the API shows.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration::{format as human, serde_millis, serde_millis_opt};
use super::phase::text_enum;
use super::{Phase, Priority};

text_enum! {
    /// Where a notice goes.
    pub enum Sink as "sink" {
        Slack = "slack",
        PagerDuty = "pagerduty",
    }
}

text_enum! {
    /// A guard's verdict.
    pub enum Verdict as "verdict" {
        Continue = "continue",
        Skip = "skip",
    }
}

text_enum! {
    /// What a stored decision is about: a guard, the match, or a later turn of the incident.
    pub enum DecisionKind as "decision kind" {
        Match = "match",
        Target = "target",
        Dedup = "dedup",
        Flapping = "flapping",
        Pause = "pause",
        Window = "window",
        Deploy = "deploy",
        DryRun = "dry_run",
        RateLimit = "rate_limit",
        Budget = "budget",
        Busy = "busy",
        Alertmanager = "alertmanager",
        Runbook = "runbook",
        Recovery = "recovery",
        Page = "page",
        Tier = "tier",
        Ack = "ack",
        Resolved = "resolved",
    }
}

text_enum! {
    /// Which list of a rule's steps a step belongs to.
    pub enum RunPhase as "run phase" {
        Main = "main",
        OnFailure = "on_failure",
    }
}

text_enum! {
    /// How a step ended (or that it is still running).
    pub enum StepOutcome as "step outcome" {
        Running = "running",
        Ok = "ok",
        Failed = "failed",
        TimedOut = "timed_out",
        Interrupted = "interrupted",
    }
}

text_enum! {
    /// How a runbook ended.
    pub enum RunOutcome as "run outcome" {
        Recovered = "recovered",
        Failed = "failed",
        Interrupted = "interrupted",
        /// Stopped before its first destructive step: Alertmanager says the alert is
        /// silenced, inhibited or no longer firing (or could not be asked, under
        /// `alertmanager.on_unreachable: stop`).
        Stopped = "stopped",
    }
}

text_enum! {
    /// What the thread's root message shows as the incident's state.
    pub enum RootState as "root state" {
        Firing = "firing",
        Remediating = "remediating",
        Recovered = "recovered",
        Escalated = "escalated",
        Resolved = "resolved",
    }
}

text_enum! {
    /// The PagerDuty Events API v2 action a notice becomes.
    pub enum PagerDutyEvent as "PagerDuty event" {
        Trigger = "trigger",
        Acknowledge = "acknowledge",
        Resolve = "resolve",
    }
}

/// A person or rota from `escalation.yaml`, as a notice names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// The contact's key in `escalation.yaml` (`dba`, `oncall`).
    pub key: String,
    /// The role, as the DR plan names it.
    #[serde(default)]
    pub name: String,
    pub email: String,
    /// A Slack user id when known; otherwise `notify` looks it up by e-mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack_user: Option<String>,
}

impl Contact {
    /// A name that is in no contact list (an unknown key): shown as written.
    pub fn unknown(key: &str) -> Contact {
        Contact {
            key: key.to_owned(),
            name: String::new(),
            email: String::new(),
            slack_user: None,
        }
    }
}

/// The keys of contacts, for plain text.
pub fn keys(who: &[Contact]) -> String {
    who.iter()
        .map(|c| c.key.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A change of the incident's state that its thread's root shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateChange {
    Phase(Phase),
    Acknowledged,
    Resolved,
}

impl StateChange {
    pub fn as_str(self) -> &'static str {
        match self {
            StateChange::Phase(p) => p.as_str(),
            StateChange::Acknowledged => "acknowledged",
            StateChange::Resolved => "resolved",
        }
    }
}

/// A page: who, why, and what the PagerDuty event carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    pub who: Vec<Contact>,
    pub why: String,
    pub priority: Option<Priority>,
    pub alertname: String,
    pub rule: Option<String>,
    /// The target's key (`service/postgres`), PagerDuty's `source`.
    pub target: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// The recovery time against the RTO: `12m (within the RTO of 30m)`.
pub fn recovery_text(after: Duration, rto: Option<Duration>) -> String {
    let after_text = human(Duration::from_secs(after.as_secs()));
    match rto {
        Some(rto) if after <= rto => format!("{after_text} (within the RTO of {})", human(rto)),
        Some(rto) => format!("{after_text} (RTO of {} missed)", human(rto)),
        None => after_text,
    }
}

/// One thing people are told about an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Notice {
    /// The incident opened and matched a rule; `told` is who hears of it (the priority's
    /// `notify` list and the rule's owner).
    Opened {
        alertname: String,
        priority: Priority,
        rule: String,
        #[serde(with = "serde_millis")]
        rto: Duration,
        owner: String,
        told: Vec<Contact>,
    },
    /// A guard's decision, as the thread shows it.
    Decision {
        guard: DecisionKind,
        verdict: Verdict,
        reason: String,
    },
    /// A step ended.
    Step {
        phase: RunPhase,
        name: String,
        outcome: StepOutcome,
        /// The first line of what the step reported.
        detail: String,
        #[serde(with = "serde_millis")]
        took: Duration,
    },
    /// A rule's `notify` step.
    #[serde(rename = "notify")]
    Message {
        text: String,
    },
    Page(Page),
    /// An escalation tier fired.
    Tier {
        tier: usize,
        who: Vec<Contact>,
        #[serde(with = "serde_millis")]
        after: Duration,
        /// The tier's share of the RTO, when it is timed that way, and the RTO.
        share: Option<f64>,
        #[serde(with = "serde_millis")]
        rto: Duration,
    },
    #[serde(rename = "ack")]
    Acknowledged {
        by: String,
        slack_user: Option<String>,
    },
    /// The runbook finished and every step succeeded.
    Recovered,
    /// The alert resolved; the time to recover against the rule's RTO.
    Resolved {
        #[serde(with = "serde_millis")]
        after: Duration,
        #[serde(with = "serde_millis_opt")]
        rto: Option<Duration>,
    },
    /// The incident's state changed: the thread's root is updated in place.
    State {
        change: StateChange,
    },
    /// A message stored by a version before notices were typed: delivered as its text, in
    /// the role its kind had (`was`: a `state` still updates the root, an `opened` is the
    /// root), with the structured data it was stored with (`details`: PagerDuty's).
    Recorded {
        was: String,
        text: String,
        #[serde(default)]
        who: Vec<String>,
        #[serde(default)]
        priority: Option<Priority>,
        #[serde(default)]
        details: Option<serde_json::Value>,
    },
}

text_enum! {
    /// A notice's kind, as stored and as the API shows it.
    pub enum NoticeKind as "notice kind" {
        Opened = "opened",
        Decision = "decision",
        Step = "step",
        Notify = "notify",
        Page = "page",
        Tier = "tier",
        Ack = "ack",
        Recovered = "recovered",
        Resolved = "resolved",
        State = "state",
        Recorded = "recorded",
    }
}

impl Notice {
    pub fn kind(&self) -> NoticeKind {
        match self {
            Notice::Opened { .. } => NoticeKind::Opened,
            Notice::Decision { .. } => NoticeKind::Decision,
            Notice::Step { .. } => NoticeKind::Step,
            Notice::Message { .. } => NoticeKind::Notify,
            Notice::Page(_) => NoticeKind::Page,
            Notice::Tier { .. } => NoticeKind::Tier,
            Notice::Acknowledged { .. } => NoticeKind::Ack,
            Notice::Recovered => NoticeKind::Recovered,
            Notice::Resolved { .. } => NoticeKind::Resolved,
            Notice::State { .. } => NoticeKind::State,
            Notice::Recorded { .. } => NoticeKind::Recorded,
        }
    }

    /// The role the notice plays in the thread: its kind, or for a recorded one the kind it
    /// was stored as.
    pub fn role(&self) -> NoticeKind {
        match self {
            Notice::Recorded { was, .. } => was.parse().unwrap_or(NoticeKind::Recorded),
            other => other.kind(),
        }
    }

    /// What the notice is called for a sink: its kind for Slack, the event for PagerDuty.
    pub fn kind_for(&self, sink: Sink) -> &str {
        match (sink, self) {
            (Sink::PagerDuty, _) if self.pagerduty_event().is_some() => self
                .pagerduty_event()
                .map(PagerDutyEvent::as_str)
                .unwrap_or_default(),
            (_, Notice::Recorded { was, .. }) => was,
            _ => self.kind().as_str(),
        }
    }

    /// The PagerDuty event this notice becomes, if any.
    pub fn pagerduty_event(&self) -> Option<PagerDutyEvent> {
        match self {
            Notice::Page(_) => Some(PagerDutyEvent::Trigger),
            Notice::Acknowledged { .. } => Some(PagerDutyEvent::Acknowledge),
            Notice::Resolved { .. } => Some(PagerDutyEvent::Resolve),
            Notice::Recorded { was, .. } => was.parse().ok(),
            _ => None,
        }
    }

    /// The plain text kept with the stored message (Slack renders it with mentions).
    pub fn summary(&self) -> String {
        match self {
            Notice::Opened {
                alertname,
                priority,
                rule,
                rto,
                owner,
                told,
            } => format!(
                "[{priority}] {alertname} firing: rule {rule}, RTO {}, owner {owner}; telling {}",
                human(*rto),
                keys(told)
            ),
            Notice::Decision { guard, reason, .. } => format!("{guard}: {reason}"),
            Notice::Step {
                phase,
                name,
                outcome,
                detail,
                ..
            } => format!("{phase} {name}: {outcome} ({detail})"),
            Notice::Message { text } => text.clone(),
            Notice::Page(page) => format!("paged: {}", page.why),
            Notice::Tier {
                who,
                after,
                share,
                rto,
                ..
            } => {
                let share = share
                    .map(|f| format!(" ({:.0}% of the RTO of {})", f * 100.0, human(*rto)))
                    .unwrap_or_default();
                format!(
                    "escalation: still unacknowledged and unresolved after {}{share}; telling {}",
                    human(*after),
                    keys(who)
                )
            }
            Notice::Acknowledged { by, .. } => {
                format!("acknowledged by {by}; escalation tiers stopped")
            }
            Notice::Recovered => "runbook finished: every step succeeded".to_owned(),
            Notice::Resolved { after, rto } => {
                format!("resolved after {}", recovery_text(*after, *rto))
            }
            Notice::State { change } => change.as_str().to_owned(),
            Notice::Recorded { text, .. } => text.clone(),
        }
    }

    /// The one-line summary of a page for PagerDuty: `[P1] PostgresDown on service/postgres: why`.
    pub fn pagerduty_summary(&self) -> String {
        match self {
            Notice::Page(p) => format!(
                "[{}] {} on {}: {}",
                p.priority.map(Priority::as_str).unwrap_or("P?"),
                p.alertname,
                p.target.as_deref().unwrap_or("-"),
                p.why
            ),
            other => other.summary(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip_through_their_stored_json() {
        let notices = [
            Notice::Resolved {
                after: Duration::from_secs(90),
                rto: Some(Duration::from_secs(1800)),
            },
            Notice::State {
                change: StateChange::Phase(Phase::Remediating),
            },
            Notice::Message { text: "hi".into() },
            Notice::Recovered,
        ];
        for n in notices {
            let text = serde_json::to_string(&n).unwrap();
            assert_eq!(serde_json::from_str::<Notice>(&text).unwrap(), n, "{text}");
        }
    }

    #[test]
    fn the_rto_verdict_reads_the_same_everywhere() {
        let rto = Some(Duration::from_secs(1800));
        assert_eq!(
            recovery_text(Duration::from_secs(600), rto),
            "10m (within the RTO of 30m)"
        );
        assert_eq!(
            recovery_text(Duration::from_secs(3600), rto),
            "1h (RTO of 30m missed)"
        );
        assert_eq!(
            Notice::Resolved {
                after: Duration::from_millis(600_400),
                rto
            }
            .summary(),
            "resolved after 10m (within the RTO of 30m)"
        );
    }

    #[test]
    fn pagerduty_kinds_follow_the_notice() {
        let ack = Notice::Acknowledged {
            by: "alice".into(),
            slack_user: None,
        };
        assert_eq!(ack.kind_for(Sink::PagerDuty), "acknowledge");
        assert_eq!(ack.kind_for(Sink::Slack), "ack");
        assert!("bogus".parse::<Sink>().is_err());
    }
}
