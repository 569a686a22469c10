//! Conformance runners for the official Ethereum test formats: state tests
//! ([`statetest`]) and blockchain tests ([`blocktest`]), in every execution mode.
//!
//! A run walks the given files (directories recursively), executes every case once per mode
//! (one pass over the files per mode, so each mode's wall time is measured on its own), and
//! collects a [`Report`]: per-mode pass/fail/skip counts, every failure with its expected and
//! actual roots, every skip with its reason, per-file errors (unreadable or malformed files:
//! the run continues), and what the JIT compiled.
//!
//! Compiled modes compile every distinct pre-state bytecode once per (code hash, spec) in a
//! shared [`JitCache`]; code that only exists during execution (init code, contracts created by
//! the transaction) runs in the interpreter, and the frame counters in the report say how many
//! frame runs were native and how many interpreted.

pub mod blocktest;
pub mod roots;
pub mod statetest;

use ember_compiler::aot::{panic_message, AotContract, AotOptions, TargetCpu};
use ember_compiler::{JitCache, OptLevel};
use ember_runtime::{AotLibrary, EmberEvm, FrameRecord, NativeFn, NativeProvider};
use indicatif::{ProgressBar, ProgressStyle};
use revm::context::{BlockEnv, CfgEnv, Context, TxEnv};
use revm::context_interface::result::ExecutionResult;
use revm::database::{EmptyDB, State};
use revm::handler::{ExecuteCommitEvm, MainBuilder, MainContext};
use revm::primitives::{hardfork::SpecId, Bytes, B256};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// An execution mode of the conformance runners.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TestMode {
    /// revm's interpreter.
    Interp,
    /// Ember's JIT: pre-state contracts compiled in memory.
    Jit,
    /// Ember's AOT shared objects (not available yet: the AOT issue is pending).
    Aot,
}

impl std::fmt::Display for TestMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TestMode::Interp => "interp",
            TestMode::Jit => "jit",
            TestMode::Aot => "aot",
        })
    }
}

/// Options shared by `ember statetest` and `ember blocktest`.
#[derive(Clone, Debug)]
pub struct Options {
    /// Modes to run, in order.
    pub modes: Vec<TestMode>,
    /// Worker threads.
    pub jobs: usize,
    /// Only tests whose file path or test name contains this.
    pub filter: Option<String>,
    /// JIT optimisation level.
    pub opt: OptLevel,
    /// Contracts with more gas/stack sections than this compile in the fast tier.
    pub fast_above: usize,
    /// On a compiled-mode failure where the interpreter passes, locate the first divergence.
    pub diff: bool,
    /// Draw a progress bar (only drawn when stderr is a terminal).
    pub progress: bool,
    /// Also run tests skipped only for their run time.
    pub include_slow: bool,
    /// AOT mode: load this library instead of compiling the tests' contracts into a
    /// temporary one.
    pub aot_lib: Option<std::path::PathBuf>,
    /// Blocktest: execute each block's transactions with the parallel executor
    /// (`ember_runtime::parallel::execute_block`, Block-STM, always parallel) on this many
    /// threads, then commit its state changes; 0 or 1: one transaction after the other.
    pub block_threads: usize,
}

impl Options {
    /// Whether test `name` of `file` is selected by [`Options::filter`].
    pub fn selects(&self, file: &str, name: &str) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|f| file.contains(f.as_str()) || name.contains(f.as_str()))
    }
}

/// Reads a test file as text; the error is the file's outcome.
pub fn read_test_file(path: &Path) -> Result<String, FileOutcome> {
    std::fs::read_to_string(path).map_err(|e| FileOutcome::error(format!("cannot read: {e}")))
}

/// Parses a test file's JSON as `T` (`what` names the format in the error).
pub fn parse_test_file<T: serde::de::DeserializeOwned>(
    text: &str,
    what: &str,
) -> Result<T, FileOutcome> {
    serde_json::from_str(text)
        .map_err(|e| FileOutcome::error(format!("not a valid {what} file: {e}")))
}

