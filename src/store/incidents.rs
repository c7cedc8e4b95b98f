//! Incident records: read whole and typed, listed newest first a page at a time.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use super::codec::{collect, collect_each, field, Json, Ts};
use super::{body, ts, ts_serde, Ctx, Store, StoreError};
use crate::alert::Labels;
use crate::domain::{Contact, IncidentState, Origin, Phase, Pressed, Priority, Started};

/// An incident as stored and as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentRecord {
    pub id: i64,
    pub fingerprint: String,
    pub alertname: String,
    pub state: IncidentState,
    pub phase: Phase,
    #[serde(with = "ts_serde")]
    pub starts_at: DateTime<Utc>,
    #[serde(with = "ts_serde::opt")]
    pub ends_at: Option<DateTime<Utc>>,
    #[serde(with = "ts_serde::opt")]
    pub resolved_at: Option<DateTime<Utc>>,
    #[serde(with = "ts_serde")]
    pub first_seen: DateTime<Utc>,
    #[serde(with = "ts_serde")]
    pub last_seen: DateTime<Utc>,
    pub deliveries: i64,
    pub rule: Option<String>,
    pub priority: Option<Priority>,
    pub target: Option<String>,
    /// Seconds from the alert's start to its end, once resolved (millisecond precision).
    pub time_to_recover_seconds: Option<f64>,
    /// The matched rule's RTO when it matched, in seconds.
    #[serde(rename = "rto_seconds", serialize_with = "secs_opt")]
    pub rto: Option<Duration>,
    /// Whether the time to recover was within the RTO, once resolved (a matched incident).
    pub rto_met: Option<bool>,
    /// Who was told when it opened (the priority's `notify` list and the rule's owner).
    pub told: Vec<Contact>,
    pub group_key: String,
    pub labels: Labels,
    pub annotations: BTreeMap<String, String>,
    pub acked_by: Option<String>,
    #[serde(with = "ts_serde::opt")]
    pub acked_at: Option<DateTime<Utc>>,
    /// The Slack user who acknowledged, when it was the button.
    pub acked_slack_user: Option<String>,
    /// The Silence button's press: who, when, until when, the silence's id.
    pub silenced: Option<Pressed>,
    /// The Pause button's press: who, when, until when.
    pub paused: Option<Pressed>,
    /// The matched rule's owner when it matched.
    pub owner: Option<Contact>,
    /// The alert's `generatorURL` (its Prometheus expression) and the `externalURL` of the
    /// Alertmanager that sent it, as the first delivery carried them.
    pub generator_url: Option<String>,
    pub external_url: Option<String>,
    /// The Slack channel and `ts` of the incident's root message, once posted.
    pub slack_channel: Option<String>,
    pub slack_ts: Option<String>,
    /// The intake id of the latest delivery that carried this alert (the `delivery` of the
    /// webhook's response).
    pub last_delivery: Option<i64>,
    /// Alertmanager's webhook, a manual run or a drill.
    pub origin: Origin,
    /// For a manual run or a drill: who started it and how.
    pub started: Option<Started>,
}

fn secs_opt<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

impl IncidentRecord {
    /// From the alert's start to its end, once resolved.
    pub fn time_to_recover(&self) -> Option<Duration> {
        self.time_to_recover_seconds
            .map(|s| Duration::from_secs_f64(s.max(0.0)))
    }
}

/// One page of incidents, newest first; `next` is the `before` of the following page.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentPage {
    pub incidents: Vec<IncidentRecord>,
    pub next: Option<i64>,
}

const INCIDENT_SELECT: &str =
    "SELECT id, fingerprint, alertname, state, phase, starts_at, ends_at, resolved_at,
    first_seen, seen.last_seen, seen.deliveries, rule, priority, target, group_key, labels,
    annotations, acked_by, acked_at, slack_channel, slack_ts, seen.last_intake_id, rto_ms, told,
    acked_slack_user, silenced, paused, owner, generator_url, external_url, origin, started
    FROM incidents JOIN incident_seen AS seen ON seen.incident_id = incidents.id";

