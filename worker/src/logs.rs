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

use std::{borrow::Cow, sync::Arc, time::Duration};

use anyhow::Context;
use lapin::{
    message::Delivery,
    types::{AMQPValue, FieldTable},
    Channel, Connection,
};
use rust_decimal::Decimal;
use serde_json::Value;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinHandle,
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use wrapx_core::{
    amqp::{self, DEAD_EXCHANGE, LOGS_QUEUE},
    events::{Event, RequestEvent, RequestOutcome, UsageSource},
};

use crate::{
    billing::{self, Inserted},
    consumer::{self, Backoff},
    outcome::{settle, Outcome, Span},
    publish::publish_all,
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

/// A batch being written, that settles only after the batch before it settled.
type InFlight = JoinHandle<anyhow::Result<()>>;

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
        Ok(Event::Request(event)) => Parsed::Request(Box::new(event)),
        Ok(Event::Admin(_)) => Parsed::Ignored,
        Err(e) => Parsed::Poison(e.to_string()),
    }
}

/// A request event to write, and the message it came in.
struct Pending {
    tag: u64,
    /// The message held this event and nothing else, so it can be dead-lettered whole.
    alone: bool,
    event: RequestEvent,
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

fn warn_poison(d: &Delivery, reason: &str) {
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

/// Publishes events from packed messages to `wrapx.dead`, one message each (the rest of their
/// message is written as usual), with the queue and the reason in `x-wrapx-queue` and
/// `x-wrapx-reason` (a nack would have given them an `x-death` record), and counts them as
/// dead-lettered. Rare, so one confirm at a time.
async fn dead_letter(
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
    crate::metrics::events(LOGS_QUEUE, Outcome::DeadLetter, events.len() as u64);
    Ok(())
}

/// The request events of one batch, in delivery order, and what writing them needs.
struct Batch {
    worker: Arc<Worker>,
    channel: Channel,
    publisher: Channel,
    events: Vec<Pending>,
    stop: CancellationToken,
}

impl Batch {
    /// Writes the batch, then settles it once `previous` has settled: a batch is acknowledged
    /// with one multiple ack, which would also cover an earlier batch still uncommitted.
    /// Holds its `slot` until settled. A failure stops the consumer.
    async fn run(
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

enum Written {
    Committed,
    /// The worker is stopping while the write keeps failing.
    Stopped,
    /// PostgreSQL refused the data itself (a constraint, an invalid value): retrying the same
    /// rows cannot succeed.
    Refused(sqlx::Error),
}

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error("the database refused the data: {0}")]
    Data(sqlx::Error),
    #[error(transparent)]
    Transient(anyhow::Error),
}

impl From<sqlx::Error> for WriteError {
    fn from(e: sqlx::Error) -> Self {
        // SQLSTATE classes 22 (data exception) and 23 (integrity constraint violation) are
        // about the rows; anything else (connection, timeout, deadlock, shutdown) may pass on
        // a later try.
        let data = matches!(&e, sqlx::Error::Database(db)
            if db.code().is_some_and(|c| c.starts_with("22") || c.starts_with("23")));
        if data {
            Self::Data(e)
        } else {
            Self::Transient(anyhow::Error::new(e))
        }
    }
}

async fn write_retrying(
    worker: &Worker,
    publisher: &Channel,
    events: &[&RequestEvent],
    stop: &CancellationToken,
) -> Written {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let started = Instant::now();
        match write(worker, publisher, events).await {
            Ok(inserted) => {
                crate::metrics::batch(started.elapsed().as_secs_f64());
                tracing::debug!(rows = events.len(), inserted, "batch written");
                return Written::Committed;
            }
            Err(WriteError::Data(e)) => return Written::Refused(e),
            Err(WriteError::Transient(e)) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    rows = events.len(),
                    "writing a batch failed: retrying"
                );
                tokio::select! {
                    _ = stop.cancelled() => return Written::Stopped,
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    }
}

/// One transaction: the rows, then billing, quotas and rate-limit counters from what was
/// inserted, then the quota events (published before the commit, so a failed publish rolls
/// the batch back and it is tried again; their ids are derived from the cause, so a retry
/// publishes the same events again, never different ones).
async fn write(
    worker: &Worker,
    publisher: &Channel,
    events: &[&RequestEvent],
) -> Result<usize, WriteError> {
    let rows = Columns::new(worker, events);
    let mut tx = worker.pool.begin().await?;
    let inserted = rows.insert(&mut tx).await?;
    if !inserted.is_empty() {
        let quota = billing::apply(&mut tx, &worker.pricing, &inserted).await?;
        let outgoing = billing::raise_quota_alerts(&mut tx, &quota).await?;
        if !outgoing.is_empty() {
            let timeout = Duration::from_millis(worker.settings.amqp.publish_timeout_ms);
            publish_all(publisher, &outgoing, timeout)
                .await
                .map_err(|e| {
                    WriteError::Transient(anyhow::Error::new(e).context("publish quota events"))
                })?;
        }
    }
    tx.commit().await?;
    crate::metrics::committed(inserted.iter().map(|row| (row.cost, row.at)));
    Ok(inserted.len())
}

/// What the insert returns for each row it inserted.
#[derive(sqlx::FromRow)]
struct InsertedRow {
    user_id: Uuid,
    wrapped_api_id: Uuid,
    outcome: String,
    tokens_used: i32,
    cost: Decimal,
    created_at: chrono::DateTime<chrono::Utc>,
}

/// The batch as one array per column, for `INSERT … SELECT FROM UNNEST(…)`. The JSON documents
/// are borrowed from the events unless they had to be cleaned: copying and dropping every
/// document was a visible share of the worker's CPU.
#[derive(Default)]
struct Columns<'a> {
    id: Vec<Uuid>,
    request_id: Vec<Uuid>,
    wrapped_api_id: Vec<Uuid>,
    api_key_id: Vec<Uuid>,
    user_id: Vec<Uuid>,
    provider: Vec<&'static str>,
    model: Vec<String>,
    status: Vec<i16>,
    outcome: Vec<&'static str>,
    stream: Vec<bool>,
    latency_ms: Vec<i32>,
    ttfb_ms: Vec<Option<i32>>,
    prompt_tokens: Vec<i32>,
    completion_tokens: Vec<i32>,
    reasoning_tokens: Vec<i32>,
    tokens_used: Vec<i32>,
    usage_source: Vec<&'static str>,
    cost: Vec<Decimal>,
    request_data: Vec<Option<Cow<'a, Value>>>,
    response_data: Vec<Option<Cow<'a, Value>>>,
    error: Vec<Option<String>>,
    config_version: Vec<Option<i32>>,
    created_at: Vec<chrono::DateTime<chrono::Utc>>,
}

const INSERT: &str = "
INSERT INTO api_logs (id, request_id, wrapped_api_id, api_key_id, user_id, provider, model, status,
    outcome, stream, latency_ms, ttfb_ms, prompt_tokens, completion_tokens, reasoning_tokens,
    tokens_used, usage_source, cost, request_data, response_data, error, config_version, created_at)
SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::text[],
    $7::text[], $8::int2[], $9::text[], $10::bool[], $11::int4[], $12::int4[], $13::int4[],
    $14::int4[], $15::int4[], $16::int4[], $17::text[], $18::numeric[], $19::jsonb[], $20::jsonb[],
    $21::text[], $22::int4[], $23::timestamptz[])
