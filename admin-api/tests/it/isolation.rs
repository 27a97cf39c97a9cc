//! The "done when": two accounts each build a complete wrapped API over HTTP, and
//! neither can see or touch the other's; every id-taking route answers 404 to the other
//! account, nested routes included. Then the owner's happy path over every route.

use crate::common::{build_everything, expect, spawn};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn routes_with_ids(
    a: &crate::common::Built,
    b: &crate::common::Built,
) -> Vec<(Method, String, Option<Value>)> {
    let (p, pr, api, t, w, k, s, n) = (
        &a.project,
        &a.provider,
        &a.api,
        &a.tool,
        &a.webhook,
        &a.key_id,
        &a.session,
        &a.notification,
    );
    let body = |v: Value| Some(v);
    vec![
        (Method::GET, format!("/projects/{p}"), None),
        (
            Method::PATCH,
            format!("/projects/{p}"),
            body(json!({"name": "stolen"})),
        ),
        (Method::DELETE, format!("/projects/{p}"), None),
        (Method::GET, format!("/providers/{pr}"), None),
        (
            Method::PATCH,
            format!("/providers/{pr}"),
            body(json!({"api_key": "sk-attacker-0000"})),
        ),
        (Method::DELETE, format!("/providers/{pr}"), None),
        (Method::GET, format!("/wrapped-apis/{api}"), None),
        (
            Method::PATCH,
            format!("/wrapped-apis/{api}"),
            body(json!({"is_active": false})),
        ),
        (Method::DELETE, format!("/wrapped-apis/{api}"), None),
        (Method::GET, format!("/wrapped-apis/{api}/keys"), None),
        (
            Method::POST,
            format!("/wrapped-apis/{api}/keys"),
            body(json!({"key_name": "stolen"})),
        ),
        (
            Method::DELETE,
            format!("/wrapped-apis/{api}/keys/{k}"),
            None,
        ),
        // Another's key under one's own wrapped API.
        (
            Method::DELETE,
            format!("/wrapped-apis/{}/keys/{k}", b.api),
            None,
        ),
        (
            Method::GET,
            format!("/wrapped-apis/{api}/prompt-config"),
            None,
        ),
        (
            Method::PUT,
            format!("/wrapped-apis/{api}/prompt-config"),
            body(json!({"role": "evil"})),
        ),
        (
            Method::GET,
            format!("/wrapped-apis/{api}/prompt-config/versions"),
            None,
        ),
        (
            Method::POST,
            format!("/wrapped-apis/{api}/prompt-config/versions/1/restore"),
            None,
        ),
        (Method::GET, format!("/wrapped-apis/{api}/routing"), None),
        (
            Method::PUT,
            format!("/wrapped-apis/{api}/routing"),
            body(json!({"targets": [{"provider_id": b.provider, "model": "m"}]})),
        ),
        (Method::DELETE, format!("/wrapped-apis/{api}/routing"), None),
        // Routing one's own API to another's provider.
        (
            Method::PUT,
            format!("/wrapped-apis/{}/routing", b.api),
            body(json!({"targets": [{"provider_id": pr, "model": "m"}]})),
        ),
        (Method::GET, format!("/tools/{t}"), None),
        (
            Method::PATCH,
            format!("/tools/{t}"),
            body(json!({"tool_name": "stolen"})),
        ),
        (Method::DELETE, format!("/tools/{t}"), None),
        (Method::GET, format!("/wrapped-apis/{api}/tools"), None),
        (Method::PUT, format!("/wrapped-apis/{api}/tools/{t}"), None),
        (
            Method::DELETE,
            format!("/wrapped-apis/{api}/tools/{t}"),
            None,
        ),
        // Attaching another's tool to one's own API; one's own tool to another's API.
        (
            Method::PUT,
            format!("/wrapped-apis/{}/tools/{t}", b.api),
            None,
        ),
        (
            Method::PUT,
            format!("/wrapped-apis/{api}/tools/{}", b.tool),
            None,
        ),
        (
            Method::DELETE,
            format!("/wrapped-apis/{}/tools/{t}", b.api),
            None,
        ),
        (Method::GET, format!("/wrapped-apis/{api}/webhooks"), None),
        (
            Method::POST,
            format!("/wrapped-apis/{api}/webhooks"),
            body(json!({"url": "http://127.0.0.1:9/x", "events": ["*"]})),
        ),
        (Method::GET, format!("/webhooks/{w}"), None),
        (
            Method::PATCH,
            format!("/webhooks/{w}"),
            body(json!({"url": "http://127.0.0.1:9/evil"})),
        ),
        (Method::DELETE, format!("/webhooks/{w}"), None),
        (Method::POST, format!("/webhooks/{w}/test"), None),
        (Method::GET, format!("/wrapped-apis/{api}/rate-limit"), None),
        (
            Method::PUT,
            format!("/wrapped-apis/{api}/rate-limit"),
            body(json!({"limit": 1, "window_seconds": 1})),
        ),
        (Method::GET, format!("/wrapped-apis/{api}/logs"), None),
        (Method::GET, format!("/wrapped-apis/{api}/usage"), None),
        (Method::GET, format!("/wrapped-apis/{api}/chat"), None),
        (
            Method::POST,
            format!("/wrapped-apis/{api}/chat"),
            body(json!({"message": "hi"})),
        ),
        (Method::GET, format!("/wrapped-apis/{api}/feedback"), None),
        (
            Method::POST,
            format!("/wrapped-apis/{api}/feedback"),
            body(json!({"rating": 1})),
        ),
        (Method::POST, format!("/notifications/{n}/read"), None),
        (Method::DELETE, format!("/auth/sessions/{s}"), None),
        // Pointing one's own resources at another's.
        (
            Method::POST,
            "/wrapped-apis".into(),
            body(json!({"name": "x", "project_id": p, "provider_id": b.provider, "model": "m"})),
        ),
        (
            Method::POST,
            "/wrapped-apis".into(),
            body(json!({"name": "x", "project_id": b.project, "provider_id": pr, "model": "m"})),
        ),
        (
            Method::PATCH,
            format!("/wrapped-apis/{}", b.api),
            body(json!({"provider_id": pr})),
        ),
        (
            Method::PATCH,
            format!("/wrapped-apis/{}", b.api),
            body(json!({"project_id": p})),
        ),
    ]
}

