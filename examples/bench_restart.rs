//! Restart benchmark: wall time from the webhook POST to the container being healthy again
//! after remediator restarts it, against a bare `docker restart` plus waiting for healthy on
//! the same container, interleaved in one run. Both sides poll health the same way (Docker
//! API inspect every 20 ms), so the difference is remediator's own overhead.
//!
//! `cargo run --release --example bench_restart -- [--rounds N]` (needs dockerd, docker-compose
//! and the test image: run `scripts/test-env.sh` first; `scripts/bench` does all of it).

mod bench_compose;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bench_compose::{compose_file, median, repo, run, state, wait_restarted_healthy, Cleanup};
use bollard::query_parameters::RestartContainerOptionsBuilder;
use bollard::Docker;

const GRACE_SECS: i32 = 2;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);
    let project = format!("rmbench{}", std::process::id());
    let work =
        std::env::temp_dir().join(format!("remediator-bench-restart-{}", std::process::id()));
    std::fs::create_dir_all(work.join("rules"))?;
    std::fs::copy(
        repo().join("rules/escalation.yaml"),
        work.join("rules/escalation.yaml"),
    )?;
    std::fs::write(
        work.join("rules/10-bench.yaml"),
        format!(
            "rules:\n  - name: bench-restart\n    matchers: ['alertname=\"BenchRestart\"']\n    priority: P2\n    rto: 15m\n    owner: infra\n    target: {{ service: redis }}\n    limit: {{ runs: 1000, per: 1h }}\n    steps:\n      - restart: {{ grace: {GRACE_SECS}s }}\n      - wait_healthy: {{ within: 1m }}\n"
        ),
    )?;
    let mut cleanup = Cleanup(Vec::new(), project.clone(), work.clone());
    run(Command::new("docker-compose")
        .arg("-f")
        .arg(compose_file())
        .args(["-p", &project, "up", "-d", "redis"]))?;

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let bin = repo().join("target/release/remediator");
    anyhow::ensure!(bin.exists(), "build it first: cargo build --release");
    cleanup.0.push(
        Command::new(bin)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(work.join("data"))
            .arg("--rules")
            .arg(work.join("rules"))
            .env("REMEDIATOR_DOCKER__PROJECT", &project)
            .env("REMEDIATOR_ENGINE__FLAPPING_FIRINGS", "100000")
            .env("REMEDIATOR_ENGINE__BUDGET_RUNS", "100000")
            // The container was created (compose up) just before: a deploy, which the deploy
            // guard would let finish first. What is measured is the restart path.
            .env("REMEDIATOR_DOCKER__DEPLOY_GRACE", "0s")
            .env("REMEDIATOR_LOG__LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let docker = Docker::connect_with_local_defaults()?
        .negotiate_version()
        .await?;
    let id = run(Command::new("docker").args([
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
        "--filter",
        "label=com.docker.compose.service=redis",
    ]))?
    .trim()
    .to_string();
    let client = reqwest::Client::new();
    let hook = format!("http://127.0.0.1:{port}/hooks/alertmanager");
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .get(format!("http://127.0.0.1:{port}/-/ready"))
        .send()
        .await
        .is_err()
    {
        anyhow::ensure!(Instant::now() < deadline, "remediator did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while !state(&docker, &id).await?.1 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (mut bare, mut via) = (Vec::new(), Vec::new());
    for round in 0..rounds + 1 {
        // bare docker restart + wait for healthy
        let before = state(&docker, &id).await?.0;
        let t = Instant::now();
        docker
            .restart_container(
                &id,
                Some(RestartContainerOptionsBuilder::new().t(GRACE_SECS).build()),
            )
            .await?;
        wait_restarted_healthy(&docker, &id, &before)
            .await
            .map_err(|e| anyhow::anyhow!("round {round}: bare docker restart: {e}"))?;
        let b = t.elapsed().as_secs_f64();

        // webhook → remediator → restart → healthy
        let before = state(&docker, &id).await?.0;
        let starts = chrono::Utc::now().to_rfc3339();
        let payload = |status: &str, ends: String| {
            serde_json::json!({
                "version": "4", "status": status, "receiver": "remediator", "groupKey": "{}:{}",
                "alerts": [{"status": status, "labels": {"alertname": "BenchRestart", "round": round.to_string()},
                            "startsAt": starts, "endsAt": ends}]
            })
        };
        let body = payload("firing", "0001-01-01T00:00:00Z".into());
        let t = Instant::now();
        let r = client.post(&hook).json(&body).send().await?;
        anyhow::ensure!(r.status().is_success(), "webhook answered {}", r.status());
        if let Err(e) = wait_restarted_healthy(&docker, &id, &before).await {
            let incidents = client
                .get(format!("http://127.0.0.1:{port}/api/v1/incidents?limit=1"))
                .send()
                .await?
                .text()
                .await?;
            let last: serde_json::Value = serde_json::from_str(&incidents)?;
            let detail = match last["incidents"][0]["id"].as_i64() {
                Some(n) => {
                    client
                        .get(format!("http://127.0.0.1:{port}/api/v1/incidents/{n}"))
                        .send()
                        .await?
                        .text()
                        .await?
                }
                None => incidents,
            };
            anyhow::bail!(
                "round {round}: the webhook path did not restart the container: {e}\n{detail}"
            );
        }
        let v = t.elapsed().as_secs_f64();
        // Let the runbook see the health itself and end before the next round (a second
        // runbook on a busy container is skipped by design).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v: serde_json::Value = client
                .get(format!("http://127.0.0.1:{port}/api/v1/incidents?limit=1"))
                .send()
                .await?
                .json()
                .await?;
            if v["incidents"][0]["phase"] != "remediating" {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "the runbook did not end");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The alert resolves, as it would once the service is back: the next round is a new
        // incident, not a repeat of an open one (which the dedup guard would absorb).
        client
            .post(&hook)
            .json(&payload("resolved", chrono::Utc::now().to_rfc3339()))
            .send()
            .await?;
        if round > 0 {
            // round 0 warms both paths up
            bare.push(b);
            via.push(v);
        }
        eprintln!("round {round}: bare {b:.3}s, via webhook {v:.3}s");
    }
    let (mb, mv) = (median(&mut bare), median(&mut via));
    let ratio = mv / mb;
    println!("| path | median seconds to healthy | rounds |");
    println!("|---|---|---|");
    println!(
        "| bare `docker restart -t {GRACE_SECS}` + wait healthy | {mb:.3} | {} |",
        bare.len()
    );
    println!(
        "| webhook POST → remediator restart → healthy | {mv:.3} | {} |",
        via.len()
    );
    println!();
    println!(
        "restart ratio (webhook / bare): {ratio:.3} (target ≤ 1.05): {}",
        if ratio <= 1.05 { "PASS" } else { "FAIL" }
    );
    drop(cleanup);
    Ok(())
}
