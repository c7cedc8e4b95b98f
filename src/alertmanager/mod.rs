//! Alertmanager awareness (`alertmanager:` in the configuration): what Alertmanager says of
//! an alert now, and silences made on people's behalf.
//!
//! A webhook never carries silence state (CONTRACTS.md §9): a silence set after the
//! notification, an inhibition, or a resolution is seen only through the API. The engine asks
//! [`AlertmanagerClient`] (its [`crate::engine::AlertCheck`]) just before a runbook's first
//! destructive step; the Slack "Silence 1h" button calls
//! [`AlertmanagerClient::create_silence`].
//!
//! - `api.rs`: the API v2 types remediator reads and writes, and the pure parts of the check:
//!   the `filter` matchers, finding the alert with exactly these labels, and combining the
//!   peers of an HA cluster (a silence on any peer wins: we never fight a human).
//! - `client.rs`: the HTTP client (reqwest), every peer asked at once within
//!   `alertmanager.timeout`; a silence posted to the first peer that takes it.
//!
//! **Invariant:** the token and the basic-auth password are `SecretString`s and appear in no
//! `Debug`, `Display` or log line.

mod api;
mod client;

use std::time::Duration;

use reqwest::Url;
use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

use crate::domain::OnUnreachable;

pub use client::AlertmanagerClient;

/// `alertmanager:` in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertmanagerSettings {
    /// The base URL of each peer (one Alertmanager, or every peer of an HA cluster):
    /// `http://127.0.0.1:9093`. Empty: Alertmanager is never asked
    /// (`REMEDIATOR_ALERTMANAGER__URLS`, a list `[a, b]` or `a,b`).
    #[serde(deserialize_with = "one_or_many")]
    pub urls: Vec<String>,
    /// Sent as `Authorization: Bearer <token>` (`REMEDIATOR_ALERTMANAGER__TOKEN`).
    pub token: Option<SecretString>,
    /// Basic auth, both or neither (`REMEDIATOR_ALERTMANAGER__BASIC_USER`, `__BASIC_PASSWORD`).
    pub basic_user: Option<String>,
    pub basic_password: Option<SecretString>,
    /// How long each peer may take to answer (`REMEDIATOR_ALERTMANAGER__TIMEOUT`).
    #[serde(with = "crate::domain::duration::serde_text")]
    pub timeout: Duration,
    /// When no peer answers the check before a destructive step: `go` (say so in the thread
    /// and go on) or `stop` (`REMEDIATOR_ALERTMANAGER__ON_UNREACHABLE`).
    pub on_unreachable: OnUnreachable,
}

impl Default for AlertmanagerSettings {
    fn default() -> Self {
        AlertmanagerSettings {
            urls: Vec::new(),
            token: None,
            basic_user: None,
            basic_password: None,
            timeout: Duration::from_secs(2),
            on_unreachable: OnUnreachable::Go,
        }
    }
}

