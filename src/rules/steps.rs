//! The closed set of runbook steps a rule may name, with their arguments and default
//! timeouts. Executing them is the job of `actions`; here they are only data.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::argv;
use super::read::{self, Errors, Fields};
use super::yaml::{Node, Value};
use super::{name_problem, Contact, Dur, ESCALATION_FILE};

/// One step as written in a rule file (`- restart: { grace: 30s }`); read by [`read_steps`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    /// Container state, health, exit code, OOMKilled, restart count, limits, disk usage.
    Diagnose {
        timeout: Option<Dur>,
    },
    /// The last `tail` lines of both output streams.
    Logs {
        /// 1 to 10000; 100 when not given.
        tail: u32,
        timeout: Option<Dur>,
    },
    /// `docker restart`, stopping with a grace period.
    Restart {
        grace: Option<Dur>,
        timeout: Option<Dur>,
    },
    /// What `docker-compose up -d --force-recreate <service>` does.
    Recreate {
        grace: Option<Dur>,
        timeout: Option<Dur>,
    },
    /// Stop several services, in the order given.
    Stop {
        services: Vec<String>,
        grace: Option<Dur>,
        timeout: Option<Dur>,
    },
    /// Start several services, in the order given.
    Start {
        services: Vec<String>,
        timeout: Option<Dur>,
    },
    /// Run a command inside the target (or `service`): an argv list, never a shell string.
    Exec {
        argv: Vec<String>,
        /// 0 when not given.
        expect_exit: i64,
        service: Option<String>,
        timeout: Option<Dur>,
        /// What a templated item's value must match (`pattern:`); [`DEFAULT_ARGV_PATTERN`]
        /// when not given.
        pattern: Option<String>,
    },
    /// Docker health status `healthy`, or running when there is no healthcheck.
    WaitHealthy {
        within: Option<Dur>,
    },
    CheckHttp {
        url: String,
        /// 200 when not given.
        expect_status: u16,
        within: Option<Dur>,
    },
    /// `SELECT 1`; the password, if any, comes from the environment variable `password_env`.
    CheckPostgres {
        dsn: String,
        password_env: Option<String>,
        within: Option<Dur>,
    },
    /// `PING`.
    CheckRedis {
        url: String,
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
        to: Vec<String>,
        message: Option<String>,
    },
    /// What `docker-compose stop S && docker-compose rm -v S` does: each service's containers
    /// stopped with a grace period and removed with their anonymous volumes; of the named
    /// volumes only those in `volumes` (compose names, without the project prefix) go.
    Remove {
        services: Vec<String>,
        volumes: Vec<String>,
        grace: Option<Dur>,
        timeout: Option<Dur>,
    },
    /// Services brought up group by group, each group healthy (or running, without a
    /// healthcheck) within `within` before the next starts: existing containers started,
    /// missing ones created from `docker.compose_file`.
    Up {
        groups: Vec<Vec<String>>,
        within: Option<Dur>,
        timeout: Option<Dur>,
    },
    /// Wait for a named contact (`who`) to approve or reject, at most `timeout`; with
    /// `choices_from: previous`, the lines the step before printed are what they choose from.
    Approve {
        who: String,
        timeout: Dur,
        prompt: String,
        choices_from_previous: bool,
    },
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
            StepKind::Remove { .. } => "remove",
            StepKind::Up { .. } => "up",
            StepKind::Approve { .. } => "approve",
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
                | StepKind::Remove { .. }
                | StepKind::Up { .. }
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
            StepKind::Remove {
                timeout,
                grace,
                services,
                ..
            } => or(
                timeout,
                (or(grace, secs(10)) + secs(20)) * services.len().max(1) as u32,
            ),
            // Each group: creating what is missing (compose), then the health wait.
            StepKind::Up {
                timeout,
                within,
                groups,
            } => or(
                timeout,
                (or(within, UP_WITHIN) + secs(60)) * groups.len().max(1) as u32,
            ),
            // The wait ends at its own stored deadline; this is a backstop.
            StepKind::Approve { timeout, .. } => timeout.0 + secs(30),
        }
    }
}

/// Every step kind, as written in rule files.
const KINDS: &[&str] = &[
    "diagnose",
    "logs",
    "restart",
    "recreate",
    "stop",
    "start",
    "exec",
    "wait_healthy",
    "check_http",
    "check_postgres",
    "check_redis",
    "wait",
    "notify",
    "page",
    "remove",
    "up",
    "approve",
];

/// How long each group of an `up` step may take to be healthy, when `within` is not given.
pub const UP_WITHIN: Duration = Duration::from_secs(120);

