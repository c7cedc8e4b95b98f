//! Configuration: defaults, then a YAML file (`--config FILE`), then environment variables
//! `REMEDIATOR_<SECTION>__<KEY>` (and the shorthand `REMEDIATOR_WEBHOOK_TOKEN`), then the
//! command line. Secrets are `SecretString`s: they print as `[REDACTED]` and are never logged.

use figment::providers::Format;
use figment::Figment;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::actions::DockerSettings;
use crate::alertmanager::AlertmanagerSettings;
use crate::coordination::{CoordinationSettings, RedisSettings, ReplicaSettings};
use crate::engine::GuardSettings;
use crate::history::PostgresSettings;
use crate::notify::{PagerDutySettings, SlackSettings};

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where the embedded store lives.
    pub data_dir: PathBuf,
    /// The rule directory.
    pub rules_dir: PathBuf,
    pub webhook: WebhookSettings,
    pub api: ApiSettings,
    pub engine: GuardSettings,
    pub docker: DockerSettings,
    pub slack: SlackSettings,
    pub pagerduty: PagerDutySettings,
    pub alertmanager: AlertmanagerSettings,
    pub log: LogSettings,
    /// The fleet history (`postgres.url`); unset: none.
    pub postgres: PostgresSettings,
    pub replica: ReplicaSettings,
    /// Fleet mode (`redis.url`): several replicas agree through Redis on who acts.
    pub redis: RedisSettings,
    pub coordination: CoordinationSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 9095)),
            data_dir: PathBuf::from("data"),
            rules_dir: PathBuf::from("rules"),
            webhook: WebhookSettings::default(),
            api: ApiSettings::default(),
            engine: GuardSettings::default(),
            docker: DockerSettings::default(),
            slack: SlackSettings::default(),
            pagerduty: PagerDutySettings::default(),
            alertmanager: AlertmanagerSettings::default(),
            log: LogSettings::default(),
            postgres: PostgresSettings::default(),
            replica: ReplicaSettings::default(),
            redis: RedisSettings::default(),
            coordination: CoordinationSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// When set, `/hooks/alertmanager` requires `Authorization: Bearer <token>`.
    pub token: Option<SecretString>,
    /// When set (with `basic_password`), basic auth is accepted as well.
    pub basic_user: Option<String>,
    pub basic_password: Option<SecretString>,
    /// Bodies above this many bytes are refused with 413.
    pub max_body_bytes: usize,
    /// Stored webhook bodies older than this are deleted once applied (incidents, decisions
    /// and steps are kept).
    #[serde(with = "crate::domain::duration::serde_text")]
    pub retention: std::time::Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            token: None,
            basic_user: None,
            basic_password: None,
            max_body_bytes: 1024 * 1024,
            retention: std::time::Duration::from_secs(30 * 24 * 3600),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    /// When set, `/api/v1/*` and `/-/reload` require `Authorization: Bearer <token>`.
    pub token: Option<SecretString>,
    /// The service's base URL as people reach it (`https://remediator.example:9095`,
    /// `REMEDIATOR_API__PUBLIC_URL`): the Slack root links to the incident there. Unset: no
    /// link.
    pub public_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `json` (default) or `text`.
    pub format: String,
    /// A tracing filter such as `info` or `remediator=debug`; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: "json".into(),
            level: "info".into(),
        }
    }
}

/// YAML through the same parser as the rules.
struct Yaml;

impl Format for Yaml {
    type Error = serde_saphyr::Error;
    const NAME: &'static str = "YAML";

    fn from_str<T: serde::de::DeserializeOwned>(string: &str) -> Result<T, Self::Error> {
        serde_saphyr::from_str(string)
    }
}

/// Command-line values that win over everything else.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub rules_dir: Option<PathBuf>,
}

