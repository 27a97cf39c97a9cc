//! `wrapx_gateway_events_spooled` follows the spool (alone in its binary: the metrics
//! recorder is global to the process).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use wrapx_core::events::{AdminEvent, Event, EventType};
use wrapx_gateway::events::EventPublisher;
use wrapx_testkit::{backends, net::ClosedPort};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spooled_gauge_counts_events_on_disk() {
    let metrics = wrapx_core::telemetry::prometheus(&[]).unwrap();
    // A port nothing listens on: the broker is unreachable.
    let closed = ClosedPort::new();
    let spool = tempfile::tempdir().unwrap();
    let url = format!("amqp://guest:guest@{}/%2f", closed.addr);
    let mut settings = backends::settings("postgres://unused@127.0.0.1/unused", &url, "unused:");
    settings.gateway.spool_dir = spool.path().display().to_string();
    let shutdown = CancellationToken::new();
    let (publisher, task) = EventPublisher::start(&settings, shutdown.clone())
        .await
        .unwrap();

    for _ in 0..120 {
        publisher.publish(Event::Admin(AdminEvent {
            event_id: Uuid::now_v7(),
            occurred_at: Utc::now(),
            event_type: EventType::KeyCreated,
            user_id: Uuid::now_v7(),
            wrapped_api_id: Uuid::now_v7(),
            data: serde_json::json!({"key_name": "ci"}),
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics.render();
        if publisher.spooled() == 120
            && text
                .lines()
                .any(|l| l == "wrapx_gateway_events_spooled 120")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gauge not at 120: {:?}",
            text.lines().find(|l| l.contains("spooled"))
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!publisher.broker_connected());
    shutdown.cancel();
    task.join().await;
}
