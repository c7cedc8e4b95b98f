//! The incident's journal: its decisions, steps and runs, and [`Commit`], which writes
//! everything one decision point produced (the match, decisions, notices, the phase, the
//! start or end of a run, the queue entry it handled) in one transaction.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Row, Transaction};
use serde::Serialize;

use super::codec::{collect, field, notice_json, state_change, Ts};
use super::{fsynced, ts, ts_serde, Ctx, Store, StoreError};
use crate::domain::notice::RunOutcome;
use crate::domain::{
    Button, Contact, DecisionKind, LimitState, Notice, Phase, Pressed, Priority, RunPhase, Sink,
    StepOutcome, Verdict,
};

/// A guard's (or the matcher's) stored decision.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DecisionRecord {
    #[serde(with = "ts_serde")]
    pub at: DateTime<Utc>,
    pub guard: DecisionKind,
    pub verdict: Verdict,
    pub reason: String,
}

/// A step's stored record.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StepRecord {
    pub id: i64,
    pub phase: RunPhase,
    pub seq: i64,
    /// The step's kind as the rule names it (`restart`).
    pub kind: String,
    #[serde(with = "ts_serde")]
    pub started_at: DateTime<Utc>,
    #[serde(with = "ts_serde::opt")]
    pub ended_at: Option<DateTime<Utc>>,
    pub outcome: StepOutcome,
    pub detail: String,
}

/// A runbook run, as the rate limits count them.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub incident_id: i64,
    pub rule: String,
    pub target: String,
    pub started_at: DateTime<Utc>,
}

/// An incident's runbook run: when it started and ended, and how (the post-mortem's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    pub rule: String,
    pub target: String,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub outcome: Option<RunOutcome>,
}

const START_STEP: &str = "INSERT INTO steps (incident_id, phase, seq, kind, started_at, outcome, detail) VALUES (?1, ?2, ?3, ?4, ?5, 'running', '')";

/// One write of a [`Commit`].
#[derive(Debug, Clone)]
enum Write {
    /// An `approve` step asks (store/approvals.rs).
    Ask(crate::domain::Approval),
    /// Its answer; the commit fails with [`StoreError::NotWaiting`] if it had one.
    Answer {
        phase: RunPhase,
        seq: usize,
        decided: crate::domain::Decided,
    },
    Match {
        rule: String,
        priority: Priority,
        target: Option<String>,
        rto: Duration,
        told: Vec<Contact>,
        owner: Option<Contact>,
    },
    Decision {
        kind: DecisionKind,
        verdict: Verdict,
        reason: String,
    },
    Notice {
        sink: Sink,
        notice: Notice,
    },
    /// A PagerDuty follow-up (acknowledge, resolve), stored only if the incident was paged.
    FollowUp(Notice),
    Phase(Phase),
    StartRun {
        rule: String,
        target: String,
    },
    FinishRun(RunOutcome),
    /// A step recorded as started (the first step of a run, in the commit that starts it).
    StartStep {
        phase: RunPhase,
        seq: usize,
        kind: String,
        at: DateTime<Utc>,
    },
    FinishStep {
        step: i64,
        outcome: StepOutcome,
        detail: String,
    },
    InterruptRunningSteps,
    Acknowledge {
        by: String,
        slack_user: Option<String>,
    },
    /// The Silence button's press, once.
    Silenced(Pressed),
    /// The Pause button's press, once.
    Paused(Pressed),
    FireTier(usize),
    Dequeue(i64),
    /// A synthetic incident (a manual run, a drill) ends: no Alertmanager will resolve it.
    ResolveSynthetic,
    Limit {
        key: String,
        state: LimitState,
    },
}

/// Everything one decision point of one incident writes, committed together or not at all.
/// Built by the engine, applied by [`Store::commit`].
#[derive(Debug, Clone)]
pub struct Commit {
    incident: i64,
    at: DateTime<Utc>,
    writes: Vec<Write>,
    /// Fsynced: a runbook starts after it (see the module docs of `store`).
    durable: bool,
    /// The W3C `traceparent` the notices carry to the outbox's spans.
    trace: Option<String>,
}

impl Commit {
    pub fn new(incident: i64, at: DateTime<Utc>) -> Commit {
        Commit {
            incident,
            at,
            writes: Vec::new(),
            durable: false,
            trace: None,
        }
    }

