//! PagerDuty Events API v2 client (CONTRACTS.md §4): `trigger`, `acknowledge` and `resolve`
//! events on one integration's routing key, correlated by a caller-chosen `dedup_key`.
//!
//! - 202 is success; 400 is [`PagerDutyError::Rejected`] (fix the event, do not retry);
//!   429 is [`PagerDutyError::RateLimited`]; 5xx and network errors are retriable.
//! - [`Severity`] is PagerDuty's case-sensitive `payload.severity`; P1..P4 map to it with
//!   [`Severity::from_priority`] (a local convention, see CONTRACTS.md §4).
//!
//! **Invariant:** the routing key is held in a [`SecretString`] and appears in no `Debug`,
//! `Display` or log line.

use super::{chain, truncate};
use std::fmt;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};

/// The Events API v2 endpoint.
pub const DEFAULT_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// `payload.summary` is cut to this many characters.
pub const MAX_SUMMARY_CHARS: usize = 1024;

/// `dedup_key` may not be longer than this.
pub const MAX_DEDUP_KEY_CHARS: usize = 255;

/// The `dedup_key` of an incident's alert: its identity (the firing's fingerprint and
/// `startsAt`), so that every replica of a fleet pages, acknowledges and resolves the same
/// alert for the same firing, and two firings never share one. At most 11 + 16 + 1 + 30
/// characters, within [`MAX_DEDUP_KEY_CHARS`].
pub fn dedup_key(fingerprint: &str, starts_at: chrono::DateTime<chrono::Utc>) -> String {
    format!(
        "remediator-{fingerprint}-{}",
        starts_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    )
}

/// An Events API v2 request may not be bigger than this.
pub const MAX_EVENT_BYTES: usize = 512 * 1024;

/// PagerDuty suggests retrying a throttled event after about 30 seconds.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Everything that can go wrong sending an event.
#[derive(Debug, thiserror::Error)]
pub enum PagerDutyError {
    /// HTTP 400: PagerDuty will never accept this event as it is.
    #[error("PagerDuty rejected the event: {message}; fix the event or the routing key, retrying will not help")]
    Rejected { message: String },
    /// HTTP 429: too many events for this integration key; PagerDuty did not ingest it.
    #[error("PagerDuty is throttling this integration key: retry in {}s", retry_after.as_secs())]
    RateLimited { retry_after: Duration },
    /// Any other HTTP status (5xx: PagerDuty trouble; 4xx: usually a wrong URL).
    #[error("PagerDuty answered HTTP {status}: {}", http_hint(*.status))]
    Http { status: u16 },
    /// No answer: connection refused, timeout, TLS.
    #[error("cannot reach PagerDuty: {0}")]
    Transport(String),
    /// The event cannot be built from what the caller passed.
    #[error("cannot send this PagerDuty event: {0}")]
    Invalid(String),
    /// The client was set up wrongly; fix the configuration.
    #[error("PagerDuty client misconfigured: {0}")]
    Config(String),
}

impl PagerDutyError {
    /// Whether the same event may be accepted later without a change on our side.
    pub fn is_retriable(&self) -> bool {
        match self {
            PagerDutyError::RateLimited { .. } | PagerDutyError::Transport(_) => true,
            PagerDutyError::Http { status } => *status >= 500,
            PagerDutyError::Rejected { .. }
            | PagerDutyError::Invalid(_)
            | PagerDutyError::Config(_) => false,
        }
    }

    /// How long to wait before retrying a throttled event (the `Retry-After` header when
    /// PagerDuty sends one, else 30 s as its docs suggest).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            PagerDutyError::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}

fn http_hint(status: u16) -> &'static str {
    if status >= 500 {
        "PagerDuty is having trouble: retry later"
    } else {
        "check the PagerDuty events URL in the configuration"
    }
}

/// `payload.severity`; drives the alert's urgency (critical/error high, warning/info low).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    Critical,
    Error,
    Warning,
    Info,
}

impl Severity {
    /// The local priority convention: P1 critical, P2 error, P3 warning, P4 info
    /// (case-insensitive); `None` for anything else.
    pub fn from_priority(priority: &str) -> Option<Severity> {
        match priority.trim().to_ascii_uppercase().as_str() {
            "P1" => Some(Severity::Critical),
            "P2" => Some(Severity::Error),
            "P3" => Some(Severity::Warning),
            "P4" => Some(Severity::Info),
            _ => None,
        }
    }

    /// The exact (case-sensitive) value PagerDuty expects.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A client for one PagerDuty integration (one routing key).
#[derive(Clone)]
pub struct PagerDutyClient {
    http: reqwest::Client,
    url: reqwest::Url,
    routing_key: SecretString,
}

impl fmt::Debug for PagerDutyClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PagerDutyClient")
            .field("url", &self.url.as_str())
            .field("routing_key", &"[redacted]")
            .finish()
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    errors: Vec<Value>,
}

