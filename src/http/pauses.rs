//! `POST/GET/DELETE /api/v1/pauses`: pausing runbooks, listing pauses, resuming them.
//!
//! A pause is checked whole before anything is stored: its rule must be one in force, its
//! service one a rule acts on (or in `docker.allowed_services`), a rule and a service together
//! must be a pair that can meet, its length more than zero and at most 30 days. Every problem
//! is answered at once in one 400, each naming its field (`rule: …; for: …`). Setting and
//! resuming pauses changes what the service does: refused unless `api.token` is set.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::{auth, ApiError, AppState};
use crate::domain::pause::{end_after, who};
use crate::domain::{NewPause, PauseInvalid, PauseScope};
use crate::rules::{validate_name, RuleSet};
use crate::store::{PauseEnd, PauseListing};
use crate::telemetry::events::{InternalEvent, PauseSet, PausesResumed};

/// Who a pause is set or resumed by when the request does not say (the API token has no name).
const DEFAULT_BY: &str = "api";

/// The most pauses `?all=true` lists, newest first.
const ALL_SHOWN: usize = 1000;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/pauses", web::post().to(create))
        .route("/api/v1/pauses", web::get().to(list))
        .route("/api/v1/pauses", web::delete().to(resume_all))
        .route("/api/v1/pauses/{id}", web::delete().to(resume_one));
}

/// `POST /api/v1/pauses`' body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PauseBody {
    rule: Option<String>,
    service: Option<String>,
    /// Every runbook: only alone, so that forgetting `rule` never pauses everything.
    #[serde(default)]
    all: bool,
    /// How long, as `30m`, `2h`.
    #[serde(rename = "for")]
    length: Option<String>,
    /// Or until when, RFC 3339.
    until: Option<String>,
    reason: Option<String>,
    /// Who sets it; `api` when not given (the CLI sends `$USER`).
    by: Option<String>,
}

/// The services a pause may name: those a rule acts on and those `docker.allowed_services`
/// allows, sorted.
fn known_services<'a>(rules: &'a RuleSet, allowed: &'a [String]) -> Vec<&'a str> {
    let mut all = rules.services();
    all.extend(allowed.iter().map(String::as_str));
    all.into_iter().collect()
}

