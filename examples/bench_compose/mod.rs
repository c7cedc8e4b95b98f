//! What the compose-stack benchmarks (bench_restart.rs, bench_drill.rs) share, written once:
//! the test stack, a command's output, the health wait both sides of a comparison use (Docker
//! API inspect every 20 ms, so the difference measured is remediator's own), the median, and
//! the cleanup that takes the stack down however the benchmark ends.
//!
//! Not an example of its own (Cargo builds `examples/*.rs` and `examples/*/main.rs`); each
//! benchmark includes it with `mod bench_compose;`.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use bollard::Docker;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The compose file of the test stack (tests/stack).
pub fn compose_file() -> PathBuf {
    repo().join("tests/stack/docker-compose.yml")
}

/// Runs `cmd` and returns its stdout; an error with its output when it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output()?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// The container's StartedAt and whether Docker reports it healthy.
pub async fn state(docker: &Docker, id: &str) -> anyhow::Result<(String, bool)> {
    let s = docker.inspect_container(id, None).await?.state;
    let started = s
        .as_ref()
        .and_then(|s| s.started_at.clone())
        .unwrap_or_default();
    let healthy = s
        .and_then(|s| s.health)
        .and_then(|h| h.status)
        .is_some_and(|s| s == bollard::models::HealthStatusEnum::HEALTHY);
    Ok((started, healthy))
}

/// Waits until the container has restarted (StartedAt changed from `before`) and is healthy.
pub async fn wait_restarted_healthy(docker: &Docker, id: &str, before: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (started, healthy) = state(docker, id).await?;
        if started != before && healthy {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "not healthy within 60s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// On drop: kills and reaps the children, takes the compose project down with its volumes,
/// removes the work directory.
pub struct Cleanup(pub Vec<Child>, pub String, pub PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("docker-compose")
            .arg("-f")
            .arg(compose_file())
            .args(["-p", &self.1, "down", "-v", "-t", "1"])
            .output();
        let _ = std::fs::remove_dir_all(&self.2);
    }
}
