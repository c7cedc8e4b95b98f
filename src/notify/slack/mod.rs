//! Slack, the way we send to it: the Web API client for the incident bot and the Block Kit
//! messages it posts.
//!
//! - `client.rs`: [`SlackClient`] (`chat.postMessage`, `chat.update`, `users.lookupByEmail`,
//!   `conversations.list` to resolve a channel name to its ID, finding a tagged post after a
//!   timeout), [`SlackError`] with its retry verdict, and the per-channel pacing.
//! - `approval.rs`: [`approval_blocks`] of an [`ApprovalView`] (an `approve` step's message:
//!   the choices' select, Approve and Reject; once answered, the verdict without buttons),
//!   and their action ids.
//! - `blocks.rs`: [`incident_blocks`] of an [`IncidentView`] (the root: facts, links, the
//!   buttons and who used them), [`escape`], [`mention`], [`silence_link`], [`rto_clock`]
//!   (pure), and the buttons' action ids ([`ACK_ACTION_ID`], [`SILENCE_ACTION_ID`],
//!   [`PAUSE_ACTION_ID`]).
//!
//! What Slack sends us (signed interactivity requests) is read in `http::slack`; only the
//! buttons' action ids are shared ([`button_of`]), defined with the blocks that carry them.

mod approval;
mod blocks;
mod client;

pub use approval::{
    approval_blocks, approval_button_of, AnsweredView, ApprovalView, APPROVAL_CHOICE_ACTION_ID,
    APPROVE_ACTION_ID, REJECT_ACTION_ID,
};
pub use blocks::{
    button_of, escape, incident_blocks, mention, rto_clock, silence_link, IncidentView, Links,
    Offered, Used, ACK_ACTION_ID, PAUSE_ACTION_ID, SILENCE_ACTION_ID,
};
pub use client::{
    default_channel_pacing, is_channel_id, Posted, SlackClient, SlackError, DEFAULT_API_URL,
    TAG_EVENT_TYPE,
};

/// Slack truncates `text` beyond this many characters (chat.postMessage docs).
pub const MAX_TEXT_CHARS: usize = 40_000;
