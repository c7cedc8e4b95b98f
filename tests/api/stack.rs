//! A throwaway compose project from tests/stack/docker-compose.yml (busybox services named
//! like the DR plan's stack), removed with its volumes when dropped.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

pub struct Stack {
    pub project: String,
}

/// The test stack's compose file (`REMEDIATOR_TEST_COMPOSE_FILE`, else the repository's).
pub fn compose_file() -> String {
    std::env::var("REMEDIATOR_TEST_COMPOSE_FILE").unwrap_or_else(|_| {
        repo()
            .join("tests/stack/docker-compose.yml")
            .display()
            .to_string()
    })
}

fn docker() -> String {
    std::env::var("REMEDIATOR_TEST_DOCKER_BIN").unwrap_or_else(|_| "docker".into())
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}; run the tests through scripts/test"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

impl Stack {
    /// Brings up `services` of a fresh project and waits until they are healthy.
    pub fn up(services: &[&str]) -> Stack {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let project = format!("rmt{}x{}", std::process::id(), nanos % 1_000_000);
        let stack = Stack { project };
        run(stack.compose().args(["up", "-d"]).args(services));
        for s in services {
            stack.wait_healthy(s, Duration::from_secs(30));
        }
        stack
    }

    pub fn compose(&self) -> Command {
        let mut c = Command::new("docker-compose");
        c.args(["-f", &compose_file(), "-p", &self.project]);
        c.env("COMPOSE_INTERACTIVE_NO_CLI", "1");
        c
    }

    /// The container's id for a service (the project's only one).
    pub fn id(&self, service: &str) -> String {
        let out = run(Command::new(docker()).args([
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.project),
            "--filter",
            &format!("label=com.docker.compose.service={service}"),
        ]));
        let ids: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(ids.len(), 1, "{service}: {ids:?}");
        ids[0].to_string()
    }

    pub fn inspect(&self, service: &str) -> Value {
        let out = run(Command::new(docker()).args(["inspect", &self.id(service)]));
        let v: Value = serde_json::from_str(&out).unwrap();
        v[0].clone()
    }

    pub fn started_at(&self, service: &str) -> String {
        self.inspect(service)["State"]["StartedAt"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub fn exec(&self, service: &str, args: &[&str]) {
        run(Command::new(docker())
            .arg("exec")
            .arg(self.id(service))
            .args(args));
    }

    pub fn docker(&self, args: &[&str]) -> String {
        run(Command::new(docker()).args(args))
    }

    pub fn wait_healthy(&self, service: &str, within: Duration) {
        let start = Instant::now();
        loop {
            let v = self.inspect(service);
            if v["State"]["Health"]["Status"] == "healthy" {
                return;
            }
            assert!(
                start.elapsed() < within,
                "{service} not healthy: {}",
                v["State"]
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.compose().args(["down", "-v", "-t", "1"]).output();
    }
}
