//! Cooldowns shared by every gateway instance: a target that failed `cooldown.failures` times
//! in a row rests for `cooldown.seconds`.
//!
//! Redis holds the truth: per target a count of failures in a row and a rest key that expires
//! on its own. A failure is one script call (one round trip, sent from a task of its own, so
//! the request moving on to its next target never waits for it) that counts, may start the
//! rest, and publishes what happened on the cooldown channel. Every instance listens there
//! (`invalidation::run`) and keeps the resting targets in memory, so choosing a target reads
//! only this process's map, and nothing at all while no target of any API rests or is suspect.
//! A success resets the count only where a failure was seen (announced on the channel), so a
//! healthy target costs nothing. An instance that starts, or reconnects, during a rest learns
//! it when it loads the API's record (`seed`) or from its own next failure there.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use wrapx_core::routing::Cooldown;

use crate::metrics;

/// What an instance knows of one target.
#[derive(Debug, Clone, Copy)]
struct TargetState {
    /// Resting until then.
    until: Option<Instant>,
    /// When the last failure was counted, on Redis's clock (the one all instances share), to
    /// pick the least recently failed target; 0 when unknown (treated as longest ago).
    failed_ms: u64,
    /// A failure was counted and no success has reset the count yet.
    suspect: bool,
}

/// A message on the cooldown channel.
#[derive(Debug, Serialize, Deserialize)]
struct Message {
    target: String,
    /// Milliseconds of rest from now; 0 for a failure that did not start one.
    #[serde(default)]
    rest_ms: u64,
    /// When the failure was counted, on Redis's clock.
    #[serde(default)]
    failed_ms: u64,
    /// The count was reset by a success.
    #[serde(default)]
    recovered: bool,
}

const FAILURE_SCRIPT: &str = include_str!("failure.lua");

pub struct Cooldowns {
    states: DashMap<String, TargetState>,
    /// Entries in `states`: the map is not even looked at while this is 0.
    entries: AtomicUsize,
    redis: deadpool_redis::Pool,
    timeout: Duration,
    prefix: String,
    channel: String,
    script: redis::Script,
}

