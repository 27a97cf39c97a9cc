//! Sending deliveries: each message of `wrapx.deliveries` is POSTed, signed, to its webhook's
//! URL, concurrently (up to the prefetch, a semaphore's worth), so one slow endpoint holds one
//! slot and never the queue. Each delivery is acknowledged when its attempt is settled:
//!
//! - 2xx: done.
//! - 410 Gone: the webhook is disabled (`is_active = false`, `disabled_reason`) and its owner
//!   notified.
//! - another status, a timeout, a connection error: published to the next retry tier (a TTL
//!   queue that dead-letters back into `wrapx.deliveries`) with `attempt + 1` and the same
//!   `delivery_id`; a `retry-after` in seconds moves it to the first tier at least that long.
//!   After the last tier: the owner is notified and the message dead-lettered to `wrapx.dead`.
//! - an address the SSRF policy refuses: notified and dead-lettered at once.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use lapin::{message::Delivery, Channel, Connection};
use tokio::sync::{Mutex, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use url::Url;
use uuid::Uuid;
use wrapx_core::{
    amqp::{self, retry_routing_key, DELIVERIES_QUEUE, RETRY_EXCHANGE},
    crypto::webhook_secret_aad,
    events::WebhookDelivery,
};

use super::{sign::SigningSecret, ssrf};
use crate::{
    consumer::{self, settle},
    metrics::{self, DeliveryOutcome},
    notifications::{self, NewNotification},
    outcome::{Outcome, Span},
    publish::{publish_all, Outgoing},
    Worker,
};

/// A `retry-after` longer than this is not honoured beyond the last tier anyway; the cap only
/// keeps the arithmetic sane.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

pub async fn consume(
    worker: &Arc<Worker>,
    connection: &Connection,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let (channel, mut deliveries) = consumer::open(worker, connection, DELIVERIES_QUEUE).await?;
    // One publish at a time on the shared confirm channel: lapin hands a broker's return to
    // whichever confirm completes next, so concurrent publishers could take each other's.
    let publisher = Arc::new(Mutex::new(amqp::confirm_channel(connection).await?));
    let permits = Arc::new(Semaphore::new(usize::from(worker.settings.worker.prefetch)));
    let in_flight = TaskTracker::new();
    let result = loop {
        let next = tokio::select! {
            biased;
            _ = stop.cancelled() => break Ok(()),
            next = deliveries.next() => next,
        };
        let delivery = match next {
            Some(Ok(d)) => d,
            Some(Err(e)) => break Err(anyhow::Error::new(e).context("consumer failed")),
            None => break Err(anyhow::anyhow!("the consumer was cancelled by the broker")),
        };
        let permit = tokio::select! {
            biased;
            // Not started: it returns to the queue when the channel closes.
            _ = stop.cancelled() => break Ok(()),
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(e) => break Err(e.into()),
            },
        };
        let (worker, channel, publisher) = (worker.clone(), channel.clone(), publisher.clone());
        in_flight.spawn(async move {
            let outcome = handle(&worker, &publisher, &delivery).await;
            if let Err(e) = settle(&channel, DELIVERIES_QUEUE, Span::One(delivery.delivery_tag), outcome).await {
                tracing::warn!(error = %e, "settling a delivery failed: the broker will redeliver it");
            }
            drop(permit);
        });
    };
    // Deliveries in flight finish (bounded by the webhook timeout) and are settled.
    in_flight.close();
    in_flight.wait().await;
    consumer::close(&channel, &deliveries).await;
    let _ = publisher.lock().await.close(200, "consumer stopping").await;
    result
}

/// The webhook row a delivery goes to, with its owner.
struct Hook {
    url: String,
    secret_ciphertext: String,
    wrapped_api_id: Uuid,
    user_id: Uuid,
    is_active: bool,
}

