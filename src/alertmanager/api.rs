//! Alertmanager's API v2 as remediator reads and writes it (CONTRACTS.md §9), and the pure
//! parts of the check: the `filter` matchers for an alert's labels, finding the alert among
//! the answers (a filter matches supersets, so the label set must be equal), and combining
//! what the peers of an HA cluster say into one [`AlertNow`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::alert::Labels;
use crate::domain::{AlertNow, InhibitorFact, SilenceFact};

/// One alert of `GET /api/v2/alerts` (`gettableAlert`), the fields remediator reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GettableAlert {
    pub fingerprint: String,
    pub labels: Labels,
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    pub status: AlertStatus,
}

/// `alertStatus`. Its `state` (`unprocessed`, `active`, `suppressed`) is not read: the lists
/// say why an alert is suppressed, and Alertmanager computes them for the answer from the
/// silences and inhibitions in force. A suppression by a mute time interval (`mutedBy`,
/// 0.28 on) does not stop a runbook: it mutes a route's notifications, and the webhook that
/// opened the incident came through.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertStatus {
    #[serde(default)]
    pub silenced_by: Vec<String>,
    #[serde(default)]
    pub inhibited_by: Vec<String>,
}

/// One silence of `GET /api/v2/silence/{id}` (`gettableSilence`), the fields remediator reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GettableSilence {
    pub id: String,
    #[serde(default)]
    pub created_by: String,
    #[serde(default)]
    pub comment: String,
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
}

/// `matcher`, as a silence holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Matcher {
    pub name: String,
    pub value: String,
    pub is_regex: bool,
    pub is_equal: bool,
}

/// The body of `POST /api/v2/silences` (`postableSilence`, without `id`: always a new one).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableSilence {
    pub matchers: Vec<Matcher>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub created_by: String,
    pub comment: String,
}

/// The answer to `POST /api/v2/silences`.
#[derive(Debug, Clone, Deserialize)]
pub struct SilenceCreated {
    #[serde(rename = "silenceID")]
    pub silence_id: String,
}

/// A silence for exactly these labels: one equality matcher per label.
pub fn matchers_for(labels: &Labels) -> Vec<Matcher> {
    labels
        .iter()
        .map(|(name, value)| Matcher {
            name: name.clone(),
            value: value.clone(),
            is_regex: false,
            is_equal: true,
        })
        .collect()
}

/// The `filter` query values for an alert's labels: `name="value"`, the value quoted and
/// escaped as Alertmanager's matcher parser reads it. Names that the classic matcher syntax
/// cannot write (UTF-8 names of newer Alertmanagers) are left out of the filter: the exact
/// comparison of [`find`] still sees them.
pub fn filters(labels: &Labels) -> Vec<String> {
    labels
        .iter()
        .filter(|(name, _)| plain_label_name(name))
        .map(|(name, value)| {
            let mut quoted = String::with_capacity(value.len() + 2);
            for c in value.chars() {
                match c {
                    '\\' => quoted.push_str("\\\\"),
                    '"' => quoted.push_str("\\\""),
                    '\n' => quoted.push_str("\\n"),
                    c => quoted.push(c),
                }
            }
            format!("{name}=\"{quoted}\"")
        })
        .collect()
}

fn plain_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// What one peer that answered says of the alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerView {
    /// Not among its alerts, or ended: resolved (or never received).
    Missing,
    Found {
        silenced_by: Vec<String>,
        inhibited_by: Vec<String>,
    },
}

/// The alert whose label set is exactly `labels`, among a filtered answer (which holds every
/// alert whose labels include them), as `now` sees it: one whose `endsAt` has passed is
/// resolved, whatever the peer still keeps.
pub fn find(alerts: &[GettableAlert], labels: &Labels, now: DateTime<Utc>) -> PeerView {
    let Some(alert) = alerts.iter().find(|a| a.labels == *labels) else {
        return PeerView::Missing;
    };
    if alert.ends_at.is_some_and(|end| end <= now) {
        return PeerView::Missing;
    }
    PeerView::Found {
        silenced_by: alert.status.silenced_by.clone(),
        inhibited_by: alert.status.inhibited_by.clone(),
    }
}

