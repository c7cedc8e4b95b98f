//! The buttons on an incident's root message, and the record of someone pressing one: who
//! (their name and Slack user), when, until when it holds, and what it made (a silence id).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::phase::text_enum;

text_enum! {
    /// A button on the root message.
    pub enum Button as "button" {
        Acknowledge = "ack",
        Silence = "silence",
        Pause = "pause",
    }
}

/// How long the Silence and Pause buttons hold: an hour from the press.
pub const BUTTON_HOLD: Duration = Duration::from_secs(3600);

impl Button {
    /// The button's label before it is used.
    pub fn label(self) -> &'static str {
        match self {
            Button::Acknowledge => "Acknowledge",
            Button::Silence => "Silence 1h",
            Button::Pause => "Pause automation 1h",
        }
    }
}

/// Someone used a button (or the API) on an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pressed {
    /// Their name as Slack gave it (`alice`), or the API caller's.
    pub by: String,
    /// Their Slack user id (`U…`), to mention them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack_user: Option<String>,
    pub at: DateTime<Utc>,
    /// Until when it holds (a silence's or a pause's end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// What it made, when it made something: the Alertmanager silence's id, the pause's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub made: Option<String>,
}

impl Pressed {
    pub fn new(by: &str, slack_user: Option<&str>, at: DateTime<Utc>) -> Pressed {
        Pressed {
            by: by.to_owned(),
            slack_user: slack_user.map(str::to_owned),
            at,
            until: None,
            made: None,
        }
    }

    pub fn until(mut self, until: DateTime<Utc>) -> Pressed {
        self.until = Some(until);
        self
    }

    pub fn made(mut self, what: impl Into<String>) -> Pressed {
        self.made = Some(what.into());
        self
    }
}
