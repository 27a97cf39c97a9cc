//! The rate limiter against real Redis (each test under its own key prefix) and against a
//! private `redis-server` the test starts and stops: exactness across instances, the sliding
//! window's edge, the header values, a lowered limit, the key's expiry, the local fallback and
//! the recovery.
use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use redis::AsyncCommands;
use uuid::Uuid;
use wrapx_core::cache::CacheNames;
use wrapx_gateway::limits::{Decision, LimitSource, RateLimiter};
use wrapx_testkit::{backends, eventually, net::ClosedPort, redis::PrivateRedis};

const TIMEOUT: Duration = Duration::from_millis(200);

fn pool(url: &str) -> deadpool_redis::Pool {
    let mut settings = backends::settings(
        "postgres://unused@127.0.0.1/unused",
        "amqp://unused",
        "unused:",
    )
    .redis;
    if !url.is_empty() {
        settings.url = wrapx_core::secret::Secret::new(url);
    }
    settings.timeout_ms = TIMEOUT.as_millis() as u64;
    wrapx_core::redis_pool::pool(&settings).unwrap()
}

/// The shared test Redis, as the core's test settings name it.
fn shared_pool() -> deadpool_redis::Pool {
    pool("")
}

fn limiter(pool: deadpool_redis::Pool, prefix: &str) -> RateLimiter {
    RateLimiter::new(pool, CacheNames::new(prefix), 50, TIMEOUT)
}

/// The slots a key's window holds: the total its script keeps.
async fn slots_counted(conn: &mut deadpool_redis::Connection, key: &str) -> u64 {
    conn.hget(key, "n").await.unwrap()
}

/// Counts the rate-limit scripts Redis runs on one key, from its `MONITOR` feed: the round
/// trips the limiter made for it.
struct ScriptCalls {
    seen: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    feed: tokio::task::JoinHandle<()>,
}

