//! The contract's shape: bad input of every kind is a 4xx in `{"error":{"code","message"}}`,
//! never a 5xx; body limits; the OpenAPI document lists every route; metrics; slow clients are
//! cut off at the header-read timeout; SIGTERM-style shutdown finishes in-flight requests.

use std::time::Duration;

use crate::common::{build_everything, expect, spawn, spawn_with};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wrapx_testkit::{eventually, process::Process};

/// Every route of the contract, as the spec must list it.
const ROUTES: &[(&str, &str)] = &[
    ("post", "/api/v1/auth/register"),
    ("post", "/api/v1/auth/login"),
    ("post", "/api/v1/auth/refresh"),
    ("post", "/api/v1/auth/logout"),
    ("get", "/api/v1/auth/sessions"),
    ("delete", "/api/v1/auth/sessions/{id}"),
    ("get", "/api/v1/me"),
    ("get", "/api/v1/projects"),
    ("post", "/api/v1/projects"),
    ("get", "/api/v1/projects/{id}"),
    ("patch", "/api/v1/projects/{id}"),
    ("delete", "/api/v1/projects/{id}"),
    ("get", "/api/v1/providers"),
    ("post", "/api/v1/providers"),
    ("get", "/api/v1/providers/{id}"),
    ("patch", "/api/v1/providers/{id}"),
    ("delete", "/api/v1/providers/{id}"),
    ("get", "/api/v1/wrapped-apis"),
    ("post", "/api/v1/wrapped-apis"),
    ("get", "/api/v1/wrapped-apis/{id}"),
    ("patch", "/api/v1/wrapped-apis/{id}"),
    ("delete", "/api/v1/wrapped-apis/{id}"),
    ("get", "/api/v1/wrapped-apis/{id}/keys"),
    ("post", "/api/v1/wrapped-apis/{id}/keys"),
    ("delete", "/api/v1/wrapped-apis/{id}/keys/{key_id}"),
    ("get", "/api/v1/wrapped-apis/{id}/prompt-config"),
    ("put", "/api/v1/wrapped-apis/{id}/prompt-config"),
    ("get", "/api/v1/wrapped-apis/{id}/prompt-config/versions"),
    (
        "post",
        "/api/v1/wrapped-apis/{id}/prompt-config/versions/{version}/restore",
    ),
    ("get", "/api/v1/wrapped-apis/{id}/routing"),
    ("put", "/api/v1/wrapped-apis/{id}/routing"),
    ("delete", "/api/v1/wrapped-apis/{id}/routing"),
    ("get", "/api/v1/tools"),
    ("post", "/api/v1/tools"),
    ("get", "/api/v1/tools/{id}"),
    ("patch", "/api/v1/tools/{id}"),
    ("delete", "/api/v1/tools/{id}"),
    ("get", "/api/v1/wrapped-apis/{id}/tools"),
    ("put", "/api/v1/wrapped-apis/{id}/tools/{tool_id}"),
    ("delete", "/api/v1/wrapped-apis/{id}/tools/{tool_id}"),
    ("get", "/api/v1/wrapped-apis/{id}/webhooks"),
    ("post", "/api/v1/wrapped-apis/{id}/webhooks"),
    ("get", "/api/v1/webhooks/{id}"),
    ("patch", "/api/v1/webhooks/{id}"),
    ("delete", "/api/v1/webhooks/{id}"),
    ("post", "/api/v1/webhooks/{id}/test"),
    ("get", "/api/v1/wrapped-apis/{id}/rate-limit"),
    ("put", "/api/v1/wrapped-apis/{id}/rate-limit"),
    ("get", "/api/v1/wrapped-apis/{id}/logs"),
    ("get", "/api/v1/wrapped-apis/{id}/usage"),
    ("get", "/api/v1/wrapped-apis/{id}/chat"),
    ("post", "/api/v1/wrapped-apis/{id}/chat"),
    ("get", "/api/v1/notifications"),
    ("post", "/api/v1/notifications/{id}/read"),
    ("get", "/api/v1/billing"),
    ("put", "/api/v1/billing/plan"),
    ("get", "/api/v1/audit-logs"),
    ("get", "/api/v1/wrapped-apis/{id}/feedback"),
    ("post", "/api/v1/wrapped-apis/{id}/feedback"),
    ("get", "/api/v1/admin/users"),
    ("patch", "/api/v1/admin/users/{id}"),
];

