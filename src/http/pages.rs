//! The incident timeline, as JSON and as web pages.
//!
//! `GET /api/v1/incidents/{id}/timeline` is the post-mortem's timeline ([`crate::report`])
//! as JSON, what `remediator postmortem` renders. `GET /incidents` lists the incidents and
//! `GET /incidents/{id}` shows one: its summary, its steps as bars on a time axis with the
//! RTO line (inline SVG), the timeline, what automation did and what people did.
//!
//! The pages are rendered here, on the server, by maud, which escapes every value it is
//! given (labels are the alert sender's text; a `<script>` label reads as text): nothing is
//! written with `PreEscaped` but the constant stylesheet. They load nothing else (inline
//! CSS, no scripts, no fonts or images from elsewhere) and say so in their
//! Content-Security-Policy, so a value that escaped the escaping still could not run.
//!
//! Protected like the API: with `api.token` set, a bearer header, or for a browser
//! `?token=<api.token>` once, which answers with a redirect to the same page without it and
//! sets an `HttpOnly`, `SameSite=Strict` cookie for `/incidents` (see `auth::check_page`).
//! The token is never written into a page or a link.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::auth::{self, PageAccess};
use super::{incident_id, ApiError, AppState, ListQuery};
use crate::report::{seconds_text, Actor, Event, Record, Timeline};
use crate::store::{IncidentPage, StoreError};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/api/v1/incidents/{id}/timeline",
        web::get().to(timeline_json),
    )
    .route("/incidents", web::get().to(list_page))
    .route("/incidents/{id}", web::get().to(incident_page));
}

/// The incident's timeline as of the service's clock.
async fn load(state: &web::Data<AppState>, id: i64) -> Result<Timeline, ApiError> {
    let store = state.store.clone();
    let now = state.clock.now();
    let found = web::block(move || -> Result<Option<Timeline>, StoreError> {
        let Some(incident) = store.incident(id)? else {
            return Ok(None);
        };
        let decisions = store.decisions(id)?;
        let steps = store.steps(id)?;
        let run = store.run_of(id)?;
        let approvals = store.approvals(id)?;
        Ok(Some(Timeline::build(
            &Record {
                incident: &incident,
                decisions: &decisions,
                steps: &steps,
                run: run.as_ref(),
                approvals: &approvals,
            },
            now,
        )))
    })
    .await
    .map_err(|e| ApiError::Unavailable(e.to_string()))?
    .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    found.ok_or_else(|| ApiError::NotFound(format!("no incident {id}")))
}

async fn timeline_json(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    auth::check_api(&req, &state.settings.api)?;
    let id = incident_id(&path)?;
    Ok(HttpResponse::Ok().json(load(&state, id).await?))
}

/// The query's pairs; a query that does not parse is a 400 naming it.
fn query_pairs(req: &HttpRequest) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str(req.query_string())
        .map_err(|e| ApiError::BadRequest("invalid query string".into(), e.to_string()))
}

/// Checks the page's access; `Some(response)` when it must be a redirect that sets the
/// cookie (to the same path and query, less the token).
fn access(
    req: &HttpRequest,
    pairs: &[(String, String)],
    state: &AppState,
) -> Result<Option<HttpResponse>, ApiError> {
    match auth::check_page(req, pairs, &state.settings.api)? {
        PageAccess::Granted => Ok(None),
        PageAccess::FromQuery => {
            let rest: Vec<&(String, String)> = pairs.iter().filter(|(k, _)| k != "token").collect();
            let query = serde_urlencoded::to_string(&rest).unwrap_or_default();
            let location = if query.is_empty() {
                req.path().to_owned()
            } else {
                format!("{}?{query}", req.path())
            };
            let mut resp = HttpResponse::SeeOther();
            resp.insert_header((header::LOCATION, location));
            resp.insert_header((header::CACHE_CONTROL, "no-store"));
            resp.insert_header((header::REFERRER_POLICY, "no-referrer"));
            if let Some(cookie) = auth::page_cookie(&state.settings.api) {
                resp.insert_header((header::SET_COOKIE, cookie));
            }
            Ok(Some(resp.finish()))
        }
    }
}

/// What every page sends with it: nothing may load or run but its own inline style.
fn html_response(status: StatusCode, body: Markup) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; \
             form-action 'none'; frame-ancestors 'none'",
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body.into_string())
}

