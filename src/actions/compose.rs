//! The two steps that do what the compose CLI does to whole services: `remove`
//! (`docker-compose stop S && docker-compose rm -v S`) and `up` (`docker-compose up -d`
//! in groups, each healthy before the next).
//!
//! `remove` goes through the Engine API: each container is stopped with its grace period and
//! removed, then its volumes are sorted out one by one, by their labels, not by what the
//! daemon's `rm -v` would guess: an anonymous volume (no `com.docker.compose.volume` label)
//! goes, a named volume of the project goes only when the step names it, any other volume
//! (another project's, an external one) is kept. A named volume the step names is removed
//! even when no container mounts it any more.
//!
//! `up` starts existing containers through the Engine API and creates only the missing ones
//! with the compose CLI, `docker.compose_bin -f docker.compose_file -p docker.project up -d
//! --no-deps S…`, an argv list run without a shell (the names are checked plain names). Only
//! services of the project, within `docker.allowed_services`, are ever named.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use bollard::query_parameters::{
    ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::Docker;
use tokio::time::Instant;

use super::daemon::Found;
use super::docker::{grace_or_default, health_of, DockerActions, PROJECT_LABEL};
use super::{truncate, DockerSettings};
use crate::engine::{StepError, StepOutput};
use crate::rules::{Dur, UP_WITHIN};

/// The label compose puts on the named volumes it creates (`volumes:` at the top level).
const VOLUME_LABEL: &str = "com.docker.compose.volume";
/// Output of the compose CLI kept in a step's record.
const EXCERPT: usize = 4096;

/// How the compose CLI is called: `docker.compose_bin`, `docker.compose_file`, and the
/// daemon remediator talks to (`docker.host`), so that both act on the same one.
pub(super) struct ComposeCli {
    bin: String,
    file: Option<PathBuf>,
    docker_host: Option<String>,
}

impl ComposeCli {
    pub(super) fn new(s: &DockerSettings) -> ComposeCli {
        ComposeCli {
            bin: s.compose_bin.clone(),
            file: s.compose_file.clone(),
            docker_host: s.host.clone(),
        }
    }

    /// `up -d --no-deps` of `services`, which have no container yet.
    async fn create(&self, project: &str, services: &[String]) -> Result<String, StepError> {
        let file = self.file.as_ref().ok_or_else(|| {
            StepError::Failed(format!(
                "{} ha{} no container, and only the compose file can create one: set docker.compose_file (REMEDIATOR_DOCKER__COMPOSE_FILE) to the project's docker-compose.yml",
                services.join(", "),
                if services.len() == 1 { "s" } else { "ve" }
            ))
        })?;
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.arg("-f")
            .arg(file)
            .args(["-p", project, "up", "-d", "--no-deps"])
            .args(services)
            .env("COMPOSE_INTERACTIVE_NO_CLI", "1")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(h) = &self.docker_host {
            cmd.env("DOCKER_HOST", h);
        }
        let shown = format!(
            "{} -f {} -p {project} up -d --no-deps {}",
            self.bin,
            file.display(),
            services.join(" ")
        );
        let out = cmd.output().await.map_err(|e| {
            StepError::Unavailable(format!(
                "`{shown}`: cannot run {:?} ({e}); install docker-compose or set docker.compose_bin",
                self.bin
            ))
        })?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(StepError::Failed(format!(
                "`{shown}` failed ({}):\n{}",
                out.status,
                truncate(text.trim(), EXCERPT)
            )))
        }
    }
}

