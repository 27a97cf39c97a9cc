//! RabbitMQ: the connection, and the whole topology declared in this one place.
//!
//! ```text
//! gateway, admin ──▶ wrapx.events (topic) ──request.*, rate_limit.*──▶ wrapx.logs (quorum)
//!                                          └──────────── # ──────────▶ wrapx.webhook-events (quorum)
//! worker ──▶ wrapx.deliveries (direct) ──delivery──▶ wrapx.deliveries (quorum)
//! worker ──▶ wrapx.retry (direct) ──{d}ms──▶ wrapx.retry.{d}ms (TTL d, dead-letters back to
//!            wrapx.deliveries): one queue per tier of `amqp.webhook_retry_delays_ms`
//! any nack without requeue, or past the delivery limit ──▶ wrapx.dead (fanout) ──▶ wrapx.dead
//! ```
//!
//! Declaring is idempotent, so every binary declares it at connect (and after a reconnect):
//! whichever starts first, events are never published to an exchange without its queues.

use std::time::Duration;

use lapin::{
    options::{
        BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
        QueueDeclareOptions,
    },
    publisher_confirm::Confirmation,
    types::{AMQPValue, FieldTable, LongString, ShortString},
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
};

use crate::{config::AmqpSettings, Error, Result};

pub const EVENTS_EXCHANGE: &str = "wrapx.events";
pub const LOGS_QUEUE: &str = "wrapx.logs";
pub const WEBHOOK_EVENTS_QUEUE: &str = "wrapx.webhook-events";
pub const DELIVERIES_EXCHANGE: &str = "wrapx.deliveries";
pub const DELIVERIES_QUEUE: &str = "wrapx.deliveries";
pub const DELIVERY_ROUTING_KEY: &str = "delivery";
pub const RETRY_EXCHANGE: &str = "wrapx.retry";
pub const DEAD_EXCHANGE: &str = "wrapx.dead";
pub const DEAD_QUEUE: &str = "wrapx.dead";
/// A message redelivered this many times is dead-lettered, so a poison message that crashes
/// its consumer cannot loop forever.
pub const DELIVERY_LIMIT: i64 = 20;

/// The queue and routing key of one retry tier.
pub fn retry_queue(delay_ms: u64) -> String {
    format!("{RETRY_EXCHANGE}.{delay_ms}ms")
}

pub fn retry_routing_key(delay_ms: u64) -> String {
    format!("{delay_ms}ms")
}

/// Connects with tokio as lapin's executor and reactor.
pub async fn connect(settings: &AmqpSettings) -> Result<Connection> {
    connect_url(settings.url.expose(), "wrapx").await
}

pub async fn connect_url(url: &str, name: &str) -> Result<Connection> {
    let properties = ConnectionProperties::default()
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio)
        .with_connection_name(name.into());
    Ok(Connection::connect(url, properties).await?)
}

/// Declares every exchange, queue and binding. Idempotent.
pub async fn declare_topology(channel: &Channel, retry_delays_ms: &[u64]) -> Result<()> {
    let durable_exchange = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let durable_queue = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };

    channel
        .exchange_declare(
            DEAD_EXCHANGE,
            ExchangeKind::Fanout,
            durable_exchange,
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(DEAD_QUEUE, durable_queue, quorum(None))
        .await?;
    channel
        .queue_bind(
            DEAD_QUEUE,
            DEAD_EXCHANGE,
            "",
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    channel
        .exchange_declare(
            EVENTS_EXCHANGE,
            ExchangeKind::Topic,
            durable_exchange,
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(LOGS_QUEUE, durable_queue, quorum(Some(DEAD_EXCHANGE)))
        .await?;
    for key in ["request.*", "rate_limit.*"] {
        channel
            .queue_bind(
                LOGS_QUEUE,
                EVENTS_EXCHANGE,
                key,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    channel
        .queue_declare(
            WEBHOOK_EVENTS_QUEUE,
            durable_queue,
            quorum(Some(DEAD_EXCHANGE)),
        )
        .await?;
    channel
        .queue_bind(
            WEBHOOK_EVENTS_QUEUE,
            EVENTS_EXCHANGE,
            "#",
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    channel
        .exchange_declare(
            DELIVERIES_EXCHANGE,
            ExchangeKind::Direct,
            durable_exchange,
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(DELIVERIES_QUEUE, durable_queue, quorum(Some(DEAD_EXCHANGE)))
        .await?;
    channel
        .queue_bind(
            DELIVERIES_QUEUE,
            DELIVERIES_EXCHANGE,
            DELIVERY_ROUTING_KEY,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    channel
        .exchange_declare(
            RETRY_EXCHANGE,
            ExchangeKind::Direct,
            durable_exchange,
            FieldTable::default(),
        )
        .await?;
    for &delay in retry_delays_ms {
        // Classic queues: they only hold messages for their TTL, then dead-letter them back to
        // the deliveries exchange, which is the delay.
        let mut args = FieldTable::default();
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(delay as i64));
        args.insert(
            "x-dead-letter-exchange".into(),
            long_string(DELIVERIES_EXCHANGE),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            long_string(DELIVERY_ROUTING_KEY),
        );
        let queue = retry_queue(delay);
        channel.queue_declare(&queue, durable_queue, args).await?;
        channel
            .queue_bind(
                &queue,
                RETRY_EXCHANGE,
                &retry_routing_key(delay),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

fn quorum(dead_letter_exchange: Option<&str>) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long_string("quorum"));
    if let Some(dlx) = dead_letter_exchange {
        args.insert("x-dead-letter-exchange".into(), long_string(dlx));
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DELIVERY_LIMIT),
        );
    }
    args
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// Why a publish was not taken as delivered.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the broker did not confirm within {0:?}")]
    Timeout(Duration),
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("no queue is bound for routing key {0:?}: the message was returned")]
    Unroutable(String),
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
}

/// Opens a channel in confirm mode: every publish on it is acknowledged by the broker.
pub async fn confirm_channel(connection: &Connection) -> Result<Channel> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// Publishes one persistent, mandatory message on a confirm channel and waits for the broker
/// to take it, at most `timeout`. A returned (unroutable) message is an error, not a success.
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    payload: &[u8],
    properties: BasicProperties,
    timeout: Duration,
) -> Result<(), PublishError> {
    let work = async {
        let confirm = channel
            .basic_publish(
                exchange,
                routing_key,
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                payload,
                properties.with_delivery_mode(2),
            )
            .await?;
        match confirm.await? {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(_)) => Err(PublishError::Unroutable(routing_key.to_owned())),
            Confirmation::Nack(_) => Err(PublishError::Nacked),
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| PublishError::Timeout(timeout))?
}

/// JSON content type and a message id: the common properties of our messages.
pub fn json_properties(message_id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_message_id(ShortString::from(message_id))
}

impl From<PublishError> for Error {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Amqp(a) => Error::Amqp(a),
            other => Error::Config(other.to_string()),
        }
    }
}
