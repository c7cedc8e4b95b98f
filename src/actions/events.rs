//! The deploy watch: Docker's event stream for the compose project (`type=container`,
//! `label=com.docker.compose.project=<docker.project>`), and per service the latest
//! deploy-like event, which the engine's deploy guard reads ([`DeployWatch::recent`]).
//!
//! - `create` is `created`, or `recreated` when labelled `com.docker.compose.replace` (compose
//!   ≥ 2.30); `rename` is `renamed`, `destroy` is `destroyed`. Restarts (`kill`, `die`,
//!   `stop`, `start`, `restart`) and health changes are no deploy. One-off containers
//!   (`com.docker.compose.oneoff=True`) are ignored, and so are the containers remediator's own
//!   recreate is changing ([`OwnChanges`]).
//! - The events of one service less than [`BURST`] apart are one deploy: a create together
//!   with a rename or a destroy is a recreate (how compose v1 and compose v2 before 2.30,
//!   which add no label, replace a container), and the deploy's time is its latest event's.
//! - The stream ends when the daemon restarts or goes away. It is opened again with backoff,
//!   with `since` = the last event seen, so that what happened meanwhile is read back; and the
//!   project's containers created since then are looked at too, because the daemon keeps only
//!   its last 256 events. The loss and the return are internal events (a warn and an info
//!   line, `docker_events_lost`, `docker_events_following`), and `/-/ready` says
//!   "reconnecting since …" without failing readiness: the feed is advisory.
//! - At startup (`docker.deploy_replay`) the last `deploy_grace` is read back the same way,
//!   so that a restart of remediator during a deploy still knows of it.
//!
//! The map is behind a std `RwLock`, written once per deploy-like event and read by the
//! engine for every incident it plans: a read is a lookup and a clone, never an `.await`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use bollard::models::EventMessage;
use bollard::query_parameters::{EventsOptions, ListContainersOptionsBuilder};
use bollard::Docker;
use chrono::{DateTime, TimeZone, Utc};
use futures_util::StreamExt;

use super::daemon;
use super::docker::{ONEOFF_LABEL, PROJECT_LABEL, SERVICE_LABEL};
use super::own::OwnChanges;
use super::DockerSettings;
use crate::domain::{DeployAction, DeployFact};
use crate::engine::{DeployWatch, StepError};
use crate::metrics::Metrics;
use crate::telemetry::events::{
    DeploySeen, DockerEventsFollowing, DockerEventsLost, InternalEvent,
};

/// Compose's label on the create of a container that replaces another (compose ≥ 2.30). Its
/// value changed between versions: only its presence is read.
const REPLACE_LABEL: &str = "com.docker.compose.replace";
/// Deploy-like events of one service this close together are one deploy.
pub(super) const BURST: Duration = Duration::from_secs(60);
/// The longest wait between two attempts to reach the daemon again.
const MAX_RETRY: Duration = Duration::from_secs(10);

/// What a container event says of a deploy: its service and what happened to its container;
/// `None` when it is no deploy (a restart, a health change, a one-off run, no compose service).
pub(super) fn classify(
    action: &str,
    attributes: &HashMap<String, String>,
) -> Option<(String, DeployAction)> {
    let oneoff = attributes
        .get(ONEOFF_LABEL)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if oneoff {
        return None;
    }
    let service = attributes.get(SERVICE_LABEL)?;
    let action = match action {
        "create" if attributes.contains_key(REPLACE_LABEL) => DeployAction::Recreated,
        "create" => DeployAction::Created,
        "rename" => DeployAction::Renamed,
        "destroy" => DeployAction::Destroyed,
        _ => return None,
    };
    Some((service.clone(), action))
}

/// Two events of one deploy, as one action: a create with a rename or a destroy is a recreate.
fn combine(a: DeployAction, b: DeployAction) -> DeployAction {
    use DeployAction::*;
    match (a, b) {
        (Recreated, _) | (_, Recreated) => Recreated,
        (Created, Renamed | Destroyed) | (Renamed | Destroyed, Created) => Recreated,
        (Created, Created) => Created,
        (Destroyed, _) | (_, Destroyed) => Destroyed,
        (Renamed, Renamed) => Renamed,
    }
}

