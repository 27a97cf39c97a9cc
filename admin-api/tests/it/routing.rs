//! A wrapped API's routing over HTTP: the effective routing, each refusal of a bad body, the
//! isolation of accounts, and what a change does besides its answer (audit row, config version,
//! cache invalidation), restores of versions before and after a routing, and providers that a
//! routing uses.

use crate::common::{expect, spawn, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use wrapx_core::cache::CacheNames;

/// One account's wrapped API on its first provider, and a second provider to route to.
struct Setup {
    token: String,
    api: String,
    primary: String,
    second: String,
}

async fn provider(app: &TestApp, token: &str, tag: &str) -> String {
    let p = expect(
        StatusCode::CREATED,
        app.post(
            "/providers",
            token,
            json!({"provider_name": "openai", "api_key": format!("sk-routing-key-{tag}")}),
        )
        .await,
    );
    p["id"].as_str().unwrap().to_owned()
}

async fn setup(app: &TestApp, email: &str) -> Setup {
    let (_, token, _) = app.account(email).await;
    let project = expect(
        StatusCode::CREATED,
        app.post("/projects", &token, json!({"name": "p"})).await,
    );
    let primary = provider(app, &token, "primary").await;
    let second = provider(app, &token, "second").await;
    let api = expect(
        StatusCode::CREATED,
        app.post(
            "/wrapped-apis",
            &token,
            json!({"name": "api", "project_id": project["id"], "provider_id": primary, "model": "gpt-4o-mini"}),
        )
        .await,
    );
    Setup {
        token,
        api: api["id"].as_str().unwrap().to_owned(),
        primary,
        second,
    }
}

/// A routing body that falls back from the primary provider to the second one.
fn two_targets(s: &Setup) -> Value {
    json!({
        "strategy": "weighted",
        "targets": [
            {"provider_id": s.primary, "model": "gpt-4o-mini", "weight": 3},
            {"provider_id": s.second, "model": "gpt-4o", "weight": 1}
        ],
        "retry": {"max_attempts": 4, "on_status": [503, 429]},
        "cooldown": {"failures": 2, "seconds": 10}
    })
}

async fn call(
    app: &TestApp,
    s: &Setup,
    method: Method,
    body: Option<Value>,
) -> (StatusCode, Value) {
    app.call(
        method,
        &format!("/wrapped-apis/{}/routing", s.api),
        Some(&s.token),
        body,
    )
    .await
}

/// The snapshots of the API's versions, oldest first.
async fn snapshots(app: &TestApp, api: &str) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT config_snapshot FROM config_versions WHERE wrapped_api_id = $1::uuid ORDER BY version",
    )
    .bind(api)
    .fetch_all(&app.db)
    .await
    .unwrap()
}

