//! A chunked body longer than pingora's retry buffer, gathered as pingora forwards the request
//! (`ctx::PendingBody`), rewritten at its end, or refused with the answer `fail_to_proxy`
//! gives.

use bytes::Bytes;
use pingora_proxy::{FailToProxy, Session};
use uuid::Uuid;

use super::Gateway;
use crate::{
    ctx::{Forwarded, RequestBody},
    errors::{ErrorKind, GatewayError},
    respond,
};

impl Gateway {
    /// One piece of a pending body: kept until the end, then the whole is rewritten and sent.
    /// A refusal (too large, too slow, not a valid request) ends the exchange with the
    /// provider, which has had only the request head; the caller records it for
    /// `fail_to_proxy`.
    pub(super) fn gather_body(
        &self,
        request_id: Uuid,
        f: &mut Forwarded,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
    ) -> Result<(), GatewayError> {
        let RequestBody::Pending(pending) = &mut f.body else {
            wrapx_core::never!("gather_body called for a body already rewritten");
            return Err(GatewayError::new(ErrorKind::Internal));
        };
        if let Some(chunk) = body.take() {
            if pending.raw.len() + chunk.len() > self.max_body_bytes {
                return Err(respond::too_large(self.max_body_bytes));
            }
            pending.raw.extend_from_slice(&chunk);
        }
        if std::time::Instant::now() > pending.deadline {
            return Err(GatewayError::with_message(
                ErrorKind::BodyTimeout,
                format!(
                    "The request body did not arrive within {} ms.",
                    self.body_read_timeout.as_millis()
                ),
            ));
        }
        if !end_of_stream {
            // Empty, not `None`: `None` would end the body going upstream.
            *body = Some(Bytes::new());
            return Ok(());
        }
        let raw = std::mem::take(&mut pending.raw).freeze();
        let prepared = self.prepare(request_id, &f.identity, &raw, f.client, f.plan.current())?;
        *body = Some(prepared.body.clone());
        f.body = RequestBody::Ready(Box::new(prepared));
        f.raw = raw;
        Ok(())
    }
}

/// The answer to a pending body refused in `gather_body`. The rest of a body too large is
/// read first (within bounds), so the client gets the 413 rather than a reset.
pub(super) async fn refuse_gathered_body(
    session: &mut Session,
    request_id: Uuid,
    error: &GatewayError,
) -> FailToProxy {
    if error.kind == ErrorKind::BodyTooLarge {
        respond::drain(session, respond::DRAIN_MAX).await;
    }
    let error_code = match respond::final_error(session, request_id, error, None).await {
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
