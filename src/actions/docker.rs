//! Docker steps through bollard, confined to one compose project.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::models::{ContainerInspectResponse, ExecConfig, HealthStatusEnum};
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListImagesOptionsBuilder, LogsOptionsBuilder,
    RestartContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

use super::daemon::{self, DaemonErrors, Found};
use super::own::OwnChanges;
use super::{recreate, truncate, DockerSettings};
use crate::engine::{StepContext, StepError, StepOutput};
use crate::rules::{validate_name, StepKind, TargetRef};

pub(super) const PROJECT_LABEL: &str = "com.docker.compose.project";
pub(super) const SERVICE_LABEL: &str = "com.docker.compose.service";
pub(super) const ONEOFF_LABEL: &str = "com.docker.compose.oneoff";
/// Output kept from logs and exec, per step.
const EXCERPT: usize = 4096;

pub struct DockerActions {
    client: Docker,
    negotiated: tokio::sync::Mutex<Option<Docker>>,
    project: Option<String>,
    allowed: Vec<String>,
    host: String,
    /// What remediator is changing itself, so that its own recreates are no deploy.
    own: Arc<OwnChanges>,
}

impl DockerActions {
    pub fn new(s: &DockerSettings, own: Arc<OwnChanges>) -> Result<DockerActions, StepError> {
        let (client, host) = daemon::connect(s)?;
        if let Some(p) = &s.project {
            validate_name(p).map_err(|e| StepError::Failed(format!("docker.project: {e}")))?;
        }
        Ok(DockerActions {
            client,
            negotiated: tokio::sync::Mutex::new(None),
            project: s.project.clone(),
            allowed: s.allowed_services.clone(),
            host,
            own,
        })
    }

    /// The client pinned to the daemon's API version (Docker 20.10 speaks 1.41), negotiated
    /// once the daemon answers; until then the unnegotiated client, whose requests fail with
    /// a clear message.
    pub(super) async fn docker(&self) -> Docker {
        let mut slot = self.negotiated.lock().await;
        if let Some(d) = slot.as_ref() {
            return d.clone();
        }
        match daemon::negotiate(&self.client).await {
            Ok(d) => {
                *slot = Some(d.clone());
                d
            }
            Err(_) => self.client.clone(),
        }
    }

    pub(super) fn err(&self, what: &str, e: DockerError) -> StepError {
        DaemonErrors { host: &self.host }.err(what, e)
    }

    /// What remediator is changing itself, for the deploy watch.
    pub(super) fn own(&self) -> &OwnChanges {
        &self.own
    }

    pub(super) fn project(&self) -> Result<&str, StepError> {
        self.project.as_deref().ok_or_else(|| {
            StepError::Failed(
                "no compose project is configured (docker.project, REMEDIATOR_DOCKER__PROJECT); remediator touches no container without one"
                    .into(),
            )
        })
    }

    pub(super) fn check_service(&self, service: &str) -> Result<(), StepError> {
        validate_name(service).map_err(|e| StepError::Failed(format!("refused: service {e}")))?;
        if !self.allowed.is_empty() && !self.allowed.iter().any(|a| a == service) {
            return Err(StepError::Failed(format!(
                "refused: service {service:?} is not in docker.allowed_services ({})",
                self.allowed.join(", ")
            )));
        }
        Ok(())
    }

    /// The project's containers of one service (running or not, never one-off runs); an
    /// error when there is none.
    pub(super) async fn service_containers(
        &self,
        docker: &Docker,
        service: &str,
    ) -> Result<Vec<Found>, StepError> {
        let found = self.list_service(docker, service).await?;
        if found.is_empty() {
            return Err(StepError::Failed(format!(
                "no container of service {service:?} in compose project {:?}",
                self.project()?
            )));
        }
        Ok(found)
    }

