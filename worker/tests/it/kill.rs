//! The real `wrapx-worker` binary killed with SIGKILL while events flow, then restarted: every
//! event ends as exactly one row, billed once; SIGTERM then stops it with exit code 0.

use std::{process::Command, time::Duration};

use crate::common::*;
use wrapx_core::events::Event;
use wrapx_testkit::process::Process;

const N: usize = 3000;

/// The real binary, SIGKILLed when dropped.
fn spawn_worker(env: &TestEnv) -> Process {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wrapx-worker"));
    cmd.env("WRAPX_DATABASE__URL", &env.db_url)
        .env("WRAPX_AMQP__URL", &env.amqp_url)
        .env("WRAPX_REDIS__PREFIX", &env.settings.redis.prefix)
        .env("WRAPX_WORKER__METRICS_LISTEN", "127.0.0.1:0")
        .env("WRAPX_WORKER__PRICING_FILE", pricing_file())
        .env("WRAPX_WORKER__BATCH_SIZE", "100")
        .env("WRAPX_WORKER__PREFETCH", "300")
        .env("WRAPX_LOG__LEVEL", "warn");
    Process::spawn(cmd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_batch_and_restarted_leaves_exactly_n_rows() {
    let env = env().await;
    let account = account(&env.pool).await;
    let (_conn, channel) = publisher(&env.amqp_url).await;
    let events: Vec<Event> = (0..N)
        .map(|i| Event::Request(request(&account, "gpt-4o-mini", i as u32 % 50, 7)))
        .collect();

    let worker = spawn_worker(&env);
    let publishing = {
        let channel = channel.clone();
        let events = events.clone();
        tokio::spawn(async move {
            for e in &events {
                publish(&channel, e).await;
            }
        })
    };
    // Kill it once it is writing, while events are still arriving.
    eventually("the first rows", Duration::from_secs(30), || async {
        (scalar(&env.pool, "SELECT count(*) FROM api_logs").await >= 200).then_some(())
    })
    .await;
    drop(worker); // SIGKILL
    let at_kill = scalar(&env.pool, "SELECT count(*) FROM api_logs").await;
    assert!(
        (at_kill as usize) < N,
        "the kill came too late to test anything ({at_kill} rows)"
    );

    let mut worker = spawn_worker(&env);
    publishing.await.unwrap();
    wait_count(
        &env.pool,
        "SELECT count(*) FROM api_logs",
        N as i64,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        scalar(&env.pool, "SELECT count(DISTINCT request_id) FROM api_logs").await,
        N as i64
    );
    assert_eq!(
        scalar(&env.pool, "SELECT requests_count FROM billing").await,
        N as i64
    );
    let tokens: i64 = events
        .iter()
        .map(|e| match e {
            Event::Request(r) => r.usage.total() as i64,
            Event::Admin(_) => 0,
        })
        .sum();
    assert_eq!(
        scalar(&env.pool, "SELECT tokens_count FROM billing").await,
        tokens
    );

    // SIGTERM: drains and exits 0.
    worker.sigterm();
    let exit = worker.wait_exit(Duration::from_secs(60)).await;
    assert!(exit.success(), "exit status {exit:?}");
}
