//! `POST /api/v1/incidents/{id}/approve` and `/reject`: answering a runbook's waiting
//! `approve` step. A change of state: refused unless `api.token` is set. A choice not offered
//! is a 400 naming the choices; nothing waiting is a 409.
//!
//! And the same answer from Slack ([`from_slack`]): Approve or Reject pressed on the step's
//! message (signed, checked in `mod.rs`), for the step its button names, by a Slack user the
//! asked contact's `slack_users` lists (when it lists any). Slack is answered at once with
//! 200; the user is told what came of it in an ephemeral message through the interaction's
//! `response_url`, and the thread and the message itself are updated through the outbox.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{auth, incident_id, ApiError, AppState};
use crate::domain::ApprovalRef;
use crate::engine::{Answered, Answerer};

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
        // (The API names no step and no Slack user: neither happens here.)
        Answered::Stale { waiting } => Ok(HttpResponse::Conflict().json(json!({
            "error": "not waiting",
            "detail": format!("the approval waiting is {waiting}"),
        }))),
        Answered::NotAllowed { who, .. } => Err(ApiError::Forbidden(format!(
            "only {who}'s slack_users may answer this approval"
        ))),
        Answered::Done(a) => Ok(HttpResponse::Ok().json(json!({
            "incident": id,
            "approval": *a,
        }))),
    }
}

/// Approve or Reject, as pressed in Slack.
pub(super) struct SlackAnswer {
    pub approve: bool,
    pub at: ApprovalRef,
    /// The picked option's value: the choice's place in the request's list.
    pub choice: Option<String>,
    pub user_id: String,
    pub user_name: String,
    pub response_url: Option<String>,
}

/// Answers the approval the button names, then tells the user (only them) what came of it.
pub(super) async fn from_slack(
    state: &web::Data<AppState>,
    answer: SlackAnswer,
) -> Result<HttpResponse, ApiError> {
    let engine = state.engine.clone();
    let store = state.store.clone();
    let SlackAnswer {
        approve,
        at,
        choice,
        user_id,
        user_name,
        response_url,
    } = answer;
    let picked = choice.clone();
    let (user, name) = (user_id.clone(), user_name.clone());
    let outcome = web::block(move || {
        // The option's value is the choice's place in the stored list: the whole choice is
        // the answer, however long (an option's text and value are cut by Slack's limits).
        let choice = match picked {
            None => None,
            Some(i) => match store.approval_at(at.incident, at.phase, at.seq)? {
                // No such request: the engine tells stale from not waiting.
                None => None,
                Some(a) => match i
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| a.choices.get(i))
                {
                    Some(c) => Some(c.clone()),
                    None => return Ok(Answered::NotOffered { offered: a.choices }),
                },
            },
        };
        engine.answer_approval_of(
            at.incident,
            Some(at),
            approve,
            Answerer {
                by: &name,
                slack_user: Some(&user),
            },
            if approve { choice.as_deref() } else { None },
        )
    })
    .await
    .map_err(|e| ApiError::Unavailable(e.to_string()))?
    .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let text = reply_text(at, approve, choice.is_some(), &outcome);
    tracing::info!(incident = at.incident, by = %user_name, user = %user_id, "{text}");
    if let (Some(url), Some(client)) = (response_url, state.deliverer.slack().cloned()) {
        // Answered after the 200 (Slack waits 3 s at most for it).
        tokio::spawn(async move {
            if let Err(e) = client.respond_ephemeral(&url, &text).await {
                tracing::warn!(error = %e, "could not answer the Slack user through response_url");
            }
        });
    }
    Ok(HttpResponse::Ok().finish())
}

/// What the user who pressed is told.
fn reply_text(at: ApprovalRef, approve: bool, picked: bool, outcome: &Answered) -> String {
    let id = at.incident;
    match outcome {
        Answered::Done(a) => match (&a.decided, approve) {
            (Some(d), true) => format!(
                "You approved{} for incident #{id}: the runbook goes on.",
                d.choice
                    .as_deref()
                    .map(|c| format!(" `{c}`"))
                    .unwrap_or_default()
            ),
            _ => format!(
                "You rejected the request of incident #{id}: the runbook runs on_failure and pages."
            ),
        },
        Answered::NotOffered { .. } if !picked => {
            "Pick one first: choose in the menu above the buttons (e.g. which backup), then press Approve.".to_owned()
        }
        Answered::NotOffered { .. } => {
            "That choice is not one this request offers: pick one in the menu again, then press Approve.".to_owned()
        }
        Answered::NotWaiting => format!(
            "Nothing waits for an answer on incident #{id} any more (it was answered, timed out, or its runbook ended): your answer was not counted."
        ),
        Answered::Stale { waiting } => format!(
            "This button is from another step of incident #{id}; the request waiting now is step {} of {}: answer it on its own message.",
            waiting.seq + 1,
            waiting.phase
        ),
        Answered::NotAllowed { who, allowed } => format!(
            "Only {} may answer this approval ({who}'s slack_users in escalation.yaml): your answer was not counted.",
            allowed
                .iter()
                .map(|u| format!("<@{u}>"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Answered::NoIncident => format!("There is no incident #{id} here."),
    }
}
