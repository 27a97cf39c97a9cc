//! Recorded requests, stats, the `/_mock/` routes and shutdown.

use std::time::Duration;

use serde_json::{json, Value};
use wrapx_benches::mock_llm::MockConfig;

use crate::support::*;

#[tokio::test]
async fn records_method_path_headers_and_body() {
    let mock = mock().await;
    let body = chat(false);
    let resp = client()
        .post(format!("{}/chat/completions?trace=1", mock.base_url()))
        .header("Authorization", "Bearer sk-test")
        .header("X-Custom-Thing", "abc")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let recorded = mock.requests();
    assert_eq!(recorded.len(), 1);
    let r = &recorded[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(r.header("authorization"), Some("Bearer sk-test"));
    assert_eq!(r.header("X-CUSTOM-THING"), Some("abc"));
    assert!(r
        .headers
        .iter()
        .any(|(n, v)| n == "x-custom-thing" && v == "abc"));
    assert!(r.headers.iter().all(|(n, _)| *n == n.to_lowercase()));
    assert_eq!(r.body, serde_json::to_vec(&body).unwrap());
    assert_eq!(r.json().unwrap(), body);
    assert!(r.received_at.elapsed() < Duration::from_secs(5));

    // The same, from outside Rust.
    let base = format!("http://{}", mock.addr());
    let list: Value = client()
        .get(format!("{base}/_mock/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "/_mock requests are not recorded"
    );
    assert_eq!(list[0]["path"], "/v1/chat/completions");
    let sent: Value = serde_json::from_str(list[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent, body);
    assert!(list[0]["headers"]
        .as_array()
        .unwrap()
        .contains(&json!(["x-custom-thing", "abc"])));

    let stats: Value = client()
        .get(format!("{base}/_mock/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stats,
        json!({"requests": 1, "streams_started": 0, "streams_completed": 0,
               "streams_cancelled": 0, "active_streams": 0})
    );

    mock.clear();
    assert!(mock.requests().is_empty());
    assert_eq!(mock.stats().requests, 1, "clear keeps the stats");
}

#[tokio::test]
async fn recording_can_be_switched_off() {
    let mock = mock_with(MockConfig {
        record: false,
        ..MockConfig::default()
    })
    .await;
    let resp = post(&mock, "chat/completions", &chat(false), &[]).await;
    assert_eq!(resp.status(), 200);
    assert!(mock.requests().is_empty());
    assert_eq!(mock.stats().requests, 1);
}

#[tokio::test]
async fn behaviour_can_be_set_over_http() {
    let mock = mock().await;
    let url = format!("http://{}/_mock/behavior", mock.addr());
    let resp = client().put(&url).body("status-418").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = post(&mock, "chat/completions", &chat(false), &[]).await;
    assert_eq!(resp.status(), 418);
    let resp = client().put(&url).body("nonsense").send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = client()
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["behavior"], "status-418");
}

#[tokio::test]
async fn shutdown_stops_listening() {
    let mock = mock().await;
    let addr = mock.addr();
    assert_eq!(
        post(&mock, "chat/completions", &chat(false), &[])
            .await
            .status(),
        200
    );
    tokio::time::timeout(Duration::from_secs(2), mock.shutdown())
        .await
        .expect("shutdown is prompt");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
