//! In-memory compilation through LLVM's MCJIT, and the JIT registry that serves compiled
//! functions to the runtime.
//!
//! MCJIT (rather than ORC LLJIT) because inkwell 0.11 exposes it safely; each contract is its
//! own module and execution engine, so code is freed per contract. Generated functions carry
//! the host's `target-cpu`/`target-features`, so MCJIT emits code for this machine.

use crate::{analysis::Analysis, codegen, CompileError, OptLevel};
use ember_runtime::{NativeFn, NativeProvider};
use inkwell::context::Context;
use inkwell::execution_engine::ExecutionEngine;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{CodeModel, InitializationConfig, RelocMode, Target, TargetMachine};
use inkwell::OptimizationLevel;
use revm::primitives::{hardfork::SpecId, keccak256, B256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What one compilation did and cost.
#[derive(Clone, Debug, Default)]
pub struct CompileStats {
    /// Analysis counters.
    pub analysis: crate::AnalysisStats,
    /// Time spent in analysis.
    pub analysis_time: Duration,
    /// Time spent generating IR.
    pub codegen_time: Duration,
    /// Time spent in LLVM optimisation passes.
    pub opt_time: Duration,
    /// Time spent emitting machine code.
    pub emit_time: Duration,
    /// Total wall time.
    pub total_time: Duration,
    /// Bytecode length.
    pub code_len: usize,
    /// Optimisation level actually used (lower than requested for very large contracts; see
    /// [`LARGE_CONTRACT_SECTIONS`]).
    pub effective_opt: OptLevel,
}

impl CompileStats {
    /// The stats of a compilation of `a` (`code_len` bytes) at `opt` that started at
    /// `t_start`, given its phase times (`phases` as returned by `build_module`).
    pub(crate) fn new(
        a: &Analysis,
        opt: OptLevel,
        code_len: usize,
        t_start: Instant,
        analysis_time: Duration,
        (codegen_time, opt_time): (Duration, Duration),
        emit_time: Duration,
    ) -> Self {
        Self {
            analysis: a.stats(),
            analysis_time,
            codegen_time,
            opt_time,
            emit_time,
            total_time: t_start.elapsed(),
            code_len,
            effective_opt: opt,
        }
    }
}

/// Contracts with more reachable gas/stack sections than this are compiled at `O0`: LLVM's
/// optimising pipeline and register allocator grow superlinearly with function size (a
/// 24,576-byte run of JUMPDESTs takes minutes at `O2`, under 3 s at `O0`). Seaport, the
/// largest real contract in the benchmark set, has 2,603 sections.
pub const LARGE_CONTRACT_SECTIONS: usize = 3_000;

/// Default size above which contracts are compiled in the [`OptLevel::Fast`] tier: none (only
/// [`LARGE_CONTRACT_SECTIONS`] applies), so benchmarks and embedders get full optimisation
/// unless they ask for a compile-time budget with [`JitCache::with_fast_above`].
pub const DEFAULT_FAST_ABOVE: usize = LARGE_CONTRACT_SECTIONS;

/// The optimisation level used for `a` when `requested` is asked for, with contracts of more
/// than `fast_above` sections moved to the [`OptLevel::Fast`] tier.
pub fn effective_opt_with(a: &Analysis, requested: OptLevel, fast_above: usize) -> OptLevel {
    let sections = a.stats().sections;
    if sections > LARGE_CONTRACT_SECTIONS {
        OptLevel::O0
    } else if sections > fast_above && requested != OptLevel::O0 {
        OptLevel::Fast
    } else {
        requested
    }
}

/// The optimisation level used for `a` when `requested` is asked for.
pub fn effective_opt(a: &Analysis, requested: OptLevel) -> OptLevel {
    effective_opt_with(a, requested, DEFAULT_FAST_ABOVE)
}

/// A compiled module kept alive for as long as its function may be called.
struct JitModule {
    // Field order matters: the engine must drop before the context it borrows.
    _ee: ExecutionEngine<'static>,
    _cx: Box<Context>,
}

// SAFETY: a `JitModule` is only kept alive (never used to compile again) once built; its
// execution engine and context are owned exclusively by it (the module handle that shared the
// engine's reference count is dropped in `compile_one`), and LLVM allows a context and its
// engine to be destroyed on a thread other than the one that created them as long as no other
// thread uses them at the same time, which exclusive ownership guarantees.
unsafe impl Send for JitModule {}

/// Compiles contracts to native functions in memory.
pub struct JitCompiler {
    opt: OptLevel,
    /// Modules compiled one per engine (only with `dump_ir`, which keeps value names).
    modules: Vec<JitModule>,
    /// Long-lived engines, one per machine-code level.
    engines: Vec<Engine>,
    dump_ir: bool,
}

impl std::fmt::Debug for JitCompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitCompiler")
            .field("opt", &self.opt)
            .field("modules", &self.modules.len())
            .field("engines", &self.engines.len())
            .finish()
    }
}

