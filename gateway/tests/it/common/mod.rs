//! What only the gateway's tests need on top of the kit: one test's backends with a seeded
//! account behind the mock upstream, the real `wrapx-gateway` binary on port 0, and reading the
//! request events it publishes.

#![allow(dead_code)]

pub mod forwarder;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use lapin::options::BasicGetOptions;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;
use wrapx_core::{
    amqp,
    config::Settings,
    events::{Event, RequestEvent},
};
use wrapx_testkit::{
    backends,
    mock_llm::{self, MockConfig, MockHandle},
    process::Process,
    seed::{self, Key, Provider, User, WrappedApi},
};
pub use wrapx_testkit::{eventually, eventually_true, net::ClosedPort, seed::PROVIDER_KEY};

/// One test's backends and seeded data.
pub struct Env {
    pub db_url: String,
    pub db: PgPool,
    pub amqp_url: String,
    pub prefix: String,
    pub settings: Settings,
    pub mock: MockHandle,
    pub user_id: Uuid,
    pub project_id: Uuid,
    pub provider_id: Uuid,
    pub spool: tempfile::TempDir,
}

/// A seeded wrapped API and one key for it.
#[derive(Clone)]
pub struct Api {
    pub id: Uuid,
    pub endpoint: String,
    pub key: String,
    pub key_id: Uuid,
    pub key_hash: String,
}

impl Env {
    pub async fn new(mock: MockConfig) -> Self {
        let (db_url, db) = backends::migrated_database().await;
        let amqp_url = backends::vhost().await;
        let prefix = backends::redis_prefix();
        let settings = backends::settings(&db_url, &amqp_url, &prefix);
        let mock = mock_llm::spawn(mock).await.unwrap();
        let user_id = User::new().insert(&db).await;
        let project_id = seed::project(&db, user_id).await;
        let mut env = Self {
            db_url,
            db,
            amqp_url,
            prefix,
            settings,
            mock,
            user_id,
            project_id,
            provider_id: Uuid::nil(),
            spool: tempfile::tempdir().unwrap(),
        };
        let base = env.mock.base_url();
        env.provider_id = env.provider(&base).await;
        env
    }

    /// A provider row whose key is encrypted as the admin API would.
    pub async fn provider(&self, base_url: &str) -> Uuid {
        self.provider_of("openai_compatible", base_url).await
    }

    /// A provider row of `kind` (`openai_compatible`, `anthropic`, …) at `base_url`.
    pub async fn provider_of(&self, kind: &str, base_url: &str) -> Uuid {
        Provider::new(self.user_id)
            .kind(kind)
            .base_url(base_url)
            .encrypted(&self.settings.security)
            .insert(&self.db)
            .await
    }

    pub async fn api(&self) -> Api {
        self.api_with(self.provider_id, "keep", None).await
    }

    pub async fn api_with(
        &self,
        provider_id: Uuid,
        policy: &str,
        rate_limit: Option<(i32, i32)>,
    ) -> Api {
        let api = WrappedApi::new(self.user_id, self.project_id, provider_id)
            .name("api")
            .model("pinned-model")
            .policy(policy)
            .insert(&self.db)
            .await;
        if let Some((limit, window)) = rate_limit {
            seed::rate_limit(&self.db, self.user_id, api.id, limit, window).await;
        }
        let (key, key_id, key_hash) = self.key(api.id, None).await;
        Api {
            id: api.id,
            endpoint: api.endpoint,
            key,
            key_id,
            key_hash,
        }
    }

