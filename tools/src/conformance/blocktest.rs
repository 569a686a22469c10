//! `ember blocktest`: BlockchainTests-format files.
//!
//! For every test: load the pre-state and check it against the genesis header's state root;
//! then for every block, run the pre-block system calls (EIP-4788 beacon root from Cancun,
//! EIP-2935 block-hash history from Prague), the transactions, withdrawals (Shanghai) and the
//! pre-merge block and ommer rewards, and check the block's gas used and post-state root against
//! its header. Blocks with `expectException` must be rejected (a transaction invalid, or gas or
//! state root not matching the header) and leave the state unchanged. At the end, the hash of
//! the last accepted block (keccak256 of its RLP header) must equal `lastblockhash`, and the
//! state must equal `postState` when given.
//!
//! Limits: transition networks (`...At5`, `...AtTime15k`) are skipped with a stated reason;
//! header fields are not validated beyond gas used and state root (no PoW, difficulty or
//! base-fee rules: test files with `sealEngine: NoProof` do not need them).

use super::roots::{first_difference, flatten, state_root, FlatAccount};
use super::{
    eip3155_tail, execute_tx, find_json_files, first_divergence, parse_test_file, read_test_file,
    run_files, segments_agree, CaseId, Failure, FileOutcome, FrameCounters, Options, Provider,
    Report, Skip, TestMode,
};
use revm::context::{BlockEnv, CfgEnv, TxEnv};
use revm::context_interface::block::BlobExcessGasAndPrice;
use revm::database::{EmptyDB, State};
use revm::database_interface::DatabaseCommit;
use revm::handler::{MainBuilder, MainContext, SystemCallCommitEvm};
use revm::primitives::{address, hardfork::SpecId, keccak256, Address, Bytes, B256, U256};
use revm::state::{AccountInfo, Bytecode};
use revm::statetest_types::blockchain::{
    Account, Block, BlockHeader, BlockchainTest, BlockchainTestCase, ForkSpec,
};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// EIP-4788 beacon-roots contract.
const BEACON_ROOTS_ADDRESS: Address = address!("000F3df6D732807Ef1319fB7B8bB8522d0Beac02");
/// EIP-2935 block-hash history contract.
const HISTORY_STORAGE_ADDRESS: Address = address!("0000F90827F1C53a10cb7A02335B175320002935");

/// Runs every blockchain test under `paths`.
pub fn run(paths: &[PathBuf], opts: &Options) -> Result<Report, String> {
    let files = find_json_files(paths)?;
    Ok(run_files("blocktest", &files, opts, run_file))
}

fn fork_spec(fork: ForkSpec) -> Result<SpecId, &'static str> {
    Ok(match fork {
        ForkSpec::Frontier => SpecId::FRONTIER,
        ForkSpec::Homestead => SpecId::HOMESTEAD,
        ForkSpec::EIP150 => SpecId::TANGERINE,
        ForkSpec::EIP158 => SpecId::SPURIOUS_DRAGON,
        ForkSpec::Byzantium => SpecId::BYZANTIUM,
        ForkSpec::Constantinople | ForkSpec::ConstantinopleFix => SpecId::PETERSBURG,
        ForkSpec::Istanbul => SpecId::ISTANBUL,
        ForkSpec::Berlin => SpecId::BERLIN,
        ForkSpec::London => SpecId::LONDON,
        ForkSpec::Paris => SpecId::MERGE,
        ForkSpec::Shanghai => SpecId::SHANGHAI,
        ForkSpec::Cancun => SpecId::CANCUN,
        ForkSpec::Prague => SpecId::PRAGUE,
        ForkSpec::Osaka => SpecId::OSAKA,
        ForkSpec::Amsterdam => SpecId::AMSTERDAM,
        ForkSpec::MergeEOF | ForkSpec::MergeMeterInitCode | ForkSpec::MergePush0 => {
            return Err("pre-release Merge variant with EOF/EIP-3860/PUSH0 only; no revm spec")
        }
        _ => {
            return Err(
                "transition network (fork changes mid-test at a block number or timestamp); \
                 not supported, as in revm's own runner",
            )
        }
    })
}

