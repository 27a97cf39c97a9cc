//! Provider dialects: pure, streaming-friendly translation between OpenAI's Chat Completions
//! (what a wrapped API's clients speak) and Anthropic's Messages API, both ways, plus each
//! provider's reasoning switch. No I/O here: the proxy calls these functions in its phases.
//!
//! # How the proxy calls this module
//!
//! Let `dialect = ProviderDialect::of(kind)` and `client` be the API the client spoke
//! (`/v1/chat/completions` → OpenAI, `/v1/messages` → Anthropic).
//!
//! | client \ provider | OpenAI-compatible | Anthropic |
//! |---|---|---|
//! | OpenAI chat | pass through ([`apply_thinking`]) | [`chat_to_messages`], answers via [`messages_response_to_chat`] / [`AnthropicToChatStream`], errors via [`anthropic_error_to_openai`] |
//! | Anthropic messages | [`messages_to_chat`], answers via [`chat_response_to_messages`] / [`ChatToAnthropicStream`], errors via [`openai_error_to_anthropic`] | pass through |
//!
//! 1. **Request body filter** (whole body in hand, after the OpenAI-side rewrite of system
//!    prompt, few-shot turns and pinned model): translate, then `apply_thinking` on the body in
//!    the *provider's* dialect (`chat_to_messages` already applies it when given `thinking`).
//!    Path: `/messages` for Anthropic (`x-api-key` + `anthropic-version: 2023-06-01` headers),
//!    `/chat/completions` otherwise. A [`TranslateError`] is a 400 to the client
//!    ([`TranslateError::status`]).
//!    For an Anthropic client on an OpenAI provider, translate first ([`messages_to_chat`]),
//!    then run the usual OpenAI rewrite on the result.
//! 2. **Response header filter**: when translating, remove `content-length` (the length
//!    changes) and set `content-type` to `text/event-stream` for a 2xx stream, otherwise
//!    `application/json`. For a non-2xx status, buffer the (small) body and answer with the
//!    status and body the `*_error_to_*` function returns.
//! 3. **Response body filter**, stream: one translator per request, created in the request
//!    phase: `AnthropicToChatStream::new(request_id, pinned_model,
//!    client_body.stream_options.include_usage == true)` or
//!    `ChatToAnthropicStream::new(request_id, pinned_model)`; `push` every upstream
//!    chunk as it arrives and send what it appended to `out` at once (it may be empty);
//!    on end of stream call `finish` and send its output. `usage()` then feeds the request
//!    event; `saw_error()` marks the outcome as an upstream error.
//!    Non-stream: buffer the body, then `messages_response_to_chat` /
//!    `chat_response_to_messages` (`Err` → 502 upstream error).
//!
//! [`AnswerTranslator`] does phases 2 and 3 for the proxy. Since pingora sends the header before
//! the body is read, it picks an error's status from the provider's status alone, and an
//! unreadable 2xx whole answer keeps its 200 with the 502 error object as body (the request's
//! event records an upstream error).
//!
//! # Choices
//!
//! - Anthropic `thinking` blocks are never shown as `content`: they go to the OpenAI side as
//!   `reasoning_content` (message field, or `delta.reasoning_content` in a stream), the name
//!   DeepSeek's reasoner uses, so one client works with both. Anthropic does not report
//!   thinking tokens apart from `output_tokens`, so `reasoning_tokens` stays 0 there.
//! - Provider 4xx keep their status (with the body in the client's shape); every provider 5xx,
//!   Anthropic's `overloaded_error` (529) included, is the contract's 502 (code
//!   `provider_overloaded` for that one), as on the OpenAI path; `timeout_error` is 504.
//! - OpenAI temperature (0..2) is clamped into Anthropic's 0..1, not scaled.
//! - OpenAI parameters Anthropic cannot express (`frequency_penalty`, `presence_penalty`,
//!   `seed`, `logprobs`, `response_format`, …) are dropped; `n` > 1, audio or file parts and
//!   non-function tools are refused with 400.

pub mod anthropic;
mod exchange;
pub mod reverse;
pub(crate) mod sse;
pub mod thinking;

use serde_json::{json, Value};