pub(crate) fn init_llvm() -> Result<(), CompileError> {
    static INIT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    INIT.get_or_init(|| {
        // Register-allocator limits: EVM contracts compile to one function with thousands of
        // blocks, where greedy region splitting (`growRegion`) is superlinear; these budgets
        // bound it (measured: snailtracer emit 14.8 s -> 8 s) at no measured run-time cost.
        // `EMBER_LLVM_ARGS` appends options (e.g. `-time-passes`) for debugging.
        let mut args = vec![
            "ember".to_string(),
            "-grow-region-complexity-budget=500".to_string(),
            "-huge-size-for-split=200".to_string(),
            // 256-bit integer code has nothing for the vectorizers, and SLP alone took over
            // two thirds of IR optimisation time on large contracts (seaport: 36 s -> 11 s).
            "-vectorize-slp=false".to_string(),
            "-vectorize-loops=false".to_string(),
        ];
        if let Ok(extra) = std::env::var("EMBER_LLVM_ARGS") {
            args.extend(extra.split_whitespace().map(str::to_string));
        }
        let args: Vec<std::ffi::CString> = args
            .into_iter()
            .filter_map(|a| std::ffi::CString::new(a).ok())
            .collect();
        let ptrs: Vec<*const std::ffi::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        // SAFETY: `ptrs` points at NUL-terminated strings that outlive the call; LLVM copies
        // what it keeps. Called once, before any other LLVM use in this process.
        unsafe {
            inkwell::llvm_sys::support::LLVMParseCommandLineOptions(
                ptrs.len() as i32,
                ptrs.as_ptr(),
                std::ptr::null(),
            )
        };
        Target::initialize_native(&InitializationConfig::default())
    })
    .clone()
    .map_err(CompileError::Llvm)
}

pub(crate) fn llvm_opt(o: OptLevel) -> OptimizationLevel {
    match o {
        OptLevel::O0 | OptLevel::Fast => OptimizationLevel::None,
        OptLevel::O1 => OptimizationLevel::Less,
        OptLevel::O2 => OptimizationLevel::Default,
        OptLevel::O3 => OptimizationLevel::Aggressive,
    }
}

/// Machine-code optimisation level for `opt` (debug knob `EMBER_CODEGEN_OPT=0..3`).
pub(crate) fn codegen_opt(opt: OptLevel) -> OptimizationLevel {
    match std::env::var("EMBER_CODEGEN_OPT")
        .ok()
        .and_then(|s| s.parse::<OptLevel>().ok())
    {
        Some(o) => llvm_opt(o),
        None => llvm_opt(opt),
    }
}

/// A target machine for this host at `opt`.
pub fn host_target_machine(opt: OptLevel) -> Result<TargetMachine, CompileError> {
    init_llvm()?;
    let triple = TargetMachine::get_default_triple();
    let target = Target::from_triple(&triple).map_err(|e| CompileError::Llvm(e.to_string()))?;
    let cpu = TargetMachine::get_host_cpu_name();
    let features = TargetMachine::get_host_cpu_features();
    target
        .create_target_machine(
            &triple,
            cpu.to_str().unwrap_or("generic"),
            features.to_str().unwrap_or(""),
            llvm_opt(opt),
            RelocMode::PIC,
            CodeModel::Default,
        )
        .ok_or_else(|| CompileError::Llvm("could not create a target machine for this host".into()))
}

/// Makes `cx` drop the names of non-global values. Generated functions have tens of thousands
/// of values; keeping their names costs symbol-table work in every pass that creates or
/// deletes instructions (measured: a third of all compile time on a 2,000-section contract).
/// Names are kept when IR is printed.
pub(crate) fn discard_value_names(cx: &Context) {
    use inkwell::context::AsContextRef;
    // SAFETY: `cx` is a live context; the call only sets a flag on it.
    unsafe { inkwell::llvm_sys::core::LLVMContextSetDiscardValueNames(cx.as_ctx_ref(), 1) };
}

