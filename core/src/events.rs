//! The event schema: the only definition of what travels from the gateway and the admin API to
//! the worker over RabbitMQ. Versioned by the `schema` tag: a consumer that meets a schema it
//! does not know dead-letters the message instead of guessing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::types::ProviderKind;

/// Every message on the events exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "schema")]
pub enum Event {
    /// One per gateway request that presented a valid key, whatever its outcome.
    #[serde(rename = "request.v1")]
    Request(RequestEvent),
    /// A change made through the admin API that webhooks may subscribe to.
    #[serde(rename = "admin.v1")]
    Admin(AdminEvent),
}

impl Event {
    /// The id the worker deduplicates on.
    pub fn id(&self) -> Uuid {
        match self {
            Self::Request(r) => r.request_id,
            Self::Admin(a) => a.event_id,
        }
    }

    pub fn event_type(&self) -> EventType {
        match self {
            Self::Request(r) => r.event_type(),
            Self::Admin(a) => a.event_type,
        }
    }

    /// The routing key on the events exchange is the event type.
    pub fn routing_key(&self) -> &'static str {
        self.event_type().as_str()
    }

    pub fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(self)
    }

    pub fn from_json(bytes: &[u8]) -> serde_json::Result<Self> {
        serde_json::from_slice(bytes)
    }
}

/// The content type of a message that carries several events, one JSON document per line
/// (the gateway packs its events so; the admin API sends one event per message).
pub const PACKED_CONTENT_TYPE: &str = "application/x-ndjson";

/// The events of one message body, one per line. A single event (no newline) is one line:
/// serialized JSON never holds a raw newline, so a packed and a single-event message read alike.
pub fn lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    body.split(|&b| b == b'\n').filter(|line| !line.is_empty())
}

/// The event types of the contract; webhooks subscribe to these names (or `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "request.completed")]
    RequestCompleted,
    #[serde(rename = "request.failed")]
    RequestFailed,
    #[serde(rename = "rate_limit.exceeded")]
    RateLimitExceeded,
    #[serde(rename = "key.created")]
    KeyCreated,
    #[serde(rename = "key.revoked")]
    KeyRevoked,
    #[serde(rename = "config.updated")]
    ConfigUpdated,
    /// An account's requests this month crossed 80% of its plan's quota (raised by the worker).
    #[serde(rename = "usage.quota_warning")]
    UsageQuotaWarning,
    /// An account's requests this month reached its plan's quota (raised by the worker).
    #[serde(rename = "usage.quota_exceeded")]
    UsageQuotaExceeded,
}

