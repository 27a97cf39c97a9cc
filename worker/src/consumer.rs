//! One consumer on one queue, the primitives every handler uses: open a channel with the
//! configured prefetch, collect a batch of deliveries, [`settle`] what a handler decided (the
//! one place an [`Outcome`] becomes an ack or a nack, and is counted), and close.

use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use lapin::{
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    },
    types::FieldTable,
    Channel, Connection, Consumer,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{
    metrics,
    outcome::{Outcome, Span},
    Worker,
};

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

/// Settles messages on `channel` per `outcome`, and counts them under `queue`.
pub async fn settle(
    channel: &Channel,
    queue: &'static str,
    span: Span,
    outcome: Outcome,
) -> lapin::Result<()> {
    let (tag, multiple, count) = match span {
        Span::One(tag) => (tag, false, 1),
        Span::Packed { tag, count } => (tag, false, count),
        Span::UpTo { tag, count } => (tag, true, count),
    };
    let result = match outcome {
        Outcome::Done => channel.basic_ack(tag, BasicAckOptions { multiple }).await,
        Outcome::Retry => {
            channel
                .basic_nack(
                    tag,
                    BasicNackOptions {
                        multiple,
                        requeue: true,
                    },
                )
                .await
        }
        Outcome::DeadLetter => {
            channel
                .basic_nack(
                    tag,
                    BasicNackOptions {
                        multiple,
                        requeue: false,
                    },
                )
                .await
        }
    };
    if result.is_ok() {
        metrics::events(queue, outcome, count);
    }
    result
}
