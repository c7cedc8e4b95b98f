//! Where an incident came from: an Alertmanager webhook, a person's `remediator run`, or a
//! drill (`remediator drill`), and what that person asked for. Pure.

use serde::{Deserialize, Serialize};

use super::phase::text_enum;

text_enum! {
    /// Who opened an incident. A stored column; drills are shown as such everywhere and never
    /// page PagerDuty.
    pub enum Origin as "origin" {
        /// A webhook from Alertmanager: the alert fired.
        Alertmanager = "alertmanager",
        /// `remediator run` / `POST /api/v1/runs`: a runbook started by hand.
        Manual = "manual",
        /// `remediator drill`: the DR plan's test, never paged.
        Drill = "drill",
    }
}

impl Origin {
    /// Opened by a person, not by an alert: no Alertmanager holds this alert, and nothing
    /// but remediator resolves it.
    pub fn is_synthetic(self) -> bool {
        self != Origin::Alertmanager
    }
}

text_enum! {
    /// How a live drill breaks its target before the synthetic alert goes in.
    pub enum Break as "break" {
        /// `docker stop` (the service's stop signal, then its grace).
        Stop = "stop",
        /// `docker kill` (SIGKILL at once).
        Kill = "kill",
    }
}

/// What the person who started a synthetic incident asked for, stored with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    pub origin: Origin,
    /// Who started it (`by`), as the API or CLI was told.
    pub by: String,
    /// A drill without `--live`: the plan and the guards are recorded, no step runs.
    #[serde(default)]
    pub dry_run: bool,
    /// A live drill's break of its target, done by the runbook before its first step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_with: Option<Break>,
}

impl Started {
    /// An incident of this origin's handling ends with the drill: it is resolved by
    /// remediator whatever the outcome (a manual run only once it recovered or was skipped
    /// without a page).
    pub fn is_drill(&self) -> bool {
        self.origin == Origin::Drill
    }
}
