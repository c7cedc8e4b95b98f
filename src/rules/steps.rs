//! The closed set of runbook steps a rule may name, with their arguments and default
//! timeouts. Executing them is the job of `actions`; here they are only data.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{validate_name, Dur, Escalation};

fn default_tail() -> u32 {
    100
}

/// One step as written in a rule file. Each variant's fields are strict.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StepKind {
    /// Container state, health, exit code, OOMKilled, restart count, limits, disk usage.
    Diagnose {
        #[serde(default)]
        timeout: Option<Dur>,
    },
    /// The last `tail` lines of both output streams.
    Logs {
        #[serde(default = "default_tail")]
        tail: u32,
        #[serde(default)]
        timeout: Option<Dur>,
    },
    /// `docker restart`, stopping with a grace period.
    Restart {
        #[serde(default)]
        grace: Option<Dur>,
        #[serde(default)]
        timeout: Option<Dur>,
    },
    /// What `docker-compose up -d --force-recreate <service>` does.
    Recreate {
        #[serde(default)]
        grace: Option<Dur>,
        #[serde(default)]
        timeout: Option<Dur>,
    },
    /// Stop several services, in the order given.
    Stop {
        services: Vec<String>,
        #[serde(default)]
        grace: Option<Dur>,
        #[serde(default)]
        timeout: Option<Dur>,
    },
    /// Start several services, in the order given.
    Start {
        services: Vec<String>,
        #[serde(default)]
        timeout: Option<Dur>,
    },
    /// Run a command inside the target (or `service`): an argv list, never a shell string.
    Exec {
        argv: Vec<String>,
        #[serde(default)]
        expect_exit: i64,
        #[serde(default)]
        service: Option<String>,
        #[serde(default)]
        timeout: Option<Dur>,
    },
    /// Docker health status `healthy`, or running when there is no healthcheck.
    WaitHealthy {
        #[serde(default)]
        within: Option<Dur>,
    },
    CheckHttp {
        url: String,
        #[serde(default = "default_status")]
        expect_status: u16,
        #[serde(default)]
        within: Option<Dur>,
    },
    /// `SELECT 1`; the password, if any, comes from the environment variable `password_env`.
    CheckPostgres {
        dsn: String,
        #[serde(default)]
        password_env: Option<String>,
        #[serde(default)]
        within: Option<Dur>,
    },
    /// `PING`.
    CheckRedis {
        url: String,
        #[serde(default)]
        within: Option<Dur>,
    },
    Wait {
        duration: Dur,
    },
    /// A message to the incident's thread.
    Notify {
        message: String,
    },
    /// Page people: the named contacts, or the priority's `page` list from escalation.yaml.
    Page {
        #[serde(default)]
        to: Vec<String>,
        #[serde(default)]
        message: Option<String>,
    },
}

fn default_status() -> u16 {
    200
}

