//! Start-up and shutdown: the background tasks (event publisher, invalidation and cooldown
//! subscriber, cache sweeper, metrics listener) and the pingora proxy service, all on one tokio runtime this
//! module drains at exit.
//!
//! pingora's own `Server` sleeps a fixed grace period on SIGTERM; running the proxy service
//! directly lets the gateway stop accepting at once, wait only as long as requests are in
//! flight (at most `gateway.shutdown_grace_ms`), then flush the publisher.

use std::{net::SocketAddr, os::fd::IntoRawFd, sync::Arc, time::Duration};

use anyhow::Context;
use pingora_core::{
    listeners::{L4BufferSettings, ListenerConfig},
    server::{configuration::ServerConf, Fds, ListenFds},
    services::{listening::Service, Service as _},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use wrapx_core::{cache::CacheNames, config::Settings, crypto::MasterKeys, keys::KeyHasher};

use crate::{
    auth::{Authenticator, RecordCache},
    ctx::InFlight,
    events::EventPublisher,
    head_deadline::WithHeadDeadline,
    invalidation,
    limits::RateLimiter,
    metrics,
    proxy::Gateway,
    routing::cooldown::Cooldowns,
    tls::RootsBundle,
    upstream::Timeouts,
};

/// Runs the gateway until `shutdown` is cancelled, then drains it.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let g = &settings.gateway;
    let (listen, listen_fds) = bind(g.listen)?;

    let background = CancellationToken::new();
    let tasks = TaskTracker::new();

    let handle =
        wrapx_core::telemetry::prometheus(&metrics::buckets()).context("metrics recorder")?;
    metrics::describe();
    let metrics_listener = tokio::net::TcpListener::bind(g.metrics_listen)
        .await
        .with_context(|| format!("gateway.metrics_listen {}", g.metrics_listen))?;
    tracing::info!(addr = %metrics_listener.local_addr()?, "metrics listening");
    tasks.spawn(wrapx_core::telemetry::serve_metrics(
        metrics_listener,
        handle,
        background.clone(),
    ));

    let publisher_stop = CancellationToken::new();
    let (publisher, publisher_task) = EventPublisher::start(&settings, publisher_stop.clone())
        .await
        .context("event publisher")?;
    {
        let publisher = publisher.clone();
        let stop = background.clone();
        tasks.spawn(async move {
            loop {
                metrics::spooled(publisher.spooled());
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
    }

    let names = CacheNames::new(settings.redis.prefix.clone());
    let redis = wrapx_core::redis_pool::pool(&settings.redis).context("redis pool")?;
    let db = wrapx_core::db::pool(&settings.database).context("database pool")?;
    let cache = Arc::new(RecordCache::new(
        Duration::from_millis(g.key_cache_ttl_ms),
        Duration::from_millis(g.negative_cache_ttl_ms),
    ));
    let redis_timeout = Duration::from_millis(settings.redis.timeout_ms);
    let cooldowns = Arc::new(Cooldowns::new(redis.clone(), redis_timeout, &names));
    tasks.spawn(invalidation::run(
        settings.redis.url.expose().to_owned(),
        names.invalidation_channel(),
        cache.clone(),
        cooldowns.clone(),
        background.clone(),
    ));
    tasks.spawn(invalidation::sweep(cache.clone(), background.clone()));

    let in_flight = Arc::new(InFlight::default());
    let gateway = Gateway {
        auth: Authenticator {
            hasher: KeyHasher::from_settings(&settings.security).context("security.hash_pepper")?,
            names: names.clone(),
            redis: redis.clone(),
            redis_timeout,
            db,
            master: MasterKeys::from_settings(&settings.security).context("security.master_key")?,
            allow_loopback: settings.security.allow_loopback,
            cache,
            cooldowns: cooldowns.clone(),
        },
        cooldowns,
        max_retry_after: Duration::from_millis(g.max_retry_after_ms),
        limiter: RateLimiter::new(redis, names, g.fallback_rate_per_second, redis_timeout),
        publisher: publisher.clone(),
        in_flight: in_flight.clone(),
        timeouts: Timeouts {
            connect: Duration::from_millis(g.connect_timeout_ms),
            first_byte: Duration::from_millis(g.first_byte_timeout_ms),
            idle: Duration::from_millis(g.idle_timeout_ms),
        },
        max_body_bytes: g.max_body_bytes,
        body_read_timeout: Duration::from_millis(g.body_read_timeout_ms),
        event_data_max_bytes: g.event_data_max_bytes,
        access_log: g.access_log,
    };

    // Built before the proxy, which reads it once; removed when `run` returns.
    let roots = RootsBundle::build(&settings.security)?;
    let conf = Arc::new(ServerConf {
        ca_file: roots.as_ref().map(|r| r.path().display().to_string()),
        // Routing bounds a request's attempts itself (at most 10, plus one same-target retry
        // per target and retries on stale pooled connections); pingora's cap only backs it up.
        max_retries: 32,
        ..ServerConf::default()
    });
    let proxy = WithHeadDeadline::new(
        pingora_proxy::http_proxy(&conf, gateway),
        Duration::from_millis(g.header_read_timeout_ms),
    );
    let mut service = Service::new("wrapx-gateway".to_owned(), proxy);
    // No read buffer in front of client sockets: pingora's default is 64 KiB per connection,
    // zero-filled, so resident for every open or idle keep-alive connection once the allocator
    // reuses memory (2,000 open streams peaked at 292 MB with it, 166 MB without). A request
    // head is read into pingora's own 4 KiB head buffer in one read, and its body into the
    // body reader's buffer, so for LLM-sized requests the buffer saved no reads.
    service.add_listener(
        ListenerConfig::tcp(listen.to_string()).l4_buffer(L4BufferSettings::default().read(0)),
    );
    let (stop_accepting, accepting) = tokio::sync::watch::channel(false);
    let listener = tokio::spawn(async move {
        Service::start_service(&mut service, Some(listen_fds), accepting, 1).await;
    });
    tracing::info!(%listen, "wrapx-gateway listening");

    shutdown.cancelled().await;
    tracing::info!(
        in_flight = in_flight.count(),
        "stopping: no new connections; draining in-flight requests"
    );
    let _ = stop_accepting.send(true);
    let grace = Duration::from_millis(g.shutdown_grace_ms);
    if tokio::time::timeout(grace, in_flight.wait_idle())
        .await
        .is_err()
    {
        tracing::warn!(
            in_flight = in_flight.count(),
            "grace period over: cutting the remaining requests"
        );
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), listener).await;

    // Every request has handed over its event: flush them to the broker or the spool.
    publisher_stop.cancel();
    publisher_task.join().await;
    background.cancel();
    tasks.close();
    tasks.wait().await;
    tracing::info!("wrapx-gateway stopped");
    Ok(())
}

/// Binds `gateway.listen` here rather than in pingora, whose listener panics in its task on a
/// busy port: a busy port is an error at start, and on port 0 the address the system chose is
/// known (and logged) before the first request. The socket goes to pingora as an inherited
/// descriptor (`ListenFds`, the table its graceful upgrade uses), under its bound address.
fn bind(addr: SocketAddr) -> anyhow::Result<(SocketAddr, ListenFds)> {
    let socket =
        std::net::TcpListener::bind(addr).with_context(|| format!("gateway.listen {addr}"))?;
    // pingora registers the descriptor with tokio as is.
    socket.set_nonblocking(true)?;
    let bound = socket.local_addr()?;
    let mut fds = Fds::new();
    fds.add(bound.to_string(), socket.into_raw_fd());
    Ok((bound, Arc::new(parking_lot::Mutex::new(fds))))
}