impl Settings {
    /// Loads the layers in order. Environment variables are read from `env` (the process's
    /// environment in production, a fixed list in tests).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &Overrides,
    ) -> Result<Settings, SettingsError> {
        let mut fig = Figment::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            fig = fig.merge(Yaml::string(&text));
        }
        // Env values are kept as strings: a token like `12345` must stay text.
        let env: Vec<(String, String)> = env
            .into_iter()
            .filter_map(|(k, v)| {
                let key = k.strip_prefix("REMEDIATOR_")?.to_ascii_lowercase();
                if key.starts_with("test_") || key.is_empty() {
                    return None;
                }
                let key = if key == "webhook_token" {
                    "webhook.token".to_string()
                } else {
                    key.replace("__", ".")
                };
                Some((key, v))
            })
            .collect();
        for (key, value) in env {
            fig = fig.merge(figment::providers::Serialized::default(
                &key,
                env_value(&key, value),
            ));
        }
        let mut s: Settings = fig
            .extract()
            .map_err(|e| SettingsError::Invalid(e.to_string()))?;
        if let Some(l) = overrides.listen {
            s.listen = l;
        }
        if let Some(d) = &overrides.data_dir {
            s.data_dir = d.clone();
        }
        if let Some(r) = &overrides.rules_dir {
            s.rules_dir = r.clone();
        }
        if let Some(url) = &s.api.public_url {
            let url = url.trim();
            let rest = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"));
            if !rest.is_some_and(|r| !r.is_empty() && !r.contains(char::is_whitespace)) {
                return Err(SettingsError::Invalid(format!(
                    "api.public_url {url:?} is not an http(s) URL: use the base people reach the service at, e.g. https://remediator.example:9095"
                )));
            }
            s.api.public_url = Some(url.trim_end_matches('/').to_owned());
        }
        if s.webhook.basic_user.is_some() != s.webhook.basic_password.is_some() {
            return Err(SettingsError::Invalid(
                "webhook.basic_user and webhook.basic_password go together; set both or neither"
                    .into(),
            ));
        }
        s.alertmanager.validate().map_err(SettingsError::Invalid)?;
        s.replica.id = s.replica.id.trim().to_owned();
        if s.replica.id.is_empty() || s.replica.id.contains(char::is_whitespace) {
            return Err(SettingsError::Invalid(format!(
                "replica.id {:?} must be a name without spaces, unique in the fleet (REMEDIATOR_REPLICA__ID)",
                s.replica.id
            )));
        }
        if s.postgres.batch == 0 {
            return Err(SettingsError::Invalid(
                "postgres.batch must be at least 1 (journal changes per shipped batch)".into(),
            ));
        }
        s.coordination
            .validate(&s.redis, &s.replica)
            .map_err(SettingsError::Invalid)?;
        Ok(s)
    }
}

