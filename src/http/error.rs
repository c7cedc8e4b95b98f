use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

/// Every error a handler returns, with its status code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("unauthorized")]
    Unauthorized(&'static str),
    #[error("{0}")]
    BadRequest(String, String),
    #[error("request body too large")]
    TooLarge(usize),
    #[error("not found")]
    NotFound(String),
    #[error("forbidden")]
    Forbidden(String),
    #[error("service unavailable")]
    Unavailable(String),
    /// The fleet history (Postgres) did not answer: the detail says why (no password in it).
    #[error("fleet history unavailable")]
    HistoryUnavailable(String),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(..) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Unavailable(_) | ApiError::HistoryUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        let (error, detail) = match self {
            ApiError::Unauthorized(why) => ("unauthorized".to_string(), why.to_string()),
            ApiError::BadRequest(e, d) => (e.clone(), d.clone()),
            ApiError::TooLarge(limit) => (
                "request body too large".to_string(),
                format!("the limit is {limit} bytes (webhook.max_body_bytes); lower max_alerts in Alertmanager or raise the limit"),
            ),
            ApiError::NotFound(d) => ("not found".to_string(), d.clone()),
            ApiError::Forbidden(d) => ("forbidden".to_string(), d.clone()),
            ApiError::Unavailable(d) => {
                tracing::error!(detail = %d, "answering 503");
                (
                    "service unavailable".to_string(),
                    "the store could not take the request; it was not recorded, retry later".to_string(),
                )
            }
            ApiError::HistoryUnavailable(d) => ("fleet history unavailable".to_string(), d.clone()),
        };
        let mut resp = HttpResponse::build(self.status_code());
        if let ApiError::Unauthorized(_) = self {
            resp.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"remediator\""));
        }
        resp.json(json!({ "error": error, "detail": detail }))
    }
}
