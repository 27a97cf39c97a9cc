//! The admin API's tests, one binary: the real application on port 0 against its own database,
//! Redis prefix and vhost, driven over HTTP (`auth`, `contract`, `isolation`, `routing`,
//! `side_effects`), and schemathesis against its OpenAPI document (`fuzz_openapi`).
//!
//! `side_effects` installs a process-wide tracing subscriber to read the logs; nextest runs each
//! test in its own process, so no other test's lines mix in.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod auth;
mod common;
mod contract;
mod fuzz_openapi;
mod isolation;
mod routing;
mod side_effects;