/// Booleans and numbers in the environment become YAML-like values; secrets and other keys
/// known to be text stay strings.
fn env_value(key: &str, v: String) -> figment::value::Value {
    use figment::value::Value;
    let text_keys = [
        "token",
        "password",
        "secret",
        "user",
        "dir",
        "listen",
        "format",
        "level",
        ".id",
        "url",
        "file",
        "replica.id",
        "key_prefix",
    ];
    if text_keys.iter().any(|t| key.ends_with(t)) {
        return Value::from(v);
    }
    if let Some(list) = v.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
        let items: Vec<Value> = list
            .split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .map(|i| Value::from(i.trim_matches('"').to_string()))
            .collect();
        return Value::from(items);
    }
    match v.as_str() {
        "true" => Value::from(true),
        "false" => Value::from(false),
        _ => v
            .parse::<u64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::from(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn fleet_settings_from_the_environment_with_a_password_that_is_never_shown() {
        let s = Settings::load(None, vec![], &Overrides::default()).unwrap();
        assert!(s.redis.url.is_none(), "no Redis: one replica alone");
        assert_eq!(s.redis.key_prefix, "remediator:");
        assert_eq!(
            s.coordination.on_redis_down,
            crate::domain::OnRedisDown::Page
        );
        assert!(!s.replica.id.is_empty(), "the host name by default");
        let s = Settings::load(
            None,
            env(&[
                ("REMEDIATOR_REDIS__URL", "redis://:hunter2@127.0.0.1:6380/1"),
                ("REMEDIATOR_REDIS__KEY_PREFIX", "prod:"),
                ("REMEDIATOR_REPLICA__ID", "7"),
                ("REMEDIATOR_COORDINATION__ON_REDIS_DOWN", "act"),
                ("REMEDIATOR_COORDINATION__CLAIM_TTL", "9s"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(
            s.redis
                .url
                .as_ref()
                .map(|u| u.expose_secret().to_owned())
                .as_deref(),
            Some("redis://:hunter2@127.0.0.1:6380/1")
        );
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(s.redis.key_prefix, "prod:");
        assert_eq!(s.replica.id, "7");
        assert_eq!(
            s.coordination.on_redis_down,
            crate::domain::OnRedisDown::Act
        );
        assert_eq!(s.coordination.claim_ttl, std::time::Duration::from_secs(9));
        let bad = |pairs: &[(&str, &str)]| {
            Settings::load(None, env(pairs), &Overrides::default())
                .unwrap_err()
                .to_string()
        };
        let e = bad(&[("REMEDIATOR_REDIS__URL", "http://:hunter2@db:6379")]);
        assert!(e.contains("redis.url") && !e.contains("hunter2"), "{e}");
        let e = bad(&[("REMEDIATOR_COORDINATION__ON_REDIS_DOWN", "maybe")]);
        assert!(e.contains("on_redis_down") && e.contains("page"), "{e}");
        let e = bad(&[("REMEDIATOR_REPLICA__ID", "a b")]);
        assert!(e.contains("replica.id"), "{e}");
    }

    #[test]
    fn defaults_need_no_configuration() {
        let s = Settings::load(None, vec![], &Overrides::default()).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:9095");
        assert_eq!(s.rules_dir, PathBuf::from("rules"));
        assert!(s.webhook.token.is_none());
        assert_eq!(s.webhook.max_body_bytes, 1024 * 1024);
        assert_eq!(
            s.webhook.retention,
            std::time::Duration::from_secs(30 * 86400)
        );
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(&file, "listen: 127.0.0.1:1000\ndata_dir: /from/file\nengine:\n  budget_runs: 5\n  budget_per: 5m\n").unwrap();
        let s = Settings::load(
            Some(&file),
            env(&[
                ("REMEDIATOR_DATA_DIR", "/from/env"),
                ("REMEDIATOR_WEBHOOK_TOKEN", "12345"),
                ("REMEDIATOR_WEBHOOK__RETENTION", "7d"),
                ("REMEDIATOR_ENGINE__DRY_RUN", "true"),
                ("REMEDIATOR_DOCKER__ALLOWED_SERVICES", "[redis, backend]"),
                ("REMEDIATOR_DOCKER__PROJECT", "voiceai"),
                ("REMEDIATOR_TEST_POSTGRES_URL", "ignored"),
                ("OTHER", "ignored"),
            ]),
            &Overrides {
                listen: Some("127.0.0.1:2000".parse().unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:2000");
        assert_eq!(s.data_dir, PathBuf::from("/from/env"));
        assert_eq!(s.webhook.token.as_ref().unwrap().expose_secret(), "12345");
        assert!(s.engine.dry_run);
        assert_eq!(s.docker.allowed_services, ["redis", "backend"]);
        assert_eq!(s.docker.project.as_deref(), Some("voiceai"));
        assert_eq!(s.engine.budget_runs, 5);
        assert_eq!(
            s.webhook.retention,
            std::time::Duration::from_secs(7 * 86400)
        );
        assert_eq!(s.engine.budget_per, std::time::Duration::from_secs(300));
        assert!(!format!("{s:?}").contains("12345"), "secrets never print");
    }

    #[test]
    fn alertmanager_peers_auth_and_policy_from_the_file_and_the_environment() {
        let s = Settings::load(None, vec![], &Overrides::default()).unwrap();
        assert!(
            s.alertmanager.urls.is_empty(),
            "not asked unless configured"
        );
        assert_eq!(s.alertmanager.timeout, std::time::Duration::from_secs(2));
        assert_eq!(
            s.alertmanager.on_unreachable,
            crate::domain::OnUnreachable::Go
        );

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(
            &file,
            "alertmanager:\n  urls: [http://am1:9093, http://am2:9093]\n  timeout: 500ms\n  on_unreachable: stop\n",
        )
        .unwrap();
        let s = Settings::load(Some(&file), vec![], &Overrides::default()).unwrap();
        assert_eq!(s.alertmanager.urls, ["http://am1:9093", "http://am2:9093"]);
        assert_eq!(
            s.alertmanager.timeout,
            std::time::Duration::from_millis(500)
        );
        assert_eq!(
            s.alertmanager.on_unreachable,
            crate::domain::OnUnreachable::Stop
        );

        let s = Settings::load(
            Some(&file),
            env(&[
                (
                    "REMEDIATOR_ALERTMANAGER__URLS",
                    "http://a:9093, http://b:9093",
                ),
                ("REMEDIATOR_ALERTMANAGER__ON_UNREACHABLE", "go"),
                ("REMEDIATOR_ALERTMANAGER__BASIC_USER", "remediator"),
                ("REMEDIATOR_ALERTMANAGER__BASIC_PASSWORD", "12345"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(s.alertmanager.urls, ["http://a:9093", "http://b:9093"]);
        assert_eq!(
            s.alertmanager.on_unreachable,
            crate::domain::OnUnreachable::Go
        );
        assert_eq!(
            s.alertmanager
                .basic_password
                .as_ref()
                .unwrap()
                .expose_secret(),
            "12345"
        );
        assert!(!format!("{s:?}").contains("12345"), "secrets never print");
        let s = Settings::load(
            None,
            env(&[
                ("REMEDIATOR_ALERTMANAGER__URLS", "[http://a:9093]"),
                ("REMEDIATOR_ALERTMANAGER__TOKEN", "777"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(s.alertmanager.urls, ["http://a:9093"]);
        assert_eq!(
            s.alertmanager.token.as_ref().unwrap().expose_secret(),
            "777"
        );
    }

    #[test]
    fn bad_alertmanager_settings_are_refused_naming_the_field() {
        for (vars, want) in [
            (
                vec![("REMEDIATOR_ALERTMANAGER__URLS", "http://a:9093,am2:9093")],
                "alertmanager.urls[1]: \"am2:9093\" must be http:// or https://",
            ),
            (
                vec![("REMEDIATOR_ALERTMANAGER__ON_UNREACHABLE", "maybe")],
                "\"maybe\" is not a value of alertmanager.on_unreachable (expected one of: go stop )",
            ),
            (
                vec![("REMEDIATOR_ALERTMANAGER__TIMEOUT", "0s")],
                "`0s` must be longer than zero",
            ),
            (
                vec![
                    ("REMEDIATOR_ALERTMANAGER__URLS", "http://a:9093"),
                    ("REMEDIATOR_ALERTMANAGER__BASIC_USER", "u"),
                ],
                "alertmanager.basic_user and alertmanager.basic_password go together",
            ),
        ] {
            let e = Settings::load(None, env(&vars), &Overrides::default()).unwrap_err();
            assert!(e.to_string().contains(want), "{vars:?}: {e}");
        }
        let e = Settings::load(
            None,
            env(&[("REMEDIATOR_ALERTMANAGER__ON_UNREACHABLE", "maybe")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("on_unreachable"), "{e}");
    }

    #[test]
    fn postgres_and_replica_from_the_environment_the_password_never_printed() {
        let s = Settings::load(None, vec![], &Overrides::default()).unwrap();
        assert!(
            s.postgres.url.is_none(),
            "no fleet history unless configured"
        );
        assert!(!s.replica.id.is_empty(), "the host name by default");
        let s = Settings::load(
            None,
            env(&[
                (
                    "REMEDIATOR_POSTGRES__URL",
                    "postgres://fleet:hunter2@db:5432/history",
                ),
                ("REMEDIATOR_POSTGRES__PASSWORD_FILE", "/run/secrets/pg"),
                ("REMEDIATOR_POSTGRES__TIMEOUT", "2s"),
                ("REMEDIATOR_REPLICA__ID", "12"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(
            s.postgres.url.as_ref().unwrap().expose_secret(),
            "postgres://fleet:hunter2@db:5432/history"
        );
        assert_eq!(
            s.postgres.password_file.as_deref(),
            Some(Path::new("/run/secrets/pg"))
        );
        assert_eq!(s.postgres.timeout, std::time::Duration::from_secs(2));
        assert_eq!(s.replica.id, "12");
        assert!(!format!("{s:?}").contains("hunter2"), "secrets never print");
        let e = Settings::load(
            None,
            env(&[("REMEDIATOR_REPLICA__ID", "a b")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("replica.id"), "{e}");
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(&file, "listen: 127.0.0.1:1000\nlisten_addr: x\n").unwrap();
        let e = Settings::load(Some(&file), vec![], &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("listen_addr"), "{e}");
    }
}
