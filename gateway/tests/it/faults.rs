//! The fault suite: steady traffic through the real gateway binary while a backend fails, with
//! the worker running against the same PostgreSQL and RabbitMQ (in this process, or as its own
//! binary where the case kills it). Each case checks the answers and that every request that
//! presented a valid key ends as exactly one `api_logs` row. Outages are played on this test's
//! own instances (a TCP forwarder to the broker or the database, a private `redis-server`), so
//! other tests never notice.

use std::{
    collections::HashSet,
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use crate::common::forwarder::Forwarder;
use crate::common::{chat, eventually, eventually_true, request_id, Api, ClosedPort, Env, Gateway};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use wrapx_benches::mock_llm::MockConfig;
use wrapx_testkit::{process::Process, redis::PrivateRedis};

/// What a load loop saw: every answer's status and request id.
struct Answers {
    statuses: Vec<u16>,
    request_ids: Vec<Uuid>,
}

/// Sends requests from `clients` concurrent loops until `stop`, alternating JSON and streams.
fn load(gw: &Gateway, api: &Api, clients: usize, stop: Arc<AtomicBool>) -> JoinHandle<Answers> {
    let url = gw.chat_url(api);
    let key = api.key.clone();
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let loops = (0..clients).map(|i| {
            let (client, url, key, stop) = (client.clone(), url.clone(), key.clone(), stop.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut n = i;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let r = client
                        .post(&url)
                        .bearer_auth(&key)
                        .json(&chat(n % 2 == 0))
                        .send()
                        .await
                        .expect("the gateway answers");
                    let status = r.status().as_u16();
                    let id = request_id(&r);
                    r.bytes().await.expect("a whole body");
                    seen.push((status, id));
                }
                seen
            })
        });
        let mut answers = Answers {
            statuses: Vec::new(),
            request_ids: Vec::new(),
        };
        for handle in loops.collect::<Vec<_>>() {
            for (status, id) in handle.await.unwrap() {
                answers.statuses.push(status);
                answers.request_ids.push(id);
            }
        }
        answers
    })
}

/// The worker, in this process, on the test's database and vhost.
fn worker(env: &Env) -> (CancellationToken, JoinHandle<anyhow::Result<()>>) {
    let stop = CancellationToken::new();
    let handle = tokio::spawn(wrapx_worker::run(env.settings.clone(), stop.clone()));
    (stop, handle)
}

/// Waits until `api_logs` holds exactly the rows of `request_ids` (and no other), each once.
async fn assert_exactly_logged(env: &Env, request_ids: &[Uuid]) {
    let want: HashSet<Uuid> = request_ids.iter().copied().collect();
    assert_eq!(want.len(), request_ids.len(), "request ids are unique");
    let what = format!("{} rows in api_logs", want.len());
    let rows = eventually(&what, Duration::from_secs(60), || async {
        let rows: Vec<(Uuid,)> = sqlx::query_as("SELECT request_id FROM api_logs")
            .fetch_all(&env.db)
            .await
            .unwrap();
        (rows.len() >= want.len()).then_some(rows)
    })
    .await;
    let got: HashSet<Uuid> = rows.iter().map(|r| r.0).collect();
    assert_eq!(got.len(), rows.len(), "a request logged twice");
    assert_eq!(rows.len(), want.len(), "rows vs requests");
    assert_eq!(got, want, "the rows are the requests'");
}

