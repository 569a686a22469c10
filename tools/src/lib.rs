//! Library side of the `ember` tool: fixture loading, execution, benchmarking and input helpers
//! shared by the CLI, tests and benchmarks.

pub mod aot;
pub mod bench;
pub mod conformance;
pub mod embedded;
pub mod exec;
pub mod fixture;
pub mod input;
pub mod program;
