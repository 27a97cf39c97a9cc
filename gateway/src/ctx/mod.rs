//! The per-request state the proxy phases share, as the stages a request goes through, and the
//! one event it becomes at the end.
//!
//! A request is [`Stage::Arriving`] until admission decides. It ends [`Stage::Answered`] when
//! the gateway answered it itself after the key proved valid (a refusal, the models list, a
//! client gone while sending its body), or goes on [`Stage::Forwarded`] holding everything
//! admission established: the identity, the limit decision, the request for the provider and
//! how to read the answer. The phases after `request_filter` take that as given; reaching one
//! of them in another stage is a bug (`never!`), not a case with a default. Only a request whose
//! key proved valid (`Answered` or `Forwarded`) becomes an event.

mod attempt;
mod in_flight;

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde_json::Value;
use uuid::Uuid;
use wrapx_core::events::{RequestEvent, RequestOutcome, Usage};

pub use attempt::Attempt;
pub use in_flight::{InFlight, InFlightGuard};

use crate::{
    auth::Identity,
    errors::GatewayError,
    limits::Decision,
    providers::{AnswerTranslator, ProviderDialect},
    routes::Route,
    routing::plan::Plan,
    upstream::FailureClass,
    usage::UsageMeter,
};

/// Everything the phases learn about one request.
#[derive(Debug)]
pub struct RequestCtx {
    /// Also the `x-request-id` header and the event's id.
    request_id: Uuid,
    started: Instant,
    /// Resolved first thing in `request_filter`; `None` only before that.
    route: Option<Route>,
    stage: Stage,
    _in_flight: InFlightGuard,
}

/// Where a request stands.
#[derive(Debug)]
pub enum Stage {
    /// Admission has not decided yet, or refused before a valid key was seen: not logged.
    Arriving,
    /// The key proved valid and the gateway answered the request itself.
    Answered(Box<Answered>),
    /// Admitted: on to the provider.
    Forwarded(Box<Forwarded>),
}

/// A request with a valid key that the gateway answered itself.
#[derive(Debug)]
pub struct Answered {
    pub identity: Identity,
    /// The rate-limit decision, when the check ran.
    pub limit: Option<Decision>,
    pub ending: Ending,
}

/// How a request the gateway answered itself ended.
#[derive(Debug)]
pub enum Ending {
    /// Served with success (the models list).
    Served,
    /// Refused in `request_filter`, which wrote the error.
    Refused {
        outcome: RequestOutcome,
        error: GatewayError,
    },
    /// A body gathered as pingora forwarded the request, refused once it had arrived: the
    /// provider had only the request head, and `fail_to_proxy` writes this error.
    RefusedBody(GatewayError),
    /// The client went away while sending its body.
    ClientGone,
}

/// What admission established for a request going to the provider.
#[derive(Debug)]
pub struct Forwarded {
    pub identity: Identity,
    /// The rate-limit decision, when the API has a limit.
    pub limit: Option<Decision>,
    /// The dialect the client speaks (its route's).
    pub client: ProviderDialect,
    pub body: RequestBody,
    /// The client's body as sent, kept to rewrite it again for another routing target (empty
    /// while a pending body is still arriving).
    pub raw: Bytes,
    /// Which target each attempt goes to, and the attempts so far.
    pub plan: Plan,
    /// The exchange with the provider.
    pub attempt: Attempt,
    /// Why the exchange failed, as `fail_to_proxy` or the answer's reading found.
    pub failure: Option<FailureClass>,
}

/// The body the provider gets.
#[derive(Debug)]
pub enum RequestBody {
    /// Rewritten, with the reader of the answer it asks for.
    Ready(Box<Prepared>),
    /// A chunked body longer than pingora's retry buffer, still arriving. A provider may
    /// answer before it has the whole body; such an answer passes unread.
    Pending(PendingBody),
}

/// A request rewritten for the provider, and how to read its answer.
#[derive(Debug)]
pub struct Prepared {
    /// The routing target (an index into `LoadedApi::targets`) it is rewritten for.
    pub target: usize,
    /// The rewritten body.
    pub body: Bytes,
    pub stream: bool,
    /// The client's request, for the event.
    pub request_data: Value,
    /// A rough prompt size, for usage counted from a stream cut short.
    pub prompt_estimate: u32,
    pub answer: AnswerReader,
}

/// Reads the answer on its way to the client.
#[derive(Debug)]
pub struct AnswerReader {
    /// Reads usage from what the client gets, so it reads the client's dialect.
    pub meter: UsageMeter,
    /// The answer's translation into the client's dialect, when the provider speaks another.
    pub translator: Option<AnswerTranslator>,
    /// The answer is a successful event stream: it should end with its last event.
    pub event_stream: bool,
}