/// The service's deploy once `new` is seen after `old`: the same deploy when less than
/// [`BURST`] apart (in either order: a gap is read back after later events were seen), else
/// the later of the two.
fn merge(old: &DeployFact, new: &DeployFact) -> DeployFact {
    let burst = chrono::Duration::from_std(BURST).unwrap_or_default();
    if new.at + burst < old.at {
        return old.clone();
    }
    if new.at > old.at + burst {
        return new.clone();
    }
    DeployFact {
        service: new.service.clone(),
        action: combine(old.action, new.action),
        at: old.at.max(new.at),
    }
}

/// When a Docker event happened (nanoseconds when the daemon gives them).
fn event_time(ev: &EventMessage) -> Option<DateTime<Utc>> {
    match (ev.time_nano, ev.time) {
        (Some(n), _) => Some(Utc.timestamp_nanos(n)),
        (None, Some(s)) => Utc.timestamp_opt(s, 0).single(),
        _ => None,
    }
}

/// `since` as the events API reads it: seconds and nanoseconds.
fn since_param(t: DateTime<Utc>) -> String {
    format!("{}.{:09}", t.timestamp(), t.timestamp_subsec_nanos())
}

fn text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[derive(Debug, Clone)]
enum State {
    /// `docker.deploy_grace` is 0.
    Off,
    /// Not (yet, or any more) following; `since` is when that began.
    Reconnecting {
        since: DateTime<Utc>,
        error: String,
        first: bool,
    },
    Following,
}

/// The deploys seen, per service, and how the stream is doing.
pub struct DeployWatcher {
    project: String,
    grace: Duration,
    own: Arc<OwnChanges>,
    metrics: Arc<Metrics>,
    deploys: RwLock<HashMap<String, DeployFact>>,
    state: RwLock<State>,
}

/// The task following the stream; it stops when this is dropped.
pub struct Following(tokio::task::JoinHandle<()>);

impl Drop for Following {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts watching the project's deploys, in the background: this neither waits for Docker
/// nor fails when it is down (the task keeps trying). No task when `docker.deploy_grace` is 0.
pub fn watch(
    settings: &DockerSettings,
    own: Arc<OwnChanges>,
    metrics: Arc<Metrics>,
) -> Result<(Arc<DeployWatcher>, Option<Following>), StepError> {
    let project = settings.project.clone().ok_or_else(|| {
        StepError::Failed(
            "the deploy watch needs docker.project (REMEDIATOR_DOCKER__PROJECT)".into(),
        )
    })?;
    let grace = settings.deploy_grace;
    let now = Utc::now();
    let watcher = Arc::new(DeployWatcher {
        project,
        grace,
        own,
        metrics,
        deploys: RwLock::new(HashMap::new()),
        state: RwLock::new(if grace.is_zero() {
            State::Off
        } else {
            State::Reconnecting {
                since: now,
                error: "not connected yet".into(),
                first: true,
            }
        }),
    });
    if grace.is_zero() {
        tracing::info!("docker.deploy_grace is 0: deploys are not watched");
        return Ok((watcher, None));
    }
    let from = if settings.deploy_replay {
        now - chrono::Duration::from_std(grace).unwrap_or_default()
    } else {
        now
    };
    let task = tokio::spawn(watcher.clone().follow(settings.clone(), from));
    Ok((watcher, Some(Following(task))))
}

impl DeployWatcher {
    fn set_state(&self, state: State) {
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = state;
    }