    /// The project's containers of one service (running or not, never one-off runs), by
    /// name; empty when it has none.
    pub(super) async fn list_service(
        &self,
        docker: &Docker,
        service: &str,
    ) -> Result<Vec<Found>, StepError> {
        self.check_service(service)?;
        let project = self.project()?;
        let filters = HashMap::from([(
            "label",
            vec![
                format!("{PROJECT_LABEL}={project}"),
                format!("{SERVICE_LABEL}={service}"),
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
            .map_err(|e| self.err("list containers", e))?;
        let mut found: Vec<Found> = list
            .into_iter()
            .filter(|c| {
                // Belt and braces: the daemon filtered on these labels; check them again.
                c.labels.as_ref().is_some_and(|l| {
                    l.get(PROJECT_LABEL).map(String::as_str) == Some(project)
                        && l.get(SERVICE_LABEL).map(String::as_str) == Some(service)
                })
            })
            .filter_map(|c| {
                let id = c.id?;
                let name = c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .unwrap_or_default();
                Some(Found {
                    id,
                    name: name.trim_start_matches('/').to_string(),
                })
            })
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    async fn containers(
        &self,
        docker: &Docker,
        target: &TargetRef,
        step: &str,
    ) -> Result<Vec<Found>, StepError> {
        match target {
            TargetRef::Service(s) => self.service_containers(docker, s).await,
            TargetRef::Container(name) => {
                validate_name(name)
                    .map_err(|e| StepError::Failed(format!("refused: container {e}")))?;
                let project = self.project()?;
                let info = docker
                    .inspect_container(name, None)
                    .await
                    .map_err(|e| self.err(&format!("inspect {name}"), e))?;
                let labels = info.config.as_ref().and_then(|c| c.labels.as_ref());
                let in_project = labels
                    .and_then(|l| l.get(PROJECT_LABEL))
                    .map(String::as_str)
                    == Some(project);
                if !in_project {
                    return Err(StepError::Failed(format!(
                        "refused: container {name:?} is not part of compose project {project:?}"
                    )));
                }
                if let Some(service) = labels.and_then(|l| l.get(SERVICE_LABEL)) {
                    self.check_service(service)?;
                }
                Ok(vec![Found {
                    id: info.id.unwrap_or_else(|| name.clone()),
                    name: name.clone(),
                }])
            }
            TargetRef::None => Err(StepError::Failed(format!(
                "{step} needs a container, and the rule's target is none"
            ))),
        }
    }

    /// A live drill's break of the target: `docker stop` (with the default grace) or
    /// `docker kill` (SIGKILL), of the target's containers in the project.
    pub async fn break_target(
        &self,
        ctx: &StepContext,
        how: crate::domain::Break,
    ) -> Result<StepOutput, StepError> {
        use crate::domain::Break;
        let docker = self.docker().await;
        let mut names = Vec::new();
        for c in self.containers(&docker, &ctx.target, "drill break").await? {
            match how {
                Break::Stop => {
                    let opts = StopContainerOptionsBuilder::new()
                        .t(grace_or_default(None).as_secs() as i32)
                        .build();
                    docker
                        .stop_container(&c.id, Some(opts))
                        .await
                        .map_err(|e| self.err(&format!("stop {}", c.name), e))?;
                }
                Break::Kill => docker
                    .kill_container(
                        &c.id,
                        None::<bollard::query_parameters::KillContainerOptions>,
                    )
                    .await
                    .map_err(|e| self.err(&format!("kill {}", c.name), e))?,
            }
            names.push(c.name);
        }
        let done = match how {
            Break::Stop => "stopped",
            Break::Kill => "killed",
        };
        Ok(StepOutput::new(format!("{done} {}", names.join(", "))))
    }

    pub async fn run(&self, ctx: &StepContext, step: &StepKind) -> Result<StepOutput, StepError> {
        let docker = self.docker().await;
        let name = step.name();
        match step {
            StepKind::Diagnose { .. } => self.diagnose(&docker, &ctx.target).await,
            StepKind::Logs { tail, .. } => {
                let mut out = String::new();
                for c in self.containers(&docker, &ctx.target, name).await? {
                    out.push_str(&format!("== {}\n", c.name));
                    out.push_str(&self.logs(&docker, &c, *tail).await?);
                }
                Ok(StepOutput {
                    summary: format!("last {tail} log lines"),
                    excerpt: truncate(&out, EXCERPT),
                })
            }
            StepKind::Restart { grace, .. } => {
                let t = grace_or_default(*grace);
                let mut names = Vec::new();
                for c in self.containers(&docker, &ctx.target, name).await? {
                    let opts = RestartContainerOptionsBuilder::new()
                        .t(t.as_secs() as i32)
                        .build();
                    docker
                        .restart_container(&c.id, Some(opts))
                        .await
                        .map_err(|e| self.err(&format!("restart {}", c.name), e))?;
                    names.push(c.name);
                }
                Ok(StepOutput::new(format!("restarted {}", names.join(", "))))
            }
            StepKind::Recreate { grace, .. } => {
                let t = grace_or_default(*grace);
                let mut done = Vec::new();
                for c in self.containers(&docker, &ctx.target, name).await? {
                    done.push(
                        recreate::recreate(
                            &DaemonErrors { host: &self.host },
                            &docker,
                            &c,
                            t,
                            &self.own,
                        )
                        .await?,
                    );
                }
                Ok(StepOutput::new(format!("recreated {}", done.join(", "))))
            }
            StepKind::Stop {
                services, grace, ..
            } => {
                let t = grace_or_default(*grace);
                let mut names = Vec::new();
                for s in services {
                    for c in self.service_containers(&docker, s).await? {
                        let opts = StopContainerOptionsBuilder::new()
                            .t(t.as_secs() as i32)
                            .build();
                        docker
                            .stop_container(&c.id, Some(opts))
                            .await
                            .map_err(|e| self.err(&format!("stop {}", c.name), e))?;
                        names.push(c.name);
                    }
                }
                Ok(StepOutput::new(format!("stopped {}", names.join(", "))))
            }
            StepKind::Start { services, .. } => {
                let mut names = Vec::new();
                for s in services {
                    for c in self.service_containers(&docker, s).await? {
                        docker
                            .start_container(&c.id, None)
                            .await
                            .map_err(|e| self.err(&format!("start {}", c.name), e))?;
                        names.push(c.name);
                    }
                }
                Ok(StepOutput::new(format!("started {}", names.join(", "))))
            }
            StepKind::Exec {
                argv,
                expect_exit,
                service,
                ..
            } => {
                let target = match service {
                    Some(s) => TargetRef::Service(s.clone()),
                    None => ctx.target.clone(),
                };
                let first = self
                    .containers(&docker, &target, name)
                    .await?
                    .into_iter()
                    .next()
                    .ok_or_else(|| StepError::Failed("exec: no container".into()))?;
                self.exec(&docker, &first, argv, *expect_exit).await
            }
            StepKind::WaitHealthy { within } => {
                let within = within.map(|w| w.0).unwrap_or(Duration::from_secs(120));
                self.wait_healthy(&docker, &ctx.target, within).await
            }
            other => Err(StepError::Failed(format!(
                "{} is not a Docker step",
                other.name()
            ))),
        }
    }

    async fn logs(&self, docker: &Docker, c: &Found, tail: u32) -> Result<String, StepError> {
        let opts = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .tail(&tail.to_string())
            .build();
        let mut stream = docker.logs(&c.id, Some(opts));
        let mut out = String::new();
        while let Some(item) = stream.next().await {
            let chunk = item.map_err(|e| self.err(&format!("logs {}", c.name), e))?;
            out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
            if out.len() > 1 << 20 {
                break;
            }
        }
        Ok(out)
    }

    async fn exec(
        &self,
        docker: &Docker,
        c: &Found,
        argv: &[String],
        expect: i64,
    ) -> Result<StepOutput, StepError> {
        let config = ExecConfig {
            cmd: Some(argv.to_vec()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let created = docker
            .create_exec(&c.id, config)
            .await
            .map_err(|e| self.err(&format!("exec in {}", c.name), e))?;
        let mut output = String::new();
        if let bollard::exec::StartExecResults::Attached {
            output: mut stream, ..
        } = docker
            .start_exec(&created.id, None)
            .await
            .map_err(|e| self.err(&format!("exec in {}", c.name), e))?
        {
            while let Some(item) = stream.next().await {
                let chunk = item.map_err(|e| self.err(&format!("exec output in {}", c.name), e))?;
                output.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                if output.len() > 1 << 20 {
                    break;
                }
            }
        }
        let code = loop {
            let info = docker
                .inspect_exec(&created.id)
                .await
                .map_err(|e| self.err(&format!("exec in {}", c.name), e))?;
            if info.running != Some(true) {
                break info.exit_code.unwrap_or(-1);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let shown = argv.join(" ");
        let out = StepOutput {
            summary: format!("`{shown}` in {} exited {code}", c.name),
            excerpt: truncate(&output, EXCERPT),
        };
        if code == expect {
            Ok(out)
        } else {
            Err(StepError::Failed(format!(
                "`{shown}` in {} exited {code}, expected {expect}\n{}",
                c.name, out.excerpt
            )))
        }
    }

    async fn wait_healthy(
        &self,
        docker: &Docker,
        target: &TargetRef,
        within: Duration,
    ) -> Result<StepOutput, StepError> {
        // Stop a little before the engine's deadline so the last state is reported.
        let deadline =
            tokio::time::Instant::now() + within.saturating_sub(Duration::from_millis(500));
        let containers = self.containers(docker, target, "wait_healthy").await?;
        loop {
            let mut all_ok = true;
            let mut states = Vec::new();
            for c in &containers {
                let info = docker
                    .inspect_container(&c.id, None)
                    .await
                    .map_err(|e| self.err(&format!("inspect {}", c.name), e))?;
                let (ok, state) = health_of(&info);
                all_ok &= ok;
                states.push(format!("{}: {state}", c.name));
            }
            let last = states.join("; ");
            if all_ok {
                return Ok(StepOutput::new(last));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StepError::Failed(format!(
                    "not healthy within {}: {last}",
                    humantime::format_duration(within)
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn diagnose(&self, docker: &Docker, target: &TargetRef) -> Result<StepOutput, StepError> {
        let mut lines = Vec::new();
        if !matches!(target, TargetRef::None) {
            for c in self.containers(docker, target, "diagnose").await? {
                let info = docker
                    .inspect_container(&c.id, None)
                    .await
                    .map_err(|e| self.err(&format!("inspect {}", c.name), e))?;
                lines.push(describe(&c.name, &info));
            }
        }
        lines.push(self.disk_usage(docker).await?);
        Ok(StepOutput {
            summary: lines.first().cloned().unwrap_or_default(),
            excerpt: lines.join("\n"),
        })
    }

    /// Docker's disk usage: images and the project's containers' writable layers.
    async fn disk_usage(&self, docker: &Docker) -> Result<String, StepError> {
        let images = docker
            .list_images(Some(ListImagesOptionsBuilder::new().all(false).build()))
            .await
            .map_err(|e| self.err("list images", e))?;
        let image_bytes: i64 = images.iter().map(|i| i.size.max(0)).sum();
        let mut text = format!("docker disk: {} images, {}", images.len(), mib(image_bytes));
        if let Ok(project) = self.project() {
            let filters = HashMap::from([("label", vec![format!("{PROJECT_LABEL}={project}")])]);
            let opts = ListContainersOptionsBuilder::new()
                .all(true)
                .size(true)
                .filters(&filters)
                .build();
            let list = docker
                .list_containers(Some(opts))
                .await
                .map_err(|e| self.err("list containers", e))?;
            let rw: i64 = list.iter().filter_map(|c| c.size_rw).sum();
            text.push_str(&format!(
                "; project {project}: {} containers, writable layers {}",
                list.len(),
                mib(rw)
            ));
        }
        Ok(text)
    }
}

/// The stop grace period: the step's `grace`, else Docker's own default of 10 s.
pub(super) fn grace_or_default(grace: Option<crate::rules::Dur>) -> Duration {
    grace.map(|g| g.0).unwrap_or(Duration::from_secs(10))
}

fn mib(bytes: i64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Healthy (or running without a healthcheck), and a one-line state.
pub(super) fn health_of(info: &ContainerInspectResponse) -> (bool, String) {
    let Some(state) = info.state.as_ref() else {
        return (false, "no state".into());
    };
    let running = state.running == Some(true);
    let status = state.status.map(|s| s.to_string()).unwrap_or_default();
    match state.health.as_ref().and_then(|h| h.status) {
        Some(HealthStatusEnum::HEALTHY) => (running, format!("{status}, healthy")),
        Some(h @ (HealthStatusEnum::UNHEALTHY | HealthStatusEnum::STARTING)) => {
            (false, format!("{status}, {h}"))
        }
        _ => (running, format!("{status}, no healthcheck")),
    }
}

fn describe(name: &str, info: &ContainerInspectResponse) -> String {
    let state = info.state.as_ref();
    let (_, health) = health_of(info);
    let mem = info
        .host_config
        .as_ref()
        .and_then(|h| h.memory)
        .filter(|m| *m > 0)
        .map(mib)
        .unwrap_or_else(|| "none".into());
    let last_check = state
        .and_then(|s| s.health.as_ref())
        .and_then(|h| h.log.as_ref())
        .and_then(|l| l.last())
        .and_then(|r| r.output.clone())
        .map(|o| format!(", last healthcheck output {:?}", o.trim()))
        .unwrap_or_default();
    format!(
        "{name}: {health}, exit code {}, OOMKilled {}, restart count {}, memory limit {mem}, started {}{last_check}",
        state.and_then(|s| s.exit_code).unwrap_or_default(),
        state.and_then(|s| s.oom_killed).unwrap_or_default(),
        info.restart_count.unwrap_or_default(),
        state.and_then(|s| s.started_at.clone()).unwrap_or_default(),
    )
}
