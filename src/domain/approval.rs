//! An `approve` step's request and its answer: who is asked, what for, which choices they
//! have and until when; who answered, how, what they chose and when.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::notice::RunPhase;
use super::phase::text_enum;

text_enum! {
    /// How an approval ended.
    pub enum ApprovalVerdict as "approval verdict" {
        Approved = "approved",
        Rejected = "rejected",
        /// Nobody answered before the step's deadline.
        TimedOut = "timed_out",
    }
}

/// The most choices one request offers (Slack shows at most 25 elements in one actions
/// block: the choices and Reject).
pub const MAX_CHOICES: usize = 24;

/// A request for approval, as stored when the `approve` step starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub phase: RunPhase,
    /// The step's place in its list, from 0.
    pub seq: usize,
    /// The contact key asked (`dba`).
    pub who: String,
    pub prompt: String,
    /// What they may choose from; empty: a plain approve or reject.
    pub choices: Vec<String>,
    pub asked_at: DateTime<Utc>,
    /// When the step gives up; kept across restarts.
    pub deadline: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided: Option<Decided>,
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decided {
    pub verdict: ApprovalVerdict,
    /// Who answered (their Slack name, or the API caller's `by`); empty for a timeout.
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choice: Option<String>,
    pub at: DateTime<Utc>,
}

impl Approval {
    /// Whether it still waits for an answer.
    pub fn pending(&self) -> bool {
        self.decided.is_none()
    }

    /// The thread's line for the answer.
    pub fn decided_text(&self) -> Option<String> {
        let d = self.decided.as_ref()?;
        let choice = d
            .choice
            .as_deref()
            .map(|c| format!(" ({c})"))
            .unwrap_or_default();
        Some(match d.verdict {
            ApprovalVerdict::Approved => format!("Approved by {}{choice}", d.by),
            ApprovalVerdict::Rejected => format!("Rejected by {}", d.by),
            ApprovalVerdict::TimedOut => format!(
                "Nobody approved before {} (asked: {})",
                self.deadline.format("%H:%M UTC"),
                self.who
            ),
        })
    }
}
