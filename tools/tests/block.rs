//! `ember block` end to end: the 68 mainnet blocks of `../shared/mainnet` (override with
//! `EMBER_MAINNET_DIR`; the data is required, its absence is a failure) checked against their
//! headers (gasUsed, logsBloom, receiptsRoot from Byzantium on) in the interpreter, sequentially
//! and on 2 and 4 threads with every parallel run compared with sequential execution (results
//! and state changes), and with JIT-compiled contracts on 2 threads for a subset of blocks; the
//! synthetic workloads; the command's exit codes, `--json` shape and refusals.

use ember_compiler::{JitCache, OptLevel};
use ember_runtime::parallel::ParallelOptions;
use ember_runtime::NoNative;
use ember_tools::block::{self, Block, RunOptions};
use ember_tools::workload::{self, WorkloadKind};
use std::path::{Path, PathBuf};
use std::process::Command;

fn mainnet() -> PathBuf {
    let dir = block::mainnet_dir();
    assert!(
        dir.join("index.json").is_file(),
        "\n\n*** mainnet blocks not found at {} ***\n*** set {} to the mainnet data directory \
         (../shared/mainnet next to the workspace) ***\n",
        dir.display(),
        block::MAINNET_DIR_ENV
    );
    dir
}

fn load_all() -> Vec<Block> {
    let blocks = block::load_blocks(&[mainnet()], None).expect("mainnet blocks load");
    assert_eq!(blocks.len(), 68, "the mainnet data set has 68 blocks");
    blocks
}

/// Parallel on 2 threads even for blocks the heuristics would run sequentially, with the check
/// against sequential interpretation.
fn parallel_checked() -> RunOptions {
    RunOptions {
        parallel: ParallelOptions::always_parallel(2),
        check: true,
        repeat: 1,
    }
}

