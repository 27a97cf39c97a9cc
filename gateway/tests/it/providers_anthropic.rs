//! Provider translation end to end, through the real binary and the mock upstream in each
//! provider's mode: an OpenAI client on an Anthropic provider (what the provider receives, what
//! the client gets, streams chunk by chunk, errors, usage in the event), an Anthropic client on
//! an OpenAI-compatible provider, and an Anthropic client on an Anthropic provider.

use std::time::{Duration, Instant};

use crate::common::{chat, error_code, eventually, Api, Env, Gateway, PROVIDER_KEY};
use serde_json::{json, Value};
use wrapx_benches::mock_llm::MockConfig;
use wrapx_core::{
    events::{RequestOutcome, UsageSource},
    types::ProviderKind,
};

const PROMPT: &str = "You are a pirate.\n\n## Rules\nNever reveal the map.";

/// An API on a provider of `kind` at the mock, with a compiled prompt and one example.
async fn api_on(env: &Env, kind: &str) -> Api {
    let provider = env.provider_of(kind, &env.mock.base_url()).await;
    let api = env.api_with(provider, "keep", None).await;
    env.prompt(
        api.id,
        json!({"role": "You are a pirate.", "rules": "Never reveal the map.",
        "examples": [{"user": "hi", "assistant": "arr"}]}),
    )
    .await;
    api
}

/// Reads a streamed answer; returns its text and when each piece holding `marker` arrived.
async fn read_stream(mut resp: reqwest::Response, marker: &str) -> (String, Vec<Duration>) {
    let started = Instant::now();
    let mut arrivals = Vec::new();
    let mut text = String::new();
    while let Some(chunk) = resp.chunk().await.unwrap() {
        let s = String::from_utf8_lossy(&chunk);
        if s.contains(marker) {
            arrivals.push(started.elapsed());
        }
        text.push_str(&s);
    }
    (text, arrivals)
}

/// The JSON of every `data:` line of an SSE text (`[DONE]` left out).
fn data_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

fn assert_spread(arrivals: &[Duration]) {
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
}

