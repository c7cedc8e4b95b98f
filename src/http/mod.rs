//! The HTTP interface; actix-web is named only here.
//!
//! `POST /hooks/alertmanager` authenticates, bounds and validates the body, hands it to the
//! durable intake and answers 200 only once it is committed; remediation never happens inside
//! the request. Errors are JSON `{"error": ..., "detail": ...}`.
//!
//! `/api/v1/pauses` sets, lists and resumes pauses ([`pauses`]); `POST /api/v1/runs` starts
//! a runbook by hand or a drill ([`runs`]).
//!
//! `GET /api/v1/incidents/{id}/timeline`, `GET /incidents` and `GET /incidents/{id}`: the
//! post-mortem's timeline as JSON and as web pages ([`pages`]).
//!
//! `POST /hooks/slack/interactions` takes the root's buttons (Acknowledge, Silence 1h, Pause
//! automation 1h); [`slack`] verifies Slack's signature over the raw body and reads the
//! payload, [`buttons`] carries a press out.

mod approvals;
mod auth;
pub mod buttons;
mod error;
mod fleet;
mod pages;
mod pauses;
mod runs;
pub mod slack;

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tracing::Instrument;

use crate::alert::{parse_webhook, AlertStatus};
use crate::domain::{Button, IncidentState};
use crate::engine::{Engine, SharedRules};
use crate::metrics::Metrics;
use crate::settings::Settings;
use crate::store::{IntakeHandle, PauseListing, Store};
use crate::telemetry::events::{DeliveryStored, InternalEvent, WebhookAnswered};
use crate::telemetry::{spans, trace_context};

pub use error::ApiError;

/// What every handler can reach.
pub struct AppState {
    pub settings: Settings,
    pub store: Arc<Store>,
    pub intake: IntakeHandle,
    pub metrics: Arc<Metrics>,
    pub rules: SharedRules,
    pub engine: Arc<Engine>,
    pub deliverer: Arc<crate::notify::outbox::Deliverer>,
    pub reload: Arc<dyn Fn() -> Result<usize, String> + Send + Sync>,
    /// The service's one clock (Slack's signature window is checked against it).
    pub clock: Arc<dyn crate::domain::Clock>,
    /// The Alertmanager client when `alertmanager.urls` is set (`/-/ready` shows its last
    /// check; the Slack "Silence 1h" button makes silences with it).
    pub alertmanager: Option<Arc<crate::alertmanager::AlertmanagerClient>>,
    /// What the root's Silence and Pause buttons act through.
    pub buttons: buttons::Buttons,
    /// The fleet history when `postgres.url` is set (`?scope=fleet`, `/-/ready`).
    pub history: Option<Arc<crate::history::History>>,
}

/// The running HTTP server: await it to serve until SIGINT/SIGTERM.
pub type Server = actix_web::dev::Server;

/// Serves the API on a bound listener (port 0 in tests) until stopped.
pub fn serve(listener: std::net::TcpListener, state: AppState) -> std::io::Result<Server> {
    let state = web::Data::new(state);
    Ok(actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(state.clone())
            .configure(configure)
    })
    .listen(listener)?
    .shutdown_timeout(10)
    .run())
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/hooks/alertmanager", web::post().to(alertmanager_hook))
        .route("/api/v1/incidents", web::get().to(list_incidents))
        .route("/api/v1/incidents/{id}", web::get().to(get_incident))
        .route("/api/v1/incidents/{id}/ack", web::post().to(ack_incident))
        .route(
            "/hooks/slack/interactions",
            web::post().to(slack_interactions),
        )
        .configure(pauses::configure)
        .configure(pages::configure)
        .configure(runs::configure)
        .configure(approvals::configure)
        .route("/-/healthy", web::get().to(healthy))
        .route("/-/ready", web::get().to(ready))
        .route("/-/reload", web::post().to(reload))
        .route("/metrics", web::get().to(metrics))
        .default_service(web::to(not_found));
}

