//! Library side of the `ember` tool: fixture loading, execution, benchmarking, whole-block
//! execution, synthetic workloads and input helpers shared by the CLI, tests and benchmarks.

pub mod aot;
pub mod bench;
pub mod block;
pub mod conformance;
pub mod embedded;
pub mod exec;
pub mod fixture;
pub mod input;
pub mod program;
pub mod workload;