    /// Follows the stream for ever, reconnecting with backoff; `cursor` is the time from which
    /// events are read back at each (re)connection.
    async fn follow(self: Arc<Self>, settings: DockerSettings, mut cursor: DateTime<Utc>) {
        let host = daemon::host_of(&settings);
        // Made once the socket is there (bollard checks that it exists).
        let mut client: Option<Docker> = None;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(MAX_RETRY)
            .with_jitter()
            .without_max_times();
        let mut delays = backoff.build();
        // The last event handled: the stream's `since` is inclusive, so it comes again.
        let mut last: Option<DateTime<Utc>> = None;
        // When the stream was lost (None while following, and before the first connection).
        let mut lost_at: Option<DateTime<Utc>> = None;
        loop {
            if client.is_none() {
                client = daemon::connect(&settings).ok().map(|(c, _)| c);
            }
            let reached = match &client {
                Some(c) => daemon::negotiate(c).await,
                None => Err("no socket there".to_string()),
            };
            let error = match reached {
                Err(e) => format!("the Docker daemon at {host} does not answer ({e})"),
                Ok(docker) => {
                    if let Err(e) = self.sweep(&docker, cursor).await {
                        tracing::debug!(error = %e, "listing the project's containers failed");
                    }
                    DockerEventsFollowing {
                        project: &self.project,
                        since: &text(cursor),
                        gap: lost_at.and_then(|l| (Utc::now() - l).to_std().ok()),
                    }
                    .emit(&self.metrics);
                    self.set_state(State::Following);
                    lost_at = None;
                    let opened = tokio::time::Instant::now();
                    let ended = self.stream(&docker, &mut cursor, &mut last).await;
                    // The backoff starts over only after a stream that held: one that fails
                    // as soon as it opens must not be retried ten times a second.
                    if opened.elapsed() >= MAX_RETRY {
                        delays = backoff.build();
                    }
                    format!("the event stream from {host} {ended}")
                }
            };
            let delay = delays.next().unwrap_or(MAX_RETRY);
            let first_loss = lost_at.is_none();
            let since = *lost_at.get_or_insert_with(Utc::now);
            let was_first = matches!(
                *self.state.read().unwrap_or_else(|p| p.into_inner()),
                State::Reconnecting { first: true, .. }
            );
            if first_loss && was_first {
                tracing::warn!(host = %host, error = %error, retry_in_ms = delay.as_millis() as u64,
                    "cannot follow Docker's events yet: {error}; deploys are not seen until it answers (is dockerd running?)");
            } else if first_loss {
                DockerEventsLost {
                    host: &host,
                    error: &error,
                    since: &text(cursor),
                    retry_in: delay,
                }
                .emit(&self.metrics);
            } else {
                tracing::debug!(error = %error, retry_in_ms = delay.as_millis() as u64, "Docker's event stream: still not back");
            }
            self.set_state(State::Reconnecting {
                since,
                error,
                first: was_first,
            });
            tokio::time::sleep(delay).await;
        }
    }

