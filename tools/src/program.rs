//! Executing raw bytecode in a fixed, non-trivial environment, and checking Ember's JIT against
//! revm's interpreter on it. Used by the opcode, differential and hostile-input tests.
//!
//! The environment ([`Setup`]):
//! - the program under test lives at [`TARGET`], with a balance and some storage pre-set
//!   ([`TARGET_STORAGE`]);
//! - helper contracts to call into: [`RETURNER`] (returns a constant word followed by its
//!   calldata), [`REVERTER`] (reverts with data), [`LOGGER`] (emits a log, increments a storage
//!   slot, returns a word), [`SUICIDER`] (self-destructs to its caller);
//! - [`EMPTY`], an account with a balance and no code; from Prague on [`DELEGATED`], an
//!   account whose code is an EIP-7702 delegation to [`RETURNER`]; [`NONEXISTENT`] is not in the
//!   state at all;
//! - [`STATIC_WRAPPER`], which STATICCALLs [`TARGET`] with its own calldata and returns
//!   `success ‖ gas left after the call ‖ returndata` (see [`Entry::Static`]);
//! - the caller [`CALLER`] has a large balance; the block has non-trivial number, timestamp,
//!   base fee, difficulty, prevrandao, coinbase, gas limit and blob excess gas;
//! - the transaction is the richest type the fork allows (legacy, EIP-2930 with an access
//!   list from Berlin, EIP-1559 from London, EIP-4844 with two blob hashes from Cancun), so
//!   GASPRICE, BLOBHASH, warm/cold accounting and the base fee all see non-trivial values.
//!
//! The configuration is [`crate::fixture::Fixture::cfg`]'s (no nonce check, no EIP-7825 cap).
//! Note that from Prague on the EIP-7623 calldata floor makes a transaction invalid when its
//! gas limit is below `21000 + 10 * tokens`: tests that sweep gas limits to reach out-of-gas
//! inside the program keep their calldata short (or accept that such limits are rejected by
//! both engines alike).
//!
//! [`Checker`] compiles a program once and then runs it any number of times (calldata, gas
//! limit, entry) in both engines, failing on any difference reported by [`exec::diff`], on a
//! different number of frame runs, or when the target frame did not run natively.

use crate::exec::{self, Outcome};
use ember_compiler::{CompileStats, JitRegistry, OptLevel};
use ember_runtime::{EmberEvm, NativeFn, NativeProvider, NoNative};
use revm::bytecode::opcode as op;
use revm::context::{BlockEnv, CfgEnv, Context, TxEnv};
use revm::database::{CacheDB, EmptyDB};
use revm::handler::{ExecuteEvm, MainBuilder, MainContext};
use revm::primitives::eip4844::{
    BLOB_BASE_FEE_UPDATE_FRACTION_CANCUN, BLOB_BASE_FEE_UPDATE_FRACTION_PRAGUE,
};
use revm::primitives::hardfork::SpecId;
use revm::primitives::{keccak256, Address, Bytes, TxKind, B256, U256};
use revm::state::{AccountInfo, Bytecode};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::Once;

const fn account(tag: u8) -> Address {
    let mut b = [0u8; 20];
    b[0] = 0xee;
    b[1] = 0xbe;
    b[19] = tag;
    Address::new(b)
}

/// The transaction sender (an EOA with a large balance).
pub const CALLER: Address = account(0xca);
/// Where the program under test lives.
pub const TARGET: Address = account(0x01);
/// Returns the word [`RETURNER_WORD`] followed by its calldata.
pub const RETURNER: Address = account(0x02);
/// Reverts with 32 bytes of data (pre-Byzantium, REVERT is an invalid opcode and it halts).
pub const REVERTER: Address = account(0x03);
/// Emits LOG1(topic = CALLVALUE) of one word, increments its storage slot 1 and returns a word.
pub const LOGGER: Address = account(0x04);
/// Self-destructs, sending its balance to its caller.
pub const SUICIDER: Address = account(0x05);
/// STATICCALLs [`TARGET`]; see [`Entry::Static`].
pub const STATIC_WRAPPER: Address = account(0x06);
/// An account with a balance and no code.
pub const EMPTY: Address = account(0x07);
/// From Prague on: an EIP-7702 delegation to [`RETURNER`] (absent before Prague).
pub const DELEGATED: Address = account(0x08);
/// Not in the state.
pub const NONEXISTENT: Address = account(0x09);
/// The block's coinbase (not in the pre-state).
pub const COINBASE: Address = account(0xcb);

