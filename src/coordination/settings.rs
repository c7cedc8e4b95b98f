//! The `redis`, `replica` and `coordination` sections of the configuration.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::domain::OnRedisDown;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    /// `redis://[:password@]host:port[/db]` (`REMEDIATOR_REDIS__URL`). Unset: one replica
    /// alone, nothing is coordinated. A secret: never logged, its password redacted in errors.
    pub url: Option<SecretString>,
    /// Put before every key, so several deployments (and tests) share one Redis
    /// (`REMEDIATOR_REDIS__KEY_PREFIX`).
    pub key_prefix: String,
    /// How long one Redis command may take before Redis counts as unreachable
    /// (`REMEDIATOR_REDIS__TIMEOUT`).
    #[serde(with = "crate::domain::duration::serde_text")]
    pub timeout: Duration,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            url: None,
            key_prefix: "remediator:".to_owned(),
            timeout: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicaSettings {
    /// This replica's name in the fleet, in every claim and decision
    /// (`REMEDIATOR_REPLICA__ID`); the host name by default. Each replica needs its own.
    pub id: String,
}

impl Default for ReplicaSettings {
    fn default() -> Self {
        ReplicaSettings { id: host_name() }
    }
}

/// The host name (Linux), else `$HOSTNAME`, else `remediator`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "remediator".to_owned())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoordinationSettings {
    /// A new firing while Redis cannot be asked: `page` (open, tell and page, act on
    /// nothing) or `act` (act as one replica alone) (`REMEDIATOR_COORDINATION__ON_REDIS_DOWN`).
    pub on_redis_down: OnRedisDown,
    /// A claim's (and a target lock's) expiry; renewed every third of it while its runbook
    /// runs. A replica that stops for longer is taken for gone: the others page a human
    /// (`REMEDIATOR_COORDINATION__CLAIM_TTL`).
    #[serde(with = "crate::domain::duration::serde_text")]
    pub claim_ttl: Duration,
    /// How long the "done by X" marker that replaces a finished claim is kept: longer than
    /// Alertmanager re-sends a firing (`REMEDIATOR_COORDINATION__DONE_TTL`).
    #[serde(with = "crate::domain::duration::serde_text")]
    pub done_ttl: Duration,
}

impl Default for CoordinationSettings {
    fn default() -> Self {
        CoordinationSettings {
            on_redis_down: OnRedisDown::Page,
            claim_ttl: Duration::from_secs(30),
            done_ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl CoordinationSettings {
    /// The problems of these sections, each naming its field.
    pub fn validate(&self, redis: &RedisSettings, replica: &ReplicaSettings) -> Result<(), String> {
        if let Some(url) = &redis.url {
            let url = url.expose_secret();
            if !(url.starts_with("redis://")
                || url.starts_with("rediss://")
                || url.starts_with("unix://")
                || url.starts_with("redis+unix://"))
            {
                return Err(format!(
                    "redis.url {:?} is not a Redis URL: write redis://host:6379 (with :password@ before the host if Redis needs one)",
                    super::redact(url)
                ));
            }
        }
        if replica.id.is_empty() || replica.id.contains(['|', ' ']) {
            return Err(format!(
                "replica.id {:?} must be a non-empty name without spaces or '|', unique in the fleet (the host name by default)",
                replica.id
            ));
        }
        if self.claim_ttl < Duration::from_secs(1) {
            return Err(
                "coordination.claim_ttl must be at least 1s (it is renewed every third of it)"
                    .into(),
            );
        }
        if self.done_ttl < self.claim_ttl {
            return Err("coordination.done_ttl must be at least coordination.claim_ttl".into());
        }
        Ok(())
    }
}
