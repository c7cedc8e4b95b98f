//! What the Docker steps share: a container found in the project, and how a Docker daemon's
//! error becomes a step's error. A leaf: `docker` and `recreate` both use it, neither uses
//! the other's internals.

use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::Docker;

use super::DockerSettings;
use crate::engine::StepError;

/// The client for `docker.host` (or the local defaults and `DOCKER_HOST`), and the address
/// it talks to, for messages. Nothing is asked of the daemon yet.
pub(super) fn connect(s: &DockerSettings) -> Result<(Docker, String), StepError> {
    let timeout = s.request_timeout.as_secs().max(1);
    match s.host.as_deref() {
        Some(h) => {
            let path = h.strip_prefix("unix://").unwrap_or(h);
            let c = Docker::connect_with_unix(path, timeout, bollard::API_DEFAULT_VERSION)
                .map_err(|e| StepError::Unavailable(format!("docker.host {h:?}: {e}")))?;
            Ok((c, h.to_string()))
        }
        None => {
            let c = Docker::connect_with_local_defaults()
                .map_err(|e| {
                    StepError::Unavailable(format!("cannot set up the Docker client: {e}"))
                })?
                .with_timeout(Duration::from_secs(timeout));
            Ok((c, host_of(s)))
        }
    }
}

/// The daemon's address as `connect` reads it, for messages.
pub(super) fn host_of(s: &DockerSettings) -> String {
    s.host.clone().unwrap_or_else(|| {
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
    })
}

/// `client` pinned to the daemon's API version, or why the daemon did not say it (within
/// 5 s).
pub(super) async fn negotiate(client: &Docker) -> Result<Docker, String> {
    match tokio::time::timeout(Duration::from_secs(5), client.clone().negotiate_version()).await {
        Ok(Ok(d)) => Ok(d),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 5s".into()),
    }
}

/// A container of the project, found by its compose labels.
#[derive(Debug, Clone)]
pub(super) struct Found {
    pub id: String,
    pub name: String,
}

/// Turns daemon errors into step errors that say what to do.
pub(super) struct DaemonErrors<'a> {
    /// The daemon's address, for "is dockerd running?".
    pub host: &'a str,
}

impl DaemonErrors<'_> {
    pub(super) fn err(&self, what: &str, e: DockerError) -> StepError {
        match e {
            DockerError::DockerResponseServerError {
                status_code: 404,
                message,
            } => StepError::Failed(format!(
                "{what}: {message} (the container is gone: removed while the runbook ran?)"
            )),
            DockerError::DockerResponseServerError {
                status_code,
                message,
            } => StepError::Failed(format!("{what}: Docker answered {status_code}: {message}")),
            other => StepError::Unavailable(format!(
                "{what}: the Docker daemon at {} is unreachable ({other}); is dockerd running?",
                self.host
            )),
        }
    }
}
