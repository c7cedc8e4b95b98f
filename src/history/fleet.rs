//! The fleet's incidents from the history: one row per incident identity
//! `(fingerprint, startsAt)`, whichever replicas saw it, and which of them acted (has a run or
//! a step for it). Newest `startsAt` first, a page at a time: `next` is the `before` cursor
//! of the following page (`STARTS_AT|FINGERPRINT`), null on the last.

use serde::Serialize;

use super::{History, HistoryError};

/// One replica's copy of an incident.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FleetReplica {
    pub replica: String,
    /// The incident's id on that replica (`GET /api/v1/incidents/{id}` there).
    pub id: i64,
    pub state: Option<String>,
    pub phase: Option<String>,
    /// It ran the runbook, or steps of it.
    pub acted: bool,
}

/// An incident of the fleet.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FleetIncident {
    pub fingerprint: String,
    pub starts_at: String,
    pub alertname: Option<String>,
    /// `resolved` once any replica saw it resolve, else `open`.
    pub state: String,
    /// The phase on the replica that acted (else on the first that saw it).
    pub phase: Option<String>,
    pub rule: Option<String>,
    pub priority: Option<String>,
    pub target: Option<String>,
    pub first_seen: Option<String>,
    pub resolved_at: Option<String>,
    /// The replicas that acted on it: one, with coordination.
    pub acted_by: Vec<String>,
    pub replicas: Vec<FleetReplica>,
}

/// One page of the fleet's incidents.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FleetPage {
    pub incidents: Vec<FleetIncident>,
    pub next: Option<String>,
}

/// A page cursor: the identity the previous page ended at.
pub fn parse_cursor(text: &str) -> Option<(String, String)> {
    let (starts_at, fingerprint) = text.rsplit_once('|')?;
    (!starts_at.is_empty() && !fingerprint.is_empty())
        .then(|| (starts_at.to_owned(), fingerprint.to_owned()))
}

const PAGE: &str = "
WITH page AS (
    SELECT fingerprint, starts_at FROM remediator.incidents
    WHERE fingerprint IS NOT NULL AND starts_at IS NOT NULL
      AND ($1::text IS NULL OR (starts_at, fingerprint) < ($1::text, $2::text))
    GROUP BY fingerprint, starts_at
    HAVING $3::text IS NULL
        OR (CASE WHEN bool_or(state = 'resolved') THEN 'resolved' ELSE 'open' END) = $3::text
    ORDER BY starts_at DESC, fingerprint DESC
    LIMIT $4
)
SELECT i.fingerprint, i.starts_at, i.replica_id, i.local_id, i.alertname, i.state, i.phase,
    i.rule, i.priority, i.target, i.first_seen, i.resolved_at,
    EXISTS (SELECT 1 FROM remediator.runs r
            WHERE r.replica_id = i.replica_id AND r.local_id = i.local_id)
    OR EXISTS (SELECT 1 FROM remediator.steps s
            WHERE s.replica_id = i.replica_id AND s.incident_id = i.local_id) AS acted
FROM remediator.incidents i JOIN page USING (fingerprint, starts_at)
ORDER BY i.starts_at DESC, i.fingerprint DESC, i.first_seen, i.replica_id";

impl History {
    /// A page of the fleet's incidents, newest first, before the `before` cursor; `state`
    /// `open` or `resolved` (as the fleet sees it), or all.
    pub async fn fleet_incidents(
        &self,
        state: Option<&str>,
        before: Option<(String, String)>,
        limit: usize,
    ) -> Result<FleetPage, HistoryError> {
        let client = self.client().await?;
        let (after_start, after_fp) = before.unzip();
        let take = limit as i64 + 1;
        let rows = self
            .within("listing the fleet's incidents", async {
                client
                    .query(PAGE, &[&after_start, &after_fp, &state, &take])
                    .await
                    .map_err(|e| self.pg_error("the fleet's incidents", &e))
            })
            .await?;
        let mut incidents: Vec<FleetIncident> = Vec::new();
        for row in rows {
            let fingerprint: String = row.get(0);
            let starts_at: String = row.get(1);
            let copy = FleetReplica {
                replica: row.get(2),
                id: row.get(3),
                state: row.get(5),
                phase: row.get(6),
                acted: row.get(12),
            };
            let same = incidents
                .last()
                .is_some_and(|i| i.fingerprint == fingerprint && i.starts_at == starts_at);
            if !same {
                incidents.push(FleetIncident {
                    fingerprint,
                    starts_at,
                    alertname: row.get(4),
                    state: "open".into(),
                    phase: None,
                    rule: None,
                    priority: None,
                    target: None,
                    first_seen: row.get(10),
                    resolved_at: None,
                    acted_by: Vec::new(),
                    replicas: Vec::new(),
                });
            }
            let Some(inc) = incidents.last_mut() else {
                continue;
            };
            let resolved_at: Option<String> = row.get(11);
            if copy.state.as_deref() == Some("resolved") {
                inc.state = "resolved".into();
            }
            if inc.resolved_at.is_none() {
                inc.resolved_at = resolved_at;
            }
            // The acting replica's view wins; else the first replica's that has one.
            let (rule, priority, target): (Option<String>, Option<String>, Option<String>) =
                (row.get(7), row.get(8), row.get(9));
            if copy.acted || inc.phase.is_none() {
                inc.phase = copy.phase.clone().or(inc.phase.take());
                inc.rule = rule.or(inc.rule.take());
                inc.priority = priority.or(inc.priority.take());
                inc.target = target.or(inc.target.take());
            }
            if copy.acted {
                inc.acted_by.push(copy.replica.clone());
            }
            inc.replicas.push(copy);
        }
        let next = if incidents.len() > limit {
            incidents.truncate(limit);
            incidents
                .last()
                .map(|i| format!("{}|{}", i.starts_at, i.fingerprint))
        } else {
            None
        };
        Ok(FleetPage { incidents, next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_is_the_identity_the_page_ended_at() {
        assert_eq!(
            parse_cursor("2026-01-01T00:00:00.000000000Z|abc123"),
            Some(("2026-01-01T00:00:00.000000000Z".into(), "abc123".into()))
        );
        assert_eq!(parse_cursor("abc"), None);
        assert_eq!(parse_cursor("|abc"), None);
    }
}
