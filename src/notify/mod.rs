//! Telling people: the Slack Web API and PagerDuty Events API v2 clients, and the outbox
//! deliverer that sends stored messages through them in order, with retries.

pub mod outbox;
pub mod pagerduty;
pub mod slack;

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

/// `slack:` in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlackSettings {
    /// The Web API base (`REMEDIATOR_SLACK__API_URL`).
    pub api_url: String,
    /// A bot token (`xoxb-…`, `REMEDIATOR_SLACK__BOT_TOKEN`). Without it messages are only logged.
    pub bot_token: Option<SecretString>,
    /// Where incident threads go (`REMEDIATOR_SLACK__CHANNEL`): an ID (`C…`) or a name
    /// (`#voiceai-incidents`), resolved to its ID at start and after each reload.
    pub channel: String,
    /// Verifies `/hooks/slack/interactions` (`REMEDIATOR_SLACK__SIGNING_SECRET`).
    pub signing_secret: Option<SecretString>,
    #[serde(with = "crate::domain::duration::serde_text")]
    pub timeout: Duration,
    /// Channels per page when `channel` is a name resolved with `conversations.list`
    /// (`REMEDIATOR_SLACK__LIST_PAGE_SIZE`, at most 1000).
    pub list_page_size: u32,
}

impl Default for SlackSettings {
    fn default() -> Self {
        SlackSettings {
            api_url: slack::DEFAULT_API_URL.to_string(),
            bot_token: None,
            channel: "#voiceai-incidents".to_string(),
            signing_secret: None,
            timeout: Duration::from_secs(10),
            list_page_size: 200,
        }
    }
}

/// `pagerduty:` in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PagerDutySettings {
    /// The Events API v2 endpoint (`REMEDIATOR_PAGERDUTY__URL`).
    pub url: String,
    /// The integration's routing key (`REMEDIATOR_PAGERDUTY__ROUTING_KEY`). Without it pages
    /// go to Slack only.
    pub routing_key: Option<SecretString>,
    #[serde(with = "crate::domain::duration::serde_text")]
    pub timeout: Duration,
}

impl Default for PagerDutySettings {
    fn default() -> Self {
        PagerDutySettings {
            url: "https://events.pagerduty.com/v2/enqueue".to_string(),
            routing_key: None,
            timeout: Duration::from_secs(10),
        }
    }
}

/// The HTTP client both SaaS clients use: `timeout` for the whole call and for connecting.
/// `service` names it in the error ("Slack", "PagerDuty").
pub(crate) fn http_client(service: &str, timeout: Duration) -> Result<reqwest::Client, String> {
    if timeout.is_zero() {
        return Err(format!(
            "the {service} timeout is zero: set a positive timeout such as 10s"
        ));
    }
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {}", chain(&e)))
}

/// An error and its sources, joined with `: ` (reqwest's own message is terse).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
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

/// `text` cut to at most `max` characters, ending in `…` when cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((cut, _)) if text[cut..].chars().nth(1).is_some() => {
            let mut out = text[..cut].to_owned();
            out.push('…');
            out
        }
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_counts_characters_and_marks_the_cut() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "ab…");
        assert_eq!(truncate("ééé", 3), "ééé");
        assert_eq!(truncate("éééé", 3).chars().count(), 3);
        assert_eq!(truncate("", 3), "");
    }
}
