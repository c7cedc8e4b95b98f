//! Steps executed for real: bollard (Docker Engine API) only here, plus the probes
//! (`check_http` with reqwest, `check_postgres` with tokio-postgres, `check_redis` with redis).
//!
//! **Targets never leave the configured compose project.** A service target resolves to the
//! containers labelled `com.docker.compose.project=<docker.project>` and
//! `com.docker.compose.service=<name>` (not one-off runs); a container target must carry the
//! same project label; service names are plain names and, when `docker.allowed_services` is
//! set, must be in it. Every refusal is the step's recorded outcome.

mod daemon;
mod docker;
mod probes;
mod recreate;

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use crate::engine::{StepContext, StepError, StepExecutor, StepOutput};
use crate::rules::StepKind;

pub use docker::DockerActions;

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
}

impl Default for DockerSettings {
    fn default() -> Self {
        DockerSettings {
            project: None,
            allowed_services: Vec::new(),
            host: None,
            request_timeout: Duration::from_secs(120),
        }
    }
}

/// The production executor: Docker actions and probes.
pub struct Executor {
    docker: DockerActions,
}

impl Executor {
    pub fn new(settings: &DockerSettings) -> Result<Executor, StepError> {
        Ok(Executor {
            docker: DockerActions::new(settings)?,
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
            other => self.docker.run(ctx, other).await,
        }
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
