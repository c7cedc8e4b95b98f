//! `GET /api/v1/incidents?scope=fleet`: the fleet's incidents from the history in Postgres,
//! one per identity `(fingerprint, startsAt)`, newest first, with the local list's paging
//! (`limit`, `before`, `next`; here the cursor is the text `next` gives).

use actix_web::HttpResponse;

use super::{ApiError, AppState, ListQuery};
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
    let q = ListQuery::parse_with(
        query,
        parse_cursor,
        "use the `next` of the previous fleet page",
    )?;
    let page = history
        .fleet_incidents(q.state.map(|s| s.as_str()), q.before, q.limit)
        .await
        .map_err(|e| ApiError::HistoryUnavailable(e.to_string()))?;
    Ok(HttpResponse::Ok().json(page))
}
