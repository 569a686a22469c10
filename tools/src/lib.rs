//! Library side of the `ember` tool: fixture loading and execution helpers shared by the CLI,
//! tests and benchmarks.

pub mod exec;
pub mod fixture;
