//! TLS to providers, against the mock serving HTTPS with a certificate from a test CA: refused
//! (502, a log line naming the host, no plain-HTTP retry) while the CA is not trusted or the
//! certificate names another host; answered, whole and streamed, once
//! `security.extra_ca_file` trusts the CA; a bad `extra_ca_file` stops the gateway at start.

use std::time::Duration;

use serde_json::Value;
use wrapx_core::events::{RequestOutcome, UsageSource};
use wrapx_testkit::{
    mock_llm::MockConfig,
    tls::{Leaf, TestCa},
};

use crate::common::{chat, error_code, request_id, Api, Env, Gateway, PROVIDER_KEY};

/// The mock serving HTTPS with `leaf`, and an API whose provider is at
/// `https://localhost:PORT/v1` (so the gateway sends SNI `localhost`).
async fn https_env(leaf: &Leaf) -> (Env, Api) {
    let env = Env::new(MockConfig {
        tls: Some(leaf.mock_tls()),
        ..MockConfig::default()
    })
    .await;
    assert!(env.mock.base_url().starts_with("https://"));
    let url = format!("https://localhost:{}/v1", env.mock.addr().port());
    let provider = env.provider(&url).await;
    let api = env.api_with(provider, "keep", None).await;
    (env, api)
}

fn extra_ca(ca: &TestCa) -> String {
    ca.ca_file().display().to_string()
}

/// Sends one chat completion; the status and the body's JSON (or `Null` for a stream).
async fn refused(gw: &Gateway, api: &Api) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(gw.chat_url(api))
        .bearer_auth(&api.key)
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    request_id(&r);
    (status, r.json().await.unwrap())
}

