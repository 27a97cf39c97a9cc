//! Listens to the admin API's invalidations on Redis pub/sub and drops the named records from
//! the in-process cache, so a revoked key is refused on every instance within a moment; on the
//! same connection, hears of routing targets failing or resting on any instance
//! (`routing::cooldown`). Its own reconnect loop: after any gap the whole cache and the
//! cooldown knowledge are dropped, since messages may have been missed.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use wrapx_core::{backoff::Backoff, cache::Invalidation};

use crate::{auth::RecordCache, routing::cooldown::Cooldowns};

/// Runs until `shutdown`.
pub async fn run(
    redis_url: String,
    channel: String,
    cache: Arc<RecordCache>,
    cooldowns: Arc<Cooldowns>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut first = true;
    loop {
        let session = async {
            let client = redis::Client::open(redis_url.as_str())?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            pubsub.subscribe(cooldowns.channel()).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::time::timeout(Duration::from_secs(5), session) => r,
        };
        match pubsub {
            Ok(Ok(mut pubsub)) => {
                if !first {
                    tracing::info!("invalidation channel back: dropping the in-process cache");
                }
                // Whatever changed while we were not listening is read afresh.
                cache.clear();
                cooldowns.clear();
                first = false;
                backoff.reset();
                let mut messages = pubsub.on_message();
                loop {
                    let message = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        m = messages.next() => m,
                    };
                    let Some(message) = message else { break };
                    if message.get_channel_name() == cooldowns.channel() {
                        cooldowns.on_message(message.get_payload_bytes());
                        continue;
                    }
                    let payload: Vec<u8> = message.get_payload_bytes().to_vec();
                    match serde_json::from_slice::<Invalidation>(&payload) {
                        Ok(inv) => cache.invalidate(&inv),
                        Err(e) => {
                            tracing::warn!(error = %e, "ignoring an invalidation message that does not parse")
                        }
                    }
                }
                tracing::warn!("invalidation channel lost: reconnecting");
                cache.clear();
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot subscribe to invalidations: retrying"),
            Err(_) => tracing::warn!("subscribing to invalidations timed out: retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff.next()) => {}
        }
    }
}

/// Drops expired cache entries every few seconds, until `shutdown`.
pub async fn sweep(cache: Arc<RecordCache>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => cache.sweep(),
        }
    }
}