/// Pre-merge block reward of `spec` in wei.
fn block_reward(spec: SpecId) -> u128 {
    const ETH: u128 = 1_000_000_000_000_000_000;
    if spec.is_enabled_in(SpecId::MERGE) {
        0
    } else if spec.is_enabled_in(SpecId::PETERSBURG) {
        2 * ETH
    } else if spec.is_enabled_in(SpecId::BYZANTIUM) {
        3 * ETH
    } else {
        5 * ETH
    }
}

/// keccak256 of the header inside a block's RLP (the block hash).
pub fn block_hash_from_rlp(rlp: &[u8]) -> Result<B256, String> {
    let mut buf = rlp;
    let outer = alloy_rlp::Header::decode(&mut buf).map_err(|e| format!("block RLP: {e}"))?;
    if !outer.list {
        return Err("block RLP is not a list".into());
    }
    let start = buf;
    let header = alloy_rlp::Header::decode(&mut buf).map_err(|e| format!("block RLP: {e}"))?;
    if !header.list {
        return Err("block RLP: the header is not a list".into());
    }
    let len = (start.len() - buf.len())
        .checked_add(header.payload_length)
        .filter(|&l| l <= start.len())
        .ok_or("block RLP: header longer than the block")?;
    Ok(keccak256(&start[..len]))
}

fn fits_u64(v: U256) -> bool {
    v <= U256::from(u64::MAX)
}

/// Rejects header fields that do not fit the integer types revm uses.
fn check_header(h: &BlockHeader) -> Result<(), String> {
    for (name, v) in [
        ("number", Some(h.number)),
        ("timestamp", Some(h.timestamp)),
        ("gasLimit", Some(h.gas_limit)),
        ("gasUsed", Some(h.gas_used)),
        ("baseFeePerGas", h.base_fee_per_gas),
        ("excessBlobGas", h.excess_blob_gas),
    ] {
        if v.is_some_and(|v| !fits_u64(v)) {
            return Err(format!("header field {name} does not fit 64 bits"));
        }
    }
    Ok(())
}

fn block_env(h: &BlockHeader, spec: SpecId) -> BlockEnv {
    let blob = if spec.is_enabled_in(SpecId::CANCUN) {
        Some(BlobExcessGasAndPrice::new_with_spec(
            h.excess_blob_gas.unwrap_or_default().to::<u64>(),
            spec,
        ))
    } else {
        None
    };
    h.to_block_env(blob)
}

/// Called before each transaction with (block number index, transaction index, the state the
/// transaction runs on, its environment): how `--diff` replays one block's transactions in
/// two modes from the interpreter's state.
type Probe<'a> =
    dyn FnMut(usize, usize, &State<EmptyDB>, &CfgEnv, &BlockEnv, &revm::context::TxEnv) + 'a;

/// Why one test failed: at which block, and what.
struct TestFailure {
    block: usize,
    message: String,
    expected_root: Option<B256>,
    actual_root: Option<B256>,
}

fn fail(block: usize, message: impl Into<String>) -> TestFailure {
    TestFailure {
        block,
        message: message.into(),
        expected_root: None,
        actual_root: None,
    }
}

/// Executes `test`; returns the final state, and the failure if any. With `stop_after`, stops
/// after that block (for comparing states at a failing block).
#[allow(clippy::too_many_arguments)]
fn run_test(
    test: &BlockchainTestCase,
    spec: SpecId,
    provider: &Provider<'_>,
    counters: Option<&FrameCounters>,
    stop_after: Option<usize>,
    probe: Option<&mut Probe<'_>>,
    block_threads: usize,
) -> (State<EmptyDB>, Option<TestFailure>) {
    let mut state = State::builder().build();
    for (address, acc) in test.pre.0.iter() {
        let info = AccountInfo {
            balance: acc.balance,
            nonce: acc.nonce.saturating_to(),
            code_hash: keccak256(&acc.code),
            code: Some(Bytecode::new_raw(acc.code.clone())),
            account_id: None,
        };
        state.insert_account_with_storage(
            *address,
            info,
            acc.storage.iter().map(|(k, v)| (*k, *v)).collect(),
        );
    }
    let r = run_blocks(
        &mut state,
        test,
        spec,
        provider,
        counters,
        stop_after,
        probe,
        block_threads,
    );
    (state, r.err())
}

