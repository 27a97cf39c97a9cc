//! The facts of one answer that both provider formats render, and the shape of a scripted stream.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// Everything an answer body depends on, decided once per request.
#[derive(Debug)]
pub(crate) struct Answer {
    /// A per-process sequence number, used in the answer's id.
    pub(crate) seq: u64,
    /// Seconds since the Unix epoch.
    pub(crate) created: u64,
    /// The request's model as a JSON string literal, quotes included, ready to paste.
    pub(crate) model_json: String,
    pub(crate) prompt_tokens: u32,
    /// One token per content chunk.
    pub(crate) completion_tokens: usize,
    /// The client's token cap cut the answer short (`length` / `max_tokens`).
    pub(crate) truncated: bool,
    /// OpenAI only: the client asked for `stream_options.include_usage`.
    pub(crate) include_usage: bool,
}

impl Answer {
    pub(crate) fn new(
        seq: u64,
        model: &str,
        prompt_tokens: u32,
        chunks: usize,
        token_cap: Option<u64>,
        include_usage: bool,
    ) -> Self {
        let cap = token_cap.map_or(usize::MAX, |c| usize::try_from(c).unwrap_or(usize::MAX));
        Self {
            seq,
            created: unix_now(),
            // Serialising a `&str` cannot fail; the fallback keeps the body valid regardless.
            model_json: serde_json::to_string(model).unwrap_or_else(|_| "\"\"".to_owned()),
            prompt_tokens,
            completion_tokens: chunks.min(cap),
            truncated: chunks > cap,
            include_usage,
        }
    }
}

/// The text of content chunk `i`: `tok<i> ` (JSON-safe as it stands).
pub(crate) fn piece(out: &mut String, i: usize) {
    // Writing to a `String` cannot fail.
    let _ = write!(out, "tok{i} ");
}

/// All content chunks joined: the text a non-streaming answer carries.
pub(crate) fn full_text(chunks: usize) -> String {
    let mut text = String::with_capacity(chunks * 6);
    for i in 0..chunks {
        piece(&mut text, i);
    }
    text
}

/// A stream as three runs of events. The head goes out with the first content chunk, the
/// content chunks are paced by the interval, the tail follows the last content chunk at once.
/// `stall-after-N` and `reset-after-N` send the head and N content chunks, never the tail.
#[derive(Debug, Default)]
pub(crate) struct StreamScript {
    pub(crate) head: Vec<Bytes>,
    pub(crate) content: Vec<Bytes>,
    pub(crate) tail: Vec<Bytes>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