fn assert_shape(what: &str, status: StatusCode, body: &Value) {
    assert!(status.is_client_error(), "{what}: {status} {body}");
    assert!(
        body["error"]["code"].is_string() && body["error"]["message"].is_string(),
        "{what}: {body}"
    );
}

#[tokio::test]
async fn the_spec_lists_every_route_and_metrics_count_requests() {
    let app = spawn().await;
    let spec: Value = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    for (method, path) in ROUTES {
        assert!(
            spec["paths"][path][method].is_object(),
            "{method} {path} missing from the spec"
        );
    }
    let listed: usize = spec["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_object().unwrap().len())
        .sum();
    assert_eq!(listed, ROUTES.len());
    assert!(spec["components"]["securitySchemes"]["bearer"].is_object());
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("wrapx_admin_requests_total{status=\"2xx\"}"),
        "{metrics}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn bad_input_for_every_body_is_a_4xx_in_the_contract_shape() {
    let app = spawn().await;
    let (user_id, token, _) = app.account("bad@example.com").await;
    let built = build_everything(&app, &token, &user_id, "x").await;
    let api = &built.api;
    let huge = "x".repeat(300_000);
    // (method, path, bodies that must be refused)
    let cases: Vec<(Method, String, Vec<Value>)> = vec![
        (
            Method::POST,
            "/projects".into(),
            vec![
                json!({}),
                json!({"name": 5}),
                json!({"name": ""}),
                json!({"name": "x", "user_id": user_id}),
                json!({"name": huge}),
                json!({"name": "nul\u{0}"}),
                json!([1]),
                json!(null),
            ],
        ),
        (
            Method::PATCH,
            format!("/projects/{}", built.project),
            vec![
                json!({"name": ""}),
                json!({"id": "x"}),
                json!({"description": huge}),
            ],
        ),
        (
            Method::POST,
            "/providers".into(),
            vec![
                json!({"provider_name": "nope", "api_key": "sk-12345678"}),
                json!({"provider_name": "openai_compatible", "api_key": "sk-12345678"}),
                json!({"provider_name": "openai_compatible", "api_key": "sk-12345678", "api_base_url": "ftp://x"}),
                json!({"provider_name": "openai_compatible", "api_key": "sk-12345678", "api_base_url": "http://u:p@host/"}),
                json!({"provider_name": "openai", "api_key": "short"}),
                json!({"provider_name": "openai", "api_key": "sk-12345678", "user_id": user_id}),
            ],
        ),
        (
            Method::PATCH,
            format!("/providers/{}", built.provider),
            vec![json!({"provider_name": "openai"}), json!({"api_key": 1})],
        ),
        (
            Method::POST,
            "/wrapped-apis".into(),
            vec![
                json!({"name": "x", "project_id": "not-a-uuid", "provider_id": built.provider, "model": "m"}),
                json!({"name": "x", "project_id": built.project, "provider_id": built.provider}),
                json!({"name": "x", "project_id": built.project, "provider_id": built.provider, "model": "m", "endpoint_id": "ep_x"}),
                json!({"name": "x", "project_id": built.project, "provider_id": built.provider, "model": "m", "max_tokens_cap": 0}),
                json!({"name": "x", "project_id": built.project, "provider_id": built.provider, "model": "m", "max_tokens_cap": 1e12}),
                json!({"name": "x", "project_id": built.project, "provider_id": built.provider, "model": "m", "system_message_policy": "eat"}),
            ],
        ),
        (
            Method::PATCH,
            format!("/wrapped-apis/{api}"),
            vec![
                json!({"user_id": user_id}),
                json!({"endpoint_id": "ep_aaaaaaaaaaaaaaaaaaaa"}),
                json!({"is_active": "yes"}),
            ],
        ),
        (
            Method::POST,
            format!("/wrapped-apis/{api}/keys"),
            vec![
                json!({}),
                json!({"key_name": "k", "expires_at": "2001-01-01T00:00:00Z"}),
                json!({"key_name": "k", "expires_at": "tomorrow"}),
            ],
        ),
        (
            Method::PUT,
            format!("/wrapped-apis/{api}/prompt-config"),
            vec![
                json!({"colour": "red"}),
                json!({"examples": [{"user": "a"}]}),
                json!({"role": 1}),
                json!({"role": huge}),
            ],
        ),
        (
            Method::PUT,
            format!("/wrapped-apis/{api}/routing"),
            vec![
                json!({}),
                json!({"targets": []}),
                json!({"strategy": "random", "targets": [{"provider_id": built.provider, "model": "m"}]}),
                json!({"targets": [{"provider_id": built.provider, "model": "m", "weight": 0}]}),
                json!({"targets": [{"provider_id": built.provider, "model": "m"}], "retry": {"max_attempts": 1e20}}),
                json!({"targets": [{"provider_id": built.provider, "model": "m"}], "extra": 1}),
                json!({"targets": [{"provider_id": uuid::Uuid::now_v7(), "model": "m"}]}),
                json!(null),
            ],
        ),
        (
            Method::POST,
            "/tools".into(),
            vec![
                json!({"tool_name": "bad name", "tool_type": "function"}),
                json!({"tool_name": "ok", "tool_type": "magic"}),
                json!({"tool_name": "ok", "tool_type": "function", "tool_config": [1]}),
                // PostgreSQL stores no NUL, in text or in jsonb: schemathesis found a 500 here.
                json!({"tool_name": "ok", "tool_type": "function", "tool_config": {"k\u{0}": "v"}}),
            ],
        ),
        (
            Method::PATCH,
            format!("/tools/{}", built.tool),
            vec![json!({"tool_name": null, "tool_config": {"a": ["\u{0}"]}})],
        ),
        (
            Method::POST,
            format!("/wrapped-apis/{api}/webhooks"),
            vec![
                json!({"url": "not a url", "events": ["*"]}),
                json!({"url": "http://127.0.0.1:9/", "events": []}),
                json!({"url": "http://127.0.0.1:9/", "events": ["key.exploded"]}),
                json!({"url": "javascript:alert(1)", "events": ["*"]}),
                json!({"url": format!("http://127.0.0.1:9/{huge}"), "events": ["*"]}),
            ],
        ),
        (
            Method::PATCH,
            format!("/webhooks/{}", built.webhook),
            vec![json!({"secret": "whsec_x"}), json!({"events": ["nope"]})],
        ),
        (
            Method::PUT,
            format!("/wrapped-apis/{api}/rate-limit"),
            vec![
                json!({"limit": 0, "window_seconds": 60}),
                json!({"limit": 1, "window_seconds": 0}),
                json!({"limit": 1, "window_seconds": 90000}),
                json!({"limit": 1e20, "window_seconds": 1}),
                json!({"limit": 1}),
            ],
        ),
        (
            Method::POST,
            format!("/wrapped-apis/{api}/chat"),
            vec![json!({}), json!({"message": ""})],
        ),
        (
            Method::POST,
            format!("/wrapped-apis/{api}/feedback"),
            vec![
                json!({"rating": 0}),
                json!({"rating": 6}),
                json!({"rating": "five"}),
                json!({"rating": 3, "user_id": user_id}),
            ],
        ),
        (
            Method::PUT,
            "/billing/plan".into(),
            vec![
                json!({"plan_type": "platinum"}),
                json!({"plan_type": "pro", "amount": 0}),
            ],
        ),
        (
            Method::POST,
            "/auth/register".into(),
            vec![
                json!({"email": "nope", "password": "long enough pw", "name": "x"}),
                json!({"email": "a@b.co", "password": "short", "name": "x"}),
                json!({"email": "a@b.co", "password": "long enough pw", "name": "x", "is_admin": true}),
            ],
        ),
        (
            Method::POST,
            "/auth/login".into(),
            vec![json!({"email": "a@b.co"})],
        ),
        (
            Method::POST,
            "/auth/refresh".into(),
            vec![json!({}), json!({"refresh_token": 5})],
        ),
    ];
    for (method, path, bodies) in cases {
        for body in bodies {
            let (status, answer) = app
                .call(method.clone(), &path, Some(&token), Some(body.clone()))
                .await;
            let shown: String = body.to_string().chars().take(120).collect();
            assert_shape(&format!("{method} {path} {shown}"), status, &answer);
        }
        // Invalid JSON, and the wrong content type.
        let raw = app
            .client
            .request(method.clone(), app.url(&format!("/api/v1{path}")))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body("{\"name\": ")
            .send()
            .await
            .unwrap();
        let status = raw.status();
        assert_shape(
            &format!("{method} {path} invalid JSON"),
            status,
            &raw.json().await.unwrap(),
        );
        let raw = app
            .client
            .request(method.clone(), app.url(&format!("/api/v1{path}")))
            .bearer_auth(&token)
            .header("content-type", "text/plain")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = raw.status();
        assert_shape(
            &format!("{method} {path} text/plain"),
            status,
            &raw.json().await.unwrap(),
        );
    }
    // Bad path and query parameters, unknown routes, wrong methods.
    for (method, path) in [
        (Method::GET, "/projects/not-a-uuid".to_owned()),
        (Method::GET, "/wrapped-apis/123/keys".into()),
        (
            Method::POST,
            format!("/wrapped-apis/{api}/prompt-config/versions/abc/restore"),
        ),
        (
            Method::POST,
            format!("/wrapped-apis/{api}/prompt-config/versions/99999999999/restore"),
        ),
        (Method::GET, "/projects?limit=0".into()),
        (Method::GET, "/projects?limit=101".into()),
        (Method::GET, "/projects?limit=x".into()),
        (Method::GET, "/projects?cursor=zzz".into()),
        (Method::GET, format!("/wrapped-apis/{api}/logs?status=abc")),
        (
            Method::GET,
            format!("/wrapped-apis/{api}/logs?from=yesterday"),
        ),
        (
            Method::GET,
            format!("/wrapped-apis/{api}/usage?from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z"),
        ),
        (Method::GET, "/no/such/route".into()),
        (Method::PUT, "/projects".into()),
    ] {
        let (status, answer) = app.call(method.clone(), &path, Some(&token), None).await;
        assert_shape(&format!("{method} {path}"), status, &answer);
    }
    // Duplicates and resources in use: 409.
    assert_eq!(
        app.post(
            "/tools",
            &token,
            json!({"tool_name": "lookup_x", "tool_type": "function"})
        )
        .await
        .0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/providers/{}", built.provider),
            Some(&token),
            None
        )
        .await
        .0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/projects/{}", built.project),
            Some(&token),
            None
        )
        .await
        .0,
        StatusCode::CONFLICT
    );
    let again = app
        .call(
            Method::POST,
            "/auth/register",
            None,
            Some(json!({"email": "BAD@example.com", "password": "long enough pw", "name": "x"})),
        )
        .await;
    assert_eq!(again.0, StatusCode::CONFLICT);
    app.shutdown().await;
}

