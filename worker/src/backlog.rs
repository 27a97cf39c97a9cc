//! What waits in the broker, for operators: the depth of every queue the worker drains (the
//! webhook backlog is `wrapx.deliveries` plus the retry tiers) and the broker's round-trip
//! time, read every few seconds with passive declares on a channel of its own.

use std::time::{Duration, Instant};

use lapin::{options::QueueDeclareOptions, types::FieldTable, Channel, Connection};
use tokio_util::sync::CancellationToken;
use wrapx_core::amqp::{self, DEAD_QUEUE, DELIVERIES_QUEUE, LOGS_QUEUE, WEBHOOK_EVENTS_QUEUE};

use crate::{metrics, Worker};

const EVERY: Duration = Duration::from_secs(5);

/// Runs until `stop`. Never fails the session: a probe that fails is logged and tried again.
pub async fn watch(worker: &Worker, connection: &Connection, stop: &CancellationToken) {
    let mut queues: Vec<String> = [
        LOGS_QUEUE,
        WEBHOOK_EVENTS_QUEUE,
        DELIVERIES_QUEUE,
        DEAD_QUEUE,
    ]
    .iter()
    .map(|q| (*q).to_owned())
    .collect();
    queues.extend(
        worker
            .settings
            .amqp
            .webhook_retry_delays_ms
            .iter()
            .map(|delay| amqp::retry_queue(*delay)),
    );
    let mut channel: Option<Channel> = None;
    loop {
        if channel.as_ref().is_none_or(|c| !c.status().connected()) {
            channel = connection.create_channel().await.ok();
        }
        if let Some(channel) = &channel {
            for queue in &queues {
                let started = Instant::now();
                match depth(channel, queue).await {
                    Ok(messages) => {
                        metrics::broker_round_trip(started.elapsed());
                        metrics::queue_depth(queue, messages);
                    }
                    Err(error) => {
                        tracing::debug!(queue, %error, "reading a queue's depth failed");
                        break; // the channel is closed now; a new one next time
                    }
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}

async fn depth(channel: &Channel, queue: &str) -> lapin::Result<u32> {
    let declared = channel
        .queue_declare(
            queue,
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(declared.message_count())
}
