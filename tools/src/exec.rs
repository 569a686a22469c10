//! Executing a fixture in a given mode and comparing results.

use crate::fixture::Fixture;
use ember_compiler::{CompileError, JitRegistry};
use ember_runtime::{EmberEvm, NativeProvider, NoNative};
use revm::context::{BlockEnv, CfgEnv, Context, TxEnv};
use revm::context_interface::result::{ExecutionResult, ResultAndState};
use revm::database::{CacheDB, EmptyDB};
use revm::handler::{ExecuteEvm, MainBuilder, MainContext};
use revm::primitives::{hardfork::SpecId, keccak256, Address, B256};
use std::fmt::Write;
use std::time::{Duration, Instant};

/// Execution mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// revm's interpreter.
    Interp,
    /// Ember's JIT.
    Jit,
    /// An Ember AOT library (`--lib`).
    Aot,
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

/// The revm context fixtures execute in.
pub type FixtureContext = Context<BlockEnv, TxEnv, CfgEnv, CacheDB<EmptyDB>>;

/// An EVM set up for one fixture, for calling its transaction repeatedly (benchmarks). Each
/// call starts from the fixture's pre-state: `transact` never commits.
#[derive(Debug)]
pub struct Runner<P> {
    evm: EmberEvm<FixtureContext, P>,
    tx: TxEnv,
}

impl<P: NativeProvider> Runner<P> {
    /// Sets up `fx` under `spec`; native code comes from `provider`.
    pub fn new(fx: &Fixture, spec: SpecId, provider: P) -> Self {
        let ctx = Context::mainnet()
            .with_db(fx.db.clone())
            .with_block(fx.block.clone())
            .with_cfg(fx.cfg(spec));
        Self {
            evm: EmberEvm::new(ctx.build_mainnet(), provider),
            tx: fx.tx.clone(),
        }
    }

    /// Executes the transaction once (state changes are returned, not committed).
    pub fn call(&mut self) -> Result<ResultAndState, String> {
        self.evm
            .transact(self.tx.clone())
            .map_err(|e| format!("transaction error: {e:?}"))
    }

    /// Executes once and returns the frame counters of that call alone.
    pub fn call_counted(&mut self) -> Result<Outcome, String> {
        let (n0, i0) = (
            self.evm.stats.native_runs.get(),
            self.evm.stats.interpreted_runs.get(),
        );
        let result = self.call()?;
        Ok(Outcome {
            result,
            native_runs: self.evm.stats.native_runs.get() - n0,
            interpreted_runs: self.evm.stats.interpreted_runs.get() - i0,
        })
    }
}

/// Runs `fx` once under `spec` with `provider`.
pub fn run_with<P: NativeProvider>(
    fx: &Fixture,
    spec: SpecId,
    provider: P,
) -> Result<Outcome, String> {
    Runner::new(fx, spec, provider).call_counted()
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

/// A contract that did not compile (it runs in the interpreter).
#[derive(Debug, Clone)]
pub struct CompileFailure {
    /// Addresses holding this code in the fixture's pre-state.
    pub addresses: Vec<Address>,
    /// keccak256 of the code.
    pub code_hash: B256,
    /// Code length in bytes.
    pub code_len: usize,
    /// Why it did not compile.
    pub reason: String,
}

impl std::fmt::Display for CompileFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addrs: Vec<String> = self.addresses.iter().map(|a| a.to_string()).collect();
        let at = if addrs.is_empty() {
            "(no address)".to_string()
        } else {
            addrs.join(", ")
        };
        write!(
            f,
            "{at} ({} bytes, code hash {}): {}",
            self.code_len, self.code_hash, self.reason
        )
    }
}

/// What compiling a fixture's contracts cost and which contracts failed.
#[derive(Debug, Clone, Default)]
pub struct CompileReport {
    /// Wall time spent compiling (all contracts, failures included).
    pub time: Duration,
    /// Contracts compiled by this call.
    pub compiled: usize,
    /// Contracts that failed, with reasons.
    pub failures: Vec<CompileFailure>,
}

/// Like [`compile_fixture`], but also times the work and says which contracts failed.
pub fn compile_fixture_report(fx: &Fixture, spec: SpecId, reg: &mut JitRegistry) -> CompileReport {
    let mut report = CompileReport::default();
    let t = Instant::now();
    for code in &fx.codes {
        match reg.compile(code, spec) {
            Ok(Some(_)) => report.compiled += 1,
            Ok(None) => {}
            Err(e) => report.failures.push(CompileFailure {
                addresses: fx.addresses_of(code),
                code_hash: keccak256(code),
                code_len: code.len(),
                reason: e.to_string(),
            }),
        }
    }
    report.time = t.elapsed();
    report
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
        (ExecutionResult::Halt { reason: x, .. }, ExecutionResult::Halt { reason: y, .. })
            if x != y =>
        {
            let _ = writeln!(out, "halt reason: {x:?} vs {y:?}");
        }
        (
            ExecutionResult::Success { reason: x, .. },
            ExecutionResult::Success { reason: y, .. },
        ) if x != y => {
            let _ = writeln!(out, "success reason: {x:?} vs {y:?}");
        }
        _ => {}
    }
    if ra.tx_gas_used() != rb.tx_gas_used() {
        let _ = writeln!(
            out,
            "gas used: {} vs {}",
            ra.tx_gas_used(),
            rb.tx_gas_used()
        );
    }
    if ra.gas().final_refunded() != rb.gas().final_refunded() {
        let _ = writeln!(
            out,
            "refund: {} vs {}",
            ra.gas().final_refunded(),
            rb.gas().final_refunded()
        );
    }
    if ra.output() != rb.output() {
        let _ = writeln!(out, "output: {:?} vs {:?}", ra.output(), rb.output());
    }
    if ra.logs() != rb.logs() {
        let _ = writeln!(
            out,
            "logs differ: {} vs {} entries",
            ra.logs().len(),
            rb.logs().len()
        );
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
                    let vx = x
                        .storage
                        .get(s)
                        .map(|v| (v.original_value, v.present_value));
                    let vy = y
                        .storage
                        .get(s)
                        .map(|v| (v.original_value, v.present_value));
                    if vx != vy {
                        let _ = writeln!(out, "storage {k}[{s:#x}]: {vx:?} vs {vy:?}");
                    }
                }
            }
            (x, y) => {
                let _ = writeln!(
                    out,
                    "account {k} present: {} vs {}",
                    x.is_some(),
                    y.is_some()
                );
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
