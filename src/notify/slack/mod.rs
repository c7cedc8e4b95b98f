//! Slack, the way we send to it: the Web API client for the incident bot and the Block Kit
//! messages it posts.
//!
//! - `client.rs`: [`SlackClient`] (`chat.postMessage`, `chat.update`, `users.lookupByEmail`,
//!   finding a tagged post after a timeout), [`SlackError`] with its retry verdict, and the
//!   per-channel pacing.
//! - `blocks.rs`: [`incident_blocks`] of an [`IncidentView`], [`escape`] and [`mention`]
//!   (pure), and [`ACK_ACTION_ID`], the Acknowledge button's action id.
//!
//! What Slack sends us (signed interactivity requests) is read in `http::slack`; only the
//! button's [`ACK_ACTION_ID`] is shared, defined with the blocks that carry it.

mod blocks;
mod client;

pub use blocks::{escape, incident_blocks, mention, IncidentView, ACK_ACTION_ID};
pub use client::{
    default_channel_pacing, Posted, SlackClient, SlackError, DEFAULT_API_URL, TAG_EVENT_TYPE,
};

/// Slack truncates `text` beyond this many characters (chat.postMessage docs).
pub const MAX_TEXT_CHARS: usize = 40_000;
