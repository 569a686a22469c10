//! Ember runtime: the ABI between generated code and Rust ([`abi`]), the builtins generated
//! code calls ([`builtins`]), the opcode table every part of Ember reads ([`opcodes`]), and the
//! revm 43 integration that runs native code instead of the interpreter ([`evm`]).
//!
//! This crate does not link LLVM: it is all a process needs to run precompiled code.

pub mod abi;
pub mod aot;
pub mod builtins;
pub mod evm;
mod observe;
pub mod opcodes;
pub mod parallel;

pub use abi::{EvmContext, NativeFn};
pub use aot::{AotError, AotLibrary, HostTarget, Manifest};
pub use evm::{EmberEvm, ExecStats, FrameRecord, MemoProvider, NativeProvider, NoNative};
pub use parallel::{
    execute_block, execute_block_sequential, BlockError, BlockOutput, ParallelOptions,
    ParallelStats,
};
pub use revm;
