#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use super::*;
use crate::records::{testing::api_record, KeyRecord, LoadedApi};

fn identity() -> Identity {
    let record = api_record();
    Identity {
        key: Arc::new(KeyRecord {
            key_id: Uuid::now_v7(),
            key_hash: String::new(),
            wrapped_api_id: record.id,
            user_id: record.user_id,
            active: true,
            expires_at: None,
        }),
        api: Arc::new(LoadedApi::for_tests(record)),
    }
}

fn forwarded_stream(sent: &[u8]) -> RequestCtx {
    let mut ctx = RequestCtx::new(Arc::new(InFlight::default()).enter());
    let mut meter = UsageMeter::new(true, 1024);
    meter.feed(sent);
    let identity = identity();
    let plan = Plan::new(&identity.api, 0);
    ctx.forward(Forwarded {
        identity,
        limit: None,
        client: ProviderDialect::OpenAiChat,
        raw: Bytes::new(),
        plan,
        body: RequestBody::Ready(Box::new(Prepared {
            target: 0,
            body: Bytes::from_static(b"{}"),
            stream: true,
            request_data: Value::Null,
            prompt_estimate: 1,
            answer: AnswerReader {
                meter,
                translator: None,
                event_stream: true,
            },
        })),
        attempt: Attempt::default(),
        failure: Some(FailureClass::ClientGone),
    });
    ctx
}

#[test]
fn a_client_gone_after_the_last_event_got_it_all() {
    let whole = forwarded_stream(
        b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n",
    );
    assert_eq!(whole.outcome(true), RequestOutcome::Completed);
    let cut = forwarded_stream(b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n");
    assert_eq!(cut.outcome(true), RequestOutcome::Cancelled);
}

#[test]
fn only_a_request_with_a_valid_key_becomes_an_event() {
    let mut arriving = RequestCtx::new(Arc::new(InFlight::default()).enter());
    assert!(arriving
        .event(401, RequestOutcome::Rejected, Usage::default(), None)
        .is_none());

    let mut refused = RequestCtx::new(Arc::new(InFlight::default()).enter());
    refused.answered(
        identity(),
        None,
        Ending::Refused {
            outcome: RequestOutcome::RateLimited,
            error: GatewayError::new(crate::errors::ErrorKind::RateLimited),
        },
    );
    assert_eq!(refused.outcome(false), RequestOutcome::RateLimited);
    assert_eq!(
        refused.refusal_message(),
        Some("Rate limit reached for requests.")
    );
    let event = refused
        .event(429, RequestOutcome::RateLimited, Usage::default(), None)
        .expect("a valid key is logged");
    assert_eq!(event.request_id, refused.request_id());
    assert!(!event.stream);
}

#[test]
fn a_refused_gathered_body_ends_the_request_answered() {
    let mut ctx = forwarded_stream(b"");
    ctx.refuse_body(GatewayError::invalid("bad"));
    assert!(ctx.forwarded().is_none());
    assert_eq!(ctx.outcome(true), RequestOutcome::Rejected);
    assert_eq!(ctx.refusal_message(), Some("bad"));
    assert!(ctx.identity().is_some());
}

#[test]
#[should_panic(expected = "never: a body refused in stage arriving")]
fn refusing_the_body_of_a_request_never_admitted_is_a_bug() {
    let mut ctx = RequestCtx::new(Arc::new(InFlight::default()).enter());
    ctx.refuse_body(GatewayError::invalid("bad"));
}
