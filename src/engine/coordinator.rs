//! Who acts on a firing when several replicas receive it: the engine's view of the fleet's
//! coordination (Redis, in `coordination`). With none configured the engine is one replica
//! alone and claims nothing.
//!
//! The engine asks before a decision point for a newly opened incident, and only then: a
//! repeat delivery never reaches the engine, so it never reaches the coordinator either.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{OnRedisDown, Phase};

/// An incident's identity, the same on every replica: Alertmanager's fingerprint and the
/// firing's `startsAt`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Firing {
    pub fingerprint: String,
    pub starts_at: DateTime<Utc>,
}

/// A claim this replica holds: renewed while its runbook runs, then replaced by its done
/// marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Won {
    pub firing: Firing,
    pub token: String,
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Won(Won),
    /// Another replica holds it (or finished with it): the replica id.
    Lost {
        by: String,
    },
}

/// What the claim of a firing this replica lost is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// Still held, renewed by the replica named.
    Running { by: String },
    /// The replica named finished with it: its done marker, with the phase it ended in.
    Done { by: String, phase: String },
    /// Neither a claim nor a done marker: the replica that held it stopped renewing it.
    Gone,
}

/// Redis could not be asked (refused, timed out, dropped); the text says what happened, with
/// no password in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

#[async_trait]
pub trait Coordinator: Send + Sync {
    /// This replica's id (`replica.id`), as the others see it.
    fn replica(&self) -> &str;

    /// What to do with a new firing when [`Coordinator::claim`] fails.
    fn on_down(&self) -> OnRedisDown;

    /// Claims `firing` for this replica, atomically: one replica fleet-wide wins. A claim
    /// this replica's earlier process left (it never committed a decision: the incident is
    /// still new here) is taken over.
    async fn claim(&self, firing: &Firing) -> Result<Claim, Unavailable>;

    /// Extends our claim while its runbook runs; `false` when it is no longer ours (expired).
    async fn renew(&self, claim: &Won) -> Result<bool, Unavailable>;

    /// Replaces our claim by the done marker ("done by us", the phase it ended in), kept long
    /// enough that no replica mistakes the end for a crash; never touches another's key.
    async fn done(&self, claim: &Won, phase: Phase) -> Result<(), Unavailable>;

    /// What became of the claim of a firing another replica won.
    async fn holder(&self, firing: &Firing) -> Result<Holder, Unavailable>;

    /// How often a running claim is renewed.
    fn renew_every(&self) -> std::time::Duration;

    /// For `/-/ready`: "connected to …" or "unreachable since …: error".
    fn status(&self) -> String;
}

impl Won {
    /// The replica that holds it (the token's second part).
    pub fn replica(&self) -> &str {
        self.token.split('|').nth(1).unwrap_or("")
    }
}
