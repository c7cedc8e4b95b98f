//! # remediator
//!
//! Receives Alertmanager webhooks, keeps one incident per firing, matches rules, runs guarded
//! runbooks against a docker-compose stack and narrates every step.
//!
//! # Layout
//! - [`domain`]: pure shared types (phases, notices, sinks, contacts, priorities, durations,
//!   the clock) that cross between modules; depends on nothing.
//! - [`alert`]: webhook payloads → validated alerts (pure).
//! - [`rules`]: rule files → a compiled rule set with every error at `file:line` (pure).
//! - [`loader`]: reads a rule directory for `serve`, `check`, `simulate` and reload.
//! - [`settings`]: configuration layers (file, environment, flags).
//! - [`store`]: the embedded SQLite store and its group-commit intake writer (SQL only here).
//! - [`engine`]: intake → incident → guards → runbook → escalation, on traits.
//! - [`actions`]: Docker steps (bollard only here) and service probes.
//! - [`alertmanager`]: Alertmanager's API v2: the alert's state now, asked before a runbook's
//!   first destructive step, and silences made from Slack.
//! - [`coordination`]: fleet mode: who acts on a firing, agreed through Redis.
//! - [`history`]: the fleet history: the journal shipped to Postgres, the fleet's incidents
//!   read from it (tokio-postgres and deadpool-postgres only here, besides the probes).
//! - [`http`]: the HTTP interface (actix-web only here).
//! - [`notify`]: Slack and PagerDuty clients and the durable outbox that feeds them.
//! - [`report`]: an incident's timeline for the post-mortem, and its Markdown (pure).
//! - [`metrics`], [`telemetry`]: Prometheus metrics; logs, OTLP traces and typed events.
//! - [`startup`]: wiring; [`cli`]: the command line.

pub mod actions;
pub mod alert;
pub mod alertmanager;
pub mod cli;
pub mod coordination;
pub mod domain;
pub mod engine;
pub mod history;
pub mod http;
pub mod loader;
pub mod metrics;
pub mod notify;
pub mod report;
pub mod rules;
pub mod settings;
pub mod startup;
pub mod store;
pub mod telemetry;
