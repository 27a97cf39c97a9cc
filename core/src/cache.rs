//! The names of what the gateway caches in Redis and the invalidation messages the admin API
//! publishes when a cached record changes.
//!
//! Channel: `{prefix}invalidate`. Message: the JSON of [`Invalidation`], e.g.
//! `{"kind":"key","key_hash":"ab12…"}`, `{"kind":"wrapped_api","id":"0191…"}` or
//! `{"kind":"user","id":"0191…"}`. The admin API deletes the Redis records first and then
//! publishes, so a gateway that drops its in-process copy on the message and reads again finds
//! fresh data. Records are versioned (`v1`) so a change of their shape never reads old bytes.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What changed, so gateways drop exactly that from their in-process caches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Invalidation {
    /// One key was revoked, expired or changed.
    Key { key_hash: String },
    /// A wrapped API and everything compiled into its record: activity, provider, prompt
    /// config, tools, rate limit, model.
    WrappedApi { id: Uuid },
    /// A user was deactivated or re-activated: all their keys and wrapped APIs.
    User { id: Uuid },
}

/// Redis names under one deployment's prefix.
#[derive(Debug, Clone)]
pub struct CacheNames {
    prefix: String,
}

impl CacheNames {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The pub/sub channel of [`Invalidation`] messages.
    pub fn invalidation_channel(&self) -> String {
        format!("{}invalidate", self.prefix)
    }

    /// The pub/sub channel on which gateways tell each other of routing targets that fail or
    /// rest (the gateway's `routing::cooldown`).
    pub fn cooldown_channel(&self) -> String {
        format!("{}cooldowns", self.prefix)
    }

    /// The key record, by the key's hash (hex).
    pub fn key_record(&self, key_hash_hex: &str) -> String {
        format!("{}v1:key:{key_hash_hex}", self.prefix)
    }

    /// The wrapped API record (provider, compiled prompt, tools, model, limits).
    pub fn wrapped_api_record(&self, wrapped_api_id: Uuid) -> String {
        format!("{}v1:api:{wrapped_api_id}", self.prefix)
    }

    /// The set of key hashes of one wrapped API, so deactivating it can drop its key records.
    pub fn wrapped_api_keys(&self, wrapped_api_id: Uuid) -> String {
        format!("{}v1:api-keys:{wrapped_api_id}", self.prefix)
    }

    /// The rate limiter state of one key: a hash of counters per sub-window (`v2`: the sorted
    /// sets of earlier versions, under `rl:`, expire by themselves within their window).
    pub fn rate_limit(&self, key_id: Uuid) -> String {
        format!("{}v2:rl:{key_id}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn invalidations_have_a_stable_wire_form() {
        let id = Uuid::nil();
        let cases = [
            (
                Invalidation::Key {
                    key_hash: "ab".into(),
                },
                r#"{"kind":"key","key_hash":"ab"}"#,
            ),
            (
                Invalidation::WrappedApi { id },
                r#"{"kind":"wrapped_api","id":"00000000-0000-0000-0000-000000000000"}"#,
            ),
            (
                Invalidation::User { id },
                r#"{"kind":"user","id":"00000000-0000-0000-0000-000000000000"}"#,
            ),
        ];
        for (message, wire) in cases {
            assert_eq!(serde_json::to_string(&message).unwrap(), wire);
            assert_eq!(serde_json::from_str::<Invalidation>(wire).unwrap(), message);
        }
    }

    #[test]
    fn names_carry_the_prefix() {
        let names = CacheNames::new("t1:");
        assert_eq!(names.invalidation_channel(), "t1:invalidate");
        assert!(names.key_record("ff").starts_with("t1:v1:key:"));
    }
}