    pub fn incident(&self) -> i64 {
        self.incident
    }

    pub fn traced(mut self, trace: Option<String>) -> Commit {
        self.trace = trace;
        self
    }

    pub fn matched(
        &mut self,
        rule: &str,
        priority: Priority,
        target: Option<String>,
        rto: Duration,
        told: Vec<Contact>,
        owner: Option<Contact>,
    ) -> &mut Self {
        self.writes.push(Write::Match {
            rule: rule.to_owned(),
            priority,
            target,
            rto,
            told,
            owner,
        });
        self
    }

    pub fn decision(&mut self, kind: DecisionKind, verdict: Verdict, reason: &str) -> &mut Self {
        self.writes.push(Write::Decision {
            kind,
            verdict,
            reason: reason.to_owned(),
        });
        self
    }

    pub fn notice(&mut self, sink: Sink, notice: Notice) -> &mut Self {
        self.writes.push(Write::Notice { sink, notice });
        self
    }

    /// A PagerDuty follow-up of a page (acknowledge, resolve): stored only if the incident
    /// has a trigger, decided inside the transaction, so a page committed at the same moment
    /// by a runbook is never left without it.
    pub fn follow_up(&mut self, notice: Notice) -> &mut Self {
        self.writes.push(Write::FollowUp(notice));
        self
    }

    /// Sets the phase and tells the thread (its root is updated in place).
    pub fn phase(&mut self, phase: Phase) -> &mut Self {
        self.writes.push(Write::Phase(phase));
        self.notice(Sink::Slack, state_change(phase))
    }

    /// Sets the phase without telling anyone (an incident no rule matches has no thread).
    pub fn phase_silently(&mut self, phase: Phase) -> &mut Self {
        self.writes.push(Write::Phase(phase));
        self
    }

    /// The runbook starts: the run is recorded, the phase becomes `remediating`, and the
    /// commit is fsynced before anything acts.
    pub fn start_run(&mut self, rule: &str, target: &str) -> &mut Self {
        self.durable = true;
        self.writes.push(Write::StartRun {
            rule: rule.to_owned(),
            target: target.to_owned(),
        });
        self.phase(Phase::Remediating)
    }

    /// Records step `seq` of `phase` as started at `at`, as [`Store::start_step`] does: the
    /// engine starts a run's first step in the fsynced commit that starts the run, when that
    /// step neither changes a container nor waits for an answer (nothing is asked before it,
    /// and a crash after the commit interrupts the run exactly as before).
    pub fn start_step(
        &mut self,
        phase: RunPhase,
        seq: usize,
        kind: &str,
        at: DateTime<Utc>,
    ) -> &mut Self {
        self.writes.push(Write::StartStep {
            phase,
            seq,
            kind: kind.to_owned(),
            at,
        });
        self
    }

    pub fn finish_run(&mut self, outcome: RunOutcome) -> &mut Self {
        self.writes.push(Write::FinishRun(outcome));
        self
    }

    pub fn finish_step(&mut self, step: i64, outcome: StepOutcome, detail: &str) -> &mut Self {
        self.writes.push(Write::FinishStep {
            step,
            outcome,
            detail: detail.to_owned(),
        });
        self
    }

    /// Steps left `running` by a crash become `interrupted`.
    pub fn interrupt_running_steps(&mut self) -> &mut Self {
        self.writes.push(Write::InterruptRunningSteps);
        self
    }

    /// The first acknowledgement; the whole commit fails with
    /// [`StoreError::AlreadyAcknowledged`] if there was one.
    pub fn acknowledge(&mut self, by: &str, slack_user: Option<&str>) -> &mut Self {
        self.writes.push(Write::Acknowledge {
            by: by.to_owned(),
            slack_user: slack_user.map(str::to_owned),
        });
        self
    }

    /// The first press of a button (Acknowledge is [`Commit::acknowledge`]); the whole commit
    /// fails with [`StoreError::AlreadyPressed`] (or `AlreadyAcknowledged`) if there was one.
    pub fn pressed(&mut self, button: Button, pressed: Pressed) -> &mut Self {
        match button {
            Button::Acknowledge => {
                return self.acknowledge(&pressed.by, pressed.slack_user.as_deref())
            }
            Button::Silence => self.writes.push(Write::Silenced(pressed)),
            Button::Pause => self.writes.push(Write::Paused(pressed)),
        }
        self
    }