/// The word [`RETURNER`] returns first.
pub const RETURNER_WORD: U256 = U256::from_limbs([0x1111, 0x2222, 0x3333, 0x4444]);

/// Storage of [`TARGET`] before the transaction (slot, value); every other slot is zero.
pub const TARGET_STORAGE: [(U256, U256); 4] = [
    (
        U256::from_limbs([1, 0, 0, 0]),
        U256::from_limbs([1, 0, 0, 0]),
    ),
    (
        U256::from_limbs([2, 0, 0, 0]),
        U256::from_limbs([0xdead, 0, 0, 0]),
    ),
    (U256::from_limbs([3, 0, 0, 0]), U256::MAX),
    (U256::MAX, U256::from_limbs([0x42, 0, 0, 0])),
];

/// Block number of the environment.
pub const BLOCK_NUMBER: u64 = 20_000_000;
/// Block gas limit; a transaction's gas limit may not exceed it.
pub const BLOCK_GAS_LIMIT: u64 = 30_000_000;
/// Block base fee (London on).
pub const BASEFEE: u64 = 7;

/// Forks Ember compiles, oldest first.
pub const SPECS: [SpecId; 14] = [
    SpecId::FRONTIER,
    SpecId::HOMESTEAD,
    SpecId::TANGERINE,
    SpecId::SPURIOUS_DRAGON,
    SpecId::BYZANTIUM,
    SpecId::PETERSBURG,
    SpecId::ISTANBUL,
    SpecId::BERLIN,
    SpecId::LONDON,
    SpecId::MERGE,
    SpecId::SHANGHAI,
    SpecId::CANCUN,
    SpecId::PRAGUE,
    SpecId::OSAKA,
];

/// A tiny assembler for building test programs.
#[derive(Clone, Debug, Default)]
pub struct Asm {
    code: Vec<u8>,
}

impl Asm {
    /// Empty program.
    pub fn new() -> Self {
        Self::default()
    }

    /// Current length (the PC of the next byte).
    pub fn pc(&self) -> usize {
        self.code.len()
    }

    /// Appends opcodes / raw bytes.
    pub fn op(&mut self, ops: &[u8]) -> &mut Self {
        self.code.extend_from_slice(ops);
        self
    }

    /// Pushes `v` with the shortest PUSH1..PUSH32 (never PUSH0, so it works in every fork).
    pub fn push(&mut self, v: U256) -> &mut Self {
        let n = v.byte_len().max(1);
        self.push_n(n, v)
    }

    /// Pushes a small number.
    pub fn push_u64(&mut self, v: u64) -> &mut Self {
        self.push(U256::from(v))
    }

    /// Pushes `v` with PUSHn (`n` in 1..=32), truncated to its low `n` bytes.
    pub fn push_n(&mut self, n: usize, v: U256) -> &mut Self {
        assert!((1..=32).contains(&n));
        self.code.push(op::PUSH1 + (n as u8 - 1));
        let be = v.to_be_bytes::<32>();
        self.code.extend_from_slice(&be[32 - n..]);
        self
    }

    /// Pushes an address (PUSH20).
    pub fn push_addr(&mut self, a: Address) -> &mut Self {
        self.push_n(20, U256::from_be_slice(a.as_slice()))
    }

