//! End to end through the real binary: routes, the key swap, prompt compilation as the
//! provider receives it, streaming, usage, errors, and one event per request.

use std::time::{Duration, Instant};

use crate::common::{chat, error_code, eventually, ClosedPort, Env, Gateway, PROVIDER_KEY};
use serde_json::{json, Value};
use wrapx_benches::mock_llm::MockConfig;
use wrapx_core::events::{RequestOutcome, UsageSource};

#[tokio::test(flavor = "multi_thread")]
async fn a_completion_reaches_the_provider_rewritten_with_its_own_key() {
    let env = Env::new(MockConfig::default()).await;
    let api = env.api().await;
    env.prompt(
        api.id,
        json!({"role": "You are a pirate.", "rules": "Never reveal the map.",
        "examples": [{"user": "hi", "assistant": "arr"}]}),
    )
    .await;
    let gw = Gateway::start(&env).await;

    let client = reqwest::Client::new();
    let body = json!({"model": "client-model", "temperature": 0.25, "user": "u-1",
        "messages": [{"role": "system", "content": "client system"}, {"role": "user", "content": "Hello there"}]});
    let resp = client
        .post(gw.chat_url(&api))
        .bearer_auth(&api.key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["object"], "chat.completion");

    let seen = env.mock.requests();
    assert_eq!(seen.len(), 1);
    let upstream = &seen[0];
    assert_eq!(upstream.path, "/v1/chat/completions");
    assert_eq!(
        upstream.header("authorization"),
        Some(format!("Bearer {PROVIDER_KEY}").as_str())
    );
    for (name, value) in &upstream.headers {
        assert!(
            !value.contains(&api.key),
            "the client key went upstream in {name}"
        );
    }
    assert!(upstream.header("x-api-key").is_none());
    let sent = upstream.json().unwrap();
    assert_eq!(sent["model"], "pinned-model");
    assert_eq!(sent["temperature"], 0.25);
    assert_eq!(sent["user"], "u-1");
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "system", "content": "You are a pirate.\n\n## Rules\nNever reveal the map."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "arr"},
            {"role": "system", "content": "client system"},
            {"role": "user", "content": "Hello there"},
        ])
    );
    assert!(sent.get("stream_options").is_none());

    // The x-api-key form works too, and the models route answers the pinned model.
    let models: Value = client
        .get(gw.url(&format!("/w/{}/v1/models", api.endpoint)))
        .header("x-api-key", &api.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "pinned-model");

    let events = env.events(2, Duration::from_secs(10)).await;
    assert_eq!(events.len(), 2);
    let e = events
        .iter()
        .find(|e| e.request_id.to_string() == request_id)
        .expect("the completion's event");
    assert_eq!(e.outcome, RequestOutcome::Completed);
    assert_eq!(e.status, 200);
    assert_eq!(
        (
            e.usage.prompt_tokens,
            e.usage.completion_tokens,
            e.usage.source
        ),
        (10, 5, UsageSource::Reported)
    );
    assert_eq!(e.key_id, api.key_id);
    assert_eq!(e.wrapped_api_id, api.id);
    assert!(!e.stream);
    let text = serde_json::to_string(&events).unwrap();
    assert!(
        !text.contains(&api.key) && !text.contains(PROVIDER_KEY),
        "a secret in an event"
    );
    assert!(env
        .drain_events(Duration::from_millis(500))
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_pass_chunk_by_chunk_and_usage_is_read_from_them() {
    let env = Env::new(MockConfig {
        chunks: 6,
        chunk_interval: Duration::from_millis(150),
        ..MockConfig::default()
    })
    .await;
    let api = env.api().await;
    let gw = Gateway::start(&env).await;

    let started = Instant::now();
    let mut resp = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&api.key)
        .json(&chat(true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let mut arrivals = Vec::new();
    let mut text = String::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        let s = String::from_utf8_lossy(&chunk);
        if s.contains("\"content\":\"") {
            arrivals.push(started.elapsed());
        }
        text.push_str(&s);
    }
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(
        arrivals.len() >= 4,
        "content arrived in {} pieces",
        arrivals.len()
    );
    let spread = *arrivals.last().unwrap() - arrivals[0];
    assert!(
        spread >= Duration::from_millis(500),
        "chunks arrived within {spread:?}: buffered"
    );

    let sent = env.mock.requests()[0].json().unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);

    let events = env.events(1, Duration::from_secs(10)).await;
    assert_eq!(events[0].request_id.to_string(), request_id);
    assert!(events[0].stream);
    assert_eq!(events[0].usage.source, UsageSource::Reported);
    assert_eq!(events[0].usage.completion_tokens, 6);
    assert!(events[0].ttfb_ms.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn every_refusal_has_the_contract_status_shape_and_request_id() {
    let env = Env::new(MockConfig::default()).await;
    let api = env.api().await;
    let other = env.api().await;
    let (expired, _, _) = env
        .key(
            api.id,
            Some(chrono::Utc::now() - chrono::Duration::seconds(5)),
        )
        .await;
    let (revoked, revoked_id, _) = env.key(api.id, None).await;
    sqlx::query("UPDATE api_keys SET is_active = false, revoked_at = now() WHERE id = $1")
        .bind(revoked_id)
        .execute(&env.db)
        .await
        .unwrap();
    let inactive = env.api().await;
    sqlx::query("UPDATE wrapped_apis SET is_active = false WHERE id = $1")
        .bind(inactive.id)
        .execute(&env.db)
        .await
        .unwrap();
    let gw = Gateway::start_with(&env, &[("WRAPX_GATEWAY__MAX_BODY_BYTES", "2000")]).await;
    let client = reqwest::Client::new();
    let unknown = wrapx_core::keys::ApiKey::generate().expose().to_owned();
    let mut malformed = api.key.clone();
    malformed.replace_range(10..11, if &api.key[10..11] == "A" { "B" } else { "A" });
    let chat_body = chat(false).to_string();
    let big = json!({"messages": [{"role": "user", "content": "x".repeat(5000)}]}).to_string();

    // (request, expected status, expected code, logged?)
    let cases: Vec<(reqwest::RequestBuilder, u16, &str, bool)> = vec![
        (
            client.post(gw.chat_url(&api)).body(chat_body.clone()),
            401,
            "missing_api_key",
            false,
        ),
        (
            client
                .post(gw.chat_url(&api))
                .bearer_auth("sk-not-ours")
                .body(chat_body.clone()),
            401,
            "invalid_api_key",
            false,
        ),
        (
            client
                .post(gw.chat_url(&api))
                .bearer_auth(&malformed)
                .body(chat_body.clone()),
            401,
            "invalid_api_key",
            false,
        ),
        (
            client
                .post(gw.chat_url(&api))
                .bearer_auth(&unknown)
                .body(chat_body.clone()),
            401,
            "invalid_api_key",
            false,
        ),
        (
            client
                .post(gw.chat_url(&api))
                .bearer_auth(&revoked)
                .body(chat_body.clone()),
            401,
            "revoked_api_key",
            false,
        ),
        (
            client
                .post(gw.chat_url(&api))
                .bearer_auth(&expired)
                .body(chat_body.clone()),
            401,
            "expired_api_key",
            false,
        ),
        (
            client
                .post(gw.chat_url(&inactive))
                .bearer_auth(&inactive.key)
                .body(chat_body.clone()),
            403,
            "api_inactive",
            true,
        ),
        (
            client
                .post(gw.chat_url(&other))
                .bearer_auth(&api.key)
                .body(chat_body.clone()),
            404,
            "unknown_endpoint",
            true,
        ),
        (
            client
                .post(gw.url("/w/ep_nope/v1/chat/completions"))
                .bearer_auth(&api.key)
                .body(chat_body.clone()),
            404,
            "unknown_endpoint",
            false,
        ),
        (
            client
                .post(gw.url("/v1/nothing"))
                .bearer_auth(&api.key)
                .body(chat_body.clone()),
            404,
            "unknown_url",
            true,
        ),
        (
            client.post(gw.url("/v1/nothing")).body(chat_body.clone()),
            404,
            "unknown_url",
            false,
        ),
        (
            client
                .post(gw.url("/v1/messages"))
                .bearer_auth(&api.key)
                .body(chat_body.clone()),
            // The Anthropic route, with a Chat Completions body: no max_tokens.
            400,
            "invalid_request",
            true,
        ),
        (
            client
                .post(gw.chat_url(&api))
                .bearer_auth(&api.key)
                .body("{not json"),
            400,
            "invalid_request",
            true,
        ),
        (
            client
                .post(gw.chat_url(&api))
                .bearer_auth(&api.key)
                .body(r#"{"messages": []}"#),
            400,
            "invalid_request",
            true,
        ),
        (
            client
                .post(gw.chat_url(&api))
                .bearer_auth(&api.key)
                .body(big.clone()),
            413,
            "request_too_large",
            true,
        ),
        (
            client
                .post(gw.chat_url(&api))
                .bearer_auth(&api.key)
                .body(reqwest::Body::wrap_stream(futures::stream::iter(
                    big.as_bytes()
                        .chunks(500)
                        .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
                        .collect::<Vec<_>>(),
                ))),
            413,
            "request_too_large",
            true,
        ),
    ];
    let mut logged = Vec::new();
    for (i, (request, status, code, is_logged)) in cases.into_iter().enumerate() {
        let resp = request
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "case {i}");
        let id = resp
            .headers()
            .get("x-request-id")
            .unwrap_or_else(|| panic!("case {i}: no x-request-id"))
            .to_str()
            .unwrap()
            .to_owned();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(error_code(&body), code, "case {i}: {body}");
        assert!(
            body["error"]["message"].is_string() && body["error"]["type"].is_string(),
            "case {i}"
        );
        if is_logged {
            logged.push((id, status));
        }
    }
    assert!(
        env.mock.requests().is_empty(),
        "a refused request reached the provider"
    );
    let events = env.drain_events(Duration::from_secs(2)).await;
    let mut got: Vec<(String, u16)> = events
        .iter()
        .map(|e| (e.request_id.to_string(), e.status))
        .collect();
    got.sort();
    logged.sort();
    assert_eq!(got, logged);
    assert!(events.iter().all(|e| e.outcome == RequestOutcome::Rejected));
}

/// A chunked body, in 4 KiB pieces.
fn chunked(body: String) -> reqwest::Body {
    reqwest::Body::wrap_stream(futures::stream::iter(
        body.into_bytes()
            .chunks(4096)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    ))
}

/// Chunked bodies longer than pingora's 64 KiB retry buffer are read on as the request goes
/// out: a valid one reaches the provider rewritten, whole and streamed through; an invalid one
/// gets its 400 and one too large its 413, without a provider answer; each is logged once.
#[tokio::test(flavor = "multi_thread")]
async fn chunked_bodies_past_the_retry_buffer_are_rewritten_whole() {
    let env = Env::new(MockConfig::default()).await;
    let api = env.api().await;
    let gw = Gateway::start_with(&env, &[("WRAPX_GATEWAY__MAX_BODY_BYTES", "400000")]).await;
    let client = reqwest::Client::new();
    let long = "y".repeat(300_000);
    let send = |body: String| {
        client
            .post(gw.chat_url(&api))
            .bearer_auth(&api.key)
            .header("content-type", "application/json")
            .body(chunked(body))
            .send()
    };

    let valid = json!({"model": "client-model", "stream": true, "temperature": 0.5,
        "messages": [{"role": "user", "content": long}]});
    let r = send(valid.to_string()).await.unwrap();
    assert_eq!(r.status(), 200);
    let ok_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    let text = r.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let seen = env.mock.requests();
    assert_eq!(seen.len(), 1);
    let sent = seen[0].json().unwrap();
    assert_eq!(sent["model"], "pinned-model");
    assert_eq!(sent["temperature"], 0.5);
    assert_eq!(sent["stream_options"]["include_usage"], true);
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages.last().unwrap()["content"].as_str(), Some(&*long));

    let mut refused = Vec::new();
    for (body, status, code) in [
        (
            format!(r#"{{"messages": [{{"role": "user", "content": "{long}"}}"#),
            400,
            "invalid_request",
        ),
        (
            format!(r#"{{"messages": [{{"role": "user", "content": "{long}{long}"}}]}}"#),
            413,
            "request_too_large",
        ),
    ] {
        let r = send(body).await.unwrap();
        assert_eq!(r.status().as_u16(), status);
        refused.push(r.headers()["x-request-id"].to_str().unwrap().to_owned());
        let body: Value = r.json().await.unwrap();
        assert_eq!(error_code(&body), code, "{body}");
    }
    assert_eq!(
        env.mock.requests().len(),
        1,
        "a refused body reached the provider whole"
    );

    let events = env.events(3, Duration::from_secs(10)).await;
    let outcome = |id: &str| {
        events
            .iter()
            .find(|e| e.request_id.to_string() == id)
            .map(|e| (e.outcome, e.status))
    };
    assert_eq!(outcome(&ok_id), Some((RequestOutcome::Completed, 200)));
    assert_eq!(outcome(&refused[0]), Some((RequestOutcome::Rejected, 400)));
    assert_eq!(outcome(&refused[1]), Some((RequestOutcome::Rejected, 413)));
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_failures_map_to_502_and_504_and_provider_4xx_passes() {
    let env = Env::new(MockConfig::default()).await;
    let api = env.api().await;
    let closed = ClosedPort::new();
    let dead_provider = env.provider(&format!("http://{}/v1", closed.addr)).await;
    let dead = env.api_with(dead_provider, "keep", None).await;
    let gw = Gateway::start_with(
        &env,
        &[
            ("WRAPX_GATEWAY__FIRST_BYTE_TIMEOUT_MS", "700"),
            ("WRAPX_GATEWAY__IDLE_TIMEOUT_MS", "700"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let send = |behavior: &'static str, target: &crate::common::Api| {
        client
            .post(gw.chat_url(target))
            .bearer_auth(&target.key)
            .header("x-mock-behavior", behavior)
            .json(&chat(false))
            .send()
    };

    let r = send("status-500", &api).await.unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.headers().contains_key("x-request-id"));
    assert_eq!(error_code(&r.json().await.unwrap()), "bad_gateway");

    let started = Instant::now();
    let r = send("hang", &api).await.unwrap();
    assert_eq!(r.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(error_code(&r.json().await.unwrap()), "gateway_timeout");

    let r = send("normal", &dead).await.unwrap();
    assert_eq!(r.status(), 502);

    let r = send("status-429", &api).await.unwrap();
    assert_eq!(r.status(), 429, "a provider 4xx passes as sent");
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].is_object());

    let events = env.drain_events(Duration::from_secs(2)).await;
    let mut outcomes: Vec<(u16, RequestOutcome)> =
        events.iter().map(|e| (e.status, e.outcome)).collect();
    outcomes.sort_by_key(|o| o.0);
    assert_eq!(
        outcomes,
        vec![
            (429, RequestOutcome::Completed),
            (502, RequestOutcome::UpstreamError),
            (502, RequestOutcome::UpstreamError),
            (504, RequestOutcome::Timeout)
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn health_readiness_and_metrics() {
    let env = Env::new(MockConfig::default()).await;
    let api = env.api().await;
    let gw = Gateway::start(&env).await;
    let client = reqwest::Client::new();
    let r = client.get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    let r = eventually("/readyz answering 200", Duration::from_secs(10), || async {
        let r = client.get(gw.url("/readyz")).send().await.unwrap();
        (r.status() == 200).then_some(r)
    })
    .await;
    assert_eq!(r.json::<Value>().await.unwrap()["broker"], "up");
    for _ in 0..3 {
        let r = client
            .post(gw.chat_url(&api))
            .bearer_auth(&api.key)
            .json(&chat(false))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // A request is counted in its logging phase, which may end just after its answer did.
    let want = r#"wrapx_gateway_requests_total{status="2xx",provider="openai_compatible",stream="false"} 3"#;
    let text = eventually(
        "the 3 requests and their tokens counted",
        Duration::from_secs(5),
        || async {
            let text = client
                .get(format!("http://127.0.0.1:{}/metrics", gw.metrics_port))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let tokens = r#"wrapx_gateway_tokens_total{kind="completion"} 15"#;
            (text.contains(want) && text.contains(tokens)).then_some(text)
        },
    )
    .await;
    assert!(text.contains(want), "{text}");
    assert!(
        text.contains(r#"wrapx_gateway_tokens_total{kind="completion"} 15"#),
        "{text}"
    );
    for name in [
        "wrapx_gateway_request_duration_seconds",
        "wrapx_gateway_upstream_ttfb_seconds",
        "wrapx_gateway_overhead_seconds",
        "wrapx_gateway_rate_limited_total",
        "wrapx_gateway_events_spooled",
        "wrapx_gateway_rate_limit_fallback_total",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
    // The first request found the key in PostgreSQL (after a Redis miss), the next two in
    // memory: the cache hit ratio an operator graphs.
    for (series, want) in [
        (
            r#"wrapx_gateway_key_lookups_total{source="database"}"#,
            " 1",
        ),
        (r#"wrapx_gateway_key_lookups_total{source="redis"}"#, " 0"),
        (r#"wrapx_gateway_key_lookups_total{source="memory"}"#, " 2"),
        // Its key record and its wrapped API's, each a Redis miss.
        (r#"wrapx_gateway_redis_seconds_count{op="lookup"}"#, " 2"),
    ] {
        assert!(
            text.contains(&format!("{series}{want}\n")),
            "{series}: {text}"
        );
    }
    assert!(!text.contains(&api.id.to_string()) && !text.contains(&api.key_id.to_string()));
}
