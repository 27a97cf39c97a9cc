//! Routing end to end (API.md, "Routing: retries and fallbacks"): the real gateway in front of
//! two or three mock providers that fail on cue, with the routing stored as the admin API
//! stores it. Fallback on 5xx plain and streamed, across provider kinds and client dialects;
//! `retry-after` short and long; a 400 passed on; refused connections; a first byte too late;
//! every target failing; weights; cooldowns seen by a second instance; a 1 MiB body; the
//! attempts in the one event; the official SDKs.

use std::{collections::HashMap, time::Duration};

use serde_json::{json, Value};
use uuid::Uuid;
use wrapx_benches::mock_llm::{self, Behavior, MockConfig, MockHandle};
use wrapx_core::events::RequestEvent;

use crate::common::{
    chat, error_code, eventually_true, python_json, request_id, Api, ClosedPort, Env, Gateway,
};

/// Stores `routing` for `api` as the admin API would (it validates; the gateway reads).
async fn set_routing(env: &Env, api: &Api, routing: Value) {
    let parsed: wrapx_core::routing::RoutingInput = serde_json::from_value(routing).unwrap();
    let stored = serde_json::to_value(parsed.validate().unwrap()).unwrap();
    sqlx::query("UPDATE wrapped_apis SET routing = $1 WHERE id = $2")
        .bind(stored)
        .bind(api.id)
        .execute(&env.db)
        .await
        .unwrap();
}

/// A new API of the test's account with `routing`.
async fn routed(env: &Env, routing: Value) -> Api {
    let api = env.api().await;
    set_routing(env, &api, routing).await;
    api
}

fn target(provider: Uuid, model: &str) -> Value {
    json!({"provider_id": provider, "model": model})
}

async fn mock() -> MockHandle {
    mock_llm::spawn(MockConfig::default()).await.unwrap()
}

