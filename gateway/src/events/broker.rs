//! One broker session: a connection, the topology declared, a confirm channel, and pipelined
//! publishing of a batch, packed several events to a message, with a per-event outcome.

use std::time::Duration;

use futures::future::join_all;
use lapin::{
    options::BasicPublishOptions, publisher_confirm::Confirmation, BasicProperties, Channel,
    Connection,
};
use tokio::time::Instant;
use uuid::Uuid;
use wrapx_core::{
    amqp::{self, EVENTS_EXCHANGE},
    events::PACKED_CONTENT_TYPE,
};

/// An event ready to go: serialized once, on the request's thread.
pub(super) struct Outgoing {
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

    /// Publishes the batch packed into messages (see [`pack`]), all of them before awaiting
    /// any confirm (the broker confirms them in one stream), each persistent and mandatory.
    /// Returns one outcome per event, its message's; every outcome is known by `deadline` at
    /// the latest.
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
        let packs = pack(batch);
        // join_all polls the futures in order the first time, so frames and delivery tags are
        // in pack order.
        let confirmations = join_all(packs.iter().map(|p| self.publish_one(p, deadline))).await;
        let mut returned: Vec<String> = Vec::new();
        let mut pack_outcomes: Vec<Outcome> = confirmations
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
        for (p, outcome) in packs.iter().zip(pack_outcomes.iter_mut()) {
            if *outcome == Outcome::Confirmed && returned.contains(&p.message_id) {
                *outcome = Outcome::Unroutable;
            }
        }
        let mut outcomes = vec![Outcome::Unknown; batch.len()];
        for (p, outcome) in packs.iter().zip(pack_outcomes) {
            for &i in &p.members {
                outcomes[i] = outcome;
            }
        }
        outcomes
    }

    /// The broker's confirmation of one publish, or `None` when its fate is unknown (no
    /// confirm by `deadline`, or the connection failed).
    async fn publish_one(&self, pack: &Pack, deadline: Instant) -> Option<Confirmation> {
        let properties = BasicProperties::default()
            .with_content_type(PACKED_CONTENT_TYPE.into())
            .with_message_id(pack.message_id.as_str().into())
            .with_delivery_mode(2);
        let work = async {
            let confirm = self
                .channel
                .basic_publish(
                    EVENTS_EXCHANGE,
                    pack.routing_key,
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &pack.body,
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

/// At most this many events share a message. The broker's cost is per message, and per queue
/// it is routed to, far more than per byte: one message per request was RabbitMQ's largest
/// share of the machine under load (measured in the gateway README). The worker writes its
/// batches in units of whole messages, so a pack stays well below `worker.batch_size`.
pub(super) const PACK_EVENTS: usize = 64;
/// A pack is closed once its body reaches this size (so it holds at most this plus one event),
/// which bounds what a consumer's prefetch holds in memory.
const PACK_BYTES: usize = 256 * 1024;

/// Events sharing one message: their lines, and where each came from in the batch.
struct Pack {
    routing_key: &'static str,
    /// Its own id, to tell a returned message by; the events keep theirs inside.
    message_id: String,
    /// Indices into the batch.
    members: Vec<usize>,
    /// `Event::to_json` lines joined by newlines (see `wrapx_core::events::lines`).
    body: Vec<u8>,
}

/// Packs a batch into messages of up to [`PACK_EVENTS`] events and about [`PACK_BYTES`],
/// one routing key per message (the bindings route by it), keeping the batch's order within a
/// routing key.
fn pack(batch: &[Outgoing]) -> Vec<Pack> {
    let mut closed: Vec<Pack> = Vec::new();
    // A gateway batch carries a handful of routing keys at most: a list beats a map here.
    let mut open: Vec<Pack> = Vec::new();
    for (i, message) in batch.iter().enumerate() {
        let slot = match open
            .iter()
            .position(|p| p.routing_key == message.routing_key)
        {
            Some(slot) => slot,
            None => {
                open.push(Pack {
                    routing_key: message.routing_key,
                    message_id: Uuid::now_v7().to_string(),
                    members: Vec::new(),
                    body: Vec::new(),
                });
                open.len() - 1
            }
        };
        let p = &mut open[slot];
        if !p.body.is_empty() {
            p.body.push(b'\n');
        }
        p.body.extend_from_slice(&message.body);
        p.members.push(i);
        if p.members.len() >= PACK_EVENTS || p.body.len() >= PACK_BYTES {
            closed.push(open.swap_remove(slot));
        }
    }
    closed.extend(open);
    closed
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn outgoing(routing_key: &'static str, body: &[u8]) -> Outgoing {
        Outgoing {
            routing_key,
            body: body.to_vec(),
        }
    }

    #[test]
    fn events_are_packed_by_routing_key_in_order_and_within_the_bounds() {
        let mut batch = Vec::new();
        for i in 0..150 {
            let key = if i % 10 == 9 {
                "rate_limit.exceeded"
            } else {
                "request.completed"
            };
            batch.push(outgoing(key, format!("{{\"n\":{i}}}").as_bytes()));
        }
        let packs = pack(&batch);
        let mut seen = vec![0; batch.len()];
        for p in &packs {
            assert!(p.members.len() <= PACK_EVENTS);
            let lines: Vec<&[u8]> = wrapx_core::events::lines(&p.body).collect();
            assert_eq!(lines.len(), p.members.len());
            for (line, &i) in lines.iter().zip(&p.members) {
                assert_eq!(
                    *line,
                    batch[i].body.as_slice(),
                    "a line is its event's body"
                );
                assert_eq!(batch[i].routing_key, p.routing_key);
                seen[i] += 1;
            }
            assert!(
                p.members.windows(2).all(|w| w[0] < w[1]),
                "batch order kept"
            );
        }
        assert!(
            seen.iter().all(|&n| n == 1),
            "every event in exactly one pack"
        );
        // 135 completed events in 64-event packs, 15 rate-limit events in one.
        assert_eq!(packs.len(), 4);
        let ids: std::collections::HashSet<&str> =
            packs.iter().map(|p| p.message_id.as_str()).collect();
        assert_eq!(ids.len(), packs.len(), "each message has its own id");
    }

    #[test]
    fn a_pack_is_closed_past_its_byte_bound() {
        let big = vec![b'x'; PACK_BYTES / 2 + 1];
        let batch: Vec<Outgoing> = (0..5)
            .map(|_| outgoing("request.completed", &big))
            .collect();
        let packs = pack(&batch);
        assert_eq!(
            packs.iter().map(|p| p.members.len()).collect::<Vec<_>>(),
            vec![2, 2, 1]
        );
    }
}