#[allow(clippy::too_many_arguments)]
fn run_blocks(
    state: &mut State<EmptyDB>,
    test: &BlockchainTestCase,
    spec: SpecId,
    provider: &Provider<'_>,
    counters: Option<&FrameCounters>,
    stop_after: Option<usize>,
    mut probe: Option<&mut Probe<'_>>,
    block_threads: usize,
) -> Result<(), TestFailure> {
    if let Some((a, _)) = test.pre.0.iter().find(|(_, a)| !fits_u64(a.nonce)) {
        return Err(fail(
            0,
            format!("pre-state nonce of {a} does not fit 64 bits"),
        ));
    }
    let genesis_root = state_root(&state.cache);
    if genesis_root != test.genesis_block_header.state_root {
        return Err(TestFailure {
            block: 0,
            message: "pre-state root does not match the genesis header".into(),
            expected_root: Some(test.genesis_block_header.state_root),
            actual_root: Some(genesis_root),
        });
    }
    state.block_hashes.insert(0, test.genesis_block_header.hash);
    let mut cfg = CfgEnv::default();
    cfg.set_spec_and_mainnet_gas_params(spec);
    let mut prepared: HashSet<B256> = HashSet::new();
    let mut last_hash = test.genesis_block_header.hash;
    let mut parent_hash = test.genesis_block_header.hash;
    for (i, block) in test.blocks.iter().enumerate() {
        let n = i + 1;
        // Compile what is deployed so far (pre-state, then contracts created by earlier blocks).
        for acc in state.cache.accounts.values() {
            let Some(info) = acc.account.as_ref().map(|a| &a.info) else {
                continue;
            };
            if let Some(code) = info.code.as_ref().filter(|c| !c.is_empty()) {
                if prepared.insert(info.code_hash) {
                    provider.prepare(info.code_hash, code.original_byte_slice(), spec);
                }
            }
        }
        let snapshot = block.expect_exception.as_ref().map(|_| state.cache.clone());
        let p = probe.as_deref_mut();
        match run_block(
            state,
            block,
            n,
            &cfg,
            spec,
            provider,
            counters,
            parent_hash,
            p,
            block_threads,
        ) {
            Ok(hash) => {
                if let Some(exc) = &block.expect_exception {
                    return Err(fail(
                        n,
                        format!("block expected to be invalid ({exc}) but it was accepted"),
                    ));
                }
                last_hash = hash;
                parent_hash = hash;
            }
            Err(f) => match snapshot {
                // Rejected as expected: the state goes back to before the block.
                Some(cache) => state.cache = cache,
                None => return Err(f),
            },
        }
        if stop_after == Some(n) {
            return Ok(());
        }
    }
    if last_hash != test.lastblockhash {
        return Err(fail(
            test.blocks.len(),
            format!(
                "last accepted block hash {last_hash} != lastblockhash {}",
                test.lastblockhash
            ),
        ));
    }
    if let Some(post) = &test.post_state {
        let expected = expected_post(post);
        if let Some(d) = first_difference(&expected, &flatten(&state.cache)) {
            return Err(fail(
                test.blocks.len(),
                format!("post-state differs from postState (expected vs actual): {d}"),
            ));
        }
    }
    Ok(())
}

fn expected_post(post: &BTreeMap<Address, Account>) -> BTreeMap<Address, FlatAccount> {
    post.iter()
        .map(|(a, acc)| {
            (
                *a,
                FlatAccount::new(
                    acc.nonce.saturating_to(),
                    acc.balance,
                    keccak256(&acc.code),
                    &acc.storage,
                ),
            )
        })
        .collect()
}