impl AlertmanagerSettings {
    /// The peers' URLs, each checked; the error names the field and says what to write.
    pub fn peers(&self) -> Result<Vec<Url>, String> {
        let mut peers: Vec<Url> = Vec::new();
        for (i, raw) in self.urls.iter().enumerate() {
            let field = if self.urls.len() == 1 {
                "alertmanager.urls".to_owned()
            } else {
                format!("alertmanager.urls[{i}]")
            };
            let text = raw.trim();
            let url = Url::parse(text).map_err(|e| {
                format!("{field}: {raw:?} is not a URL ({e}): write the peer's base URL, such as http://127.0.0.1:9093")
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(format!(
                    "{field}: {raw:?} must be http:// or https://, such as http://127.0.0.1:9093"
                ));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(format!(
                    "{field}: {raw:?} carries credentials; put them in alertmanager.basic_user and alertmanager.basic_password (or alertmanager.token), which are never logged"
                ));
            }
            if url.query().is_some() || url.fragment().is_some() {
                return Err(format!(
                    "{field}: {raw:?} has a query or fragment; give only the base URL (with a route prefix if Alertmanager has one: http://host/alertmanager)"
                ));
            }
            if let Some(j) = peers.iter().position(|p| *p == url) {
                return Err(format!(
                    "{field}: {raw:?} repeats alertmanager.urls[{j}]; list each peer once"
                ));
            }
            peers.push(url);
        }
        Ok(peers)
    }

    /// Checks the section as a whole: the URLs, and auth options that go together.
    pub fn validate(&self) -> Result<(), String> {
        let peers = self.peers()?;
        if self.basic_user.is_some() != self.basic_password.is_some() {
            return Err(
                "alertmanager.basic_user and alertmanager.basic_password go together; set both or neither"
                    .into(),
            );
        }
        if self.token.is_some() && self.basic_user.is_some() {
            return Err(
                "alertmanager.token and alertmanager.basic_user/basic_password exclude each other (one Authorization header is sent); set one"
                    .into(),
            );
        }
        if peers.is_empty() && (self.token.is_some() || self.basic_user.is_some()) {
            return Err(
                "alertmanager credentials are set but alertmanager.urls is empty: list the Alertmanager peers to ask, such as [http://127.0.0.1:9093]"
                    .into(),
            );
        }
        Ok(())
    }
}

/// A list of URLs, or one text holding them separated by commas (as an environment variable
/// gives them).
fn one_or_many<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<String>),
        One(String),
    }
    Ok(match OneOrMany::deserialize(de)? {
        OneOrMany::Many(list) => list,
        OneOrMany::One(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// A silence's id, as Alertmanager gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SilenceId(pub String);

impl std::fmt::Display for SilenceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The comment of a silence made from the Slack button:
/// `remediator: silenced from Slack on incident #12 (postgres-down) by alice`.
pub fn slack_silence_comment(incident_id: i64, rule: Option<&str>, by: &str) -> String {
    let rule = rule.map(|r| format!(" ({r})")).unwrap_or_default();
    format!("remediator: silenced from Slack on incident #{incident_id}{rule} by {by}")
}

/// Everything that can go wrong asking Alertmanager or making a silence.
#[derive(Debug, thiserror::Error)]
pub enum AlertmanagerError {
    /// No answer from a peer: connection refused, timeout, TLS.
    #[error("{peer}: {detail}")]
    Transport { peer: String, detail: String },
    /// A peer answered with an error status.
    #[error("{peer} answered {what} with HTTP {status}: {body}")]
    Status {
        peer: String,
        what: &'static str,
        status: u16,
        /// The start of the answer's body.
        body: String,
    },
    /// A peer answered 2xx with something that is not Alertmanager's API v2.
    #[error("{peer}: the answer to {what} is not Alertmanager's API v2 ({detail}); is this URL an Alertmanager?")]
    Decode {
        peer: String,
        what: &'static str,
        detail: String,
    },
    /// No peer answered the check.
    #[error("no Alertmanager peer answered: {}", joined(.0))]
    Unreachable(Vec<AlertmanagerError>),
    /// No peer took the silence.
    #[error("no Alertmanager peer took the silence: {}", joined(.0))]
    NotAccepted(Vec<AlertmanagerError>),
    /// The silence asked for cannot be made.
    #[error("cannot make this silence: {0}")]
    Invalid(String),
    /// The client was set up wrongly; fix the configuration.
    #[error("Alertmanager client misconfigured: {0}")]
    Config(String),
}

/// Each peer's error, `; `-separated.
fn joined(errors: &[AlertmanagerError]) -> String {
    if errors.is_empty() {
        return "no peer is configured".into();
    }
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_urls(urls: &[&str]) -> AlertmanagerSettings {
        AlertmanagerSettings {
            urls: urls.iter().map(|u| u.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn bad_urls_are_refused_naming_the_field() {
        let cases = [
            (
                vec!["am:9093"],
                "alertmanager.urls: \"am:9093\" must be http:// or https://",
            ),
            (
                vec!["9093"],
                "alertmanager.urls: \"9093\" is not a URL (relative URL without a base)",
            ),
            (
                vec!["http://a:9093", "ftp://b"],
                "alertmanager.urls[1]: \"ftp://b\" must be http:// or https://",
            ),
            (
                vec!["http://bob:pw@a:9093"],
                "alertmanager.urls: \"http://bob:pw@a:9093\" carries credentials",
            ),
            (
                vec!["http://a:9093/?x=1"],
                "alertmanager.urls: \"http://a:9093/?x=1\" has a query or fragment",
            ),
            (
                vec!["http://a:9093", "http://a:9093/"],
                "alertmanager.urls[1]: \"http://a:9093/\" repeats alertmanager.urls[0]",
            ),
        ];
        for (urls, want) in cases {
            let e = with_urls(&urls).validate().unwrap_err();
            assert!(e.starts_with(want), "{urls:?}: {e}");
        }
        assert!(with_urls(&["http://a:9093", "https://b/alertmanager"])
            .validate()
            .is_ok());
        assert!(with_urls(&[]).validate().is_ok());
    }

    #[test]
    fn auth_options_go_together_and_need_urls() {
        let s = AlertmanagerSettings {
            basic_user: Some("u".into()),
            ..with_urls(&["http://a:9093"])
        };
        assert!(s.validate().unwrap_err().contains("go together"));
        let s = AlertmanagerSettings {
            token: Some("t".into()),
            basic_user: Some("u".into()),
            basic_password: Some("p".into()),
            ..with_urls(&["http://a:9093"])
        };
        assert!(s.validate().unwrap_err().contains("exclude each other"));
        let s = AlertmanagerSettings {
            token: Some("t".into()),
            ..with_urls(&[])
        };
        assert!(s
            .validate()
            .unwrap_err()
            .contains("alertmanager.urls is empty"));
    }

    #[test]
    fn the_slack_comment_names_the_incident_the_rule_and_the_person() {
        assert_eq!(
            slack_silence_comment(12, Some("postgres-down"), "alice"),
            "remediator: silenced from Slack on incident #12 (postgres-down) by alice"
        );
        assert_eq!(
            slack_silence_comment(3, None, "bob"),
            "remediator: silenced from Slack on incident #3 by bob"
        );
    }
}