impl PagerDutyClient {
    /// A client posting to `url` (normally [`DEFAULT_EVENTS_URL`]) with the integration's
    /// 32-character routing key.
    pub fn new(
        url: &str,
        routing_key: SecretString,
        timeout: Duration,
    ) -> Result<PagerDutyClient, PagerDutyError> {
        let parsed = reqwest::Url::parse(url.trim()).map_err(|e| {
            PagerDutyError::Config(format!(
                "PagerDuty events URL {url:?} is not a URL ({e}): use {DEFAULT_EVENTS_URL}"
            ))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(PagerDutyError::Config(format!(
                "PagerDuty events URL {url:?} must be http(s): use {DEFAULT_EVENTS_URL}"
            )));
        }
        let key = routing_key.expose_secret();
        if key.chars().count() != 32 || !key.chars().all(|c| c.is_ascii_graphic()) {
            return Err(PagerDutyError::Config(format!(
                "the PagerDuty routing key must be the integration's 32-character Integration \
                 Key (Events API v2), got {} characters",
                key.chars().count()
            )));
        }
        let http = super::http_client("PagerDuty", timeout).map_err(PagerDutyError::Config)?;
        Ok(PagerDutyClient {
            http,
            url: parsed,
            routing_key,
        })
    }

    /// Opens (or adds to) the alert `dedup_key`. `summary` is cut to [`MAX_SUMMARY_CHARS`];
    /// `custom_details` should be an object (anything else is wrapped as `{"details": …}`,
    /// `null` is left out) and is replaced by a note when it would push the event past
    /// PagerDuty's 512 KB limit.
    #[tracing::instrument(level = "debug", skip(self, summary, custom_details), err(Display))]
    pub async fn trigger(
        &self,
        dedup_key: &str,
        summary: &str,
        source: &str,
        severity: Severity,
        custom_details: Value,
    ) -> Result<(), PagerDutyError> {
        check_dedup_key(dedup_key)?;
        if summary.trim().is_empty() {
            return Err(PagerDutyError::Invalid(
                "the summary is empty: PagerDuty requires payload.summary".into(),
            ));
        }
        if source.trim().is_empty() {
            return Err(PagerDutyError::Invalid(
                "the source is empty: PagerDuty requires payload.source (a host or service name)"
                    .into(),
            ));
        }
        let mut payload = json!({
            "summary": truncate(summary, MAX_SUMMARY_CHARS),
            "source": source,
            "severity": severity.as_str(),
        });
        match custom_details {
            Value::Null => {}
            details @ Value::Object(_) => payload["custom_details"] = details,
            other => payload["custom_details"] = json!({ "details": other }),
        }
        let mut event = json!({
            "routing_key": self.routing_key.expose_secret(),
            "event_action": "trigger",
            "dedup_key": dedup_key,
            "payload": payload,
            "client": "remediator",
        });
        let mut body = encode(&event)?;
        if body.len() > MAX_EVENT_BYTES {
            event["payload"]["custom_details"] = json!({
                "note": "custom_details left out: the event exceeded PagerDuty's 512 KB limit"
            });
            body = encode(&event)?;
        }
        self.send(body).await
    }

    /// Acknowledges the alert `dedup_key` (stops its notifications).
    #[tracing::instrument(level = "debug", skip(self), err(Display))]
    pub async fn acknowledge(&self, dedup_key: &str) -> Result<(), PagerDutyError> {
        self.follow_up(dedup_key, "acknowledge").await
    }

    /// Resolves the alert `dedup_key`; PagerDuty drops it when no such alert is open.
    #[tracing::instrument(level = "debug", skip(self), err(Display))]
    pub async fn resolve(&self, dedup_key: &str) -> Result<(), PagerDutyError> {
        self.follow_up(dedup_key, "resolve").await
    }

    async fn follow_up(&self, dedup_key: &str, action: &str) -> Result<(), PagerDutyError> {
        check_dedup_key(dedup_key)?;
        let event = json!({
            "routing_key": self.routing_key.expose_secret(),
            "event_action": action,
            "dedup_key": dedup_key,
        });
        self.send(encode(&event)?).await
    }

    async fn send(&self, body: Vec<u8>) -> Result<(), PagerDutyError> {
        let response = self
            .http
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| transport(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        match status.as_u16() {
            400 => {
                let bytes = response.bytes().await.unwrap_or_default();
                Err(PagerDutyError::Rejected {
                    message: rejection_message(&bytes),
                })
            }
            429 => {
                let retry_after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs)
                    .unwrap_or(DEFAULT_RETRY_AFTER);
                Err(PagerDutyError::RateLimited { retry_after })
            }
            status => Err(PagerDutyError::Http { status }),
        }
    }
}

/// `message: error, error` from a 400 body, or a generic text when it cannot be read.
fn rejection_message(bytes: &[u8]) -> String {
    let Ok(body) = serde_json::from_slice::<ErrorBody>(bytes) else {
        return "invalid event (no readable error body)".into();
    };
    let mut message = body
        .message
        .unwrap_or_else(|| "Event object is invalid".into());
    let errors: Vec<String> = body
        .errors
        .iter()
        .map(|e| match e {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    if !errors.is_empty() {
        message.push_str(": ");
        message.push_str(&errors.join(", "));
    }
    truncate(&message, 2000)
}

fn check_dedup_key(dedup_key: &str) -> Result<(), PagerDutyError> {
    if dedup_key.is_empty() {
        return Err(PagerDutyError::Invalid(
            "the dedup_key is empty: use a deterministic key (e.g. a hash of the incident)".into(),
        ));
    }
    let len = dedup_key.chars().count();
    if len > MAX_DEDUP_KEY_CHARS {
        return Err(PagerDutyError::Invalid(format!(
            "the dedup_key has {len} characters, PagerDuty allows {MAX_DEDUP_KEY_CHARS}: use a \
             hash such as hex sha256"
        )));
    }
    Ok(())
}

fn encode(event: &Value) -> Result<Vec<u8>, PagerDutyError> {
    serde_json::to_vec(event)
        .map_err(|e| PagerDutyError::Invalid(format!("cannot encode the event as JSON: {e}")))
}

fn transport(e: &reqwest::Error) -> PagerDutyError {
    if e.is_timeout() {
        PagerDutyError::Transport(format!("timed out: {}", chain(e)))
    } else {
        PagerDutyError::Transport(chain(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dedup_key_is_the_firings_identity() {
        let at: chrono::DateTime<chrono::Utc> = "2026-12-04T19:00:00.123456789Z".parse().unwrap();
        let key = dedup_key("0123456789abcdef", at);
        assert_eq!(
            key,
            "remediator-0123456789abcdef-2026-12-04T19:00:00.123456789Z"
        );
        assert_eq!(
            key,
            dedup_key("0123456789abcdef", at),
            "the same on every replica"
        );
        let later = at + chrono::Duration::nanoseconds(1);
        assert_ne!(
            key,
            dedup_key("0123456789abcdef", later),
            "a new firing, a new alert"
        );
        assert_ne!(key, dedup_key("0123456789abcdee", at));
        assert!(check_dedup_key(&key).is_ok());
        assert!(key.chars().count() <= MAX_DEDUP_KEY_CHARS);
    }

    #[test]
    fn priorities_map_to_severities() {
        assert_eq!(Severity::from_priority("P1"), Some(Severity::Critical));
        assert_eq!(Severity::from_priority("P2"), Some(Severity::Error));
        assert_eq!(Severity::from_priority("p3"), Some(Severity::Warning));
        assert_eq!(Severity::from_priority(" P4 "), Some(Severity::Info));
        assert_eq!(Severity::from_priority("P5"), None);
        assert_eq!(Severity::Critical.to_string(), "critical");
    }

    #[test]
    fn summary_is_cut_to_1024_characters() {
        let cut = truncate(&"é".repeat(2000), MAX_SUMMARY_CHARS);
        assert_eq!(cut.chars().count(), 1024);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate(&"a".repeat(1024), MAX_SUMMARY_CHARS).len(), 1024);
    }

    #[test]
    fn retriability_follows_the_docs() {
        assert!(PagerDutyError::RateLimited {
            retry_after: DEFAULT_RETRY_AFTER
        }
        .is_retriable());
        assert!(PagerDutyError::Http { status: 502 }.is_retriable());
        assert!(PagerDutyError::Transport("x".into()).is_retriable());
        assert!(!PagerDutyError::Rejected {
            message: "x".into()
        }
        .is_retriable());
        assert!(!PagerDutyError::Http { status: 404 }.is_retriable());
        assert!(!PagerDutyError::Invalid("x".into()).is_retriable());
    }

    #[test]
    fn rejection_message_lists_the_errors() {
        let body = br#"{"status":"invalid event","message":"Event object is invalid","errors":["'payload.severity' is invalid"]}"#;
        assert_eq!(
            rejection_message(body),
            "Event object is invalid: 'payload.severity' is invalid"
        );
        assert_eq!(
            rejection_message(b"<html>"),
            "invalid event (no readable error body)"
        );
    }

    #[test]
    fn new_checks_the_routing_key_and_hides_it() {
        let t = Duration::from_secs(5);
        let short = PagerDutyClient::new(DEFAULT_EVENTS_URL, SecretString::from("abc"), t);
        assert!(matches!(short, Err(PagerDutyError::Config(_))));
        let key = "R0UT1NGKEY0123456789abcdefABCDEF";
        let client = PagerDutyClient::new(DEFAULT_EVENTS_URL, SecretString::from(key), t);
        let shown = format!("{client:?}");
        assert!(
            shown.contains("redacted") && !shown.contains(key),
            "{shown}"
        );
    }
}