fn incident_id(path: &str) -> Result<i64, ApiError> {
    path.parse().map_err(|_| {
        ApiError::BadRequest(
            "invalid incident id".into(),
            format!("{path:?} is not a number"),
        )
    })
}

/// Reads a request body of at most `limit` bytes: refused (413) from its Content-Length before
/// reading, and again while streaming when it is longer than it said.
pub async fn read_body(
    req: &HttpRequest,
    payload: &mut web::Payload,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
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
    Ok(body)
}

async fn alertmanager_hook(
    req: HttpRequest,
    mut payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // Continues the sender's trace when it sent a W3C `traceparent`.
    let span = spans::delivery(
        req.headers()
            .get(trace_context::TRACEPARENT)
            .and_then(|v| v.to_str().ok()),
    );
    let result = async {
        auth::check_webhook(&req, &state.settings.webhook)?;
        let body = read_body(&req, &mut payload, state.settings.webhook.max_body_bytes).await?;
        let notification = parse_webhook(&body).map_err(|e| {
            ApiError::BadRequest("invalid Alertmanager webhook payload".into(), e.to_string())
        })?;
        let alerts = notification.alerts.len();
        let firing = notification
            .alerts
            .iter()
            .filter(|a| a.status == AlertStatus::Firing)
            .count();
        let id = state
            .intake
            .submit(body, notification, trace_context::current())
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
        DeliveryStored {
            delivery_id: id,
            firing,
            resolved: alerts - firing,
        }
        .emit(&state.metrics);
        Ok(HttpResponse::Ok().json(json!({
            "status": "accepted",
            "delivery": id,
            "alerts": alerts,
        })))
    }
    .instrument(span.clone())
    .await;
    let code = match &result {
        Ok(r) => r.status().as_u16(),
        Err(e) => actix_web::ResponseError::status_code(e).as_u16(),
    };
    span.in_scope(|| WebhookAnswered { code }.emit(&state.metrics));
    result
}

/// Incidents per page when the request does not say.
const DEFAULT_PAGE: usize = 100;
/// The most incidents one page holds; `next` continues past it.
pub use crate::store::MAX_PAGE;

/// `GET /api/v1/incidents`' parameters, checked: every bad value is a 400 naming it. `C` is
/// the page cursor: an incident id here, the fleet history's own text cursor in `fleet.rs`.
struct ListQuery<C = i64> {
    state: Option<IncidentState>,
    before: Option<C>,
    limit: usize,
}

impl ListQuery {
    fn parse(query: &str) -> Result<ListQuery, ApiError> {
        ListQuery::parse_with(
            query,
            |value| value.parse().ok().filter(|id| *id > 0),
            "use an incident id, as a page's `next` gives it",
        )
    }
}

impl<C> ListQuery<C> {
    /// Parsed by hand rather than with `web::Query`, whose rejections are plain text;
    /// `cursor` reads `before` (`None`: a 400 that says `cursor_hint`).
    fn parse_with(
        query: &str,
        cursor: impl Fn(&str) -> Option<C>,
        cursor_hint: &str,
    ) -> Result<ListQuery<C>, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|e| ApiError::BadRequest("invalid query string".into(), e.to_string()))?;
        let mut q = ListQuery {
            state: None,
            before: None,
            limit: DEFAULT_PAGE,
        };
        for (name, value) in &pairs {
            match name.as_str() {
                "state" => {
                    q.state = match value.as_str() {
                        "" | "all" => None,
                        other => Some(other.parse::<IncidentState>().map_err(|_| {
                            ApiError::BadRequest(
                                "invalid state filter".into(),
                                format!("state={other:?}; use open, resolved or all"),
                            )
                        })?),
                    }
                }
                "limit" => {
                    q.limit = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_PAGE).contains(n))
                        .ok_or_else(|| {
                            ApiError::BadRequest(
                                "invalid limit".into(),
                                format!(
                                    "limit={value:?}; use a whole number from 1 to {MAX_PAGE} \
                                     (follow `next` for more)"
                                ),
                            )
                        })?
                }
                "before" => {
                    q.before = Some(cursor(value).ok_or_else(|| {
                        ApiError::BadRequest(
                            "invalid before cursor".into(),
                            format!("before={value:?}; {cursor_hint}"),
                        )
                    })?)
                }
                _ => {}
            }
        }
        Ok(q)
    }
}