/// An error as a page (a browser shows it), with the API's status and words.
fn error_page(e: &ApiError) -> HttpResponse {
    let (title, detail) = match e {
        ApiError::Unauthorized(why) => ("unauthorized".to_owned(), (*why).to_owned()),
        ApiError::BadRequest(what, detail) => (what.clone(), detail.clone()),
        ApiError::NotFound(d) => ("not found".to_owned(), d.clone()),
        ApiError::Forbidden(d) => ("forbidden".to_owned(), d.clone()),
        ApiError::TooLarge(_) => ("request too large".to_owned(), String::new()),
        ApiError::Unavailable(d) => {
            tracing::error!(detail = %d, "answering 503");
            (
                "service unavailable".to_owned(),
                "the store could not answer; retry later".to_owned(),
            )
        }
        ApiError::HistoryUnavailable(d) => ("fleet history unavailable".to_owned(), d.clone()),
    };
    let mut resp = html_response(
        e.status_code(),
        page(
            &title,
            html! {
                h1 { (title) }
                p { (detail) }
                p { a href="/incidents" { "All incidents" } }
            },
        ),
    );
    if let ApiError::Unauthorized(_) = e {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"remediator\""),
        );
    }
    resp
}

const CSS: &str = "
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5rem auto; max-width: 70rem; padding: 0 1rem; color: #1d2330; }
h1 { font-size: 1.5rem; margin: 0 0 .75rem; } h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
table { border-collapse: collapse; width: 100%; } th, td { text-align: left; padding: .25rem .5rem; border-bottom: 1px solid #e1e4ea; vertical-align: top; }
th { background: #f4f5f8; font-weight: 600; } td.num { text-align: right; white-space: nowrap; } td.when { white-space: nowrap; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; } dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
code { background: #f4f5f8; padding: 0 .25rem; border-radius: 3px; overflow-wrap: anywhere; }
.verdict { display: inline-block; padding: .1rem .5rem; border-radius: 3px; font-weight: 600; }
.verdict-within, .verdict-open { background: #dff3e4; color: #17602b; } .verdict-missed, .verdict-open_missed { background: #fbe2e2; color: #8a1c1c; } .verdict-no_rto { background: #eceef2; }
.who-people { color: #7a3e00; font-weight: 600; } .who-alertmanager { color: #3b4a9c; }
svg.chart { width: 100%; height: auto; border: 1px solid #e1e4ea; background: #fff; }
svg.chart text { font: 12px system-ui, sans-serif; fill: #1d2330; }
svg.chart .tick { stroke: #e1e4ea; } svg.chart .rto { stroke: #c62828; stroke-width: 2; stroke-dasharray: 6 3; } svg.chart text.rto-label { fill: #c62828; font-weight: 600; }
svg.chart .resolved { stroke: #2e7d32; stroke-width: 2; } svg.chart text.resolved-label { fill: #2e7d32; }
svg.chart .bar { fill: #4a6fd1; } svg.chart .outcome-failed, svg.chart .outcome-timed_out, svg.chart .outcome-interrupted { fill: #d14a4a; } svg.chart .outcome-running { fill: #d1a84a; }
a { color: #2b54c4; }
";

fn page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // No favicon request either: everything the page needs is in it.
                link rel="icon" href="data:,";
                title { (title) " · remediator" }
                style { (PreEscaped(CSS)) }
            }
            body { (body) }
        }
    }
}

async fn list_page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    match list_page_inner(&req, &state).await {
        Ok(resp) => resp,
        Err(e) => error_page(&e),
    }
}

async fn list_page_inner(
    req: &HttpRequest,
    state: &web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let pairs = query_pairs(req)?;
    if let Some(redirect) = access(req, &pairs, state)? {
        return Ok(redirect);
    }
    let q = ListQuery::parse(req.query_string())?;
    let store = state.store.clone();
    let limit = q.limit.min(super::DEFAULT_PAGE);
    let page_of = web::block(move || store.list_incidents(q.state, q.before, limit))
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(html_response(StatusCode::OK, list_markup(&page_of)))
}

fn list_markup(p: &IncidentPage) -> Markup {
    page(
        "Incidents",
        html! {
            h1 { "Incidents" }
            p { a href="/incidents?state=open" { "open" } " · " a href="/incidents?state=resolved" { "resolved" } " · " a href="/incidents" { "all" } }
            table.incidents {
                thead { tr { th { "ID" } th { "Alert" } th { "State" } th { "Phase" } th { "Priority" } th { "Rule" } th { "Target" } th { "Fired" } th { "Time to recover" } } }
                tbody {
                    @for i in &p.incidents {
                        tr {
                            td.num { a href=(format!("/incidents/{}", i.id)) { (i.id) } }
                            td { a href=(format!("/incidents/{}", i.id)) { (i.alertname) } }
                            td { (i.state) }
                            td { (i.phase) }
                            td { (i.priority.map(|p| p.as_str()).unwrap_or("-")) }
                            td { (i.rule.as_deref().unwrap_or("-")) }
                            td { (i.target.as_deref().unwrap_or("-")) }
                            td.when { (i.starts_at.format("%Y-%m-%d %H:%M:%S UTC")) }
                            td { (i.time_to_recover().map(|d| crate::domain::notice::recovery_text(d, i.rto)).unwrap_or_else(|| "-".into())) }
                        }
                    }
                }
            }
            @if p.incidents.is_empty() { p { "No incidents." } }
            @if let Some(next) = p.next {
                p { a href=(format!("/incidents?before={next}")) { "Older incidents" } }
            }
        },
    )
}

async fn incident_page(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let result = async {
        let pairs = query_pairs(&req)?;
        if let Some(redirect) = access(&req, &pairs, &state)? {
            return Ok(redirect);
        }
        let id = incident_id(&path)?;
        let t = load(&state, id).await?;
        Ok(html_response(StatusCode::OK, incident_markup(&t)))
    }
    .await;
    result.unwrap_or_else(|e: ApiError| error_page(&e))
}

fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string()
}

fn offset(secs: f64) -> String {
    if secs < 0.0 {
        seconds_text(secs)
    } else {
        format!("+{}", seconds_text(secs))
    }
}

fn event_what(e: &Event) -> String {
    match e.duration_seconds {
        Some(d) => format!("{} ({})", e.what, seconds_text(d)),
        None => e.what.clone(),
    }
}

fn incident_markup(t: &Timeline) -> Markup {
    let s = &t.summary;
    let title = format!(
        "{}Incident {}: {}",
        if s.origin == crate::domain::Origin::Drill {
            "DRILL: "
        } else {
            ""
        },
        s.id,
        s.alertname
    );
    page(
        &title,
        html! {
            p { a href="/incidents" { "← All incidents" } }
            h1 { (title) }
            dl.facts {
                dt { "Labels" }
                dd { @for (k, v) in &s.labels { code { (k) "=" (v) } " " } }
                dt { "Rule" }
                dd {
                    (s.rule.as_deref().unwrap_or("none matched"))
                    @if let Some(p) = s.priority { ", " (p) }
                    @if let Some(o) = &s.owner { ", owner " (o) }
                }
                dt { "Target" } dd { (s.target.as_deref().unwrap_or("none")) }
                dt { "State" } dd { (s.state) ", phase " (s.phase) }
                dt { "Fired" } dd { (when(s.fired_at)) }
                dt { "Received" } dd { (when(s.received_at)) }
                dt { "Resolved" } dd { (s.resolved_at.map_or("not yet".to_string(), when)) }
                dt { "Time to recover" }
                dd { span class=(format!("verdict verdict-{}", t.recovery.verdict)) { (t.recovery.text) } }
            }
            h2 { "Steps" }
            (chart(t))
            h2 { "Timeline" }
            table.timeline {
                thead { tr { th { "Time" } th { "Since fired" } th { "Who" } th { "What" } th { "Detail" } } }
                tbody {
                    @for e in &t.events {
                        tr class=(format!("event event-{}", e.kind)) {
                            td.when { (when(e.at)) }
                            td.num { (offset(e.offset_seconds)) }
                            td class=(format!("who-{}", e.actor)) { (e.actor) }
                            td { (event_what(e)) }
                            td { (e.detail) }
                        }
                    }
                }
            }
            h2 { "What automation did" }
            (actor_list(t, Actor::Automation, "nothing"))
            h2 { "What people did" }
            (actor_list(t, Actor::People, "nothing recorded: no acknowledgement, button, approval or pause"))
        },
    )
}

fn actor_list(t: &Timeline, actor: Actor, none: &str) -> Markup {
    let events: Vec<&Event> = t.by(actor).collect();
    html! {
        @if events.is_empty() {
            p { (none) }
        } @else {
            ul class=(format!("actor-{actor}")) {
                @for e in events {
                    li { (offset(e.offset_seconds)) " " (event_what(e)) @if !e.detail.is_empty() { ": " (e.detail) } }
                }
            }
        }
    }
}

/// The chart's geometry: a label column, then the time axis.
const WIDTH: f64 = 960.0;
const LABELS: f64 = 190.0;
const RIGHT: f64 = 70.0;
const TOP: f64 = 28.0;
const ROW: f64 = 26.0;
const BAR: f64 = 16.0;

/// The steps as bars on a time axis from the alert firing, with the RTO line (and the
/// resolution, once resolved).
fn chart(t: &Timeline) -> Markup {
    let span = t.span_seconds();
    let plot = WIDTH - LABELS - RIGHT;
    let x = |secs: f64| LABELS + (secs.max(0.0) / span).min(1.0) * plot;
    let rows = t.steps.len().max(1) as f64;
    let height = TOP + rows * ROW + 12.0;
    let bottom = TOP + rows * ROW;
    let ticks: Vec<f64> = (0..=4).map(|i| span * f64::from(i) / 4.0).collect();
    let resolved = t
        .summary
        .resolved_at
        .map(|at| (at - t.summary.fired_at).num_milliseconds() as f64 / 1000.0);
    html! {
        svg.chart xmlns="http://www.w3.org/2000/svg" role="img"
            viewBox=(format!("0 0 {WIDTH} {height}"))
            aria-label=(format!("{} steps on a time axis of {} from the alert firing", t.steps.len(), seconds_text(span))) {
            @for tick in &ticks {
                line.tick x1=(x(*tick)) x2=(x(*tick)) y1=(TOP - 6.0) y2=(bottom) {}
                text.tick-label x=(x(*tick)) y=(TOP - 10.0) text-anchor="middle" { (offset(*tick)) }
            }
            @if t.steps.is_empty() {
                text x=(LABELS) y=(TOP + ROW * 0.65) { "no step ran" }
            }
            @for (i, s) in t.steps.iter().enumerate() {
                @let y = TOP + i as f64 * ROW + (ROW - BAR) / 2.0;
                @let name = match s.phase {
                    crate::domain::RunPhase::Main => format!("{}. {}", s.seq + 1, s.kind),
                    other => format!("{}. {} ({other})", s.seq + 1, s.kind),
                };
                g.step data-kind=(s.kind) data-outcome=(s.outcome) data-phase=(s.phase) {
                    text.step-name x=(LABELS - 8.0) y=(y + BAR - 4.0) text-anchor="end" { (name) }
                    rect class=(format!("bar outcome-{}", s.outcome))
                        x=(x(s.start_seconds)) y=(y)
                        width=(((x(s.start_seconds + s.duration_seconds) - x(s.start_seconds)).max(2.0)))
                        height=(BAR) {
                        title { (name) ": " (s.outcome) " in " (seconds_text(s.duration_seconds)) @if !s.detail.is_empty() { " (" (s.detail) ")" } }
                    }
                }
            }
            @if let Some(rto) = t.recovery.rto_seconds {
                line.rto x1=(x(rto)) x2=(x(rto)) y1=(TOP - 6.0) y2=(bottom + 6.0) {}
                text.rto-label x=(x(rto) + 4.0) y=(bottom + 4.0) { "RTO " (seconds_text(rto)) }
            }
            @if let Some(at) = resolved {
                line.resolved x1=(x(at)) x2=(x(at)) y1=(TOP) y2=(bottom) {}
                text.resolved-label x=(x(at) + 4.0) y=(TOP + 12.0) { "resolved" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{EventKind, Recovery, RtoVerdict, StepBar, Summary};

    fn timeline() -> Timeline {
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-25T22:07:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        Timeline {
            summary: Summary {
                id: 7,
                alertname: "<script>alert('name')</script>".into(),
                labels: [(
                    "evil".to_string(),
                    "<script>alert(1)</script>\"'&".to_string(),
                )]
                .into(),
                rule: Some("r".into()),
                priority: None,
                target: None,
                owner: Some("<b>owner</b>".into()),
                state: crate::domain::IncidentState::Open,
                phase: crate::domain::Phase::Remediating,
                fired_at: at,
                received_at: at,
                resolved_at: None,
                run_outcome: None,
                origin: crate::domain::Origin::Drill,
                started_by: None,
            },
            events: vec![Event {
                at,
                offset_seconds: 0.0,
                kind: EventKind::Decision,
                actor: Actor::Automation,
                what: "match: continue".into(),
                detail: "<img src=x onerror=alert(2)>".into(),
                duration_seconds: None,
            }],
            steps: vec![StepBar {
                phase: crate::domain::RunPhase::Main,
                seq: 0,
                kind: "exec".into(),
                outcome: crate::domain::StepOutcome::Ok,
                start_seconds: 1.0,
                duration_seconds: 2.0,
                detail: "</title><script>alert(3)</script>".into(),
            }],
            recovery: Recovery {
                rto_seconds: Some(60.0),
                time_to_recover_seconds: None,
                open_for_seconds: Some(3.0),
                runbook_seconds: None,
                verdict: RtoVerdict::Open,
                text: "still firing".into(),
            },
            as_of: at,
        }
    }

    #[test]
    fn every_value_on_the_page_is_escaped() {
        let html = incident_markup(&timeline()).into_string();
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;'&amp;"),
            "{html}"
        );
        assert!(
            html.contains("&lt;/title&gt;&lt;script&gt;alert(3)"),
            "{html}"
        );
    }

    #[test]
    fn the_chart_has_a_bar_per_step_and_the_rto_line() {
        let svg = chart(&timeline()).into_string();
        assert_eq!(svg.matches("<rect").count(), 1, "{svg}");
        assert_eq!(svg.matches("class=\"rto\"").count(), 1, "{svg}");
        assert!(svg.contains("RTO 1m"), "{svg}");
        assert!(svg.contains("1. exec"), "{svg}");
    }
}
