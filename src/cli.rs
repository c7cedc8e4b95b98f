//! The command line: `serve`, `check`, `simulate`, `incidents`, `pause`, `resume`, `pauses`,
//! `postmortem`.

mod client;
mod fleet;
mod incidents;
mod pauses;
mod postmortem;
mod runs;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use serde_json::json;

use crate::alert::{parse_webhook, Alert, AlertStatus, Fingerprint, Labels};
use crate::domain::duration::format as human;
use crate::engine::{plan, Action, FactsQuery, GuardFacts, GuardState, Mode, Recorded};
use crate::loader::{load_rules, LoadError};
use crate::settings::{Overrides, Settings};
use crate::startup::Application;
use crate::store::Store;

pub use incidents::{Output, StateFilter};
pub use postmortem::PostmortemOutput;

#[derive(Parser, Debug)]
#[command(
    name = "remediator",
    version,
    about = "Remediates a docker-compose stack from Alertmanager webhooks"
)]
pub struct Cli {
    /// A YAML configuration file; REMEDIATOR_<SECTION>__<KEY> environment variables override it.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the service.
    Serve {
        /// Address to listen on (default 127.0.0.1:9095).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Directory of the embedded store (default ./data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Rule directory (default ./rules).
        #[arg(long = "rules")]
        rules_dir: Option<PathBuf>,
    },
    /// Validate a rule directory; prints every error as file:line:column: message, exit 1.
    Check {
        /// Rule directory (default ./rules).
        dir: Option<PathBuf>,
    },
    /// Show what an alert would do: the matched rule, each guard's decision, the plan. Acts on nothing.
    Simulate {
        /// Labels, e.g. alertname=PostgresDown,service=postgres
        #[arg(long, conflicts_with = "alert")]
        labels: Option<String>,
        /// A webhook payload (as Alertmanager sends it) or one alert object.
        #[arg(long)]
        alert: Option<PathBuf>,
        #[arg(long = "rules")]
        rules_dir: Option<PathBuf>,
        /// Read past runs from this store for the rate limits (default ./data; none if
        /// absent). Opened read-only: nothing is written.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Plan as of this time (RFC 3339, e.g. 2026-12-05T02:30:00Z) instead of now: the
        /// alert fires then, and maintenance windows and limits are judged then.
        #[arg(long, value_parser = parse_at)]
        at: Option<chrono::DateTime<chrono::Utc>>,
        /// `table` for people (the default), `json` for programs.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// List incidents, newest first, from the running service's API (GET /api/v1/incidents).
    Incidents {
        /// The service (default: http:// and the configured listen address); api.token
        /// (REMEDIATOR_API__TOKEN) is sent as the bearer token.
        #[arg(long)]
        url: Option<String>,
        /// Which incidents.
        #[arg(long, value_enum, default_value_t = StateFilter::All)]
        state: StateFilter,
        /// Incidents on the one page shown (1 to 1000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Every incident, page by page.
        #[arg(long, conflicts_with = "limit")]
        all: bool,
        /// Only incidents older than this id: a page's `next` gives the page after it.
        #[arg(long)]
        before: Option<i64>,
        /// `table` for people, `json` (the API's shape) for scripts.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// The whole fleet's incidents, from the fleet history (the service's postgres.url):
        /// one row per incident, with the replica that acted.
        #[arg(long, conflicts_with = "before")]
        fleet: bool,
    },
    /// Pause runbooks on the running service (POST /api/v1/pauses). Alerts still open
    /// incidents, are told and escalate; only the runbooks the pause covers are skipped, each
    /// with who paused, until when and why. A runbook already running is not stopped.
    #[command(group(clap::ArgGroup::new("scope").required(true).multiple(true).args(["rule", "service", "all"])))]
    Pause {
        /// The service (default: http:// and the configured listen address); api.token
        /// (REMEDIATOR_API__TOKEN) is sent as the bearer token.
        #[arg(long)]
        url: Option<String>,
        /// Only this rule's runbooks (with --service: only on that service).
        #[arg(long)]
        rule: Option<String>,
        /// Only runbooks acting on this compose service.
        #[arg(long)]
        service: Option<String>,
        /// Every runbook of every rule.
        #[arg(long, conflicts_with_all = ["rule", "service"])]
        all: bool,
        /// How long, e.g. 30m or 2h (at most 30 days).
        #[arg(
            long = "for",
            value_name = "DURATION",
            required_unless_present = "until"
        )]
        length: Option<String>,
        /// Or until when, e.g. 2026-12-03T14:00:00Z.
        #[arg(long, value_name = "TIME", conflicts_with = "length")]
        until: Option<String>,
        /// Why: shown on every runbook the pause skips.
        #[arg(long)]
        reason: String,
        /// Who pauses (default $USER).
        #[arg(long)]
        by: Option<String>,
        /// `table` for people, `json` (the API's pause) for scripts.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// End a pause early, or every pause in force (DELETE /api/v1/pauses[/ID]).
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "all"])))]
    Resume {
        /// The service (default: http:// and the configured listen address).
        #[arg(long)]
        url: Option<String>,
        /// The pause's id, as `pause` and `pauses` print it.
        id: Option<i64>,
        /// Every pause in force.
        #[arg(long)]
        all: bool,
        /// Who resumes (default $USER).
        #[arg(long)]
        by: Option<String>,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Start a rule's runbook by hand on the running service (POST /api/v1/runs): an incident
    /// of origin `manual` opens through the real pipeline (guards, thread, escalation).
    Run {
        #[command(flatten)]
        request: runs::RunRequest,
        /// The service (default: http:// and the configured listen address).
        #[arg(long)]
        url: Option<String>,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// The DR plan's test: announce a drill in Slack, optionally break the target, run the
    /// rule's runbook through the real pipeline (dry-run unless --live; never paged), wait for
    /// it to end and write a Markdown report. Exit 0 when it passed, 1 when it failed.
    Drill {
        #[command(flatten)]
        request: runs::RunRequest,
        /// Run the steps against the compose project (default: dry-run, nothing executed).
        #[arg(long)]
        live: bool,
        /// Break the target first: stop or kill it (live only).
        #[arg(long = "break", value_name = "stop|kill", requires = "live")]
        break_with: Option<String>,
        /// Write the report here (default: stdout).
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// How long to wait for the drill to end (default 30m).
        #[arg(long, default_value = "30m")]
        wait: String,
        /// The service (default: http:// and the configured listen address).
        #[arg(long)]
        url: Option<String>,
    },
    /// List the pauses in force on the running service (GET /api/v1/pauses).
    Pauses {
        /// The service (default: http:// and the configured listen address).
        #[arg(long)]
        url: Option<String>,
        /// Ended pauses too (resumed or expired), newest first.
        #[arg(long)]
        all: bool,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// An incident's post-mortem as Markdown for the wiki, from the running service
    /// (GET /api/v1/incidents/ID/timeline): summary, timeline, time to recover vs the RTO,
    /// what automation and people did, and empty root cause and lessons learned sections.
    Postmortem {
        /// The incident's id, as `incidents` lists it.
        id: i64,
        /// The service (default: http:// and the configured listen address); api.token
        /// (REMEDIATOR_API__TOKEN) is sent as the bearer token.
        #[arg(long)]
        url: Option<String>,
        /// `markdown` for the wiki, `json` (the API's timeline) for scripts.
        #[arg(short, long, value_enum, default_value_t = PostmortemOutput::Markdown)]
        output: PostmortemOutput,
    },
}

fn settings(cli_config: Option<&Path>, overrides: Overrides) -> anyhow::Result<Settings> {
    Ok(Settings::load(cli_config, std::env::vars(), &overrides)?)
}

/// Runs the command and returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Serve {
            listen,
            data_dir,
            rules_dir,
        } => {
            let s = settings(
                cli.config.as_deref(),
                Overrides {
                    listen,
                    data_dir,
                    rules_dir,
                },
            )?;
            let telemetry = crate::telemetry::init(&s.log.format, &s.log.level);
            let served = async { Application::build(s).await?.run_until_stopped().await }.await;
            // After the server, the engine and the outbox have stopped: their last spans
            // are buffered. Flushing blocks, so off the runtime's workers.
            let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
            served?;
            Ok(0)
        }
        Command::Check { dir } => {
            let s = settings(
                cli.config.as_deref(),
                Overrides {
                    rules_dir: dir,
                    ..Default::default()
                },
            )?;
            match load_rules(&s.rules_dir) {
                Ok(set) => {
                    let windows = match set.windows.len() {
                        0 => String::new(),
                        1 => ", 1 maintenance window".to_string(),
                        n => format!(", {n} maintenance windows"),
                    };
                    println!(
                        "{}: OK, {} rules, {} contacts{windows}",
                        s.rules_dir.display(),
                        set.rules.len(),
                        set.escalation.contacts.len()
                    );
                    Ok(0)
                }
                Err(LoadError::Rules(errors)) => {
                    eprintln!("{errors}");
                    eprintln!("{}; nothing was loaded", errors.summary());
                    Ok(1)
                }
                Err(other) => {
                    eprintln!("{other}");
                    Ok(1)
                }
            }
        }
        Command::Simulate {
            labels,
            alert,
            rules_dir,
            data_dir,
            at,
            output,
        } => {
            let s = settings(
                cli.config.as_deref(),
                Overrides {
                    rules_dir,
                    data_dir,
                    ..Default::default()
                },
            )?;
            let now = at.unwrap_or_else(chrono::Utc::now);
            let alerts = match (labels, alert) {
                (Some(l), None) => vec![alert_from_labels(&l, now)?],
                (None, Some(path)) => alerts_from_file(&path, now)?,
                _ => bail!("give the alert with --labels k=v,... or --alert FILE"),
            };
            let out = simulate(&s, &alerts, now)?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&out)?),
                Output::Table => print!("{}", simulation_text(&out)),
            }
            Ok(0)
        }
        Command::Incidents {
            url,
            state,
            limit,
            all,
            before,
            output,
            fleet,
        } => {
            let s = settings(cli.config.as_deref(), Overrides::default())?;
            let listing = incidents::Listing {
                url: url.unwrap_or_else(|| service_url(s.listen)),
                token: s.api.token.clone(),
                state,
                before,
                pages: if all {
                    incidents::Pages::All
                } else {
                    incidents::Pages::One { limit }
                },
            };
            if fleet {
                return fleet::run(listing, output).await;
            }
            incidents::run(listing, output).await
        }
        Command::Pause {
            url,
            rule,
            service,
            all,
            length,
            until,
            reason,
            by,
            output,
        } => {
            let api = api(cli.config.as_deref(), url)?;
            let req = pauses::PauseRequest {
                rule,
                service,
                all,
                length,
                until,
                reason,
                by,
            };
            pauses::pause(&api, req, output).await
        }
        Command::Resume {
            url,
            id,
            all,
            by,
            output,
        } => {
            let api = api(cli.config.as_deref(), url)?;
            let which = match (id, all) {
                (Some(id), false) => pauses::Resume::One(id),
                _ => pauses::Resume::All,
            };
            pauses::resume(&api, which, by, output).await
        }
        Command::Postmortem { id, url, output } => {
            let s = settings(cli.config.as_deref(), Overrides::default())?;
            let url = url.unwrap_or_else(|| service_url(s.listen));
            postmortem::run(&url, s.api.token.clone(), id, output).await
        }
        Command::Run {
            request,
            url,
            output,
        } => {
            let api = api(cli.config.as_deref(), url)?;
            runs::run(&api, &request, output).await
        }
        Command::Drill {
            request,
            live,
            break_with,
            report,
            wait,
            url,
        } => {
            let api = api(cli.config.as_deref(), url)?;
            let break_with = break_with
                .map(|b| b.parse::<crate::domain::Break>())
                .transpose()
                .map_err(|e| anyhow::anyhow!("--break: {e}"))?;
            let wait = crate::domain::duration::parse(&wait)
                .map_err(|e| anyhow::anyhow!("--wait: {e}"))?;
            let drill = runs::Drill {
                live,
                break_with,
                report,
                wait,
            };
            runs::drill(&api, &request, &drill).await
        }
        Command::Pauses { url, all, output } => {
            let api = api(cli.config.as_deref(), url)?;
            pauses::list(&api, all, output).await
        }
    }
}

