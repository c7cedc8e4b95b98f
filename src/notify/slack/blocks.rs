//! Block Kit rendering of incident messages, and Slack's text formatting rules (CONTRACTS.md
//! §2.4, §2.6): [`escape`], [`mention`], [`incident_blocks`] of an [`IncidentView`].
//!
//! Pure: no I/O. [`ACK_ACTION_ID`] names the Acknowledge button here, where it is rendered;
//! `http::slack` imports it to read the button presses Slack sends back.

use crate::domain::RootState;
use serde_json::{json, Value};

use super::MAX_TEXT_CHARS;
use crate::notify::truncate;

/// Escapes `&`, `<` and `>` as Slack's formatting rules require for user-supplied text.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// A mention of a user: `<@U…>` when the Slack ID is known, else the escaped e-mail.
pub fn mention(user_id: Option<&str>, email: &str) -> String {
    match user_id.map(str::trim) {
        Some(id) if !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()) => {
            format!("<@{id}>")
        }
        _ => escape(email),
    }
}

/// What an incident message shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentView {
    pub id: i64,
    pub priority: String,
    pub alertname: String,
    pub service: String,
    pub rto: String,
    pub state: RootState,
    /// Already formatted with [`mention`].
    pub owner_mentions: Vec<String>,
    pub summary: String,
    pub time_to_recover: Option<String>,
    pub acknowledged_by: Option<String>,
}

/// The `action_id` of the Acknowledge button; its `value` is the incident id.
pub const ACK_ACTION_ID: &str = "ack";

fn state_emoji(state: RootState) -> &'static str {
    match state {
        RootState::Firing => ":red_circle:",
        RootState::Remediating => ":hammer_and_wrench:",
        RootState::Recovered => ":large_green_circle:",
        RootState::Escalated => ":rotating_light:",
        RootState::Resolved => ":white_check_mark:",
    }
}

/// The incident's root message: `(fallback text, blocks)`.
///
/// The fallback text carries the owner mentions so that notifications ping them. The blocks
/// hold a header, the facts as fields, the summary, and an Acknowledge button (`action_id`
/// [`ACK_ACTION_ID`], `value` = incident id) unless the incident is acknowledged or resolved.
pub fn incident_blocks(view: &IncidentView) -> (String, Value) {
    let owners = if view.owner_mentions.is_empty() {
        "_unassigned_".to_owned()
    } else {
        view.owner_mentions.join(" ")
    };
    let mut fallback = format!(
        "[{}] {} on {}: {} (RTO {}, incident #{})",
        escape(&view.priority),
        escape(&view.alertname),
        escape(&view.service),
        escape(view.state.as_str()),
        escape(&view.rto),
        view.id
    );
    if !view.owner_mentions.is_empty() {
        fallback.push_str(&format!(" owner {owners}"));
    }
    if let Some(by) = &view.acknowledged_by {
        fallback.push_str(&format!(", acknowledged by {}", escape(by)));
    }

    let header = truncate(
        &format!(
            "{} [{}] {} — {}",
            state_emoji(view.state),
            view.priority,
            view.alertname,
            view.state
        ),
        150,
    );
    let mut fields = vec![
        field("Priority", &escape(&view.priority)),
        field("Alert", &escape(&view.alertname)),
        field("Service", &escape(&view.service)),
        field("RTO", &escape(&view.rto)),
        field("State", &escape(view.state.as_str())),
        field("Owner", &owners),
    ];
    if let Some(ttr) = &view.time_to_recover {
        fields.push(field("Time to recover", &escape(ttr)));
    }
    if let Some(by) = &view.acknowledged_by {
        fields.push(field("Acknowledged by", &escape(by)));
    }
    let mut blocks = vec![
        json!({ "type": "header", "text": { "type": "plain_text", "text": header, "emoji": true } }),
        json!({ "type": "section", "fields": fields }),
    ];
    if !view.summary.trim().is_empty() {
        blocks.push(json!({
            "type": "section",
            "text": { "type": "mrkdwn", "text": truncate(&escape(&view.summary), 3000) },
        }));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [ { "type": "mrkdwn", "text": format!("Incident #{}", view.id) } ],
    }));
    if view.acknowledged_by.is_none() && view.state != RootState::Resolved {
        blocks.push(json!({
            "type": "actions",
            "block_id": format!("incident-{}", view.id),
            "elements": [ {
                "type": "button",
                "text": { "type": "plain_text", "text": "Acknowledge", "emoji": true },
                "action_id": ACK_ACTION_ID,
                "value": view.id.to_string(),
                "style": "primary",
            } ],
        }));
    }
    (truncate(&fallback, MAX_TEXT_CHARS), Value::Array(blocks))
}

fn field(label: &str, value: &str) -> Value {
    json!({ "type": "mrkdwn", "text": truncate(&format!("*{label}*\n{value}"), 2000) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_replaces_the_three_control_characters() {
        assert_eq!(escape("a & <b> c"), "a &amp; &lt;b&gt; c");
        assert_eq!(escape("plain"), "plain");
    }

    #[test]
    fn mention_uses_the_id_when_known_else_the_escaped_email() {
        assert_eq!(mention(Some("U123ABC"), "a@x"), "<@U123ABC>");
        assert_eq!(mention(Some("W0"), "a@x"), "<@W0>");
        assert_eq!(mention(None, "<a>@x"), "&lt;a&gt;@x");
        assert_eq!(mention(Some("U1> <!channel"), "a@x"), "a@x");
    }

    fn view() -> IncidentView {
        IncidentView {
            id: 42,
            priority: "P1".into(),
            alertname: "PostgresDown".into(),
            service: "postgres".into(),
            rto: "15m".into(),
            state: RootState::Firing,
            owner_mentions: vec!["<@U1>".into()],
            summary: "db <down> & out".into(),
            time_to_recover: None,
            acknowledged_by: None,
        }
    }

    fn ack_button(blocks: &Value) -> Option<Value> {
        blocks.as_array()?.iter().find_map(|b| {
            (b["type"] == "actions")
                .then(|| b["elements"][0].clone())
                .filter(|e| e["action_id"] == ACK_ACTION_ID)
        })
    }

    #[test]
    fn incident_blocks_carry_the_facts_and_an_ack_button() {
        let (text, blocks) = incident_blocks(&view());
        assert!(
            text.contains("[P1] PostgresDown on postgres: firing"),
            "{text}"
        );
        assert!(text.contains("<@U1>"), "{text}");
        let button = ack_button(&blocks).expect("ack button");
        assert_eq!(button["value"], "42");
        assert_eq!(button["style"], "primary");
        let all = blocks.to_string();
        for needle in [
            "*RTO*\\n15m",
            "*Owner*\\n<@U1>",
            "db &lt;down&gt; &amp; out",
        ] {
            assert!(all.contains(needle), "{needle} in {all}");
        }
    }

    #[test]
    fn no_ack_button_once_acknowledged_or_resolved() {
        let mut acked = view();
        acked.acknowledged_by = Some("alice".into());
        assert!(ack_button(&incident_blocks(&acked).1).is_none());
        let mut resolved = view();
        resolved.state = RootState::Resolved;
        resolved.time_to_recover = Some("4m 12s".into());
        let (text, blocks) = incident_blocks(&resolved);
        assert!(ack_button(&blocks).is_none());
        assert!(text.contains("resolved"));
        assert!(blocks.to_string().contains("4m 12s"));
    }
}
