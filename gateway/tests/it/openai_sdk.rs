//! The official OpenAI Python SDK against `…/w/{endpoint_id}/v1`: a completion, a stream and an
//! auth error, as a production client sees them.

use std::time::Duration;

use crate::common::{python_json, Env, Gateway};
use serde_json::Value;
use wrapx_benches::mock_llm::MockConfig;
use wrapx_core::events::UsageSource;

const SCRIPT: &str = r#"
import json, sys, openai
base, key = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base, api_key=key, max_retries=0)
out = {}
r = client.chat.completions.create(model="anything", messages=[{"role": "user", "content": "hi"}])
out["completion"] = r.choices[0].message.content
out["usage"] = r.usage.completion_tokens
def stream(**extra):
    pieces, usage = [], None
    for chunk in client.chat.completions.create(model="anything", messages=[{"role": "user", "content": "hi"}], stream=True, **extra):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage.completion_tokens
    return len(pieces), usage
out["stream_pieces"], out["stream_usage"] = stream(stream_options={"include_usage": True})
out["plain_stream_pieces"], out["plain_stream_usage"] = stream()
bad = openai.OpenAI(base_url=base, api_key="wxk_not-a-real-key", max_retries=0)
try:
    bad.chat.completions.create(model="anything", messages=[{"role": "user", "content": "hi"}])
    out["auth_error"] = None
except openai.AuthenticationError as e:
    out["auth_error"] = [e.status_code, e.code, bool(e.response.headers.get("x-request-id"))]
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_openai_sdk_completes_streams_and_sees_auth_errors() {
    let env = Env::new(MockConfig {
        chunks: 4,
        ..MockConfig::default()
    })
    .await;
    let api = env.api().await;
    let gw = Gateway::start(&env).await;
    let base = gw.url(&format!("/w/{}/v1", api.endpoint));
    let result = python_json(SCRIPT, vec![base, api.key.clone()]).await;
    assert!(
        result["completion"].as_str().is_some_and(|s| !s.is_empty()),
        "{result}"
    );
    assert_eq!(result["usage"], 4);
    assert_eq!(result["stream_pieces"], 4);
    assert_eq!(result["stream_usage"], 4);
    // The usage chunk reaches only a client that asked for it; its tokens are logged anyway.
    assert_eq!(result["plain_stream_pieces"], 4);
    assert_eq!(result["plain_stream_usage"], Value::Null);
    assert_eq!(
        result["auth_error"],
        serde_json::json!([401, "invalid_api_key", true])
    );
    let events = env.events(3, Duration::from_secs(10)).await;
    assert_eq!(events.len(), 3);
    assert!(events
        .iter()
        .all(|e| e.usage.completion_tokens == 4 && e.usage.source == UsageSource::Reported));
}
