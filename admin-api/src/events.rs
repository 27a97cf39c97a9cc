//! Admin events (`key.created`, `key.revoked`, `config.updated`) to the events exchange and
//! test webhook deliveries to the deliveries exchange, with publisher confirms.
//!
//! One background task owns the broker connection; handlers hand it messages over a bounded
//! channel and never wait on the broker (except the webhook test, whose whole point is the
//! delivery). When the broker is down the message is logged and counted as lost and the request
//! still succeeds: the change itself is committed in PostgreSQL.

use std::time::Duration;

use chrono::Utc;
use lapin::{Channel, Connection};
use tokio::sync::{mpsc, oneshot};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;
use wrapx_core::{
    amqp,
    config::AmqpSettings,
    events::{AdminEvent, Event, EventType, WebhookDelivery},
};

/// Counter of messages the broker did not confirm.
pub const FAILED_METRIC: &str = "wrapx_admin_events_failed_total";
const QUEUE_CAPACITY: usize = 4096;

struct Outgoing {
    exchange: &'static str,
    routing_key: String,
    message_id: String,
    payload: Vec<u8>,
    confirmed: Option<oneshot::Sender<bool>>,
}

/// The handle handlers use; cheap to clone.
#[derive(Clone)]
pub struct EventPublisher {
    tx: mpsc::Sender<Outgoing>,
}

impl EventPublisher {
    /// Starts the publishing task on `tracker`; it drains what is queued when `shutdown` fires.
    pub fn start(
        settings: AmqpSettings,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        tracker.spawn(run(settings, rx, shutdown));
        Self { tx }
    }

    /// Queues an admin event; never waits on the broker.
    pub fn admin(
        &self,
        event_type: EventType,
        user_id: Uuid,
        wrapped_api_id: Uuid,
        data: serde_json::Value,
    ) {
        let event = Event::Admin(AdminEvent {
            event_id: Uuid::now_v7(),
            occurred_at: Utc::now(),
            event_type,
            user_id,
            wrapped_api_id,
            data,
        });
        let payload = match event.to_json() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "serialising an admin event");
                return;
            }
        };
        let outgoing = Outgoing {
            exchange: amqp::EVENTS_EXCHANGE,
            routing_key: event.routing_key().to_owned(),
            message_id: event.id().to_string(),
            payload,
            confirmed: None,
        };
        if self.tx.try_send(outgoing).is_err() {
            metrics::counter!(FAILED_METRIC).increment(1);
            tracing::error!(
                event_type = event_type.as_str(),
                "admin event queue full: event dropped"
            );
        }
    }

    /// Publishes a webhook delivery and waits for the broker's confirm.
    pub async fn delivery(&self, delivery: &WebhookDelivery) -> bool {
        let Ok(payload) = serde_json::to_vec(delivery) else {
            return false;
        };
        let (confirmed, answer) = oneshot::channel();
        let outgoing = Outgoing {
            exchange: amqp::DELIVERIES_EXCHANGE,
            routing_key: amqp::DELIVERY_ROUTING_KEY.to_owned(),
            message_id: delivery.delivery_id.clone(),
            payload,
            confirmed: Some(confirmed),
        };
        if self.tx.send(outgoing).await.is_err() {
            return false;
        }
        answer.await.unwrap_or(false)
    }
}

/// The broker connection, made on first use and again after a failure.
struct Link {
    settings: AmqpSettings,
    open: Option<(Connection, Channel)>,
}

impl Link {
    async fn channel(&mut self) -> anyhow::Result<&Channel> {
        let healthy = self
            .open
            .as_ref()
            .is_some_and(|(c, ch)| c.status().connected() && ch.status().connected());
        if !healthy {
            self.open = None;
            let timeout = Duration::from_millis(self.settings.publish_timeout_ms);
            let settings = &self.settings;
            let opened = tokio::time::timeout(timeout, async {
                let connection = amqp::connect_url(settings.url.expose(), "wrapx-admin").await?;
                let channel = amqp::confirm_channel(&connection).await?;
                amqp::declare_topology(&channel, &settings.webhook_retry_delays_ms).await?;
                Ok::<_, wrapx_core::Error>((connection, channel))
            })
            .await
            .map_err(|_| anyhow::anyhow!("connecting to the broker timed out"))??;
            self.open = Some(opened);
        }
        self.open
            .as_ref()
            .map(|(_, ch)| ch)
            .ok_or_else(|| anyhow::anyhow!("no broker channel"))
    }

    async fn publish(&mut self, message: &Outgoing) -> anyhow::Result<()> {
        let timeout = Duration::from_millis(self.settings.publish_timeout_ms);
        let channel = self.channel().await?;
        let result = amqp::publish_confirmed(
            channel,
            message.exchange,
            &message.routing_key,
            &message.payload,
            amqp::json_properties(&message.message_id),
            timeout,
        )
        .await;
        if result.is_err() {
            // Start afresh next time: the channel may be closed or wedged.
            self.open = None;
        }
        Ok(result?)
    }
}

async fn run(
    settings: AmqpSettings,
    mut rx: mpsc::Receiver<Outgoing>,
    shutdown: CancellationToken,
) {
    let mut link = Link {
        settings,
        open: None,
    };
    loop {
        let message = tokio::select! {
            message = rx.recv() => message,
            _ = shutdown.cancelled() => {
                // Stop taking new messages and publish what is already queued.
                rx.close();
                rx.recv().await
            }
        };
        let Some(message) = message else { break };
        // One retry on a fresh connection covers a broker restart between two publishes.
        let mut result = link.publish(&message).await;
        if result.is_err() {
            result = link.publish(&message).await;
        }
        let ok = match result {
            Ok(()) => true,
            Err(e) => {
                metrics::counter!(FAILED_METRIC).increment(1);
                tracing::error!(error = format!("{e:#}"), routing_key = %message.routing_key, "publishing to the broker failed");
                false
            }
        };
        if let Some(confirmed) = message.confirmed {
            let _ = confirmed.send(ok);
        }
    }
    if let Some((connection, _)) = link.open.take() {
        let _ = connection.close(200, "shutdown").await;
    }
}
