//! Internal events as typed values (Vector's internal events): one value per thing that
//! happened; [`InternalEvent::emit`] writes its log line, updates its Prometheus metric and
//! records its fields on the current span, together, so the three never disagree.
//!
//! Emit each event inside the span named in its doc (see [`super::spans`]); outside it the
//! log line and the metric are the same, and the span fields are dropped. With no OTLP
//! endpoint set the span part costs a lookup that finds no OpenTelemetry layer.
//!
//! Metric names and labels are those of [`crate::metrics`], unchanged. Field types are plain
//! for now (`&str`, ids, durations).

use std::time::Duration;

use opentelemetry::trace::Status;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::Metrics;

/// Something that happened, told once to the logs, the metrics and the trace.
pub trait InternalEvent {
    fn emit(&self, metrics: &Metrics);
}

/// Marks the current span as failed, for trace views (no-op with tracing off).
fn failed(why: impl Into<String>) {
    Span::current().set_status(Status::error(why.into()));
}

/// A webhook's body is committed with its alerts applied. Call site: the webhook handler,
/// once the intake has answered, inside `delivery`. Metric `alerts_received{status}`; debug
/// log (one per request: the hot path); span `delivery.id`, `alerts`, `alerts.firing`,
/// `alerts.resolved`.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryStored {
    pub delivery_id: i64,
    pub firing: usize,
    pub resolved: usize,
}

impl InternalEvent for DeliveryStored {
    fn emit(&self, metrics: &Metrics) {
        let alerts = self.firing + self.resolved;
        tracing::debug!(
            delivery = self.delivery_id,
            alerts,
            firing = self.firing,
            resolved = self.resolved,
            "delivery stored"
        );
        metrics.alerts(self.firing as u64, self.resolved as u64);
        let span = Span::current();
        span.record("delivery.id", self.delivery_id);
        span.record("alerts", alerts);
        span.record("alerts.firing", self.firing);
        span.record("alerts.resolved", self.resolved);
    }
}

/// The webhook got its answer, whatever it was. Call site: the webhook handler, last, inside
/// `delivery`. Metric `webhook_requests{code}`; debug log; span `http.response.status_code`,
/// `outcome` (`stored`, `rejected` for a 4xx, `unavailable` for a 5xx: error status).
#[derive(Debug, Clone, Copy)]
pub struct WebhookAnswered {
    pub code: u16,
}

impl InternalEvent for WebhookAnswered {
    fn emit(&self, metrics: &Metrics) {
        let outcome = match self.code {
            200..=299 => "stored",
            400..=499 => "rejected",
            _ => "unavailable",
        };
        tracing::debug!(code = self.code, outcome, "webhook answered");
        metrics.webhook(self.code);
        let span = Span::current();
        span.record("http.response.status_code", self.code);
        span.record("outcome", outcome);
        if self.code >= 500 {
            failed(format!("answered {}", self.code));
        }
    }
}

/// The engine takes up a newly opened incident (phase `new`) and matched its rule, or found
/// none (`rule: None`). Call site: `Engine::handle_opened`, inside `incident`. Metric
/// `incidents_opened`; info log; span `fingerprint`, `alertname`, `rule` (or `outcome` =
/// `no_rule`).
#[derive(Debug, Clone, Copy)]
pub struct IncidentOpened<'a> {
    pub incident_id: i64,
    pub fingerprint: &'a str,
    pub alertname: &'a str,
    pub rule: Option<&'a str>,
}

impl InternalEvent for IncidentOpened<'_> {
    fn emit(&self, metrics: &Metrics) {
        tracing::info!(
            incident = self.incident_id,
            fingerprint = self.fingerprint,
            alertname = self.alertname,
            rule = self.rule,
            "incident opened"
        );
        metrics.incidents_opened.inc();
        let span = Span::current();
        span.record("fingerprint", self.fingerprint);
        span.record("alertname", self.alertname);
        match self.rule {
            Some(rule) => span.record("rule", rule),
            None => span.record("outcome", "no_rule"),
        };
    }
}

