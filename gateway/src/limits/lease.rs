//! Slots reserved from Redis in blocks, for keys whose limit is far above a single request.
//!
//! One Redis script per request was, after the events, the largest cost of a request outside
//! the gateway itself (about 17% of a core at 14,000 requests/s on the reference machine, plus
//! a round trip on the gateway's side). A key with a limit of a million a minute does not need
//! Redis to weigh each request: the script can admit a block of requests at once, and this
//! process hands the slots out until they are used or the lease expires.
//!
//! - Only keys with a limit of at least [`MIN_LIMIT_TO_LEASE`] lease, and a block is at most
//!   1% of the limit ([`max_block`]): smaller limits stay exact request by request.
//! - The block size adapts per key: it starts at one, doubles while leases are used up before
//!   they expire, and halves when one expires with slots left, so a quiet key asks for one
//!   slot at a time and wastes none.
//! - One request per key at a time reserves a block; requests arriving meanwhile wait for it
//!   (never longer than the Redis timeout) instead of each making a round trip of its own.
//! - A busy key's next block is reserved ahead, in the background, once half of the current
//!   one is handed out ([`Taken::ahead`]): otherwise the request that found the lease empty,
//!   and those arriving during its round trip, would wait for Redis, one or two in every
//!   block, which is more than 1% of requests and so the whole p99.
//! - Every reserved slot counts in Redis from the moment it is reserved, for every instance:
//!   the limit across instances still holds. Two bounded inexactnesses remain, each at most two
//!   blocks (2% of the limit) per instance: a slot left unused when its lease expires still
//!   counts until it leaves the window (fewer admitted), and a slot used up to two
//!   [`lease_ttl`]s after it was reserved leaves the window that much early (more admitted at
//!   a window's edge).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use tokio::sync::watch;
use uuid::Uuid;

use super::{Decision, LimitSource};

/// Limits below this are checked request by request.
pub(super) const MIN_LIMIT_TO_LEASE: u32 = 200;
/// The largest block, whatever the limit.
const MAX_BLOCK: u32 = 64;
/// How long a reservation in progress keeps other requests of its key to one slot each.
const RESERVING_AT_MOST: Duration = Duration::from_secs(1);
/// Beyond this many keys, expired leases are dropped when a new one is stored.
const SWEEP_ABOVE: usize = 10_000;

/// The most slots one reservation may ask for under this limit: 1% of it, at most
/// [`MAX_BLOCK`].
pub(super) fn max_block(limit: u32) -> u32 {
    if limit < MIN_LIMIT_TO_LEASE {
        1
    } else {
        (limit / 100).clamp(1, MAX_BLOCK)
    }
}

/// How long reserved slots may be handed out: 1% of the window, at most 250 ms.
fn lease_ttl(window: Duration) -> Duration {
    (window / 100).min(Duration::from_millis(250))
}

struct Lease {
    limit: u32,
    window: Duration,
    /// Slots reserved and not yet handed out.
    left: u32,
    expires: Instant,
    /// The block size of the next reservation.
    next: u32,
    /// Requests in Redis's window just after the reservation, and when that window would be
    /// back to empty, for the headers of the requests that use the lease.
    counted: u32,
    reset_at: Instant,
    /// While a request is reserving a block for this key, others wait for it ([`Next::Wait`])
    /// rather than each going to Redis. A deadline rather than a flag: a reservation that
    /// never reported back must not hold the key forever.
    reserving_until: Option<Instant>,
    /// Bumped whenever a reservation ends, to wake the requests waiting for it.
    ended: watch::Sender<u64>,
}

/// A slot handed out by [`Leases::take`].
pub(super) struct Taken {
    pub decision: Decision,
    /// The lease is running low: reserve this many slots ahead, in the background, and
    /// [`Leases::store_ahead`] (or [`Leases::abandon`]) them.
    pub ahead: Option<u32>,
}