impl ScriptCalls {
    async fn watch(key: String) -> Self {
        let url = backends::settings("postgres://unused", "amqp://unused", "")
            .redis
            .url
            .expose()
            .to_owned();
        let monitor = redis::Client::open(url)
            .unwrap()
            .get_async_monitor()
            .await
            .unwrap();
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = seen.clone();
        let quoted = format!("\"{key}\"");
        let feed = tokio::spawn(async move {
            use futures::StreamExt;
            let mut lines = monitor.into_on_message::<String>();
            while let Some(line) = lines.next().await {
                // `... [0 127.0.0.1:port] "EVALSHA" "<sha>" "1" "<key>" ...`; the commands the
                // script runs itself show as `[0 lua]` and are not counted.
                let script = line.contains("\"EVALSHA\"") || line.contains("\"EVAL\"");
                if script && line.contains(&quoted) {
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        // MONITOR answers OK before it streams: a command sent now is seen.
        Self { seen, feed }
    }

    async fn count(self) -> usize {
        // The feed lags the commands a little.
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.feed.abort();
        self.seen.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_the_limit_passes_across_two_instances() {
    let prefix = backends::redis_prefix();
    let (a, b) = (
        limiter(shared_pool(), &prefix),
        limiter(shared_pool(), &prefix),
    );
    let subject = Uuid::now_v7();
    let window = Duration::from_secs(60);

    let checks = (0..50).map(|i| {
        let limiter = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move { limiter.check(subject, 10, window).await })
    });
    let decisions: Vec<Decision> = futures::future::join_all(checks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    assert!(decisions
        .iter()
        .all(|d| d.source == LimitSource::Redis && d.limit == 10));
    let allowed: Vec<&Decision> = decisions.iter().filter(|d| d.allowed).collect();
    assert_eq!(allowed.len(), 10);
    let remaining: BTreeSet<u32> = allowed.iter().map(|d| d.remaining).collect();
    assert_eq!(
        remaining,
        (0..10).collect(),
        "each admitted request saw its own count"
    );
    for d in &decisions {
        assert!(
            d.reset_after <= window && d.reset_after > window - Duration::from_secs(5),
            "{d:?}"
        );
        if d.allowed {
            assert_eq!(d.retry_after, None);
        } else {
            assert_eq!(d.remaining, 0);
            let retry = d.retry_after.unwrap();
            assert!(
                retry > window - Duration::from_secs(5) && retry <= window,
                "{d:?}"
            );
        }
    }

    // The state expires with the window.
    let mut conn = shared_pool().get().await.unwrap();
    let ttl: i64 = conn
        .pttl(CacheNames::new(&prefix).rate_limit(subject))
        .await
        .unwrap();
    assert!(ttl > 55_000 && ttl <= 60_000, "pttl {ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_double_burst_at_a_window_edge() {
    let prefix = backends::redis_prefix();
    let (a, b) = (
        limiter(shared_pool(), &prefix),
        limiter(shared_pool(), &prefix),
    );
    let subject = Uuid::now_v7();
    let window = Duration::from_secs(1);

    // A fixed window would let 5 through at the end of one window and 5 more at the start of
    // the next. Hammer across several windows and check every 0.9 s span.
    let start = Instant::now();
    let mut admitted = Vec::new();
    let mut i = 0u32;
    while start.elapsed() < Duration::from_millis(3500) {
        let limiter = if i.is_multiple_of(2) { &a } else { &b };
        i += 1;
        let d = limiter.check(subject, 5, window).await;
        assert_eq!(d.source, LimitSource::Redis);
        if d.allowed {
            admitted.push(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    for (k, &t) in admitted.iter().enumerate() {
        let in_span = admitted[k..]
            .iter()
            .take_while(|&&u| u < t + Duration::from_millis(900))
            .count();
        assert!(
            in_span <= 5,
            "{in_span} admitted within 0.9 s from {t:?}: {admitted:?}"
        );
    }
    // It is a limiter, not a wall: about 5 per second got through.
    assert!((15..=20).contains(&admitted.len()), "admitted {admitted:?}");
}

/// A busy key whose limit is far above one request reserves its slots from Redis in blocks:
/// far fewer round trips than requests, the headers still count down one by one, and the
/// limit holds: exactly on one instance, within a block (1% of the limit) on two.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_key_with_a_high_limit_reserves_slots_in_blocks_and_keeps_its_limit() {
    let prefix = backends::redis_prefix();
    let window = Duration::from_secs(60);
    let names = CacheNames::new(&prefix);
    let mut conn = shared_pool().get().await.unwrap();

    let one = limiter(shared_pool(), &prefix);
    let subject = Uuid::now_v7();
    let calls = ScriptCalls::watch(names.rate_limit(subject)).await;
    let mut admitted = 0;
    for i in 0..1200u32 {
        let d = one.check(subject, 1000, window).await;
        assert_eq!(d.source, LimitSource::Redis);
        if d.allowed {
            admitted += 1;
            assert_eq!(d.remaining, 1000 - admitted, "request {i}: {d:?}");
        } else {
            assert_eq!(d.remaining, 0);
            assert!(
                d.retry_after.is_some_and(|r| r > Duration::from_secs(50)),
                "{d:?}"
            );
        }
    }
    assert_eq!(admitted, 1000, "exactly the limit");
    assert_eq!(
        slots_counted(&mut conn, &names.rate_limit(subject)).await,
        1000
    );
    // Every reservation is one script run; the 200 refused requests are one each.
    let seen = calls.count().await;
    assert!(seen > 200, "MONITOR saw {seen} script runs");
    let reservations = seen - 200;
    assert!(
        reservations <= 1000 / 5,
        "{reservations} reservations for 1000 requests"
    );

    // Two instances at once, 64 requests in flight each: neither reserves more than the
    // limit leaves, neither keeps more than a block of it unused, and blocks are still used.
    let (a, b) = (
        limiter(shared_pool(), &prefix),
        limiter(shared_pool(), &prefix),
    );
    let subject = Uuid::now_v7();
    let calls = ScriptCalls::watch(names.rate_limit(subject)).await;
    let mut tasks = Vec::new();
    for worker in 0..128 {
        let limiter = if worker % 2 == 0 {
            a.clone()
        } else {
            b.clone()
        };
        tasks.push(tokio::spawn(async move {
            let mut allowed = 0u32;
            for _ in 0..20 {
                if limiter.check(subject, 2000, window).await.allowed {
                    allowed += 1;
                }
            }
            allowed
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        admitted += t.await.unwrap();
    }
    assert_eq!(
        slots_counted(&mut conn, &names.rate_limit(subject)).await,
        2000,
        "every slot of the limit reserved, none past it"
    );
    // Requests arriving while their key's block is being reserved wait for it rather than
    // each making a round trip of its own (the 560 refused ones are a round trip each).
    let reservations = calls.count().await.saturating_sub(2560 - admitted as usize);
    assert!(
        reservations <= 2000 / 4,
        "{reservations} reservations for 2000 admitted requests in flight 64 at a time per instance"
    );
    assert!(
        (2000 - 2 * 20..=2000).contains(&admitted),
        "{admitted} of 2560 admitted under a limit of 2000"
    );
}

/// Redis's clock, which the script reads, in µs.
async fn redis_now(conn: &mut deadpool_redis::Connection) -> u64 {
    let (s, us): (u64, u64) = redis::cmd("TIME").query_async(conn).await.unwrap();
    s * 1_000_000 + us
}

/// The limit filled just before the edge of a fixed window: a fixed window would admit it all
/// again just after the edge; here nothing is admitted until the requests of the filled
/// sub-window have been in the window for a whole window span, on either instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_limit_filled_at_a_window_edge_is_not_admitted_again_after_it() {
    let prefix = backends::redis_prefix();
    let (a, b) = (
        limiter(shared_pool(), &prefix),
        limiter(shared_pool(), &prefix),
    );
    let mut conn = shared_pool().get().await.unwrap();
    let subject = Uuid::now_v7();
    let window = Duration::from_secs(1);

    // 30 ms before a whole second of Redis's clock: the edge of a fixed 1 s window.
    let to_edge = 1_000_000 - redis_now(&mut conn).await % 1_000_000;
    tokio::time::sleep(Duration::from_micros(
        (to_edge + 1_000_000 - 30_000) % 1_000_000,
    ))
    .await;
    let filling = Instant::now();
    for i in 0..5 {
        let limiter = if i % 2 == 0 { &a } else { &b };
        assert!(limiter.check(subject, 5, window).await.allowed);
    }
    let at_edge = redis_now(&mut conn).await % 1_000_000;
    // Past the edge, into the next fixed window.
    tokio::time::sleep(Duration::from_millis(60)).await;
    let after_edge = b.check(subject, 5, window).await;
    let checked = Instant::now();
    assert!(
        !after_edge.allowed,
        "{after_edge:?} (filled at …{at_edge} µs)"
    );
    // It names the moment the filled sub-window leaves: a window after the filling.
    let retry = after_edge.retry_after.unwrap();
    assert!(
        (checked - filling) + retry >= window && retry <= window,
        "{after_edge:?}"
    );

    // Hammered until one is admitted again: not before a window after the filling started.
    let deadline = Instant::now() + 3 * window;
    let readmitted = loop {
        assert!(Instant::now() < deadline, "never admitted again");
        let d = a.check(subject, 5, window).await;
        if d.allowed {
            break Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(
        readmitted - filling >= window,
        "admitted again {:?} after the filling began",
        readmitted - filling
    );
}

/// retry-after is the moment the sub-window that keeps the request out leaves: the oldest one
/// for the configured limit, a later one for a limit lowered below what the window holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_names_the_sub_window_that_must_leave_also_under_a_lowered_limit() {
    let prefix = backends::redis_prefix();
    let limiter = limiter(shared_pool(), &prefix);
    let subject = Uuid::now_v7();
    let window = Duration::from_secs(1);

    for _ in 0..3 {
        assert!(limiter.check(subject, 5, window).await.allowed);
    }
    // Far enough apart that the two groups fall in different sub-windows (50 ms each).
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..2 {
        assert!(limiter.check(subject, 5, window).await.allowed);
    }

    // The limit of 5 needs the first 3 to leave; a limit lowered to 2 needs all 5 to.
    let full = limiter.check(subject, 5, window).await;
    let lowered = limiter.check(subject, 2, window).await;
    assert!(!full.allowed && !lowered.allowed, "{full:?} {lowered:?}");
    assert_eq!((full.remaining, lowered.remaining), (0, 0));
    assert_eq!(lowered.limit, 2);
    let (retry_full, retry_lowered) = (full.retry_after.unwrap(), lowered.retry_after.unwrap());
    assert!(
        retry_full < window - Duration::from_millis(150),
        "the first group was admitted 300 ms earlier: {full:?}"
    );
    assert!(
        retry_lowered > retry_full + Duration::from_millis(200) && retry_lowered <= window,
        "{lowered:?} after {full:?}"
    );
    assert_eq!(lowered.reset_after, retry_lowered, "the newest sub-window");

    // Once the first group has left: room for 3 under the limit of 5, none under 2.
    tokio::time::sleep(retry_full + Duration::from_millis(30)).await;
    let still = limiter.check(subject, 2, window).await;
    assert!(!still.allowed, "2 counted, limit 2: {still:?}");
    for expected_remaining in [2, 1, 0] {
        let d = limiter.check(subject, 5, window).await;
        assert!(d.allowed, "{d:?}");
        assert_eq!(d.remaining, expected_remaining);
    }
    assert!(!limiter.check(subject, 5, window).await.allowed);
}

/// The key always expires: when its newest admission leaves the window; and it holds at most
/// one counter per sub-window however much traffic passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_expires_with_its_newest_admission_and_stays_small() {
    let prefix = backends::redis_prefix();
    let limiter = limiter(shared_pool(), &prefix);
    let mut conn = shared_pool().get().await.unwrap();
    let subject = Uuid::now_v7();
    let key = CacheNames::new(&prefix).rate_limit(subject);
    let window = Duration::from_secs(1);
    let longest = window.as_millis() as i64;

    // Below the limits that lease: one script run per check.
    let first = limiter.check(subject, 150, window).await;
    assert!(first.allowed);
    let ttl: i64 = conn.pttl(&key).await.unwrap();
    assert!(ttl > 900 && ttl <= longest, "pttl {ttl}");

    // Traffic across more than two windows: one counter per sub-window, the old ones dropped.
    let started = Instant::now();
    let mut most_fields = 0;
    while started.elapsed() < window * 5 / 2 {
        assert!(limiter.check(subject, 150, window).await.allowed);
        let fields: usize = conn.hlen(&key).await.unwrap();
        most_fields = most_fields.max(fields);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // At most the 21 sub-windows that can hold an admission of the last window, two fields
    // each, and the key's four.
    assert!((20..=46).contains(&most_fields), "{most_fields} fields");
    let ttl: i64 = conn.pttl(&key).await.unwrap();
    assert!(ttl > 900 && ttl <= longest, "pttl {ttl}");

    // A refusal writes nothing and leaves the expiry as it was.
    let full = Uuid::now_v7();
    let full_key = CacheNames::new(&prefix).rate_limit(full);
    assert!(limiter.check(full, 1, window).await.allowed);
    let before: i64 = conn.pttl(&full_key).await.unwrap();
    assert!(!limiter.check(full, 1, window).await.allowed);
    let after: i64 = conn.pttl(&full_key).await.unwrap();
    assert!(after > 0 && after <= before, "{before} then {after}");

    // Idle: gone once the newest sub-window has left.
    tokio::time::sleep(Duration::from_millis(longest as u64 + 50)).await;
    let exists: bool = conn.exists(&key).await.unwrap();
    assert!(!exists, "the key outlived its window");
}

/// A limit of zero (the admin API refuses it, a hand-edited row may not) refuses every
/// request, decided by Redis rather than mistaken for a Redis failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_limit_refuses_everything_through_redis() {
    let prefix = backends::redis_prefix();
    let limiter = limiter(shared_pool(), &prefix);
    let d = limiter
        .check(Uuid::now_v7(), 0, Duration::from_secs(60))
        .await;
    assert!(!d.allowed, "{d:?}");
    assert_eq!(d.source, LimitSource::Redis);
    assert!(limiter.redis_healthy());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remaining_reset_and_retry_after_are_what_the_headers_need() {
    let prefix = backends::redis_prefix();
    let limiter = limiter(shared_pool(), &prefix);
    let subject = Uuid::now_v7();
    let window = Duration::from_secs(2);

    for expected_remaining in [2, 1, 0] {
        let d = limiter.check(subject, 3, window).await;
        assert!(d.allowed, "{d:?}");
        assert_eq!(d.remaining, expected_remaining);
        assert!(
            d.reset_after <= window && d.reset_after > Duration::from_millis(1500),
            "{d:?}"
        );
    }
    let refused = limiter.check(subject, 3, window).await;
    assert!(!refused.allowed);
    assert_eq!(refused.remaining, 0);
    let retry = refused.retry_after.unwrap();
    assert!(
        retry <= window && retry > Duration::from_millis(1500),
        "{refused:?}"
    );
    assert!(retry <= refused.reset_after);

    // Just before retry-after it is still refused; at retry-after it is admitted again.
    tokio::time::sleep(retry.saturating_sub(Duration::from_millis(300))).await;
    assert!(!limiter.check(subject, 3, window).await.allowed);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let again = limiter.check(subject, 3, window).await;
    assert!(again.allowed, "{again:?}");

    // Another subject is limited on its own.
    assert!(limiter.check(Uuid::now_v7(), 3, window).await.allowed);
    assert!(limiter.redis_healthy());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_or_silent_redis_falls_back_to_the_local_limiter_within_the_timeout() {
    // Nothing listens: refused at once.
    let closed_port = ClosedPort::new();
    let closed = limiter(pool(&format!("redis://{}/0", closed_port.addr)), "t:");
    // Accepts connections and never answers: only the timeout ends the wait.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!(
        "redis://127.0.0.1:{}/0",
        silent.local_addr().unwrap().port()
    );
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        loop {
            sockets.push(silent.accept().await.unwrap().0);
        }
    });
    let slow = limiter(pool(&silent_url), "t:");

    for limiter in [&closed, &slow] {
        let subject = Uuid::now_v7();
        let started = Instant::now();
        let first = limiter.check(subject, 3, Duration::from_secs(60)).await;
        assert!(
            started.elapsed() < TIMEOUT + Duration::from_millis(100),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(first.source, LimitSource::Local);
        assert!(first.allowed);
        assert!(!limiter.redis_healthy());
        // The local limiter keeps to the configured limit: 3 per minute for this key.
        for _ in 0..2 {
            let d = limiter.check(subject, 3, Duration::from_secs(60)).await;
            assert!(d.allowed && d.source == LimitSource::Local, "{d:?}");
        }
        let refused = limiter.check(subject, 3, Duration::from_secs(60)).await;
        assert!(!refused.allowed);
        assert!(
            refused.retry_after.unwrap() > Duration::from_secs(10),
            "{refused:?}"
        );
        // While Redis is unhealthy, checks do not wait on it.
        let started = Instant::now();
        for _ in 0..20 {
            limiter
                .check(Uuid::now_v7(), 3, Duration::from_secs(60))
                .await;
        }
        assert!(
            started.elapsed() < 2 * TIMEOUT + Duration::from_millis(100),
            "took {:?}",
            started.elapsed()
        );
    }
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_by_itself_when_redis_comes_back() {
    let mut redis = PrivateRedis::start().await;
    let limiter = limiter(pool(&redis.url()), "t:");
    let subject = Uuid::now_v7();
    let window = Duration::from_secs(60);
    assert_eq!(
        limiter.check(subject, 1000, window).await.source,
        LimitSource::Redis
    );
    assert!(limiter.redis_healthy());

    redis.stop();
    let started = Instant::now();
    let d = limiter.check(subject, 1000, window).await;
    assert!(started.elapsed() < TIMEOUT + Duration::from_millis(100));
    assert_eq!(d.source, LimitSource::Local);
    assert!(!limiter.redis_healthy());

    let _redis = PrivateRedis::start_on(redis.port).await;
    let d = eventually(
        "the limiter back on Redis",
        Duration::from_secs(10),
        || async {
            let d = limiter.check(subject, 1000, window).await;
            (d.source == LimitSource::Redis).then_some(d)
        },
    )
    .await;
    // A fresh Redis: the script was loaded again by itself (EVALSHA fell back).
    assert!(d.allowed && d.remaining == 999, "{d:?}");
    assert!(limiter.redis_healthy());
}