/// The engine records an incident's resolution. Call site: `Engine::handle_resolved`, inside
/// `incident`. Metrics `time_to_recover_seconds` and, with a rule's RTO,
/// `time_to_recover_rto_ratio`; info log; span `fingerprint`, `alertname`, `rule`, `outcome`
/// = `resolved`.
#[derive(Debug, Clone, Copy)]
pub struct IncidentResolved<'a> {
    pub incident_id: i64,
    pub fingerprint: &'a str,
    pub alertname: &'a str,
    pub rule: Option<&'a str>,
    pub time_to_recover: Duration,
    /// The matched rule's RTO; the metrics are observed only with one, as before.
    pub rto: Option<Duration>,
    /// `alertmanager`, `manual` or `drill`.
    pub origin: &'a str,
}

impl InternalEvent for IncidentResolved<'_> {
    fn emit(&self, metrics: &Metrics) {
        let ttr = self.time_to_recover.as_secs_f64();
        tracing::info!(
            incident = self.incident_id,
            fingerprint = self.fingerprint,
            rule = self.rule,
            time_to_recover_s = ttr,
            rto_s = self.rto.map(|r| r.as_secs()),
            "incident resolved"
        );
        if let Some(rto) = self.rto {
            metrics.recovered(self.rule.unwrap_or(""), self.origin, ttr, rto.as_secs_f64());
        }
        let span = Span::current();
        span.record("fingerprint", self.fingerprint);
        span.record("alertname", self.alertname);
        if let Some(rule) = self.rule {
            span.record("rule", rule);
        }
        span.record("outcome", "resolved");
    }
}

/// One guard's verdict (`continue` or `skip`) with its reason, as stored. Call site: the
/// engine, for each decision it records (`Engine::decide`), inside `guards`. Metric
/// `guard_decisions{guard,verdict}`; info log; span `guard.<guard>` = verdict, and on a skip
/// `outcome` = `skip`, `guard`, `reason`. The engine stops at the first skip, so a `guards`
/// span has at most one.
#[derive(Debug, Clone, Copy)]
pub struct GuardDecided<'a> {
    pub incident_id: i64,
    pub guard: &'a str,
    pub verdict: &'a str,
    pub reason: &'a str,
}

impl InternalEvent for GuardDecided<'_> {
    fn emit(&self, metrics: &Metrics) {
        tracing::info!(
            incident = self.incident_id,
            guard = self.guard,
            verdict = self.verdict,
            reason = self.reason,
            "guard decided"
        );
        metrics.guard_decision(self.guard, self.verdict);
        let span = Span::current();
        span.set_attribute(format!("guard.{}", self.guard), self.verdict.to_string());
        if self.verdict != "continue" {
            span.record("outcome", self.verdict);
            span.record("guard", self.guard);
            span.record("reason", self.reason);
        }
    }
}

/// Every guard let the runbook run. Call site: the engine, after the last [`GuardDecided`],
/// inside `guards`. No metric (the decisions are counted); debug log; span `outcome` =
/// `continue`.
#[derive(Debug, Clone, Copy)]
pub struct GuardsPassed {
    pub incident_id: i64,
}

impl InternalEvent for GuardsPassed {
    fn emit(&self, _: &Metrics) {
        tracing::debug!(incident = self.incident_id, "every guard agreed");
        Span::current().record("outcome", "continue");
    }
}

/// A runbook step starts (its start is stored). Call site: `Engine::run_step`, first thing
/// inside `step`. No metric (steps are counted when they end); info log; span `step.phase`,
/// `step.seq`, `step.kind`.
#[derive(Debug, Clone, Copy)]
pub struct StepStarted<'a> {
    pub incident_id: i64,
    /// `main` or `on_failure`.
    pub phase: &'a str,
    pub seq: usize,
    pub kind: &'a str,
}

impl InternalEvent for StepStarted<'_> {
    fn emit(&self, _: &Metrics) {
        tracing::info!(
            incident = self.incident_id,
            phase = self.phase,
            seq = self.seq,
            kind = self.kind,
            "step started"
        );
        let span = Span::current();
        span.record("step.phase", self.phase);
        span.record("step.seq", self.seq);
        span.record("step.kind", self.kind);
    }
}

