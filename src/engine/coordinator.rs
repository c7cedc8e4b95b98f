//! Who acts on a firing when several replicas receive it: the engine's view of the fleet's
//! coordination (Redis, in `coordination`). With none configured the engine is one replica
//! alone and claims nothing.
//!
//! The engine asks before a decision point for a newly opened incident, and only then: a
//! repeat delivery never reaches the engine, so it never reaches the coordinator either.

use async_trait::async_trait;
use std::time::Duration;

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
    /// The target key this claim's runbook holds fleet-wide, and the incident (here) that
    /// holds it: renewed with the claim, released with its done marker.
    pub target: Option<(String, i64)>,
}

/// A limiter the fleet shares: its key (as in the store) and quota, and this replica's own
/// stored state as how far its TAT is ahead of now (a floor: the fleet's state never counts
/// less than this replica knows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedLimit {
    pub key: String,
    pub runs: u32,
    pub per: Duration,
    pub local_ahead: Option<Duration>,
}

/// What a run about to start needs of the fleet: its target (none for a rule without a
/// container target) held for the incident, and a run of each limiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Take {
    pub target: Option<String>,
    pub incident: i64,
    pub limits: Vec<SharedLimit>,
}

/// The fleet's answer to a [`Take`], all or none. `ahead` is, per limiter of the take, how
/// far its TAT was ahead of the Redis server's now before this answer (zero: no state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// Every limiter had room and the target was free: the runs are spent and the target held.
    Held { ahead: Vec<Duration> },
    /// A limiter had no room: nothing spent, nothing held.
    Limited { ahead: Vec<Duration> },
    /// The target is held by the runbook of `incident` on `replica`: nothing spent.
    Busy {
        replica: String,
        incident: i64,
        ahead: Vec<Duration>,
    },
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
    /// Neither a claim nor a done marker: the replica that held it stopped renewing it. The
    /// asking replica has marked it in the same step (so that it alone pages for it).
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

    /// Spends a run of every limiter of `take` and holds its target, atomically and on the
    /// Redis server's clock; or says which refused (nothing spent, nothing held).
    async fn take(&self, claim: &Won, take: &Take) -> Result<Taken, Unavailable>;

    /// Lets go of the target `claim` holds (its run did not start after all), only if it is
    /// still ours.
    async fn release(&self, claim: &Won) -> Result<(), Unavailable>;

    /// Crash recovery of a firing this replica won in an earlier process and left mid-run:
    /// replaces the claim by the done marker `interrupted`. `true` when this replica is the
    /// one to page (the claim was still ours, or gone and nobody had marked it); `false` when
    /// another replica already took it for a crash and paged.
    async fn recovered(&self, firing: &Firing) -> Result<bool, Unavailable>;

    /// While Redis does not answer, asks it again (one cheap command), so that coordination
    /// shows as resumed (`/-/ready`, `/metrics`) without waiting for a firing.
    async fn probe(&self) {}

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