/// One page, newest first, and `next`: the `before` of the following page, null on the last.
async fn list_incidents(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    auth::check_api(&req, &state.settings.api)?;
    if fleet::wants_fleet(req.query_string())? {
        return fleet::list(&state, req.query_string()).await;
    }
    let q = ListQuery::parse(req.query_string())?;
    let store = state.store.clone();
    let page = web::block(move || store.list_incidents(q.state, q.before, q.limit))
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(HttpResponse::Ok().json(page))
}

async fn get_incident(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    auth::check_api(&req, &state.settings.api)?;
    let id = incident_id(&path)?;
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
            store.approvals(id)?,
        )))
    })
    .await
    .map_err(|e| ApiError::Unavailable(e.to_string()))?
    .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let Some((inc, decisions, steps, messages, approvals)) = found else {
        return Err(ApiError::NotFound(format!("no incident {id}")));
    };
    let mut v = serde_json::to_value(inc).map_err(|e| ApiError::Unavailable(e.to_string()))?;
    v["decisions"] = json!(decisions);
    v["steps"] = json!(steps);
    v["messages"] = json!(messages);
    v["approvals"] = json!(approvals);
    Ok(HttpResponse::Ok().json(v))
}

async fn healthy() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "healthy" }))
}

/// Quarantined rows listed on `/-/ready` (the latest; `count` has them all).
const QUARANTINE_SHOWN: usize = 20;

/// Readiness: the store answers. Also shown, never failing it: the rules loaded, the
/// maintenance windows (`{"loaded": n, "in_force": [names]}`), each sink's state, the Slack
/// channel's ID (or why a name did not resolve), the held notifications, Alertmanager's
/// peers and what the last check before a destructive step found, and the rows quarantined
/// because they do not read
/// (`{"count": n, "latest": [{"id", "source_table", "row_id", "error", "at", "incident_id",
/// "queue_id"}]}`), and the pauses in force (`[{"id", "scope", "by", "until", "reason"}]`).
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
    let (rules, windows) = {
        let set = state.rules.read().unwrap_or_else(|p| p.into_inner());
        let now = state.clock.now();
        let in_force: Vec<&str> = set
            .windows
            .iter()
            .filter(|w| w.in_force(now))
            .map(|w| w.name.as_str())
            .collect();
        (
            set.rules.len(),
            json!({ "loaded": set.windows.len(), "in_force": in_force }),
        )
    };
    let ready = store_check.is_ok();
    let sinks = state.deliverer.status();
    let store = state.store.clone();
    let held = web::block(move || store.outbox_blocked())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let store = state.store.clone();
    let quarantined = match web::block(move || store.quarantined(QUARANTINE_SHOWN)).await {
        Ok(Ok(q)) => json!(q),
        Ok(Err(e)) => json!(format!("failing: {e}")),
        Err(e) => json!(format!("failing: {e}")),
    };
    let (store, now) = (state.store.clone(), state.clock.now());
    let pauses = match web::block(move || store.pauses(PauseListing::Active, now)).await {
        Ok(Ok(p)) => json!(p
            .iter()
            .map(|p| json!({
                "id": p.id, "scope": p.scope, "by": p.by,
                "until": crate::store::ts(p.until), "reason": p.reason,
            }))
            .collect::<Vec<_>>()),
        Ok(Err(e)) => json!(format!("failing: {e}")),
        Err(e) => json!(format!("failing: {e}")),
    };
    // Notification trouble is reported, not made a readiness failure: Alertmanager's
    // webhooks must keep being taken while Slack is down. Nor are quarantined rows: they
    // were set aside so that everything else goes on. Nor are pauses: people set them. Nor is
    // an unreachable Alertmanager: alertmanager.on_unreachable says what the runbooks do then.
    let mut body = json!({
        "ready": ready,
        "checks": {
            "store": store_check.unwrap_or_else(|e| format!("failing: {e}")),
            "rules": format!("{rules} rules loaded"),
            "maintenance_windows": windows,
            "slack": sinks.slack,
            "slack_channel": sinks.slack_channel,
            "pagerduty": sinks.pagerduty,
            "held_notifications": held,
            "quarantined": quarantined,
            "pauses": pauses,
            "alertmanager": state.alertmanager.as_ref().map_or_else(
                || "not configured (alertmanager.urls): silences are not checked".to_owned(),
                |am| am.status(),
            ),
        }
    });
    // The deploy watch too: while Docker's events are lost, deploys are not seen, but
    // remediation goes on.
    if let Some(deploys) = state.engine.deploy_status() {
        body["checks"]["docker_events"] = json!(deploys);
    }
    // The fleet history: behind or unreachable is said, never a readiness failure (Postgres
    // never holds the intake, the engine or Slack).
    body["checks"]["history"] = match &state.history {
        Some(h) => json!(h.status()),
        None => json!("not configured (postgres.url): no fleet history is kept"),
    };
    // Degraded, never unready: without Redis new firings follow coordination.on_redis_down.
    if let Some(coordination) = state.engine.coordination_status() {
        body["checks"]["coordination"] = json!(coordination);
    }
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

