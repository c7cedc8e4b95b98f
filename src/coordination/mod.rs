//! Fleet mode: several replicas receiving the same notifications agree through Redis on who
//! acts (CONTRACTS.md §6). The redis crate is named here (and in the probes of `actions`)
//! only; the engine sees the [`Coordinator`] trait it implements.
//!
//! Keys, each after `redis.key_prefix`:
//! - `claim:<fingerprint>:<startsAt ms>`: `claim|<replica>|<nonce>` while the winner decides
//!   and runs (`PX coordination.claim_ttl`, renewed), then `done|<replica>|<phase>`
//!   (`PX coordination.done_ttl`). Every change but the first `SET` is a script that compares
//!   the token first: a replica never overwrites or deletes another's claim.
//!
//! A claim is not a fence (a paused winner can outlive its lease): the start of a run is the
//! winner's fsynced run row, and a claim that expired without a done marker means "a human
//! takes over", never "run it again".

mod settings;

pub use settings::{CoordinationSettings, RedisSettings, ReplicaSettings};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret;

use crate::domain::{OnRedisDown, Phase};
use crate::engine::{Claim, Coordinator, Firing, Holder, Unavailable, Won};
use crate::metrics::Metrics;

/// Claims a key unless another replica holds it; a claim of our own replica's (an earlier
/// process, which committed nothing for it) is taken over. Returns the value in force.
const CLAIM: &str = r#"
local v = redis.call('GET', KEYS[1])
if (not v) or string.sub(v, 1, string.len(ARGV[3])) == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return v
"#;

/// Extends a key's expiry if it still holds our token.
const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// Replaces our claim by the done marker, if it is still ours.
const DONE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"#;

/// The URL with its password (if any) replaced by `***`, for logs and errors.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(u, _)| u);
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{path}")
            } else {
                format!("{scheme}://***@{host}{path}")
            }
        }
        None => url.to_owned(),
    }
}

/// The Redis [`Coordinator`]: one multiplexed connection that reconnects by itself.
pub struct RedisCoordinator {
    conn: ConnectionManager,
    prefix: String,
    replica: String,
    on_down: OnRedisDown,
    claim_ttl: Duration,
    done_ttl: Duration,
    /// Where it connects, password redacted.
    shown: String,
    /// The password, to take out of any error text.
    secret: Option<String>,
    nonce: AtomicU64,
    boot: u128,
    up: AtomicBool,
    down_since: Mutex<Option<(DateTime<Utc>, String)>>,
    metrics: Arc<Metrics>,
    scripts: Scripts,
}

struct Scripts {
    claim: redis::Script,
    renew: redis::Script,
    done: redis::Script,
}

