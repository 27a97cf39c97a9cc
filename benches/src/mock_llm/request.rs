//! What the mock reads from a request: the few body fields it needs and the `x-mock-*` overrides.

use std::borrow::Cow;
use std::time::Duration;

use hyper::HeaderMap;
use serde::Deserialize;

use super::behavior::Behavior;
use super::format::Format;
use super::MockConfig;

/// The only body fields the mock looks at; everything else is skipped without being built.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RequestSummary<'a> {
    /// Borrowed from the body unless it holds escapes.
    #[serde(borrow, default)]
    pub(crate) model: Cow<'a, str>,
    #[serde(default)]
    pub(crate) stream: Option<bool>,
    #[serde(default)]
    pub(crate) stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub(crate) max_tokens: Option<u64>,
    /// OpenAI's newer name for `max_tokens`.
    #[serde(default)]
    pub(crate) max_completion_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub(crate) include_usage: Option<bool>,
}

impl<'a> RequestSummary<'a> {
    pub(crate) fn parse(body: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }

    pub(crate) fn is_stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    pub(crate) fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// The token cap the client asked for, if any.
    pub(crate) fn token_cap(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }
}

/// The per-request settings: the configuration with the `x-mock-*` headers applied.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    /// The behaviour named by `x-mock-behavior`, which beats every other source.
    pub(crate) header_behavior: Option<Behavior>,
    /// The layout named by `x-mock-format`, which beats every other source.
    pub(crate) header_format: Option<Format>,
    pub(crate) chunks: usize,
    pub(crate) interval: Duration,
    pub(crate) first_byte_delay: Duration,
    pub(crate) latency: Duration,
}

impl Plan {
    /// Reads the overrides. A malformed `x-mock-*` header is an error, so that a mistyped test
    /// fails loudly instead of silently running with the defaults.
    pub(crate) fn from_headers(config: &MockConfig, headers: &HeaderMap) -> Result<Self, String> {
        let mut plan = Self {
            header_behavior: None,
            header_format: None,
            chunks: config.chunks,
            interval: config.chunk_interval,
            first_byte_delay: config.first_byte_delay,
            latency: config.latency,
        };
        // The common case carries no mock header at all; skip the lookups.
        if !headers.keys().any(|k| k.as_str().starts_with("x-mock-")) {
            return Ok(plan);
        }
        if let Some(word) = header_str(headers, "x-mock-behavior")? {
            plan.header_behavior = Some(word.parse().map_err(|e| format!("{e}"))?);
        }
        if let Some(word) = header_str(headers, "x-mock-format")? {
            plan.header_format = Some(word.parse().map_err(|e| format!("{e}"))?);
        }
        if let Some(n) = header_number(headers, "x-mock-chunks")? {
            plan.chunks = usize::try_from(n).map_err(|_| "x-mock-chunks is too large")?;
        }
        if let Some(ms) = header_number(headers, "x-mock-interval-ms")? {
            plan.interval = Duration::from_millis(ms);
        }
        if let Some(ms) = header_number(headers, "x-mock-first-byte-delay-ms")? {
            plan.first_byte_delay = Duration::from_millis(ms);
        }
        if let Some(ms) = header_number(headers, "x-mock-latency-ms")? {
            plan.latency = Duration::from_millis(ms);
        }
        Ok(plan)
    }
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, String> {
    headers
        .get(name)
        .map(|v| v.to_str().map_err(|_| format!("{name} is not ASCII")))
        .transpose()
}

fn header_number(headers: &HeaderMap, name: &str) -> Result<Option<u64>, String> {
    header_str(headers, name)?
        .map(|v| {
            v.trim()
                .parse()
                .map_err(|_| format!("{name} must be a whole number, got {v:?}"))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn summary_reads_only_what_it_needs() {
        let body = br#"{"messages":[{"role":"user","content":"hi"}],"model":"gpt-4o","stream":true,
            "stream_options":{"include_usage":true},"max_tokens":3,"tools":[{"x":[1,2,{}]}]}"#;
        let s = RequestSummary::parse(body).unwrap();
        assert_eq!(s.model, "gpt-4o");
        assert!(matches!(s.model, Cow::Borrowed(_)));
        assert!(s.is_stream());
        assert!(s.include_usage());
        assert_eq!(s.token_cap(), Some(3));
    }

    #[test]
    fn summary_defaults_and_escapes() {
        let s = RequestSummary::parse(br#"{"model":"a\"b","stream":null}"#).unwrap();
        assert_eq!(s.model, "a\"b");
        assert!(!s.is_stream());
        assert!(!s.include_usage());
        assert!(RequestSummary::parse(b"not json").is_err());
    }
}