/// The arguments each kind takes.
fn arguments(kind: &str) -> &'static [&'static str] {
    match kind {
        "diagnose" => &["timeout"],
        "logs" => &["tail", "timeout"],
        "restart" | "recreate" => &["grace", "timeout"],
        "stop" => &["services", "grace", "timeout"],
        "start" => &["services", "timeout"],
        "exec" => &["argv", "expect_exit", "service", "timeout", "pattern"],
        "wait_healthy" => &["within"],
        "check_http" => &["url", "expect_status", "within"],
        "check_postgres" => &["dsn", "password_env", "within"],
        "check_redis" => &["url", "within"],
        "wait" => &["duration"],
        "notify" => &["message"],
        "page" => &["to", "message"],
        "remove" => &["services", "volumes", "grace", "timeout"],
        "up" => &["groups", "within", "timeout"],
        "approve" => &["who", "timeout", "prompt", "choices_from"],
        _ => &[],
    }
}

const STEP_EXAMPLE: &str = "one kind and its arguments, e.g. `- restart: { grace: 30s }`";

/// Reads a list of steps (`steps`, `on_failure`); `None` when any of them is wrong, after
/// every problem of every step has been recorded.
/// `approved_before`: an `approve` step runs before this list (the `steps` of an
/// `on_failure`), so `{{ approval.choice }}` may be used from its start.
pub(super) fn read_steps(
    e: &mut Errors<'_>,
    n: &Node,
    what: &str,
    contacts: Option<&BTreeMap<String, Contact>>,
    approved_before: bool,
) -> Option<Vec<Step>> {
    let items = read::list(e, n, what)?;
    let before = e.count();
    let steps: Vec<(Step, &Node)> = items
        .iter()
        .filter_map(|item| read_step(e, item, contacts).map(|s| (s, item)))
        .collect();
    let mut approved = approved_before;
    for (i, (step, item)) in steps.iter().enumerate() {
        match &step.kind {
            StepKind::Approve {
                choices_from_previous: true,
                ..
            } if !matches!(
                i.checked_sub(1).map(|p| &steps[p].0.kind),
                Some(StepKind::Exec { .. })
            ) =>
            {
                e.at(
                    item.pos,
                    "approve: `choices_from: previous` needs an exec step right before it (its output lines are the choices)",
                );
            }
            StepKind::Approve { .. } => approved = true,
            StepKind::Exec { argv, .. }
                if !approved
                    && argv
                        .iter()
                        .any(|a| argv::template_of(a) == Ok(Some(argv::Template::Choice))) =>
            {
                e.at(
                    item.pos,
                    "exec: `{{ approval.choice }}` is used with no approve step before it: add `- approve: { who: ..., choices_from: previous }` earlier",
                );
            }
            _ => {}
        }
    }
    (e.count() == before).then(|| steps.into_iter().map(|(s, _)| s).collect())
}

fn read_step(
    e: &mut Errors<'_>,
    item: &Node,
    contacts: Option<&BTreeMap<String, Contact>>,
) -> Option<Step> {
    let line = item.pos.map(|p| p.line).unwrap_or(1);
    let entries = match &item.value {
        Value::Map(entries) if !entries.is_empty() => entries,
        _ => {
            let shown = e.shown(item);
            let hint = match e.scalar_text(item) {
                Some(k) if KINDS.contains(&k.as_str()) => {
                    format!("; write `- {k}: {{ ... }}`, with `{{}}` for no arguments")
                }
                _ => String::new(),
            };
            e.at(
                item.pos,
                format!("a step must be {STEP_EXAMPLE}, not {shown}{hint}"),
            );
            return None;
        }
    };
    if entries.len() > 1 {
        let kinds: Vec<String> = entries
            .iter()
            .map(|(k, _)| format!("`{}`", e.scalar_text(k).unwrap_or_else(|| e.shown(k))))
            .collect();
        e.at(
            item.pos,
            format!(
                "a step is one kind, but this one has {}; start each step with its own `-`",
                kinds.join(" and ")
            ),
        );
    }
    let before = e.count();
    let mut kinds = entries
        .iter()
        .map(|(key, args)| read_kind(e, key, args, contacts))
        .collect::<Vec<_>>();
    if e.count() > before || kinds.len() != 1 {
        return None;
    }
    kinds.pop().flatten().map(|kind| Step::new(kind, line))
}

