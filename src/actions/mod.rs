//! Steps executed for real: bollard (Docker Engine API) only here, plus the probes
//! (`check_http` with reqwest, `check_postgres` with tokio-postgres, `check_redis` with redis).
//!
//! **Targets never leave the configured compose project.** A service target resolves to the
//! containers labelled `com.docker.compose.project=<docker.project>` and
//! `com.docker.compose.service=<name>` (not one-off runs); a container target must carry the
//! same project label; service names are plain names and, when `docker.allowed_services` is
//! set, must be in it. Every refusal is the step's recorded outcome.
//!
//! The deploy watch (`events.rs`) follows the project's Docker events for the engine's deploy
//! guard; `own.rs` tells it which containers remediator's own recreate is changing.
//! `compose.rs` holds `remove` (`stop` + `rm -v`, through the API) and `up` (in groups;
//! missing services created by the compose CLI, an argv list run without a shell).

mod compose;
mod daemon;
mod docker;
mod events;
mod own;
mod probes;
mod recreate;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use crate::engine::{StepContext, StepError, StepExecutor, StepOutput};
use crate::rules::StepKind;

pub use docker::DockerActions;
pub use events::{watch, DeployWatcher, Following};
pub use own::OwnChanges;

/// `docker:` in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerSettings {
    /// The compose project remediator may act on (`REMEDIATOR_DOCKER__PROJECT`). Without it no
    /// container is touched.
    pub project: Option<String>,
    /// When not empty, the only services remediator may act on.
    pub allowed_services: Vec<String>,
    /// The Docker socket (`unix:///var/run/docker.sock` when unset, or `DOCKER_HOST`).
    pub host: Option<String>,
    /// Per-request timeout for the Docker API.
    #[serde(with = "crate::domain::duration::serde_text")]
    pub request_timeout: Duration,
    /// A service whose container was created, recreated, renamed or destroyed within this
    /// long (Docker's event stream, compose-project containers only) is being deployed: its
    /// runbooks are skipped. `0` turns the watch off.
    #[serde(with = "crate::domain::duration::serde_text_or_zero")]
    pub deploy_grace: Duration,
    /// At startup, read back the last `deploy_grace` of Docker's events (and the project's
    /// containers created in it), so that a restart of remediator during a deploy still
    /// knows of the deploy.
    pub deploy_replay: bool,
    /// The project's compose file (`REMEDIATOR_DOCKER__COMPOSE_FILE`): the `up` step creates
    /// the services that have no container from it. Without it, `up` only starts existing
    /// containers.
    pub compose_file: Option<PathBuf>,
    /// The compose CLI `up` runs (`REMEDIATOR_DOCKER__COMPOSE_BIN`), called with an argv list,
    /// never through a shell.
    pub compose_bin: String,
}

impl Default for DockerSettings {
    fn default() -> Self {
        DockerSettings {
            project: None,
            allowed_services: Vec::new(),
            host: None,
            request_timeout: Duration::from_secs(120),
            deploy_grace: Duration::from_secs(300),
            deploy_replay: true,
            compose_file: None,
            compose_bin: "docker-compose".into(),
        }
    }
}

/// The production executor: Docker actions and probes.
pub struct Executor {
    docker: DockerActions,
    compose: compose::ComposeCli,
}

impl Executor {
    /// `own` is shared with the deploy watch ([`watch`]), which then does not take
    /// remediator's own recreates for deploys.
    pub fn new(settings: &DockerSettings, own: Arc<OwnChanges>) -> Result<Executor, StepError> {
        Ok(Executor {
            docker: DockerActions::new(settings, own)?,
            compose: compose::ComposeCli::new(settings),
        })
    }
}

#[async_trait]
impl StepExecutor for Executor {
    async fn run(&self, ctx: &StepContext, step: &StepKind) -> Result<StepOutput, StepError> {
        match step {
            StepKind::CheckHttp {
                url, expect_status, ..
            } => probes::check_http(url, *expect_status).await,
            StepKind::CheckPostgres {
                dsn, password_env, ..
            } => probes::check_postgres(dsn, password_env.as_deref()).await,
            StepKind::CheckRedis { url, .. } => probes::check_redis(url).await,
            StepKind::Remove {
                services,
                volumes,
                grace,
                ..
            } => compose::remove(&self.docker, services, volumes, *grace).await,
            StepKind::Up { groups, within, .. } => {
                compose::up(&self.docker, &self.compose, groups, *within).await
            }
            other => self.docker.run(ctx, other).await,
        }
    }

    async fn break_target(
        &self,
        ctx: &StepContext,
        how: crate::domain::Break,
    ) -> Result<StepOutput, StepError> {
        self.docker.break_target(ctx, how).await
    }
}

/// Keeps the head and tail of long output, on character boundaries.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let half = max / 2;
    let mut head = half;
    while !text.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = text.len() - half;
    while !text.is_char_boundary(tail) {
        tail += 1;
    }
    format!(
        "{}\n… {} bytes cut …\n{}",
        &text[..head],
        tail - head,
        &text[tail..]
    )
}
