//! Drill benchmark: `remediator drill single-service-failure --service redis --live` (the
//! shipped rule: logs, restart, wait_healthy) against the bare `docker-compose restart redis`
//! plus waiting for healthy, interleaved in one run on the test stack. Both sides are timed
//! from the command's start to the container healthy again: the drill side until the CLI
//! exits with its report (it polls the incident every 50 ms); its own reported total (the
//! incident's time to recover) is shown beside it.
//!
//! `cargo run --release --example bench_drill -- [--rounds N]` (needs dockerd, docker-compose
//! and the test image: run `scripts/test-env.sh` first; `scripts/bench --mode drill` does all
//! of it).

mod bench_compose;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bench_compose::{compose_file, median, repo, run, state, wait_restarted_healthy, Cleanup};
use bollard::Docker;

const API_TOKEN: &str = "bench-drill-token";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);
    let project = format!("rmdrill{}", std::process::id());
    let work = std::env::temp_dir().join(format!("remediator-bench-drill-{}", std::process::id()));
    std::fs::create_dir_all(work.join("rules"))?;
    std::fs::copy(
        repo().join("rules/escalation.yaml"),
        work.join("rules/escalation.yaml"),
    )?;
    // The shipped rule, with room for every round in its rate limit.
    let shipped = std::fs::read_to_string(repo().join("rules/90-single-service.yaml"))?;
    let rule = shipped.replace(
        "limit: { runs: 2, per: 1h }",
        "limit: { runs: 1000, per: 1h }",
    );
    anyhow::ensure!(
        rule != shipped,
        "the shipped rule's limit line changed: update the bench"
    );
    std::fs::write(work.join("rules/90-single-service.yaml"), rule)?;
    let mut cleanup = Cleanup(Vec::new(), project.clone(), work.clone());
    let compose = || {
        let mut c = Command::new("docker-compose");
        c.arg("-f").arg(compose_file()).args(["-p", &project]);
        c
    };
    run(compose().args(["up", "-d", "redis"]))?;

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let bin = repo().join("target/release/remediator");
    anyhow::ensure!(bin.exists(), "build it first: cargo build --release");
    cleanup.0.push(
        Command::new(&bin)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(work.join("data"))
            .arg("--rules")
            .arg(work.join("rules"))
            .env("REMEDIATOR_API__TOKEN", API_TOKEN)
            .env("REMEDIATOR_DOCKER__PROJECT", &project)
            // Every round is the same synthetic alert: not flapping, within the budget.
            .env("REMEDIATOR_ENGINE__FLAPPING_FIRINGS", "100000")
            .env("REMEDIATOR_ENGINE__BUDGET_RUNS", "100000")
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
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{url}/-/ready")).send().await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "remediator did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while !state(&docker, &id).await?.1 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (mut bare, mut drill, mut reported) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds + 1 {
        // bare docker-compose restart + wait for healthy
        let before = state(&docker, &id).await?.0;
        let t = Instant::now();
        run(compose().args(["restart", "-t", "10", "redis"]))?;
        wait_restarted_healthy(&docker, &id, &before)
            .await
            .map_err(|e| anyhow::anyhow!("round {round}: bare docker-compose restart: {e}"))?;
        let b = t.elapsed().as_secs_f64();

        // remediator drill --live: the runbook restarts redis and waits for it
        let before = state(&docker, &id).await?.0;
        let report = work.join(format!("drill-{round}.md"));
        let t = Instant::now();
        let out = tokio::process::Command::new(&bin)
            .args([
                "drill",
                "single-service-failure",
                "--service",
                "redis",
                "--live",
            ])
            .args(["--url", &url, "--by", "bench", "--report"])
            .arg(&report)
            .env("REMEDIATOR_API__TOKEN", API_TOKEN)
            .output()
            .await?;
        let d = t.elapsed().as_secs_f64();
        let text = std::fs::read_to_string(&report).unwrap_or_default();
        anyhow::ensure!(
            out.status.success(),
            "round {round}: the drill failed: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (started, healthy) = state(&docker, &id).await?;
        anyhow::ensure!(
            started != before && healthy,
            "round {round}: the drill passed but redis was not restarted and healthy\n{text}"
        );
        let incident: serde_json::Value = client
            .get(format!("{url}/api/v1/incidents?limit=1"))
            .bearer_auth(API_TOKEN)
            .send()
            .await?
            .json()
            .await?;
        let total = incident["incidents"][0]["time_to_recover_seconds"]
            .as_f64()
            .unwrap_or(f64::NAN);
        if round > 0 {
            // round 0 warms both paths up
            bare.push(b);
            drill.push(d);
            reported.push(total);
        }
        eprintln!("round {round}: bare {b:.3}s, drill {d:.3}s (its reported total {total:.3}s)");
    }
    let (mb, md, mr) = (median(&mut bare), median(&mut drill), median(&mut reported));
    let ratio = md / mb;
    println!("| path | median seconds to healthy | rounds |");
    println!("|---|---|---|");
    println!(
        "| bare `docker-compose restart -t 10 redis` + wait healthy | {mb:.3} | {} |",
        bare.len()
    );
    println!(
        "| `remediator drill single-service-failure --live` until its report | {md:.3} | {} |",
        drill.len()
    );
    println!(
        "| (the drill's own total: the incident's time to recover) | {mr:.3} | {} |",
        reported.len()
    );
    println!();
    println!(
        "drill ratio (drill / bare): {ratio:.3} (target ≤ 1.05): {}",
        if ratio <= 1.05 { "PASS" } else { "FAIL" }
    );
    drop(cleanup);
    Ok(())
}