/// The value of one series on the gateway's metrics page.
async fn metric(gw: &Gateway, series: &str) -> f64 {
    let page = reqwest::get(format!("http://127.0.0.1:{}/metrics", gw.metrics_port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// RabbitMQ unreachable from the gateway for seconds under steady load: every request is
/// answered 200 (the hot path does not need the broker), events go to the spool and are
/// replayed, and the rows come out exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_outage_under_load_loses_and_doubles_nothing() {
    let env = Env::new(MockConfig::default()).await;
    let api = env.api().await;
    let (worker_stop, worker_task) = worker(&env);
    let broker = Forwarder::start(true).await;
    let url = broker.url(&env.amqp_url);
    let gw = Gateway::start_with(&env, &[("WRAPX_AMQP__URL", url.as_str())]).await;

    let stop = Arc::new(AtomicBool::new(false));
    let traffic = load(&gw, &api, 4, stop.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    broker.set(false);
    let outage = Instant::now();
    let mut spooled = 0.0;
    while outage.elapsed() < Duration::from_secs(3) {
        spooled = f64::max(spooled, metric(&gw, "wrapx_gateway_events_spooled").await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(spooled > 0.0, "events were spooled during the outage");
    broker.set(true);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let answers = traffic.await.unwrap();

    assert!(
        answers.statuses.len() > 20,
        "steady load: {}",
        answers.statuses.len()
    );
    assert!(
        answers.statuses.iter().all(|s| *s == 200),
        "{:?}",
        answers.statuses
    );
    assert_exactly_logged(&env, &answers.request_ids).await;
    worker_stop.cancel();
    worker_task.await.unwrap().unwrap();
}

/// PostgreSQL unreachable (for the gateway and the worker alike) under steady load: keys the
/// gateway knows keep being served, the worker holds its batch and retries, and once the
/// database is back every request has exactly one row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_under_load_delays_rows_but_loses_none() {
    let mut env = Env::new(MockConfig::default()).await;
    let api = env.api().await;
    let database = Forwarder::to("127.0.0.1:5432", true).await;
    let forwarded =
        env.db_url
            .replacen("127.0.0.1:5432", &format!("127.0.0.1:{}", database.port), 1);
    assert_ne!(
        forwarded, env.db_url,
        "the test database is on 127.0.0.1:5432"
    );
    env.settings.database.url = wrapx_core::secret::Secret::new(forwarded.clone());
    let (worker_stop, worker_task) = worker(&env);
    let gw = Gateway::start_with(
        &env,
        &[
            ("WRAPX_DATABASE__URL", forwarded.as_str()),
            ("WRAPX_GATEWAY__KEY_CACHE_TTL_MS", "60000"),
        ],
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let traffic = load(&gw, &api, 4, stop.clone());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    database.set(false);
    let rows = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM api_logs")
            .fetch_one(&env.db) // the test's own pool, not through the forwarder
            .await
            .unwrap()
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let early = rows().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rows().await,
        early,
        "rows were written while the database was away"
    );
    database.set(true);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let answers = traffic.await.unwrap();

    assert!(
        answers.statuses.len() > 20,
        "steady load: {}",
        answers.statuses.len()
    );
    assert!(
        answers.statuses.iter().all(|s| *s == 200),
        "{:?}",
        answers.statuses
    );
    assert_exactly_logged(&env, &answers.request_ids).await;
    worker_stop.cancel();
    worker_task.await.unwrap().unwrap();
}

/// Redis gone under load: keys already known keep being served, the rate limit falls back to
/// the local limiter, and when Redis is back the gateway uses it again by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_outage_under_load_keeps_serving_known_keys() {
    let env = Env::new(MockConfig::default()).await;
    let api = env
        .api_with(env.provider_id, "keep", Some((100_000, 60)))
        .await;
    let (worker_stop, worker_task) = worker(&env);
    let mut redis = PrivateRedis::start().await;
    let redis_url = redis.url();
    let gw = Gateway::start_with(
        &env,
        &[
            ("WRAPX_REDIS__URL", redis_url.as_str()),
            // Hold the key in memory across the outage, as a busy gateway would.
            ("WRAPX_GATEWAY__KEY_CACHE_TTL_MS", "60000"),
        ],
    )
    .await;
    let fallbacks = r"wrapx_gateway_rate_limit_fallback_total";

    let stop = Arc::new(AtomicBool::new(false));
    let traffic = load(&gw, &api, 4, stop.clone());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        metric(&gw, fallbacks).await,
        0.0,
        "Redis answers the limits"
    );
    redis.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = metric(&gw, fallbacks).await;
    assert!(during > 0.0, "the local limiter answered during the outage");
    let ready: Value = reqwest::get(gw.url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["redis"], "down");

    let _redis = PrivateRedis::start_on(redis.port).await;
    // Back by itself: readiness says so and the limiter stops falling back.
    eventually_true(
        "the gateway back on Redis (ready, no more fallbacks)",
        Duration::from_secs(20),
        || async {
            let ready: Value = reqwest::get(gw.url("/readyz"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let before = metric(&gw, fallbacks).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            ready["redis"] == "up" && metric(&gw, fallbacks).await == before
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let answers = traffic.await.unwrap();

    assert!(
        answers.statuses.len() > 20,
        "steady load: {}",
        answers.statuses.len()
    );
    assert!(
        answers.statuses.iter().all(|s| *s == 200),
        "{:?}",
        answers.statuses
    );
    assert_exactly_logged(&env, &answers.request_ids).await;
    worker_stop.cancel();
    worker_task.await.unwrap().unwrap();
}

/// One request with the mock told how to misbehave: (status, body as text, how long it took,
/// the time between the last body chunk and the end).
async fn misbehaving(
    gw: &Gateway,
    api: &Api,
    behavior: &str,
    stream: bool,
) -> (u16, String, Duration, Duration) {
    let started = Instant::now();
    let mut r = reqwest::Client::new()
        .post(gw.chat_url(api))
        .bearer_auth(&api.key)
        .header("x-mock-behavior", behavior)
        .json(&chat(stream))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let mut text = String::new();
    let mut last = Instant::now();
    // A cut stream ends in an error here; what arrived before it is what counts.
    while let Ok(Some(chunk)) = r.chunk().await {
        text.push_str(&String::from_utf8_lossy(&chunk));
        last = Instant::now();
    }
    (status, text, started.elapsed(), last.elapsed())
}

/// The first-byte and idle deadlines are enforced apart, whichever is the shorter: a silent
/// provider gets 504 at the first-byte deadline, a stream that stalls is cut at the idle one,
/// and both are logged as timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_byte_and_idle_timeouts_are_each_their_own() {
    let env = Env::new(MockConfig {
        chunk_interval: Duration::from_millis(50),
        ..MockConfig::default()
    })
    .await;
    let api = env.api().await;
    let (worker_stop, worker_task) = worker(&env);

    // A long first-byte wait and a short idle one (a model that thinks, then streams).
    let mut gw = Gateway::start_with(
        &env,
        &[
            ("WRAPX_GATEWAY__FIRST_BYTE_TIMEOUT_MS", "1500"),
            ("WRAPX_GATEWAY__IDLE_TIMEOUT_MS", "400"),
        ],
    )
    .await;
    let (status, text, took, _) = misbehaving(&gw, &api, "hang", false).await;
    assert_eq!(status, 504, "{text}");
    assert!(text.contains("gateway_timeout"), "{text}");
    assert!(
        took >= Duration::from_millis(1400),
        "cut before the first-byte deadline: {took:?}"
    );
    let (status, text, _, silence) = misbehaving(&gw, &api, "stall-after-3", true).await;
    assert_eq!(status, 200);
    assert_eq!(
        text.matches("tok").count(),
        3,
        "the chunks before the stall: {text}"
    );
    assert!(
        silence < Duration::from_millis(1300),
        "not cut at the idle deadline: {silence:?}"
    );
    // A clean stop: every event it holds reaches the broker (a kill would lose them).
    gw.sigterm();
    assert!(gw.wait_exit(Duration::from_secs(15)).await.success());

    // The other way round: a short first-byte wait is not stretched to the idle one.
    let gw = Gateway::start_with(
        &env,
        &[
            ("WRAPX_GATEWAY__FIRST_BYTE_TIMEOUT_MS", "400"),
            ("WRAPX_GATEWAY__IDLE_TIMEOUT_MS", "5000"),
        ],
    )
    .await;
    let (status, _, took, _) = misbehaving(&gw, &api, "hang", true).await;
    assert_eq!(status, 504);
    assert!(
        took < Duration::from_millis(1300),
        "the first-byte deadline was stretched: {took:?}"
    );

    let outcomes = eventually("3 rows in api_logs", Duration::from_secs(30), || async {
        let outcomes: Vec<(String, i16)> =
            sqlx::query_as("SELECT outcome, status FROM api_logs ORDER BY created_at")
                .fetch_all(&env.db)
                .await
                .unwrap();
        (outcomes.len() >= 3).then_some(outcomes)
    })
    .await;
    let expected =
        [("timeout", 504), ("timeout", 200), ("timeout", 504)].map(|(o, s)| (o.to_owned(), s));
    assert_eq!(outcomes, expected);
    worker_stop.cancel();
    worker_task.await.unwrap().unwrap();
}

/// Upstreams that fail every way but slowly: a 500, a refused connection, a malformed event
/// stream and a connection reset mid-stream. Each gets a clean answer in OpenAI's shape (a
/// 502, or for a stream already under way an error event as its end) and exactly one row,
/// logged as an upstream error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_upstreams_get_clean_errors_and_one_row_each() {
    let env = Env::new(MockConfig::default()).await;
    let api = env.api().await;
    let closed = ClosedPort::new();
    let dead_provider = env.provider(&format!("http://{}/v1", closed.addr)).await;
    let dead = env.api_with(dead_provider, "keep", None).await;
    let (worker_stop, worker_task) = worker(&env);
    let gw = Gateway::start(&env).await;
    let mut ids = Vec::new();

    for (target, behavior, stream) in [(&api, "status-500", false), (&dead, "normal", false)] {
        let r = reqwest::Client::new()
            .post(gw.chat_url(target))
            .bearer_auth(&target.key)
            .header("x-mock-behavior", behavior)
            .json(&chat(stream))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 502, "{behavior}");
        ids.push(request_id(&r));
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "bad_gateway", "{behavior}: {body}");
    }

    // A malformed stream: what arrived passes on, then an error event ends it.
    let r = reqwest::Client::new()
        .post(gw.chat_url(&api))
        .bearer_auth(&api.key)
        .header("x-mock-behavior", "malformed")
        .json(&chat(true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    ids.push(request_id(&r));
    let text = r.text().await.unwrap();
    let last = text
        .trim_end()
        .rsplit("\n\n")
        .next()
        .and_then(|event| event.strip_prefix("data: "))
        .unwrap_or_else(|| panic!("no closing event: {text}"));
    let last: Value = serde_json::from_str(last).unwrap();
    assert_eq!(last["error"]["code"], "bad_gateway", "{text}");

    // A reset after two chunks: the client sees the stream cut, the request is logged.
    let mut r = reqwest::Client::new()
        .post(gw.chat_url(&api))
        .bearer_auth(&api.key)
        .header("x-mock-behavior", "reset-after-2")
        .json(&chat(true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    ids.push(request_id(&r));
    let mut text = String::new();
    while let Ok(Some(chunk)) = r.chunk().await {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        !text.contains("[DONE]"),
        "a reset stream looked whole: {text}"
    );

    assert_exactly_logged(&env, &ids).await;
    let outcomes: Vec<(Uuid, String)> = sqlx::query_as("SELECT request_id, outcome FROM api_logs")
        .fetch_all(&env.db)
        .await
        .unwrap();
    for (request, outcome) in outcomes {
        assert_eq!(outcome, "upstream_error", "{request}");
    }
    worker_stop.cancel();
    worker_task.await.unwrap().unwrap();
}

/// Junk from a client with a valid key: never a 5xx, always a 4xx in the contract's shape (or
/// a pass to the provider when it is a valid request after all), and each one logged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn junk_input_gets_a_clear_4xx_and_is_logged() {
    let env = Env::new(MockConfig::default()).await;
    let api = env.api().await;
    let (worker_stop, worker_task) = worker(&env);
    let gw = Gateway::start_with(&env, &[("WRAPX_GATEWAY__MAX_BODY_BYTES", "1048576")]).await;
    let client = reqwest::Client::new();

    let nested = format!(
        r#"{{"messages":[{{"role":"user","content":{}"x"{}}}]}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let mut random = vec![0u8; 4096];
    for (i, b) in random.iter_mut().enumerate() {
        *b = (i.wrapping_mul(2_654_435_761) >> 13) as u8;
    }
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("random bytes", "application/json", random),
        ("empty", "application/json", Vec::new()),
        ("deeply nested", "application/json", nested.into_bytes()),
        (
            "invalid UTF-8",
            "application/json",
            b"{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}".to_vec(),
        ),
        (
            "over the size limit",
            "application/json",
            format!(
                r#"{{"messages":[{{"role":"user","content":"{}"}}]}}"#,
                "a".repeat(2 << 20)
            )
            .into_bytes(),
        ),
        (
            "messages a string",
            "application/json",
            br#"{"messages":"hello"}"#.to_vec(),
        ),
        (
            "a message without role",
            "application/json",
            br#"{"messages":[{"content":"hi"}]}"#.to_vec(),
        ),
        (
            "content a number",
            "application/json",
            br#"{"messages":[{"role":"user","content":5}]}"#.to_vec(),
        ),
        (
            "stream a string",
            "application/json",
            br#"{"stream":"yes","messages":[{"role":"user","content":"hi"}]}"#.to_vec(),
        ),
        (
            "max_tokens negative",
            "application/json",
            br#"{"max_tokens":-1,"messages":[{"role":"user","content":"hi"}]}"#.to_vec(),
        ),
        ("an array body", "application/json", b"[1,2,3]".to_vec()),
        (
            "a form",
            "application/x-www-form-urlencoded",
            b"messages=hi".to_vec(),
        ),
        (
            "valid JSON, odd type",
            "text/plain",
            br#"{"messages":[{"role":"user","content":"hi"}]}"#.to_vec(),
        ),
    ];
    let mut logged = Vec::new();
    for (what, content_type, body) in cases {
        let r = client
            .post(gw.chat_url(&api))
            .bearer_auth(&api.key)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
        let status = r.status().as_u16();
        logged.push(request_id(&r));
        let text = r.text().await.unwrap();
        assert!(status < 500, "{what}: {status} {text}");
        if status >= 400 {
            let body: Value = serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("{what}: not the contract's shape: {text}"));
            assert!(body["error"]["code"].is_string(), "{what}: {text}");
            assert!(body["error"]["message"].is_string(), "{what}: {text}");
        }
    }

    // Headers past what the gateway reads: refused before any key check, never a 5xx.
    let r = client
        .post(gw.chat_url(&api))
        .bearer_auth(&api.key)
        // Past pingora's 1 MiB of request head.
        .header("x-junk", "j".repeat(2 << 20))
        .json(&chat(false))
        .send()
        .await;
    if let Ok(r) = r {
        assert!(
            r.status().as_u16() < 500,
            "oversized headers: {}",
            r.status()
        );
    }
    // The gateway is still fine.
    let r = client
        .post(gw.chat_url(&api))
        .bearer_auth(&api.key)
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    logged.push(request_id(&r));

    assert_exactly_logged(&env, &logged).await;
    worker_stop.cancel();
    worker_task.await.unwrap().unwrap();
}

/// Hundreds of slow clients: some dribble their request head a byte at a time, some send the
/// head and a little of the body and stall. Normal requests are still answered; the dribbled
/// heads are cut at the head deadline (for the whole head, not per read), the stalled bodies
/// get a 408 at the body deadline (and, their key being valid, a row each), and the gateway
/// never gives any of them a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_do_not_starve_the_others_and_are_cut_at_their_deadlines() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let env = Env::new(MockConfig::default()).await;
    let api = env.api().await;
    let (worker_stop, worker_task) = worker(&env);
    let gw = Gateway::start_with(
        &env,
        &[
            ("WRAPX_GATEWAY__BODY_READ_TIMEOUT_MS", "800"),
            ("WRAPX_GATEWAY__HEADER_READ_TIMEOUT_MS", "1000"),
        ],
    )
    .await;
    let addr = format!("127.0.0.1:{}", gw.port);
    let path = format!("/w/{}/v1/chat/completions", api.endpoint);

    // Heads a byte every 50 ms, each read well inside any per-read timeout: sending all of one
    // would take over 12 s. Each task returns how many bytes it got out before the gateway
    // closed the connection, and whether it did.
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nx-padding: {}\r\n",
        "p".repeat(200)
    );
    let dribblers: Vec<_> = (0..200)
        .map(|_| {
            let (addr, head) = (addr.clone(), head.clone());
            tokio::spawn(async move {
                let s = tokio::net::TcpStream::connect(&addr).await.unwrap();
                let (mut read, mut write) = s.into_split();
                let closed = async move {
                    let mut buf = [0u8; 1024];
                    while matches!(read.read(&mut buf).await, Ok(n) if n > 0) {}
                };
                let send = async move {
                    let mut sent = 0;
                    for byte in head.bytes() {
                        if write.write_all(&[byte]).await.is_err() {
                            break;
                        }
                        sent += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    sent
                };
                tokio::pin!(send);
                tokio::select! {
                    _ = closed => true,
                    _ = &mut send => false,
                }
            })
        })
        .collect();

    // Whole heads with a valid key, then 10 bytes of a 1000-byte body, then nothing.
    let stalled: Vec<_> = (0..50)
        .map(|_| {
            let (addr, path, key) = (addr.clone(), path.clone(), api.key.clone());
            tokio::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
                let head = format!(
                    "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"messages"
                );
                s.write_all(head.as_bytes()).await.unwrap();
                let mut answer = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut answer)).await;
                String::from_utf8_lossy(&answer).into_owned()
            })
        })
        .collect();

    let client = reqwest::Client::new();
    let mut logged = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            client
                .post(gw.chat_url(&api))
                .bearer_auth(&api.key)
                .json(&chat(false))
                .send(),
        )
        .await
        .expect("a normal request is not held up by slow clients")
        .unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        logged.push(request_id(&r));
    }

    for answer in stalled {
        let answer = answer.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("request_timeout"), "{answer}");
        let id = answer
            .lines()
            .find_map(|l| l.strip_prefix("x-request-id: "))
            .expect("x-request-id")
            .trim()
            .parse::<Uuid>()
            .unwrap();
        logged.push(id);
    }
    for d in dribblers {
        assert!(
            d.await.unwrap(),
            "a head dribbled a byte at a time is cut before it ends"
        );
    }
    // The head deadline ends with the head: a provider slower than it is waited for.
    let r = client
        .post(gw.chat_url(&api))
        .bearer_auth(&api.key)
        .header("x-mock-latency-ms", "1500")
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    logged.push(request_id(&r));
    assert_eq!(
        metric(&gw, "wrapx_gateway_head_timeouts_total").await,
        200.0
    );
    // None of them had a whole head, so none presented a key: no rows beyond the others'.
    assert_exactly_logged(&env, &logged).await;
    worker_stop.cancel();
    worker_task.await.unwrap().unwrap();
}