/// Where one case stands.
#[derive(Clone, Debug, Serialize)]
pub struct CaseId {
    /// Test file.
    pub file: String,
    /// Test name inside the file.
    pub test: String,
    /// Fork name as written in the file.
    pub fork: String,
    /// State tests: position in `post.<fork>`; blockchain tests: block number index.
    pub index: usize,
    /// State tests: `[data, gas, value]` indexes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub indexes: Option<[usize; 3]>,
}

impl std::fmt::Display for CaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} :: {} [{} #{}",
            self.file, self.test, self.fork, self.index
        )?;
        if let Some([d, g, v]) = self.indexes {
            write!(f, " d={d} g={g} v={v}")?;
        }
        f.write_str("]")
    }
}

/// One failed case.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    /// The case.
    #[serde(flatten)]
    pub id: CaseId,
    /// Mode it failed in.
    pub mode: TestMode,
    /// What was wrong.
    pub message: String,
    /// Expected post-state root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_root: Option<B256>,
    /// Actual post-state root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual_root: Option<B256>,
    /// Expected logs hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_logs: Option<B256>,
    /// Actual logs hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual_logs: Option<B256>,
    /// Whether the interpreter passes this case (compiled modes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interpreter_passes: Option<bool>,
    /// First differing account or slot, interpreter vs this mode (when the interpreter
    /// passes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_difference: Option<String>,
    /// First diverging frame segment (with `--diff`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub divergence: Option<String>,
}

impl Failure {
    /// A failure of `id` in `mode` with no roots or diagnostics yet.
    pub fn new(id: CaseId, mode: TestMode, message: String) -> Self {
        Self {
            id,
            mode,
            message,
            expected_root: None,
            actual_root: None,
            expected_logs: None,
            actual_logs: None,
            interpreter_passes: None,
            first_difference: None,
            divergence: None,
        }
    }
}

/// Skipped tests, with the reason.
#[derive(Clone, Debug, Serialize)]
pub struct Skip {
    /// Test file.
    pub file: String,
    /// Test name (absent when a whole file is skipped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test: Option<String>,
    /// Fork (when only one fork's cases are skipped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fork: Option<String>,
    /// Mode the skip applies to.
    pub mode: TestMode,
    /// Cases skipped.
    pub cases: usize,
    /// Why.
    pub reason: String,
}

/// A file that could not be run at all (unreadable, malformed JSON, missing fields, bad hex).
#[derive(Clone, Debug, Serialize)]
pub struct FileError {
    /// The file.
    pub file: String,
    /// Mode of the pass that hit it.
    pub mode: TestMode,
    /// The error.
    pub error: String,
}

/// Counters of one mode's pass.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ModeSummary {
    /// The mode (`None` only in `Default`).
    pub mode: Option<TestMode>,
    /// Cases passed.
    pub passed: usize,
    /// Cases failed (file errors count as one failure each).
    pub failed: usize,
    /// Cases skipped.
    pub skipped: usize,
    /// Wall time of the pass, seconds (compilation included).
    pub wall_secs: f64,
    /// Frame runs served by native code.
    pub native_frames: u64,
    /// Frame runs served by the interpreter.
    pub interpreted_frames: u64,
    /// Why the mode did not run, if it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

/// What the JIT compiled during a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CompileSummary {
    /// Optimisation level.
    pub opt: String,
    /// Contracts compiled.
    pub compiled: usize,
    /// Section count above which contracts compile in the fast tier.
    pub fast_above: usize,
    /// Contracts compiled in the fast tier (or at `O0` when huge) because of their size.
    pub tiered_down: usize,
    /// Contracts that did not compile (they ran in the interpreter).
    pub failed: usize,
    /// Sum of per-contract compile times, seconds (across threads).
    pub compile_secs: f64,
    /// Slowest compilation, seconds, and its bytecode length.
    pub slowest: Option<(f64, usize)>,
    /// The contracts that did not compile: code hash, spec, length, reason.
    pub failures: Vec<(B256, String, usize, String)>,
}

