//! The mock LLM upstream: a real HTTP server speaking OpenAI Chat Completions and Anthropic
//! Messages, with scripted misbehaviour, that tests and benchmarks use instead of a provider.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use wrapx_benches::mock_llm::{spawn, Behavior, MockConfig};
//! let mock = spawn(MockConfig::default()).await?;
//! // Point a client at mock.base_url() ("http://127.0.0.1:PORT/v1").
//! mock.set_behavior(Behavior::Status(503));
//! assert_eq!(mock.stats().requests, 0);
//! mock.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Per request the behaviour comes from, in order: the `x-mock-behavior` header, a model name
//! `mock-<behaviour>` (`mock-status-500`, `mock-stall-after-2`), `MockHandle::set_behavior`,
//! `MockConfig::mode_default`. The layout of the answer's bytes (`Format`: compact, spaced,
//! pretty, crlf) comes the same way from the `x-mock-format` header, a model name
//! `mock-<format>` or `mock-<format>-<behaviour>` (`mock-spaced-reset-after-2`),
//! `MockHandle::set_format`, `MockConfig::format_default`; it applies to every answer of the
//! chat and messages routes, cut and malformed ones included. Headers `x-mock-chunks`, `x-mock-interval-ms`,
//! `x-mock-first-byte-delay-ms` and `x-mock-latency-ms` override the configuration per request.
//! Behaviours apply to the chat and messages routes only.

mod answer;
mod anthropic;
mod behavior;
mod body;
mod format;
mod inspect;
mod openai;
mod record;
mod request;
mod router;
mod server;
mod state;
mod tls;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

pub use behavior::{Behavior, UnknownBehavior};
pub use format::{Format, UnknownFormat};
pub use record::{MockStats, RecordedRequest, MAX_RECORDED};
pub use tls::MockTls;

use state::Shared;

/// How the mock answers by default.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Where to listen; port 0 picks a free port (read it back with `MockHandle::addr`).
    pub listen: SocketAddr,
    /// The behaviour when neither the request nor `set_behavior` names one.
    pub mode_default: Behavior,
    /// The layout when neither the request nor `set_format` names one.
    pub format_default: Format,
    /// Content chunks per answer, one completion token each.
    pub chunks: usize,
    /// Time between content chunks of a stream.
    pub chunk_interval: Duration,
    /// Time from the stream's headers to its first event.
    pub first_byte_delay: Duration,
    /// Time before a non-streaming answer (or an error status) is sent.
    pub latency: Duration,
    /// The prompt (input) token count every answer reports.
    pub prompt_tokens: u32,
    /// Keep the last `MAX_RECORDED` requests; turn off for benchmarks.
    pub record: bool,
    /// Serve HTTPS with this certificate instead of plain HTTP (`base_url` is then `https`).
    pub tls: Option<MockTls>,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            mode_default: Behavior::Normal,
            format_default: Format::Compact,
            chunks: 5,
            chunk_interval: Duration::from_millis(20),
            first_byte_delay: Duration::ZERO,
            latency: Duration::ZERO,
            prompt_tokens: 10,
            record: true,
            tls: None,
        }
    }
}

/// Binds the listener and starts serving in the background on the current tokio runtime.
/// With `config.tls`, a certificate or key that cannot be read is an `InvalidInput` error.
///
/// The server stops when `shutdown` is awaited or the handle is dropped.
pub async fn spawn(config: MockConfig) -> std::io::Result<MockHandle> {
    let acceptor = config.tls.as_ref().map(MockTls::acceptor).transpose()?;
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let tls = acceptor.is_some();
    let shared = Arc::new(Shared::new(config));
    let tasks = TaskTracker::new();
    tasks.spawn(server::accept_loop(
        listener,
        acceptor,
        Arc::clone(&shared),
        tasks.clone(),
    ));
    Ok(MockHandle {
        addr,
        tls,
        shared,
        tasks,
    })
}

/// A running mock. Dropping it stops the server without waiting; `shutdown` waits.
#[derive(Debug)]
pub struct MockHandle {
    addr: SocketAddr,
    /// Whether it serves HTTPS.
    tls: bool,
    shared: Arc<Shared>,
    /// The accept loop and every connection task.
    tasks: TaskTracker,
}

impl MockHandle {
    /// The address the mock listens on, with the real port.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<ip>:<port>/v1` (`https://` with TLS), the base URL an OpenAI or Anthropic
    /// client expects. A TLS client checking the certificate's name wants
    /// `https://localhost:<port>/v1` instead when the certificate names `localhost`.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/v1", self.addr)
    }

    /// The recorded requests, oldest first (empty when recording is off).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.recorder.all()
    }

    /// Forgets the recorded requests; the stats are kept.
    pub fn clear(&self) {
        self.shared.recorder.clear();
    }

    pub fn stats(&self) -> MockStats {
        self.shared.counters.snapshot()
    }

    /// Sets the behaviour for requests that do not name one by header or model.
    pub fn set_behavior(&self, b: Behavior) {
        self.shared.behavior.set(b);
    }

    /// The next `n` chat or messages requests get `behavior` whatever they ask for (by
    /// header, model or `set_behavior`); then the usual choice resumes. Routing tests use it for
    /// a provider that fails a few times and recovers.
    pub fn fail_next(&self, n: usize, behavior: Behavior) {
        let mut scripted = self
            .shared
            .scripted
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *scripted = (n > 0).then_some((n, behavior));
    }

    /// The `retry-after` header of every error answer from now on (`None`: none at all). By
    /// default a 429 carries `retry-after: 1` and other errors none.
    pub fn set_retry_after(&self, value: Option<&str>) {
        let mut retry_after = self
            .shared
            .retry_after
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *retry_after = Some(value.map(str::to_owned));
    }

    /// Sets the layout for requests that do not name one by header or model.
    pub fn set_format(&self, f: Format) {
        self.shared.format.set(f);
    }

    /// Stops accepting, ends hanging and stalled answers, gives other open requests a moment
    /// to finish, and returns once every connection task has ended.
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Drop for MockHandle {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}
