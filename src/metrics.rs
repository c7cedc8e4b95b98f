//! Prometheus metrics, served at `/metrics` in the text format.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

#[derive(Clone)]
pub struct Buckets(fn() -> Histogram);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        (self.0)()
    }
}

pub struct Metrics {
    registry: Registry,
    pub webhook_requests: Family<Labels, Counter>,
    pub alerts_received: Family<Labels, Counter>,
    pub incidents_opened: Counter,
    pub guard_decisions: Family<Labels, Counter>,
    pub steps: Family<Labels, Counter>,
    pub step_seconds: Family<Labels, Histogram, Buckets>,
    pub runbooks: Family<Labels, Counter>,
    pub pages: Counter,
    /// By rule and origin (alertmanager, manual, drill).
    pub recovery_seconds: Family<Labels, Histogram, Buckets>,
    /// Recoveries past the rule's RTO, by rule and origin.
    pub rto_breaches: Family<Labels, Counter>,
    pub recovery_rto_ratio: Histogram,
    pub intake_backlog: Gauge<i64, AtomicI64Wrapper>,
    pub engine_queue: Gauge<i64, AtomicI64Wrapper>,
    pub outbox_depth: Gauge<i64, AtomicI64Wrapper>,
    pub intake_pruned: Counter,
    pub rule_reloads: Family<Labels, Counter>,
    pub outbox_deliveries: Family<Labels, Counter>,
    pub slack_errors: Family<Labels, Counter>,
    pub quarantined_rows: Family<Labels, Counter>,
    pub pauses_active: Gauge<i64, AtomicI64Wrapper>,
    pub docker_events_lost: Counter,
    pub docker_events_following: Gauge<i64, AtomicI64Wrapper>,
    pub deploys_seen: Family<Labels, Counter>,
    pub history_backlog: Gauge<i64, AtomicI64Wrapper>,
    pub history_last_shipped: Gauge<i64, AtomicI64Wrapper>,
    pub history_shipped_rows: Counter,
    pub history_ship_failures: Counter,
    /// Fleet mode: 1 while Redis answers (also with no Redis configured), 0 while it does not.
    pub coordination_up: Gauge<i64, AtomicI64Wrapper>,
    pub claims: Family<Labels, Counter>,
    pub redis_errors: Family<Labels, Counter>,
    /// Fleet mode: Redis commands (scripts) sent, by what they were for.
    pub redis_commands: Family<Labels, Counter>,
    /// Fleet mode: the answers of the shared limits and target lock (held, limited, busy).
    pub fleet_takes: Family<Labels, Counter>,
}