/// The library AOT mode ran with.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AotSummary {
    /// Library path (a temporary file, deleted after the run, unless given with `--lib`).
    pub library: String,
    /// Whether this run built it.
    pub built: bool,
    /// Distinct (code, spec) pairs the tests deploy before execution.
    pub contracts: usize,
    /// Functions in the library.
    pub functions: usize,
    /// Library size in bytes.
    pub size_bytes: u64,
    /// Compile wall time, seconds (0 when loaded).
    pub compile_wall_secs: f64,
    /// Sum of per-contract compile times, seconds.
    pub compile_cpu_secs: f64,
    /// Link time, seconds.
    pub link_secs: f64,
    /// Time to read, verify and open the library, seconds.
    pub load_secs: f64,
    /// Contracts that did not compile: code hash, spec, length, reason.
    pub failures: Vec<(B256, String, usize, String)>,
}

/// The result of a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// `statetest` or `blocktest`.
    pub kind: String,
    /// Files found.
    pub files: usize,
    /// Per-mode counters.
    pub modes: Vec<ModeSummary>,
    /// Totals over modes.
    pub passed: usize,
    /// Totals over modes.
    pub failed: usize,
    /// Totals over modes.
    pub skipped: usize,
    /// Every failure.
    pub failures: Vec<Failure>,
    /// Every skip.
    pub skips: Vec<Skip>,
    /// Files that could not be run.
    pub file_errors: Vec<FileError>,
    /// JIT compilation, when a compiled mode ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compile: Option<CompileSummary>,
    /// The AOT library, when AOT mode ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aot: Option<AotSummary>,
    /// One-time set-up before the passes (KZG trusted setup), seconds.
    pub setup_secs: f64,
    /// Total wall time, seconds.
    pub wall_secs: f64,
}

impl Report {
    /// The final line: `N passed, M failed, K skipped`.
    pub fn summary_line(&self) -> String {
        format!(
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )
    }

    /// Human-readable report: per-mode lines, compile summary, failures, skips, file errors.
    /// Ends with [`Report::summary_line`].
    pub fn render(&self, max_failures: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            " setup: {:.2} s (KZG trusted setup, loaded before the timed passes)",
            self.setup_secs
        );
        for m in &self.modes {
            let mode = m.mode.map(|m| m.to_string()).unwrap_or_default();
            if let Some(why) = &m.unavailable {
                let _ = writeln!(out, "{mode:>6}: not run: {why}");
                continue;
            }
            let _ = write!(
                out,
                "{mode:>6}: {} passed, {} failed, {} skipped in {:.2} s",
                m.passed, m.failed, m.skipped, m.wall_secs
            );
            if m.mode != Some(TestMode::Interp) {
                let _ = write!(
                    out,
                    "; frame runs: {} native, {} interpreted (init code, created contracts, \
                     uncompiled code)",
                    m.native_frames, m.interpreted_frames
                );
            }
            out.push('\n');
        }
        if let Some(c) = &self.compile {
            let _ = write!(
                out,
                "   jit: {} contracts compiled at {} ({} above {} sections in the fast tier; \
                 {:.2} s total compile time",
                c.compiled, c.opt, c.tiered_down, c.fast_above, c.compile_secs
            );
            if let Some((t, len)) = c.slowest {
                let _ = write!(out, ", slowest {t:.3} s for {len} bytes");
            }
            let _ = writeln!(
                out,
                "), {} not compiled (run interpreted){}",
                c.failed,
                if c.failures.is_empty() { "" } else { ":" }
            );
            for (hash, spec, len, why) in &c.failures {
                let _ = writeln!(out, "        {hash} ({spec}, {len} bytes): {why}");
            }
        }
        if let Some(a) = &self.aot {
            if a.built {
                let _ = writeln!(
                    out,
                    "   aot: {} of {} contracts compiled into {} ({:.1} MiB) in {:.2} s wall \
                     ({:.2} s CPU), linked in {:.2} s, loaded and verified in {:.3} s; {} not \
                     compiled (run interpreted){}",
                    a.functions,
                    a.contracts,
                    a.library,
                    a.size_bytes as f64 / (1 << 20) as f64,
                    a.compile_wall_secs,
                    a.compile_cpu_secs,
                    a.link_secs,
                    a.load_secs,
                    a.failures.len(),
                    if a.failures.is_empty() { "" } else { ":" }
                );
            } else {
                let _ = writeln!(
                    out,
                    "   aot: library {} ({} functions), loaded and verified in {:.3} s; code \
                     not in it runs interpreted",
                    a.library, a.functions, a.load_secs
                );
            }
            for (hash, spec, len, why) in &a.failures {
                let _ = writeln!(out, "        {hash} ({spec}, {len} bytes): {why}");
            }
        }
        if !self.skips.is_empty() {
            // One line per (file, fork, mode, reason): a file often skips many tests alike.
            let mut groups: Vec<(String, TestMode, &str, usize, usize)> = Vec::new();
            for s in &self.skips {
                let what = match &s.fork {
                    Some(f) => format!("{} [{f}]", s.file),
                    None => s.file.clone(),
                };
                match groups
                    .iter_mut()
                    .find(|g| g.0 == what && g.1 == s.mode && g.2 == s.reason)
                {
                    Some(g) => {
                        g.3 += 1;
                        g.4 += s.cases;
                    }
                    None => groups.push((what, s.mode, &s.reason, 1, s.cases)),
                }
            }
            let _ = writeln!(
                out,
                "skipped ({} entries, every case listed in the JSON report):",
                self.skips.len()
            );
            for (what, mode, reason, tests, cases) in groups {
                let _ = writeln!(
                    out,
                    "  {what} ({mode}, {tests} tests, {cases} cases): {reason}"
                );
            }
        }
        for e in &self.file_errors {
            let _ = writeln!(out, "file error ({}): {}: {}", e.mode, e.file, e.error);
        }
        for f in self.failures.iter().take(max_failures) {
            let _ = writeln!(out, "FAIL ({}) {}: {}", f.mode, f.id, f.message);
            if let (Some(e), Some(a)) = (f.expected_root, f.actual_root) {
                if e != a {
                    let _ = writeln!(out, "    state root: expected {e}, got {a}");
                }
            }
            if let (Some(e), Some(a)) = (f.expected_logs, f.actual_logs) {
                if e != a {
                    let _ = writeln!(out, "    logs hash:  expected {e}, got {a}");
                }
            }
            if let Some(p) = f.interpreter_passes {
                let _ = writeln!(out, "    interpreter passes this case: {p}");
            }
            if let Some(d) = &f.first_difference {
                let _ = writeln!(out, "    first difference (interpreter vs {}): {d}", f.mode);
            }
            if let Some(d) = &f.divergence {
                for line in d.lines() {
                    let _ = writeln!(out, "    {line}");
                }
            }
        }
        if self.failures.len() > max_failures {
            let _ = writeln!(
                out,
                "... {} more failures (see the JSON report)",
                self.failures.len() - max_failures
            );
        }
        out.push_str(&self.summary_line());
        out
    }
}

