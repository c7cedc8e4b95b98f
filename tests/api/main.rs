//! The whole service, spawned on port 0, against real components.
//! Components come from `scripts/test-env.sh`; a missing one fails its test, never skips it.

mod alertmanager;
mod alertmanager_check;
mod approve_slack;
mod architecture;
mod browser;
mod cli;
mod crash;
mod crash_engine;
mod deploy;
mod deploys;
mod docker;
mod docker_faults;
mod emulators;
mod fleet;
mod fleet_ha;
mod fleet_history;
mod helpers;
mod incidents;
mod notify_clients;
mod otlp;
mod otlp_receiver;
mod pauses;
mod postmortem;
mod runs;
mod scenario2;
mod scenario2_slack;
mod scenarios;
mod slack;
mod stack;
mod thread;
mod webhook;
mod windows;
