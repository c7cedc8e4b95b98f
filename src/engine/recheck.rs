//! Alertmanager, asked again just before a runbook's first destructive step (one that changes
//! a container: `StepKind::is_action`). A webhook never carries silence state, so a silence
//! set after the notification, an inhibition, or a resolution is seen only here; each stops
//! the run before it touches anything, recorded and told with its reason, without paging:
//! a human is at work, or there is nothing left to fix. Asked once per run; a run without a
//! destructive step asks nothing. When no peer answers, `alertmanager.on_unreachable` decides.

use super::*;
use crate::domain::{AlertNow, OnUnreachable, RunPhase};
use crate::rules::Step;
use crate::telemetry::events::InternalEvent;

/// What the check decided, to be written into the commit that records it.
pub(super) struct Recheck {
    verdict: Verdict,
    reason: String,
    /// Whether the thread hears of it (skips and an unreachable Alertmanager; not a plain
    /// "still firing").
    tell: bool,
}

impl Recheck {
    /// Whether the runbook goes on.
    pub(super) fn go(&self) -> bool {
        self.verdict == Verdict::Continue
    }

    /// The decision, its notice, and on a stop the run's end and the phase `skipped`.
    pub(super) fn write(&self, c: &mut Commit) {
        c.decision(DecisionKind::Alertmanager, self.verdict, &self.reason);
        if self.tell {
            c.notice(
                Sink::Slack,
                Notice::Decision {
                    guard: DecisionKind::Alertmanager,
                    verdict: self.verdict,
                    reason: self.reason.clone(),
                },
            );
        }
        if !self.go() {
            c.finish_run(RunOutcome::Stopped).phase(Phase::Skipped);
        }
    }

    /// Once committed: the log line, the metric, the span fields.
    pub(super) fn committed(&self, incident_id: i64, metrics: &Metrics) {
        GuardDecided {
            incident_id,
            guard: DecisionKind::Alertmanager.as_str(),
            verdict: self.verdict.as_str(),
            reason: &self.reason,
        }
        .emit(metrics);
    }
}

impl Engine {
    /// Asks Alertmanager (when one is configured) about the incident's alert before `step`;
    /// `None` when none is configured.
    pub(super) async fn recheck(
        &self,
        ctx: &StepContext,
        phase: RunPhase,
        step: &Step,
    ) -> Option<Recheck> {
        let am = self.outside.alertmanager.as_ref()?;
        let answer = am.current(&ctx.labels).await;
        let now = self.clock.now();
        let before = match phase {
            RunPhase::Main => step.name.to_owned(),
            RunPhase::OnFailure => format!("on_failure {}", step.name),
            RunPhase::Fallback => format!("fallback {}", step.name),
        };
        let (verdict, reason, tell) = match answer {
            Ok(AlertNow::Active) => (
                Verdict::Continue,
                "firing in Alertmanager, neither silenced nor inhibited".to_owned(),
                false,
            ),
            Ok(muted_or_gone) => (
                Verdict::Skip,
                format!(
                    "{}; the runbook stops before {before}, nothing touched",
                    muted_or_gone
                        .stop_reason(now)
                        .unwrap_or_else(|| "not firing in Alertmanager".to_owned())
                ),
                true,
            ),
            Err(why) => match am.on_unreachable() {
                OnUnreachable::Go => (
                    Verdict::Continue,
                    format!(
                        "Alertmanager unreachable ({why}); going on as alertmanager.on_unreachable = go"
                    ),
                    true,
                ),
                OnUnreachable::Stop => (
                    Verdict::Skip,
                    format!(
                        "Alertmanager unreachable ({why}); the runbook stops before {before}, nothing touched, as alertmanager.on_unreachable = stop"
                    ),
                    true,
                ),
            },
        };
        Some(Recheck {
            verdict,
            reason,
            tell,
        })
    }
}
