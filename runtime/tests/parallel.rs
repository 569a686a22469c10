//! Parallel (Block-STM) execution must produce exactly what sequential execution produces:
//! per-transaction results, cumulative gas, logs and the block's state changes, or the same
//! error. Every test builds a block, runs it sequentially and in parallel with several thread
//! counts, and compares field by field.

use ember_runtime::parallel::{
    execute_block, execute_block_sequential, BlockError, BlockOutput, FallbackReason,
    ParallelOptions, ParallelStats, Speculation,
};
use ember_runtime::NoNative;
use revm::bytecode::Bytecode;
use revm::context::{BlockEnv, CfgEnv, TxEnv};
use revm::context_interface::result::{ExecutionResult, InvalidTransaction};
use revm::database::{CacheDB, EmptyDB};
use revm::primitives::{hardfork::SpecId, Address, Bytes, TxKind, B256, U256};
use revm::state::AccountInfo;

// ---------------------------------------------------------------------------------------------
// Block building
// ---------------------------------------------------------------------------------------------

const COINBASE: Address = Address::new([0xc0; 20]);

fn addr(n: u64) -> Address {
    let mut b = [0u8; 20];
    b[0] = 0xaa;
    b[12..].copy_from_slice(&n.to_be_bytes());
    Address::new(b)
}

fn eth(n: u64) -> U256 {
    U256::from(n) * U256::from(1_000_000_000_000_000_000u128)
}

#[derive(Clone)]
struct TestBlock {
    cfg: CfgEnv,
    block: BlockEnv,
    db: CacheDB<EmptyDB>,
    txs: Vec<TxEnv>,
    nonces: std::collections::HashMap<Address, u64>,
    gas_price: u128,
}

impl TestBlock {
    fn new(spec: SpecId) -> Self {
        let mut block = BlockEnv {
            number: U256::from(20_000_000u64),
            beneficiary: COINBASE,
            timestamp: U256::from(1_710_338_135u64),
            gas_limit: 30_000_000,
            ..BlockEnv::default()
        };
        if spec.is_enabled_in(SpecId::LONDON) {
            block.basefee = 7;
        }
        Self {
            cfg: CfgEnv::new_with_spec(spec),
            block,
            db: CacheDB::new(EmptyDB::default()),
            txs: Vec::new(),
            nonces: Default::default(),
            gas_price: 10,
        }
    }

    fn fund(&mut self, a: Address, balance: U256) {
        self.db.insert_account_info(
            a,
            AccountInfo {
                balance,
                ..AccountInfo::default()
            },
        );
    }

    fn deploy(&mut self, a: Address, code: &[u8]) {
        let code = Bytecode::new_raw(Bytes::copy_from_slice(code));
        self.db.insert_account_info(
            a,
            AccountInfo {
                nonce: 1,
                code_hash: code.hash_slow(),
                code: Some(code),
                ..AccountInfo::default()
            },
        );
    }

    fn store(&mut self, a: Address, slot: U256, value: U256) {
        self.db
            .insert_account_storage(a, slot, value)
            .expect("in-memory db");
    }

    /// A transaction from `from` with the next nonce.
    fn tx(&mut self, from: Address, kind: TxKind, value: U256, data: Vec<u8>, gas: u64) {
        let nonce = self.nonces.entry(from).or_insert(0);
        let tx = TxEnv {
            caller: from,
            gas_limit: gas,
            gas_price: self.gas_price,
            kind,
            value,
            data: data.into(),
            nonce: *nonce,
            chain_id: None,
            ..TxEnv::default()
        };
        *nonce += 1;
        self.txs.push(tx);
    }

    fn call(&mut self, from: Address, to: Address, value: U256, data: Vec<u8>) {
        self.tx(from, TxKind::Call(to), value, data, 200_000);
    }

    fn transfer(&mut self, from: Address, to: Address, value: U256) {
        self.tx(from, TxKind::Call(to), value, Vec::new(), 21_000);
    }

    fn sequential(&self) -> Result<BlockOutput, BlockError> {
        execute_block_sequential(
            &self.cfg,
            &self.block,
            &self.txs,
            &self.db,
            &NoNative,
            &ParallelOptions::default(),
        )
    }

    fn parallel(&self, opts: &ParallelOptions) -> Result<BlockOutput, BlockError> {
        self.parallel_labeled(opts, "")
    }

    /// [`execute_block`] under a watchdog: a hang fails the test (naming `what`) instead of
    /// stalling it.
    fn parallel_labeled(
        &self,
        opts: &ParallelOptions,
        what: &str,
    ) -> Result<BlockOutput, BlockError> {
        let (cfg, block, txs, db, opts) = (
            self.cfg.clone(),
            self.block.clone(),
            self.txs.clone(),
            self.db.clone(),
            opts.clone(),
        );
        let what = format!(
            "{what} ({:?}, {} transactions, {} threads)",
            cfg.spec,
            txs.len(),
            opts.threads
        );
        let n = txs.len() as u64;
        let out = watchdog(&what, move || {
            execute_block(&cfg, &block, &txs, &db, &NoNative, &opts)
        });
        if let Ok(out) = &out {
            check_stats(&out.stats, n);
        }
        out
    }

    /// Runs sequentially and in parallel (2 and 4 threads, default knobs and every lazy knob
    /// off) and asserts identical outcomes. Returns the sequential outcome and the 4-thread
    /// parallel output (for assertions on statistics).
    fn check(&self) -> (Result<BlockOutput, BlockError>, Option<BlockOutput>) {
        let seq = self.sequential();
        let mut last = None;
        for threads in [2, 4] {
            for lazy in [true, false] {
                let opts = ParallelOptions {
                    lazy_beneficiary: lazy,
                    lazy_transfers: lazy,
                    ..ParallelOptions::always_parallel(threads)
                };
                let par = self.parallel(&opts);
                assert_same(&seq, &par, &format!("threads {threads}, lazy {lazy}"));
                if lazy {
                    last = par.ok();
                }
            }
        }
        (seq, last)
    }
}

/// Invariants of a parallel run's counters: time lost to conflicts is part of the execution
/// time, and none is lost when every transaction executed exactly once.
fn check_stats(stats: &ParallelStats, transactions: u64) {
    if stats.fallback.is_some() {
        return;
    }
    assert!(
        stats.wasted_execution_time <= stats.execution_time,
        "{stats:?}"
    );
    assert!(stats.executions >= transactions, "{stats:?}");
    if stats.executions == transactions {
        assert!(stats.wasted_execution_time.is_zero(), "{stats:?}");
    } else {
        assert!(!stats.wasted_execution_time.is_zero(), "{stats:?}");
    }
}

/// How long one block may take before [`watchdog`] fails the test:
/// `EMBER_PARALLEL_WATCHDOG_SECS`, default 60 s (blocks here take milliseconds).
fn watchdog_limit() -> std::time::Duration {
    let secs = std::env::var("EMBER_PARALLEL_WATCHDOG_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    std::time::Duration::from_secs(secs)
}

/// Runs `f` on a helper thread and panics if it does not return within [`watchdog_limit`]
/// (the stuck thread is left behind; the test binary exits anyway).
fn watchdog<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("execute_block".to_string())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn the watchdog's helper thread");
    let limit = watchdog_limit();
    match rx.recv_timeout(limit) {
        Ok(out) => out,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!(
            "{what}: execute_block did not return within {limit:?}: the parallel scheduler is \
             stuck (rerun with EMBER_PARALLEL_STALL_MS=1000 to print its state)"
        ),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            panic!("{what}: execute_block panicked")
        }
    }
}

