//! What the Docker steps share: a container found in the project, and how a Docker daemon's
//! error becomes a step's error. A leaf: `docker` and `recreate` both use it, neither uses
//! the other's internals.

use bollard::errors::Error as DockerError;

use crate::engine::StepError;

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
