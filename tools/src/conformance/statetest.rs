//! `ember statetest`: GeneralStateTests-format files.
//!
//! For every test, fork and `post.<fork>[i]` case: build the pre-state, execute the
//! transaction selected by the case's (data, gas, value) indexes, and compare the post-state
//! root and logs hash with `hash`/`logs`, the output with `out` when given, and the outcome with
//! `expectException`.

use super::roots::{first_difference, flatten, logs_hash, state_root};
use super::{
    eip3155_tail, execute_tx, find_json_files, first_divergence, run_files, CaseId, Failure,
    FileOutcome, FrameCounters, Options, Provider, Report, Skip, TestMode,
};
use revm::context::{BlockEnv, CfgEnv, TxEnv};
use revm::database::{CacheState, EmptyDB, State};
use revm::primitives::{hardfork::SpecId, Bytes, B256, U256};
use revm::statetest_types::{SpecName, Test, TestSuite, TestUnit};
use std::path::{Path, PathBuf};

/// Runs every state test under `paths`.
pub fn run(paths: &[PathBuf], opts: &Options) -> Result<Report, String> {
    let files = find_json_files(paths)?;
    Ok(run_files("statetest", &files, opts, run_file))
}

/// Files skipped as a whole, with the reason (printed in every report). `slow` includes the
/// ones skipped only for their run time.
fn skipped_file(path: &Path, slow: bool) -> Option<&'static str> {
    let name = path.file_name()?.to_str()?;
    if path.to_string_lossy().contains("eip7610_create_collision") {
        return Some(COLLISION);
    }
    match name {
        "RevertInCreateInInit_Paris.json"
        | "RevertInCreateInInit.json"
        | "dynamicAccountOverwriteEmpty.json"
        | "dynamicAccountOverwriteEmpty_Paris.json"
        | "RevertInCreateInInitCreate2Paris.json"
        | "create2collisionStorage.json"
        | "RevertInCreateInInitCreate2.json"
        | "create2collisionStorageParis.json"
        | "InitCollision.json"
        | "InitCollisionParis.json"
        | "test_init_collision_create_opcode.json" => Some(COLLISION),
        "CALLBlake2f_MaxRounds.json" if !slow => Some(
            "run time only: 2^32-1 BLAKE2 rounds take ~46 s in revm's precompile, the same in \
             every mode (precompiles are native Rust, never compiled by Ember); revm's runner \
             skips it too; run it with --include-slow",
        ),
        "ValueOverflow.json" | "ValueOverflowParis.json" => Some(
            "transaction value does not fit 256 bits: the file is deliberately malformed for \
             RLP-level clients and revm's test types cannot represent it (revm's runner skips \
             it too)",
        ),
        _ => None,
    }
}

const COLLISION: &str = "CREATE onto an address that has storage but no code or nonce \
     (EIP-7610): revm 43 does not implement the storage part of the collision rule, so its \
     interpreter fails these cases; revm's runner skips them";

/// Why a fork's cases cannot run, if they cannot.
fn skipped_fork(spec: &SpecName) -> Option<&'static str> {
    match spec {
        SpecName::Constantinople | SpecName::ByzantiumToConstantinopleAt5 => Some(
            "Constantinople with EIP-1283 was never activated on mainnet; revm has no such spec \
             and its runner skips these cases",
        ),
        SpecName::Unknown => Some("fork name unknown to revm"),
        _ => None,
    }
}

fn file_outcome_skip(file: &str, mode: TestMode, reason: &str, text: Option<&str>) -> FileOutcome {
    // Count the cases when the file parses far enough; otherwise count the file as one.
    let cases = text
        .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
        .and_then(|v| {
            let units = v.as_object()?;
            Some(
                units
                    .values()
                    .filter_map(|u| u.get("post")?.as_object())
                    .flat_map(|p| p.values())
                    .filter_map(|c| c.as_array().map(Vec::len))
                    .sum::<usize>(),
            )
        })
        .unwrap_or(1)
        .max(1);
    FileOutcome {
        skips: vec![Skip {
            file: file.to_string(),
            test: None,
            fork: None,
            mode,
            cases,
            reason: reason.to_string(),
        }],
        ..Default::default()
    }
}

