//! The conformance runners against the official Ethereum tests in `../shared/ethereum-tests`
//! (override with `EMBER_ETHEREUM_TESTS`): a representative slice of GeneralStateTests (every
//! test with `EMBER_STATETEST_FULL=1`) and all of BlockchainTests/ValidBlocks, in interpreter
//! and JIT modes; plus checks that the runners report what they must (tampered expectations
//! fail, malformed files are per-file errors, the CLI's summary line and exit code).

use ember_compiler::OptLevel;
use ember_tools::conformance::{self, blocktest, statetest, Options, Report, TestMode};
use std::path::{Path, PathBuf};

/// The official tests, or a loud failure saying how to point at them.
fn tests_dir() -> PathBuf {
    let dir = std::env::var_os("EMBER_ETHEREUM_TESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/ethereum-tests")
        });
    assert!(
        dir.join("GeneralStateTests").is_dir(),
        "\n\n*** ethereum-tests not found at {} ***\n*** set EMBER_ETHEREUM_TESTS to the \
         ethereum/tests checkout (GeneralStateTests, BlockchainTests) ***\n",
        dir.display()
    );
    dir
}

fn opts(modes: &[TestMode]) -> Options {
    Options {
        modes: modes.to_vec(),
        jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
        filter: None,
        opt: OptLevel::O2,
        fast_above: 128,
        diff: false,
        progress: false,
        include_slow: false,
        aot_lib: None,
        block_threads: 0,
    }
}

fn assert_clean(report: &Report, expected_modes: usize) {
    let text = report.render(50);
    eprintln!("{text}");
    assert_eq!(report.failed, 0, "failures:\n{text}");
    assert!(report.file_errors.is_empty(), "file errors:\n{text}");
    let ran: Vec<_> = report
        .modes
        .iter()
        .filter(|m| m.unavailable.is_none())
        .collect();
    assert_eq!(ran.len(), expected_modes, "{text}");
    for m in &ran {
        assert!(m.passed > 0, "mode {:?} ran nothing", m.mode);
    }
    // Every mode saw the same cases.
    assert!(ran.windows(2).all(|w| w[0].passed == w[1].passed));
    for s in &report.skips {
        assert!(!s.reason.is_empty(), "skip without a reason: {s:?}");
    }
}

/// Directories of GeneralStateTests run by default: every opcode family, calls and creates,
/// memory, logs, refunds, reverts, static calls, precompiles, transactions, and the
/// Shanghai/Cancun EIPs (about 8,700 cases, ~40 s on 2 cores for both modes).
const SLICE: &[&str] = &[
    "stExample",
    "VMTests",
    "stSStoreTest",
    "stReturnDataTest",
    "stRevertTest",
    "stLogTests",
    "stCreate2",
    "stMemoryTest",
    "Cancun",
    "Shanghai",
    "stCallCodes",
    "stRefundTest",
    "stSelfBalance",
    "stShift",
    "stBadOpcode",
    "stStaticCall",
    "stTransactionTest",
    "stPreCompiledContracts",
];

#[test]
fn general_state_tests_interp_jit_and_aot() {
    let root = tests_dir().join("GeneralStateTests");
    let paths: Vec<PathBuf> = if std::env::var_os("EMBER_STATETEST_FULL").is_some() {
        vec![root]
    } else {
        SLICE.iter().map(|d| root.join(d)).collect()
    };
    let mut o = opts(&[TestMode::Interp, TestMode::Jit, TestMode::Aot]);
    o.include_slow = false;
    let report = statetest::run(&paths, &o).expect("runs");
    assert_clean(&report, 3);
    let aot = report
        .modes
        .iter()
        .find(|m| m.mode == Some(TestMode::Aot))
        .unwrap();
    assert!(aot.native_frames > 100 * aot.interpreted_frames.max(1) / 10);
    let lib = report.aot.as_ref().expect("aot summary");
    assert!(lib.built && lib.functions > 1000, "{lib:?}");
    let jit = report
        .modes
        .iter()
        .find(|m| m.mode == Some(TestMode::Jit))
        .unwrap();
    // Compiled mode really ran compiled code, and says how much it did not.
    assert!(jit.native_frames > 100 * jit.interpreted_frames.max(1) / 10);
    let c = report.compile.as_ref().expect("compile summary");
    assert!(c.compiled > 1000, "{c:?}");
}

