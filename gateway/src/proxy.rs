//! The hot path: pingora's phases, in the order they run, each a short function that hands the
//! work to a named module (`routes`, `auth`, `limits`, `rewrite`, `upstream`, `usage`,
//! `events`).

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use wrapx_core::events::{Event, RequestOutcome};

use crate::{
    auth::{presented_key, Authenticator},
    ctx::{InFlight, PendingBody, RequestCtx},
    errors::{ErrorKind, GatewayError},
    events::EventPublisher,
    limits::RateLimiter,
    metrics,
    providers::{AnswerTranslator, ProviderDialect},
    respond::{self, Body, BodyError},
    rewrite,
    routes::{Endpoint, Route},
    upstream::{self, FailureClass, Timeouts},
    usage::UsageMeter,
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
}

/// How `request_filter` ends: on to the provider, or answered here.
enum Admission {
    Forward,
    Answered,
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(self.in_flight.enter())
    }

    /// Route, key, limit, body: everything that can refuse the request happens here, before
    /// any connection to the provider.
    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<bool> {
        match self.admit(session, ctx).await {
            Ok(Admission::Forward) => Ok(false),
            Ok(Admission::Answered) => Ok(true),
            Err(AdmitError::Refused(error, extra)) => {
                let outcome = if error.kind == ErrorKind::RateLimited {
                    RequestOutcome::RateLimited
                } else {
                    RequestOutcome::Rejected
                };
                ctx.refusal = Some((outcome, error.message.to_string()));
                respond::error(session, ctx.request_id, &error, &extra).await?;
                Ok(true)
            }
            Err(AdmitError::Io(e)) => Err(e),
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<Box<HttpPeer>> {
        let Some(identity) = &ctx.identity else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "no identity at upstream_peer",
            ));
        };
        ctx.upstream_started
            .get_or_insert_with(std::time::Instant::now);
        Ok(identity.api.upstream.peer(&self.timeouts))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<()> {
        let Some(identity) = &ctx.identity else {
            return Err(Error::explain(
                ErrorType::InternalError,
                "no identity at upstream_request_filter",
            ));
        };
        upstream::prepare_request(
            req,
            &identity.api.upstream,
            ProviderDialect::of(identity.api.record.provider),
            &identity.api.authorization,
            // A body still arriving goes out chunked, its length unknown until its end.
            (ctx.pending_body.is_none()).then_some(ctx.body.len()),
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
        if ctx.pending_body.is_some() {
            return self.gather_body(body, end_of_stream, ctx);
        }
        *body = end_of_stream.then(|| ctx.body.clone());
        Ok(())
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
        // A retry on another connection replaces (and so stops) the previous watchdog.
        ctx.watchdog = Watchdog::start(fd, self.timeouts.first_byte, self.timeouts.idle);
        Ok(())
    }

    /// A provider 5xx becomes the contract's 502 (written by `fail_to_proxy`); 2xx and 4xx pass.
    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<()> {
        if let Some(watchdog) = &ctx.watchdog {
            watchdog.progress();
        }
        if ctx.ttfb.is_none() {
            ctx.ttfb = ctx.upstream_started.map(|at| at.elapsed());
        }
        let status = resp.status.as_u16();
        if status >= 500 {
            ctx.upstream_5xx = Some(status);
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
        if let Some(watchdog) = &ctx.watchdog {
            if end_of_stream {
                watchdog.finish();
            } else if body.as_ref().is_some_and(|b| !b.is_empty()) {
                watchdog.progress();
            }
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
        // An informational answer (100 Continue) is not the answer: the translation waits.
        let translator = ctx
            .translator
            .as_mut()
            .filter(|_| resp.status.as_u16() >= 200);
        if let Some(translator) = translator {
            let event_stream = resp
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"));
            let (status, content_type) = translator.header(resp.status.as_u16(), event_stream);
            resp.set_status(status)?;
            resp.remove_header("content-length");
            resp.insert_header("transfer-encoding", "chunked")?;
            resp.insert_header("content-type", content_type)?;
        }
        ctx.event_stream = resp.status.is_success()
            && resp
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"));
        if ctx.event_stream && resp.headers.contains_key(http::header::CONTENT_LENGTH) {
            // A stream may gain an error event at its end (`end_cut_stream`).
            resp.remove_header("content-length");
            resp.insert_header("transfer-encoding", "chunked")?;
        }
        resp.insert_header("x-request-id", ctx.request_id.to_string())?;
        if let Some(decision) = &ctx.limit {
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
        if let Some(translator) = ctx.translator.as_mut() {
            *body = translator.body(body.as_deref(), end_of_stream);
            if end_of_stream && translator.failed() && ctx.failure.is_none() {
                tracing::warn!(request_id = %ctx.request_id, "the provider's answer could not be translated or carried an error");
                ctx.failure = Some(FailureClass::Upstream);
            }
        }
        if let (Some(chunk), Some(meter)) = (body.as_ref(), ctx.meter.as_mut()) {
            meter.feed(chunk);
        }
        if end_of_stream && ctx.translator.is_none() {
            end_cut_stream(body, ctx);
        }
        Ok(None)
    }

    /// The body is held in memory, so a request that failed on a reused (stale) connection can
    /// be sent again whatever its method.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        _session: &mut Session,
        e: Box<Error>,
        _ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        e.retry.decide_reuse(client_reused);
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
        if let Some(error) = ctx.body_refused.take() {
            return self.refuse_gathered_body(session, ctx, error).await;
        }
        let class = if ctx.watchdog.as_ref().is_some_and(Watchdog::fired) {
            FailureClass::Timeout
        } else if ctx.upstream_5xx.is_some() {
            FailureClass::Upstream
        } else {
            FailureClass::of(e)
        };
        ctx.failure = Some(class);
        let no_answer = FailToProxy {
            error_code: 0,
            can_reuse_downstream: false,
        };
        if class == FailureClass::ClientGone || session.response_written().is_some() {
            return no_answer;
        }
        tracing::warn!(request_id = %ctx.request_id, error = %e, "request failed");
        let error = match ctx.upstream_5xx {
            // Anthropic's "overloaded" gets its own code: clients back off from it differently.
            Some(529) => GatewayError::new(ErrorKind::ProviderOverloaded),
            _ => GatewayError::new(class.error_kind()),
        };
        if let Err(write) = respond::final_error(session, ctx.request_id, &error).await {
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
        if let Some(watchdog) = &ctx.watchdog {
            watchdog.finish();
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
        let error = match (&ctx.refusal, outcome) {
            (Some((_, message)), _) => Some(message.clone()),
            (None, RequestOutcome::Completed) => None,
            (None, RequestOutcome::Cancelled) => {
                Some("the client closed the connection".to_owned())
            }
            (None, RequestOutcome::Timeout) => Some("upstream timeout".to_owned()),
            (None, _) => Some(match ctx.upstream_5xx {
                Some(code) => format!("upstream answered {code}"),
                None => e.map_or_else(
                    || "upstream error".to_owned(),
                    |e| e.etype().as_str().to_owned(),
                ),
            }),
        };
        let provider = ctx
            .identity
            .as_ref()
            .map_or("none", |i| i.api.record.provider.as_str());
        // Probes come every few seconds and are not traffic: counted, they inflate the rate.
        if !matches!(ctx.route, Some(Route::Healthz | Route::Readyz)) {
            metrics::request(
                status,
                provider,
                ctx.stream,
                ctx.started.elapsed(),
                ctx.ttfb,
                ctx.overhead(),
                &usage,
            );
        }
        if self.access_log {
            tracing::info!(request_id = %ctx.request_id, status, outcome = outcome.as_str(), latency_ms = ctx.started.elapsed().as_millis() as u64, "request");
        }
        if let Some(event) = ctx.event(status, outcome, usage, error) {
            self.publisher.publish(Event::Request(event));
        }
    }
}

/// A passed-through event stream that ended without its last event (`[DONE]`, `message_stop`)
/// was cut or malformed: the client gets an error event in its dialect rather than a silent
/// end, and the request is logged as an upstream error (or as the timeout that cut it).
/// Translated streams do the same in their translator.
fn end_cut_stream(body: &mut Option<Bytes>, ctx: &mut RequestCtx) {
    let Some(meter) = ctx.meter.as_ref().filter(|_| ctx.event_stream) else {
        return;
    };
    if meter.saw_done() {
        return;
    }
    let timed_out = ctx.watchdog.as_ref().is_some_and(Watchdog::fired);
    let error = GatewayError::with_message(
        if timed_out {
            ErrorKind::UpstreamTimeout
        } else {
            ErrorKind::UpstreamError
        },
        "The provider's stream ended early or was malformed.",
    );
    let event = respond::stream_error_event(meter.is_anthropic(), &error);
    *body = Some(match body.take() {
        Some(chunk) if !chunk.is_empty() => [chunk, event].concat().into(),
        _ => event,
    });
    if ctx.failure.is_none() && !timed_out {
        tracing::warn!(request_id = %ctx.request_id, "the provider's stream ended without its last event");
        ctx.failure = Some(FailureClass::Upstream);
    }
}

/// Records why a pending body was refused, for `logging` and `fail_to_proxy`, and the error
/// that stops pingora forwarding it.
fn refuse_body(ctx: &mut RequestCtx, error: GatewayError) -> Box<Error> {
    ctx.refusal = Some((RequestOutcome::Rejected, error.message.to_string()));
    let status = error.status();
    ctx.body_refused = Some(error);
    Error::explain(ErrorType::HTTPStatus(status), "request body refused")
}

/// Why `admit` stopped a request.
enum AdmitError {
    Refused(GatewayError, Vec<(&'static str, String)>),
    Io(Box<Error>),
}

impl From<GatewayError> for AdmitError {
    fn from(e: GatewayError) -> Self {
        Self::Refused(e, Vec::new())
    }
}

impl Gateway {
    async fn admit(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Admission, AdmitError> {
        let route = Route::resolve(
            &session.req_header().method,
            session.req_header().uri.path(),
        );
        ctx.route = Some(route.clone());
        match route {
            Route::Healthz => {
                return self
                    .answer(session, ctx, 200, Bytes::from_static(br#"{"status":"ok"}"#))
                    .await
            }
            Route::Readyz => return self.readyz(session, ctx).await,
            _ => {}
        }
        if route.endpoint() == Some(&Endpoint::Malformed) {
            return Err(GatewayError::new(ErrorKind::UnknownEndpoint).into());
        }
        let presented = match presented_key(&session.req_header().headers) {
            Ok(key) => key.to_owned(),
            Err(_) if matches!(route, Route::Unknown { .. }) => {
                return Err(GatewayError::new(ErrorKind::UnknownPath).into())
            }
            Err(e) => return Err(e.into()),
        };
        let identity = match self.auth.authenticate(&presented).await {
            Ok(identity) => identity,
            Err(_) if matches!(route, Route::Unknown { .. }) => {
                return Err(GatewayError::new(ErrorKind::UnknownPath).into())
            }
            Err(e) => return Err(e.into()),
        };
        let api = identity.api.clone();
        let active = identity.check_active();
        ctx.identity = Some(identity);
        active?;
        if let Some(Endpoint::Valid(endpoint)) = route.endpoint() {
            if endpoint.as_str() != api.record.endpoint_id {
                return Err(GatewayError::new(ErrorKind::UnknownEndpoint).into());
            }
        }
        let client = match route {
            Route::Models { .. } => {
                return self
                    .answer(session, ctx, 200, api.models_body.clone())
                    .await
            }
            Route::ChatCompletions { .. } => ProviderDialect::OpenAiChat,
            Route::Messages { .. } => ProviderDialect::AnthropicMessages,
            _ => return Err(GatewayError::new(ErrorKind::UnknownPath).into()),
        };

        if let Some(limit) = api.record.rate_limit {
            let decision = self
                .limiter
                .check(
                    ctx.identity
                        .as_ref()
                        .map_or_else(uuid::Uuid::nil, |i| i.key.key_id),
                    limit.limit,
                    Duration::from_secs(u64::from(limit.window_seconds)),
                )
                .await;
            let headers = respond::limit_headers(&decision);
            let allowed = decision.allowed;
            ctx.limit = Some(decision);
            if !allowed {
                metrics::rate_limited();
                return Err(AdmitError::Refused(
                    GatewayError::new(ErrorKind::RateLimited),
                    headers,
                ));
            }
        }

        let raw =
            match respond::read_body(session, self.max_body_bytes, self.body_read_timeout).await {
                Ok(Body::Whole(raw)) => raw,
                Ok(Body::Started(raw)) => {
                    // Each read of the rest is bounded too, so a stalled sender is cut even
                    // when no chunk arrives to check the deadline.
                    session.set_read_timeout(Some(self.body_read_timeout));
                    ctx.pending_body = Some(PendingBody {
                        raw,
                        client,
                        deadline: ctx.started + self.body_read_timeout,
                    });
                    return Ok(Admission::Forward);
                }
                Err(BodyError::Refused(e)) => return Err(e.into()),
                Err(BodyError::Read(e)) => {
                    ctx.failure = Some(FailureClass::ClientGone);
                    return Err(AdmitError::Io(e));
                }
            };
        self.rewrite(ctx, &raw, client)?;
        Ok(Admission::Forward)
    }

    /// Rewrites the client's body for the provider, and readies the reading of the answer.
    fn rewrite(
        &self,
        ctx: &mut RequestCtx,
        raw: &[u8],
        client: ProviderDialect,
    ) -> Result<(), GatewayError> {
        let Some(identity) = &ctx.identity else {
            return Err(GatewayError::new(ErrorKind::Internal));
        };
        let api = identity.api.clone();
        let provider = ProviderDialect::of(api.record.provider);
        let rewritten = rewrite::rewrite(
            raw,
            client,
            provider,
            &api.record,
            &api.prefix_messages,
            self.event_data_max_bytes,
        )?;
        ctx.stream = rewritten.stream;
        ctx.body = rewritten.body;
        ctx.request_data = rewritten.request_data;
        ctx.prompt_estimate = rewritten.prompt_estimate;
        // The meter reads what the client gets, so it reads the client's dialect.
        ctx.meter = Some(match client {
            ProviderDialect::OpenAiChat => {
                UsageMeter::new(rewritten.stream, self.event_data_max_bytes)
            }
            ProviderDialect::AnthropicMessages => {
                UsageMeter::anthropic(rewritten.stream, self.event_data_max_bytes)
            }
        });
        ctx.translator = AnswerTranslator::new(
            client,
            provider,
            &ctx.request_id.to_string(),
            &api.record.model,
            rewritten.client_include_usage,
        );
        Ok(())
    }

    /// One piece of a pending body: kept until the end, then the whole is rewritten and sent.
    /// A refusal (too large, too slow, not a valid request) ends the exchange with the
    /// provider, which has had only the request head, and `fail_to_proxy` answers it.
    fn gather_body(
        &self,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<()> {
        let Some(pending) = ctx.pending_body.as_mut() else {
            return Ok(());
        };
        if let Some(chunk) = body.take() {
            if pending.raw.len() + chunk.len() > self.max_body_bytes {
                return Err(refuse_body(ctx, respond::too_large(self.max_body_bytes)));
            }
            pending.raw.extend_from_slice(&chunk);
        }
        if std::time::Instant::now() > pending.deadline {
            let error = GatewayError::with_message(
                ErrorKind::BodyTimeout,
                format!(
                    "The request body did not arrive within {} ms.",
                    self.body_read_timeout.as_millis()
                ),
            );
            return Err(refuse_body(ctx, error));
        }
        if !end_of_stream {
            // Empty, not `None`: `None` would end the body going upstream.
            *body = Some(Bytes::new());
            return Ok(());
        }
        let Some(PendingBody { raw, client, .. }) = ctx.pending_body.take() else {
            return Ok(());
        };
        if let Err(error) = self.rewrite(ctx, &raw, client) {
            return Err(refuse_body(ctx, error));
        }
        *body = Some(ctx.body.clone());
        Ok(())
    }

    /// The answer to a pending body refused in `gather_body`. The rest of a body too large is
    /// read first (within bounds), so the client gets the 413 rather than a reset.
    async fn refuse_gathered_body(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        error: GatewayError,
    ) -> FailToProxy {
        if error.kind == ErrorKind::BodyTooLarge {
            respond::drain(session, respond::DRAIN_MAX).await;
        }
        let error_code = match respond::final_error(session, ctx.request_id, &error).await {
            Ok(()) => error.status(),
            Err(write) => {
                tracing::debug!(error = %write, "could not write the error answer");
                0
            }
        };
        FailToProxy {
            error_code,
            can_reuse_downstream: false,
        }
    }

    async fn answer(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        status: u16,
        body: Bytes,
    ) -> Result<Admission, AdmitError> {
        respond::json(session, ctx.request_id, status, body, &[])
            .await
            .map_err(AdmitError::Io)?;
        Ok(Admission::Answered)
    }

    /// 200 when Redis and the broker are reachable, else 503 naming what is down.
    async fn readyz(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
    ) -> Result<Admission, AdmitError> {
        let redis = self.auth.redis_ping().await;
        let broker = self.publisher.broker_connected();
        let word = |up: bool| if up { "up" } else { "down" };
        let body = serde_json::json!({"status": if redis && broker { "ready" } else { "not_ready" }, "redis": word(redis), "broker": word(broker)});
        let status = if redis && broker { 200 } else { 503 };
        self.answer(session, ctx, status, Bytes::from(body.to_string()))
            .await
    }
}