/// Everything needed to execute one case.
struct Case<'a> {
    id: CaseId,
    test: &'a Test,
    out: Option<&'a Bytes>,
    cfg: &'a CfgEnv,
    block: &'a BlockEnv,
    tx: TxEnv,
    pre: &'a CacheState,
}

/// Result of checking one execution against the case's expectations.
struct Checked {
    error: Option<String>,
    state_root: B256,
    logs_root: B256,
    state: State<EmptyDB>,
}

fn new_state(pre: &CacheState) -> State<EmptyDB> {
    State::builder()
        .with_cached_prestate(pre.clone())
        .with_bundle_update()
        .build()
}

fn execute_and_check(
    case: &Case<'_>,
    provider: &Provider<'_>,
    counters: Option<&FrameCounters>,
) -> Checked {
    let mut state = new_state(case.pre);
    let run = execute_tx(
        &mut state, case.cfg, case.block, &case.tx, provider, counters, false,
    );
    let logs_root = match &run.result {
        Ok(r) => logs_hash(r.logs()),
        Err(_) => logs_hash(&[]),
    };
    let state_root = state_root(&state.cache);
    let error = match (&case.test.expect_exception, &run.result) {
        (Some(_), Err(_)) => None,
        (None, Err(e)) => Some(format!("unexpected transaction error: {e}")),
        (Some(x), Ok(r)) => Some(format!(
            "expected exception {x}, but the transaction was valid ({})",
            crate::exec::status(r)
        )),
        (None, Ok(r)) => if let Some(want) = case.out.filter(|_| r.output().is_some()) {
            let got = r.output().cloned().unwrap_or_default();
            (got != *want).then(|| format!("output {got} != expected {want}"))
        } else {
            None
        }
        .or_else(|| (logs_root != case.test.logs).then(|| "logs hash mismatch".to_string()))
        .or_else(|| (state_root != case.test.hash).then(|| "state root mismatch".to_string())),
    };
    Checked {
        error,
        state_root,
        logs_root,
        state,
    }
}

fn run_case(
    case: &Case<'_>,
    mode: TestMode,
    provider: &Provider<'_>,
    counters: &FrameCounters,
    opts: &Options,
) -> Option<Failure> {
    let c = execute_and_check(case, provider, Some(counters));
    let message = c.error?;
    let mut f = Failure::new(case.id.clone(), mode, message);
    f.expected_root = Some(case.test.hash);
    f.actual_root = Some(c.state_root);
    f.expected_logs = Some(case.test.logs);
    f.actual_logs = Some(c.logs_root);
    if !provider.is_interp() {
        let i = execute_and_check(case, &Provider::None, None);
        f.interpreter_passes = Some(i.error.is_none());
        if i.error.is_none() {
            f.first_difference =
                first_difference(&flatten(&i.state.cache), &flatten(&c.state.cache));
            if opts.diff {
                f.divergence = Some(divergence(case, provider));
            }
        }
    }
    Some(f)
}

/// Re-runs `case` in the interpreter and in `provider`'s mode, recording frame segments, and
/// describes the first divergence with the tail of the interpreter's EIP-3155 trace.
fn divergence(case: &Case<'_>, provider: &Provider<'_>) -> String {
    let mut si = new_state(case.pre);
    let ri = execute_tx(
        &mut si,
        case.cfg,
        case.block,
        &case.tx,
        &Provider::None,
        None,
        true,
    );
    let mut sn = new_state(case.pre);
    let rn = execute_tx(
        &mut sn, case.cfg, case.block, &case.tx, provider, None, true,
    );
    let mut out = first_divergence(&ri.records, &rn.records);
    let pre = new_state(case.pre);
    out.push_str("interpreter EIP-3155 trace (last 12 steps):\n");
    out.push_str(&eip3155_tail(&pre, case.cfg, case.block, &case.tx, 12));
    out
}

/// Checks the parts of a unit that revm's test types would otherwise panic on.
fn validate_unit(unit: &TestUnit) -> Result<(), String> {
    if let Some(x) = unit.env.current_excess_blob_gas {
        if x > U256::from(u64::MAX) {
            return Err("currentExcessBlobGas does not fit 64 bits".into());
        }
    }
    let t = &unit.transaction;
    for (name, v) in [
        ("maxPriorityFeePerGas", t.max_priority_fee_per_gas),
        ("maxFeePerBlobGas", t.max_fee_per_blob_gas),
    ] {
        if v.is_some_and(|v| v > U256::from(u128::MAX)) {
            return Err(format!("{name} does not fit 128 bits"));
        }
    }
    Ok(())
}