fn assert_ok(reports: &[block::BlockReport], what: &str) {
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.ok())
        .map(|r| format!("{}: {}", r.name, r.failures.join("; ")))
        .collect();
    assert!(
        failed.is_empty(),
        "{what}: {} failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[test]
fn mainnet_blocks_pass_in_the_interpreter_sequential_and_parallel() {
    let blocks = load_all();
    let receipts = blocks
        .iter()
        .filter(|b| b.expected.receipts_root.is_some())
        .count();
    assert_eq!(receipts, 54, "receipts roots checkable from Byzantium on");
    block::warm_up();
    // Sequential, twice per block: both runs must agree (run_block compares repeats).
    let sequential: Vec<_> = blocks
        .iter()
        .map(|b| {
            let opts = RunOptions {
                repeat: 2,
                ..RunOptions::new(1)
            };
            block::run_block(b, &NoNative, &opts)
        })
        .collect();
    assert_ok(&sequential, "sequential interpreter");
    let gas: u64 = sequential.iter().map(|r| r.gas_used).sum();
    assert_eq!(
        gas, 797_313_405,
        "gas of the 68 blocks (shared/mainnet README)"
    );
    // 2 and 4 threads with the default knobs, then 2 threads without the repeated-wipe
    // fallback, so the blocks that fall back are also checked through the parallel path; every
    // run is compared with sequential interpretation (the check) as well as the header.
    for (threads, wipe_fallback) in [(2, true), (4, true), (2, false)] {
        let mut opts = parallel_checked();
        opts.parallel.threads = threads;
        opts.parallel.fallback_on_repeated_wipe = wipe_fallback;
        let reports: Vec<_> = blocks
            .iter()
            .map(|b| block::run_block(b, &NoNative, &opts))
            .collect();
        let what =
            format!("parallel interpreter ({threads} threads, wipe fallback {wipe_fallback})");
        assert_ok(&reports, &what);
        for r in &reports {
            let s = r.stats.as_ref().expect("stats");
            assert!(r.checked);
            assert_eq!(s.native_runs, 0);
            if r.txs < 2 {
                continue;
            }
            // Every block with two or more transactions went through the parallel executor;
            // the repeated-wipe hazard is the only fallback, and only when enabled.
            let allowed = match &s.fallback {
                None => true,
                Some(ember_runtime::parallel::FallbackReason::RepeatedWipe(_)) => wipe_fallback,
                Some(_) => false,
            };
            assert!(allowed, "block {}, {what}: {:?}", r.name, s.fallback);
        }
    }
}

/// The blocks run with JIT-compiled contracts. Compiling all 5,121 (contract, fork) pairs of
/// the data set takes far too long for CI (0.1-0.25 s of CPU per KB of bytecode in the fast
/// tier on the 2-core machine, by load: 44 MB of code), so this is a subset of 9 blocks, ~405 KB
/// of code (45-110 s of CPU), covering Frontier to Istanbul, London and Cancun: contract creations and a
/// repeated-wipe fallback (116525), single-contract blocks (2688148, 5891667), busy blocks of
/// mostly transfers (11814555: 579 transactions), long same-sender chains (13287210: 1,414
/// transactions) and a blob transaction (19933122). Berlin, Merge and Shanghai blocks hold
/// 167 KB to 1.2 MB of code each and are left out; `ember block ../shared/mainnet --mode jit
/// --opt fast --check` runs them all.
const JIT_BLOCKS: &[u64] = &[
    116525,   // Frontier
    1796867,  // Homestead
    2641321,  // Tangerine Whistle
    2688148,  // Spurious Dragon
    5891667,  // Byzantium: 380 transactions on one contract
    9068998,  // Petersburg
    11814555, // Istanbul: 579 transactions
    13287210, // London: 1,414 transactions, long same-sender chains
    19933122, // Cancun: a blob transaction
];

#[test]
fn mainnet_blocks_pass_with_the_jit_in_parallel() {
    let dir = mainnet();
    let dirs: Vec<PathBuf> = JIT_BLOCKS.iter().map(|n| dir.join(n.to_string())).collect();
    let bytecodes = dir.join("bytecodes.json");
    let blocks = block::load_blocks(&dirs, Some(&bytecodes)).expect("blocks load");
    let cache = JitCache::new(OptLevel::Fast).expect("LLVM");
    let work = block::contract_keys(&blocks);
    // The warm-up pass that picks what `ember block --mode jit` compiles: the executed
    // contracts are pre-state contracts, the hot ones a subset of them.
    let executed = block::executed_contract_keys(&blocks, 1);
    let hot = block::executed_contract_keys(&blocks, 20);
    assert!(
        !hot.is_empty() && hot.len() < executed.len(),
        "{} hot of {} executed",
        hot.len(),
        executed.len()
    );
    assert!(executed.len() <= work.len());
    let key = |k: &(
        revm::primitives::B256,
        revm::primitives::Bytes,
        revm::primitives::hardfork::SpecId,
    )| (k.0, k.2);
    let executed_keys: std::collections::HashSet<_> = executed.iter().map(key).collect();
    assert!(hot.iter().all(|k| executed_keys.contains(&key(k))));
    assert!(executed
        .iter()
        .all(|k| work.iter().any(|w| key(w) == key(k))));
    assert!(block::executed_contract_keys(&blocks, u64::MAX).is_empty());
    let summary = block::compile_contracts(&work, &cache, 2, &|_| {});
    assert!(
        summary.failures.is_empty(),
        "contracts that did not compile: {:?}",
        summary.failures
    );
    eprintln!(
        "jit: {} contracts compiled in {:.1} s",
        summary.compiled,
        summary.wall.as_secs_f64()
    );
    block::warm_up();
    let reports: Vec<_> = blocks
        .iter()
        .map(|b| block::run_block(b, &cache, &parallel_checked()))
        .collect();
    assert_ok(&reports, "parallel JIT (2 threads)");
    for r in &reports {
        let s = r.stats.as_ref().expect("stats");
        if r.txs > 0
            && !blocks
                .iter()
                .find(|b| b.name == r.name)
                .unwrap()
                .contracts()
                .is_empty()
        {
            assert!(
                s.native_runs > 0,
                "block {}: no native frame: {s:?}",
                r.name
            );
        }
    }
}

#[test]
fn synthetic_workloads_succeed_and_parallel_matches_sequential() {
    let cache = JitCache::new(OptLevel::O2).expect("LLVM");
    let blocks: Vec<Block> = WorkloadKind::ALL
        .iter()
        .map(|&k| workload::block_for_gas(k, 3_000_000).expect("workload"))
        .collect();
    let work = block::contract_keys(&blocks);
    let summary = block::compile_contracts(&work, &cache, 2, &|_| {});
    assert_eq!(summary.compiled, 3, "the token, the pool and the vault");
    for b in &blocks {
        assert!(b.txs.len() >= 20, "{}: {} txs", b.name, b.txs.len());
        let gas = block::run_block(b, &NoNative, &RunOptions::new(1)).gas_used;
        assert!(
            (3_000_000..3_200_000).contains(&gas),
            "{}: {gas} gas for a 3 Mgas workload",
            b.name
        );
        for (provider, what) in [
            (
                &NoNative as &(dyn ember_runtime::NativeProvider + Sync),
                "interp",
            ),
            (&cache, "jit"),
        ] {
            let seq = block::run_block(
                b,
                provider,
                &RunOptions {
                    check: true,
                    ..RunOptions::new(1)
                },
            );
            assert!(seq.ok(), "{} sequential {what}: {:?}", b.name, seq.failures);
            let par = block::run_block(b, provider, &parallel_checked());
            assert!(par.ok(), "{} parallel {what}: {:?}", b.name, par.failures);
            let s = par.stats.expect("stats");
            assert_eq!(s.fallback, None, "{}", b.name);
            if what == "jit" && b.name != "transfers" {
                assert!(
                    s.native_runs > 0 && s.interpreted_runs == 0,
                    "{}: {s:?}",
                    b.name
                );
            }
            // Independent transactions never conflict. (Whether contended ones do depends on
            // the threads' timing: on a loaded machine one worker may run them all in order.)
            if matches!(
                b.name.as_str(),
                "transfers" | "erc20" | "swaps" | "deposits"
            ) {
                assert_eq!(s.validation_failures, 0, "{}: {s:?}", b.name);
                assert_eq!(s.reexecutions, 0, "{}: {s:?}", b.name);
            }
        }
    }
}

/// Native code notes the balances it reads, as the interpreter does: deposits into a contract
/// that never reads its balance are lazy credits, and transactions whose native code reads that
/// balance (`SELFBALANCE` in the contract, `BALANCE` from another one) must read it exactly. Had
/// the builtins not noted those reads, these transactions would store balances missing the
/// credits of lower deposits that ran after them, and the check would fail.
#[test]
fn native_code_in_parallel_notes_the_balances_it_reads() {
    use revm::primitives::{Address, Bytes, TxKind, U256};
    let x = Address::repeat_byte(0xe1);
    let y = Address::repeat_byte(0xe2);
    // x: without calldata stop; with calldata sstore(caller, selfbalance()).
    let x_code = [0x36, 0x60, 0x05, 0x57, 0x00, 0x5b, 0x47, 0x33, 0x55, 0x00];
    // y: sstore(caller, balance(x)).
    let mut y_code = vec![0x73];
    y_code.extend_from_slice(x.as_slice());
    y_code.extend_from_slice(&[0x31, 0x33, 0x55, 0x00]);
    let mut b = workload::block_of(WorkloadKind::Deposits, 48);
    b.name = "observers".to_string();
    workload::insert_code(&mut b.db, x, &x_code);
    workload::insert_code(&mut b.db, y, &y_code);
    for (i, tx) in b.txs.iter_mut().enumerate() {
        match i % 4 {
            0 | 1 => tx.kind = TxKind::Call(x),
            2 => {
                tx.kind = TxKind::Call(x);
                tx.data = Bytes::from_static(&[1]);
            }
            _ => {
                tx.kind = TxKind::Call(y);
                tx.value = U256::ZERO;
            }
        }
    }
    let cache = JitCache::new(OptLevel::Fast).expect("LLVM");
    let summary = block::compile_contracts(&block::contract_keys(&[b.clone()]), &cache, 2, &|_| {});
    assert!(summary.failures.is_empty(), "{:?}", summary.failures);
    for round in 0..10 {
        let r = block::run_block(&b, &cache, &parallel_checked());
        assert!(r.ok(), "round {round}: {:?}", r.failures);
        let s = r.stats.expect("stats");
        assert!(s.native_runs > 0 && s.interpreted_runs == 0, "{s:?}");
    }
}

fn ember(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(args)
        .output()
        .expect("run ember");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("block-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn copy_block(number: u64, to: &Path) -> PathBuf {
    let src = mainnet().join(number.to_string());
    let dst = to.join(number.to_string());
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["block.json", "pre_state.json", "block_hashes.json"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    dst
}

fn assert_json_shape(stdout: &str, blocks: usize) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(stdout).expect("--json prints JSON");
    let obj = v.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["blocks", "total"]);
    let list = v["blocks"].as_array().unwrap();
    assert_eq!(list.len(), blocks);
    for b in list {
        let mut keys: Vec<&str> = b.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["gas_used", "number", "ok", "seconds"]);
        assert!(b["number"].is_u64() && b["gas_used"].is_u64() && b["ok"].is_boolean());
        assert!(b["seconds"].as_f64().unwrap() > 0.0);
    }
    let mut keys: Vec<&str> = v["total"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["gas", "gas_per_sec", "seconds"]);
    assert!(v["total"]["gas_per_sec"].as_f64().unwrap() > 0.0);
    v
}

