//! Admission, `request_filter`'s work: route, key, rate limit and body, in that order. It ends
//! with the request admitted (`Forwarded`, which the later phases take as given) or answered
//! here; from the moment the key proves valid the request is logged whatever happens.

use std::time::Duration;

use bytes::Bytes;
use pingora_error::Error;
use pingora_proxy::Session;
use uuid::Uuid;
use wrapx_core::events::RequestOutcome;

use super::Gateway;
use crate::{
    auth::{presented_key, Identity},
    ctx::{
        AnswerReader, Attempt, Ending, Forwarded, PendingBody, Prepared, RequestBody, RequestCtx,
    },
    errors::{ErrorKind, GatewayError},
    limits::Decision,
    metrics,
    providers::{AnswerTranslator, ProviderDialect},
    respond::{self, Body, BodyError},
    rewrite::{self, Destination},
    routes::{Endpoint, Route},
    routing::plan::{self, Plan},
    usage::UsageMeter,
};

/// What a request with a valid key is, once admission is through with it.
enum Admitted {
    /// The models list, answered here.
    Models(Bytes),
    /// On to the provider.
    Forward {
        client: ProviderDialect,
        body: RequestBody,
        raw: Bytes,
        plan: Plan,
    },
}

/// Why admission stopped a request with a valid key.
enum Stop {
    /// Refused, with the answer's extra headers (`retry-after` and the limit's).
    Refused(GatewayError, Vec<(&'static str, String)>),
    /// The client went away while sending its body.
    ClientGone(Box<Error>),
}

impl From<GatewayError> for Stop {
    fn from(e: GatewayError) -> Self {
        Self::Refused(e, Vec::new())
    }
}

impl Gateway {
    /// `Ok(true)` when the request was answered here, `Ok(false)` when it goes on to the
    /// provider (the context then holds it `Forwarded`).
    pub(super) async fn admit(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<bool> {
        let route = Route::resolve(
            &session.req_header().method,
            session.req_header().uri.path(),
        );
        ctx.set_route(route.clone());
        match route {
            Route::Healthz => {
                let healthy = Bytes::from_static(br#"{"status":"ok"}"#);
                return answer(ctx.request_id(), session, 200, healthy).await;
            }
            Route::Readyz => return self.readyz(session, ctx.request_id()).await,
            _ => {}
        }
        let identity = match self.identify(session, &route).await {
            Ok(identity) => identity,
            // Without a valid key the request is not logged.
            Err(error) => {
                respond::error(session, ctx.request_id(), &error, &[]).await?;
                return Ok(true);
            }
        };
        let mut limit = None;
        let admitted = self
            .admit_caller(session, ctx, &route, &identity, &mut limit)
            .await;
        match admitted {
            Ok(Admitted::Forward {
                client,
                body,
                raw,
                plan,
            }) => {
                ctx.forward(Forwarded {
                    identity,
                    limit,
                    client,
                    body,
                    raw,
                    plan,
                    attempt: Attempt::default(),
                    failure: None,
                });
                Ok(false)
            }
            Ok(Admitted::Models(body)) => {
                ctx.answered(identity, limit, Ending::Served);
                answer(ctx.request_id(), session, 200, body).await
            }
            Err(Stop::Refused(error, extra)) => {
                let written = respond::error(session, ctx.request_id(), &error, &extra).await;
                let outcome = if error.kind == ErrorKind::RateLimited {
                    RequestOutcome::RateLimited
                } else {
                    RequestOutcome::Rejected
                };
                ctx.answered(identity, limit, Ending::Refused { outcome, error });
                written.map(|()| true)
            }
            Err(Stop::ClientGone(e)) => {
                ctx.answered(identity, limit, Ending::ClientGone);
                Err(e)
            }
        }
    }

    /// The route's endpoint and the presented key: a valid key's identity, or the refusal of a
    /// request that is not logged. On an unknown path, a missing or bad key is a 404.
    async fn identify(&self, session: &Session, route: &Route) -> Result<Identity, GatewayError> {
        if route.endpoint() == Some(&Endpoint::Malformed) {
            return Err(GatewayError::new(ErrorKind::UnknownEndpoint));
        }
        let unknown_path = matches!(route, Route::Unknown { .. });
        let or_unknown_path = |e: GatewayError| {
            if unknown_path {
                GatewayError::new(ErrorKind::UnknownPath)
            } else {
                e
            }
        };
        let presented = presented_key(&session.req_header().headers).map_err(or_unknown_path)?;
        self.auth
            .authenticate(presented)
            .await
            .map_err(or_unknown_path)
    }

    /// Everything after the key: the API active, the endpoint matching, the route served, the
    /// limit, the body read and rewritten. `limit` is the decision, once the check ran.
    async fn admit_caller(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        route: &Route,
        identity: &Identity,
        limit: &mut Option<Decision>,
    ) -> Result<Admitted, Stop> {
        let api = &identity.api;
        identity.check_active()?;
        if let Some(Endpoint::Valid(endpoint)) = route.endpoint() {
            if endpoint.as_str() != api.record.endpoint_id {
                return Err(GatewayError::new(ErrorKind::UnknownEndpoint).into());
            }
        }
        let client = match route {
            Route::Models { .. } => return Ok(Admitted::Models(api.models_body.clone())),
            Route::ChatCompletions { .. } => ProviderDialect::OpenAiChat,
            Route::Messages { .. } => ProviderDialect::AnthropicMessages,
            _ => return Err(GatewayError::new(ErrorKind::UnknownPath).into()),
        };

        if let Some(configured) = api.record.rate_limit {
            let decision = self
                .limiter
                .check(
                    identity.key.key_id,
                    configured.limit,
                    Duration::from_secs(u64::from(configured.window_seconds)),
                )
                .await;
            let refused = !decision.allowed;
            let headers = respond::limit_headers(&decision);
            *limit = Some(decision);
            if refused {
                metrics::rate_limited();
                return Err(Stop::Refused(
                    GatewayError::new(ErrorKind::RateLimited),
                    headers,
                ));
            }
        }

        let mut plan = Plan::new(api, plan::first_target(api, &self.cooldowns));
        let (body, raw) =
            match respond::read_body(session, self.max_body_bytes, self.body_read_timeout).await {
                Ok(Body::Whole(raw)) => {
                    let prepared =
                        self.prepare(ctx.request_id(), identity, &raw, client, plan.upcoming())?;
                    (RequestBody::Ready(Box::new(prepared)), raw)
                }
                Ok(Body::Started(raw)) => {
                    // Each read of the rest is bounded too, so a stalled sender is cut even when
                    // no chunk arrives to check the deadline.
                    session.set_read_timeout(Some(self.body_read_timeout));
                    // pingora cannot send a body past its retry buffer twice.
                    plan.body_not_replayable();
                    let pending = PendingBody {
                        raw,
                        deadline: ctx.started() + self.body_read_timeout,
                    };
                    (RequestBody::Pending(pending), Bytes::new())
                }
                Err(BodyError::Refused(e)) => return Err(e.into()),
                Err(BodyError::Read(e)) => return Err(Stop::ClientGone(e)),
            };
        Ok(Admitted::Forward {
            client,
            body,
            raw,
            plan,
        })
    }

    /// Rewrites the client's body for routing target `target`'s provider and model, and
    /// readies the reading of the answer.
    pub(super) fn prepare(
        &self,
        request_id: Uuid,
        identity: &Identity,
        raw: &[u8],
        client: ProviderDialect,
        target: usize,
    ) -> Result<Prepared, GatewayError> {
        let api = &identity.api;
        let Some(to) = api.targets.get(target) else {
            wrapx_core::never!("target {target} of {} targets", api.targets.len());
            return Err(GatewayError::new(ErrorKind::Internal));
        };
        let provider = to.dialect;
        let rewritten = rewrite::rewrite(
            raw,
            client,
            Destination {
                kind: to.kind,
                dialect: to.dialect,
                model: &to.model,
            },
            &api.record,
            &api.prefix_messages,
            self.event_data_max_bytes,
        )?;
        // The meter reads what the client gets, so it reads the client's dialect.
        let meter = match client {
            ProviderDialect::OpenAiChat => {
                UsageMeter::new(rewritten.stream, self.event_data_max_bytes).hiding_usage_chunk(
                    provider == ProviderDialect::OpenAiChat && !rewritten.client_include_usage,
                )
            }
            ProviderDialect::AnthropicMessages => {
                UsageMeter::anthropic(rewritten.stream, self.event_data_max_bytes)
            }
        };
        let translator = AnswerTranslator::new(
            client,
            provider,
            &request_id.to_string(),
            &to.model,
            rewritten.client_include_usage,
        );
        Ok(Prepared {
            target,
            body: rewritten.body,
            stream: rewritten.stream,
            request_data: rewritten.request_data,
            prompt_estimate: rewritten.prompt_estimate,
            answer: AnswerReader {
                meter,
                translator,
                event_stream: false,
            },
        })
    }

    /// 200 when Redis and the broker are reachable, else 503 naming what is down.
    async fn readyz(&self, session: &mut Session, request_id: Uuid) -> pingora_error::Result<bool> {
        let redis = self.auth.redis_ping().await;
        let broker = self.publisher.broker_connected();
        let word = |up: bool| if up { "up" } else { "down" };
        let body = serde_json::json!({"status": if redis && broker { "ready" } else { "not_ready" }, "redis": word(redis), "broker": word(broker)});
        let status = if redis && broker { 200 } else { 503 };
        answer(request_id, session, status, Bytes::from(body.to_string())).await
    }
}

/// Writes one of the gateway's own JSON answers; the request ends answered here.
async fn answer(
    request_id: Uuid,
    session: &mut Session,
    status: u16,
    body: Bytes,
) -> pingora_error::Result<bool> {
    respond::json(session, request_id, status, body, &[]).await?;
    Ok(true)
}
