//! Log-writer throughput through the real queue into PostgreSQL: publishes N request events to a
//! fresh vhost (the worker not yet running), then starts the worker and measures rows per
//! second until all N are in `api_logs`, billing included.
//!
//! ```text
//! cargo run --release -p wrapx-worker --example throughput -- [N] [BATCH_SIZE] [PREFETCH]
//! ```
//! Defaults: 100000 events, the configured batch size (500) and prefetch (1000). Needs the
//! local PostgreSQL and RabbitMQ of the tests (and `rabbitmqctl` for the vhost).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use wrapx_core::{
    amqp,
    events::{Event, RequestEvent, RequestOutcome, Usage, UsageSource},
    types::ProviderKind,
};
use wrapx_testkit::backends as testing;
use wrapx_worker::publish::{publish_all, Outgoing};

/// The allocator of the `wrapx-worker` binary, so the example measures the worker as it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);

    let (db_url, pool) = testing::migrated_database().await;
    // THROUGHPUT_AMQP_URL runs on an existing vhost instead of a fresh one (when rabbitmqctl is
    // unavailable); the run refuses to start unless that vhost's queues are empty and unconsumed.
    let shared = std::env::var("THROUGHPUT_AMQP_URL").ok();
    let amqp_url = shared.clone().unwrap_or_else(testing::create_vhost);
    let mut settings = testing::settings(&db_url, &amqp_url, &testing::redis_prefix());
    settings.worker.pricing_file = format!("{}/../config/pricing.toml", env!("CARGO_MANIFEST_DIR"));
    if let Some(b) = args.get(2).and_then(|a| a.parse().ok()) {
        settings.worker.batch_size = b;
    }
    if let Some(p) = args.get(3).and_then(|a| a.parse().ok()) {
        settings.worker.prefetch = p;
    }
    settings.log.level = "warn".into();
    wrapx_core::telemetry::init_tracing(&settings.log);

    // Ten accounts, as the gateway would send them.
    let mut accounts = Vec::new();
    for _ in 0..10 {
        let user = wrapx_testkit::seed::User::new().insert(&pool).await;
        accounts.push((user, Uuid::now_v7(), Uuid::now_v7()));
    }

    let connection = amqp::connect_url(&amqp_url, "throughput").await.unwrap();
    let channel = amqp::confirm_channel(&connection).await.unwrap();
    amqp::declare_topology(&channel, &settings.amqp.webhook_retry_delays_ms)
        .await
        .unwrap();
    let started = Instant::now();
    let mut chunk = Vec::with_capacity(1000);
    for i in 0..n {
        let (user, api, key) = accounts[i % accounts.len()];
        let event = Event::Request(RequestEvent {
            request_id: Uuid::now_v7(),
            occurred_at: Utc::now(),
            key_id: key,
            wrapped_api_id: api,
            user_id: user,
            provider: ProviderKind::Openai,
            model: "gpt-4o-mini".into(),
            status: 200,
            outcome: RequestOutcome::Completed,
            stream: i % 2 == 0,
            latency_ms: 120,
            ttfb_ms: Some(40),
            usage: Usage {
                prompt_tokens: 50,
                completion_tokens: 100,
                reasoning_tokens: 0,
                source: UsageSource::Reported,
            },
            request_data: serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello in one short sentence."}]}),
            response_data: serde_json::json!({"id": "chatcmpl-1", "choices": [{"message": {"role": "assistant", "content": "Hello there!"}}]}),
            error: None,
            config_version: Some(3),
        });
        chunk.push(Outgoing {
            exchange: amqp::EVENTS_EXCHANGE,
            routing_key: event.routing_key().to_owned(),
            message_id: event.id().to_string(),
            body: event.to_json().unwrap(),
        });
        if chunk.len() == 1000 || i + 1 == n {
            publish_all(&channel, &chunk, Duration::from_secs(30))
                .await
                .unwrap();
            chunk.clear();
        }
    }
    println!("published {n} events in {:.2?}", started.elapsed());

    let token = CancellationToken::new();
    let batch_size = settings.worker.batch_size;
    let prefetch = settings.worker.prefetch;
    let worker = tokio::spawn(wrapx_worker::run(settings, token.clone()));
    let started = Instant::now();
    // Progress is read from billing (ten rows, written in the same transaction as the log rows)
    // rather than by counting api_logs: a count every 20 ms scans the growing table and took a
    // fifth of PostgreSQL's time from the worker being measured.
    loop {
        let billed: i64 =
            sqlx::query_scalar("SELECT COALESCE(sum(requests_count), 0)::int8 FROM billing")
                .fetch_one(&pool)
                .await
                .unwrap();
        if billed as usize >= n {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "only {billed} of {n} rows billed after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM api_logs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows as usize, n, "every event is one row");
    let billed: i64 =
        sqlx::query_scalar("SELECT COALESCE(sum(requests_count), 0)::int8 FROM billing")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(billed as usize, n, "billing counts every row once");
    println!(
        "worker wrote {n} api_logs rows in {elapsed:.2?}: {:.0} rows/s (batch_size {batch_size}, prefetch {prefetch})",
        n as f64 / elapsed.as_secs_f64()
    );
    token.cancel();
    worker.await.unwrap().unwrap();
}
