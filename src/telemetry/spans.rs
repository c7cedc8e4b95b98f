//! The spans of one alert's handling: their names and fields are a contract (the OTLP test
//! asserts the tree; dashboards and trace queries use the names).
//!
//! | span | parent | fields (recorded by) |
//! |---|---|---|
//! | `delivery` | the sender's `traceparent` header, else none (a new trace) | `delivery.id`, `alerts`, `alerts.firing`, `alerts.resolved` ([`DeliveryStored`]); `http.response.status_code`, `outcome` = `stored`\|`rejected`\|`unavailable` ([`WebhookAnswered`]) |
//! | `incident` | the `traceparent` stored with the queued incident (the `delivery`) | `incident.id` (given); `fingerprint`, `alertname`, `rule` ([`IncidentOpened`], [`IncidentResolved`]); `outcome` = the runbook's ([`RunbookEnded`]), `no_rule`, `resolved`, or `quarantined` ([`RowQuarantined`]: a row it needed does not read) |
//! | `guards` | `incident` | `guard.<name>` = `continue`\|`skip` for each guard, and on a skip `outcome` = `skip`, `guard`, `reason` ([`GuardDecided`]); else `outcome` = `continue` ([`GuardsPassed`]) |
//! | `step` | `incident` | `step.phase` (`main`\|`on_failure`), `step.seq`, `step.kind` ([`StepStarted`]); `outcome` = `ok`\|`failed`\|`timed_out`, `step.duration_ms` ([`StepEnded`]) |
//! | `notify` | the `traceparent` stored with the outbox row (the `step` or `incident` that queued it) | `sink` (`slack`\|`pagerduty`), `notice.kind`, `message.id`, `incident.id`, `attempt` (given); `outcome` = `delivered`\|`retry`\|`refused`, `error` ([`NoticeDelivered`], [`NoticeRetried`], [`NoticeRefused`]), or `quarantined` when its incident does not read ([`RowQuarantined`]) |
//!
//! Every span also carries the fields of the log lines emitted inside it as span events.
//! A failed step, a refused or retried notice and a 5xx answer set the span's status to
//! error. The constructors set what is known when the span opens ("given") and declare the
//! rest empty; the events fill those in, on the span current when they are emitted, so emit
//! each event inside its span. Each field is recorded once.
//!
//! [`DeliveryStored`]: super::events::DeliveryStored
//! [`WebhookAnswered`]: super::events::WebhookAnswered
//! [`IncidentOpened`]: super::events::IncidentOpened
//! [`IncidentResolved`]: super::events::IncidentResolved
//! [`RunbookEnded`]: super::events::RunbookEnded
//! [`GuardDecided`]: super::events::GuardDecided
//! [`GuardsPassed`]: super::events::GuardsPassed
//! [`StepStarted`]: super::events::StepStarted
//! [`StepEnded`]: super::events::StepEnded
//! [`NoticeDelivered`]: super::events::NoticeDelivered
//! [`NoticeRetried`]: super::events::NoticeRetried
//! [`NoticeRefused`]: super::events::NoticeRefused
//! [`RowQuarantined`]: super::events::RowQuarantined

use tracing::field::Empty;
use tracing::Span;

use super::trace_context;

/// One webhook request (`POST /hooks/alertmanager`), continuing the sender's trace when its
/// `traceparent` header is given.
pub fn delivery(traceparent: Option<&str>) -> Span {
    // A debug span: one per webhook, wanted only by an exporter (see `telemetry::init`).
    let span = tracing::debug_span!(
        "delivery",
        otel.kind = "server",
        delivery.id = Empty,
        alerts = Empty,
        alerts.firing = Empty,
        alerts.resolved = Empty,
        http.response.status_code = Empty,
        outcome = Empty,
    );
    trace_context::set_parent(&span, traceparent);
    span
}

/// The engine handling one queued incident (opened or resolved); `traceparent` is the one
/// stored with the queue entry. Instrument the runbook's task with it too, so the steps end
/// inside it.
pub fn incident(traceparent: Option<&str>, incident_id: i64) -> Span {
    let span = tracing::info_span!(
        "incident",
        incident.id = incident_id,
        fingerprint = Empty,
        alertname = Empty,
        rule = Empty,
        outcome = Empty,
    );
    trace_context::set_parent(&span, traceparent);
    span
}

/// The guards deciding whether the runbook runs; inside `incident`.
pub fn guards() -> Span {
    tracing::info_span!("guards", outcome = Empty, guard = Empty, reason = Empty)
}

/// One runbook step, from its start to its end; inside `incident`.
pub fn step() -> Span {
    tracing::info_span!(
        "step",
        step.phase = Empty,
        step.seq = Empty,
        step.kind = Empty,
        outcome = Empty,
        step.duration_ms = Empty,
    )
}

/// What a `notify` span is about: one outbox message going out (not the engine's `Notice`).
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub sink: &'a str,
    /// The message kind (`root`, `step`, `trigger`, ...).
    pub kind: &'a str,
    pub message_id: i64,
    pub incident_id: i64,
    /// 1 for the first attempt (the row's `attempts` + 1).
    pub attempt: i64,
}

/// One attempt at sending one outbox message to Slack or PagerDuty; `traceparent` is the one
/// stored with the message.
pub fn notify(traceparent: Option<&str>, out: Outgoing<'_>) -> Span {
    // A debug span: one per message sent, wanted only by an exporter.
    let span = tracing::debug_span!(
        "notify",
        otel.kind = "client",
        sink = out.sink,
        notice.kind = out.kind,
        message.id = out.message_id,
        incident.id = out.incident_id,
        attempt = out.attempt,
        outcome = Empty,
        error = Empty,
    );
    trace_context::set_parent(&span, traceparent);
    span
}