    /// Overwrites the 2-byte immediate at `at` (for back-patched PUSH2 labels).
    pub fn patch_u16(&mut self, at: usize, v: u16) {
        self.code[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    /// Borrows the bytes so far.
    pub fn bytes(&self) -> &[u8] {
        &self.code
    }

    /// The finished program.
    pub fn finish(&self) -> Vec<u8> {
        self.code.clone()
    }
}

fn returner_code() -> Vec<u8> {
    let mut a = Asm::new();
    a.push(RETURNER_WORD).push_u64(0).op(&[op::MSTORE]);
    a.op(&[op::CALLDATASIZE])
        .push_u64(0)
        .push_u64(32)
        .op(&[op::CALLDATACOPY]);
    a.op(&[op::CALLDATASIZE])
        .push_u64(32)
        .op(&[op::ADD])
        .push_u64(0)
        .op(&[op::RETURN]);
    a.finish()
}

fn reverter_code() -> Vec<u8> {
    let mut a = Asm::new();
    a.push(U256::from(0xbad_c0deu64))
        .push_u64(0)
        .op(&[op::MSTORE]);
    a.push_u64(32).push_u64(0).op(&[op::REVERT]);
    a.finish()
}

fn logger_code() -> Vec<u8> {
    let mut a = Asm::new();
    a.push_u64(0x2a).push_u64(0).op(&[op::MSTORE]);
    a.op(&[op::CALLVALUE])
        .push_u64(32)
        .push_u64(0)
        .op(&[op::LOG1]);
    a.push_u64(1)
        .op(&[op::SLOAD])
        .push_u64(1)
        .op(&[op::ADD])
        .push_u64(1)
        .op(&[op::SSTORE]);
    a.push_u64(32).push_u64(0).op(&[op::RETURN]);
    a.finish()
}

fn suicider_code() -> Vec<u8> {
    vec![op::CALLER, op::SELFDESTRUCT]
}

/// Code of [`STATIC_WRAPPER`]: copies its calldata to memory, STATICCALLs [`TARGET`] with it and
/// all available gas, then returns `success (32 bytes) ‖ GAS after the call (32 bytes) ‖
/// returndata`. Needs Byzantium (STATICCALL, RETURNDATA*).
pub fn static_wrapper_code() -> Vec<u8> {
    let mut a = Asm::new();
    a.op(&[op::CALLDATASIZE])
        .push_u64(0)
        .push_u64(0)
        .op(&[op::CALLDATACOPY]);
    // STATICCALL(gas, addr, argsOffset, argsSize, retOffset, retSize)
    a.push_u64(0)
        .push_u64(0)
        .op(&[op::CALLDATASIZE])
        .push_u64(0)
        .push_addr(TARGET);
    a.op(&[op::GAS, op::STATICCALL]);
    a.op(&[op::GAS]).push_u64(32).op(&[op::MSTORE]);
    a.push_u64(0).op(&[op::MSTORE]);
    a.op(&[op::RETURNDATASIZE])
        .push_u64(0)
        .push_u64(64)
        .op(&[op::RETURNDATACOPY]);
    a.op(&[op::RETURNDATASIZE])
        .push_u64(64)
        .op(&[op::ADD])
        .push_u64(0)
        .op(&[op::RETURN]);
    a.finish()
}

/// Codes of the helper contracts (everything but [`TARGET`]) present under `spec`.
pub fn helper_codes(spec: SpecId) -> Vec<(Address, Vec<u8>)> {
    let mut v = vec![
        (RETURNER, returner_code()),
        (REVERTER, reverter_code()),
        (LOGGER, logger_code()),
        (SUICIDER, suicider_code()),
    ];
    if spec.is_enabled_in(SpecId::BYZANTIUM) {
        v.push((STATIC_WRAPPER, static_wrapper_code()));
    }
    v
}

/// How the transaction reaches [`TARGET`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// The transaction calls [`TARGET`] directly.
    Direct,
    /// The transaction calls [`STATIC_WRAPPER`], which STATICCALLs [`TARGET`] (Byzantium and
    /// later): state changes in the target are static-context violations.
    Static,
}

/// Which engine runs the program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecMode {
    /// revm's interpreter.
    Interp,
    /// Ember's JIT at this optimisation level (the target and the helpers are compiled).
    Jit(OptLevel),
}

/// The state, block and configuration a program runs in.
#[derive(Clone, Debug)]
pub struct Setup {
    /// Fork.
    pub spec: SpecId,
    /// Pre-state (see the module docs).
    pub db: CacheDB<EmptyDB>,
    /// Block environment.
    pub block: BlockEnv,
    /// Code hash of the program under test.
    pub target_hash: B256,
}

fn code_info(code: &[u8], balance: U256) -> AccountInfo {
    // `new_legacy`, not `new_raw`: arbitrary bytes (e.g. starting 0xef01) must not panic.
    let bc = if code.is_empty() {
        Bytecode::new()
    } else {
        Bytecode::new_legacy(Bytes::copy_from_slice(code))
    };
    AccountInfo {
        balance,
        nonce: 1,
        code_hash: bc.hash_slow(),
        code: Some(bc),
        ..Default::default()
    }
}

