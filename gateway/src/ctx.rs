//! The per-request state shared by the proxy phases, and the one event it becomes at the end.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use serde_json::Value;
use tokio::sync::Notify;
use uuid::Uuid;
use wrapx_core::events::{RequestEvent, RequestOutcome, Usage};

use crate::{
    auth::Identity,
    errors::GatewayError,
    limits::Decision,
    providers::{AnswerTranslator, ProviderDialect},
    routes::Route,
    upstream::FailureClass,
    usage::UsageMeter,
    watchdog::Watchdog,
};

/// Requests in flight, so a stopping gateway can wait for them.
#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

impl InFlight {
    pub fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self.clone())
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Resolves once no request is in flight.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[derive(Debug)]
pub struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Everything the phases learn about one request.
#[derive(Debug)]
pub struct RequestCtx {
    /// Also the `x-request-id` header and the event's id.
    pub request_id: Uuid,
    pub started: Instant,
    pub route: Option<Route>,
    /// Set once the key proved valid: from then on the request is logged.
    pub identity: Option<Identity>,
    /// The gateway's own answer, when it refused the request after the key check.
    pub refusal: Option<(RequestOutcome, String)>,
    pub limit: Option<Decision>,
    pub stream: bool,
    /// The rewritten body the provider gets.
    pub body: Bytes,
    pub request_data: Value,
    pub prompt_estimate: u32,
    pub upstream_started: Option<Instant>,
    pub ttfb: Option<Duration>,
    /// The provider answered 5xx (the client gets a 502).
    pub upstream_5xx: Option<u16>,
    pub failure: Option<FailureClass>,
    pub meter: Option<UsageMeter>,
    /// The answer is a successful event stream: it should end with its last event.
    pub event_stream: bool,
    /// The answer's translation into the client's dialect, when the provider speaks another.
    pub translator: Option<AnswerTranslator>,
    /// The first-byte and idle deadlines of the upstream exchange, once connected.
    pub watchdog: Option<Watchdog>,
    /// A chunked body longer than pingora's retry buffer, still arriving.
    pub pending_body: Option<PendingBody>,
    /// Why the pending body was refused once it had arrived (the answer `fail_to_proxy` gives).
    pub body_refused: Option<GatewayError>,
    _in_flight: InFlightGuard,
}

/// A chunked request body gathered in `request_body_filter` as pingora forwards the request,
/// then rewritten at its end: pingora can hand a body the gateway read itself only from its
/// 64 KiB retry buffer, so a longer chunked body is read this way instead.
#[derive(Debug)]
pub struct PendingBody {
    pub raw: BytesMut,
    /// The dialect the client speaks, for the rewrite.
    pub client: ProviderDialect,
    /// The body deadline (`gateway.body_read_timeout_ms`), counted from the request's start.
    pub deadline: Instant,
}

impl RequestCtx {
    pub fn new(in_flight: InFlightGuard) -> Self {
        Self {
            request_id: Uuid::now_v7(),
            started: Instant::now(),
            route: None,
            identity: None,
            refusal: None,
            limit: None,
            stream: false,
            body: Bytes::new(),
            request_data: Value::Null,
            prompt_estimate: 0,
            upstream_started: None,
            ttfb: None,
            upstream_5xx: None,
            failure: None,
            meter: None,
            event_stream: false,
            translator: None,
            watchdog: None,
            pending_body: None,
            body_refused: None,
            _in_flight: in_flight,
        }
    }

    /// The gateway's own time: until the upstream call started, or all of it when there was none.
    pub fn overhead(&self) -> Duration {
        self.upstream_started.map_or_else(
            || self.started.elapsed(),
            |at| at.duration_since(self.started),
        )
    }

    /// How the request ended, from what the phases saw and the error pingora ended it with.
    pub fn outcome(&self, ended_with_error: bool) -> RequestOutcome {
        if let Some((outcome, _)) = &self.refusal {
            return *outcome;
        }
        // A stream the watchdog cut may look ended to pingora (a close-delimited body).
        if self.watchdog.as_ref().is_some_and(Watchdog::fired) {
            return RequestOutcome::Timeout;
        }
        // A client that closes once the stream's last event has reached it (SDKs do, right
        // after `[DONE]`, while the provider may still be ending its side) got it all.
        let delivered = self.meter.as_ref().is_some_and(UsageMeter::saw_done);
        match self.failure {
            Some(FailureClass::Timeout) => RequestOutcome::Timeout,
            Some(FailureClass::Upstream) => RequestOutcome::UpstreamError,
            Some(FailureClass::ClientGone) if delivered => RequestOutcome::Completed,
            Some(FailureClass::ClientGone) => RequestOutcome::Cancelled,
            Some(FailureClass::Internal) => RequestOutcome::UpstreamError,
            None if self.upstream_5xx.is_some() => RequestOutcome::UpstreamError,
            None if ended_with_error && !delivered => RequestOutcome::Cancelled,
            None => RequestOutcome::Completed,
        }
    }

    /// The answer's usage: the translator's when it translated, else what the meter read.
    pub fn usage(&mut self) -> Usage {
        if let Some(u) = self.translator.as_ref().and_then(AnswerTranslator::usage) {
            return u;
        }
        let prompt_estimate = self.prompt_estimate;
        self.meter
            .as_mut()
            .map(|m| m.finish(prompt_estimate))
            .unwrap_or_default()
    }

    /// The request's one event; `None` when no valid key was presented.
    pub fn event(
        &mut self,
        status: u16,
        outcome: RequestOutcome,
        usage: Usage,
        error: Option<String>,
    ) -> Option<RequestEvent> {
        let identity = self.identity.as_ref()?;
        let record = &identity.api.record;
        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        Some(RequestEvent {
            request_id: self.request_id,
            occurred_at: chrono::Utc::now(),
            key_id: identity.key.key_id,
            wrapped_api_id: record.id,
            user_id: record.user_id,
            provider: record.provider,
            model: record.model.clone(),
            status,
            outcome,
            stream: self.stream,
            latency_ms: ms(self.started.elapsed()),
            ttfb_ms: self.ttfb.map(ms),
            usage,
            request_data: std::mem::take(&mut self.request_data),
            response_data: self
                .meter
                .as_ref()
                .map_or(Value::Null, UsageMeter::response_data),
            error,
            config_version: record.config_version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_ctx(sent: &[u8]) -> RequestCtx {
        let mut ctx = RequestCtx::new(Arc::new(InFlight::default()).enter());
        let mut meter = UsageMeter::new(true, 1024);
        meter.feed(sent);
        ctx.meter = Some(meter);
        ctx.failure = Some(FailureClass::ClientGone);
        ctx
    }

    #[test]
    fn a_client_gone_after_the_last_event_got_it_all() {
        let whole = stream_ctx(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n",
        );
        assert_eq!(whole.outcome(true), RequestOutcome::Completed);
        let cut = stream_ctx(b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n");
        assert_eq!(cut.outcome(true), RequestOutcome::Cancelled);
    }
}