/// The gateway's log line that contains `needle`, waiting for it.
async fn log_line(gw: &Gateway, needle: &str) -> String {
    let line = gw
        .process
        .logged(
            &format!("containing {needle:?}"),
            Duration::from_secs(10),
            |l| l.to_string().contains(needle),
        )
        .await;
    line.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_provider_certificate_is_a_502_and_a_clear_log_line() {
    let ca = TestCa::new();
    let (env, api) = https_env(ca.localhost()).await;
    let gw = Gateway::start(&env).await;

    let (status, body) = refused(&gw, &api).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["type"], "upstream_error", "{body}");
    assert_eq!(error_code(&body), "bad_gateway", "{body}");

    let line = log_line(&gw, "provider TLS certificate of localhost is not trusted").await;
    assert!(line.contains("security.extra_ca_file"), "{line}");
    for secret in [PROVIDER_KEY, api.key.as_str()] {
        assert!(!line.contains(secret), "a secret in the log: {line}");
    }
    // No fallback to plain HTTP: the mock got no request at all (a plaintext one would fail its
    // handshake and never reach the router either, but also no second attempt happened).
    assert!(env.mock.requests().is_empty());
    assert_eq!(env.mock.stats().requests, 0);

    let events = env.events(1, Duration::from_secs(10)).await;
    assert_eq!(events[0].status, 502);
    assert_eq!(events[0].outcome, RequestOutcome::UpstreamError);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_trusted_by_the_extra_ca_answers_whole_and_streamed() {
    let ca = TestCa::new();
    let (env, api) = https_env(ca.localhost()).await;
    let ca_file = extra_ca(&ca);
    let gw = Gateway::start_with(&env, &[("WRAPX_SECURITY__EXTRA_CA_FILE", &ca_file)]).await;
    let client = reqwest::Client::new();

    let r = client
        .post(gw.chat_url(&api))
        .bearer_auth(&api.key)
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let whole = request_id(&r);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["choices"][0]["message"]["content"].is_string(),
        "{body}"
    );

    let mut r = client
        .post(gw.chat_url(&api))
        .bearer_auth(&api.key)
        .json(&chat(true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let streamed = request_id(&r);
    let mut text = String::new();
    while let Some(chunk) = r.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert_eq!(text.matches("\"content\":\"").count(), 5, "{text}");

    // Both reached the mock over TLS, with the provider's key.
    let requests = env.mock.requests();
    assert_eq!(requests.len(), 2);

    let events = env.events(2, Duration::from_secs(10)).await;
    assert_eq!(events.len(), 2);
    for (id, stream) in [(whole, false), (streamed, true)] {
        let e = events.iter().find(|e| e.request_id == id).unwrap();
        assert_eq!(
            (e.status, e.outcome, e.stream),
            (200, RequestOutcome::Completed, stream)
        );
        assert_eq!(e.usage.source, UsageSource::Reported, "{e:?}");
        assert_eq!(e.usage.prompt_tokens, 10, "{e:?}");
        assert!(e.usage.completion_tokens >= 5, "{e:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_for_another_host_name_is_a_502() {
    let ca = TestCa::new();
    let (env, api) = https_env(ca.wrong_name()).await;
    // The CA is trusted: only the name is wrong.
    let ca_file = extra_ca(&ca);
    let gw = Gateway::start_with(&env, &[("WRAPX_SECURITY__EXTRA_CA_FILE", &ca_file)]).await;

    let (status, body) = refused(&gw, &api).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["type"], "upstream_error", "{body}");
    log_line(
        &gw,
        "provider TLS certificate of localhost is not valid for that host name",
    )
    .await;
    assert_eq!(env.mock.stats().requests, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_or_unparsable_extra_ca_file_stops_the_gateway_at_start() {
    let ca = TestCa::new();
    let env = Env::new(MockConfig::default()).await;
    let garbage = ca.dir().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let missing = ca.dir().join("missing.pem");
    for path in [missing, garbage] {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wrapx-gateway"));
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.gateway_env())
            .env("WRAPX_GATEWAY__LISTEN", "127.0.0.1:0")
            .env("WRAPX_GATEWAY__METRICS_LISTEN", "127.0.0.1:0")
            .env("WRAPX_SECURITY__EXTRA_CA_FILE", &path)
            .stdin(std::process::Stdio::null());
        let out = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::task::spawn_blocking(move || cmd.output().unwrap()),
        )
        .await
        .expect("the gateway exits at start")
        .unwrap();
        assert!(!out.status.success(), "{path:?}: started");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(said.contains("security.extra_ca_file"), "{path:?}: {said}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fallbacks_work_over_tls_and_a_refused_certificate_moves_the_request_on() {
    let ca = TestCa::new();
    // The test's own mock presents a certificate for another name; a second one is good.
    let (env, api) = https_env(ca.wrong_name()).await;
    let good = wrapx_testkit::mock_llm::spawn(MockConfig {
        tls: Some(ca.localhost().mock_tls()),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let good_url = format!("https://localhost:{}/v1", good.addr().port());
    let good_provider = env.provider(&good_url).await;
    let bad_provider: uuid::Uuid =
        sqlx::query_scalar("SELECT provider_id FROM wrapped_apis WHERE id = $1")
            .bind(api.id)
            .fetch_one(&env.db)
            .await
            .unwrap();
    let routing = serde_json::json!({
        "strategy": "fallback",
        "targets": [
            {"provider_id": bad_provider, "model": "m1", "weight": 1},
            {"provider_id": good_provider, "model": "mock-status-503", "weight": 1},
            {"provider_id": good_provider, "model": "m3", "weight": 1}],
        "retry": {"max_attempts": 3, "on_status": [503]},
        "cooldown": {"failures": 100, "seconds": 30}});
    sqlx::query("UPDATE wrapped_apis SET routing = $1 WHERE id = $2")
        .bind(&routing)
        .bind(api.id)
        .execute(&env.db)
        .await
        .unwrap();
    let ca_file = extra_ca(&ca);
    let gw = Gateway::start_with(&env, &[("WRAPX_SECURITY__EXTRA_CA_FILE", &ca_file)]).await;
    for stream in [false, true] {
        let r = reqwest::Client::new()
            .post(gw.chat_url(&api))
            .bearer_auth(&api.key)
            .json(&chat(stream))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // The refused handshake, the 503 over TLS, then the answer over TLS.
        assert_eq!(r.headers()["x-wrapx-attempts"], "3");
        let text = r.text().await.unwrap();
        if stream {
            assert_eq!(text.matches("data: [DONE]").count(), 1, "{text}");
        }
    }
    assert_eq!(env.mock.stats().requests, 0);
    assert_eq!(good.stats().requests, 4);
}
