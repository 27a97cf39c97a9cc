//! The log writer: request events from `wrapx.logs` become `api_logs` rows, in batches of up
//! to `worker.batch_size` (or whatever arrived within `worker.batch_max_wait_ms`), inserted by
//! one multi-row statement that skips request ids already present. Billing, quota and
//! `rate_limits` follow from the rows the statement actually inserted, in the same transaction,
//! so a redelivered batch changes nothing. The batch is acknowledged after the commit.
//!
//! Two batches are in flight at once, on their own connections: the next one is parsed and
//! inserted while the one before it commits. Acknowledgements stay in delivery order (a
//! batch's multiple ack covers every earlier delivery), so a batch is acknowledged after its
//! own commit and after the batch before it.
//!
//! A message may carry several events, one per line (the gateway packs them); a message is
//! acknowledged when every event in it is written or dead-lettered.
//!
//! Failure handling: a poison event (bad JSON, unknown schema, impossible values) is
//! dead-lettered on its own and never holds up the batch: a message that is nothing but that
//! event is nacked to `wrapx.dead`, one inside a packed message is published there alone. A
//! database that is down or busy makes the batch wait and retry with backoff, holding its
//! messages (nothing is lost, nothing loops through the queue); a batch the database refuses as
//! data is written one event at a time, so only the offending event is dead-lettered.
//!
//! Layers, each using only the ones below it: this module reads messages into events and runs
//! the batches; [`settle`] acknowledges and dead-letters them; `write` is the transaction and
//! its retries; `db_errors` tells data errors from passing ones; `rows` builds the columns of
//! the insert.

mod db_errors;
mod rows;
mod settle;
mod write;

use std::{sync::Arc, time::Duration};

use lapin::{message::Delivery, Channel, Connection};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use wrapx_core::{
    amqp::{self, LOGS_QUEUE},
    events::{Event, RequestEvent},
};

use self::settle::{dead_letter, warn_poison, Batch, InFlight, Pending};
use crate::{
    billing,
    consumer::{self, settle},
    outcome::{Outcome, Span},
    Worker,
};

/// How many batches may be in the database at once. The next batch is collected, parsed and
/// inserted while the one before it commits, so the worker, the broker and PostgreSQL work
/// side by side rather than taking turns (the difference on a small machine).
const BATCHES_IN_FLIGHT: usize = 2;

/// Consumes `wrapx.logs` until `stop`, then writes and acknowledges the batches in hand.
pub async fn consume(
    worker: &Arc<Worker>,
    connection: &Connection,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let (channel, mut deliveries) = consumer::open(worker, connection, LOGS_QUEUE).await?;
    let publisher = amqp::confirm_channel(connection).await?;
    let settings = &worker.settings.worker;
    let max_wait = Duration::from_millis(settings.batch_max_wait_ms);
    // Cancelled by a batch that failed, so collection ends and its error ends the session.
    let failed = stop.child_token();
    let slots = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    let mut last: Option<InFlight> = None;
    let result = async {
        loop {
            let collected =
                consumer::collect(&mut deliveries, settings.batch_size, max_wait, &failed).await?;
            let events = sort_out(worker, &channel, &publisher, collected.deliveries).await?;
            if !events.is_empty() {
                let slot = Arc::clone(&slots).acquire_owned().await?;
                let batch = Batch {
                    worker: Arc::clone(worker),
                    channel: channel.clone(),
                    publisher: publisher.clone(),
                    events,
                    stop: failed.clone(),
                };
                last = Some(tokio::spawn(batch.run(last.take(), slot)));
            }
            if collected.stopping {
                return Ok(());
            }
        }
    }
    .await;
    if result.is_err() {
        // Batches still retrying a write give up and go back to the queue.
        failed.cancel();
    }
    // Each batch waits for the one before it: awaiting the last drains them all.
    let drained = match last {
        Some(task) => task.await.map_err(anyhow::Error::new).and_then(|r| r),
        None => Ok(()),
    };
    consumer::close(&channel, &deliveries).await;
    let _ = publisher.close(200, "consumer stopping").await;
    result.and(drained)
}

/// What a message on `wrapx.logs` turned out to be.
enum Parsed {
    Request(Box<RequestEvent>),
    /// A valid event that has no log row (an admin event routed here by a stray binding).
    Ignored,
    Poison(String),
}