async fn load(worker: &Worker, webhook_id: Uuid) -> sqlx::Result<Option<Hook>> {
    let row: Option<(String, String, Uuid, Uuid, bool)> = sqlx::query_as(
        "SELECT w.url, w.secret_ciphertext, w.wrapped_api_id, a.user_id, w.is_active
         FROM webhooks w JOIN wrapped_apis a ON a.id = w.wrapped_api_id WHERE w.id = $1",
    )
    .bind(webhook_id)
    .fetch_optional(&worker.pool)
    .await?;
    Ok(row.map(
        |(url, secret_ciphertext, wrapped_api_id, user_id, is_active)| Hook {
            url,
            secret_ciphertext,
            wrapped_api_id,
            user_id,
            is_active,
        },
    ))
}

#[tracing::instrument(skip_all, fields(delivery_id, webhook_id, attempt))]
async fn handle(worker: &Worker, publisher: &Mutex<Channel>, delivery: &Delivery) -> Outcome {
    let msg: WebhookDelivery = match serde_json::from_slice(&delivery.data) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(queue = DELIVERIES_QUEUE, reason = %e, "poison message: dead-lettered");
            return Outcome::DeadLetter;
        }
    };
    let span = tracing::Span::current();
    span.record("delivery_id", msg.delivery_id.as_str());
    span.record("webhook_id", tracing::field::display(msg.webhook_id));
    span.record("attempt", msg.attempt);

    let hook = match load(worker, msg.webhook_id).await {
        Ok(Some(hook)) if hook.is_active => hook,
        Ok(_) => {
            tracing::info!("webhook deleted or disabled: delivery dropped");
            metrics::delivery(DeliveryOutcome::Dropped);
            return Outcome::Done;
        }
        Err(e) => {
            // The database is unreachable: wait on the first tier without spending an attempt.
            tracing::warn!(error = %e, "loading the webhook failed: delivery postponed");
            return postpone(worker, publisher, &msg, 0, msg.attempt).await;
        }
    };

    let secret = match worker
        .keys
        .decrypt(
            &hook.secret_ciphertext,
            &webhook_secret_aad(msg.webhook_id, hook.wrapped_api_id),
        )
        .map_err(|e| e.to_string())
        .and_then(|plain| {
            let text = std::str::from_utf8(&plain).map_err(|e| e.to_string())?;
            SigningSecret::parse(text).map_err(|e| e.to_string())
        }) {
        Ok(secret) => secret,
        Err(reason) => {
            tracing::error!(
                reason,
                "the webhook secret cannot be used: delivery dead-lettered"
            );
            return give_up(
                worker,
                &msg,
                &hook,
                &format!("its signing secret cannot be used ({reason})"),
            )
            .await;
        }
    };
    let url = match Url::parse(&hook.url) {
        Ok(url) => url,
        Err(e) => return give_up(worker, &msg, &hook, &format!("its URL is invalid ({e})")).await,
    };
    if let Err(refused) = ssrf::check_url(&url, worker.settings.security.allow_loopback) {
        return refuse(worker, &msg, &hook, &refused).await;
    }

    let body = match serde_json::to_vec(&msg.payload) {
        Ok(body) => body,
        Err(e) => {
            return give_up(
                worker,
                &msg,
                &hook,
                &format!("its payload cannot be encoded ({e})"),
            )
            .await
        }
    };
    let timestamp = chrono::Utc::now().timestamp();
    let signature = secret.sign(&msg.delivery_id, timestamp, &body);
    let sent = worker
        .http
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &msg.delivery_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;

    match sent {
        Ok(response) if response.status().is_success() => {
            tracing::debug!(status = response.status().as_u16(), "webhook delivered");
            metrics::delivery(DeliveryOutcome::Delivered);
            Outcome::Done
        }
        Ok(response) if response.status() == reqwest::StatusCode::GONE => {
            disable(worker, &msg, &hook).await
        }
        Ok(response) => {
            let retry_after = retry_after(response.headers());
            let reason = format!("HTTP {}", response.status().as_u16());
            failed(worker, publisher, &msg, &hook, &reason, retry_after).await
        }
        Err(e) => {
            if let Some(refused) = ssrf::refusal(&e) {
                return refuse(worker, &msg, &hook, &refused).await;
            }
            let reason = if e.is_timeout() {
                "timed out".to_owned()
            } else {
                format!("connection failed: {}", root_cause(&e))
            };
            failed(worker, publisher, &msg, &hook, &reason, None).await
        }
    }
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// A `retry-after` in seconds (HTTP dates are not honoured: the schedule applies).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// The retry tier for a delivery that failed on `attempt`: the next tier, or with a
/// `retry-after` the first remaining tier at least that long (the last one if none is).
/// `None` when the tiers are spent.
pub fn next_tier(delays_ms: &[u64], attempt: u32, retry_after: Option<Duration>) -> Option<usize> {
    let next = usize::try_from(attempt).ok()?;
    if next >= delays_ms.len() {
        return None;
    }
    match retry_after {
        None => Some(next),
        Some(wait) => {
            let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            Some(
                (next..delays_ms.len())
                    .find(|&i| delays_ms[i] >= wait_ms)
                    .unwrap_or(delays_ms.len() - 1),
            )
        }
    }
}

