//! The audit trail: one `audit_logs` row per change, written in the same transaction as the
//! change so that neither exists without the other. Details name what changed; never a secret.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::auth::{Auth, Client};

/// Who made a change and from where.
#[derive(Debug, Clone)]
pub struct Actor {
    pub user_id: Option<Uuid>,
    pub client: Client,
}

impl From<&Auth> for Actor {
    fn from(auth: &Auth) -> Self {
        Self {
            user_id: Some(auth.user_id),
            client: auth.client.clone(),
        }
    }
}

/// Writes one audit row on `conn` (a transaction's connection).
pub async fn record(
    conn: &mut PgConnection,
    actor: &Actor,
    action: &str,
    resource_type: &str,
    resource_id: Option<Uuid>,
    details: serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_logs (id, user_id, action, resource_type, resource_id, ip_address, \
         user_agent, details) VALUES ($1, $2, $3, $4, $5, $6::inet, $7, $8)",
    )
    .bind(Uuid::now_v7())
    .bind(actor.user_id)
    .bind(action)
    .bind(resource_type)
    .bind(resource_id)
    .bind(actor.client.ip.map(|ip| ip.to_string()))
    .bind(actor.client.user_agent.as_deref())
    .bind(details)
    .execute(conn)
    .await?;
    Ok(())
}

/// The names of the fields a PATCH body set, for the audit details.
pub fn fields(names: &[(&str, bool)]) -> serde_json::Value {
    let set: Vec<&str> = names
        .iter()
        .filter(|(_, present)| *present)
        .map(|(n, _)| *n)
        .collect();
    serde_json::json!({ "fields": set })
}