/// The pause a body asks for, checked against the rules in force and the known services, as
/// of `now`; or every problem, each naming its field.
pub(super) fn new_pause(
    body: &PauseBody,
    rules: &RuleSet,
    allowed: &[String],
    now: DateTime<Utc>,
) -> Result<NewPause, Vec<PauseInvalid>> {
    let mut errors = Vec::new();
    let rule = body.rule.as_deref().map(str::trim);
    let service = body.service.as_deref().map(str::trim);
    let found = match rule {
        None => None,
        Some("") => {
            errors.push(PauseInvalid::new(
                "rule",
                "empty; leave it out to pause every rule (of the service)",
            ));
            None
        }
        Some(r) => match rules.get(r) {
            Some(found) => Some(found),
            None => {
                let names: Vec<&str> = rules.rules.iter().map(|r| r.name.as_str()).collect();
                errors.push(PauseInvalid::new(
                    "rule",
                    format!("`{r}` is not a rule in force (rules: {})", names.join(", ")),
                ));
                None
            }
        },
    };
    if let Some(s) = service {
        let known = known_services(rules, allowed);
        if let Err(e) = validate_name(s) {
            errors.push(PauseInvalid::new(
                "service",
                format!("{e}: it cannot be a compose service"),
            ));
        } else if !known.contains(&s) {
            errors.push(PauseInvalid::new(
                "service",
                format!(
                    "`{s}` is not a service any rule acts on nor one of docker.allowed_services \
                     (known: {})",
                    known.join(", ")
                ),
            ));
        } else if let Some(r) = found {
            let acts_on = r.services();
            if !acts_on.contains(&s) {
                errors.push(PauseInvalid::new(
                    "service",
                    if acts_on.is_empty() {
                        format!(
                            "rule `{}` acts on no service, so it never acts on `{s}`: pause the \
                             rule alone",
                            r.name
                        )
                    } else {
                        format!(
                            "rule `{}` never acts on `{s}` (it acts on: {})",
                            r.name,
                            acts_on.iter().copied().collect::<Vec<_>>().join(", ")
                        )
                    },
                ));
            }
        }
    }
    match (body.all, rule.is_some() || service.is_some()) {
        (true, true) => errors.push(PauseInvalid::new(
            "all",
            "pauses every runbook, so it goes alone: leave out rule and service, or all",
        )),
        (false, false) => errors.push(PauseInvalid::new(
            "rule",
            "missing: name a rule, a service or both (or send all: true to pause every runbook)",
        )),
        _ => {}
    }
    let until = match (&body.length, &body.until) {
        (Some(_), Some(_)) => Err(PauseInvalid::new("for", "give `for` or `until`, not both")),
        (None, None) => Err(PauseInvalid::new(
            "for",
            "missing: how long, such as 2h (or `until`, an RFC 3339 time)",
        )),
        (Some(d), None) => crate::domain::duration::parse(d)
            .map(|d| (end_after(now, d), "for"))
            .map_err(|e| PauseInvalid::new("for", e)),
        (None, Some(t)) => DateTime::parse_from_rfc3339(t.trim())
            .map(|t| (t.with_timezone(&Utc), "until"))
            .map_err(|_| {
                PauseInvalid::new(
                    "until",
                    format!("`{t}` is not an RFC 3339 time such as 2026-12-03T14:00:00Z"),
                )
            }),
    };
    let scope = PauseScope {
        rule: rule.filter(|r| !r.is_empty()).map(str::to_owned),
        service: service.map(str::to_owned),
    };
    let by = body.by.as_deref().unwrap_or(DEFAULT_BY);
    let reason = body.reason.as_deref().unwrap_or("");
    let built = match until {
        Ok((until, field)) => NewPause::new(scope, by, reason, now, until, field),
        Err(e) => {
            errors.push(e);
            // Only `by` and `reason` are checked here: the end is already refused.
            let a_second = now + chrono::Duration::seconds(1);
            NewPause::new(scope, by, reason, now, a_second, "for")
        }
    };
    match built {
        Ok(p) if errors.is_empty() => Ok(p),
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more);
            Err(errors)
        }
    }
}

fn invalid(errors: Vec<PauseInvalid>) -> ApiError {
    ApiError::BadRequest(
        "invalid pause".into(),
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "),
    )
}

/// Setting or resuming pauses: only behind a token.
fn check_change(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    if state.settings.api.token.is_none() {
        return Err(ApiError::Forbidden(
            "pausing and resuming runbooks over the API needs api.token (REMEDIATOR_API__TOKEN) to be set"
                .into(),
        ));
    }
    auth::check_api(req, &state.settings.api)
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(e.to_string())
}

async fn create(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    check_change(&req, &state)?;
    let de = &mut serde_json::Deserializer::from_slice(&body);
    let body: PauseBody = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        ApiError::BadRequest(
            "invalid pause".into(),
            if path == "." || path.is_empty() {
                format!("the body is not a pause object: {inner}")
            } else {
                format!("{path}: {inner}")
            },
        )
    })?;
    let rules = state
        .rules
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let pause = new_pause(
        &body,
        &rules,
        &state.settings.docker.allowed_services,
        state.clock.now(),
    )
    .map_err(invalid)?;
    let store = state.store.clone();
    let p = web::block(move || store.add_pause(&pause))
        .await
        .map_err(unavailable)?
        .map_err(unavailable)?;
    PauseSet {
        id: p.id,
        scope: &p.scope,
        by: &p.by,
        until: p.until,
        reason: &p.reason,
    }
    .emit(&state.metrics);
    Ok(HttpResponse::Created().json(p))
}

/// The query's value of `name`, if given.
fn query_value(req: &HttpRequest, name: &str) -> Result<Option<String>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string())
        .map_err(|e| ApiError::BadRequest("invalid query string".into(), e.to_string()))?;
    Ok(pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v))
}

