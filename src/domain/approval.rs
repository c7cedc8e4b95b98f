//! An `approve` step's request and its answer: who is asked, what for, which choices they
//! have and until when; who answered, how, what they chose and when.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use std::fmt;
use std::str::FromStr;

use super::phase::{text_enum, RunPhase};

text_enum! {
    /// How an approval ended.
    pub enum ApprovalVerdict as "approval verdict" {
        Approved = "approved",
        Rejected = "rejected",
        /// Nobody answered before the step's deadline.
        TimedOut = "timed_out",
    }
}

/// The most choices one request offers: the options a Slack `static_select` takes (100).
pub const MAX_CHOICES: usize = 100;

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

/// Which request an answer is for: the incident, and the step's list and place in it. The
/// Slack buttons carry it (`42:main:3`), so a button of an earlier step is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApprovalRef {
    pub incident: i64,
    pub phase: RunPhase,
    pub seq: usize,
}

impl ApprovalRef {
    pub fn of(incident: i64, a: &Approval) -> ApprovalRef {
        ApprovalRef {
            incident,
            phase: a.phase,
            seq: a.seq,
        }
    }

    /// Whether `a` is the request this names (the incident aside).
    pub fn names(&self, a: &Approval) -> bool {
        self.phase == a.phase && self.seq == a.seq
    }
}

impl fmt::Display for ApprovalRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.incident, self.phase, self.seq)
    }
}

/// Why a text is not an [`ApprovalRef`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an approval reference such as 42:main:3 (incident:phase:step)")]
pub struct BadApprovalRef(pub String);

impl FromStr for ApprovalRef {
    type Err = BadApprovalRef;

    fn from_str(s: &str) -> Result<ApprovalRef, BadApprovalRef> {
        let bad = || BadApprovalRef(s.chars().take(64).collect());
        let mut parts = s.trim().split(':');
        let (Some(incident), Some(phase), Some(seq), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        Ok(ApprovalRef {
            incident: incident.parse().map_err(|_| bad())?,
            phase: phase.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_approval_ref_reads_back_what_it_writes_and_names_what_is_wrong() {
        let r = ApprovalRef {
            incident: 42,
            phase: RunPhase::OnFailure,
            seq: 3,
        };
        assert_eq!(r.to_string(), "42:on_failure:3");
        assert_eq!("42:on_failure:3".parse::<ApprovalRef>(), Ok(r));
        for bad in [
            "42",
            "42:main",
            "x:main:1",
            "42:later:1",
            "42:main:-1",
            "1:main:1:2",
        ] {
            assert_eq!(
                bad.parse::<ApprovalRef>(),
                Err(BadApprovalRef(bad.into())),
                "{bad}"
            );
        }
    }
}
