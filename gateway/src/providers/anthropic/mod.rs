//! OpenAI Chat Completions client → Anthropic Messages provider: the request, the answer, the
//! stream and the errors, one module each.

pub mod errors;
pub mod request;
pub mod response;
pub mod stream;

/// OpenAI's `finish_reason` for Anthropic's `stop_reason`.
pub(crate) fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn and anything new.
        _ => "stop",
    }
}
