//! Alertmanager webhook payloads (version 4) and the domain alert built from them.
//!
//! Pure: no I/O. The wire format follows CONTRACTS.md §1: unknown fields are ignored (newer
//! Alertmanagers add `notification_reason` and `routeLabels`), a firing alert's `endsAt` is
//! Go's zero time (`0001-01-01T00:00:00Z`) and means "not ended", and `receiver` arrives
//! regex-escaped. Parsing is the only way to get an [`Alert`], so everything downstream can
//! rely on a valid fingerprint and a UTC start time.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Datelike, FixedOffset, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

/// Label or annotation set, ordered by name (as Alertmanager orders them).
pub type Labels = BTreeMap<String, String>;

/// The only payload version Alertmanager has ever sent (v0.25 to v0.34).
pub const SUPPORTED_VERSION: &str = "4";

/// Why a webhook body was refused. Each is the sender's fault (HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("body is not a valid Alertmanager webhook payload: {0}")]
    Malformed(String),
    #[error("unsupported payload version {found:?}: only version \"4\" (Alertmanager 0.25 and later) is understood")]
    UnsupportedVersion { found: String },
    #[error("alerts[{index}]: {message}")]
    InvalidAlert { index: usize, message: String },
}

/// `firing` or `resolved`, for a whole notification or one alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// Alertmanager's identity of a label set: FNV-1a 64 over sorted `name 0xFF value 0xFF`,
/// printed as 16 lowercase hex digits (prometheus/common `model/signature.go`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// Accepts what Alertmanager sends; anything else is refused so it cannot be used as a key.
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if ok {
            Ok(Fingerprint(s.to_ascii_lowercase()))
        } else {
            Err(format!("fingerprint {s:?} is not a hexadecimal string"))
        }
    }

    /// Computes the fingerprint Alertmanager would give this label set.
    pub fn of_labels(labels: &Labels) -> Self {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut hash = OFFSET;
        let mut feed = |bytes: &[u8]| {
            for b in bytes {
                hash ^= u64::from(*b);
                hash = hash.wrapping_mul(PRIME);
            }
        };
        // BTreeMap iterates in ascending name order, as Alertmanager sorts label names.
        for (name, value) in labels {
            feed(name.as_bytes());
            feed(&[0xff]);
            feed(value.as_bytes());
            feed(&[0xff]);
        }
        Fingerprint(format!("{hash:016x}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One webhook notification exactly as Alertmanager sends it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookMessage {
    pub version: String,
    #[serde(default)]
    pub group_key: String,
    #[serde(default)]
    pub truncated_alerts: u64,
    pub status: AlertStatus,
    #[serde(default)]
    pub receiver: String,
    #[serde(default)]
    pub group_labels: Labels,
    #[serde(default)]
    pub common_labels: Labels,
    #[serde(default)]
    pub common_annotations: Labels,
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    pub alerts: Vec<WebhookAlert>,
    /// Alertmanager 0.32 and later.
    #[serde(
        default,
        rename = "notification_reason",
        skip_serializing_if = "Option::is_none"
    )]
    pub notification_reason: Option<String>,
    /// Alertmanager 0.34 and later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_labels: Option<Labels>,
}

/// One alert inside a notification.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAlert {
    pub status: AlertStatus,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub annotations: Labels,
    pub starts_at: DateTime<FixedOffset>,
    #[serde(default, deserialize_with = "go_time_or_zero")]
    pub ends_at: Option<DateTime<FixedOffset>>,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    #[serde(default)]
    pub fingerprint: Option<String>,
}

/// Go's zero `time.Time` (year 1) means "not set"; so does an absent or null field.
fn go_time_or_zero<'de, D>(de: D) -> Result<Option<DateTime<FixedOffset>>, D::Error>
where
    D: Deserializer<'de>,
{
    let t: Option<DateTime<FixedOffset>> = Option::deserialize(de)?;
    Ok(t.filter(|t| t.year() > 1))
}

/// A validated alert: what the rest of the service works with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    pub fingerprint: Fingerprint,
    pub status: AlertStatus,
    pub labels: Labels,
    pub annotations: Labels,
    pub starts_at: DateTime<Utc>,
    pub ends_at: Option<DateTime<Utc>>,
    pub generator_url: String,
}

impl Alert {
    /// The `alertname` label, or an empty string when the sender left it out.
    pub fn name(&self) -> &str {
        self.labels
            .get("alertname")
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// A validated notification: its alerts plus the group it came from.
#[derive(Debug, Clone)]
pub struct Notification {
    pub group_key: String,
    /// The sending Alertmanager's `externalURL` (its UI), `""` when it sent none.
    pub external_url: String,
    pub receiver: String,
    pub status: AlertStatus,
    pub truncated_alerts: u64,
    pub alerts: Vec<Alert>,
}

/// Parses and validates a webhook body. The error names the field at fault.
pub fn parse_webhook(body: &[u8]) -> Result<Notification, AlertError> {
    // Fast path; path tracking costs on every field, so it is only paid to explain an error.
    if let Ok(msg) = serde_json::from_slice::<WebhookMessage>(body) {
        return msg.into_notification();
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let msg: WebhookMessage = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            AlertError::Malformed(inner.to_string())
        } else {
            AlertError::Malformed(format!("{path}: {inner}"))
        }
    })?;
    msg.into_notification()
}

