//! Settling and dead-lettering log batches: a batch is written, then acknowledged once the
//! batch before it is (one multiple ack covers every earlier delivery), or written again one
//! event at a time when the database refuses it as data, so that only the offending events are
//! dead-lettered.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use lapin::{
    message::Delivery,
    types::{AMQPValue, FieldTable},
    Channel,
};
use tokio::{sync::OwnedSemaphorePermit, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use wrapx_core::{
    amqp::{self, DEAD_EXCHANGE, LOGS_QUEUE},
    events::{Event, RequestEvent},
};

use super::write::{write_retrying, Written};
use crate::{
    consumer::settle,
    metrics,
    outcome::{Outcome, Span},
    Worker,
};

/// A batch being written, that settles only after the batch before it settled.
pub(super) type InFlight = JoinHandle<anyhow::Result<()>>;

/// A request event to write, and the message it came in.
pub(super) struct Pending {
    pub tag: u64,
    /// The message held this event and nothing else, so it can be dead-lettered whole.
    pub alone: bool,
    pub event: RequestEvent,
}

/// The request events of one batch, in delivery order, and what writing them needs.
pub(super) struct Batch {
    pub worker: Arc<Worker>,
    pub channel: Channel,
    pub publisher: Channel,
    pub events: Vec<Pending>,
    pub stop: CancellationToken,
}

impl Batch {
    /// Writes the batch, then settles it once `previous` has settled: a batch is acknowledged
    /// with one multiple ack, which would also cover an earlier batch still uncommitted.
    /// Holds its `slot` until settled. A failure stops the consumer.
    pub(super) async fn run(
        self,
        previous: Option<InFlight>,
        slot: OwnedSemaphorePermit,
    ) -> anyhow::Result<()> {
        let batch: Vec<&RequestEvent> = self.events.iter().map(|p| &p.event).collect();
        let written = write_retrying(&self.worker, &self.publisher, &batch, &self.stop).await;
        let result = async {
            if let Some(previous) = previous {
                previous.await??;
            }
            self.settle(written).await
        }
        .await;
        if result.is_err() {
            self.stop.cancel();
        }
        drop(slot);
        result
    }

    async fn settle(&self, written: Written) -> anyhow::Result<()> {
        let Some(last) = self.events.last().map(|p| p.tag) else {
            return Ok(());
        };
        let span = Span::UpTo {
            tag: last,
            count: self.events.len() as u64,
        };
        match written {
            Written::Committed => settle(&self.channel, LOGS_QUEUE, span, Outcome::Done).await?,
            // Stopping while the database is unreachable: back to the queue for the next worker.
            Written::Stopped => settle(&self.channel, LOGS_QUEUE, span, Outcome::Retry).await?,
            Written::Refused(e) => {
                tracing::warn!(error = %e, rows = self.events.len(), "the database refused a batch as data: writing it one event at a time");
                self.write_one_by_one(last).await?;
            }
        }
        Ok(())
    }

    /// Writes every event alone, and settles each message once all of its events are written
    /// or dead-lettered (a message's events are next to each other in the batch).
    async fn write_one_by_one(&self, last: u64) -> anyhow::Result<()> {
        let (worker, channel, publisher, stop) =
            (&self.worker, &self.channel, &self.publisher, &self.stop);
        let mut start = 0;
        while start < self.events.len() {
            let tag = self.events[start].tag;
            let end = start
                + self.events[start..]
                    .iter()
                    .take_while(|p| p.tag == tag)
                    .count();
            let mut outcome = Outcome::Done;
            let mut refused = Vec::new();
            for p in &self.events[start..end] {
                match write_retrying(worker, publisher, &[&p.event], stop).await {
                    Written::Committed => {}
                    Written::Refused(e) => {
                        tracing::warn!(request_id = %p.event.request_id, error = %e, "event refused by the database: dead-lettered");
                        if p.alone {
                            outcome = Outcome::DeadLetter;
                        } else {
                            let body = Event::Request(p.event.clone()).to_json()?;
                            refused.push((body, format!("refused by the database: {e}")));
                        }
                    }
                    Written::Stopped => {
                        let count = (self.events.len() - start) as u64;
                        settle(
                            channel,
                            LOGS_QUEUE,
                            Span::UpTo { tag: last, count },
                            Outcome::Retry,
                        )
                        .await?;
                        return Ok(());
                    }
                }
            }
            dead_letter(worker, publisher, refused).await?;
            let span = match end - start {
                1 => Span::One(tag),
                n => Span::Packed {
                    tag,
                    count: n as u64,
                },
            };
            settle(channel, LOGS_QUEUE, span, outcome).await?;
            start = end;
        }
        Ok(())
    }
}

/// Publishes events from packed messages to `wrapx.dead`, one message each (the rest of their
/// message is written as usual), with the queue and the reason in `x-wrapx-queue` and
/// `x-wrapx-reason` (a nack would have given them an `x-death` record), and counts them as
/// dead-lettered. Rare, so one confirm at a time.
pub(super) async fn dead_letter(
    worker: &Worker,
    publisher: &Channel,
    events: Vec<(Vec<u8>, String)>,
) -> anyhow::Result<()> {
    let timeout = Duration::from_millis(worker.settings.amqp.publish_timeout_ms);
    for (body, reason) in &events {
        let mut headers = FieldTable::default();
        headers.insert(
            "x-wrapx-queue".into(),
            AMQPValue::LongString(LOGS_QUEUE.into()),
        );
        headers.insert(
            "x-wrapx-reason".into(),
            AMQPValue::LongString(reason.as_str().into()),
        );
        let properties = amqp::json_properties(&Uuid::now_v7().to_string()).with_headers(headers);
        amqp::publish_confirmed(publisher, DEAD_EXCHANGE, "", body, properties, timeout)
            .await
            .context("dead-letter an event of a packed message")?;
    }
    metrics::events(LOGS_QUEUE, Outcome::DeadLetter, events.len() as u64);
    Ok(())
}

pub(super) fn warn_poison(d: &Delivery, reason: &str) {
    tracing::warn!(
        queue = LOGS_QUEUE,
        delivery_tag = d.delivery_tag,
        message_id = d
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str())
            .unwrap_or(""),
        redelivered = d.redelivered,
        bytes = d.data.len(),
        reason,
        "poison event: dead-lettered"
    );
}