/// One `kind: { arguments }` entry.
fn read_kind(
    e: &mut Errors<'_>,
    key: &Node,
    args: &Node,
    contacts: Option<&BTreeMap<String, Contact>>,
) -> Option<StepKind> {
    let kind = e.scalar_text(key).unwrap_or_else(|| e.shown(key));
    if !KINDS.contains(&kind.as_str()) {
        e.at(
            key.pos,
            format!(
                "unknown step `{kind}` (expected one of: {})",
                KINDS.join(", ")
            ),
        );
        return None;
    }
    let f = if args.is_null() {
        Fields::empty(args.pos, &kind)
    } else {
        let example = format!(" of its arguments, e.g. `{kind}: {{}}`");
        Fields::of(e, args, &kind, &example)?
    };
    let before = e.count();
    f.check_keys(e, Some(arguments(&kind)));
    let s = Args { f: &f };
    let kind = match kind.as_str() {
        "diagnose" => StepKind::Diagnose {
            timeout: s.duration(e, "timeout"),
        },
        "logs" => StepKind::Logs {
            tail: s
                .integer(e, "tail", 1..=10_000, "a whole number from 1 to 10000")
                .unwrap_or(100),
            timeout: s.duration(e, "timeout"),
        },
        "restart" => StepKind::Restart {
            grace: s.duration(e, "grace"),
            timeout: s.duration(e, "timeout"),
        },
        "recreate" => StepKind::Recreate {
            grace: s.duration(e, "grace"),
            timeout: s.duration(e, "timeout"),
        },
        "stop" => StepKind::Stop {
            services: s.services(e),
            grace: s.duration(e, "grace"),
            timeout: s.duration(e, "timeout"),
        },
        "start" => StepKind::Start {
            services: s.services(e),
            timeout: s.duration(e, "timeout"),
        },
        "exec" => StepKind::Exec {
            argv: s.argv(e),
            expect_exit: s
                .integer(
                    e,
                    "expect_exit",
                    i128::from(i64::MIN)..=i128::from(i64::MAX),
                    "a whole number",
                )
                .unwrap_or(0),
            service: s.service(e),
            timeout: s.duration(e, "timeout"),
            pattern: s.pattern(e),
        },
        "wait_healthy" => StepKind::WaitHealthy {
            within: s.duration(e, "within"),
        },
        "check_http" => StepKind::CheckHttp {
            url: s.http_url(e),
            expect_status: s
                .integer(
                    e,
                    "expect_status",
                    100..=599,
                    "an HTTP status from 100 to 599",
                )
                .unwrap_or(200),
            within: s.duration(e, "within"),
        },
        "check_postgres" => StepKind::CheckPostgres {
            dsn: s.dsn(e),
            password_env: s.string(e, "password_env"),
            within: s.duration(e, "within"),
        },
        "check_redis" => StepKind::CheckRedis {
            url: s.redis_url(e),
            within: s.duration(e, "within"),
        },
        "wait" => StepKind::Wait {
            duration: s.required_duration(e, "duration", " (e.g. wait: { duration: 30s })"),
        },
        "notify" => StepKind::Notify {
            message: s.message(e),
        },
        "page" => StepKind::Page {
            to: s
                .f
                .get("to")
                .and_then(|n| {
                    read::contact_list(
                        e,
                        n,
                        &s.f.child("to"),
                        contacts,
                        &format!(" in {ESCALATION_FILE}"),
                    )
                })
                .unwrap_or_default(),
            message: s.string(e, "message"),
        },
        "remove" => StepKind::Remove {
            services: s.services(e),
            volumes: s.volumes(e),
            grace: s.duration(e, "grace"),
            timeout: s.duration(e, "timeout"),
        },
        "up" => StepKind::Up {
            groups: s.groups(e),
            within: s.duration(e, "within"),
            timeout: s.duration(e, "timeout"),
        },
        "approve" => StepKind::Approve {
            who: s
                .f
                .require(e, "who", " (a contact of escalation.yaml, e.g. who: dba)")
                .and_then(|n| {
                    let what = s.f.child("who");
                    let who = read::string(e, n, &what)?;
                    if let Some(contacts) = contacts.filter(|c| !c.contains_key(&who)) {
                        e.at(
                            n.pos,
                            format!(
                                "{what} `{who}` is not a contact in {ESCALATION_FILE} (known: {})",
                                super::names_of(contacts)
                            ),
                        );
                    }
                    Some(who)
                })
                .unwrap_or_default(),
            timeout: s
                .duration(e, "timeout")
                .unwrap_or(Dur(Duration::from_secs(30 * 60))),
            prompt: s
                .string(e, "prompt")
                .unwrap_or_else(|| "Approve the next steps of the runbook?".into()),
            choices_from_previous: s.choices_from(e),
        },
        _ => unreachable!("every kind in KINDS is read above"),
    };
    (e.count() == before).then_some(kind)
}

