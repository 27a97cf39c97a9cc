//! Domain types shared by the binaries, each parsed once at the edge.

use std::{fmt, str::FromStr};

use rand::Rng;
use serde::{Deserialize, Serialize};

/// The kind of LLM provider an account registers; it decides the wire format and auth header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Openai,
    Anthropic,
    Deepseek,
    /// Any endpoint that speaks OpenAI's Chat Completions: Groq, Mistral, Together,
    /// OpenRouter, Ollama, vLLM…; it needs a base URL.
    OpenaiCompatible,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 4] = [
        Self::Openai,
        Self::Anthropic,
        Self::Deepseek,
        Self::OpenaiCompatible,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Openai => "openai",
            Self::Anthropic => "anthropic",
            Self::Deepseek => "deepseek",
            Self::OpenaiCompatible => "openai_compatible",
        }
    }

    /// The base URL used when the account gives none.
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            Self::Openai => Some("https://api.openai.com/v1"),
            Self::Anthropic => Some("https://api.anthropic.com/v1"),
            Self::Deepseek => Some("https://api.deepseek.com/v1"),
            Self::OpenaiCompatible => None,
        }
    }

    /// Whether the provider speaks Anthropic's Messages API rather than Chat Completions.
    pub fn speaks_anthropic(self) -> bool {
        matches!(self, Self::Anthropic)
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderKind {
    type Err = UnknownVariant;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownVariant(s.to_owned()))
    }
}

/// What the gateway does with a client's own system message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SystemMessagePolicy {
    /// Keep it, after the wrapped API's own system message.
    #[default]
    Keep,
    /// Drop it silently.
    Drop,
    /// Refuse the request with 400.
    Reject,
}

impl SystemMessagePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Keep => "keep",
            Self::Drop => "drop",
            Self::Reject => "reject",
        }
    }
}

impl FromStr for SystemMessagePolicy {
    type Err = UnknownVariant;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Keep, Self::Drop, Self::Reject]
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownVariant(s.to_owned()))
    }
}

/// Billing plans; the database's check constraint lists the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanType {
    Free,
    Starter,
    Pro,
    Enterprise,
}

impl PlanType {
    pub const ALL: [PlanType; 4] = [Self::Free, Self::Starter, Self::Pro, Self::Enterprise];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Starter => "starter",
            Self::Pro => "pro",
            Self::Enterprise => "enterprise",
        }
    }
}

impl FromStr for PlanType {
    type Err = UnknownVariant;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownVariant(s.to_owned()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value {0:?}")]
pub struct UnknownVariant(pub String);

/// The public id of a wrapped API in its URL: `/w/{endpoint_id}/v1/…`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EndpointId(String);

const ENDPOINT_ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
const ENDPOINT_RANDOM_LEN: usize = 20;

impl EndpointId {
    pub const PREFIX: &'static str = "ep_";

    /// 20 characters from a 32-letter alphabet without look-alikes: 100 bits of randomness.
    pub fn generate() -> Self {
        let mut rng = rand::rngs::OsRng;
        let mut id = String::with_capacity(Self::PREFIX.len() + ENDPOINT_RANDOM_LEN);
        id.push_str(Self::PREFIX);
        for _ in 0..ENDPOINT_RANDOM_LEN {
            id.push(ENDPOINT_ALPHABET[rng.gen_range(0..ENDPOINT_ALPHABET.len())] as char);
        }
        Self(id)
    }

    pub fn parse(s: &str) -> Option<Self> {
        let body = s.strip_prefix(Self::PREFIX)?;
        (body.len() == ENDPOINT_RANDOM_LEN && body.bytes().all(|b| ENDPOINT_ALPHABET.contains(&b)))
            .then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EndpointId {
    type Error = UnknownVariant;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s).ok_or(UnknownVariant(s))
    }
}

impl From<EndpointId> for String {
    fn from(id: EndpointId) -> Self {
        id.0
    }
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An email address, trimmed and lower-cased; checked for shape, not deliverability.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Option<Self> {
        let email = raw.trim().to_lowercase();
        let (local, domain) = email.split_once('@')?;
        let ok = !local.is_empty()
            && local.len() <= 64
            && email.len() <= 254
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !email.chars().any(|c| c.is_whitespace() || c.is_control())
            && !domain.contains('@');
        ok.then_some(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<Email> for String {
    fn from(e: Email) -> Self {
        e.0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn endpoint_ids_generate_and_parse() {
        let id = EndpointId::generate();
        assert_eq!(EndpointId::parse(id.as_str()), Some(id.clone()));
        for bad in [
            "",
            "ep_",
            "ep_short",
            "xx_abcdefghijkmnpqrstu",
            "ep_ABCDEFGHIJKMNPQRSTUV",
            "ep_abcdefghijkmnpqrst0",
        ] {
            assert_eq!(EndpointId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            Email::parse("  Ada@Example.COM ").unwrap().as_str(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "a da@example.com",
            "a@b@c.com",
            "ada@.com",
        ] {
            assert!(Email::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn enums_round_trip_through_their_names() {
        for k in ProviderKind::ALL {
            assert_eq!(k.as_str().parse::<ProviderKind>().unwrap(), k);
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::json!(k.as_str())
            );
        }
        for p in PlanType::ALL {
            assert_eq!(p.as_str().parse::<PlanType>().unwrap(), p);
        }
        assert!("gemini".parse::<ProviderKind>().is_err());
    }
}