/// `GET /api/v1/pauses`: those in force, oldest first; `?all=true`: every pause (the latest
/// 1000), newest first, each with its `state` (`active`, `resumed`, `expired`).
async fn list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    auth::check_api(&req, &state.settings.api)?;
    let which = match query_value(&req, "all")?.as_deref() {
        None | Some("false") | Some("0") => PauseListing::Active,
        Some("true") | Some("1") | Some("") => PauseListing::All { limit: ALL_SHOWN },
        Some(other) => {
            return Err(ApiError::BadRequest(
                "invalid all".into(),
                format!("all={other:?}; use true or false"),
            ))
        }
    };
    let (store, now) = (state.store.clone(), state.clock.now());
    let pauses = web::block(move || store.pauses(which, now))
        .await
        .map_err(unavailable)?
        .map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(json!({ "pauses": pauses })))
}

/// Who resumes: `?by=`, or `api`.
fn resumed_by(req: &HttpRequest) -> Result<String, ApiError> {
    let by = query_value(req, "by")?;
    who(by.as_deref().unwrap_or(DEFAULT_BY))
        .map(str::to_owned)
        .map_err(|e| invalid(vec![e]))
}

/// `DELETE /api/v1/pauses/{id}`: resumes it; `{"ended": [pause]}`, or `{"ended": [],
/// "pause": pause}` when it had already ended (its `state` says how).
async fn resume_one(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    check_change(&req, &state)?;
    let id: i64 = path.parse().map_err(|_| {
        ApiError::BadRequest(
            "invalid pause id".into(),
            format!("{:?} is not a number", path.as_str()),
        )
    })?;
    let by = resumed_by(&req)?;
    let (store, now, who) = (state.store.clone(), state.clock.now(), by.clone());
    let end = web::block(move || store.end_pause(id, &who, now))
        .await
        .map_err(unavailable)?
        .map_err(unavailable)?;
    match end {
        PauseEnd::Ended(p) => {
            PausesResumed {
                ids: &[p.id],
                by: &by,
            }
            .emit(&state.metrics);
            Ok(HttpResponse::Ok().json(json!({ "ended": [p] })))
        }
        PauseEnd::AlreadyOver(p) => Ok(HttpResponse::Ok().json(json!({ "ended": [], "pause": p }))),
        PauseEnd::NotFound => Err(ApiError::NotFound(format!("no pause {id}"))),
    }
}