impl Setup {
    /// The environment with `code` at [`TARGET`] under `spec`.
    pub fn new(code: &[u8], spec: SpecId) -> Self {
        let mut db = CacheDB::new(EmptyDB::default());
        let eth = U256::from(10u64).pow(U256::from(18));
        db.insert_account_info(
            CALLER,
            AccountInfo {
                balance: eth * U256::from(1_000_000_000u64),
                ..Default::default()
            },
        );
        let target = code_info(code, eth);
        let target_hash = target.code_hash;
        db.insert_account_info(TARGET, target);
        for (k, v) in TARGET_STORAGE {
            db.insert_account_storage(TARGET, k, v)
                .expect("in-memory db");
        }
        for (addr, code) in helper_codes(spec) {
            db.insert_account_info(addr, code_info(&code, U256::from(1000u64)));
        }
        db.insert_account_storage(LOGGER, U256::from(1), U256::from(5))
            .expect("in-memory db");
        db.insert_account_info(
            EMPTY,
            AccountInfo {
                balance: U256::from(1),
                ..Default::default()
            },
        );
        if spec.is_enabled_in(SpecId::PRAGUE) {
            let bc = Bytecode::new_eip7702(RETURNER);
            db.insert_account_info(
                DELEGATED,
                AccountInfo {
                    balance: U256::from(3),
                    code_hash: bc.hash_slow(),
                    code: Some(bc),
                    ..Default::default()
                },
            );
        }
        let mut block = BlockEnv {
            number: U256::from(BLOCK_NUMBER),
            beneficiary: COINBASE,
            timestamp: U256::from(1_700_000_123u64),
            gas_limit: BLOCK_GAS_LIMIT,
            basefee: BASEFEE,
            difficulty: U256::from(0x0123_4567_89ab_cdefu64),
            prevrandao: Some(keccak256(b"ember prevrandao")),
            ..Default::default()
        };
        let fraction = if spec.is_enabled_in(SpecId::PRAGUE) {
            BLOB_BASE_FEE_UPDATE_FRACTION_PRAGUE
        } else {
            BLOB_BASE_FEE_UPDATE_FRACTION_CANCUN
        };
        block.set_blob_excess_gas_and_price(10_000_000, fraction);
        Self {
            spec,
            db,
            block,
            target_hash,
        }
    }

    /// The configuration (see the module docs).
    pub fn cfg(&self) -> CfgEnv {
        let mut cfg = CfgEnv::new_with_spec(self.spec);
        cfg.disable_nonce_check = true;
        cfg.tx_gas_limit_cap = Some(u64::MAX);
        cfg
    }

    /// The transaction: `calldata` to the entry contract with `gas_limit`.
    pub fn tx(&self, calldata: &[u8], gas_limit: u64, entry: Entry) -> TxEnv {
        let to = match entry {
            Entry::Direct => TARGET,
            Entry::Static => STATIC_WRAPPER,
        };
        let mut tx = TxEnv {
            caller: CALLER,
            gas_limit,
            gas_price: 20,
            kind: TxKind::Call(to),
            data: Bytes::copy_from_slice(calldata),
            nonce: 0,
            chain_id: Some(1),
            ..Default::default()
        };
        let spec = self.spec;
        if spec.is_enabled_in(SpecId::BERLIN) {
            tx.tx_type = 1;
            tx.access_list = vec![
                revm::context::transaction::AccessListItem {
                    address: RETURNER,
                    storage_keys: vec![],
                },
                revm::context::transaction::AccessListItem {
                    address: TARGET,
                    storage_keys: vec![B256::with_last_byte(2)],
                },
            ]
            .into();
        }
        if spec.is_enabled_in(SpecId::LONDON) {
            tx.tx_type = 2;
            tx.gas_priority_fee = Some(2);
        }
        if spec.is_enabled_in(SpecId::CANCUN) {
            tx.tx_type = 3;
            let mut h1 = keccak256(b"blob 1");
            h1.0[0] = 1;
            let mut h2 = keccak256(b"blob 2");
            h2.0[0] = 1;
            tx.blob_hashes = vec![h1, h2];
            tx.max_fee_per_blob_gas = 1_000_000;
        }
        tx
    }

    /// Runs one transaction with `provider` serving native code.
    pub fn run<P: NativeProvider>(
        &self,
        calldata: &[u8],
        gas_limit: u64,
        entry: Entry,
        provider: P,
    ) -> Result<Outcome, String> {
        if entry == Entry::Static && !self.spec.is_enabled_in(SpecId::BYZANTIUM) {
            return Err(format!(
                "static entry needs Byzantium (spec {:?})",
                self.spec
            ));
        }
        let ctx = Context::mainnet()
            .with_db(self.db.clone())
            .with_block(self.block.clone())
            .with_cfg(self.cfg());
        let mut evm = EmberEvm::new(ctx.build_mainnet(), provider);
        let result = evm
            .transact(self.tx(calldata, gas_limit, entry))
            .map_err(|e| format!("transaction error: {e:?}"))?;
        Ok(Outcome {
            result,
            native_runs: evm.stats.native_runs.get(),
            interpreted_runs: evm.stats.interpreted_runs.get(),
        })
    }
}

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, turning a panic into `Err(message)`. The panic is not printed (a panic hook
/// installed once skips panics raised inside this function and forwards all others).
pub fn catch_panic<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                default(info);
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let r = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    r.map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "(non-string panic payload)".to_string())
    })
}