fn incident_row(r: &Row<'_>) -> Result<IncidentRecord, StoreError> {
    let id: i64 = r.get(0).ctx("incident id")?;
    macro_rules! get {
        ($idx:expr, $col:literal) => {
            field(r, $idx, "incidents", $col, id)?
        };
        ($idx:expr, $col:literal, $t:ty) => {
            field::<$t>(r, $idx, "incidents", $col, id)?
        };
    }
    let rto_ms: Option<i64> = get!(22, "rto_ms");
    let state: IncidentState = get!(3, "state");
    let starts_at = get!(5, "starts_at", Ts).0;
    let ends_at = get!(6, "ends_at", Option<Ts>).map(|t| t.0);
    let time_to_recover_seconds = match (state, ends_at) {
        (IncidentState::Resolved, Some(end)) => {
            Some((end - starts_at).num_milliseconds() as f64 / 1000.0)
        }
        _ => None,
    };
    let told: Option<Json<Vec<Contact>>> = get!(23, "told");
    let rto = rto_ms.map(|ms| Duration::from_millis(ms.max(0) as u64));
    let rto_met = time_to_recover_seconds
        .zip(rto)
        .map(|(took, rto)| took <= rto.as_secs_f64());
    Ok(IncidentRecord {
        id,
        fingerprint: get!(1, "fingerprint"),
        alertname: get!(2, "alertname"),
        state,
        phase: get!(4, "phase"),
        starts_at,
        ends_at,
        time_to_recover_seconds,
        resolved_at: get!(7, "resolved_at", Option<Ts>).map(|t| t.0),
        first_seen: get!(8, "first_seen", Ts).0,
        last_seen: get!(9, "last_seen", Ts).0,
        deliveries: get!(10, "deliveries"),
        rule: get!(11, "rule"),
        priority: get!(12, "priority"),
        target: get!(13, "target"),
        group_key: get!(14, "group_key"),
        labels: get!(15, "labels", Json<Labels>).0,
        annotations: get!(16, "annotations", Json<BTreeMap<String, String>>).0,
        acked_by: get!(17, "acked_by"),
        acked_at: get!(18, "acked_at", Option<Ts>).map(|t| t.0),
        slack_channel: get!(19, "slack_channel"),
        slack_ts: get!(20, "slack_ts"),
        last_delivery: get!(21, "last_intake_id"),
        rto,
        rto_met,
        told: told.map(|j| j.0).unwrap_or_default(),
        acked_slack_user: get!(24, "acked_slack_user"),
        silenced: get!(25, "silenced", Option<Json<Pressed>>).map(|j| j.0),
        paused: get!(26, "paused", Option<Json<Pressed>>).map(|j| j.0),
        owner: get!(27, "owner", Option<Json<Contact>>).map(|j| j.0),
        generator_url: get!(28, "generator_url", Option<String>).filter(|u| !u.is_empty()),
        external_url: get!(29, "external_url", Option<String>).filter(|u| !u.is_empty()),
        origin: get!(30, "origin"),
        started: get!(31, "started", Option<Json<Started>>).map(|j| j.0),
    })
}

/// Repeats do not rewrite an incident's row: while it is open, its latest annotations are the
/// ones in the body of its latest delivery (the stored row keeps those it opened with, and
/// those it resolved with). A body pruned or unreadable leaves the stored ones.
fn incident_by_id(conn: &Connection, id: i64) -> Result<Option<IncidentRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!("{INCIDENT_SELECT} WHERE id = ?1"))
        .ctx("get incident")?;
    let rows = stmt.query([id]).ctx("get incident")?;
    Ok(collect(rows, "get incident", incident_row)?.pop())
}

fn latest_annotations(conn: &Connection, inc: &mut IncidentRecord) -> Result<(), StoreError> {
    let Some(intake_id) = inc
        .last_delivery
        .filter(|_| inc.state == IncidentState::Open)
    else {
        return Ok(());
    };
    let row: Option<(Vec<u8>, Option<String>)> = conn
        .prepare_cached("SELECT body, encoding FROM intake WHERE id = ?1")
        .ctx("latest delivery")?
        .query_row([intake_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .ctx("latest delivery")?;
    let found = row.and_then(|(stored, encoding)| {
        let json = body::decode(&stored, encoding.as_deref()).ok()?;
        crate::alert::annotations_of(&json, &inc.fingerprint, inc.starts_at)
    });
    if let Some(serde_json::Value::Object(map)) = found {
        inc.annotations = map
            .into_iter()
            .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_owned())))
            .collect();
    }
    Ok(())
}

/// The most incidents one page holds.
pub const MAX_PAGE: usize = 1000;

impl Store {
    /// One incident, with its latest annotations.
    pub fn incident(&self, id: i64) -> Result<Option<IncidentRecord>, StoreError> {
        let conn = self.conn();
        let Some(mut inc) = incident_by_id(&conn, id)? else {
            return Ok(None);
        };
        latest_annotations(&conn, &mut inc)?;
        Ok(Some(inc))
    }

    /// The incident without the annotations of its latest delivery (those are read from the
    /// stored body, decompressed and parsed): what the engine decides on, read once for each
    /// incident a storm opens.
    pub fn incident_without_annotations(
        &self,
        id: i64,
    ) -> Result<Option<IncidentRecord>, StoreError> {
        incident_by_id(&self.conn(), id)
    }

