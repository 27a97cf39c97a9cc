//! One request's way through its API's targets: which target each attempt goes to, whether a
//! failed attempt gets another, and the list of attempts for the event.
//!
//! pingora's proxy loop makes the attempts: a failed one ends with an error marked for retry,
//! and pingora asks `upstream_peer` again. The plan decides in between: when an attempt fails
//! it picks the next target at once (so the metric can say retried or fell back), and
//! `upstream_peer` takes it.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use wrapx_core::routing::Strategy;

use super::cooldown::Cooldowns;
use crate::{metrics, records::LoadedApi};

/// How a failed attempt failed, for the attempts list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The provider answered a status in `retry.on_status`.
    Status(u16),
    /// No connection.
    Connect,
    /// No first byte in time.
    Timeout,
    /// The exchange broke before the answer's head arrived.
    Upstream,
    /// The request cannot be put in this target's dialect.
    Untranslatable,
}

impl Failure {
    fn word(self) -> &'static str {
        match self {
            Self::Status(_) => "status",
            Self::Connect => "connect_error",
            Self::Timeout => "timeout",
            Self::Upstream => "upstream_error",
            Self::Untranslatable => "untranslatable",
        }
    }
}

/// One attempt, as the event lists it.
#[derive(Debug, Clone)]
struct Record {
    target: usize,
    /// The answer's status, when one came.
    status: Option<u16>,
    /// Why the attempt failed, when it did.
    failure: Option<Failure>,
    ms: u64,
}

/// A request's attempts.
#[derive(Debug)]
pub struct Plan {
    /// The current (or last) attempt's target, an index into `LoadedApi::targets`.
    current: usize,
    /// When the current attempt started.
    current_started: Option<Instant>,
    /// Attempts started so far.
    started: u32,
    max_attempts: u32,
    /// The next attempt's target and how long to wait before it, once an attempt failed and
    /// another may follow.
    next: Option<(usize, Duration)>,
    /// Targets already retried once after a short `retry-after`, one bit each.
    retried_same: u16,
    /// Whether pingora can send the body again (no chunked body past its retry buffer).
    replayable: bool,
    /// Finished attempts; the last one is closed when the request ends. Kept only for an API
    /// with a routing (the only one whose event lists them).
    records: Vec<Record>,
    routed: bool,
}

impl Plan {
    /// A request's plan, starting at target `first` ([`first_target`]; the body is rewritten
    /// for it at admission).
    pub fn new(api: &LoadedApi, first: usize) -> Self {
        Self {
            current: 0,
            current_started: None,
            started: 0,
            max_attempts: api.routing().map_or(1, |r| r.retry.max_attempts.max(1)),
            next: Some((first, Duration::ZERO)),
            retried_same: 0,
            replayable: true,
            records: Vec::new(),
            routed: api.routing().is_some(),
        }
    }

    /// The target the next attempt goes to (the first one's, before any started).
    pub fn upcoming(&self) -> usize {
        self.next.map_or(self.current, |(target, _)| target)
    }

    /// Another attempt was decided: pingora should retry.
    pub fn retry_decided(&self) -> bool {
        self.started > 0 && self.next.is_some()
    }

    /// The attempt failed on a pooled connection the provider had closed: it did not really
    /// happen, and goes again to the same target without counting.
    pub fn again(&mut self) -> bool {
        if !self.replayable {
            return false;
        }
        self.current_started = None;
        self.started = self.started.saturating_sub(1);
        self.next = Some((self.current, Duration::ZERO));
        true
    }

    /// The body can be sent only once (it outgrew pingora's retry buffer): no second attempt.
    pub fn body_not_replayable(&mut self) {
        self.replayable = false;
    }

    pub fn current(&self) -> usize {
        self.current
    }

    /// Attempts started, for `x-wrapx-attempts`.
    pub fn attempts(&self) -> u32 {
        self.started
    }

    /// An attempt starts: its target, and how long to wait first (a short `retry-after`).
    pub fn start(&mut self) -> (usize, Duration) {
        let (target, wait) = self.next.take().unwrap_or_else(|| {
            wrapx_core::never!("an attempt started without a target");
            (self.current, Duration::ZERO)
        });
        self.current = target;
        self.current_started = Some(Instant::now());
        self.started += 1;
        (target, wait)
    }

