//! The fleet history against a real PostgreSQL: two replicas shipping to one database, the
//! fleet list one row per incident identity, Postgres stopped mid-storm and started again
//! (every webhook still 200, the backlog visible, then the history complete and in order),
//! and the password never shown.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::helpers::*;

const API: &str = "fleet-api-token";

/// The shared server's URL (scripts/test-env.sh).
fn shared_url() -> String {
    std::env::var("REMEDIATOR_TEST_POSTGRES_URL")
        .expect("REMEDIATOR_TEST_POSTGRES_URL: run the tests through scripts/test (see README)")
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to the test Postgres: {e}"));
    tokio::spawn(conn);
    client
}

/// A database of this test's own on the shared server; its URL.
pub async fn own_database(name: &str) -> String {
    let db = format!(
        "fleet_{name}_{}_{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    );
    let admin = connect(&shared_url()).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    let base = shared_url();
    let (server, _) = base.rsplit_once('/').unwrap();
    format!("{server}/{db}")
}

fn fleet_env(url: &str, replica: &str) -> Vec<(String, String)> {
    vec![
        ("REMEDIATOR_WEBHOOK_TOKEN".into(), TOKEN.into()),
        ("REMEDIATOR_API__TOKEN".into(), API.into()),
        ("REMEDIATOR_POSTGRES__URL".into(), url.into()),
        ("REMEDIATOR_POSTGRES__TIMEOUT".into(), "2s".into()),
        ("REMEDIATOR_REPLICA__ID".into(), replica.into()),
    ]
}

async fn get(client: &reqwest::Client, base: &str, path: &str) -> (u16, Value) {
    let r = client
        .get(format!("{base}{path}"))
        .bearer_auth(API)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn post(client: &reqwest::Client, base: &str, body: String) -> u16 {
    post_hook_at(client, base, body).await
}

/// Every incident of the fleet list, page by page (`limit` small, to walk the cursor).
async fn fleet(client: &reqwest::Client, base: &str) -> Option<Vec<Value>> {
    let mut all = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let mut query = vec![("scope", "fleet".to_string()), ("limit", "7".to_string())];
        if let Some(b) = &before {
            query.push(("before", b.clone()));
        }
        let q = serde_urlencoded::to_string(&query).unwrap();
        let (status, page) = get(client, base, &format!("/api/v1/incidents?{q}")).await;
        if status != 200 {
            return None;
        }
        all.extend(page["incidents"].as_array()?.iter().cloned());
        match page["next"].as_str() {
            Some(n) => before = Some(n.to_owned()),
            None => return Some(all),
        }
    }
}

fn firing(name: &str, instance: usize, starts: chrono::DateTime<chrono::Utc>) -> String {
    alert_payload(
        json!({"alertname": name, "instance": format!("db-{instance}")}),
        starts,
        "firing",
    )
}

#[tokio::test]
async fn two_replicas_share_one_fleet_history_with_one_row_per_incident() {
    let url = own_database("two").await;
    let rules = rule_dir(&[]);
    let (data_a, data_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (env_a, env_b) = (fleet_env(&url, "replica-a"), fleet_env(&url, "replica-b"));
    let pairs_a: Vec<(&str, &str)> = env_a
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let pairs_b: Vec<(&str, &str)> = env_b
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let a = Served::start(data_a.path(), free_port(), Some(rules.path()), &pairs_a).await;
    let b = Served::start(data_b.path(), free_port(), Some(rules.path()), &pairs_b).await;
    let client = reqwest::Client::new();

    // Five firings delivered to both replicas (as an Alertmanager pair does), one to A only.
    let starts = chrono::Utc::now() - chrono::Duration::minutes(5);
    for i in 0..5 {
        let body = firing("FleetTwo", i, starts);
        assert_eq!(post(&client, &a.base, body.clone()).await, 200);
        assert_eq!(post(&client, &b.base, body).await, 200);
    }
    assert_eq!(
        post(&client, &a.base, firing("FleetTwo", 9, starts)).await,
        200
    );

    let rows = eventually(
        30,
        "the fleet list to hold every replica's incidents",
        || async {
            let rows = fleet(&client, &b.base).await?;
            let complete = rows.len() == 6
                && rows
                    .iter()
                    .map(|r| r["replicas"].as_array().map_or(0, Vec::len))
                    .sum::<usize>()
                    == 11;
            complete.then_some(rows)
        },
    )
    .await;
    let mut identities: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["fingerprint"].as_str().unwrap().to_owned(),
                r["starts_at"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    identities.sort();
    identities.dedup();
    assert_eq!(identities.len(), 6, "one row per identity: {rows:#?}");
    for r in &rows {
        let replicas: Vec<&str> = r["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["replica"].as_str().unwrap())
            .collect();
        let mut sorted = replicas.clone();
        sorted.sort();
        assert!(
            sorted == ["replica-a", "replica-b"] || sorted == ["replica-a"],
            "{r:#}"
        );
        assert_eq!(r["alertname"], "FleetTwo");
        assert_eq!(r["acted_by"], json!([]), "no rule matched: nobody acted");
    }
    assert_eq!(
        rows.iter()
            .filter(|r| r["replicas"].as_array().unwrap().len() == 1)
            .count(),
        1
    );
    // Both replicas list the same fleet.
    assert_eq!(fleet(&client, &a.base).await.unwrap(), rows);

    // The CLI reads it through the service too.
    let out = remediator(
        &["incidents", "--fleet", "--url", &a.base, "--output", "json"],
        &[("REMEDIATOR_API__TOKEN", API)],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["incidents"].as_array().unwrap().len(), 6);
    let out = remediator(
        &["incidents", "--fleet", "--url", &a.base],
        &[("REMEDIATOR_API__TOKEN", API)],
    )
    .await;
    let table = stdout(&out);
    assert!(table.starts_with("STARTED"), "{table}");
    assert!(table.contains("replica-a,replica-b"), "{table}");
}

/// A PostgreSQL server of the test's own, in a temporary directory, as the `postgres` user
/// (the server refuses root); stopped (fast shutdown) and started again on the same port.
struct OwnPostgres {
    dir: tempfile::TempDir,
    port: u16,
    server: Option<ChildGuard>,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn as_postgres(program: &Path) -> Command {
    let mut cmd;
    // Who we are, from `id -u` (no libc in the tests).
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if root {
        // setpriv execs the program itself, so the guard owns the server, not a wrapper.
        cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
    } else {
        cmd = Command::new(program);
    }
    cmd
}

impl OwnPostgres {
    fn init() -> OwnPostgres {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status();
        let initdb = PathBuf::from(PG_BIN).join("initdb");
        assert!(
            initdb.exists(),
            "{} missing: install postgresql",
            initdb.display()
        );
        let out = as_postgres(&initdb)
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8"])
            .current_dir("/")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = OwnPostgres {
            dir,
            port: free_port(),
            server: None,
        };
        pg.start();
        pg
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn start(&mut self) {
        let mut cmd = as_postgres(&PathBuf::from(PG_BIN).join("postgres"));
        cmd.arg("-D")
            .arg(self.dir.path().join("data"))
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
            ])
            .arg("-k")
            .arg(self.dir.path())
            .current_dir("/");
        self.server = Some(ChildGuard::spawn(&mut cmd, "postgres"));
    }

    async fn wait_up(&self) {
        let url = self.url();
        eventually(
            30,
            "the test's own Postgres to accept connections",
            || async {
                tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
    }

    /// Fast shutdown (SIGINT), waited for: the pid file goes once it is down.
    async fn stop(&mut self) {
        let server = self.server.as_mut().expect("running");
        let _ = Command::new("kill")
            .args(["-INT", &server.id().to_string()])
            .status();
        let pid = self.dir.path().join("data/postmaster.pid");
        eventually(30, "the test's own Postgres to stop", || async {
            (!pid.exists()).then_some(())
        })
        .await;
        if let Some(mut s) = self.server.take() {
            s.kill();
        }
    }
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn postgres_stopped_mid_storm_then_the_history_catches_up_complete_and_in_order() {
    let mut pg = OwnPostgres::init();
    pg.wait_up().await;
    let rules = rule_dir(&[]);
    let app = spawn_with(Spawn {
        env: fleet_env(&pg.url(), "storm-replica"),
        rules_dir: Some(rules.path().to_path_buf()),
    })
    .await;
    let client = reqwest::Client::new();
    let starts = chrono::Utc::now() - chrono::Duration::minutes(1);

    for i in 0..10 {
        assert_eq!(
            post(&client, &app.addr, firing("Storm", i, starts)).await,
            200
        );
    }
    eventually(30, "the first ten in the fleet history", || async {
        let rows = fleet(&client, &app.addr).await?;
        (rows.len() == 10).then_some(())
    })
    .await;

    pg.stop().await;
    // Every webhook still taken while Postgres is down, the repeats of the first too.
    for i in 10..30 {
        assert_eq!(
            post(&client, &app.addr, firing("Storm", i, starts)).await,
            200
        );
        assert_eq!(
            post(&client, &app.addr, firing("Storm", i - 10, starts)).await,
            200
        );
    }
    let ready = eventually(
        30,
        "the history to be reported unreachable, with a backlog",
        || async {
            let (status, ready) = get(&client, &app.addr, "/-/ready").await;
            assert_eq!(
                status, 200,
                "Postgres down never fails readiness: {ready:#}"
            );
            let h = &ready["checks"]["history"];
            (h["state"] == "unreachable" && h["backlog"].as_i64() > Some(0)).then_some(ready)
        },
    )
    .await;
    assert_eq!(ready["ready"], true);
    let backlog = eventually(30, "the backlog on /metrics", || async {
        let text = client
            .get(format!("{}/metrics", app.addr))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        metric(&text, "remediator_history_backlog").filter(|n| *n > 0.0)
    })
    .await;
    assert!(
        backlog >= 20.0,
        "20 incidents (and their decisions) wait: {backlog}"
    );
    let (status, refused) = get(&client, &app.addr, "/api/v1/incidents?scope=fleet").await;
    assert_eq!(status, 503, "{refused:#}");
    assert_eq!(refused["error"], "fleet history unavailable");
    // The local list is untouched by Postgres being down.
    assert_eq!(app.incidents().await.len(), 30);

    pg.start();
    pg.wait_up().await;
    eventually(60, "the history to catch up", || async {
        let (_, ready) = get(&client, &app.addr, "/-/ready").await;
        let h = &ready["checks"]["history"];
        (h["state"] == "caught_up" && h["backlog"] == 0).then_some(())
    })
    .await;

    // Postgres beside the replica's own store, row for row.
    let db = connect(&pg.url()).await;
    let local = app.incidents().await;
    let remote = db
        .query(
            "SELECT local_id, fingerprint, starts_at, state, phase FROM remediator.incidents
             WHERE replica_id = 'storm-replica' ORDER BY local_id",
            &[],
        )
        .await
        .unwrap();
    let remote_ids: Vec<i64> = remote.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        remote_ids,
        (1..=30).collect::<Vec<i64>>(),
        "no gap, no duplicate"
    );
    for row in &remote {
        let id: i64 = row.get(0);
        let inc = local
            .iter()
            .find(|i| i["id"] == id)
            .expect("a local incident");
        assert_eq!(inc["fingerprint"].as_str(), Some(row.get::<_, &str>(1)));
        assert_eq!(inc["starts_at"].as_str(), Some(row.get::<_, &str>(2)));
        assert_eq!(
            inc["phase"].as_str(),
            row.get::<_, Option<&str>>(4),
            "latest state"
        );
        let (_, detail) = get(&client, &app.addr, &format!("/api/v1/incidents/{id}")).await;
        for (table, key) in [("decisions", "decisions"), ("messages", "messages")] {
            let n: i64 = db
                .query_one(
                    &format!(
                        "SELECT count(*) FROM remediator.{table}
                         WHERE replica_id = 'storm-replica' AND incident_id = $1"
                    ),
                    &[&id],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(
                n as usize,
                detail[key].as_array().unwrap().len(),
                "{table} of incident {id}"
            );
        }
    }
    let version: i64 = db
        .query_one("SELECT max(version) FROM remediator.schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 1);
    assert_eq!(fleet(&client, &app.addr).await.unwrap().len(), 30);
}

#[tokio::test]
async fn the_postgres_password_is_never_shown_and_no_url_is_a_clear_refusal() {
    // No postgres.url: scope=fleet says what to configure.
    let plain = spawn_with(Spawn {
        env: vec![
            ("REMEDIATOR_WEBHOOK_TOKEN".into(), TOKEN.into()),
            ("REMEDIATOR_API__TOKEN".into(), API.into()),
        ],
        rules_dir: None,
    })
    .await;
    let (status, body) = plain.get_json("/api/v1/incidents?scope=fleet").await;
    assert_eq!(status, 400, "{body:#}");
    assert!(
        body["detail"].as_str().unwrap().contains("postgres.url"),
        "{body:#}"
    );
    let (status, body) = plain.get_json("/api/v1/incidents?scope=world").await;
    assert_eq!(status, 400, "{body:#}");
    let (_, ready) = plain.get_json("/-/ready").await;
    assert!(ready["checks"]["history"]
        .as_str()
        .unwrap()
        .contains("not configured"));

    // A server that refuses the password, and one that is not there at all.
    let secret = "hunter2-Pg-Secret";
    let shared = shared_url();
    let rest = shared.strip_prefix("postgres://").unwrap();
    let (_, host) = rest.split_once('@').unwrap();
    let wrong = format!("postgres://postgres:{secret}@{host}");
    let nowhere = format!("postgres://postgres:{secret}@127.0.0.1:{}/x", free_port());
    for (url, state) in [(wrong, "refused"), (nowhere, "unreachable")] {
        let app = spawn_with(Spawn {
            env: fleet_env(&url, "redacted"),
            rules_dir: None,
        })
        .await;
        let ready = eventually(30, "the history's failure on /-/ready", || async {
            let (status, ready) = app.get_json("/-/ready").await;
            assert_eq!(status, 200, "{ready:#}");
            (ready["checks"]["history"]["state"] == state).then_some(ready)
        })
        .await;
        let text = ready.to_string();
        assert!(!text.contains(secret), "{text}");
        assert!(
            ready["checks"]["history"]["target"]
                .as_str()
                .unwrap()
                .starts_with("postgres://postgres@"),
            "{ready:#}"
        );
        if state == "refused" {
            assert!(text.contains("password authentication failed"), "{text}");
        }
        let (status, body) = app.get_json("/api/v1/incidents?scope=fleet").await;
        assert_eq!(status, 503, "{body:#}");
        assert!(!body.to_string().contains(secret), "{body}");
    }
}