/// A runbook step ended (its outcome is stored). Call site: `Engine::run_step`, inside
/// `step`. Metrics `steps{kind,outcome}` and `step_duration_seconds{kind}`; info log (warn
/// unless `ok`); span `outcome`, `step.duration_ms`, error status unless `ok`.
#[derive(Debug, Clone, Copy)]
pub struct StepEnded<'a> {
    pub incident_id: i64,
    pub phase: &'a str,
    pub seq: usize,
    pub kind: &'a str,
    /// `ok`, `failed` or `timed_out`.
    pub outcome: &'a str,
    pub took: Duration,
    /// What the step said (its first line is enough).
    pub detail: &'a str,
}

impl InternalEvent for StepEnded<'_> {
    fn emit(&self, metrics: &Metrics) {
        let took_ms = self.took.as_millis() as u64;
        if self.outcome == "ok" {
            tracing::info!(
                incident = self.incident_id,
                phase = self.phase,
                seq = self.seq,
                kind = self.kind,
                outcome = self.outcome,
                took_ms,
                detail = self.detail,
                "step ended"
            );
        } else {
            tracing::warn!(
                incident = self.incident_id,
                phase = self.phase,
                seq = self.seq,
                kind = self.kind,
                outcome = self.outcome,
                took_ms,
                detail = self.detail,
                "step ended"
            );
        }
        metrics.step(self.kind, self.outcome, self.took.as_secs_f64());
        let span = Span::current();
        span.record("outcome", self.outcome);
        span.record("step.duration_ms", took_ms);
        if self.outcome != "ok" {
            failed(format!("{}: {}", self.outcome, self.detail));
        }
    }
}

/// A runbook ended. Call site: `Engine::run_runbook`, inside `incident`. Metric
/// `runbooks{outcome}`; info log; span `outcome` (`recovered` or `failed`).
#[derive(Debug, Clone, Copy)]
pub struct RunbookEnded<'a> {
    pub incident_id: i64,
    pub rule: &'a str,
    pub outcome: &'a str,
}

impl InternalEvent for RunbookEnded<'_> {
    fn emit(&self, metrics: &Metrics) {
        tracing::info!(
            incident = self.incident_id,
            rule = self.rule,
            outcome = self.outcome,
            "runbook ended"
        );
        metrics.runbook(self.outcome);
        Span::current().record("outcome", self.outcome);
    }
}

/// A sink took an outbox message. Call site: `Deliverer::deliver_due` on `Outcome::Done`,
/// inside `notify`. Metric `outbox_deliveries{sink,result="delivered"}`; debug log; span
/// `outcome` = `delivered`.
#[derive(Debug, Clone, Copy)]
pub struct NoticeDelivered<'a> {
    pub incident_id: i64,
    pub message_id: i64,
    pub sink: &'a str,
    pub kind: &'a str,
}

impl InternalEvent for NoticeDelivered<'_> {
    fn emit(&self, metrics: &Metrics) {
        tracing::debug!(
            sink = self.sink,
            message_id = self.message_id,
            incident = self.incident_id,
            kind = self.kind,
            "notification delivered"
        );
        metrics.outbox(self.sink, "delivered");
        Span::current().record("outcome", "delivered");
    }
}

/// A send failed in a way worth retrying; the message is due again in `retry_in`. Call site:
/// `Deliverer::deliver_due` on `Outcome::Retry`, inside `notify`. Metric
/// `outbox_deliveries{sink,result="retry"}`; warn log (today's line, with the id as
/// `message_id`: a `message` field would clash with the log message); span `outcome` =
/// `retry`, `error`, error status.
#[derive(Debug, Clone, Copy)]
pub struct NoticeRetried<'a> {
    pub incident_id: i64,
    pub message_id: i64,
    pub sink: &'a str,
    pub kind: &'a str,
    pub error: &'a str,
    pub retry_in: Duration,
}

impl InternalEvent for NoticeRetried<'_> {
    fn emit(&self, metrics: &Metrics) {
        tracing::warn!(sink = self.sink, message_id = self.message_id, incident = self.incident_id, kind = self.kind, error = self.error, retry_in = ?self.retry_in, "delivery failed; will retry");
        metrics.outbox(self.sink, "retry");
        let span = Span::current();
        span.record("outcome", "retry");
        span.record("error", self.error);
        failed(self.error);
    }
}

