//! The hot path: pingora's phases, in the order they run, each a short function that hands the
//! work to a named module (`admit` for routes, keys, limits and the body; `attempts` for
//! routing's retries and fallbacks; `upstream`, `usage`, `events`).
//!
//! `request_filter` admits the request or answers it; every later phase takes the admitted
//! request ([`Forwarded`]) as given, and reaching one without it is a bug (`never!`).

mod admit;
mod attempts;
mod body;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use uuid::Uuid;
use wrapx_core::events::{Event, RequestOutcome};

use crate::{
    auth::Authenticator,
    ctx::{Ending, Forwarded, InFlight, Prepared, RequestBody, RequestCtx, Stage},
    errors::{ErrorKind, GatewayError},
    events::EventPublisher,
    limits::RateLimiter,
    metrics,
    providers::ProviderDialect,
    respond,
    routes::Route,
    routing::cooldown::Cooldowns,
    upstream::{self, FailureClass, Timeouts},
    watchdog::Watchdog,
};

/// What the phases share across requests.
pub struct Gateway {
    pub auth: Authenticator,
    pub limiter: RateLimiter,
    pub publisher: EventPublisher,
    pub in_flight: Arc<InFlight>,
    pub timeouts: Timeouts,
    pub max_body_bytes: usize,
    pub body_read_timeout: Duration,
    pub event_data_max_bytes: usize,
    pub access_log: bool,
    pub cooldowns: Arc<Cooldowns>,
    /// A `retry-after` up to this long is waited out for one more try of the same target.
    pub max_retry_after: Duration,
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(self.in_flight.enter())
    }

    /// Route, key, limit, body: everything that can refuse the request happens here, before
    /// any connection to the provider. `Ok(true)`: answered here.
    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<bool> {
        self.admit(session, ctx).await
    }

    /// Each attempt's target, its body rewritten for that target when the previous attempt's
    /// was another provider kind or model.
    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<Box<HttpPeer>> {
        let request_id = ctx.request_id();
        let f = admitted(ctx, "upstream_peer")?;
        self.next_attempt(request_id, f).await
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<()> {
        let f = admitted(ctx, "upstream_request_filter")?;
        let target = &f.identity.api.targets[f.plan.current()];
        let length = match &f.body {
            RequestBody::Ready(p) => Some(p.body.len()),
            // A body still arriving goes out chunked, its length unknown until its end.
            RequestBody::Pending(_) => None,
        };
        upstream::prepare_request(
            req,
            &target.upstream,
            target.dialect,
            &target.authorization,
            length,
        )
    }

    /// The body was read and rewritten in `request_filter`, or is gathered here when it was
    /// too long for that (`PendingBody`); pingora sends what is set here.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<()> {
        let request_id = ctx.request_id();
        let f = admitted(ctx, "request_body_filter")?;
        if let RequestBody::Ready(p) = &f.body {
            *body = end_of_stream.then(|| p.body.clone());
            return Ok(());
        }
        let Err(error) = self.gather_body(request_id, f, body, end_of_stream) else {
            return Ok(());
        };
        let status = error.status();
        ctx.refuse_body(error);
        Err(Error::explain(
            ErrorType::HTTPStatus(status),
            "request body refused",
        ))
    }

    /// The request is about to go out on this connection: the upstream deadlines start.
    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora_core::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<()> {
        let f = admitted(ctx, "connected_to_upstream")?;
        f.attempt.connected(Watchdog::start(
            fd,
            self.timeouts.first_byte,
            self.timeouts.idle,
        ));
        Ok(())
    }

    /// A status in the routing's `on_status` moves the request on while attempts remain. Of
    /// the answer the client gets, a provider 5xx becomes the contract's 502 (written by
    /// `fail_to_proxy`); 2xx and 4xx pass.
    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<()> {
        let f = admitted(ctx, "upstream_response_filter")?;
        let status = resp.status.as_u16();
        f.attempt.answered(status);
        if status >= 200 {
            self.judge_answer(f, status, &resp.headers)?;
        }
        if status >= 500 {
            return Err(Error::explain(
                ErrorType::HTTPStatus(502),
                format!("upstream answered {status}"),
            ));
        }
        Ok(())
    }

    /// Each chunk from the provider restarts the idle deadline; the last one ends the watch
    /// before pingora may pool the connection.
    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<Option<Duration>> {
        let f = admitted(ctx, "upstream_response_body_filter")?;
        if end_of_stream {
            f.attempt.finish();
        } else if body.as_ref().is_some_and(|b| !b.is_empty()) {
            f.attempt.progress();
        }
        Ok(None)
    }

    /// When the answer is translated, its status and type are the translation's and its length
    /// is unknown until the end.
    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<()> {
        let request_id = ctx.request_id();
        let f = admitted(ctx, "response_filter")?;
        let is_event_stream = |resp: &ResponseHeader| {
            resp.headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"))
        };
        // An answer to a body still arriving passes unread (there is no reader yet).
        let prepared = match &mut f.body {
            RequestBody::Ready(p) => Some(p),
            RequestBody::Pending(_) => None,
        };
        if let Some(p) = prepared {
            // An informational answer (100 Continue) is not the answer: the translation waits.
            let translator = p
                .answer
                .translator
                .as_mut()
                .filter(|_| resp.status.as_u16() >= 200);
            if let Some(translator) = translator {
                let (status, content_type) =
                    translator.header(resp.status.as_u16(), is_event_stream(resp));
                resp.set_status(status)?;
                resp.remove_header("content-length");
                resp.insert_header("transfer-encoding", "chunked")?;
                resp.insert_header("content-type", content_type)?;
            }
            p.answer.event_stream = resp.status.is_success() && is_event_stream(resp);
            if p.answer.event_stream && resp.headers.contains_key(http::header::CONTENT_LENGTH) {
                // A stream may gain an error event at its end (`end_cut_stream`).
                resp.remove_header("content-length");
                resp.insert_header("transfer-encoding", "chunked")?;
            }
        }
        resp.insert_header("x-request-id", request_id.to_string())?;
        resp.insert_header(
            "x-wrapx-attempts",
            respond::attempts_header(f.plan.attempts()),
        )?;
        if let Some(decision) = &f.limit {
            for (name, value) in respond::limit_headers(decision) {
                resp.insert_header(name, value)?;
            }
        }
        Ok(())
    }

    /// Translates the chunk when the client speaks another dialect (a stream's at once, a whole
    /// answer's at its end), then reads usage from what the client gets.
    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<Option<Duration>> {
        let request_id = ctx.request_id();
        let f = admitted(ctx, "response_body_filter")?;
        let Forwarded {
            body: RequestBody::Ready(p),
            client,
            failure,
            attempt,
            ..
        } = f
        else {
            return Ok(None);
        };
        if let Some(translator) = p.answer.translator.as_mut() {
            *body = translator.body(body.as_deref(), end_of_stream);
            if end_of_stream && translator.failed() && failure.is_none() {
                tracing::warn!(%request_id, "the provider's answer could not be translated or carried an error");
                *failure = Some(FailureClass::Upstream);
            }
        }
        // Reads the usage, and drops the usage chunk the client did not ask for.
        p.answer.meter.pass(body, end_of_stream);
        if end_of_stream && p.answer.translator.is_none() {
            end_cut_stream(body, *client, p, attempt.timed_out(), failure, request_id);
        }
        Ok(None)
    }

    /// Whether pingora tries again: another attempt when the exchange broke before the
    /// answer's head (see `attempts`); the body is held in memory, so any method can be sent
    /// again.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        let written = session.response_written().is_some();
        match ctx.forwarded_mut() {
            Some(f) => self.after_broken_exchange(f, &mut e, written, client_reused),
            None => e.set_retry(false),
        }
        e
    }

    /// A connection to the provider could not be made: the next attempt, if any.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        match ctx.forwarded_mut() {
            Some(f) => self.after_connect_failure(f, &mut e),
            None => e.set_retry(false),
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy
    where
        RequestCtx: Send + Sync,
    {
        let request_id = ctx.request_id();
        let no_answer = FailToProxy {
            error_code: 0,
            can_reuse_downstream: false,
        };
        let (class, upstream_5xx) = match ctx.stage() {
            Stage::Answered(a) => match &a.ending {
                Ending::RefusedBody(error) => {
                    let error = error.clone();
                    return body::refuse_gathered_body(session, request_id, &error).await;
                }
                // Refused or served in `request_filter`, whose answer failed to go out, or a
                // client gone while sending: nothing more can be written.
                _ => return no_answer,
            },
            Stage::Arriving => (FailureClass::of(e), None),
            Stage::Forwarded(f) => {
                let class = if f.attempt.timed_out() {
                    FailureClass::Timeout
                } else if f.attempt.upstream_5xx().is_some() {
                    FailureClass::Upstream
                } else {
                    FailureClass::of(e)
                };
                (class, f.attempt.upstream_5xx())
            }
        };
        if let Some(f) = ctx.forwarded_mut() {
            f.failure = Some(class);
        }
        if class == FailureClass::ClientGone || session.response_written().is_some() {
            return no_answer;
        }
        if let Some(why) = crate::tls::describe_tls_failure(e) {
            tracing::warn!(%request_id, "{why}");
        }
        tracing::warn!(%request_id, error = %e, "request failed");
        let error = match upstream_5xx {
            // Anthropic's "overloaded" gets its own code: clients back off from it differently.
            Some(529) => GatewayError::new(ErrorKind::ProviderOverloaded),
            _ => GatewayError::new(class.error_kind()),
        };
        let attempts = ctx.forwarded().map(|f| f.plan.attempts());
        if let Err(write) = respond::final_error(session, request_id, &error, attempts).await {
            tracing::debug!(error = %write, "could not write the error answer");
            return no_answer;
        }
        FailToProxy {
            error_code: error.status(),
            can_reuse_downstream: false,
        }
    }

    /// The end of every request: its one event (when a valid key was presented) and metrics.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if let Some(f) = ctx.forwarded_mut() {
            f.attempt.finish();
            f.plan.end();
        }
        let written = session.response_written().map(|h| h.status.as_u16());
        let outcome = ctx.outcome(e.is_some());
        // A client that hung up before any answer got none: 499, as proxies log it.
        let status = written.unwrap_or(if outcome == RequestOutcome::Cancelled {
            499
        } else {
            500
        });
        let usage = ctx.usage();
        let error = match (ctx.refusal_message(), outcome) {
            (Some(message), _) => Some(message.to_owned()),
            (None, RequestOutcome::Completed) => None,
            (None, RequestOutcome::Cancelled) => {
                Some("the client closed the connection".to_owned())
            }
            (None, RequestOutcome::Timeout) => Some("upstream timeout".to_owned()),
            (None, _) => Some(
                match ctx.forwarded().and_then(|f| f.attempt.upstream_5xx()) {
                    Some(code) => format!("upstream answered {code}"),
                    None => e.map_or_else(
                        || "upstream error".to_owned(),
                        |e| e.etype().as_str().to_owned(),
                    ),
                },
            ),
        };
        let provider = ctx.provider().map_or("none", |kind| kind.as_str());
        // Probes come every few seconds and are not traffic: counted, they inflate the rate.
        if !matches!(ctx.route(), Some(Route::Healthz | Route::Readyz)) {
            metrics::request(
                status,
                provider,
                ctx.stream(),
                ctx.started().elapsed(),
                ctx.ttfb(),
                ctx.overhead(),
                &usage,
            );
        }
        if self.access_log {
            tracing::info!(request_id = %ctx.request_id(), status, outcome = outcome.as_str(), latency_ms = ctx.started().elapsed().as_millis() as u64, "request");
        }
        if let Some(event) = ctx.event(status, outcome, usage, error) {
            self.publisher.publish(Event::Request(event));
        }
    }
}

