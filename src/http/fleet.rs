//! `GET /api/v1/incidents?scope=fleet`: the fleet's incidents from the history in Postgres,
//! one per identity `(fingerprint, startsAt)`, newest first, with the local list's paging
//! (`limit`, `before`, `next`; here the cursor is the text `next` gives).

use actix_web::HttpResponse;

use super::{ApiError, AppState, DEFAULT_PAGE, MAX_PAGE};
use crate::history::parse_cursor;

/// The query's `scope`: `local` (default) or `fleet`; anything else is a 400.
pub(super) fn wants_fleet(query: &str) -> Result<bool, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|e| ApiError::BadRequest("invalid query string".into(), e.to_string()))?;
    match pairs.iter().find(|(k, _)| k == "scope").map(|(_, v)| v.as_str()) {
        None | Some("" | "local") => Ok(false),
        Some("fleet") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(
            "invalid scope".into(),
            format!("scope={other:?}; use local (this replica) or fleet (every replica, from postgres.url)"),
        )),
    }
}

pub(super) async fn list(state: &AppState, query: &str) -> Result<HttpResponse, ApiError> {
    let Some(history) = &state.history else {
        return Err(ApiError::BadRequest(
            "the fleet history is not configured".into(),
            "scope=fleet reads every replica's incidents from Postgres: set postgres.url \
             (REMEDIATOR_POSTGRES__URL) on this replica, or leave scope out for its own"
                .into(),
        ));
    };
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|e| ApiError::BadRequest("invalid query string".into(), e.to_string()))?;
    let (mut filter, mut before, mut limit) = (None, None, DEFAULT_PAGE);
    for (name, value) in &pairs {
        match name.as_str() {
            "state" => {
                filter = match value.as_str() {
                    "" | "all" => None,
                    "open" | "resolved" => Some(value.clone()),
                    other => {
                        return Err(ApiError::BadRequest(
                            "invalid state filter".into(),
                            format!("state={other:?}; use open, resolved or all"),
                        ))
                    }
                }
            }
            "limit" => {
                limit = value
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
                before = Some(parse_cursor(value).ok_or_else(|| {
                    ApiError::BadRequest(
                        "invalid before cursor".into(),
                        format!("before={value:?}; use the `next` of the previous fleet page"),
                    )
                })?)
            }
            _ => {}
        }
    }
    let page = history
        .fleet_incidents(filter.as_deref(), before, limit)
        .await
        .map_err(|e| ApiError::HistoryUnavailable(e.to_string()))?;
    Ok(HttpResponse::Ok().json(page))
}
