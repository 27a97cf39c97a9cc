//! The Wrap-X worker: consumes the events the gateway and the admin API publish, writes
//! `api_logs` in idempotent batches with their cost, keeps billing, quotas and `rate_limits`
//! current, and delivers signed webhooks with retries through RabbitMQ delay queues.
//!
//! Invariant: a message is acknowledged only after the PostgreSQL transaction holding its
//! effects has committed (or after the broker confirmed the messages it fanned out into), so
//! a crash at any point redelivers it, and every write is idempotent on the message's id.
//!
//! Code map: [`session`] owns the broker connection and its reconnect loop and runs one
//! handler per queue: [`logs`] (with [`billing`]) writes the log rows, [`webhooks`] fans
//! events out into deliveries and sends them, [`backlog`] reads the queues' depth. Each handler
//! consumes through [`consumer`] and returns an [`outcome::Outcome`] per message, which
//! [`consumer::settle`] alone turns into an ack or a nack (and counts in [`metrics`]);
//! [`notifications`] raises what the account owner should see; [`publish`] sends with
//! confirms. Dependencies run one way: `session` → handlers → `consumer` → `metrics` →
//! `outcome`.

pub mod backlog;
pub mod billing;
pub mod consumer;
pub mod logs;
pub mod metrics;
pub mod notifications;
pub mod outcome;
pub mod publish;
pub mod session;
pub mod webhooks;

use std::{
    collections::HashSet,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use wrapx_core::{config::Settings, crypto::MasterKeys, pricing::Pricing, telemetry};

/// What every consumer shares: settings, the database pool, the pricing table, the master
/// keys that decrypt webhook secrets, and the HTTP client that only reaches checked addresses.
pub struct Worker {
    pub settings: Settings,
    pub pool: PgPool,
    pub pricing: Pricing,
    pub keys: MasterKeys,
    /// The webhook client: SSRF-checked DNS, no proxy, no automatic redirects.
    pub http: reqwest::Client,
    /// Models priced at the default, already flagged in the log (once per model per process).
    flagged_models: Mutex<HashSet<String>>,
}

impl Worker {
    pub fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = wrapx_core::db::pool(&settings.database)?;
        let pricing = Pricing::load(Path::new(&settings.worker.pricing_file))?;
        let keys = MasterKeys::from_settings(&settings.security)?;
        // Trusted on top of the bundled roots, for receivers behind an internal CA.
        let extra_roots = settings
            .security
            .extra_ca_certs()?
            .iter()
            .map(|der| reqwest::Certificate::from_der(der.as_ref()))
            .collect::<reqwest::Result<Vec<_>>>()
            .context("security.extra_ca_file")?;
        let http = webhooks::ssrf::client(
            settings.security.allow_loopback,
            Duration::from_millis(settings.worker.webhook_timeout_ms),
            &extra_roots,
        )
        .with_context(|| match extra_roots.is_empty() {
            true => "build the webhook HTTP client".to_owned(),
            false => "build the webhook HTTP client with security.extra_ca_file".to_owned(),
        })?;
        Ok(Self {
            settings,
            pool,
            pricing,
            keys,
            http,
            flagged_models: Mutex::new(HashSet::new()),
        })
    }

    /// Logs, once per model, that a model is missing from the pricing table.
    pub(crate) fn flag_default_price(&self, model: &str) {
        let first = match self.flagged_models.lock() {
            Ok(mut seen) => seen.insert(model.to_owned()),
            Err(_) => false,
        };
        if first {
            tracing::warn!(
                model,
                "model not in the pricing table: priced at the default"
            );
        }
    }
}

/// Runs the worker until `shutdown` is cancelled, then drains: in-flight batches are written
/// and acknowledged, in-flight webhook deliveries finish, and the function returns.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = bind_metrics(&settings).await?;
    run_with_metrics(settings, listener, shutdown).await
}

/// Binds `worker.metrics_listen`. On port 0 the system picks the port; the listener's
/// `local_addr` reports it (tests start the worker so).
pub async fn bind_metrics(settings: &Settings) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(settings.worker.metrics_listen)
        .await
        .with_context(|| {
            format!(
                "bind worker.metrics_listen {}",
                settings.worker.metrics_listen
            )
        })
}

/// [`run`] with the metrics page served on an already bound `listener`.
pub async fn run_with_metrics(
    settings: Settings,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let handle = telemetry::prometheus(&metrics::BUCKETS)?;
    metrics::describe();
    tracing::info!(metrics_listen = %listener.local_addr()?, "wrapx-worker metrics listening");
    let worker = Arc::new(Worker::build(settings)?);
    let metrics_stop = CancellationToken::new();
    let metrics_task = tokio::spawn(telemetry::serve_metrics(
        listener,
        handle,
        metrics_stop.clone(),
    ));

    session::run(worker, shutdown).await;

    // Metrics stay up until the consumers have drained, so the last counts can be scraped.
    metrics_stop.cancel();
    let _ = metrics_task.await;
    Ok(())
}