impl Cooldowns {
    pub fn new(
        redis: deadpool_redis::Pool,
        timeout: Duration,
        names: &wrapx_core::cache::CacheNames,
    ) -> Self {
        Self {
            states: DashMap::new(),
            entries: AtomicUsize::new(0),
            redis,
            timeout,
            prefix: names.prefix().to_owned(),
            channel: names.cooldown_channel(),
            script: redis::Script::new(FAILURE_SCRIPT),
        }
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// When `target` rests at `now`: the time of its last failure (Redis's clock, in ms);
    /// `None` when it may be tried.
    pub fn resting(&self, target: &str, now: Instant) -> Option<u64> {
        if self.entries.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let state = self.states.get(target)?;
        state
            .until
            .is_some_and(|until| until > now)
            .then_some(state.failed_ms)
    }

    /// Counts a failure of `target` in Redis, in the background.
    pub fn failed(self: &Arc<Self>, target: &str, policy: Cooldown) {
        self.update(target, |s| s.suspect = true);
        let this = Arc::clone(self);
        let target = target.to_owned();
        tokio::spawn(async move {
            match this.count_failure(&target, policy).await {
                Ok((Some(rest), failed_ms)) => this.rest(&target, rest, failed_ms),
                Ok((None, failed_ms)) => this.update(&target, |s| s.failed_ms = failed_ms),
                Err(e) => tracing::warn!(error = %e, "a target failure could not be counted"),
            }
        });
    }

    /// A success of `target`: its count of failures in a row starts again, if one was seen.
    pub fn succeeded(self: &Arc<Self>, target: &str) {
        if self.entries.load(Ordering::Relaxed) == 0 {
            return;
        }
        let Some(state) = self.states.get(target).map(|s| *s) else {
            return;
        };
        if !state.suspect || state.until.is_some_and(|u| u > Instant::now()) {
            return;
        }
        self.forget(target);
        let this = Arc::clone(self);
        let target = target.to_owned();
        tokio::spawn(async move {
            if let Err(e) = this.reset(&target).await {
                tracing::warn!(error = %e, "a target's failure count could not be reset");
            }
        });
    }

    /// A message from the cooldown channel (sent by any instance, this one included).
    pub fn on_message(&self, payload: &[u8]) {
        let message: Message = match serde_json::from_slice(payload) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring a cooldown message that does not parse");
                return;
            }
        };
        if message.recovered {
            self.forget(&message.target);
        } else if message.rest_ms > 0 {
            self.rest(
                &message.target,
                Duration::from_millis(message.rest_ms),
                message.failed_ms,
            );
        } else {
            self.update(&message.target, |s| {
                s.suspect = true;
                s.failed_ms = s.failed_ms.max(message.failed_ms);
            });
        }
    }

    /// Learns which of `targets` rest now (one round trip), when an API's record is loaded.
    pub async fn seed(&self, targets: &[&str]) {
        let read = async {
            let mut conn = self.redis.get().await.ok()?;
            let mut pipe = redis::pipe();
            for target in targets {
                pipe.cmd("PTTL").arg(self.rest_key(target));
            }
            pipe.query_async::<Vec<i64>>(&mut conn).await.ok()
        };
        let Ok(Some(ttls)) = tokio::time::timeout(self.timeout, read).await else {
            return;
        };
        for (target, ttl) in targets.iter().zip(ttls) {
            if let Ok(ms @ 1..) = u64::try_from(ttl) {
                self.rest(target, Duration::from_millis(ms), 0);
            }
        }
    }

    /// Forgets everything (the channel was lost: messages may have been missed).
    pub fn clear(&self) {
        self.states.clear();
        self.entries.store(0, Ordering::Relaxed);
    }

    fn rest(&self, target: &str, rest: Duration, failed_ms: u64) {
        let until = Instant::now() + rest;
        self.update(target, |s| {
            s.until = Some(until);
            s.failed_ms = s.failed_ms.max(failed_ms);
            s.suspect = false;
        });
    }

    fn update(&self, target: &str, change: impl FnOnce(&mut TargetState)) {
        let mut entry = self.states.entry(target.to_owned()).or_insert_with(|| {
            self.entries.fetch_add(1, Ordering::Relaxed);
            TargetState {
                until: None,
                failed_ms: 0,
                suspect: false,
            }
        });
        change(&mut entry);
    }

    fn forget(&self, target: &str) {
        if self.states.remove(target).is_some() {
            self.entries.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Runs the failure script: `Some(rest)` when this failure put the target to rest (or it
    /// already was), and the failure's time on Redis's clock.
    async fn count_failure(
        &self,
        target: &str,
        policy: Cooldown,
    ) -> anyhow::Result<(Option<Duration>, u64)> {
        let call = async {
            let mut conn = self.redis.get().await?;
            let (tripped, rest_ms, now_ms): (i64, i64, i64) = self
                .script
                .key(self.count_key(target))
                .key(self.rest_key(target))
                .arg(policy.failures)
                .arg(policy.seconds)
                .arg(&self.channel)
                .arg(target)
                .invoke_async(&mut conn)
                .await?;
            anyhow::Ok((tripped, rest_ms, now_ms))
        };
        let (tripped, rest_ms, now_ms) = tokio::time::timeout(self.timeout, call).await??;
        if tripped == 1 {
            metrics::target_cooldown();
            tracing::warn!(
                target,
                rest_ms,
                "a routing target failed too often in a row: resting"
            );
        }
        let rest = u64::try_from(rest_ms)
            .ok()
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        Ok((rest, u64::try_from(now_ms).unwrap_or(0)))
    }

    async fn reset(&self, target: &str) -> anyhow::Result<()> {
        let message = serde_json::to_string(&Message {
            target: target.to_owned(),
            rest_ms: 0,
            failed_ms: 0,
            recovered: true,
        })?;
        let call = async {
            let mut conn = self.redis.get().await?;
            redis::pipe()
                .cmd("DEL")
                .arg(self.count_key(target))
                .ignore()
                .cmd("PUBLISH")
                .arg(&self.channel)
                .arg(message)
                .ignore()
                .query_async::<()>(&mut conn)
                .await?;
            anyhow::Ok(())
        };
        tokio::time::timeout(self.timeout, call).await?
    }

    /// Both keys of a target share a hash tag, so the script's keys sit on one cluster slot.
    fn count_key(&self, target: &str) -> String {
        format!("{}v1:cooldown:{{{target}}}:failures", self.prefix)
    }

    fn rest_key(&self, target: &str) -> String {
        format!("{}v1:cooldown:{{{target}}}:rest", self.prefix)
    }
}