#[tokio::test]
async fn two_accounts_build_everything_and_neither_sees_the_other() {
    let app = spawn().await;
    let (a_id, a_token, _) = app.account("alice@example.com").await;
    let (b_id, b_token, _) = app.account("bob@example.com").await;
    let a = build_everything(&app, &a_token, &a_id, "a").await;
    let b = build_everything(&app, &b_token, &b_id, "b").await;

    // Every route, called by B with A's ids (and A's with B's, mirrored): 404 in the contract shape.
    for (caller, owner, other) in [(&b_token, &a, &b), (&a_token, &b, &a)] {
        for (method, path, body) in routes_with_ids(owner, other) {
            let (status, answer) = app.call(method.clone(), &path, Some(caller), body).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {answer}");
            assert!(
                answer["error"]["code"].is_string() && answer["error"]["message"].is_string(),
                "{method} {path}: {answer}"
            );
        }
    }

    // Lists never mix accounts.
    for (token, own, other) in [(&a_token, &a, &b), (&b_token, &b, &a)] {
        for (list, own_id, other_id) in [
            ("/projects", &own.project, &other.project),
            ("/providers", &own.provider, &other.provider),
            ("/wrapped-apis", &own.api, &other.api),
            ("/tools", &own.tool, &other.tool),
            ("/notifications", &own.notification, &other.notification),
            ("/auth/sessions", &own.session, &other.session),
        ] {
            let page = expect(StatusCode::OK, app.get(list, token).await);
            let ids: Vec<&str> = page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap())
                .collect();
            assert!(ids.contains(&own_id.as_str()), "{list}: {page}");
            assert!(!ids.contains(&other_id.as_str()), "{list} leaks: {page}");
        }
        let audit = expect(
            StatusCode::OK,
            app.get("/audit-logs?limit=100", token).await,
        );
        let text = audit.to_string();
        assert!(
            !text.contains(&other.api) && !text.contains(&other.project),
            "audit leaks"
        );
    }

    // Nothing of A's changed: still there, still active, config still at version 3.
    let api = expect(
        StatusCode::OK,
        app.get(&format!("/wrapped-apis/{}", a.api), &a_token).await,
    );
    assert_eq!(api["is_active"], true);
    let config = expect(
        StatusCode::OK,
        app.get(&format!("/wrapped-apis/{}/prompt-config", a.api), &a_token)
            .await,
    );
    assert_eq!(config["version"], 3);
    assert_eq!(config["role"], "a helpful bot");
    let keys = expect(
        StatusCode::OK,
        app.get(&format!("/wrapped-apis/{}/keys", a.api), &a_token)
            .await,
    );
    assert_eq!(keys["data"].as_array().unwrap().len(), 1);
    assert_eq!(keys["data"][0]["is_active"], true);
    let hooks = expect(
        StatusCode::OK,
        app.get(&format!("/wrapped-apis/{}/webhooks", a.api), &a_token)
            .await,
    );
    assert_eq!(hooks["data"][0]["url"], "http://127.0.0.1:9/hook");
    let tools = expect(
        StatusCode::OK,
        app.get(&format!("/wrapped-apis/{}/tools", a.api), &a_token)
            .await,
    );
    assert_eq!(tools["data"].as_array().unwrap().len(), 1);
    let limit = expect(
        StatusCode::OK,
        app.get(&format!("/wrapped-apis/{}/rate-limit", a.api), &a_token)
            .await,
    );
    assert_eq!(limit["limit"], 100);
    let provider = expect(
        StatusCode::OK,
        app.get(&format!("/providers/{}", a.provider), &a_token)
            .await,
    );
    assert_eq!(provider["api_key_hint"], "def".to_owned() + "a");
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM chat_messages WHERE wrapped_api_id = $1::uuid")
            .bind(&a.api)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(n, 1);
    let sessions = expect(StatusCode::OK, app.get("/auth/sessions", &a_token).await);
    assert_eq!(sessions["data"].as_array().unwrap().len(), 1);
    app.shutdown().await;
}
