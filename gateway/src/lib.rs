//! The Wrap-X gateway: the hot path between API clients and their owners' LLM providers, on
//! pingora. `proxy` holds the phases in order; each hands its work to one module below.

pub mod app;
pub mod auth;
pub mod ctx;
pub mod dialect;
pub mod errors;
pub mod events;
pub mod head_deadline;
pub mod invalidation;
pub mod limits;
pub mod metrics;
pub mod providers;
pub mod proxy;
pub mod records;
pub mod redis_conn;
pub mod respond;
pub mod rewrite;
pub mod routes;
pub mod routing;
pub mod tls;
pub mod upstream;
pub mod usage;
pub mod watchdog;
