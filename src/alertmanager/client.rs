//! The HTTP client of Alertmanager's API v2: the alert's current state from every peer at
//! once, and a new silence on the first peer that takes it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use reqwest::{Method, RequestBuilder, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;

use super::api::{self, GettableAlert, GettableSilence, PeerView, PostableSilence};
use super::{AlertmanagerError, AlertmanagerSettings, SilenceId};
use crate::alert::Labels;
use crate::domain::duration::format as human;
use crate::domain::{AlertNow, Clock, InhibitorFact, OnUnreachable, SilenceFact};
use crate::engine::AlertCheck;

/// How much of an error answer's body an error keeps.
const BODY_EXCERPT_CHARS: usize = 300;

#[derive(Debug)]
enum Auth {
    None,
    Bearer(SecretString),
    Basic(String, SecretString),
}

/// What the last check found, for `/-/ready`.
#[derive(Debug, Clone)]
struct LastCheck {
    at: DateTime<Utc>,
    answered: usize,
    errors: Vec<String>,
}

/// A client of one Alertmanager, or of the peers of an HA cluster (`alertmanager.urls`).
pub struct AlertmanagerClient {
    peers: Vec<Url>,
    http: reqwest::Client,
    auth: Auth,
    timeout: Duration,
    on_unreachable: OnUnreachable,
    clock: Arc<dyn Clock>,
    last: Mutex<Option<LastCheck>>,
}

