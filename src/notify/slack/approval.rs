//! Block Kit of an `approve` step's message in the incident's thread (CONTRACTS.md §2.6):
//! the prompt, who is asked, the deadline, a `static_select` of the choices when the step
//! offers some, and Approve (primary) / Reject (danger) buttons; once answered, the same
//! message without its buttons, saying the verdict, who and when.
//!
//! Pure: no I/O. The action ids are defined here, where they are rendered; `http::slack`
//! reads the presses through [`approval_button_of`] and [`APPROVAL_CHOICE_ACTION_ID`].
//!
//! Slack's limits, and what is done with what goes past them: a select holds at most 100
//! options (a request offers at most [`MAX_CHOICES`], 100); an option's text is at most 75
//! characters, so a longer choice is cut with `…` in the menu and shown whole in the
//! message's list; an option's value is at most 150 characters, so the value is the choice's
//! place in the stored list (`0`, `1`, …), never the choice itself: the answer is the whole
//! stored choice however long it is.

use serde_json::{json, Value};

use crate::domain::approval::MAX_CHOICES;
use crate::domain::{ApprovalRef, ApprovalVerdict};
use crate::notify::truncate;

use super::blocks::escape;
use super::MAX_TEXT_CHARS;

/// The `action_id` of the Approve button; its `value` is the request's [`ApprovalRef`].
pub const APPROVE_ACTION_ID: &str = "approval_approve";
/// The `action_id` of the Reject button; its `value` is the request's [`ApprovalRef`].
pub const REJECT_ACTION_ID: &str = "approval_reject";
/// The `action_id` of the choices' `static_select`; each option's `value` is the choice's
/// place in the request's list.
pub const APPROVAL_CHOICE_ACTION_ID: &str = "approval_choice";

/// The most characters of an option's text (Slack's limit).
pub const OPTION_TEXT_CHARS: usize = 75;

/// The verdict a button's `action_id` gives: Approve or Reject.
pub fn approval_button_of(action_id: &str) -> Option<ApprovalVerdict> {
    match action_id {
        APPROVE_ACTION_ID => Some(ApprovalVerdict::Approved),
        REJECT_ACTION_ID => Some(ApprovalVerdict::Rejected),
        _ => None,
    }
}

/// An answer, as the updated message shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnsweredView {
    pub verdict: ApprovalVerdict,
    /// Already a mention (or escaped name); empty for a timeout.
    pub who: String,
    /// `03:12 UTC`.
    pub at: String,
    pub choice: Option<String>,
}

/// What an approval message shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalView {
    pub at: ApprovalRef,
    /// The asked contact's key (`dba`).
    pub who_key: String,
    /// The asked contact, already a mention.
    pub who: String,
    pub prompt: String,
    /// `03:40 UTC`.
    pub deadline: String,
    pub choices: Vec<String>,
    /// Who may answer, already mentions; empty: anyone in the channel.
    pub allowed: Vec<String>,
    pub answered: Option<AnsweredView>,
}