/// `remove`: stop and remove each service's containers, with their anonymous volumes and the
/// named `volumes` of the project.
pub(super) async fn remove(
    actions: &DockerActions,
    services: &[String],
    volumes: &[String],
    grace: Option<Dur>,
) -> Result<StepOutput, StepError> {
    let docker = actions.docker().await;
    let project = actions.project()?.to_string();
    let t = grace_or_default(grace);
    let mut lines = Vec::new();
    let mut removed_volumes = Vec::new();
    for service in services {
        let containers = actions.list_service(&docker, service).await?;
        if containers.is_empty() {
            lines.push(format!("{service}: no container"));
        }
        for c in containers {
            let mounted = mounted_volumes(actions, &docker, &c).await?;
            // Our own change: its stop and destroy are no deploy for the deploy watch.
            let _change = actions.own().begin(&[&c.id], &[]);
            let stop = StopContainerOptionsBuilder::new()
                .t(t.as_secs() as i32)
                .build();
            docker
                .stop_container(&c.id, Some(stop))
                .await
                .map_err(|e| actions.err(&format!("stop {}", c.name), e))?;
            let rm = RemoveContainerOptionsBuilder::new()
                .force(false)
                .v(false)
                .build();
            docker
                .remove_container(&c.id, Some(rm))
                .await
                .map_err(|e| actions.err(&format!("remove {}", c.name), e))?;
            let mut kept = Vec::new();
            for name in mounted {
                let info = docker
                    .inspect_volume(&name)
                    .await
                    .map_err(|e| actions.err(&format!("inspect volume {name}"), e))?;
                let of_project =
                    info.labels.get(PROJECT_LABEL).map(String::as_str) == Some(project.as_str());
                let goes = match info.labels.get(VOLUME_LABEL) {
                    // Named by the compose file: only when the step names it.
                    Some(v) => of_project && volumes.contains(v),
                    // Anonymous: what `rm -v` is for. A named volume not made by compose
                    // (external, `docker volume create`) is kept.
                    None => is_anonymous(&name),
                };
                if goes {
                    remove_volume(actions, &docker, &name).await?;
                    removed_volumes.push(name);
                } else {
                    kept.push(name);
                }
            }
            let kept = if kept.is_empty() {
                String::new()
            } else {
                format!(", kept volume{} {}", plural(kept.len()), kept.join(", "))
            };
            lines.push(format!("{service}: stopped and removed {}{kept}", c.name));
        }
    }
    // The named volumes the step names, mounted or not (the container may be gone already).
    for v in volumes {
        let filters = HashMap::from([(
            "label",
            vec![
                format!("{PROJECT_LABEL}={project}"),
                format!("{VOLUME_LABEL}={v}"),
            ],
        )]);
        let list = docker
            .list_volumes(Some(
                ListVolumesOptionsBuilder::new().filters(&filters).build(),
            ))
            .await
            .map_err(|e| actions.err("list volumes", e))?;
        let found: Vec<String> = list
            .volumes
            .unwrap_or_default()
            .into_iter()
            .filter(|vol| {
                vol.labels.get(PROJECT_LABEL).map(String::as_str) == Some(project.as_str())
                    && vol.labels.get(VOLUME_LABEL) == Some(v)
            })
            .map(|vol| vol.name)
            .collect();
        if found.is_empty() && !removed_volumes.iter().any(|r| volume_is(r, &project, v)) {
            lines.push(format!(
                "volume {v}: none in project {project} (already removed?)"
            ));
        }
        for name in found {
            if !removed_volumes.contains(&name) {
                remove_volume(actions, &docker, &name).await?;
                removed_volumes.push(name);
            }
        }
    }
    let summary = match removed_volumes.len() {
        0 => format!("removed {}; no volume removed", services.join(", ")),
        n => format!(
            "removed {} with {n} volume{}",
            services.join(", "),
            plural(n)
        ),
    };
    let mut excerpt = lines.join("\n");
    if !removed_volumes.is_empty() {
        let _ = write!(excerpt, "\nremoved volumes: {}", removed_volumes.join(", "));
    }
    Ok(StepOutput { summary, excerpt })
}

/// The volumes a container mounts (`Type: volume`), by name.
async fn mounted_volumes(
    actions: &DockerActions,
    docker: &Docker,
    c: &Found,
) -> Result<Vec<String>, StepError> {
    let info = docker
        .inspect_container(&c.id, None)
        .await
        .map_err(|e| actions.err(&format!("inspect {}", c.name), e))?;
    Ok(info
        .mounts
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.typ.as_deref() == Some("volume"))
        .filter_map(|m| m.name)
        .collect())
}

async fn remove_volume(
    actions: &DockerActions,
    docker: &Docker,
    name: &str,
) -> Result<(), StepError> {
    docker
        .remove_volume(
            name,
            Some(RemoveVolumeOptionsBuilder::new().force(false).build()),
        )
        .await
        .map_err(|e| {
            actions.err(
                &format!(
                    "remove volume {name} (another container still using it? stop that one first)"
                ),
                e,
            )
        })
}