/// Every `*.json` file under `paths` (files as given, directories recursively), sorted.
pub fn find_json_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
        let entries =
            std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
            let p = entry.path();
            if p.is_dir() {
                walk(&p, out)?;
            } else if p.extension().is_some_and(|e| e == "json") {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out)?;
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(format!("{}: no such file or directory", p.display()));
        }
    }
    out.sort();
    out.dedup();
    if out.is_empty() {
        return Err("no JSON test files found".into());
    }
    Ok(out)
}

/// The native-code source of one mode.
pub enum Provider<'a> {
    /// Interpreter only.
    None,
    /// The run's JIT cache.
    Jit(&'a JitCache),
    /// A loaded AOT library.
    Aot(&'a AotLibrary),
    /// Records the contracts a run would compile, executes nothing natively (the collection
    /// pass before AOT mode).
    Collect(&'a Mutex<Vec<(B256, Bytes, SpecId)>>),
}

impl NativeProvider for Provider<'_> {
    fn native_fn(&self, code_hash: &B256, spec: SpecId) -> Option<NativeFn> {
        match self {
            Provider::None => None,
            Provider::Jit(c) => c.native_fn(code_hash, spec),
            Provider::Aot(l) => l.native_fn(code_hash, spec),
            Provider::Collect(_) => None,
        }
    }
}

impl Provider<'_> {
    /// Makes sure `code` is compiled for `spec` (compiled modes); a contract that does not
    /// compile is recorded in the cache's failures and runs in the interpreter.
    pub fn prepare(&self, hash: B256, code: &[u8], spec: SpecId) {
        if code.is_empty() {
            return;
        }
        match self {
            Provider::Jit(c) => {
                let _ = c.get_or_compile(hash, code, spec);
            }
            Provider::Collect(m) => m.lock().unwrap_or_else(|p| p.into_inner()).push((
                hash,
                Bytes::copy_from_slice(code),
                spec,
            )),
            Provider::None | Provider::Aot(_) => {}
        }
    }

    /// Whether this is the collection pass (state tests return right after `prepare`).
    pub fn is_collect(&self) -> bool {
        matches!(self, Provider::Collect(_))
    }

    /// Whether this is the interpreter.
    pub fn is_interp(&self) -> bool {
        matches!(self, Provider::None)
    }
}