/// Applies one block; returns its hash.
#[allow(clippy::too_many_arguments)]
fn run_block(
    state: &mut State<EmptyDB>,
    block: &Block,
    n: usize,
    cfg: &CfgEnv,
    spec: SpecId,
    provider: &Provider<'_>,
    counters: Option<&FrameCounters>,
    parent_hash: B256,
    mut probe: Option<&mut Probe<'_>>,
    block_threads: usize,
) -> Result<B256, TestFailure> {
    let h = block
        .block_header
        .as_ref()
        .ok_or_else(|| fail(n, "block has no blockHeader"))?;
    check_header(h).map_err(|e| fail(n, e))?;
    let hash = block_hash_from_rlp(&block.rlp).map_err(|e| fail(n, e))?;
    if hash != h.hash {
        return Err(fail(
            n,
            format!(
                "hash of the block's RLP header {hash} != blockHeader.hash {}",
                h.hash
            ),
        ));
    }
    let env = block_env(h, spec);
    // Pre-block system calls.
    {
        let ctx = revm::Context::mainnet()
            .with_block(env.clone())
            .with_cfg(cfg.clone())
            .with_db(&mut *state);
        let mut evm = ember_runtime::EmberEvm::new(ctx.build_mainnet(), provider);
        if spec.is_enabled_in(SpecId::CANCUN) {
            if let Some(root) = h.parent_beacon_block_root {
                evm.system_call_commit(BEACON_ROOTS_ADDRESS, Bytes::from(root.0.to_vec()))
                    .map_err(|e| fail(n, format!("beacon-root system call failed: {e}")))?;
            }
        }
        if spec.is_enabled_in(SpecId::PRAGUE) {
            evm.system_call_commit(HISTORY_STORAGE_ADDRESS, Bytes::from(parent_hash.0.to_vec()))
                .map_err(|e| fail(n, format!("block-hash history system call failed: {e}")))?;
        }
        if let Some(c) = counters {
            c.add(
                evm.stats.native_runs.get(),
                evm.stats.interpreted_runs.get(),
            );
        }
    }
    let mut gas_used = 0u64;
    let mut tx_envs = Vec::new();
    for (t, tx) in block.transactions.iter().flatten().enumerate() {
        if !fits_u64(tx.gas_limit) || !fits_u64(tx.nonce) {
            return Err(fail(
                n,
                format!("transaction {t}: gas limit or nonce over 64 bits"),
            ));
        }
        let too_big = |v: Option<U256>| v.is_some_and(|v| v > U256::from(u128::MAX));
        if too_big(tx.gas_price)
            || too_big(tx.max_fee_per_gas)
            || too_big(tx.max_priority_fee_per_gas)
            || too_big(tx.max_fee_per_blob_gas)
            || tx.transaction_type.is_some_and(|t| t > U256::from(255))
            || tx.chain_id.is_some_and(|c| !fits_u64(c))
        {
            return Err(fail(n, format!("transaction {t}: fee field out of range")));
        }
        let tx_env = match tx.sender {
            Some(_) => tx.to_tx_env(),
            None => recover_legacy_sender(tx).and_then(|(sender, chain_id)| {
                revm::context::TxEnv::builder()
                    .tx_type(Some(0))
                    .caller(sender)
                    .gas_limit(tx.gas_limit.to::<u64>())
                    .gas_price(tx.gas_price.unwrap_or_default().to::<u128>())
                    .nonce(tx.nonce.to::<u64>())
                    .value(tx.value)
                    .data(tx.data.clone())
                    .kind(match tx.to {
                        Some(a) => revm::primitives::TxKind::Call(a),
                        None => revm::primitives::TxKind::Create,
                    })
                    .chain_id(chain_id)
                    .build()
                    .map_err(|e| format!("{e:?}"))
            }),
        }
        .map_err(|e| fail(n, format!("transaction {t}: {e}")))?;
        if block_threads >= 2 {
            tx_envs.push(tx_env);
            continue;
        }
        if let Some(p) = probe.as_deref_mut() {
            p(n, t, state, cfg, &env, &tx_env);
        }
        let run = execute_tx(state, cfg, &env, &tx_env, provider, counters, false);
        match run.result {
            Ok(r) => gas_used += r.tx_gas_used(),
            Err(e) => return Err(fail(n, format!("transaction {t} invalid: {e}"))),
        }
    }
    if block_threads >= 2 {
        gas_used = execute_in_parallel(
            state,
            cfg,
            &env,
            &tx_envs,
            provider,
            counters,
            block_threads,
        )
        .map_err(|e| fail(n, e))?;
    }
    if spec.is_enabled_in(SpecId::SHANGHAI) {
        for w in block.withdrawals.iter().flatten() {
            let wei = w
                .amount
                .checked_mul(U256::from(1_000_000_000u64))
                .and_then(|v| u128::try_from(v).ok())
                .ok_or_else(|| fail(n, "withdrawal amount out of range"))?;
            if wei > 0 {
                increment(state, w.address, wei, n)?;
            }
        }
    }
    let reward = block_reward(spec);
    if reward > 0 {
        let ommers = block.uncle_headers.as_deref().unwrap_or_default();
        let miner = reward + reward / 32 * ommers.len() as u128;
        increment(state, h.coinbase, miner, n)?;
        for o in ommers {
            let k = u128::try_from(h.number.saturating_sub(o.number)).unwrap_or(u128::MAX);
            let share = 8u128.saturating_sub(k) * reward / 8;
            if share > 0 {
                increment(state, o.coinbase, share, n)?;
            }
        }
    }
    if gas_used != h.gas_used.to::<u64>() {
        return Err(fail(
            n,
            format!("gas used {gas_used} != header gasUsed {}", h.gas_used),
        ));
    }
    let root = state_root(&state.cache);
    if root != h.state_root {
        return Err(TestFailure {
            block: n,
            message: "state root mismatch".into(),
            expected_root: Some(h.state_root),
            actual_root: Some(root),
        });
    }
    state.block_hashes.insert(h.number.to::<u64>(), hash);
    Ok(hash)
}

