//! The Wrap-X test kit (a dev-dependency only): per-test backends ([`backends`]), rows seeded
//! as the admin API would write them ([`seed`]), one way to wait for something ([`eventually`]),
//! servers on port 0 whose bound address is read back ([`net`], [`process`]), a
//! private Redis to stop and start ([`redis`]), and a test CA for HTTPS servers ([`tls`]).

// A test kit fails the test that calls it: panicking is how it reports.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

pub mod backends;
pub mod net;
pub mod process;
pub mod redis;
pub mod seed;
pub mod tls;
mod wait;

pub use wait::{eventually, eventually_true};
#[cfg(feature = "mock-llm")]
pub use wrapx_benches::mock_llm;

/// The Python interpreter with the SDKs the end-to-end tests drive (`WRAPX_TEST_PYTHON`, else
/// the workspace's `.venv`, which `scripts/test` makes).
pub fn python() -> std::path::PathBuf {
    std::env::var_os("WRAPX_TEST_PYTHON").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"),
        std::path::PathBuf::from,
    )
}
