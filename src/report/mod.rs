//! An incident's timeline, for the post-mortem (DR plan, incident response step 5): built
//! from what the store recorded, pure (no I/O; `now` is given), and rendered as Markdown for
//! the wiki ([`markdown`]); `http` renders the same timeline as a web page.
//!
//! Fired (the alert's `startsAt`), received (the first delivery), every decision, every step
//! with its duration, pages, acknowledgement, button presses, approvals and the resolution,
//! in time order, each marked with who acted: Alertmanager, the automation or people (an
//! acknowledgement, a button, an approval, a pause someone set are people). A decision kind
//! this module does not know is shown as it is, by its kind and reason.
//!
//! The timeline is also the JSON of `GET /api/v1/incidents/{id}/timeline`, which
//! `remediator postmortem` reads back into it.

pub mod markdown;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::notice::{recovery_text, RunOutcome};
use crate::domain::phase::text_enum;
use crate::domain::{
    Approval, ApprovalVerdict, DecisionKind, IncidentState, Phase, Priority, RunPhase, StepOutcome,
    Verdict,
};
use crate::store::{DecisionRecord, IncidentRecord, RunSummary, StepRecord};

text_enum! {
    /// Who acted.
    pub enum Actor as "actor" {
        /// The alert's source: it fired, it resolved.
        Alertmanager = "alertmanager",
        /// remediator: what it received, decided, ran and paged.
        Automation = "automation",
        /// A person: acknowledged, pressed a button, approved, paused the automation.
        People = "people",
    }
}

text_enum! {
    /// What happened, on the timeline.
    pub enum EventKind as "timeline event" {
        Fired = "fired",
        Received = "received",
        Decision = "decision",
        Step = "step",
        Page = "page",
        Ack = "ack",
        Button = "button",
        Approval = "approval",
        /// A runbook held back by a pause someone set.
        Pause = "pause",
        RunEnded = "run_ended",
        Resolved = "resolved",
    }
}

text_enum! {
    /// The time to recover against the RTO.
    pub enum RtoVerdict as "RTO verdict" {
        Within = "within",
        Missed = "missed",
        /// Still firing, within the RTO so far.
        Open = "open",
        /// Still firing, and past the RTO already.
        OpenMissed = "open_missed",
        /// No rule matched: there is no RTO to hold it to.
        NoRto = "no_rto",
    }
}

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at: DateTime<Utc>,
    /// Seconds since the alert fired.
    pub offset_seconds: f64,
    pub kind: EventKind,
    pub actor: Actor,
    /// A few words: `fired`, `match: continue`, `restart`, `acknowledged by alice`.
    pub what: String,
    /// The decision's reason, the step's detail.
    pub detail: String,
    /// How long it took (steps).
    pub duration_seconds: Option<f64>,
}

/// A step as the chart draws it: a bar from its start, as long as it took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepBar {
    pub phase: RunPhase,
    /// Its position in its list, from 0.
    pub seq: i64,
    /// The step's kind as the rule names it (`restart`).
    pub kind: String,
    pub outcome: StepOutcome,
    /// Seconds since the alert fired.
    pub start_seconds: f64,
    /// How long it took; for a step still running, how long it has run so far.
    pub duration_seconds: f64,
    pub detail: String,
}

/// What the incident is, in a few facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub id: i64,
    pub alertname: String,
    pub labels: BTreeMap<String, String>,
    pub rule: Option<String>,
    pub priority: Option<Priority>,
    pub target: Option<String>,
    /// The rule's owner (its key in `escalation.yaml`).
    pub owner: Option<String>,
    pub state: IncidentState,
    pub phase: Phase,
    pub fired_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    /// The alert's end, once resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// How its runbook ended, if one ran and ended.
    pub run_outcome: Option<RunOutcome>,
    /// An alert's, or a person's `remediator run` / `drill` (and who started it).
    #[serde(default = "alertmanager")]
    pub origin: crate::domain::Origin,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
}

fn alertmanager() -> crate::domain::Origin {
    crate::domain::Origin::Alertmanager
}

/// The time to recover against the RTO.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recovery {
    pub rto_seconds: Option<f64>,
    /// From fired to resolved, once resolved.
    pub time_to_recover_seconds: Option<f64>,
    /// From fired to now, while still firing.
    pub open_for_seconds: Option<f64>,
    /// From the runbook's start to its end.
    pub runbook_seconds: Option<f64>,
    pub verdict: RtoVerdict,
    /// `12m (within the RTO of 30m)`.
    pub text: String,
}

/// An incident's whole story.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    pub summary: Summary,
    pub events: Vec<Event>,
    pub steps: Vec<StepBar>,
    pub recovery: Recovery,
    /// When the timeline was built (what "still running" is measured to).
    pub as_of: DateTime<Utc>,
}