/// Frame counters shared by the workers of one pass.
#[derive(Debug, Default)]
pub struct FrameCounters {
    native: AtomicU64,
    interpreted: AtomicU64,
}

impl FrameCounters {
    fn add(&self, native: u64, interpreted: u64) {
        self.native.fetch_add(native, Ordering::Relaxed);
        self.interpreted.fetch_add(interpreted, Ordering::Relaxed);
    }
}

/// One transaction's execution.
pub struct TxRun {
    /// The result, or the transaction-validation error.
    pub result: Result<ExecutionResult, String>,
    /// Frame segments, when recording.
    pub records: Vec<FrameRecord>,
}

/// Executes `tx` on `state` (committing its changes) with `provider`.
pub fn execute_tx(
    state: &mut State<EmptyDB>,
    cfg: &CfgEnv,
    block: &BlockEnv,
    tx: &TxEnv,
    provider: &Provider<'_>,
    counters: Option<&FrameCounters>,
    record: bool,
) -> TxRun {
    let ctx = Context::mainnet()
        .with_block(block.clone())
        .with_tx(tx.clone())
        .with_cfg(cfg.clone())
        .with_db(state);
    let mut evm = EmberEvm::new(ctx.build_mainnet(), provider);
    if record {
        evm.record_frames = Some(Vec::new());
    }
    let result = evm.transact_commit(tx.clone()).map_err(|e| e.to_string());
    if let Some(c) = counters {
        c.add(
            evm.stats.native_runs.get(),
            evm.stats.interpreted_runs.get(),
        );
    }
    TxRun {
        result,
        records: evm.record_frames.take().unwrap_or_default(),
    }
}

/// Whether two frame segments agree on everything but which engine ran them.
fn segment_eq(a: &FrameRecord, b: &FrameRecord) -> bool {
    a.depth == b.depth
        && a.code_hash == b.code_hash
        && a.pc == b.pc
        && a.gas_remaining == b.gas_remaining
        && a.gas_refunded == b.gas_refunded
        && a.stack == b.stack
        && a.memory_hash == b.memory_hash
        && a.memory_len == b.memory_len
        && a.action == b.action
}

/// Whether two recorded runs agree segment by segment.
pub fn segments_agree(interp: &[FrameRecord], native: &[FrameRecord]) -> bool {
    interp.len() == native.len() && interp.iter().zip(native).all(|(a, b)| segment_eq(a, b))
}