/// Builds and optimises the IR module for `code`; returns the textual IR (for `ember ir`).
pub fn emit_ir(code: &[u8], spec: SpecId, opt: OptLevel) -> Result<String, CompileError> {
    let a = crate::analyze(code, spec)?;
    let opt = effective_opt(&a, opt);
    let cx = Context::create();
    let module = cx.create_module("ember");
    let tm = host_target_machine(opt)?;
    build_module(&cx, &module, &a, "contract", &tm, opt)?;
    Ok(module.print_to_string().to_string())
}

pub(crate) fn build_module<'ctx>(
    cx: &'ctx Context,
    module: &inkwell::module::Module<'ctx>,
    a: &Analysis,
    name: &str,
    tm: &TargetMachine,
    opt: OptLevel,
) -> Result<(Duration, Duration), CompileError> {
    let t0 = Instant::now();
    module.set_triple(&tm.get_triple());
    module.set_data_layout(&tm.get_target_data().get_data_layout());
    let f = codegen::translate(cx, module, a, name)?;
    let cpu = tm.get_cpu();
    let features = tm.get_feature_string();
    f.add_attribute(
        inkwell::attributes::AttributeLoc::Function,
        cx.create_string_attribute("target-cpu", cpu.to_str().unwrap_or("generic")),
    );
    f.add_attribute(
        inkwell::attributes::AttributeLoc::Function,
        cx.create_string_attribute("target-features", features.to_str().unwrap_or("")),
    );
    module
        .verify()
        .map_err(|e| CompileError::Llvm(format!("invalid IR: {e}")))?;
    let codegen_time = t0.elapsed();
    let t1 = Instant::now();
    let passes = match opt {
        OptLevel::O0 => "default<O0>",
        OptLevel::O1 => "default<O1>",
        OptLevel::O2 => "default<O2>",
        OptLevel::O3 => "default<O3>",
        // `no-verify-fixpoint`: a custom pipeline otherwise aborts the process when
        // instcombine needs a second iteration.
        OptLevel::Fast => {
            "function(sroa,early-cse<memssa>,instcombine<no-verify-fixpoint>,simplifycfg,dse)"
        }
    };
    // Debugging knob: an explicit pass pipeline.
    let custom = std::env::var("EMBER_PASSES").ok().filter(|p| !p.is_empty());
    let passes = custom.as_deref().unwrap_or(passes);
    let options = PassBuilderOptions::create();
    // See `init_llvm`: no vectorization for 256-bit integer code.
    options.set_loop_slp_vectorization(false);
    options.set_loop_vectorization(false);
    module
        .run_passes(passes, tm, options)
        .map_err(|e| CompileError::Llvm(e.to_string()))?;
    Ok((codegen_time, t1.elapsed()))
}

impl JitCompiler {
    /// A compiler at optimisation level `opt`.
    pub fn new(opt: OptLevel) -> Result<Self, CompileError> {
        init_llvm()?;
        Ok(Self {
            opt,
            modules: Vec::new(),
            engines: Vec::new(),
            dump_ir: false,
        })
    }

    /// Optimisation level in use.
    pub fn opt_level(&self) -> OptLevel {
        self.opt
    }

    /// Print each module's optimised IR to stderr (debugging).
    pub fn set_dump_ir(&mut self, on: bool) {
        self.dump_ir = on;
    }

    /// Compiles `code` for `spec`; the function stays valid as long as `self` lives.
    pub fn compile(
        &mut self,
        code: &[u8],
        spec: SpecId,
    ) -> Result<(NativeFn, CompileStats), CompileError> {
        if self.dump_ir {
            let (f, module, stats) =
                compile_one(code, spec, self.opt, DEFAULT_FAST_ABOVE, self.dump_ir)?;
            self.modules.push(module);
            return Ok((f, stats));
        }
        let t_start = Instant::now();
        let a = crate::analyze(code, spec)?;
        let analysis_time = t_start.elapsed();
        let opt = effective_opt(&a, self.opt);
        let level = codegen_opt(opt);
        let i = match self.engines.iter().position(|e| e.level == level) {
            Some(i) => i,
            None => {
                self.engines.push(Engine::new(level, opt)?);
                self.engines.len() - 1
            }
        };
        self.engines[i].compile(&a, opt, t_start, analysis_time, code.len())
    }
}

