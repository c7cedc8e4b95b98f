//! `POST /api/v1/runs`: a runbook started by hand (`remediator run`) or a DR drill
//! (`remediator drill`). A synthetic alert whose labels make the named rule the first match
//! (see [`crate::rules::synthetic_labels`]), `startsAt` now and Alertmanager's fingerprint,
//! goes through the intake like a webhook, so the engine plans it with its guards, narrates it
//! in a thread and escalates it like any other; the incident records its origin (`manual`,
//! `drill`) and who started it. Needs `api.token`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{auth, ApiError, AppState};
use crate::alert::{parse_webhook, Fingerprint, Labels};
use crate::domain::{Break, Origin, Started};
use crate::rules::{synthetic_labels, TargetRef};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/runs", web::post().to(create));
}

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunBody {
    rule: String,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    by: Option<String>,
    /// A drill (`remediator drill`): marked as one, never paged.
    #[serde(default)]
    drill: bool,
    /// A drill that runs its steps (default: dry-run). A manual run is always live.
    #[serde(default)]
    live: bool,
    /// A live drill's break of its target before the runbook.
    #[serde(default, rename = "break")]
    break_with: Option<Break>,
}

fn invalid(detail: String) -> ApiError {
    ApiError::BadRequest("invalid run".into(), detail)
}

async fn create(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if state.settings.api.token.is_none() {
        return Err(ApiError::Forbidden(
            "starting runbooks over the API needs api.token (REMEDIATOR_API__TOKEN) to be set"
                .into(),
        ));
    }
    auth::check_api(&req, &state.settings.api)?;
    let de = &mut serde_json::Deserializer::from_slice(&body);
    let body: RunBody = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        invalid(if path == "." || path.is_empty() {
            format!("the body is not a run object: {inner}")
        } else {
            format!("{path}: {inner}")
        })
    })?;
    let rules = state
        .rules
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let Some(rule) = rules.get(&body.rule) else {
        let known: Vec<&str> = rules.rules.iter().map(|r| r.name.as_str()).collect();
        return Err(invalid(format!(
            "rule: no rule named {:?} is loaded (known: {})",
            body.rule,
            known.join(", ")
        )));
    };
    let mut problems = match synthetic_labels(&rules, rule, body.service.as_deref(), &body.labels) {
        Ok(_) => Vec::new(),
        Err(p) => p,
    };
    if body.break_with.is_some() && !(body.drill && body.live) {
        problems.push(
            "break: only a live drill breaks its target (\"drill\": true, \"live\": true)".into(),
        );
    }
    if body.live && !body.drill {
        problems.push("live: a manual run is always live; \"live\" is for drills".into());
    }
    let labels = synthetic_labels(&rules, rule, body.service.as_deref(), &body.labels).ok();
    if let (Some(b), Some(labels)) = (body.break_with, &labels) {
        if !matches!(rule.resolve_target(labels), Ok(TargetRef::Service(_))) {
            problems.push(format!(
                "break: rule {} has no compose service as its target to break by {b}",
                rule.name
            ));
        }
    }
    let Some(labels) = labels.filter(|_| problems.is_empty()) else {
        return Err(invalid(problems.join("; ")));
    };
    let origin = if body.drill {
        Origin::Drill
    } else {
        Origin::Manual
    };
    let started = Started {
        origin,
        by: body
            .by
            .filter(|b| !b.trim().is_empty())
            .unwrap_or_else(|| "api".into()),
        dry_run: body.drill && !body.live,
        break_with: body.break_with,
    };
    // The alert as Alertmanager would send it, so that the stored body reads like any other.
    let now = state.clock.now();
    let fingerprint = Fingerprint::of_labels(&labels);
    let summary = match origin {
        Origin::Drill => format!("DRILL of rule {} started by {}", rule.name, started.by),
        _ => format!("rule {} started by hand by {}", rule.name, started.by),
    };
    let message = json!({
        "version": crate::alert::SUPPORTED_VERSION,
        "groupKey": format!("remediator/{origin}:{}", rule.name),
        "status": "firing",
        "receiver": "remediator",
        "groupLabels": {},
        "commonLabels": labels,
        "commonAnnotations": {},
        "externalURL": "",
        "alerts": [{
            "status": "firing",
            "labels": labels,
            "annotations": { "summary": summary },
            "startsAt": now.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "",
            "fingerprint": fingerprint.as_str(),
        }],
    });
    let raw = serde_json::to_vec(&message).map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let notification = parse_webhook(&raw).map_err(|e| invalid(e.to_string()))?;
    let starts_at = notification.alerts[0].starts_at;
    let delivery = state
        .intake
        .submit_started(
            raw,
            notification,
            crate::telemetry::trace_context::current(),
            Some(started.clone()),
        )
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let store = state.store.clone();
    let fp = fingerprint.as_str().to_owned();
    let incident = web::block(move || store.incident_of(&fp, starts_at))
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    tracing::info!(
        rule = %rule.name,
        origin = %origin,
        by = %started.by,
        incident = ?incident,
        "runbook started by hand"
    );
    Ok(HttpResponse::Created().json(json!({
        "incident": incident,
        "delivery": delivery,
        "rule": rule.name,
        "origin": origin,
        "by": started.by,
        "dry_run": started.dry_run,
        "break": started.break_with,
        "labels": labels,
        "fingerprint": fingerprint,
    })))
}
