//! Service probes: HTTP status, PostgreSQL `SELECT 1`, Redis `PING`.

use std::time::Duration;

use crate::engine::{StepError, StepOutput};

pub(super) async fn check_http(url: &str, expect: u16) -> Result<StepOutput, StepError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| {
            StepError::Unavailable(format!("check_http: cannot build an HTTP client: {e}"))
        })?;
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| StepError::Failed(format!("check_http {url}: no answer: {e}")))?;
    let got = resp.status().as_u16();
    if got == expect {
        Ok(StepOutput::new(format!("{url} answered {got}")))
    } else {
        Err(StepError::Failed(format!(
            "{url} answered {got}, expected {expect}"
        )))
    }
}

pub(super) async fn check_postgres(
    dsn: &str,
    password_env: Option<&str>,
) -> Result<StepOutput, StepError> {
    let mut config: tokio_postgres::Config = dsn
        .parse()
        .map_err(|e| StepError::Failed(format!("check_postgres: the dsn does not parse: {e}")))?;
    if let Some(var) = password_env {
        let pw = std::env::var(var).map_err(|_| {
            StepError::Failed(format!(
                "check_postgres: environment variable {var} (password_env) is not set"
            ))
        })?;
        config.password(pw);
    }
    config.connect_timeout(Duration::from_secs(5));
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| StepError::Failed(format!("check_postgres: cannot connect: {e}")))?;
    let conn = tokio::spawn(connection);
    let row = client
        .query_one("SELECT 1", &[])
        .await
        .map_err(|e| StepError::Failed(format!("check_postgres: SELECT 1 failed: {e}")));
    drop(client);
    let _ = conn.await;
    let one: i32 = row?.get(0);
    Ok(StepOutput::new(format!("SELECT 1 returned {one}")))
}

pub(super) async fn check_redis(url: &str) -> Result<StepOutput, StepError> {
    let client = redis::Client::open(url)
        .map_err(|e| StepError::Failed(format!("check_redis: the url does not parse: {e}")))?;
    let mut conn = tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| StepError::Failed("check_redis: connecting timed out after 5s".into()))?
    .map_err(|e| StepError::Failed(format!("check_redis: cannot connect: {e}")))?;
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(|e| StepError::Failed(format!("check_redis: PING failed: {e}")))?;
    if pong == "PONG" {
        Ok(StepOutput::new("PING answered PONG"))
    } else {
        Err(StepError::Failed(format!(
            "check_redis: PING answered {pong:?}"
        )))
    }
}
