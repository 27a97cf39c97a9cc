//! The Wrap-X admin REST API: accounts and sessions, every resource of the contract isolated
//! per account and audited, cache invalidations for the gateways and admin events for the
//! worker. [`Application::build`] binds and reports its port; [`Application::run_until`] serves
//! until the shutdown future resolves, then finishes in-flight requests.

pub mod audit;
pub mod auth;
pub mod error;
pub mod events;
pub mod extract;
pub mod invalidate;
pub mod metrics;
pub mod openapi;
pub mod pagination;
pub mod routes;
pub mod server;
pub mod state;

pub use server::{create_admin, Application};