impl EventType {
    pub const ALL: [EventType; 8] = [
        Self::RequestCompleted,
        Self::RequestFailed,
        Self::RateLimitExceeded,
        Self::KeyCreated,
        Self::KeyRevoked,
        Self::ConfigUpdated,
        Self::UsageQuotaWarning,
        Self::UsageQuotaExceeded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequestCompleted => "request.completed",
            Self::RequestFailed => "request.failed",
            Self::RateLimitExceeded => "rate_limit.exceeded",
            Self::KeyCreated => "key.created",
            Self::KeyRevoked => "key.revoked",
            Self::ConfigUpdated => "config.updated",
            Self::UsageQuotaWarning => "usage.quota_warning",
            Self::UsageQuotaExceeded => "usage.quota_exceeded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// How a gateway request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestOutcome {
    /// The provider answered (2xx or 4xx, passed on as sent).
    Completed,
    /// Refused by the gateway after the key check (400, 403, 404, 413).
    Rejected,
    RateLimited,
    /// Upstream connection error or 5xx (502).
    UpstreamError,
    /// Upstream connect, first-byte or idle timeout (504).
    Timeout,
    /// The client hung up before the answer was complete.
    Cancelled,
}

impl RequestOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Rejected => "rejected",
            Self::RateLimited => "rate_limited",
            Self::UpstreamError => "upstream_error",
            Self::Timeout => "timeout",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Where the token counts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageSource {
    /// The provider reported them.
    Reported,
    /// The gateway counted them from the chunks that passed (a stream cut short).
    Counted,
    /// No tokens were used or none could be known.
    #[default]
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Part of `completion_tokens` spent on reasoning, where the provider says.
    #[serde(default)]
    pub reasoning_tokens: u32,
    #[serde(default)]
    pub source: UsageSource,
}

impl Usage {
    pub fn total(&self) -> u64 {
        u64::from(self.prompt_tokens) + u64::from(self.completion_tokens)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestEvent {
    /// Also the `x-request-id` answer header and the unique `request_id` of `api_logs`.
    pub request_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub key_id: Uuid,
    pub wrapped_api_id: Uuid,
    pub user_id: Uuid,
    pub provider: ProviderKind,
    pub model: String,
    /// The HTTP status the client got.
    pub status: u16,
    pub outcome: RequestOutcome,
    pub stream: bool,
    pub latency_ms: u32,
    /// Until the upstream's first byte; none when the request never reached it.
    pub ttfb_ms: Option<u32>,
    pub usage: Usage,
    /// The client's request and the answer, cut to the configured size.
    pub request_data: serde_json::Value,
    pub response_data: serde_json::Value,
    /// A short, secret-free reason for failures.
    pub error: Option<String>,
    pub config_version: Option<i32>,
}

impl RequestEvent {
    pub fn event_type(&self) -> EventType {
        match self.outcome {
            RequestOutcome::RateLimited => EventType::RateLimitExceeded,
            RequestOutcome::Completed if self.status < 400 => EventType::RequestCompleted,
            _ => EventType::RequestFailed,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminEvent {
    pub event_id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub event_type: EventType,
    pub user_id: Uuid,
    pub wrapped_api_id: Uuid,
    /// What webhooks receive as `data`; never a secret.
    pub data: serde_json::Value,
}

/// One webhook delivery, as it travels through `wrapx.deliveries` and the retry tiers. The
/// `delivery_id` is the `webhook-id` header: it stays the same on every retry, so receivers can
/// deduplicate. The admin API publishes these directly for `POST /webhooks/{id}/test`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    pub delivery_id: String,
    pub webhook_id: Uuid,
    /// The event type, e.g. `request.completed`, or `webhook.test` for a test delivery.
    pub event_type: String,
    /// The body sent: `{"type":…,"timestamp":…,"data":{…}}`.
    pub payload: serde_json::Value,
    /// 0 for the first try; the retry tier index after that.
    pub attempt: u32,
}

impl WebhookDelivery {
    /// Standard Webhooks message ids look like `msg_<id>`.
    pub fn new_id() -> String {
        format!("msg_{}", Uuid::now_v7().simple())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_packed_body_reads_as_its_lines_and_a_single_event_as_one() {
        let a = Event::Request(request(RequestOutcome::Completed, 200));
        let b = Event::Request(request(RequestOutcome::RateLimited, 429));
        let single = a.to_json().unwrap();
        assert_eq!(lines(&single).collect::<Vec<_>>(), vec![single.as_slice()]);
        let mut packed = a.to_json().unwrap();
        packed.push(b'\n');
        packed.extend(b.to_json().unwrap());
        let read: Vec<Event> = lines(&packed)
            .map(|l| Event::from_json(l).unwrap())
            .collect();
        assert_eq!(read, vec![a, b]);
        assert_eq!(lines(b"").count(), 0);
    }

    fn request(outcome: RequestOutcome, status: u16) -> RequestEvent {
        RequestEvent {
            request_id: Uuid::now_v7(),
            occurred_at: Utc::now(),
            key_id: Uuid::now_v7(),
            wrapped_api_id: Uuid::now_v7(),
            user_id: Uuid::now_v7(),
            provider: ProviderKind::Openai,
            model: "gpt-4o-mini".into(),
            status,
            outcome,
            stream: true,
            latency_ms: 12,
            ttfb_ms: Some(3),
            usage: Usage {
                prompt_tokens: 5,
                completion_tokens: 7,
                reasoning_tokens: 0,
                source: UsageSource::Reported,
            },
            request_data: serde_json::json!({"messages": []}),
            response_data: serde_json::Value::Null,
            error: None,
            config_version: Some(2),
        }
    }

    #[test]
    fn events_round_trip_with_their_schema_tag() {
        let event = Event::Request(request(RequestOutcome::Completed, 200));
        let json = event.to_json().unwrap();
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["schema"], "request.v1");
        assert_eq!(Event::from_json(&json).unwrap(), event);
        assert_eq!(event.routing_key(), "request.completed");
    }

    #[test]
    fn unknown_schemas_and_junk_are_refused() {
        assert!(Event::from_json(br#"{"schema":"request.v9","request_id":"x"}"#).is_err());
        assert!(Event::from_json(b"not json").is_err());
        assert!(Event::from_json(br#"{"schema":"request.v1"}"#).is_err());
    }

    #[test]
    fn event_types_follow_outcomes() {
        assert_eq!(
            request(RequestOutcome::Completed, 200).event_type(),
            EventType::RequestCompleted
        );
        assert_eq!(
            request(RequestOutcome::Completed, 400).event_type(),
            EventType::RequestFailed
        );
        assert_eq!(
            request(RequestOutcome::Timeout, 504).event_type(),
            EventType::RequestFailed
        );
        assert_eq!(
            request(RequestOutcome::RateLimited, 429).event_type(),
            EventType::RateLimitExceeded
        );
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert_eq!(
                serde_json::to_value(t).unwrap(),
                serde_json::json!(t.as_str())
            );
        }
    }
}