/// A read-only, shareable view of the test's `State` (whose state hook makes it `!Sync`):
/// exactly what `State<EmptyDB>`'s `DatabaseRef` answers, from its cache and block hashes.
struct StateView<'a> {
    cache: &'a revm::database::CacheState,
    block_hashes: &'a revm::database::states::block_hash_cache::BlockHashCache,
}

impl revm::database_interface::DatabaseRef for StateView<'_> {
    type Error = std::convert::Infallible;

    fn basic_ref(&self, address: Address) -> Result<Option<AccountInfo>, Self::Error> {
        Ok(self
            .cache
            .accounts
            .get(&address)
            .and_then(|a| a.account_info()))
    }

    fn code_by_hash_ref(&self, code_hash: B256) -> Result<Bytecode, Self::Error> {
        Ok(self
            .cache
            .contracts
            .get(&code_hash)
            .cloned()
            .unwrap_or_default())
    }

    fn storage_ref(&self, address: Address, index: U256) -> Result<U256, Self::Error> {
        // The database under the test's `State` is empty: a slot the cache does not hold is 0.
        Ok(self
            .cache
            .accounts
            .get(&address)
            .and_then(|a| a.account.as_ref())
            .and_then(|a| a.storage.get(&index).copied())
            .unwrap_or_default())
    }

    fn block_hash_ref(&self, number: u64) -> Result<B256, Self::Error> {
        match self.block_hashes.get(number) {
            Some(hash) => Ok(hash),
            None => EmptyDB::default().block_hash_ref(number),
        }
    }
}

