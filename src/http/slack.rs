//! Inbound Slack requests: the interactivity endpoint's signature check and payload.
//!
//! - [`verify_signature`]: Slack's v0 request signing over the raw body.
//! - [`parse_interaction`]: the `block_actions` payload of a press of one of the root's
//!   buttons (Acknowledge, Silence 1h, Pause automation 1h), whose `action_id`s are defined
//!   with the blocks that render them ([`button_of`]); or of Approve / Reject on an `approve`
//!   step's message, with the request its value names and the option picked in its menu
//!   (`state.values`), and the `response_url` to answer the user on.
//!
//! Both are the interactivity endpoint's (CONTRACTS.md §2.7, §2.8).
//!
//! The messages we send, and their blocks, are `notify::slack`'s; this module reads only what
//! Slack sends us.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use std::collections::HashMap;

use crate::domain::{ApprovalRef, ApprovalVerdict, Button};
use crate::notify::slack::{approval_button_of, button_of, APPROVAL_CHOICE_ACTION_ID};
use crate::notify::truncate;

/// Replay window for signed requests, in seconds (both directions).
pub const SIGNATURE_WINDOW_SECS: u64 = 60 * 5;

/// Why a request to the interactivity endpoint is not trusted as coming from Slack.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Slack signing secret configured: set it from the app's Basic Information page")]
    NoSecret,
    #[error("missing X-Slack-Request-Timestamp header: the request was not sent by Slack")]
    MissingTimestamp,
    #[error("X-Slack-Request-Timestamp {0:?} is not a Unix time in seconds")]
    BadTimestamp(String),
    #[error(
        "X-Slack-Request-Timestamp is {skew_secs}s away from now (limit {limit}s): \
         a replayed request, or a clock that needs NTP",
        limit = SIGNATURE_WINDOW_SECS
    )]
    StaleTimestamp { skew_secs: u64 },
    #[error("missing X-Slack-Signature header: the request was not sent by Slack")]
    MissingSignature,
    #[error("X-Slack-Signature is not `v0=` followed by 64 hex digits")]
    BadFormat,
    #[error(
        "X-Slack-Signature does not match: check the signing secret (Basic Information → \
         App Credentials) and that the raw body reaches the check unchanged"
    )]
    Mismatch,
}

/// Verifies a Slack request signature (v0): `v0=` + hex HMAC-SHA256 over
/// `v0:{timestamp}:{raw body}` with the signing secret, the timestamp within 5 minutes of
/// `now_unix` either way, compared in constant time.
pub fn verify_signature(
    signing_secret: &[u8],
    timestamp: &str,
    body: &[u8],
    signature: &str,
    now_unix: i64,
) -> Result<(), SignatureError> {
    if signing_secret.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let timestamp = timestamp.trim();
    if timestamp.is_empty() {
        return Err(SignatureError::MissingTimestamp);
    }
    let sent: i64 = match timestamp.parse() {
        Ok(t) if timestamp.bytes().all(|b| b.is_ascii_digit()) => t,
        _ => return Err(SignatureError::BadTimestamp(truncate(timestamp, 32))),
    };
    let skew_secs = now_unix.abs_diff(sent);
    if skew_secs > SIGNATURE_WINDOW_SECS {
        return Err(SignatureError::StaleTimestamp { skew_secs });
    }
    let signature = signature.trim();
    if signature.is_empty() {
        return Err(SignatureError::MissingSignature);
    }
    let given = signature
        .strip_prefix("v0=")
        .filter(|hex| hex.len() == 64)
        .and_then(|h| hex::decode(h).ok())
        .ok_or(SignatureError::BadFormat)?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(signing_secret).map_err(|_| SignatureError::NoSecret)?;
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    if bool::from(expected.as_slice().ct_eq(given.as_slice())) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// What a (verified) interactivity request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interaction {
    /// Someone pressed one of the root's buttons on incident `incident_id`.
    Pressed {
        button: Button,
        incident_id: i64,
        user_id: String,
        user_name: String,
        /// The root of the thread of the message pressed (its `thread_ts`, or its own `ts`
        /// for a root), when the payload names the message.
        thread: Option<String>,
        response_url: Option<String>,
    },
    /// Anything else (other payload types or actions, a pick in the choices' menu); answer
    /// 200 and ignore.
    Other,
    /// Someone pressed Approve or Reject on an approval message (the `approve` step `at`
    /// names), with the option picked in its menu, if any (`choice`: the option's value, the
    /// choice's place in the request's list).
    Answered {
        verdict: ApprovalVerdict,
        at: ApprovalRef,
        choice: Option<String>,
        user_id: String,
        user_name: String,
        /// The root of the thread of the message pressed, as for [`Interaction::Pressed`].
        thread: Option<String>,
        /// Where to answer the user (ephemerally), as Slack gave it.
        response_url: Option<String>,
    },
}

