//! Benchmark support for Wrap-X: the mock LLM upstream that tests and benchmarks point the
//! gateway at instead of a real provider.

pub mod mock_llm;
pub mod probe;
