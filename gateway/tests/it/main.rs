//! The gateway's tests, one binary: the real `wrapx-gateway` process on port 0 in front of the
//! mock provider (`proxy`, `providers_anthropic`, `operations`, `faults`, the Python SDKs in
//! `openai_sdk` and `providers_sdk`, the provider layouts in `stream_formats`, HTTPS providers
//! in `tls`), and its parts against real backends (`events_publisher`,
//! `limits_redis`).
//!
//! `events_spool_gauge` keeps a binary of its own: it reads the process-wide metrics recorder,
//! which any other test in its process would also write to.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod events_publisher;
mod faults;
mod limits_redis;
mod openai_sdk;
mod operations;
mod providers_anthropic;
mod providers_sdk;
mod proxy;
mod routing;
mod stream_formats;
mod tls;