/// Why an interactivity body cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InteractionError {
    #[error("interaction body is not application/x-www-form-urlencoded: {0}")]
    NotForm(String),
    #[error("interaction body has no `payload` field")]
    MissingPayload,
    #[error("interaction payload is not the JSON Slack sends: {0}")]
    BadJson(String),
    #[error("block_actions payload has no `user`")]
    MissingUser,
    #[error("button value {0:?} is not an incident id")]
    BadIncidentId(String),
    #[error("approval button value: {0}")]
    BadApprovalRef(String),
}

#[derive(Deserialize)]
struct RawInteraction {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    user: Option<RawUser>,
    #[serde(default)]
    actions: Vec<RawAction>,
    #[serde(default)]
    state: Option<RawState>,
    #[serde(default)]
    response_url: Option<String>,
    /// The message the buttons are on.
    #[serde(default)]
    message: Option<RawMessage>,
}

#[derive(Deserialize)]
struct RawMessage {
    #[serde(default)]
    ts: Option<String>,
    #[serde(default)]
    thread_ts: Option<String>,
}

impl RawInteraction {
    /// The root of the pressed message's thread: a reply's `thread_ts`, a root's own `ts`.
    fn thread(&self) -> Option<String> {
        let m = self.message.as_ref()?;
        m.thread_ts
            .clone()
            .or_else(|| m.ts.clone())
            .filter(|t| !t.trim().is_empty())
    }

    fn response_url(&self) -> Option<String> {
        self.response_url.clone().filter(|u| !u.trim().is_empty())
    }
}

/// `state.values`: block id → action id → the element's state.
#[derive(Deserialize)]
struct RawState {
    #[serde(default)]
    values: HashMap<String, HashMap<String, RawValue>>,
}

#[derive(Deserialize)]
struct RawValue {
    #[serde(default)]
    selected_option: Option<RawOption>,
}

#[derive(Deserialize)]
struct RawOption {
    value: String,
}