/// Describes the first frame segment where `native` departs from `interp` (both recorded with
/// [`execute_tx`]'s `record`), or says that all segments agree.
pub fn first_divergence(interp: &[FrameRecord], native: &[FrameRecord]) -> String {
    let mut out = String::new();
    for (i, (a, b)) in interp.iter().zip(native).enumerate() {
        if segment_eq(a, b) {
            continue;
        }
        let _ = writeln!(
            out,
            "first divergence at frame segment {i} (depth {}, code {}, {} in this mode):",
            a.depth,
            a.code_hash,
            if b.native { "native" } else { "interpreted" }
        );
        let field = |out: &mut String, name: &str, x: String, y: String| {
            let mark = if x == y { " " } else { "*" };
            let _ = writeln!(out, "  {mark} {name:<9} interp {x} | this mode {y}");
        };
        field(&mut out, "pc", a.pc.to_string(), b.pc.to_string());
        field(
            &mut out,
            "gas",
            a.gas_remaining.to_string(),
            b.gas_remaining.to_string(),
        );
        field(
            &mut out,
            "refund",
            a.gas_refunded.to_string(),
            b.gas_refunded.to_string(),
        );
        field(&mut out, "action", a.action.clone(), b.action.clone());
        field(
            &mut out,
            "stack len",
            a.stack.len().to_string(),
            b.stack.len().to_string(),
        );
        if let Some(k) =
            (0..a.stack.len().max(b.stack.len())).find(|&k| a.stack.get(k) != b.stack.get(k))
        {
            field(
                &mut out,
                "stack",
                format!("[{k}] = {:?}", a.stack.get(k)),
                format!("[{k}] = {:?}", b.stack.get(k)),
            );
        }
        field(
            &mut out,
            "memory",
            format!("{} bytes {}", a.memory_len, a.memory_hash),
            format!("{} bytes {}", b.memory_len, b.memory_hash),
        );
        return out;
    }
    if interp.len() != native.len() {
        let _ = writeln!(
            out,
            "all {} common frame segments agree; segment counts differ: interp {}, this mode {}",
            interp.len().min(native.len()),
            interp.len(),
            native.len()
        );
    } else {
        let _ = writeln!(
            out,
            "all {} frame segments agree (gas, stack, memory, pc); the difference is in state \
             written by host calls",
            interp.len()
        );
    }
    out
}

/// The interpreter's EIP-3155 trace of `tx` on `state` (a copy; `state` is not changed),
/// keeping the last `tail` lines.
pub fn eip3155_tail(
    state: &State<EmptyDB>,
    cfg: &CfgEnv,
    block: &BlockEnv,
    tx: &TxEnv,
    tail: usize,
) -> String {
    use revm::inspector::{inspectors::TracerEip3155, InspectEvm};
    #[derive(Clone, Default)]
    struct Buf(std::sync::Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let mut copy = State::builder()
        .with_cached_prestate(state.cache.clone())
        .with_bundle_update()
        .build();
    let mut evm = Context::mainnet()
        .with_block(block.clone())
        .with_tx(tx.clone())
        .with_cfg(cfg.clone())
        .with_db(&mut copy)
        .build_mainnet_with_inspector(TracerEip3155::new(Box::new(buf.clone())).without_summary());
    let _ = evm.inspect_tx(tx.clone());
    drop(evm);
    let text =
        String::from_utf8_lossy(&buf.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(tail);
    lines[start..].join("\n")
}

/// What one file produced in one mode.
#[derive(Default)]
pub struct FileOutcome {
    /// Cases passed.
    pub passed: usize,
    /// Failures.
    pub failures: Vec<Failure>,
    /// Skips.
    pub skips: Vec<Skip>,
    /// The file could not be run.
    pub error: Option<String>,
}

impl FileOutcome {
    /// The outcome of a file that could not be run.
    pub fn error(message: String) -> Self {
        Self {
            error: Some(message),
            ..Default::default()
        }
    }
}

/// Runs `run_file` over every file on the pool's workers; outcomes in file order.
#[allow(clippy::too_many_arguments)]
fn run_pass<F>(
    pool: &rayon::ThreadPool,
    files: &[PathBuf],
    mode: TestMode,
    provider: &Provider<'_>,
    counters: &FrameCounters,
    opts: &Options,
    run_file: &F,
    bar: &ProgressBar,
) -> Vec<(usize, FileOutcome)>
where
    F: Fn(&Path, TestMode, &Provider<'_>, &FrameCounters, &Options) -> FileOutcome + Sync,
{
    let outcomes: Mutex<Vec<(usize, FileOutcome)>> = Mutex::new(Vec::new());
    let (passed, failed) = (AtomicU64::new(0), AtomicU64::new(0));
    let next = AtomicU64::new(0);
    let collect = provider.is_collect();
    pool.scope(|s| {
        for _ in 0..opts.jobs.max(1) {
            s.spawn(|_| loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(path) = files.get(i) else { break };
                let o = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run_file(path, mode, provider, counters, opts)
                })) {
                    Ok(o) => o,
                    Err(p) => FileOutcome::error(format!(
                        "internal error while running this file: {}",
                        panic_message(&p)
                    )),
                };
                if !collect {
                    passed.fetch_add(o.passed as u64, Ordering::Relaxed);
                    let nf = o.failures.len() + usize::from(o.error.is_some());
                    failed.fetch_add(nf as u64, Ordering::Relaxed);
                    bar.set_message(format!(
                        "[{mode}] {} passed, {} failed",
                        passed.load(Ordering::Relaxed),
                        failed.load(Ordering::Relaxed)
                    ));
                    bar.inc(1);
                }
                outcomes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((i, o));
            });
        }
    });
    let mut outcomes = outcomes.into_inner().unwrap_or_else(|p| p.into_inner());
    outcomes.sort_by_key(|(i, _)| *i);
    outcomes
}