/// One answer from what the peers that answered say. Peers of an HA cluster gossip silences
/// (so they agree after a moment) but each receives alerts on its own, so they may disagree
/// for a while. We must never fight a human: a silence seen on any peer wins, then an
/// inhibition on any peer, then the alert active on any peer; `Gone` only when no peer has
/// it firing. A peer that has not received the alert (`Missing`) does not outvote one that
/// has it firing. Silences and inhibitors are listed once each, in the peers' order.
/// The facts carry only the ids: [`super::AlertmanagerClient`] reads the silences and the
/// inhibiting alerts afterwards.
pub fn combine(views: &[PeerView]) -> AlertNow {
    let mut silences: Vec<String> = Vec::new();
    let mut inhibitors: Vec<String> = Vec::new();
    let mut found = false;
    for view in views {
        if let PeerView::Found {
            silenced_by,
            inhibited_by,
        } = view
        {
            found = true;
            for id in silenced_by {
                if !silences.contains(id) {
                    silences.push(id.clone());
                }
            }
            for fp in inhibited_by {
                if !inhibitors.contains(fp) {
                    inhibitors.push(fp.clone());
                }
            }
        }
    }
    if !silences.is_empty() {
        AlertNow::Silenced {
            by: silences.into_iter().map(SilenceFact::id).collect(),
        }
    } else if !inhibitors.is_empty() {
        AlertNow::Inhibited {
            by: inhibitors
                .into_iter()
                .map(|fingerprint| InhibitorFact {
                    fingerprint,
                    alertname: None,
                })
                .collect(),
        }
    } else if found {
        AlertNow::Active
    } else {
        AlertNow::Gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).unwrap()
    }

    fn gettable(json: serde_json::Value) -> Vec<GettableAlert> {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn filters_quote_and_escape_values_and_leave_out_names_the_syntax_cannot_write() {
        let l = labels(&[
            ("alertname", "PostgresDown"),
            ("path", r#"C:\data "main""#),
            ("multi", "a\nb"),
            ("service.name", "pg"),
        ]);
        assert_eq!(
            filters(&l),
            [
                r#"alertname="PostgresDown""#,
                r#"multi="a\nb""#,
                r#"path="C:\\data \"main\"""#,
            ]
        );
    }

    #[test]
    fn only_the_alert_with_exactly_these_labels_counts_and_an_ended_one_is_missing() {
        let ours = labels(&[("alertname", "PostgresDown"), ("service", "postgres")]);
        let answer = gettable(serde_json::json!([
            {"fingerprint": "aa", "labels": {"alertname": "PostgresDown", "service": "postgres", "replica": "b"},
             "startsAt": "2026-12-02T11:00:00Z", "endsAt": "2026-12-02T13:00:00Z", "updatedAt": "2026-12-02T11:00:00Z",
             "annotations": {}, "receivers": [{"name": "remediator"}],
             "status": {"state": "suppressed", "silencedBy": ["s1"], "inhibitedBy": []}},
            {"fingerprint": "bb", "labels": {"alertname": "PostgresDown", "service": "postgres"},
             "startsAt": "2026-12-02T11:00:00Z", "endsAt": "2026-12-02T13:00:00Z",
             "status": {"state": "active", "silencedBy": [], "inhibitedBy": []}},
        ]));
        assert_eq!(
            find(&answer, &ours, now()),
            PeerView::Found {
                silenced_by: vec![],
                inhibited_by: vec![]
            },
            "the superset's silence is not ours"
        );
        let ended = gettable(serde_json::json!([
            {"fingerprint": "bb", "labels": {"alertname": "PostgresDown", "service": "postgres"},
             "endsAt": "2026-12-02T11:59:59Z", "status": {"state": "active"}},
        ]));
        assert_eq!(find(&ended, &ours, now()), PeerView::Missing);
        assert_eq!(find(&[], &ours, now()), PeerView::Missing);
    }

    #[test]
    fn peers_combine_so_that_a_silence_anywhere_wins_and_gone_needs_every_peer() {
        let active = PeerView::Found {
            silenced_by: vec![],
            inhibited_by: vec![],
        };
        let silenced = |id: &str| PeerView::Found {
            silenced_by: vec![id.into()],
            inhibited_by: vec![],
        };
        let inhibited = PeerView::Found {
            silenced_by: vec![],
            inhibited_by: vec!["ff".into()],
        };
        let ids = |now: AlertNow| match now {
            AlertNow::Silenced { by } => by.into_iter().map(|s| s.id).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(combine(&[active.clone(), active.clone()]), AlertNow::Active);
        assert_eq!(
            combine(&[PeerView::Missing, active.clone()]),
            AlertNow::Active,
            "a peer that never got the alert does not outvote one that has it firing"
        );
        assert_eq!(
            combine(&[PeerView::Missing, PeerView::Missing]),
            AlertNow::Gone
        );
        assert_eq!(combine(&[]), AlertNow::Gone);
        assert_eq!(
            ids(combine(&[active.clone(), silenced("s1")])),
            ["s1"],
            "gossip lag: the peer that has the silence wins"
        );
        assert_eq!(
            ids(combine(&[silenced("s1"), silenced("s1"), silenced("s2")])),
            ["s1", "s2"]
        );
        assert_eq!(
            combine(&[inhibited.clone(), active]),
            AlertNow::Inhibited {
                by: vec![InhibitorFact {
                    fingerprint: "ff".into(),
                    alertname: None
                }]
            }
        );
        assert_eq!(ids(combine(&[inhibited, silenced("s3")])), ["s3"]);
    }

    #[test]
    fn a_silence_matches_each_label_exactly() {
        let l = labels(&[("alertname", "PostgresDown"), ("service", "postgres")]);
        let body = PostableSilence {
            matchers: matchers_for(&l),
            starts_at: now(),
            ends_at: now() + chrono::Duration::hours(1),
            created_by: "alice".into(),
            comment: "db work".into(),
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({
                "matchers": [
                    {"name": "alertname", "value": "PostgresDown", "isRegex": false, "isEqual": true},
                    {"name": "service", "value": "postgres", "isRegex": false, "isEqual": true},
                ],
                "startsAt": "2026-12-02T12:00:00Z", "endsAt": "2026-12-02T13:00:00Z",
                "createdBy": "alice", "comment": "db work",
            })
        );
    }
}
