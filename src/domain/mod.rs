//! Pure shared types: what an incident is in (its [`Phase`]), what is said about it (a
//! [`Notice`], for a [`Sink`]), who is told (a [`Contact`]), priorities, durations as people
//! write them, and the [`Clock`].
//!
//! This module depends on no other module of the crate and does no I/O: every other module
//! may use it, and it is what crosses between them (the engine emits notices, `notify` renders
//! them, `store` reads and writes them).

pub mod approval;
pub mod button;
pub mod clock;
pub mod duration;
pub mod hold;
pub mod limit;
pub mod notice;
pub mod origin;
pub mod pause;
pub mod phase;
pub mod priority;

pub use approval::{Approval, ApprovalRef, ApprovalVerdict, Decided};
pub use button::{Button, Pressed, BUTTON_HOLD};
pub use clock::{Clock, SystemClock, TokioClock};
pub use hold::{
    AlertNow, DeployAction, DeployFact, InhibitorFact, OnRedisDown, OnUnreachable, PauseFact,
    SilenceFact, WindowFact,
};
pub use limit::LimitState;
pub use notice::{
    Cleared, Contact, DecisionKind, Notice, NoticeKind, PagerDutyEvent, RootState, RunPhase, Sink,
    StepOutcome, Verdict,
};
pub use origin::{Break, Origin, Started};
pub use pause::{NewPause, PauseInvalid, PauseScope, PauseState};
pub use phase::{IncidentState, Phase, UnknownValue};
pub use priority::Priority;