/// Compiles one contract into its own context, module and execution engine.
fn compile_one(
    code: &[u8],
    spec: SpecId,
    requested: OptLevel,
    fast_above: usize,
    dump_ir: bool,
) -> Result<(NativeFn, JitModule, CompileStats), CompileError> {
    let t_start = Instant::now();
    let a = crate::analyze(code, spec)?;
    let analysis_time = t_start.elapsed();
    let opt = effective_opt_with(&a, requested, fast_above);
    let cx = Box::new(Context::create());
    if !dump_ir {
        discard_value_names(&cx);
    }
    // SAFETY: the context is boxed (stable address) and is dropped after the engine that
    // borrows it (field order of `JitModule`); nothing else keeps a borrow past this call.
    let cxr: &'static Context = unsafe { &*(cx.as_ref() as *const Context) };
    let module = cxr.create_module("ember");
    let tm = host_target_machine(opt)?;
    let phases = build_module(cxr, &module, &a, "ember_contract", &tm, opt)?;
    if dump_ir {
        eprintln!("{}", module.print_to_string().to_string());
    }
    let t_emit = Instant::now();
    let ee = module
        .create_jit_execution_engine(codegen_opt(opt))
        .map_err(|e| CompileError::Llvm(e.to_string()))?;
    let addr = ee
        .get_function_address("ember_contract")
        .map_err(|e| CompileError::Llvm(e.to_string()))?;
    let emit_time = t_emit.elapsed();
    // SAFETY: the address is the JIT-compiled `i8 (ptr)` function generated above, which
    // has exactly the `NativeFn` ABI; it lives as long as the returned module.
    let f: NativeFn = unsafe { std::mem::transmute::<usize, NativeFn>(addr) };
    // The module handle is dropped here; the engine owns the module from now on.
    drop(module);
    let stats = CompileStats::new(
        &a,
        opt,
        code.len(),
        t_start,
        analysis_time,
        phases,
        emit_time,
    );
    Ok((f, JitModule { _ee: ee, _cx: cx }, stats))
}

/// A long-lived MCJIT engine that many modules (one per contract) are added to, with its own
/// context and target machine. Creating an engine and a target machine costs more than
/// compiling a small contract, so a [`JitCache`] keeps a pool of these and reuses them. An
/// engine is used by one thread at a time (it is taken out of the pool while compiling).
struct Engine {
    // Field order matters: the engine and target machine drop before the context.
    ee: Option<ExecutionEngine<'static>>,
    tm: TargetMachine,
    cx: Box<Context>,
    /// Machine-code optimisation level of the engine (fixed at creation).
    level: OptimizationLevel,
    /// Functions compiled into it (their names must be unique within the engine).
    functions: usize,
}

// SAFETY: an `Engine` is only ever used by the one thread that took it out of the pool, and
// owns its context, target machine and execution engine exclusively (no handle to them
// escapes except the compiled functions' addresses); LLVM allows a context and what lives in
// it to be used from, and destroyed on, any single thread at a time.
unsafe impl Send for Engine {}

impl Engine {
    fn new(level: OptimizationLevel, opt: OptLevel) -> Result<Self, CompileError> {
        let cx = Box::new(Context::create());
        discard_value_names(&cx);
        Ok(Self {
            ee: None,
            tm: host_target_machine(opt)?,
            cx,
            level,
            functions: 0,
        })
    }