/// What a request that found no slot to take does next.
pub(super) enum Next {
    /// Ask Redis for this many slots (then [`Leases::store`] or [`Leases::abandon`]).
    Reserve(u32),
    /// Another request is reserving a block for this key: wait for it to end (at most the
    /// Redis timeout), then try to take a slot again.
    Wait(watch::Receiver<u64>),
}

#[derive(Default)]
pub(super) struct Leases {
    by_subject: Mutex<HashMap<Uuid, Lease>>,
}

impl Leases {
    /// A slot of this key's lease, when it has one left and unexpired for the same limit.
    pub(super) fn take(&self, subject: Uuid, limit: u32, window: Duration) -> Option<Taken> {
        if limit < MIN_LIMIT_TO_LEASE {
            return None;
        }
        let now = Instant::now();
        let mut map = self.lock();
        let lease = map.get_mut(&subject)?;
        if lease.left == 0 || now >= lease.expires || lease.limit != limit || lease.window != window
        {
            return None;
        }
        lease.left -= 1;
        let reserving = lease.reserving_until.is_some_and(|until| now < until);
        let ahead = (lease.next > 1 && lease.left <= lease.next / 2 && !reserving).then(|| {
            lease.reserving_until = Some(now + RESERVING_AT_MOST);
            // Half the block went in under half the lease's life: the key is busy, ask for
            // more (a lease that expires with slots left halves it again, in `next`).
            if now + lease_ttl(window) / 2 < lease.expires {
                (lease.next * 2).min(max_block(limit))
            } else {
                lease.next
            }
        });
        Some(Taken {
            decision: Decision {
                allowed: true,
                limit,
                remaining: remaining(limit, lease.counted, lease.left),
                reset_after: lease.reset_at.saturating_duration_since(now),
                retry_after: None,
                source: LimitSource::Redis,
            },
            ahead,
        })
    }

    /// What to do when [`Leases::take`] found no slot: reserve one, or a block when the key is
    /// busy, or wait for the block another request is reserving.
    pub(super) fn next(&self, subject: Uuid, limit: u32, window: Duration) -> Next {
        let cap = max_block(limit);
        if cap == 1 {
            return Next::Reserve(1);
        }
        let now = Instant::now();
        let mut map = self.lock();
        let Some(lease) = map.get_mut(&subject) else {
            return Next::Reserve(1);
        };
        if lease.limit != limit || lease.window != window {
            return Next::Reserve(1);
        }
        if lease.reserving_until.is_some_and(|until| now < until) {
            // Subscribing under the lock: the end of that reservation cannot slip in between.
            return Next::Wait(lease.ended.subscribe());
        }
        // Requests waiting for a block that fell short of them: the next one serves them all.
        let waiting = u32::try_from(lease.ended.receiver_count()).unwrap_or(u32::MAX);
        let block = if now < lease.expires {
            // Used up before it expired: the key is busy.
            (lease.next * 2).max(waiting.saturating_add(1)).min(cap)
        } else if lease.left > 0 {
            // Expired with slots left: it asked for too many.
            (lease.next / 2).max(1)
        } else {
            lease.next.min(cap)
        };
        if block > 1 {
            lease.reserving_until = Some(now + RESERVING_AT_MOST);
        }
        Next::Reserve(block)
    }

    /// A reservation of `asked` slots failed (Redis away or slow): the requests waiting for it
    /// go on without it.
    pub(super) fn abandon(&self, subject: Uuid, asked: u32) {
        if asked <= 1 {
            return;
        }
        if let Some(lease) = self.lock().get_mut(&subject) {
            lease.reserving_until = None;
            lease.ended.send_modify(|n| *n += 1);
        }
    }

