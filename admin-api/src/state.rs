//! What every handler shares: the pools, the key material and the publishers.

use std::sync::Arc;

use sqlx::PgPool;
use wrapx_core::{cache::CacheNames, config::Settings, crypto::MasterKeys, keys::KeyHasher};

use crate::events::EventPublisher;

/// Cheap to clone: everything inside is shared.
#[derive(Clone)]
pub struct AppState {
    pub inner: Arc<Inner>,
}

pub struct Inner {
    pub settings: Settings,
    pub db: PgPool,
    pub redis: deadpool_redis::Pool,
    pub names: CacheNames,
    pub hasher: KeyHasher,
    pub master_keys: MasterKeys,
    pub events: EventPublisher,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.inner
    }
}