use crate::errors::{ErrorKind, GatewayError};

pub use crate::dialect::ProviderDialect;
pub use anthropic::errors::anthropic_error_to_openai;
pub use anthropic::request::{chat_to_messages, openai_tool_to_anthropic};
pub use anthropic::response::messages_response_to_chat;
pub use anthropic::stream::AnthropicToChatStream;
pub use exchange::AnswerTranslator;
pub use reverse::errors::openai_error_to_anthropic;
pub use reverse::request::messages_to_chat;
pub use reverse::response::chat_response_to_messages;
pub use reverse::stream::ChatToAnthropicStream;
pub use thinking::{apply_thinking, ThinkingConfig};

/// Anthropic requires `max_tokens`; this is sent when neither the client nor the wrapped API's
/// cap sets one.
pub const DEFAULT_ANTHROPIC_MAX_TOKENS: u32 = 4096;

/// The most a stream translator keeps of one unfinished upstream event (line plus data).
pub const MAX_PARTIAL_EVENT_BYTES: usize = 1 << 20;

/// Why a body could not be translated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// The client's request is not valid for its own API.
    #[error("{0}")]
    InvalidRequest(String),
    /// The request uses something the provider's API cannot express.
    #[error("{0}")]
    Unsupported(String),
    /// The provider's answer could not be read.
    #[error("the provider's answer could not be read: {0}")]
    InvalidUpstream(String),
}

impl TranslateError {
    /// The error in the contract's table: the client's request is a 400, the provider's
    /// answer an opaque 502 (the cause goes to the log).
    pub fn to_error(&self) -> GatewayError {
        match self {
            Self::InvalidRequest(m) | Self::Unsupported(m) => GatewayError::invalid(m.clone()),
            Self::InvalidUpstream(_) => GatewayError::new(ErrorKind::UpstreamError),
        }
    }

    /// 400 for the client's request, 502 for the provider's answer.
    pub fn status(&self) -> u16 {
        self.to_error().status()
    }
}

/// Seconds since the epoch, for `created`; 0 if the clock is before 1970.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A JSON number as u32, saturating; anything else is 0.
pub(crate) fn u32_of(v: &Value) -> u32 {
    v.as_u64()
        .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX))
}

/// OpenAI's `usage` object for a [`wrapx_core::events::Usage`] and the cached prompt tokens.
pub(crate) fn openai_usage_json(u: &wrapx_core::events::Usage, cached: u32) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total(),
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    })
}

/// Test helpers shared by the stream translators' tests.
#[cfg(test)]
pub(crate) mod testkit {
    /// A small deterministic PRNG (xorshift64*), enough to pick split points.
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Self {
            Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        pub fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    /// `input` cut into pieces: whole (`None`), one byte each (`Some(0)`), or random cuts.
    pub fn splits(input: &[u8], mode: Option<u64>) -> Vec<&[u8]> {
        match mode {
            None => vec![input],
            Some(0) => input.chunks(1).collect(),
            Some(seed) => {
                let mut rng = Rng::new(seed);
                let mut parts = Vec::new();
                let mut rest = input;
                while !rest.is_empty() {
                    let n = 1 + rng.below(rest.len().min(64));
                    let (a, b) = rest.split_at(n);
                    parts.push(a);
                    rest = b;
                }
                parts
            }
        }
    }

    /// `stream` (events ending in a blank line) with every event laid out in `format`, as the
    /// mock provider sends it: spaced, pretty-printed over several `data:` lines, or CRLF.
    pub fn laid_out(stream: &str, format: wrapx_benches::mock_llm::Format) -> Vec<u8> {
        stream
            .replace("\r\n", "\n")
            .split_inclusive("\n\n")
            .flat_map(|e| format.event(bytes::Bytes::from(e.to_owned())).to_vec())
            .collect()
    }

    /// The JSON of every `data:` line of an SSE output, `[DONE]` as a string.
    pub fn data_lines(out: &[u8]) -> Vec<serde_json::Value> {
        let text = std::str::from_utf8(out).unwrap_or("");
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap_or_else(|_| serde_json::json!(d)))
            .collect()
    }
}