    /// The current attempt failed in a way that moves the request on. `Some(wait)`: another
    /// attempt follows (pingora should retry), after `wait`. The failure counts towards the
    /// target's cooldown either way.
    pub fn failed(
        &mut self,
        api: &LoadedApi,
        cooldowns: &Arc<Cooldowns>,
        failure: Failure,
        retry_after: Option<Duration>,
        max_retry_after: Duration,
    ) -> Option<Duration> {
        self.close(None, Some(failure));
        // A target that cannot take this request is not unwell.
        if let Some(policy) = api.routing() {
            if policy.cooldown.failures > 0 && failure != Failure::Untranslatable {
                cooldowns.failed(&api.targets[self.current].cooldown_id, policy.cooldown);
            }
        }
        if self.started >= self.max_attempts || !self.replayable {
            metrics::upstream_attempt(metrics::AttemptOutcome::Exhausted);
            return None;
        }
        let bit = 1u16 << (self.current % 16);
        let next = match retry_after {
            Some(wait) if wait <= max_retry_after && self.retried_same & bit == 0 => {
                self.retried_same |= bit;
                (self.current, wait)
            }
            _ => (next_target(api, cooldowns, self.current), Duration::ZERO),
        };
        metrics::upstream_attempt(if next.0 == self.current {
            metrics::AttemptOutcome::Retried
        } else {
            metrics::AttemptOutcome::FellBack
        });
        self.next = Some(next);
        Some(next.1)
    }

    /// The current attempt's answer is the one the client gets.
    pub fn answered(&mut self, api: &LoadedApi, cooldowns: &Arc<Cooldowns>, status: u16) {
        self.close(Some(status), None);
        metrics::upstream_attempt(metrics::AttemptOutcome::Ok);
        if api.routing().is_some() {
            cooldowns.succeeded(&api.targets[self.current].cooldown_id);
        }
    }

    /// The request ended; an attempt still open (the answer, or one cut short) is listed.
    pub fn end(&mut self) {
        self.close(None, None);
    }

    fn close(&mut self, status: Option<u16>, failure: Option<Failure>) {
        let Some(started) = self.current_started.take() else {
            return;
        };
        if !self.routed {
            return;
        }
        let status = status.or(match failure {
            Some(Failure::Status(code)) => Some(code),
            _ => None,
        });
        self.records.push(Record {
            target: self.current,
            status,
            failure,
            ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        });
    }

    /// `response_data.attempts`: each attempt's provider, model, status or error, and time.
    pub fn attempts_json(&self, api: &LoadedApi) -> Value {
        let list = self
            .records
            .iter()
            .map(|r| {
                let target = &api.targets[r.target.min(api.targets.len() - 1)];
                let mut entry = json!({
                    "provider_id": target.provider_id,
                    "model": target.model,
                    "ms": r.ms,
                });
                if let Some(status) = r.status {
                    entry["status"] = json!(status);
                }
                if let Some(failure) = r.failure {
                    entry["error"] = json!(failure.word());
                }
                entry
            })
            .collect();
        Value::Array(list)
    }
}

/// The first attempt's target: the first in order (or one by weight) that is not resting, or
/// the one that failed least recently when every one is.
pub fn first_target(api: &LoadedApi, cooldowns: &Cooldowns) -> usize {
    let Some(policy) = api.routing() else {
        return 0;
    };
    let n = api.targets.len();
    if n == 1 {
        return 0;
    }
    let now = Instant::now();
    let resting = |i: usize| cooldowns.resting(&api.targets[i].cooldown_id, now);
    match policy.strategy {
        Strategy::Fallback => (0..n)
            .find(|&i| resting(i).is_none())
            .unwrap_or_else(|| least_recently_failed(api, cooldowns, 0..n, now)),
        Strategy::Weighted => {
            let awake: Vec<usize> = (0..n).filter(|&i| resting(i).is_none()).collect();
            if awake.is_empty() {
                return least_recently_failed(api, cooldowns, 0..n, now);
            }
            let total: u64 = awake
                .iter()
                .map(|&i| u64::from(api.targets[i].weight))
                .sum();
            let mut point = rand::random::<u64>() % total.max(1);
            for &i in &awake {
                let w = u64::from(api.targets[i].weight);
                if point < w {
                    return i;
                }
                point -= w;
            }
            awake[awake.len() - 1]
        }
    }
}

/// After `current` failed: the next target in order (wrapping round) that is not resting, or
/// the least recently failed one.
fn next_target(api: &LoadedApi, cooldowns: &Cooldowns, current: usize) -> usize {
    let n = api.targets.len();
    if n == 1 {
        return 0;
    }
    let now = Instant::now();
    let order = (1..=n).map(|step| (current + step) % n);
    order
        .clone()
        .find(|&i| {
            cooldowns
                .resting(&api.targets[i].cooldown_id, now)
                .is_none()
        })
        .unwrap_or_else(|| least_recently_failed(api, cooldowns, order, now))
}

fn least_recently_failed(
    api: &LoadedApi,
    cooldowns: &Cooldowns,
    candidates: impl Iterator<Item = usize>,
    now: Instant,
) -> usize {
    candidates
        .min_by_key(|&i| cooldowns.resting(&api.targets[i].cooldown_id, now))
        .unwrap_or(0)
}
