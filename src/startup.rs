//! Wires the service together: store, intake writer, rules, engine (with the Docker executor
//! and the Alertmanager client when configured), HTTP server.
//! Tests build an [`Application`] on port 0 and read its port.

use std::net::TcpListener;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Notify;

use crate::actions::{Executor, Following, OwnChanges};
use crate::alertmanager::AlertmanagerClient;
use crate::coordination::RedisCoordinator;
use crate::domain::{Clock, SystemClock};
use crate::engine::{AlertCheck, Engine, NoDocker, Outside, SharedRules};
use crate::history::History;
use crate::http::buttons::{Buttons, Paused, Pauser, Silencer};
use crate::http::AppState;
use crate::loader::{load_rules, LoadError};
use crate::metrics::Metrics;
use crate::notify::outbox::{Deliverer, RootOptions};
use crate::settings::Settings;
use crate::store::{IncidentRecord, IntakeWriter, Store};

pub struct Application {
    port: u16,
    server: crate::http::Server,
    engine: Arc<Engine>,
    deliverer: Arc<Deliverer>,
    rules: SharedRules,
    reload: Arc<dyn Fn() -> Result<usize, String> + Send + Sync>,
    /// What pruning old webhook bodies needs (`webhook.retention`).
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    retention: Duration,
    clock: Arc<dyn Clock>,
    /// The fleet history when `postgres.url` is set: its shipper runs with the service.
    history: Option<Arc<History>>,
    /// The task following Docker's events for deploys; it stops when the application does.
    _deploy_watch: Option<Following>,
}