    /// Reads the stream until it ends; says how it ended.
    async fn stream(
        &self,
        docker: &Docker,
        cursor: &mut DateTime<Utc>,
        last: &mut Option<DateTime<Utc>>,
    ) -> String {
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            (
                "label".to_string(),
                vec![format!("{PROJECT_LABEL}={}", self.project)],
            ),
        ]);
        let opts = EventsOptions {
            since: Some(since_param(*cursor)),
            until: None,
            filters: Some(filters),
        };
        let mut events = docker.events(Some(opts));
        while let Some(item) = events.next().await {
            match item {
                Ok(ev) => {
                    let Some(at) = event_time(&ev) else { continue };
                    if last.is_some_and(|l| at <= l) {
                        continue;
                    }
                    *last = Some(at);
                    *cursor = at;
                    self.on_event(&ev, at);
                }
                Err(e) => return format!("failed: {e}"),
            }
        }
        "ended (did the daemon restart?)".into()
    }

    /// Records one event if it is a deploy that is not ours.
    fn on_event(&self, ev: &EventMessage, at: DateTime<Utc>) {
        let Some(actor) = ev.actor.as_ref() else {
            return;
        };
        let Some(attrs) = actor.attributes.as_ref() else {
            return;
        };
        // Belt and braces: the daemon filtered on the project label; check it again.
        if attrs.get(PROJECT_LABEL) != Some(&self.project) {
            return;
        }
        let Some((service, action)) = ev.action.as_deref().and_then(|a| classify(a, attrs)) else {
            return;
        };
        let id = actor.id.as_deref().unwrap_or_default();
        let name = attrs.get("name").map(String::as_str).unwrap_or_default();
        let old_name = attrs.get("oldName").map(String::as_str).unwrap_or_default();
        if self.own.is_ours(id, &[name, old_name], at) {
            tracing::debug!(service, container = name, %action, "remediator's own change, not a deploy");
            return;
        }
        self.record(service, action, at, name);
    }

    /// The project's containers created after `since` (the daemon may have dropped their
    /// `create` from its 256 kept events), recorded as created.
    async fn sweep(&self, docker: &Docker, since: DateTime<Utc>) -> Result<(), String> {
        let filters = HashMap::from([(
            "label",
            vec![
                format!("{PROJECT_LABEL}={}", self.project),
                format!("{ONEOFF_LABEL}=False"),
            ],
        )]);
        let opts = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let list = docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| e.to_string())?;
        for c in list {
            let (Some(id), Some(created), Some(labels)) = (c.id, c.created, c.labels) else {
                continue;
            };
            // `Created` is in whole seconds: only a later second is surely after `since`.
            if created <= since.timestamp() || labels.get(PROJECT_LABEL) != Some(&self.project) {
                continue;
            }
            let Some((service, action)) = classify("create", &labels) else {
                continue;
            };
            let name = c
                .names
                .and_then(|n| n.into_iter().next())
                .unwrap_or_default();
            let Some(at) = Utc.timestamp_opt(created, 0).single() else {
                continue;
            };
            if self.own.is_ours(&id, &[&name], at) {
                continue;
            }
            self.record(service, action, at, name.trim_start_matches('/'));
        }
        Ok(())
    }

    fn record(&self, service: String, action: DeployAction, at: DateTime<Utc>, container: &str) {
        DeploySeen {
            service: &service,
            action: action.as_str(),
            container,
            at: &text(at),
        }
        .emit(&self.metrics);
        let fact = DeployFact {
            service: service.clone(),
            action,
            at,
        };
        let keep = chrono::Duration::from_std(self.grace + BURST).unwrap_or_default();
        let mut map = self.deploys.write().unwrap_or_else(|p| p.into_inner());
        let merged = match map.get(&service) {
            Some(old) => merge(old, &fact),
            None => fact,
        };
        let newest = merged.at;
        map.insert(service, merged);
        map.retain(|_, d| d.at + keep >= newest);
    }
}

impl DeployWatch for DeployWatcher {
    fn recent(&self, service: &str, now: DateTime<Utc>) -> Option<DeployFact> {
        if self.grace.is_zero() {
            return None;
        }
        let map = self.deploys.read().unwrap_or_else(|p| p.into_inner());
        let d = map.get(service)?;
        // A deploy stamped after `now` (the daemon's clock ahead) is in progress.
        let age = (now - d.at).to_std().unwrap_or_default();
        (age <= self.grace).then(|| d.clone())
    }