thread_local! {
    static HELPERS: RefCell<HashMap<(SpecId, OptLevel), Rc<JitRegistry>>> = RefCell::new(HashMap::new());
}

/// The helper contracts compiled for (`spec`, `opt`), cached per thread.
fn compiled_helpers(spec: SpecId, opt: OptLevel) -> Result<Rc<JitRegistry>, String> {
    if let Some(r) = HELPERS.with(|h| h.borrow().get(&(spec, opt)).cloned()) {
        return Ok(r);
    }
    let mut reg = JitRegistry::new(opt).map_err(|e| format!("JIT init: {e}"))?;
    for (addr, code) in helper_codes(spec) {
        reg.compile(&code, spec)
            .map_err(|e| format!("helper {addr} does not compile for {spec:?}: {e}"))?;
    }
    let reg = Rc::new(reg);
    HELPERS.with(|h| h.borrow_mut().insert((spec, opt), reg.clone()));
    Ok(reg)
}

/// Serves the target's function from its own registry and the helpers' from theirs, counting
/// how often the target's was handed out.
struct Layered<'a> {
    target_hash: B256,
    target: &'a JitRegistry,
    helpers: &'a JitRegistry,
    target_hits: Cell<u64>,
}

impl NativeProvider for Layered<'_> {
    fn native_fn(&self, code_hash: &B256, spec: SpecId) -> Option<NativeFn> {
        if *code_hash == self.target_hash {
            let f = self.target.native_fn(code_hash, spec);
            if f.is_some() {
                self.target_hits.set(self.target_hits.get() + 1);
            }
            return f;
        }
        self.helpers.native_fn(code_hash, spec)
    }
}

/// A program compiled for one fork and optimisation level, ready to be run and compared any
/// number of times.
pub struct Checker {
    /// Environment.
    pub setup: Setup,
    /// The program.
    pub code: Vec<u8>,
    /// Optimisation level.
    pub opt: OptLevel,
    /// What compiling the program cost.
    pub stats: CompileStats,
    target: JitRegistry,
    helpers: Rc<JitRegistry>,
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checker")
            .field("spec", &self.setup.spec)
            .field("opt", &self.opt)
            .field("code", &hex::encode(&self.code))
            .finish()
    }
}

/// A JIT run with the number of native runs of the program itself.
#[derive(Debug)]
pub struct JitOutcome {
    /// The outcome.
    pub outcome: Outcome,
    /// Frame runs of [`TARGET`]'s code served natively.
    pub target_native_runs: u64,
}

impl Checker {
    /// Compiles `code` (and the helpers) for `spec` at `opt`. A compile error of the program is
    /// returned as `Err` with its message.
    pub fn new(code: &[u8], spec: SpecId, opt: OptLevel) -> Result<Self, String> {
        let helpers = compiled_helpers(spec, opt)?;
        let mut target = JitRegistry::new(opt).map_err(|e| format!("JIT init: {e}"))?;
        let stats = target
            .compile(code, spec)
            .map_err(|e| format!("compile error: {e}"))?
            .unwrap_or_default();
        Ok(Self {
            setup: Setup::new(code, spec),
            code: code.to_vec(),
            opt,
            stats,
            target,
            helpers,
        })
    }

    /// Fork.
    pub fn spec(&self) -> SpecId {
        self.setup.spec
    }

    /// Runs in the interpreter.
    pub fn interp(&self, calldata: &[u8], gas_limit: u64, entry: Entry) -> Result<Outcome, String> {
        self.setup.run(calldata, gas_limit, entry, NoNative)
    }

    /// Runs with the compiled program and helpers.
    pub fn jit(&self, calldata: &[u8], gas_limit: u64, entry: Entry) -> Result<JitOutcome, String> {
        let p = Layered {
            target_hash: self.setup.target_hash,
            target: &self.target,
            helpers: &self.helpers,
            target_hits: Cell::new(0),
        };
        let outcome = self.setup.run(calldata, gas_limit, entry, &p)?;
        Ok(JitOutcome {
            outcome,
            target_native_runs: p.target_hits.get(),
        })
    }

