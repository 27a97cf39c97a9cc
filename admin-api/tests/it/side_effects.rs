//! What leaves the admin API besides answers: cache invalidations on Redis, admin events and
//! test deliveries on RabbitMQ, and what must never leave it: secrets in the database in the
//! clear, in answers, or in log lines.

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::common::{build_everything, expect, spawn, PASSWORD};
use futures::StreamExt;
use lapin::options::BasicGetOptions;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use wrapx_core::{
    amqp,
    cache::{CacheNames, Invalidation},
    events::{Event, EventType, WebhookDelivery},
};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn secrets_are_absent_from_the_database_answers_and_logs() {
    let logs = Captured::default();
    let writer = logs.clone();
    let _ = tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_writer(move || writer.clone())
        .try_init();
    let app = spawn().await;
    let (user_id, access, refresh) = app.account("secret@example.com").await;
    let built = build_everything(&app, &access, &user_id, "s").await;
    let provider_key = format!("{}s", crate::common::PROVIDER_KEY);
    let refreshed = expect(
        StatusCode::OK,
        app.call(
            Method::POST,
            "/auth/refresh",
            None,
            Some(json!({"refresh_token": refresh})),
        )
        .await,
    );
    let access2 = refreshed["access_token"].as_str().unwrap().to_owned();
    let refresh2 = refreshed["refresh_token"].as_str().unwrap().to_owned();
    let secrets = [
        provider_key.as_str(),
        built.key.as_str(),
        built.webhook_secret.as_str(),
        PASSWORD,
        access.as_str(),
        refresh.as_str(),
        access2.as_str(),
        refresh2.as_str(),
    ];

    // The whole database as text.
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert!(tables.len() >= 18);
    let mut dump = String::new();
    for table in tables {
        let rows: Vec<String> = sqlx::query_scalar(&format!(r#"SELECT t::text FROM "{table}" t"#))
            .fetch_all(&app.db)
            .await
            .unwrap();
        dump.push_str(&rows.join("\n"));
    }
    assert!(
        dump.contains(&built.api),
        "the dump is not of the right database"
    );
    for secret in secrets {
        assert!(!dump.contains(secret), "a secret is stored in the clear");
    }
    // The stored ciphertexts do decrypt to the secrets, bound to their rows.
    let keys = wrapx_core::crypto::MasterKeys::from_settings(&app.settings.security).unwrap();
    let (cipher, provider_id, owner): (String, uuid::Uuid, uuid::Uuid) =
        sqlx::query_as("SELECT api_key_ciphertext, id, user_id FROM llm_providers")
            .fetch_one(&app.db)
            .await
            .unwrap();
    let plain = keys
        .decrypt(
            &cipher,
            &wrapx_core::crypto::provider_key_aad(provider_id, owner),
        )
        .unwrap();
    assert_eq!(plain.as_slice(), provider_key.as_bytes());
    let (cipher, hook_id, api_id): (String, uuid::Uuid, uuid::Uuid) =
        sqlx::query_as("SELECT secret_ciphertext, id, wrapped_api_id FROM webhooks")
            .fetch_one(&app.db)
            .await
            .unwrap();
    let plain = keys
        .decrypt(
            &cipher,
            &wrapx_core::crypto::webhook_secret_aad(hook_id, api_id),
        )
        .unwrap();
    assert_eq!(plain.as_slice(), built.webhook_secret.as_bytes());

    // Every read answer.
    let mut answers = String::new();
    for path in [
        "/me".to_owned(),
        "/projects".into(),
        "/providers".into(),
        format!("/providers/{}", built.provider),
        "/wrapped-apis".into(),
        format!("/wrapped-apis/{}/keys", built.api),
        format!("/wrapped-apis/{}/webhooks", built.api),
        format!("/webhooks/{}", built.webhook),
        format!("/wrapped-apis/{}/prompt-config/versions", built.api),
        "/audit-logs?limit=100".into(),
        "/auth/sessions".into(),
        "/tools".into(),
    ] {
        answers.push_str(&expect(StatusCode::OK, app.get(&path, &access2).await).to_string());
    }
    for secret in secrets {
        assert!(!answers.contains(secret), "a secret is in an answer");
    }
    app.shutdown().await;
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logged.contains("wrapx-admin listening"),
        "the logs were not captured"
    );
    for secret in secrets {
        assert!(!logged.contains(secret), "a secret is in the logs");
    }
}

/// Collects invalidation messages until `done` says enough or the deadline passes.
async fn messages_until(
    pubsub: &mut redis::aio::PubSub,
    mut done: impl FnMut(&[Invalidation]) -> bool,
) -> Vec<Invalidation> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut stream = pubsub.on_message();
    while !done(&seen) && Instant::now() < deadline {
        if let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(200), stream.next()).await
        {
            let payload: String = msg.get_payload().unwrap();
            seen.push(serde_json::from_str(&payload).unwrap());
        }
    }
    seen
}

