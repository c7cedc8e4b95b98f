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

/// The cookie the incident pages set from `?token=` (see [`check_page`]).
pub(super) const PAGE_COOKIE: &str = "remediator_token";

/// How a request to the incident pages proved it may see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PageAccess {
    /// No `api.token`, a bearer header, or the cookie.
    Granted,
    /// A right `?token=`: answered with a redirect to the same page without it, setting the
    /// cookie, so that the token stays in neither the address bar, the history nor a link.
    FromQuery,
}

fn cookie<'a>(req: &'a HttpRequest, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_encoding::percent_decode_str(v).decode_utf8_lossy())
}

/// The incident pages, for a browser too: `?token=` (checked first, so that a right one is
/// always taken out of the address by the redirect, and a wrong one is refused), else the
/// bearer header as the API takes it, or the cookie `?token=` set.
pub(super) fn check_page(
    req: &HttpRequest,
    query: &[(String, String)],
    s: &ApiSettings,
) -> Result<PageAccess, ApiError> {
    let Some(token) = &s.token else {
        return Ok(PageAccess::Granted);
    };
    let expected = token.expose_secret().as_bytes();
    if let Some((_, given)) = query.iter().find(|(k, _)| k == "token") {
        return if ct_eq(given.as_bytes(), expected) {
            Ok(PageAccess::FromQuery)
        } else {
            Err(ApiError::Unauthorized(
                "the token= given is not api.token; open the page with ?token=<api.token>",
            ))
        };
    }
    if bearer_ok(req, token)
        || cookie(req, PAGE_COOKIE).is_some_and(|c| ct_eq(c.as_bytes(), expected))
    {
        Ok(PageAccess::Granted)
    } else {
        Err(ApiError::Unauthorized(
            "open the page once with ?token=<api.token> (it sets a cookie), or send Authorization: Bearer <api.token>",
        ))
    }
}

/// The `Set-Cookie` value that lets a browser back in: the token, percent-encoded, sent only
/// to the pages (`Path=/incidents`), never to scripts (`HttpOnly`, and the pages have none),
/// never on requests from other sites (`SameSite=Strict`).
pub(super) fn page_cookie(s: &ApiSettings) -> Option<String> {
    s.token.as_ref().map(|t| {
        let value = percent_encoding::utf8_percent_encode(
            t.expose_secret(),
            percent_encoding::NON_ALPHANUMERIC,
        );
        format!("{PAGE_COOKIE}={value}; Path=/incidents; HttpOnly; SameSite=Strict")
    })
}