async fn failed(
    worker: &Worker,
    publisher: &Mutex<Channel>,
    msg: &WebhookDelivery,
    hook: &Hook,
    reason: &str,
    retry_after: Option<Duration>,
) -> Outcome {
    let delays = &worker.settings.amqp.webhook_retry_delays_ms;
    match next_tier(delays, msg.attempt, retry_after) {
        Some(tier) => {
            tracing::info!(
                reason,
                tier,
                delay_ms = delays[tier],
                "webhook delivery failed: retrying later"
            );
            let outcome = postpone(worker, publisher, msg, tier, tier as u32 + 1).await;
            if outcome == Outcome::Done {
                metrics::delivery(DeliveryOutcome::Retried);
            }
            outcome
        }
        None => {
            tracing::warn!(
                reason,
                "webhook delivery failed on its last try: dead-lettered"
            );
            give_up(
                worker,
                msg,
                hook,
                &format!("the last try failed ({reason})"),
            )
            .await
        }
    }
}

/// Publishes the delivery to retry tier `tier` as attempt `attempt`; acked once the broker
/// has it, else nacked back to the queue.
async fn postpone(
    worker: &Worker,
    publisher: &Mutex<Channel>,
    msg: &WebhookDelivery,
    tier: usize,
    attempt: u32,
) -> Outcome {
    let Some(&delay) = worker.settings.amqp.webhook_retry_delays_ms.get(tier) else {
        return Outcome::Retry;
    };
    let next = WebhookDelivery {
        attempt,
        ..msg.clone()
    };
    let Ok(body) = serde_json::to_vec(&next) else {
        return Outcome::Retry;
    };
    let outgoing = [Outgoing {
        exchange: RETRY_EXCHANGE,
        routing_key: retry_routing_key(delay),
        message_id: next.delivery_id.clone(),
        body,
    }];
    let timeout = Duration::from_millis(worker.settings.amqp.publish_timeout_ms);
    let channel = publisher.lock().await;
    match publish_all(&channel, &outgoing, timeout).await {
        Ok(()) => Outcome::Done,
        Err(e) => {
            tracing::warn!(error = %e, "publishing a retry failed: requeued");
            Outcome::Retry
        }
    }
}

