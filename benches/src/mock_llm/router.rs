//! One request from start to answer: route by path suffix, record, pick the behaviour, respond.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use hyper::http::request::Parts;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};

use super::answer::Answer;
use super::answer::StreamScript;
use super::behavior::Behavior;
use super::body::{pace, Ending, MockBody, ScriptBody};
use super::format::Format;
use super::record::RecordedRequest;
use super::request::{Plan, RequestSummary};
use super::state::Shared;
use super::{anthropic, inspect, openai};

/// Why the mock gives up on a request without answering; hyper then closes the connection.
#[derive(Debug)]
pub(crate) enum MockError {
    /// Reading the request body failed: the client went away or sent a broken body.
    ReadBody(hyper::Error),
    /// A hanging request ends because the mock is shutting down.
    ShuttingDown,
}

impl std::fmt::Display for MockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ReadBody(e) => write!(f, "reading the request body failed: {e}"),
            Self::ShuttingDown => f.write_str("the mock is shutting down"),
        }
    }
}

impl std::error::Error for MockError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::ReadBody(e) => Some(e),
            Self::ShuttingDown => None,
        }
    }
}

pub(crate) type MockResponse = Result<Response<MockBody>, MockError>;

/// The API format a route speaks, which shapes answers and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provider {
    OpenAi,
    Anthropic,
}

const MODELS: &[u8] =
    br#"{"object":"list","data":[{"id":"mock-model","object":"model","created":0,"owned_by":"mock"}]}"#;

/// The body of a `malformed` answer: no line is a valid event, no `data:` line holds JSON.
const MALFORMED: &[u8] = b"this is not an event stream\n{\"choices\":[{\"delta\":\ndata: {\"id\":\"chatcmpl-broken\",\"choices\":[{\"delta\":{\"content\":\"tok\ndata: \x00\x01\x02 not json at all }}}\n\n";

pub(crate) async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> MockResponse {
    if req.uri().path().starts_with("/_mock/") {
        return inspect::handle(&shared, req).await;
    }
    let seq = shared.counters.count_request();
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map_err(MockError::ReadBody)?
        .to_bytes();
    if shared.config.record {
        record(&shared, &parts, &body);
    }

    let path = parts.uri.path().trim_end_matches('/');
    let provider = if path.ends_with("/chat/completions") && parts.method == Method::POST {
        Provider::OpenAi
    } else if path.ends_with("/messages") && parts.method == Method::POST {
        Provider::Anthropic
    } else if path.ends_with("/models") && parts.method == Method::GET {
        return Ok(json(StatusCode::OK, Bytes::from_static(MODELS)));
    } else {
        let message = format!(
            "the mock has no route {} {}",
            parts.method,
            parts.uri.path()
        );
        return Ok(json(StatusCode::NOT_FOUND, openai::error(404, &message)));
    };
    answer(&shared, provider, &parts.headers, &body, seq).await
}

