//! Block Kit rendering of incident messages, and Slack's text formatting rules (CONTRACTS.md
//! §2.4, §2.6): [`escape`], [`mention`], [`incident_blocks`] of an [`IncidentView`].
//!
//! Pure: no I/O. [`ACK_ACTION_ID`], [`SILENCE_ACTION_ID`] and [`PAUSE_ACTION_ID`] name the
//! root's buttons here, where they are rendered; `http::slack` reads the presses Slack sends
//! back through [`button_of`].

use std::collections::BTreeMap;
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Value};

use crate::domain::duration::format as human;
use crate::domain::{Button, RootState};

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

/// A button someone used, as the root shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Used {
    /// Already formatted with [`mention`].
    pub who: String,
    /// `03:12 UTC`.
    pub at: String,
    /// `14:00 UTC`, for what holds until a time.
    pub until: Option<String>,
    /// What it made: the silence's id.
    pub made: Option<String>,
}

/// Where the root links to; each only when known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Links {
    /// The incident in remediator (`api.public_url`).
    pub incident: Option<String>,
    /// The alert's `generatorURL`.
    pub alert: Option<String>,
    /// Alertmanager's new-silence form for the alert's labels ([`silence_link`]).
    pub silence: Option<String>,
}

/// Which buttons besides Acknowledge the service can carry out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offered {
    /// Silence 1h: an Alertmanager to make silences in.
    pub silence: bool,
    /// Pause automation 1h.
    pub pause: bool,
}

/// What an incident message shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentView {
    pub id: i64,
    pub priority: String,
    pub alertname: String,
    pub service: String,
    pub state: RootState,
    /// The rule's owner, already formatted with [`mention`]; `None` shows "no owner".
    pub owner: Option<String>,
    pub summary: String,
    /// The RTO, and while open how much of it has passed ([`rto_clock`]).
    pub rto: String,
    pub time_to_recover: Option<String>,
    pub acknowledged: Option<Used>,
    pub silenced: Option<Used>,
    pub paused: Option<Used>,
    pub links: Links,
    pub offered: Offered,
    /// A drill (`remediator drill`): the root says DRILL, and nobody is paged.
    pub drill: bool,
    /// Who started it, for a manual run or a drill.
    pub started_by: Option<String>,
}

/// The `action_id` of the Acknowledge button; its `value` is the incident id.
pub const ACK_ACTION_ID: &str = "ack";
/// The `action_id` of the Silence 1h button; its `value` is the incident id.
pub const SILENCE_ACTION_ID: &str = "silence_1h";
/// The `action_id` of the Pause automation 1h button; its `value` is the incident id.
pub const PAUSE_ACTION_ID: &str = "pause_1h";

/// The button an `action_id` names, as `http::slack` reads a press.
pub fn button_of(action_id: &str) -> Option<Button> {
    match action_id {
        ACK_ACTION_ID => Some(Button::Acknowledge),
        SILENCE_ACTION_ID => Some(Button::Silence),
        PAUSE_ACTION_ID => Some(Button::Pause),
        _ => None,
    }
}

fn action_id(button: Button) -> &'static str {
    match button {
        Button::Acknowledge => ACK_ACTION_ID,
        Button::Silence => SILENCE_ACTION_ID,
        Button::Pause => PAUSE_ACTION_ID,
    }
}

fn state_emoji(state: RootState) -> &'static str {
    match state {
        RootState::Firing => ":red_circle:",
        RootState::Remediating => ":hammer_and_wrench:",
        RootState::Recovered => ":large_green_circle:",
        RootState::Escalated => ":rotating_light:",
        RootState::Resolved => ":white_check_mark:",
    }
}

/// `30m: 4m elapsed, 26m left`, or `30m: 35m elapsed, missed by 5m`, to the minute.
pub fn rto_clock(rto: Duration, elapsed: Duration) -> String {
    let minutes = |d: Duration| human(Duration::from_secs(d.as_secs() / 60 * 60));
    let shown = |d: Duration| {
        if d < Duration::from_secs(60) {
            "<1m".to_owned()
        } else {
            minutes(d)
        }
    };
    match rto.checked_sub(elapsed) {
        Some(left) => format!(
            "{}: {} elapsed, {} left",
            human(rto),
            shown(elapsed),
            shown(left)
        ),
        None => format!(
            "{}: {} elapsed, missed by {}",
            human(rto),
            shown(elapsed),
            shown(elapsed - rto)
        ),
    }
}

