//! Delivers the outbox: every message the engine stored, to Slack (one thread per incident,
//! the root message updated in place) and PagerDuty (trigger, acknowledge, resolve).
//!
//! - **In order per incident**: only the oldest undelivered message of an incident is ever
//!   tried, so replies never overtake their root or each other.
//! - **Once**: every post carries its outbox id in Slack message metadata; after a failed
//!   attempt the deliverer looks for it before posting again (a timeout can hide a post Slack
//!   took); if the look-up fails for now it tries again later. Without `channels:history` it
//!   cannot look at all, logs so, and posts (at least once).
//! - **Never dropped**: a retriable failure (429 with `Retry-After`, 5xx, timeouts, refused
//!   connections) is retried with exponential backoff; a refusal (`ok:false` such as
//!   `channel_not_found`, PagerDuty 400) holds the message and the incident's later ones,
//!   counts it, shows it on `/-/ready`, and is tried again after a reload. A message that
//!   does not read (its notice, or its incident: `StoreError::Corrupt`) is held the same way
//!   with that error, and the other incidents' messages go on.
//! - **Off the remediation path**: the engine only writes rows; this task sends them.
//! - Without a bot token (or routing key) messages are logged and marked delivered.
//! - A restart resumes where delivery stopped: the state is the outbox table.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use super::pagerduty::{PagerDutyClient, PagerDutyError, Severity};
use super::slack::{self, IncidentView, SlackClient, SlackError};
use super::{PagerDutySettings, SlackSettings};
use crate::domain::duration::format as human;
use crate::domain::hold::until_text;
use crate::domain::notice::{button_failed_text, paused_text, recovery_text, silenced_text, Page};
use crate::domain::{
    Approval, ApprovalRef, Clock, Contact, IncidentState, Notice, NoticeKind, PagerDutyEvent,
    Pressed, Sink,
};
use crate::metrics::Metrics;
use crate::store::{IncidentRecord, OutboxRow, Store, StoreError};
use crate::telemetry::events::{
    InternalEvent, NoticeDelivered, NoticeRefused, NoticeRetried, RowQuarantined,
};
use crate::telemetry::spans::{self, Outgoing};
use tracing::Instrument;

/// How each sink is doing, for `/-/ready`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct SinkStatus {
    pub slack: String,
    /// The configured channel and the ID it resolved to, or why it has not.
    pub slack_channel: String,
    pub pagerduty: String,
}

/// What the thread's root offers beyond its facts: the link to the incident
/// (`api.public_url`) and which buttons besides Acknowledge the service can carry out.
#[derive(Debug, Clone, Default)]
pub struct RootOptions {
    /// The service's public base URL; the root links to `<public_url>/api/v1/incidents/<id>`.
    pub public_url: Option<String>,
    pub offered: slack::Offered,
}

/// The configured channel, resolved to its ID (`conversations.list`) when it is a name: the
/// ID is what the look-up before a retry (`conversations.history`) needs.
struct ChannelResolution {
    /// As configured (`#voiceai-incidents`, or an ID).
    configured: String,
    /// The ID posts go to; kept while a later resolution fails.
    id: Option<String>,
    /// Why the last resolution did not give one.
    problem: Option<String>,
    /// Failed resolutions since the last success (the backoff's step).
    failures: i64,
    /// When to try again; `None`: resolved, nothing to do until a reload.
    next_try: Option<DateTime<Utc>>,
}

/// A message of a sink that only logs, logged and waiting for its pass's mark.
struct Logged {
    id: i64,
    incident_id: i64,
    kind: String,
    result: String,
    /// The message's `notify` span, where its delivery is told.
    span: tracing::Span,
}

/// One delivery's result.
enum Outcome {
    Done(String),
    Retry(String, Option<Duration>),
    Refused(String),
}

pub struct Deliverer {
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    slack: Option<SlackClient>,
    channel: Mutex<ChannelResolution>,
    /// Channels per page of `conversations.list`.
    list_page_size: u32,
    root: RootOptions,
    pagerduty: Option<PagerDutyClient>,
    /// E-mail → Slack user id (None: looked up, not found).
    users: tokio::sync::Mutex<HashMap<String, Option<String>>>,
    status: Arc<Mutex<SinkStatus>>,
}