    fn status(&self) -> Option<String> {
        let grace = crate::domain::duration::format(self.grace);
        Some(
            match &*self.state.read().unwrap_or_else(|p| p.into_inner()) {
                State::Off => "off (docker.deploy_grace is 0)".to_string(),
                State::Following => format!(
                    "following compose project {}: a deploy within {grace} skips its service's runbooks",
                    self.project
                ),
                State::Reconnecting {
                    since,
                    error,
                    first: true,
                } => format!("connecting since {}: {error}", text(*since)),
                State::Reconnecting { since, error, .. } => format!(
                    "reconnecting since {}: {error}; what happened meanwhile is read back once it is back",
                    text(*since)
                ),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{EventActor, EventMessageTypeEnum};

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn compose(service: &str, extra: &[(&str, &str)]) -> HashMap<String, String> {
        let mut l = labels(&[
            (PROJECT_LABEL, "voiceai"),
            (SERVICE_LABEL, service),
            (ONEOFF_LABEL, "False"),
            ("image", "busybox"),
            ("name", &format!("voiceai_{service}_1")),
        ]);
        l.extend(labels(extra));
        l
    }

    #[test]
    fn container_events_classify_as_deploys_or_not() {
        use DeployAction::*;
        let plain = compose("backend", &[]);
        let replace = compose("backend", &[(REPLACE_LABEL, "voiceai-backend-1")]);
        let oneoff = compose("backend", &[(ONEOFF_LABEL, "True")]);
        let cases: &[(&str, &HashMap<String, String>, Option<DeployAction>)] = &[
            ("create", &plain, Some(Created)),
            ("create", &replace, Some(Recreated)),
            ("rename", &plain, Some(Renamed)),
            ("destroy", &plain, Some(Destroyed)),
            ("destroy", &replace, Some(Destroyed)),
            ("start", &plain, None),
            ("restart", &plain, None),
            ("die", &plain, None),
            ("kill", &plain, None),
            ("stop", &plain, None),
            ("health_status: unhealthy", &plain, None),
            ("exec_start: sh -c true", &plain, None),
            ("create", &oneoff, None),
            ("destroy", &oneoff, None),
        ];
        for (action, attrs, expect) in cases {
            let got = classify(action, attrs);
            assert_eq!(got.as_ref().map(|g| g.1), *expect, "{action} {attrs:?}");
            if let Some((service, _)) = got {
                assert_eq!(service, "backend");
            }
        }
        let no_service = labels(&[(PROJECT_LABEL, "voiceai")]);
        assert_eq!(
            classify("create", &no_service),
            None,
            "not a compose service"
        );
    }

    /// Seconds from a base a little after this test started: our own changes end at the
    /// wall clock's now, and the events after them must come later.
    fn at(secs: i64) -> DateTime<Utc> {
        static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
        let base = *BASE.get_or_init(|| Utc::now().timestamp() + 60);
        Utc.timestamp_opt(base + secs, 0).unwrap()
    }

    fn fact(action: DeployAction, secs: i64) -> DeployFact {
        DeployFact {
            service: "backend".into(),
            action,
            at: at(secs),
        }
    }

    #[test]
    fn the_events_of_one_deploy_read_as_one_and_a_later_deploy_replaces_it() {
        use DeployAction::*;
        let seq = |events: &[(DeployAction, i64)]| {
            let mut it = events.iter().map(|(a, s)| fact(*a, *s));
            let first = it.next().unwrap();
            it.fold(first, |acc, f| merge(&acc, &f))
        };
        // compose v1: the old one renamed, the new one created, the old one destroyed.
        assert_eq!(
            seq(&[(Renamed, 0), (Created, 0), (Destroyed, 1)]),
            fact(Recreated, 1)
        );
        // compose v2 before 2.30: created under a temporary name, old destroyed, renamed.
        assert_eq!(
            seq(&[(Created, 0), (Destroyed, 3), (Renamed, 3)]),
            fact(Recreated, 3)
        );
        // compose ≥ 2.30 labels the create.
        assert_eq!(
            seq(&[(Recreated, 0), (Destroyed, 2), (Renamed, 2)]),
            fact(Recreated, 2)
        );
        assert_eq!(seq(&[(Created, 0), (Created, 1)]), fact(Created, 1));
        assert_eq!(seq(&[(Destroyed, 0)]), fact(Destroyed, 0));
        // A later deploy is a deploy of its own; a replayed older event changes nothing.
        assert_eq!(
            seq(&[(Recreated, 0), (Destroyed, 300)]),
            fact(Destroyed, 300)
        );
        assert_eq!(
            seq(&[(Destroyed, 300), (Recreated, 0)]),
            fact(Destroyed, 300)
        );
        // Replayed events of the same deploy, out of order, read the same.
        assert_eq!(
            seq(&[(Destroyed, 1), (Renamed, 0), (Created, 0)]),
            fact(Recreated, 1)
        );
    }

    fn watcher(grace: Duration, own: Arc<OwnChanges>) -> DeployWatcher {
        DeployWatcher {
            project: "voiceai".into(),
            grace,
            own,
            metrics: Arc::new(Metrics::new()),
            deploys: RwLock::new(HashMap::new()),
            state: RwLock::new(State::Following),
        }
    }

    fn event(action: &str, id: &str, attrs: HashMap<String, String>) -> EventMessage {
        EventMessage {
            typ: Some(EventMessageTypeEnum::CONTAINER),
            action: Some(action.into()),
            actor: Some(EventActor {
                id: Some(id.into()),
                attributes: Some(attrs),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_deploy_is_recent_within_the_grace_and_not_after() {
        let w = watcher(Duration::from_secs(300), Arc::default());
        let created = compose("backend", &[]);
        w.on_event(&event("create", "aaa", created), at(0));
        let seen = w.recent("backend", at(40)).expect("within the grace");
        assert_eq!(seen, fact(DeployAction::Created, 0));
        assert_eq!(
            w.recent("backend", at(300)),
            Some(seen),
            "the grace is inclusive"
        );
        assert_eq!(w.recent("backend", at(301)), None);
        assert_eq!(w.recent("postgres", at(1)), None, "another service");
        assert!(
            w.recent("backend", at(-5)).is_some(),
            "an event stamped a little ahead of our clock"
        );
        let off = watcher(Duration::ZERO, Arc::default());
        off.on_event(&event("create", "aaa", compose("backend", &[])), at(0));
        assert_eq!(
            off.recent("backend", at(0)),
            None,
            "a grace of 0 turns it off"
        );
        assert_eq!(
            off.status().unwrap(),
            "following compose project voiceai: a deploy within 0s skips its service's runbooks"
        );
    }

    #[test]
    fn restarts_other_projects_one_offs_and_our_own_recreate_are_no_deploy() {
        let own = Arc::new(OwnChanges::default());
        let w = watcher(Duration::from_secs(300), own.clone());
        for action in ["kill", "die", "stop", "start", "restart"] {
            w.on_event(&event(action, "aaa", compose("backend", &[])), at(0));
        }
        let mut other = compose("backend", &[]);
        other.insert(PROJECT_LABEL.into(), "someone-else".into());
        w.on_event(&event("create", "bbb", other), at(0));
        let oneoff = compose("backend", &[(ONEOFF_LABEL, "True")]);
        w.on_event(&event("create", "ccc", oneoff), at(0));
        assert_eq!(w.recent("backend", at(1)), None);

        // Our recreate, as recreate.rs does it: create under the temporary name, stop and
        // destroy the old one, rename the new one, start it.
        let old = "f1407111813e9792485b86ad780a9689d8c623973305dc0208eddb61abf2fdaa";
        let tmp = "f1407111813e_voiceai_backend_1";
        {
            let change = own.begin(&[old], &[tmp]);
            w.on_event(
                &event(
                    "create",
                    "5b18210e0366",
                    compose("backend", &[("name", tmp)]),
                ),
                at(0),
            );
            change.add_id("5b18210e0366");
            w.on_event(&event("destroy", old, compose("backend", &[])), at(1));
            w.on_event(
                &event(
                    "rename",
                    "5b18210e0366",
                    compose("backend", &[("oldName", &format!("/{tmp}"))]),
                ),
                at(1),
            );
        }
        assert_eq!(
            w.recent("backend", at(2)),
            None,
            "our own recreate is no deploy"
        );

        // A compose recreate right after ours is one.
        let tmp2 = "5b18210e0366_voiceai_backend_1";
        w.on_event(
            &event(
                "rename",
                "5b18210e0366",
                compose(
                    "backend",
                    &[("name", tmp2), ("oldName", "/voiceai_backend_1")],
                ),
            ),
            at(3),
        );
        w.on_event(&event("create", "ddd", compose("backend", &[])), at(3));
        w.on_event(
            &event(
                "destroy",
                "5b18210e0366",
                compose("backend", &[("name", tmp2)]),
            ),
            at(4),
        );
        assert_eq!(
            w.recent("backend", at(44)),
            Some(fact(DeployAction::Recreated, 4))
        );
    }

    #[test]
    fn the_status_says_when_the_stream_is_lost() {
        let w = watcher(Duration::from_secs(300), Arc::default());
        w.set_state(State::Reconnecting {
            since: Utc.timestamp_opt(1_800_000_000, 0).unwrap(),
            error: "the event stream from unix:///x ended (did the daemon restart?)".into(),
            first: false,
        });
        assert_eq!(
            w.status().unwrap(),
            "reconnecting since 2027-01-15T08:00:00Z: the event stream from unix:///x ended (did the daemon restart?); what happened meanwhile is read back once it is back"
        );
        assert_eq!(
            since_param(Utc.timestamp_nanos(1_800_000_000_000_000_042)),
            "1800000000.000000042"
        );
    }
}