#[tokio::test]
async fn changes_that_affect_the_hot_path_invalidate_the_cache() {
    let app = spawn().await;
    let (user_id, token, _) = app.account("cache@example.com").await;
    let built = build_everything(&app, &token, &user_id, "c").await;
    let api: uuid::Uuid = built.api.parse().unwrap();
    let names = CacheNames::new(app.settings.redis.prefix.clone());
    let client = redis::Client::open(app.settings.redis.url.expose()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .subscribe(names.invalidation_channel())
        .await
        .unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key_hash: String = sqlx::query_scalar("SELECT key_hash FROM api_keys")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let api_msg = Invalidation::WrappedApi { id: api };

    // Records as a gateway would have cached them.
    let key_record = names.key_record(&key_hash);
    let api_record = names.wrapped_api_record(api);
    async fn seed(conn: &mut redis::aio::MultiplexedConnection, records: &[&str]) {
        for r in records {
            redis::cmd("SET")
                .arg(*r)
                .arg("cached")
                .query_async::<()>(conn)
                .await
                .unwrap();
        }
    }
    async fn exists(conn: &mut redis::aio::MultiplexedConnection, k: &str) -> i64 {
        redis::cmd("EXISTS")
            .arg(k)
            .query_async::<i64>(conn)
            .await
            .unwrap()
    }

    let changes: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::PATCH,
            format!("/wrapped-apis/{api}"),
            Some(json!({"is_active": false})),
        ),
        (
            Method::PATCH,
            format!("/wrapped-apis/{api}"),
            Some(json!({"model": "other"})),
        ),
        (
            Method::PUT,
            format!("/wrapped-apis/{api}/prompt-config"),
            Some(json!({"role": "r"})),
        ),
        (
            Method::POST,
            format!("/wrapped-apis/{api}/prompt-config/versions/1/restore"),
            None,
        ),
        (
            Method::PATCH,
            format!("/providers/{}", built.provider),
            Some(json!({"api_key": "sk-rotated-key-1234"})),
        ),
        (
            Method::PATCH,
            format!("/tools/{}", built.tool),
            Some(json!({"tool_config": {"x": 1}})),
        ),
        (
            Method::DELETE,
            format!("/wrapped-apis/{api}/tools/{}", built.tool),
            None,
        ),
        (
            Method::PUT,
            format!("/wrapped-apis/{api}/rate-limit"),
            Some(json!({"limit": 5, "window_seconds": 10})),
        ),
        (
            Method::PUT,
            format!("/wrapped-apis/{api}/routing"),
            Some(json!({"targets": [{"provider_id": built.provider, "model": "m"}]})),
        ),
        (Method::DELETE, format!("/wrapped-apis/{api}/routing"), None),
    ];
    for (method, path, body) in changes {
        seed(&mut conn, &[&key_record, &api_record]).await;
        let (status, answer) = app.call(method.clone(), &path, Some(&token), body).await;
        assert!(status.is_success(), "{method} {path}: {answer}");
        let seen = messages_until(&mut pubsub, |s| s.contains(&api_msg)).await;
        assert!(seen.contains(&api_msg), "{method} {path}: {seen:?}");
        assert_eq!(exists(&mut conn, &api_record).await, 0, "{method} {path}");
        assert_eq!(
            exists(&mut conn, &key_record).await,
            0,
            "{method} {path}: key records go with the API"
        );
    }

    seed(&mut conn, &[&key_record, &api_record]).await;
    expect(
        StatusCode::NO_CONTENT,
        app.call(
            Method::DELETE,
            &format!("/wrapped-apis/{api}/keys/{}", built.key_id),
            Some(&token),
            None,
        )
        .await,
    );
    let key_msg = Invalidation::Key {
        key_hash: key_hash.clone(),
    };
    let seen = messages_until(&mut pubsub, |s| s.contains(&key_msg)).await;
    assert!(seen.contains(&key_msg), "{seen:?}");
    assert_eq!(exists(&mut conn, &key_record).await, 0);

    // Deactivating the user.
    wrapx_admin::create_admin(&app.settings, "root@example.com", "operator password")
        .await
        .unwrap();
    let ops = app.login("root@example.com", "operator password").await.1["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    expect(
        StatusCode::OK,
        app.call(
            Method::PATCH,
            &format!("/admin/users/{user_id}"),
            Some(&ops),
            Some(json!({"is_active": false})),
        )
        .await,
    );
    let user_msg = Invalidation::User {
        id: user_id.parse().unwrap(),
    };
    let seen = messages_until(&mut pubsub, |s| s.contains(&user_msg)).await;
    assert!(seen.contains(&user_msg), "{seen:?}");
    app.shutdown().await;
}