/// The approval message: `(fallback text, blocks)`.
pub fn approval_blocks(view: &ApprovalView) -> (String, Value) {
    let prompt = escape(&view.prompt);
    let asked = format!(
        ":raised_hand: *Approval needed* from {} (`{}`) before {}\n{prompt}",
        view.who,
        escape(&view.who_key),
        escape(&view.deadline)
    );
    let mut blocks = vec![json!({
        "type": "section",
        "text": { "type": "mrkdwn", "text": truncate(&asked, 3000) },
    })];
    let choices: Vec<&String> = view.choices.iter().take(MAX_CHOICES).collect();
    if !choices.is_empty() {
        let list: Vec<String> = choices
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{}. `{}`", i + 1, escape(c)))
            .collect();
        blocks.push(json!({
            "type": "section",
            "text": { "type": "mrkdwn", "text": truncate(&format!("*Choices*\n{}", list.join("\n")), 3000) },
        }));
    }
    let fallback = match &view.answered {
        None => {
            let who = if view.allowed.is_empty() {
                "Anyone in this channel may answer.".to_owned()
            } else {
                format!("Only {} may answer.", view.allowed.join(", "))
            };
            blocks.push(json!({
                "type": "context",
                "elements": [ { "type": "mrkdwn", "text": truncate(&who, 3000) } ],
            }));
            let value = view.at.to_string();
            let mut elements = Vec::new();
            if !choices.is_empty() {
                elements.push(json!({
                    "type": "static_select",
                    "action_id": APPROVAL_CHOICE_ACTION_ID,
                    "placeholder": { "type": "plain_text", "text": "Choose one" },
                    "options": choices
                        .iter()
                        .enumerate()
                        .map(|(i, c)| json!({
                            "text": { "type": "plain_text", "text": truncate(c, OPTION_TEXT_CHARS) },
                            "value": i.to_string(),
                        }))
                        .collect::<Vec<_>>(),
                }));
            }
            elements.push(json!({
                "type": "button",
                "text": { "type": "plain_text", "text": "Approve" },
                "style": "primary",
                "action_id": APPROVE_ACTION_ID,
                "value": value,
            }));
            elements.push(json!({
                "type": "button",
                "text": { "type": "plain_text", "text": "Reject" },
                "style": "danger",
                "action_id": REJECT_ACTION_ID,
                "value": value,
            }));
            blocks.push(json!({
                "type": "actions",
                "block_id": format!("approval-{}-{}-{}", view.at.incident, view.at.phase, view.at.seq),
                "elements": elements,
            }));
            format!(
                "Approval needed from {} before {}: {prompt}",
                view.who,
                escape(&view.deadline)
            )
        }
        Some(a) => {
            let line = match a.verdict {
                ApprovalVerdict::Approved => {
                    let choice = a
                        .choice
                        .as_deref()
                        .map(|c| format!(": `{}`", escape(c)))
                        .unwrap_or_default();
                    format!(
                        ":white_check_mark: Approved by {} at {}{choice}",
                        a.who,
                        escape(&a.at)
                    )
                }
                ApprovalVerdict::Rejected => {
                    format!(":x: Rejected by {} at {}", a.who, escape(&a.at))
                }
                ApprovalVerdict::TimedOut => format!(
                    ":hourglass: Nobody answered before {}",
                    escape(&view.deadline)
                ),
            };
            blocks.push(json!({
                "type": "context",
                "elements": [ { "type": "mrkdwn", "text": truncate(&line, 3000) } ],
            }));
            format!("{prompt}: {line}")
        }
    };
    (truncate(&fallback, MAX_TEXT_CHARS), Value::Array(blocks))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RunPhase;

    fn view(choices: &[&str]) -> ApprovalView {
        ApprovalView {
            at: ApprovalRef {
                incident: 42,
                phase: RunPhase::Main,
                seq: 3,
            },
            who_key: "dba".into(),
            who: "<@U0DBA>".into(),
            prompt: "Restore <which> backup?".into(),
            deadline: "03:40 UTC".into(),
            choices: choices.iter().map(|c| c.to_string()).collect(),
            allowed: Vec::new(),
            answered: None,
        }
    }

    fn elements(blocks: &Value) -> Vec<Value> {
        blocks
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["type"] == "actions")
            .flat_map(|b| b["elements"].as_array().unwrap().clone())
            .collect()
    }

    #[test]
    fn the_request_has_a_select_of_the_choices_and_approve_and_reject_naming_the_step() {
        let long = "x".repeat(200);
        let (text, blocks) = approval_blocks(&view(&["b-2026-12-01.sql", &long]));
        assert!(
            text.contains("Approval needed from <@U0DBA> before 03:40 UTC"),
            "{text}"
        );
        let all = blocks.to_string();
        assert!(all.contains("Restore &lt;which&gt; backup?"), "{all}");
        assert!(all.contains("Anyone in this channel may answer."), "{all}");
        let e = elements(&blocks);
        assert_eq!(e.len(), 3);
        assert_eq!(e[0]["type"], "static_select");
        assert_eq!(e[0]["action_id"], APPROVAL_CHOICE_ACTION_ID);
        let options = e[0]["options"].as_array().unwrap();
        assert_eq!(options[0]["text"]["text"], "b-2026-12-01.sql");
        assert_eq!(options[0]["value"], "0");
        let cut = options[1]["text"]["text"].as_str().unwrap();
        assert_eq!(cut.chars().count(), OPTION_TEXT_CHARS);
        assert!(cut.ends_with('…'));
        assert_eq!(options[1]["value"], "1");
        assert!(all.contains(&long), "the long choice is listed whole");
        assert_eq!(
            (&e[1]["action_id"], &e[1]["style"], &e[1]["value"]),
            (
                &json!("approval_approve"),
                &json!("primary"),
                &json!("42:main:3")
            )
        );
        assert_eq!(
            (&e[2]["action_id"], &e[2]["style"], &e[2]["value"]),
            (
                &json!("approval_reject"),
                &json!("danger"),
                &json!("42:main:3")
            )
        );
        assert_eq!(
            approval_button_of("approval_approve"),
            Some(ApprovalVerdict::Approved)
        );
        assert_eq!(
            approval_button_of("approval_reject"),
            Some(ApprovalVerdict::Rejected)
        );
        assert_eq!(approval_button_of("ack"), None);
    }

    #[test]
    fn a_plain_request_has_no_select_and_names_who_may_answer() {
        let mut v = view(&[]);
        v.allowed = vec!["<@U0DBA>".into(), "<@U0LEAD>".into()];
        let (_, blocks) = approval_blocks(&v);
        let ids: Vec<_> = elements(&blocks)
            .iter()
            .map(|e| e["action_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, ["approval_approve", "approval_reject"]);
        assert!(blocks
            .to_string()
            .contains("Only <@U0DBA>, <@U0LEAD> may answer."));
    }

    #[test]
    fn once_answered_the_buttons_go_and_the_verdict_who_and_when_show() {
        let mut v = view(&["a", "b"]);
        v.answered = Some(AnsweredView {
            verdict: ApprovalVerdict::Approved,
            who: "<@U0DBA>".into(),
            at: "03:12 UTC".into(),
            choice: Some("b".into()),
        });
        let (text, blocks) = approval_blocks(&v);
        assert!(elements(&blocks).is_empty());
        assert!(
            text.contains("Approved by <@U0DBA> at 03:12 UTC: `b`"),
            "{text}"
        );
        v.answered = Some(AnsweredView {
            verdict: ApprovalVerdict::TimedOut,
            who: String::new(),
            at: "03:40 UTC".into(),
            choice: None,
        });
        let (_, blocks) = approval_blocks(&v);
        assert!(elements(&blocks).is_empty());
        assert!(blocks
            .to_string()
            .contains("Nobody answered before 03:40 UTC"));
    }
}