    /// Compiles `a` (analysed from `code_len` bytes, starting at `t_start`, analysis taking
    /// `analysis_time`) at `opt` into this engine.
    fn compile(
        &mut self,
        a: &Analysis,
        opt: OptLevel,
        t_start: Instant,
        analysis_time: Duration,
        code_len: usize,
    ) -> Result<(NativeFn, CompileStats), CompileError> {
        // SAFETY: the context is boxed (stable address) and outlives everything created in it:
        // the engine and target machine are dropped before it (field order).
        let cxr: &'static Context = unsafe { &*(self.cx.as_ref() as *const Context) };
        let name = format!("ember_{}", self.functions);
        self.functions += 1;
        let module = cxr.create_module(&name);
        let phases = build_module(cxr, &module, a, &name, &self.tm, opt)?;
        let t_emit = Instant::now();
        match &self.ee {
            Some(ee) => ee
                .add_module(&module)
                .map_err(|()| CompileError::Llvm("cannot add a module to the JIT engine".into()))?,
            None => {
                let ee = module
                    .create_jit_execution_engine(self.level)
                    .map_err(|e| CompileError::Llvm(e.to_string()))?;
                self.ee = Some(ee);
            }
        }
        let ee = self.ee.as_ref().expect("set above");
        let addr = ee
            .get_function_address(&name)
            .map_err(|e| CompileError::Llvm(e.to_string()))?;
        let emit_time = t_emit.elapsed();
        // The machine code now lives in the engine's memory manager; the module's IR is not
        // needed any more. Taking the module out of the engine and dropping it frees the IR
        // (measured at `O0`: 100 mainnet contracts 1.08 GB -> 388 MB RSS; kept, the IR of the
        // 68 mainnet blocks' 4,037 (contract, fork) pairs ran a 24 GiB machine out of memory).
        ee.remove_module(&module)
            .map_err(|e| CompileError::Llvm(format!("cannot release a compiled module: {e:?}")))?;
        drop(module);
        // SAFETY: `addr` is the JIT-compiled `i8 (ptr)` function generated above, which has
        // exactly the `NativeFn` ABI; it lives as long as this engine (removing the module
        // releases its IR, not the loaded object code).
        let f: NativeFn = unsafe { std::mem::transmute::<usize, NativeFn>(addr) };
        let stats = CompileStats::new(a, opt, code_len, t_start, analysis_time, phases, emit_time);
        Ok((f, stats))
    }
}

/// Outcome of one cached compilation: the function, or why the contract was not compiled.
type CacheSlot = Arc<OnceLock<Result<NativeFn, String>>>;

/// Counters of a [`JitCache`].
#[derive(Clone, Debug, Default)]
pub struct JitCacheStats {
    /// Contracts compiled.
    pub compiled: usize,
    /// Contracts that failed to compile (they run in the interpreter).
    pub failed: usize,
    /// Contracts compiled below the requested level because of their size (the fast tier, or
    /// `O0` above [`LARGE_CONTRACT_SECTIONS`]).
    pub tiered_down: usize,
    /// Sum of compile times (across threads, so it can exceed wall time).
    pub compile_time: Duration,
    /// Slowest single compilation and its bytecode length.
    pub slowest: Option<(Duration, usize)>,
}

/// A thread-safe JIT cache: each (code hash, spec) is compiled at most once, by the first
/// thread that asks; other threads asking for the same key wait for that result. Compilations
/// of different keys run in parallel (each has its own LLVM context). Implements
/// [`NativeProvider`] for every thread.
pub struct JitCache {
    opt: OptLevel,
    fast_above: usize,
    slots: Mutex<HashMap<(B256, SpecId), CacheSlot>>,
    /// Idle engines (taken out while a thread compiles into one).
    engines: Mutex<Vec<Engine>>,
    stats: Mutex<JitCacheStats>,
    failures: Mutex<Vec<(B256, SpecId, usize, String)>>,
}