fn run_file(
    path: &Path,
    mode: TestMode,
    provider: &Provider<'_>,
    counters: &FrameCounters,
    opts: &Options,
) -> FileOutcome {
    let file = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return FileOutcome {
                error: Some(format!("cannot read: {e}")),
                ..Default::default()
            }
        }
    };
    if let Some(reason) = skipped_file(path, opts.include_slow) {
        return file_outcome_skip(&file, mode, reason, Some(&text));
    }
    let suite: TestSuite = match serde_json::from_str(&text) {
        Ok(s) => s,
        Err(e) => {
            return FileOutcome {
                error: Some(format!("not a valid state test file: {e}")),
                ..Default::default()
            }
        }
    };
    let mut out = FileOutcome::default();
    let file_matches = opts
        .filter
        .as_ref()
        .is_none_or(|f| file.contains(f.as_str()));
    for (name, unit) in &suite.0 {
        if !file_matches
            && !opts
                .filter
                .as_ref()
                .is_some_and(|f| name.contains(f.as_str()))
        {
            continue;
        }
        let unit_error = validate_unit(unit).err();
        let pre = unit.state();
        let codes: Vec<(B256, Bytes)> = pre
            .contracts
            .iter()
            .map(|(h, b)| (*h, b.original_bytes()))
            .collect();
        let mut cfg = CfgEnv::default();
        cfg.chain_id = unit
            .env
            .current_chain_id
            .unwrap_or(U256::ONE)
            .try_into()
            .unwrap_or(1);
        for (spec_name, tests) in &unit.post {
            let fork = format!("{spec_name:?}");
            if let Some(reason) = skipped_fork(spec_name) {
                out.skips.push(Skip {
                    file: file.clone(),
                    test: Some(name.clone()),
                    fork: Some(fork),
                    mode,
                    cases: tests.len(),
                    reason: reason.to_string(),
                });
                continue;
            }
            let spec = spec_name.to_spec_id();
            cfg.set_spec_and_mainnet_gas_params(spec);
            cfg.set_max_blobs_per_tx(
                if spec.is_enabled_in(SpecId::PRAGUE) && !spec.is_enabled_in(SpecId::OSAKA) {
                    9
                } else {
                    6
                },
            );
            let block = if unit_error.is_none() {
                unit.block_env(&mut cfg)
            } else {
                BlockEnv::default()
            };
            for (h, code) in &codes {
                provider.prepare(*h, code, spec);
            }
            if provider.is_collect() {
                continue;
            }
            for (index, test) in tests.iter().enumerate() {
                let ix = &test.indexes;
                let id = CaseId {
                    file: file.clone(),
                    test: name.clone(),
                    fork: fork.clone(),
                    index,
                    indexes: Some([ix.data, ix.gas, ix.value]),
                };
                let fail = |message: String| Failure {
                    expected_root: Some(test.hash),
                    expected_logs: Some(test.logs),
                    ..Failure::new(id.clone(), mode, message)
                };
                if let Some(e) = &unit_error {
                    out.failures.push(fail(format!("malformed test: {e}")));
                    continue;
                }
                let t = &unit.transaction;
                if ix.data >= t.data.len()
                    || ix.gas >= t.gas_limit.len()
                    || ix.value >= t.value.len()
                {
                    out.failures.push(fail(
                        "malformed test: transaction index out of range".into(),
                    ));
                    continue;
                }
                let tx = match test.tx_env(unit) {
                    Ok(tx) => tx,
                    // The transaction cannot even be built (e.g. an unknown type) and the
                    // case expects it to be rejected: that is the expected outcome.
                    Err(_) if test.expect_exception.is_some() => {
                        out.passed += 1;
                        continue;
                    }
                    Err(e) => {
                        out.failures
                            .push(fail(format!("cannot build the transaction: {e}")));
                        continue;
                    }
                };
                let case = Case {
                    id,
                    test,
                    out: unit.out.as_ref(),
                    cfg: &cfg,
                    block: &block,
                    tx,
                    pre: &pre,
                };
                match run_case(&case, mode, provider, counters, opts) {
                    None => out.passed += 1,
                    Some(f) => out.failures.push(f),
                }
            }
        }
    }
    out
}
