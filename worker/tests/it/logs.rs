//! The log writer against real RabbitMQ and PostgreSQL: exact rows with tokens and cost,
//! idempotent redelivery, poison messages, billing, quotas and rate-limit counters, and
//! competing workers.

use std::time::Duration;

use crate::common::*;
use rust_decimal::Decimal;
use wrapx_core::{
    amqp,
    events::{Event, RequestEvent, RequestOutcome},
    pricing::Pricing,
};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_events_become_n_rows_with_tokens_and_cost_and_redelivery_adds_nothing() {
    let env = env().await;
    let account = account(&env.pool).await;
    let worker = env.start().await;
    let (_conn, channel) = publisher(&env.amqp_url).await;
    let pricing = Pricing::load(std::path::Path::new(&pricing_file())).unwrap();

    let models = ["gpt-4o-mini", "gpt-4o-2024-08-06", "some-unknown-model"];
    let mut events = Vec::new();
    for i in 0..60u32 {
        let mut e = request(&account, models[i as usize % 3], 100 + i, 10 * i);
        if i % 10 == 9 {
            e.outcome = RequestOutcome::UpstreamError;
            e.status = 502;
            e.error = Some("upstream said 500".into());
        }
        events.push(e);
    }
    for e in &events {
        publish(&channel, &Event::Request(e.clone())).await;
    }
    wait_count(&env.pool, "SELECT count(*) FROM api_logs", 60, WAIT).await;

    let mut expected_cost = Decimal::ZERO;
    let mut expected_tokens = 0i64;
    for e in &events {
        let (prompt, completion, used, cost, status, outcome, created_at): (i32, i32, i32, Decimal, i16, String, chrono::DateTime<chrono::Utc>) =
            sqlx::query_as(
                "SELECT prompt_tokens, completion_tokens, tokens_used, cost, status, outcome, created_at
                 FROM api_logs WHERE request_id = $1",
            )
            .bind(e.request_id)
            .fetch_one(&env.pool)
            .await
            .unwrap();
        let want = pricing
            .price(&e.model)
            .price
            .cost(e.usage.prompt_tokens, e.usage.completion_tokens);
        assert_eq!(prompt as u32, e.usage.prompt_tokens);
        assert_eq!(completion as u32, e.usage.completion_tokens);
        assert_eq!(used as u64, e.usage.total());
        assert_eq!(cost, want, "cost of {}", e.model);
        assert!(cost > Decimal::ZERO || e.usage.total() == 0);
        assert_eq!(status as u16, e.status);
        assert_eq!(outcome, e.outcome.as_str());
        assert_eq!(
            created_at.timestamp_micros(),
            e.occurred_at.timestamp_micros()
        );
        expected_cost += want;
        expected_tokens += e.usage.total() as i64;
    }

    let billing = || async {
        sqlx::query_as::<_, (Decimal, i64, i64, String, Option<i64>)>(
            "SELECT amount, requests_count, tokens_count, plan_type, monthly_quota_requests FROM billing WHERE user_id = $1",
        )
        .bind(account.user_id)
        .fetch_all(&env.pool)
        .await
        .unwrap()
    };
    let rows = billing().await;
    assert_eq!(rows.len(), 1, "one billing row for the period");
    assert_eq!(rows[0].0, expected_cost);
    assert_eq!(rows[0].1, 60);
    assert_eq!(rows[0].2, expected_tokens);
    assert_eq!(rows[0].3, "free");
    assert_eq!(rows[0].4, Some(10_000));

    // The gateway's publisher retried, or the broker redelivered: the same events again, and
    // one new event as a marker that they have all been handled.
    for e in &events {
        publish(&channel, &Event::Request(e.clone())).await;
    }
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
    // The marker was published last, on the same channel, into the same queue: once it is in,
    // the duplicates before it have been handled.
    assert_eq!(scalar(&env.pool, "SELECT count(*) FROM api_logs").await, 61);
    let marker_cost = pricing.price("gpt-4o-mini").price.cost(1, 1);
    let rows = billing().await;
    assert_eq!(
        rows[0].0,
        expected_cost + marker_cost,
        "billing amount unchanged by the duplicates"
    );
    assert_eq!(rows[0].1, 61);
    assert_eq!(rows[0].2, expected_tokens + 2);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_and_the_next_event_lands() {
    let env = env().await;
    let account = account(&env.pool).await;
    let worker = env.start().await;
    let (_conn, channel) = publisher(&env.amqp_url).await;

    publish_raw(
        &channel,
        amqp::EVENTS_EXCHANGE,
        "request.completed",
        b"{not json",
    )
    .await;
    publish_raw(
        &channel,
        amqp::EVENTS_EXCHANGE,
        "request.completed",
        br#"{"schema":"request.v9","request_id":"x"}"#,
    )
    .await;
    let mut bad_status = request(&account, "gpt-4o-mini", 1, 1);
    bad_status.status = 42;
    publish(&channel, &Event::Request(bad_status.clone())).await;
    let good = request(&account, "gpt-4o-mini", 3, 4);
    publish(&channel, &Event::Request(good.clone())).await;

    wait_count(
        &env.pool,
        &format!(
            "SELECT count(*) FROM api_logs WHERE request_id = '{}'",
            good.request_id
        ),
        1,
        WAIT,
    )
    .await;
    assert_eq!(scalar(&env.pool, "SELECT count(*) FROM api_logs").await, 1);

    // Each poison message reached wrapx.dead from wrapx.logs, with its x-death record. (The
    // webhook fan-out sees every event too and dead-letters the two unparseable ones itself.)
    let dead = dead_from_logs(&channel, 3).await;
    let from_logs: Vec<&Vec<u8>> = dead
        .iter()
        .filter(|(_, q)| q == amqp::LOGS_QUEUE)
        .map(|(b, _)| b)
        .collect();
    assert_eq!(from_logs.len(), 3, "{dead:?}");
    assert!(from_logs.iter().any(|b| b.as_slice() == b"{not json"));
    worker.stop().await;
}

/// Makes this test's database refuse rows of one model (a constraint, as a later migration
/// might add) and returns an event of that model.
async fn refused_event(env: &TestEnv, account: &Account) -> RequestEvent {
    sqlx::query(
        "ALTER TABLE api_logs ADD CONSTRAINT no_refused_model CHECK (model <> 'refused-model')",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    let mut refused = request(account, "gpt-4o-mini", 1, 1);
    refused.model = "refused-model".into();
    refused
}

/// Reads `wrapx.dead` until at least `n` messages dead-lettered from `wrapx.logs` are in hand.
async fn dead_from_logs(channel: &lapin::Channel, n: usize) -> Vec<(Vec<u8>, String)> {
    let dead = std::sync::Mutex::new(Vec::new());
    eventually(
        &format!("{n} messages dead-lettered from {}", amqp::LOGS_QUEUE),
        WAIT,
        || async {
            let more = dead_letters(channel).await;
            let mut dead = dead.lock().unwrap();
            dead.extend(more);
            let from_logs = dead.iter().filter(|(_, q)| q == amqp::LOGS_QUEUE).count();
            (from_logs >= n).then(|| dead.clone())
        },
    )
    .await
}

/// A batch PostgreSQL refuses as data (here a constraint this test adds to its own database,
/// as a later migration might) is written again one event at a time: the refused event alone
/// is dead-lettered, every other event has its row, and billing counts only those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_as_data_is_split_and_only_the_refused_event_dead_lettered() {
    let env = env().await;
    let account = account(&env.pool).await;
    let refused = refused_event(&env, &account).await;
    let (_conn, channel) = publisher(&env.amqp_url).await;
    // Published before the worker starts, so they arrive as one batch.
    for i in 0..20 {
        if i == 7 {
            publish(&channel, &Event::Request(refused.clone())).await;
        }
        publish(
            &channel,
            &Event::Request(request(&account, "gpt-4o-mini", 2, 3)),
        )
        .await;
    }
    let worker = env.start().await;

    wait_count(&env.pool, "SELECT count(*) FROM api_logs", 20, WAIT).await;
    let mut dead = dead_from_logs(&channel, 1).await;
    worker.stop().await;
    dead.extend(dead_letters(&channel).await);
    let from_logs: Vec<_> = dead.iter().filter(|(_, q)| q == amqp::LOGS_QUEUE).collect();
    assert_eq!(from_logs.len(), 1, "{dead:?}");
    let body: serde_json::Value = serde_json::from_slice(&from_logs[0].0).unwrap();
    assert_eq!(body["request_id"], refused.request_id.to_string());
    assert_eq!(scalar(&env.pool, "SELECT count(*) FROM api_logs").await, 20);
    assert_eq!(
        scalar(
            &env.pool,
            "SELECT COALESCE(sum(requests_count), 0)::int8 FROM billing"
        )
        .await,
        20
    );
}

/// The gateway packs events into messages, one per line: every event of a pack is written,
/// and a poison line or an event the database refuses is dead-lettered alone, with the queue
/// and reason in its headers, while the rest of its message lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packed_message_lands_whole_but_for_its_poison_and_refused_events() {
    let env = env().await;
    let account = account(&env.pool).await;
    let refused = refused_event(&env, &account).await;
    let (_conn, channel) = publisher(&env.amqp_url).await;
    let pack = |events: &[Event], poison: Option<&[u8]>| {
        let mut lines: Vec<Vec<u8>> = events.iter().map(|e| e.to_json().unwrap()).collect();
        if let Some(p) = poison {
            lines.insert(1, p.to_vec());
        }
        lines.join(&b'\n')
    };
    let first: Vec<Event> = (0..10)
        .map(|_| Event::Request(request(&account, "gpt-4o-mini", 2, 3)))
        .collect();
    let mut second: Vec<Event> = (0..10)
        .map(|_| Event::Request(request(&account, "gpt-4o-mini", 2, 3)))
        .collect();
    second.insert(4, Event::Request(refused.clone()));
    publish_raw(
        &channel,
        amqp::EVENTS_EXCHANGE,
        "request.completed",
        &pack(&first, Some(b"{not json")),
    )
    .await;
    publish_raw(
        &channel,
        amqp::EVENTS_EXCHANGE,
        "request.completed",
        &pack(&second, None),
    )
    .await;
    let worker = env.start().await;

    wait_count(&env.pool, "SELECT count(*) FROM api_logs", 20, WAIT).await;
    let mut dead = dead_from_logs(&channel, 2).await;
    // Both messages are settled: nothing waits in the queue, nothing comes back.
    worker.stop().await;
    assert_eq!(scalar(&env.pool, "SELECT count(*) FROM api_logs").await, 20);
    dead.extend(dead_letters(&channel).await);
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(dead.iter().all(|(_, q)| q == amqp::LOGS_QUEUE), "{dead:?}");
    assert!(
        dead.iter().any(|(body, _)| body == b"{not json"),
        "{dead:?}"
    );
    let refused_body = Event::Request(refused.clone()).to_json().unwrap();
    assert!(
        dead.iter().any(|(body, _)| *body == refused_body),
        "{dead:?}"
    );
    let depth = channel
        .queue_declare(
            amqp::LOGS_QUEUE,
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count();
    assert_eq!(depth, 0, "every message acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_crossings_notify_once_publish_events_and_counters_follow() {
    let env = env().await;
    let account = account(&env.pool).await;
    let receiver = Receiver::start(200).await;
    webhook(
        &env.pool,
        &env.settings,
        &account,
        &receiver.url(),
        &["usage.quota_warning", "usage.quota_exceeded"],
    )
    .await;
    // The current period on a plan with a quota of 10, as the admin API would leave it.
    let (start, end) = wrapx_worker::billing::period_of(chrono::Utc::now()).unwrap();
    sqlx::query("INSERT INTO billing (id, user_id, plan_type, status, period_start, expires_at, monthly_quota_requests) VALUES ($1, $2, 'starter', 'active', $3, $4, 10)")
        .bind(uuid::Uuid::now_v7()).bind(account.user_id).bind(start).bind(end).execute(&env.pool).await.unwrap();
    sqlx::query(r#"INSERT INTO rate_limits (id, user_id, wrapped_api_id, "limit", window_seconds) VALUES ($1, $2, $3, 100, 86400)"#)
        .bind(uuid::Uuid::now_v7()).bind(account.user_id).bind(account.api_id).execute(&env.pool).await.unwrap();

    let worker = env.start().await;
    let (_conn, channel) = publisher(&env.amqp_url).await;
    let mut events = Vec::new();
    for _ in 0..12 {
        let e = request(&account, "gpt-4o-mini", 10, 10);
        publish(&channel, &Event::Request(e.clone())).await;
        events.push(e);
    }
    // Rate-limited requests are logged but count neither against the quota nor the limit.
    let mut limited = request(&account, "gpt-4o-mini", 0, 0);
    limited.outcome = RequestOutcome::RateLimited;
    limited.status = 429;
    publish(&channel, &Event::Request(limited)).await;
    wait_count(&env.pool, "SELECT count(*) FROM api_logs", 13, WAIT).await;

    let notes: Vec<(String, String)> = sqlx::query_as(
        "SELECT type, dedup_key FROM notifications WHERE user_id = $1 ORDER BY type",
    )
    .bind(account.user_id)
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let month = start.format("%Y-%m");
    assert_eq!(
        notes,
        vec![
            (
                "quota_exceeded".to_owned(),
                format!("quota_exceeded:{month}")
            ),
            ("quota_warning".to_owned(), format!("quota_warning:{month}")),
        ]
    );
    let got = receiver.wait_for(2, WAIT).await;
    let mut types: Vec<String> = got
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_owned())
        .collect();
    types.sort();
    assert_eq!(types, ["usage.quota_exceeded", "usage.quota_warning"]);
    assert_eq!(got[0].json()["data"]["quota"], 10);

    let (count, reset_at): (i64, Option<chrono::DateTime<chrono::Utc>>) = sqlx::query_as(
        "SELECT requests_count, reset_at FROM rate_limits WHERE wrapped_api_id = $1",
    )
    .bind(account.api_id)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(count, 12);
    assert!(reset_at.unwrap() > chrono::Utc::now());
    let requests: i64 = sqlx::query_scalar("SELECT requests_count FROM billing WHERE user_id = $1")
        .bind(account.user_id)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(requests, 12);

    // The same events again change nothing and raise nothing new.
    for e in &events {
        publish(&channel, &Event::Request(e.clone())).await;
    }
    let marker = request(&account, "gpt-4o-mini", 1, 1);
    publish(&channel, &Event::Request(marker.clone())).await;
    wait_count(&env.pool, "SELECT count(*) FROM api_logs", 14, WAIT).await;
    assert_eq!(
        scalar(&env.pool, "SELECT count(*) FROM notifications").await,
        2
    );
    worker.stop().await;
    assert_eq!(receiver.all().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_the_queue_without_double_effects() {
    let env = env().await;
    let accounts = [account(&env.pool).await, account(&env.pool).await];
    let mut settings = env.settings.clone();
    settings.worker.prefetch = 50;
    settings.worker.batch_size = 25;
    let first = crate::common::start(settings.clone()).await;
    let second = crate::common::start(settings).await;
    let (_conn, channel) = publisher(&env.amqp_url).await;
    for i in 0..400 {
        let e = request(&accounts[i % 2], "gpt-4o-mini", 5, 5);
        publish(&channel, &Event::Request(e.clone())).await;
        if i % 4 == 0 {
            // Duplicates, which may land on either worker.
            publish(&channel, &Event::Request(e)).await;
        }
    }
    wait_count(&env.pool, "SELECT count(*) FROM api_logs", 400, WAIT).await;
    let marker = request(&accounts[0], "gpt-4o-mini", 5, 5);
    publish(&channel, &Event::Request(marker)).await;
    wait_count(&env.pool, "SELECT count(*) FROM api_logs", 401, WAIT).await;
    wait_count(
        &env.pool,
        "SELECT COALESCE(sum(requests_count), 0)::int8 FROM billing",
        401,
        WAIT,
    )
    .await;
    first.stop().await;
    second.stop().await;
    assert_eq!(
        scalar(
            &env.pool,
            "SELECT COALESCE(sum(requests_count), 0)::int8 FROM billing"
        )
        .await,
        401
    );
    assert_eq!(
        scalar(
            &env.pool,
            "SELECT COALESCE(sum(tokens_count), 0)::int8 FROM billing"
        )
        .await,
        4010
    );
}

/// Reads one sample from a Prometheus text page: the value of the line that starts with
/// `series` (name and labels exactly as rendered).
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_known_traffic_exactly() {
    let env = env().await;
    let account = account(&env.pool).await;
    let worker = env.start().await;
    let (_conn, channel) = publisher(&env.amqp_url).await;

    for i in 0..25u32 {
        let e = request(&account, "gpt-4o-mini", 10 + i, 5);
        publish(&channel, &Event::Request(e)).await;
    }
    for _ in 0..3 {
        publish_raw(
            &channel,
            amqp::EVENTS_EXCHANGE,
            "request.completed",
            b"{not json",
        )
        .await;
    }
    wait_count(&env.pool, "SELECT count(*) FROM api_logs", 25, WAIT).await;

    let url = format!("http://{}/metrics", worker.metrics);
    let page = eventually("the counts on the metrics page", WAIT, || async {
        let page = reqwest::get(&url).await.ok()?.text().await.ok()?;
        // Counted when settled, just after the commit the rows came from.
        let dead = sample(
            &page,
            r#"wrapx_worker_events_total{queue="wrapx.logs",outcome="dead_letter"}"#,
        );
        let done = sample(
            &page,
            r#"wrapx_worker_events_total{queue="wrapx.logs",outcome="done"}"#,
        );
        (dead == Some(3.0) && done >= Some(25.0)).then_some(page)
    })
    .await;
    assert_eq!(
        sample(
            &page,
            r#"wrapx_worker_events_total{queue="wrapx.logs",outcome="done"}"#
        ),
        Some(25.0)
    );
    assert_eq!(
        sample(&page, "wrapx_worker_event_lag_seconds_count"),
        Some(25.0)
    );
    assert!(sample(&page, "wrapx_worker_batch_seconds_count").is_some_and(|n| n >= 1.0));
    // Operators' extras: what waits in the broker, its round trip, the process's memory.
    assert!(sample(
        &page,
        r#"wrapx_worker_queue_depth{queue="wrapx.deliveries"}"#
    )
    .is_some());
    assert!(sample(&page, "wrapx_worker_broker_seconds_count").is_some_and(|n| n >= 1.0));
    assert!(sample(&page, "process_resident_memory_bytes").is_some_and(|b| b > 1e6));
    // No label carries an account, key or wrapped API id.
    for id in [account.user_id, account.api_id, account.key_id] {
        assert!(!page.contains(&id.to_string()), "an id in the metrics");
    }
    worker.stop().await;
}

/// Every worker metric of the contract is on the page from the start, before any message, each
/// outcome of the webhook deliveries at zero: a `rate()` or an alert on a series that appears
/// at its first event misses that event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_contract_metric_exists_from_the_start() {
    let env = env().await;
    let worker = env.start().await;
    let url = format!("http://{}/metrics", worker.metrics);
    let page = eventually("the metrics page", WAIT, || async {
        reqwest::get(&url).await.ok()?.text().await.ok()
    })
    .await;
    for series in [
        r#"wrapx_worker_events_total{queue="wrapx.logs",outcome="done"}"#,
        r#"wrapx_worker_events_total{queue="wrapx.deliveries",outcome="dead_letter"}"#,
        "wrapx_worker_batch_seconds_count",
        r#"wrapx_worker_webhook_deliveries_total{outcome="delivered"}"#,
        r#"wrapx_worker_webhook_deliveries_total{outcome="failed"}"#,
    ] {
        assert_eq!(sample(&page, series), Some(0.0), "{series} in:\n{page}");
    }
    worker.stop().await;
}