impl Deliverer {
    pub fn new(
        store: Arc<Store>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        slack: &SlackSettings,
        pagerduty: &PagerDutySettings,
        root: RootOptions,
    ) -> anyhow::Result<Arc<Deliverer>> {
        let slack_client = match &slack.bot_token {
            Some(token) => Some(SlackClient::new(
                &slack.api_url,
                token.clone(),
                slack.timeout,
            )?),
            None => None,
        };
        let pd_client = match &pagerduty.routing_key {
            Some(key) => Some(PagerDutyClient::new(
                &pagerduty.url,
                key.clone(),
                pagerduty.timeout,
            )?),
            None => None,
        };
        let configured = slack.channel.trim().to_owned();
        let by_id = slack::is_channel_id(&configured);
        let channel = ChannelResolution {
            id: by_id.then(|| configured.clone()),
            problem: None,
            failures: 0,
            next_try: (!by_id && slack_client.is_some()).then(|| clock.now()),
            configured,
        };
        let status = SinkStatus {
            slack: if slack_client.is_some() {
                "ok".into()
            } else {
                "logged only: no slack.bot_token".into()
            },
            slack_channel: String::new(),
            pagerduty: if pd_client.is_some() {
                "ok".into()
            } else {
                "not configured: pages go to Slack".into()
            },
        };
        Ok(Arc::new(Deliverer {
            store,
            clock,
            metrics,
            slack: slack_client,
            channel: Mutex::new(channel),
            list_page_size: slack.list_page_size,
            root,
            pagerduty: pd_client,
            users: tokio::sync::Mutex::new(HashMap::new()),
            status: Arc::new(Mutex::new(status)),
        }))
    }

    pub fn status(&self) -> SinkStatus {
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        status.slack_channel = self.channel_status();
        status
    }

    /// `C0123456 (#voiceai-incidents)`, or why the name has not resolved yet.
    fn channel_status(&self) -> String {
        let ch = self.channel.lock().unwrap_or_else(|p| p.into_inner());
        if self.slack.is_none() {
            return format!("{} (not used: no slack.bot_token)", ch.configured);
        }
        match (&ch.id, &ch.problem) {
            (Some(id), None) if *id == ch.configured => id.clone(),
            (Some(id), None) => format!("{id} ({})", ch.configured),
            (Some(id), Some(why)) => format!(
                "{id} ({}); resolving it again failed, retrying: {why}",
                ch.configured
            ),
            (None, Some(why)) => format!(
                "unresolved: {}: {why}; new threads wait, retrying with backoff",
                ch.configured
            ),
            (None, None) => format!("resolving {}", ch.configured),
        }
    }

    /// Resolves the configured channel name again (after a reload: the channel may have been
    /// created, renamed, or the bot invited since).
    /// The Slack client, when a bot token is configured (`http` answers an interaction
    /// through it).
    pub fn slack(&self) -> Option<&SlackClient> {
        self.slack.as_ref()
    }

    pub fn resolve_channel_again(&self) {
        let mut ch = self.channel.lock().unwrap_or_else(|p| p.into_inner());
        if self.slack.is_some() && !slack::is_channel_id(&ch.configured) {
            ch.next_try = Some(self.clock.now());
            ch.failures = 0;
        }
    }

    /// How long a new thread waits before it is tried again while the channel is unresolved:
    /// until the next resolution, from a second to [`UNRESOLVED_WAIT_MAX`] (a reload resolves
    /// at once, and the thread should follow soon after).
    fn until_next_resolution(&self) -> Duration {
        let next = self
            .channel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next_try;
        next.and_then(|at| (at - self.clock.now()).to_std().ok())
            .unwrap_or_default()
            .clamp(Duration::from_secs(1), UNRESOLVED_WAIT_MAX)
    }

    /// The channel ID new threads go to, when known.
    fn channel_id(&self) -> Option<String> {
        self.channel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .id
            .clone()
    }

