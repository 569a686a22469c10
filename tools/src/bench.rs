//! `ember bench`: interpreter versus JIT time per call for fixtures, with a correctness check
//! of every JIT result against the interpreter's.

use crate::exec::{self, CompileFailure, Runner};
use crate::fixture::Fixture;
use ember_compiler::{JitRegistry, OptLevel};
use ember_runtime::{NativeProvider, NoNative};
use revm::primitives::hardfork::SpecId;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Environment variable naming the default fixture directory.
pub const BENCH_DIR_ENV: &str = "EMBER_BENCH_DIR";

/// Default fixture directory, relative to the project root.
pub const DEFAULT_BENCH_DIR: &str = "../shared/bench/revmc";

/// How long and how often to measure.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Fork to run under.
    pub spec: SpecId,
    /// LLVM optimisation level for the JIT.
    pub opt: OptLevel,
    /// Measuring time per mode per fixture (ignored when `iterations` is set).
    pub budget: Duration,
    /// Fewest measured calls per mode.
    pub min_iterations: u32,
    /// Exactly this many measured calls per mode, whatever the time.
    pub iterations: Option<u32>,
    /// An AOT library holding the fixtures' contracts: adds the AOT column.
    pub aot: Option<std::sync::Arc<ember_runtime::AotLibrary>>,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            spec: SpecId::CANCUN,
            opt: OptLevel::default(),
            budget: Duration::from_millis(500),
            min_iterations: 3,
            iterations: None,
            aot: None,
        }
    }
}

/// One fixture's measurements.
#[derive(Clone, Debug)]
pub struct BenchResult {
    /// Fixture name (file stem).
    pub name: String,
    /// Interpreter time per call (median), nanoseconds.
    pub interp_ns: f64,
    /// JIT time per call (median), nanoseconds.
    pub jit_ns: f64,
    /// Measured interpreter calls.
    pub interp_iterations: u32,
    /// Measured JIT calls.
    pub jit_iterations: u32,
    /// Time to compile the fixture's contracts, milliseconds.
    pub compile_ms: f64,
    /// Contracts that failed to compile (they ran in the interpreter).
    pub compile_failures: Vec<CompileFailure>,
    /// Frames served natively in one JIT call.
    pub native_frames: u64,
    /// Frames served by the interpreter in one JIT call (fallback).
    pub interpreted_frames: u64,
    /// Gas used by the transaction.
    pub gas_used: u64,
    /// Result status of the transaction.
    pub status: String,
    /// Differences between the JIT and the interpreter result (empty when identical).
    pub mismatch: String,
    /// AOT time per call (median), nanoseconds, when an AOT library was given.
    pub aot_ns: Option<f64>,
    /// Frames served natively / by the interpreter in one AOT call.
    pub aot_frames: (u64, u64),
}

impl BenchResult {
    /// interp_ns / jit_ns.
    pub fn ratio(&self) -> f64 {
        if self.jit_ns > 0.0 {
            self.interp_ns / self.jit_ns
        } else {
            0.0
        }
    }

    /// interp_ns / aot_ns, when AOT ran.
    pub fn aot_ratio(&self) -> Option<f64> {
        self.aot_ns.filter(|t| *t > 0.0).map(|t| self.interp_ns / t)
    }

    /// The `--json` object: exactly `name`, `interp_ns`, `jit_ns`, `ratio`, `compile_ms` (a
    /// fixed shape consumers rely on; the AOT column is in the table, and an AOT mismatch
    /// still fails the run).
    pub fn to_json(&self) -> serde_json::Value {
        let round = |v: f64, digits: i32| {
            let m = 10f64.powi(digits);
            let r = (v * m).round() / m;
            if r.is_finite() {
                r
            } else {
                0.0
            }
        };
        serde_json::json!({
            "name": self.name,
            "interp_ns": round(self.interp_ns, 1),
            "jit_ns": round(self.jit_ns, 1),
            "ratio": round(self.ratio(), 3),
            "compile_ms": round(self.compile_ms, 3),
        })
    }
}

/// The default fixture directory: `$EMBER_BENCH_DIR` when set, else `../shared/bench/revmc`
/// from the current directory, else the same path relative to this source tree. `Err` carries
/// the directory that was looked for and is missing.
pub fn default_dir() -> Result<PathBuf, PathBuf> {
    if let Some(d) = std::env::var_os(BENCH_DIR_ENV) {
        let d = PathBuf::from(d);
        return if d.is_dir() { Ok(d) } else { Err(d) };
    }
    let cwd = PathBuf::from(DEFAULT_BENCH_DIR);
    if cwd.is_dir() {
        return Ok(cwd);
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(DEFAULT_BENCH_DIR);
    if src.is_dir() {
        return Ok(src);
    }
    Err(cwd)
}

/// The `*.json` files of `dir`, sorted by name.
pub fn fixtures_in(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "json"))
        .collect();
    v.sort();
    Ok(v)
}

/// Median time per call of `runner`, after a warm-up, and the number of measured calls.
fn measure<P: NativeProvider>(
    runner: &mut Runner<P>,
    cfg: &BenchConfig,
) -> Result<(f64, u32), String> {
    // Warm up caches and branch predictors: at least one call, up to a tenth of the budget.
    let warm = Instant::now();
    let warm_budget = if cfg.iterations.is_some() {
        Duration::ZERO
    } else {
        cfg.budget / 10
    };
    loop {
        runner.call()?;
        if warm.elapsed() >= warm_budget {
            break;
        }
    }
    let mut samples = Vec::new();
    let start = Instant::now();
    loop {
        let t = Instant::now();
        let r = runner.call()?;
        let dt = t.elapsed();
        drop(r);
        samples.push(dt.as_nanos() as f64);
        let n = samples.len() as u32;
        let done = match cfg.iterations {
            Some(want) => n >= want.max(1),
            None => n >= cfg.min_iterations.max(1) && start.elapsed() >= cfg.budget,
        };
        if done {
            break;
        }
    }
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    let median = if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    };
    Ok((median, n as u32))
}