/// Executes a block's transactions with the parallel executor on top of `state` (read-only
/// while the block runs), then commits the block's state changes; returns the gas used.
#[allow(clippy::too_many_arguments)]
fn execute_in_parallel(
    state: &mut State<EmptyDB>,
    cfg: &CfgEnv,
    env: &BlockEnv,
    txs: &[TxEnv],
    provider: &Provider<'_>,
    counters: Option<&FrameCounters>,
    threads: usize,
) -> Result<u64, String> {
    let view = StateView {
        cache: &state.cache,
        block_hashes: &state.block_hashes,
    };
    let out = ember_runtime::parallel::execute_block(
        cfg,
        env,
        txs,
        &view,
        provider,
        &ember_runtime::parallel::ParallelOptions::always_parallel(threads),
    )
    .map_err(|e| format!("parallel execution: {e}"))?;
    if let Some(c) = counters {
        c.add(out.stats.native_runs, out.stats.interpreted_runs);
    }
    let changes = ember_runtime::parallel::changes_to_evm_state(&out.changes, &view)
        .map_err(|e| format!("reading the pre-block state: {e}"))?;
    state.commit(changes);
    Ok(out.gas_used())
}

/// The sender (and EIP-155 chain id) of a legacy (type 0) transaction given only its
/// signature: `ecrecover` over the signing hash.
fn recover_legacy_sender(
    tx: &revm::statetest_types::blockchain::Transaction,
) -> Result<(Address, Option<u64>), String> {
    use alloy_rlp::Encodable;
    if tx.transaction_type.is_some_and(|t| !t.is_zero()) {
        return Err("typed transaction without a sender field".into());
    }
    let v: u64 = tx.v.try_into().map_err(|_| "signature v out of range")?;
    let (recid, chain_id) = match v {
        27 | 28 => ((v - 27) as u8, None),
        v if v >= 35 => (((v - 35) % 2) as u8, Some((v - 35) / 2)),
        _ => return Err(format!("invalid signature v {v}")),
    };
    let to: Bytes = tx.to.map(|a| Bytes::from(a.0.to_vec())).unwrap_or_default();
    let gas_price = tx.gas_price.unwrap_or_default();
    let mut fields: Vec<u8> = Vec::new();
    tx.nonce.encode(&mut fields);
    gas_price.encode(&mut fields);
    tx.gas_limit.encode(&mut fields);
    to.encode(&mut fields);
    tx.value.encode(&mut fields);
    tx.data.encode(&mut fields);
    if let Some(id) = chain_id {
        id.encode(&mut fields);
        0u8.encode(&mut fields);
        0u8.encode(&mut fields);
    }
    let mut payload = Vec::new();
    alloy_rlp::Header {
        list: true,
        payload_length: fields.len(),
    }
    .encode(&mut payload);
    payload.extend_from_slice(&fields);
    let msg = keccak256(&payload);
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&tx.r.to_be_bytes::<32>());
    sig[32..].copy_from_slice(&tx.s.to_be_bytes::<32>());
    let out = revm::precompile::secp256k1::ecrecover(&sig.into(), recid, &msg)
        .map_err(|e| format!("cannot recover the sender: {e:?}"))?;
    Ok((Address::from_slice(&out[12..]), chain_id))
}

fn increment(
    state: &mut State<EmptyDB>,
    a: Address,
    wei: u128,
    n: usize,
) -> Result<(), TestFailure> {
    let acc = state
        .load_cache_account(a)
        .map_err(|e| fail(n, format!("cannot load {a}: {e}")))?;
    // No bundle is built here, so the transition record is not needed.
    let _ = acc.increment_balance(wei);
    Ok(())
}