async fn stored_routing(app: &TestApp, api: &str) -> Option<Value> {
    sqlx::query_scalar("SELECT routing FROM wrapped_apis WHERE id = $1::uuid")
        .bind(api)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

fn single(s: &Setup) -> Value {
    json!({
        "strategy": "fallback",
        "targets": [{"provider_id": s.primary, "model": "gpt-4o-mini", "weight": 1}],
        "retry": {"max_attempts": 1, "on_status": [429, 500, 502, 503, 504]},
        "cooldown": {"failures": 3, "seconds": 30}
    })
}

#[tokio::test]
async fn get_answers_the_api_itself_until_a_routing_is_put_and_after_it_is_deleted() {
    let app = spawn().await;
    let s = setup(&app, "routing-get@example.com").await;
    assert_eq!(
        expect(StatusCode::OK, call(&app, &s, Method::GET, None).await),
        single(&s)
    );

    let put = expect(
        StatusCode::OK,
        call(&app, &s, Method::PUT, Some(two_targets(&s))).await,
    );
    let want = json!({
        "strategy": "weighted",
        "targets": [
            {"provider_id": s.primary, "model": "gpt-4o-mini", "weight": 3},
            {"provider_id": s.second, "model": "gpt-4o", "weight": 1}
        ],
        "retry": {"max_attempts": 4, "on_status": [429, 503]},
        "cooldown": {"failures": 2, "seconds": 10}
    });
    assert_eq!(put, want);
    assert_eq!(
        expect(StatusCode::OK, call(&app, &s, Method::GET, None).await),
        want
    );
    assert_eq!(stored_routing(&app, &s.api).await, Some(want));

    // Defaults fill what a body leaves out.
    let minimal = expect(
        StatusCode::OK,
        call(
            &app,
            &s,
            Method::PUT,
            Some(json!({"targets": [{"provider_id": s.second, "model": "m"}]})),
        )
        .await,
    );
    assert_eq!(
        minimal,
        json!({
            "strategy": "fallback",
            "targets": [{"provider_id": s.second, "model": "m", "weight": 1}],
            "retry": {"max_attempts": 3, "on_status": [429, 500, 502, 503, 504]},
            "cooldown": {"failures": 3, "seconds": 30}
        })
    );

    let deleted = expect(StatusCode::OK, call(&app, &s, Method::DELETE, None).await);
    assert_eq!(deleted, single(&s));
    assert_eq!(
        expect(StatusCode::OK, call(&app, &s, Method::GET, None).await),
        single(&s)
    );
    assert_eq!(stored_routing(&app, &s.api).await, None);
    app.shutdown().await;
}

#[tokio::test]
async fn each_invalid_routing_is_a_422_naming_the_mistake() {
    let app = spawn().await;
    let s = setup(&app, "routing-422@example.com").await;
    let t = json!([{"provider_id": s.primary, "model": "m"}]);
    let target = |weight: i64| json!([{"provider_id": s.primary, "model": "m", "weight": weight}]);
    for (body, needle) in [
        (json!({"strategy": "random", "targets": t}), "strategy"),
        (json!({"targets": []}), "at least one"),
        (json!({"targets": target(0)}), "targets[0].weight"),
        (json!({"targets": target(-2)}), "targets[0].weight"),
        (
            json!({"targets": t, "retry": {"max_attempts": 0}}),
            "retry.max_attempts",
        ),
        (
            json!({"targets": t, "retry": {"max_attempts": 11}}),
            "retry.max_attempts",
        ),
        (
            json!({"targets": t, "retry": {"on_status": [429, 399]}}),
            "retry.on_status",
        ),
        (
            json!({"targets": t, "retry": {"on_status": [600]}}),
            "retry.on_status",
        ),
        (json!({"targets": t, "colour": "red"}), "unknown field"),
        (
            json!({"targets": [{"provider_id": s.primary, "model": "m", "extra": 1}]}),
            "unknown field",
        ),
        (json!({"targets": t, "strategy": 5}), "invalid routing"),
        (json!({"targets": "all"}), "invalid routing"),
        (json!({}), "invalid routing"),
        (json!([1]), "invalid routing"),
        (
            json!({"targets": [{"provider_id": "not-a-uuid", "model": "m"}]}),
            "invalid routing",
        ),
    ] {
        let (status, answer) = call(&app, &s, Method::PUT, Some(body.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "validation_failed", "{body}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{body}: {message}");
    }
    // Nothing was stored or versioned.
    assert_eq!(stored_routing(&app, &s.api).await, None);
    assert!(snapshots(&app, &s.api).await.is_empty());
    app.shutdown().await;
}

#[tokio::test]
async fn another_accounts_provider_or_api_is_404() {
    let app = spawn().await;
    let a = setup(&app, "routing-a@example.com").await;
    let b = setup(&app, "routing-b@example.com").await;
    // A's API routed to B's provider, or to one that does not exist.
    for provider in [b.second.clone(), uuid::Uuid::now_v7().to_string()] {
        let body = json!({"targets": [
            {"provider_id": a.primary, "model": "m"},
            {"provider_id": provider, "model": "m"}
        ]});
        let (status, answer) = call(&app, &a, Method::PUT, Some(body)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
        assert_eq!(answer["error"]["code"], "not_found");
        assert_eq!(answer["error"]["message"], "provider not found");
    }
    // B on A's API, with B's own providers.
    let as_b = Setup {
        token: b.token.clone(),
        api: a.api.clone(),
        primary: b.primary.clone(),
        second: b.second.clone(),
    };
    for (method, body) in [
        (Method::GET, None),
        (Method::PUT, Some(two_targets(&as_b))),
        (Method::DELETE, None),
    ] {
        let (status, answer) = call(&app, &as_b, method.clone(), body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method}: {answer}");
        assert_eq!(answer["error"]["message"], "wrapped API not found");
    }
    assert_eq!(stored_routing(&app, &a.api).await, None);
    assert!(snapshots(&app, &a.api).await.is_empty());
    app.shutdown().await;
}

#[tokio::test]
async fn a_routing_change_is_audited_versioned_and_drops_the_cached_record() {
    let app = spawn().await;
    let s = setup(&app, "routing-side@example.com").await;
    let names = CacheNames::new(app.settings.redis.prefix.clone());
    let record = names.wrapped_api_record(s.api.parse().unwrap());
    let client = redis::Client::open(app.settings.redis.url.expose()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();

    for (method, body, action) in [
        (Method::PUT, Some(two_targets(&s)), "routing.updated"),
        (Method::DELETE, None, "routing.deleted"),
    ] {
        redis::cmd("SET")
            .arg(&record)
            .arg("cached")
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
        let answer = expect(StatusCode::OK, call(&app, &s, method.clone(), body).await);
        let exists: i64 = redis::cmd("EXISTS")
            .arg(&record)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(exists, 0, "{method}: the gateway's record is dropped");

        let (details,): (Value,) = sqlx::query_as(
            "SELECT details FROM audit_logs WHERE action = $1 AND resource_id = $2::uuid",
        )
        .bind(action)
        .bind(&s.api)
        .fetch_one(&app.db)
        .await
        .unwrap();
        assert_eq!(
            details["fields"],
            json!(["strategy", "targets", "retry", "cooldown"])
        );
        assert!(!details.to_string().contains("sk-routing-key"));

        let last = snapshots(&app, &s.api).await.pop().unwrap();
        // The stored routing after a PUT (which is what it answers), none after a DELETE.
        let want = if method == Method::PUT {
            answer
        } else {
            json!(null)
        };
        assert_eq!(last["routing"], want, "{method}");
        // The prompt part of the snapshot is the (empty) prompt config.
        assert_eq!(last["role"], "");
        assert_eq!(last["examples"], json!([]));
    }
    // Two versions, and the prompt config made for them.
    let config = expect(
        StatusCode::OK,
        app.get(&format!("/wrapped-apis/{}/prompt-config", s.api), &s.token)
            .await,
    );
    assert_eq!(config["version"], 2);
    let versions = expect(
        StatusCode::OK,
        app.get(
            &format!("/wrapped-apis/{}/prompt-config/versions", s.api),
            &s.token,
        )
        .await,
    );
    assert_eq!(versions["data"][0]["version"], 2);
    assert_eq!(versions["data"][0]["config"]["routing"], json!(null));
    assert_eq!(
        versions["data"][1]["config"]["routing"]["strategy"],
        "weighted"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn versions_carry_the_routing_and_a_restore_brings_it_back() {
    let app = spawn().await;
    let s = setup(&app, "routing-versions@example.com").await;
    let prompt = format!("/wrapped-apis/{}/prompt-config", s.api);
    let restore = |v: i32| format!("/wrapped-apis/{}/prompt-config/versions/{v}/restore", s.api);

    // v1: a prompt, no routing.
    let v1 = expect(
        StatusCode::OK,
        app.call(
            Method::PUT,
            &prompt,
            Some(&s.token),
            Some(json!({"role": "first"})),
        )
        .await,
    );
    assert_eq!(v1["version"], 1);
    // v2: the routing.
    let routing = expect(
        StatusCode::OK,
        call(&app, &s, Method::PUT, Some(two_targets(&s))).await,
    );
    // v3: a prompt change keeps the routing.
    let v3 = expect(
        StatusCode::OK,
        app.call(
            Method::PUT,
            &prompt,
            Some(&s.token),
            Some(json!({"role": "third"})),
        )
        .await,
    );
    assert_eq!(v3["version"], 3);
    let snaps = snapshots(&app, &s.api).await;
    assert_eq!(snaps.len(), 3);
    assert_eq!(snaps[0]["routing"], json!(null));
    assert_eq!(snaps[1]["routing"], routing);
    assert_eq!(
        snaps[1]["role"], "first",
        "a routing change keeps the prompt"
    );
    assert_eq!(snaps[2]["routing"], routing);
    assert_eq!(snaps[2]["role"], "third");
    assert_eq!(
        expect(StatusCode::OK, call(&app, &s, Method::GET, None).await),
        routing
    );

    // v4: restoring v1 clears the routing.
    let v4 = expect(
        StatusCode::OK,
        app.post(&restore(1), &s.token, json!(null)).await,
    );
    assert_eq!(v4["version"], 4);
    assert_eq!(v4["role"], "first");
    assert_eq!(stored_routing(&app, &s.api).await, None);
    assert_eq!(
        expect(StatusCode::OK, call(&app, &s, Method::GET, None).await),
        single(&s)
    );
    // v5: restoring v2 brings it back, with v2's prompt.
    let v5 = expect(
        StatusCode::OK,
        app.post(&restore(2), &s.token, json!(null)).await,
    );
    assert_eq!(v5["version"], 5);
    assert_eq!(v5["role"], "first");
    assert_eq!(
        expect(StatusCode::OK, call(&app, &s, Method::GET, None).await),
        routing
    );
    let snaps = snapshots(&app, &s.api).await;
    assert_eq!(snaps[3]["routing"], json!(null));
    assert_eq!(snaps[4]["routing"], routing);

    // A snapshot from before routing existed has no "routing" key: restoring it clears it.
    sqlx::query(
        "UPDATE config_versions SET config_snapshot = config_snapshot - 'routing' \
         WHERE wrapped_api_id = $1::uuid AND version = 1",
    )
    .bind(&s.api)
    .execute(&app.db)
    .await
    .unwrap();
    let v6 = expect(
        StatusCode::OK,
        app.post(&restore(1), &s.token, json!(null)).await,
    );
    assert_eq!(v6["version"], 6);
    assert_eq!(stored_routing(&app, &s.api).await, None);
    let audit: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_logs WHERE action = 'prompt_config.restored' AND details->'fields' ? 'routing'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(audit, 3);
    app.shutdown().await;
}

#[tokio::test]
async fn restoring_a_routing_whose_provider_is_gone_is_409() {
    let app = spawn().await;
    let s = setup(&app, "routing-gone@example.com").await;
    expect(
        StatusCode::OK,
        call(&app, &s, Method::PUT, Some(two_targets(&s))).await,
    );
    expect(StatusCode::OK, call(&app, &s, Method::DELETE, None).await);
    expect(
        StatusCode::NO_CONTENT,
        app.call(
            Method::DELETE,
            &format!("/providers/{}", s.second),
            Some(&s.token),
            None,
        )
        .await,
    );
    let (status, answer) = app
        .post(
            &format!("/wrapped-apis/{}/prompt-config/versions/1/restore", s.api),
            &s.token,
            json!(null),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["code"], "conflict");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains(&s.second), "{message}");
    // Neither the routing nor the versions changed.
    assert_eq!(stored_routing(&app, &s.api).await, None);
    assert_eq!(snapshots(&app, &s.api).await.len(), 2);
    app.shutdown().await;
}

#[tokio::test]
async fn a_provider_used_only_as_a_routing_target_cannot_be_deleted() {
    let app = spawn().await;
    let s = setup(&app, "routing-delete@example.com").await;
    expect(
        StatusCode::OK,
        call(&app, &s, Method::PUT, Some(two_targets(&s))).await,
    );
    let path = format!("/providers/{}", s.second);
    let (status, answer) = app.call(Method::DELETE, &path, Some(&s.token), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(
        answer["error"]["message"],
        "the provider is still used by wrapped APIs"
    );
    expect(StatusCode::OK, app.get(&path, &s.token).await);
    // Without the routing it goes.
    expect(StatusCode::OK, call(&app, &s, Method::DELETE, None).await);
    expect(
        StatusCode::NO_CONTENT,
        app.call(Method::DELETE, &path, Some(&s.token), None).await,
    );
    app.shutdown().await;
}

#[tokio::test]
async fn updating_a_provider_drops_the_records_of_the_apis_routed_to_it() {
    let app = spawn().await;
    let s = setup(&app, "routing-rotate@example.com").await;
    expect(
        StatusCode::OK,
        call(&app, &s, Method::PUT, Some(two_targets(&s))).await,
    );
    let names = CacheNames::new(app.settings.redis.prefix.clone());
    let record = names.wrapped_api_record(s.api.parse().unwrap());
    let client = redis::Client::open(app.settings.redis.url.expose()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("SET")
        .arg(&record)
        .arg("cached")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    expect(
        StatusCode::OK,
        app.call(
            Method::PATCH,
            &format!("/providers/{}", s.second),
            Some(&s.token),
            Some(json!({"api_key": "sk-rotated-routing-key"})),
        )
        .await,
    );
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&record)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 0, "the routed API's record is dropped");
    app.shutdown().await;
}