#[derive(Deserialize, Default)]
struct AckBody {
    by: Option<String>,
}

async fn ack_incident(
    req: HttpRequest,
    path: web::Path<String>,
    body: Option<web::Json<AckBody>>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // A change of state: refused unless the API is protected by a token.
    if state.settings.api.token.is_none() {
        return Err(ApiError::Forbidden(
            "acknowledging over the API needs api.token (REMEDIATOR_API__TOKEN) to be set".into(),
        ));
    }
    auth::check_api(&req, &state.settings.api)?;
    let id = incident_id(&path)?;
    let by = body
        .and_then(|b| b.into_inner().by)
        .filter(|b| !b.trim().is_empty())
        .unwrap_or_else(|| "api".into());
    acknowledge(&state, id, by, None).await
}

async fn acknowledge(
    state: &web::Data<AppState>,
    id: i64,
    by: String,
    slack_user: Option<String>,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine.clone();
    let who = by.clone();
    let outcome = web::block(move || engine.acknowledge(id, &who, slack_user.as_deref()))
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    match outcome {
        None => Err(ApiError::NotFound(format!("no incident {id}"))),
        Some(first) => Ok(HttpResponse::Ok().json(json!({
            "incident": id,
            "acknowledged_by": by,
            "already_acknowledged": !first,
        }))),
    }
}