/// What a matcher value may hold unencoded in a URL's fragment.
const FRAGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Alertmanager's new-silence form pre-filled with an equality matcher per label:
/// `<externalURL>/#/silences/new?filter=%7Balertname%3D%22PostgresDown%22%2C…%7D` (the UI
/// reads `filter` as matchers, `{alertname="PostgresDown",…}`). `None` without an
/// `externalURL` or labels.
pub fn silence_link(external_url: &str, labels: &BTreeMap<String, String>) -> Option<String> {
    let base = external_url.trim().trim_end_matches('/');
    if base.is_empty() || labels.is_empty() {
        return None;
    }
    let matchers: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    let filter = format!("{{{}}}", matchers.join(","));
    Some(format!(
        "{base}/#/silences/new?filter={}",
        utf8_percent_encode(&filter, FRAGMENT)
    ))
}

/// A link in mrkdwn, `<url|label>`: the URL's `&` escaped as Slack asks, and the characters
/// that would end the link percent-encoded.
fn link(url: &str, label: &str) -> String {
    let url = url
        .replace('&', "&amp;")
        .replace('<', "%3C")
        .replace('>', "%3E")
        .replace('|', "%7C");
    format!("<{url}|{}>", escape(label))
}

/// The incident's root message: `(fallback text, blocks)`.
///
/// The fallback text carries the owner's mention so that notifications ping them. The blocks
/// hold a header, the facts as fields, the summary, the links, a line per button used
/// (Acknowledge → "Acknowledged by …", Silence → "Silenced 1h by …", Pause → "Automation
/// paused by … until …"), and the buttons not used yet (`action_id` [`ACK_ACTION_ID`],
/// [`SILENCE_ACTION_ID`], [`PAUSE_ACTION_ID`]; `value` = incident id), none once resolved.
pub fn incident_blocks(view: &IncidentView) -> (String, Value) {
    let owner = view
        .owner
        .clone()
        .unwrap_or_else(|| "_no owner_".to_owned());
    let drill = if view.drill { "DRILL " } else { "" };
    let mut fallback = format!(
        "{drill}[{}] {} on {}: {} (RTO {}, incident #{})",
        escape(&view.priority),
        escape(&view.alertname),
        escape(&view.service),
        escape(view.state.as_str()),
        escape(&view.rto),
        view.id
    );
    if let Some(owner) = &view.owner {
        fallback.push_str(&format!(" owner {owner}"));
    }
    if let Some(ack) = &view.acknowledged {
        fallback.push_str(&format!(", acknowledged by {}", ack.who));
    }

    let header = truncate(
        &format!(
            "{}{drill}[{}] {} — {}",
            state_emoji(view.state),
            view.priority,
            view.alertname,
            view.state
        ),
        150,
    );
    let mut fields = vec![
        field("State", &escape(view.state.as_str())),
        field("Priority", &escape(&view.priority)),
        field("Service", &escape(&view.service)),
        field("Owner", &owner),
        field("RTO", &escape(&view.rto)),
    ];
    if let Some(ttr) = &view.time_to_recover {
        fields.push(field("Time to recover", &escape(ttr)));
    }
    if let Some(by) = &view.started_by {
        let what = if view.drill {
            format!("DRILL by {}: nobody is paged", escape(by))
        } else {
            format!("by hand, by {}", escape(by))
        };
        fields.push(field("Started", &what));
    }
    if let Some(ack) = &view.acknowledged {
        fields.push(field(
            "Acknowledged by",
            &format!("{} at {}", ack.who, escape(&ack.at)),
        ));
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
    let mut links = vec![match &view.links.incident {
        Some(url) => link(url, &format!("Incident #{}", view.id)),
        None => format!("Incident #{}", view.id),
    }];
    if let Some(url) = &view.links.alert {
        links.push(link(url, "Alert source"));
    }
    if let Some(url) = &view.links.silence {
        links.push(link(url, "Silence in Alertmanager"));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [ { "type": "mrkdwn", "text": truncate(&links.join("  ·  "), 3000) } ],
    }));
    let mut used = Vec::new();
    if let Some(ack) = &view.acknowledged {
        used.push(format!(
            ":white_check_mark: Acknowledged by {} at {}",
            ack.who,
            escape(&ack.at)
        ));
    }
    if let Some(s) = &view.silenced {
        let made = s
            .made
            .as_deref()
            .map(|id| format!(" (silence {})", escape(id)))
            .unwrap_or_default();
        used.push(format!(":no_bell: Silenced 1h by {}{made}", s.who));
    }
    if let Some(p) = &view.paused {
        let until = p
            .until
            .as_deref()
            .map(|u| format!(" until {}", escape(u)))
            .unwrap_or_default();
        used.push(format!(
            ":double_vertical_bar: Automation paused by {}{until}",
            p.who
        ));
    }
    if !used.is_empty() {
        blocks.push(json!({
            "type": "context",
            "elements": used
                .iter()
                .map(|t| json!({ "type": "mrkdwn", "text": truncate(t, 3000) }))
                .collect::<Vec<_>>(),
        }));
    }
    let mut buttons = Vec::new();
    if view.state != RootState::Resolved {
        if view.acknowledged.is_none() {
            buttons.push(button(Button::Acknowledge, view.id, Some("primary")));
        }
        if view.offered.silence && view.silenced.is_none() {
            buttons.push(button(Button::Silence, view.id, None));
        }
        if view.offered.pause && view.paused.is_none() {
            buttons.push(button(Button::Pause, view.id, Some("danger")));
        }
    }
    if !buttons.is_empty() {
        blocks.push(json!({
            "type": "actions",
            "block_id": format!("incident-{}", view.id),
            "elements": buttons,
        }));
    }
    (truncate(&fallback, MAX_TEXT_CHARS), Value::Array(blocks))
}

