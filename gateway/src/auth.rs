//! The key check: the presented key's format first (no lookup for a malformed key), then its
//! keyed hash through the in-process cache, Redis, and PostgreSQL only on a cold miss (which
//! refills Redis). Unknown keys are cached too, briefly, so a flood of made-up keys cannot reach
//! PostgreSQL. The stored hash is compared with the presented one in constant time.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::Utc;
use dashmap::DashMap;
use http::HeaderMap;
use sqlx::PgPool;
use uuid::Uuid;
use wrapx_core::{
    cache::{CacheNames, Invalidation},
    crypto::MasterKeys,
    keys::{ApiKey, KeyHasher, SecretHash},
};

use crate::{
    errors::{ErrorKind, GatewayError},
    metrics::{self, LookupSource, RedisOp},
    records::{self, ApiRecord, KeyRecord, LoadedApi},
};

/// How long Redis keeps a record the gateway filled; invalidations delete them sooner.
const REDIS_RECORD_TTL_SECS: u64 = 3600;

/// A request's proven identity: its key and the wrapped API the key opens.
#[derive(Debug, Clone)]
pub struct Identity {
    pub key: Arc<KeyRecord>,
    pub api: Arc<LoadedApi>,
}

impl Identity {
    /// A valid key of an inactive API (or of a disabled account) is refused with 403; the
    /// refusal is logged, since the key itself was valid.
    pub fn check_active(&self) -> Result<(), GatewayError> {
        if !self.api.record.owner_active {
            return Err(GatewayError::new(ErrorKind::AccountDisabled));
        }
        if !self.api.record.active {
            return Err(GatewayError::new(ErrorKind::InactiveApi));
        }
        Ok(())
    }
}

/// The key a request presents: `Authorization: Bearer …` (exactly one) or `x-api-key`.
pub fn presented_key(headers: &HeaderMap) -> Result<&str, GatewayError> {
    let mut auth = headers.get_all(http::header::AUTHORIZATION).iter();
    if let Some(value) = auth.next() {
        if auth.next().is_some() {
            return Err(GatewayError::with_message(
                ErrorKind::MalformedKey,
                "Send exactly one Authorization header.",
            ));
        }
        let value = value
            .to_str()
            .map_err(|_| GatewayError::new(ErrorKind::MalformedKey))?;
        let (scheme, key) = value
            .split_once(' ')
            .ok_or_else(|| GatewayError::new(ErrorKind::MalformedKey))?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(GatewayError::with_message(
                ErrorKind::MalformedKey,
                "Use the Bearer scheme.",
            ));
        }
        return Ok(key.trim());
    }
    let mut x = headers.get_all("x-api-key").iter();
    match (x.next(), x.next()) {
        (Some(v), None) => v
            .to_str()
            .map(str::trim)
            .map_err(|_| GatewayError::new(ErrorKind::MalformedKey)),
        (Some(_), Some(_)) => Err(GatewayError::with_message(
            ErrorKind::MalformedKey,
            "Send exactly one x-api-key header.",
        )),
        (None, _) => Err(GatewayError::new(ErrorKind::MissingKey)),
    }
}

struct Entry<T> {
    value: T,
    expires: Instant,
}

/// The in-process copies. Sharded maps: a lookup takes a shard's read lock for a clone of an
/// `Arc` and never across an await.
pub struct RecordCache {
    keys: DashMap<SecretHash, Entry<Option<Arc<KeyRecord>>>>,
    apis: DashMap<Uuid, Entry<Arc<LoadedApi>>>,
    ttl: Duration,
    negative_ttl: Duration,
}

impl RecordCache {
    pub fn new(ttl: Duration, negative_ttl: Duration) -> Self {
        Self {
            keys: DashMap::new(),
            apis: DashMap::new(),
            ttl,
            negative_ttl,
        }
    }

    /// `Some(None)` is a cached "no such key".
    fn key(&self, hash: &SecretHash) -> Option<Option<Arc<KeyRecord>>> {
        let entry = self.keys.get(hash)?;
        (entry.expires > Instant::now()).then(|| entry.value.clone())
    }

    fn put_key(&self, hash: SecretHash, value: Option<Arc<KeyRecord>>) {
        let ttl = if value.is_some() {
            self.ttl
        } else {
            self.negative_ttl
        };
        self.keys.insert(
            hash,
            Entry {
                value,
                expires: Instant::now() + ttl,
            },
        );
    }

    fn api(&self, id: &Uuid) -> Option<Arc<LoadedApi>> {
        let entry = self.apis.get(id)?;
        (entry.expires > Instant::now()).then(|| entry.value.clone())
    }

    fn put_api(&self, api: Arc<LoadedApi>) {
        self.apis.insert(
            api.record.id,
            Entry {
                value: api,
                expires: Instant::now() + self.ttl,
            },
        );
    }

