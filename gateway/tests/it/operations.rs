//! End to end, across processes: limits shared by two gateways, revocation within a second,
//! and a broker that is away then back with no event lost. (SIGTERM with streams in flight is
//! in the fault suite, `faults.rs`, with the row count.)

use std::time::{Duration, Instant};

use crate::common::forwarder::Forwarder;
use crate::common::{chat, error_code, Env, Gateway};
use serde_json::Value;
use wrapx_benches::mock_llm::MockConfig;
use wrapx_core::{
    amqp,
    cache::{CacheNames, Invalidation},
    events::RequestOutcome,
};

#[tokio::test(flavor = "multi_thread")]
async fn limits_are_exact_across_two_gateways_sharing_redis() {
    let env = Env::new(MockConfig::default()).await;
    let api = env.api_with(env.provider_id, "keep", Some((7, 60))).await;
    let a = Gateway::start(&env).await;
    let b = Gateway::start(&env).await;
    let client = reqwest::Client::new();
    let mut sends = Vec::new();
    for i in 0..20u32 {
        let url = if i.is_multiple_of(2) {
            a.chat_url(&api)
        } else {
            b.chat_url(&api)
        };
        let request = client.post(url).bearer_auth(&api.key).json(&chat(false));
        sends.push(tokio::spawn(async move { request.send().await.unwrap() }));
    }
    let mut ok = 0;
    let mut limited = 0;
    for send in sends {
        let r = send.await.unwrap();
        match r.status().as_u16() {
            200 => {
                ok += 1;
                assert_eq!(r.headers()["x-ratelimit-limit-requests"], "7");
            }
            429 => {
                limited += 1;
                let retry: u64 = r.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=60).contains(&retry));
                assert_eq!(r.headers()["x-ratelimit-remaining-requests"], "0");
                assert!(r.headers().contains_key("x-ratelimit-reset-requests"));
                assert!(r.headers().contains_key("x-request-id"));
                assert_eq!(
                    error_code(&r.json::<Value>().await.unwrap()),
                    "rate_limit_exceeded"
                );
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((ok, limited), (7, 13));
    assert_eq!(env.mock.requests().len(), 7);
    let events = env.events(20, Duration::from_secs(15)).await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e.outcome == RequestOutcome::RateLimited)
            .count(),
        13
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_key_is_refused_within_a_second() {
    let env = Env::new(MockConfig::default()).await;
    let api = env.api().await;
    let gw = Gateway::start(&env).await;
    let client = reqwest::Client::new();
    let send = || {
        client
            .post(gw.chat_url(&api))
            .bearer_auth(&api.key)
            .json(&chat(false))
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 200);
    assert_eq!(
        send().await.unwrap().status(),
        200,
        "served from the caches"
    );

    // What the admin API does on revoke: the row, then the Redis record, then the message.
    sqlx::query("UPDATE api_keys SET is_active = false, revoked_at = now() WHERE id = $1")
        .bind(api.key_id)
        .execute(&env.db)
        .await
        .unwrap();
    let names = CacheNames::new(env.prefix.clone());
    let redis = redis::Client::open(env.settings.redis.url.expose()).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("DEL")
        .arg(names.key_record(&api.key_hash))
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let message = serde_json::to_string(&Invalidation::Key {
        key_hash: api.key_hash.clone(),
    })
    .unwrap();
    let revoked_at = Instant::now();
    redis::cmd("PUBLISH")
        .arg(names.invalidation_channel())
        .arg(message)
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    loop {
        let r = send().await.unwrap();
        if r.status() == 401 {
            assert_eq!(
                error_code(&r.json::<Value>().await.unwrap()),
                "revoked_api_key"
            );
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "still served after a second"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(revoked_at.elapsed() < Duration::from_secs(1));
}

/// The broker is unreachable from the gateway's start: requests are served as usual, readiness
/// says the broker is missing, and once it is back every request's event arrives, each once.
#[tokio::test(flavor = "multi_thread")]
async fn events_made_while_the_broker_is_away_arrive_once_when_it_is_back() {
    let env = Env::new(MockConfig::default()).await;
    let api = env.api().await;
    let broker = Forwarder::start(false).await;
    let url = broker.url(&env.amqp_url);
    let gw = Gateway::start_with(&env, &[("WRAPX_AMQP__URL", url.as_str())]).await;
    let client = reqwest::Client::new();

    let mut request_ids = Vec::new();
    for stream in [false, true, false, true, false, false] {
        let r = client
            .post(gw.chat_url(&api))
            .bearer_auth(&api.key)
            .json(&chat(stream))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "served while the broker is away");
        request_ids.push(r.headers()["x-request-id"].to_str().unwrap().to_owned());
        r.bytes().await.unwrap();
    }
    let ready = client.get(gw.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "not ready without the broker");

    // The reader's queue must exist before anyone reads it (a get on a missing queue closes
    // the channel); the gateway declares the same topology when it connects.
    let conn = amqp::connect_url(&env.amqp_url, "test-setup")
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    amqp::declare_topology(&channel, &env.settings.amqp.webhook_retry_delays_ms)
        .await
        .unwrap();
    let _ = conn.close(0, "done").await;
    assert!(
        env.drain_events(Duration::from_millis(500))
            .await
            .is_empty(),
        "nothing reached the broker while it was away"
    );

    broker.set(true);
    let events = env.events(request_ids.len(), Duration::from_secs(30)).await;
    let mut got: Vec<String> = events.iter().map(|e| e.request_id.to_string()).collect();
    got.extend(
        env.drain_events(Duration::from_secs(1))
            .await
            .iter()
            .map(|e| e.request_id.to_string()),
    );
    got.sort();
    request_ids.sort();
    assert_eq!(got, request_ids, "each request's event, once");
    assert!(events
        .iter()
        .all(|e| e.outcome == RequestOutcome::Completed));
    let ready = client.get(gw.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "ready once the broker is back");
}

/// Whether a Prometheus page has a sample of `name`: a counter or gauge series, or a
/// histogram's count.
fn has_metric(page: &str, name: &str) -> bool {
    page.lines().filter(|l| !l.starts_with('#')).any(|l| {
        l.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with(['{', ' ']) || rest.starts_with("_count"))
    })
}

/// The sum of `wrapx_gateway_requests_total` over its labels.
fn requests_total(page: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with("wrapx_gateway_requests_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// Every gateway metric of the contract is on the page from the start, at zero, so that a
/// `rate()` or an alert sees zeros rather than no data; health and readiness probes are not
/// counted as requests (a probe every few seconds inflated the rate).
#[tokio::test(flavor = "multi_thread")]
async fn every_contract_metric_exists_from_the_start_and_probes_are_not_requests() {
    let env = Env::new(MockConfig::default()).await;
    // Its start waited for `/healthz`: probes came before the first scrape.
    let gw = Gateway::start(&env).await;
    let client = reqwest::Client::new();
    let metrics_url = format!("http://127.0.0.1:{}/metrics", gw.metrics_port);
    let scrape = || async {
        let page = client.get(&metrics_url).send().await.unwrap();
        page.text().await.unwrap()
    };
    let page = scrape().await;
    for name in [
        "wrapx_gateway_requests_total",
        "wrapx_gateway_request_duration_seconds",
        "wrapx_gateway_upstream_ttfb_seconds",
        "wrapx_gateway_overhead_seconds",
        "wrapx_gateway_tokens_total",
        "wrapx_gateway_rate_limited_total",
        "wrapx_gateway_events_spooled",
        "wrapx_gateway_head_timeouts_total",
    ] {
        assert!(has_metric(&page, name), "{name} missing from:\n{page}");
    }
    assert_eq!(requests_total(&page), 0.0, "{page}");

    for path in ["/healthz", "/readyz", "/healthz", "/readyz"] {
        let r = client.get(gw.url(path)).send().await.unwrap();
        assert!(r.status() == 200 || r.status() == 503, "{path}: {r:?}");
    }
    // One real request, counted as it ends: the probes before it are not.
    let api = env.api().await;
    let r = client
        .post(gw.chat_url(&api))
        .bearer_auth(&api.key)
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let counted = loop {
        let page = scrape().await;
        if requests_total(&page) > 0.0 || Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(requests_total(&counted), 1.0, "{counted}");
}
