//! What is said about an incident: one typed [`Notice`] per thing people are told, stored in
//! the outbox for a [`Sink`] and rendered by `notify` (Block Kit, mentions, PagerDuty events).
//!
//! The engine decides what a notice says (who is told, the RTO verdict); `notify` decides only
//! how it looks. [`Notice::summary`] is the plain text kept with every stored message, the
//! one the API shows.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::button::{Button, Pressed};
use super::duration::{format as human, serde_millis, serde_millis_opt};
use super::hold::until_text;
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
        /// A button on the root was used (Silence, Pause), or could not do its work.
        Button = "button",
        Resolved = "resolved",
        /// Fleet mode: who acts on the firing (a claim won or lost in Redis), Redis being
        /// unreachable and the policy applied, or the claiming replica gone mid-runbook.
        Claim = "claim",
        /// An `approve` step's answer (approved, rejected, timed out), or a refused one.
        Approval = "approval",
    }
}

text_enum! {
    /// Which list of a rule's steps a step belongs to.
    pub enum RunPhase as "run phase" {
        Main = "main",
        OnFailure = "on_failure",
        /// A rule's `fallback`: run when a `steps` step fails, it can still recover.
        Fallback = "fallback",
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
    Silenced,
    Paused,
}

impl StateChange {
    pub fn as_str(self) -> &'static str {
        match self {
            StateChange::Phase(p) => p.as_str(),
            StateChange::Acknowledged => "acknowledged",
            StateChange::Resolved => "resolved",
            StateChange::Silenced => "silenced",
            StateChange::Paused => "paused",
        }
    }
}

/// What a guard that let the runbook go found: the facts the one "go" reply is made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "check", rename_all = "snake_case")]
pub enum Cleared {
    /// No other open incident of the rule and target has run.
    Dedup,
    Flapping {
        firings: i64,
        threshold: i64,
        #[serde(with = "serde_millis")]
        window: Duration,
    },
    Pause,
    Window,
    Deploy,
    /// Not a dry run.
    DryRun,
    /// This run is the `run`th of `of` allowed on `target` (its name) per `per`.
    RateLimit {
        run: usize,
        of: u32,
        target: String,
        #[serde(with = "serde_millis")]
        per: Duration,
    },
    /// This run is the `run`th of the `of` runbooks the global budget allows per `per`.
    Budget {
        run: usize,
        of: u32,
        #[serde(with = "serde_millis")]
        per: Duration,
    },
    /// The target is free (`None`: the rule has no container target).
    Busy {
        target: Option<String>,
    },
    /// A guard with no facts of its own here: its stored reason.
    Said {
        guard: DecisionKind,
        reason: String,
    },
}

impl Cleared {
    /// The guard it is the verdict of.
    pub fn guard(&self) -> DecisionKind {
        match self {
            Cleared::Dedup => DecisionKind::Dedup,
            Cleared::Flapping { .. } => DecisionKind::Flapping,
            Cleared::Pause => DecisionKind::Pause,
            Cleared::Window => DecisionKind::Window,
            Cleared::Deploy => DecisionKind::Deploy,
            Cleared::DryRun => DecisionKind::DryRun,
            Cleared::RateLimit { .. } => DecisionKind::RateLimit,
            Cleared::Budget { .. } => DecisionKind::Budget,
            Cleared::Busy { .. } => DecisionKind::Busy,
            Cleared::Said { guard, .. } => *guard,
        }
    }

    /// The part of the "go" line it adds, if it adds one: the limits spent and the target's
    /// state; a guard that found nothing in the way (no pause, no window, live) goes unsaid.
    fn phrase(&self) -> Option<String> {
        match self {
            Cleared::Flapping {
                firings, window, ..
            } if *firings > 1 => Some(format!("fired {firings} times in {}", human(*window))),
            Cleared::RateLimit {
                run,
                of,
                target,
                per,
            } => Some(format!(
                "run {run} of {of} for {} {}",
                if target.is_empty() {
                    "this rule"
                } else {
                    target
                },
                per_text(*per)
            )),
            Cleared::Budget { run, of, .. } => Some(format!("budget {run} of {of}")),
            Cleared::Busy { target: Some(_) } => Some("target free".to_owned()),
            Cleared::Said { guard, reason } => Some(format!("{guard}: {reason}")),
            _ => None,
        }
    }
}

/// `this hour`, `today`, or `per 30m`.
fn per_text(per: Duration) -> String {
    match per.as_secs() {
        3600 => "this hour".to_owned(),
        86_400 => "today".to_owned(),
        _ => format!("per {}", human(per)),
    }
}