/// The atomic behind an i64 gauge.
pub type AtomicI64Wrapper = std::sync::atomic::AtomicI64;

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("remediator");
        let m = Metrics {
            webhook_requests: Family::default(),
            alerts_received: Family::default(),
            incidents_opened: Counter::default(),
            guard_decisions: Family::default(),
            steps: Family::default(),
            step_seconds: Family::new_with_constructor(Buckets(|| {
                Histogram::new(exponential_buckets(0.01, 3.0, 10))
            })),
            runbooks: Family::default(),
            pages: Counter::default(),
            recovery_seconds: Family::new_with_constructor(Buckets(|| {
                Histogram::new(exponential_buckets(1.0, 2.0, 14))
            })),
            rto_breaches: Family::default(),
            recovery_rto_ratio: Histogram::new([0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0]),
            intake_backlog: Gauge::default(),
            engine_queue: Gauge::default(),
            intake_pruned: Counter::default(),
            outbox_depth: Gauge::default(),
            rule_reloads: Family::default(),
            outbox_deliveries: Family::default(),
            slack_errors: Family::default(),
            quarantined_rows: Family::default(),
            pauses_active: Gauge::default(),
            docker_events_lost: Counter::default(),
            docker_events_following: Gauge::default(),
            deploys_seen: Family::default(),
            history_backlog: Gauge::default(),
            history_last_shipped: Gauge::default(),
            history_shipped_rows: Counter::default(),
            history_ship_failures: Counter::default(),
            coordination_up: Gauge::default(),
            claims: Family::default(),
            redis_errors: Family::default(),
            redis_commands: Family::default(),
            fleet_takes: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "webhook_requests",
            "Webhook requests by HTTP status code",
            m.webhook_requests.clone(),
        );
        registry.register(
            "alerts_received",
            "Alerts received in webhooks, by status",
            m.alerts_received.clone(),
        );
        registry.register(
            "incidents_opened",
            "Incidents opened (one per fingerprint and startsAt)",
            m.incidents_opened.clone(),
        );
        registry.register(
            "guard_decisions",
            "Guard decisions by guard and verdict",
            m.guard_decisions.clone(),
        );
        registry.register(
            "steps",
            "Runbook steps by kind and outcome",
            m.steps.clone(),
        );
        registry.register(
            "step_duration_seconds",
            "Runbook step duration by kind",
            m.step_seconds.clone(),
        );
        registry.register("runbooks", "Runbooks by outcome", m.runbooks.clone());
        registry.register("pages", "Pages sent to people", m.pages.clone());
        registry.register(
            "time_to_recover_seconds",
            "From an alert's start to its resolution, by rule and origin",
            m.recovery_seconds.clone(),
        );
        registry.register(
            "rto_breaches",
            "Incidents that recovered later than their rule's RTO, by rule and origin",
            m.rto_breaches.clone(),
        );
        registry.register(
            "time_to_recover_rto_ratio",
            "Time to recover as a share of the rule's RTO (above 1 is a breach)",
            m.recovery_rto_ratio.clone(),
        );
        registry.register(
            "intake_backlog",
            "Webhook deliveries stored but not yet applied to incidents (only after an upgrade)",
            m.intake_backlog.clone(),
        );
        registry.register(
            "intake_pruned",
            "Stored webhook bodies deleted after webhook.retention",
            m.intake_pruned.clone(),
        );
        registry.register(
            "engine_queue_depth",
            "Opened and resolved incidents waiting for the engine",
            m.engine_queue.clone(),
        );
        registry.register(
            "outbox_depth",
            "Messages stored but not yet delivered",
            m.outbox_depth.clone(),
        );
        registry.register(
            "rule_reloads",
            "Rule reloads by result",
            m.rule_reloads.clone(),
        );
        registry.register(
            "outbox_deliveries",
            "Outbox delivery attempts by sink and result (delivered, retry, refused)",
            m.outbox_deliveries.clone(),
        );
        registry.register(
            "slack_api_errors",
            "Slack Web API errors by code (ok:false error, ratelimited, http_N, transport)",
            m.slack_errors.clone(),
        );
        registry.register(
            "quarantined_rows",
            "Damaged rows set aside so that the rest goes on, by table: engine queue entries \
             and incidents quarantined, outbox messages held",
            m.quarantined_rows.clone(),
        );
        registry.register(
            "pauses_active",
            "Pauses in force (runbooks they cover are skipped), counted when scraped",
            m.pauses_active.clone(),
        );
        registry.register(
            "docker_events_lost",
            "Times Docker's event stream ended or failed (a daemon restart); it is followed \
             again with `since` the last event seen",
            m.docker_events_lost.clone(),
        );
        registry.register(
            "docker_events_following",
            "1 while Docker's event stream is followed for deploys, 0 while reconnecting",
            m.docker_events_following.clone(),
        );
        registry.register(
            "deploys_seen",
            "Deploys of the compose project's services seen in Docker's events, by action",
            m.deploys_seen.clone(),
        );
        registry.register(
            "history_backlog",
            "Journal changes not yet shipped to the fleet history in Postgres (postgres.url)",
            m.history_backlog.clone(),
        );
        registry.register(
            "history_last_shipped_timestamp_seconds",
            "When a batch last reached the fleet history (Unix time; 0: not yet)",
            m.history_last_shipped.clone(),
        );
        registry.register(
            "history_shipped_rows",
            "Journal rows shipped to the fleet history (a row shipped again after a failure counts again)",
            m.history_shipped_rows.clone(),
        );
        registry.register(
            "history_ship_failures",
            "Attempts to ship to the fleet history that failed (Postgres down, slow or refusing)",
            m.history_ship_failures.clone(),
        );
        registry.register(
            "coordination_up",
            "1 while Redis answers the fleet's coordination (or none is configured), 0 while not",
            m.coordination_up.clone(),
        );
        registry.register(
            "claims",
            "Claims of new firings in Redis, by outcome (won, lost, unavailable)",
            m.claims.clone(),
        );
        registry.register(
            "redis_errors",
            "Redis commands that failed, by what they were for",
            m.redis_errors.clone(),
        );
        registry.register(
            "redis_commands",
            "Redis commands (one script each) sent for the fleet's coordination, by op; constant per firing, none for a repeat delivery",
            m.redis_commands.clone(),
        );
        registry.register(
            "fleet_takes",
            "Answers of the fleet-wide limits and target lock for runs about to start (held, limited, busy)",
            m.fleet_takes.clone(),
        );
        m.coordination_up.set(1);
        Metrics { registry, ..m }
    }

    pub fn guard_decision(&self, guard: &str, verdict: &str) {
        self.guard_decisions
            .get_or_create(&vec![
                ("guard", guard.to_string()),
                ("verdict", verdict.to_string()),
            ])
            .inc();
    }

    pub fn step(&self, kind: &str, outcome: &str, seconds: f64) {
        self.steps
            .get_or_create(&vec![
                ("kind", kind.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
        self.step_seconds
            .get_or_create(&vec![("kind", kind.to_string())])
            .observe(seconds);
    }

    pub fn runbook(&self, outcome: &str) {
        self.runbooks
            .get_or_create(&vec![("outcome", outcome.to_string())])
            .inc();
    }

    pub fn recovered(&self, rule: &str, origin: &str, seconds: f64, rto_seconds: f64) {
        let labels = vec![("rule", rule.to_owned()), ("origin", origin.to_owned())];
        self.recovery_seconds
            .get_or_create(&labels)
            .observe(seconds);
        if seconds > rto_seconds {
            self.rto_breaches.get_or_create(&labels).inc();
        }
        if rto_seconds > 0.0 {
            self.recovery_rto_ratio.observe(seconds / rto_seconds);
        }
    }

    pub fn alerts(&self, firing: u64, resolved: u64) {
        if firing > 0 {
            self.alerts_received
                .get_or_create(&vec![("status", "firing".to_string())])
                .inc_by(firing);
        }
        if resolved > 0 {
            self.alerts_received
                .get_or_create(&vec![("status", "resolved".to_string())])
                .inc_by(resolved);
        }
    }

    pub fn webhook(&self, code: u16) {
        self.webhook_requests
            .get_or_create(&vec![("code", code.to_string())])
            .inc();
    }

    pub fn reload(&self, result: &str) {
        self.rule_reloads
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
    }

    pub fn outbox(&self, sink: &str, result: &str) {
        self.outbox_deliveries
            .get_or_create(&vec![
                ("sink", sink.to_string()),
                ("result", result.to_string()),
            ])
            .inc();
    }

    pub fn slack_error(&self, code: &str) {
        self.slack_errors
            .get_or_create(&vec![("error", code.to_string())])
            .inc();
    }

    pub fn quarantined(&self, table: &str) {
        self.quarantined_rows
            .get_or_create(&vec![("table", table.to_string())])
            .inc();
    }

    pub fn deploy_seen(&self, action: &str) {
        self.deploys_seen
            .get_or_create(&vec![("action", action.to_string())])
            .inc();
    }

    pub fn claim(&self, outcome: &str) {
        self.claims
            .get_or_create(&vec![("outcome", outcome.to_string())])
            .inc();
    }

    pub fn redis_command(&self, what: &str) {
        self.redis_commands
            .get_or_create(&vec![("op", what.replace(' ', "_"))])
            .inc();
    }

    pub fn take(&self, outcome: &str) {
        self.fleet_takes
            .get_or_create(&vec![("outcome", outcome.to_string())])
            .inc();
    }

    pub fn redis_error(&self, what: &str) {
        self.redis_errors
            .get_or_create(&vec![("command", what.to_string())])
            .inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