/// The `wrapx-worker` binary the workspace build put beside this test's own executable
/// (`target/<profile>/deps/faults-…` → `target/<profile>/wrapx-worker`).
fn worker_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(std::path::Path::parent)
        .unwrap()
        .join("wrapx-worker");
    assert!(
        path.exists(),
        "{} is missing: run the whole workspace's tests (scripts/test), which build it",
        path.display()
    );
    path
}

/// The worker as a process of its own, on the test's database and vhost, killed if the test
/// ends before stopping it.
fn start_worker(env: &Env) -> Process {
    let mut cmd = Command::new(worker_binary());
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("WRAPX_DATABASE__URL", &env.db_url)
        .env("WRAPX_AMQP__URL", &env.amqp_url)
        .env("WRAPX_REDIS__URL", env.settings.redis.url.expose())
        .env("WRAPX_REDIS__PREFIX", &env.prefix)
        .env("WRAPX_WORKER__METRICS_LISTEN", "127.0.0.1:0")
        .env(
            "WRAPX_WORKER__PRICING_FILE",
            format!("{}/../config/pricing.toml", env!("CARGO_MANIFEST_DIR")),
        )
        // Small batches, so a kill at any moment lands in the middle of one.
        .env("WRAPX_WORKER__BATCH_SIZE", "50")
        .env("WRAPX_WORKER__PREFETCH", "200")
        .env("WRAPX_LOG__LEVEL", "warn");
    Process::spawn(cmd)
}