fn button(b: Button, id: i64, style: Option<&str>) -> Value {
    let mut v = json!({
        "type": "button",
        "text": { "type": "plain_text", "text": b.label(), "emoji": true },
        "action_id": action_id(b),
        "value": id.to_string(),
    });
    if let Some(style) = style {
        v["style"] = json!(style);
    }
    v
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
            rto: "30m: 4m elapsed, 26m left".into(),
            state: RootState::Firing,
            owner: Some("<@U1>".into()),
            summary: "db <down> & out".into(),
            time_to_recover: None,
            acknowledged: None,
            silenced: None,
            paused: None,
            links: Links::default(),
            offered: Offered {
                silence: true,
                pause: true,
            },
            drill: false,
            started_by: None,
        }
    }

    fn used(who: &str) -> Used {
        Used {
            who: who.into(),
            at: "03:12 UTC".into(),
            until: Some("04:12 UTC".into()),
            made: Some("5e1f".into()),
        }
    }

    /// The buttons of the root's actions block: (action_id, label, value).
    fn buttons(blocks: &Value) -> Vec<(String, String, String)> {
        blocks
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["type"] == "actions")
            .flat_map(|b| b["elements"].as_array().unwrap().clone())
            .map(|e| {
                (
                    e["action_id"].as_str().unwrap().to_owned(),
                    e["text"]["text"].as_str().unwrap().to_owned(),
                    e["value"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    fn ids(blocks: &Value) -> Vec<String> {
        buttons(blocks).into_iter().map(|(id, ..)| id).collect()
    }

    #[test]
    fn the_root_carries_the_facts_the_owner_and_three_buttons() {
        let (text, blocks) = incident_blocks(&view());
        assert!(
            text.contains("[P1] PostgresDown on postgres: firing"),
            "{text}"
        );
        assert!(text.contains("owner <@U1>"), "{text}");
        assert_eq!(
            buttons(&blocks),
            [
                ("ack".into(), "Acknowledge".into(), "42".into()),
                ("silence_1h".into(), "Silence 1h".into(), "42".into()),
                ("pause_1h".into(), "Pause automation 1h".into(), "42".into()),
            ]
        );
        let all = blocks.to_string();
        for needle in [
            "*RTO*\\n30m: 4m elapsed, 26m left",
            "*Owner*\\n<@U1>",
            "*State*\\nfiring",
            "db &lt;down&gt; &amp; out",
            "Incident #42",
        ] {
            assert!(all.contains(needle), "{needle} in {all}");
        }
        for b in ["ack", "silence_1h", "pause_1h"] {
            assert_eq!(button_of(b).map(action_id), Some(b));
        }
        assert_eq!(button_of("open"), None);
    }

    #[test]
    fn no_owner_is_said_and_unoffered_buttons_are_not_shown() {
        let mut v = view();
        v.owner = None;
        v.offered = Offered::default();
        let (text, blocks) = incident_blocks(&v);
        assert!(!text.contains("owner"), "{text}");
        assert!(blocks.to_string().contains("*Owner*\\n_no owner_"));
        assert_eq!(ids(&blocks), ["ack"]);
    }

    #[test]
    fn each_button_once_used_becomes_a_line_saying_who() {
        let mut v = view();
        v.acknowledged = Some(used("<@UALICE>"));
        let (_, blocks) = incident_blocks(&v);
        assert_eq!(ids(&blocks), ["silence_1h", "pause_1h"]);
        assert!(blocks
            .to_string()
            .contains("Acknowledged by <@UALICE> at 03:12 UTC"));
        v.silenced = Some(used("<@UBOB>"));
        let (_, blocks) = incident_blocks(&v);
        assert_eq!(ids(&blocks), ["pause_1h"]);
        assert!(blocks
            .to_string()
            .contains("Silenced 1h by <@UBOB> (silence 5e1f)"));
        v.paused = Some(used("<@UCAROL>"));
        let (_, blocks) = incident_blocks(&v);
        assert!(ids(&blocks).is_empty());
        assert!(!blocks.to_string().contains("\"actions\""));
        assert!(blocks
            .to_string()
            .contains("Automation paused by <@UCAROL> until 04:12 UTC"));
    }

    #[test]
    fn no_buttons_once_resolved_and_the_time_to_recover_shows() {
        let mut resolved = view();
        resolved.state = RootState::Resolved;
        resolved.rto = "30m".into();
        resolved.time_to_recover = Some("4m 12s (within the RTO of 30m)".into());
        let (text, blocks) = incident_blocks(&resolved);
        assert!(ids(&blocks).is_empty());
        assert!(text.contains("resolved"));
        assert!(blocks
            .to_string()
            .contains("*Time to recover*\\n4m 12s (within the RTO of 30m)"));
    }

    #[test]
    fn links_go_to_the_incident_the_alert_and_a_silence_form() {
        let mut v = view();
        v.links = Links {
            incident: Some("https://rem.example/api/v1/incidents/42".into()),
            alert: Some("http://prometheus:9090/graph?g0.expr=pg_up&g0.tab=1".into()),
            silence: Some("http://am:9093/#/silences/new?filter=%7Ba%3D%22b%22%7D".into()),
        };
        let (_, blocks) = incident_blocks(&v);
        let all = blocks.to_string();
        for needle in [
            "<https://rem.example/api/v1/incidents/42|Incident #42>",
            "<http://prometheus:9090/graph?g0.expr=pg_up&amp;g0.tab=1|Alert source>",
            "<http://am:9093/#/silences/new?filter=%7Ba%3D%22b%22%7D|Silence in Alertmanager>",
        ] {
            assert!(all.contains(needle), "{needle} in {all}");
        }
    }

    #[test]
    fn the_silence_link_is_alertmanagers_form_with_a_matcher_per_label() {
        let labels: BTreeMap<String, String> = [
            ("alertname", "PostgresDown"),
            ("service", "postgres"),
            ("job", "a \"quoted\" job"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(
            silence_link("http://vm:19093/", &labels).as_deref(),
            Some("http://vm:19093/#/silences/new?filter=%7Balertname%3D%22PostgresDown%22%2Cjob%3D%22a%20%5C%22quoted%5C%22%20job%22%2Cservice%3D%22postgres%22%7D")
        );
        assert_eq!(silence_link("", &labels), None);
        assert_eq!(silence_link("http://vm:19093", &BTreeMap::new()), None);
    }

    #[test]
    fn the_rto_clock_counts_minutes_elapsed_and_left() {
        let m = |n: u64| Duration::from_secs(n * 60);
        assert_eq!(
            rto_clock(m(30), m(4) + Duration::from_secs(20)),
            "30m: 4m elapsed, 25m left"
        );
        assert_eq!(
            rto_clock(m(30), Duration::from_secs(5)),
            "30m: <1m elapsed, 29m left"
        );
        assert_eq!(rto_clock(m(30), m(35)), "30m: 35m elapsed, missed by 5m");
        assert_eq!(rto_clock(m(90), m(61)), "1h 30m: 1h 1m elapsed, 29m left");
    }
}
