//! Routing's part of the phases: each attempt's target and body, and after a failure whether
//! pingora tries again (API.md, "Routing: retries and fallbacks"). The decisions themselves are
//! `routing::plan`'s; this module reads the failure off pingora's hooks.
//!
//! A request moves on after a connect error, a timeout before the first byte, an exchange
//! broken before the answer's head, or a status in `retry.on_status`; never once the answer's
//! head came or a byte reached the client, so a stream is one clean answer or one error.

use http::HeaderMap;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType};
use uuid::Uuid;
use wrapx_core::routing::DEFAULT_ON_STATUS;

use super::Gateway;
use crate::{
    ctx::{Forwarded, RequestBody},
    routing::{self, plan::Failure},
};

impl Gateway {
    /// Starts the next attempt: waits out a short `retry-after`, rewrites the body when the
    /// target differs from the one it was written for, and gives the target's peer.
    pub(super) async fn next_attempt(
        &self,
        request_id: Uuid,
        f: &mut Forwarded,
    ) -> pingora_error::Result<Box<HttpPeer>> {
        loop {
            let (target, wait) = f.plan.start();
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            f.attempt.start();
            let api = &f.identity.api;
            let rewrite_for = match &f.body {
                RequestBody::Ready(p) if p.target != target => {
                    let (was, now) = (&api.targets[p.target], &api.targets[target]);
                    (was.dialect != now.dialect || was.kind != now.kind || was.model != now.model)
                        .then_some(target)
                }
                _ => None,
            };
            let Some(target) = rewrite_for else {
                if let RequestBody::Ready(p) = &mut f.body {
                    p.target = target;
                }
                return Ok(api.targets[target].upstream.peer(&self.timeouts));
            };
            match self.prepare(request_id, &f.identity, &f.raw, f.client, target) {
                Ok(prepared) => {
                    f.body = RequestBody::Ready(Box::new(prepared));
                    return Ok(f.identity.api.targets[target].upstream.peer(&self.timeouts));
                }
                Err(error) => {
                    tracing::warn!(%request_id, target, error = %error.message, "the request cannot go to this routing target");
                    let more = f.plan.failed(
                        &f.identity.api,
                        &self.cooldowns,
                        Failure::Untranslatable,
                        None,
                        self.max_retry_after,
                    );
                    if more.is_none() {
                        let mut e = Error::explain(
                            ErrorType::ConnectError,
                            "no routing target can take the request",
                        );
                        e.as_up();
                        e.set_retry(false);
                        return Err(e);
                    }
                }
            }
        }
    }

    /// The answer's head came with `status` (not informational). A status in `on_status` with
    /// attempts left ends this attempt (an error pingora retries); otherwise this answer is the
    /// client's.
    pub(super) fn judge_answer(
        &self,
        f: &mut Forwarded,
        status: u16,
        headers: &HeaderMap,
    ) -> pingora_error::Result<()> {
        let api = &f.identity.api;
        let on_status: &[u16] = api
            .routing()
            .map_or(&DEFAULT_ON_STATUS, |r| &r.retry.on_status);
        if !on_status.contains(&status) {
            f.plan.answered(api, &self.cooldowns, status);
            return Ok(());
        }
        // Read from this answer: each attempt's own `retry-after`.
        let retry_after = routing::retry_after(headers);
        let more = f.plan.failed(
            api,
            &self.cooldowns,
            Failure::Status(status),
            retry_after,
            self.max_retry_after,
        );
        if more.is_none() {
            // The last attempt's answer is the client's.
            return Ok(());
        }
        let mut e = Error::explain(
            ErrorType::HTTPStatus(status),
            format!("upstream answered {status}: trying again"),
        );
        e.as_up();
        e.set_retry(true);
        Err(e)
    }

    /// The exchange with the provider broke (`error_while_proxy`).
    pub(super) fn after_broken_exchange(
        &self,
        f: &mut Forwarded,
        e: &mut Error,
        written: bool,
        client_reused: bool,
    ) {
        if f.plan.retry_decided() {
            // `judge_answer` ended the attempt and chose the next.
            e.set_retry(true);
            return;
        }
        // Once the answer's head came or a byte reached the client, this is the answer.
        if written || f.attempt.has_answer() || e.esource() == &ErrorSource::Downstream {
            e.set_retry(false);
            return;
        }
        // A pooled connection the provider had closed: not the provider's failure.
        e.retry.decide_reuse(client_reused);
        if e.retry() {
            let again = f.plan.again();
            e.set_retry(again);
            return;
        }
        let failure = if f.attempt.timed_out() {
            Failure::Timeout
        } else {
            Failure::Upstream
        };
        let more = f.plan.failed(
            &f.identity.api,
            &self.cooldowns,
            failure,
            None,
            self.max_retry_after,
        );
        e.set_retry(more.is_some());
    }

    /// No connection to the provider (`fail_to_connect`).
    pub(super) fn after_connect_failure(&self, f: &mut Forwarded, e: &mut Error) {
        let failure = if e.etype() == &ErrorType::ConnectTimedout {
            Failure::Timeout
        } else {
            Failure::Connect
        };
        let more = f.plan.failed(
            &f.identity.api,
            &self.cooldowns,
            failure,
            None,
            self.max_retry_after,
        );
        e.set_retry(more.is_some());
    }
}