/// A sink refused a message for good; it and the incident's later messages are held until a
/// reload. Call site: `Deliverer::deliver_due` on `Outcome::Refused`, inside `notify`. Metric
/// `outbox_deliveries{sink,result="refused"}`; error log (today's line); span `outcome` =
/// `refused`, `error`, error status.
#[derive(Debug, Clone, Copy)]
pub struct NoticeRefused<'a> {
    pub incident_id: i64,
    pub message_id: i64,
    pub sink: &'a str,
    pub kind: &'a str,
    pub error: &'a str,
}

impl InternalEvent for NoticeRefused<'_> {
    fn emit(&self, metrics: &Metrics) {
        tracing::error!(
            sink = self.sink,
            message_id = self.message_id,
            incident = self.incident_id,
            kind = self.kind,
            error = self.error,
            "delivery refused; holding the incident's messages until a reload"
        );
        metrics.outbox(self.sink, "refused");
        let span = Span::current();
        span.record("outcome", "refused");
        span.record("error", self.error);
        failed(self.error);
    }
}

/// A row that does not read (`StoreError::Corrupt`) was set aside so that the rest goes on:
/// an engine-queue entry quarantined, an incident passed over by the escalation timers or
/// crash recovery, an outbox message held. Call sites: `Engine::process_pending` (inside
/// `incident` when the entry read), `Engine::escalation_tick`, `Engine::recover`,
/// `Deliverer::deliver_due`. Metric `quarantined_rows{table}`; error log naming the row, what
/// was done and what to do; span `outcome` = `quarantined`, error status.
#[derive(Debug, Clone, Copy)]
pub struct RowQuarantined<'a> {
    /// The damaged row's table and id there.
    pub table: &'a str,
    pub row_id: i64,
    /// The incident it was for, when known.
    pub incident_id: Option<i64>,
    /// The engine-queue entry taken out for it, if any.
    pub queue_id: Option<i64>,
    /// The `StoreError::Corrupt` text.
    pub error: &'a str,
    /// What was done with it.
    pub done: &'a str,
    /// What a person should do.
    pub remedy: &'a str,
}

impl InternalEvent for RowQuarantined<'_> {
    fn emit(&self, metrics: &Metrics) {
        tracing::error!(
            table = self.table,
            row = self.row_id,
            incident = self.incident_id,
            queue_id = self.queue_id,
            error = self.error,
            done = self.done,
            remedy = self.remedy,
            "damaged row set aside: {}; {}",
            self.done,
            self.remedy
        );
        metrics.quarantined(self.table);
        Span::current().record("outcome", "quarantined");
        failed(self.error);
    }
}

/// Someone paused runbooks. Call sites: `POST /api/v1/pauses`, `Engine::pause_incident`. No
/// metric (`pauses_active` is counted when scraped: a pause also ends by itself); info log of
/// who paused what, until when and why, the audit trail beside the stored row.
#[derive(Debug, Clone, Copy)]
pub struct PauseSet<'a> {
    pub id: i64,
    /// The pause's scope in words ("rule postgres-down on service postgres").
    pub scope: &'a str,
    pub by: &'a str,
    pub until: chrono::DateTime<chrono::Utc>,
    pub reason: &'a str,
}

impl InternalEvent for PauseSet<'_> {
    fn emit(&self, _: &Metrics) {
        tracing::info!(
            pause = self.id,
            scope = self.scope,
            by = self.by,
            until = %self.until,
            reason = self.reason,
            "runbooks paused: {} by {} until {}",
            self.scope,
            self.by,
            self.until
        );
    }
}

/// Someone resumed pauses before their end. Call site: `DELETE /api/v1/pauses[/{id}]`. No
/// metric (see [`PauseSet`]); info log of which and by whom.
#[derive(Debug, Clone, Copy)]
pub struct PausesResumed<'a> {
    pub ids: &'a [i64],
    pub by: &'a str,
}

impl InternalEvent for PausesResumed<'_> {
    fn emit(&self, _: &Metrics) {
        tracing::info!(pauses = ?self.ids, by = self.by, "pauses resumed by {}", self.by);
    }
}

