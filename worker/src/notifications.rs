//! Notifications for the account owner: quota thresholds, webhooks that failed for good or were
//! disabled. Each carries a `dedup_key`, so a cause raised twice (a redelivered message) is one
//! row.

use serde_json::Value;
use uuid::Uuid;

/// A notification to raise.
#[derive(Debug, Clone)]
pub struct NewNotification {
    pub user_id: Uuid,
    pub wrapped_api_id: Option<Uuid>,
    /// The `type` column: `quota_warning`, `quota_exceeded`, `webhook_failed`, ….
    pub kind: &'static str,
    pub title: String,
    pub message: String,
    pub metadata: Value,
    /// Unique per account: the same key again raises nothing.
    pub dedup_key: String,
}

const INSERT: &str = "
INSERT INTO notifications (id, user_id, wrapped_api_id, type, title, message, metadata, dedup_key)
SELECT $1, $2, (SELECT a.id FROM wrapped_apis a WHERE a.id = $3), $4, $5, $6, $7, $8
WHERE EXISTS (SELECT 1 FROM users u WHERE u.id = $2)
ON CONFLICT (user_id, dedup_key) DO NOTHING
RETURNING id";

/// Inserts the notification unless its `dedup_key` is already there (or the account is gone).
/// Returns whether a row was inserted now.
pub async fn raise<'e, E>(executor: E, n: &NewNotification) -> sqlx::Result<bool>
where
    E: sqlx::PgExecutor<'e>,
{
    let id: Option<Uuid> = sqlx::query_scalar(INSERT)
        .bind(Uuid::now_v7())
        .bind(n.user_id)
        .bind(n.wrapped_api_id)
        .bind(n.kind)
        .bind(truncate(&n.title, 500))
        .bind(truncate(&n.message, 5000))
        .bind(&n.metadata)
        .bind(&n.dedup_key)
        .fetch_optional(executor)
        .await?;
    Ok(id.is_some())
}

/// Cuts to the column's character limit on a character boundary.
fn truncate(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
