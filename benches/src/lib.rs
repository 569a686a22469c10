//! Benchmark support: which fixtures the criterion benchmarks (`benches/evm.rs`) measure.
//!
//! The embedded programs of [`ember_tools::embedded`] always run; a few fixtures from
//! `$EMBER_BENCH_DIR` (default `../shared/bench/revmc`) run when that directory exists.

use ember_tools::{bench, embedded, fixture::Fixture};

/// revmc fixtures measured per call when the shared data is present.
pub const REVMC_FIXTURES: &[&str] = &[
    "fibonacci-calldata",
    "factorial",
    "snailtracer",
    "hash_10k",
    "erc20_transfer",
];

/// revmc fixtures whose compile time is measured when the shared data is present.
pub const COMPILE_FIXTURES: &[&str] = &["factorial", "hash_10k"];

/// Loads the named fixtures from the benchmark directory; prints a warning and returns none
/// when the directory is missing, and skips (with a warning) any that fail to load.
pub fn revmc_fixtures(names: &[&str]) -> Vec<Fixture> {
    let dir = match bench::default_dir() {
        Ok(d) => d,
        Err(missing) => {
            eprintln!(
                "WARNING: {} not found (set {}); measuring the embedded programs only",
                missing.display(),
                bench::BENCH_DIR_ENV
            );
            return Vec::new();
        }
    };
    names
        .iter()
        .filter_map(|n| match Fixture::load(&dir.join(format!("{n}.json"))) {
            Ok(fx) => Some(fx),
            Err(e) => {
                eprintln!("WARNING: skipping {n}: {e}");
                None
            }
        })
        .collect()
}

/// Every fixture measured per call: the embedded programs, then [`REVMC_FIXTURES`].
pub fn exec_fixtures() -> Vec<Fixture> {
    let mut v = embedded::all();
    v.extend(revmc_fixtures(REVMC_FIXTURES));
    v
}