fn assert_same(
    seq: &Result<BlockOutput, BlockError>,
    par: &Result<BlockOutput, BlockError>,
    what: &str,
) {
    match (seq, par) {
        (Ok(s), Ok(p)) => {
            assert_eq!(
                s.transactions.len(),
                p.transactions.len(),
                "{what}: transaction count"
            );
            for (i, (a, b)) in s.transactions.iter().zip(&p.transactions).enumerate() {
                assert_eq!(a, b, "{what}: transaction {i} differs");
            }
            assert_eq!(
                s.changes.len(),
                p.changes.len(),
                "{what}: changed accounts\nseq {:#?}\npar {:#?}",
                s.changes,
                p.changes
            );
            for (a, b) in s.changes.iter().zip(&p.changes) {
                assert_eq!(a, b, "{what}: account change differs");
            }
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "{what}: errors differ"),
        (a, b) => panic!(
            "{what}: sequential {:?} vs parallel {:?}",
            a.as_ref().map(|o| o.gas_used()),
            b.as_ref().map(|o| o.gas_used())
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-assembled contracts
// ---------------------------------------------------------------------------------------------

/// slot0 += 1
const COUNTER: &[u8] = &[0x60, 0x00, 0x54, 0x60, 0x01, 0x01, 0x60, 0x00, 0x55, 0x00];

/// ERC-20-like `transfer(to, amount)` with calldata `to (32 bytes) ++ amount (32 bytes)`;
/// balances live at slot = holder address. Reverts on insufficient balance, logs the amount.
const TOKEN: &[u8] = &[
    0x60, 0x20, 0x35, // amount
    0x33, 0x54, // balance of caller
    0x81, 0x81, 0x10, // bf < amount
    0x60, 0x27, 0x57, // jump to revert
    0x81, 0x90, 0x03, // [amount, bf - amount]
    0x33, 0x55, // sstore(caller, bf - amount)
    0x60, 0x00, 0x35, // [amount, to]
    0x80, 0x54, // [amount, to, bt]
    0x82, 0x01, // [amount, to, bt + amount]
    0x90, 0x55, // sstore(to, bt + amount)
    0x60, 0x00, 0x52, // mstore(0, amount)
    0x60, 0xdd, 0x60, 0x20, 0x60, 0x00, 0xa1, // log1(0, 32, 0xdd)
    0x00, // stop
    0x00, // padding so the revert label is at 0x27
    0x00, 0x00, 0x5b, 0x60, 0x00, 0x80, 0xfd, // 0x26: ..., 0x27: jumpdest; revert(0, 0)
];

/// sstore(0, balance(coinbase)); sstore(1, balance(address))
const READ_COINBASE: &[u8] = &[
    0x41, 0x31, 0x60, 0x00, 0x55, 0x30, 0x31, 0x60, 0x01, 0x55, 0x00,
];

/// sstore(0, balance(calldata[0..32]))
const READ_BALANCE: &[u8] = &[0x60, 0x00, 0x35, 0x31, 0x60, 0x00, 0x55, 0x00];

/// A WETH-like vault. Without calldata, a deposit: slot[caller] += callvalue (the contract
/// never reads its own balance). With calldata, a withdrawal: call(gas, caller, calldata[0..32])
/// sends that much of the contract's balance back (failing when it has too little).
const VAULT: &[u8] = &[
    0x36, 0x15, 0x60, 0x12, 0x57, // if iszero(calldatasize) jump to the deposit
    0x60, 0x00, 0x80, 0x80, 0x80, // out size, out off, in size, in off
    0x60, 0x00, 0x35, 0x33, 0x5a, 0xf1, 0x50, 0x00, // call(gas, caller, amount, ...); stop
    0x5b, 0x33, 0x54, 0x34, 0x01, 0x33, 0x55, 0x00, // 0x12: slot[caller] += callvalue
];

/// sstore(0, selfbalance())
const SELF_BALANCE: &[u8] = &[0x47, 0x60, 0x00, 0x55, 0x00];

/// revert(0, 0)
const REVERTER: &[u8] = &[0x60, 0x00, 0x80, 0xfd];

/// selfdestruct(caller)
const SUICIDE: &[u8] = &[0x33, 0xff];

/// call(gas, calldata[0..32], callvalue, 0, 0, 0, 0): forwards the value to an address.
const FORWARDER: &[u8] = &[
    0x60, 0x00, 0x80, 0x80, 0x80, // out size, out off, in size, in off
    0x34, // value
    0x60, 0x00, 0x35, // to
    0x5a, // gas
    0xf1, 0x50, 0x00,
];

/// CREATE2 factory: calldata = salt (32 bytes) ++ init code; stores the new address in slot 0.
const FACTORY: &[u8] = &[
    0x36, 0x60, 0x20, 0x90, 0x03, // len = calldatasize - 32
    0x80, 0x60, 0x20, 0x60, 0x00, 0x37, // calldatacopy(0, 32, len)
    0x60, 0x00, 0x35, // salt
    0x90, 0x60, 0x00, 0x60, 0x00, 0xf5, // create2(0, 0, len, salt)
    0x60, 0x00, 0x55, 0x00, // sstore(0, address)
];

/// Init code: slot0 += 1 (so a recreated account that kept its storage would store 2), then
/// deploys a runtime that copies slot0 to slot1 and self-destructs to the caller when called
/// without calldata.
fn child_init() -> Vec<u8> {
    let runtime: &[u8] = &[
        0x60, 0x00, 0x54, 0x60, 0x01, 0x55, // sstore(1, sload(0))
        0x36, 0x60, 0x0b, 0x57, // if calldatasize jump to stop
        0x33, 0xff, // selfdestruct(caller)  (offset 0x0a..0x0b)
    ];
    // The jump target must be a JUMPDEST: append it at offset 0x0c and fix the target.
    let mut runtime = runtime.to_vec();
    runtime[8] = 0x0c;
    runtime.extend_from_slice(&[0x5b, 0x00]);
    let len = runtime.len() as u8;
    let mut init = vec![
        0x60, 0x00, 0x54, 0x60, 0x01, 0x01, 0x60, 0x00, 0x55, // slot0 += 1
        0x60, len, 0x60, 21, 0x60, 0x00, 0x39, // codecopy(0, 21, len)
        0x60, len, 0x60, 0x00, 0xf3, // return(0, len)
    ];
    init.extend_from_slice(&runtime);
    init
}

fn word(a: Address) -> Vec<u8> {
    B256::left_padding_from(a.as_slice()).to_vec()
}

fn token_call(to: Address, amount: u64) -> Vec<u8> {
    let mut data = word(to);
    data.extend_from_slice(&U256::from(amount).to_be_bytes::<32>());
    data
}

fn create2_call(salt: u64) -> Vec<u8> {
    let mut data = U256::from(salt).to_be_bytes::<32>().to_vec();
    data.extend_from_slice(&child_init());
    data
}

fn create2_address(factory: Address, salt: u64) -> Address {
    factory.create2(
        B256::from(U256::from(salt)),
        revm::primitives::keccak256(child_init()),
    )
}

const TOKEN_ADDR: u64 = 0x100070;
const COUNTER_ADDR: u64 = 0x100071;
const READER_ADDR: u64 = 0x100072;
const REVERTER_ADDR: u64 = 0x100073;
const FORWARDER_ADDR: u64 = 0x100074;
const FACTORY_ADDR: u64 = 0x100075;
const BALANCE_ADDR: u64 = 0x100076;
const VAULT_ADDR: u64 = 0x100077;
const SELF_BALANCE_ADDR: u64 = 0x100078;

/// Standard pre-state: `users` funded EOAs (addr(1..=users)) holding tokens, and the contracts.
fn standard(spec: SpecId, users: u64) -> TestBlock {
    let mut b = TestBlock::new(spec);
    for i in 1..=users {
        b.fund(addr(i), eth(100));
    }
    b.deploy(addr(TOKEN_ADDR), TOKEN);
    for i in 1..=users {
        b.store(
            addr(TOKEN_ADDR),
            U256::from_be_slice(addr(i).as_slice()),
            U256::from(1_000),
        );
    }
    b.deploy(addr(COUNTER_ADDR), COUNTER);
    b.deploy(addr(READER_ADDR), READ_COINBASE);
    b.deploy(addr(REVERTER_ADDR), REVERTER);
    b.deploy(addr(FORWARDER_ADDR), FORWARDER);
    b.deploy(addr(FACTORY_ADDR), FACTORY);
    b.deploy(addr(BALANCE_ADDR), READ_BALANCE);
    b.deploy(addr(VAULT_ADDR), VAULT);
    b.deploy(addr(SELF_BALANCE_ADDR), SELF_BALANCE);
    b
}

const SPECS: &[SpecId] = &[
    SpecId::FRONTIER,
    SpecId::HOMESTEAD,
    SpecId::TANGERINE,
    SpecId::SPURIOUS_DRAGON,
    SpecId::BYZANTIUM,
    SpecId::ISTANBUL,
    SpecId::BERLIN,
    SpecId::LONDON,
    SpecId::SHANGHAI,
    SpecId::CANCUN,
    SpecId::PRAGUE,
];

/// Fails unless every transaction succeeded.
fn all_succeeded(out: &BlockOutput) -> bool {
    for (i, t) in out.transactions.iter().enumerate() {
        if !matches!(t.result, ExecutionResult::Success { .. }) {
            eprintln!("transaction {i}: {:?}", t.result);
            return false;
        }
    }
    true
}

// ---------------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------------

#[test]
fn independent_transfers() {
    for &spec in SPECS {
        let mut b = standard(spec, 40);
        for i in 1..=20 {
            b.transfer(addr(i), addr(1000 + i), eth(1));
        }
        let (seq, par) = b.check();
        let seq = seq.expect("valid block");
        assert!(all_succeeded(&seq));
        assert_eq!(seq.gas_used(), 20 * 21_000);
        // 20 senders, 20 recipients, the coinbase.
        assert_eq!(seq.changes.len(), 41, "{spec:?}");
        let par = par.expect("parallel output");
        assert!(par.stats.fallback.is_none());
        assert!(par.stats.executions >= 20);
    }
}

#[test]
fn hot_sender_nonce_chain() {
    for &spec in &[SpecId::HOMESTEAD, SpecId::BYZANTIUM, SpecId::CANCUN] {
        let mut b = standard(spec, 4);
        for i in 0..24 {
            b.transfer(addr(1), addr(200 + i % 5), U256::from(1000 + i));
        }
        let (seq, _) = b.check();
        assert!(all_succeeded(&seq.expect("valid block")));
    }
}

/// A chain of plain transfers from one sender reads the sender lazily: no transaction waits
/// for or re-executes after the previous one, and the sender's final nonce and balance are
/// exact.
#[test]
fn plain_transfer_chains_read_their_sender_lazily() {
    for &spec in &[SpecId::HOMESTEAD, SpecId::BERLIN, SpecId::CANCUN] {
        let mut b = standard(spec, 40);
        for i in 0..30 {
            b.transfer(addr(1), addr(100 + i), U256::from(1_000 + i));
        }
        let (seq, par) = b.check();
        assert!(all_succeeded(&seq.expect("valid block")));
        assert_no_conflicts(&par.expect("parallel output").stats, spec);
    }
}

/// Deposits into one contract that never reads its balance (WETH's `deposit`), from distinct
/// senders, as calls and as plain transfers, among token transfers between other accounts: every
/// read of the contract depends on its code only and every deposit is a lazy credit, so
/// nothing conflicts. Withdrawals and `SELFBALANCE` observe the balance and read it exactly.
#[test]
fn deposits_into_a_contract_do_not_conflict() {
    for &spec in &[SpecId::HOMESTEAD, SpecId::BERLIN, SpecId::CANCUN] {
        let mut b = standard(spec, 40);
        for i in 0..30 {
            let from = addr(1 + i);
            match i % 3 {
                0 => b.call(from, addr(VAULT_ADDR), U256::from(1_000 + i), Vec::new()),
                // A plain value transfer (no calldata) whose recipient has code.
                1 => b.tx(
                    from,
                    TxKind::Call(addr(VAULT_ADDR)),
                    U256::from(2_000 + i),
                    Vec::new(),
                    60_000,
                ),
                _ => b.call(
                    from,
                    addr(TOKEN_ADDR),
                    U256::ZERO,
                    token_call(addr(100 + i), 1),
                ),
            }
        }
        let (seq, par) = b.check();
        assert!(all_succeeded(&seq.expect("valid block")));
        assert_no_conflicts(&par.expect("parallel output").stats, spec);
        // The same block with exact contract reads (where the deposits conflict) also gives
        // the sequential result.
        let exact = ParallelOptions {
            lazy_contract_balances: false,
            ..ParallelOptions::always_parallel(2)
        };
        let par = b.parallel_labeled(&exact, "exact contract reads");
        assert_same(&b.sequential(), &par, "exact contract reads");
    }
    // Observers among the deposits: withdrawals (a value transfer out of the vault), SELFBALANCE
    // and BALANCE of a contract that receives value, in every position.
    let mut b = standard(SpecId::CANCUN, 40);
    for i in 0..36 {
        let from = addr(1 + i);
        match i % 6 {
            0 | 1 => b.call(from, addr(VAULT_ADDR), U256::from(1_000 + i), Vec::new()),
            2 => b.call(
                from,
                addr(VAULT_ADDR),
                U256::ZERO,
                U256::from(500 * (i % 4)).to_be_bytes::<32>().to_vec(),
            ),
            3 => b.call(from, addr(SELF_BALANCE_ADDR), U256::from(i), Vec::new()),
            4 => b.call(from, addr(BALANCE_ADDR), U256::ZERO, word(addr(VAULT_ADDR))),
            _ => b.tx(
                from,
                TxKind::Call(addr(SELF_BALANCE_ADDR)),
                U256::from(3),
                Vec::new(),
                60_000,
            ),
        }
    }
    let (seq, _) = b.check();
    assert!(all_succeeded(&seq.expect("valid block")));
    // Many deposits, then observers: readers below many credits are given the vault's last
    // full write (an inexact read); those that observe the balance must run again exactly.
    for threads in [2, 4] {
        let mut b = standard(SpecId::CANCUN, 60);
        for i in 0..40 {
            b.call(addr(1 + i), addr(VAULT_ADDR), U256::from(1_000), Vec::new());
        }
        for i in 0..20 {
            match i % 4 {
                0 => b.call(
                    addr(41 + i),
                    addr(VAULT_ADDR),
                    U256::ZERO,
                    U256::from(700).to_be_bytes::<32>().to_vec(),
                ),
                1 => b.call(
                    addr(41 + i),
                    addr(BALANCE_ADDR),
                    U256::ZERO,
                    word(addr(VAULT_ADDR)),
                ),
                _ => b.call(addr(41 + i), addr(VAULT_ADDR), U256::from(5), Vec::new()),
            }
        }
        let seq = b.sequential();
        assert!(all_succeeded(seq.as_ref().expect("valid block")));
        let par = b.parallel_labeled(
            &ParallelOptions::always_parallel(threads),
            "observers after many deposits",
        );
        assert_same(&seq, &par, "observers after many deposits");
    }
    // Withdrawals that only have funds thanks to the deposit just before them: a withdrawal
    // run before its deposit is recorded fails its value transfer and leaves the balance as
    // it was, yet it observed the balance (revm checked it), so its read must stay exact.
    for threads in [2, 4] {
        let mut b = standard(SpecId::CANCUN, 40);
        for i in 0..20 {
            b.call(addr(1 + i), addr(VAULT_ADDR), U256::from(1_000), Vec::new());
            b.call(
                addr(21 + i),
                addr(VAULT_ADDR),
                U256::ZERO,
                U256::from(1_000).to_be_bytes::<32>().to_vec(),
            );
        }
        let seq = b.sequential();
        let par = b.parallel_labeled(
            &ParallelOptions::always_parallel(threads),
            "withdrawals after deposits",
        );
        assert_same(&seq, &par, "withdrawals after deposits");
    }
}

/// Asserts that the block ran in parallel without a single re-execution, suspension or failed
/// validation.
fn assert_no_conflicts(stats: &ParallelStats, spec: SpecId) {
    assert_eq!(stats.fallback, None);
    assert_eq!(
        (
            stats.reexecutions,
            stats.dependency_suspensions,
            stats.validation_failures
        ),
        (0, 0, 0),
        "{spec:?}: {stats:?}"
    );
}

/// A mining pool paying out from the beneficiary: the sender's debits, the fee credits of
/// every other transaction and the eagerly paid fee of its own transfers fold in order.
#[test]
fn beneficiary_pays_out_in_a_chain() {
    let mut b = standard(SpecId::LONDON, 20);
    b.fund(COINBASE, eth(50));
    for i in 0..24 {
        if i % 4 == 3 {
            b.call(addr(1 + i % 7), addr(COUNTER_ADDR), U256::ZERO, Vec::new());
        } else {
            b.transfer(COINBASE, addr(200 + i), eth(1));
        }
    }
    // Someone reads the beneficiary's exact balance, and it spends once more after that.
    b.call(addr(9), addr(BALANCE_ADDR), U256::ZERO, word(COINBASE));
    b.transfer(COINBASE, addr(300), eth(2));
    let (seq, _) = b.check();
    assert!(all_succeeded(&seq.expect("valid block")));
}

/// A lazily read sender whose transfers need funds it only receives later in the block, or
/// whose nonce is wrong: the block is invalid, with the sequential error.
#[test]
fn lazy_senders_that_cannot_pay_give_the_sequential_error() {
    let mut b = standard(SpecId::CANCUN, 10);
    b.fund(addr(60), eth(1));
    for i in 0..6 {
        b.transfer(addr(60), addr(200 + i), eth(1) / U256::from(4));
    }
    b.transfer(addr(2), addr(60), eth(5));
    let (seq, _) = b.check();
    assert!(matches!(
        seq,
        Err(BlockError::InvalidTransaction {
            index: 3,
            error: InvalidTransaction::LackOfFundForMaxFee { .. },
        })
    ));
    let mut b = standard(SpecId::CANCUN, 10);
    for i in 0..6 {
        b.transfer(addr(3), addr(200 + i), U256::from(5));
    }
    b.txs[4].nonce = 2;
    let (seq, _) = b.check();
    assert!(matches!(
        seq,
        Err(BlockError::InvalidTransaction {
            index: 4,
            error: InvalidTransaction::NonceTooLow { tx: 2, state: 4 },
        })
    ));
}

#[test]
fn a_dominant_sender_runs_sequentially_by_default() {
    let mut b = standard(SpecId::CANCUN, 4);
    for i in 0..20 {
        b.transfer(addr(1), addr(200 + i % 5), U256::from(1000 + i));
    }
    for i in 0..12 {
        b.transfer(addr(2 + i % 3), addr(300), U256::from(7));
    }
    let seq = b.sequential();
    let opts = ParallelOptions {
        threads: 2,
        min_transactions: 0,
        min_gas: 0,
        min_contract_gas: 0,
        min_contract_gas_per_tx: 0,
        ..ParallelOptions::default()
    };
    let par = b.parallel(&opts);
    assert_same(&seq, &par, "dominant sender");
    assert_eq!(
        par.expect("valid block").stats.fallback,
        Some(FallbackReason::SenderChain {
            sender: addr(1),
            transactions: 20
        })
    );
    // 20 of 32 is below a 0.7 share: parallel.
    let par = b.parallel(&ParallelOptions {
        max_sender_share: 0.7,
        ..opts
    });
    assert_same(&seq, &par, "dominant sender, higher share");
    assert_eq!(par.expect("valid block").stats.fallback, None);
}

/// The worker pools are shared by the process: blocks executed at the same time from several
/// threads share a pool's threads (one block's worker may start only when another block's
/// is done, and its calling thread then does the work alone) and must all finish with the
/// sequential result.
#[test]
fn concurrent_blocks_share_the_worker_pools() {
    let mut b = standard(SpecId::CANCUN, 60);
    for i in 1..=60u64 {
        let to = addr(1 + (i * 7) % 60);
        if i % 3 == 0 {
            b.transfer(addr(i), to, U256::from(i));
        } else {
            b.call(addr(i), addr(TOKEN_ADDR), U256::ZERO, token_call(to, i));
        }
    }
    let seq = b.sequential();
    assert!(seq.is_ok(), "valid block");
    std::thread::scope(|scope| {
        for caller in 0..4usize {
            let (b, seq) = (&b, &seq);
            scope.spawn(move || {
                for round in 0..5usize {
                    let threads = 2 + (caller + round) % 3;
                    let par = b.parallel_labeled(
                        &ParallelOptions::always_parallel(threads),
                        &format!("caller {caller}, round {round}"),
                    );
                    assert_same(seq, &par, &format!("caller {caller}, {threads} threads"));
                }
            });
        }
    });
}

#[test]
fn many_transfers_to_one_recipient() {
    for &spec in &[
        SpecId::FRONTIER,
        SpecId::SPURIOUS_DRAGON,
        SpecId::LONDON,
        SpecId::CANCUN,
    ] {
        let mut b = standard(spec, 30);
        for i in 1..=30 {
            b.transfer(addr(i), addr(999), U256::from(i * 7));
        }
        // The recipient then spends: its balance must be exact.
        b.fund(addr(998), eth(1));
        let (seq, par) = b.check();
        let seq = seq.expect("valid block");
        let change = seq
            .changes
            .iter()
            .find(|c| c.address == addr(999))
            .expect("recipient changed");
        let expected: u64 = (1..=30).map(|i| i * 7).sum();
        assert_eq!(
            change.account.as_ref().map(|a| a.balance),
            Some(U256::from(expected))
        );
        // Lazy transfers: no transaction needs another's result, nothing re-executes.
        let par = par.expect("parallel output");
        assert_eq!(par.stats.validation_failures, 0, "{:?}", par.stats);
    }
}

#[test]
fn recipient_spends_what_it_received() {
    let mut b = standard(SpecId::CANCUN, 10);
    for i in 1..=5 {
        b.transfer(addr(i), addr(500), eth(2));
    }
    // addr(500) did not exist before: it can only pay because of the credits above.
    b.transfer(addr(500), addr(6), eth(9));
    b.call(addr(7), addr(BALANCE_ADDR), U256::ZERO, word(addr(500)));
    let (seq, _) = b.check();
    assert!(all_succeeded(&seq.expect("valid block")));
}

#[test]
fn counter_conflict_chain() {
    for &spec in &[SpecId::FRONTIER, SpecId::BERLIN, SpecId::CANCUN] {
        let mut b = standard(spec, 16);
        for i in 1..=16 {
            b.call(addr(i), addr(COUNTER_ADDR), U256::ZERO, Vec::new());
        }
        let (seq, _) = b.check();
        let seq = seq.expect("valid block");
        let counter = seq
            .changes
            .iter()
            .find(|c| c.address == addr(COUNTER_ADDR))
            .expect("counter changed");
        assert_eq!(counter.storage, vec![(U256::ZERO, U256::from(16))]);
    }
}

#[test]
fn token_independent_and_contended() {
    for &spec in &[SpecId::TANGERINE, SpecId::ISTANBUL, SpecId::CANCUN] {
        let mut b = standard(spec, 20);
        // Independent pairs.
        for i in 1..=10 {
            b.call(
                addr(i),
                addr(TOKEN_ADDR),
                U256::ZERO,
                token_call(addr(i + 10), 5),
            );
        }
        // Everyone pays addr(1), which then pays out more than it had at the start.
        for i in 2..=20 {
            b.call(
                addr(i),
                addr(TOKEN_ADDR),
                U256::ZERO,
                token_call(addr(1), 100),
            );
        }
        b.call(
            addr(1),
            addr(TOKEN_ADDR),
            U256::ZERO,
            token_call(addr(2), 2_500),
        );
        // Insufficient balance: reverts.
        b.call(
            addr(3),
            addr(TOKEN_ADDR),
            U256::ZERO,
            token_call(addr(4), 1_000_000),
        );
        let (seq, _) = b.check();
        let seq = seq.expect("valid block");
        // Before Byzantium REVERT is an invalid opcode: a halt.
        let reverted = seq
            .transactions
            .iter()
            .filter(|t| !t.result.is_success())
            .count();
        assert_eq!(reverted, 1);
        let logs: usize = seq.transactions.iter().map(|t| t.result.logs().len()).sum();
        assert_eq!(logs, 30);
    }
}

#[test]
fn coinbase_balance_read_mid_block() {
    for &spec in &[SpecId::HOMESTEAD, SpecId::LONDON, SpecId::CANCUN] {
        let mut b = standard(spec, 12);
        for i in 1..=5 {
            b.transfer(addr(i), addr(300 + i), eth(1));
        }
        b.call(addr(6), addr(READER_ADDR), U256::from(3), Vec::new());
        for i in 7..=10 {
            b.call(addr(i), addr(COUNTER_ADDR), U256::ZERO, Vec::new());
        }
        // The coinbase as a transfer target and then as a sender.
        b.transfer(addr(11), COINBASE, eth(1));
        b.fund(COINBASE, eth(1));
        b.transfer(COINBASE, addr(12), U256::from(5));
        b.call(addr(12), addr(READER_ADDR), U256::ZERO, Vec::new());
        let (seq, _) = b.check();
        let seq = seq.expect("valid block");
        assert!(all_succeeded(&seq));
        // The value the reader stored is the coinbase's exact balance after the first 5 fees.
        let reader = seq
            .changes
            .iter()
            .find(|c| c.address == addr(READER_ADDR))
            .expect("reader changed");
        assert!(reader
            .storage
            .iter()
            .any(|(k, v)| *k == U256::ZERO && !v.is_zero()));
    }
}

#[test]
fn coinbase_absent_from_pre_state_and_zero_fees() {
    for &spec in &[
        SpecId::FRONTIER,
        SpecId::SPURIOUS_DRAGON,
        SpecId::LONDON,
        SpecId::CANCUN,
    ] {
        let mut b = standard(spec, 8);
        // A zero tip: post-London the coinbase earns nothing (eager touch path).
        b.gas_price = if spec.is_enabled_in(SpecId::LONDON) {
            7
        } else {
            0
        };
        for i in 1..=4 {
            b.transfer(addr(i), addr(400 + i), U256::from(1));
        }
        b.gas_price = 10;
        for i in 5..=8 {
            b.transfer(addr(i), addr(400 + i), U256::ZERO);
        }
        b.check().0.expect("valid block");
    }
}

/// Regression test: revm runs post-execution (refund, reimbursement, beneficiary reward) even
/// after a database error in an instruction of the outermost frame, and a zero reward is paid
/// eagerly, by reading the beneficiary. An execution suspended on an ESTIMATE by an `SLOAD` of
/// its outermost frame thus read the beneficiary's account next, hit another ESTIMATE and was
/// suspended a second time, releasing its active task twice: the block hung (the count wrapped
/// around) or ended while a task still ran (wrong results, "never executed" errors).
///
/// A chain of counter increments aborts often; every other transaction pays no tip, and the one
/// below it pays a lazily credited tip, so when the zero-tip transaction suspends on the aborted
/// one's counter slot, the beneficiary's account holds an ESTIMATE of the same transaction.
#[test]
fn suspension_followed_by_a_beneficiary_read() {
    let repeat: usize = std::env::var("EMBER_PARALLEL_REPEAT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(25);
    for &spec in &[SpecId::BERLIN, SpecId::LONDON, SpecId::CANCUN] {
        let mut b = standard(spec, 12);
        let (tip, no_tip) = if spec.is_enabled_in(SpecId::LONDON) {
            (10, 7)
        } else {
            (10, 0)
        };
        for i in 0..24 {
            b.gas_price = if i % 2 == 0 { tip } else { no_tip };
            b.call(addr(1 + i % 12), addr(COUNTER_ADDR), U256::ZERO, Vec::new());
        }
        let seq = b.sequential();
        assert!(all_succeeded(seq.as_ref().expect("valid block")));
        for iteration in 0..repeat {
            for threads in [2, 3, 5, 8] {
                for seeded in [true, false] {
                    let opts = ParallelOptions {
                        seed_sender_estimates: seeded,
                        wait_on_running: iteration % 2 == 0,
                        ..ParallelOptions::always_parallel(threads)
                    };
                    let what = format!("iteration {iteration}, seeded estimates {seeded}");
                    let par = b.parallel_labeled(&opts, &what);
                    assert_same(&seq, &par, &what);
                }
            }
        }
    }
}

#[test]
fn empty_accounts_and_state_clearing() {
    for &spec in SPECS {
        let mut b = standard(spec, 8);
        // Existing empty accounts (possible before Spurious Dragon) touched by zero-value calls.
        for i in 0..3 {
            b.fund(addr(600 + i), U256::ZERO);
        }
        b.transfer(addr(1), addr(600), U256::ZERO);
        b.call(addr(2), addr(FORWARDER_ADDR), U256::ZERO, word(addr(601)));
        b.call(addr(3), addr(BALANCE_ADDR), U256::ZERO, word(addr(602)));
        // Non-existent accounts touched by zero-value transfers.
        b.transfer(addr(4), addr(700), U256::ZERO);
        b.call(addr(5), addr(FORWARDER_ADDR), U256::ZERO, word(addr(701)));
        // ... then funded and read.
        b.transfer(addr(6), addr(700), U256::from(9));
        b.call(
            addr(7),
            addr(FORWARDER_ADDR),
            U256::from(4),
            word(addr(701)),
        );
        b.call(addr(8), addr(BALANCE_ADDR), U256::ZERO, word(addr(701)));
        let (seq, _) = b.check();
        seq.expect("valid block");
    }
}

#[test]
fn reverts_halts_and_out_of_gas() {
    for &spec in &[SpecId::HOMESTEAD, SpecId::BYZANTIUM, SpecId::CANCUN] {
        let mut b = standard(spec, 10);
        b.call(addr(1), addr(REVERTER_ADDR), U256::from(5), Vec::new());
        b.deploy(addr(0x100080), &[0xfe]);
        b.call(addr(2), addr(0x100080), U256::ZERO, Vec::new());
        // Counter with too little gas for the SSTORE.
        b.tx(
            addr(3),
            TxKind::Call(addr(COUNTER_ADDR)),
            U256::ZERO,
            Vec::new(),
            21_100,
        );
        b.call(addr(4), addr(COUNTER_ADDR), U256::ZERO, Vec::new());
        b.transfer(addr(5), addr(1), eth(1));
        let (seq, _) = b.check();
        let seq = seq.expect("valid block");
        if spec.is_enabled_in(SpecId::BYZANTIUM) {
            assert!(matches!(
                seq.transactions[0].result,
                ExecutionResult::Revert { .. }
            ));
        } else {
            assert!(matches!(
                seq.transactions[0].result,
                ExecutionResult::Halt { .. }
            ));
        }
        assert!(matches!(
            seq.transactions[1].result,
            ExecutionResult::Halt { .. }
        ));
        assert!(matches!(
            seq.transactions[2].result,
            ExecutionResult::Halt { .. }
        ));
    }
}

#[test]
fn invalid_nonce_too_high_is_the_same_error() {
    let mut b = standard(SpecId::CANCUN, 10);
    for i in 1..=6 {
        b.transfer(addr(i), addr(1000 + i), eth(1));
    }
    // Skip a nonce of addr(1).
    b.nonces.insert(addr(1), 5);
    b.transfer(addr(1), addr(2), eth(1));
    for i in 7..=10 {
        b.call(addr(i), addr(COUNTER_ADDR), U256::ZERO, Vec::new());
    }
    let (seq, _) = b.check();
    match seq {
        Err(BlockError::InvalidTransaction {
            index: 6,
            error: InvalidTransaction::NonceTooHigh { tx: 5, state: 1 },
        }) => {}
        other => panic!("unexpected {:?}", other.map(|o| o.gas_used())),
    }
}

#[test]
fn invalid_funds_made_valid_by_an_earlier_transfer() {
    let mut b = standard(SpecId::CANCUN, 4);
    // addr(50) has nothing until tx 2 pays it; tx 3 only succeeds in order.
    b.transfer(addr(1), addr(2), eth(1));
    b.transfer(addr(3), addr(50), eth(1));
    b.transfer(addr(50), addr(4), eth(1) / U256::from(2));
    let (seq, _) = b.check();
    assert!(all_succeeded(&seq.expect("valid block")));
    // And lacking funds is the same error in both modes.
    let mut b = standard(SpecId::CANCUN, 4);
    b.transfer(addr(1), addr(2), eth(1));
    b.transfer(addr(51), addr(4), eth(1));
    b.transfer(addr(3), addr(51), eth(1));
    let (seq, _) = b.check();
    assert!(matches!(
        seq,
        Err(BlockError::InvalidTransaction { index: 1, .. })
    ));
}

#[test]
fn create_and_call_new_contracts() {
    for &spec in &[
        SpecId::FRONTIER,
        SpecId::SPURIOUS_DRAGON,
        SpecId::PETERSBURG,
        SpecId::CANCUN,
    ] {
        let mut b = standard(spec, 10);
        // Plain CREATE transactions, then calls to the created contracts.
        let init = child_init();
        b.tx(
            addr(1),
            TxKind::Create,
            U256::from(3),
            init.clone(),
            300_000,
        );
        b.tx(addr(2), TxKind::Create, U256::ZERO, init.clone(), 300_000);
        let created = addr(1).create(0);
        b.call(addr(3), created, U256::ZERO, vec![1]);
        b.call(addr(4), addr(2).create(0), U256::ZERO, vec![1]);
        // A transfer to the created address before and after creation.
        b.transfer(addr(5), created, U256::from(11));
        let (seq, _) = b.check();
        seq.expect("valid block");
    }
}

#[test]
fn selfdestruct_and_redeploy_same_address() {
    for &spec in &[
        SpecId::PETERSBURG,
        SpecId::ISTANBUL,
        SpecId::LONDON,
        SpecId::SHANGHAI,
        SpecId::CANCUN,
    ] {
        for fallback in [true, false] {
            let mut b = standard(spec, 10);
            let factory = addr(FACTORY_ADDR);
            let child = create2_address(factory, 7);
            b.call(addr(1), factory, U256::ZERO, create2_call(7));
            b.call(addr(2), child, U256::ZERO, vec![1]); // copies slot0 to slot1
            b.transfer(addr(3), child, U256::from(100)); // a transfer to a contract
            b.call(addr(4), child, U256::ZERO, Vec::new()); // self-destructs (pre-Cancun)
            b.call(addr(5), child, U256::ZERO, vec![1]);
            b.call(addr(6), factory, U256::ZERO, create2_call(7)); // redeploy
            b.call(addr(7), child, U256::ZERO, vec![1]);
            b.call(addr(8), factory, U256::ZERO, create2_call(7)); // collision
            b.transfer(addr(9), child, U256::from(1));
            let seq = b.sequential();
            let opts = ParallelOptions {
                fallback_on_repeated_wipe: fallback,
                ..ParallelOptions::always_parallel(4)
            };
            let par = b.parallel(&opts);
            assert_same(&seq, &par, &format!("{spec:?} fallback {fallback}"));
            let seq = seq.expect("valid block");
            let child_change = seq.changes.iter().find(|c| c.address == child);
            if spec.is_enabled_in(SpecId::CANCUN) {
                // EIP-6780: no destruction, no redeploy.
                assert!(child_change.is_some_and(|c| !c.destroyed));
            } else {
                let c = child_change.expect("child changed");
                assert!(c.created && c.destroyed);
                // Recreated with fresh storage: slot0 == 1, slot1 == 1.
                assert_eq!(
                    c.storage,
                    vec![(U256::ZERO, U256::from(1)), (U256::from(1), U256::from(1))]
                );
                let par = par.expect("parallel output");
                if fallback {
                    assert!(matches!(
                        par.stats.fallback,
                        Some(FallbackReason::RepeatedWipe(_))
                    ));
                } else {
                    assert!(par.stats.fallback.is_none());
                }
            }
        }
    }
}

#[test]
fn selfdestruct_of_pre_state_contract() {
    for &spec in &[
        SpecId::HOMESTEAD,
        SpecId::SPURIOUS_DRAGON,
        SpecId::LONDON,
        SpecId::CANCUN,
    ] {
        let mut b = standard(spec, 6);
        b.deploy(addr(0x100090), SUICIDE);
        b.fund(addr(0x100091), eth(1));
        b.store(addr(0x100090), U256::from(3), U256::from(4));
        b.db.cache
            .accounts
            .get_mut(&addr(0x100090))
            .expect("deployed")
            .info
            .balance = eth(2);
        b.call(addr(1), addr(0x100090), U256::ZERO, Vec::new());
        b.call(addr(2), addr(0x100090), U256::from(1), Vec::new());
        b.transfer(addr(3), addr(0x100090), U256::from(5));
        b.call(
            addr(4),
            addr(BALANCE_ADDR),
            U256::ZERO,
            word(addr(0x100090)),
        );
        b.call(addr(5), addr(BALANCE_ADDR), U256::ZERO, word(addr(1)));
        let (seq, _) = b.check();
        seq.expect("valid block");
    }
}

#[test]
fn blocks_of_plain_transfers_fall_back_to_sequential() {
    let mut b = standard(SpecId::CANCUN, 400);
    for i in 0..200 {
        b.transfer(addr(1 + i), addr(1000 + i), U256::from(5));
    }
    // 200 transfers: 4.2M gas in all, none of it contract gas. Their accounts are all
    // distinct, so the block runs as speculative chunks (which cannot conflict).
    let two = ParallelOptions {
        threads: 2,
        ..ParallelOptions::default()
    };
    let par = b.parallel(&two).expect("valid block");
    assert_eq!(par.stats.fallback, None);
    assert_eq!(
        (
            par.stats.speculated_blocks,
            par.stats.abandoned_speculations
        ),
        (1, 0)
    );
    assert!(b.sequential().expect("valid").same_outcome(&par));
    // Without speculation, or with an account in both halves (the sender of the first
    // transfer sends the last one too), the heuristics run it sequentially, without trying.
    let off = ParallelOptions {
        speculation: Speculation::Off,
        ..two.clone()
    };
    let mut shared = b.clone();
    shared.transfer(addr(1), addr(999), U256::from(1));
    for (b, opts) in [(&b, &off), (&shared, &two)] {
        let par = b.parallel(opts).expect("valid block");
        assert_eq!(
            par.stats.fallback,
            Some(FallbackReason::MostlyTransfers { contract_gas: 0 })
        );
        assert_eq!(
            par.stats.speculated_blocks + par.stats.abandoned_speculations,
            0
        );
        assert!(b.sequential().expect("valid").same_outcome(&par));
    }
    let mut b = b;
    // 25 contract calls of 200k gas: 5M of contract gas, above both 3M and 20k x 225.
    for i in 0..25 {
        b.call(addr(300 + i), addr(2000 + i), U256::ZERO, vec![1]);
    }
    let par = b
        .parallel(&ParallelOptions::default())
        .expect("valid block");
    assert_eq!(par.stats.fallback, None);
    assert!(b.sequential().expect("valid").same_outcome(&par));
}

#[test]
fn small_blocks_fall_back_to_sequential() {
    let mut b = standard(SpecId::CANCUN, 3);
    b.transfer(addr(1), addr(2), U256::from(1));
    let par = b
        .parallel(&ParallelOptions::default())
        .expect("valid block");
    assert!(matches!(
        par.stats.fallback,
        Some(FallbackReason::TooFewTransactions { transactions: 1 })
    ));
    let par = b
        .parallel(&ParallelOptions {
            threads: 1,
            ..ParallelOptions::default()
        })
        .expect("valid block");
    assert_eq!(par.stats.fallback, Some(FallbackReason::SingleThread));
    assert!(b.sequential().expect("valid").same_outcome(&par));
}

#[test]
fn empty_block() {
    let b = standard(SpecId::CANCUN, 1);
    let par = b
        .parallel(&ParallelOptions::always_parallel(4))
        .expect("valid");
    assert!(par.transactions.is_empty() && par.changes.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Randomized blocks
// ---------------------------------------------------------------------------------------------

/// xorshift64*: deterministic, so a failing seed reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_block(seed: u64) -> (TestBlock, usize) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let spec = SPECS[rng.below(SPECS.len() as u64) as usize];
    let users = 3 + rng.below(10);
    let mut b = standard(spec, users);
    if rng.below(2) == 0 {
        b.fund(COINBASE, eth(1));
    }
    for i in 0..3 {
        if rng.below(2) == 0 {
            b.fund(addr(600 + i), U256::ZERO);
        }
    }
    let user = |rng: &mut Rng| addr(1 + rng.below(users));
    let anyone = |rng: &mut Rng| match rng.below(6) {
        0 => addr(600 + rng.below(4)),
        1 => COINBASE,
        2 => addr(
            [VAULT_ADDR, SELF_BALANCE_ADDR, COUNTER_ADDR, FORWARDER_ADDR][rng.below(4) as usize],
        ),
        _ => addr(1 + rng.below(users + 2)),
    };
    let n = 4 + rng.below(40);
    for _ in 0..n {
        b.gas_price = 7 + rng.below(5) as u128;
        let from = user(&mut rng);
        match rng.below(12) {
            0 | 1 => {
                let to = anyone(&mut rng);
                let value = U256::from(rng.below(3) * 1_000_000);
                b.transfer(from, to, value);
            }
            2 => match rng.below(4) {
                0 => b.call(
                    from,
                    addr(COUNTER_ADDR),
                    U256::from(rng.below(2)),
                    Vec::new(),
                ),
                1 => b.call(
                    from,
                    addr(VAULT_ADDR),
                    U256::from(rng.below(3) * 500),
                    Vec::new(),
                ),
                2 => b.call(
                    from,
                    addr(VAULT_ADDR),
                    U256::ZERO,
                    U256::from(rng.below(3) * 400).to_be_bytes::<32>().to_vec(),
                ),
                _ => b.call(
                    from,
                    addr(SELF_BALANCE_ADDR),
                    U256::from(rng.below(2)),
                    Vec::new(),
                ),
            },
            3 | 4 => {
                let to = user(&mut rng);
                let amount = rng.below(1_500);
                b.call(from, addr(TOKEN_ADDR), U256::ZERO, token_call(to, amount));
            }
            5 => b.call(
                from,
                addr(READER_ADDR),
                U256::from(rng.below(2)),
                Vec::new(),
            ),
            6 => {
                let who = anyone(&mut rng);
                b.call(from, addr(BALANCE_ADDR), U256::ZERO, word(who));
            }
            7 => {
                let to = anyone(&mut rng);
                b.call(
                    from,
                    addr(FORWARDER_ADDR),
                    U256::from(rng.below(3)),
                    word(to),
                );
            }
            8 => b.call(from, addr(REVERTER_ADDR), U256::ZERO, Vec::new()),
            9 => {
                let salt = rng.below(2);
                b.call(from, addr(FACTORY_ADDR), U256::ZERO, create2_call(salt));
            }
            10 => {
                let child = create2_address(addr(FACTORY_ADDR), rng.below(2));
                let data = if rng.below(2) == 0 {
                    Vec::new()
                } else {
                    vec![1]
                };
                b.call(from, child, U256::from(rng.below(2)), data);
            }
            _ => {
                let value = U256::from(rng.below(2));
                b.tx(from, TxKind::Create, value, child_init(), 300_000);
            }
        }
        // Rarely, a wrong nonce: the block is invalid, identically in both modes.
        if rng.below(60) == 0 {
            let last = b.txs.len() - 1;
            b.txs[last].nonce += 1 + rng.below(2);
        }
    }
    let threads = 2 + rng.below(7) as usize;
    (b, threads)
}

#[test]
fn randomized_blocks_match_sequential() {
    let cases: u64 = std::env::var("EMBER_PARALLEL_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let mut parallel_runs = 0;
    let (mut speculated, mut abandoned) = (0, 0);
    for seed in 0..cases {
        let (b, random_threads) = random_block(seed);
        let seq = b.sequential();
        // Default knobs with 1 (the executor's sequential path), 2, 4 and 8 threads; then the
        // block's random thread count with every knob off its default: the repeated-wipe
        // fallback, no seeded estimates (more speculation, more validation failures and
        // re-executions) and waits on running executions instead of suspensions.
        // Last, every block first as speculative chunks (most abandoned on a conflict, some
        // kept: both must match).
        let mut configs: Vec<(usize, bool, Speculation)> = [1, 2, 4, 8]
            .iter()
            .map(|&t| (t, true, Speculation::Transfers))
            .collect();
        configs.push((random_threads, false, Speculation::Transfers));
        configs.push((random_threads, true, Speculation::Always));
        for (threads, defaults, speculation) in configs {
            let opts = ParallelOptions {
                fallback_on_repeated_wipe: !defaults,
                lazy_contract_balances: defaults,
                seed_sender_estimates: defaults,
                wait_on_running: !defaults,
                speculation,
                ..ParallelOptions::always_parallel(threads)
            };
            let what = format!(
                "seed {seed}, spec {:?}, {threads} threads, default knobs {defaults}, \
                 speculation {speculation:?}",
                b.cfg.spec
            );
            let par = b.parallel_labeled(&opts, &what);
            assert_same(&seq, &par, &what);
            if let Ok(p) = &par {
                if threads > 1 && p.stats.fallback.is_none() {
                    parallel_runs += 1;
                }
                speculated += p.stats.speculated_blocks;
                abandoned += p.stats.abandoned_speculations;
            }
        }
    }
    // Most blocks really ran in parallel (the comparison above is not vacuous), and most
    // speculations were abandoned (these blocks are dense in dependencies: 6 of 1,000 kept
    // theirs; `speculative_chunks_match_sequential` covers kept ones).
    assert!(parallel_runs > 2 * cases, "{parallel_runs} parallel runs");
    assert!(
        abandoned > cases / 2,
        "{speculated} speculations kept, {abandoned} abandoned"
    );
}

/// Random blocks whose halves mostly do not touch the same locations: distinct senders, token
/// transfers and plain transfers to fresh recipients, reverting calls, contract creations and
/// counter increments only in the first half, vault deposits only in the second; and, in a few
/// blocks, one transaction of the second half that reads what the first half writes. Run first
/// as two speculative chunks, every block must match sequential execution, whether the
/// speculation was kept or abandoned.
#[test]
fn speculative_chunks_match_sequential() {
    let cases: u64 = std::env::var("EMBER_PARALLEL_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300u64)
        .div_ceil(3);
    let (mut kept, mut abandoned) = (0, 0);
    for seed in 0..cases {
        let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
        let spec = SPECS[rng.below(SPECS.len() as u64) as usize];
        let n = 8 + rng.below(40);
        let mut b = standard(spec, n + 1);
        let conflict_at = (rng.below(4) == 0).then(|| n / 2 + rng.below(n / 2));
        for i in 0..n {
            let from = addr(1 + i);
            let first_half = i < n / 2;
            // Every transaction has the same gas limit, so the chunks are the two halves.
            let gas = 300_000;
            if conflict_at == Some(i) {
                // Reads the counter (written by the first half) or a first-half sender's
                // token balance.
                if rng.below(2) == 0 {
                    b.tx(
                        from,
                        TxKind::Call(addr(COUNTER_ADDR)),
                        U256::ZERO,
                        vec![],
                        gas,
                    );
                } else {
                    let victim = addr(1 + rng.below(n / 2));
                    b.tx(
                        from,
                        TxKind::Call(addr(TOKEN_ADDR)),
                        U256::ZERO,
                        token_call(victim, 1),
                        gas,
                    );
                }
                continue;
            }
            match rng.below(6) {
                0 => {
                    let to = addr(1000 + i);
                    b.tx(
                        from,
                        TxKind::Call(addr(TOKEN_ADDR)),
                        U256::ZERO,
                        token_call(to, 1 + i),
                        gas,
                    );
                }
                1 => b.tx(
                    from,
                    TxKind::Call(addr(2000 + i)),
                    U256::from(1 + i),
                    vec![],
                    gas,
                ),
                2 => b.tx(
                    from,
                    TxKind::Call(addr(REVERTER_ADDR)),
                    U256::ZERO,
                    vec![],
                    gas,
                ),
                3 if first_half => b.tx(
                    from,
                    TxKind::Call(addr(COUNTER_ADDR)),
                    U256::ZERO,
                    vec![],
                    gas,
                ),
                4 if first_half => {
                    let data = create2_call(seed * 100 + i);
                    b.tx(
                        from,
                        TxKind::Call(addr(FACTORY_ADDR)),
                        U256::ZERO,
                        data,
                        gas,
                    );
                }
                3 | 4 => b.tx(
                    from,
                    TxKind::Call(addr(VAULT_ADDR)),
                    U256::from(7),
                    vec![],
                    gas,
                ),
                _ => b.tx(from, TxKind::Create, U256::ZERO, child_init(), gas),
            }
        }
        let seq = b.sequential();
        let opts = ParallelOptions {
            speculation: Speculation::Always,
            ..ParallelOptions::always_parallel(2)
        };
        let what =
            format!("seed {seed}, spec {spec:?}, {n} transactions, conflict at {conflict_at:?}");
        let par = b.parallel_labeled(&opts, &what);
        assert_same(&seq, &par, &what);
        if let Ok(p) = &par {
            kept += p.stats.speculated_blocks;
            abandoned += p.stats.abandoned_speculations;
        }
    }
    assert!(
        kept > cases / 2 && abandoned > cases / 20,
        "{kept} speculations kept, {abandoned} abandoned of {cases}"
    );
}

// ---------------------------------------------------------------------------------------------
// Timing (run with `cargo test --release -p ember-runtime --test parallel -- --ignored
// --nocapture`): prints sequential vs parallel wall time on synthetic blocks.
// ---------------------------------------------------------------------------------------------

/// Process CPU time (user + system) in seconds, from /proc/self/stat (0 where unavailable).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Median wall time (ms) of `runs` runs, and CPU time per run (ms) over all of them.
fn measure(runs: usize, f: &dyn Fn() -> Result<BlockOutput, BlockError>) -> (f64, f64) {
    let cpu = cpu_seconds();
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = std::time::Instant::now();
            f().expect("valid block");
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let cpu = (cpu_seconds() - cpu) * 1e3 / runs as f64;
    times.sort_by(f64::total_cmp);
    (times[runs / 2], cpu)
}

fn time_block(name: &str, b: &TestBlock) {
    let runs = 60;
    let (seq, seq_cpu) = measure(runs, &|| b.sequential());
    let mut line = format!(
        "{name:<32} {:>4} txs  seq {seq:7.2} ms (cpu {seq_cpu:6.2})",
        b.txs.len()
    );
    for threads in [2, 4] {
        let opts = ParallelOptions::always_parallel(threads);
        let (par, par_cpu) = measure(runs, &|| b.parallel(&opts));
        let stats = b.parallel(&opts).expect("valid").stats;
        line += &format!(
            " | {threads}t {par:7.2} ms (cpu {par_cpu:6.2}) {:.2}x, {} exec {} fail",
            seq / par,
            stats.executions,
            stats.validation_failures
        );
    }
    eprintln!("{line}");
}

#[test]
#[ignore = "timing, not a check"]
fn timing_synthetic_blocks() {
    let mut b = standard(SpecId::CANCUN, 200);
    for i in 1..=200 {
        b.transfer(addr(i), addr(1000 + i), eth(1));
    }
    time_block("200 independent transfers", &b);

    let mut b = standard(SpecId::CANCUN, 200);
    for i in 1..=200 {
        b.transfer(addr(i), addr(999), U256::from(i));
    }
    time_block("200 transfers to one recipient", &b);

    let mut b = standard(SpecId::CANCUN, 200);
    for i in 1..=100 {
        b.call(
            addr(i),
            addr(TOKEN_ADDR),
            U256::ZERO,
            token_call(addr(i + 100), 5),
        );
    }
    time_block("100 independent token transfers", &b);

    let mut b = standard(SpecId::CANCUN, 200);
    for i in 1..=100 {
        b.call(addr(i), addr(COUNTER_ADDR), U256::ZERO, Vec::new());
    }
    time_block("100 counter increments (chain)", &b);

    // A compute-heavy contract: 3000 iterations of a loop, independent per sender.
    let mut b = standard(SpecId::CANCUN, 200);
    let heavy: &[u8] = &[
        0x61, 0x0b, 0xb8, // push2 3000
        0x5b, // jumpdest (3)
        0x60, 0x01, 0x90, 0x03, // i - 1
        0x80, 0x60, 0x03, 0x57, // jumpi(3, i)
        0x33, 0x55, 0x00, // sstore(caller, 0)
    ];
    b.deploy(addr(0x100081), heavy);
    for i in 1..=100 {
        b.tx(
            addr(i),
            TxKind::Call(addr(0x100081)),
            U256::ZERO,
            Vec::new(),
            1_000_000,
        );
    }
    time_block("100 compute-heavy calls", &b);

    for n in [2u64, 4, 8, 16] {
        let mut b = standard(SpecId::CANCUN, 20);
        for i in 1..=n {
            b.call(
                addr(i),
                addr(TOKEN_ADDR),
                U256::ZERO,
                token_call(addr(i + 10), 5),
            );
        }
        time_block(&format!("{n} token transfers"), &b);
        let mut b = standard(SpecId::CANCUN, 20);
        for i in 1..=n {
            b.transfer(addr(i), addr(100 + i), U256::from(5));
        }
        time_block(&format!("{n} plain transfers"), &b);
    }
}