/// The admitted request, which every phase after `request_filter` takes as given.
fn admitted<'c>(
    ctx: &'c mut RequestCtx,
    phase: &'static str,
) -> pingora_error::Result<&'c mut Forwarded> {
    let stage = ctx.stage().name();
    ctx.forwarded_mut().ok_or_else(|| {
        wrapx_core::never!("{phase} reached in stage {stage}");
        Error::explain(ErrorType::InternalError, "request not admitted")
    })
}

/// A passed-through event stream that ended without its last event (`[DONE]`, `message_stop`)
/// was cut or malformed: the client gets an error event in its dialect rather than a silent
/// end, and the request is logged as an upstream error (or as the timeout that cut it).
/// Translated streams do the same in their translator.
fn end_cut_stream(
    body: &mut Option<Bytes>,
    client: ProviderDialect,
    p: &Prepared,
    timed_out: bool,
    failure: &mut Option<FailureClass>,
    request_id: Uuid,
) {
    let meter = &p.answer.meter;
    if !p.answer.event_stream || meter.saw_done() {
        return;
    }
    let error = GatewayError::with_message(
        if timed_out {
            ErrorKind::UpstreamTimeout
        } else {
            ErrorKind::UpstreamError
        },
        "The provider's stream ended early or was malformed.",
    );
    let event = error.stream_event(client);
    *body = Some(match body.take() {
        Some(chunk) if !chunk.is_empty() => [chunk, event].concat().into(),
        _ => event,
    });
    if failure.is_none() && !timed_out {
        tracing::warn!(%request_id, "the provider's stream ended without its last event");
        *failure = Some(FailureClass::Upstream);
    }
}
