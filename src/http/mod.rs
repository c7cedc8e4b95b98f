//! The HTTP interface; actix-web is named only here.
//!
//! `POST /hooks/alertmanager` authenticates, bounds and validates the body, hands it to the
//! durable intake and answers 200 only once it is committed; remediation never happens inside
//! the request. Errors are JSON `{"error": ..., "detail": ...}`.

mod auth;
mod error;

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;

use crate::alert::{parse_webhook, AlertStatus};
use crate::engine::{Engine, SharedRules};
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::store::{IntakeHandle, Store};

pub use error::ApiError;

/// What every handler can reach.
pub struct AppState {
    pub settings: Settings,
    pub store: Arc<Store>,
    pub intake: IntakeHandle,
    pub metrics: Arc<Metrics>,
    pub rules: SharedRules,
    pub engine: Arc<Engine>,
    pub reload: Arc<dyn Fn() -> Result<usize, String> + Send + Sync>,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/hooks/alertmanager", web::post().to(alertmanager_hook))
        .route("/api/v1/incidents", web::get().to(list_incidents))
        .route("/api/v1/incidents/{id}", web::get().to(get_incident))
        .route("/-/healthy", web::get().to(healthy))
        .route("/-/ready", web::get().to(ready))
        .route("/-/reload", web::post().to(reload))
        .route("/metrics", web::get().to(metrics))
        .default_service(web::to(not_found));
}

async fn alertmanager_hook(
    req: HttpRequest,
    mut payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let result = async {
        auth::check_webhook(&req, &state.settings.webhook)?;
        let limit = state.settings.webhook.max_body_bytes;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(ApiError::TooLarge(limit));
        }
        let mut body = Vec::with_capacity(declared.unwrap_or(4096).min(limit));
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::BadRequest("could not read the request body".into(), e.to_string())
            })?;
            if body.len() + chunk.len() > limit {
                return Err(ApiError::TooLarge(limit));
            }
            body.extend_from_slice(&chunk);
        }
        let notification = parse_webhook(&body).map_err(|e| {
            ApiError::BadRequest("invalid Alertmanager webhook payload".into(), e.to_string())
        })?;
        let id = state
            .intake
            .submit(body)
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        let firing = notification
            .alerts
            .iter()
            .filter(|a| a.status == AlertStatus::Firing)
            .count();
        let resolved = notification.alerts.len() - firing;
        state.metrics.alerts(firing as u64, resolved as u64);
        let alerts = notification.alerts.len();
        Ok(HttpResponse::Ok().json(json!({
            "status": "accepted",
            "delivery": id,
            "alerts": alerts,
        })))
    }
    .await;
    let code = match &result {
        Ok(r) => r.status().as_u16(),
        Err(e) => actix_web::ResponseError::status_code(e).as_u16(),
    };
    state.metrics.webhook(code);
    result
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
    limit: Option<usize>,
}

async fn list_incidents(
    req: HttpRequest,
    q: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    auth::check_api(&req, &state.settings.api)?;
    let filter = match q.state.as_deref() {
        None | Some("") | Some("all") => None,
        Some(s @ ("open" | "resolved")) => Some(s),
        Some(other) => {
            return Err(ApiError::BadRequest(
                "invalid state filter".into(),
                format!("state={other:?}; use open, resolved or all"),
            ))
        }
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let store = state.store.clone();
    let filter = filter.map(str::to_string);
    let incidents = web::block(move || store.list_incidents(filter.as_deref(), limit))
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(HttpResponse::Ok().json(json!({ "incidents": incidents })))
}

async fn get_incident(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    auth::check_api(&req, &state.settings.api)?;
    let id: i64 = path.parse().map_err(|_| {
        ApiError::BadRequest(
            "invalid incident id".into(),
            format!("{:?} is not a number", path.as_str()),
        )
    })?;
    let store = state.store.clone();
    let found = web::block(move || -> Result<_, crate::store::StoreError> {
        let Some(inc) = store.incident(id)? else {
            return Ok(None);
        };
        Ok(Some((
            inc,
            store.decisions(id)?,
            store.steps(id)?,
            store.messages(id)?,
        )))
    })
    .await
    .map_err(|e| ApiError::Unavailable(e.to_string()))?
    .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let Some((inc, decisions, steps, messages)) = found else {
        return Err(ApiError::NotFound(format!("no incident {id}")));
    };
    let mut v = serde_json::to_value(inc).map_err(|e| ApiError::Unavailable(e.to_string()))?;
    v["decisions"] = json!(decisions);
    v["steps"] = json!(steps);
    v["messages"] = json!(messages);
    Ok(HttpResponse::Ok().json(v))
}

async fn healthy() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "healthy" }))
}

async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let store = state.store.clone();
    let store_ok = web::block(move || store.ping())
        .await
        .map(|r| r.map_err(|e| e.to_string()));
    let store_check = match store_ok {
        Ok(Ok(())) => Ok("ok".to_string()),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(e.to_string()),
    };
    let rules = state
        .rules
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .rules
        .len();
    let ready = store_check.is_ok();
    let body = json!({
        "ready": ready,
        "checks": {
            "store": store_check.unwrap_or_else(|e| format!("failing: {e}")),
            "rules": format!("{rules} rules loaded"),
        }
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn reload(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    auth::check_api(&req, &state.settings.api)?;
    let reload = state.reload.clone();
    match web::block(move || reload())
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
    {
        Ok(n) => Ok(HttpResponse::Ok().json(json!({ "status": "reloaded", "rules": n }))),
        Err(errors) => Err(ApiError::BadRequest(
            "the new rules are invalid; the previous rules stay in force".into(),
            errors,
        )),
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let store = state.store.clone();
    if let Ok(Ok((intake, outbox))) = web::block(move || store.backlog()).await {
        state.metrics.intake_backlog.set(intake);
        state.metrics.outbox_depth.set(outbox);
    }
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(state.metrics.render())
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}