/// A chunked request body gathered in `request_body_filter` as pingora forwards the request,
/// then rewritten at its end: pingora can hand a body the gateway read itself only from its
/// 64 KiB retry buffer, so a longer chunked body is read this way instead.
#[derive(Debug)]
pub struct PendingBody {
    pub raw: BytesMut,
    /// The body deadline (`gateway.body_read_timeout_ms`), counted from the request's start.
    pub deadline: Instant,
}

impl RequestCtx {
    pub fn new(in_flight: InFlightGuard) -> Self {
        Self {
            request_id: Uuid::now_v7(),
            started: Instant::now(),
            route: None,
            stage: Stage::Arriving,
            _in_flight: in_flight,
        }
    }

    pub fn request_id(&self) -> Uuid {
        self.request_id
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn route(&self) -> Option<&Route> {
        self.route.as_ref()
    }

    pub fn set_route(&mut self, route: Route) {
        self.route = Some(route);
    }

    pub fn stage(&self) -> &Stage {
        &self.stage
    }

    /// The request was admitted: on to the provider.
    pub fn forward(&mut self, forwarded: Forwarded) {
        self.stage = Stage::Forwarded(Box::new(forwarded));
    }

    /// The gateway answered a request whose key proved valid.
    pub fn answered(&mut self, identity: Identity, limit: Option<Decision>, ending: Ending) {
        self.stage = Stage::Answered(Box::new(Answered {
            identity,
            limit,
            ending,
        }));
    }

    pub fn forwarded(&self) -> Option<&Forwarded> {
        match &self.stage {
            Stage::Forwarded(f) => Some(f),
            _ => None,
        }
    }

    pub fn forwarded_mut(&mut self) -> Option<&mut Forwarded> {
        match &mut self.stage {
            Stage::Forwarded(f) => Some(f),
            _ => None,
        }
    }

    /// A forwarded request's body, refused once it had arrived: the request ends answered.
    pub fn refuse_body(&mut self, error: GatewayError) {
        let stage = std::mem::replace(&mut self.stage, Stage::Arriving);
        self.stage = match stage {
            Stage::Forwarded(f) => Stage::Answered(Box::new(Answered {
                identity: f.identity,
                limit: f.limit,
                ending: Ending::RefusedBody(error),
            })),
            other => {
                wrapx_core::never!("a body refused in stage {}", other.name());
                other
            }
        };
    }

    /// The identity of a request whose key proved valid.
    pub fn identity(&self) -> Option<&Identity> {
        match &self.stage {
            Stage::Arriving => None,
            Stage::Answered(a) => Some(&a.identity),
            Stage::Forwarded(f) => Some(&f.identity),
        }
    }

    /// The provider kind the request is counted under: the target that answered (or was
    /// tried last) for a forwarded request, the API's own otherwise.
    pub fn provider(&self) -> Option<wrapx_core::types::ProviderKind> {
        match &self.stage {
            Stage::Arriving => None,
            Stage::Answered(a) => Some(a.identity.api.record.provider),
            Stage::Forwarded(f) => f.identity.api.targets.get(f.plan.current()).map(|t| t.kind),
        }
    }

    /// The rate-limit decision, for the `x-ratelimit-*` headers.
    pub fn limit(&self) -> Option<&Decision> {
        match &self.stage {
            Stage::Arriving => None,
            Stage::Answered(a) => a.limit.as_ref(),
            Stage::Forwarded(f) => f.limit.as_ref(),
        }
    }

    /// Whether the client asked for a stream (known once the body was read).
    pub fn stream(&self) -> bool {
        self.prepared().is_some_and(|p| p.stream)
    }

    fn prepared(&self) -> Option<&Prepared> {
        match &self.forwarded()?.body {
            RequestBody::Ready(p) => Some(p),
            RequestBody::Pending(_) => None,
        }
    }

    /// The gateway's own time: until the upstream call started, or all of it when there was none.
    pub fn overhead(&self) -> Duration {
        match self.forwarded().and_then(|f| f.attempt.started()) {
            Some(at) => at.duration_since(self.started),
            None => self.started.elapsed(),
        }
    }

    /// Until the provider's first byte, when it sent one.
    pub fn ttfb(&self) -> Option<Duration> {
        self.forwarded().and_then(|f| f.attempt.ttfb())
    }

    /// How the request ended, from what the phases saw and the error pingora ended it with.
    pub fn outcome(&self, ended_with_error: bool) -> RequestOutcome {
        let f = match &self.stage {
            Stage::Arriving => return RequestOutcome::Rejected,
            Stage::Answered(a) => {
                return match &a.ending {
                    Ending::Served => RequestOutcome::Completed,
                    Ending::Refused { outcome, .. } => *outcome,
                    Ending::RefusedBody(_) => RequestOutcome::Rejected,
                    Ending::ClientGone => RequestOutcome::Cancelled,
                }
            }
            Stage::Forwarded(f) => f,
        };
        // A stream the watchdog cut may look ended to pingora (a close-delimited body).
        if f.attempt.timed_out() {
            return RequestOutcome::Timeout;
        }
        // A client that closes once the stream's last event has reached it (SDKs do, right
        // after `[DONE]`, while the provider may still be ending its side) got it all.
        let delivered = self.prepared().is_some_and(|p| p.answer.meter.saw_done());
        match f.failure {
            Some(FailureClass::Timeout) => RequestOutcome::Timeout,
            Some(FailureClass::Upstream) => RequestOutcome::UpstreamError,
            Some(FailureClass::ClientGone) if delivered => RequestOutcome::Completed,
            Some(FailureClass::ClientGone) => RequestOutcome::Cancelled,
            Some(FailureClass::Internal) => RequestOutcome::UpstreamError,
            None if f.attempt.upstream_5xx().is_some() => RequestOutcome::UpstreamError,
            None if ended_with_error && !delivered => RequestOutcome::Cancelled,
            None => RequestOutcome::Completed,
        }
    }

    /// The message of a refusal the gateway wrote, for the event's `error`.
    pub fn refusal_message(&self) -> Option<&str> {
        match &self.stage {
            Stage::Answered(a) => match &a.ending {
                Ending::Refused { error, .. } | Ending::RefusedBody(error) => Some(&error.message),
                Ending::Served | Ending::ClientGone => None,
            },
            _ => None,
        }
    }

    /// The answer's usage: the translator's when it translated, else what the meter read.
    pub fn usage(&mut self) -> Usage {
        let Some(Forwarded {
            body: RequestBody::Ready(p),
            ..
        }) = self.forwarded_mut()
        else {
            return Usage::default();
        };
        if let Some(u) = p
            .answer
            .translator
            .as_ref()
            .and_then(AnswerTranslator::usage)
        {
            return u;
        }
        p.answer.meter.finish(p.prompt_estimate)
    }

    /// The request's one event; `None` when no valid key was presented.
    pub fn event(
        &mut self,
        status: u16,
        outcome: RequestOutcome,
        usage: Usage,
        error: Option<String>,
    ) -> Option<RequestEvent> {
        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        let latency_ms = ms(self.started.elapsed());
        let ttfb_ms = self.ttfb().map(ms);
        let stream = self.stream();
        // The attempts are listed for an API with a routing; one without has exactly one.
        let attempts = self
            .forwarded()
            .filter(|f| f.identity.api.routing().is_some())
            .map(|f| f.plan.attempts_json(&f.identity.api));
        let (identity, request_data, mut response_data, target) = match &mut self.stage {
            Stage::Arriving => return None,
            Stage::Answered(a) => (&a.identity, Value::Null, Value::Null, 0),
            Stage::Forwarded(f) => {
                let (request_data, response_data) = match &mut f.body {
                    RequestBody::Ready(p) => (
                        std::mem::take(&mut p.request_data),
                        p.answer.meter.response_data(),
                    ),
                    RequestBody::Pending(_) => (Value::Null, Value::Null),
                };
                (&f.identity, request_data, response_data, f.plan.current())
            }
        };
        if let Some(attempts) = attempts {
            response_data = match response_data {
                Value::Object(mut answer) => {
                    answer.insert("attempts".into(), attempts);
                    Value::Object(answer)
                }
                other => serde_json::json!({"body": other, "attempts": attempts}),
            };
        }
        let record = &identity.api.record;
        // Priced and named on the target that answered (the last attempt's).
        let answered_by = &identity.api.targets[target.min(identity.api.targets.len() - 1)];
        Some(RequestEvent {
            request_id: self.request_id,
            occurred_at: chrono::Utc::now(),
            key_id: identity.key.key_id,
            wrapped_api_id: record.id,
            user_id: record.user_id,
            provider: answered_by.kind,
            model: answered_by.model.clone(),
            status,
            outcome,
            stream,
            latency_ms,
            ttfb_ms,
            usage,
            request_data,
            response_data,
            error,
            config_version: record.config_version,
        })
    }
}

impl Stage {
    /// The stage's name, for `never!` reports.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Arriving => "arriving",
            Self::Answered(_) => "answered",
            Self::Forwarded(_) => "forwarded",
        }
    }
}

#[cfg(test)]
mod tests;
