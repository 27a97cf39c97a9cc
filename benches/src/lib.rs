//! Benchmark support for Wrap-X.
