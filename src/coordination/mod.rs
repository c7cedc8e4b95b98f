//! Fleet mode: several replicas receiving the same notifications agree through Redis on who
//! acts (CONTRACTS.md §6). The redis crate is named here (and in the probes of `actions`)
//! only; the engine sees the [`Coordinator`] trait it implements.
//!
//! Keys, each after `redis.key_prefix`:
//! - `claim:<fingerprint>:<startsAt ms>`: `claim|<replica>|<nonce>` while the winner decides
//!   and runs (`PX coordination.claim_ttl`, renewed), then `done|<replica>|<phase>`
//!   (`PX coordination.done_ttl`). Every change but the first `SET` is a script that compares
//!   the token first: a replica never overwrites or deletes another's claim.
//! - `busy:<target key>`: `busy|<replica>|<incident>|<claim token>` while that claim's runbook
//!   holds the container (`PX coordination.claim_ttl`, renewed and released with the claim).
//! - `limit:<store key>`: a GCRA limiter's `tat|runs|per` (ms, the server's clock), expiring
//!   once its TAT is past (no state then means the same as a TAT in the past).
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
use crate::engine::{Claim, Coordinator, Firing, Holder, Take, Taken, Unavailable, Won};
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

/// Extends a key's expiry if it still holds our token, and the target's lock (`KEYS[2]`,
/// value `ARGV[3]`, when given) with it.
const RENEW: &str = r#"
if ARGV[3] and redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// Replaces our claim by the done marker, if it is still ours, and deletes the target's
/// lock (`KEYS[2]`, value `ARGV[4]`, when given) if it is ours.
const DONE: &str = r#"
if ARGV[4] and redis.call('GET', KEYS[2]) == ARGV[4] then
  redis.call('DEL', KEYS[2])
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"#;

/// Compare-and-delete of the target's lock.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// The survivor's look at a claim it lost: the value; when there is none (the winner's
/// claim expired without its done marker), marks it taken for a crash by this replica in
/// the same step, so that of the survivors and the restarted winner exactly one pages.
const HOLDER: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return v
"#;

/// The restarted winner's crash recovery: our claim (`ARGV[3]` prefix) or none is replaced
/// by our done marker `interrupted` and we page (1); a marker already there means a
/// survivor took it for a crash and paged (0).
const RECOVERED: &str = r#"
local v = redis.call('GET', KEYS[1])
if (not v) or string.sub(v, 1, string.len(ARGV[3])) == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"#;

/// GCRA for every limiter of a run and the target's lock, all or none, on the server's
/// clock (CONTRACTS.md §6). `KEYS[1]` the target's lock, `KEYS[1+i]` limiter i; `ARGV[1]`
/// the lock's value ('' with no target), `ARGV[2]` its expiry (ms), `ARGV[3]` the prefix of
/// this replica's locks (an earlier process's lock is taken over), `ARGV[4]` the number of
/// limiters, then per limiter `runs`, `per` (ms) and this replica's floor (ms ahead, -1:
/// none). A limiter's state is `tat|runs|per` (ms); one stored under another quota is no
/// state (the limit restarts). The limiters are checked first, then the lock, as the guards
/// are ordered. Answers `{verdict, holder, ahead…}` with verdict held | limited | busy and
/// each limiter's TAT before the answer, in ms ahead of now.
const TAKE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = tonumber(ARGV[4])
local ahead, nxt, quota = {}, {}, {}
local limited = false
for i = 1, n do
  local runs = tonumber(ARGV[2 + 3 * i])
  local per = tonumber(ARGV[3 + 3 * i])
  local floor = tonumber(ARGV[4 + 3 * i])
  local tat = now
  local v = redis.call('GET', KEYS[1 + i])
  if v then
    local s_tat, s_runs, s_per = string.match(v, '^(%d+)|(%d+)|(%d+)$')
    if s_tat and tonumber(s_runs) == runs and tonumber(s_per) == per then
      tat = math.max(tat, tonumber(s_tat))
    end
  end
  if floor >= 0 then
    tat = math.max(tat, now + floor)
  end
  ahead[i] = string.format('%.0f', tat - now)
  if now < tat - (runs - 1) * per then
    limited = true
  end
  nxt[i] = tat + per
  quota[i] = string.format('%.0f|%.0f', runs, per)
end
local out = {'held', ''}
if limited then
  out[1] = 'limited'
elseif ARGV[1] ~= '' then
  local held = redis.call('GET', KEYS[1])
  if held and held ~= ARGV[1] and string.sub(held, 1, string.len(ARGV[3])) ~= ARGV[3] then
    out[1] = 'busy'
    out[2] = held
  end
end
if out[1] == 'held' then
  for i = 1, n do
    redis.call('SET', KEYS[1 + i], string.format("%.0f|", nxt[i]) .. quota[i], "PX", string.format("%.0f", nxt[i] - now + 1000))
  end
  if ARGV[1] ~= '' then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  end
end
for i = 1, n do
  out[2 + i] = ahead[i]