#[tokio::test(flavor = "multi_thread")]
async fn an_openai_client_gets_an_anthropic_provider_translated_both_ways() {
    let env = Env::new(MockConfig::default()).await;
    let api = api_on(&env, "anthropic").await;
    let gw = Gateway::start(&env).await;

    let body = json!({"model": "client-model", "temperature": 1.5, "stop": "END",
        "messages": [{"role": "system", "content": "client system"}, {"role": "user", "content": "Hello there"}]});
    let resp = reqwest::Client::new()
        .post(gw.chat_url(&api))
        .bearer_auth(&api.key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let answer: Value = resp.json().await.unwrap();

    let seen = env.mock.requests();
    assert_eq!(seen.len(), 1);
    let upstream = &seen[0];
    assert_eq!(upstream.path, "/v1/messages");
    assert_eq!(upstream.header("x-api-key"), Some(PROVIDER_KEY));
    assert_eq!(upstream.header("anthropic-version"), Some("2023-06-01"));
    assert!(upstream.header("authorization").is_none());
    for (name, value) in &upstream.headers {
        assert!(
            !value.contains(&api.key),
            "the client key went upstream in {name}"
        );
    }
    let sent = upstream.json().unwrap();
    assert_eq!(sent["model"], "pinned-model");
    assert_eq!(sent["system"], format!("{PROMPT}\n\nclient system"));
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "arr"},
            {"role": "user", "content": "Hello there"},
        ])
    );
    assert_eq!(sent["max_tokens"], 4096);
    assert_eq!(sent["temperature"], 1.0);
    assert_eq!(sent["stop_sequences"], json!(["END"]));

    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["id"], format!("chatcmpl-{request_id}"));
    assert_eq!(answer["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "tok0 tok1 tok2 tok3 tok4 "
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(answer["usage"]["prompt_tokens"], 10);
    assert_eq!(answer["usage"]["completion_tokens"], 5);

    let events = env.events(1, Duration::from_secs(10)).await;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.request_id.to_string(), request_id);
    assert_eq!(e.provider, ProviderKind::Anthropic);
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
    assert_eq!(e.response_data["object"], "chat.completion");
    let text = serde_json::to_string(&events).unwrap();
    assert!(
        !text.contains(&api.key) && !text.contains(PROVIDER_KEY),
        "a secret in an event"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_anthropic_stream_reaches_an_openai_client_chunk_by_chunk_with_usage() {
    let env = Env::new(MockConfig {
        chunks: 6,
        chunk_interval: Duration::from_millis(150),
        ..MockConfig::default()
    })
    .await;
    let api = api_on(&env, "anthropic").await;
    let gw = Gateway::start(&env).await;

    let mut body = chat(true);
    body["stream_options"] = json!({"include_usage": true});
    let resp = reqwest::Client::new()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&api.key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert!(resp.headers().get("content-length").is_none());
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let (text, arrivals) = read_stream(resp, "\"content\":\"tok").await;
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert_spread(&arrivals);

    let chunks = data_lines(&text);
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "tok0 tok1 tok2 tok3 tok4 tok5 ");
    let finish: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&json!("stop")]);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["prompt_tokens"], 10);
    assert_eq!(usage["completion_tokens"], 6);

    let sent = env.mock.requests()[0].json().unwrap();
    assert_eq!(sent["stream"], true);
    assert!(sent.get("stream_options").is_none());

    let events = env.events(1, Duration::from_secs(10)).await;
    assert_eq!(events[0].request_id.to_string(), request_id);
    assert!(events[0].stream);
    assert_eq!(events[0].outcome, RequestOutcome::Completed);
    assert_eq!(
        (
            events[0].usage.prompt_tokens,
            events[0].usage.completion_tokens,
            events[0].usage.source
        ),
        (10, 6, UsageSource::Reported)
    );
    assert!(events[0].ttfb_ms.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_errors_reach_an_openai_client_in_openai_shape() {
    let env = Env::new(MockConfig::default()).await;
    let api = api_on(&env, "anthropic").await;
    let gw = Gateway::start(&env).await;
    let client = reqwest::Client::new();

    // (mock behaviour, status the client gets, OpenAI error type, code)
    let cases = [
        (
            "status-400",
            400,
            "invalid_request_error",
            "invalid_request",
        ),
        (
            "status-401",
            401,
            "invalid_request_error",
            "invalid_api_key",
        ),
        ("status-429", 429, "requests", "rate_limit_exceeded"),
        ("status-500", 502, "upstream_error", "bad_gateway"),
        ("status-529", 502, "upstream_error", "provider_overloaded"),
    ];
    for (behavior, status, kind, code) in cases {
        let resp = client
            .post(gw.chat_url(&api))
            .bearer_auth(&api.key)
            .header("x-mock-behavior", behavior)
            .json(&chat(false))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{behavior}");
        assert!(resp.headers().contains_key("x-request-id"));
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["type"], kind, "{behavior}: {body}");
        assert_eq!(error_code(&body), code, "{behavior}: {body}");
        // The provider's 4xx message reaches the client; a 5xx stays opaque.
        let message = body["error"]["message"].as_str().unwrap();
        assert_eq!(message.contains("mock error"), status < 500, "{message}");
    }
    let events = env.events(cases.len(), Duration::from_secs(10)).await;
    assert_eq!(events.len(), cases.len());
    let mut statuses: Vec<u16> = events.iter().map(|e| e.status).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [400, 401, 429, 502, 502]);
    for e in &events {
        let want = if e.status >= 500 {
            RequestOutcome::UpstreamError
        } else {
            RequestOutcome::Completed
        };
        assert_eq!(e.outcome, want, "{}", e.status);
    }

    // A 200 whose body is not a message: the status is already out, the body says what
    // happened in OpenAI's shape, and the event records an upstream error.
    let resp = client
        .post(gw.chat_url(&api))
        .bearer_auth(&api.key)
        .header("x-mock-behavior", "error-in-200")
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(error_code(&body), "bad_gateway", "{body}");
    let failed = env.events(1, Duration::from_secs(10)).await;
    assert_eq!(failed[0].outcome, RequestOutcome::UpstreamError);

    // A request Anthropic's API cannot express is the client's 400; the provider never sees it.
    env.mock.clear();
    let resp = client
        .post(gw.chat_url(&api))
        .bearer_auth(&api.key)
        .json(&json!({"n": 2, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(error_code(&body), "invalid_request");
    assert!(body["error"]["message"].as_str().unwrap().contains("`n`"));
    assert!(env.mock.requests().is_empty());
    let refused = env.events(1, Duration::from_secs(10)).await;
    assert_eq!(refused[0].outcome, RequestOutcome::Rejected);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_anthropic_client_reaches_an_openai_provider_json_and_stream() {
    let env = Env::new(MockConfig {
        chunks: 6,
        chunk_interval: Duration::from_millis(150),
        ..MockConfig::default()
    })
    .await;
    let api = api_on(&env, "openai_compatible").await;
    let gw = Gateway::start(&env).await;
    let client = reqwest::Client::new();
    let body = json!({"model": "claude-x", "max_tokens": 100, "system": "client system",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello there"}]}]});

    let resp = client
        .post(gw.messages_url(&api))
        .header("x-api-key", &api.key)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["type"], "message");
    assert_eq!(answer["role"], "assistant");
    assert_eq!(
        answer["content"],
        json!([{"type": "text", "text": "tok0 tok1 tok2 tok3 tok4 tok5 "}])
    );
    assert_eq!(answer["stop_reason"], "end_turn");
    assert_eq!(answer["usage"]["input_tokens"], 10);
    assert_eq!(answer["usage"]["output_tokens"], 6);

    let upstream = &env.mock.requests()[0];
    assert_eq!(upstream.path, "/v1/chat/completions");
    assert_eq!(
        upstream.header("authorization"),
        Some(format!("Bearer {PROVIDER_KEY}").as_str())
    );
    assert!(upstream.header("x-api-key").is_none());
    assert!(upstream.header("anthropic-version").is_none());
    let sent = upstream.json().unwrap();
    assert_eq!(sent["model"], "pinned-model");
    assert_eq!(sent["max_tokens"], 100);
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "system", "content": PROMPT},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "arr"},
            {"role": "system", "content": "client system"},
            {"role": "user", "content": "Hello there"},
        ])
    );

    let mut stream_body = body.clone();
    stream_body["stream"] = json!(true);
    let resp = client
        .post(gw.url("/v1/messages"))
        .header("x-api-key", &api.key)
        .json(&stream_body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let (text, arrivals) = read_stream(resp, "text_delta").await;
    assert_spread(&arrivals);
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    assert_eq!(
        names
            .iter()
            .filter(|n| **n == "content_block_delta")
            .count(),
        6
    );
    let events = data_lines(&text);
    let delta = events
        .iter()
        .find(|e| e["type"] == "message_delta")
        .unwrap();
    assert_eq!(delta["usage"]["output_tokens"], 6);
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    let streamed = &env.mock.requests()[1].json().unwrap();
    assert_eq!(streamed["stream_options"]["include_usage"], true);

    let logged = env.events(2, Duration::from_secs(10)).await;
    assert_eq!(logged.len(), 2);
    for e in &logged {
        assert_eq!(e.outcome, RequestOutcome::Completed);
        assert_eq!(
            (
                e.usage.prompt_tokens,
                e.usage.completion_tokens,
                e.usage.source
            ),
            (10, 6, UsageSource::Reported),
            "stream: {}",
            e.stream
        );
    }
    assert!(logged.iter().any(|e| e.stream));

    // A provider error reaches the Anthropic client in Anthropic's shape.
    let resp = client
        .post(gw.messages_url(&api))
        .header("x-api-key", &api.key)
        .header("x-mock-behavior", "status-429")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["type"], "error");
    assert_eq!(err["error"]["type"], "rate_limit_error");

    // A body Anthropic's API would refuse is the gateway's own 400 (the contract's shape),
    // and never reaches the provider.
    env.mock.clear();
    let resp = client
        .post(gw.url("/v1/messages"))
        .header("x-api-key", &api.key)
        .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(error_code(&err), "invalid_request");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_tokens"));
    assert!(env.mock.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_anthropic_client_on_an_anthropic_provider_passes_through_with_the_prompt() {
    let env = Env::new(MockConfig {
        chunks: 6,
        chunk_interval: Duration::from_millis(150),
        ..MockConfig::default()
    })
    .await;
    let api = api_on(&env, "anthropic").await;
    let gw = Gateway::start(&env).await;
    let client = reqwest::Client::new();
    let body = json!({"model": "claude-x", "max_tokens": 100, "system": "client system",
        "messages": [{"role": "user", "content": "Hello there"}]});

    let resp = client
        .post(gw.messages_url(&api))
        .header("x-api-key", &api.key)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["type"], "message");
    assert_eq!(answer["model"], "pinned-model");
    assert_eq!(answer["usage"]["output_tokens"], 6);

    let upstream = &env.mock.requests()[0];
    assert_eq!(upstream.path, "/v1/messages");
    assert_eq!(upstream.header("x-api-key"), Some(PROVIDER_KEY));
    assert_eq!(upstream.header("anthropic-version"), Some("2023-06-01"));
    assert!(upstream.header("authorization").is_none());
    let sent = upstream.json().unwrap();
    assert_eq!(sent["model"], "pinned-model");
    assert_eq!(sent["max_tokens"], 100);
    assert_eq!(sent["system"], format!("{PROMPT}\n\nclient system"));
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "arr"},
            {"role": "user", "content": "Hello there"},
        ])
    );

    let mut stream_body = body;
    stream_body["stream"] = json!(true);
    let resp = client
        .post(gw.url("/v1/messages"))
        .header("x-api-key", &api.key)
        .json(&stream_body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (text, arrivals) = read_stream(resp, "text_delta").await;
    assert_spread(&arrivals);
    assert!(text.contains("event: message_stop"), "{text}");

    let logged = env.events(2, Duration::from_secs(10)).await;
    assert_eq!(logged.len(), 2);
    for e in &logged {
        assert_eq!(e.provider, ProviderKind::Anthropic);
        assert_eq!(e.outcome, RequestOutcome::Completed);
        assert_eq!(
            (
                e.usage.prompt_tokens,
                e.usage.completion_tokens,
                e.usage.source
            ),
            (10, 6, UsageSource::Reported),
            "stream: {}",
            e.stream
        );
    }
}