#[derive(Deserialize)]
struct RawUser {
    id: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct RawAction {
    #[serde(default)]
    action_id: Option<String>,
    #[serde(default)]
    block_id: Option<String>,
    #[serde(default)]
    value: Option<String>,
}

/// Reads an interactivity request body (`payload=<url-encoded JSON>`); call it only after
/// [`verify_signature`] accepted the same raw bytes.
pub fn parse_interaction(form_body: &[u8]) -> Result<Interaction, InteractionError> {
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(form_body)
        .map_err(|e| InteractionError::NotForm(e.to_string()))?;
    let payload = fields
        .into_iter()
        .find_map(|(k, v)| (k == "payload").then_some(v))
        .ok_or(InteractionError::MissingPayload)?;
    let raw: RawInteraction =
        serde_json::from_str(&payload).map_err(|e| InteractionError::BadJson(e.to_string()))?;
    if raw.kind != "block_actions" {
        return Ok(Interaction::Other);
    }
    if let Some((verdict, action)) = raw
        .actions
        .iter()
        .find_map(|a| Some((approval_button_of(a.action_id.as_deref()?)?, a)))
    {
        return answered(verdict, action, &raw);
    }
    let Some((button, action)) = raw
        .actions
        .iter()
        .find_map(|a| Some((button_of(a.action_id.as_deref()?)?, a)))
    else {
        return Ok(Interaction::Other);
    };
    let value = action.value.clone().unwrap_or_default();
    let incident_id = value
        .trim()
        .parse::<i64>()
        .map_err(|_| InteractionError::BadIncidentId(truncate(&value, 64)))?;
    let (user_id, user_name) = user_of(&raw)?;
    Ok(Interaction::Pressed {
        button,
        incident_id,
        user_id,
        user_name,
        thread: raw.thread(),
        response_url: raw.response_url(),
    })
}

/// Who pressed: their id, and their user name (else their name, else the id).
fn user_of(raw: &RawInteraction) -> Result<(String, String), InteractionError> {
    let user = raw.user.as_ref().ok_or(InteractionError::MissingUser)?;
    let name = user
        .username
        .clone()
        .or(user.name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| user.id.clone());
    Ok((user.id.clone(), name))
}

/// Approve or Reject: the request the button names, and the option picked in the menu of
/// the button's block (or, failing that, of any block of the message).
fn answered(
    verdict: ApprovalVerdict,
    action: &RawAction,
    raw: &RawInteraction,
) -> Result<Interaction, InteractionError> {
    let value = action.value.clone().unwrap_or_default();
    let at: ApprovalRef = value
        .parse()
        .map_err(|e: crate::domain::approval::BadApprovalRef| {
            InteractionError::BadApprovalRef(e.to_string())
        })?;
    let values = raw.state.as_ref().map(|s| &s.values);
    let picked = |block: &HashMap<String, RawValue>| {
        block
            .get(APPROVAL_CHOICE_ACTION_ID)
            .and_then(|v| v.selected_option.as_ref())
            .map(|o| o.value.clone())
    };
    let choice = values.and_then(|values| {
        action
            .block_id
            .as_ref()
            .and_then(|b| values.get(b))
            .and_then(picked)
            .or_else(|| values.values().find_map(picked))
    });
    let (user_id, user_name) = user_of(raw)?;
    Ok(Interaction::Answered {
        verdict,
        at,
        choice,
        user_id,
        user_name,
        thread: raw.thread(),
        response_url: raw.response_url(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";

    fn sign(ts: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).expect("key");
        mac.update(format!("v0:{ts}:").as_bytes());
        mac.update(body);
        format!("v0={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn a_press_names_the_root_of_its_messages_thread() {
        let body = |message: Value| {
            let payload = json!({
                "type": "block_actions",
                "user": { "id": "U1", "username": "alice" },
                "actions": [ { "action_id": "ack", "value": "7" } ],
                "message": message,
            });
            serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap()
        };
        let thread = |message: Value| match parse_interaction(body(message).as_bytes()).unwrap() {
            Interaction::Pressed { thread, .. } => thread,
            _ => panic!("not a press"),
        };
        assert_eq!(
            thread(json!({"ts": "1.2"})).as_deref(),
            Some("1.2"),
            "a root"
        );
        assert_eq!(
            thread(json!({"ts": "1.3", "thread_ts": "1.2"})).as_deref(),
            Some("1.2"),
            "a reply"
        );
        assert_eq!(thread(Value::Null), None);
    }

    #[test]
    fn signature_accepts_slacks_documented_example() {
        // The worked example from Slack's "Verifying requests from Slack" page.
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let sig = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
        assert_eq!(
            verify_signature(SECRET, "1531420618", body, sig, 1531420618 + 10),
            Ok(())
        );
    }

    #[test]
    fn signature_rejections_say_what_is_wrong() {
        let body = b"payload=%7B%7D";
        let now = 1_700_000_000;
        let ts = now.to_string();
        let good = sign(&ts, body);
        assert_eq!(verify_signature(SECRET, &ts, body, &good, now), Ok(()));
        assert_eq!(
            verify_signature(SECRET, &ts, body, &good, now + 300),
            Ok(())
        );
        assert_eq!(
            verify_signature(SECRET, &ts, body, &good, now - 300),
            Ok(())
        );
        // (secret, timestamp, body, signature, expected error)
        type Case<'a> = (&'a [u8], String, &'a [u8], String, SignatureError);
        let cases: Vec<Case> = vec![
            (
                b"",
                ts.clone(),
                body,
                good.clone(),
                SignatureError::NoSecret,
            ),
            (
                SECRET,
                "".into(),
                body,
                good.clone(),
                SignatureError::MissingTimestamp,
            ),
            (
                SECRET,
                "-5".into(),
                body,
                good.clone(),
                SignatureError::BadTimestamp("-5".into()),
            ),
            (
                SECRET,
                (now - 301).to_string(),
                body,
                sign(&(now - 301).to_string(), body),
                SignatureError::StaleTimestamp { skew_secs: 301 },
            ),
            (
                SECRET,
                (now + 301).to_string(),
                body,
                sign(&(now + 301).to_string(), body),
                SignatureError::StaleTimestamp { skew_secs: 301 },
            ),
            (
                SECRET,
                ts.clone(),
                body,
                "".into(),
                SignatureError::MissingSignature,
            ),
            (
                SECRET,
                ts.clone(),
                body,
                good[3..].into(),
                SignatureError::BadFormat,
            ),
            (
                SECRET,
                ts.clone(),
                body,
                "v1=00".into(),
                SignatureError::BadFormat,
            ),
            (
                SECRET,
                ts.clone(),
                body,
                format!("v0={}", "z".repeat(64)),
                SignatureError::BadFormat,
            ),
            (
                SECRET,
                ts.clone(),
                b"payload=%7B%7D ",
                good.clone(),
                SignatureError::Mismatch,
            ),
            (
                b"another-secret",
                ts.clone(),
                body,
                good.clone(),
                SignatureError::Mismatch,
            ),
        ];
        for (secret, ts, body, sig, want) in cases {
            assert_eq!(
                verify_signature(secret, &ts, body, &sig, now),
                Err(want.clone()),
                "{want}"
            );
        }
    }

    fn form(payload: &Value) -> Vec<u8> {
        serde_urlencoded::to_string([("payload", payload.to_string())])
            .expect("form")
            .into_bytes()
    }

    #[test]
    fn parse_interaction_finds_the_ack_button() {
        let payload = json!({
            "type": "block_actions",
            "user": { "id": "U2CERLKJA", "username": "roadrunner", "name": "roadrunner", "team_id": "T1" },
            "team": { "id": "T1", "domain": "x" },
            "channel": { "id": "C1", "name": "voiceai-incidents" },
            "message": { "ts": "1700000000.000100", "text": "x" },
            "response_url": "https://hooks.slack.com/actions/T1/1/x",
            "trigger_id": "1.2.3",
            "actions": [ {
                "type": "button", "block_id": "incident-42", "action_id": "ack",
                "value": "42", "action_ts": "1700000001.000200",
                "text": { "type": "plain_text", "text": "Acknowledge" }
            } ]
        });
        assert_eq!(
            parse_interaction(&form(&payload)),
            Ok(Interaction::Pressed {
                button: Button::Acknowledge,
                incident_id: 42,
                user_id: "U2CERLKJA".into(),
                user_name: "roadrunner".into(),
                thread: Some("1700000000.000100".into()),
                response_url: Some("https://hooks.slack.com/actions/T1/1/x".into()),
            })
        );
    }

    #[test]
    fn parse_interaction_tells_the_silence_and_pause_buttons_apart() {
        for (action_id, button) in [("silence_1h", Button::Silence), ("pause_1h", Button::Pause)] {
            let payload = json!({ "type": "block_actions",
                "user": { "id": "U0BOB", "name": "bob" },
                "actions": [ { "type": "button", "action_id": action_id, "value": "7" } ] });
            assert_eq!(
                parse_interaction(&form(&payload)),
                Ok(Interaction::Pressed {
                    button,
                    incident_id: 7,
                    user_id: "U0BOB".into(),
                    user_name: "bob".into(),
                    thread: None,
                    response_url: None,
                })
            );
        }
    }

    #[test]
    fn parse_interaction_reads_an_approve_with_the_option_picked_in_its_block() {
        let payload = json!({ "type": "block_actions",
            "user": { "id": "U0DBA", "username": "dana" },
            "response_url": "https://hooks.slack.com/actions/T1/2/y",
            "state": { "values": {
                "approval-42-main-3": { "approval_choice": { "type": "static_select",
                    "selected_option": { "text": { "type": "plain_text", "text": "b.sql" }, "value": "1" } } },
                "other": { "approval_choice": { "type": "static_select", "selected_option": { "value": "0" } } }
            } },
            "actions": [ { "type": "button", "action_id": "approval_approve",
                           "block_id": "approval-42-main-3", "value": "42:main:3" } ] });
        let at = ApprovalRef {
            incident: 42,
            phase: crate::domain::RunPhase::Main,
            seq: 3,
        };
        assert_eq!(
            parse_interaction(&form(&payload)),
            Ok(Interaction::Answered {
                verdict: ApprovalVerdict::Approved,
                at,
                choice: Some("1".into()),
                user_id: "U0DBA".into(),
                user_name: "dana".into(),
                thread: None,
                response_url: Some("https://hooks.slack.com/actions/T1/2/y".into()),
            })
        );
        let reject = json!({ "type": "block_actions", "user": { "id": "U0DBA" },
            "actions": [ { "action_id": "approval_reject", "value": "42:main:3" } ] });
        assert_eq!(
            parse_interaction(&form(&reject)),
            Ok(Interaction::Answered {
                verdict: ApprovalVerdict::Rejected,
                at,
                choice: None,
                user_id: "U0DBA".into(),
                user_name: "U0DBA".into(),
                thread: None,
                response_url: None,
            })
        );
        // Picking in the menu is an interaction of its own: nothing to do.
        let pick = json!({ "type": "block_actions", "user": { "id": "U0DBA" },
            "actions": [ { "type": "static_select", "action_id": "approval_choice",
                           "selected_option": { "value": "1" } } ] });
        assert_eq!(parse_interaction(&form(&pick)), Ok(Interaction::Other));
        let bad = json!({ "type": "block_actions", "user": { "id": "U0DBA" },
            "actions": [ { "action_id": "approval_approve", "value": "42" } ] });
        assert!(matches!(
            parse_interaction(&form(&bad)),
            Err(InteractionError::BadApprovalRef(_))
        ));
    }

    #[test]
    fn parse_interaction_ignores_other_payloads_and_reports_bad_ones() {
        let other = json!({ "type": "view_submission", "user": { "id": "U1" } });
        assert_eq!(parse_interaction(&form(&other)), Ok(Interaction::Other));
        let other_action = json!({ "type": "block_actions", "user": { "id": "U1" },
            "actions": [ { "action_id": "open", "value": "1" } ] });
        assert_eq!(
            parse_interaction(&form(&other_action)),
            Ok(Interaction::Other)
        );
        let bad_id = json!({ "type": "block_actions", "user": { "id": "U1" },
            "actions": [ { "action_id": "ack", "value": "forty-two" } ] });
        assert_eq!(
            parse_interaction(&form(&bad_id)),
            Err(InteractionError::BadIncidentId("forty-two".into()))
        );
        let no_user =
            json!({ "type": "block_actions", "actions": [ { "action_id": "ack", "value": "1" } ] });
        assert_eq!(
            parse_interaction(&form(&no_user)),
            Err(InteractionError::MissingUser)
        );
        assert_eq!(
            parse_interaction(b"token=x"),
            Err(InteractionError::MissingPayload)
        );
        assert!(matches!(
            parse_interaction(b"payload=%7Bnot"),
            Err(InteractionError::BadJson(_))
        ));
    }
}
