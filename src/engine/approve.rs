//! The `approve` step: the request is stored with its deadline before anyone is asked, then
//! the step waits for the answer (written by the API or Slack through the store) or for the
//! deadline. A wait found in the store (after a restart) keeps its stored deadline. Anything
//! but an approval fails the step, so the runbook goes to `on_failure` and pages.

use std::time::Duration;

use super::{Engine, StepContext, StepError, StepOutput};
use crate::domain::approval::MAX_CHOICES;
use crate::domain::{
    Approval, ApprovalRef, ApprovalVerdict, Contact, Decided, DecisionKind, Notice, RunPhase, Sink,
    Verdict,
};
use crate::rules::StepKind;
use crate::store::StoreError;

/// How often a waiting step looks for its answer.
const POLL: Duration = Duration::from_secs(1);

impl Engine {
    pub(super) async fn approve(
        &self,
        ctx: &StepContext,
        phase: RunPhase,
        seq: usize,
        kind: &StepKind,
    ) -> Result<StepOutput, StepError> {
        let StepKind::Approve {
            who,
            timeout,
            prompt,
            choices_from_previous,
        } = kind
        else {
            return Err(StepError::Failed(format!(
                "{} is not an approve step",
                kind.name()
            )));
        };
        let store_err = |e: StoreError| StepError::Unavailable(e.to_string());
        let id = ctx.incident_id;
        if self
            .store
            .approval_at(id, phase, seq)
            .map_err(store_err)?
            .is_none()
        {
            let choices = if *choices_from_previous {
                self.previous_lines(id, phase, seq).map_err(store_err)?
            } else {
                Vec::new()
            };
            let now = self.clock.now();
            let deadline = now
                + chrono::Duration::from_std(timeout.0)
                    .unwrap_or_else(|_| chrono::Duration::minutes(30));
            let request = Approval {
                phase,
                seq,
                who: who.clone(),
                prompt: prompt.clone(),
                choices,
                asked_at: now,
                deadline,
                decided: None,
            };
            let (asked, allowed) = self.asked(who);
            let mut c = self.commit_now(id);
            c.ask_approval(request.clone()).notice(
                Sink::Slack,
                Notice::Approval {
                    request,
                    asked,
                    allowed,
                },
            );
            self.persist(|| self.store.commit(&c))
                .await
                .map_err(store_err)?;
        }
        loop {
            let a = self
                .store
                .approval_at(id, phase, seq)
                .map_err(store_err)?
                .ok_or_else(|| StepError::Unavailable("the approval request is gone".into()))?;
            if let Some(d) = &a.decided {
                let text = a.decided_text().unwrap_or_default();
                return match d.verdict {
                    ApprovalVerdict::Approved => Ok(StepOutput::new(text)),
                    _ => Err(StepError::Failed(text)),
                };
            }
            let now = self.clock.now();
            if now >= a.deadline {
                let mut timed_out = a.clone();
                timed_out.decided = Some(Decided {
                    verdict: ApprovalVerdict::TimedOut,
                    by: String::new(),
                    slack_user: None,
                    choice: None,
                    at: now,
                });
                let text = timed_out.decided_text().unwrap_or_default();
                let mut c = self.commit_now(id);
                c.answer_approval(
                    phase,
                    seq,
                    timed_out.decided.clone().unwrap_or_else(|| unreachable!()),
                )
                .decision(DecisionKind::Approval, Verdict::Skip, &text)
                .notice(
                    Sink::Slack,
                    Notice::ApprovalAnswered {
                        asked: self.asked(&timed_out.who).0,
                        request: timed_out,
                    },
                );
                match self.store.commit(&c) {
                    Ok(()) => return Err(StepError::Failed(text)),
                    // Answered meanwhile: the next pass reads the answer.
                    Err(StoreError::NotWaiting(_)) => continue,
                    Err(e) => return Err(store_err(e)),
                }
            }
            let left = (a.deadline - now).to_std().unwrap_or_default();
            tokio::time::sleep(left.min(POLL)).await;
        }
    }

    /// The contact `who` names and its `slack_users` (whose answers alone count, when any).
    fn asked(&self, who: &str) -> (Contact, Vec<String>) {
        let rules = self.rules();
        let key = who.to_owned();
        let contact = super::plan::contacts(&rules, [&key])
            .pop()
            .unwrap_or_else(|| Contact::unknown(who));
        let allowed = rules
            .escalation
            .contacts
            .get(who)
            .map(|c| c.slack_users.clone())
            .unwrap_or_default();
        (contact, allowed)
    }