#[tokio::test]
async fn bodies_over_the_limit_answer_413_in_the_contract_shape() {
    let mut settings = crate::common::settings().await;
    settings.admin.max_body_bytes = 4096;
    let app = spawn_with(settings).await;
    let (_, token, _) = app.account("big@example.com").await;
    let big = json!({"name": "x".repeat(10_000)});
    let (status, body) = app.post("/projects", &token, big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"]["code"], "payload_too_large");
    // Chunked, without a content-length: cut off at the limit while reading.
    let stream = futures::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1000])));
    let response = app
        .client
        .post(app.url("/api/v1/projects"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");
    app.shutdown().await;
}

#[tokio::test]
async fn slow_clients_are_cut_off_at_the_header_timeout_and_shutdown_drains() {
    let mut settings = crate::common::settings().await;
    settings.admin.header_read_timeout_ms = 300;
    let app = spawn_with(settings).await;
    let mut stream = tokio::net::TcpStream::connect(app.base.trim_start_matches("http://"))
        .await
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    // The server closes the connection (with or without a 408) well before this deadline.
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was held open");

    // A request in flight when the stop comes still completes; then run_until returns Ok.
    let (_, token, _) = app.account("drain@example.com").await;
    let client = app.client.clone();
    let url = app.url("/api/v1/me");
    let in_flight = tokio::spawn(async move {
        client
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .map(|r| r.status())
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    app.stop.cancel();
    let status = in_flight.await.unwrap();
    if let Ok(status) = status {
        assert_eq!(status, StatusCode::OK);
    }
    tokio::time::timeout(Duration::from_secs(10), app.server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn owner_happy_paths_for_the_remaining_routes() {
    let app = spawn().await;
    let (user_id, token, _) = app.account("happy@example.com").await;
    let b = build_everything(&app, &token, &user_id, "h").await;
    let api = &b.api;
    // Patches.
    let p = expect(
        StatusCode::OK,
        app.call(
            Method::PATCH,
            &format!("/projects/{}", b.project),
            Some(&token),
            Some(json!({"description": "d"})),
        )
        .await,
    );
    assert_eq!(p["description"], "d");
    let pr = expect(
        StatusCode::OK,
        app.call(
            Method::PATCH,
            &format!("/providers/{}", b.provider),
            Some(&token),
            Some(json!({"api_key": "sk-new-key-WXYZ"})),
        )
        .await,
    );
    assert_eq!(pr["api_key_hint"], "WXYZ");
    let w = expect(
        StatusCode::OK,
        app.call(
            Method::PATCH,
            &format!("/wrapped-apis/{api}"),
            Some(&token),
            Some(
                json!({"model": "gpt-4o", "max_tokens_cap": 512, "system_message_policy": "drop"}),
            ),
        )
        .await,
    );
    assert_eq!(
        (
            w["model"].as_str(),
            w["max_tokens_cap"].as_i64(),
            w["system_message_policy"].as_str()
        ),
        (Some("gpt-4o"), Some(512), Some("drop"))
    );
    let t = expect(
        StatusCode::OK,
        app.call(
            Method::PATCH,
            &format!("/tools/{}", b.tool),
            Some(&token),
            Some(json!({"tool_type": "thinking"})),
        )
        .await,
    );
    assert_eq!(t["tool_type"], "thinking");
    expect(
        StatusCode::OK,
        app.get(&format!("/tools/{}", b.tool), &token).await,
    );
    let h = expect(
        StatusCode::OK,
        app.call(
            Method::PATCH,
            &format!("/webhooks/{}", b.webhook),
            Some(&token),
            Some(json!({"events": ["*"], "is_active": false})),
        )
        .await,
    );
    assert_eq!(h["events"], json!(["*"]));
    expect(
        StatusCode::OK,
        app.get(&format!("/webhooks/{}", b.webhook), &token).await,
    );
    let versions = expect(
        StatusCode::OK,
        app.get(
            &format!("/wrapped-apis/{api}/prompt-config/versions?limit=2"),
            &token,
        )
        .await,
    );
    assert_eq!(versions["data"].as_array().unwrap().len(), 2);
    assert_eq!(versions["data"][0]["version"], 3);
    assert_eq!(versions["data"][0]["restored_from"], 1);
    let cursor = versions["next_cursor"].as_str().unwrap();
    let rest = expect(
        StatusCode::OK,
        app.get(
            &format!("/wrapped-apis/{api}/prompt-config/versions?cursor={cursor}"),
            &token,
        )
        .await,
    );
    assert_eq!(rest["data"].as_array().unwrap().len(), 1);
    assert_eq!(rest["next_cursor"], Value::Null);
    // Logs and usage from rows as the worker writes them.
    for (status, tokens) in [(200, 10), (200, 5), (502, 0)] {
        sqlx::query("INSERT INTO api_logs (id, request_id, wrapped_api_id, api_key_id, user_id, provider, model, status, outcome, latency_ms, prompt_tokens, completion_tokens, tokens_used, cost, created_at) \
                     VALUES ($1, $1, $2::uuid, $3::uuid, $4::uuid, 'openai', 'gpt-4o', $5, 'completed', 10, $6, $6, $6 * 2, 0.001, now())")
            .bind(uuid::Uuid::now_v7()).bind(api).bind(&b.key_id).bind(&user_id).bind(status as i16).bind(tokens)
            .execute(&app.db).await.unwrap();
    }
    let logs = expect(
        StatusCode::OK,
        app.get(&format!("/wrapped-apis/{api}/logs?status=502"), &token)
            .await,
    );
    assert_eq!(logs["data"].as_array().unwrap().len(), 1);
    let logs = expect(
        StatusCode::OK,
        app.get(&format!("/wrapped-apis/{api}/logs?limit=2"), &token)
            .await,
    );
    assert!(logs["next_cursor"].is_string());
    let usage = expect(
        StatusCode::OK,
        app.get(&format!("/wrapped-apis/{api}/usage"), &token).await,
    );
    assert_eq!(usage["data"][0]["requests"], 3);
    assert_eq!(usage["data"][0]["tokens"], 30);
    assert_eq!(usage["data"][0]["cost"], "0.00300000");
    // Chat, feedback, notifications, billing, audit.
    let chat = expect(
        StatusCode::OK,
        app.get(&format!("/wrapped-apis/{api}/chat"), &token).await,
    );
    assert_eq!(chat["data"][0]["message"], "hello there");
    assert_eq!(chat["data"][0]["response"], Value::Null);
    let fb = expect(
        StatusCode::OK,
        app.get(&format!("/wrapped-apis/{api}/feedback"), &token)
            .await,
    );
    assert_eq!(fb["data"][0]["rating"], 5);
    let n = expect(
        StatusCode::OK,
        app.post(
            &format!("/notifications/{}/read", b.notification),
            &token,
            json!(null),
        )
        .await,
    );
    assert_eq!(n["is_read"], true);
    let billing = expect(StatusCode::OK, app.get("/billing", &token).await);
    assert_eq!(billing["plan_type"], "free");
    let billing = expect(
        StatusCode::OK,
        app.call(
            Method::PUT,
            "/billing/plan",
            Some(&token),
            Some(json!({"plan_type": "pro"})),
        )
        .await,
    );
    assert_eq!(billing["plan_type"], "pro");
    assert_eq!(
        expect(StatusCode::OK, app.get("/billing", &token).await)["plan_type"],
        "pro"
    );
    // Removals, each audited.
    expect(
        StatusCode::NO_CONTENT,
        app.call(
            Method::DELETE,
            &format!("/wrapped-apis/{api}/tools/{}", b.tool),
            Some(&token),
            None,
        )
        .await,
    );
    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/wrapped-apis/{api}/tools/{}", b.tool),
            Some(&token),
            None
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    expect(
        StatusCode::NO_CONTENT,
        app.call(
            Method::DELETE,
            &format!("/tools/{}", b.tool),
            Some(&token),
            None,
        )
        .await,
    );
    expect(
        StatusCode::NO_CONTENT,
        app.call(
            Method::DELETE,
            &format!("/webhooks/{}", b.webhook),
            Some(&token),
            None,
        )
        .await,
    );
    expect(
        StatusCode::NO_CONTENT,
        app.call(
            Method::DELETE,
            &format!("/wrapped-apis/{api}/keys/{}", b.key_id),
            Some(&token),
            None,
        )
        .await,
    );
    let keys = expect(
        StatusCode::OK,
        app.get(&format!("/wrapped-apis/{api}/keys"), &token).await,
    );
    assert_eq!(keys["data"][0]["is_active"], false);
    assert!(keys["data"][0]["revoked_at"].is_string());
    expect(
        StatusCode::NO_CONTENT,
        app.call(
            Method::DELETE,
            &format!("/wrapped-apis/{api}"),
            Some(&token),
            None,
        )
        .await,
    );
    expect(
        StatusCode::NO_CONTENT,
        app.call(
            Method::DELETE,
            &format!("/projects/{}", b.project),
            Some(&token),
            None,
        )
        .await,
    );
    expect(
        StatusCode::NO_CONTENT,
        app.call(
            Method::DELETE,
            &format!("/providers/{}", b.provider),
            Some(&token),
            None,
        )
        .await,
    );
    let audit = expect(
        StatusCode::OK,
        app.get("/audit-logs?limit=100", &token).await,
    );
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    for expected in [
        "user.registered",
        "session.created",
        "project.created",
        "provider.created",
        "wrapped_api.created",
        "prompt_config.updated",
        "prompt_config.restored",
        "tool.created",
        "tool.attached",
        "webhook.created",
        "rate_limit.updated",
        "key.created",
        "chat_message.created",
        "feedback.created",
        "project.updated",
        "provider.updated",
        "wrapped_api.updated",
        "tool.updated",
        "webhook.updated",
        "notification.read",
        "billing.plan_changed",
        "tool.detached",
        "tool.deleted",
        "webhook.deleted",
        "key.revoked",
        "wrapped_api.deleted",
        "project.deleted",
        "provider.deleted",
    ] {
        assert!(
            actions.contains(&expected),
            "no audit row for {expected}: {actions:?}"
        );
    }
    let row = &audit["data"][0];
    assert_eq!(row["ip_address"], "127.0.0.1");
    // Audit rows cannot be edited, even in the database.
    assert!(sqlx::query("UPDATE audit_logs SET action = 'x'")
        .execute(&app.db)
        .await
        .is_err());
    app.shutdown().await;
}

#[tokio::test]
async fn concurrent_prompt_config_writes_get_distinct_gapless_versions() {
    let app = spawn().await;
    let (user_id, token, _) = app.account("versions@example.com").await;
    let b = build_everything(&app, &token, &user_id, "v").await;
    let path = format!("/wrapped-apis/{}/prompt-config", b.api);
    let writes = (0..8).map(|i| {
        app.call(
            Method::PUT,
            &path,
            Some(&token),
            Some(json!({"role": format!("role {i}")})),
        )
    });
    let results = futures::future::join_all(writes).await;
    let mut versions: Vec<i64> = results
        .iter()
        .map(|(s, v)| {
            assert_eq!(*s, StatusCode::OK, "{v}");
            v["version"].as_i64().unwrap()
        })
        .collect();
    versions.sort_unstable();
    // build_everything made versions 1 to 3.
    assert_eq!(versions, (4..=11).collect::<Vec<_>>());
    let current = expect(StatusCode::OK, app.get(&path, &token).await);
    assert_eq!(current["version"], 11);
    app.shutdown().await;
}

#[tokio::test]
async fn the_binary_serves_and_exits_0_on_sigterm() {
    let settings = crate::common::settings().await;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wrapx-admin"));
    cmd.arg("serve")
        .env("WRAPX_DATABASE__URL", settings.database.url.expose())
        .env("WRAPX_AMQP__URL", settings.amqp.url.expose())
        .env("WRAPX_REDIS__PREFIX", &settings.redis.prefix)
        .env("WRAPX_ADMIN__LISTEN", "127.0.0.1:0");
    let mut admin = Process::spawn(cmd);
    let addr = admin
        .logged_addr("wrapx-admin listening", "listen", Duration::from_secs(20))
        .await;
    let client = reqwest::Client::new();
    let r = eventually("the binary answering", Duration::from_secs(20), || async {
        client
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .ok()
    })
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    admin.sigterm();
    let status = admin.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");
}

/// Known traffic shows up with exact counts under the contract's metric name.
#[tokio::test]
async fn request_metrics_count_known_traffic_exactly() {
    let app = spawn().await;
    let scrape = || async {
        let page = app
            .client
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        page.lines()
            .find_map(|l| l.strip_prefix("wrapx_admin_requests_total{status=\"4xx\"} "))
            .map_or(0.0, |v| v.trim().parse::<f64>().unwrap())
    };
    let before = scrape().await;
    for _ in 0..3 {
        let r = app
            .client
            .get(app.url("/api/v1/projects"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    // Counted as each answer is made; give the last one a moment to be counted.
    let counted = eventually("3 answers counted", Duration::from_secs(2), || async {
        let counted = scrape().await - before;
        (counted >= 3.0).then_some(counted)
    })
    .await;
    assert_eq!(counted, 3.0);
    app.shutdown().await;
}

/// The admin API's metric of the contract is on the page from the start, every status class
/// at zero: a `rate()` or an alert sees zeros rather than no data. The first scrape is the
/// first request, counted only once answered.
#[tokio::test]
async fn the_contract_metric_exists_from_the_start_at_zero() {
    let app = spawn().await;
    let page = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for status in ["2xx", "4xx", "5xx"] {
        let series = format!("wrapx_admin_requests_total{{status=\"{status}\"}} ");
        let value = page
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .unwrap_or_else(|| panic!("{series} missing from:\n{page}"));
        assert_eq!(value.trim(), "0", "{page}");
    }
    app.shutdown().await;
}
