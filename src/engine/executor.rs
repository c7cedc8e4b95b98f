//! The engine's view of what acts on containers and probes services.
//!
//! The engine runs `wait`, `notify` and `page` itself; every other step goes to a
//! [`StepExecutor`]. The Docker-backed executor lives in `actions`; tests use a recording fake.

use async_trait::async_trait;

use chrono::{DateTime, Utc};

use crate::alert::Labels;
use crate::domain::{AlertNow, Break, DeployFact, OnUnreachable};
use crate::rules::{StepKind, TargetRef};

/// What a step acts on and for whom.
#[derive(Debug, Clone)]
pub struct StepContext {
    pub incident_id: i64,
    pub rule: String,
    pub target: TargetRef,
    pub labels: Labels,
}

/// A finished step: a one-line summary and an optional excerpt (logs, command output).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepOutput {
    pub summary: String,
    pub excerpt: String,
}

impl StepOutput {
    pub fn new(summary: impl Into<String>) -> Self {
        StepOutput {
            summary: summary.into(),
            excerpt: String::new(),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StepError {
    /// The step ran and its check failed, or the action was refused.
    #[error("{0}")]
    Failed(String),
    /// The engine, Docker or a probe could not be reached.
    #[error("{0}")]
    Unavailable(String),
}

#[async_trait]
pub trait StepExecutor: Send + Sync {
    async fn run(&self, ctx: &StepContext, step: &StepKind) -> Result<StepOutput, StepError>;

    /// A live drill's break of its target before its runbook (`remediator drill --break`):
    /// `stop` as the `stop` step does; `kill` where the executor can (`docker kill`).
    async fn break_target(&self, ctx: &StepContext, how: Break) -> Result<StepOutput, StepError> {
        match (how, &ctx.target) {
            (Break::Stop, TargetRef::Service(s)) => {
                let stop = StepKind::Stop {
                    services: vec![s.clone()],
                    grace: None,
                    timeout: None,
                };
                self.run(ctx, &stop).await
            }
            _ => Err(StepError::Failed(format!(
                "cannot break {} by {how} here",
                ctx.target.key()
            ))),
        }
    }
}

/// For a service that has no Docker access configured: every container step fails with a
/// message saying so, which sends the runbook to `on_failure` and pages people.
pub struct NoDocker;

#[async_trait]
impl StepExecutor for NoDocker {
    async fn run(&self, _ctx: &StepContext, step: &StepKind) -> Result<StepOutput, StepError> {
        Err(StepError::Unavailable(format!(
            "{}: no compose project is configured (docker.project, REMEDIATOR_DOCKER__PROJECT), so remediator touches no container",
            step.name()
        )))
    }
}

/// Deploys of the compose project's services, as Docker's event stream shows them. The feed is
/// advisory: it informs the deploy guard, never the only view of a container's state.
pub trait DeployWatch: Send + Sync {
    /// The latest deploy of `service` (created, recreated, renamed, destroyed) within the
    /// deploy grace before `now`.
    fn recent(&self, service: &str, now: DateTime<Utc>) -> Option<DeployFact>;

    /// How the watch is doing, for `/-/ready` ("following …", "reconnecting since …");
    /// `None` when there is no watch.
    fn status(&self) -> Option<String> {
        None
    }
}

/// No event stream (no Docker configured, or in tests): no deploy is ever seen.
pub struct NoDeploys;

impl DeployWatch for NoDeploys {
    fn recent(&self, _service: &str, _now: DateTime<Utc>) -> Option<DeployFact> {
        None
    }
}

/// Alertmanager's current view of an alert, asked just before a runbook's first destructive
/// step. The error says why no peer answered.
#[async_trait]
pub trait AlertCheck: Send + Sync {
    async fn current(&self, labels: &Labels) -> Result<AlertNow, String>;

    /// What the runbook does when [`AlertCheck::current`] fails
    /// (`alertmanager.on_unreachable`).
    fn on_unreachable(&self) -> OnUnreachable;
}

/// What the engine asks of the world outside the store: the steps, the deploys seen, and
/// Alertmanager.
#[derive(Clone)]
pub struct Outside {
    pub steps: std::sync::Arc<dyn StepExecutor>,
    pub deploys: std::sync::Arc<dyn DeployWatch>,
    /// `None` when no Alertmanager is configured (`alertmanager.urls`): nothing is re-checked.
    pub alertmanager: Option<std::sync::Arc<dyn AlertCheck>>,
    /// `None` when no Redis is configured (`redis.url`): one replica alone, nothing claimed.
    pub coordinator: Option<std::sync::Arc<dyn super::Coordinator>>,
}

impl Outside {
    /// Steps run by `steps`; no deploy seen, no Alertmanager asked.
    pub fn new(steps: std::sync::Arc<dyn StepExecutor>) -> Outside {
        Outside {
            steps,
            deploys: std::sync::Arc::new(NoDeploys),
            alertmanager: None,
            coordinator: None,
        }
    }
}