async fn rows(env: &Env) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM api_logs")
        .fetch_one(&env.db)
        .await
        .unwrap()
}

/// The worker SIGKILLed while it writes batches under steady gateway traffic, then started
/// again: every request was answered, and each has exactly one row (the unacknowledged batch
/// comes back from the queue and its rows are not written twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_batch_under_load_leaves_exactly_one_row_per_request() {
    let env = Env::new(MockConfig::default()).await;
    let api = env.api().await;
    let gw = Gateway::start(&env).await;
    let mut worker = start_worker(&env);
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = load(&gw, &api, 4, stop.clone());

    // Killed once rows are flowing, so batches are being written.
    eventually_true(
        "200 rows from the worker",
        Duration::from_secs(30),
        || async { rows(&env).await >= 200 },
    )
    .await;
    worker.child.kill().unwrap(); // SIGKILL
    let killed = worker.wait_exit(Duration::from_secs(5)).await;
    assert!(!killed.success(), "{killed:?}");
    let rows_at_kill = rows(&env).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut worker = start_worker(&env);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let answers = traffic.await.unwrap();

    assert!(answers.statuses.iter().all(|s| *s == 200));
    assert!(
        answers.request_ids.len() as i64 > rows_at_kill,
        "requests went on after the kill"
    );
    assert_exactly_logged(&env, &answers.request_ids).await;
    worker.sigterm();
    let stopped = worker.wait_exit(Duration::from_secs(15)).await;
    assert!(stopped.success(), "{stopped:?}");
}

