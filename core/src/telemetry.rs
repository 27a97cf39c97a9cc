//! Logs and metrics set-up shared by the binaries: `tracing` (text or JSON), and one
//! Prometheus recorder per process with a small HTTP listener for `/metrics`.

use std::{
    convert::Infallible,
    sync::{Mutex, OnceLock},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::{LogFormat, LogSettings},
    Error, Result,
};

/// Installs the global `tracing` subscriber; a second call (tests) is a no-op.
pub fn init_tracing(settings: &LogSettings) {
    // lapin logs a returned (unroutable) message whole, body included, at warn: the body holds
    // request data, so that logger is kept to errors whatever the configured level.
    let directives = format!("{},lapin::returned_messages=error", settings.level);
    let filter = tracing_subscriber::EnvFilter::try_new(directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let _ = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Histogram buckets for one metric, by its full name.
pub type Buckets<'a> = (&'a str, &'a [f64]);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
/// Serialises installation: without it a second thread can fail `install_recorder` after the
/// first installed it but before the first stored the handle, and see neither.
static INSTALL: Mutex<()> = Mutex::new(());

/// Installs the process's Prometheus recorder once and returns its handle.
pub fn prometheus(buckets: &[Buckets<'_>]) -> Result<PrometheusHandle> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let _installing = INSTALL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let mut builder = PrometheusBuilder::new();
    for (name, bounds) in buckets {
        builder = builder
            .set_buckets_for_metric(Matcher::Full((*name).to_owned()), bounds)
            .map_err(|e| Error::Config(format!("metrics buckets for {name}: {e}")))?;
    }
    let handle = builder
        .install_recorder()
        .map_err(|e| Error::Config(format!("metrics: {e}")))?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// The Prometheus text of the process's metrics, with the process's own (resident memory, CPU
/// seconds, open descriptors, threads) read fresh at each scrape.
pub fn render(handle: &PrometheusHandle) -> String {
    static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();
    PROCESS
        .get_or_init(|| {
            let collector = metrics_process::Collector::default();
            collector.describe();
            collector
        })
        .collect();
    handle.render()
}

/// Serves `GET /metrics` until `shutdown`; other paths answer 404.
pub async fn serve_metrics(
    listener: TcpListener,
    handle: PrometheusHandle,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else { continue };
        let handle = handle.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = if request.uri().path() == "/metrics" {
                    Response::builder()
                        .header("content-type", "text/plain; version=0.0.4")
                        .body(Full::new(Bytes::from(render(&handle))))
                } else {
                    Response::builder()
                        .status(StatusCode::NOT_FOUND)
                        .body(Full::new(Bytes::new()))
                };
                async move { Ok::<_, Infallible>(response.unwrap_or_default()) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
    connections.close();
    connections.wait().await;
}