/// The running service: `--url`, or the configured listen address, with `api.token`.
fn api(config: Option<&Path>, url: Option<String>) -> anyhow::Result<client::Api> {
    let s = settings(config, Overrides::default())?;
    client::Api::new(&url.unwrap_or_else(|| service_url(s.listen)), s.api.token)
}

/// Where a client on this machine reaches the service listening on `listen`.
fn service_url(listen: SocketAddr) -> String {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{addr}")
}

/// `--at`: an RFC 3339 time, with its offset (`Z` for UTC).
fn parse_at(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| {
            format!("{e}: write an RFC 3339 time with its offset, e.g. 2026-12-05T02:30:00Z")
        })
}

fn alert_from_labels(spec: &str, now: chrono::DateTime<chrono::Utc>) -> anyhow::Result<Alert> {
    let mut labels = Labels::new();
    for pair in spec.split(',').filter(|p| !p.trim().is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("{pair:?} is not name=value"))?;
        labels.insert(k.trim().to_string(), v.trim().trim_matches('"').to_string());
    }
    if labels.is_empty() {
        bail!("--labels needs at least one name=value pair");
    }
    Ok(firing_at(labels, now))
}

/// A synthetic alert starting at `now`, as Alertmanager would send these labels.
fn firing_at(labels: Labels, now: chrono::DateTime<chrono::Utc>) -> Alert {
    Alert {
        fingerprint: Fingerprint::of_labels(&labels),
        status: AlertStatus::Firing,
        labels,
        annotations: Labels::new(),
        starts_at: now,
        ends_at: None,
        generator_url: String::new(),
    }
}

