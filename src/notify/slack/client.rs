//! The Slack Web API client: calls, their errors, and per-channel pacing.
//!
//! - [`SlackClient`]: `chat.postMessage`, `chat.update`, `users.lookupByEmail` and
//!   `conversations.list` (a channel's ID from its name, [`SlackClient::find_channel`]) with a bot
//!   token sent as `Authorization: Bearer xoxb-…` and JSON bodies (CONTRACTS.md §2.1).
//! - [`SlackError`]: every failure, with [`SlackError::is_retriable`] and
//!   [`SlackError::retry_after`] for the outbox's retry stage.
//!
//! **Invariant:** Slack answers most failures with HTTP 200 and `{"ok": false, "error": …}`,
//! so every response's `ok` is parsed; an HTTP status alone never means success.
//! **Invariant:** the token is held in a [`SecretString`] and appears in no `Debug`, `Display`
//! or log line; the `Authorization` header is marked sensitive.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};

use super::MAX_TEXT_CHARS;
use crate::notify::{chain, http_client, truncate};

/// Slack's Web API base URL; methods are `{base}/{method}`.
pub const DEFAULT_API_URL: &str = "https://slack.com/api";

/// The metadata `event_type` of messages posted with [`SlackClient::post_tagged`].
pub const TAG_EVENT_TYPE: &str = "remediator_outbox";

/// Burst allowed by [`default_channel_pacing`].
const PACING_BURST: NonZeroU32 = match NonZeroU32::new(4) {
    Some(n) => n,
    None => NonZeroU32::MIN,
};

/// Per-channel pacing a new client applies to `chat.postMessage` and `chat.update`: one call
/// a second with short bursts of up to 4 (Slack: "Posting messages – 1 per second – Short
/// bursts >1 allowed", CONTRACTS.md §2.5).
pub fn default_channel_pacing() -> Quota {
    Quota::per_second(NonZeroU32::MIN).allow_burst(PACING_BURST)
}

/// Wait used when a 429 carries no usable `Retry-After` (what Slack's own SDK does).
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// `ok:false` error codes that describe a passing condition on Slack's side.
const RETRIABLE_API_ERRORS: &[&str] = &[
    "ratelimited",
    "rate_limited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
];

/// Everything that can go wrong talking to Slack.
#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    /// HTTP 429: wait `retry_after` (from the `Retry-After` header) before the next call.
    #[error("Slack rate-limited the request: retry in {}s", retry_after.as_secs().max(1))]
    RateLimited { retry_after: Duration },
    /// HTTP 200 with `{"ok": false, "error": error}`.
    #[error("Slack refused the request with `{error}`: {}", api_hint(.error))]
    Api { error: String },
    /// An HTTP status Slack does not use for API errors (5xx, or 4xx from a wrong base URL).
    #[error("Slack answered HTTP {status}: {}", http_hint(*.status))]
    Http { status: u16 },
    /// No usable answer: connection refused, timeout, TLS, or an unreadable body.
    #[error("cannot reach Slack: {0}")]
    Transport(String),
    /// The client or the call was set up wrongly; fix the configuration.
    #[error("Slack client misconfigured: {0}")]
    Config(String),
}

impl SlackError {
    /// Whether the same call may succeed later without a change on our side.
    pub fn is_retriable(&self) -> bool {
        match self {
            SlackError::RateLimited { .. } | SlackError::Transport(_) => true,
            SlackError::Http { status } => *status >= 500,
            SlackError::Api { error } => RETRIABLE_API_ERRORS.contains(&error.as_str()),
            SlackError::Config(_) => false,
        }
    }