/// Docker's event stream, followed for deploys, ended or failed (the daemon restarted or
/// went away), or could not be opened. Call site: the deploy watch (`actions::events`), no
/// span. Metrics `docker_events_lost` (+1) and `docker_events_following` (0); warn log with
/// what was missed from when, and the next try.
#[derive(Debug, Clone, Copy)]
pub struct DockerEventsLost<'a> {
    pub host: &'a str,
    pub error: &'a str,
    /// Events after this time are read back once the stream is open again.
    pub since: &'a str,
    pub retry_in: Duration,
}

impl InternalEvent for DockerEventsLost<'_> {
    fn emit(&self, metrics: &Metrics) {
        tracing::warn!(
            host = self.host,
            error = self.error,
            since = self.since,
            retry_in_ms = self.retry_in.as_millis() as u64,
            "Docker's event stream is lost: {}; deploys are not seen until it is back, then those since {} are read back (is dockerd running?)",
            self.error,
            self.since
        );
        metrics.docker_events_lost.inc();
        metrics.docker_events_following.set(0);
    }
}

/// Docker's event stream is followed (again). Call site: the deploy watch, no span. Metric
/// `docker_events_following` (1); info log, with the gap read back after a loss.
#[derive(Debug, Clone, Copy)]
pub struct DockerEventsFollowing<'a> {
    pub project: &'a str,
    /// Events are read back from this time.
    pub since: &'a str,
    /// How long the stream was lost, when it was.
    pub gap: Option<Duration>,
}

impl InternalEvent for DockerEventsFollowing<'_> {
    fn emit(&self, metrics: &Metrics) {
        match self.gap {
            Some(gap) => tracing::info!(
                project = self.project,
                since = self.since,
                gap_ms = gap.as_millis() as u64,
                "following Docker's events again after {}; the gap is read back from {}",
                crate::domain::duration::format(gap),
                self.since
            ),
            None => tracing::info!(
                project = self.project,
                since = self.since,
                "following Docker's events for deploys of compose project {}",
                self.project
            ),
        }
        metrics.docker_events_following.set(1);
    }
}

/// A deploy of a service (a container created, recreated, renamed or destroyed by someone
/// else than remediator) was seen. Call site: the deploy watch, no span. Metric
/// `deploys_seen{action}`; info log.
#[derive(Debug, Clone, Copy)]
pub struct DeploySeen<'a> {
    pub service: &'a str,
    pub action: &'a str,
    pub container: &'a str,
    pub at: &'a str,
}