/// Runs transaction `t` of block `n` from `st` in the interpreter and in `provider`'s mode,
/// recording frame segments; describes the first divergence, if any.
fn tx_divergence(
    n: usize,
    t: usize,
    st: &State<EmptyDB>,
    cfg: &CfgEnv,
    env: &BlockEnv,
    tx: &revm::context::TxEnv,
    provider: &Provider<'_>,
) -> Option<String> {
    let copy = |st: &State<EmptyDB>| {
        let mut c = State::builder()
            .with_cached_prestate(st.cache.clone())
            .build();
        c.block_hashes = st.block_hashes.clone();
        c
    };
    let (mut si, mut sn) = (copy(st), copy(st));
    let ri = execute_tx(&mut si, cfg, env, tx, &Provider::None, None, true);
    let rn = execute_tx(&mut sn, cfg, env, tx, provider, None, true);
    let (a, b) = (format!("{:?}", ri.result), format!("{:?}", rn.result));
    if segments_agree(&ri.records, &rn.records) && a == b {
        return None;
    }
    let mut d = format!("block {n}, transaction {t}:\n");
    d.push_str(&first_divergence(&ri.records, &rn.records));
    if a != b {
        d.push_str(&format!("result: interp {a}\n   this mode {b}\n"));
    }
    d.push_str("interpreter EIP-3155 trace (last 12 steps):\n");
    d.push_str(&eip3155_tail(st, cfg, env, tx, 12));
    Some(d)
}

fn run_file(
    path: &Path,
    mode: TestMode,
    provider: &Provider<'_>,
    counters: &FrameCounters,
    opts: &Options,
) -> FileOutcome {
    let file = path.display().to_string();
    let text = match read_test_file(path) {
        Ok(t) => t,
        Err(o) => return o,
    };
    let suite: BlockchainTest = match parse_test_file(&text, "blockchain test") {
        Ok(s) => s,
        Err(o) => return o,
    };
    let mut out = FileOutcome::default();
    for (name, test) in &suite.0 {
        if !opts.selects(&file, name) {
            continue;
        }
        let fork = format!("{:?}", test.network);
        let spec = match fork_spec(test.network) {
            Ok(s) => s,
            Err(reason) => {
                out.skips.push(Skip {
                    file: file.clone(),
                    test: Some(name.clone()),
                    fork: Some(fork),
                    mode,
                    cases: 1,
                    reason: reason.to_string(),
                });
                continue;
            }
        };
        let (final_state, failure) = run_test(
            test,
            spec,
            provider,
            Some(counters),
            None,
            None,
            opts.block_threads,
        );
        let Some(f) = failure else {
            out.passed += 1;
            continue;
        };
        let id = CaseId {
            file: file.clone(),
            test: name.clone(),
            fork,
            index: f.block,
            indexes: None,
        };
        let message = format!("block {}: {}", f.block, f.message);
        let mut failure = Failure {
            expected_root: f.expected_root,
            actual_root: f.actual_root,
            ..Failure::new(id, mode, message)
        };
        // Diagnose against sequential interpretation: a parallel run in the interpreter is
        // compared too (a failure that only the parallel path shows is the executor's).
        if !provider.is_interp() || opts.block_threads >= 2 {
            let (_, interp_failure) = run_test(test, spec, &Provider::None, None, None, None, 0);
            failure.interpreter_passes = Some(interp_failure.is_none());
            if interp_failure.is_none() {
                let mut divergence: Option<String> = None;
                let mut probe = |n: usize,
                                 t: usize,
                                 st: &State<EmptyDB>,
                                 cfg: &CfgEnv,
                                 env: &BlockEnv,
                                 tx: &revm::context::TxEnv| {
                    if !opts.diff || n != f.block || divergence.is_some() {
                        return;
                    }
                    divergence = tx_divergence(n, t, st, cfg, env, tx, provider);
                };
                let (interp_state, _) = run_test(
                    test,
                    spec,
                    &Provider::None,
                    None,
                    Some(f.block),
                    Some(&mut probe),
                    0,
                );
                failure.first_difference =
                    first_difference(&flatten(&interp_state.cache), &flatten(&final_state.cache));
                failure.divergence = divergence.or_else(|| {
                    opts.diff.then(|| {
                        "every transaction of the failing block agrees frame by frame; the \
                         difference is outside transactions (system calls, withdrawals, rewards)"
                            .to_string()
                    })
                });
            }
        }
        out.failures.push(failure);
    }
    out
}