fn alerts_from_file(path: &Path, now: chrono::DateTime<chrono::Utc>) -> anyhow::Result<Vec<Alert>> {
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if let Ok(n) = parse_webhook(&text) {
        return Ok(n.alerts);
    }
    #[derive(serde::Deserialize)]
    struct Bare {
        labels: Labels,
    }
    let one: Bare = serde_json::from_slice(&text).with_context(|| {
        format!(
            "{} is neither a webhook payload nor an alert with labels",
            path.display()
        )
    })?;
    Ok(vec![firing_at(one.labels, now)])
}

/// What `simulate` knows of the past: the store's runs, or nothing when there is no store.
enum History {
    Store(Box<Store>),
    None,
}

impl GuardState for History {
    type Error = crate::store::StoreError;

    fn facts(&self, q: &FactsQuery<'_>) -> Result<GuardFacts, Self::Error> {
        match self {
            History::Store(store) => Recorded(store).facts(q),
            // No history but this alert's own firing (counted as the engine counts it).
            History::None => Ok(GuardFacts {
                firings: 1,
                ..GuardFacts::default()
            }),
        }
    }
}

/// The plan for each alert at `now`, with every guard evaluated against the local store's
/// history, through the engine's own [`plan()`]. The store is opened read-only, if it exists.
pub fn simulate(
    s: &Settings,
    alerts: &[Alert],
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<serde_json::Value> {
    let rules = load_rules(&s.rules_dir)?;
    let history = if s.data_dir.join(crate::store::DB_FILE).exists() {
        History::Store(Box::new(Store::open_read_only(&s.data_dir)?))
    } else {
        History::None
    };
    let mut out = Vec::new();
    for alert in alerts {
        let p = plan(
            &alert.labels,
            alert.fingerprint.as_str(),
            0,
            &rules,
            &s.engine,
            &history,
            now,
            Mode::Simulate,
        )?;
        let Some(m) = &p.matched else {
            out.push(json!({ "alert": alert.labels, "rule": null, "plan": "no rule matches: nothing would happen" }));
            continue;
        };
        let rule = m.rule;
        let policy = rules.escalation.policy(m.priority);
        let verdict = match &p.action {
            Action::Run { target, .. } => {
                format!("would run {} step(s) on {}", rule.steps.len(), target.key())
            }
            Action::Skip {
                pages: true,
                reason,
            } => format!("would not act, and would page: {reason}"),
            Action::Skip {
                pages: false,
                reason,
            } => format!("would not act: {reason}"),
            Action::Nothing => "nothing would happen".into(),
        };
        out.push(json!({
            "alert": alert.labels,
            "fingerprint": alert.fingerprint,
            "rule": rule.name,
            "file": format!("{}:{}", rule.file.display(), rule.line),
            "priority": m.priority,
            "rto": human(rule.rto),
            "owner": rule.owner,
            "target": m.target.as_ref().ok(),
            "match": p.decisions.first(),
            "decisions": p.decisions.get(1..).unwrap_or_default(),
            "plan": verdict,
            "steps": rule.steps,
            "on_failure": rule.on_failure,
            "fallback": rule.fallback,
            "notify": m.told.iter().map(|c| c.key.as_str()).collect::<Vec<_>>(),
            "page_on_failure": policy.page,
        }));
    }
    Ok(json!({ "simulated": out }))
}

/// `simulate`'s output for people: per alert, the rule, each guard, and the steps.
fn simulation_text(v: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    for (i, s) in v["simulated"].as_array().into_iter().flatten().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let labels: Vec<String> = s["alert"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", text(v)))
            .collect();
        let _ = writeln!(out, "Alert:     {{{}}}", labels.join(", "));
        if s["rule"].is_null() {
            let _ = writeln!(out, "Plan:      {}", text(&s["plan"]));
            continue;
        }
        let target = match &s["target"] {
            serde_json::Value::Object(t) => format!("{} {}", text(&t["kind"]), text(&t["name"])),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "Rule:      {} ({})",
            text(&s["rule"]),
            text(&s["file"])
        );
        let _ = writeln!(
            out,
            "Priority:  {}, RTO {}, owner {}",
            text(&s["priority"]),
            text(&s["rto"]),
            text(&s["owner"])
        );
        let _ = writeln!(out, "Target:    {target}");
        let told: Vec<String> = s["notify"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        let _ = writeln!(out, "Told:      {}", told.join(", "));
        let _ = writeln!(out, "Guards:");
        let decisions = s["decisions"].as_array().cloned().unwrap_or_default();
        let width = decisions
            .iter()
            .map(|d| text(&d["guard"]).len())
            .max()
            .unwrap_or(0);
        for d in &decisions {
            let _ = writeln!(
                out,
                "  {:<width$}  {:<8}  {}",
                text(&d["guard"]),
                text(&d["verdict"]),
                text(&d["reason"])
            );
        }
        let _ = writeln!(out, "Plan:      {}", text(&s["plan"]));
        for (title, key) in [
            ("Steps:", "steps"),
            ("Fallback:", "fallback"),
            ("On failure:", "on_failure"),
        ] {
            let steps = s[key].as_array().cloned().unwrap_or_default();
            if steps.is_empty() {
                continue;
            }
            let _ = writeln!(out, "{title}");
            for (n, st) in steps.iter().enumerate() {
                let _ = writeln!(out, "  {}. {}", n + 1, text(&st["name"]));
            }
        }
    }
    out
}