/// Slack's interactivity requests: the root's buttons. Verified with the signing secret (v0
/// HMAC over the raw body, 5-minute window); anything unverified is 401 and changes nothing.
/// A press is answered at once with 200; what it did is told in the thread.
async fn slack_interactions(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    use self::slack::{parse_interaction, verify_signature, Interaction};
    use secrecy::ExposeSecret;
    let Some(secret) = &state.settings.slack.signing_secret else {
        return Err(ApiError::Unauthorized(
            "slack.signing_secret is not set, so Slack requests cannot be verified",
        ));
    };
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    verify_signature(
        secret.expose_secret().as_bytes(),
        header("X-Slack-Request-Timestamp"),
        &body,
        header("X-Slack-Signature"),
        state.clock.now().timestamp(),
    )
    .map_err(|e| {
        tracing::warn!(error = %e, "refused a Slack request");
        ApiError::Unauthorized("the Slack signature does not verify")
    })?;
    let interaction = parse_interaction(&body);
    if let Ok(
        Interaction::Pressed {
            incident_id,
            thread: Some(thread),
            response_url,
            ..
        }
        | Interaction::Answered {
            at:
                crate::domain::ApprovalRef {
                    incident: incident_id,
                    ..
                },
            thread: Some(thread),
            response_url,
            ..
        },
    ) = &interaction
    {
        if let Some(why) = elsewhere(&state, *incident_id, thread).await? {
            tracing::warn!(incident = incident_id, thread = %thread, "{why}");
            if let (Some(url), Some(client)) =
                (response_url.clone(), state.deliverer.slack().cloned())
            {
                tokio::spawn(async move {
                    if let Err(e) = client.respond_ephemeral(&url, &why).await {
                        tracing::warn!(error = %e, "could not answer the Slack user through response_url");
                    }
                });
            }
            return Ok(HttpResponse::Ok().finish());
        }
    }
    match interaction {
        Ok(Interaction::Pressed {
            button,
            incident_id,
            user_id,
            user_name,
            ..
        }) => {
            let by = if user_name.is_empty() {
                user_id.clone()
            } else {
                user_name
            };
            let who = buttons::Presser {
                name: by.clone(),
                user_id: user_id.clone(),
            };
            match button {
                Button::Acknowledge => acknowledge(&state, incident_id, by, Some(user_id)).await,
                Button::Silence => buttons::silence(&state, incident_id, who)
                    .await
                    .map(|()| HttpResponse::Ok().finish()),
                Button::Pause => buttons::pause(&state, incident_id, who)
                    .await
                    .map(|()| HttpResponse::Ok().finish()),
            }
        }
        Ok(Interaction::Answered {
            verdict,
            at,
            choice,
            user_id,
            user_name,
            response_url,
            ..
        }) => {
            let answer = approvals::SlackAnswer {
                approve: verdict == crate::domain::ApprovalVerdict::Approved,
                at,
                choice,
                user_id,
                user_name,
                response_url,
            };
            approvals::from_slack(&state, answer).await
        }
        Ok(_) => Ok(HttpResponse::Ok().finish()),
        Err(e) => Err(ApiError::BadRequest(
            "not a Slack interaction payload".into(),
            e.to_string(),
        )),
    }
}

/// Why a press on a message of the thread `thread` must not act on incident `id` here: this
/// replica's incident of that number has another thread, or none. In fleet mode Slack sends
/// every press to the one interactivity URL, so it can reach a replica that did not post the
/// message, where the button's number names another incident (or nothing).
async fn elsewhere(
    state: &web::Data<AppState>,
    id: i64,
    thread: &str,
) -> Result<Option<String>, ApiError> {
    let store = state.store.clone();
    let inc = web::block(move || store.incident_without_annotations(id))
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let ours = inc.as_ref().and_then(|i| i.slack_ts.as_deref());
    if ours == Some(thread) {
        return Ok(None);
    }
    let replica = state.settings.replica.id.as_str();
    Ok(Some(format!(
        "Nothing was done: this message is not in a thread remediator replica `{replica}` posted \
         (its incident {id} {}). With several replicas, Slack sends every press to one of them; \
         answer through the API of the replica that posted the thread \
         (`remediator incidents --fleet` shows which one acted).",
        if inc.is_some() {
            "has another thread"
        } else {
            "does not exist"
        }
    )))
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let store = state.store.clone();
    if let Ok(Ok(backlog)) = web::block(move || store.backlog()).await {
        state.metrics.intake_backlog.set(backlog.intake);
        state.metrics.engine_queue.set(backlog.engine);
        state.metrics.outbox_depth.set(backlog.outbox);
    }
    // Counted now: a pause also ends by itself, with no event to count it down.
    let (store, now) = (state.store.clone(), state.clock.now());
    if let Ok(Ok(n)) = web::block(move || store.active_pauses(now)).await {
        state.metrics.pauses_active.set(n);
    }
    if state.history.is_some() {
        let store = state.store.clone();
        if let Ok(Ok(n)) = web::block(move || store.ship_backlog()).await {
            state.metrics.history_backlog.set(n);
        }
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