    /// How long Slack asked us to wait, when it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SlackError::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}

fn api_hint(error: &str) -> &'static str {
    match error {
        "channel_not_found" => {
            "check the channel ID (C…) in the configuration and that the bot can see the channel"
        }
        "not_in_channel" => {
            "invite the bot to the channel (/invite @bot) or grant it the chat:write.public scope"
        }
        "is_archived" => "the channel is archived: unarchive it or configure another channel",
        "not_authed" | "invalid_auth" | "token_revoked" | "token_expired" | "account_inactive" => {
            "check the bot token (xoxb-…) and reinstall the Slack app if it was revoked"
        }
        "missing_scope" | "no_permission" => {
            "add the missing OAuth scope (chat:write, users:read.email, channels:read, groups:read, channels:history, groups:history) and reinstall the app"
        }
        "invalid_cursor" => "the listing's cursor was refused: it is asked again from the start",
        "msg_too_long" => "the message is too long: shorten the text or blocks",
        "invalid_blocks" | "invalid_blocks_format" => "the Block Kit payload was rejected",
        "message_not_found" => "the message to update no longer exists (deleted?)",
        "cant_update_message" => "only messages posted by this bot can be updated",
        "edit_window_closed" => "the message is too old to be edited",
        "thread_not_found" => "the thread root no longer exists: post without thread_ts",
        "users_not_found" => "no Slack user has that e-mail address",
        e if RETRIABLE_API_ERRORS.contains(&e) => "a temporary Slack problem: retry later",
        _ => "see the method's error list on docs.slack.dev",
    }
}

fn http_hint(status: u16) -> &'static str {
    if status >= 500 {
        "Slack is having trouble: retry later"
    } else {
        "check the Slack API base URL in the configuration"
    }
}

/// The root message of an incident, kept for `chat.update` and thread replies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    /// The channel ID Slack posted to (`C…`), as Slack returned it.
    pub channel: String,
    /// The message timestamp, e.g. `"1503435956.000247"`; always a string, never a float.
    pub ts: String,
}

/// A Slack Web API client bound to one workspace's bot token.
#[derive(Clone)]
pub struct SlackClient {
    http: reqwest::Client,
    base: reqwest::Url,
    token: SecretString,
    /// Keyed by channel; shared by clones so they pace together.
    pacing: Option<Arc<DefaultKeyedRateLimiter<String>>>,
}

impl fmt::Debug for SlackClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackClient")
            .field("base", &self.base.as_str())
            .field("token", &"[redacted]")
            .field("paced", &self.pacing.is_some())
            .finish()
    }
}

/// The envelope every Web API response has.
#[derive(Deserialize)]
struct Envelope {
    ok: Option<bool>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    warning: Option<String>,
}

#[derive(Deserialize)]
struct PostedBody {
    channel: Option<String>,
    ts: Option<String>,
}

/// One page of `conversations.list`.
#[derive(Deserialize)]
struct ChannelPage {
    #[serde(default)]
    channels: Vec<ListedChannel>,
    #[serde(default)]
    response_metadata: Option<PageMetadata>,
}