    /// Resolves the channel name when a resolution is due (at start, after a reload, after a
    /// failure's backoff). Not found, a missing scope, Slack down: kept as the problem
    /// `/-/ready` shows, and tried again later.
    async fn resolve_channel(&self) {
        let Some(client) = &self.slack else { return };
        let name = {
            let ch = self.channel.lock().unwrap_or_else(|p| p.into_inner());
            match ch.next_try {
                Some(at) if at <= self.clock.now() => ch.configured.clone(),
                _ => return,
            }
        };
        let found = client.find_channel(&name, self.list_page_size).await;
        let now = self.clock.now();
        let mut ch = self.channel.lock().unwrap_or_else(|p| p.into_inner());
        let problem = match found {
            Ok(Some(id)) => {
                tracing::info!(channel = %name, id = %id, "Slack channel resolved");
                ch.id = Some(id);
                ch.problem = None;
                ch.failures = 0;
                ch.next_try = None;
                return;
            }
            Ok(None) => (
                format!(
                    "no channel named {name} that the bot can see (conversations.list, archived ones excluded): check the name, or invite the bot to a private channel"
                ),
                None,
            ),
            Err(e) => {
                let after = e.retry_after();
                (e.to_string(), after)
            }
        };
        let (why, after) = problem;
        tracing::warn!(channel = %name, error = %why, "cannot resolve the Slack channel; new threads wait");
        let wait = after.unwrap_or_else(|| backoff(ch.failures));
        ch.failures += 1;
        ch.problem = Some(why);
        ch.next_try = Some(later(now, wait));
    }

