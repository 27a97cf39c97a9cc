//! One broker session: a connection, the topology declared, a confirm channel, and pipelined
//! publishing of a batch with a per-message outcome.

use std::time::Duration;

use futures::future::join_all;
use lapin::{options::BasicPublishOptions, publisher_confirm::Confirmation, Channel, Connection};
use tokio::time::Instant;
use uuid::Uuid;
use wrapx_core::amqp::{self, EVENTS_EXCHANGE};

/// An event ready to go: serialized once, on the request's thread.
pub(super) struct Outgoing {
    pub(super) id: Uuid,
    pub(super) routing_key: &'static str,
    /// `Event::to_json`: one line, no newline.
    pub(super) body: Vec<u8>,
}

/// What became of one publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The broker acked it and routed it to at least one queue.
    Confirmed,
    /// The broker returned it (mandatory): no queue is bound for its routing key.
    Unroutable,
    /// The broker refused it.
    Nacked,
    /// No confirm before the deadline (a blocked broker), or the connection failed: the
    /// broker may or may not have it.
    Unknown,
}

pub(super) struct Broker {
    connection: Connection,
    channel: Channel,
}

impl Broker {
    /// Connects, declares the whole topology (idempotent: a broker that lost it, or a vhost
    /// that was recreated, gets it back) and opens a confirm channel, all within `timeout`.
    pub(super) async fn connect(
        url: &str,
        retry_delays_ms: &[u64],
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let work = async {
            let connection = amqp::connect_url(url, "wrapx-gateway-events").await?;
            let channel = amqp::confirm_channel(&connection).await?;
            amqp::declare_topology(&channel, retry_delays_ms).await?;
            anyhow::Ok(Self {
                connection,
                channel,
            })
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| anyhow::anyhow!("no connection to the broker within {timeout:?}"))?
    }

    /// False once the connection or the channel has failed or closed.
    pub(super) fn is_usable(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }

    /// Publishes the whole batch before awaiting any confirm (the broker confirms them in one
    /// stream), each persistent and mandatory with its request id as message id. Every
    /// outcome is known by `deadline` at the latest.
    ///
    /// A returned (unroutable) message is told by its message id, not by the confirm that
    /// carries it: lapin hands a `basic.return` to whichever pending confirm an ack completes
    /// next, and an ack with `multiple` completes them in no particular order. The broker
    /// sends the return before the ack of the same message, so by the time every confirm of
    /// the batch is in, every return of the batch is among them.
    pub(super) async fn publish_batch(
        &self,
        batch: &[Outgoing],
        deadline: Instant,
    ) -> Vec<Outcome> {
        // join_all polls the futures in order the first time, so frames and delivery tags are
        // in batch order.
        let confirmations = join_all(
            batch
                .iter()
                .map(|message| self.publish_one(message, deadline)),
        )
        .await;
        let mut returned: Vec<String> = Vec::new();
        let mut outcomes: Vec<Outcome> = confirmations
            .into_iter()
            .map(|confirmation| {
                let (outcome, carried) = match confirmation {
                    Some(Confirmation::Ack(carried)) => (Outcome::Confirmed, carried),
                    Some(Confirmation::NotRequested) => (Outcome::Confirmed, None),
                    Some(Confirmation::Nack(carried)) => (Outcome::Nacked, carried),
                    None => (Outcome::Unknown, None),
                };
                // The carried return may be another message's: it is settled below by id.
                if let Some(id) = carried.and_then(|m| m.properties.message_id().clone()) {
                    returned.push(id.to_string());
                }
                outcome
            })
            .collect();
        if !returned.is_empty() {
            for (message, outcome) in batch.iter().zip(outcomes.iter_mut()) {
                if *outcome == Outcome::Confirmed
                    && returned.iter().any(|id| *id == message.id.to_string())
                {
                    *outcome = Outcome::Unroutable;
                }
            }
        }
        outcomes
    }

    /// The broker's confirmation of one publish, or `None` when its fate is unknown (no
    /// confirm by `deadline`, or the connection failed).
    async fn publish_one(&self, message: &Outgoing, deadline: Instant) -> Option<Confirmation> {
        let properties = amqp::json_properties(&message.id.to_string()).with_delivery_mode(2);
        let work = async {
            let confirm = self
                .channel
                .basic_publish(
                    EVENTS_EXCHANGE,
                    message.routing_key,
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &message.body,
                    properties,
                )
                .await?;
            confirm.await
        };
        match tokio::time::timeout_at(deadline, work).await {
            Ok(Ok(confirmation)) => Some(confirmation),
            Ok(Err(_)) | Err(_) => None,
        }
    }

    /// Closes the session, giving the broker a moment to acknowledge.
    pub(super) async fn close(self) {
        let _ =
            tokio::time::timeout(Duration::from_secs(1), self.connection.close(200, "bye")).await;
    }
}
