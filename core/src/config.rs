//! Configuration per the contract: `config/default.toml` (built into the binaries as the base
//! layer, so they start from any directory), then an optional file (`--config FILE`), then
//! `WRAPX_SECTION__KEY` environment variables, which win. Unknown keys are refused, and
//! [`Settings::validate`] checks what types alone cannot, naming the setting at fault.
//!
//! A leaf: it takes [`Secret`] and the `[security]` section from `secret`, and no other core
//! module but `error` (`crypto` and `keys` read their settings there, not the other way round).

use std::{net::SocketAddr, path::Path};

use figment::{
    providers::{Format, Toml},
    Figment,
};
use serde::Deserialize;

use crate::{
    secret::{Secret, SecuritySettings},
    Error, Result,
};

/// The defaults shipped in `config/default.toml`.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// The environment prefix of every setting.
pub const ENV_PREFIX: &str = "WRAPX_";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub redis: RedisSettings,
    pub amqp: AmqpSettings,
    pub gateway: GatewaySettings,
    pub admin: AdminSettings,
    pub worker: WorkerSettings,
    pub security: SecuritySettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// May hold a password, hence a secret.
    pub url: Secret,
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    pub url: Secret,
    /// Prepended to every Redis key and channel, so several deployments (or tests) share one
    /// Redis without seeing each other.
    pub prefix: String,
    pub pool_size: usize,
    /// Every Redis call on the hot path gives up after this long.
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSettings {
    pub url: Secret,
    /// A publish not confirmed within this long is treated as failed (a broker under a
    /// memory alarm blocks publishers instead of refusing them).
    pub publish_timeout_ms: u64,
    /// Delays of the webhook retry tiers, one TTL queue each, in order.
    pub webhook_retry_delays_ms: Vec<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub connect_timeout_ms: u64,
    pub first_byte_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub shutdown_grace_ms: u64,
    /// Request bodies past this size answer 413.
    pub max_body_bytes: usize,
    /// A request body not read whole within this answers 408: slow or stalled senders do not
    /// hold a connection and its memory for long.
    pub body_read_timeout_ms: u64,
    /// A request head not received whole within this of its first byte closes the connection
    /// (pingora's own header timeout is per read, so a byte at a time would never trip it).
    pub header_read_timeout_ms: u64,
    /// Request and response data kept in an event is cut to this many bytes.
    pub event_data_max_bytes: usize,
    pub spool_dir: String,
    pub spool_max_bytes: u64,
    pub key_cache_ttl_ms: u64,
    pub negative_cache_ttl_ms: u64,
    /// While Redis is unreachable or slow, each key gets its configured limit from this
    /// instance's own limiter, capped at this many requests per second when not 0.
    pub fallback_rate_per_second: u32,
    /// Log one line per request at info (off by default: it costs on the hot path).
    pub access_log: bool,
    /// Routing: the longest `retry-after` waited out before trying the same target again.
    pub max_retry_after_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_secs: u64,
    pub header_read_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    pub metrics_listen: SocketAddr,
    /// Unacknowledged messages the broker may hand one consumer.
    pub prefetch: u16,
    pub batch_size: usize,
    pub batch_max_wait_ms: u64,
    pub webhook_timeout_ms: u64,
    pub pricing_file: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info` or `wrapx_gateway=debug,info`.
    pub level: String,
}

/// The master key and pepper of `config/default.toml`: fine for a laptop, never for production.
pub const DEV_MASTER_KEY_ID: &str = "dev";

impl Settings {
    /// Loads the defaults, then `file` if given (it must exist), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self> {
        Self::load_with_env(file, std::env::vars())
    }

    /// As [`Settings::load`], with the environment given: tests pass their own.
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(Error::Config(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        // Only our own prefix is read, so unrelated variables never trip `deny_unknown_fields`.
        let mut overrides = toml::Table::new();
        for (key, value) in env {
            let Some(rest) = key.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if !rest.contains("__") {
                continue;
            }
            let lower = rest.to_ascii_lowercase();
            let path: Vec<&str> = lower.split("__").collect();
            insert_path(&mut overrides, &path, parse_env_value(&value));
        }
        figment = figment.merge(figment::providers::Serialized::globals(overrides));
        let settings: Settings = figment.extract().map_err(|e| Error::Config(describe(e)))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what the types cannot: URL schemes, key formats, non-zero sizes.
    pub fn validate(&self) -> Result<()> {
        check_url(
            "database.url",
            self.database.url.expose(),
            &["postgres", "postgresql"],
        )?;
        check_url("redis.url", self.redis.url.expose(), &["redis", "rediss"])?;
        check_url("amqp.url", self.amqp.url.expose(), &["amqp", "amqps"])?;
        nonzero(
            "database.max_connections",
            self.database.max_connections as u64,
        )?;
        nonzero("redis.pool_size", self.redis.pool_size as u64)?;
        nonzero("redis.timeout_ms", self.redis.timeout_ms)?;
        nonzero("amqp.publish_timeout_ms", self.amqp.publish_timeout_ms)?;
        if self.amqp.webhook_retry_delays_ms.contains(&0) {
            return Err(Error::Config(
                "amqp.webhook_retry_delays_ms: every delay must be above 0".into(),
            ));
        }
        nonzero(
            "gateway.connect_timeout_ms",
            self.gateway.connect_timeout_ms,
        )?;
        nonzero(
            "gateway.first_byte_timeout_ms",
            self.gateway.first_byte_timeout_ms,
        )?;
        nonzero("gateway.idle_timeout_ms", self.gateway.idle_timeout_ms)?;
        nonzero("gateway.max_body_bytes", self.gateway.max_body_bytes as u64)?;
        nonzero(
            "gateway.body_read_timeout_ms",
            self.gateway.body_read_timeout_ms,
        )?;
        nonzero(
            "gateway.header_read_timeout_ms",
            self.gateway.header_read_timeout_ms,
        )?;
        nonzero(
            "admin.access_token_ttl_secs",
            self.admin.access_token_ttl_secs,
        )?;
        nonzero(
            "admin.refresh_token_ttl_secs",
            self.admin.refresh_token_ttl_secs,
        )?;
        nonzero(
            "admin.header_read_timeout_ms",
            self.admin.header_read_timeout_ms,
        )?;
        nonzero("admin.max_body_bytes", self.admin.max_body_bytes as u64)?;
        nonzero("worker.prefetch", self.worker.prefetch as u64)?;
        nonzero("worker.batch_size", self.worker.batch_size as u64)?;
        if self.redis.prefix.is_empty() || self.redis.prefix.contains(char::is_whitespace) {
            return Err(Error::Config(
                "redis.prefix: must be non-empty and without spaces".into(),
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| Error::Config(format!("log.level: {e}")))?;
        self.security.validate()?;
        Ok(())
    }

    /// Whether the development master key or pepper of `default.toml` is in use.
    pub fn uses_development_secrets(&self) -> bool {
        let defaults: Option<Settings> = Figment::from(Toml::string(DEFAULT_TOML)).extract().ok();
        defaults.is_some_and(|d| {
            d.security.master_key == self.security.master_key
                || d.security.hash_pepper == self.security.hash_pepper
        })
    }

    /// Logs the loud warning the contract asks for when development secrets are in use.
    pub fn warn_if_development_secrets(&self) {
        if self.uses_development_secrets() {
            tracing::warn!(
                "THE DEVELOPMENT MASTER KEY OR HASH PEPPER FROM config/default.toml IS IN USE: \
                 anyone with the source can decrypt provider keys. Set WRAPX_SECURITY__MASTER_KEY \
                 and WRAPX_SECURITY__HASH_PEPPER before going to production."
            );
        }
    }
}

/// Sets `a.b.c = value` in a nested table; the environment wins over anything already there.
fn insert_path(table: &mut toml::Table, path: &[&str], value: toml::Value) {
    match path {
        [] => {}
        [leaf] => {
            table.insert((*leaf).to_owned(), value);
        }
        [head, rest @ ..] => {
            let entry = table
                .entry((*head).to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(inner) = entry {
                insert_path(inner, rest, value);
            } else {
                let mut inner = toml::Table::new();
                insert_path(&mut inner, rest, value);
                *entry = toml::Value::Table(inner);
            }
        }
    }
}

/// Environment values are strings; numbers, booleans and TOML arrays are read as such so that
/// `WRAPX_GATEWAY__IDLE_TIMEOUT_MS=500` and `WRAPX_AMQP__WEBHOOK_RETRY_DELAYS_MS=[100,200]` work.
fn parse_env_value(raw: &str) -> toml::Value {
    let trimmed = raw.trim();
    if trimmed.starts_with('[') {
        if let Some(array) = format!("v = {trimmed}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
        {
            return array;
        }
    }
    if let Ok(i) = trimmed.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    match trimmed {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(raw.to_owned()),
    }
}

fn describe(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let kind = e.kind.to_string();
            if key.is_empty() {
                kind
            } else {
                format!("{key}: {kind}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn nonzero(name: &str, value: u64) -> Result<()> {
    if value == 0 {
        return Err(Error::Config(format!("{name}: must be above 0")));
    }
    Ok(())
}

fn check_url(name: &str, value: &str, schemes: &[&str]) -> Result<()> {
    let url =
        url::Url::parse(value).map_err(|e| Error::Config(format!("{name}: not a URL ({e})")))?;
    if !schemes.contains(&url.scheme()) {
        return Err(Error::Config(format!(
            "{name}: scheme must be one of {}, not {}",
            schemes.join(", "),
            url.scheme()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_load_and_validate() {
        let s = Settings::load_with_env(None, env(&[])).unwrap();
        assert_eq!(s.gateway.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.gateway.metrics_listen.to_string(), "127.0.0.1:9090");
        assert_eq!(s.admin.listen.to_string(), "127.0.0.1:8081");
        assert_eq!(s.worker.metrics_listen.to_string(), "127.0.0.1:9091");
        assert_eq!(
            s.database.url.expose(),
            "postgres://postgres@127.0.0.1:5432/wrapx"
        );
        assert!(s.uses_development_secrets());
    }

    #[test]
    fn environment_overrides_win() {
        let s = Settings::load_with_env(
            None,
            env(&[
                ("WRAPX_GATEWAY__IDLE_TIMEOUT_MS", "1234"),
                ("WRAPX_DATABASE__URL", "postgres://u@db:5432/x"),
                ("WRAPX_AMQP__WEBHOOK_RETRY_DELAYS_MS", "[10, 20]"),
                ("WRAPX_SECURITY__ALLOW_LOOPBACK", "false"),
                ("UNRELATED", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(s.gateway.idle_timeout_ms, 1234);
        assert_eq!(s.database.url.expose(), "postgres://u@db:5432/x");
        assert_eq!(s.amqp.webhook_retry_delays_ms, vec![10, 20]);
        assert!(!s.security.allow_loopback);
    }

    #[test]
    fn bad_settings_name_the_setting() {
        let cases = [
            ("WRAPX_GATEWAY__LISTEN", "not-an-address", "gateway.listen"),
            ("WRAPX_DATABASE__URL", "mysql://x", "database.url"),
            (
                "WRAPX_GATEWAY__IDLE_TIMEOUT_MS",
                "0",
                "gateway.idle_timeout_ms",
            ),
            (
                "WRAPX_GATEWAY__IDLE_TIMEOUT_MS",
                "soon",
                "gateway.idle_timeout_ms",
            ),
            ("WRAPX_GATEWAY__NO_SUCH_THING", "1", "no_such_thing"),
            (
                "WRAPX_SECURITY__MASTER_KEY",
                "nokeyid",
                "security.master_key",
            ),
            (
                "WRAPX_SECURITY__MASTER_KEY",
                "k1:c2hvcnQ=",
                "security.master_key",
            ),
            (
                "WRAPX_SECURITY__HASH_PEPPER",
                "c2hvcnQ=",
                "security.hash_pepper",
            ),
            ("WRAPX_LOG__FORMAT", "xml", "log.format"),
        ];
        for (key, value, named) in cases {
            let err = Settings::load_with_env(None, env(&[(key, value)])).unwrap_err();
            let message = err.to_string();
            assert!(message.contains(named), "{key}={value}: {message}");
        }
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let err = Settings::load_with_env(Some(Path::new("/nonexistent/wrapx.toml")), env(&[]))
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/wrapx.toml"));
    }

    #[test]
    fn a_config_file_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[gateway]\nlisten = \"0.0.0.0:1\"\n").unwrap();
        let s = Settings::load_with_env(Some(&path), env(&[])).unwrap();
        assert_eq!(s.gateway.listen.to_string(), "0.0.0.0:1");
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Settings::load_with_env(None, env(&[])).unwrap();
        let printed = format!("{s:?}");
        assert!(!printed.contains(s.security.master_key.expose()));
        assert!(!printed.contains(s.security.hash_pepper.expose()));
    }
}