async fn post(url: &str, key: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn attempts_header(r: &reqwest::Response) -> u32 {
    r.headers()["x-wrapx-attempts"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// The one event of request `id` (and proof there is no second one).
async fn event_of(env: &Env, id: Uuid) -> RequestEvent {
    let events = env.drain_events(Duration::from_millis(1500)).await;
    let mine: Vec<_> = events.into_iter().filter(|e| e.request_id == id).collect();
    assert_eq!(mine.len(), 1, "exactly one event per request");
    mine.into_iter().next().unwrap()
}

fn anthropic_body(stream: bool) -> Value {
    json!({"model": "client-model", "max_tokens": 50, "stream": stream,
           "messages": [{"role": "user", "content": "Hello there"}]})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_503_falls_back_across_kinds_for_both_client_dialects_plain_and_streamed() {
    let env = Env::new(MockConfig::default()).await;
    let anthropic = env.provider_of("anthropic", &env.mock.base_url()).await;
    let gw = Gateway::start(&env).await;

    // An OpenAI-kind target that fails, then an Anthropic one.
    let api = env.api().await;
    env.prompt(api.id, json!({"role": "You are a pirate."}))
        .await;
    set_routing(
        &env,
        &api,
        json!({"targets": [target(env.provider_id, "mock-status-503"), target(anthropic, "claude-fallback")]}),
    )
    .await;
    for stream in [false, true] {
        env.mock.clear();
        let r = post(&gw.chat_url(&api), &api.key, &chat(stream)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(attempts_header(&r), 2);
        let id = request_id(&r);
        let text = r.text().await.unwrap();
        if stream {
            // One clean stream: one start, one end, no error event.
            assert_eq!(text.matches("data: [DONE]").count(), 1, "{text}");
            assert!(!text.contains("\"error\""), "{text}");
        } else {
            let body: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(body["object"], "chat.completion");
            assert_eq!(body["model"], "claude-fallback");
        }
        let seen = env.mock.requests();
        assert_eq!(seen.len(), 2);
        assert!(seen[0].path.ends_with("/chat/completions"));
        assert_eq!(seen[0].json().unwrap()["model"], "mock-status-503");
        // The second attempt went out in Anthropic's form, the prompt as its system.
        assert!(seen[1].path.ends_with("/messages"));
        let second = seen[1].json().unwrap();
        assert_eq!(second["model"], "claude-fallback");
        assert!(second["system"].to_string().contains("pirate"), "{second}");
        assert_eq!(
            seen[1].header("x-api-key"),
            Some(wrapx_testkit::seed::PROVIDER_KEY)
        );

        let event = event_of(&env, id).await;
        assert_eq!(event.status, 200);
        assert_eq!(event.model, "claude-fallback");
        assert_eq!(event.provider.as_str(), "anthropic");
        assert!(event.usage.completion_tokens > 0);
        let attempts = &event.response_data["attempts"];
        assert_eq!(attempts.as_array().unwrap().len(), 2, "{attempts}");
        assert_eq!(attempts[0]["status"], 503);
        assert_eq!(attempts[0]["error"], "status");
        assert_eq!(attempts[0]["model"], "mock-status-503");
        assert_eq!(attempts[0]["provider_id"], json!(env.provider_id));
        assert_eq!(attempts[1]["status"], 200);
        assert_eq!(attempts[1]["provider_id"], json!(anthropic));
        assert!(attempts[1]["ms"].is_u64());
    }

    // The reverse: an Anthropic client, an Anthropic target that fails, an OpenAI-kind one.
    let api = routed(
        &env,
        json!({"targets": [target(anthropic, "mock-status-529"), target(env.provider_id, "gpt-fallback")],
               "retry": {"on_status": [529]}}),
    )
    .await;
    for stream in [false, true] {
        env.mock.clear();
        let r = post(&gw.messages_url(&api), &api.key, &anthropic_body(stream)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(attempts_header(&r), 2);
        let text = r.text().await.unwrap();
        if stream {
            assert_eq!(text.matches("event: message_start").count(), 1, "{text}");
            assert_eq!(text.matches("event: message_stop").count(), 1, "{text}");
            assert!(!text.contains("event: error"), "{text}");
        } else {
            let body: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(body["type"], "message");
            assert_eq!(body["model"], "gpt-fallback");
        }
        let seen = env.mock.requests();
        assert!(seen[0].path.ends_with("/messages"));
        assert!(seen[1].path.ends_with("/chat/completions"));
        assert_eq!(seen[1].json().unwrap()["model"], "gpt-fallback");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_short_retries_the_same_target_once_and_long_moves_on() {
    let env = Env::new(MockConfig::default()).await;
    let (first, second) = (mock().await, mock().await);
    let p1 = env.provider(&first.base_url()).await;
    let p2 = env.provider(&second.base_url()).await;
    let gw = Gateway::start(&env).await;
    let api = env.api().await;
    set_routing(
        &env,
        &api,
        // No cooldown in this test: every request starts at the first target.
        json!({"targets": [target(p1, "m1"), target(p2, "m2")], "retry": {"max_attempts": 3},
               "cooldown": {"failures": 0}}),
    )
    .await;

    // Short: the same target, once, after the wait; the second answer is the client's.
    first.set_retry_after(Some("0.3"));
    first.fail_next(1, Behavior::Status(429));
    let started = std::time::Instant::now();
    let r = post(&gw.chat_url(&api), &api.key, &chat(false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(attempts_header(&r), 2);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(first.stats().requests, 2);
    assert_eq!(second.stats().requests, 0);

    // Short again, but failing twice: the same target only once, then the next one.
    first.fail_next(2, Behavior::Status(429));
    let r = post(&gw.chat_url(&api), &api.key, &chat(false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(attempts_header(&r), 3);
    assert_eq!(first.stats().requests, 4);
    assert_eq!(second.stats().requests, 1);

    // Long: straight on to the next target, no wait.
    first.set_retry_after(Some("30"));
    first.fail_next(1, Behavior::Status(429));
    let started = std::time::Instant::now();
    let r = post(&gw.chat_url(&api), &api.key, &chat(false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(attempts_header(&r), 2);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(first.stats().requests, 5);
    assert_eq!(second.stats().requests, 2);

    // Each attempt reads its own answer's retry-after: the second target's long one does not
    // stop the first's short one from being honoured on the next request.
    first.set_retry_after(Some("0.1"));
    first.fail_next(1, Behavior::Status(503));
    let r = post(&gw.chat_url(&api), &api.key, &chat(true)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(attempts_header(&r), 2);
    assert_eq!(first.stats().requests, 7);
    assert_eq!(second.stats().requests, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_error_and_a_status_outside_on_status_are_the_answer() {
    let env = Env::new(MockConfig::default()).await;
    let second = mock().await;
    let p2 = env.provider(&second.base_url()).await;
    let gw = Gateway::start(&env).await;
    let api = routed(
        &env,
        json!({"targets": [target(env.provider_id, "mock-status-400"), target(p2, "m2")]}),
    )
    .await;
    let r = post(&gw.chat_url(&api), &api.key, &chat(false)).await;
    assert_eq!(r.status(), 400);
    assert_eq!(attempts_header(&r), 1);
    let id = request_id(&r);
    assert_eq!(second.stats().requests, 0);
    let event = event_of(&env, id).await;
    assert_eq!(event.response_data["attempts"].as_array().unwrap().len(), 1);

    // A 500 when only 503 moves on: passed on (as the contract's 502), no fallback.
    let api = routed(
        &env,
        json!({"targets": [target(env.provider_id, "mock-status-500"), target(p2, "m2")],
               "retry": {"on_status": [503]}}),
    )
    .await;
    let r = post(&gw.chat_url(&api), &api.key, &chat(true)).await;
    assert_eq!(r.status(), 502);
    assert_eq!(attempts_header(&r), 1);
    assert_eq!(second.stats().requests, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_connections_and_late_first_bytes_fall_back() {
    let env = Env::new(MockConfig::default()).await;
    let closed = ClosedPort::new();
    let nowhere = env.provider(&format!("http://{}/v1", closed.addr)).await;
    let gw = Gateway::start(&env).await;

    let api = routed(
        &env,
        json!({"targets": [target(nowhere, "m0"), target(env.provider_id, "m1")]}),
    )
    .await;
    for stream in [false, true] {
        let r = post(&gw.chat_url(&api), &api.key, &chat(stream)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(attempts_header(&r), 2);
        let id = request_id(&r);
        r.text().await.unwrap();
        let event = event_of(&env, id).await;
        assert_eq!(event.response_data["attempts"][0]["error"], "connect_error");
        assert_eq!(event.model, "m1");
    }

    // The test gateway's first-byte deadline is 2 s; the hanging target never answers.
    let api = routed(
        &env,
        json!({"targets": [target(env.provider_id, "mock-hang"), target(env.provider_id, "m1")]}),
    )
    .await;
    for stream in [false, true] {
        let r = post(&gw.chat_url(&api), &api.key, &chat(stream)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(attempts_header(&r), 2);
        let id = request_id(&r);
        r.text().await.unwrap();
        let event = event_of(&env, id).await;
        assert_eq!(event.response_data["attempts"][0]["error"], "timeout");
        assert_eq!(event.outcome, wrapx_core::events::RequestOutcome::Completed);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn when_every_attempt_fails_the_client_gets_the_last_answer_logged_once() {
    let env = Env::new(MockConfig::default()).await;
    let gw = Gateway::start(&env).await;
    let api = routed(
        &env,
        json!({"targets": [target(env.provider_id, "mock-status-503"), target(env.provider_id, "mock-status-429")],
               "retry": {"max_attempts": 3}}),
    )
    .await;
    // 503, 429, 503: the last is a 5xx, so the contract's 502.
    env.mock.set_retry_after(None);
    let r = post(&gw.chat_url(&api), &api.key, &chat(true)).await;
    assert_eq!(r.status(), 502);
    assert_eq!(attempts_header(&r), 3);
    let id = request_id(&r);
    let body: Value = r.json().await.unwrap();
    assert_eq!(error_code(&body), "bad_gateway");
    let event = event_of(&env, id).await;
    let attempts = event.response_data["attempts"].as_array().unwrap().clone();
    let statuses: Vec<&Value> = attempts.iter().map(|a| &a["status"]).collect();
    assert_eq!(statuses, [&json!(503), &json!(429), &json!(503)]);
    assert_eq!(event.status, 502);

    // Two attempts, 503 then 429: the provider's own 429 is the answer.
    let api = routed(
        &env,
        json!({"targets": [target(env.provider_id, "mock-status-503"), target(env.provider_id, "mock-status-429")],
               "retry": {"max_attempts": 2}}),
    )
    .await;
    let r = post(&gw.chat_url(&api), &api.key, &chat(false)).await;
    assert_eq!(r.status(), 429);
    assert_eq!(attempts_header(&r), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_cut_after_its_first_event_does_not_fall_back() {
    let env = Env::new(MockConfig::default()).await;
    let second = mock().await;
    let p2 = env.provider(&second.base_url()).await;
    let gw = Gateway::start(&env).await;
    let api = routed(
        &env,
        json!({"targets": [target(env.provider_id, "mock-reset-after-2"), target(p2, "m2")]}),
    )
    .await;
    let r = post(&gw.chat_url(&api), &api.key, &chat(true)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(attempts_header(&r), 1);
    let text = r.text().await.unwrap_or_default();
    // Never a second start, never a clean end: the cut shows as an error event.
    assert!(!text.contains("data: [DONE]"), "{text}");
    assert_eq!(second.stats().requests, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_one_mib_body_falls_back_whole() {
    let env = Env::new(MockConfig::default()).await;
    let second = mock().await;
    let p2 = env.provider(&second.base_url()).await;
    let gw = Gateway::start(&env).await;
    let api = routed(
        &env,
        json!({"targets": [target(env.provider_id, "mock-status-503"), target(p2, "m2")]}),
    )
    .await;
    let big = "x".repeat(1 << 20) + "THE-END";
    let body = json!({"model": "c", "messages": [{"role": "user", "content": big}]});
    let r = post(&gw.chat_url(&api), &api.key, &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(attempts_header(&r), 2);
    let seen = second.requests();
    assert_eq!(seen.len(), 1);
    let sent = seen[0].json().unwrap();
    let content = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "user")
        .unwrap()["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(content.len(), big.len());
    assert!(content.ends_with("THE-END"));
}

#[tokio::test(flavor = "multi_thread")]
async fn weights_split_traffic_within_statistical_bounds() {
    let env = Env::new(MockConfig {
        chunks: 1,
        chunk_interval: Duration::ZERO,
        record: false,
        ..MockConfig::default()
    })
    .await;
    let second = mock_llm::spawn(MockConfig {
        chunks: 1,
        chunk_interval: Duration::ZERO,
        record: false,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let p2 = env.provider(&second.base_url()).await;
    let gw = Gateway::start(&env).await;
    let api = routed(
        &env,
        json!({"strategy": "weighted", "targets": [
            {"provider_id": env.provider_id, "model": "m1", "weight": 3},
            {"provider_id": p2, "model": "m2", "weight": 1}]}),
    )
    .await;
    let client = reqwest::Client::new();
    let url = gw.chat_url(&api);
    let n = 1000;
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for batch in 0..(n / 50) {
        let sends = (0..50).map(|_| {
            client
                .post(&url)
                .bearer_auth(&api.key)
                .json(&chat(false))
                .send()
        });
        for r in futures::future::join_all(sends).await {
            *statuses.entry(r.unwrap().status().as_u16()).or_default() += 1;
        }
        let _ = batch;
    }
    assert_eq!(statuses.get(&200), Some(&n), "{statuses:?}");
    let (a, b) = (env.mock.stats().requests, second.stats().requests);
    assert_eq!(a + b, n as u64);
    // Binomial(1000, 0.75): mean 750, standard deviation 13.7; five of them either way.
    assert!((680..=820).contains(&a), "first target got {a} of {n}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cooldown_is_shared_by_every_instance_and_ends_on_time() {
    let env = Env::new(MockConfig::default()).await;
    let (failing, healthy) = (mock().await, mock().await);
    let p1 = env.provider(&failing.base_url()).await;
    let p2 = env.provider(&healthy.base_url()).await;
    let one = Gateway::start(&env).await;
    let two = Gateway::start(&env).await;
    let api = routed(
        &env,
        json!({"targets": [target(p1, "m1"), target(p2, "m2")], "cooldown": {"failures": 2, "seconds": 3}}),
    )
    .await;
    failing.set_behavior(Behavior::Status(503));
    failing.set_retry_after(None);
    // Two failures in a row through the first instance put the target to rest.
    for _ in 0..2 {
        let r = post(&one.chat_url(&api), &api.key, &chat(false)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(attempts_header(&r), 2);
    }
    let tripped_at = std::time::Instant::now();
    assert_eq!(failing.stats().requests, 2);
    // The second instance hears of it and skips the resting target: no call reaches it.
    eventually_true(
        "the rest seen by the other instance",
        Duration::from_secs(2),
        || async {
            let before = failing.stats().requests;
            let r = post(&two.chat_url(&api), &api.key, &chat(false)).await;
            attempts_header(&r) == 1 && failing.stats().requests == before
        },
    )
    .await;
    let calls = failing.stats().requests;
    for _ in 0..5 {
        let r = post(&two.chat_url(&api), &api.key, &chat(true)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(attempts_header(&r), 1);
        r.text().await.unwrap();
    }
    // Not released early: still resting well within its 3 seconds.
    if tripped_at.elapsed() < Duration::from_millis(2500) {
        assert_eq!(failing.stats().requests, calls);
    }
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", one.metrics_port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("wrapx_gateway_target_cooldowns_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wrapx_gateway_upstream_attempts_total{outcome=\"fell_back\"} 2"),
        "{metrics}"
    );
    // Recovered, and not kept resting: calls reach it again after the rest, on both.
    failing.set_behavior(Behavior::Normal);
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(tripped_at.elapsed())).await;
    for gw in [&two, &one] {
        eventually_true("the target back in use", Duration::from_secs(3), || async {
            let before = failing.stats().requests;
            let r = post(&gw.chat_url(&api), &api.key, &chat(false)).await;
            r.status() == 200 && failing.stats().requests == before + 1
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_target_resting_tries_the_least_recently_failed() {
    let env = Env::new(MockConfig::default()).await;
    let (a, b) = (mock().await, mock().await);
    let pa = env.provider(&a.base_url()).await;
    let pb = env.provider(&b.base_url()).await;
    let gw = Gateway::start(&env).await;
    let api = routed(
        &env,
        json!({"targets": [target(pa, "ma"), target(pb, "mb")], "retry": {"max_attempts": 2},
               "cooldown": {"failures": 1, "seconds": 30}}),
    )
    .await;
    a.set_behavior(Behavior::Status(503));
    b.set_behavior(Behavior::Status(503));
    // a fails first, then b: both rest.
    let r = post(&gw.chat_url(&api), &api.key, &chat(false)).await;
    assert_eq!(r.status(), 502);
    let metrics_url = format!("http://127.0.0.1:{}/metrics", gw.metrics_port);
    eventually_true("both targets resting", Duration::from_secs(5), || async {
        let text = reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.contains("wrapx_gateway_target_cooldowns_total 2")
    })
    .await;
    // The rest is recorded just after the count comes back.
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.set_behavior(Behavior::Normal);
    b.set_behavior(Behavior::Normal);
    let (a0, b0) = (a.stats().requests, b.stats().requests);
    // Not refused outright: the one that failed longer ago (a) gets the request, once.
    let r = post(&gw.chat_url(&api), &api.key, &chat(false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(attempts_header(&r), 1);
    assert_eq!(a.stats().requests, a0 + 1);
    assert_eq!(b.stats().requests, b0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_without_routing_answers_with_one_attempt_and_no_list() {
    let env = Env::new(MockConfig::default()).await;
    let gw = Gateway::start(&env).await;
    let api = env.api().await;
    let r = post(&gw.chat_url(&api), &api.key, &chat(false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(attempts_header(&r), 1);
    let id = request_id(&r);
    let event = event_of(&env, id).await;
    assert!(event.response_data.get("attempts").is_none());
    assert_eq!(event.model, "pinned-model");
    // A 503 without routing is not retried.
    let api = env.api().await;
    sqlx::query("UPDATE wrapped_apis SET model = 'mock-status-503' WHERE id = $1")
        .bind(api.id)
        .execute(&env.db)
        .await
        .unwrap();
    let before = env.mock.stats().requests;
    let r = post(&gw.chat_url(&api), &api.key, &chat(false)).await;
    assert_eq!(r.status(), 502);
    assert_eq!(attempts_header(&r), 1);
    assert_eq!(env.mock.stats().requests, before + 1);
}

const SDKS: &str = r#"
import json, sys, openai, anthropic
base, key = sys.argv[1], sys.argv[2]
out = {}
oa = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
r = oa.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}])
out["openai"] = bool(r.choices[0].message.content)
pieces = [c.choices[0].delta.content for c in oa.chat.completions.create(model="x", messages=[{"role": "user", "content": "hi"}], stream=True) if c.choices and c.choices[0].delta.content]
out["openai_stream"] = len(pieces)
an = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
m = an.messages.create(model="x", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
out["anthropic"] = m.content[0].text != ""
with an.messages.stream(model="x", max_tokens=50, messages=[{"role": "user", "content": "hi"}]) as s:
    out["anthropic_stream"] = len(list(s.text_stream))
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_official_sdks_see_a_clean_answer_while_the_first_target_fails() {
    let env = Env::new(MockConfig {
        chunks: 3,
        ..MockConfig::default()
    })
    .await;
    let anthropic = env.provider_of("anthropic", &env.mock.base_url()).await;
    let gw = Gateway::start(&env).await;
    let api = env.api().await;
    set_routing(
        &env,
        &api,
        // Never resting (`failures: 0`): no cooldown spares the failing target any request.
        json!({"targets": [target(env.provider_id, "mock-status-503"), target(anthropic, "claude-ok")],
               "cooldown": {"failures": 0}}),
    )
    .await;
    let base = gw.url(&format!("/w/{}", api.endpoint));
    let result = python_json(SDKS, vec![base, api.key.clone()]).await;
    assert_eq!(
        result,
        json!({"openai": true, "openai_stream": 3, "anthropic": true, "anthropic_stream": 3})
    );
    // Four requests, each tried twice.
    let seen = env.mock.requests();
    assert_eq!(seen.len(), 8);
}