#[derive(Deserialize)]
struct ListedChannel {
    id: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct PageMetadata {
    #[serde(default)]
    next_cursor: Option<String>,
}

/// Times one page of a listing is asked for again after a 429.
const PAGE_RETRIES: usize = 5;

/// Whether a configured channel is an ID (`C…`, `G…`, `D…`: upper-case letters and digits;
/// Slack's channel names are lower-case) rather than a name to resolve.
pub fn is_channel_id(channel: &str) -> bool {
    let mut chars = channel.chars();
    matches!(chars.next(), Some('C' | 'G' | 'D'))
        && channel.len() >= 7
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

#[derive(Deserialize)]
struct LookupBody {
    user: Option<LookupUser>,
}

#[derive(Deserialize)]
struct LookupUser {
    id: String,
}

impl SlackClient {
    /// A client for the Web API at `api_url` (normally [`DEFAULT_API_URL`]).
    ///
    /// `timeout` bounds each whole call; a call that exceeds it fails with a retriable
    /// [`SlackError::Transport`]. Writes are paced per channel with
    /// [`default_channel_pacing`]; see [`SlackClient::with_channel_pacing`].
    pub fn new(
        api_url: &str,
        token: SecretString,
        timeout: Duration,
    ) -> Result<SlackClient, SlackError> {
        let trimmed = api_url.trim().trim_end_matches('/');
        let base = reqwest::Url::parse(&format!("{trimmed}/")).map_err(|e| {
            SlackError::Config(format!(
                "Slack API URL {api_url:?} is not a URL ({e}): use e.g. {DEFAULT_API_URL}"
            ))
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(SlackError::Config(format!(
                "Slack API URL {api_url:?} must be http(s), e.g. {DEFAULT_API_URL}"
            )));
        }
        let secret = token.expose_secret();
        if secret.trim().is_empty() {
            return Err(SlackError::Config(
                "the Slack bot token is empty: set it to the app's Bot User OAuth Token (xoxb-…)"
                    .into(),
            ));
        }
        if secret.trim() != secret || HeaderValue::from_str(&format!("Bearer {secret}")).is_err() {
            return Err(SlackError::Config(
                "the Slack bot token contains whitespace or control characters: copy it again"
                    .into(),
            ));
        }
        let http = http_client("Slack", timeout).map_err(SlackError::Config)?;
        Ok(SlackClient {
            http,
            base,
            token,
            pacing: Some(Arc::new(DefaultKeyedRateLimiter::keyed(
                default_channel_pacing(),
            ))),
        })
    }

    /// Replaces the per-channel pacing of `chat.postMessage`/`chat.update` (`None`: no
    /// pacing, e.g. when the caller queues per channel itself). A paced call waits for its
    /// turn before its timeout starts.
    pub fn with_channel_pacing(mut self, quota: Option<Quota>) -> SlackClient {
        self.pacing = quota.map(|q| Arc::new(DefaultKeyedRateLimiter::keyed(q)));
        self
    }

    async fn pace(&self, channel: &str) {
        if let Some(limiter) = &self.pacing {
            limiter.until_key_ready(&channel.to_owned()).await;
        }
    }

    /// Posts `text` (and optional `blocks`) to `channel`, as a reply when `thread_ts` is the
    /// root message's ts. Text beyond [`MAX_TEXT_CHARS`] is cut with `…`.
    #[tracing::instrument(level = "debug", skip(self, text, blocks))]
    pub async fn post_message(
        &self,
        channel: &str,
        text: &str,
        blocks: Option<&Value>,
        thread_ts: Option<&str>,
    ) -> Result<Posted, SlackError> {
        self.post(channel, text, blocks, thread_ts, None).await
    }

    /// Posts with a tag in the message's metadata (`event_type: remediator_outbox`), so that
    /// [`SlackClient::find_tagged`] can tell, after a timeout, whether Slack already took it.
    pub async fn post_tagged(
        &self,
        channel: &str,
        text: &str,
        blocks: Option<&Value>,
        thread_ts: Option<&str>,
        tag: &str,
    ) -> Result<Posted, SlackError> {
        let metadata = json!({ "event_type": TAG_EVENT_TYPE, "event_payload": { "id": tag } });
        self.post(channel, text, blocks, thread_ts, Some(metadata))
            .await
    }

    /// The `ts` of a message posted with [`SlackClient::post_tagged`] and `tag`: among the
    /// replies to `thread_ts`, or among the channel's recent messages when `None`.
    /// (`conversations.replies` / `conversations.history`, scope `channels:history`.)
    pub async fn find_tagged(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        tag: &str,
    ) -> Result<Option<String>, SlackError> {
        require_channel(channel)?;
        let method = if thread_ts.is_some() {
            "conversations.replies"
        } else {
            "conversations.history"
        };
        let mut url = self.method_url(method)?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("channel", channel);
            q.append_pair("include_all_metadata", "true");
            q.append_pair("limit", "200");
            if let Some(ts) = thread_ts {
                q.append_pair("ts", ts);
            }
        }
        let request = self.http.get(url).header(AUTHORIZATION, self.auth()?);
        let value = self.send(method, request).await?;
        let found = value["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| {
                m["metadata"]["event_type"] == TAG_EVENT_TYPE
                    && m["metadata"]["event_payload"]["id"] == tag
            });
        Ok(found.and_then(|m| m["ts"].as_str()).map(str::to_owned))
    }

    async fn post(
        &self,
        channel: &str,
        text: &str,
        blocks: Option<&Value>,
        thread_ts: Option<&str>,
        metadata: Option<Value>,
    ) -> Result<Posted, SlackError> {
        require_channel(channel)?;
        let mut body = json!({ "channel": channel, "text": truncate(text, MAX_TEXT_CHARS) });
        if let Some(blocks) = blocks {
            body["blocks"] = blocks.clone();
        }
        if let Some(thread_ts) = thread_ts {
            body["thread_ts"] = Value::String(thread_ts.to_owned());
        }
        if let Some(metadata) = metadata {
            body["metadata"] = metadata;
        }
        self.pace(channel).await;
        let value = self.post_json("chat.postMessage", &body).await?;
        let posted: PostedBody = serde_json::from_value(value).map_err(|e| {
            SlackError::Transport(format!("chat.postMessage answer is not understood: {e}"))
        })?;
        match (posted.channel, posted.ts) {
            (Some(channel), Some(ts)) => Ok(Posted { channel, ts }),
            _ => Err(SlackError::Transport(
                "chat.postMessage answered ok without channel or ts".into(),
            )),
        }
    }

    /// Replaces the text (and blocks) of the message `ts` in `channel` (`chat.update`).
    ///
    /// With `blocks: None` the message keeps its previous blocks; pass `Some(&json!([]))` to
    /// remove them.
    #[tracing::instrument(level = "debug", skip(self, text, blocks))]
    pub async fn update_message(
        &self,
        channel: &str,
        ts: &str,
        text: &str,
        blocks: Option<&Value>,
    ) -> Result<(), SlackError> {
        require_channel(channel)?;
        if ts.trim().is_empty() {
            return Err(SlackError::Config(
                "chat.update needs the ts of the message to update; it is empty".into(),
            ));
        }
        let mut body =
            json!({ "channel": channel, "ts": ts, "text": truncate(text, MAX_TEXT_CHARS) });
        if let Some(blocks) = blocks {
            body["blocks"] = blocks.clone();
        }
        self.pace(channel).await;
        self.post_json("chat.update", &body).await.map(|_| ())
    }

    /// Answers an interaction through its `response_url` with an ephemeral message (only the
    /// user who pressed sees it; the message they pressed stays): `{"text", "response_type":
    /// "ephemeral", "replace_original": false}`, JSON, no token (CONTRACTS.md §2.7). Slack
    /// takes up to 5 answers per `response_url` within 30 minutes.
    #[tracing::instrument(level = "debug", skip(self, response_url, text))]
    pub async fn respond_ephemeral(
        &self,
        response_url: &str,
        text: &str,
    ) -> Result<(), SlackError> {
        let url = reqwest::Url::parse(response_url.trim()).map_err(|e| {
            SlackError::Config(format!("the interaction's response_url is not a URL: {e}"))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(SlackError::Config(
                "the interaction's response_url is not http(s)".into(),
            ));
        }
        let body = json!({
            "text": truncate(text, MAX_TEXT_CHARS),
            "response_type": "ephemeral",
            "replace_original": false,
        });
        let response = self
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| transport("response_url", &e))?;
        let status = response.status();
        if status.as_u16() == 429 {
            return Err(SlackError::RateLimited {
                retry_after: DEFAULT_RETRY_AFTER,
            });
        }
        if !status.is_success() {
            return Err(SlackError::Http {
                status: status.as_u16(),
            });
        }
        // A JSON answer may still say `ok: false` (`expired_url`, `used_url`…).
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport("response_url", &e))?;
        match serde_json::from_slice::<Envelope>(&bytes) {
            Ok(Envelope {
                ok: Some(false),
                error,
                ..
            }) => Err(SlackError::Api {
                error: error.unwrap_or_else(|| "unknown_error".into()),
            }),
            _ => Ok(()),
        }
    }

