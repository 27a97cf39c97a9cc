//! The broker connection and its reconnect loop. Each session connects, declares the whole
//! topology again (a restarted broker may have lost nothing, or everything), and runs the three
//! consumers, each on its own channel with the configured prefetch. When any of them fails or
//! the connection drops, the others are stopped, the session ends, and a new one starts after
//! a backoff: unacknowledged messages go back to their queues and are redelivered, and every
//! handler is idempotent, so a reconnect loses and duplicates nothing.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use futures::StreamExt;
use lapin::{
    message::Delivery,
    options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions},
    types::FieldTable,
    Channel, Connection, Consumer,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use wrapx_core::amqp;

use crate::Worker;

/// Runs sessions until `shutdown`; returns once the consumers have drained.
pub async fn run(worker: Arc<Worker>, shutdown: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
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
            _ = tokio::time::sleep(backoff.next_delay()) => {}
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

/// Opens a consuming channel on `queue` with the configured prefetch.
pub(crate) async fn open(
    worker: &Worker,
    connection: &Connection,
    queue: &str,
) -> anyhow::Result<(Channel, Consumer)> {
    let channel = connection
        .create_channel()
        .await
        .context("open a channel")?;
    channel
        .basic_qos(worker.settings.worker.prefetch, BasicQosOptions::default())
        .await
        .context("set the prefetch")?;
    let tag = format!("wrapx-worker-{queue}-{}", uuid::Uuid::now_v7().simple());
    let consumer = channel
        .basic_consume(
            queue,
            &tag,
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("consume {queue}"))?;
    Ok((channel, consumer))
}

/// Stops the broker's pushes and closes the channel: what was prefetched but not settled
/// returns to the queue.
pub(crate) async fn close(channel: &Channel, consumer: &Consumer) {
    let _ = channel
        .basic_cancel(consumer.tag().as_str(), BasicCancelOptions::default())
        .await;
    let _ = channel.close(200, "consumer stopping").await;
}

/// A batch collected from a consumer, and whether collection stopped because the worker is
/// stopping (the batch is still to be handled, then the consumer ends).
pub(crate) struct Collected {
    pub deliveries: Vec<Delivery>,
    pub stopping: bool,
}

/// Waits for a first delivery, then collects more until they hold `max` events or `max_wait`
/// has passed since the first. A message counts as the events it carries (the gateway packs
/// several to a message), so a batch stays near `max` rows whatever the packing.
/// A consumer stream that ends or fails is an error: the session reconnects, and the broker
/// redelivers whatever this batch held.
pub(crate) async fn collect(
    consumer: &mut Consumer,
    max: usize,
    max_wait: Duration,
    stop: &CancellationToken,
) -> anyhow::Result<Collected> {
    let mut deliveries = Vec::new();
    let first = tokio::select! {
        biased;
        _ = stop.cancelled() => return Ok(Collected { deliveries, stopping: true }),
        next = consumer.next() => next,
    };
    let first = delivery(first)?;
    let mut events = events_in(&first);
    deliveries.push(first);
    let deadline = Instant::now() + max_wait;
    while events < max {
        let next = tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(Collected { deliveries, stopping: true }),
            _ = tokio::time::sleep_until(deadline) => break,
            next = consumer.next() => next,
        };
        let next = delivery(next)?;
        events += events_in(&next);
        deliveries.push(next);
    }
    Ok(Collected {
        deliveries,
        stopping: false,
    })
}

/// How many events a message carries: one per line, and never less than one.
fn events_in(delivery: &Delivery) -> usize {
    wrapx_core::events::lines(&delivery.data).count().max(1)
}

fn delivery(next: Option<lapin::Result<Delivery>>) -> anyhow::Result<Delivery> {
    match next {
        Some(Ok(d)) => Ok(d),
        Some(Err(e)) => Err(anyhow::Error::new(e).context("consumer failed")),
        None => anyhow::bail!("the consumer was cancelled by the broker"),
    }
}

/// Exponential backoff with a cap and some jitter, for reconnects and database retries.
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub(crate) fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            current: first,
        }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.current;
        self.current = (self.current * 2).min(self.max);
        // Up to 25% jitter so several workers do not retry in lockstep.
        let jitter = delay.mul_f64(rand_fraction() * 0.25);
        delay + jitter
    }

    pub(crate) fn reset(&mut self) {
        self.current = self.first;
    }
}

/// A fraction in [0, 1) from the clock's nanoseconds: jitter needs no cryptographic quality.
fn rand_fraction() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1000) / 1000.0
}
