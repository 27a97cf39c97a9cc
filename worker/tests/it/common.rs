//! What only the worker's tests need on top of the kit: the worker started in this process,
//! events published the way the gateway and admin API do, a real HTTP receiver for webhooks,
//! and a check of signatures with the official Python library.

#![allow(dead_code)]

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU16, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use axum::{body::Bytes, extract::State, http::HeaderMap, http::StatusCode, routing::post, Router};
use chrono::Utc;
use lapin::{Channel, Connection};
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use wrapx_core::{
    amqp,
    config::Settings,
    events::{Event, RequestEvent, RequestOutcome, Usage, UsageSource},
    types::ProviderKind,
};
pub use wrapx_testkit::eventually;
use wrapx_testkit::{backends, seed};

pub fn pricing_file() -> String {
    format!("{}/../config/pricing.toml", env!("CARGO_MANIFEST_DIR"))
}

pub struct TestEnv {
    pub db_url: String,
    pub pool: PgPool,
    pub amqp_url: String,
    pub settings: Settings,
}

/// A migrated database, a vhost, and settings for quick tests: short batches and retry tiers
/// of 200 and 400 ms.
pub async fn env() -> TestEnv {
    let (db_url, pool) = backends::migrated_database().await;
    let amqp_url = backends::vhost().await;
    let mut settings = backends::settings(&db_url, &amqp_url, &backends::redis_prefix());
    settings.worker.pricing_file = pricing_file();
    settings.worker.batch_max_wait_ms = 20;
    settings.worker.webhook_timeout_ms = 2000;
    settings.amqp.webhook_retry_delays_ms = vec![200, 400];
    TestEnv {
        db_url,
        pool,
        amqp_url,
        settings,
    }
}

/// A worker running in this process.
pub struct Running {
    /// Where its metrics page is served (bound on port 0).
    pub metrics: SocketAddr,
    token: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl TestEnv {
    pub async fn start(&self) -> Running {
        start(self.settings.clone()).await
    }
}

pub async fn start(settings: Settings) -> Running {
    let listener = wrapx_worker::bind_metrics(&settings).await.unwrap();
    let metrics = listener.local_addr().unwrap();
    let token = CancellationToken::new();
    let handle = tokio::spawn(wrapx_worker::run_with_metrics(
        settings,
        listener,
        token.clone(),
    ));
    Running {
        metrics,
        token,
        handle,
    }
}

impl Running {
    /// Stops it as SIGTERM would, and checks it drains and returns cleanly.
    pub async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("the worker stops within 30 s")
            .unwrap()
            .unwrap();
    }
}

/// A user with a project, a provider and a wrapped API.
#[derive(Debug, Clone, Copy)]
pub struct Account {
    pub user_id: Uuid,
    pub api_id: Uuid,
    pub key_id: Uuid,
}

pub async fn account(pool: &PgPool) -> Account {
    let seeded = seed::account(pool).await;
    Account {
        user_id: seeded.user_id,
        api_id: seeded.api_id,
        key_id: Uuid::now_v7(),
    }
}

pub fn request(account: &Account, model: &str, prompt: u32, completion: u32) -> RequestEvent {
    RequestEvent {
        request_id: Uuid::now_v7(),
        occurred_at: Utc::now(),
        key_id: account.key_id,
        wrapped_api_id: account.api_id,
        user_id: account.user_id,
        provider: ProviderKind::Openai,
        model: model.into(),
        status: 200,
        outcome: RequestOutcome::Completed,
        stream: false,
        latency_ms: 42,
        ttfb_ms: Some(7),
        usage: Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            reasoning_tokens: 0,
            source: UsageSource::Reported,
        },
        request_data: serde_json::json!({"messages": [{"role": "user", "content": "hi"}]}),
        response_data: serde_json::json!({"choices": []}),
        error: None,
        config_version: Some(1),
    }
}

/// A confirm channel on the test's vhost, with the topology declared (as the gateway does).
pub async fn publisher(amqp_url: &str) -> (Connection, Channel) {
    let connection = amqp::connect_url(amqp_url, "test-publisher").await.unwrap();
    let channel = amqp::confirm_channel(&connection).await.unwrap();
    amqp::declare_topology(&channel, &[200, 400]).await.unwrap();
    (connection, channel)
}

