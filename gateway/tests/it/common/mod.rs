//! Test support: a seeded database, a vhost and a Redis prefix per test, the mock upstream, and
//! the real `wrapx-gateway` binary started with environment variables.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use lapin::options::BasicGetOptions;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;
use wrapx_benches::mock_llm::{self, MockConfig, MockHandle};
use wrapx_core::{
    amqp,
    config::Settings,
    crypto::{provider_key_aad, MasterKeys},
    events::{Event, RequestEvent},
    keys::{ApiKey, KeyHasher},
    testing,
    types::EndpointId,
};

pub const PROVIDER_KEY: &str = "sk-provider-secret-1234";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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
    pub endpoint: EndpointId,
    pub key: String,
    pub key_id: Uuid,
    pub key_hash: String,
}

impl Env {
    pub async fn new(mock: MockConfig) -> Self {
        let (db_url, db) = testing::migrated_database().await;
        let amqp_url = tokio::task::spawn_blocking(testing::create_vhost)
            .await
            .unwrap();
        let prefix = testing::redis_prefix();
        let settings = testing::settings(&db_url, &amqp_url, &prefix);
        let mock = mock_llm::spawn(mock).await.unwrap();
        let user_id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO users (id, email, password_hash, name) VALUES ($1, $2, 'x', 'Owner')",
        )
        .bind(user_id)
        .bind(format!("{}@example.com", user_id.simple()))
        .execute(&db)
        .await
        .unwrap();
        let project_id = Uuid::now_v7();
        sqlx::query("INSERT INTO projects (id, user_id, name) VALUES ($1, $2, 'p')")
            .bind(project_id)
            .bind(user_id)
            .execute(&db)
            .await
            .unwrap();
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
        let id = Uuid::now_v7();
        let keys = MasterKeys::from_settings(&self.settings.security).unwrap();
        let ciphertext = keys
            .encrypt(PROVIDER_KEY.as_bytes(), &provider_key_aad(id, self.user_id))
            .unwrap();
        sqlx::query("INSERT INTO llm_providers (id, user_id, provider_name, api_key_ciphertext, api_key_hint, api_base_url) VALUES ($1, $2, $3, $4, '1234', $5)")
            .bind(id)
            .bind(self.user_id)
            .bind(kind)
            .bind(ciphertext)
            .bind(base_url)
            .execute(&self.db)
            .await
            .unwrap();
        id
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
        let id = Uuid::now_v7();
        let endpoint = EndpointId::generate();
        sqlx::query("INSERT INTO wrapped_apis (id, user_id, project_id, provider_id, name, endpoint_id, model, system_message_policy) VALUES ($1, $2, $3, $4, 'api', $5, 'pinned-model', $6)")
            .bind(id)
            .bind(self.user_id)
            .bind(self.project_id)
            .bind(provider_id)
            .bind(endpoint.as_str())
            .bind(policy)
            .execute(&self.db)
            .await
            .unwrap();
        if let Some((limit, window)) = rate_limit {
            sqlx::query(r#"INSERT INTO rate_limits (id, user_id, wrapped_api_id, "limit", window_seconds) VALUES ($1, $2, $3, $4, $5)"#)
                .bind(Uuid::now_v7())
                .bind(self.user_id)
                .bind(id)
                .bind(limit)
                .bind(window)
                .execute(&self.db)
                .await
                .unwrap();
        }
        let (key, key_id, key_hash) = self.key(id, None).await;
        Api {
            id,
            endpoint,
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
        let key = ApiKey::generate();
        let hash = KeyHasher::from_settings(&self.settings.security)
            .unwrap()
            .hash_key(&key)
            .to_hex();
        let id = Uuid::now_v7();
        sqlx::query("INSERT INTO api_keys (id, wrapped_api_id, key_hash, key_hint, key_name, expires_at) VALUES ($1, $2, $3, $4, 'k', $5)")
            .bind(id)
            .bind(api)
            .bind(&hash)
            .bind(key.hint())
            .bind(expires_at)
            .execute(&self.db)
            .await
            .unwrap();
        (key.expose().to_owned(), id, hash)
    }

    pub async fn prompt(&self, api: Uuid, config: Value) {
        sqlx::query("INSERT INTO prompt_configs (id, wrapped_api_id, role, instructions, rules, behavior, tone, examples) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(Uuid::now_v7())
            .bind(api)
            .bind(config["role"].as_str().unwrap_or(""))
            .bind(config["instructions"].as_str().unwrap_or(""))
            .bind(config["rules"].as_str().unwrap_or(""))
            .bind(config["behavior"].as_str().unwrap_or(""))
            .bind(config["tone"].as_str().unwrap_or(""))
            .bind(config.get("examples").cloned().unwrap_or(json!([])))
            .execute(&self.db)
            .await
            .unwrap();
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

/// A running `wrapx-gateway` process; killed when dropped.
pub struct Gateway {
    pub child: Child,
    pub port: u16,
    pub metrics_port: u16,
}

impl Gateway {
    pub async fn start(env: &Env) -> Self {
        Self::start_with(env, &[]).await
    }

    pub async fn start_with(env: &Env, extra: &[(&str, &str)]) -> Self {
        let port = free_port();
        let metrics_port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wrapx-gateway"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.gateway_env())
            .env("WRAPX_GATEWAY__LISTEN", format!("127.0.0.1:{port}"))
            .env(
                "WRAPX_GATEWAY__METRICS_LISTEN",
                format!("127.0.0.1:{metrics_port}"),
            )
            .stdin(Stdio::null());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let gw = Self {
            child,
            port,
            metrics_port,
        };
        gw.wait_healthy().await;
        gw
    }

    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = reqwest::Client::new();
        while Instant::now() < deadline {
            if let Ok(r) = client.get(self.url("/healthz")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the gateway did not become healthy");
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
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for the process to exit, up to `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the gateway did not exit");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// Polls `check` until it holds or `within` passes.
pub async fn eventually<F: FnMut() -> bool>(within: Duration, mut check: F) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}
