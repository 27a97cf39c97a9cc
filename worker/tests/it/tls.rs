//! Webhook deliveries to an HTTPS receiver whose certificate comes from a test CA: refused
//! (retried, then dead-lettered) while the CA is not trusted, delivered once
//! `security.extra_ca_file` trusts it.

use std::{sync::atomic::Ordering, time::Duration};

use wrapx_core::{amqp, events::Event};
use wrapx_testkit::tls::TestCa;

use crate::common::*;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_receiver_of_an_untrusted_ca_is_refused_then_dead_lettered() {
    let ca = TestCa::new();
    let env = env().await;
    let account = account(&env.pool).await;
    let (receiver, failed) = https_receiver(200, ca.localhost()).await;
    webhook(
        &env.pool,
        &env.settings,
        &account,
        &https_url(&receiver),
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

    // The first try and one per tier, each ending in a refused handshake.
    wait_count(
        &env.pool,
        "SELECT count(*) FROM notifications WHERE type = 'webhook_failed'",
        1,
        WAIT,
    )
    .await;
    let dead = eventually("the delivery reaching wrapx.dead", WAIT, || async {
        let dead = dead_letters(&channel).await;
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    assert_eq!(dead[0].1, amqp::DELIVERIES_QUEUE);
    worker.stop().await;
    assert!(receiver.all().is_empty(), "nothing was delivered");
    assert!(
        failed.load(Ordering::SeqCst) >= 3,
        "{} refused handshakes",
        failed.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_receiver_is_delivered_to_once_the_extra_ca_trusts_it() {
    let ca = TestCa::new();
    let mut env = env().await;
    env.settings.security.extra_ca_file = Some(ca.ca_file().display().to_string());
    let account = account(&env.pool).await;
    let (receiver, failed) = https_receiver(200, ca.localhost()).await;
    let (_, secret) = webhook(
        &env.pool,
        &env.settings,
        &account,
        &https_url(&receiver),
        &["*"],
    )
    .await;
    let worker = env.start().await;
    let (_conn, channel) = publisher(&env.amqp_url).await;
    let event = request(&account, "gpt-4o-mini", 1, 1);
    publish(&channel, &Event::Request(event.clone())).await;

    let got = receiver.wait_for(1, WAIT).await;
    let r = &got[0];
    assert_eq!(r.json()["data"]["request_id"], event.request_id.to_string());
    assert!(verify_with_python(
        &secret,
        &r.id,
        &r.timestamp,
        &r.signature,
        &r.body
    ));
    worker.stop().await;
    assert_eq!(receiver.all().len(), 1, "delivered once, not retried");
    assert_eq!(failed.load(Ordering::SeqCst), 0);
}
