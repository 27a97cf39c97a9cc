//! The broker connection and its reconnect loop. Each session connects, declares the whole
//! topology again (a restarted broker may have lost nothing, or everything), and runs the three
//! consumers, each on its own channel with the configured prefetch. When any of them fails or
//! the connection drops, the others are stopped, the session ends, and a new one starts after
//! a backoff: unacknowledged messages go back to their queues and are redelivered, and every
//! handler is idempotent, so a reconnect loses and duplicates nothing.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wrapx_core::{
    amqp,
    backoff::{Backoff, Jitter},
};

use crate::Worker;

/// Runs sessions until `shutdown`; returns once the consumers have drained.
pub async fn run(worker: Arc<Worker>, shutdown: CancellationToken) {
    // Up to a quarter extra, so several workers that lost the broker together do not all
    // reconnect in the same instant.
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10))
        .jitter(Jitter::Extra(0.25));
    while !shutdown.is_cancelled() {
        let started = Instant::now();
        match session(&worker, &shutdown).await {
            Ok(()) => {
                if shutdown.is_cancelled() {
                    break;
                }
            }
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "broker session ended: reconnecting"
            ),
        }
        // A session that lasted a while was healthy: start the backoff over.
        if started.elapsed() > Duration::from_secs(30) {
            backoff.reset();
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(backoff.next()) => {}
        }
    }
}

async fn session(worker: &Arc<Worker>, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let connection = amqp::connect_url(worker.settings.amqp.url.expose(), "wrapx-worker")
        .await
        .context("connect to RabbitMQ")?;
    // Stops this session's consumers: on shutdown, when one of them fails, or when the
    // connection reports an error.
    let stop = shutdown.child_token();
    {
        let stop = stop.clone();
        connection.on_error(move |e| {
            tracing::warn!(error = %e, "broker connection error");
            stop.cancel();
        });
    }
    let setup = connection
        .create_channel()
        .await
        .context("open a channel")?;
    amqp::declare_topology(&setup, &worker.settings.amqp.webhook_retry_delays_ms)
        .await
        .context("declare the topology")?;
    let _ = setup.close(200, "topology declared").await;
    tracing::info!("connected to RabbitMQ: consuming");

    let guarded = |name: &'static str, result: anyhow::Result<()>| {
        if let Err(e) = &result {
            tracing::warn!(consumer = name, error = format!("{e:#}"), "consumer failed");
            stop.cancel();
        }
        result
    };
    let (logs, fanout, deliveries, ()) = tokio::join!(
        async {
            guarded(
                "logs",
                crate::logs::consume(worker, &connection, &stop).await,
            )
        },
        async {
            guarded(
                "webhook-events",
                crate::webhooks::fanout::consume(worker, &connection, &stop).await,
            )
        },
        async {
            guarded(
                "deliveries",
                crate::webhooks::deliver::consume(worker, &connection, &stop).await,
            )
        },
        crate::backlog::watch(worker, &connection, &stop),
    );
    let _ = connection.close(200, "worker stopping").await;
    logs?;
    fanout?;
    deliveries?;
    if shutdown.is_cancelled() {
        Ok(())
    } else {
        anyhow::bail!("the broker connection was lost")
    }
}
