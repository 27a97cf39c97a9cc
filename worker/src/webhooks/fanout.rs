//! Fan-out: every event on `wrapx.webhook-events` (one per message, or several packed in one
//! by the gateway) becomes one [`WebhookDelivery`] per active webhook of its wrapped API
//! subscribed to its type (or `*`), published with confirms to `wrapx.deliveries`; the events
//! are acknowledged after the broker has taken every delivery. Events are handled in batches
//! (one webhook query per batch), since every gateway request passes through here.
//!
//! A delivery's id (the `webhook-id` header) is derived from the event and the webhook, so an
//! event redelivered after a crash produces deliveries with the same ids, which receivers
//! deduplicate as Standard Webhooks asks them to.

use std::{collections::HashMap, sync::Arc, time::Duration};

use anyhow::Context;
use lapin::{message::Delivery, Channel, Connection};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use wrapx_core::{
    amqp::{self, DELIVERIES_EXCHANGE, DELIVERY_ROUTING_KEY, WEBHOOK_EVENTS_QUEUE},
    backoff::{Backoff, Jitter},
    events::{Event, WebhookDelivery},
};

use crate::{
    billing::derived_id,
    consumer::{self, settle},
    outcome::{Outcome, Span},
    publish::{publish_all, Outgoing},
    Worker,
};

pub async fn consume(
    worker: &Arc<Worker>,
    connection: &Connection,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let (channel, mut deliveries) =
        consumer::open(worker, connection, WEBHOOK_EVENTS_QUEUE).await?;
    let publisher = amqp::confirm_channel(connection).await?;
    let settings = &worker.settings.worker;
    let max_wait = Duration::from_millis(settings.batch_max_wait_ms);
    let result = async {
        loop {
            let collected =
                consumer::collect(&mut deliveries, settings.batch_size, max_wait, stop).await?;
            if !collected.deliveries.is_empty() {
                handle_batch(worker, &channel, &publisher, collected.deliveries, stop).await?;
            }
            if collected.stopping {
                return Ok(());
            }
        }
    }
    .await;
    consumer::close(&channel, &deliveries).await;
    let _ = publisher.close(200, "consumer stopping").await;
    result
}

async fn handle_batch(
    worker: &Worker,
    channel: &Channel,
    publisher: &Channel,
    deliveries: Vec<Delivery>,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let mut events = Vec::with_capacity(deliveries.len());
    // The last delivery the batch's acknowledgement covers (every one not settled alone).
    let mut last = None;
    for d in deliveries {
        let lines: Vec<&[u8]> = wrapx_core::events::lines(&d.data).collect();
        if lines.len() > 1 {
            last = Some(d.delivery_tag);
            // A packed message from the gateway: a poison event in it is dead-lettered by the
            // log writer, which gets the same message; here it is only passed over.
            for line in lines {
                match Event::from_json(line) {
                    Ok(event) => events.push(event),
                    Err(e) => tracing::warn!(
                        queue = WEBHOOK_EVENTS_QUEUE,
                        delivery_tag = d.delivery_tag,
                        reason = %e,
                        "an unreadable event in a packed message: no webhooks for it"
                    ),
                }
            }
            continue;
        }
        match Event::from_json(&d.data) {
            Ok(event) => {
                last = Some(d.delivery_tag);
                events.push(event);
            }
            Err(e) => {
                tracing::warn!(
                    queue = WEBHOOK_EVENTS_QUEUE,
                    delivery_tag = d.delivery_tag,
                    redelivered = d.redelivered,
                    reason = %e,
                    "poison message: dead-lettered"
                );
                settle(
                    channel,
                    WEBHOOK_EVENTS_QUEUE,
                    Span::One(d.delivery_tag),
                    Outcome::DeadLetter,
                )
                .await?;
            }
        }
    }
    let Some(last) = last else {
        return Ok(());
    };
    let span = Span::UpTo {
        tag: last,
        count: events.len() as u64,
    };
    let batch: Vec<&Event> = events.iter().collect();
    // Up to a quarter extra, so several workers do not retry in step.
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
        .jitter(Jitter::Extra(0.25));
    loop {
        match fan_out(worker, publisher, &batch).await {
            Ok(published) => {
                if published > 0 {
                    tracing::debug!(
                        events = batch.len(),
                        published,
                        "webhook deliveries published"
                    );
                }
                settle(channel, WEBHOOK_EVENTS_QUEUE, span, Outcome::Done).await?;
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    events = batch.len(),
                    "webhook fan-out failed: retrying"
                );
                tokio::select! {
                    _ = stop.cancelled() => {
                        settle(channel, WEBHOOK_EVENTS_QUEUE, span, Outcome::Retry).await?;
                        return Ok(());
                    }
                    _ = tokio::time::sleep(backoff.next()) => {}
                }
            }
        }
    }
}

fn wrapped_api_of(event: &Event) -> Uuid {
    match event {
        Event::Request(r) => r.wrapped_api_id,
        Event::Admin(a) => a.wrapped_api_id,
    }
}

