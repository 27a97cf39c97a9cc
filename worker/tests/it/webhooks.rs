//! Webhook deliveries against a real HTTP receiver: Standard Webhooks signatures checked by the
//! official Python library, retries through the delay tiers with the same id, the final
//! notification and dead letter, 410 Gone, and the SSRF policy.

use std::time::Duration;

use crate::common::*;
use wrapx_core::{
    amqp,
    events::{AdminEvent, Event, EventType, RequestOutcome, WebhookDelivery},
};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_verify_with_the_standard_webhooks_library() {
    let env = env().await;
    let account = account(&env.pool).await;
    let receiver = Receiver::start(200).await;
    let (webhook_id, secret) = webhook(
        &env.pool,
        &env.settings,
        &account,
        &receiver.url(),
        &["request.completed", "key.created"],
    )
    .await;
    let worker = env.start().await;
    let (_conn, channel) = publisher(&env.amqp_url).await;

    let mut failed = request(&account, "gpt-4o-mini", 1, 0);
    failed.outcome = RequestOutcome::Timeout;
    failed.status = 504;
    publish(&channel, &Event::Request(failed)).await;
    let completed = request(&account, "gpt-4o-mini", 11, 22);
    publish(&channel, &Event::Request(completed.clone())).await;
    let key_created = AdminEvent {
        event_id: uuid::Uuid::now_v7(),
        occurred_at: chrono::Utc::now(),
        event_type: EventType::KeyCreated,
        user_id: account.user_id,
        wrapped_api_id: account.api_id,
        data: serde_json::json!({"key_id": account.key_id, "key_name": "prod"}),
    };
    publish(&channel, &Event::Admin(key_created)).await;
    // What `POST /webhooks/{id}/test` publishes.
    let test = WebhookDelivery {
        delivery_id: WebhookDelivery::new_id(),
        webhook_id,
        event_type: "webhook.test".into(),
        payload: serde_json::json!({"type": "webhook.test", "timestamp": chrono::Utc::now(), "data": {}}),
        attempt: 0,
    };
    publish_raw(
        &channel,
        amqp::DELIVERIES_EXCHANGE,
        amqp::DELIVERY_ROUTING_KEY,
        &serde_json::to_vec(&test).unwrap(),
    )
    .await;

    let got = receiver.wait_for(3, WAIT).await;
    let mut types: Vec<String> = got
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_owned())
        .collect();
    types.sort();
    assert_eq!(
        types,
        ["key.created", "request.completed", "webhook.test"],
        "request.failed is not subscribed"
    );

    for r in &got {
        assert!(r.id.starts_with("msg_"));
        assert!(r.signature.starts_with("v1,"));
        assert!(
            verify_with_python(&secret, &r.id, &r.timestamp, &r.signature, &r.body),
            "{r:?}"
        );
        // A tampered body, another id or another secret do not verify.
        let mut tampered = r.body.clone();
        tampered.push(b' ');
        assert!(!verify_with_python(
            &secret,
            &r.id,
            &r.timestamp,
            &r.signature,
            &tampered
        ));
        assert!(!verify_with_python(
            &secret,
            "msg_other",
            &r.timestamp,
            &r.signature,
            &r.body
        ));
        assert!(!verify_with_python(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            &r.id,
            &r.timestamp,
            &r.signature,
            &r.body
        ));
    }
    let request = got
        .iter()
        .find(|r| r.json()["type"] == "request.completed")
        .unwrap()
        .json();
    assert_eq!(
        request["data"]["request_id"],
        completed.request_id.to_string()
    );
    assert_eq!(request["data"]["usage"]["total_tokens"], 33);
    assert!(request["timestamp"].is_string());
    assert!(
        got.iter().any(|r| r.id == test.delivery_id),
        "the test delivery keeps its id"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_is_retried_with_the_same_id_then_dead_lettered_and_notified() {
    let env = env().await;
    let account = account(&env.pool).await;
    let receiver = Receiver::start(500).await;
    let (webhook_id, secret) =
        webhook(&env.pool, &env.settings, &account, &receiver.url(), &["*"]).await;
    let worker = env.start().await;
    let (_conn, channel) = publisher(&env.amqp_url).await;
    publish(
        &channel,
        &Event::Request(request(&account, "gpt-4o-mini", 1, 1)),
    )
    .await;

    // The first try and one per tier (200 ms, 400 ms).
    let got = receiver.wait_for(3, WAIT).await;
    assert!(
        got.iter().all(|r| r.id == got[0].id),
        "the same webhook-id on every try"
    );
    assert!(got.iter().all(|r| verify_with_python(
        &secret,
        &r.id,
        &r.timestamp,
        &r.signature,
        &r.body
    )));
    assert!(
        got[1].at - got[0].at >= Duration::from_millis(180),
        "{:?}",
        got[1].at - got[0].at
    );
    assert!(
        got[2].at - got[1].at >= Duration::from_millis(380),
        "{:?}",
        got[2].at - got[1].at
    );

    let dedup = format!("webhook_failed:{}", got[0].id);
    wait_count(&env.pool, &format!("SELECT count(*) FROM notifications WHERE type = 'webhook_failed' AND dedup_key = '{dedup}'"), 1, WAIT).await;
    let dead = eventually("the delivery reaching wrapx.dead", WAIT, || async {
        let dead = dead_letters(&channel).await;
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].1, amqp::DELIVERIES_QUEUE);
    let delivery: WebhookDelivery = serde_json::from_slice(&dead[0].0).unwrap();
    assert_eq!(delivery.delivery_id, got[0].id);
    assert_eq!(delivery.webhook_id, webhook_id);
    assert_eq!(delivery.attempt, 2);
    worker.stop().await;
    assert_eq!(receiver.all().len(), 3, "no try after the last tier");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_webhook() {
    let env = env().await;
    let account = account(&env.pool).await;
    let receiver = Receiver::start(410).await;
    let (webhook_id, _) =
        webhook(&env.pool, &env.settings, &account, &receiver.url(), &["*"]).await;
    let worker = env.start().await;
    let (_conn, channel) = publisher(&env.amqp_url).await;
    publish(
        &channel,
        &Event::Request(request(&account, "gpt-4o-mini", 1, 1)),
    )
    .await;

    wait_count(&env.pool, &format!("SELECT count(*) FROM webhooks WHERE id = '{webhook_id}' AND NOT is_active AND disabled_reason IS NOT NULL"), 1, WAIT).await;
    wait_count(
        &env.pool,
        "SELECT count(*) FROM notifications WHERE type = 'webhook_disabled'",
        1,
        WAIT,
    )
    .await;
    // Later events go nowhere.
    let marker = request(&account, "gpt-4o-mini", 1, 1);
    publish(&channel, &Event::Request(marker.clone())).await;
    wait_count(
        &env.pool,
        &format!(
            "SELECT count(*) FROM api_logs WHERE request_id = '{}'",
            marker.request_id
        ),
        1,
        WAIT,
    )
    .await;
    worker.stop().await;
    assert_eq!(receiver.all().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_and_loopback_destinations_are_refused_when_loopback_is_not_allowed() {
    let mut env = env().await;
    env.settings.security.allow_loopback = false;
    let account = account(&env.pool).await;
    let receiver = Receiver::start(200).await;
    // A name resolving to loopback, a literal loopback address, and a private address.
    webhook(
        &env.pool,
        &env.settings,
        &account,
        &format!("http://localhost:{}/hook", receiver.addr.port()),
        &["*"],
    )
    .await;
    webhook(&env.pool, &env.settings, &account, &receiver.url(), &["*"]).await;
    webhook(
        &env.pool,
        &env.settings,
        &account,
        "http://[::ffff:10.0.0.1]/hook",
        &["*"],
    )
    .await;
    let worker = env.start().await;
    let (_conn, channel) = publisher(&env.amqp_url).await;
    publish(
        &channel,
        &Event::Request(request(&account, "gpt-4o-mini", 1, 1)),
    )
    .await;

    wait_count(
        &env.pool,
        "SELECT count(*) FROM notifications WHERE type = 'webhook_refused'",
        3,
        WAIT,
    )
    .await;
    worker.stop().await;
    assert!(receiver.all().is_empty(), "nothing reached the receiver");
}
