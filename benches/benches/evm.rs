//! Interpreter versus JIT time per call, measured in the same run, and JIT compile time.
//!
//! `cargo bench -p ember-benches` (filter with e.g. `-- fibonacci`). Measurement time is kept
//! short (2 s per benchmark) so the whole suite finishes in a few minutes.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use ember_benches::{exec_fixtures, revmc_fixtures, COMPILE_FIXTURES};
use ember_compiler::{JitRegistry, OptLevel};
use ember_runtime::NoNative;
use ember_tools::{embedded, exec};
use revm::primitives::hardfork::SpecId;
use std::hint::black_box;
use std::time::Duration;

const SPEC: SpecId = SpecId::CANCUN;

fn per_call(c: &mut Criterion) {
    for fx in exec_fixtures() {
        let mut reg = JitRegistry::new(OptLevel::O2).expect("LLVM initialises");
        for e in exec::compile_fixture(&fx, SPEC, &mut reg) {
            eprintln!(
                "warning: {}: not compiled, runs in the interpreter: {e}",
                fx.name
            );
        }
        // Same result in both engines, or the numbers mean nothing.
        let want = exec::run_interp(&fx, SPEC).expect("interpreter runs");
        let got = exec::run_with(&fx, SPEC, &reg).expect("JIT runs");
        let d = exec::diff(&want.result, &got.result);
        assert!(
            d.is_empty(),
            "{}: JIT differs from the interpreter:\n{d}",
            fx.name
        );

        let mut g = c.benchmark_group(format!("call/{}", fx.name));
        g.sampling_mode(SamplingMode::Flat);
        g.bench_function("interp", |b| {
            let mut r = exec::Runner::new(&fx, SPEC, NoNative);
            b.iter(|| black_box(r.call().expect("runs")))
        });
        g.bench_function("jit", |b| {
            let mut r = exec::Runner::new(&fx, SPEC, &reg);
            b.iter(|| black_box(r.call().expect("runs")))
        });
        g.finish();
    }
}

fn compile(c: &mut Criterion) {
    let mut contracts: Vec<(String, Vec<u8>)> = embedded::PROGRAMS
        .iter()
        .take(2)
        .map(|p| (p.name.to_string(), p.code().to_vec()))
        .collect();
    for fx in revmc_fixtures(COMPILE_FIXTURES) {
        // The fixture's largest contract is the one under test.
        if let Some(code) = fx.codes.iter().max_by_key(|c| c.len()) {
            contracts.push((fx.name.clone(), code.to_vec()));
        }
    }
    let mut g = c.benchmark_group("compile");
    g.sampling_mode(SamplingMode::Flat).sample_size(10);
    for (name, code) in &contracts {
        g.bench_with_input(BenchmarkId::new("O2", name), code, |b, code| {
            b.iter(|| {
                // A fresh registry each time, so nothing is cached; dropping it frees the code.
                let mut reg = JitRegistry::new(OptLevel::O2).expect("LLVM initialises");
                black_box(reg.compile(code, SPEC).expect("compiles"))
            })
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = per_call, compile
}
criterion_main!(benches);