impl StepKind {
    /// The name used in rule files, records and messages.
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Diagnose { .. } => "diagnose",
            StepKind::Logs { .. } => "logs",
            StepKind::Restart { .. } => "restart",
            StepKind::Recreate { .. } => "recreate",
            StepKind::Stop { .. } => "stop",
            StepKind::Start { .. } => "start",
            StepKind::Exec { .. } => "exec",
            StepKind::WaitHealthy { .. } => "wait_healthy",
            StepKind::CheckHttp { .. } => "check_http",
            StepKind::CheckPostgres { .. } => "check_postgres",
            StepKind::CheckRedis { .. } => "check_redis",
            StepKind::Wait { .. } => "wait",
            StepKind::Notify { .. } => "notify",
            StepKind::Page { .. } => "page",
        }
    }

    /// Whether the step changes a container (and so counts against limits and budgets).
    pub fn is_action(&self) -> bool {
        matches!(
            self,
            StepKind::Restart { .. }
                | StepKind::Recreate { .. }
                | StepKind::Stop { .. }
                | StepKind::Start { .. }
                | StepKind::Exec { .. }
        )
    }

    /// How long the step may take in all, before it counts as timed out.
    fn timeout(&self) -> Duration {
        let secs = Duration::from_secs;
        let or = |d: &Option<Dur>, default: Duration| d.map(|d| d.0).unwrap_or(default);
        match self {
            StepKind::Diagnose { timeout } => or(timeout, secs(30)),
            StepKind::Logs { timeout, .. } => or(timeout, secs(30)),
            StepKind::Restart { timeout, grace } | StepKind::Recreate { timeout, grace } => {
                or(timeout, or(grace, secs(10)) + secs(60))
            }
            StepKind::Stop {
                timeout,
                grace,
                services,
            } => or(
                timeout,
                (or(grace, secs(10)) + secs(20)) * services.len().max(1) as u32,
            ),
            StepKind::Start { timeout, services } => {
                or(timeout, secs(30) * services.len().max(1) as u32)
            }
            StepKind::Exec { timeout, .. } => or(timeout, secs(60)),
            StepKind::WaitHealthy { within } => or(within, secs(120)),
            StepKind::CheckHttp { within, .. }
            | StepKind::CheckPostgres { within, .. }
            | StepKind::CheckRedis { within, .. } => or(within, secs(30)),
            StepKind::Wait { duration } => duration.0 + secs(1),
            StepKind::Notify { .. } | StepKind::Page { .. } => secs(10),
        }
    }

    /// Checks what the YAML shape cannot express.
    pub(super) fn validate(&self, escalation: Option<&Escalation>) -> Result<(), String> {
        let step = self.name();
        match self {
            StepKind::Logs { tail, .. } if *tail == 0 || *tail > 10_000 => {
                Err(format!("{step}: tail must be between 1 and 10000"))
            }
            StepKind::Stop { services, .. } | StepKind::Start { services, .. } => {
                if services.is_empty() {
                    return Err(format!("{step}: services must name at least one service"));
                }
                services
                    .iter()
                    .try_for_each(|s| validate_name(s).map_err(|e| format!("{step}: {e}")))
            }
            StepKind::Exec { argv, service, .. } => {
                if argv.is_empty() || argv[0].is_empty() {
                    return Err(format!(
                        "{step}: argv must name a program, e.g. [\"pg_isready\", \"-q\"]"
                    ));
                }
                if let Some(s) = service {
                    validate_name(s).map_err(|e| format!("{step}: service: {e}"))?;
                }
                Ok(())
            }
            StepKind::CheckHttp {
                url, expect_status, ..
            } => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!(
                        "{step}: url {url:?} must start with http:// or https://"
                    ));
                }
                if !(100..=599).contains(expect_status) {
                    return Err(format!(
                        "{step}: expect_status {expect_status} is not an HTTP status"
                    ));
                }
                Ok(())
            }
            StepKind::CheckPostgres { dsn, .. } => {
                if dsn.contains("password") || dsn.contains(":@") || has_url_password(dsn) {
                    return Err(format!(
                        "{step}: the dsn must not hold a password (rule files are not secret); name an environment variable in password_env"
                    ));
                }
                Ok(())
            }
            StepKind::CheckRedis { url, .. } => {
                if !url.starts_with("redis://") {
                    return Err(format!("{step}: url {url:?} must start with redis://"));
                }
                if has_url_password(url) {
                    return Err(format!(
                        "{step}: the url must not hold a password (rule files are not secret)"
                    ));
                }
                Ok(())
            }
            StepKind::Notify { message } if message.trim().is_empty() => {
                Err(format!("{step}: message is empty"))
            }
            StepKind::Page { to, .. } => {
                if let Some(esc) = escalation {
                    for who in to {
                        if !esc.contacts.contains_key(who) {
                            return Err(format!(
                                "{step}: {who:?} is not a contact in escalation.yaml (known: {})",
                                esc.contact_names()
                            ));
                        }
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// `scheme://user:secret@host` holds a password.
fn has_url_password(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or("");
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// A compiled step: its kind, its overall deadline and where it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    #[serde(skip)]
    pub kind: StepKind,
    pub name: &'static str,
    #[serde(with = "super::duration_text")]
    pub timeout: Duration,
    pub line: u64,
}

impl Step {
    pub fn new(kind: StepKind, line: u64) -> Step {
        Step {
            name: kind.name(),
            timeout: kind.timeout(),
            kind,
            line,
        }
    }
}
