//! What the mock remembers: the recorded requests (a bounded log) and the counters behind `MockStats`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;

/// How many requests the log keeps; older ones are dropped first.
pub const MAX_RECORDED: usize = 10_000;

/// One request as the mock received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// Header names in lower case, in the order received; repeated headers appear repeatedly.
    pub headers: Vec<(String, String)>,
    /// The whole request body.
    pub body: Bytes,
    pub received_at: Instant,
}

impl RecordedRequest {
    /// The body parsed as JSON, or `None` when it is not JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The first value of a header, looked up case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Counters since the mock started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct MockStats {
    /// Requests to any route except the mock's own `/_mock/…` routes.
    pub requests: u64,
    /// Streaming answers whose headers were sent.
    pub streams_started: u64,
    /// Streams that sent their last event.
    pub streams_completed: u64,
    /// Streams the client hung up on before the last event (a stalled stream counts here once
    /// the client gives up on it). A `reset-after-N` stream, cut by the mock, counts in neither.
    pub streams_cancelled: u64,
    /// Streams still open now.
    pub active_streams: i64,
}

/// Lock-free counters shared by every connection.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    streams_started: AtomicU64,
    streams_completed: AtomicU64,
    streams_cancelled: AtomicU64,
    active_streams: AtomicI64,
}

/// How a stream ended, as seen by its guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    Completed,
    /// The mock cut it on purpose (`reset-after-N`) or the mock is shutting down.
    Aborted,
    Cancelled,
}

impl Counters {
    pub(crate) fn count_request(&self) -> u64 {
        self.requests.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn stream_started(&self) {
        self.streams_started.fetch_add(1, Ordering::Relaxed);
        self.active_streams.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stream_ended(&self, end: StreamEnd) {
        match end {
            StreamEnd::Completed => self.streams_completed.fetch_add(1, Ordering::Relaxed),
            StreamEnd::Cancelled => self.streams_cancelled.fetch_add(1, Ordering::Relaxed),
            StreamEnd::Aborted => 0,
        };
        self.active_streams.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> MockStats {
        MockStats {
            requests: self.requests.load(Ordering::Relaxed),
            streams_started: self.streams_started.load(Ordering::Relaxed),
            streams_completed: self.streams_completed.load(Ordering::Relaxed),
            streams_cancelled: self.streams_cancelled.load(Ordering::Relaxed),
            active_streams: self.active_streams.load(Ordering::Relaxed),
        }
    }
}

/// The bounded request log. Poisoning is ignored: the log holds plain data, never a broken
/// invariant, so a panicking test thread must not hide the requests from the next assertion.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    log: Mutex<VecDeque<RecordedRequest>>,
}

impl Recorder {
    pub(crate) fn push(&self, request: RecordedRequest) {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if log.len() == MAX_RECORDED {
            log.pop_front();
        }
        log.push_back(request);
    }

    pub(crate) fn all(&self) -> Vec<RecordedRequest> {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.iter().cloned().collect()
    }

    pub(crate) fn clear(&self) {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}
