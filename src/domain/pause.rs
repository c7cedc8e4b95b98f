//! A pause someone set on the automation (`remediator pause`, the API, the Slack button): what
//! it covers, who set it, why, and until when. While a pause covers an incident, the incident
//! still opens, is told and escalates; only its runbook is skipped.
//!
//! A [`NewPause`] is built only through [`NewPause::new`], which checks everything that needs
//! no rule set (who, why, how long); the caller checks the scope against the rules in force.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::duration::format as human;
use super::phase::text_enum;

/// The longest pause: a pause is for planned work, not a way to switch automation off for
/// good (that is a rule change). Set it again when it ends.
pub const MAX_PAUSE: Duration = Duration::from_secs(30 * 24 * 3600);

const MAX_BY: usize = 200;
const MAX_REASON: usize = 1000;

/// What a pause covers: the runbooks of one rule, those acting on one service, one rule on
/// one service, or (neither given) every runbook.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PauseScope {
    pub rule: Option<String>,
    pub service: Option<String>,
}

impl PauseScope {
    /// Every runbook of every rule.
    pub fn everything() -> PauseScope {
        PauseScope::default()
    }

    pub fn is_everything(&self) -> bool {
        self.rule.is_none() && self.service.is_none()
    }

    /// Whether an incident of `rule` acting on `service` (`None`: a container or no target)
    /// is covered. A pause of a service covers only incidents whose target is that service.
    pub fn covers(&self, rule: &str, service: Option<&str>) -> bool {
        self.rule.as_deref().is_none_or(|r| r == rule)
            && self.service.as_deref().is_none_or(|s| Some(s) == service)
    }
}

impl fmt::Display for PauseScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.rule, &self.service) {
            (Some(r), Some(s)) => write!(f, "rule {r} on service {s}"),
            (Some(r), None) => write!(f, "rule {r}"),
            (None, Some(s)) => write!(f, "service {s}"),
            (None, None) => f.write_str("every runbook"),
        }
    }
}

text_enum! {
    /// Where a stored pause stands at a given time.
    pub enum PauseState as "pause state" {
        /// In force.
        Active = "active",
        /// Ended early by someone (`remediator resume`, `DELETE /api/v1/pauses/{id}`).
        Resumed = "resumed",
        /// Its time ran out.
        Expired = "expired",
    }
}

impl PauseState {
    /// The state at `now` of a pause lasting until `until` and ended early at `ended_at`.
    pub fn at(until: DateTime<Utc>, ended_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Self {
        match ended_at {
            Some(_) => PauseState::Resumed,
            None if until <= now => PauseState::Expired,
            None => PauseState::Active,
        }
    }
}

/// One thing wrong with a pause, naming the request's field (`rule`, `service`, `for`,
/// `until`, `reason`, `by`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {detail}")]
pub struct PauseInvalid {
    pub field: &'static str,
    pub detail: String,
}

impl PauseInvalid {
    pub fn new(field: &'static str, detail: impl Into<String>) -> PauseInvalid {
        PauseInvalid {
            field,
            detail: detail.into(),
        }
    }
}

/// A pause to store, checked: someone set it, for a reason, ending after it starts and within
/// [`MAX_PAUSE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPause {
    scope: PauseScope,
    by: String,
    reason: String,
    created_at: DateTime<Utc>,
    until: DateTime<Utc>,
}