fn parse(data: &[u8]) -> Parsed {
    match Event::from_json(data) {
        Ok(Event::Request(event)) if !(100..=599).contains(&event.status) => {
            Parsed::Poison(format!("status {} is not an HTTP status", event.status))
        }
        // Billing needs the month after the request's (the period's end).
        Ok(Event::Request(event)) if billing::period_of(event.occurred_at).is_none() => {
            Parsed::Poison(format!(
                "occurred_at {} is in the calendar's last month",
                event.occurred_at
            ))
        }
        Ok(Event::Request(event)) => Parsed::Request(Box::new(event)),
        Ok(Event::Admin(_)) => Parsed::Ignored,
        Err(e) => Parsed::Poison(e.to_string()),
    }
}

/// Parses the deliveries and returns the request events with their delivery tags; messages
/// without a row are settled here, one by one (a single tag never covers another), and poison
/// events inside packed messages are dead-lettered on their own.
async fn sort_out(
    worker: &Worker,
    channel: &Channel,
    publisher: &Channel,
    deliveries: Vec<Delivery>,
) -> anyhow::Result<Vec<Pending>> {
    let mut events = Vec::with_capacity(deliveries.len());
    for d in deliveries {
        let lines: Vec<&[u8]> = wrapx_core::events::lines(&d.data).collect();
        if lines.len() <= 1 {
            match parse(&d.data) {
                Parsed::Request(event) => events.push(Pending {
                    tag: d.delivery_tag,
                    alone: true,
                    event: *event,
                }),
                Parsed::Ignored => {
                    settle(
                        channel,
                        LOGS_QUEUE,
                        Span::One(d.delivery_tag),
                        Outcome::Done,
                    )
                    .await?
                }
                Parsed::Poison(reason) => {
                    warn_poison(&d, &reason);
                    settle(
                        channel,
                        LOGS_QUEUE,
                        Span::One(d.delivery_tag),
                        Outcome::DeadLetter,
                    )
                    .await?;
                }
            }
            continue;
        }
        let before = events.len();
        let mut poison = Vec::new();
        for line in &lines {
            match parse(line) {
                Parsed::Request(event) => events.push(Pending {
                    tag: d.delivery_tag,
                    alone: false,
                    event: *event,
                }),
                Parsed::Ignored => {}
                Parsed::Poison(reason) => {
                    warn_poison(&d, &reason);
                    poison.push((line.to_vec(), reason));
                }
            }
        }
        dead_letter(worker, publisher, poison).await?;
        if events.len() == before {
            settle(
                channel,
                LOGS_QUEUE,
                Span::Packed {
                    tag: d.delivery_tag,
                    count: lines.len() as u64,
                },
                Outcome::Done,
            )
            .await?;
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn poison_is_recognised() {
        assert!(matches!(parse(b"not json"), Parsed::Poison(_)));
        assert!(matches!(
            parse(br#"{"schema":"request.v9"}"#),
            Parsed::Poison(_)
        ));
        assert!(matches!(
            parse(br#"{"schema":"request.v1"}"#),
            Parsed::Poison(_)
        ));
    }

    #[test]
    fn impossible_values_are_poison() {
        use chrono::{DateTime, Utc};
        use wrapx_core::{
            events::{RequestEvent, RequestOutcome, Usage, UsageSource},
            types::ProviderKind,
        };

        let event = |status: u16, occurred_at: DateTime<Utc>| {
            let event = RequestEvent {
                request_id: uuid::Uuid::now_v7(),
                occurred_at,
                key_id: uuid::Uuid::now_v7(),
                wrapped_api_id: uuid::Uuid::now_v7(),
                user_id: uuid::Uuid::now_v7(),
                provider: ProviderKind::Openai,
                model: "m".into(),
                status,
                outcome: RequestOutcome::Completed,
                stream: false,
                latency_ms: 1,
                ttfb_ms: None,
                usage: Usage {
                    prompt_tokens: 1,
                    completion_tokens: 1,
                    reasoning_tokens: 0,
                    source: UsageSource::Reported,
                },
                request_data: serde_json::Value::Null,
                response_data: serde_json::Value::Null,
                error: None,
                config_version: None,
            };
            Event::Request(event).to_json().unwrap()
        };
        assert!(matches!(parse(&event(200, Utc::now())), Parsed::Request(_)));
        assert!(matches!(
            parse(&event(40_000, Utc::now())),
            Parsed::Poison(_)
        ));
        // Billing could not give it a period (a month after its own).
        let Parsed::Poison(reason) = parse(&event(200, DateTime::<Utc>::MAX_UTC)) else {
            panic!("an event in the calendar's last month was accepted");
        };
        assert!(reason.contains("last month"), "{reason}");
    }
}
