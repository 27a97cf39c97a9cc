//! Per-test backends: every test gets its own PostgreSQL database, Redis prefix and RabbitMQ
//! vhost, so tests run in parallel without seeing each other's data.
//!
//! The server-level connections come from `WRAPX_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), `WRAPX_TEST_REDIS_URL` and
//! `WRAPX_TEST_AMQP_URL` (defaults on the standard local ports). Databases and vhosts are named
//! `wrapx_test_…`; `scripts/test` drops those left by earlier runs.

use sqlx::{Connection, Executor, PgConnection, PgPool};
use uuid::Uuid;

use wrapx_core::{config::Settings, secret::Secret};

pub(crate) fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

pub fn postgres_server_url() -> String {
    env_or(
        "WRAPX_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    )
}

/// A fresh, empty database (no migrations applied). Returns its URL.
pub async fn create_database() -> String {
    let name = format!("wrapx_test_{}", Uuid::now_v7().simple());
    let server = postgres_server_url();
    let mut conn = PgConnection::connect(&server)
        .await
        .expect("connect to PostgreSQL");
    conn.execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
        .await
        .expect("create the test database");
    let mut url = url::Url::parse(&server).expect("WRAPX_TEST_POSTGRES_URL is a URL");
    url.set_path(&name);
    url.to_string()
}

/// A fresh database with every migration applied.
pub async fn migrated_database() -> (String, PgPool) {
    let url = create_database().await;
    let pool = PgPool::connect(&url)
        .await
        .expect("connect to the test database");
    wrapx_core::db::migrate(&pool)
        .await
        .expect("apply the migrations");
    (url, pool)
}

/// A fresh migrated database, a vhost and a Redis prefix, with settings pointed at them.
pub async fn everything() -> (PgPool, Settings) {
    let (db_url, pool) = migrated_database().await;
    let amqp_url = vhost().await;
    (pool, settings(&db_url, &amqp_url, &redis_prefix()))
}

/// [`create_vhost`] off the async runtime (it runs `rabbitmqctl`).
pub async fn vhost() -> String {
    tokio::task::spawn_blocking(create_vhost)
        .await
        .expect("create the vhost")
}

/// A fresh RabbitMQ vhost that guest may use. Returns the AMQP URL.
///
/// The vhost's name carries the test process's id. Before creating one, vhosts of test
/// processes that have exited are deleted: each vhost holds quorum queues (a Raft group each),
/// and hundreds of them left behind would weigh the broker down. `rabbitmqctl` runs as a
/// short-lived Erlang node; many started at once collide on node names ("Distribution
/// failed"), so calls are serialised across processes with `flock`, bounded by `timeout`, and
/// retried.
pub fn create_vhost() -> String {
    let vhost = format!(
        "wrapx_test_{}_{}",
        std::process::id(),
        Uuid::now_v7().simple()
    );
    let ctl = "timeout -k 5 60 rabbitmqctl -q";
    let script = format!(
        r#"for v in $({ctl} list_vhosts 2>/dev/null | grep '^wrapx_test_[0-9]*_'); do
             pid=$(echo "$v" | cut -d_ -f3)
             [ -d "/proc/$pid" ] || {ctl} delete_vhost "$v" >/dev/null 2>&1 || true
           done
           ({ctl} add_vhost {vhost} || true) && {ctl} set_permissions -p {vhost} guest '.*' '.*' '.*'"#
    );
    let mut last_error = String::new();
    for attempt in 0..5 {
        let out = std::process::Command::new("flock")
            .args(["/tmp/wrapx-test-rabbitmqctl.lock", "sh", "-c", &script])
            .output()
            .expect("run rabbitmqctl under flock");
        if out.status.success() {
            let base = env_or("WRAPX_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672");
            return format!("{}/{vhost}", base.trim_end_matches('/'));
        }
        last_error = String::from_utf8_lossy(&out.stderr).into_owned();
        // A half-done attempt is fine: add_vhost may fail with "already exists", and
        // set_permissions succeeds only once the vhost is there.
        std::thread::sleep(std::time::Duration::from_millis(200 * (attempt + 1)));
    }
    panic!("creating RabbitMQ vhost {vhost}: {last_error}");
}

/// A Redis key prefix no other test uses.
pub fn redis_prefix() -> String {
    format!("wrapx_test:{}:", Uuid::now_v7().simple())
}

/// Default settings pointed at the given database, vhost and prefix, listening on port 0.
pub fn settings(database_url: &str, amqp_url: &str, redis_prefix: &str) -> Settings {
    let mut s = Settings::load_with_env(None, Vec::new()).expect("default settings");
    s.database.url = Secret::new(database_url);
    s.redis.url = Secret::new(env_or("WRAPX_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"));
    s.redis.prefix = redis_prefix.to_owned();
    s.amqp.url = Secret::new(amqp_url);
    let any_port: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    s.gateway.listen = any_port;
    s.gateway.metrics_listen = any_port;
    s.admin.listen = any_port;
    s.worker.metrics_listen = any_port;
    s
}