/// SIGTERM with streams in flight: the gateway stops accepting, every stream finishes whole,
/// it exits 0, and each stream has its row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_with_streams_in_flight_finishes_them_exits_zero_and_logs_each() {
    let env = Env::new(MockConfig {
        chunks: 20,
        chunk_interval: Duration::from_millis(100),
        ..MockConfig::default()
    })
    .await;
    let api = env.api().await;
    let (worker_stop, worker_task) = worker(&env);
    let mut gw = Gateway::start(&env).await;
    let client = reqwest::Client::new();

    let mut streams = Vec::new();
    for _ in 0..8 {
        let mut r = client
            .post(gw.chat_url(&api))
            .bearer_auth(&api.key)
            .json(&chat(true))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let first = r.chunk().await.unwrap().unwrap();
        streams.push((r, String::from_utf8_lossy(&first).into_owned()));
    }
    gw.sigterm();
    // New connections are refused soon after the signal.
    let port = gw.port;
    let refused = async {
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    };
    assert!(refused.await, "still accepting after SIGTERM");

    let mut ids = Vec::new();
    for (mut r, mut text) in streams {
        ids.push(request_id(&r));
        while let Some(chunk) = r.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(
            text.trim_end().ends_with("data: [DONE]"),
            "the stream was cut: {text}"
        );
        assert_eq!(text.matches("\"content\":\"").count(), 20, "{text}");
    }
    let status = gw.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}");

    assert_exactly_logged(&env, &ids).await;
    let completed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM api_logs WHERE outcome = 'completed'")
            .fetch_one(&env.db)
            .await
            .unwrap();
    assert_eq!(completed, 8);
    worker_stop.cancel();
    worker_task.await.unwrap().unwrap();
}