    /// A key for `api`, stored as its keyed hash.
    pub async fn key(
        &self,
        api: Uuid,
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> (String, Uuid, String) {
        let key = Key::new(api)
            .expires_at(expires_at)
            .insert(&self.db, &self.settings.security)
            .await;
        (key.key, key.id, key.hash)
    }

    pub async fn prompt(&self, api: Uuid, config: Value) {
        seed::prompt_config(&self.db, api, &config).await;
    }

    /// The environment a gateway process of this test runs with.
    pub fn gateway_env(&self) -> Vec<(String, String)> {
        vec![
            ("WRAPX_DATABASE__URL".into(), self.db_url.clone()),
            ("WRAPX_AMQP__URL".into(), self.amqp_url.clone()),
            (
                "WRAPX_REDIS__URL".into(),
                self.settings.redis.url.expose().to_owned(),
            ),
            ("WRAPX_REDIS__PREFIX".into(), self.prefix.clone()),
            (
                "WRAPX_GATEWAY__SPOOL_DIR".into(),
                self.spool
                    .path()
                    .join(Uuid::now_v7().to_string())
                    .display()
                    .to_string(),
            ),
            ("WRAPX_GATEWAY__CONNECT_TIMEOUT_MS".into(), "1000".into()),
            ("WRAPX_GATEWAY__FIRST_BYTE_TIMEOUT_MS".into(), "2000".into()),
            ("WRAPX_GATEWAY__IDLE_TIMEOUT_MS".into(), "2000".into()),
            ("WRAPX_GATEWAY__SHUTDOWN_GRACE_MS".into(), "10000".into()),
            ("WRAPX_LOG__LEVEL".into(), "warn,wrapx_gateway=info".into()),
        ]
    }

    /// Reads `n` request events from this test's `wrapx.logs` queue, waiting up to `within`.
    pub async fn events(&self, n: usize, within: Duration) -> Vec<RequestEvent> {
        let conn = amqp::connect_url(&self.amqp_url, "test-reader")
            .await
            .unwrap();
        let mut channel = conn.create_channel().await.unwrap();
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        while out.len() < n && Instant::now() < deadline {
            match channel
                .basic_get(amqp::LOGS_QUEUE, BasicGetOptions { no_ack: true })
                .await
            {
                Ok(Some(message)) => out.extend(request_events(&message.delivery.data)),
                Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(_) => channel = reopen(&conn).await,
            }
        }
        let _ = conn.close(0, "done").await;
        out
    }

    /// Reads events until the queue stays empty for `quiet`: to prove there is no extra one.
    pub async fn drain_events(&self, quiet: Duration) -> Vec<RequestEvent> {
        let conn = amqp::connect_url(&self.amqp_url, "test-reader")
            .await
            .unwrap();
        let mut channel = conn.create_channel().await.unwrap();
        let mut out = Vec::new();
        let mut last = Instant::now();
        while last.elapsed() < quiet {
            match channel
                .basic_get(amqp::LOGS_QUEUE, BasicGetOptions { no_ack: true })
                .await
            {
                Ok(Some(message)) => {
                    out.extend(request_events(&message.delivery.data));
                    last = Instant::now();
                }
                Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(_) => channel = reopen(&conn).await,
            }
        }
        let _ = conn.close(0, "done").await;
        out
    }
}

/// The request events of one message (the gateway packs several to a message, one per line).
fn request_events(body: &[u8]) -> impl Iterator<Item = RequestEvent> + '_ {
    wrapx_core::events::lines(body).filter_map(|line| match Event::from_json(line).unwrap() {
        Event::Request(r) => Some(r),
        Event::Admin(_) => None,
    })
}

/// A fresh channel after a failed `basic_get`. The gateway declares the logs queue only once
/// its publisher has connected, which under load can come after the first read; until then the
/// broker answers 404 and closes the channel, and every later read on it would fail.
async fn reopen(conn: &lapin::Connection) -> lapin::Channel {
    tokio::time::sleep(Duration::from_millis(50)).await;
    conn.create_channel().await.unwrap()
}

/// A running `wrapx-gateway` process on port 0; killed when dropped.
pub struct Gateway {
    pub process: Process,
    pub port: u16,
    pub metrics_port: u16,
}

impl Gateway {
    pub async fn start(env: &Env) -> Self {
        Self::start_with(env, &[]).await
    }

    /// Starts the binary with `extra` environment over the test's, and returns once it is
    /// healthy on the ports it reports having bound.
    pub async fn start_with(env: &Env, extra: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wrapx-gateway"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.gateway_env())
            .env("WRAPX_GATEWAY__LISTEN", "127.0.0.1:0")
            .env("WRAPX_GATEWAY__METRICS_LISTEN", "127.0.0.1:0");
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let process = Process::spawn(cmd);
        let within = Duration::from_secs(20);
        let listen = process
            .logged_addr("wrapx-gateway listening", "listen", within)
            .await;
        let metrics = process
            .logged_addr("metrics listening", "addr", within)
            .await;
        let gw = Self {
            process,
            port: listen.port(),
            metrics_port: metrics.port(),
        };
        gw.wait_healthy().await;
        gw
    }

    async fn wait_healthy(&self) {
        let client = reqwest::Client::new();
        eventually_true("the gateway healthy", Duration::from_secs(20), || async {
            client
                .get(self.url("/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn chat_url(&self, api: &Api) -> String {
        self.url(&format!("/w/{}/v1/chat/completions", api.endpoint))
    }

    pub fn messages_url(&self, api: &Api) -> String {
        self.url(&format!("/w/{}/v1/messages", api.endpoint))
    }

    pub fn sigterm(&self) {
        self.process.sigterm();
    }

    /// Waits for the process to exit, up to `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        self.process.wait_exit(within).await
    }
}

pub fn chat(stream: bool) -> Value {
    json!({"model": "client-model", "stream": stream, "messages": [{"role": "user", "content": "Hello there"}]})
}

/// The request id an answer carries (`x-request-id`).
pub fn request_id(r: &reqwest::Response) -> Uuid {
    r.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// The OpenAI-shaped error code of an answer body.
pub fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// Runs a Python `script` (the SDKs' tests) with `args` off the async runtime, and parses the
/// JSON it prints; a failing script fails the test with its stderr.
pub async fn python_json(script: &'static str, args: Vec<String>) -> Value {
    let out = tokio::task::spawn_blocking(move || {
        Command::new(wrapx_testkit::python())
            .arg("-c")
            .arg(script)
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