/// The daemon names an anonymous volume with 64 hex digits.
fn is_anonymous(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether the volume `name` is compose's `<project>_<volume>`.
fn volume_is(name: &str, project: &str, volume: &str) -> bool {
    name.strip_prefix(project)
        .and_then(|r| r.strip_prefix('_'))
        .is_some_and(|r| r == volume)
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `up`: the groups in order; in each, existing containers started, missing ones created by
/// the compose CLI, then all of the group's containers waited on (healthy, or running
/// without a healthcheck) within `within` before the next group.
pub(super) async fn up(
    actions: &DockerActions,
    cli: &ComposeCli,
    groups: &[Vec<String>],
    within: Option<Dur>,
) -> Result<StepOutput, StepError> {
    let docker = actions.docker().await;
    let project = actions.project()?.to_string();
    let within = within.map(|w| w.0).unwrap_or(UP_WITHIN);
    // Every name is checked before anything starts: a refusal touches nothing.
    for s in groups.iter().flatten() {
        actions.check_service(s)?;
    }
    let mut lines = Vec::new();
    let mut compose_output = String::new();
    for (i, group) in groups.iter().enumerate() {
        let began = Instant::now();
        let mut started = Vec::new();
        let mut missing = Vec::new();
        for service in group {
            let containers = actions.list_service(&docker, service).await?;
            if containers.is_empty() {
                missing.push(service.clone());
            }
            for c in containers {
                docker
                    .start_container(&c.id, None)
                    .await
                    .map_err(|e| actions.err(&format!("start {}", c.name), e))?;
                started.push(service.clone());
            }
        }
        started.dedup();
        // Compose's creates are our own change, no deploy for the deploy watch: known by the
        // names compose gives (v1 `<project>_<service>_1`, v2 `<project>-<service>-1`) while
        // it runs, then by the new ids.
        let names: Vec<String> = missing
            .iter()
            .flat_map(|s| [format!("{project}_{s}_1"), format!("{project}-{s}-1")])
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let change = actions.own().begin(&[], &names);
        if !missing.is_empty() {
            let out = cli.create(&project, &missing).await?;
            compose_output.push_str(&out);
        }
        let mut containers = Vec::new();
        for service in group {
            let found = actions.list_service(&docker, service).await?;
            if missing.contains(service) {
                for c in &found {
                    change.add_id(&c.id);
                }
            }
            if found.is_empty() {
                return Err(StepError::Failed(format!(
                    "group {} ({}): the compose CLI created no container of {service}",
                    i + 1,
                    group.join(", ")
                )));
            }
            containers.extend(found);
        }
        drop(change);
        let did = describe_group(&started, &missing);
        match wait_all(actions, &docker, &containers, within).await {
            Ok(()) => lines.push(format!(
                "group {} ({}): {did}; healthy after {:.1}s",
                i + 1,
                group.join(", "),
                began.elapsed().as_secs_f64()
            )),
            Err(state) => {
                lines.push(format!(
                    "group {} ({}): {did}; not healthy within {}: {state}",
                    i + 1,
                    group.join(", "),
                    humantime::format_duration(within)
                ));
                let later: Vec<String> = groups[i + 1..].iter().flatten().cloned().collect();
                if !later.is_empty() {
                    lines.push(format!("not brought up: {}", later.join(", ")));
                }
                return Err(StepError::Failed(lines.join("\n")));
            }
        }
    }
    let mut excerpt = lines.join("\n");
    if !compose_output.trim().is_empty() {
        let _ = write!(excerpt, "\n{}", truncate(compose_output.trim(), EXCERPT));
    }
    Ok(StepOutput {
        summary: format!(
            "brought up {} group{} in order: {}",
            groups.len(),
            plural(groups.len()),
            groups
                .iter()
                .map(|g| g.join(" "))
                .collect::<Vec<_>>()
                .join(" → ")
        ),
        excerpt,
    })
}

fn describe_group(started: &[String], created: &[String]) -> String {
    let mut parts = Vec::new();
    if !started.is_empty() {
        parts.push(format!("started {}", started.join(", ")));
    }
    if !created.is_empty() {
        parts.push(format!("created {}", created.join(", ")));
    }
    parts.join(", ")
}

/// Waits until every container is healthy (or running without a healthcheck); the last
/// state seen when `within` passes.
async fn wait_all(
    actions: &DockerActions,
    docker: &Docker,
    containers: &[Found],
    within: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        let mut all_ok = true;
        let mut states = Vec::new();
        for c in containers {
            match docker.inspect_container(&c.id, None).await {
                Ok(info) => {
                    let (ok, state) = health_of(&info);
                    all_ok &= ok;
                    states.push(format!("{}: {state}", c.name));
                }
                Err(e) => {
                    all_ok = false;
                    states.push(actions.err(&format!("inspect {}", c.name), e).to_string());
                }
            }
        }
        if all_ok {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(states.join("; "));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_volumes_are_the_daemons_hex_names() {
        assert!(is_anonymous(&"a1".repeat(32)));
        assert!(!is_anonymous("rmt1_redis-data"));
        assert!(!is_anonymous(&"g1".repeat(32)));
    }

    #[test]
    fn a_compose_volume_is_the_project_and_its_name() {
        assert!(volume_is("voiceai_redis-data", "voiceai", "redis-data"));
        assert!(!volume_is("voiceai_redis-data", "voiceai", "redis"));
        assert!(!volume_is("other_redis-data", "voiceai", "redis-data"));
    }

    #[test]
    fn a_group_says_what_was_started_and_what_created() {
        assert_eq!(
            describe_group(&["postgres".into()], &["redis".into()]),
            "started postgres, created redis"
        );
        assert_eq!(describe_group(&[], &["redis".into()]), "created redis");
    }
}
