//! Pauses set from an incident: the Slack button's one call.

use super::*;
use crate::domain::{NewPause, PauseInvalid};
use crate::rules::TargetRef;
use crate::store::PauseRecord;
use crate::telemetry::events::PauseSet;

/// Why an incident's runbooks could not be paused.
#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    #[error("no incident {0}")]
    NoIncident(i64),
    #[error("incident {0} matched no rule: it has no runbook to pause")]
    NoRule(i64),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<PauseInvalid>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Engine {
    /// Pauses the runbooks of incident `id`'s rule on its service (the whole rule when its
    /// target is a container or nothing) for an hour from now, set by `by` (the Slack user),
    /// with the reason "paused from Slack on incident #N". Stored before it returns; the
    /// next incident it covers skips its runbook, this one's is not stopped.
    pub fn pause_incident(
        &self,
        id: i64,
        by: &str,
        hold: Duration,
    ) -> Result<PauseRecord, PauseError> {
        let inc = self.store.incident(id)?.ok_or(PauseError::NoIncident(id))?;
        let rule = inc.rule.as_deref().ok_or(PauseError::NoRule(id))?;
        let service = inc.target.as_deref().and_then(TargetRef::service_in_key);
        let pause = NewPause::from_slack(id, rule, service, by, self.clock.now(), hold)
            .map_err(PauseError::Invalid)?;
        let p = self.store.add_pause(&pause)?;
        PauseSet {
            id: p.id,
            scope: &p.scope,
            by: &p.by,
            until: p.until,
            reason: &p.reason,
        }
        .emit(&self.metrics);
        Ok(p)
    }
}