impl std::fmt::Debug for JitCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitCache")
            .field("opt", &self.opt)
            .field("stats", &self.stats())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data in a consistent state.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl JitCache {
    /// An empty cache compiling at `opt`.
    pub fn new(opt: OptLevel) -> Result<Self, CompileError> {
        init_llvm()?;
        Ok(Self {
            opt,
            fast_above: DEFAULT_FAST_ABOVE,
            slots: Mutex::new(HashMap::new()),
            engines: Mutex::new(Vec::new()),
            stats: Mutex::new(JitCacheStats::default()),
            failures: Mutex::new(Vec::new()),
        })
    }

    /// Compiles contracts with more than `sections` gas/stack sections in the
    /// [`OptLevel::Fast`] tier: a compile-time budget for callers that compile many contracts
    /// once each (test runners), where a handful of 1,000+-section contracts would otherwise
    /// dominate.
    pub fn with_fast_above(mut self, sections: usize) -> Self {
        self.fast_above = sections;
        self
    }

    /// Optimisation level in use.
    pub fn opt_level(&self) -> OptLevel {
        self.opt
    }

    /// Section count above which the fast tier is used.
    pub fn fast_above(&self) -> usize {
        self.fast_above
    }

    /// The function for `code` (whose keccak256 is `hash`) under `spec`, compiling it on first
    /// request. A contract that cannot be compiled yields the reason, once per key.
    pub fn get_or_compile(
        &self,
        hash: B256,
        code: &[u8],
        spec: SpecId,
    ) -> Result<NativeFn, String> {
        let slot = lock(&self.slots).entry((hash, spec)).or_default().clone();
        slot.get_or_init(|| match self.compile(code, spec) {
            Ok((f, st)) => {
                let mut s = lock(&self.stats);
                s.compiled += 1;
                if st.effective_opt != self.opt {
                    s.tiered_down += 1;
                }
                s.compile_time += st.total_time;
                if s.slowest.is_none_or(|(t, _)| st.total_time > t) {
                    s.slowest = Some((st.total_time, code.len()));
                }
                Ok(f)
            }
            Err(e) => {
                lock(&self.stats).failed += 1;
                let msg = e.to_string();
                lock(&self.failures).push((hash, spec, code.len(), msg.clone()));
                Err(msg)
            }
        })
        .clone()
    }

    /// Compiles one contract in a pooled engine of the right machine-code level.
    fn compile(&self, code: &[u8], spec: SpecId) -> Result<(NativeFn, CompileStats), CompileError> {
        let t_start = Instant::now();
        let a = crate::analyze(code, spec)?;
        let analysis_time = t_start.elapsed();
        let opt = effective_opt_with(&a, self.opt, self.fast_above);
        let level = codegen_opt(opt);
        let taken = {
            let mut pool = lock(&self.engines);
            pool.iter()
                .position(|e| e.level == level)
                .map(|i| pool.swap_remove(i))
        };
        let mut engine = match taken {
            Some(e) => e,
            None => Engine::new(level, opt)?,
        };
        let r = engine.compile(&a, opt, t_start, analysis_time, code.len());
        lock(&self.engines).push(engine);
        r
    }

    /// Counters so far.
    pub fn stats(&self) -> JitCacheStats {
        lock(&self.stats).clone()
    }

    /// Contracts that failed to compile: code hash, spec, bytecode length, reason.
    pub fn failures(&self) -> Vec<(B256, SpecId, usize, String)> {
        lock(&self.failures).clone()
    }
}

impl NativeProvider for JitCache {
    fn native_fn(&self, code_hash: &B256, spec: SpecId) -> Option<NativeFn> {
        let slot = lock(&self.slots).get(&(*code_hash, spec)).cloned()?;
        slot.get().and_then(|r| r.as_ref().ok().copied())
    }
}

/// An in-memory registry of JIT-compiled contracts keyed by (code hash, spec); implements
/// [`NativeProvider`].
#[derive(Debug)]
pub struct JitRegistry {
    compiler: JitCompiler,
    fns: HashMap<(B256, SpecId), NativeFn>,
    failures: HashMap<(B256, SpecId), String>,
}

impl JitRegistry {
    /// An empty registry compiling at `opt`.
    pub fn new(opt: OptLevel) -> Result<Self, CompileError> {
        Ok(Self {
            compiler: JitCompiler::new(opt)?,
            fns: HashMap::new(),
            failures: HashMap::new(),
        })
    }

    /// Compiles `code` (keyed by its keccak256 hash) for `spec` unless already present.
    /// Returns `None` when it was already compiled.
    pub fn compile(
        &mut self,
        code: &[u8],
        spec: SpecId,
    ) -> Result<Option<CompileStats>, CompileError> {
        let hash = keccak256(code);
        if self.fns.contains_key(&(hash, spec)) {
            return Ok(None);
        }
        match self.compiler.compile(code, spec) {
            Ok((f, stats)) => {
                self.fns.insert((hash, spec), f);
                Ok(Some(stats))
            }
            Err(e) => {
                self.failures.insert((hash, spec), e.to_string());
                Err(e)
            }
        }
    }

    /// Number of compiled functions.
    pub fn len(&self) -> usize {
        self.fns.len()
    }

    /// Whether nothing is compiled.
    pub fn is_empty(&self) -> bool {
        self.fns.is_empty()
    }

    /// Contracts that failed to compile, with reasons (they run in the interpreter).
    pub fn failures(&self) -> impl Iterator<Item = (&(B256, SpecId), &String)> {
        self.failures.iter()
    }
}

impl NativeProvider for JitRegistry {
    fn native_fn(&self, code_hash: &B256, spec: SpecId) -> Option<NativeFn> {
        self.fns.get(&(*code_hash, spec)).copied()
    }
}