ON CONFLICT (request_id) DO NOTHING
RETURNING user_id, wrapped_api_id, outcome, tokens_used, cost, created_at";

impl<'a> Columns<'a> {
    fn new(worker: &Worker, events: &[&'a RequestEvent]) -> Self {
        let mut c = Columns::default();
        for e in events {
            let found = worker.pricing.price(&e.model);
            if found.is_default {
                worker.flag_default_price(&e.model);
            }
            let cost = found
                .price
                .cost(e.usage.prompt_tokens, e.usage.completion_tokens);
            c.id.push(Uuid::now_v7());
            c.request_id.push(e.request_id);
            c.wrapped_api_id.push(e.wrapped_api_id);
            c.api_key_id.push(e.key_id);
            c.user_id.push(e.user_id);
            c.provider.push(e.provider.as_str());
            c.model.push(clean_text(&e.model));
            c.status.push(i16::try_from(e.status).unwrap_or(i16::MAX));
            c.outcome.push(e.outcome.as_str());
            c.stream.push(e.stream);
            c.latency_ms.push(clamp(e.latency_ms));
            c.ttfb_ms.push(e.ttfb_ms.map(clamp));
            c.prompt_tokens.push(clamp(e.usage.prompt_tokens));
            c.completion_tokens.push(clamp(e.usage.completion_tokens));
            c.reasoning_tokens.push(clamp(e.usage.reasoning_tokens));
            c.tokens_used
                .push(i32::try_from(e.usage.total()).unwrap_or(i32::MAX));
            c.usage_source.push(match e.usage.source {
                UsageSource::Reported => "reported",
                UsageSource::Counted => "counted",
                UsageSource::None => "none",
            });
            c.cost.push(cost);
            c.request_data.push(clean_json(&e.request_data));
            c.response_data.push(clean_json(&e.response_data));
            c.error.push(e.error.as_deref().map(clean_text));
            c.config_version.push(e.config_version);
            c.created_at.push(e.occurred_at);
        }
        c
    }

    async fn insert(&self, tx: &mut sqlx::PgConnection) -> sqlx::Result<Vec<Inserted>> {
        let rows: Vec<InsertedRow> = sqlx::query_as(INSERT)
            .bind(&self.id)
            .bind(&self.request_id)
            .bind(&self.wrapped_api_id)
            .bind(&self.api_key_id)
            .bind(&self.user_id)
            .bind(&self.provider)
            .bind(&self.model)
            .bind(&self.status)
            .bind(&self.outcome)
            .bind(&self.stream)
            .bind(&self.latency_ms)
            .bind(&self.ttfb_ms)
            .bind(&self.prompt_tokens)
            .bind(&self.completion_tokens)
            .bind(&self.reasoning_tokens)
            .bind(&self.tokens_used)
            .bind(&self.usage_source)
            .bind(&self.cost)
            .bind(borrowed(&self.request_data))
            .bind(borrowed(&self.response_data))
            .bind(&self.error)
            .bind(&self.config_version)
            .bind(&self.created_at)
            .fetch_all(tx)
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |InsertedRow {
                     user_id,
                     wrapped_api_id,
                     outcome,
                     tokens_used: tokens,
                     cost,
                     created_at: at,
                 }| Inserted {
                    user_id,
                    wrapped_api_id,
                    // Requests the gateway refused before the provider do not count against
                    // the plan's quota or the rate-limit view.
                    billable: outcome != RequestOutcome::RateLimited.as_str()
                        && outcome != RequestOutcome::Rejected.as_str(),
                    tokens: i64::from(tokens),
                    cost,
                    at,
                },
            )
            .collect())
    }
}