/// The library AOT mode runs with: `opts.aot_lib` loaded, or the contracts the tests deploy
/// (found by a collection pass) compiled into a temporary library.
fn prepare_aot<F>(
    pool: &rayon::ThreadPool,
    files: &[PathBuf],
    opts: &Options,
    run_file: &F,
) -> Result<(AotLibrary, Option<tempfile::TempDir>, AotSummary), String>
where
    F: Fn(&Path, TestMode, &Provider<'_>, &FrameCounters, &Options) -> FileOutcome + Sync,
{
    let host = crate::aot::host();
    if let Some(path) = &opts.aot_lib {
        let lib = AotLibrary::load(path, &host).map_err(|e| format!("{}: {e}", path.display()))?;
        let st = lib.load_stats();
        let summary = AotSummary {
            library: path.display().to_string(),
            built: false,
            functions: lib.len(),
            size_bytes: lib.file_size(),
            load_secs: st.total().as_secs_f64(),
            ..Default::default()
        };
        return Ok((lib, None, summary));
    }
    let found = Mutex::new(Vec::new());
    run_pass(
        pool,
        files,
        TestMode::Aot,
        &Provider::Collect(&found),
        &FrameCounters::default(),
        opts,
        run_file,
        &ProgressBar::hidden(),
    );
    let mut found = found.into_inner().unwrap_or_else(|p| p.into_inner());
    found.sort_by_key(|a| (a.0, a.2 as u8));
    found.dedup_by(|a, b| a.0 == b.0 && a.2 == b.2);
    let contracts: Vec<AotContract> = found
        .into_iter()
        .map(|(_, code, spec)| AotContract {
            code: code.to_vec(),
            spec,
        })
        .collect();
    let dir = tempfile::Builder::new()
        .prefix("ember-statetest-aot-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let out = dir.path().join("tests.so");
    let aot_opts = AotOptions {
        opt: opts.opt,
        fast_above: opts.fast_above,
        target_cpu: TargetCpu::Generic,
        jobs: opts.jobs.max(1),
    };
    let (built, lib) = crate::aot::build_and_load(&contracts, &aot_opts, &out, opts.progress)?;
    let st = lib.load_stats();
    let summary = AotSummary {
        library: out.display().to_string(),
        built: true,
        contracts: contracts.len(),
        functions: lib.len(),
        size_bytes: built.link.size,
        compile_wall_secs: built.set.wall.as_secs_f64(),
        compile_cpu_secs: built.set.compile_time().as_secs_f64(),
        link_secs: built.link.time.as_secs_f64(),
        load_secs: st.total().as_secs_f64(),
        failures: built
            .set
            .failures
            .iter()
            .map(|f| {
                (
                    f.code_hash,
                    f.spec.to_string(),
                    f.code_len,
                    f.reason.clone(),
                )
            })
            .collect(),
    };
    Ok((lib, Some(dir), summary))
}

/// Runs `run_file` over `files` once per mode in `opts` and assembles the report.
pub fn run_files<F>(kind: &str, files: &[PathBuf], opts: &Options, run_file: F) -> Report
where
    F: Fn(&Path, TestMode, &Provider<'_>, &FrameCounters, &Options) -> FileOutcome + Sync,
{
    let t_all = Instant::now();
    // One-time set-up outside the timed passes: the first point-evaluation precompile call
    // loads the KZG trusted setup (~2.4 s), which would otherwise land in the first pass.
    let t_warm = Instant::now();
    let _ = revm::precompile::kzg_point_evaluation::verify_kzg_proof(
        &[0; 48], &[0; 32], &[0; 32], &[0; 48],
    );
    let mut report = Report {
        kind: kind.to_string(),
        files: files.len(),
        setup_secs: t_warm.elapsed().as_secs_f64(),
        ..Default::default()
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.jobs.max(1))
        .build();
    let pool = match pool {
        Ok(p) => p,
        Err(e) => {
            report.file_errors.push(FileError {
                file: String::new(),
                mode: TestMode::Interp,
                error: format!("cannot start worker threads: {e}"),
            });
            report.failed = 1;
            return report;
        }
    };
    let bar = if opts.progress {
        let b = ProgressBar::new((files.len() * opts.modes.len()) as u64);
        b.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} files {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let mut jit: Option<JitCache> = None;
    // The AOT library and the temporary directory holding it (when this run built it).
    let mut aot: Option<(AotLibrary, Option<tempfile::TempDir>)> = None;
    for &mode in &opts.modes {
        if mode == TestMode::Aot && aot.is_none() {
            bar.set_message("[aot] preparing the library".to_string());
            match prepare_aot(&pool, files, opts, &run_file) {
                Ok((lib, dir, summary)) => {
                    report.aot = Some(summary);
                    aot = Some((lib, dir));
                }
                Err(e) => {
                    report.modes.push(ModeSummary {
                        mode: Some(mode),
                        failed: 1,
                        unavailable: Some(format!("AOT unavailable: {e}")),
                        ..Default::default()
                    });
                    report.failed += 1;
                    bar.inc(files.len() as u64);
                    continue;
                }
            }
        }
        if mode == TestMode::Jit && jit.is_none() {
            match JitCache::new(opts.opt) {
                Ok(c) => jit = Some(c.with_fast_above(opts.fast_above)),
                Err(e) => {
                    report.modes.push(ModeSummary {
                        mode: Some(mode),
                        failed: 1,
                        unavailable: Some(format!("JIT unavailable: {e}")),
                        ..Default::default()
                    });
                    report.failed += 1;
                    bar.inc(files.len() as u64);
                    continue;
                }
            }
        }
        let provider = match mode {
            TestMode::Jit => Provider::Jit(jit.as_ref().expect("created above")),
            TestMode::Aot => Provider::Aot(&aot.as_ref().expect("created above").0),
            TestMode::Interp => Provider::None,
        };
        let counters = FrameCounters::default();
        let t = Instant::now();
        bar.set_message(format!("[{mode}]"));
        let outcomes = run_pass(
            &pool, files, mode, &provider, &counters, opts, &run_file, &bar,
        );
        let mut summary = ModeSummary {
            mode: Some(mode),
            wall_secs: t.elapsed().as_secs_f64(),
            native_frames: counters.native.load(Ordering::Relaxed),
            interpreted_frames: counters.interpreted.load(Ordering::Relaxed),
            ..Default::default()
        };
        for (i, o) in outcomes {
            summary.passed += o.passed;
            summary.failed += o.failures.len();
            summary.skipped += o.skips.iter().map(|s| s.cases).sum::<usize>();
            report.failures.extend(o.failures);
            report.skips.extend(o.skips);
            if let Some(error) = o.error {
                summary.failed += 1;
                report.file_errors.push(FileError {
                    file: files[i].display().to_string(),
                    mode,
                    error,
                });
            }
        }
        report.passed += summary.passed;
        report.failed += summary.failed;
        report.skipped += summary.skipped;
        report.modes.push(summary);
    }
    bar.finish_and_clear();
    if let Some(c) = &jit {
        let st = c.stats();
        report.compile = Some(CompileSummary {
            opt: format!("{:?}", c.opt_level()),
            compiled: st.compiled,
            fast_above: c.fast_above(),
            tiered_down: st.tiered_down,
            failed: st.failed,
            compile_secs: st.compile_time.as_secs_f64(),
            slowest: st.slowest.map(|(t, l)| (t.as_secs_f64(), l)),
            failures: c
                .failures()
                .into_iter()
                .map(|(h, s, l, w)| (h, format!("{s:?}"), l, w))
                .collect(),
        });
    }
    report.wall_secs = t_all.elapsed().as_secs_f64();
    report
}