    /// Runs both engines and describes every difference; returns the interpreter's result
    /// (`Err(transaction error)` when both reject the transaction identically).
    ///
    /// Beyond [`exec::diff`], the number of frame runs must match, and the program must have run
    /// natively whenever the interpreter entered it (always for [`Entry::Direct`] with
    /// non-empty code). A panic in either run is caught and reported as a difference
    /// (`JIT run panicked: ...`).
    pub fn check(
        &self,
        calldata: &[u8],
        gas_limit: u64,
        entry: Entry,
    ) -> Result<Result<Outcome, String>, String> {
        let i = catch_panic(|| self.interp(calldata, gas_limit, entry))
            .map_err(|p| format!("interpreter run panicked: {p}\n"))?;
        let j = catch_panic(|| self.jit(calldata, gas_limit, entry))
            .map_err(|p| format!("JIT run panicked: {p}\n"))?;
        match (i, j) {
            (Err(a), Err(b)) if a == b => Ok(Err(a)),
            (Err(a), Err(b)) => Err(format!("transaction errors differ: {a} vs {b}")),
            (Err(a), Ok(_)) => Err(format!("interpreter: {a}; JIT: executed")),
            (Ok(_), Err(b)) => Err(format!("interpreter: executed; JIT: {b}")),
            (Ok(i), Ok(j)) => {
                let mut d = exec::diff(&i.result, &j.outcome.result);
                let (fi, fj) = (
                    i.interpreted_runs,
                    j.outcome.native_runs + j.outcome.interpreted_runs,
                );
                if fi != fj {
                    d.push_str(&format!("frame runs: {fi} vs {fj}\n"));
                }
                // The interpreter runs the wrapper once before and once after the target.
                let entered = match entry {
                    Entry::Direct => !self.code.is_empty(),
                    Entry::Static => i.interpreted_runs >= 3,
                };
                if entered && j.target_native_runs == 0 {
                    d.push_str("the program did not run natively\n");
                }
                if d.is_empty() {
                    Ok(Ok(i))
                } else {
                    Err(d)
                }
            }
        }
    }

    /// A self-contained reproduction line for a failure of [`Checker::check`].
    pub fn repro(&self, calldata: &[u8], gas_limit: u64, entry: Entry) -> String {
        format!(
            "spec {:?} opt {:?} entry {:?} gas {} code 0x{} calldata 0x{}",
            self.spec(),
            self.opt,
            entry,
            gas_limit,
            hex::encode(&self.code),
            hex::encode(calldata)
        )
    }
}

/// Runs `code` at [`TARGET`] with `calldata` in the environment of [`Setup`], called directly
/// by a transaction with `gas_limit`, in `mode`.
pub fn run_program(
    code: &[u8],
    calldata: &[u8],
    spec: SpecId,
    gas_limit: u64,
    mode: ExecMode,
) -> Result<Outcome, String> {
    match mode {
        ExecMode::Interp => {
            Setup::new(code, spec).run(calldata, gas_limit, Entry::Direct, NoNative)
        }
        ExecMode::Jit(opt) => Ok(Checker::new(code, spec, opt)?
            .jit(calldata, gas_limit, Entry::Direct)?
            .outcome),
    }
}

/// Compiles `code` at `opt`, runs it in both engines (called directly) and returns `Err` with
/// the differences (see [`Checker::check`]) and a reproduction line.
pub fn compare(
    code: &[u8],
    calldata: &[u8],
    spec: SpecId,
    gas_limit: u64,
    opt: OptLevel,
) -> Result<(), String> {
    compare_entry(code, calldata, spec, gas_limit, opt, Entry::Direct)
}

/// [`compare`] with a choice of [`Entry`].
pub fn compare_entry(
    code: &[u8],
    calldata: &[u8],
    spec: SpecId,
    gas_limit: u64,
    opt: OptLevel,
    entry: Entry,
) -> Result<(), String> {
    let c = Checker::new(code, spec, opt).map_err(|e| {
        format!(
            "{e}\nspec {spec:?} opt {opt:?} code 0x{}",
            hex::encode(code)
        )
    })?;
    c.check(calldata, gas_limit, entry)
        .map(|_| ())
        .map_err(|d| format!("{d}{}", c.repro(calldata, gas_limit, entry)))
}