impl std::fmt::Debug for AlertmanagerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let peers: Vec<&str> = self.peers.iter().map(Url::as_str).collect();
        f.debug_struct("AlertmanagerClient")
            .field("peers", &peers)
            .field("auth", &self.auth)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl AlertmanagerClient {
    /// A client of the configured peers; `None` when `alertmanager.urls` is empty.
    pub fn new(
        settings: &AlertmanagerSettings,
        clock: Arc<dyn Clock>,
    ) -> Result<Option<AlertmanagerClient>, AlertmanagerError> {
        let peers = settings.peers().map_err(AlertmanagerError::Config)?;
        if peers.is_empty() {
            return Ok(None);
        }
        let auth = match (
            &settings.token,
            &settings.basic_user,
            &settings.basic_password,
        ) {
            (Some(token), _, _) => Auth::Bearer(token.clone()),
            (None, Some(user), Some(password)) => Auth::Basic(user.clone(), password.clone()),
            _ => Auth::None,
        };
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .build()
            .map_err(|e| {
                AlertmanagerError::Config(format!("cannot build the HTTP client: {}", chain(&e)))
            })?;
        Ok(Some(AlertmanagerClient {
            peers,
            http,
            auth,
            timeout: settings.timeout,
            on_unreachable: settings.on_unreachable,
            clock,
            last: Mutex::new(None),
        }))
    }

    /// The peers asked, as configured.
    pub fn peers(&self) -> Vec<String> {
        self.peers.iter().map(|p| p.to_string()).collect()
    }

    /// What Alertmanager says of the alert with exactly these labels now. Every peer is asked
    /// at once (each within `alertmanager.timeout`), and what the peers that answered say is
    /// combined as [`api::combine`] tells; the silences are then read for who made them and
    /// why, and inhibiting alerts for their names (when that fails, only the ids are known).
    /// An error only when no peer answered: [`AlertmanagerError::Unreachable`].
    pub async fn current(&self, labels: &Labels) -> Result<AlertNow, AlertmanagerError> {
        let filters = api::filters(labels);
        let asked = join_all(self.peers.iter().map(|peer| async {
            let mut url = endpoint(peer, "api/v2/alerts");
            {
                let mut q = url.query_pairs_mut();
                for f in &filters {
                    q.append_pair("filter", f);
                }
                for flag in ["active", "silenced", "inhibited", "unprocessed"] {
                    q.append_pair(flag, "true");
                }
            }
            self.fetch::<Vec<GettableAlert>>(peer, url, "GET /api/v2/alerts")
                .await
        }))
        .await;
        let now = self.clock.now();
        let mut views = Vec::new();
        let mut errors = Vec::new();
        for (peer, answer) in self.peers.iter().zip(asked) {
            match answer {
                Ok(alerts) => views.push((peer, api::find(&alerts, labels, now))),
                Err(e) => {
                    tracing::warn!(peer = %peer, error = %e, "an Alertmanager peer did not answer the check");
                    errors.push(e);
                }
            }
        }
        self.remember(LastCheck {
            at: now,
            answered: views.len(),
            errors: errors.iter().map(ToString::to_string).collect(),
        });
        if views.is_empty() {
            return Err(AlertmanagerError::Unreachable(errors));
        }
        let combined = api::combine(&views.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>());
        Ok(match combined {
            AlertNow::Silenced { by } => AlertNow::Silenced {
                by: join_all(by.into_iter().map(|s| async {
                    let peer = reported_by(&views, |v| matches!(v, PeerView::Found { silenced_by, .. } if silenced_by.contains(&s.id)));
                    match peer {
                        Some(peer) => self.silence(peer, s).await,
                        None => s,
                    }
                }))
                .await,
            },
            AlertNow::Inhibited { by } => {
                let peer = reported_by(&views, |v| {
                    matches!(v, PeerView::Found { inhibited_by, .. } if !inhibited_by.is_empty())
                });
                AlertNow::Inhibited {
                    by: match peer {
                        Some(peer) => self.inhibitors(peer, by).await,
                        None => by,
                    },
                }
            }
            other => other,
        })
    }

    /// Creates a silence of `duration` from now for exactly these labels (one equality
    /// matcher per label), on the first peer that takes it (the cluster gossips it to the
    /// others). This is what the Slack "Silence 1h" button calls, with the Slack user as
    /// `created_by` and [`super::slack_silence_comment`] as `comment`.
    pub async fn create_silence(
        &self,
        labels: &Labels,
        created_by: &str,
        comment: &str,
        duration: Duration,
    ) -> Result<SilenceId, AlertmanagerError> {
        if labels.is_empty() {
            return Err(AlertmanagerError::Invalid(
                "the alert has no labels: a silence without matchers would silence everything"
                    .into(),
            ));
        }
        if created_by.trim().is_empty() {
            return Err(AlertmanagerError::Invalid(
                "createdBy is empty: name the person who silences".into(),
            ));
        }
        if comment.trim().is_empty() {
            return Err(AlertmanagerError::Invalid(
                "the comment is empty: say why (amtool requires one too)".into(),
            ));
        }
        let ends = chrono::Duration::from_std(duration)
            .ok()
            .filter(|d| *d > chrono::Duration::zero())
            .ok_or_else(|| {
                AlertmanagerError::Invalid(format!(
                    "a silence of {} cannot be made: give a positive duration such as 1h",
                    human(duration)
                ))
            })?;
        let now = self.clock.now();
        let body = PostableSilence {
            matchers: api::matchers_for(labels),
            starts_at: now,
            ends_at: now + ends,
            created_by: created_by.to_owned(),
            comment: comment.to_owned(),
        };
        let mut errors = Vec::new();
        for peer in &self.peers {
            let request = self
                .request(Method::POST, endpoint(peer, "api/v2/silences"))
                .json(&body);
            match self
                .answer::<api::SilenceCreated>(peer, request, "POST /api/v2/silences")
                .await
            {
                Ok(created) => {
                    tracing::info!(peer = %peer, silence = %created.silence_id, created_by, "silence created in Alertmanager");
                    return Ok(SilenceId(created.silence_id));
                }
                Err(e) => {
                    tracing::warn!(peer = %peer, error = %e, "an Alertmanager peer did not take the silence");
                    errors.push(e);
                }
            }
        }
        Err(AlertmanagerError::NotAccepted(errors))
    }

    /// For `/-/ready`: the peers and what the last check found. Never a readiness failure.
    pub fn status(&self) -> String {
        let peers = self.peers.len();
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let what = match last {
            None => "not asked yet".to_owned(),
            Some(c) if c.errors.is_empty() => {
                format!("last check at {}: every peer answered", c.at.to_rfc3339())
            }
            Some(c) => format!(
                "last check at {}: {} of {peers} answered ({})",
                c.at.to_rfc3339(),
                c.answered,
                c.errors.join("; ")
            ),
        };
        format!(
            "{peers} peer{} ({}); {what}",
            if peers == 1 { "" } else { "s" },
            self.peers().join(", ")
        )
    }

    fn remember(&self, check: LastCheck) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(check);
    }

    /// The silence's author, comment and end, from the peer that reported it; only its id
    /// when it cannot be read.
    async fn silence(&self, peer: &Url, s: SilenceFact) -> SilenceFact {
        let url = endpoint(peer, &format!("api/v2/silence/{}", s.id));
        match self
            .fetch::<GettableSilence>(peer, url, "GET /api/v2/silence/{id}")
            .await
        {
            Ok(found) if found.id == s.id => SilenceFact {
                id: found.id,
                created_by: found.created_by,
                comment: found.comment,
                ends_at: found.ends_at,
            },
            Ok(_) => s,
            Err(e) => {
                tracing::warn!(peer = %peer, silence = %s.id, error = %e, "could not read the silence; naming it by its id");
                s
            }
        }
    }

    /// The inhibiting alerts' names, from the peer that reported them (one more look at its
    /// alerts, only when the alert is inhibited).
    async fn inhibitors(&self, peer: &Url, by: Vec<InhibitorFact>) -> Vec<InhibitorFact> {
        let mut url = endpoint(peer, "api/v2/alerts");
        url.query_pairs_mut()
            .append_pair("active", "true")
            .append_pair("silenced", "true")
            .append_pair("inhibited", "true");
        match self
            .fetch::<Vec<GettableAlert>>(peer, url, "GET /api/v2/alerts")
            .await
        {
            Ok(alerts) => by
                .into_iter()
                .map(|i| InhibitorFact {
                    alertname: alerts
                        .iter()
                        .find(|a| a.fingerprint == i.fingerprint)
                        .and_then(|a| a.labels.get("alertname").cloned()),
                    ..i
                })
                .collect(),
            Err(e) => {
                tracing::warn!(peer = %peer, error = %e, "could not read the inhibiting alerts; naming them by fingerprint");
                by
            }
        }
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let r = self.http.request(method, url);
        match &self.auth {
            Auth::None => r,
            Auth::Bearer(token) => r.bearer_auth(token.expose_secret()),
            Auth::Basic(user, password) => r.basic_auth(user, Some(password.expose_secret())),
        }
    }

    async fn fetch<T: DeserializeOwned>(
        &self,
        peer: &Url,
        url: Url,
        what: &'static str,
    ) -> Result<T, AlertmanagerError> {
        self.answer(peer, self.request(Method::GET, url), what)
            .await
    }

    /// Sends `request` and reads a 2xx JSON answer; any other answer is an error naming the
    /// peer, the call, the status and the start of the body.
    async fn answer<T: DeserializeOwned>(
        &self,
        peer: &Url,
        request: RequestBuilder,
        what: &'static str,
    ) -> Result<T, AlertmanagerError> {
        let peer_text = || peer.to_string();
        let response = request
            .send()
            .await
            .map_err(|e| AlertmanagerError::Transport {
                peer: peer_text(),
                detail: if e.is_timeout() {
                    format!("no answer within {} ({})", human(self.timeout), chain(&e))
                } else {
                    chain(&e)
                },
            })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| AlertmanagerError::Transport {
                peer: peer_text(),
                detail: format!("the answer to {what} broke off: {}", chain(&e)),
            })?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            let excerpt: String = text.trim().chars().take(BODY_EXCERPT_CHARS).collect();
            return Err(AlertmanagerError::Status {
                peer: peer_text(),
                what,
                status: status.as_u16(),
                body: excerpt,
            });
        }
        serde_json::from_slice(&body).map_err(|e| AlertmanagerError::Decode {
            peer: peer_text(),
            what,
            detail: e.to_string(),
        })
    }
}

