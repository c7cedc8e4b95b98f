//! What the commands that ask the running service share (`incidents`, `pause`, `resume`,
//! `pauses`): one HTTP client with the service's base URL and `api.token`, answers read as
//! JSON, refusals told as the user needs them (the service's own `error: detail`, and what to
//! do about a missing token); and the plain aligned tables they print.

use std::io::{self, Write};
use std::time::Duration;

use anyhow::{bail, Context};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

/// The running service, as a client sees it.
pub struct Api {
    base: String,
    token: Option<SecretString>,
    client: reqwest::Client,
}

impl Api {
    /// `url` is the service's base URL (`http://127.0.0.1:9095`); `token` is sent as the
    /// bearer token.
    pub fn new(url: &str, token: Option<SecretString>) -> anyhow::Result<Api> {
        Ok(Api {
            base: url.trim_end_matches('/').to_string(),
            token,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .context("cannot build an HTTP client")?,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends `method path` (with `body` as JSON) and returns the answer's JSON; any answer
    /// but a success is an error with the service's `error` and `detail`.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let base = &self.base;
        let mut req = self.client.request(method, format!("{base}{path}"));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token.expose_secret());
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.with_context(|| {
            format!(
                "cannot reach remediator at {base}: is `remediator serve` running there? (--url)"
            )
        })?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .with_context(|| format!("{base} answered {status} without JSON: is it remediator?"))?;
        if !status.is_success() {
            let hint = if status == reqwest::StatusCode::UNAUTHORIZED {
                "; set api.token (REMEDIATOR_API__TOKEN) to the service's token"
            } else {
                ""
            };
            bail!(
                "{base} answered {status}: {}: {}{hint}",
                body["error"].as_str().unwrap_or("error"),
                body["detail"].as_str().unwrap_or("")
            );
        }
        Ok(body)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(reqwest::Method::GET, path, None).await
    }
}

/// `remediator incidents | head` is not an error.
pub fn broken_pipe_is_the_end(e: io::Error) -> anyhow::Result<i32> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok(0)
    } else {
        Err(anyhow::Error::new(e).context("cannot write to stdout"))
    }
}

/// One table row: cells padded to `widths`, two spaces apart, the last one as it is.
pub fn write_row(out: &mut dyn Write, widths: &[usize], cells: &[String]) -> io::Result<()> {
    let mut line = String::new();
    for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
        if i + 1 == cells.len() {
            line.push_str(cell);
        } else {
            line.push_str(&format!("{cell:<w$}  "));
        }
    }
    writeln!(out, "{}", line.trim_end())
}

/// A whole table: the header and the rows, each column as wide as its widest cell.
pub fn write_table<const N: usize>(
    out: &mut dyn Write,
    header: [&str; N],
    rows: &[[String; N]],
) -> io::Result<()> {
    let mut widths = header.map(|c| c.chars().count());
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    write_row(out, &widths, &header.map(String::from))?;
    for r in rows {
        write_row(out, &widths, r)?;
    }
    Ok(())
}

/// Text that came from outside (alert labels, a pause's reason): control characters (an
/// ANSI escape, a newline) are shown escaped, never sent to the terminal.
pub fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A stored time (RFC 3339) as `2026-11-25 22:07:00 UTC`; anything else as it is.
pub fn utc_text(v: &Value) -> String {
    match v.as_str() {
        None => "-".into(),
        Some(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| {
                t.with_timezone(&chrono::Utc)
                    .format("%Y-%m-%d %H:%M:%S UTC")
                    .to_string()
            })
            .unwrap_or_else(|_| printable(s)),
    }
}