    /// Drops what an invalidation names, so the next request reads it again.
    pub fn invalidate(&self, message: &Invalidation) {
        match message {
            Invalidation::Key { key_hash } => {
                if let Some(hash) = SecretHash::from_hex(key_hash) {
                    self.keys.remove(&hash);
                }
            }
            Invalidation::WrappedApi { id } => {
                self.apis.remove(id);
                self.keys
                    .retain(|_, e| e.value.as_ref().is_none_or(|k| k.wrapped_api_id != *id));
            }
            Invalidation::User { id } => {
                self.apis.retain(|_, e| e.value.record.user_id != *id);
                self.keys
                    .retain(|_, e| e.value.as_ref().is_none_or(|k| k.user_id != *id));
            }
        }
    }

    /// Drops everything: after the invalidation channel was down, messages may have been missed.
    pub fn clear(&self) {
        self.keys.clear();
        self.apis.clear();
    }

    /// Drops expired entries, so made-up keys do not pile up in memory.
    pub fn sweep(&self) {
        let now = Instant::now();
        self.keys.retain(|_, e| e.expires > now);
        self.apis.retain(|_, e| e.expires > now);
    }
}

/// The key check and the record loads behind it.
pub struct Authenticator {
    pub hasher: KeyHasher,
    pub names: CacheNames,
    pub redis: deadpool_redis::Pool,
    pub redis_timeout: Duration,
    pub db: PgPool,
    pub master: MasterKeys,
    pub allow_loopback: bool,
    pub cache: Arc<RecordCache>,
    pub cooldowns: Arc<crate::routing::cooldown::Cooldowns>,
}

impl Authenticator {
    /// Checks the presented key and returns whose it is, or the refusal. Whether its API is
    /// active is [`Identity::check_active`]'s question.
    pub async fn authenticate(&self, presented: &str) -> Result<Identity, GatewayError> {
        let key = ApiKey::parse(presented).map_err(|e| {
            GatewayError::with_message(
                ErrorKind::MalformedKey,
                format!("The API key is malformed: {e}."),
            )
        })?;
        let hash = self.hasher.hash_key(&key);
        let record = self
            .key_record(hash)
            .await?
            .ok_or_else(|| GatewayError::new(ErrorKind::UnknownKey))?;
        // The map found the record by hash; this comparison is the one that decides, and it
        // takes the same time however much of the hash matches.
        if !SecretHash::from_hex(&record.key_hash).is_some_and(|stored| stored.ct_eq(&hash)) {
            return Err(GatewayError::new(ErrorKind::UnknownKey));
        }
        if !record.active {
            return Err(GatewayError::new(ErrorKind::RevokedKey));
        }
        if record.expires_at.is_some_and(|at| at <= Utc::now()) {
            return Err(GatewayError::new(ErrorKind::ExpiredKey));
        }
        let api = self
            .api(record.wrapped_api_id)
            .await?
            .ok_or_else(|| GatewayError::new(ErrorKind::UnknownKey))?;
        Ok(Identity { key: record, api })
    }

    async fn key_record(&self, hash: SecretHash) -> Result<Option<Arc<KeyRecord>>, GatewayError> {
        if let Some(hit) = self.cache.key(&hash) {
            metrics::key_lookup(LookupSource::Memory);
            return Ok(hit);
        }
        let hex = hash.to_hex();
        let redis_key = self.names.key_record(&hex);
        if let Some(bytes) = self.redis_get(&redis_key).await {
            let record = if bytes == b"null" {
                None
            } else {
                serde_json::from_slice::<KeyRecord>(&bytes)
                    .ok()
                    .map(Arc::new)
            };
            if bytes == b"null" || record.is_some() {
                metrics::key_lookup(LookupSource::Redis);
                self.cache.put_key(hash, record.clone());
                return Ok(record);
            }
        }
        metrics::key_lookup(LookupSource::Database);
        let record = records::key_from_db(&self.db, &hex).await.map_err(|e| {
            tracing::warn!(error = %e, "key lookup in PostgreSQL failed");
            GatewayError::new(ErrorKind::Unavailable)
        })?;
        match &record {
            Some(r) => match serde_json::to_vec(r) {
                Ok(json) => {
                    self.redis_fill(
                        &redis_key,
                        &json,
                        REDIS_RECORD_TTL_SECS * 1000,
                        Some((self.names.wrapped_api_keys(r.wrapped_api_id), hex)),
                    )
                    .await;
                }
                // An empty value in Redis would read back as a broken record: fill nothing.
                Err(e) => wrapx_core::never!("a key record does not serialise: {e}"),
            },
            None => {
                let ttl_ms = u64::try_from(self.cache.negative_ttl.as_millis()).unwrap_or(u64::MAX);
                self.redis_fill(&redis_key, b"null", ttl_ms, None).await;
            }
        }
        let record = record.map(Arc::new);
        self.cache.put_key(hash, record.clone());
        Ok(record)
    }

