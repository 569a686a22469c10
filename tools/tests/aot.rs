//! AOT end to end: the revmc benchmark fixtures (`../shared/bench/revmc`, override with
//! `EMBER_BENCH_DIR`) compiled into one library and run from it, identical to the interpreter;
//! and the `ember compile` / `inspect` / `run --mode aot` commands, including refusals.

use ember_compiler::aot::{build_library, AotOptions, TargetCpu};
use ember_compiler::OptLevel;
use ember_runtime::AotLibrary;
use ember_tools::exec::{self, Runner};
use ember_tools::fixture::Fixture;
use revm::primitives::hardfork::SpecId;
use std::path::{Path, PathBuf};
use std::process::Command;

fn bench_dir() -> PathBuf {
    let dir = std::env::var_os("EMBER_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/bench/revmc"));
    assert!(
        dir.is_dir(),
        "\n\n*** benchmark fixtures not found at {} ***\n*** set EMBER_BENCH_DIR to \
         ../shared/bench/revmc ***\n",
        dir.display()
    );
    dir
}

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("aot-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn revmc_fixtures_run_from_one_library_identically() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(bench_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 21, "{} fixtures", files.len());
    let fixtures: Vec<Fixture> = files.iter().map(|f| Fixture::load(f).unwrap()).collect();
    let codes: Vec<Vec<u8>> = fixtures
        .iter()
        .flat_map(|f| f.codes.iter().map(|c| c.to_vec()))
        .collect();
    let spec = SpecId::CANCUN;
    let contracts = ember_tools::aot::contracts_for(&codes, spec);
    let out = scratch("revmc").join("revmc.so");
    // O2, with the largest contracts in the fast tier to bound CI time (the full O2 build
    // is `ember compile ../shared/bench/revmc -o revmc.so`).
    let opts = AotOptions {
        opt: OptLevel::O2,
        fast_above: 256,
        target_cpu: TargetCpu::Generic,
        jobs: 2,
    };
    let r = build_library(&contracts, &opts, &out, &|_| {}).unwrap();
    assert!(r.set.failures.is_empty(), "{:?}", r.set.failures);
    let lib = AotLibrary::load(&out, &ember_tools::aot::host()).unwrap();
    for fx in &fixtures {
        let interp = exec::run_interp(fx, spec).unwrap();
        let mut aot = Runner::new(fx, spec, &lib);
        let native = aot.call_counted().unwrap();
        let d = exec::diff(&interp.result, &native.result);
        assert!(
            d.is_empty(),
            "{}: AOT differs from the interpreter:\n{d}",
            fx.name
        );
        assert!(native.native_runs > 0, "{}: nothing ran natively", fx.name);
    }
}

fn ember(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_compile_inspect_run_and_refuse() {
    let dir = scratch("cli");
    let fx = bench_dir().join("erc20_transfer.json");
    let lib = dir.join("erc20.so");
    let lib_s = lib.to_str().unwrap();
    let (ok, stdout, stderr) = ember(&[
        "compile",
        fx.to_str().unwrap(),
        "-o",
        lib_s,
        "--jobs",
        "2",
        "--json",
    ]);
    assert!(ok, "{stdout}{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(v["compiled"].as_u64().unwrap() >= 1, "{v}");
    assert!(v["size_bytes"].as_u64().unwrap() > 0);

    let (ok, stdout, _) = ember(&["inspect", lib_s]);
    assert!(ok, "{stdout}");
    assert!(stdout.contains("loads (every check passed)"), "{stdout}");
    assert!(stdout.contains("ember_cancun_"), "{stdout}");

    let (ok, stdout, stderr) = ember(&[
        "run",
        fx.to_str().unwrap(),
        "--mode",
        "aot",
        "--lib",
        lib_s,
        "--check",
    ]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("identical to the interpreter"), "{stdout}");
    assert!(stdout.contains("native, 0 interpreted"), "{stdout}");

    // Another fork than the library was built for: says so, runs interpreted.
    let (ok, stdout, _) = ember(&[
        "run",
        fx.to_str().unwrap(),
        "--mode",
        "aot",
        "--lib",
        lib_s,
        "--spec",
        "shanghai",
    ]);
    assert!(ok, "{stdout}");
    assert!(
        stdout.contains("not in the library for Shanghai"),
        "{stdout}"
    );
    assert!(stdout.contains("FALLBACK"), "{stdout}");

    // A truncated library: one clear error line, exit 2, no crash.
    let bytes = std::fs::read(&lib).unwrap();
    let cut = dir.join("cut.so");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let (ok, _, stderr) = ember(&[
        "run",
        fx.to_str().unwrap(),
        "--mode",
        "aot",
        "--lib",
        cut.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        stderr.starts_with("error: ") && stderr.contains("truncated or corrupt"),
        "{stderr}"
    );
    let (ok, stdout, stderr) = ember(&["inspect", cut.to_str().unwrap()]);
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("truncated or corrupt"), "{stderr}");
    // Bad inputs to compile.
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "{\"a\": 1}").unwrap();
    let (ok, _, stderr) = ember(&["compile", bad.to_str().unwrap(), "-o", lib_s]);
    assert!(!ok && stderr.contains("no contract code"), "{stderr}");
    // The failed compile left the previous library intact.
    assert_eq!(std::fs::read(&lib).unwrap(), bytes);
}
