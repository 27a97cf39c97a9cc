//! PostgreSQL: the pool and the migrations (the single source of the schema).

use std::time::Duration;

use sqlx::{
    postgres::{PgConnectOptions, PgPoolOptions},
    PgPool,
};

use crate::{config::DatabaseSettings, Error, Result};

/// The migrations in `migrations/`, built into every binary that links the core.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A pool that connects lazily: a binary starts, and answers its readiness check, while
/// PostgreSQL is still coming up; queries fail fast after the acquire timeout.
pub fn pool(settings: &DatabaseSettings) -> Result<PgPool> {
    let options: PgConnectOptions = settings
        .url
        .expose()
        .parse()
        .map_err(|e| Error::Config(format!("database.url: {e}")))?;
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .connect_lazy_with(options.application_name("wrapx")))
}

/// Applies every migration not yet applied; a no-op when the schema is current.
pub async fn migrate(pool: &PgPool) -> Result<()> {
    MIGRATOR.run(pool).await?;
    Ok(())
}