impl NewPause {
    /// A pause of `scope` set by `by` at `created_at`, lasting until `until`. Every problem
    /// is returned, each naming its field; `until_field` is what the caller calls the end
    /// (`for` when it came as a duration, `until` when as a time).
    pub fn new(
        scope: PauseScope,
        by: &str,
        reason: &str,
        created_at: DateTime<Utc>,
        until: DateTime<Utc>,
        until_field: &'static str,
    ) -> Result<NewPause, Vec<PauseInvalid>> {
        let mut errors = Vec::new();
        let by = match who(by) {
            Ok(by) => by,
            Err(e) => {
                errors.push(e);
                ""
            }
        };
        let reason = reason.trim();
        if reason.is_empty() {
            errors.push(PauseInvalid::new(
                "reason",
                "missing; say why (it is shown on every runbook the pause skips)",
            ));
        } else if let Some(why) = text_problem(reason, MAX_REASON) {
            errors.push(PauseInvalid::new("reason", why));
        }
        if until <= created_at {
            errors.push(PauseInvalid::new(
                until_field,
                format!(
                    "the pause would end ({}) before it starts ({})",
                    until.format("%Y-%m-%d %H:%M:%S UTC"),
                    created_at.format("%Y-%m-%d %H:%M:%S UTC")
                ),
            ));
        } else if (until - created_at).to_std().unwrap_or(Duration::MAX) > MAX_PAUSE {
            errors.push(PauseInvalid::new(
                until_field,
                format!(
                    "a pause lasts at most {}; set it again when it ends, or change the rule",
                    human(MAX_PAUSE)
                ),
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(NewPause {
            scope,
            by: by.to_owned(),
            reason: reason.to_owned(),
            created_at,
            until,
        })
    }

    /// A pause lasting `d` from `created_at`; a duration too large for a time is refused
    /// under `field` like any pause too long.
    pub fn lasting(
        scope: PauseScope,
        by: &str,
        reason: &str,
        created_at: DateTime<Utc>,
        d: Duration,
        field: &'static str,
    ) -> Result<NewPause, Vec<PauseInvalid>> {
        NewPause::new(
            scope,
            by,
            reason,
            created_at,
            end_after(created_at, d),
            field,
        )
    }

    /// The Slack button's pause: the incident's rule on its service (when its target is one),
    /// for `hold` (the button's hour), by the Slack user, "paused from Slack on incident #N".
    pub fn from_slack(
        incident_id: i64,
        rule: &str,
        service: Option<&str>,
        by: &str,
        now: DateTime<Utc>,
        hold: Duration,
    ) -> Result<NewPause, Vec<PauseInvalid>> {
        NewPause::lasting(
            PauseScope {
                rule: Some(rule.to_owned()),
                service: service.map(str::to_owned),
            },
            by,
            &format!("paused from Slack on incident #{incident_id}"),
            now,
            hold,
            "for",
        )
    }

    pub fn scope(&self) -> &PauseScope {
        &self.scope
    }
    pub fn by(&self) -> &str {
        &self.by
    }
    pub fn reason(&self) -> &str {
        &self.reason
    }
    pub fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    pub fn until(&self) -> DateTime<Utc> {
        self.until
    }
}

/// `start + d`, or the last time there is when that is beyond it (a duration too long for a
/// pause is refused by [`NewPause::new`] all the same).
pub fn end_after(start: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d.min(MAX_PAUSE * 2))
        .ok()
        .and_then(|d| start.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Who sets or resumes a pause (`by`), trimmed: a name shown in Slack, on the API and in logs.
pub fn who(by: &str) -> Result<&str, PauseInvalid> {
    let by = by.trim();
    if by.is_empty() {
        return Err(PauseInvalid::new("by", "empty; say who you are"));
    }
    match text_problem(by, MAX_BY) {
        Some(why) => Err(PauseInvalid::new("by", why)),
        None => Ok(by),
    }
}

/// Free text shown in Slack, on the API and in logs: bounded, one line, no control characters.
fn text_problem(s: &str, max: usize) -> Option<String> {
    if s.chars().count() > max {
        Some(format!("longer than {max} characters"))
    } else if s.chars().any(char::is_control) {
        Some("holds control characters (a newline, an escape); write it on one line".into())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 3, 12, 0, 0).unwrap()
    }

    fn scope(rule: Option<&str>, service: Option<&str>) -> PauseScope {
        PauseScope {
            rule: rule.map(Into::into),
            service: service.map(Into::into),
        }
    }

    #[test]
    fn a_scope_covers_its_rule_its_service_or_both_and_everything_covers_all() {
        let cases = [
            (scope(Some("pg"), None), "pg", Some("postgres"), true),
            (scope(Some("pg"), None), "pg", None, true),
            (scope(Some("pg"), None), "other", Some("postgres"), false),
            (scope(None, Some("postgres")), "any", Some("postgres"), true),
            (scope(None, Some("postgres")), "any", None, false),
            (scope(None, Some("postgres")), "any", Some("redis"), false),
            (
                scope(Some("pg"), Some("postgres")),
                "pg",
                Some("postgres"),
                true,
            ),
            (
                scope(Some("pg"), Some("postgres")),
                "pg",
                Some("redis"),
                false,
            ),
            (
                scope(Some("pg"), Some("postgres")),
                "x",
                Some("postgres"),
                false,
            ),
            (PauseScope::everything(), "x", None, true),
        ];
        for (s, rule, service, want) in cases {
            assert_eq!(
                s.covers(rule, service),
                want,
                "{s} covers {rule} {service:?}"
            );
        }
        assert_eq!(
            scope(Some("pg"), Some("postgres")).to_string(),
            "rule pg on service postgres"
        );
        assert_eq!(PauseScope::everything().to_string(), "every runbook");
    }

    #[test]
    fn a_new_pause_names_every_field_that_is_wrong() {
        let errs =
            NewPause::new(PauseScope::everything(), " ", "", now(), now(), "for").unwrap_err();
        let fields: Vec<_> = errs.iter().map(|e| e.field).collect();
        assert_eq!(fields, ["by", "reason", "for"], "{errs:?}");
        assert!(errs[2].detail.contains("before it starts"), "{errs:?}");

        let long = NewPause::lasting(
            PauseScope::everything(),
            "alice",
            "db\nmaintenance",
            now(),
            Duration::from_secs(u64::MAX),
            "for",
        )
        .unwrap_err();
        assert_eq!(
            long.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            [
                "reason: holds control characters (a newline, an escape); write it on one line",
                "for: a pause lasts at most 30days; set it again when it ends, or change the rule"
            ]
        );
    }

    #[test]
    fn the_slack_pause_is_the_incidents_rule_on_its_service_for_an_hour() {
        let p = NewPause::from_slack(
            42,
            "pg",
            Some("postgres"),
            " U0ALICE ",
            now(),
            Duration::from_secs(3600),
        )
        .unwrap();
        assert_eq!(p.scope(), &scope(Some("pg"), Some("postgres")));
        assert_eq!(p.by(), "U0ALICE");
        assert_eq!(p.reason(), "paused from Slack on incident #42");
        assert_eq!(p.until() - p.created_at(), chrono::Duration::hours(1));
    }

    #[test]
    fn a_pause_is_active_until_it_ends_or_is_resumed() {
        let until = now() + chrono::Duration::hours(1);
        assert_eq!(PauseState::at(until, None, now()), PauseState::Active);
        assert_eq!(PauseState::at(until, None, until), PauseState::Expired);
        assert_eq!(
            PauseState::at(until, Some(now()), now()),
            PauseState::Resumed
        );
    }
}