    async fn api(&self, id: Uuid) -> Result<Option<Arc<LoadedApi>>, GatewayError> {
        if let Some(hit) = self.cache.api(&id) {
            return Ok(Some(hit));
        }
        let redis_key = self.names.wrapped_api_record(id);
        let stored = match self
            .redis_get(&redis_key)
            .await
            .and_then(|b| serde_json::from_slice::<ApiRecord>(&b).ok())
        {
            Some(record) => Some(record),
            None => {
                let record = records::api_from_db(&self.db, id).await.map_err(|e| {
                    tracing::warn!(error = %e, "wrapped API lookup in PostgreSQL failed");
                    GatewayError::new(ErrorKind::Unavailable)
                })?;
                if let Some(r) = &record {
                    match serde_json::to_vec(r) {
                        Ok(json) => {
                            self.redis_fill(&redis_key, &json, REDIS_RECORD_TTL_SECS * 1000, None)
                                .await;
                        }
                        Err(e) => {
                            wrapx_core::never!("a wrapped API record does not serialise: {e}")
                        }
                    }
                }
                record
            }
        };
        let Some(record) = stored else {
            return Ok(None);
        };
        let loaded = LoadedApi::load(record, &self.master, self.allow_loopback)
            .await
            .map_err(|e| {
                tracing::error!(wrapped_api_id = %id, error = %e, "wrapped API cannot be loaded");
                GatewayError::new(ErrorKind::UpstreamError)
            })?;
        if loaded.routing().is_some() {
            // Targets resting since before this instance heard of them.
            let ids: Vec<&str> = loaded
                .targets
                .iter()
                .map(|t| t.cooldown_id.as_str())
                .collect();
            self.cooldowns.seed(&ids).await;
        }
        self.cache.put_api(loaded.clone());
        Ok(Some(loaded))
    }

    /// Whether Redis answers a PING within its timeout (for `/readyz`).
    pub async fn redis_ping(&self) -> bool {
        let ping = async {
            let mut conn = self.redis.get().await.ok()?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .ok()
        };
        matches!(
            tokio::time::timeout(self.redis_timeout, ping).await,
            Ok(Some(_))
        )
    }

    /// A Redis read that gives up after the Redis timeout: `None` on a miss or any failure
    /// (PostgreSQL answers then).
    async fn redis_get(&self, key: &str) -> Option<Vec<u8>> {
        let read = async {
            let mut conn = self.redis.get().await.ok()?;
            let started = Instant::now();
            let value = redis::cmd("GET")
                .arg(key)
                .query_async::<Option<Vec<u8>>>(&mut conn)
                .await
                .ok()?;
            metrics::redis(RedisOp::Lookup, started.elapsed());
            value
        };
        tokio::time::timeout(self.redis_timeout, read)
            .await
            .ok()
            .flatten()
    }

    /// Refills Redis after a cold miss; best effort, bounded by the Redis timeout.
    async fn redis_fill(
        &self,
        key: &str,
        value: &[u8],
        ttl_ms: u64,
        member_of: Option<(String, String)>,
    ) {
        let write = async {
            let mut conn = self.redis.get().await.ok()?;
            let mut pipe = redis::pipe();
            pipe.cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(ttl_ms.max(1))
                .ignore();
            if let Some((set, member)) = member_of {
                pipe.cmd("SADD").arg(&set).arg(member).ignore();
                pipe.cmd("PEXPIRE").arg(&set).arg(ttl_ms.max(1)).ignore();
            }
            pipe.query_async::<()>(&mut conn).await.ok()
        };
        let _ = tokio::time::timeout(self.redis_timeout, write).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn finds_the_presented_key() {
        assert_eq!(
            presented_key(&headers(&[("authorization", "Bearer abc")])).unwrap(),
            "abc"
        );
        assert_eq!(
            presented_key(&headers(&[("authorization", "bearer  abc ")])).unwrap(),
            "abc"
        );
        assert_eq!(
            presented_key(&headers(&[("x-api-key", "abc")])).unwrap(),
            "abc"
        );
        let kind = |h: &[(&str, &str)]| presented_key(&headers(h)).unwrap_err().kind;
        assert_eq!(kind(&[]), ErrorKind::MissingKey);
        assert_eq!(
            kind(&[("authorization", "Basic abc")]),
            ErrorKind::MalformedKey
        );
        assert_eq!(
            kind(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]),
            ErrorKind::MalformedKey
        );
        assert_eq!(
            kind(&[("x-api-key", "a"), ("x-api-key", "b")]),
            ErrorKind::MalformedKey
        );
    }
}