/// The last try failed (or never can succeed): notify the owner, dead-letter the delivery.
async fn give_up(worker: &Worker, msg: &WebhookDelivery, hook: &Hook, why: &str) -> Outcome {
    let note = NewNotification {
        user_id: hook.user_id,
        wrapped_api_id: Some(hook.wrapped_api_id),
        kind: "webhook_failed",
        title: "A webhook delivery failed".into(),
        message: format!(
            "The {} delivery {} to {} failed: {why}.",
            msg.event_type, msg.delivery_id, hook.url
        ),
        metadata: serde_json::json!({
            "webhook_id": msg.webhook_id,
            "delivery_id": msg.delivery_id,
            "event_type": msg.event_type,
            "attempts": msg.attempt + 1,
        }),
        dedup_key: format!("webhook_failed:{}", msg.delivery_id),
    };
    match notifications::raise(&worker.pool, &note).await {
        Ok(_) => {
            metrics::delivery(DeliveryOutcome::Failed);
            Outcome::DeadLetter
        }
        Err(e) => {
            tracing::warn!(error = %e, "raising the failure notification failed: requeued");
            Outcome::Retry
        }
    }
}

async fn refuse(
    worker: &Worker,
    msg: &WebhookDelivery,
    hook: &Hook,
    refused: &ssrf::Refused,
) -> Outcome {
    tracing::warn!(reason = %refused, "webhook destination refused by the SSRF policy: dead-lettered");
    let note = NewNotification {
        user_id: hook.user_id,
        wrapped_api_id: Some(hook.wrapped_api_id),
        kind: "webhook_refused",
        title: "A webhook URL points to a refused address".into(),
        message: format!(
            "The delivery {} to {} was not sent: {refused}.",
            msg.delivery_id, hook.url
        ),
        metadata: serde_json::json!({ "webhook_id": msg.webhook_id, "delivery_id": msg.delivery_id }),
        dedup_key: format!("webhook_refused:{}", msg.delivery_id),
    };
    match notifications::raise(&worker.pool, &note).await {
        Ok(_) => {
            metrics::delivery(DeliveryOutcome::Refused);
            Outcome::DeadLetter
        }
        Err(_) => Outcome::Retry,
    }
}

/// 410 Gone: the receiver says the endpoint is gone for good.
async fn disable(worker: &Worker, msg: &WebhookDelivery, hook: &Hook) -> Outcome {
    let reason = "the receiver answered 410 Gone";
    let work = async {
        let mut tx = worker.pool.begin().await?;
        sqlx::query("UPDATE webhooks SET is_active = false, disabled_reason = $2 WHERE id = $1 AND is_active")
            .bind(msg.webhook_id)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
        notifications::raise(
            &mut *tx,
            &NewNotification {
                user_id: hook.user_id,
                wrapped_api_id: Some(hook.wrapped_api_id),
                kind: "webhook_disabled",
                title: "A webhook was disabled".into(),
                message: format!("The webhook to {} was disabled: {reason}.", hook.url),
                metadata: serde_json::json!({ "webhook_id": msg.webhook_id, "delivery_id": msg.delivery_id }),
                dedup_key: format!("webhook_disabled:{}", msg.webhook_id),
            },
        )
        .await?;
        tx.commit().await
    };
    match work.await {
        Ok(()) => {
            tracing::info!("webhook disabled after 410 Gone");
            metrics::delivery(DeliveryOutcome::Gone);
            Outcome::Done
        }
        Err(e) => {
            tracing::warn!(error = %e, "disabling the webhook failed: requeued");
            Outcome::Retry
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn tiers_follow_the_schedule_and_retry_after() {
        let delays = [200, 400, 5000];
        let s = |n| Some(Duration::from_millis(n));
        let cases: &[(u32, Option<Duration>, Option<usize>)] = &[
            (0, None, Some(0)),
            (1, None, Some(1)),
            (2, None, Some(2)),
            (3, None, None),
            (0, s(300), Some(1)),
            (0, s(100), Some(0)),
            (1, s(4000), Some(2)),
            (0, s(60_000), Some(2)),
            (3, s(100), None),
        ];
        for (attempt, retry_after, expected) in cases {
            assert_eq!(
                next_tier(&delays, *attempt, *retry_after),
                *expected,
                "{attempt} {retry_after:?}"
            );
        }
        assert_eq!(next_tier(&[], 0, None), None);
    }

    #[test]
    fn retry_after_reads_seconds() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(reqwest::header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        headers.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), None);
    }
}