    /// Delivers until `shutdown` resolves.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let sent = match self.deliver_due().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, "outbox: the store failed; retrying");
                    0
                }
            };
            let pause = if sent > 0 {
                Duration::from_millis(10)
            } else {
                Duration::from_millis(200)
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = &mut shutdown => return,
            }
        }
    }

    /// One pass over both sinks; returns how many messages were delivered. A message that
    /// does not read is held (see [`Deliverer::hold_damaged`]) and the others go on.
    pub async fn deliver_due(&self) -> Result<usize, StoreError> {
        self.resolve_channel().await;
        let mut delivered = 0;
        for sink in Sink::ALL.iter().copied() {
            // Logged only (no token, no routing key): nothing leaves the process, so the
            // pass's messages are marked delivered together at its end, in one transaction,
            // instead of one commit each (a storm logs thousands a second). A crash before
            // that mark logs them again, as a crash between a log line and its own mark did.
            let mut logged = self.logged_only(sink).then(Vec::new);
            for due in self.store.due_outbox(sink, self.clock.now(), 64)? {
                let row = match due {
                    Ok(row) => row,
                    Err(e) => {
                        let Some((_, msg)) = e.damaged_row() else {
                            return Err(e);
                        };
                        self.hold_damaged(sink, msg, None, e)?;
                        continue;
                    }
                };
                let kind = row.notice.kind_for(sink).to_owned();
                let span = spans::notify(
                    row.trace.as_deref(),
                    Outgoing {
                        sink: sink.as_str(),
                        kind: &kind,
                        message_id: row.id,
                        incident_id: row.incident_id,
                        attempt: row.attempts + 1,
                    },
                );
                if self
                    .deliver_one(sink, &row, &kind, logged.as_mut())
                    .instrument(span)
                    .await?
                {
                    delivered += 1;
                }
            }
            if let Some(logged) = logged.filter(|l| !l.is_empty()) {
                delivered += self.mark_logged(sink, logged)?;
            }
        }
        Ok(delivered)
    }

    /// Whether `sink`'s messages are only logged (no client configured).
    fn logged_only(&self, sink: Sink) -> bool {
        match sink {
            Sink::Slack => self.slack.is_none(),
            Sink::PagerDuty => self.pagerduty.is_none(),
        }
    }

    /// Marks a pass's logged messages delivered in one transaction, then tells of each;
    /// returns how many.
    fn mark_logged(&self, sink: Sink, logged: Vec<Logged>) -> Result<usize, StoreError> {
        let marks: Vec<(i64, &str)> = logged.iter().map(|l| (l.id, l.result.as_str())).collect();
        self.store.outbox_delivered_all(&marks, self.clock.now())?;
        for l in &logged {
            l.span.in_scope(|| {
                NoticeDelivered {
                    incident_id: l.incident_id,
                    message_id: l.id,
                    sink: sink.as_str(),
                    kind: &l.kind,
                }
                .emit(&self.metrics)
            });
        }
        self.set_status(sink, "ok".into());
        Ok(logged.len())
    }

    /// Sends one message and records the outcome; true when it was delivered. With `logged`
    /// (a sink that only logs), a delivered message is added there instead, for the caller
    /// to mark with the pass's others ([`Deliverer::mark_logged`]), and false is returned.
    async fn deliver_one(
        &self,
        sink: Sink,
        row: &OutboxRow,
        kind: &str,
        logged: Option<&mut Vec<Logged>>,
    ) -> Result<bool, StoreError> {
        let outcome = match sink {
            Sink::Slack => self.to_slack(row).await,
            Sink::PagerDuty => self.to_pagerduty(row).await,
        };
        let outcome = match outcome {
            Ok(outcome) => outcome,
            // Its incident does not read.
            Err(e) if e.damaged_row().is_some() => {
                self.hold_damaged(sink, row.id, Some(row.incident_id), e)?;
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let now = self.clock.now();
        let (incident_id, message_id, sink_name) = (row.incident_id, row.id, sink.as_str());
        match outcome {
            Outcome::Done(result) => {
                if let Some(logged) = logged {
                    logged.push(Logged {
                        id: row.id,
                        incident_id,
                        kind: kind.to_owned(),
                        result,
                        span: tracing::Span::current(),
                    });
                    return Ok(false);
                }
                self.store.outbox_delivered(row.id, &result, now)?;
                NoticeDelivered {
                    incident_id,
                    message_id,
                    sink: sink_name,
                    kind,
                }
                .emit(&self.metrics);
                self.set_status(sink, "ok".into());
                Ok(true)
            }
            Outcome::Retry(error, after) => {
                let wait = after.unwrap_or_else(|| backoff(row.attempts));
                self.store.outbox_retry(row.id, later(now, wait), &error)?;
                NoticeRetried {
                    incident_id,
                    message_id,
                    sink: sink_name,
                    kind,
                    error: &error,
                    retry_in: wait,
                }
                .emit(&self.metrics);
                self.set_status(sink, format!("retrying: {error}"));
                Ok(false)
            }
            Outcome::Refused(error) => {
                self.store.outbox_block(row.id, &error)?;
                NoticeRefused {
                    incident_id,
                    message_id,
                    sink: sink_name,
                    kind,
                    error: &error,
                }
                .emit(&self.metrics);
                self.set_status(
                    sink,
                    format!("failing: {error}; messages are held: fix it, then reload (POST /-/reload or SIGHUP)"),
                );
                Ok(false)
            }
        }
    }

    /// Message `msg` cannot be sent because a row does not read (`e`: the message itself, or
    /// its incident). It is held as a refusal is: its incident's later messages wait behind
    /// it, `/-/ready` shows it with the error, a reload tries it again; and it is counted.
    /// The other incidents' messages go on. Any other error is returned.
    fn hold_damaged(
        &self,
        sink: Sink,
        msg: i64,
        incident: Option<i64>,
        e: StoreError,
    ) -> Result<(), StoreError> {
        let Some((table, row)) = e.damaged_row() else {
            return Err(e);
        };
        let error = e.to_string();
        self.store.outbox_block(msg, &error)?;
        RowQuarantined {
            table,
            row_id: row,
            incident_id: incident,
            queue_id: None,
            error: &error,
            done: &format!(
                "{sink} message {msg} is held, and its incident's later {sink} messages wait behind it"
            ),
            remedy: &format!(
                "repair row {row} of table {table} (or restore the store from a backup), then reload (POST /-/reload or SIGHUP) to send the held messages"
            ),
        }
        .emit(&self.metrics);
        Ok(())
    }

    fn set_status(&self, sink: Sink, text: String) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        match sink {
            Sink::Slack if self.slack.is_some() => s.slack = text,
            Sink::PagerDuty if self.pagerduty.is_some() => s.pagerduty = text,
            _ => {}
        }
    }

    async fn to_slack(&self, row: &OutboxRow) -> Result<Outcome, StoreError> {
        // Logged only: the incident is read to know it is there (and reads), not to render
        // it, so without its latest annotations (a stored body to decompress and parse).
        let inc = match &self.slack {
            None => self.store.incident_without_annotations(row.incident_id)?,
            Some(_) => self.store.incident(row.incident_id)?,
        };
        let Some(inc) = inc else {
            return Ok(Outcome::Done("incident gone".into()));
        };
        let Some(client) = &self.slack else {
            tracing::info!(incident = row.incident_id, kind = %row.notice.kind(), text = %row.notice.summary(), "notification (no Slack token: logged only)");
            return Ok(Outcome::Done("logged".into()));
        };
        let view = self.view(&inc).await;
        let (fallback, blocks) = slack::incident_blocks(&view);
        let root = inc.slack_channel.clone().zip(inc.slack_ts.clone());
        // A new thread goes to the channel's ID: the look-up before a retry needs it.
        let channel = match (&root, self.channel_id()) {
            (None, None) => {
                return Ok(Outcome::Retry(
                    format!(
                        "the Slack channel is not resolved yet: {}",
                        self.channel_status()
                    ),
                    Some(self.until_next_resolution()),
                ))
            }
            (_, id) => id.unwrap_or_default(),
        };
        // Every post carries its outbox id; after a failed attempt (a timeout may hide a post
        // Slack did take) look for it first, so a retry never posts twice.
        let tag = format!("outbox-{}", row.id);
        // Ok(None): not there (or cannot be checked for good: post, at least once);
        // Err: the check failed for now, so retry later rather than risk posting twice.
        let already = |thread: Option<String>, channel: String| {
            let tag = tag.clone();
            async move {
                if row.attempts == 0 {
                    return Ok(None);
                }
                match client.find_tagged(&channel, thread.as_deref(), &tag).await {
                    Ok(found) => Ok(found),
                    Err(e) if e.is_retriable() => Err(e),
                    Err(e) => {
                        tracing::warn!(error = %e, message = row.id, "cannot check whether Slack already has this message; posting it (it may show twice)");
                        Ok(None)
                    }
                }
            }
        };
        let kind = row.notice.role();
        let result = match (kind, &root) {
            // The root: posted once, its ts kept so a restart keeps the same thread.
            (_, None) => {
                let posted = match already(None, channel.clone()).await {
                    Ok(Some(ts)) => Ok(slack::Posted {
                        channel: channel.clone(),
                        ts,
                    }),
                    Ok(None) => {
                        client
                            .post_tagged(&channel, &fallback, Some(&blocks), None, &tag)
                            .await
                    }
                    Err(e) => Err(e),
                };
                match posted {
                    Ok(posted) => {
                        self.store
                            .set_slack_root(inc.id, &posted.channel, &posted.ts)?;
                        if matches!(kind, NoticeKind::Opened | NoticeKind::State) {
                            return Ok(Outcome::Done(posted.ts));
                        }
                        // A reply whose root was missing: the root now exists; send the reply next pass.
                        return Ok(Outcome::Retry(
                            "posted the missing root first".into(),
                            Some(Duration::ZERO),
                        ));
                    }
                    Err(e) => Err(e),
                }
            }
            (NoticeKind::Opened, Some(_)) => {
                return Ok(Outcome::Done("root already posted".into()))
            }
            (NoticeKind::State, Some((channel, ts))) => client
                .update_message(channel, ts, &fallback, Some(&blocks))
                .await
                .map(|()| ts.clone()),
            // The approval's own message, updated in place (its buttons go).
            (NoticeKind::ApprovalAnswered, Some((channel, _))) => {
                let Notice::ApprovalAnswered { request, asked } = &row.notice else {
                    return Ok(Outcome::Done("not an answer".into()));
                };
                let Some(msg) = self
                    .store
                    .approval_message_ts(inc.id, request.phase, request.seq)?
                    .filter(|ts| is_ts(ts))
                else {
                    return Ok(Outcome::Done("no approval message to update".into()));
                };
                let view = self.approval_view(inc.id, request, asked, &[]).await;
                let (text, blocks) = slack::approval_blocks(&view);
                client
                    .update_message(channel, &msg, &text, Some(&blocks))
                    .await
                    .map(|()| msg)
            }
            (_, Some((channel, ts))) => match already(Some(ts.clone()), channel.clone()).await {
                Err(e) => Err(e),
                Ok(Some(found)) => Ok(found),
                Ok(None) => {
                    let approval = match &row.notice {
                        Notice::Approval {
                            request,
                            asked,
                            allowed,
                        } => Some(slack::approval_blocks(
                            &self.approval_view(inc.id, request, asked, allowed).await,
                        )),
                        _ => None,
                    };
                    let text = match &row.notice {
                        _ if approval.is_some() => approval
                            .as_ref()
                            .map(|(t, _)| t.clone())
                            .unwrap_or_default(),
                        // A drill calls nobody: the page names who would have been called.
                        Notice::Page(Page { who, .. }) | Notice::Tier { who, .. }
                            if inc.origin == crate::domain::Origin::Drill =>
                        {
                            format!(
                                "DRILL, nobody paged: would page {}. {}",
                                slack::escape(&crate::domain::notice::keys(who)),
                                slack::escape(&row.notice.summary())
                            )
                        }
                        _ => self.reply_text(&row.notice).await,
                    };
                    client
                        .post_tagged(
                            channel,
                            &text,
                            approval.as_ref().map(|(_, b)| b),
                            Some(ts),
                            &tag,
                        )
                        .await
                        .map(|p| p.ts)
                }
            },
        };
        Ok(match result {
            Ok(ts) => Outcome::Done(ts),
            Err(e) => self.slack_failure(e),
        })
    }

    fn slack_failure(&self, e: SlackError) -> Outcome {
        let code = match &e {
            SlackError::Api { error } => error.clone(),
            SlackError::RateLimited { .. } => "ratelimited".into(),
            SlackError::Http { status } => format!("http_{status}"),
            SlackError::Transport(_) => "transport".into(),
            SlackError::Config(_) => "config".into(),
        };
        self.metrics.slack_error(&code);
        if e.is_retriable() {
            Outcome::Retry(e.to_string(), e.retry_after())
        } else {
            Outcome::Refused(e.to_string())
        }
    }

    async fn to_pagerduty(&self, row: &OutboxRow) -> Result<Outcome, StoreError> {
        // A drill never pages: its Slack page says who would have been.
        let inc = self.store.incident_without_annotations(row.incident_id)?;
        let drill = inc
            .as_ref()
            .is_some_and(|inc| inc.origin == crate::domain::Origin::Drill);
        if drill {
            tracing::info!(incident = row.incident_id, kind = %row.notice.kind(), "drill: not sent to PagerDuty");
            return Ok(Outcome::Done("drill: not paged".into()));
        }
        let Some(client) = &self.pagerduty else {
            tracing::info!(incident = row.incident_id, kind = %row.notice.kind(), "PagerDuty not configured; page logged");
            return Ok(Outcome::Done("logged".into()));
        };
        // The incident's identity; an alert an older version opened keeps its key.
        let dedup_key = match (self.store.legacy_dedup_key(row.incident_id)?, &inc) {
            (Some(legacy), _) => legacy,
            (None, Some(inc)) => {
                crate::notify::pagerduty::dedup_key(&inc.fingerprint, inc.starts_at)
            }
            (None, None) => format!("remediator-incident-{}", row.incident_id),
        };
        let result = match row.notice.pagerduty_event() {
            Some(PagerDutyEvent::Trigger) => {
                let (severity, source, details) = match &row.notice {
                    Notice::Page(p) => (
                        p.priority.and_then(|p| Severity::from_priority(p.as_str())),
                        p.target.clone().unwrap_or_else(|| "remediator".into()),
                        page_details(p, row.incident_id),
                    ),
                    Notice::Recorded {
                        priority, details, ..
                    } => (
                        priority.and_then(|p| Severity::from_priority(p.as_str())),
                        details
                            .as_ref()
                            .and_then(|d| d["source"].as_str())
                            .unwrap_or("remediator")
                            .to_owned(),
                        details
                            .clone()
                            .unwrap_or_else(|| json!({ "incident": row.incident_id })),
                    ),
                    _ => (None, "remediator".into(), json!({})),
                };
                client
                    .trigger(
                        &dedup_key,
                        &row.notice.pagerduty_summary(),
                        &source,
                        severity.unwrap_or(Severity::Error),
                        details,
                    )
                    .await
            }
            Some(PagerDutyEvent::Acknowledge) => client.acknowledge(&dedup_key).await,
            Some(PagerDutyEvent::Resolve) => client.resolve(&dedup_key).await,
            None => {
                return Ok(Outcome::Refused(format!(
                    "a {} notice has no PagerDuty event",
                    row.notice.kind()
                )))
            }
        };
        Ok(match result {
            Ok(()) => Outcome::Done(dedup_key),
            Err(e) => {
                let retriable = e.is_retriable();
                let after = e.retry_after();
                let text = e.to_string();
                if let PagerDutyError::Rejected { .. } = e {
                    self.metrics.outbox(Sink::PagerDuty.as_str(), "rejected");
                }
                if retriable {
                    Outcome::Retry(text, after)
                } else {
                    Outcome::Refused(text)
                }
            }
        })
    }

    /// `<@U…>` for a contact: its Slack user id, or one looked up by e-mail once and
    /// cached; the e-mail when unknown, the key when it has none.
    async fn mention(&self, c: &Contact) -> String {
        if let Some(id) = &c.slack_user {
            return slack::mention(Some(id), &c.email);
        }
        if c.email.is_empty() {
            return slack::escape(&c.key);
        }
        let mut cache = self.users.lock().await;
        if !cache.contains_key(&c.email) {
            let found = match &self.slack {
                Some(client) => match client.lookup_user_by_email(&c.email).await {
                    Ok(id) => id,
                    Err(e) => {
                        // Not cached: try again next time.
                        tracing::warn!(email = %c.email, error = %e, "users.lookupByEmail failed; mentioning by e-mail");
                        return slack::mention(None, &c.email);
                    }
                },
                None => None,
            };
            cache.insert(c.email.clone(), found);
        }
        slack::mention(cache.get(&c.email).cloned().flatten().as_deref(), &c.email)
    }

    async fn mentions(&self, who: &[Contact]) -> String {
        let mut out = Vec::new();
        for w in who {
            out.push(self.mention(w).await);
        }
        out.join(" ")
    }

    /// A thread reply: the notice's text, with mentions for the people it calls.
    async fn reply_text(&self, notice: &Notice) -> String {
        let text = slack::escape(&notice.summary());
        let who = |by: &str, user: &Option<String>| match user {
            Some(u) => slack::mention(Some(u), by),
            None => slack::escape(by),
        };
        match notice {
            Notice::Step { excerpt, .. } if !excerpt.trim().is_empty() => {
                // In a code block: the output as it was, `&<>` escaped as Slack asks.
                format!("{text}\n```\n{}\n```", slack::escape(excerpt.trim_end()))
            }
            // The person as a mention; what they did, escaped.
            Notice::Silenced(p) => silenced_text(&escaped(p), &who(&p.by, &p.slack_user)),
            Notice::Paused(p) => paused_text(&escaped(p), &who(&p.by, &p.slack_user)),
            Notice::ButtonFailed {
                button,
                by,
                slack_user,
                why,
            } => button_failed_text(*button, &who(by, slack_user), &slack::escape(why)),
            Notice::Page(Page { who, .. }) | Notice::Tier { who, .. } => {
                format!("{} {text}", self.mentions(who).await)
            }
            Notice::Acknowledged {
                slack_user: Some(u),
                ..
            } => format!("acknowledged by <@{u}>; escalation tiers stopped"),
            Notice::Recorded { who, .. } if !who.is_empty() => {
                let names: Vec<String> = who.iter().map(|w| slack::escape(w)).collect();
                format!("{} {text}", names.join(" "))
            }
            _ => text,
        }
    }

    /// An approval message's view: the asked contact and the allowed users as mentions.
    async fn approval_view(
        &self,
        id: i64,
        request: &Approval,
        asked: &Contact,
        allowed: &[String],
    ) -> slack::ApprovalView {
        let answered = request.decided.as_ref().map(|d| slack::AnsweredView {
            verdict: d.verdict,
            who: match &d.slack_user {
                Some(u) => slack::mention(Some(u), &d.by),
                None => slack::escape(&d.by),
            },
            at: until_text(d.at, d.at),
            choice: d.choice.clone(),
        });
        slack::ApprovalView {
            at: ApprovalRef::of(id, request),
            who_key: request.who.clone(),
            who: self.mention(asked).await,
            prompt: request.prompt.clone(),
            deadline: until_text(request.deadline, request.asked_at),
            choices: request.choices.clone(),
            allowed: allowed.iter().map(|u| slack::mention(Some(u), u)).collect(),
            answered,
        }
    }

    async fn view(&self, inc: &IncidentRecord) -> IncidentView {
        let owner = match &inc.owner {
            Some(c) => Some(self.mention(c).await),
            None => None,
        };
        let state = match inc.state {
            IncidentState::Resolved => crate::domain::RootState::Resolved,
            IncidentState::Open => inc.phase.root_state(),
        };
        let now = self.clock.now();
        let clock = |t: DateTime<Utc>| until_text(t, now);
        let used = |p: &Pressed| slack::Used {
            who: match &p.slack_user {
                Some(u) => slack::mention(Some(u), &p.by),
                None => slack::escape(&p.by),
            },
            at: clock(p.at),
            until: p.until.map(clock),
            made: p.made.clone(),
        };
        let acknowledged = inc.acked_by.as_ref().map(|by| slack::Used {
            who: match &inc.acked_slack_user {
                Some(u) => slack::mention(Some(u), by),
                None => slack::escape(by),
            },
            at: inc.acked_at.map(clock).unwrap_or_default(),
            until: None,
            made: None,
        });
        let rto = match (inc.rto, state) {
            (Some(rto), s) if s != crate::domain::RootState::Resolved => {
                slack::rto_clock(rto, (now - inc.starts_at).to_std().unwrap_or_default())
            }
            (Some(rto), _) => human(rto),
            (None, _) => "-".into(),
        };
        let links =
            slack::Links {
                incident: self.root.public_url.as_deref().map(|base| {
                    format!("{}/api/v1/incidents/{}", base.trim_end_matches('/'), inc.id)
                }),
                alert: inc.generator_url.clone(),
                silence: inc
                    .external_url
                    .as_deref()
                    .and_then(|u| slack::silence_link(u, &inc.labels)),
            };
        IncidentView {
            id: inc.id,
            priority: inc
                .priority
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "P?".into()),
            alertname: inc.alertname.clone(),
            service: inc
                .labels
                .get("service")
                .cloned()
                .or_else(|| inc.target.clone())
                .unwrap_or_else(|| "-".into()),
            rto,
            state,
            owner,
            summary: inc.annotations.get("summary").cloned().unwrap_or_default(),
            time_to_recover: inc
                .time_to_recover()
                .map(|after| recovery_text(after, inc.rto)),
            acknowledged,
            silenced: inc.silenced.as_ref().map(used),
            paused: inc.paused.as_ref().map(used),
            links,
            offered: self.root.offered,
            drill: inc.origin == crate::domain::Origin::Drill,
            started_by: inc.started.as_ref().map(|s| s.by.clone()),
        }
    }
}

