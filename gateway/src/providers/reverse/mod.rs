//! Anthropic Messages client → OpenAI-compatible provider: for clients on Anthropic's SDK
//! calling `/v1/messages` on a wrapped API whose provider speaks Chat Completions.

pub mod errors;
pub mod request;
pub mod response;
pub mod stream;

/// Anthropic's `stop_reason` for OpenAI's `finish_reason`.
pub(crate) fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

#[cfg(test)]
mod tests;