pub async fn publish(channel: &Channel, event: &Event) {
    let body = event.to_json().unwrap();
    amqp::publish_confirmed(
        channel,
        amqp::EVENTS_EXCHANGE,
        event.routing_key(),
        &body,
        amqp::json_properties(&event.id().to_string()),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
}

pub async fn publish_raw(channel: &Channel, exchange: &str, routing_key: &str, body: &[u8]) {
    amqp::publish_confirmed(
        channel,
        exchange,
        routing_key,
        body,
        amqp::json_properties("raw"),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
}

pub async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Waits until `sql` (a count) equals `expected`.
pub async fn wait_count(pool: &PgPool, sql: &str, expected: i64, within: Duration) {
    eventually(&format!("{sql} = {expected}"), within, || async {
        (scalar(pool, sql).await == expected).then_some(())
    })
    .await;
}

/// Adds an active webhook with a fresh `whsec_` secret, encrypted as the admin API stores it.
pub async fn webhook(
    pool: &PgPool,
    settings: &Settings,
    account: &Account,
    url: &str,
    events: &[&str],
) -> (Uuid, String) {
    seed::webhook(pool, &settings.security, account.api_id, url, events).await
}

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A real HTTP server recording webhook deliveries and answering a settable status.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    pub status: Arc<AtomicU16>,
}

impl Receiver {
    pub async fn start(status: u16) -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(status));
        let state = (received.clone(), status.clone());
        let app = Router::new().route("/hook", post(record)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            addr,
            received,
            status,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        eventually(&format!("{n} webhook deliveries"), within, || async {
            let all = self.all();
            (all.len() >= n).then_some(all)
        })
        .await
    }
}

type ReceiverState = (Arc<Mutex<Vec<Received>>>, Arc<AtomicU16>);

async fn record(
    State((received, status)): State<ReceiverState>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    received.lock().unwrap().push(Received {
        at: Instant::now(),
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: body.to_vec(),
    });
    StatusCode::from_u16(status.load(Ordering::SeqCst)).unwrap()
}

/// Verifies a delivery with the official `standardwebhooks` Python library.
pub fn verify_with_python(
    secret: &str,
    id: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
) -> bool {
    use std::io::Write;
    let script = r#"
import sys
from standardwebhooks.webhooks import Webhook
body = sys.stdin.buffer.read()
try:
    Webhook(sys.argv[1]).verify(body, {"webhook-id": sys.argv[2], "webhook-timestamp": sys.argv[3], "webhook-signature": sys.argv[4]})
    print("verified")
except Exception as e:
    print("refused:", repr(e))
    sys.exit(3)
"#;
    let mut child = std::process::Command::new(wrapx_testkit::python())
        .args(["-c", script, secret, id, timestamp, signature])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the Python interpreter of the test virtualenv (see TEAM.md)");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    match out.status.code() {
        Some(0) => true,
        Some(3) => false,
        _ => panic!("python failed: {}", String::from_utf8_lossy(&out.stderr)),
    }
}

/// Messages in `wrapx.dead`, with the queue each was dead-lettered from (its x-death record,
/// or for an event taken out of a packed message, its `x-wrapx-queue` header).
pub async fn dead_letters(channel: &Channel) -> Vec<(Vec<u8>, String)> {
    use lapin::{options::BasicGetOptions, types::AMQPValue};
    let mut out = Vec::new();
    while let Some(msg) = channel
        .basic_get(amqp::DEAD_QUEUE, BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        let headers = msg
            .delivery
            .properties
            .headers()
            .clone()
            .unwrap_or_default();
        let mut queue = String::new();
        if let Some(AMQPValue::LongString(q)) = headers.inner().get("x-wrapx-queue") {
            queue = q.to_string();
        }
        if let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") {
            if let Some(AMQPValue::FieldTable(first)) = deaths.as_slice().first() {
                if let Some(AMQPValue::LongString(q)) = first.inner().get("queue") {
                    queue = q.to_string();
                }
            }
        }
        out.push((msg.delivery.data.clone(), queue));
    }
    out
}

/// An HTTPS receiver serving `leaf` (a test CA's certificate), recording deliveries as
/// [`Receiver`] does at `https://localhost:PORT/hook` ([`https_url`]). The counter is the TLS
/// handshakes it refused or that failed (a client not trusting the certificate).
pub async fn https_receiver(
    status: u16,
    leaf: &wrapx_testkit::tls::Leaf,
) -> (Receiver, Arc<std::sync::atomic::AtomicUsize>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let status = Arc::new(AtomicU16::new(status));
    let state = (received.clone(), status.clone());
    let app = Router::new().route("/hook", post(record)).with_state(state);
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = TlsListener {
        tcp,
        acceptor: leaf.acceptor(),
        failed: failed.clone(),
    };
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let receiver = Receiver {
        addr,
        received,
        status,
    };
    (receiver, failed)
}

/// `https://localhost:PORT/hook`: the name the test CA's `localhost` leaf is valid for.
pub fn https_url(receiver: &Receiver) -> String {
    format!("https://localhost:{}/hook", receiver.addr.port())
}

/// A TCP listener that hands axum only connections whose TLS handshake succeeded (one at a
/// time, which is enough for a test), counting the others.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: wrapx_testkit::tls::tokio_rustls::TlsAcceptor,
    failed: Arc<std::sync::atomic::AtomicUsize>,
}

impl axum::serve::Listener for TlsListener {
    type Io = wrapx_testkit::tls::tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, peer)) = self.tcp.accept().await else {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            let handshake = self.acceptor.accept(stream);
            match tokio::time::timeout(Duration::from_secs(5), handshake).await {
                Ok(Ok(tls)) => return (tls, peer),
                _ => {
                    self.failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