/// A step's arguments, each read on its own so that every bad one is reported. A value that
/// is wrong is recorded and stands in as its default; the step is dropped afterwards.
struct Args<'f, 'n> {
    f: &'f Fields<'n>,
}

impl Args<'_, '_> {
    fn duration(&self, e: &mut Errors<'_>, key: &str) -> Option<Dur> {
        let n = self.f.get(key)?;
        read::duration(e, n, &self.f.child(key)).map(Dur)
    }

    fn required_duration(&self, e: &mut Errors<'_>, key: &str, hint: &str) -> Dur {
        self.f
            .require(e, key, hint)
            .and_then(|n| read::duration(e, n, &self.f.child(key)))
            .map(Dur)
            .unwrap_or(Dur(Duration::from_secs(1)))
    }

    fn integer<T: TryFrom<i128>>(
        &self,
        e: &mut Errors<'_>,
        key: &str,
        range: std::ops::RangeInclusive<i128>,
        expected: &str,
    ) -> Option<T> {
        let n = self.f.get(key)?;
        read::integer(e, n, &self.f.child(key), range, expected).and_then(|i| T::try_from(i).ok())
    }

    fn string(&self, e: &mut Errors<'_>, key: &str) -> Option<String> {
        let n = self.f.get(key)?;
        read::string(e, n, &self.f.child(key))
    }

    fn required_string(
        &self,
        e: &mut Errors<'_>,
        key: &str,
        hint: &str,
    ) -> Option<(String, &Node)> {
        let n = self.f.require(e, key, hint)?;
        read::string(e, n, &self.f.child(key)).map(|s| (s, n))
    }

    /// `stop`/`start`: a non-empty list of plain service names.
    fn services(&self, e: &mut Errors<'_>) -> Vec<String> {
        let what = self.f.child("services");
        let Some(n) = self
            .f
            .require(e, "services", " (e.g. services: [backend, celery-worker])")
        else {
            return Vec::new();
        };
        let Some(items) = read::strings(e, n, &what) else {
            return Vec::new();
        };
        if items.is_empty() {
            e.at(n.pos, format!("{what} must name at least one service"));
        }
        for (s, pos) in &items {
            if let Some(why) = name_problem(s) {
                e.at(*pos, format!("{what} `{s}` {why}"));
            }
        }
        items.into_iter().map(|(s, _)| s).collect()
    }

    /// `remove.volumes`: plain compose volume names (the project prefix is added when the
    /// step runs); none when not given.
    fn volumes(&self, e: &mut Errors<'_>) -> Vec<String> {
        let what = self.f.child("volumes");
        let Some(n) = self.f.get("volumes") else {
            return Vec::new();
        };
        let Some(items) = read::strings(e, n, &what) else {
            return Vec::new();
        };
        for (v, pos) in &items {
            if name_problem(v).is_some() {
                e.at(
                    *pos,
                    format!("{what} `{v}` is not a plain volume name (letters, digits, '_', '.', '-'; starting with a letter or digit): name it as the compose file's `volumes:` does, e.g. redis-data"),
                );
            }
        }
        items.into_iter().map(|(s, _)| s).collect()
    }