    pub fn fire_tier(&mut self, tier: usize) -> &mut Self {
        self.writes.push(Write::FireTier(tier));
        self
    }

    /// A limiter's new state, spent by the run this commit starts.
    pub fn limit(&mut self, key: &str, state: LimitState) -> &mut Self {
        self.writes.push(Write::Limit {
            key: key.to_owned(),
            state,
        });
        self
    }

    /// The engine queue's entry this decision point handled.
    pub fn dequeue(&mut self, queue_id: i64) -> &mut Self {
        self.writes.push(Write::Dequeue(queue_id));
        self
    }

    /// Resolves a synthetic incident (a manual run, a drill) now and queues its resolution
    /// for the engine, as a webhook's resolution would be: nothing else ever resolves it.
    pub fn resolve_synthetic(&mut self) -> &mut Self {
        self.writes.push(Write::ResolveSynthetic);
        self
    }

    /// An `approve` step's request, stored (with its deadline) before anyone is asked.
    pub fn ask_approval(&mut self, approval: crate::domain::Approval) -> &mut Self {
        self.writes.push(Write::Ask(approval));
        self
    }

    /// The answer to the request of step `seq` of `phase`; the whole commit fails with
    /// [`StoreError::NotWaiting`] when it was answered already.
    pub fn answer_approval(
        &mut self,
        phase: RunPhase,
        seq: usize,
        decided: crate::domain::Decided,
    ) -> &mut Self {
        self.writes.push(Write::Answer {
            phase,
            seq,
            decided,
        });
        self
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    fn apply(&self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        let id = self.incident;
        let at = ts(self.at);
        for w in &self.writes {
            match w {
                Write::Ask(a) => super::approvals::ask(tx, id, a)?,
                Write::Answer {
                    phase,
                    seq,
                    decided,
                } => super::approvals::answer(tx, id, *phase, *seq, decided)?,
                Write::Match {
                    rule,
                    priority,
                    target,
                    rto,
                    told,
                    owner,
                } => {
                    tx.prepare_cached(
                        "UPDATE incidents SET rule = ?2, priority = ?3, target = ?4, rto_ms = ?5, told = ?6, owner = ?7 WHERE id = ?1",
                    )
                    .ctx("set match")?
                    .execute(params![
                        id,
                        rule,
                        priority,
                        target,
                        i64::try_from(rto.as_millis()).unwrap_or(i64::MAX),
                        super::json(told),
                        owner.as_ref().map(super::json)
                    ])
                    .ctx("set match")?;
                }
                Write::Decision {
                    kind,
                    verdict,
                    reason,
                } => {
                    tx.prepare_cached(
                        "INSERT INTO decisions (incident_id, at, guard, verdict, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )
                    .ctx("record decision")?
                    .execute(params![id, at, kind, verdict, reason])
                    .ctx("record decision")?;
                }
                Write::Notice { sink, notice } => {
                    tx.prepare_cached(
                        "INSERT INTO outbox (incident_id, sink, kind, text, data, notice, trace, created_at)
                         VALUES (?1, ?2, ?3, ?4, '{}', ?5, ?6, ?7)",
                    )
                    .ctx("enqueue notice")?
                    .execute(params![
                        id,
                        sink,
                        notice.kind_for(*sink),
                        match sink {
                            Sink::PagerDuty => notice.pagerduty_summary(),
                            Sink::Slack => notice.summary(),
                        },
                        notice_json(notice),
                        self.trace,
                        at
                    ])
                    .ctx("enqueue notice")?;
                }
                Write::FollowUp(notice) => {
                    tx.prepare_cached(
                        "INSERT INTO outbox (incident_id, sink, kind, text, data, notice, trace, created_at)
                         SELECT ?1, 'pagerduty', ?2, ?3, '{}', ?4, ?5, ?6
                         WHERE EXISTS (SELECT 1 FROM outbox WHERE incident_id = ?1 AND sink = 'pagerduty' AND kind = 'trigger')",
                    )
                    .ctx("enqueue follow-up")?
                    .execute(params![
                        id,
                        notice.kind_for(Sink::PagerDuty),
                        notice.pagerduty_summary(),
                        notice_json(notice),
                        self.trace,
                        at
                    ])
                    .ctx("enqueue follow-up")?;
                }
                Write::Phase(phase) => {
                    tx.prepare_cached("UPDATE incidents SET phase = ?2 WHERE id = ?1")
                        .ctx("set phase")?
                        .execute(params![id, phase])
                        .ctx("set phase")?;
                }
                Write::StartRun { rule, target } => {
                    tx.prepare_cached(
                        "INSERT INTO runs (incident_id, rule, target, started_at) VALUES (?1, ?2, ?3, ?4)",
                    )
                    .ctx("start run")?
                    .execute(params![id, rule, target, at])
                    .ctx("start run")?;
                }
                Write::FinishRun(outcome) => {
                    tx.prepare_cached(
                        "UPDATE runs SET outcome = ?2, ended_at = ?3 WHERE incident_id = ?1",
                    )
                    .ctx("finish run")?
                    .execute(params![id, outcome, at])
                    .ctx("finish run")?;
                }
                Write::StartStep {
                    phase,
                    seq,
                    kind,
                    at,
                } => {
                    tx.prepare_cached(START_STEP)
                        .ctx("start step")?
                        .execute(params![id, phase, *seq as i64, kind, ts(*at)])
                        .ctx("start step")?;
                }
                Write::FinishStep {
                    step,
                    outcome,
                    detail,
                } => {
                    tx.prepare_cached(
                        "UPDATE steps SET outcome = ?2, detail = ?3, ended_at = ?4 WHERE id = ?1",
                    )
                    .ctx("finish step")?
                    .execute(params![step, outcome, detail, at])
                    .ctx("finish step")?;
                }
                Write::InterruptRunningSteps => {
                    tx.prepare_cached(
                        "UPDATE steps SET outcome = 'interrupted', ended_at = ?2, detail = 'the service stopped while this step ran'
                         WHERE incident_id = ?1 AND outcome = 'running'",
                    )
                    .ctx("interrupt steps")?
                    .execute(params![id, at])
                    .ctx("interrupt steps")?;
                }
                Write::Acknowledge { by, slack_user } => {
                    let n = tx
                        .prepare_cached(
                            "UPDATE incidents SET acked_by = ?2, acked_at = ?3, acked_slack_user = ?4 WHERE id = ?1 AND acked_by IS NULL",
                        )
                        .ctx("acknowledge")?
                        .execute(params![id, by, at, slack_user])
                        .ctx("acknowledge")?;
                    if n == 0 {
                        return Err(StoreError::AlreadyAcknowledged(id));
                    }
                }
                Write::Silenced(pressed) | Write::Paused(pressed) => {
                    let (sql, button) = match w {
                        Write::Silenced(_) => (
                            "UPDATE incidents SET silenced = ?2 WHERE id = ?1 AND silenced IS NULL",
                            Button::Silence,
                        ),
                        _ => (
                            "UPDATE incidents SET paused = ?2 WHERE id = ?1 AND paused IS NULL",
                            Button::Pause,
                        ),
                    };
                    let n = tx
                        .prepare_cached(sql)
                        .ctx("record a button")?
                        .execute(params![id, super::json(pressed)])
                        .ctx("record a button")?;
                    if n == 0 {
                        return Err(StoreError::AlreadyPressed(id, button));
                    }
                }
                Write::FireTier(tier) => {
                    tx.prepare_cached(
                        "INSERT INTO tiers_fired (incident_id, tier, at) VALUES (?1, ?2, ?3)",
                    )
                    .ctx("fire tier")?
                    .execute(params![id, *tier as i64, at])
                    .ctx("fire tier")?;
                }
                Write::Limit { key, state } => {
                    tx.prepare_cached(
                        "INSERT INTO limits (key, tat, runs, per_ms) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (key) DO UPDATE SET tat = ?2, runs = ?3, per_ms = ?4",
                    )
                    .ctx("store a limit")?
                    .execute(params![
                        key,
                        ts(state.tat),
                        state.runs,
                        i64::try_from(state.per.as_millis()).unwrap_or(i64::MAX)
                    ])
                    .ctx("store a limit")?;
                }
                Write::ResolveSynthetic => {
                    let n = tx
                        .prepare_cached(
                            "UPDATE incidents SET state = 'resolved', ends_at = ?2, resolved_at = ?2
                             WHERE id = ?1 AND state = 'open' AND origin != 'alertmanager'",
                        )
                        .ctx("resolve a synthetic incident")?
                        .execute(params![id, at])
                        .ctx("resolve a synthetic incident")?;
                    if n > 0 {
                        tx.prepare_cached(
                            "INSERT INTO engine_queue (incident_id, kind) VALUES (?1, 'resolved')",
                        )
                        .ctx("queue the resolution")?
                        .execute([id])
                        .ctx("queue the resolution")?;
                    }
                }
                Write::Dequeue(queue_id) => {
                    tx.prepare_cached("DELETE FROM engine_queue WHERE id = ?1")
                        .ctx("dequeue")?
                        .execute([queue_id])
                        .ctx("dequeue")?;
                }
            }
        }
        Ok(())
    }
}

fn decision_row(r: &Row<'_>) -> Result<DecisionRecord, StoreError> {
    let id: i64 = r.get(0).ctx("decision id")?;
    Ok(DecisionRecord {
        at: field::<Ts>(r, 1, "decisions", "at", id)?.0,
        guard: field(r, 2, "decisions", "guard", id)?,
        verdict: field(r, 3, "decisions", "verdict", id)?,
        reason: field(r, 4, "decisions", "reason", id)?,
    })
}

fn step_row(r: &Row<'_>) -> Result<StepRecord, StoreError> {
    let id: i64 = r.get(0).ctx("step id")?;
    Ok(StepRecord {
        id,
        phase: field(r, 1, "steps", "phase", id)?,
        seq: field(r, 2, "steps", "seq", id)?,
        kind: field(r, 3, "steps", "kind", id)?,
        started_at: field::<Ts>(r, 4, "steps", "started_at", id)?.0,
        ended_at: field::<Option<Ts>>(r, 5, "steps", "ended_at", id)?.map(|t| t.0),
        outcome: field(r, 6, "steps", "outcome", id)?,
        detail: field(r, 7, "steps", "detail", id)?,
    })
}

impl Store {
    /// Applies a decision point's writes in one transaction (fsynced when it starts a run).
    /// On error nothing of it was written.
    pub fn commit(&self, c: &Commit) -> Result<(), StoreError> {
        self.commit_all(std::slice::from_ref(c))
    }

    /// Applies several decision points' writes in one transaction, in order (fsynced when
    /// any of them starts a run): one commit for a batch of the engine's queue instead of one
    /// each. On error nothing of any of them was written.
    pub fn commit_all(&self, commits: &[Commit]) -> Result<(), StoreError> {
        if commits.iter().all(Commit::is_empty) {
            return Ok(());
        }
        self.fault_point()?;
        let mut conn = self.conn();
        let write = |conn: &mut rusqlite::Connection| {
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .ctx("begin commit")?;
            for c in commits {
                c.apply(&tx)?;
            }
            tx.commit().ctx("commit")
        };
        if commits.iter().any(|c| c.durable) {
            fsynced(&mut conn, write)
        } else {
            write(&mut conn)
        }
    }

    pub fn decisions(&self, id: i64) -> Result<Vec<DecisionRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT id, at, guard, verdict, reason FROM decisions WHERE incident_id = ?1 ORDER BY id")
            .ctx("decisions")?;
        let rows = stmt.query([id]).ctx("decisions")?;
        collect(rows, "decisions", decision_row)
    }

    /// Whether the incident has a decision of this kind.
    pub fn has_decision(&self, id: i64, kind: DecisionKind) -> Result<bool, StoreError> {
        self.conn()
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM decisions WHERE incident_id = ?1 AND guard = ?2)",
            )
            .ctx("has decision")?
            .query_row(params![id, kind], |r| r.get(0))
            .ctx("has decision")
    }

    /// Records that a step starts, before it acts; returns the step's id.
    pub fn start_step(
        &self,
        id: i64,
        phase: RunPhase,
        seq: usize,
        kind: &str,
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        self.fault_point()?;
        let conn = self.conn();
        conn.prepare_cached(START_STEP)
            .ctx("start step")?
            .execute(params![id, phase, seq as i64, kind, ts(now)])
            .ctx("start step")?;
        Ok(conn.last_insert_rowid())
    }

    /// The step of this incident, phase and position, if it was started (a retried commit
    /// finds the step it already started).
    pub fn step_at(&self, id: i64, phase: RunPhase, seq: usize) -> Result<Option<i64>, StoreError> {
        use rusqlite::OptionalExtension;
        self.conn()
            .prepare_cached(
                "SELECT id FROM steps WHERE incident_id = ?1 AND phase = ?2 AND seq = ?3",
            )
            .ctx("step at")?
            .query_row(params![id, phase, seq as i64], |r| r.get(0))
            .optional()
            .ctx("step at")
    }

    pub fn steps(&self, id: i64) -> Result<Vec<StepRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, phase, seq, kind, started_at, ended_at, outcome, detail FROM steps WHERE incident_id = ?1 ORDER BY id",
            )
            .ctx("steps")?;
        let rows = stmt.query([id]).ctx("steps")?;
        collect(rows, "steps", step_row)
    }

    /// Runs started at or after `since`, oldest first; of one rule and target when given.
    pub fn runs_since(
        &self,
        since: DateTime<Utc>,
        of: Option<(&str, &str)>,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let conn = self.conn();
        let (rule, target) = of.unzip();
        let mut stmt = conn
            .prepare_cached(
                "SELECT incident_id, rule, target, started_at FROM runs
                 WHERE started_at >= ?1 AND (?2 IS NULL OR (rule = ?2 AND target = ?3))
                 ORDER BY started_at",
            )
            .ctx("runs since")?;
        let rows = stmt
            .query(params![ts(since), rule, target])
            .ctx("runs since")?;
        collect(rows, "runs since", |r| {
            let id: i64 = r.get(0).ctx("run id")?;
            Ok(RunRecord {
                incident_id: id,
                rule: field(r, 1, "runs", "rule", id)?,
                target: field(r, 2, "runs", "target", id)?,
                started_at: field::<Ts>(r, 3, "runs", "started_at", id)?.0,
            })
        })
    }

    /// A limiter's stored state (see `engine::limits`).
    pub fn limit(&self, key: &str) -> Result<Option<LimitState>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT rowid, tat, runs, per_ms FROM limits WHERE key = ?1")
            .ctx("limit")?;
        let rows = stmt.query([key]).ctx("limit")?;
        let mut found = collect(rows, "limit", |r| {
            let id: i64 = r.get(0).ctx("limit id")?;
            let per_ms: i64 = field(r, 3, "limits", "per_ms", id)?;
            Ok(LimitState {
                tat: field::<Ts>(r, 1, "limits", "tat", id)?.0,
                runs: field(r, 2, "limits", "runs", id)?,
                per: Duration::from_millis(per_ms.max(0) as u64),
            })
        })?;
        Ok(found.pop())
    }

    /// Another open incident of the same rule and target that already ran or is running.
    pub fn open_run_for(
        &self,
        rule: &str,
        target: &str,
        except: i64,
    ) -> Result<Option<i64>, StoreError> {
        use rusqlite::OptionalExtension;
        self.conn()
            .prepare_cached(
                "SELECT r.incident_id FROM runs r JOIN incidents i ON i.id = r.incident_id
                 WHERE r.rule = ?1 AND r.target = ?2 AND i.state = 'open' AND i.id != ?3
                 ORDER BY r.incident_id LIMIT 1",
            )
            .ctx("open run for")?
            .query_row(params![rule, target, except], |r| r.get(0))
            .optional()
            .ctx("open run for")
    }

    /// The incident's run, if its runbook started.
    pub fn run_of(&self, id: i64) -> Result<Option<RunSummary>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT incident_id, rule, target, started_at, ended_at, outcome FROM runs
                 WHERE incident_id = ?1",
            )
            .ctx("run of")?;
        let rows = stmt.query([id]).ctx("run of")?;
        let mut found = collect(rows, "run of", |r| {
            let id: i64 = r.get(0).ctx("run id")?;
            Ok(RunSummary {
                rule: field(r, 1, "runs", "rule", id)?,
                target: field(r, 2, "runs", "target", id)?,
                started_at: field::<Ts>(r, 3, "runs", "started_at", id)?.0,
                ended_at: field::<Option<Ts>>(r, 4, "runs", "ended_at", id)?.map(|t| t.0),
                outcome: field(r, 5, "runs", "outcome", id)?,
            })
        })?;
        Ok(found.pop())
    }
}
