//! The event publisher against a real RabbitMQ, each test on its own vhost: delivery with
//! confirms, outages (through a TCP forwarder the test switches off and on), unroutable
//! publishes, shutdown flushes and the replay of a spool left by an earlier run.
use std::{
    collections::HashSet,
    path::Path,
    time::{Duration, Instant},
};

use chrono::Utc;
use futures::StreamExt;
use lapin::{
    options::{
        BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    },
    types::FieldTable,
    Channel,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use wrapx_core::{
    amqp::{self, LOGS_QUEUE, WEBHOOK_EVENTS_QUEUE},
    config::Settings,
    events::{AdminEvent, Event, EventType, RequestEvent, RequestOutcome, Usage},
    types::ProviderKind,
};
use wrapx_gateway::events::EventPublisher;
use wrapx_testkit::{backends, eventually_true};

use crate::common::forwarder::Forwarder;

fn settings(amqp_url: &str, spool: &Path) -> Settings {
    let mut s = backends::settings(
        "postgres://unused@127.0.0.1/unused",
        amqp_url,
        &backends::redis_prefix(),
    );
    s.gateway.spool_dir = spool.display().to_string();
    s.amqp.publish_timeout_ms = 3000;
    s.gateway.shutdown_grace_ms = 10_000;
    s
}

fn event(i: usize) -> Event {
    let (outcome, status) = match i % 3 {
        0 => (RequestOutcome::Completed, 200),
        1 => (RequestOutcome::UpstreamError, 502),
        _ => (RequestOutcome::RateLimited, 429),
    };
    Event::Request(RequestEvent {
        request_id: Uuid::now_v7(),
        occurred_at: Utc::now(),
        key_id: Uuid::now_v7(),
        wrapped_api_id: Uuid::now_v7(),
        user_id: Uuid::now_v7(),
        provider: ProviderKind::Openai,
        model: "gpt-4o-mini".into(),
        status,
        outcome,
        stream: i.is_multiple_of(2),
        latency_ms: 12,
        ttfb_ms: Some(3),
        usage: Usage::default(),
        request_data: serde_json::json!({ "i": i, "messages": [{"role": "user", "content": "hi"}] }),
        response_data: serde_json::Value::Null,
        error: None,
        config_version: Some(1),
    })
}

async fn test_channel(url: &str) -> Channel {
    let connection = amqp::connect_url(url, "test").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    // The connection lives as long as the channel needs it.
    std::mem::forget(connection);
    channel
}

async fn queue_len(channel: &Channel, queue: &str) -> u32 {
    channel
        .queue_declare(
            queue,
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count()
}

/// What `take` read: every event (its id, its line, its message's delivery mode), and how
/// many messages carried them.
struct Taken {
    events: Vec<(String, Vec<u8>, u8)>,
    messages: usize,
}

/// Takes messages off the queue until they held `count` events (the publisher packs several
/// to a message, one per line).
async fn take(channel: &Channel, queue: &str, count: usize) -> Taken {
    channel
        .basic_qos(1000, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            queue,
            &Uuid::now_v7().to_string(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut taken = Taken {
        events: Vec::new(),
        messages: 0,
    };
    while taken.events.len() < count {
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("a message")
            .unwrap()
            .unwrap();
        taken.messages += 1;
        let mode = delivery.properties.delivery_mode().unwrap_or(0);
        for line in wrapx_core::events::lines(&delivery.data) {
            let id = Event::from_json(line).unwrap().id().to_string();
            taken.events.push((id, line.to_vec(), mode));
        }
    }
    channel
        .basic_cancel(consumer.tag().as_str(), BasicCancelOptions::default())
        .await
        .unwrap();
    taken
}

/// Asserts the queue holds exactly these events, once each, with their ids and bodies;
/// returns how many messages carried them.
async fn assert_exactly(channel: &Channel, events: &[Event]) -> usize {
    let taken = take(channel, LOGS_QUEUE, events.len()).await;
    let got = taken.events;
    assert_eq!(got.len(), events.len(), "events on {LOGS_QUEUE}");
    assert_eq!(
        queue_len(channel, LOGS_QUEUE).await,
        0,
        "no more messages on {LOGS_QUEUE}"
    );
    let ids: HashSet<&str> = got.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(ids.len(), events.len(), "duplicate events");
    let by_id: std::collections::HashMap<String, &Event> =
        events.iter().map(|e| (e.id().to_string(), e)).collect();
    for (id, body, mode) in &got {
        let event = by_id
            .get(id)
            .unwrap_or_else(|| panic!("unexpected event id {id}"));
        assert_eq!(body, &event.to_json().unwrap(), "body of {id}");
        assert_eq!(*mode, 2, "persistent");
    }
    taken.messages
}

fn segment_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".jsonl")
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delivers_every_event_once_with_its_id_and_body_packed_into_few_messages() {
    let vhost = backends::create_vhost();
    let spool = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let (publisher, task) =
        EventPublisher::start(&settings(&vhost, spool.path()), shutdown.clone())
            .await
            .unwrap();
    eventually_true("connected", Duration::from_secs(10), || async {
        publisher.broker_connected()
    })
    .await;

    let events: Vec<Event> = (0..3000).map(event).collect();
    for e in &events {
        publisher.publish(e.clone());
    }
    let t = Instant::now();
    eventually_true("all confirmed", Duration::from_secs(20), || async {
        publisher.stats().confirmed == 3000
    })
    .await;
    eprintln!("TIMING confirmed 3000 in {:?}", t.elapsed());
    let stats = publisher.stats();
    assert_eq!((stats.spooled, stats.unroutable, stats.dropped), (0, 0, 0));

    let channel = test_channel(&vhost).await;
    let messages = assert_exactly(&channel, &events).await;
    // Published faster than one confirm round trip each, they share messages.
    assert!(
        messages * 4 <= events.len(),
        "{messages} messages for {} events: not packed",
        events.len()
    );
    shutdown.cancel();
    task.join().await;
    assert_eq!(segment_files(spool.path()), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spools_while_the_broker_is_away_and_replays_each_event_once() {
    let vhost = backends::create_vhost();
    let forwarder = Forwarder::start(false).await;
    let spool = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let (publisher, task) = EventPublisher::start(
        &settings(&forwarder.url(&vhost), spool.path()),
        shutdown.clone(),
    )
    .await
    .unwrap();

    // Down from the start: publishing returns at once and everything lands on disk.
    let first: Vec<Event> = (0..500).map(event).collect();
    let started = Instant::now();
    for e in &first {
        publisher.publish(e.clone());
    }
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "publish waited: {:?}",
        started.elapsed()
    );
    eventually_true("all spooled", Duration::from_secs(10), || async {
        publisher.spooled() == 500
    })
    .await;
    assert!(!publisher.broker_connected());
    assert_eq!(publisher.stats().confirmed, 0);
    assert!(segment_files(spool.path()) >= 1);

    // Back: every spooled event is replayed, exactly once.
    forwarder.set(true);
    eventually_true("replayed", Duration::from_secs(30), || async {
        let s = publisher.stats();
        s.spooled == 0 && s.confirmed == 500
    })
    .await;
    let channel = test_channel(&vhost).await;
    assert_exactly(&channel, &first).await;

    // A live session cut: the publisher notices, spools, reconnects and replays.
    forwarder.set(false);
    eventually_true("disconnected", Duration::from_secs(10), || async {
        !publisher.broker_connected()
    })
    .await;
    let second: Vec<Event> = (0..300).map(event).collect();
    for e in &second {
        publisher.publish(e.clone());
    }
    eventually_true("spooled again", Duration::from_secs(10), || async {
        publisher.spooled() == 300
    })
    .await;
    forwarder.set(true);
    eventually_true("replayed again", Duration::from_secs(30), || async {
        let s = publisher.stats();
        s.spooled == 0 && s.confirmed == 800
    })
    .await;
    assert!(publisher.broker_connected());
    assert_exactly(&channel, &second).await;
    assert_eq!(publisher.stats().dropped, 0);

    shutdown.cancel();
    task.join().await;
    assert_eq!(segment_files(spool.path()), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unroutable_event_is_not_taken_as_delivered() {
    let vhost = backends::create_vhost();
    let spool = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let s = settings(&vhost, spool.path());
    let (publisher, task) = EventPublisher::start(&s, shutdown.clone()).await.unwrap();
    eventually_true("connected", Duration::from_secs(10), || async {
        publisher.broker_connected()
    })
    .await;

    // Every queue the events exchange routes to is gone: the broker returns each message.
    let channel = test_channel(&vhost).await;
    for queue in [LOGS_QUEUE, WEBHOOK_EVENTS_QUEUE] {
        channel
            .queue_delete(queue, QueueDeleteOptions::default())
            .await
            .unwrap();
    }
    let events: Vec<Event> = (0..50).map(event).collect();
    for e in &events {
        publisher.publish(e.clone());
    }
    eventually_true("returned and spooled", Duration::from_secs(10), || async {
        let s = publisher.stats();
        s.unroutable >= 50 && s.spooled == 50
    })
    .await;
    assert_eq!(publisher.stats().confirmed, 0);

    // The queues come back: the spooled events are replayed and delivered once.
    amqp::declare_topology(&channel, &s.amqp.webhook_retry_delays_ms)
        .await
        .unwrap();
    eventually_true("delivered", Duration::from_secs(30), || async {
        let s = publisher.stats();
        s.spooled == 0 && s.confirmed == 50
    })
    .await;
    assert_exactly(&channel, &events).await;
    shutdown.cancel();
    task.join().await;
}

/// A key event that only `wrapx.webhook-events` takes (`#`), never `wrapx.logs`.
fn key_event() -> Event {
    Event::Admin(AdminEvent {
        event_id: Uuid::now_v7(),
        occurred_at: Utc::now(),
        event_type: EventType::KeyCreated,
        user_id: Uuid::now_v7(),
        wrapped_api_id: Uuid::now_v7(),
        data: serde_json::json!({ "key_id": Uuid::now_v7() }),
    })
}

/// Routed and unroutable events interleaved in one pipelined batch: each is settled by its own
/// fate, not by whichever confirm the broker's return happened to ride on. (lapin hands a
/// return to the next confirm an ack completes, in no set order.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_a_mixed_batch_only_the_unroutable_events_are_spooled() {
    let vhost = backends::create_vhost();
    let spool = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let s = settings(&vhost, spool.path());
    let (publisher, task) = EventPublisher::start(&s, shutdown.clone()).await.unwrap();
    eventually_true("connected", Duration::from_secs(10), || async {
        publisher.broker_connected()
    })
    .await;
    // After the publisher declared the topology on connecting.
    let channel = test_channel(&vhost).await;
    channel
        .queue_delete(WEBHOOK_EVENTS_QUEUE, QueueDeleteOptions::default())
        .await
        .unwrap();

    let routed: Vec<Event> = (0..40).map(event).collect();
    let unroutable: Vec<Event> = (0..40).map(|_| key_event()).collect();
    for (r, u) in routed.iter().zip(&unroutable) {
        publisher.publish(r.clone());
        publisher.publish(u.clone());
    }
    eventually_true("settled", Duration::from_secs(10), || async {
        let s = publisher.stats();
        s.confirmed == 40 && s.spooled == 40 && s.unroutable >= 40
    })
    .await;
    // Exactly the request events reached the logs queue, each once.
    assert_exactly(&channel, &routed).await;

    // The queue comes back: only the key events are replayed, each once.
    amqp::declare_topology(&channel, &s.amqp.webhook_retry_delays_ms)
        .await
        .unwrap();
    eventually_true("replayed", Duration::from_secs(30), || async {
        let s = publisher.stats();
        s.spooled == 0 && s.confirmed == 80
    })
    .await;
    assert_eq!(queue_len(&channel, LOGS_QUEUE).await, 0);
    let got = take(&channel, WEBHOOK_EVENTS_QUEUE, 40).await;
    let ids: HashSet<String> = got.events.into_iter().map(|(id, _, _)| id).collect();
    let expected: HashSet<String> = unroutable.iter().map(|e| e.id().to_string()).collect();
    assert_eq!(ids, expected);
    assert_eq!(queue_len(&channel, WEBHOOK_EVENTS_QUEUE).await, 0);
    shutdown.cancel();
    task.join().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_flushes_what_memory_holds_to_the_broker() {
    let vhost = backends::create_vhost();
    let spool = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let (publisher, task) =
        EventPublisher::start(&settings(&vhost, spool.path()), shutdown.clone())
            .await
            .unwrap();
    eventually_true("connected", Duration::from_secs(10), || async {
        publisher.broker_connected()
    })
    .await;

    let events: Vec<Event> = (0..5000).map(event).collect();
    for e in &events {
        publisher.publish(e.clone());
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), task.join())
        .await
        .expect("join within the grace period");
    let stats = publisher.stats();
    assert_eq!((stats.confirmed, stats.spooled), (5000, 0));
    assert!(!publisher.broker_connected());
    assert_exactly(&test_channel(&vhost).await, &events).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_spool_left_by_an_earlier_run_is_replayed_at_start() {
    let vhost = backends::create_vhost();
    let forwarder = Forwarder::start(false).await;
    let spool = tempfile::tempdir().unwrap();

    // First run: no broker; shutdown puts everything on disk.
    let shutdown = CancellationToken::new();
    let (publisher, task) = EventPublisher::start(
        &settings(&forwarder.url(&vhost), spool.path()),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let events: Vec<Event> = (0..400).map(event).collect();
    for e in &events {
        publisher.publish(e.clone());
    }
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), task.join())
        .await
        .expect("join");
    assert_eq!(publisher.spooled(), 400);
    assert!(segment_files(spool.path()) >= 1);
    drop(publisher);

    // Second run, broker reachable: the leftovers are replayed, once each, and deleted.
    let shutdown = CancellationToken::new();
    let (publisher, task) =
        EventPublisher::start(&settings(&vhost, spool.path()), shutdown.clone())
            .await
            .unwrap();
    assert_eq!(publisher.spooled(), 400, "leftovers counted at start");
    eventually_true("replayed", Duration::from_secs(30), || async {
        let s = publisher.stats();
        s.spooled == 0 && s.confirmed == 400
    })
    .await;
    assert_exactly(&test_channel(&vhost).await, &events).await;
    eventually_true("segments deleted", Duration::from_secs(5), || async {
        segment_files(spool.path()) == 0
    })
    .await;
    shutdown.cancel();
    task.join().await;
}