#[test]
fn cli_json_exit_codes_and_refusals() {
    let dir = mainnet();
    let bytecodes = dir.join("bytecodes.json");
    let b = dir.join("11814555");
    let b = b.to_str().unwrap();

    // One block, text report, with the check.
    let (code, out, err) = ember(&["block", b, "--threads", "2", "--check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("11814555") && out.contains("ok+chk"), "{out}");
    assert!(out.contains("total: 1 block(s), 1 ok, 0 failed"), "{out}");

    // --json: exactly the documented shape, and nothing else on stdout.
    let (code, out, err) = ember(&["block", b, "--json", "--threads", "1"]);
    assert_eq!(code, 0, "{err}");
    let v = assert_json_shape(&out, 1);
    assert_eq!(v["blocks"][0]["number"], 11814555);
    assert_eq!(v["blocks"][0]["gas_used"], 12494001);
    assert_eq!(v["blocks"][0]["ok"], true);
    assert_eq!(v["total"]["gas"], 12494001);

    // Synthetic workloads, JSON.
    let (code, out, err) = ember(&[
        "block",
        "--synthetic",
        "transfers,hot-pool",
        "--gas",
        "1M",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v = assert_json_shape(&out, 2);
    assert_eq!(v["blocks"][0]["gas_used"].as_u64().unwrap() % 21_000, 0);

    // --compare: every mode on one block, the same outcome, JSON with per-mode columns.
    let (code, out, err) = ember(&[
        "block",
        b,
        "--compare",
        "--threads",
        "2",
        "--repeat",
        "2",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("--compare --json is JSON");
    assert_eq!(v["modes"], serde_json::json!(["seq-interp", "par2-interp"]));
    assert_eq!(v["blocks"][0]["gas_used"], 12494001);
    assert_eq!(v["blocks"][0]["ok"], true);
    assert_eq!(v["blocks"][0]["seconds"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["total"]["ratio"][0], 1.0);
    assert_eq!(v["blocks"][0]["native_frames"], serde_json::json!([0, 0]));
    assert!(
        v["blocks"][0]["interpreted_frames"][1].as_u64() > Some(0),
        "{v}"
    );
    let (code, out, err) = ember(&["block", b, "--compare", "--threads", "2"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("xpar2-interp") && out.contains("blocks below 0.95x"),
        "{out}"
    );
    let (code, _, err) = ember(&["block", b, "--compare", "--threads", "1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--compare needs --threads"), "{err}");

    // A block whose header disagrees: exit 1, the field named, one error line.
    let tmp = scratch("cli");
    let bad = copy_block(11814555, &tmp);
    let header = std::fs::read_to_string(bad.join("block.json")).unwrap();
    let gas = "\"gasUsed\":\"0xbea4b1\"";
    assert!(header.contains(gas), "fixture changed");
    std::fs::write(
        bad.join("block.json"),
        header.replace(gas, "\"gasUsed\":\"0xbea4b2\""),
    )
    .unwrap();
    let bad_s = bad.to_str().unwrap();
    let byte_s = bytecodes.to_str().unwrap();
    let (code, out, err) = ember(&["block", bad_s, "--bytecodes", byte_s]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("FAIL gasUsed: expected 12494002, got 12494001"),
        "{out}"
    );
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{err}"
    );
    let (code, out, _) = ember(&["block", bad_s, "--bytecodes", byte_s, "--json"]);
    assert_eq!(code, 1);
    assert_eq!(assert_json_shape(&out, 1)["blocks"][0]["ok"], false);

    // Without a bytecodes file next to it, a block with contracts cannot load.
    let (code, _, err) = ember(&["block", bad_s]);
    assert_eq!(code, 2);
    assert!(
        err.starts_with("error: ") && err.contains("no code for code hash"),
        "{err}"
    );

    // Malformed block directories: one error line, exit 2, no panic.
    std::fs::write(bad.join("pre_state.json"), "[1, 2]").unwrap();
    let (code, _, err) = ember(&["block", bad_s, "--bytecodes", byte_s]);
    assert_eq!(code, 2);
    assert!(
        err.starts_with("error: ") && err.contains("pre_state.json"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    std::fs::write(bad.join("block.json"), "{\"number\": \"0x1\"}").unwrap();
    let (code, _, err) = ember(&["block", bad_s]);
    assert_eq!(code, 2);
    assert!(err.contains("`timestamp` is missing"), "{err}");
    let empty = scratch("empty");
    let (code, _, err) = ember(&["block", empty.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("neither a block directory"), "{err}");

    // Refused options.
    let (code, _, err) = ember(&["block", b, "--mode", "aot"]);
    assert_eq!(code, 2);
    assert!(err.contains("--lib"), "{err}");
    let (code, _, err) = ember(&["block", b, "--lib", "x.so"]);
    assert_eq!(code, 2);
    assert!(err.contains("--lib is only used with --mode aot"), "{err}");
    let (code, _, err) = ember(&["block", b, "--threads", "0"]);
    assert_eq!(code, 2);
    assert!(err.starts_with("error: "), "{err}");
    let (code, _, err) = ember(&["block", "--synthetic", "transfers", "--gas", "lots"]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid gas amount"), "{err}");
    let (code, _, err) = ember(&["block"]);
    assert_eq!(code, 2);
    assert!(err.starts_with("error: "), "{err}");
}