    /// The Slack user ID for an e-mail address, `None` when no user has it
    /// (`users_not_found`). Needs the `users:read.email` scope.
    #[tracing::instrument(level = "debug", skip(self, email))]
    pub async fn lookup_user_by_email(&self, email: &str) -> Result<Option<String>, SlackError> {
        let email = email.trim();
        if email.is_empty() {
            return Ok(None);
        }
        let mut url = self.method_url("users.lookupByEmail")?;
        url.query_pairs_mut().append_pair("email", email);
        let request = self.http.get(url).header(AUTHORIZATION, self.auth()?);
        match self.send("users.lookupByEmail", request).await {
            Ok(value) => {
                let body: LookupBody = serde_json::from_value(value).map_err(|e| {
                    SlackError::Transport(format!(
                        "users.lookupByEmail answer is not understood: {e}"
                    ))
                })?;
                match body.user {
                    Some(user) => Ok(Some(user.id)),
                    None => Err(SlackError::Transport(
                        "users.lookupByEmail answered ok without a user".into(),
                    )),
                }
            }
            Err(SlackError::Api { error }) if error == "users_not_found" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The ID of the channel called `name` (with or without `#`): `conversations.list` of the
    /// public and private channels the bot can see, archived ones excluded, `page_size` a
    /// page, following `response_metadata.next_cursor` until it is found or the list ends
    /// (`Ok(None)`). A 429 waits its `Retry-After` and asks for the same page again, a few
    /// times. Needs `channels:read` (and `groups:read` for private channels).
    #[tracing::instrument(level = "debug", skip(self))]
    pub async fn find_channel(
        &self,
        name: &str,
        page_size: u32,
    ) -> Result<Option<String>, SlackError> {
        let name = name.trim().trim_start_matches('#');
        require_channel(name)?;
        let mut cursor = String::new();
        let mut limited = 0;
        loop {
            let mut url = self.method_url("conversations.list")?;
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("types", "public_channel,private_channel");
                q.append_pair("exclude_archived", "true");
                q.append_pair("limit", &page_size.clamp(1, 1000).to_string());
                if !cursor.is_empty() {
                    q.append_pair("cursor", &cursor);
                }
            }
            let request = self.http.get(url).header(AUTHORIZATION, self.auth()?);
            let page: ChannelPage = match self.send("conversations.list", request).await {
                Ok(value) => serde_json::from_value(value).map_err(|e| {
                    SlackError::Transport(format!(
                        "conversations.list answer is not understood: {e}"
                    ))
                })?,
                Err(SlackError::RateLimited { retry_after }) if limited < PAGE_RETRIES => {
                    limited += 1;
                    tracing::debug!(retry_in = ?retry_after, "conversations.list rate-limited; asking for the same page again");
                    tokio::time::sleep(retry_after).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            limited = 0;
            if let Some(found) = page.channels.iter().find(|c| c.name == name) {
                return Ok(Some(found.id.clone()));
            }
            match page.response_metadata.and_then(|m| m.next_cursor) {
                Some(next) if !next.is_empty() => cursor = next,
                _ => return Ok(None),
            }
        }
    }

    fn method_url(&self, method: &str) -> Result<reqwest::Url, SlackError> {
        self.base.join(method).map_err(|e| {
            SlackError::Config(format!(
                "cannot build the URL for Slack method {method}: {e}"
            ))
        })
    }

    fn auth(&self) -> Result<HeaderValue, SlackError> {
        let mut value = HeaderValue::from_str(&format!("Bearer {}", self.token.expose_secret()))
            .map_err(|_| {
                SlackError::Config(
                    "the Slack bot token cannot be sent in a header: copy it again".into(),
                )
            })?;
        value.set_sensitive(true);
        Ok(value)
    }

    async fn post_json(&self, method: &str, body: &Value) -> Result<Value, SlackError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| SlackError::Config(format!("cannot encode the {method} body: {e}")))?;
        let request = self
            .http
            .post(self.method_url(method)?)
            .header(AUTHORIZATION, self.auth()?)
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .body(bytes);
        self.send(method, request).await
    }

    /// Sends one request and turns the answer into the JSON body of an `ok: true` response.
    async fn send(
        &self,
        method: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<Value, SlackError> {
        let response = request.send().await.map_err(|e| transport(method, &e))?;
        let status = response.status();
        if status.as_u16() == 429 {
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_RETRY_AFTER);
            return Err(SlackError::RateLimited { retry_after });
        }
        if status.is_server_error() {
            return Err(SlackError::Http {
                status: status.as_u16(),
            });
        }
        let bytes = response.bytes().await.map_err(|e| transport(method, &e))?;
        let parsed = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| Some((serde_json::from_value::<Envelope>(v.clone()).ok()?, v)));
        let Some((envelope, value)) = parsed else {
            return Err(if status.is_success() {
                SlackError::Transport(format!(
                    "{method} answered HTTP {status} without a JSON body"
                ))
            } else {
                SlackError::Http {
                    status: status.as_u16(),
                }
            });
        };
        match envelope.ok {
            Some(true) if status.is_success() => {
                if let Some(warning) = envelope.warning {
                    tracing::debug!(method, warning, "Slack answered with a warning");
                }
                Ok(value)
            }
            Some(false) => Err(SlackError::Api {
                error: envelope.error.unwrap_or_else(|| "unknown_error".into()),
            }),
            Some(true) => Err(SlackError::Http {
                status: status.as_u16(),
            }),
            None if status.is_success() => Err(SlackError::Transport(format!(
                "{method} answered without the `ok` field"
            ))),
            None => Err(SlackError::Http {
                status: status.as_u16(),
            }),
        }
    }
}

