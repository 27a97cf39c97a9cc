//! The mock's own routes under `/_mock/`, for scripts that cannot hold a `MockHandle`.
//!
//! - `GET /_mock/requests`: the recorded requests as JSON (body as a string, lossy UTF-8);
//! - `DELETE /_mock/requests`: forget them;
//! - `GET /_mock/stats`: `MockStats` as JSON;
//! - `GET /_mock/behavior`, `PUT /_mock/behavior` with a behaviour word as the body.
//!
//! These requests are neither recorded nor counted.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::behavior::Behavior;
use super::body::MockBody;
use super::router::{self, MockError, MockResponse};
use super::state::Shared;

pub(crate) async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> MockResponse {
    let (parts, body) = req.into_parts();
    match (&parts.method, parts.uri.path()) {
        (&Method::GET, "/_mock/requests") => Ok(ok(requests(shared))),
        (&Method::DELETE, "/_mock/requests") => {
            shared.recorder.clear();
            Ok(ok(json!({ "cleared": true })))
        }
        (&Method::GET, "/_mock/stats") => Ok(ok(json!(shared.counters.snapshot()))),
        (&Method::GET, "/_mock/behavior") => {
            Ok(ok(json!({ "behavior": shared.behavior.get().to_string() })))
        }
        (&Method::PUT | &Method::POST, "/_mock/behavior") => {
            let body = body
                .collect()
                .await
                .map_err(MockError::ReadBody)?
                .to_bytes();
            let word = String::from_utf8_lossy(&body);
            match word.parse::<Behavior>() {
                Ok(behavior) => {
                    shared.behavior.set(behavior);
                    Ok(ok(json!({ "behavior": behavior.to_string() })))
                }
                Err(e) => Ok(reply(
                    StatusCode::BAD_REQUEST,
                    json!({ "error": e.to_string() }),
                )),
            }
        }
        _ => Ok(reply(
            StatusCode::NOT_FOUND,
            json!({ "error": "unknown /_mock/ route" }),
        )),
    }
}

fn requests(shared: &Shared) -> serde_json::Value {
    let now = Instant::now();
    let list: Vec<serde_json::Value> = shared
        .recorder
        .all()
        .into_iter()
        .map(|r| {
            json!({
                "method": r.method,
                "path": r.path,
                "headers": r.headers,
                "body": String::from_utf8_lossy(&r.body),
                "age_ms": now.duration_since(r.received_at).as_millis() as u64,
            })
        })
        .collect();
    serde_json::Value::Array(list)
}

fn ok(value: serde_json::Value) -> Response<MockBody> {
    reply(StatusCode::OK, value)
}

fn reply(status: StatusCode, value: serde_json::Value) -> Response<MockBody> {
    router::json(status, Bytes::from(value.to_string()))
}