#[tokio::test]
async fn admin_events_and_test_deliveries_reach_the_broker() {
    let app = spawn().await;
    let (user_id, token, _) = app.account("events@example.com").await;
    let built = build_everything(&app, &token, &user_id, "e").await;
    expect(
        StatusCode::NO_CONTENT,
        app.call(
            Method::DELETE,
            &format!("/wrapped-apis/{}/keys/{}", built.api, built.key_id),
            Some(&token),
            None,
        )
        .await,
    );
    let test = expect(
        StatusCode::ACCEPTED,
        app.post(
            &format!("/webhooks/{}/test", built.webhook),
            &token,
            json!(null),
        )
        .await,
    );

    let connection = amqp::connect_url(app.settings.amqp.url.expose(), "test")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    // key.created, config.updated x3 (two PUTs and a restore), key.revoked.
    while events.len() < 5 && Instant::now() < deadline {
        match channel
            .basic_get(amqp::WEBHOOK_EVENTS_QUEUE, BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            Some(message) => events.push(Event::from_json(&message.delivery.data).unwrap()),
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let types: Vec<EventType> = events.iter().map(Event::event_type).collect();
    assert_eq!(
        types
            .iter()
            .filter(|t| **t == EventType::ConfigUpdated)
            .count(),
        3,
        "{types:?}"
    );
    assert!(
        types.contains(&EventType::KeyCreated) && types.contains(&EventType::KeyRevoked),
        "{types:?}"
    );
    for event in &events {
        let Event::Admin(admin) = event else {
            panic!("not an admin event")
        };
        assert_eq!(admin.wrapped_api_id.to_string(), built.api);
        assert!(!admin.data.to_string().contains(&built.key));
    }
    let message = channel
        .basic_get(amqp::DELIVERIES_QUEUE, BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("a test delivery");
    let delivery: WebhookDelivery = serde_json::from_slice(&message.delivery.data).unwrap();
    assert_eq!(delivery.delivery_id, test["delivery_id"].as_str().unwrap());
    assert_eq!(delivery.webhook_id.to_string(), built.webhook);
    assert_eq!(delivery.payload["type"], "webhook.test");
    app.shutdown().await;
}

#[tokio::test]
async fn the_admin_api_keeps_working_when_the_broker_is_down() {
    let mut settings = crate::common::settings().await;
    settings.amqp.url = wrapx_core::secret::Secret::new("amqp://guest:guest@127.0.0.1:1/%2f");
    let app = crate::common::spawn_with(settings).await;
    let (user_id, token, _) = app.account("nobroker@example.com").await;
    let built = build_everything(&app, &token, &user_id, "n").await;
    expect(
        StatusCode::NO_CONTENT,
        app.call(
            Method::DELETE,
            &format!("/wrapped-apis/{}/keys/{}", built.api, built.key_id),
            Some(&token),
            None,
        )
        .await,
    );
    // Only the test delivery, whose point is the broker, says it is unavailable.
    let (status, body) = app
        .post(
            &format!("/webhooks/{}/test", built.webhook),
            &token,
            json!(null),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    app.shutdown().await;
}