end
return out
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
    release: redis::Script,
    holder: redis::Script,
    recovered: redis::Script,
    take: redis::Script,
    probe: redis::Script,
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
                release: redis::Script::new(RELEASE),
                holder: redis::Script::new(HOLDER),
                recovered: redis::Script::new(RECOVERED),
                take: redis::Script::new(TAKE),
                probe: redis::Script::new("return 1"),
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

    fn busy_key(&self, target: &str) -> String {
        format!("{}busy:{target}", self.prefix)
    }

    /// The value of the target lock a claim's runbook holds: who, for which incident here,
    /// and the claim's token (unique).
    fn busy_value(&self, claim: &Won, incident: i64) -> String {
        format!("busy|{}|{incident}|{}", self.replica, claim.token)
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
        self.metrics.redis_command(what);
        let mut answer = inv.invoke_async::<T>(&mut conn).await;
        // The connection manager hands the error of a connection that broke (or of its last
        // failed reconnection, while Redis was down) to the next command, and only then
        // reconnects: once more on the new connection, so that the first firing after Redis
        // returns is coordinated. A timeout is not tried again.
        if matches!(&answer, Err(e) if !e.is_timeout() && (e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped()))
        {
            self.metrics.redis_command(what);
            answer = inv.invoke_async::<T>(&mut conn).await;
        }
        match answer {
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
                target: None,
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
        if let Some((target, incident)) = &claim.target {
            inv.key(self.busy_key(target))
                .arg(self.busy_value(claim, *incident));
        }
        let n: i64 = self.run(inv, "claim renewal").await?;
        Ok(n == 1)
    }

    async fn done(&self, claim: &Won, phase: Phase) -> Result<(), Unavailable> {
        let mut inv = self.scripts.done.key(self.claim_key(&claim.firing));
        inv.arg(&claim.token)
            .arg(format!("done|{}|{}", self.replica, phase.as_str()))
            .arg(Self::ms(self.done_ttl));
        if let Some((target, incident)) = &claim.target {
            inv.key(self.busy_key(target))
                .arg(self.busy_value(claim, *incident));
        }
        let _: i64 = self.run(inv, "done marker").await?;
        Ok(())
    }

    async fn holder(&self, firing: &Firing) -> Result<Holder, Unavailable> {
        let mut inv = self.scripts.holder.key(self.claim_key(firing));
        inv.arg(format!(
            "done|{}|{}",
            self.replica,
            Phase::Interrupted.as_str()
        ))
        .arg(Self::ms(self.done_ttl));
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

    async fn take(&self, claim: &Won, take: &Take) -> Result<Taken, Unavailable> {
        let busy_key = self.busy_key(take.target.as_deref().unwrap_or(""));
        let mut inv = self.scripts.take.key(busy_key);
        inv.arg(
            take.target
                .as_ref()
                .map(|_| self.busy_value(claim, take.incident))
                .unwrap_or_default(),
        )
        .arg(Self::ms(self.claim_ttl))
        .arg(format!("busy|{}|", self.replica))
        .arg(take.limits.len());
        for l in &take.limits {
            inv.key(format!("{}limit:{}", self.prefix, l.key));
            inv.arg(l.runs)
                .arg(Self::ms(l.per))
                .arg(l.local_ahead.map_or(-1, |d| d.as_millis() as i64));
        }
        let out: Vec<String> = self.run(inv, "limits and target lock").await?;
        let ahead = out
            .iter()
            .skip(2)
            .map(|a| Duration::from_millis(a.parse::<u64>().unwrap_or(0)))
            .collect();
        let taken = match out.first().map(String::as_str) {
            Some("held") => Taken::Held { ahead },
            Some("limited") => Taken::Limited { ahead },
            Some("busy") => {
                let mut parts = out[1].splitn(4, '|').skip(1);
                let replica = parts.next().unwrap_or("").to_owned();
                let incident = parts.next().and_then(|i| i.parse().ok()).unwrap_or(0);
                Taken::Busy {
                    replica,
                    incident,
                    ahead,
                }
            }
            other => {
                return Err(Unavailable(format!(
                    "Redis at {} answered the limits script with {other:?}",
                    self.shown
                )))
            }
        };
        self.metrics.take(match &taken {
            Taken::Held { .. } => "held",
            Taken::Limited { .. } => "limited",
            Taken::Busy { .. } => "busy",
        });
        Ok(taken)
    }

    async fn release(&self, claim: &Won) -> Result<(), Unavailable> {
        let Some((target, incident)) = &claim.target else {
            return Ok(());
        };
        let mut inv = self.scripts.release.key(self.busy_key(target));
        inv.arg(self.busy_value(claim, *incident));
        let _: i64 = self.run(inv, "target release").await?;
        Ok(())
    }

    async fn recovered(&self, firing: &Firing) -> Result<bool, Unavailable> {
        let mut inv = self.scripts.recovered.key(self.claim_key(firing));
        inv.arg(format!(
            "done|{}|{}",
            self.replica,
            Phase::Interrupted.as_str()
        ))
        .arg(Self::ms(self.done_ttl))
        .arg(self.own_prefix());
        let n: i64 = self.run(inv, "crash recovery").await?;
        Ok(n == 1)
    }

    async fn probe(&self) {
        if !self.up.load(Ordering::Relaxed) {
            let inv = self.scripts.probe.prepare_invoke();
            let _: Result<i64, _> = self.run(inv, "probe").await;
        }
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
