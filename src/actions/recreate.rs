//! What `docker-compose up -d --force-recreate <service>` does, through the API, for Docker
//! 20.10 (API 1.41), following compose v2 (≥ 2.16) as CONTRACTS.md §3.4 lays out:
//!
//! 1. create the new container as `<old id[:12]>_<name>` from the old one's config, labels
//!    (including `com.docker.compose.config-hash`, copied verbatim), host config and
//!    anonymous volumes, on its primary network only (API < 1.44 takes one);
//! 2. connect the other networks, with their aliases (minus the old short id);
//! 3. stop the old container, remove it (volumes kept), rename the new one, start it.
//!
//! Each recreate is registered in [`OwnChanges`] before it starts, so that the deploy watch
//! does not take its events for a deploy.
//!
//! A failure before the old container is stopped leaves it untouched (the half-made new one
//! is removed). If the old one cannot be removed, the new one is removed and the old one
//! started again.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointSettings, Mount, MountType,
    NetworkConnectRequest, NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, RenameContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::Docker;

use super::daemon::{DaemonErrors, Found};
use super::own::OwnChanges;
use crate::engine::StepError;

/// Recreates one container; returns its name.
pub(super) async fn recreate(
    actions: &DaemonErrors<'_>,
    docker: &Docker,
    old: &Found,
    grace: Duration,
    own: &OwnChanges,
) -> Result<String, StepError> {
    let info = docker
        .inspect_container(&old.id, None)
        .await
        .map_err(|e| actions.err(&format!("inspect {}", old.name), e))?;
    let name = info
        .name
        .as_deref()
        .unwrap_or(&old.name)
        .trim_start_matches('/')
        .to_string();
    let short_id: String = old.id.chars().take(12).collect();
    let (body, other_networks) = create_body(&info, &short_id, &name);
    let tmp_name = format!("{short_id}_{name}");
    let change = own.begin(&[&old.id], &[&tmp_name]);

    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(&tmp_name).build()),
            body,
        )
        .await
        .map_err(|e| actions.err(&format!("create the replacement of {name}"), e))?;
    let new_id = created.id;
    change.add_id(&new_id);

    let remove_new = || async {
        let opts = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(false)
            .build();
        let _ = docker.remove_container(&new_id, Some(opts)).await;
    };

    for (network, endpoint) in other_networks {
        let req = NetworkConnectRequest {
            container: new_id.clone(),
            endpoint_config: Some(endpoint),
        };
        if let Err(e) = docker.connect_network(&network, req).await {
            remove_new().await;
            return Err(actions.err(
                &format!("connect the replacement of {name} to {network}"),
                e,
            ));
        }
    }

    let stop = StopContainerOptionsBuilder::new()
        .t(grace.as_secs() as i32)
        .build();
    if let Err(e) = docker.stop_container(&old.id, Some(stop)).await {
        remove_new().await;
        return Err(actions.err(&format!("stop {name}"), e));
    }
    // From here the old container is down: a failure tries to bring it back.
    let remove_old = RemoveContainerOptionsBuilder::new()
        .force(false)
        .v(false)
        .build();
    if let Err(e) = docker.remove_container(&old.id, Some(remove_old)).await {
        remove_new().await;
        let _ = docker.start_container(&old.id, None).await;
        return Err(actions.err(&format!("remove the old {name} (it was started again)"), e));
    }
    docker
        .rename_container(
            &new_id,
            RenameContainerOptionsBuilder::new().name(&name).build(),
        )
        .await
        .map_err(|e| actions.err(&format!("rename the replacement to {name}"), e))?;
    docker
        .start_container(&new_id, None)
        .await
        .map_err(|e| actions.err(&format!("start the new {name}"), e))?;
    Ok(name)
}

/// The create body (primary network only) and the other networks to connect before start.
fn create_body(
    info: &ContainerInspectResponse,
    short_id: &str,
    name: &str,
) -> (ContainerCreateBody, Vec<(String, EndpointSettings)>) {
    let config = info.config.clone().unwrap_or_default();
    let mut host = info.host_config.clone().unwrap_or_default();

    // Anonymous volumes are inherited by name, as compose does; bind mounts and named
    // volumes are already in HostConfig.Binds/Mounts.
    let bound: Vec<String> = host
        .binds
        .iter()
        .flatten()
        .filter_map(|b| b.split(':').nth(1).map(str::to_string))
        .chain(
            host.mounts
                .iter()
                .flatten()
                .filter_map(|m| m.target.clone()),
        )
        .collect();
    let inherited: Vec<Mount> = info
        .mounts
        .iter()
        .flatten()
        .filter(|m| m.typ.as_ref().map(|t| t.to_string()).as_deref() == Some("volume"))
        .filter(|m| m.destination.as_ref().is_some_and(|d| !bound.contains(d)))
        .filter_map(|m| {
            Some(Mount {
                typ: Some(MountType::VOLUME),
                source: Some(m.name.clone()?),
                target: Some(m.destination.clone()?),
                read_only: m.rw.map(|rw| !rw),
                ..Default::default()
            })
        })
        .collect();
    if !inherited.is_empty() {
        host.mounts.get_or_insert_with(Vec::new).extend(inherited);
    }

    let clean_aliases = |e: &EndpointSettings| -> EndpointSettings {
        EndpointSettings {
            aliases: e.aliases.as_ref().map(|a| {
                a.iter()
                    .filter(|x| x.as_str() != short_id && x.as_str() != name)
                    .cloned()
                    .collect()
            }),
            ipam_config: e.ipam_config.clone(),
            links: e.links.clone(),
            driver_opts: e.driver_opts.clone(),
            ..Default::default()
        }
    };
    let networks: HashMap<String, EndpointSettings> = info
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.clone())
        .unwrap_or_default();
    let primary = host.network_mode.clone().unwrap_or_default();
    let mut endpoints = HashMap::new();
    let mut others = Vec::new();
    for (net, e) in &networks {
        if *net == primary {
            endpoints.insert(net.clone(), clean_aliases(e));
        } else {
            others.push((net.clone(), clean_aliases(e)));
        }
    }
    others.sort_by(|a, b| a.0.cmp(&b.0));

    // The daemon generates a hostname from the id when none was configured.
    let hostname = config.hostname.clone().filter(|h| h != short_id);
    let body = ContainerCreateBody {
        hostname,
        domainname: config.domainname.clone(),
        user: config.user.clone(),
        attach_stdin: config.attach_stdin,
        attach_stdout: config.attach_stdout,
        attach_stderr: config.attach_stderr,
        exposed_ports: config.exposed_ports.clone(),
        tty: config.tty,
        open_stdin: config.open_stdin,
        stdin_once: config.stdin_once,
        env: config.env.clone(),
        cmd: config.cmd.clone(),
        healthcheck: config.healthcheck.clone(),
        args_escaped: config.args_escaped,
        image: config.image.clone(),
        volumes: config.volumes.clone(),
        working_dir: config.working_dir.clone(),
        entrypoint: config.entrypoint.clone(),
        network_disabled: config.network_disabled,
        on_build: config.on_build.clone(),
        labels: config.labels.clone(),
        stop_signal: config.stop_signal.clone(),
        stop_timeout: config.stop_timeout,
        shell: config.shell.clone(),
        host_config: Some(host),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(endpoints),
        }),
    };
    (body, others)
}
