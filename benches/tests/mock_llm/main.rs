//! The mock LLM upstream over real HTTP on loopback: answer shapes and formats, pacing, every
//! behaviour by header and by model name, recording, stats and shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod behaviours;
mod formats;
mod recording;
mod shapes;
mod streams;
mod support;