/// Clients that hang up mid-stream while others are served: each abandoned stream is stopped
/// at the provider (the owner pays per token) and logged as cancelled with the usage counted
/// so far; every request has exactly one row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_hanging_up_mid_stream_cancel_the_upstream_and_are_logged_once() {
    let env = Env::new(MockConfig {
        chunks: 100,
        chunk_interval: Duration::from_millis(50),
        ..MockConfig::default()
    })
    .await;
    let api = env.api().await;
    let (worker_stop, worker_task) = worker(&env);
    let gw = Gateway::start(&env).await;

    let hang_ups: Vec<_> = (0..10)
        .map(|_| {
            let (url, key) = (gw.chat_url(&api), api.key.clone());
            tokio::spawn(async move {
                let mut r = reqwest::Client::new()
                    .post(url)
                    .bearer_auth(key)
                    .json(&chat(true))
                    .send()
                    .await
                    .unwrap();
                let id: Uuid = request_id(&r);
                let mut seen = 0;
                while seen < 3 {
                    let chunk = r.chunk().await.unwrap().unwrap();
                    seen += String::from_utf8_lossy(&chunk)
                        .matches("\"content\":\"")
                        .count();
                }
                id // the response is dropped here: the client hangs up
            })
        })
        .collect();
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let r = client
            .post(gw.chat_url(&api))
            .bearer_auth(&api.key)
            .json(&chat(false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        ids.push(request_id(&r));
    }
    for h in hang_ups {
        ids.push(h.await.unwrap());
    }

    eventually_true(
        "the provider's 10 streams cancelled",
        Duration::from_secs(10),
        || async { env.mock.stats().streams_cancelled == 10 },
    )
    .await;
    assert_exactly_logged(&env, &ids).await;
    let cancelled: Vec<(String, i32)> = sqlx::query_as(
        "SELECT usage_source, completion_tokens FROM api_logs WHERE outcome = 'cancelled'",
    )
    .fetch_all(&env.db)
    .await
    .unwrap();
    assert_eq!(cancelled.len(), 10);
    for (source, tokens) in cancelled {
        assert_eq!(source, "counted");
        assert!((2..100).contains(&tokens), "{tokens}");
    }
    worker_stop.cancel();
    worker_task.await.unwrap().unwrap();
}