#[async_trait]
impl AlertCheck for AlertmanagerClient {
    async fn current(&self, labels: &Labels) -> Result<AlertNow, String> {
        AlertmanagerClient::current(self, labels)
            .await
            .map_err(|e| match e {
                // The engine says "Alertmanager unreachable (…)" itself.
                AlertmanagerError::Unreachable(each) => super::joined(&each),
                other => other.to_string(),
            })
    }

    fn on_unreachable(&self) -> OnUnreachable {
        self.on_unreachable
    }
}

/// `path` under the peer's base URL (which may carry a route prefix: `http://h/am/`).
fn endpoint(peer: &Url, path: &str) -> Url {
    let mut url = peer.clone();
    let base = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{base}/{path}"));
    url
}

/// The first peer whose view `is` holds.
fn reported_by<'a>(
    views: &[(&'a Url, PeerView)],
    is: impl Fn(&PeerView) -> bool,
) -> Option<&'a Url> {
    views.iter().find(|(_, v)| is(v)).map(|(p, _)| *p)
}

/// An error and its sources, joined with `: ` (reqwest's own message is terse).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_a_route_prefix() {
        let at = |base: &str| endpoint(&Url::parse(base).unwrap(), "api/v2/alerts").to_string();
        assert_eq!(at("http://am:9093"), "http://am:9093/api/v2/alerts");
        assert_eq!(at("http://am:9093/"), "http://am:9093/api/v2/alerts");
        assert_eq!(
            at("https://h/alertmanager/"),
            "https://h/alertmanager/api/v2/alerts"
        );
    }
}