#[test]
fn blockchain_valid_blocks_interp_jit_and_aot() {
    let dir = tests_dir().join("BlockchainTests/ValidBlocks");
    let modes = [TestMode::Interp, TestMode::Jit, TestMode::Aot];
    let report = blocktest::run(&[dir], &opts(&modes)).expect("runs");
    assert_clean(&report, 3);
    for m in &report.modes[1..] {
        assert!(m.native_frames > m.interpreted_frames, "{m:?}");
    }
}

#[test]
fn blockchain_valid_blocks_through_the_parallel_executor() {
    let dir = tests_dir().join("BlockchainTests/ValidBlocks");
    let modes = [TestMode::Interp, TestMode::Jit];
    let report = blocktest::run(
        &[dir],
        &Options {
            block_threads: 2,
            ..opts(&modes)
        },
    )
    .expect("runs");
    assert_clean(&report, 2);
    assert!(
        report.modes[1].native_frames > report.modes[1].interpreted_frames,
        "{:?}",
        report.modes[1]
    );
}

/// A scratch directory under the target dir.
fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn edit_json(src: &Path, dst: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(dst, serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn tampered_expectations_fail_in_every_mode() {
    let src = tests_dir().join("GeneralStateTests/stExample/add11.json");
    let dir = scratch("tampered-statetest");
    edit_json(&src, &dir.join("root.json"), |v| {
        let case = &mut v["add11"]["post"]["Cancun"][0];
        case["hash"] = "0x1111111111111111111111111111111111111111111111111111111111111111".into();
    });
    edit_json(&src, &dir.join("logs.json"), |v| {
        let case = &mut v["add11"]["post"]["Cancun"][0];
        case["logs"] = "0x2222222222222222222222222222222222222222222222222222222222222222".into();
    });
    edit_json(&src, &dir.join("exception.json"), |v| {
        let case = &mut v["add11"]["post"]["Cancun"][0];
        case["expectException"] = "TR_NoFunds".into();
    });
    let report = statetest::run(&[dir], &opts(&[TestMode::Interp, TestMode::Jit])).unwrap();
    eprintln!("{}", report.render(50));
    let msgs: Vec<(TestMode, &str)> = report
        .failures
        .iter()
        .map(|f| (f.mode, f.message.as_str()))
        .collect();
    for mode in [TestMode::Interp, TestMode::Jit] {
        assert!(msgs.contains(&(mode, "state root mismatch")), "{msgs:?}");
        assert!(msgs.contains(&(mode, "logs hash mismatch")), "{msgs:?}");
        assert!(
            msgs.iter()
                .any(|(m, s)| *m == mode && s.starts_with("expected exception TR_NoFunds")),
            "{msgs:?}"
        );
    }
    let root_fail = report
        .failures
        .iter()
        .find(|f| f.message == "state root mismatch" && f.mode == TestMode::Jit)
        .unwrap();
    assert_ne!(root_fail.expected_root, root_fail.actual_root);
    // The interpreter fails it too, so no divergence is claimed.
    assert_eq!(root_fail.interpreter_passes, Some(false));
    assert!(root_fail.first_difference.is_none());

    // Blockchain tests: a wrong state root in a block header, and a wrong lastblockhash.
    let src = tests_dir().join("BlockchainTests/ValidBlocks/bcExample/basefeeExample.json");
    let dir = scratch("tampered-blocktest");
    let name = {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&src).unwrap()).unwrap();
        v.as_object().unwrap().keys().next().unwrap().clone()
    };
    edit_json(&src, &dir.join("root.json"), |v| {
        v[name.as_str()]["blocks"][0]["blockHeader"]["stateRoot"] =
            "0x3333333333333333333333333333333333333333333333333333333333333333".into();
    });
    edit_json(&src, &dir.join("last.json"), |v| {
        v[name.as_str()]["lastblockhash"] =
            "0x4444444444444444444444444444444444444444444444444444444444444444".into();
    });
    let report = blocktest::run(&[dir], &opts(&[TestMode::Interp])).unwrap();
    eprintln!("{}", report.render(50));
    assert_eq!(report.failed, 2);
    assert!(report
        .failures
        .iter()
        .any(|f| f.message.contains("state root mismatch")));
    assert!(report
        .failures
        .iter()
        .any(|f| f.message.contains("lastblockhash")));
}