/// The "go" line: `go: run 1 of 2 for postgres this hour, budget 3 of 10, target free`.
pub fn go_text(cleared: &[Cleared]) -> String {
    let parts: Vec<String> = cleared.iter().filter_map(Cleared::phrase).collect();
    if parts.is_empty() {
        "go: every guard let the runbook run".to_owned()
    } else {
        format!("go: {}", parts.join(", "))
    }
}

/// A step's duration as the thread shows it: `4.2 s` under a minute, `2m 5s` above.
pub fn took_text(took: Duration) -> String {
    if took < Duration::from_secs(60) {
        format!("{:.1} s", took.as_secs_f64())
    } else {
        human(Duration::from_secs(took.as_secs()))
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

/// The most characters of a step's output a reply shows (Slack sections take 3000).
pub const EXCERPT_CHARS: usize = 2500;

/// `silenced 1h by bob in Alertmanager (silence 7f3a…) until 15:00 UTC`; `who` is the name
/// or the mention.
pub fn silenced_text(p: &Pressed, who: &str) -> String {
    let made = p
        .made
        .as_deref()
        .map(|id| format!(" (silence {id})"))
        .unwrap_or_default();
    let until = p
        .until
        .map(|u| format!(" until {}", until_text(u, p.at)))
        .unwrap_or_default();
    format!("silenced 1h by {who} in Alertmanager{made}{until}")
}

/// `automation paused by carol until 14:00 UTC: runbooks of this rule on this service are skipped`.
pub fn paused_text(p: &Pressed, who: &str) -> String {
    let until = p
        .until
        .map(|u| format!(" until {}", until_text(u, p.at)))
        .unwrap_or_default();
    format!("automation paused by {who}{until}: this rule's runbooks on this service are skipped, people are still told")
}

/// `could not silence (asked by bob): …`.
pub fn button_failed_text(button: Button, who: &str, why: &str) -> String {
    let what = match button {
        Button::Acknowledge => "acknowledge",
        Button::Silence => "silence",
        Button::Pause => "pause automation",
    };
    format!("could not {what} (asked by {who}): {why}")
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
    /// Every guard let the runbook go: one reply made of what they found.
    Go {
        cleared: Vec<Cleared>,
    },
    /// A guard's decision, as the thread shows it (a skip, with its reason).
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
        /// The target's name (`postgres`), when the rule has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<String>,
        /// The output shown under a failed step (and under `on_failure` steps): what the step
        /// reported after its first line, cut to [`EXCERPT_CHARS`].
        #[serde(default, skip_serializing_if = "String::is_empty")]
        excerpt: String,
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
    /// The Silence button made an Alertmanager silence (`made`: its id) until `until`.
    Silenced(Pressed),
    /// The Pause button paused the automation of the incident's rule on its service.
    Paused(Pressed),
    /// A button could not do what it says; `why` tells what to do.
    ButtonFailed {
        button: Button,
        by: String,
        slack_user: Option<String>,
        why: String,
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
        Go = "go",
        Decision = "decision",
        Step = "step",
        Notify = "notify",
        Page = "page",
        Tier = "tier",
        Ack = "ack",
        Silenced = "silenced",
        Paused = "paused",
        ButtonFailed = "button_failed",
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
            Notice::Go { .. } => NoticeKind::Go,
            Notice::Decision { .. } => NoticeKind::Decision,
            Notice::Step { .. } => NoticeKind::Step,
            Notice::Message { .. } => NoticeKind::Notify,
            Notice::Page(_) => NoticeKind::Page,
            Notice::Tier { .. } => NoticeKind::Tier,
            Notice::Acknowledged { .. } => NoticeKind::Ack,
            Notice::Silenced(_) => NoticeKind::Silenced,
            Notice::Paused(_) => NoticeKind::Paused,
            Notice::ButtonFailed { .. } => NoticeKind::ButtonFailed,
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
            Notice::Go { cleared } => go_text(cleared),
            Notice::Decision { guard, reason, .. } => format!("{guard}: {reason}"),
            Notice::Step {
                phase,
                name,
                outcome,
                detail,
                took,
                target,
                ..
            } => {
                let phase = match phase {
                    RunPhase::Main => String::new(),
                    other => format!("{other}: "),
                };
                let on = target
                    .as_deref()
                    .map(|t| format!(" {t}"))
                    .unwrap_or_default();
                let detail = if detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({detail})")
                };
                let outcome = match outcome {
                    StepOutcome::TimedOut => "timed out".to_owned(),
                    other => other.as_str().to_owned(),
                };
                format!(
                    "{phase}{name}{on}: {outcome} in {}{detail}",
                    took_text(*took)
                )
            }
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
            Notice::Silenced(p) => silenced_text(p, &p.by),
            Notice::Paused(p) => paused_text(p, &p.by),
            Notice::ButtonFailed {
                button, by, why, ..
            } => button_failed_text(*button, by, why),
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
