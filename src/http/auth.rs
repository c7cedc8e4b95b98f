//! Bearer and basic authentication, compared in constant time.

use actix_web::http::header;
use actix_web::HttpRequest;
use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::settings::{ApiSettings, WebhookSettings};

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

fn authorization(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

fn bearer_ok(req: &HttpRequest, token: &SecretString) -> bool {
    authorization(req)
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .is_some_and(|given| ct_eq(given.trim().as_bytes(), token.expose_secret().as_bytes()))
}

fn basic_ok(req: &HttpRequest, user: &str, password: &SecretString) -> bool {
    let Some(encoded) = authorization(req).and_then(|h| h.strip_prefix("Basic ")) else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let expected = [user.as_bytes(), b":", password.expose_secret().as_bytes()].concat();
    ct_eq(&decoded, &expected)
}

/// No credentials configured: open. Otherwise a matching bearer token or basic pair.
pub(super) fn check_webhook(req: &HttpRequest, s: &WebhookSettings) -> Result<(), ApiError> {
    let basic = s.basic_user.as_deref().zip(s.basic_password.as_ref());
    if s.token.is_none() && basic.is_none() {
        return Ok(());
    }
    let ok = s.token.as_ref().is_some_and(|t| bearer_ok(req, t))
        || basic.is_some_and(|(u, p)| basic_ok(req, u, p));
    if ok {
        Ok(())
    } else if authorization(req).is_none() {
        Err(ApiError::Unauthorized("missing Authorization header; send the configured bearer token (http_config.authorization in Alertmanager)"))
    } else {
        Err(ApiError::Unauthorized("wrong credentials"))
    }
}

pub(super) fn check_api(req: &HttpRequest, s: &ApiSettings) -> Result<(), ApiError> {
    match &s.token {
        None => Ok(()),
        Some(t) if bearer_ok(req, t) => Ok(()),
        Some(_) => Err(ApiError::Unauthorized(
            "send Authorization: Bearer <api.token>",
        )),
    }
}