/// `DELETE /api/v1/pauses`: resumes every pause in force; `{"ended": [...]}`.
async fn resume_all(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    check_change(&req, &state)?;
    let by = resumed_by(&req)?;
    let (store, now, who) = (state.store.clone(), state.clock.now(), by.clone());
    let ended = web::block(move || store.end_all_pauses(&who, now))
        .await
        .map_err(unavailable)?
        .map_err(unavailable)?;
    if !ended.is_empty() {
        let ids: Vec<i64> = ended.iter().map(|p| p.id).collect();
        PausesResumed { ids: &ids, by: &by }.emit(&state.metrics);
    }
    Ok(HttpResponse::Ok().json(json!({ "ended": ended })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn rules() -> RuleSet {
        let esc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/rules/escalation.yaml"
        ))
        .unwrap();
        crate::rules::compile(&[
            crate::rules::Source {
                path: "escalation.yaml".into(),
                text: esc,
            },
            crate::rules::Source {
                path: "r.yaml".into(),
                text: r#"
rules:
  - { name: pg, matchers: ['alertname="A"'], priority: P1, rto: 30m, owner: dba,
      target: { service: postgres }, steps: [ { restart: {} } ] }
  - { name: svc, matchers: ['alertname="B"'], priority: P2, rto: 15m, owner: infra,
      target: { label: service, allow: [redis, backend] }, steps: [ { restart: {} } ] }
  - { name: disk, matchers: ['alertname="C"'], priority: P3, rto: 1h, owner: infra,
      target: { none: true }, steps: [ { diagnose: {} } ] }
"#
                .into(),
            },
        ])
        .unwrap()
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 3, 12, 0, 0).unwrap()
    }

    fn check(body: serde_json::Value) -> Result<NewPause, Vec<String>> {
        let body: PauseBody = serde_json::from_value(body).unwrap();
        new_pause(&body, &rules(), &["minio".to_string()], now())
            .map_err(|e| e.into_iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn a_pause_of_a_rule_a_service_both_or_everything_is_accepted() {
        let p =
            check(json!({"rule": "pg", "for": "2h", "reason": "db maintenance", "by": "alice"}))
                .unwrap();
        assert_eq!(p.scope().to_string(), "rule pg");
        assert_eq!(p.until(), now() + chrono::Duration::hours(2));
        assert_eq!(p.by(), "alice");
        let p =
            check(json!({"rule": "svc", "service": "redis", "for": "30m", "reason": "x"})).unwrap();
        assert_eq!(p.scope().to_string(), "rule svc on service redis");
        assert_eq!(p.by(), "api");
        let p =
            check(json!({"service": "minio", "until": "2026-12-03T14:00:00+01:00", "reason": "x"}))
                .unwrap();
        assert_eq!(p.until(), now() + chrono::Duration::hours(1));
        let p = check(json!({"all": true, "for": "1h", "reason": "freeze"})).unwrap();
        assert!(p.scope().is_everything());
    }

    #[test]
    fn every_bad_field_is_named() {
        let cases = [
            (
                json!({"rule": "nope", "for": "1h", "reason": "x"}),
                vec!["rule: `nope` is not a rule in force (rules: pg, svc, disk)"],
            ),
            (
                json!({"service": "../etc", "for": "1h", "reason": "x"}),
                vec!["service: \"../etc\" is not a plain container or service name (letters, digits, '_', '.', '-'; starting with a letter or digit): it cannot be a compose service"],
            ),
            (
                json!({"service": "ghost", "for": "1h", "reason": "x"}),
                vec!["service: `ghost` is not a service any rule acts on nor one of docker.allowed_services (known: backend, minio, postgres, redis)"],
            ),
            (
                json!({"rule": "pg", "service": "redis", "for": "1h", "reason": "x"}),
                vec!["service: rule `pg` never acts on `redis` (it acts on: postgres)"],
            ),
            (
                json!({"rule": "disk", "service": "redis", "for": "1h", "reason": "x"}),
                vec!["service: rule `disk` acts on no service, so it never acts on `redis`: pause the rule alone"],
            ),
            (
                json!({"for": "1h", "reason": "x"}),
                vec!["rule: missing: name a rule, a service or both (or send all: true to pause every runbook)"],
            ),
            (
                json!({"all": true, "rule": "pg", "for": "1h", "reason": "x"}),
                vec!["all: pauses every runbook, so it goes alone: leave out rule and service, or all"],
            ),
            (
                json!({"rule": "pg", "for": "0s", "reason": "x"}),
                vec!["for: `0s` must be longer than zero"],
            ),
            (
                json!({"rule": "pg", "for": "-2h", "reason": "x"}),
                vec!["for: `-2h` is not a duration such as 30s, 2m or 1h"],
            ),
            (
                json!({"rule": "pg", "until": "2026-12-03T11:00:00Z", "reason": "x"}),
                vec!["until: the pause would end (2026-12-03 11:00:00 UTC) before it starts (2026-12-03 12:00:00 UTC)"],
            ),
            (
                json!({"rule": "pg", "until": "tomorrow", "reason": "x"}),
                vec!["until: `tomorrow` is not an RFC 3339 time such as 2026-12-03T14:00:00Z"],
            ),
            (
                json!({"rule": "pg", "for": "1h", "until": "2026-12-03T14:00:00Z", "reason": "x"}),
                vec!["for: give `for` or `until`, not both"],
            ),
            (
                json!({"rule": "pg", "for": "1h"}),
                vec!["reason: missing; say why (it is shown on every runbook the pause skips)"],
            ),
            (
                json!({"rule": "nope", "reason": " ", "by": ""}),
                vec![
                    "rule: `nope` is not a rule in force (rules: pg, svc, disk)",
                    "for: missing: how long, such as 2h (or `until`, an RFC 3339 time)",
                    "by: empty; say who you are",
                    "reason: missing; say why (it is shown on every runbook the pause skips)",
                ],
            ),
        ];
        for (body, want) in cases {
            assert_eq!(check(body.clone()).unwrap_err(), want, "{body}");
        }
    }
}