/// Publishes the batch's deliveries; returns how many.
async fn fan_out(worker: &Worker, publisher: &Channel, events: &[&Event]) -> anyhow::Result<usize> {
    if events.is_empty() {
        return Ok(0);
    }
    let mut apis: Vec<Uuid> = events.iter().map(|e| wrapped_api_of(e)).collect();
    apis.sort_unstable();
    apis.dedup();
    let hooks: Vec<(Uuid, Uuid, Value)> = sqlx::query_as(
        "SELECT id, wrapped_api_id, events FROM webhooks WHERE is_active AND wrapped_api_id = ANY($1)",
    )
    .bind(&apis)
    .fetch_all(&worker.pool)
    .await
    .context("load the subscribed webhooks")?;
    if hooks.is_empty() {
        return Ok(0);
    }
    let mut by_api: HashMap<Uuid, Vec<(Uuid, Value)>> = HashMap::new();
    for (id, api, subscribed) in hooks {
        by_api.entry(api).or_default().push((id, subscribed));
    }

    let mut outgoing = Vec::new();
    for event in events {
        let Some(hooks) = by_api.get(&wrapped_api_of(event)) else {
            continue;
        };
        let event_type = event.event_type().as_str();
        for (webhook_id, subscribed) in hooks {
            if !subscribes(subscribed, event_type) {
                continue;
            }
            let delivery = WebhookDelivery {
                delivery_id: delivery_id(event.id(), *webhook_id),
                webhook_id: *webhook_id,
                event_type: event_type.to_owned(),
                payload: payload(worker, event),
                attempt: 0,
            };
            outgoing.push(Outgoing {
                exchange: DELIVERIES_EXCHANGE,
                routing_key: DELIVERY_ROUTING_KEY.to_owned(),
                message_id: delivery.delivery_id.clone(),
                body: serde_json::to_vec(&delivery)?,
            });
        }
    }
    if !outgoing.is_empty() {
        let timeout = Duration::from_millis(worker.settings.amqp.publish_timeout_ms);
        publish_all(publisher, &outgoing, timeout)
            .await
            .context("publish the deliveries")?;
    }
    Ok(outgoing.len())
}

/// Whether a webhook's `events` list takes this type.
pub fn subscribes(events: &Value, event_type: &str) -> bool {
    events.as_array().is_some_and(|list| {
        list.iter()
            .any(|e| e.as_str().is_some_and(|s| s == "*" || s == event_type))
    })
}

/// `msg_` and 32 hex digits, the same for the same event and webhook.
pub fn delivery_id(event_id: Uuid, webhook_id: Uuid) -> String {
    format!(
        "msg_{}",
        derived_id(&[b"delivery", event_id.as_bytes(), webhook_id.as_bytes()]).simple()
    )
}

/// The body receivers get: `{"type","timestamp","data"}`. Request events carry their
/// metadata, usage and cost, never the request or answer bodies.
pub fn payload(worker: &Worker, event: &Event) -> Value {
    let (timestamp, data) = match event {
        Event::Request(r) => {
            let cost = worker
                .pricing
                .price(&r.model)
                .price
                .cost(r.usage.prompt_tokens, r.usage.completion_tokens);
            (
                r.occurred_at,
                json!({
                    "request_id": r.request_id,
                    "wrapped_api_id": r.wrapped_api_id,
                    "key_id": r.key_id,
                    "provider": r.provider.as_str(),
                    "model": r.model,
                    "status": r.status,
                    "outcome": r.outcome.as_str(),
                    "stream": r.stream,
                    "latency_ms": r.latency_ms,
                    "ttfb_ms": r.ttfb_ms,
                    "usage": {
                        "prompt_tokens": r.usage.prompt_tokens,
                        "completion_tokens": r.usage.completion_tokens,
                        "reasoning_tokens": r.usage.reasoning_tokens,
                        "total_tokens": r.usage.total(),
                    },
                    "cost": cost.to_string(),
                    "error": r.error,
                    "config_version": r.config_version,
                }),
            )
        }
        Event::Admin(a) => {
            let mut data = a.data.clone();
            if let Value::Object(map) = &mut data {
                map.entry("wrapped_api_id")
                    .or_insert_with(|| json!(a.wrapped_api_id));
            }
            (a.occurred_at, data)
        }
    };
    json!({ "type": event.event_type().as_str(), "timestamp": timestamp, "data": data })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn subscriptions_match_types_or_star() {
        assert!(subscribes(&json!(["*"]), "request.completed"));
        assert!(subscribes(
            &json!(["key.created", "request.completed"]),
            "request.completed"
        ));
        assert!(!subscribes(&json!(["key.created"]), "request.completed"));
        assert!(!subscribes(&json!([]), "request.completed"));
        assert!(!subscribes(&json!({"*": true}), "request.completed"));
    }

    #[test]
    fn delivery_ids_are_stable() {
        let (e, w) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(delivery_id(e, w), delivery_id(e, w));
        assert_ne!(delivery_id(e, w), delivery_id(w, e));
        assert!(delivery_id(e, w).starts_with("msg_"));
    }
}