    /// `up.groups`: a non-empty list of non-empty lists of plain service names, each service
    /// in one group only.
    fn groups(&self, e: &mut Errors<'_>) -> Vec<Vec<String>> {
        let what = self.f.child("groups");
        let example = " (e.g. groups: [[postgres, redis], [backend]])";
        let Some(n) = self.f.require(e, "groups", example) else {
            return Vec::new();
        };
        let Some(items) = read::list(e, n, &what) else {
            return Vec::new();
        };
        if items.is_empty() {
            e.at(
                n.pos,
                format!("{what} must have at least one group, e.g. [[postgres, redis], [backend]]"),
            );
        }
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut groups = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let group = format!("{what}[{}]", i + 1);
            if !matches!(item.value, Value::Seq(_)) {
                let shown = e.shown(item);
                e.at(
                    item.pos,
                    format!(
                        "{group} must be a list of services, e.g. [postgres, redis], not {shown}"
                    ),
                );
                continue;
            }
            let Some(names) = read::strings(e, item, &group) else {
                continue;
            };
            if names.is_empty() {
                e.at(item.pos, format!("{group} must name at least one service"));
            }
            for (s, pos) in &names {
                if let Some(why) = name_problem(s) {
                    e.at(*pos, format!("{group} `{s}` {why}"));
                } else if let Some(first) = seen.get(s) {
                    e.at(
                        *pos,
                        format!(
                            "{group} `{s}` is already in group {first}; name each service once"
                        ),
                    );
                } else {
                    seen.insert(s.clone(), i + 1);
                }
            }
            groups.push(names.into_iter().map(|(s, _)| s).collect());
        }
        groups
    }

    fn service(&self, e: &mut Errors<'_>) -> Option<String> {
        let n = self.f.get("service")?;
        let what = self.f.child("service");
        let s = read::string(e, n, &what)?;
        if let Some(why) = name_problem(&s) {
            e.at(n.pos, format!("{what} `{s}` {why}"));
        }
        Some(s)
    }

    fn argv(&self, e: &mut Errors<'_>) -> Vec<String> {
        let what = self.f.child("argv");
        let example = " (a list, e.g. argv: [pg_isready, -q])";
        let Some(n) = self.f.require(e, "argv", example) else {
            return Vec::new();
        };
        let Some(items) = read::strings(e, n, &what) else {
            return Vec::new();
        };
        if items.first().is_none_or(|(p, _)| p.is_empty()) {
            e.at(
                n.pos,
                format!("{what} must name a program, e.g. [pg_isready, -q]"),
            );
        }
        for (i, (item, pos)) in items.iter().enumerate() {
            match argv::template_of(item) {
                Err(why) => e.at(*pos, format!("{what}: {why}")),
                Ok(Some(_)) if i == 0 => e.at(
                    *pos,
                    format!("{what}: the program cannot be a template; name it"),
                ),
                _ => {}
            }
        }
        items.into_iter().map(|(s, _)| s).collect()
    }

    /// `exec.pattern`: a regular expression a templated value must match whole.
    fn pattern(&self, e: &mut Errors<'_>) -> Option<String> {
        let n = self.f.get("pattern")?;
        let what = self.f.child("pattern");
        let p = read::string(e, n, &what)?;
        if let Err(why) = argv::compile_pattern(&p) {
            e.at(n.pos, format!("{what}: {why}"));
        }
        Some(p)
    }

    /// `approve.choices_from`: only `previous` (the output lines of the step before).
    fn choices_from(&self, e: &mut Errors<'_>) -> bool {
        let Some(n) = self.f.get("choices_from") else {
            return false;
        };
        let what = self.f.child("choices_from");
        match read::string(e, n, &what).as_deref() {
            Some("previous") => true,
            Some(other) => {
                e.at(
                    n.pos,
                    format!("{what} `{other}` is not known: write `choices_from: previous` (each line the step before printed is a choice)"),
                );
                false
            }
            None => false,
        }
    }

    fn http_url(&self, e: &mut Errors<'_>) -> String {
        let Some((url, n)) =
            self.required_string(e, "url", " (e.g. url: http://backend:8000/health)")
        else {
            return String::new();
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            let what = self.f.child("url");
            e.at(
                n.pos,
                format!("{what} `{url}` must start with http:// or https://"),
            );
        }
        url
    }

    fn redis_url(&self, e: &mut Errors<'_>) -> String {
        let Some((url, n)) = self.required_string(e, "url", " (e.g. url: redis://redis:6379)")
        else {
            return String::new();
        };
        let what = self.f.child("url");
        if !url.starts_with("redis://") {
            e.at(n.pos, format!("{what} `{url}` must start with redis://"));
        } else if has_url_password(&url) {
            e.at(
                n.pos,
                format!("{what} must not hold a password (rule files are not secret)"),
            );
        }
        url
    }

    fn dsn(&self, e: &mut Errors<'_>) -> String {
        let example = " (e.g. dsn: postgres://postgres@postgres:5432/postgres)";
        let Some((dsn, n)) = self.required_string(e, "dsn", example) else {
            return String::new();
        };
        if dsn.contains("password") || dsn.contains(":@") || has_url_password(&dsn) {
            let what = self.f.child("dsn");
            e.at(
                n.pos,
                format!("{what} must not hold a password (rule files are not secret); name an environment variable in password_env"),
            );
        }
        dsn
    }

    fn message(&self, e: &mut Errors<'_>) -> String {
        let Some((message, n)) = self.required_string(e, "message", "") else {
            return String::new();
        };
        if message.trim().is_empty() {
            e.at(n.pos, format!("{} is empty", self.f.child("message")));
        }
        message
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