/// What the store holds of one incident.
pub struct Record<'a> {
    pub incident: &'a IncidentRecord,
    pub decisions: &'a [DecisionRecord],
    pub steps: &'a [StepRecord],
    pub run: Option<&'a RunSummary>,
    /// Its `approve` steps' requests and answers.
    pub approvals: &'a [Approval],
}

fn secs_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds() as f64 / 1000.0
}

fn duration_of(secs: f64) -> Duration {
    Duration::from_secs_f64(secs.max(0.0))
}

/// Who a decision is, and what the timeline calls it.
fn classify(d: &DecisionRecord) -> (EventKind, Actor) {
    match d.guard {
        DecisionKind::Page => (EventKind::Page, Actor::Automation),
        DecisionKind::Ack => (EventKind::Ack, Actor::People),
        DecisionKind::Button => (EventKind::Button, Actor::People),
        DecisionKind::Pause if d.verdict == Verdict::Skip => (EventKind::Pause, Actor::People),
        // A named person's answer to an `approve` step is people's; a timeout is nobody's.
        DecisionKind::Approval => (EventKind::Approval, Actor::People),
        _ => (EventKind::Decision, Actor::Automation),
    }
}

/// An `approve` step's request (automation asked) and its answer: who, the choice and when
/// (a person's), or its timeout (automation's).
fn approval_events(
    a: &Approval,
    push: &mut impl FnMut(DateTime<Utc>, EventKind, Actor, String, String, Option<f64>),
) {
    let offered = if a.choices.is_empty() {
        String::new()
    } else {
        format!("; choices: {}", a.choices.join(", "))
    };
    push(
        a.asked_at,
        EventKind::Approval,
        Actor::Automation,
        format!("approval asked of {}", a.who),
        format!(
            "{} (until {}){offered}",
            a.prompt,
            a.deadline.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        None,
    );
    let Some(d) = &a.decided else {
        return;
    };
    let waited = Some(secs_between(a.asked_at, d.at));
    let detail = a.decided_text().unwrap_or_default();
    let (actor, what) = match d.verdict {
        ApprovalVerdict::Approved => (
            Actor::People,
            match &d.choice {
                Some(c) => format!("approved by {}: {c}", d.by),
                None => format!("approved by {}", d.by),
            },
        ),
        ApprovalVerdict::Rejected => (Actor::People, format!("rejected by {}", d.by)),
        ApprovalVerdict::TimedOut => (Actor::Automation, "approval timed out".to_owned()),
    };
    push(d.at, EventKind::Approval, actor, what, detail, waited);
}

impl Timeline {
    /// The timeline of `r` as of `now`.
    pub fn build(r: &Record<'_>, now: DateTime<Utc>) -> Timeline {
        let inc = r.incident;
        let t0 = inc.starts_at;
        let mut events = Vec::new();
        let mut push = |at: DateTime<Utc>,
                        kind: EventKind,
                        actor: Actor,
                        what: String,
                        detail: String,
                        duration_seconds: Option<f64>| {
            events.push(Event {
                at,
                offset_seconds: secs_between(t0, at),
                kind,
                actor,
                what,
                detail,
                duration_seconds,
            })
        };
        push(
            t0,
            EventKind::Fired,
            Actor::Alertmanager,
            "fired".into(),
            format!("{} started firing (startsAt)", inc.alertname),
            None,
        );
        push(
            inc.first_seen,
            EventKind::Received,
            Actor::Automation,
            "received".into(),
            format!(
                "first delivery; {} in all",
                plural(inc.deliveries, "delivery", "deliveries")
            ),
            None,
        );
        let mut acked = false;
        for a in r.approvals {
            approval_events(a, &mut push);
        }
        for d in r.decisions {
            // The approvals' own events say who, what choice and when; their decisions would
            // say it twice.
            if d.guard == DecisionKind::Approval && !r.approvals.is_empty() {
                continue;
            }
            let (kind, actor) = classify(d);
            acked |= kind == EventKind::Ack;
            push(
                d.at,
                kind,
                actor,
                format!("{}: {}", d.guard, d.verdict),
                d.reason.clone(),
                None,
            );
        }
        // Recorded on the incident by a version that wrote no decision for it.
        if let (false, Some(by), Some(at)) = (acked, &inc.acked_by, inc.acked_at) {
            push(
                at,
                EventKind::Ack,
                Actor::People,
                format!("acknowledged by {by}"),
                String::new(),
                None,
            );
        }
        let mut bars = Vec::new();
        for s in r.steps {
            let end = s.ended_at.unwrap_or(now.max(s.started_at));
            let took = secs_between(s.started_at, end);
            let list = match s.phase {
                RunPhase::Main => String::new(),
                other => format!(" ({other})"),
            };
            push(
                s.started_at,
                EventKind::Step,
                Actor::Automation,
                format!("step {}{list} {}: {}", s.seq + 1, s.kind, s.outcome),
                s.detail.clone(),
                Some(took),
            );
            bars.push(StepBar {
                phase: s.phase,
                seq: s.seq,
                kind: s.kind.clone(),
                outcome: s.outcome,
                start_seconds: secs_between(t0, s.started_at),
                duration_seconds: took,
                detail: s.detail.clone(),
            });
        }
        let run_outcome = r.run.and_then(|run| run.outcome);
        if let Some(run) = r.run {
            if let (Some(end), Some(outcome)) = (run.ended_at, run.outcome) {
                push(
                    end,
                    EventKind::RunEnded,
                    Actor::Automation,
                    format!("runbook {outcome}"),
                    format!("{} on {}", run.rule, run.target),
                    Some(secs_between(run.started_at, end)),
                );
            }
        }
        let resolved_at = match inc.state {
            IncidentState::Resolved => inc.ends_at.or(inc.resolved_at),
            IncidentState::Open => None,
        };
        if let Some(at) = resolved_at {
            push(
                at,
                EventKind::Resolved,
                Actor::Alertmanager,
                "resolved".into(),
                format!("{} stopped firing (endsAt)", inc.alertname),
                None,
            );
        }
        // Stable: what happened at the same instant stays in the order it was recorded.
        events.sort_by_key(|e| e.at);
        let recovery = recovery(inc, r.run, now);
        Timeline {
            summary: Summary {
                id: inc.id,
                alertname: inc.alertname.clone(),
                labels: inc.labels.clone(),
                rule: inc.rule.clone(),
                priority: inc.priority,
                target: inc.target.clone(),
                owner: inc.owner.as_ref().map(|o| o.key.clone()),
                state: inc.state,
                phase: inc.phase,
                fired_at: t0,
                received_at: inc.first_seen,
                resolved_at,
                run_outcome,
                origin: inc.origin,
                started_by: inc.started.as_ref().map(|s| s.by.clone()),
            },
            events,
            steps: bars,
            recovery,
            as_of: now,
        }
    }

    /// Events of one actor, in time order.
    pub fn by(&self, actor: Actor) -> impl Iterator<Item = &Event> {
        self.events.iter().filter(move |e| e.actor == actor)
    }

    /// The seconds the chart's axis spans: the last thing that happened, and the RTO line.
    pub fn span_seconds(&self) -> f64 {
        let last = self
            .events
            .iter()
            .map(|e| e.offset_seconds + e.duration_seconds.unwrap_or(0.0))
            .chain(
                self.steps
                    .iter()
                    .map(|s| s.start_seconds + s.duration_seconds),
            )
            .chain(self.recovery.rto_seconds)
            .fold(0.0_f64, f64::max);
        if last > 0.0 {
            last
        } else {
            1.0
        }
    }
}

fn recovery(inc: &IncidentRecord, run: Option<&RunSummary>, now: DateTime<Utc>) -> Recovery {
    let rto = inc.rto;
    let runbook_seconds = run.and_then(|r| r.ended_at.map(|end| secs_between(r.started_at, end)));
    let rto_seconds = rto.map(|d| d.as_secs_f64());
    match inc.time_to_recover() {
        Some(after) => Recovery {
            rto_seconds,
            time_to_recover_seconds: inc.time_to_recover_seconds,
            open_for_seconds: None,
            runbook_seconds,
            verdict: match rto {
                None => RtoVerdict::NoRto,
                Some(rto) if after <= rto => RtoVerdict::Within,
                Some(_) => RtoVerdict::Missed,
            },
            text: recovery_text(after, rto),
        },
        None => {
            let open = secs_between(inc.starts_at, now).max(0.0);
            let open_d = duration_of(open);
            let human =
                |d: Duration| crate::domain::duration::format(Duration::from_secs(d.as_secs()));
            let (verdict, text) = match rto {
                None => (
                    RtoVerdict::NoRto,
                    format!("still firing after {}", human(open_d)),
                ),
                Some(rto) if open_d <= rto => (
                    RtoVerdict::Open,
                    format!(
                        "still firing after {} ({} left of the RTO of {})",
                        human(open_d),
                        human(rto - open_d),
                        human(rto)
                    ),
                ),
                Some(rto) => (
                    RtoVerdict::OpenMissed,
                    format!(
                        "still firing after {} (RTO of {} missed)",
                        human(open_d),
                        human(rto)
                    ),
                ),
            };
            Recovery {
                rto_seconds,
                time_to_recover_seconds: None,
                open_for_seconds: Some(open),
                runbook_seconds,
                verdict,
                text,
            }
        }
    }
}

fn plural(n: i64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Seconds as the timeline shows them: `0.4s`, `12.0s`, then `2m 5s`, `1h 3m`.
pub fn seconds_text(secs: f64) -> String {
    let sign = if secs < 0.0 { "-" } else { "" };
    let secs = secs.abs();
    if secs < 60.0 {
        format!("{sign}{secs:.1}s")
    } else {
        let d = Duration::from_secs(secs as u64);
        format!("{sign}{}", crate::domain::duration::format(d))
    }
}

#[cfg(test)]
mod tests;