impl WebhookMessage {
    /// Validates the version and every alert.
    pub fn into_notification(self) -> Result<Notification, AlertError> {
        if self.version != SUPPORTED_VERSION {
            return Err(AlertError::UnsupportedVersion {
                found: self.version,
            });
        }
        let alerts = self
            .alerts
            .into_iter()
            .enumerate()
            .map(|(index, a)| {
                a.into_alert()
                    .map_err(|message| AlertError::InvalidAlert { index, message })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Notification {
            group_key: self.group_key,
            external_url: self.external_url,
            receiver: self.receiver,
            status: self.status,
            truncated_alerts: self.truncated_alerts,
            alerts,
        })
    }
}

impl WebhookAlert {
    fn into_alert(self) -> Result<Alert, String> {
        if self.labels.is_empty() {
            return Err("alert has no labels, so it has no identity".into());
        }
        let fingerprint = match self.fingerprint.as_deref() {
            Some(fp) if !fp.is_empty() => Fingerprint::parse(fp)?,
            _ => Fingerprint::of_labels(&self.labels),
        };
        Ok(Alert {
            fingerprint,
            status: self.status,
            labels: self.labels,
            annotations: self.annotations,
            starts_at: self.starts_at.with_timezone(&Utc),
            ends_at: self.ends_at.map(|t| t.with_timezone(&Utc)),
            generator_url: self.generator_url,
        })
    }
}

/// A delivery as the engine reads it back from the store: each alert's identity and status,
/// with labels and annotations kept as the raw JSON text they arrived as. The body was fully
/// validated at ingress; this borrowed view skips building maps for the repeats that make up
/// most of a storm (labels are parsed only when an incident opens).
#[derive(Debug, Deserialize)]
pub struct StoredDelivery<'a> {
    #[serde(default, rename = "groupKey", borrow)]
    pub group_key: Cow<'a, str>,
    #[serde(default, rename = "externalURL", borrow)]
    pub external_url: Cow<'a, str>,
    #[serde(borrow)]
    pub alerts: Vec<StoredAlert<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredAlert<'a> {
    pub status: AlertStatus,
    #[serde(borrow)]
    labels: &'a RawValue,
    #[serde(default, borrow)]
    annotations: Option<&'a RawValue>,
    starts_at: DateTime<FixedOffset>,
    #[serde(default, deserialize_with = "go_time_or_zero")]
    ends_at: Option<DateTime<FixedOffset>>,
    #[serde(default, borrow)]
    fingerprint: Option<Cow<'a, str>>,
    #[serde(default, rename = "generatorURL", borrow)]
    generator_url: Cow<'a, str>,
}

/// Reads a stored delivery (see [`StoredDelivery`]).
pub fn parse_stored(body: &[u8]) -> Result<StoredDelivery<'_>, AlertError> {
    serde_json::from_slice(body).map_err(|e| AlertError::Malformed(e.to_string()))
}

/// The annotations, as JSON, that a stored delivery carried for one alert (by fingerprint and
/// start); `None` when the body no longer parses or has no such alert.
pub fn annotations_of(
    body: &[u8],
    fingerprint: &str,
    starts_at: DateTime<Utc>,
) -> Option<serde_json::Value> {
    let delivery = parse_stored(body).ok()?;
    let alert = delivery.alerts.iter().find(|a| {
        a.starts_at() == starts_at && a.fingerprint().is_ok_and(|f| f.as_str() == fingerprint)
    })?;
    serde_json::from_str(alert.annotations_json()).ok()
}

impl StoredAlert<'_> {
    pub fn fingerprint(&self) -> Result<Fingerprint, AlertError> {
        match self.fingerprint.as_deref() {
            Some(fp) if !fp.is_empty() => Fingerprint::parse(fp).map_err(AlertError::Malformed),
            _ => Ok(Fingerprint::of_labels(&self.labels()?)),
        }
    }

    pub fn labels(&self) -> Result<Labels, AlertError> {
        serde_json::from_str(self.labels.get())
            .map_err(|e| AlertError::Malformed(format!("labels: {e}")))
    }

    /// The labels as the JSON text they arrived as.
    pub fn labels_json(&self) -> &str {
        self.labels.get()
    }

    /// The annotations as the JSON text they arrived as (`{}` when absent).
    pub fn annotations_json(&self) -> &str {
        self.annotations.map(RawValue::get).unwrap_or("{}")
    }

    pub fn starts_at(&self) -> DateTime<Utc> {
        self.starts_at.with_timezone(&Utc)
    }

    pub fn ends_at(&self) -> Option<DateTime<Utc>> {
        self.ends_at.map(|t| t.with_timezone(&Utc))
    }

    /// The alert's `generatorURL`, `""` when it had none.
    pub fn generator_url(&self) -> &str {
        &self.generator_url
    }
}

#[cfg(test)]
mod tests;