#[test]
fn malformed_files_are_per_file_errors_and_the_run_continues() {
    let dir = scratch("malformed");
    let good = tests_dir().join("GeneralStateTests/stExample/add11.json");
    std::fs::copy(&good, dir.join("a_good.json")).unwrap();
    std::fs::write(dir.join("b_not_json.json"), "{ this is not json").unwrap();
    std::fs::write(dir.join("c_truncated.json"), {
        let t = std::fs::read_to_string(&good).unwrap();
        t[..t.len() / 2].to_string()
    })
    .unwrap();
    edit_json(&good, &dir.join("d_missing_field.json"), |v| {
        v["add11"].as_object_mut().unwrap().remove("transaction");
    });
    edit_json(&good, &dir.join("e_bad_hex.json"), |v| {
        v["add11"]["post"]["Cancun"][0]["hash"] = "0xzz".into();
    });
    edit_json(&good, &dir.join("f_bad_index.json"), |v| {
        v["add11"]["post"]["Cancun"][0]["indexes"]["data"] = 99.into();
    });
    let report = statetest::run(
        std::slice::from_ref(&dir),
        &opts(&[TestMode::Interp, TestMode::Jit]),
    )
    .unwrap();
    eprintln!("{}", report.render(50));
    // The good file passes in both modes; four files are per-file errors in each mode; the
    // out-of-range index is a per-case failure.
    assert_eq!(report.passed, 2);
    assert_eq!(report.file_errors.len(), 8, "{:?}", report.file_errors);
    assert!(report
        .failures
        .iter()
        .all(|f| f.message.contains("index out of range")));
    assert_eq!(report.failed, 8 + 2);

    // Blocktest on state-test files and garbage: per-file errors, no panic.
    let report = blocktest::run(&[dir], &opts(&[TestMode::Interp])).unwrap();
    assert_eq!(report.file_errors.len(), 6);
}

#[test]
fn cli_prints_the_summary_line_and_exit_code() {
    let exe = env!("CARGO_BIN_EXE_ember");
    let good = tests_dir().join("GeneralStateTests/stExample");
    let json = scratch("cli").join("report.json");
    let out = std::process::Command::new(exe)
        .args(["statetest", "--mode", "all", "--json"])
        .arg(&json)
        .arg(&good)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap();
    assert!(last.ends_with("passed, 0 failed, 0 skipped"), "{last}");
    assert!(stdout.contains("   aot: "), "{stdout}");
    assert!(!stdout.contains("not run"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["failed"], 0);

    let bad = scratch("cli-bad");
    std::fs::write(bad.join("x.json"), "[1,2").unwrap();
    let out = std::process::Command::new(exe)
        .args(["statetest", "--mode", "interp"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("file error"), "{stdout}");
    assert!(
        stdout.trim_end().ends_with("0 passed, 1 failed, 0 skipped"),
        "{stdout}"
    );

    let out = std::process::Command::new(exe)
        .args(["statetest", "/nonexistent/dir"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn first_divergence_names_the_differing_field() {
    use ember_runtime::FrameRecord;
    use revm::primitives::{B256, U256};
    let rec = FrameRecord {
        depth: 0,
        code_hash: B256::ZERO,
        native: false,
        pc: 10,
        gas_remaining: 1000,
        gas_refunded: 0,
        stack: vec![U256::from(1), U256::from(2)],
        memory_len: 0,
        memory_hash: B256::ZERO,
        action: "return (Stop)".into(),
    };
    let same =
        conformance::first_divergence(std::slice::from_ref(&rec), std::slice::from_ref(&rec));
    assert!(same.contains("all 1 frame segments agree"), "{same}");
    let mut other = rec.clone();
    other.native = true;
    other.gas_remaining = 997;
    other.stack[1] = U256::from(3);
    let d = conformance::first_divergence(&[rec.clone(), rec.clone()], &[rec, other]);
    assert!(d.contains("frame segment 1"), "{d}");
    assert!(d.contains("* gas"), "{d}");
    assert!(d.contains("* stack     interp [1]"), "{d}");
    assert!(d.contains("  pc"), "{d}");
}
