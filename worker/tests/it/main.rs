//! The worker's tests, one binary: the log writer (`logs`), webhook deliveries (`webhooks`, and
//! to HTTPS receivers in `tls`) and the real binary killed and restarted (`kill`), against real
//! RabbitMQ and PostgreSQL.
//!
//! nextest runs each test in its own process, so the metrics recorder the worker installs once
//! per process never mixes two tests' counts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod kill;
mod logs;
mod tls;
mod webhooks;
