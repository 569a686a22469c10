//! Whole-block throughput in gas per second: sequential and parallel (2 threads) execution,
//! each with the interpreter and with JIT-compiled contracts, on a few mainnet blocks and on the
//! synthetic workloads of `ember_tools::workload`.
//!
//! `cargo bench -p ember-benches --bench block` (filter with e.g. `-- swaps`). Criterion's
//! throughput is in gas (`elem/s` = gas/s). The mainnet blocks come from `$EMBER_MAINNET_DIR`
//! (default `../shared/mainnet`); when that is missing they are skipped with a warning and only
//! the synthetic workloads run.

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};

/// The same allocator as the `ember` binary (see tools/src/main.rs), so the bench and
/// `ember block` measure the same thing.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use ember_compiler::{JitCache, OptLevel};
use ember_runtime::parallel::ParallelOptions;
use ember_runtime::{NativeProvider, NoNative};
use ember_tools::block::{self, Block, RunOptions};
use ember_tools::workload::{self, WorkloadKind};
use std::time::Duration;

/// Mainnet blocks measured: busy blocks with few contracts (110 KB of code, cheap to compile;
/// JIT compile time is about 0.25 s of CPU per KB even in the fast tier).
const MAINNET_BLOCKS: &[u64] = &[5891667, 11814555, 13287210];

/// Gas of each synthetic block.
const SYNTHETIC_GAS: u64 = 30_000_000;

fn mainnet_blocks() -> Vec<Block> {
    let dir = block::mainnet_dir();
    if !dir.is_dir() {
        eprintln!(
            "\nWARNING: mainnet blocks not found at {} (set {}): SKIPPING the mainnet block \
             benchmarks; only the synthetic workloads run.\n",
            dir.display(),
            block::MAINNET_DIR_ENV
        );
        return Vec::new();
    }
    let dirs: Vec<_> = MAINNET_BLOCKS
        .iter()
        .map(|n| dir.join(n.to_string()))
        .collect();
    block::load_blocks(&dirs, None).expect("mainnet blocks load")
}

fn blocks(c: &mut Criterion) {
    let mut all = mainnet_blocks();
    for kind in WorkloadKind::ALL {
        all.push(workload::block_for_gas(kind, SYNTHETIC_GAS).expect("workload builds"));
    }
    let jit = JitCache::new(OptLevel::O2).expect("LLVM initialises");
    let work = block::executed_contract_keys(&all, 1);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let summary = block::compile_contracts(&work, &jit, threads, &|_| {});
    for (hash, spec, e) in &summary.failures {
        eprintln!("warning: {hash} ({spec}) not compiled, runs in the interpreter: {e}");
    }
    block::warm_up();
    let modes: [(&str, usize, &(dyn NativeProvider + Sync)); 4] = [
        ("sequential-interp", 1, &NoNative),
        ("sequential-jit", 1, &jit),
        ("parallel2-interp", 2, &NoNative),
        ("parallel2-jit", 2, &jit),
    ];
    for b in &all {
        // Every mode must pass its checks, or the numbers mean nothing.
        let mut gas = 0;
        for (name, threads, provider) in modes {
            let opts = RunOptions {
                parallel: ParallelOptions::always_parallel(threads),
                check: true,
                repeat: 1,
            };
            let r = block::run_block(b, provider, &opts);
            assert!(r.ok(), "{} {name}: {:?}", b.name, r.failures);
            gas = r.gas_used;
        }
        let mut g = c.benchmark_group(format!("block/{}", b.name));
        g.sampling_mode(SamplingMode::Flat)
            .throughput(Throughput::Elements(gas));
        for (name, threads, provider) in modes {
            let opts = RunOptions {
                parallel: ParallelOptions::always_parallel(threads),
                check: false,
                repeat: 1,
            };
            g.bench_function(name, |bench| {
                bench.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let r = block::run_block(b, provider, &opts);
                        total += Duration::from_secs_f64(r.seconds);
                    }
                    total
                })
            });
        }
        g.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(10)
}

criterion_group! {
    name = benches;
    config = config();
    targets = blocks
}
criterion_main!(benches);