fn clamp(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// PostgreSQL text cannot hold NUL; a log row is worth more than that byte.
fn clean_text(s: &str) -> String {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}")
    } else {
        s.to_owned()
    }
}

/// JSON null becomes SQL NULL; NUL characters (which jsonb refuses) become U+FFFD.
fn clean_json(value: &Value) -> Option<Cow<'_, Value>> {
    if value.is_null() {
        return None;
    }
    if !has_nul(value) {
        return Some(Cow::Borrowed(value));
    }
    let mut copy = value.clone();
    scrub(&mut copy);
    Some(Cow::Owned(copy))
}

/// A jsonb column as sqlx binds it.
fn borrowed<'v>(column: &'v [Option<Cow<'_, Value>>]) -> Vec<Option<&'v Value>> {
    column.iter().map(|v| v.as_deref()).collect()
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

fn scrub(value: &mut Value) {
    match value {
        Value::String(s) => *s = clean_text(s),
        Value::Array(items) => items.iter_mut().for_each(scrub),
        Value::Object(map) => {
            let taken = std::mem::take(map);
            for (k, mut v) in taken {
                scrub(&mut v);
                map.insert(clean_text(&k), v);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
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
    fn nul_characters_are_replaced() {
        let v = serde_json::json!({"a\u{0}": ["x\u{0}y", 1, {"b": "\u{0}"}]});
        let cleaned = clean_json(&v).unwrap().into_owned();
        assert_eq!(
            cleaned,
            serde_json::json!({"a\u{FFFD}": ["x\u{FFFD}y", 1, {"b": "\u{FFFD}"}]})
        );
        assert_eq!(clean_json(&Value::Null), None);
        assert_eq!(clean_text("ok"), "ok");
    }
}