    /// Records a reservation: Redis admitted `granted` slots, one of which the current request
    /// uses, and answered `decision` for it; returns that decision with the slots still held
    /// counted as remaining.
    pub(super) fn store(
        &self,
        subject: Uuid,
        window: Duration,
        asked: u32,
        granted: u32,
        decision: Decision,
    ) -> Decision {
        self.record(subject, window, asked, granted.saturating_sub(1), decision)
    }

    /// Records a reservation made ahead ([`Taken::ahead`]): all `granted` slots are spare.
    pub(super) fn store_ahead(
        &self,
        subject: Uuid,
        window: Duration,
        asked: u32,
        granted: u32,
        decision: Decision,
    ) {
        self.record(subject, window, asked, granted, decision);
    }

    fn record(
        &self,
        subject: Uuid,
        window: Duration,
        asked: u32,
        spare: u32,
        mut decision: Decision,
    ) -> Decision {
        if decision.limit < MIN_LIMIT_TO_LEASE {
            return decision;
        }
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() > SWEEP_ABOVE {
            map.retain(|_, lease| lease.expires > now);
        }
        let lease = map.entry(subject).or_insert_with(|| Lease {
            limit: decision.limit,
            window,
            left: 0,
            expires: now,
            next: 1,
            counted: 0,
            reset_at: now,
            reserving_until: None,
            ended: watch::Sender::new(0),
        });
        if lease.limit != decision.limit || lease.window != window || now >= lease.expires {
            // A changed limit or a stale lease: its leftovers are not handed out any more.
            lease.left = 0;
        }
        lease.limit = decision.limit;
        lease.window = window;
        // Reservations made at once by concurrent requests, or ahead, add up.
        lease.left = lease.left.saturating_add(spare);
        lease.expires = now + lease_ttl(window);
        if asked > 1 {
            lease.next = asked;
            lease.reserving_until = None;
            lease.ended.send_modify(|n| *n += 1);
        }
        lease.counted = decision.limit.saturating_sub(decision.remaining);
        lease.reset_at = now + decision.reset_after;
        decision.remaining = remaining(decision.limit, lease.counted, lease.left);
        decision
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Lease>> {
        // The map holds plain numbers: a panic elsewhere cannot leave it inconsistent.
        self.by_subject.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the headers say remains: the limit less what Redis counted, plus the slots this
/// process reserved and has not used (they count in Redis but are no request yet).
fn remaining(limit: u32, counted: u32, left: u32) -> u32 {
    limit
        .saturating_sub(counted)
        .saturating_add(left)
        .min(limit)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn decision(limit: u32, remaining: u32) -> Decision {
        Decision {
            allowed: true,
            limit,
            remaining,
            reset_after: Duration::from_secs(60),
            retry_after: None,
            source: LimitSource::Redis,
        }
    }

    /// A key that has just reserved a block of 8 slots, one of them used by the reserving
    /// request.
    fn leased_block_of_8(limit: u32, window: Duration) -> (Leases, Uuid) {
        let leases = Leases::default();
        let key = Uuid::now_v7();
        leases.store(key, window, 8, 8, decision(limit, limit - 8));
        (leases, key)
    }

    #[test]
    fn small_limits_never_lease() {
        let leases = Leases::default();
        let key = Uuid::now_v7();
        let window = Duration::from_secs(60);
        assert!(matches!(leases.next(key, 199, window), Next::Reserve(1)));
        let d = leases.store(key, window, 1, 5, decision(199, 100));
        assert_eq!(d.remaining, 100);
        assert!(leases.take(key, 199, window).is_none());
    }

    #[test]
    fn a_busy_key_doubles_its_block_and_hands_out_exactly_what_was_granted() {
        let leases = Leases::default();
        let key = Uuid::now_v7();
        let window = Duration::from_secs(60);
        let limit = 1_000_000;
        assert!(matches!(leases.next(key, limit, window), Next::Reserve(1)));
        let first = leases.store(key, window, 1, 1, decision(limit, limit - 1));
        assert_eq!(first.remaining, limit - 1);
        assert!(leases.take(key, limit, window).is_none(), "nothing spare");
        // Used up before expiry: the next block doubles, up to the cap, and a request arriving
        // while it is being reserved waits for it.
        assert!(matches!(leases.next(key, limit, window), Next::Reserve(2)));
        let Next::Wait(waiting) = leases.next(key, limit, window) else {
            panic!("a second reservation while one is in flight");
        };
        let second = leases.store(key, window, 2, 2, decision(limit, limit - 3));
        assert_eq!(
            second.remaining,
            limit - 2,
            "its spare slot is no request yet"
        );
        assert!(waiting.has_changed().unwrap(), "the waiter is woken");
        let taken = leases.take(key, limit, window).unwrap();
        assert_eq!(taken.decision.remaining, limit - 3);
        // Half the block handed out, and at once: the next one, twice as large, is asked for
        // ahead.
        assert_eq!(taken.ahead, Some(4));
        assert!(leases.take(key, limit, window).is_none());
        assert!(
            matches!(leases.next(key, limit, window), Next::Wait(_)),
            "the reservation ahead is in flight"
        );
        leases.abandon(key, 4);
        assert!(matches!(leases.next(key, limit, window), Next::Reserve(4)));
        // A failed reservation lets the next request reserve again.
        leases.abandon(key, 4);
        assert!(matches!(leases.next(key, limit, window), Next::Reserve(4)));
        // A changed limit does not use the old lease.
        leases.store(key, window, 4, 4, decision(limit, limit - 7));
        assert!(leases.take(key, limit / 2, window).is_none());
        assert_eq!(max_block(limit), MAX_BLOCK);
        assert_eq!(max_block(1_000), 10);
    }

    #[test]
    fn the_next_block_is_reserved_ahead_once_half_the_lease_is_handed_out() {
        let window = Duration::from_secs(60);
        let limit = 1_000_000;
        // The reserving request used one slot of the block, 7 are spare.
        let (leases, key) = leased_block_of_8(limit, window);
        let mut aheads = Vec::new();
        for _ in 0..7 {
            let taken = leases.take(key, limit, window).unwrap();
            aheads.extend(taken.ahead);
        }
        // Asked once, when 4 (half the block) were left, not again while it is in flight; and
        // twice as many, the key being busy.
        assert_eq!(aheads, [16]);
        assert!(
            leases.take(key, limit, window).is_none(),
            "all 8 handed out"
        );
        // The lease ran dry before the reservation ahead came back: wait for it.
        let Next::Wait(waiting) = leases.next(key, limit, window) else {
            panic!("a second reservation while the one ahead is in flight");
        };
        leases.store_ahead(key, window, 16, 16, decision(limit, limit - 24));
        assert!(waiting.has_changed().unwrap(), "the waiter is woken");
        let taken = leases.take(key, limit, window).unwrap();
        assert_eq!(taken.decision.remaining, limit - 9, "8 + 1 requests so far");
        assert!(taken.ahead.is_none());
        // 15 left: the next reservation ahead comes when 8 are.
        for _ in 0..6 {
            assert!(leases.take(key, limit, window).unwrap().ahead.is_none());
        }
        assert_eq!(leases.take(key, limit, window).unwrap().ahead, Some(32));
        // A failed reservation ahead lets a later take ask again.
        leases.abandon(key, 32);
        assert_eq!(leases.take(key, limit, window).unwrap().ahead, Some(32));
    }

    #[test]
    fn an_expired_lease_is_not_used_and_halves_the_block() {
        // 1% of 1 s: the lease lasts 10 ms.
        let window = Duration::from_secs(1);
        let limit = 100_000;
        let (leases, key) = leased_block_of_8(limit, window);
        std::thread::sleep(Duration::from_millis(20));
        assert!(leases.take(key, limit, window).is_none());
        assert!(matches!(leases.next(key, limit, window), Next::Reserve(4)));
    }
}