impl Application {
    /// Builds everything with the wall clock; Docker actions and the deploy watch when
    /// `docker.project` is set. The watch starts in the background: a Docker daemon that is
    /// down delays neither startup nor readiness.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        Self::build_with_buttons(settings, None).await
    }

    /// As [`Application::build`], with what the root's Silence and Pause buttons act through
    /// in place of the real ones (an Alertmanager silence with `alertmanager.urls`, a pause
    /// of the incident's rule on its service) when `buttons` is given: tests use fakes.
    pub async fn build_with_buttons(
        settings: Settings,
        buttons: Option<Buttons>,
    ) -> anyhow::Result<Application> {
        let metrics = Arc::new(Metrics::new());
        let (outside, watch) = if settings.docker.project.is_some() {
            let own = Arc::new(OwnChanges::default());
            let steps = Executor::new(&settings.docker, own.clone())
                .map_err(|e| anyhow::anyhow!("docker: {e}"))?;
            let (deploys, watch) = crate::actions::watch(&settings.docker, own, metrics.clone())
                .map_err(|e| anyhow::anyhow!("docker: {e}"))?;
            let mut outside = Outside::new(Arc::new(steps));
            outside.deploys = deploys;
            (outside, watch)
        } else {
            tracing::warn!("docker.project is not set (REMEDIATOR_DOCKER__PROJECT): runbooks will touch no container");
            (Outside::new(Arc::new(NoDocker)), None)
        };
        Self::build_with(
            settings,
            outside,
            watch,
            metrics,
            Arc::new(SystemClock),
            buttons,
        )
        .await
    }

    /// Builds everything from the parts given; `buttons: None` wires the real Silence and
    /// Pause buttons.
    pub async fn build_with(
        settings: Settings,
        mut outside: Outside,
        deploy_watch: Option<Following>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        buttons: Option<Buttons>,
    ) -> anyhow::Result<Application> {
        let rules = match load_rules(&settings.rules_dir) {
            Ok(rules) => rules,
            // The list on lines of its own, once: not as the cause of a context message.
            Err(LoadError::Rules(errors)) => anyhow::bail!(
                "the rules in {dir} have {summary}; fix them (remediator check {dir} lists them again):\n{errors}",
                dir = settings.rules_dir.display(),
                summary = errors.summary(),
            ),
            Err(e) => return Err(e.into()),
        };
        tracing::info!(rules = rules.rules.len(), dir = %settings.rules_dir.display(), "rules loaded");
        let rules: SharedRules = Arc::new(RwLock::new(Arc::new(rules)));

        let store = Arc::new(Store::open(&settings.data_dir)?);
        let wake = Arc::new(Notify::new());
        // Before the intake writer: from its first row on, every journal change is queued.
        let history = History::new(&settings.postgres, &settings.replica.id)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .map(Arc::new);
        match &history {
            Some(h) => {
                store.start_shipping()?;
                tracing::info!(
                    target = h.target(),
                    replica = h.replica(),
                    "the journal is shipped to the fleet history"
                );
            }
            None => store.stop_shipping()?,
        }
        let intake = IntakeWriter::spawn(store.clone(), wake.clone(), clock.clone())?;

        let alertmanager = AlertmanagerClient::new(&settings.alertmanager, clock.clone())
            .map_err(|e| anyhow::anyhow!("alertmanager: {e}"))?
            .map(Arc::new);
        match &alertmanager {
            Some(am) => tracing::info!(peers = ?am.peers(), on_unreachable = %settings.alertmanager.on_unreachable, "Alertmanager is asked before each runbook's first destructive step"),
            None => tracing::warn!("alertmanager.urls is not set (REMEDIATOR_ALERTMANAGER__URLS): a silence set after a notification is not seen, and runbooks go on"),
        }
        outside.alertmanager = alertmanager.clone().map(|am| am as Arc<dyn AlertCheck>);
        // Fleet mode: the claims in Redis; connected lazily, so a Redis that is down delays
        // neither startup nor readiness (the engine applies coordination.on_redis_down).
        if outside.coordinator.is_none() {
            match RedisCoordinator::new(
                &settings.redis,
                &settings.replica,
                &settings.coordination,
                metrics.clone(),
            )
            .map_err(|e| anyhow::anyhow!("redis: {e}"))?
            {
                Some(c) => {
                    tracing::info!(redis = %c.shown(), replica = %settings.replica.id, on_redis_down = %settings.coordination.on_redis_down, "fleet mode: new firings are claimed in Redis before they are acted on");
                    outside.coordinator = Some(Arc::new(c));
                }
                None => tracing::info!("redis.url is not set (REMEDIATOR_REDIS__URL): one replica alone, nothing is coordinated"),
            }
        }
        let engine = Engine::new(
            store.clone(),
            rules.clone(),
            outside,
            clock.clone(),
            settings.engine.clone(),
            metrics.clone(),
            wake,
        );

        let buttons = buttons.unwrap_or_else(|| Buttons {
            silence: alertmanager
                .clone()
                .map(|am| Arc::new(AlertmanagerSilencer(am)) as Arc<dyn Silencer>),
            pause: Some(Arc::new(EnginePauser(engine.clone()))),
        });
        let deliverer = Deliverer::new(
            store.clone(),
            clock.clone(),
            metrics.clone(),
            &settings.slack,
            &settings.pagerduty,
            RootOptions {
                public_url: settings.api.public_url.clone(),
                offered: buttons.offered(),
            },
        )?;

        let reload: Arc<dyn Fn() -> Result<usize, String> + Send + Sync> = {
            let (rules, dir, metrics) =
                (rules.clone(), settings.rules_dir.clone(), metrics.clone());
            let (store, deliverer) = (store.clone(), deliverer.clone());
            Arc::new(move || match load_rules(&dir) {
                Ok(new) => {
                    let n = new.rules.len();
                    *rules.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
                    metrics.reload("success");
                    // The channel name is resolved again (created, renamed, bot invited
                    // since), and messages a sink refused (channel_not_found, …) are tried
                    // again: the operator reloads after fixing the cause.
                    deliverer.resolve_channel_again();
                    match store.outbox_unblock_all() {
                        Ok(0) => {}
                        Ok(held) => tracing::info!(held, "retrying held notifications"),
                        Err(e) => {
                            tracing::error!(error = %e, "could not release held notifications")
                        }
                    }
                    tracing::info!(rules = n, "rules reloaded");
                    Ok(n)
                }
                Err(e) => {
                    metrics.reload("failure");
                    tracing::error!(error = %e, "reload refused; the previous rules stay in force");
                    Err(e.to_string())
                }
            })
        };

        let listener = TcpListener::bind(settings.listen).with_context(|| {
            format!(
                "cannot listen on {}; is another process using it? (--listen ADDR)",
                settings.listen
            )
        })?;
        let port = listener.local_addr()?.port();
        let retention = settings.webhook.retention;
        let state = AppState {
            settings: settings.clone(),
            store: store.clone(),
            intake,
            metrics: metrics.clone(),
            rules: rules.clone(),
            engine: engine.clone(),
            deliverer: deliverer.clone(),
            reload: reload.clone(),
            clock: clock.clone(),
            alertmanager,
            buttons,
            history: history.clone(),
        };
        let server = crate::http::serve(listener, state)
            .with_context(|| format!("cannot serve HTTP on {}", settings.listen))?;
        tracing::info!(addr = %settings.listen, port, "listening");
        Ok(Application {
            port,
            server,
            engine,
            deliverer,
            rules,
            reload,
            store,
            metrics,
            retention,
            clock,
            history,
            _deploy_watch: deploy_watch,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn engine(&self) -> Arc<Engine> {
        self.engine.clone()
    }

    pub fn rules(&self) -> SharedRules {
        self.rules.clone()
    }

    /// Serves until SIGINT/SIGTERM; SIGHUP reloads the rules.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        // A watch, not a Notify: a task busy when the stop comes still sees it afterwards.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let engine_task = tokio::spawn(self.engine.clone().run(stopped(stop_rx.clone())));
        let prune_task = tokio::spawn(prune_intake(
            self.store.clone(),
            self.retention,
            self.metrics.clone(),
            self.clock.clone(),
            stopped(stop_rx.clone()),
        ));
        let history_task = self.history.clone().map(|h| {
            tokio::spawn(h.run(
                self.store.clone(),
                self.metrics.clone(),
                self.clock.clone(),
                stopped(stop_rx.clone()),
            ))
        });
        let outbox_task = tokio::spawn(self.deliverer.clone().run(stopped(stop_rx)));
        #[cfg(unix)]
        {
            let reload = self.reload.clone();
            if let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        let reload = reload.clone();
                        let _ = tokio::task::spawn_blocking(move || reload()).await;
                    }
                });
            }
        }
        let served = self.server.await;
        let _ = stop_tx.send(true);
        let _ = engine_task.await;
        let _ = outbox_task.await;
        let _ = prune_task.await;
        if let Some(task) = history_task {
            let _ = task.await;
        }
        served.context("the HTTP server failed")
    }
}