    /// A page of incidents, newest first, with ids below `before` when given; at most
    /// `limit` (capped at [`MAX_PAGE`]). `next` is set while older incidents remain.
    pub fn list_incidents(
        &self,
        state: Option<IncidentState>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<IncidentPage, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let conn = self.conn();
        let (before, take) = (before.unwrap_or(i64::MAX), limit as i64 + 1);
        // Two statements, so that each walks an index (the rowid, or `incidents_state`) in
        // id order; `(?1 IS NULL OR state = ?1)` would scan the table. One row more than
        // asked says whether there is a next page.
        let mut incidents = match state {
            None => {
                let mut stmt = conn
                    .prepare_cached(&format!(
                        "{INCIDENT_SELECT} WHERE id < ?1 ORDER BY id DESC LIMIT ?2"
                    ))
                    .ctx("list incidents")?;
                let rows = stmt.query(params![before, take]).ctx("list incidents")?;
                collect(rows, "list incidents", incident_row)?
            }
            Some(state) => {
                let mut stmt = conn
                    .prepare_cached(&format!(
                        "{INCIDENT_SELECT} WHERE state = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3"
                    ))
                    .ctx("list incidents")?;
                let rows = stmt
                    .query(params![state, before, take])
                    .ctx("list incidents")?;
                collect(rows, "list incidents", incident_row)?
            }
        };
        let next = if incidents.len() > limit {
            incidents.truncate(limit);
            incidents.last().map(|i| i.id)
        } else {
            None
        };
        for inc in &mut incidents {
            latest_annotations(&conn, inc)?;
        }
        Ok(IncidentPage { incidents, next })
    }

    /// The incident of an alert, by its identity (a synthetic alert's, once submitted).
    pub fn incident_of(
        &self,
        fingerprint: &str,
        starts_at: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError> {
        self.conn()
            .prepare_cached("SELECT id FROM incidents WHERE fingerprint = ?1 AND starts_at = ?2")
            .ctx("find incident")?
            .query_row(params![fingerprint, ts(starts_at)], |r| r.get(0))
            .optional()
            .ctx("find incident")
    }

    /// Incidents in a phase, oldest first (crash recovery).
    pub fn incidents_in_phase(&self, phase: Phase) -> Result<Vec<i64>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT id FROM incidents WHERE phase = ?1 ORDER BY id")
            .ctx("incidents in phase")?;
        let rows = stmt
            .query_map([phase], |r| r.get(0))
            .ctx("incidents in phase")?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .ctx("incidents in phase")
    }

    /// Up to `limit` incidents in a phase with an id above `after`, oldest first (a bounded
    /// pass that resumes where the last one ended: the fleet's claim watch).
    pub fn incidents_in_phase_after(
        &self,
        phase: Phase,
        after: i64,
        limit: usize,
    ) -> Result<Vec<i64>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id FROM incidents WHERE phase = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )
            .ctx("incidents in phase")?;
        let rows = stmt
            .query_map(rusqlite::params![phase, after, limit as i64], |r| r.get(0))
            .ctx("incidents in phase")?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .ctx("incidents in phase")
    }

    /// Open, unacknowledged incidents that matched a rule and opened at or before
    /// `opened_by` (the escalation timers' work: one younger than the earliest tier has no
    /// tier due, and is not read). Each is read on its own: a damaged one is its own
    /// [`StoreError::Corrupt`] and the others are still returned.
    pub fn escalation_candidates(
        &self,
        after: i64,
        limit: usize,
        opened_by: DateTime<Utc>,
    ) -> Result<Vec<Result<IncidentRecord, StoreError>>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&format!(
                "{INCIDENT_SELECT} WHERE state = 'open' AND acked_by IS NULL AND rule IS NOT NULL \
                 AND id > ?1 AND first_seen <= ?3 ORDER BY id LIMIT ?2"
            ))
            .ctx("escalation candidates")?;
        let rows = stmt
            .query(params![after, limit as i64, ts(opened_by)])
            .ctx("escalation candidates")?;
        collect_each(rows, "escalation candidates", incident_row)
    }

    /// How many incidents of this fingerprint started at or after `since` (flapping).
    pub fn count_firings(
        &self,
        fingerprint: &str,
        since: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        self.conn()
            .prepare_cached(
                "SELECT count(*) FROM incidents WHERE fingerprint = ?1 AND first_seen >= ?2",
            )
            .ctx("count firings")?
            .query_row(params![fingerprint, ts(since)], |r| r.get(0))
            .ctx("count firings")
    }
}

impl Store {
    /// Matched incidents stored before their RTO and told list were recorded (by a version
    /// before typed notices): the engine fills them in from the rules at start.
    pub fn incidents_missing_match_facts(&self) -> Result<Vec<i64>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id FROM incidents WHERE rule IS NOT NULL AND rto_ms IS NULL ORDER BY id",
            )
            .ctx("incidents missing match facts")?;
        let rows = stmt
            .query_map([], |r| r.get(0))
            .ctx("incidents missing match facts")?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .ctx("incidents missing match facts")
    }
}
