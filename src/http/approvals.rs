//! `POST /api/v1/incidents/{id}/approve` and `/reject`: answering a runbook's waiting
//! `approve` step. A change of state: refused unless `api.token` is set. A choice not offered
//! is a 400 naming the choices; nothing waiting is a 409.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{auth, incident_id, ApiError, AppState};
use crate::engine::Answered;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/api/v1/incidents/{id}/approve",
        web::post().to(|r, p, b, s| answer(r, p, b, s, true)),
    )
    .route(
        "/api/v1/incidents/{id}/reject",
        web::post().to(|r, p, b, s| answer(r, p, b, s, false)),
    );
}

/// The body: who answers (required) and, where choices are offered, which one.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AnswerBody {
    by: Option<String>,
    choice: Option<String>,
}

async fn answer(
    req: HttpRequest,
    path: web::Path<String>,
    body: Option<web::Json<AnswerBody>>,
    state: web::Data<AppState>,
    approve: bool,
) -> Result<HttpResponse, ApiError> {
    if state.settings.api.token.is_none() {
        return Err(ApiError::Forbidden(
            "answering an approval over the API needs api.token (REMEDIATOR_API__TOKEN) to be set"
                .into(),
        ));
    }
    auth::check_api(&req, &state.settings.api)?;
    let id = incident_id(&path)?;
    let body = body.map(web::Json::into_inner).unwrap_or_default();
    let Some(by) = body.by.filter(|b| !b.trim().is_empty()) else {
        return Err(ApiError::BadRequest(
            "by is required".into(),
            "by: name who answers, e.g. {\"by\": \"alice\"}".into(),
        ));
    };
    let engine = state.engine.clone();
    let (who, choice) = (by.clone(), body.choice.clone());
    let outcome =
        web::block(move || engine.answer_approval(id, approve, &who, None, choice.as_deref()))
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    match outcome {
        Answered::NoIncident => Err(ApiError::NotFound(format!("no incident {id}"))),
        Answered::NotWaiting => Ok(HttpResponse::Conflict().json(json!({
            "error": "not waiting",
            "detail": format!("incident {id} has no approval waiting for an answer (it was answered, timed out, or never asked)"),
        }))),
        Answered::NotOffered { offered } => Err(ApiError::BadRequest(
            "choice not offered".into(),
            if offered.is_empty() {
                "choice: this approval offers no choices; leave it out".into()
            } else {
                format!("choice: give one of {}", offered.join(", "))
            },
        )),
        Answered::Done(a) => Ok(HttpResponse::Ok().json(json!({
            "incident": id,
            "approval": *a,
        }))),
    }
}