impl InternalEvent for DeploySeen<'_> {
    fn emit(&self, metrics: &Metrics) {
        tracing::info!(
            service = self.service,
            action = self.action,
            container = self.container,
            at = self.at,
            "deploy of {} seen: container {} {}",
            self.service,
            self.container,
            self.action
        );
        metrics.deploy_seen(self.action);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::spans;
    use crate::telemetry::testing::{attr, named, traced};
    use opentelemetry::trace::Status;

    fn metric_line(m: &Metrics, prefix: &str) -> Option<String> {
        m.render()
            .lines()
            .find(|l| l.starts_with(prefix))
            .map(str::to_string)
    }

    #[test]
    fn a_delivery_records_its_metric_its_span_and_its_answer() {
        let m = Metrics::new();
        let (spans, _) = traced(|| {
            spans::delivery(None).in_scope(|| {
                DeliveryStored {
                    delivery_id: 42,
                    firing: 2,
                    resolved: 1,
                }
                .emit(&m);
                WebhookAnswered { code: 200 }.emit(&m);
            })
        });
        let d = named(&spans, "delivery");
        assert_eq!(attr(d, "delivery.id").as_deref(), Some("42"));
        assert_eq!(attr(d, "alerts").as_deref(), Some("3"));
        assert_eq!(attr(d, "alerts.firing").as_deref(), Some("2"));
        assert_eq!(attr(d, "http.response.status_code").as_deref(), Some("200"));
        assert_eq!(attr(d, "outcome").as_deref(), Some("stored"));
        assert_eq!(d.status, Status::Unset);
        assert_eq!(
            metric_line(&m, "remediator_alerts_received_total{status=\"firing\"}").as_deref(),
            Some("remediator_alerts_received_total{status=\"firing\"} 2")
        );
        assert_eq!(
            metric_line(&m, "remediator_webhook_requests_total").as_deref(),
            Some("remediator_webhook_requests_total{code=\"200\"} 1")
        );
    }

    #[test]
    fn an_unavailable_store_marks_the_delivery_as_an_error() {
        let m = Metrics::new();
        let (spans, _) =
            traced(|| spans::delivery(None).in_scope(|| WebhookAnswered { code: 503 }.emit(&m)));
        let d = named(&spans, "delivery");
        assert_eq!(attr(d, "outcome").as_deref(), Some("unavailable"));
        assert!(matches!(d.status, Status::Error { .. }));
    }

    #[test]
    fn an_incident_its_guards_and_a_failed_step_form_one_tree() {
        let m = Metrics::new();
        let (spans, lines) = traced(|| {
            let incident = spans::incident(None, 7);
            incident.in_scope(|| {
                IncidentOpened {
                    incident_id: 7,
                    fingerprint: "abc123",
                    alertname: "PostgresDown",
                    rule: Some("postgres-down"),
                }
                .emit(&m);
                spans::guards().in_scope(|| {
                    for (guard, verdict, reason) in [
                        ("dedup", "continue", "no other run"),
                        ("rate_limit", "skip", "2 of 2 runs in 1h"),
                    ] {
                        GuardDecided {
                            incident_id: 7,
                            guard,
                            verdict,
                            reason,
                        }
                        .emit(&m);
                    }
                });
                spans::step().in_scope(|| {
                    let step = |outcome| StepEnded {
                        incident_id: 7,
                        phase: "main",
                        seq: 0,
                        kind: "restart",
                        outcome,
                        took: Duration::from_millis(1500),
                        detail: "no such container",
                    };
                    StepStarted {
                        incident_id: 7,
                        phase: "main",
                        seq: 0,
                        kind: "restart",
                    }
                    .emit(&m);
                    step("failed").emit(&m);
                });
                RunbookEnded {
                    incident_id: 7,
                    rule: "postgres-down",
                    outcome: "failed",
                }
                .emit(&m);
            });
        });
        let (i, g, s) = (
            named(&spans, "incident"),
            named(&spans, "guards"),
            named(&spans, "step"),
        );
        assert_eq!(g.parent_span_id, i.span_context.span_id());
        assert_eq!(s.parent_span_id, i.span_context.span_id());
        assert_eq!(attr(i, "incident.id").as_deref(), Some("7"));
        assert_eq!(attr(i, "fingerprint").as_deref(), Some("abc123"));
        assert_eq!(attr(i, "rule").as_deref(), Some("postgres-down"));
        assert_eq!(attr(i, "outcome").as_deref(), Some("failed"));
        assert_eq!(attr(g, "guard.dedup").as_deref(), Some("continue"));
        assert_eq!(attr(g, "guard.rate_limit").as_deref(), Some("skip"));
        assert_eq!(attr(g, "outcome").as_deref(), Some("skip"));
        assert_eq!(attr(g, "reason").as_deref(), Some("2 of 2 runs in 1h"));
        assert_eq!(attr(s, "step.kind").as_deref(), Some("restart"));
        assert_eq!(attr(s, "step.phase").as_deref(), Some("main"));
        assert_eq!(attr(s, "outcome").as_deref(), Some("failed"));
        assert_eq!(attr(s, "step.duration_ms").as_deref(), Some("1500"));
        assert!(matches!(s.status, Status::Error { .. }));
        // Each field once, though several events touched the span.
        let outcomes = g
            .attributes
            .iter()
            .filter(|kv| kv.key.as_str() == "outcome")
            .count();
        assert_eq!(outcomes, 1);

        let render = m.render();
        for line in [
            "remediator_incidents_opened_total 1",
            "remediator_guard_decisions_total{guard=\"rate_limit\",verdict=\"skip\"} 1",
            "remediator_steps_total{kind=\"restart\",outcome=\"failed\"} 1",
            "remediator_step_duration_seconds_count{kind=\"restart\"} 1",
            "remediator_runbooks_total{outcome=\"failed\"} 1",
        ] {
            assert!(render.contains(line), "{line} not in\n{render}");
        }

        let ended = lines
            .iter()
            .find(|l| l["message"] == "step ended")
            .expect("a step ended line");
        assert_eq!(ended["level"], "WARN");
        assert_eq!(ended["kind"], "restart");
        assert_eq!(ended["outcome"], "failed");
        assert_eq!(ended["took_ms"], 1500);
        assert_eq!(ended["span"]["name"], "step");
        assert_eq!(ended["span"]["step.kind"], "restart");
    }

    #[test]
    fn no_rule_is_the_incidents_outcome() {
        let m = Metrics::new();
        let (spans, _) = traced(|| {
            spans::incident(None, 1).in_scope(|| {
                IncidentOpened {
                    incident_id: 1,
                    fingerprint: "f",
                    alertname: "Unknown",
                    rule: None,
                }
                .emit(&m)
            })
        });
        let i = named(&spans, "incident");
        assert_eq!(attr(i, "outcome").as_deref(), Some("no_rule"));
        assert_eq!(attr(i, "rule"), None);
    }

    #[test]
    fn notices_record_the_outbox_result_per_sink() {
        let m = Metrics::new();
        let notice = |attempt| spans::Outgoing {
            sink: "slack",
            kind: "step",
            message_id: 9,
            incident_id: 7,
            attempt,
        };
        let (spans, lines) = traced(|| {
            spans::notify(None, notice(1)).in_scope(|| {
                NoticeRetried {
                    incident_id: 7,
                    message_id: 9,
                    sink: "slack",
                    kind: "step",
                    error: "ratelimited",
                    retry_in: Duration::from_secs(30),
                }
                .emit(&m)
            });
            spans::notify(None, notice(2)).in_scope(|| {
                NoticeDelivered {
                    incident_id: 7,
                    message_id: 9,
                    sink: "slack",
                    kind: "step",
                }
                .emit(&m)
            });
            spans::notify(None, notice(3)).in_scope(|| {
                NoticeRefused {
                    incident_id: 7,
                    message_id: 9,
                    sink: "pagerduty",
                    kind: "trigger",
                    error: "invalid routing key",
                }
                .emit(&m)
            });
        });
        let by_attempt = |n: &str| {
            spans
                .iter()
                .find(|s| s.name == "notify" && attr(s, "attempt").as_deref() == Some(n))
                .unwrap()
        };
        let (retry, done, refused) = (by_attempt("1"), by_attempt("2"), by_attempt("3"));
        assert_eq!(attr(retry, "outcome").as_deref(), Some("retry"));
        assert_eq!(attr(retry, "error").as_deref(), Some("ratelimited"));
        assert_eq!(attr(done, "outcome").as_deref(), Some("delivered"));
        assert_eq!(attr(done, "sink").as_deref(), Some("slack"));
        assert_eq!(attr(done, "notice.kind").as_deref(), Some("step"));
        assert_eq!(attr(done, "incident.id").as_deref(), Some("7"));
        assert_eq!(done.status, Status::Unset);
        assert_eq!(attr(refused, "outcome").as_deref(), Some("refused"));
        assert!(matches!(refused.status, Status::Error { .. }));
        assert_eq!(done.span_kind, opentelemetry::trace::SpanKind::Client);

        let render = m.render();
        for line in [
            "remediator_outbox_deliveries_total{sink=\"slack\",result=\"retry\"} 1",
            "remediator_outbox_deliveries_total{sink=\"slack\",result=\"delivered\"} 1",
            "remediator_outbox_deliveries_total{sink=\"pagerduty\",result=\"refused\"} 1",
        ] {
            assert!(render.contains(line), "{line} not in\n{render}");
        }
        let retried = lines
            .iter()
            .find(|l| l["message"] == "delivery failed; will retry")
            .unwrap();
        assert_eq!(retried["level"], "WARN");
        assert_eq!(retried["sink"], "slack");
        assert_eq!(retried["message_id"], 9);
        assert_eq!(retried["retry_in"], "30s");
    }
}