    /// The output lines of the step before `seq` in `phase` (after its summary line), each a
    /// choice; at most [`MAX_CHOICES`].
    fn previous_lines(
        &self,
        id: i64,
        phase: RunPhase,
        seq: usize,
    ) -> Result<Vec<String>, StoreError> {
        let Some(prev) = seq.checked_sub(1) else {
            return Ok(Vec::new());
        };
        let steps = self.store.steps(id)?;
        let Some(step) = steps
            .iter()
            .find(|s| s.phase == phase && s.seq == prev as i64)
        else {
            return Ok(Vec::new());
        };
        Ok(step
            .detail
            .lines()
            .skip(1)
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .take(MAX_CHOICES)
            .map(str::to_owned)
            .collect())
    }
}

/// What answering an incident's approval did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answered {
    NoIncident,
    /// Nothing waits (never asked, answered already, timed out).
    NotWaiting,
    /// The choice given is not one offered (or none was given where choices are offered).
    NotOffered {
        offered: Vec<String>,
    },
    Done(Box<Approval>),
    /// The answer names another request than the one waiting (a button of an earlier step).
    Stale {
        waiting: ApprovalRef,
    },
    /// The Slack user is not one of the asked contact's `slack_users`.
    NotAllowed {
        who: String,
        allowed: Vec<String>,
    },
}

/// Who answers: their name (Slack's, or the API caller's `by`) and, from Slack, their user
/// id, which the asked contact's `slack_users` (when it has any) must list.
#[derive(Debug, Clone, Copy)]
pub struct Answerer<'a> {
    pub by: &'a str,
    pub slack_user: Option<&'a str>,
}

impl Engine {
    /// Answers incident `id`'s waiting approval: recorded with a decision and a line in the
    /// thread; the waiting step reads it on its next look.
    pub fn answer_approval(
        &self,
        id: i64,
        approve: bool,
        by: &str,
        slack_user: Option<&str>,
        choice: Option<&str>,
    ) -> Result<Answered, StoreError> {
        self.answer_approval_of(id, None, approve, Answerer { by, slack_user }, choice)
    }

    /// [`Engine::answer_approval`] for the request `at` names when given (a Slack button
    /// names its step; another one waiting is [`Answered::Stale`]). A Slack user is checked
    /// against the asked contact's `slack_users`; a refusal is recorded as a decision.
    pub fn answer_approval_of(
        &self,
        id: i64,
        at: Option<ApprovalRef>,
        approve: bool,
        who: Answerer<'_>,
        choice: Option<&str>,
    ) -> Result<Answered, StoreError> {
        let Answerer { by, slack_user } = who;
        if self.store.incident(id)?.is_none() {
            return Ok(Answered::NoIncident);
        }
        let Some(mut a) = self.store.latest_approval(id)?.filter(Approval::pending) else {
            return Ok(Answered::NotWaiting);
        };
        if let Some(at) = at.filter(|r| r.incident != id || !r.names(&a)) {
            tracing::info!(incident = id, button = %at, "refused an answer for a request that is not the one waiting");
            return Ok(Answered::Stale {
                waiting: ApprovalRef::of(id, &a),
            });
        }
        if let Some(user) = slack_user {
            let allowed = self.asked(&a.who).1;
            if !allowed.is_empty() && !allowed.iter().any(|u| u == user) {
                let mut c = self.commit_now(id);
                c.decision(
                    DecisionKind::Approval,
                    Verdict::Skip,
                    &format!(
                        "refused an answer from {by} ({user}): only {}'s slack_users ({}) may answer",
                        a.who,
                        allowed.join(", ")
                    ),
                );
                self.store.commit(&c)?;
                return Ok(Answered::NotAllowed {
                    who: a.who,
                    allowed,
                });
            }
        }
        let choice = if approve { choice } else { None };
        if approve {
            let ok = match choice {
                None => a.choices.is_empty(),
                Some(c) => a.choices.iter().any(|o| o == c),
            };
            if !ok {
                return Ok(Answered::NotOffered { offered: a.choices });
            }
        }
        let now = self.clock.now();
        let d = Decided {
            verdict: if approve {
                ApprovalVerdict::Approved
            } else {
                ApprovalVerdict::Rejected
            },
            by: by.to_owned(),
            slack_user: slack_user.map(str::to_owned),
            choice: choice.map(str::to_owned),
            at: now,
        };
        a.decided = Some(d.clone());
        let text = a.decided_text().unwrap_or_default();
        let mut c = self.commit_now(id);
        c.answer_approval(a.phase, a.seq, d)
            .decision(
                DecisionKind::Approval,
                if approve {
                    Verdict::Continue
                } else {
                    Verdict::Skip
                },
                &text,
            )
            .notice(Sink::Slack, Notice::Message { text })
            .notice(
                Sink::Slack,
                Notice::ApprovalAnswered {
                    asked: self.asked(&a.who).0,
                    request: a.clone(),
                },
            );
        match self.store.commit(&c) {
            Ok(()) => Ok(Answered::Done(Box::new(a))),
            Err(StoreError::NotWaiting(_)) => Ok(Answered::NotWaiting),
            Err(e) => Err(e),
        }
    }
}
