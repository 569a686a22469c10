//! Ember compiler: EVM bytecode analysis ([`analysis`]), LLVM IR generation ([`codegen`]) and
//! in-memory JIT compilation ([`jit`]).
//!
//! Pipeline: bytecode -> [`analysis::Analysis`] -> LLVM IR -> optimised module -> machine code
//! -> [`ember_runtime::NativeFn`] -> [`ember_runtime::EmberEvm`].

pub mod analysis;
pub mod aot;
pub mod codegen;
pub mod jit;

pub use analysis::{Analysis, AnalysisStats};
pub use jit::{CompileStats, JitCache, JitCacheStats, JitCompiler, JitRegistry};
use revm::primitives::hardfork::SpecId;

/// Largest bytecode Ember compiles: EIP-7907's 48 KiB initcode bound covers every deployable
/// contract (EIP-170 runtime code is at most 24 KiB).
pub const MAX_CODE_SIZE: usize = 0xc000;

/// Errors from analysis, code generation and JIT compilation.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// Code larger than [`MAX_CODE_SIZE`].
    #[error("bytecode is {0} bytes, larger than the {MAX_CODE_SIZE}-byte limit")]
    TooLarge(usize),
    /// A fork newer than Ember supports.
    #[error("spec {0:?} is not supported (Ember compiles Frontier through Osaka)")]
    UnsupportedSpec(SpecId),
    /// An opcode or case the code generator does not handle.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// EOF containers are not compiled yet.
    #[error("EOF bytecode is not supported yet")]
    Eof,
    /// An error reported by LLVM.
    #[error("LLVM: {0}")]
    Llvm(String),
    /// Writing objects or linking a shared object failed.
    #[error("link: {0}")]
    Link(String),
}

/// Optimisation level for LLVM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OptLevel {
    /// No IR optimisation, fast instruction selection. Cheapest compile.
    O0,
    /// Light optimisation.
    O1,
    /// The default: full optimisation pipeline at `O2`.
    #[default]
    O2,
    /// Aggressive optimisation.
    O3,
    /// The size tier: a light IR pipeline (SROA, early CSE, instcombine, simplifycfg, DSE) and
    /// LLVM's fast instruction selection and register allocation. Chosen automatically for
    /// large contracts (see [`jit::effective_opt`]); about 10-30x cheaper to compile than `O2`
    /// on 1,000+-section functions, with code close to `O1`.
    Fast,
}

impl std::str::FromStr for OptLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim_start_matches(['O', 'o']) {
            "0" => Ok(Self::O0),
            "1" => Ok(Self::O1),
            "2" => Ok(Self::O2),
            "3" => Ok(Self::O3),
            "fast" | "f" => Ok(Self::Fast),
            _ => Err(format!(
                "invalid optimisation level {s:?} (expected 0..3 or fast)"
            )),
        }
    }
}

/// Analyses `code` for `spec` after checking the limits the compiler enforces.
pub fn analyze(code: &[u8], spec: SpecId) -> Result<Analysis, CompileError> {
    check_input(code, spec)?;
    Ok(Analysis::new(code, spec))
}

/// Checks that `code`/`spec` are something Ember compiles.
pub fn check_input(code: &[u8], spec: SpecId) -> Result<(), CompileError> {
    if code.len() > MAX_CODE_SIZE {
        return Err(CompileError::TooLarge(code.len()));
    }
    if !ember_runtime::opcodes::MAX_SPEC.is_enabled_in(spec) {
        return Err(CompileError::UnsupportedSpec(spec));
    }
    if code.starts_with(&[0xef, 0x00]) {
        return Err(CompileError::Eof);
    }
    Ok(())
}