/// The longest a new thread waits between tries while the channel is unresolved.
const UNRESOLVED_WAIT_MAX: Duration = Duration::from_secs(5);

/// Whether a delivered result is a Slack `ts` (`1700000000.000100`), not a logged delivery.
fn is_ts(s: &str) -> bool {
    s.split_once('.').is_some_and(|(a, b)| {
        !a.is_empty() && !b.is_empty() && (a.bytes().chain(b.bytes())).all(|c| c.is_ascii_digit())
    })
}

/// A button press with what it made escaped for Slack's text.
fn escaped(p: &Pressed) -> Pressed {
    Pressed {
        made: p.made.as_deref().map(slack::escape),
        ..p.clone()
    }
}

/// 1 s, 2 s, 4 s … capped at 5 minutes, with jitter.
fn backoff(attempts: i64) -> Duration {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(300))
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempts.clamp(0, 30) as usize)
        .unwrap_or(Duration::from_secs(300))
}

fn later(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(d).unwrap_or_default()
}

/// A page's custom details for PagerDuty.
fn page_details(p: &Page, incident: i64) -> serde_json::Value {
    json!({
        "who": p.who.iter().map(|c| c.key.as_str()).collect::<Vec<_>>(),
        "priority": p.priority,
        "incident": incident,
        "rule": p.rule,
        "alertname": p.alertname,
        "source": p.target.clone().unwrap_or_else(|| "remediator".into()),
        "labels": p.labels,
    })
}