/// Benchmarks one fixture: compile, check the JIT result against the interpreter, then time
/// both modes.
pub fn bench_fixture(fx: &Fixture, cfg: &BenchConfig) -> Result<BenchResult, String> {
    let mut reg = JitRegistry::new(cfg.opt).map_err(|e| e.to_string())?;
    let report = exec::compile_fixture_report(fx, cfg.spec, &mut reg);

    let mut interp = Runner::new(fx, cfg.spec, NoNative);
    let mut jit = Runner::new(fx, cfg.spec, &reg);
    let reference = interp.call_counted()?;
    let native = jit.call_counted()?;
    let mut mismatch = exec::diff(&reference.result, &native.result);
    let mut aot_run = None;
    if let Some(lib) = &cfg.aot {
        let mut aot = Runner::new(fx, cfg.spec, lib.as_ref());
        let out = aot.call_counted()?;
        let d = exec::diff(&reference.result, &out.result);
        if !d.is_empty() {
            mismatch.push_str(&format!("AOT: {d}"));
        }
        aot_run = Some((aot, (out.native_runs, out.interpreted_runs)));
    }

    let (interp_ns, interp_iterations) = measure(&mut interp, cfg)?;
    let (jit_ns, jit_iterations) = measure(&mut jit, cfg)?;
    let (aot_ns, aot_frames) = match aot_run {
        Some((mut aot, frames)) => (Some(measure(&mut aot, cfg)?.0), frames),
        None => (None, (0, 0)),
    };
    let r = &reference.result.result;
    Ok(BenchResult {
        name: fx.name.clone(),
        interp_ns,
        jit_ns,
        interp_iterations,
        jit_iterations,
        compile_ms: report.time.as_secs_f64() * 1e3,
        compile_failures: report.failures,
        native_frames: native.native_runs,
        interpreted_frames: native.interpreted_runs,
        gas_used: r.tx_gas_used(),
        status: exec::status(r),
        mismatch,
        aot_ns,
        aot_frames,
    })
}

/// A duration in nanoseconds as a short human string.
pub fn human_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} us", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// Header of the human table.
pub fn table_header() -> String {
    format!(
        "{:<24} {:>11} {:>11} {:>8} {:>11} {:>8} {:>11} {:>10} {:>14}  {}",
        "fixture",
        "interp/call",
        "jit/call",
        "ratio",
        "aot/call",
        "aot ratio",
        "compile ms",
        "gas",
        "frames nat/int",
        "check"
    )
}

/// One human table row.
pub fn table_row(r: &BenchResult) -> String {
    let check = if r.mismatch.is_empty() {
        "ok"
    } else {
        "MISMATCH"
    };
    let mut notes = Vec::new();
    if r.interpreted_frames > 0 || r.aot_frames.1 > 0 {
        notes.push("fallback frames in interpreter".to_string());
    }
    if !r.compile_failures.is_empty() {
        notes.push(format!(
            "{} contract(s) not compiled",
            r.compile_failures.len()
        ));
    }
    if !r.status.starts_with("success") {
        notes.push(r.status.clone());
    }
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", notes.join("; "))
    };
    format!(
        "{:<24} {:>11} {:>11} {:>7.2}x {:>11} {:>8} {:>11.1} {:>10} {:>14}  {check}{notes}",
        r.name,
        human_ns(r.interp_ns),
        human_ns(r.jit_ns),
        r.ratio(),
        r.aot_ns.map_or("-".to_string(), human_ns),
        r.aot_ratio()
            .map_or("-".to_string(), |x| format!("{x:.2}x")),
        r.compile_ms,
        r.gas_used,
        format!("{}/{}", r.native_frames, r.interpreted_frames),
    )
}

/// Geometric mean of the JIT ratios (0 when empty).
pub fn geomean_ratio(results: &[BenchResult]) -> f64 {
    geomean(results.iter().map(BenchResult::ratio))
}

/// Geometric mean of the AOT ratios (0 when none).
pub fn geomean_aot_ratio(results: &[BenchResult]) -> f64 {
    geomean(results.iter().filter_map(BenchResult::aot_ratio))
}

fn geomean(ratios: impl Iterator<Item = f64>) -> f64 {
    let ratios: Vec<f64> = ratios.filter(|r| *r > 0.0).collect();
    if ratios.is_empty() {
        return 0.0;
    }
    (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn benches_an_embedded_program() {
        let fx = crate::embedded::by_name("storage_loop")
            .expect("exists")
            .fixture();
        let cfg = BenchConfig {
            iterations: Some(2),
            ..Default::default()
        };
        let r = bench_fixture(&fx, &cfg).expect("runs");
        assert_eq!(r.mismatch, "");
        assert!(r.interp_ns > 0.0 && r.jit_ns > 0.0 && r.compile_ms > 0.0);
        assert_eq!((r.interp_iterations, r.jit_iterations), (2, 2));
        assert_eq!((r.native_frames, r.interpreted_frames), (1, 0));
        let json = r.to_json();
        let keys: Vec<&str> = json
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut want = vec!["name", "interp_ns", "jit_ns", "ratio", "compile_ms"];
        want.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, want);
        assert!(table_row(&r).contains("storage_loop"));
    }

    #[test]
    fn human_units() {
        assert_eq!(human_ns(12.0), "12 ns");
        assert_eq!(human_ns(1500.0), "1.50 us");
        assert_eq!(human_ns(2.5e6), "2.50 ms");
        assert_eq!(human_ns(3e9), "3.00 s");
    }
}