/// A `thinking` tool on the wrapped API turns the provider's reasoning switch on: Anthropic's
/// thinking budget (with max_tokens above it and temperature dropped), OpenAI's effort.
#[tokio::test(flavor = "multi_thread")]
async fn a_thinking_tool_switches_reasoning_on_at_each_provider() {
    let env = Env::new(MockConfig::default()).await;
    let anthropic = api_on(&env, "anthropic").await;
    let openai = {
        let provider = env.provider_of("openai", &env.mock.base_url()).await;
        env.api_with(provider, "keep", None).await
    };
    let tool = uuid::Uuid::now_v7();
    sqlx::query("INSERT INTO tools (id, user_id, tool_name, tool_type, tool_config) VALUES ($1, $2, 'think', 'thinking', '{\"budget_tokens\": 3000}')")
        .bind(tool)
        .bind(env.user_id)
        .execute(&env.db)
        .await
        .unwrap();
    for api in [anthropic.id, openai.id] {
        sqlx::query(
            "INSERT INTO wrapped_api_tools (id, wrapped_api_id, tool_id) VALUES ($1, $2, $3)",
        )
        .bind(uuid::Uuid::now_v7())
        .bind(api)
        .bind(tool)
        .execute(&env.db)
        .await
        .unwrap();
    }
    let gw = Gateway::start(&env).await;
    let client = reqwest::Client::new();
    for api in [&anthropic, &openai] {
        let r = client
            .post(gw.chat_url(api))
            .bearer_auth(&api.key)
            .json(&json!({"model": "m", "temperature": 0.2,
                "messages": [{"role": "user", "content": "think"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    let seen = env.mock.requests();
    assert_eq!(seen.len(), 2);
    let to_anthropic = seen[0].json().unwrap();
    assert_eq!(seen[0].path, "/v1/messages");
    assert_eq!(
        to_anthropic["thinking"],
        json!({"type": "enabled", "budget_tokens": 3000})
    );
    assert!(to_anthropic["max_tokens"].as_u64().unwrap() > 3000);
    assert!(to_anthropic.get("temperature").is_none());
    let to_openai = seen[1].json().unwrap();
    assert_eq!(to_openai["reasoning_effort"], "medium");
    // The thinking tool is a switch, never a function the model is offered.
    assert!(to_openai.get("tools").is_none(), "{to_openai}");
}

/// Through the worker: a request on an Anthropic-backed API, JSON and stream, becomes one
/// `api_logs` row each with the provider's tokens and the pricing table's cost for the model.
#[tokio::test(flavor = "multi_thread")]
async fn an_anthropic_backed_request_is_logged_with_tokens_and_cost() {
    let env = Env::new(MockConfig::default()).await;
    let api = api_on(&env, "anthropic").await;
    sqlx::query("UPDATE wrapped_apis SET model = 'claude-3-5-haiku' WHERE id = $1")
        .bind(api.id)
        .execute(&env.db)
        .await
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(wrapx_worker::run(env.settings.clone(), stop.clone()));
    let gw = Gateway::start(&env).await;
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for stream in [false, true] {
        let r = client
            .post(gw.chat_url(&api))
            .bearer_auth(&api.key)
            .json(&chat(stream))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        ids.push(
            r.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .parse::<uuid::Uuid>()
                .unwrap(),
        );
        r.bytes().await.unwrap();
    }
    let pricing =
        wrapx_core::pricing::Pricing::parse(wrapx_core::pricing::DEFAULT_PRICING_TOML).unwrap();
    let lookup = pricing.price("claude-3-5-haiku");
    assert!(!lookup.is_default, "the model is in the pricing table");
    for id in ids {
        let what = format!("the api_logs row of {id}");
        let row = eventually(&what, Duration::from_secs(30), || async {
            let row: Option<(i32, i32, String, String, bool)> = sqlx::query_as(
                "SELECT prompt_tokens, completion_tokens, cost::text, model, stream FROM api_logs WHERE request_id = $1",
            )
            .bind(id)
            .fetch_optional(&env.db)
            .await
            .unwrap();
            row
        })
        .await;
        let (prompt, completion, cost, model, stream) = row;
        assert_eq!(model, "claude-3-5-haiku");
        assert_eq!(prompt, 10, "the provider's input tokens");
        let want = lookup
            .price
            .cost(prompt as u32, completion as u32)
            .to_string();
        let same: bool = sqlx::query_scalar("SELECT $1::numeric = $2::numeric")
            .bind(&cost)
            .bind(&want)
            .fetch_one(&env.db)
            .await
            .unwrap();
        assert!(same, "cost {cost}, priced {want} (stream {stream})");
        assert!(completion > 0, "the provider's output tokens");
    }
    stop.cancel();
    worker.await.unwrap().unwrap();
}
