//! Publishing many messages on a confirm channel at once: every message is sent, then every
//! confirmation awaited, so a batch costs one round trip rather than one per message. Returned
//! (unroutable) and nacked messages are errors, never taken as delivered.

use std::time::Duration;

use lapin::{
    options::BasicPublishOptions, publisher_confirm::Confirmation, types::ShortString,
    BasicProperties, Channel,
};
use wrapx_core::amqp::{json_properties, PublishError};

/// One message to publish.
pub struct Outgoing {
    pub exchange: &'static str,
    pub routing_key: String,
    pub message_id: String,
    pub body: Vec<u8>,
}

/// Publishes every message persistent and mandatory, and waits until the broker has taken
/// them all, at most `timeout` in total.
pub async fn publish_all(
    channel: &Channel,
    messages: &[Outgoing],
    timeout: Duration,
) -> Result<(), PublishError> {
    let work = async {
        let mut confirms = Vec::with_capacity(messages.len());
        for m in messages {
            let properties: BasicProperties = json_properties(&m.message_id)
                .with_delivery_mode(2)
                .with_type(ShortString::from("wrapx"));
            confirms.push(
                channel
                    .basic_publish(
                        m.exchange,
                        &m.routing_key,
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        &m.body,
                        properties,
                    )
                    .await?,
            );
        }
        for (confirm, m) in confirms.into_iter().zip(messages) {
            match confirm.await? {
                Confirmation::Ack(None) | Confirmation::NotRequested => {}
                Confirmation::Ack(Some(_)) => {
                    return Err(PublishError::Unroutable(m.routing_key.clone()))
                }
                Confirmation::Nack(_) => return Err(PublishError::Nacked),
            }
        }
        Ok(())
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| PublishError::Timeout(timeout))?
}
