//! The renderers, one per dialect: OpenAI's `{"error":{"message","type","code"}}` and
//! Anthropic's `{"type":"error","error":{"type","message"}}`, as a whole body or as a stream's
//! last event (`data: {"error":…}` as OpenAI sends mid-stream, or Anthropic's `error` event).

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use super::GatewayError;
use crate::dialect::ProviderDialect;

#[derive(Serialize)]
struct OpenAiBody<'a> {
    error: OpenAiError<'a>,
}

#[derive(Serialize)]
struct OpenAiError<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    code: &'a str,
}

#[derive(Serialize)]
struct AnthropicBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: AnthropicError<'a>,
}

#[derive(Serialize)]
struct AnthropicError<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
}

impl GatewayError {
    /// The OpenAI-shaped body: the shape of every error the gateway writes on its own, on
    /// every route, as the contract says.
    pub fn body(&self) -> Bytes {
        Bytes::from(self.json(ProviderDialect::OpenAiChat))
    }

    /// The body in `dialect`'s shape (a provider's error passed on to a client of that dialect).
    pub fn body_in(&self, dialect: ProviderDialect) -> Bytes {
        Bytes::from(self.json(dialect))
    }

    /// The error as the last event of a stream already under way, in `dialect`'s form.
    pub fn stream_event(&self, dialect: ProviderDialect) -> Bytes {
        let json = self.json(dialect);
        let mut out = BytesMut::with_capacity(json.len() + 24);
        if dialect == ProviderDialect::AnthropicMessages {
            out.put_slice(b"event: error\n");
        }
        out.put_slice(b"data: ");
        out.put_slice(&json);
        out.put_slice(b"\n\n");
        out.freeze()
    }

    fn json(&self, dialect: ProviderDialect) -> Vec<u8> {
        let parts = self.kind.parts();
        let written = match dialect {
            ProviderDialect::OpenAiChat => serde_json::to_vec(&OpenAiBody {
                error: OpenAiError {
                    message: &self.message,
                    kind: parts.openai_type,
                    code: parts.code,
                },
            }),
            ProviderDialect::AnthropicMessages => serde_json::to_vec(&AnthropicBody {
                kind: "error",
                error: AnthropicError {
                    kind: parts.anthropic_type,
                    message: &self.message,
                },
            }),
        };
        // Serialising a few strings cannot fail.
        written.unwrap_or_else(|e| {
            wrapx_core::never!("an error body does not serialise: {e}");
            br#"{"error":{"message":"Internal error.","type":"server_error","code":"internal_error"}}"#
                .to_vec()
        })
    }
}