fn require_channel(channel: &str) -> Result<(), SlackError> {
    if channel.trim().is_empty() {
        return Err(SlackError::Config(
            "no Slack channel given: configure the channel ID (C…)".into(),
        ));
    }
    Ok(())
}

fn transport(method: &str, e: &reqwest::Error) -> SlackError {
    if e.is_timeout() {
        SlackError::Transport(format!("{method} timed out: {}", chain(e)))
    } else {
        SlackError::Transport(format!("{method}: {}", chain(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retriable_errors_are_the_passing_ones() {
        let retriable = [
            SlackError::RateLimited {
                retry_after: Duration::from_secs(3),
            },
            SlackError::Http { status: 503 },
            SlackError::Transport("x".into()),
            SlackError::Api {
                error: "fatal_error".into(),
            },
            SlackError::Api {
                error: "ratelimited".into(),
            },
            SlackError::Api {
                error: "request_timeout".into(),
            },
        ];
        for e in retriable {
            assert!(e.is_retriable(), "{e}");
        }
        for code in [
            "channel_not_found",
            "not_in_channel",
            "invalid_auth",
            "is_archived",
            "msg_too_long",
        ] {
            let e = SlackError::Api { error: code.into() };
            assert!(!e.is_retriable(), "{e}");
        }
        assert!(!SlackError::Http { status: 404 }.is_retriable());
        assert!(!SlackError::Config("x".into()).is_retriable());
    }

    #[test]
    fn ids_are_told_from_names() {
        for id in ["C0INCIDENT1", "G0VOICEAI1", "C1H9RESGL", "D024BE91L"] {
            assert!(is_channel_id(id), "{id}");
        }
        for name in [
            "#voiceai-incidents",
            "voiceai-incidents",
            "general",
            "C0x",
            "Cabcdefgh",
            "",
        ] {
            assert!(!is_channel_id(name), "{name}");
        }
    }

    #[test]
    fn messages_tell_what_to_do() {
        let e = SlackError::Api {
            error: "not_in_channel".into(),
        };
        assert!(e.to_string().contains("/invite"), "{e}");
    }

    #[test]
    fn debug_does_not_show_the_token() {
        let client = SlackClient::new(
            DEFAULT_API_URL,
            SecretString::from("xoxb-very-secret"),
            Duration::from_secs(5),
        );
        let shown = format!("{client:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
    }

    #[test]
    fn new_rejects_bad_configuration() {
        let t = Duration::from_secs(5);
        for (url, token) in [
            ("not a url", "xoxb-1"),
            ("ftp://slack.com/api", "xoxb-1"),
            (DEFAULT_API_URL, ""),
            (DEFAULT_API_URL, "xoxb-1\n"),
        ] {
            let r = SlackClient::new(url, SecretString::from(token), t);
            assert!(matches!(r, Err(SlackError::Config(_))), "{url} {token:?}");
        }
        assert!(matches!(
            SlackClient::new(DEFAULT_API_URL, SecretString::from("x"), Duration::ZERO),
            Err(SlackError::Config(_))
        ));
    }
}