impl RedisCoordinator {
    /// Builds the coordinator when `redis.url` is set; it connects lazily, so a Redis that is
    /// down delays neither startup nor readiness.
    pub fn new(
        redis: &RedisSettings,
        replica: &ReplicaSettings,
        coordination: &CoordinationSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Option<RedisCoordinator>, String> {
        let Some(url) = &redis.url else {
            return Ok(None);
        };
        let url = url.expose_secret();
        let shown = redact(url);
        let secret = url
            .split_once("://")
            .and_then(|(_, r)| r.split('/').next())
            .and_then(|a| a.rsplit_once('@'))
            .and_then(|(u, _)| u.split_once(':'))
            .map(|(_, p)| p.to_owned())
            .filter(|p| !p.is_empty());
        let client = redis::Client::open(url).map_err(|e| {
            format!(
                "redis.url {shown:?}: {}: write redis://host:6379",
                scrub(&e.to_string(), secret.as_deref())
            )
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(redis.timeout))
            .set_response_timeout(Some(redis.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(|e| {
            format!(
                "redis.url {shown:?}: {}",
                scrub(&e.to_string(), secret.as_deref())
            )
        })?;
        metrics.coordination_up.set(1);
        Ok(Some(RedisCoordinator {
            conn,
            prefix: redis.key_prefix.clone(),
            replica: replica.id.clone(),
            on_down: coordination.on_redis_down,
            claim_ttl: coordination.claim_ttl,
            done_ttl: coordination.done_ttl,
            shown,
            secret,
            nonce: AtomicU64::new(0),
            boot: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
            up: AtomicBool::new(true),
            down_since: Mutex::new(None),
            metrics,
            scripts: Scripts {
                claim: redis::Script::new(CLAIM),
                renew: redis::Script::new(RENEW),
                done: redis::Script::new(DONE),
            },
        }))
    }

    /// Where it connects, password redacted.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    fn claim_key(&self, f: &Firing) -> String {
        format!(
            "{}claim:{}:{}",
            self.prefix,
            f.fingerprint,
            f.starts_at.timestamp_millis()
        )
    }

    fn own_prefix(&self) -> String {
        format!("claim|{}|", self.replica)
    }

    fn ms(d: Duration) -> u64 {
        d.as_millis().max(1) as u64
    }

    /// Runs a script, turning a failure into [`Unavailable`] and keeping the state shown on
    /// `/-/ready` and in `/metrics`.
    async fn run<T: redis::FromRedisValue>(
        &self,
        inv: redis::ScriptInvocation<'_>,
        what: &str,
    ) -> Result<T, Unavailable> {
        let mut conn = self.conn.clone();
        match inv.invoke_async::<T>(&mut conn).await {
            Ok(v) => {
                if !self.up.swap(true, Ordering::Relaxed) {
                    *self.down_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    self.metrics.coordination_up.set(1);
                    tracing::info!(redis = %self.shown, "Redis answers again: coordinating with the fleet");
                }
                Ok(v)
            }
            Err(e) => {
                let text = format!(
                    "Redis at {} did not answer the {what}: {}",
                    self.shown,
                    scrub(&e.to_string(), self.secret.as_deref())
                );
                self.metrics.redis_error(what);
                if self.up.swap(false, Ordering::Relaxed) {
                    *self.down_since.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((Utc::now(), text.clone()));
                    self.metrics.coordination_up.set(0);
                    tracing::error!(error = %text, on_redis_down = %self.on_down, "Redis is unreachable: new firings follow coordination.on_redis_down; it reconnects by itself");
                }
                Err(Unavailable(text))
            }
        }
    }
}

/// `text` with `secret` taken out.
fn scrub(text: &str, secret: Option<&str>) -> String {
    match secret {
        Some(s) => text.replace(s, "***"),
        None => text.to_owned(),
    }
}

/// The replica named in a stored value (`claim|X|…`, `done|X|…`).
fn named(value: &str) -> (&str, &str, &str) {
    let mut parts = value.splitn(3, '|');
    (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    )
}

#[async_trait]
impl Coordinator for RedisCoordinator {
    fn replica(&self) -> &str {
        &self.replica
    }

    fn on_down(&self) -> OnRedisDown {
        self.on_down
    }

    async fn claim(&self, firing: &Firing) -> Result<Claim, Unavailable> {
        let n = self.nonce.fetch_add(1, Ordering::Relaxed);
        let token = format!("{}{:x}-{n}", self.own_prefix(), self.boot);
        let mut inv = self.scripts.claim.key(self.claim_key(firing));
        inv.arg(&token)
            .arg(Self::ms(self.claim_ttl))
            .arg(self.own_prefix());
        let held: String = self.run(inv, "claim").await?;
        if held == token {
            self.metrics.claim("won");
            return Ok(Claim::Won(Won {
                firing: firing.clone(),
                token,
            }));
        }
        self.metrics.claim("lost");
        Ok(Claim::Lost {
            by: named(&held).1.to_owned(),
        })
    }

    async fn renew(&self, claim: &Won) -> Result<bool, Unavailable> {
        let mut inv = self.scripts.renew.key(self.claim_key(&claim.firing));
        inv.arg(&claim.token).arg(Self::ms(self.claim_ttl));
        let n: i64 = self.run(inv, "claim renewal").await?;
        Ok(n == 1)
    }

    async fn done(&self, claim: &Won, phase: Phase) -> Result<(), Unavailable> {
        let mut inv = self.scripts.done.key(self.claim_key(&claim.firing));
        inv.arg(&claim.token)
            .arg(format!("done|{}|{}", self.replica, phase.as_str()))
            .arg(Self::ms(self.done_ttl));
        let _: i64 = self.run(inv, "done marker").await?;
        Ok(())
    }

    async fn holder(&self, firing: &Firing) -> Result<Holder, Unavailable> {
        // A GET as a script too, so that every Redis call goes through one path.
        let script = redis::Script::new("return redis.call('GET', KEYS[1])");
        let inv = script.key(self.claim_key(firing));
        let v: Option<String> = self.run(inv, "claim check").await?;
        Ok(match v.as_deref().map(named) {
            None => Holder::Gone,
            Some(("done", by, phase)) => Holder::Done {
                by: by.to_owned(),
                phase: phase.to_owned(),
            },
            Some((_, by, _)) => Holder::Running { by: by.to_owned() },
        })
    }

    fn renew_every(&self) -> Duration {
        self.claim_ttl / 3
    }

    fn status(&self) -> String {
        match &*self.down_since.lock().unwrap_or_else(|p| p.into_inner()) {
            None => format!(
                "coordinating as replica {} through Redis at {}",
                self.replica, self.shown
            ),
            Some((since, why)) => format!(
                "degraded since {}: {why}; new firings follow coordination.on_redis_down={}",
                since.format("%Y-%m-%d %H:%M:%S UTC"),
                self.on_down
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_shows_without_its_password() {
        assert_eq!(
            redact("redis://:s3cret@db:6379/0"),
            "redis://:***@db:6379/0"
        );
        assert_eq!(
            redact("redis://app:s3cret@db:6379"),
            "redis://app:***@db:6379"
        );
        assert_eq!(redact("redis://tok@db:6379"), "redis://***@db:6379");
        assert_eq!(redact("redis://db:6379/2"), "redis://db:6379/2");
        assert_eq!(
            scrub("auth s3cret failed", Some("s3cret")),
            "auth *** failed"
        );
    }

    #[test]
    fn a_stored_value_names_its_replica() {
        assert_eq!(named("claim|a|1f-3"), ("claim", "a", "1f-3"));
        assert_eq!(named("done|b|recovered"), ("done", "b", "recovered"));
    }
}
