//! Writing the gateway's own answers (refusals, models, health) and reading the client's body
//! with its size cap.

use bytes::{Bytes, BytesMut};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use uuid::Uuid;

use crate::{
    errors::{ErrorKind, GatewayError},
    limits::Decision,
};

/// Writes a whole JSON answer.
pub async fn json(
    session: &mut Session,
    request_id: Uuid,
    status: u16,
    body: Bytes,
    extra: &[(&'static str, String)],
) -> pingora_error::Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4 + extra.len()))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("x-request-id", request_id.to_string())?;
    for (name, value) in extra {
        resp.insert_header(*name, value.as_str())?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

/// The `x-wrapx-attempts` value: a static string for the usual counts (no allocation).
pub fn attempts_header(n: u32) -> http::HeaderValue {
    const COUNTS: [&str; 11] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10"];
    match COUNTS.get(n as usize) {
        Some(s) => http::HeaderValue::from_static(s),
        None => http::HeaderValue::from(n),
    }
}

/// Writes a refusal in OpenAI's shape.
pub async fn error(
    session: &mut Session,
    request_id: Uuid,
    error: &GatewayError,
    extra: &[(&'static str, String)],
) -> pingora_error::Result<()> {
    if error.kind == ErrorKind::BodyTooLarge {
        // The rest of the body was never read: the connection cannot carry another request.
        session.set_keepalive(None);
    }
    json(session, request_id, error.status(), error.body(), extra).await
}

/// Writes a refusal on a connection pingora closes afterwards (`fail_to_proxy`): the answer says
/// `connection: close` and is flushed whole before the connection goes.
///
/// `attempts`: the upstream attempts made, for `x-wrapx-attempts`, when the request was
/// forwarded.
pub async fn final_error(
    session: &mut Session,
    request_id: Uuid,
    error: &GatewayError,
    attempts: Option<u32>,
) -> pingora_error::Result<()> {
    let body = error.body();
    let mut resp = ResponseHeader::build(error.status(), Some(5))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    resp.insert_header("x-request-id", request_id.to_string())?;
    if let Some(n) = attempts {
        resp.insert_header("x-wrapx-attempts", attempts_header(n))?;
    }
    session
        .as_downstream_mut()
        .write_error_response(resp, body)
        .await
}

/// The `x-ratelimit-*` headers of a decision, and `retry-after` when it refused.
pub fn limit_headers(d: &Decision) -> Vec<(&'static str, String)> {
    let secs = |d: std::time::Duration| d.as_millis().div_ceil(1000).max(1);
    let mut h = vec![
        ("x-ratelimit-limit-requests", d.limit.to_string()),
        ("x-ratelimit-remaining-requests", d.remaining.to_string()),
        (
            "x-ratelimit-reset-requests",
            format!("{}s", secs(d.reset_after)),
        ),
    ];
    if !d.allowed {
        h.push((
            "retry-after",
            secs(d.retry_after.unwrap_or(d.reset_after)).to_string(),
        ));
    }
    h
}

/// Why the body could not be read.
#[derive(Debug)]
pub enum BodyError {
    Refused(GatewayError),
    /// The client went away while sending it.
    Read(Box<pingora_error::Error>),
}

/// pingora re-sends a request body it holds in its retry buffer (64 KiB); the gateway puts its
/// rewritten body in place of that in `request_body_filter`. A body we read ourselves must
/// therefore end up there: the buffer is switched on for the last 64 KiB of a body whose length
/// is known, and from the start for a chunked one. A chunked body that outgrows it is read only
/// that far here; pingora hands the rest to `request_body_filter` as it forwards the request.
const RETRY_BUFFER: usize = 64 * 1024;

/// A request body as `read_body` leaves it.
#[derive(Debug)]
pub enum Body {
    Whole(Bytes),
    /// The start of a chunked body longer than the retry buffer: the rest is still to come.
    Started(BytesMut),
}

/// How much of a refused body is still read (and dropped) before the 413, and for how long.
/// A client still sending when the gateway answers and closes gets a connection reset instead
/// of the 413, and the SDKs retry a reset: reading the rest lets the 413 arrive. Past these
/// bounds the connection is closed on the spot.
pub const DRAIN_MAX: usize = 32 * 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads and drops the rest of a refused body, within `DRAIN_MAX` and `DRAIN_TIME`.
pub async fn drain(session: &mut Session, mut left: usize) {
    let work = async {
        while let Ok(Some(chunk)) = session.read_request_body().await {
            left = left.saturating_sub(chunk.len());
            if left == 0 {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, work).await;
}

/// Reads the body within `timeout` (else 408): 413 from `content-length` before reading, and as
/// soon as a chunked body passes the cap.
pub async fn read_body(
    session: &mut Session,
    max: usize,
    timeout: std::time::Duration,
) -> Result<Body, BodyError> {
    match tokio::time::timeout(timeout, read_body_untimed(session, max)).await {
        Ok(read) => read,
        Err(_) => Err(BodyError::Refused(GatewayError::with_message(
            ErrorKind::BodyTimeout,
            format!(
                "The request body did not arrive within {} ms.",
                timeout.as_millis()
            ),
        ))),
    }
}

/// The 413 for a body past `max` bytes.
pub fn too_large(max: usize) -> GatewayError {
    GatewayError::with_message(
        ErrorKind::BodyTooLarge,
        format!("The request body is larger than {max} bytes."),
    )
}

async fn read_body_untimed(session: &mut Session, max: usize) -> Result<Body, BodyError> {
    let too_large = || BodyError::Refused(too_large(max));
    let length = match session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
    {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    BodyError::Refused(GatewayError::invalid("Invalid content-length."))
                })?,
        ),
        None => None,
    };
    if let Some(n) = length.filter(|n| *n > max) {
        if n <= DRAIN_MAX {
            drain(session, n).await;
        }
        return Err(too_large());
    }
    let mut body = BytesMut::with_capacity(length.unwrap_or(8 * 1024).min(max));
    let mut buffering = false;
    loop {
        let remaining = length.map_or(0, |n| n.saturating_sub(body.len()));
        if !buffering && remaining <= RETRY_BUFFER {
            session.as_downstream_mut().enable_retry_buffering();
            buffering = true;
        }
        match session.read_request_body().await.map_err(BodyError::Read)? {
            Some(chunk) => {
                if body.len() + chunk.len() > max {
                    drain(session, DRAIN_MAX.saturating_sub(body.len() + chunk.len())).await;
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
                if length.is_none() && session.as_downstream().retry_buffer_truncated() {
                    return Ok(Body::Started(body));
                }
            }
            None => break,
        }
    }
    Ok(Body::Whole(body.freeze()))
}