/// Answers a chat or messages request according to its behaviour.
async fn answer(
    shared: &Arc<Shared>,
    provider: Provider,
    headers: &HeaderMap,
    body: &Bytes,
    seq: u64,
) -> MockResponse {
    let plan = match Plan::from_headers(&shared.config, headers) {
        Ok(plan) => plan,
        Err(message) => {
            let message = format!("mock: {message}");
            return Ok(error(provider, 400, &message, Format::Compact));
        }
    };
    let summary = RequestSummary::parse(body);
    let behavior = shared
        .take_scripted()
        .or(plan.header_behavior)
        .or_else(|| {
            summary
                .as_ref()
                .ok()
                .and_then(|s| Behavior::from_model(&s.model))
        })
        .unwrap_or_else(|| shared.behavior.get());
    let format = plan
        .header_format
        .or_else(|| {
            summary
                .as_ref()
                .ok()
                .and_then(|s| Format::from_model(&s.model))
        })
        .unwrap_or_else(|| shared.format.get());

    let (ending, cut) = match behavior {
        Behavior::Hang => {
            // The body is read; now wait for the client to leave (hyper drops this future)
            // or for the mock to shut down.
            shared.shutdown.cancelled().await;
            return Err(MockError::ShuttingDown);
        }
        Behavior::Status(code) => {
            delay(plan.latency).await;
            let message = format!("mock error: status {code}");
            let mut response = error(provider, code, &message, format);
            set_retry_after(shared, &mut response);
            return Ok(response);
        }
        Behavior::ErrorIn200 => {
            delay(plan.latency).await;
            let body = provider_error(provider, 500, "mock error inside a 200 answer");
            return Ok(json(StatusCode::OK, format.json(body)));
        }
        Behavior::Malformed => return Ok(malformed(format)),
        Behavior::Normal => (Ending::Finish, None),
        Behavior::StallAfter(n) => (Ending::Stall, Some(n)),
        Behavior::ResetAfter(n) => (Ending::Reset, Some(n)),
        Behavior::EndAfter(n) => (Ending::Finish, Some(n)),
    };

    let summary = match summary {
        Ok(summary) => summary,
        Err(e) => {
            let message = format!("the request body is not valid JSON: {e}");
            return Ok(error(provider, 400, &message, format));
        }
    };
    let answer = Answer::new(
        seq,
        &summary.model,
        shared.config.prompt_tokens,
        plan.chunks,
        summary.token_cap(),
        summary.include_usage(),
    );

    if summary.is_stream() {
        let script = match provider {
            Provider::OpenAi => openai::stream(&answer),
            Provider::Anthropic => anthropic::stream(&answer),
        };
        let events = pace(
            laid_out(script, format),
            plan.first_byte_delay,
            plan.interval,
            cut,
        );
        let body = ScriptBody::new(shared, events, ending, true);
        return Ok(event_stream(MockBody::Script(Box::new(body))));
    }

    delay(plan.latency).await;
    let text = shared.text(answer.completion_tokens);
    let whole = format.json(match provider {
        Provider::OpenAi => openai::completion(&answer, &text),
        Provider::Anthropic => anthropic::message(&answer, &text),
    });
    if cut.is_none() {
        return Ok(json(StatusCode::OK, whole));
    }
    // A non-streaming stall, reset or early end sends the first half of the body, chunked,
    // then stops the way it says.
    let half = whole.slice(..whole.len() / 2);
    let events = VecDeque::from([(Duration::ZERO, half)]);
    let body = ScriptBody::new(shared, events, ending, false);
    let mut response = Response::new(MockBody::Script(Box::new(body)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

fn record(shared: &Shared, parts: &Parts, body: &Bytes) {
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect();
    shared.recorder.push(RecordedRequest {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        headers,
        body: body.clone(),
        received_at: Instant::now(),
    });
}

async fn delay(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

fn provider_error(provider: Provider, status: u16, message: &str) -> Bytes {
    match provider {
        Provider::OpenAi => openai::error(status, message),
        Provider::Anthropic => anthropic::error(status, message),
    }
}

/// Every event of a stream in `format`.
fn laid_out(script: StreamScript, format: Format) -> StreamScript {
    if format == Format::Compact {
        return script;
    }
    let each = |frames: Vec<Bytes>| frames.into_iter().map(|f| format.event(f)).collect();
    StreamScript {
        head: each(script.head),
        content: each(script.content),
        tail: each(script.tail),
    }
}

fn error(provider: Provider, status: u16, message: &str, format: Format) -> Response<MockBody> {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json(code, format.json(provider_error(provider, status, message)));
    if code == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// `MockHandle::set_retry_after`'s header, when it was called.
fn set_retry_after(shared: &Shared, response: &mut Response<MockBody>) {
    let configured = shared
        .retry_after
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let Some(value) = configured else { return };
    let headers = response.headers_mut();
    headers.remove(RETRY_AFTER);
    if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(RETRY_AFTER, value);
    }
}

pub(crate) fn json(status: StatusCode, body: Bytes) -> Response<MockBody> {
    let mut response = Response::new(MockBody::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn event_stream(body: MockBody) -> Response<MockBody> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn malformed(format: Format) -> Response<MockBody> {
    let body = format.event(Bytes::from_static(MALFORMED));
    let mut response = event_stream(MockBody::full(body));
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}
