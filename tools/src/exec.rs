//! Executing a fixture in a given mode and comparing results.

use crate::fixture::Fixture;
use ember_compiler::{CompileError, JitRegistry};
use ember_runtime::{EmberEvm, NativeProvider, NoNative};
use revm::context::Context;
use revm::context_interface::result::{ExecutionResult, ResultAndState};
use revm::handler::{ExecuteEvm, MainBuilder, MainContext};
use revm::primitives::hardfork::SpecId;
use std::fmt::Write;

/// Execution mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// revm's interpreter.
    Interp,
    /// Ember's JIT.
    Jit,
}

/// Result of one execution, with the frame counters.
#[derive(Debug)]
pub struct Outcome {
    /// revm's result and state changes.
    pub result: ResultAndState,
    /// Frame runs served natively.
    pub native_runs: u64,
    /// Frame runs served by the interpreter.
    pub interpreted_runs: u64,
}

/// Runs `fx` once under `spec` with `provider`.
pub fn run_with<P: NativeProvider>(fx: &Fixture, spec: SpecId, provider: P) -> Result<Outcome, String> {
    let ctx = Context::mainnet()
        .with_db(fx.db.clone())
        .with_block(fx.block.clone())
        .with_cfg(fx.cfg(spec));
    let mut evm = EmberEvm::new(ctx.build_mainnet(), provider);
    let result = evm.transact(fx.tx.clone()).map_err(|e| format!("transaction error: {e:?}"))?;
    Ok(Outcome {
        result,
        native_runs: evm.stats.native_runs.get(),
        interpreted_runs: evm.stats.interpreted_runs.get(),
    })
}

/// Runs in the interpreter.
pub fn run_interp(fx: &Fixture, spec: SpecId) -> Result<Outcome, String> {
    run_with(fx, spec, NoNative)
}

/// Compiles every contract of `fx` into `reg`; returns per-contract errors (those contracts
/// run in the interpreter and are reported).
pub fn compile_fixture(fx: &Fixture, spec: SpecId, reg: &mut JitRegistry) -> Vec<CompileError> {
    let mut errs = Vec::new();
    for code in &fx.codes {
        if let Err(e) = reg.compile(code, spec) {
            errs.push(e);
        }
    }
    errs
}

/// Describes every difference between two outcomes (empty when identical): status, halt
/// reason, gas used, refund, output, logs and state changes.
pub fn diff(a: &ResultAndState, b: &ResultAndState) -> String {
    let mut out = String::new();
    let (ra, rb) = (&a.result, &b.result);
    if std::mem::discriminant(ra) != std::mem::discriminant(rb) {
        let _ = writeln!(out, "status: {} vs {}", status(ra), status(rb));
    }
    match (ra, rb) {
        (ExecutionResult::Halt { reason: x, .. }, ExecutionResult::Halt { reason: y, .. }) if x != y => {
            let _ = writeln!(out, "halt reason: {x:?} vs {y:?}");
        }
        (ExecutionResult::Success { reason: x, .. }, ExecutionResult::Success { reason: y, .. }) if x != y => {
            let _ = writeln!(out, "success reason: {x:?} vs {y:?}");
        }
        _ => {}
    }
    if ra.tx_gas_used() != rb.tx_gas_used() {
        let _ = writeln!(out, "gas used: {} vs {}", ra.tx_gas_used(), rb.tx_gas_used());
    }
    if ra.gas().final_refunded() != rb.gas().final_refunded() {
        let _ = writeln!(out, "refund: {} vs {}", ra.gas().final_refunded(), rb.gas().final_refunded());
    }
    if ra.output() != rb.output() {
        let _ = writeln!(out, "output: {:?} vs {:?}", ra.output(), rb.output());
    }
    if ra.logs() != rb.logs() {
        let _ = writeln!(out, "logs differ: {} vs {} entries", ra.logs().len(), rb.logs().len());
    }
    let mut keys: Vec<_> = a.state.keys().chain(b.state.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        match (a.state.get(k), b.state.get(k)) {
            (Some(x), Some(y)) => {
                if x.info != y.info || x.status != y.status {
                    let _ = writeln!(out, "account {k}: {:?} vs {:?}", x.info, y.info);
                }
                let mut slots: Vec<_> = x.storage.keys().chain(y.storage.keys()).collect();
                slots.sort();
                slots.dedup();
                for s in slots {
                    let vx = x.storage.get(s).map(|v| (v.original_value, v.present_value));
                    let vy = y.storage.get(s).map(|v| (v.original_value, v.present_value));
                    if vx != vy {
                        let _ = writeln!(out, "storage {k}[{s:#x}]: {vx:?} vs {vy:?}");
                    }
                }
            }
            (x, y) => {
                let _ = writeln!(out, "account {k} present: {} vs {}", x.is_some(), y.is_some());
            }
        }
    }
    out
}

/// One-word status of a result.
pub fn status(r: &ExecutionResult) -> String {
    match r {
        ExecutionResult::Success { reason, .. } => format!("success ({reason:?})"),
        ExecutionResult::Revert { .. } => "revert".to_string(),
        ExecutionResult::Halt { reason, .. } => format!("halt ({reason:?})"),
    }
}
