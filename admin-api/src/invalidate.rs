//! Cache invalidation for the gateways: after a change commits, delete the Redis records it
//! affects, then publish an [`Invalidation`] on the invalidation channel so every gateway drops
//! its in-process copy (the order matters: a gateway that re-reads after the message must find
//! no stale record). A failure here is logged and counted, never turned into a failed request:
//! the change is already committed, and the gateways' short in-process TTL bounds the damage.

use redis::AsyncCommands;
use uuid::Uuid;
use wrapx_core::cache::Invalidation;

use crate::state::AppState;

/// Counter of invalidations that could not be delivered to Redis.
pub const FAILURES_METRIC: &str = "wrapx_admin_invalidation_failures_total";

/// One key changed (revoked, expiry changed).
pub async fn key(state: &AppState, key_hash: &str) {
    let records = vec![state.names.key_record(key_hash)];
    send(
        state,
        records,
        vec![Invalidation::Key {
            key_hash: key_hash.to_owned(),
        }],
    )
    .await;
}

/// Wrapped APIs changed: drop their records and those of all their keys. Call it after the
/// commit while the keys still exist, or pass the hashes read before a delete.
pub async fn wrapped_apis(state: &AppState, ids: &[Uuid], extra_key_hashes: Vec<String>) {
    if ids.is_empty() {
        return;
    }
    let mut hashes = extra_key_hashes;
    match sqlx::query_scalar::<_, String>(
        "SELECT key_hash FROM api_keys WHERE wrapped_api_id = ANY($1)",
    )
    .bind(ids)
    .fetch_all(&state.db)
    .await
    {
        Ok(found) => hashes.extend(found),
        Err(e) => tracing::warn!(error = %e, "reading key hashes for an invalidation"),
    }
    let mut records: Vec<String> = hashes.iter().map(|h| state.names.key_record(h)).collect();
    for id in ids {
        records.push(state.names.wrapped_api_record(*id));
        records.push(state.names.wrapped_api_keys(*id));
    }
    // The gateway's own set of key hashes per API may hold keys we did not list.
    let sets: Vec<String> = ids
        .iter()
        .map(|id| state.names.wrapped_api_keys(*id))
        .collect();
    let messages = ids
        .iter()
        .map(|id| Invalidation::WrappedApi { id: *id })
        .collect();
    send_with_sets(state, records, sets, messages).await;
}

/// A user was deactivated or re-activated: everything of theirs.
pub async fn user(state: &AppState, user_id: Uuid) {
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM wrapped_apis WHERE user_id = $1")
        .bind(user_id)
        .fetch_all(&state.db)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading wrapped APIs for an invalidation");
            Vec::new()
        });
    wrapped_apis(state, &ids, Vec::new()).await;
    send(state, Vec::new(), vec![Invalidation::User { id: user_id }]).await;
}

/// The wrapped APIs that use a provider (as their own or as a target of their routing) or a
/// tool, for the invalidations of their changes; `sql` selects their ids given the one id.
pub async fn apis_using(state: &AppState, sql: &str, id: Uuid) -> Vec<Uuid> {
    sqlx::query_scalar(sql)
        .bind(id)
        .fetch_all(&state.db)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading affected wrapped APIs");
            Vec::new()
        })
}

async fn send(state: &AppState, records: Vec<String>, messages: Vec<Invalidation>) {
    send_with_sets(state, records, Vec::new(), messages).await;
}

async fn send_with_sets(
    state: &AppState,
    mut records: Vec<String>,
    sets: Vec<String>,
    messages: Vec<Invalidation>,
) {
    let result: Result<(), anyhow::Error> = async {
        let mut conn = state.redis.get().await?;
        for set in &sets {
            let members: Vec<String> = conn.smembers(set).await?;
            records.extend(members.iter().map(|h| state.names.key_record(h)));
        }
        if !records.is_empty() {
            let _: () = conn.del(&records).await?;
        }
        let channel = state.names.invalidation_channel();
        for message in &messages {
            let _: () = conn
                .publish(&channel, serde_json::to_string(message)?)
                .await?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        metrics::counter!(FAILURES_METRIC).increment(1);
        tracing::error!(error = format!("{e:#}"), "cache invalidation failed");
    }
}
