//! Shared helpers: starting a mock, sending requests, reading server-sent events as they arrive.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wrapx_benches::mock_llm::{spawn, MockConfig, MockHandle};

pub(crate) async fn mock_with(config: MockConfig) -> MockHandle {
    spawn(config).await.expect("mock starts")
}

pub(crate) async fn mock() -> MockHandle {
    mock_with(MockConfig::default()).await
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

pub(crate) fn chat(stream: bool) -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": stream})
}

pub(crate) fn messages(stream: bool) -> Value {
    json!({"model": "claude-3-5-sonnet", "max_tokens": 1024,
           "messages": [{"role": "user", "content": "hi"}], "stream": stream})
}

pub(crate) async fn post(
    mock: &MockHandle,
    route: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client()
        .post(format!("{}/{route}", mock.base_url()))
        .json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("request sent")
}

/// Reads server-sent events as they arrive, stamping each with the time its last byte came.
pub(crate) struct Events {
    resp: reqwest::Response,
    buf: Vec<u8>,
    arrived: Instant,
}

impl Events {
    pub(crate) fn new(resp: reqwest::Response) -> Self {
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Self {
            resp,
            buf: Vec::new(),
            arrived: Instant::now(),
        }
    }

    /// The next whole event (text without the blank line), `None` at the body's clean end.
    pub(crate) async fn next(&mut self) -> Result<Option<(Instant, String)>, reqwest::Error> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.buf.drain(..pos + 2).collect();
                let text = String::from_utf8(event[..pos].to_vec()).unwrap();
                return Ok(Some((self.arrived, text)));
            }
            match self.resp.chunk().await? {
                Some(chunk) => {
                    self.arrived = Instant::now();
                    self.buf.extend_from_slice(&chunk);
                }
                None => {
                    assert!(self.buf.is_empty(), "trailing bytes: {:?}", self.buf);
                    return Ok(None);
                }
            }
        }
    }

    pub(crate) async fn all(mut self) -> Vec<(Instant, String)> {
        let mut out = Vec::new();
        while let Some(e) = self.next().await.expect("stream ends cleanly") {
            out.push(e);
        }
        out
    }
}

/// The JSON after `data: ` in an event, if it is JSON.
pub(crate) fn data(event: &str) -> Option<Value> {
    let line = event.lines().find_map(|l| l.strip_prefix("data: "))?;
    serde_json::from_str(line).ok()
}

/// The event name of an Anthropic event.
pub(crate) fn name(event: &str) -> &str {
    event
        .lines()
        .find_map(|l| l.strip_prefix("event: "))
        .unwrap_or("")
}

pub(crate) fn is_openai_content(event: &str) -> bool {
    data(event).is_some_and(|v| v["choices"][0]["delta"]["content"].is_string())
}

pub(crate) fn is_content(event: &str) -> bool {
    is_openai_content(event) || name(event) == "content_block_delta"
}

/// The kit's [`wrapx_testkit::eventually_true`] for a plain condition on the mock, up to 2 s.
pub(crate) async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    wrapx_testkit::eventually_true(what, Duration::from_secs(2), || std::future::ready(check()))
        .await;
}