/// Deletes stored webhook bodies older than `webhook.retention`, a bounded batch at a time so
/// the intake writer never waits long; after a storm it catches up batch by batch.
async fn prune_intake(
    store: Arc<Store>,
    retention: Duration,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    stop: impl std::future::Future<Output = ()>,
) {
    const BATCH: usize = 2000;
    tokio::pin!(stop);
    loop {
        let cutoff = chrono::Duration::from_std(retention)
            .ok()
            .and_then(|r| clock.now().checked_sub_signed(r));
        let mut wait = Duration::from_secs(60);
        if let Some(cutoff) = cutoff {
            let store = store.clone();
            match tokio::task::spawn_blocking(move || store.prune_intake(cutoff, BATCH)).await {
                Ok(Ok(deleted)) => {
                    metrics.intake_pruned.inc_by(deleted as u64);
                    if deleted == BATCH {
                        wait = Duration::from_millis(200);
                    }
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "pruning old webhook bodies failed; retrying in a minute")
                }
                Err(e) => tracing::error!(error = %e, "the pruning task panicked"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut stop => return,
        }
    }
}

/// The Silence 1h button: a silence of exactly the incident's labels in Alertmanager.
struct AlertmanagerSilencer(Arc<AlertmanagerClient>);

#[async_trait::async_trait]
impl Silencer for AlertmanagerSilencer {
    async fn silence(
        &self,
        inc: &IncidentRecord,
        by: &str,
        hold: Duration,
    ) -> Result<String, String> {
        let comment = crate::alertmanager::slack_silence_comment(inc.id, inc.rule.as_deref(), by);
        self.0
            .create_silence(&inc.labels, by, &comment, hold)
            .await
            .map(|id| id.to_string())
            .map_err(|e| e.to_string())
    }
}

/// The Pause automation 1h button: a pause of the incident's rule on its service.
struct EnginePauser(Arc<Engine>);

impl Pauser for EnginePauser {
    fn pause(&self, inc: &IncidentRecord, by: &str, hold: Duration) -> Result<Paused, String> {
        self.0
            .pause_incident(inc.id, by, hold)
            .map(|p| Paused {
                id: p.id.to_string(),
                until: p.until,
            })
            .map_err(|e| e.to_string())
    }
}
