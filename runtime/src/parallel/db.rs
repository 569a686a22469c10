//! The database revm sees during one speculative execution: reads come from the multi-version
//! memory (writes of lower transactions) or else from the pre-state, and every read is recorded
//! with the version it saw, for validation.

use super::mvmemory::{AccountBase, Blocked, MvMemory, Read, TxIdx};
use super::scheduler::{DependencyOutcome, Scheduler};
use super::writes::{
    apply_delta, LazyRecipient, LazySender, UnobservedBalance, LAZY_SENDER_BALANCE,
};
use crate::observe;
use revm::bytecode::Bytecode;
use revm::database_interface::{DBErrorMarker, Database, DatabaseRef};
use revm::primitives::{
    Address, Bytes, HashMap, StorageKey, StorageValue, B256, KECCAK_EMPTY, U128, U256,
};
use revm::state::AccountInfo;
use std::sync::{PoisonError, RwLock};

/// Why a speculative read failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TxDbError {
    /// The read hit an ESTIMATE and the execution was suspended until that transaction runs.
    #[error("execution suspended on transaction {0}")]
    Suspended(TxIdx),
    /// Lazy credits overflowed an account's balance.
    #[error("balance overflow at {0}")]
    Overflow(Address),
    /// The pre-state database failed.
    #[error("{0}")]
    Db(String),
}

impl DBErrorMarker for TxDbError {}

/// How many credits below a transaction make it read a contract account inexactly
/// ([`TxDb::lazy_contract_basic`]): below this, an exact read's walk is cheap, and it spares
/// an execution that observes the balance a second run.
pub(crate) const LAZY_CONTRACT_DELTAS: usize = 16;

/// Code by hash, shared by all executions (code is immutable for a given hash).
pub(crate) struct CodeCache {
    codes: RwLock<HashMap<B256, Bytecode>>,
}

impl CodeCache {
    pub(crate) fn new() -> Self {
        Self {
            codes: RwLock::new(HashMap::default()),
        }
    }

    /// Keeps `code` under `hash` unless the cache has it already (code is immutable for a hash;
    /// the write lock is taken only for new code).
    pub(crate) fn insert(&self, hash: B256, code: Bytecode) {
        let known = self
            .codes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&hash);
        if known {
            return;
        }
        self.codes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(hash)
            .or_insert(code);
    }

    fn get<DB: DatabaseRef>(&self, db: &DB, hash: B256) -> Result<Bytecode, TxDbError> {
        if hash == KECCAK_EMPTY {
            return Ok(Bytecode::default());
        }
        if let Some(code) = self.cached(&hash) {
            return Ok(code);
        }
        let code = db
            .code_by_hash_ref(hash)
            .map_err(|e| TxDbError::Db(e.to_string()))?;
        self.insert(hash, code.clone());
        Ok(code)
    }

    fn cached(&self, hash: &B256) -> Option<Bytecode> {
        self.codes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(hash)
            .cloned()
    }
}

/// One worker's code, by hash: its own copy of each contract it runs more than once in the
/// block, and of the empty code.
///
/// A [`Bytecode`] is a reference-counted pointer, and every clone and drop of one is an atomic
/// operation on its count. Shared by both workers, the count of a contract every transaction
/// calls (a token), and that of the empty code every account without code carries, moved
/// between the two cores at every account load (profile of the parallel ERC-20 and swap blocks:
/// ~3.5% of the workers' time in those clones and drops). A contract run once per worker is not copied.
pub(crate) struct WorkerCodes {
    /// Code by hash, and whether it is this worker's own copy yet.
    codes: HashMap<B256, (Bytecode, bool)>,
    empty: Bytecode,
}

impl WorkerCodes {
    pub(crate) fn new() -> Self {
        Self {
            codes: HashMap::default(),
            empty: empty_code(),
        }
    }

    /// Whether this worker has seen the code (and so the shared cache has it).
    pub(crate) fn knows(&self, hash: &B256) -> bool {
        self.codes.contains_key(hash)
    }

    fn get<DB: DatabaseRef>(
        &mut self,
        shared: &CodeCache,
        db: &DB,
        hash: B256,
    ) -> Result<Bytecode, TxDbError> {
        if hash == KECCAK_EMPTY {
            return Ok(self.empty.clone());
        }
        match self.codes.entry(hash) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                let (code, own) = e.get_mut();
                if !*own {
                    *code = own_copy(code);
                    *own = true;
                }
                Ok(code.clone())
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                let code = shared.get(db, hash)?;
                Ok(v.insert((code, false)).0.clone())
            }
        }
    }
}

/// The empty code, in an allocation of its own (`Bytecode::default()` is one static shared by
/// every thread).
fn empty_code() -> Bytecode {
    // SAFETY: one STOP byte, original length 0 and an empty jump table: exactly what
    // `Bytecode::new()` holds, which satisfies `new_analyzed`'s padding invariant.
    unsafe {
        Bytecode::new_analyzed(
            Bytes::from_static(&[0x00]),
            0,
            revm::bytecode::JumpTable::default(),
        )
    }
}

/// A copy of `code` with a reference count of its own (the bytes and the jump table copied,
/// not analysed again).
fn own_copy(code: &Bytecode) -> Bytecode {
    match code.legacy_jump_table() {
        Some(jumps) if code.is_legacy() && !code.bytecode().is_empty() => {
            // SAFETY: the bytes are an exact copy of an analysed legacy bytecode's (padded)
            // bytes, with its original length and jump table: `new_analyzed`'s invariants hold
            // for the copy because they hold for the original.
            unsafe {
                Bytecode::new_analyzed(
                    Bytes::copy_from_slice(code.bytecode()),
                    code.len(),
                    jumps.clone(),
                )
            }
        }
        _ => code.clone(),
    }
}

/// The pre-state with the code deployed in the block: what the fold reads, as written accounts
/// are recorded without their code.
pub(crate) struct WithCodes<'a, DB> {
    pub(crate) db: &'a DB,
    pub(crate) codes: &'a CodeCache,
}

impl<DB: DatabaseRef> DatabaseRef for WithCodes<'_, DB> {
    type Error = DB::Error;

    fn basic_ref(&self, address: Address) -> Result<Option<AccountInfo>, DB::Error> {
        self.db.basic_ref(address)
    }

    fn code_by_hash_ref(&self, code_hash: B256) -> Result<Bytecode, DB::Error> {
        match self.codes.cached(&code_hash) {
            Some(code) => Ok(code),
            None => self.db.code_by_hash_ref(code_hash),
        }
    }

    fn storage_ref(&self, address: Address, index: StorageKey) -> Result<StorageValue, DB::Error> {
        self.db.storage_ref(address, index)
    }

    fn block_hash_ref(&self, number: u64) -> Result<B256, DB::Error> {
        self.db.block_hash_ref(number)
    }
}

/// The block-wide state an execution reads.
pub(crate) struct Shared<'a, DB> {
    pub(crate) db: &'a DB,
    pub(crate) mv: &'a MvMemory,
    pub(crate) scheduler: &'a Scheduler,
    pub(crate) codes: &'a CodeCache,
}

/// Pre-state account without its code (each worker attaches its own: [`WorkerCodes`]). Code the
/// database returns with the account goes to `codes`: a database need not also serve it by
/// hash.
pub(crate) fn pre_account<DB: DatabaseRef>(
    db: &DB,
    codes: &CodeCache,
    address: Address,
) -> Result<Option<AccountInfo>, TxDbError> {
    let info = db
        .basic_ref(address)
        .map_err(|e| TxDbError::Db(e.to_string()))?;
    Ok(info.map(|mut info| {
        if let Some(code) = info.code.take() {
            if info.code_hash != KECCAK_EMPTY {
                codes.insert(info.code_hash, code);
            }
        }
        info
    }))
}

/// A transaction whose sender may be read lazily: a plain transfer's, if the recipient turns out
/// to have no code.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SenderCandidate {
    /// The sender.
    pub(crate) address: Address,
    /// The transaction's nonce.
    pub(crate) nonce: u64,
    /// The transaction's maximum spending.
    pub(crate) required: U128,
}

/// The database of one execution of transaction `tx`.
pub(crate) struct TxDb<'a, DB> {
    shared: &'a Shared<'a, DB>,
    tx: TxIdx,
    /// The transaction's plain-transfer recipient, read lazily if it has no code.
    lazy_candidate: Option<(Address, U256)>,
    /// The recipient, if it was read lazily.
    pub(crate) lazy: Option<LazyRecipient>,
    /// The transaction's sender, its nonce and its maximum spending, if the sender may be read
    /// lazily (when the recipient, `lazy_candidate`, has no code).
    sender_candidate: Option<SenderCandidate>,
    /// The sender, if it was read lazily.
    pub(crate) lazy_sender: Option<LazySender>,
    /// The accounts excluded from [`TxDb::unobserved`] (the transaction's sender and the
    /// block's beneficiary, whose balances revm reads itself), or `None` when no contract
    /// account is read that way in this execution.
    unobserved_except: Option<[Address; 2]>,
    /// Whether a contract account with many credits below this transaction may be handed to
    /// revm with its last full write's balance (see [`TxDb::lazy_contract_basic`]).
    lazy_contracts: bool,
    /// Contract accounts read exactly whose read may turn out not to depend on the balance
    /// (decided after the execution, from the [`observe`] hooks).
    pub(crate) unobserved: Vec<UnobservedBalance>,
    /// The accounts whose balance the execution observed (a buffer for the executor).
    pub(crate) observed: Vec<Address>,
    /// Every read, in order.
    pub(crate) reads: Vec<Read>,
    /// The transaction whose ESTIMATE suspended the execution, set even if revm swallowed the
    /// error. From then on every read fails without consulting the multi-version memory or the
    /// scheduler: see [`TxDb::check_live`].
    pub(crate) suspended: Option<TxIdx>,
    /// Set when credits overflowed a balance.
    pub(crate) overflow: Option<Address>,
    /// The worker's code.
    pub(crate) codes: WorkerCodes,
}

impl<'a, DB: DatabaseRef> TxDb<'a, DB> {
    pub(crate) fn new(
        shared: &'a Shared<'a, DB>,
        tx: TxIdx,
        lazy_candidate: Option<(Address, U256)>,
    ) -> Self {
        Self {
            shared,
            tx,
            lazy_candidate,
            lazy: None,
            sender_candidate: None,
            lazy_sender: None,
            unobserved_except: None,
            lazy_contracts: false,
            unobserved: Vec::new(),
            observed: Vec::new(),
            reads: Vec::new(),
            suspended: None,
            overflow: None,
            codes: WorkerCodes::new(),
        }
    }

    /// Starts an execution of transaction `tx` with this database (a worker reuses one EVM,
    /// and so one database, for all its executions): forgets the previous execution's reads,
    /// lazy recipient and sender, suspension and overflow. `unobserved_except` turns on
    /// balance-free contract reads ([`TxDb::unobserved`]) except for those two accounts, and
    /// `lazy_contracts` inexact ones of accounts with many credits.
    pub(crate) fn begin(
        &mut self,
        tx: TxIdx,
        lazy_candidate: Option<(Address, U256)>,
        sender_candidate: Option<SenderCandidate>,
        unobserved_except: Option<[Address; 2]>,
        lazy_contracts: bool,
    ) {
        self.tx = tx;
        self.unobserved_except = unobserved_except;
        self.lazy_contracts = lazy_contracts && unobserved_except.is_some();
        self.unobserved.clear();
        self.lazy_candidate = lazy_candidate;
        self.lazy = None;
        self.sender_candidate = sender_candidate;
        self.lazy_sender = None;
        self.reads.clear();
        self.suspended = None;
        self.overflow = None;
    }

    /// Fails every read of an execution that was already suspended.
    ///
    /// revm does not stop at the first database error: an error inside an instruction of the
    /// outermost frame only halts that frame (`FatalExternalError`), and the handler still runs
    /// post-execution (refund, caller reimbursement, beneficiary reward) before it looks at the
    /// stored error. The beneficiary reward loads the beneficiary's account, and that read can
    /// hit another ESTIMATE. Consulting the scheduler again would register the abandoned
    /// execution as a dependent a second time and release its active task a second time,
    /// breaking `num_active_tasks`: either the block never reaches `done` (the count wraps
    /// around) or it reaches it while another task is still running (the count hits zero
    /// early), losing that task's validation or execution.
    fn check_live(&self) -> Result<(), TxDbError> {
        match self.suspended {
            Some(blocking) => Err(TxDbError::Suspended(blocking)),
            None => Ok(()),
        }
    }

    fn on_blocked(&mut self, Blocked(blocking): Blocked) -> Result<(), TxDbError> {
        self.check_live()?;
        match self.shared.scheduler.wait_or_suspend(self.tx, blocking) {
            DependencyOutcome::Retry => Ok(()),
            DependencyOutcome::Suspended => {
                self.suspended = Some(blocking);
                Err(TxDbError::Suspended(blocking))
            }
        }
    }

    /// The account of `base` with this worker's copy of its code (the memory holds accounts
    /// without code).
    fn base_info(
        &mut self,
        base: AccountBase,
        address: Address,
    ) -> Result<Option<AccountInfo>, TxDbError> {
        let info = match base {
            AccountBase::Written(_, info) | AccountBase::Cached(info) => info,
            AccountBase::PreState => self.shared.mv.pre_account(&address, || {
                pre_account(self.shared.db, self.shared.codes, address)
            })?,
        };
        info.map(|mut info| {
            if info.code.is_none() {
                info.code = Some(self.codes.get(
                    self.shared.codes,
                    self.shared.db,
                    info.code_hash,
                )?);
            }
            Ok(info)
        })
        .transpose()
    }

    /// The code hash of the last full write of `address` below this transaction.
    fn base_code_hash(
        &mut self,
        address: Address,
    ) -> Result<(B256, Option<AccountInfo>), TxDbError> {
        let base = loop {
            match self.shared.mv.read_account_base(&address, self.tx) {
                Ok(base) => break base,
                Err(blocked) => self.on_blocked(blocked)?,
            }
        };
        let info = self.base_info(base, address)?;
        Ok((info.as_ref().map_or(KECCAK_EMPTY, |i| i.code_hash), info))
    }

    /// A lazy read of the sender: `Some` if neither it nor the recipient has code. revm is
    /// handed the transaction's nonce and a balance above anything the transaction can spend;
    /// only the two code hashes are recorded as reads. The fold checks the real nonce and
    /// balance ([`Debit`](super::writes::Debit)).
    fn lazy_sender_basic(
        &mut self,
        candidate: SenderCandidate,
    ) -> Result<Option<AccountInfo>, TxDbError> {
        let Some((recipient, _)) = self.lazy_candidate else {
            return Ok(None);
        };
        let (recipient_code, _) = self.base_code_hash(recipient)?;
        if recipient_code != KECCAK_EMPTY {
            return Ok(None);
        }
        let (code_hash, info) = self.base_code_hash(candidate.address)?;
        if code_hash != KECCAK_EMPTY {
            return Ok(None);
        }
        // The recipient's code hash is recorded by its own lazy read, which must follow (else
        // the execution is retried without lazy reads: `Outcome::LazyMisuse`).
        self.reads.push(Read::AccountCode {
            address: candidate.address,
            code_hash,
        });
        let mut given = info.unwrap_or_else(|| AccountInfo {
            code: Some(self.codes.empty.clone()),
            ..AccountInfo::default()
        });
        given.nonce = candidate.nonce;
        given.balance = LAZY_SENDER_BALANCE;
        self.lazy_sender = Some(LazySender {
            address: candidate.address,
            nonce: candidate.nonce,
            code_hash,
            required: candidate.required,
        });
        Ok(Some(given))
    }

    /// An inexact read of a contract account with at least [`LAZY_CONTRACT_DELTAS`] credits
    /// between its last full write (`base`) and this transaction (deposits into one contract):
    /// revm is given that write's balance, and only the code hash is recorded. An exact read would
    /// walk every credit, and every deposit adds one, so a block of deposits read exactly costs
    /// quadratic time (0.17x of sequential on the synthetic `deposits` block). `None` when the
    /// account has fewer credits or no code: the caller reads it exactly.
    fn lazy_contract_basic(
        &mut self,
        address: Address,
        base: AccountBase,
    ) -> Result<Option<Option<AccountInfo>>, TxDbError> {
        let info = self.base_info(base, address)?;
        let Some(given) = &info else {
            return Ok(None);
        };
        let code_hash = given.code_hash;
        if !self.note_unobserved(address, given, self.reads.len(), false) {
            return Ok(None);
        }
        self.reads.push(Read::AccountCode { address, code_hash });
        Ok(Some(info))
    }

    /// Notes `given`, the account revm gets for `address`, as a contract read that may not
    /// depend on the balance ([`TxDb::unobserved`]), read `read` of the execution; whether it
    /// qualifies (code, not the sender or the beneficiary, a balance below
    /// [`observe::MAX_UNOBSERVED_BALANCE`]).
    fn note_unobserved(
        &mut self,
        address: Address,
        given: &AccountInfo,
        read: usize,
        exact: bool,
    ) -> bool {
        let qualifies = self
            .unobserved_except
            .is_some_and(|except| !except.contains(&address))
            && given.code_hash != KECCAK_EMPTY
            && given.balance < observe::MAX_UNOBSERVED_BALANCE;
        if !qualifies {
            return false;
        }
        if self.unobserved.iter().any(|u| u.address == address) {
            // Read twice (not expected: revm keeps loaded accounts): the two reads may have
            // seen different balances, so neither may be balance-free.
            observe::balance(address);
            return false;
        }
        self.unobserved.push(UnobservedBalance {
            address,
            balance: given.balance,
            nonce: given.nonce,
            code_hash: given.code_hash,
            read,
            exact,
            credit: U256::ZERO,
        });
        true
    }

    /// A lazy read of the recipient: `Some` if it has no code (then only that is recorded).
    fn lazy_basic(
        &mut self,
        address: Address,
        value: U256,
    ) -> Result<Option<Option<AccountInfo>>, TxDbError> {
        self.check_live()?;
        let (code_hash, info) = self.base_code_hash(address)?;
        if code_hash != KECCAK_EMPTY {
            return Ok(None);
        }
        self.reads.push(Read::AccountCode { address, code_hash });
        self.lazy = Some(LazyRecipient {
            address,
            given: info.clone(),
            value,
        });
        Ok(Some(info))
    }
}

impl<DB: DatabaseRef> Database for TxDb<'_, DB> {
    type Error = TxDbError;

    fn basic(&mut self, address: Address) -> Result<Option<AccountInfo>, TxDbError> {
        self.check_live()?;
        if let Some(candidate) = self.sender_candidate {
            if candidate.address == address {
                self.sender_candidate = None;
                if let Some(info) = self.lazy_sender_basic(candidate)? {
                    return Ok(Some(info));
                }
            }
        }
        if let Some((candidate, value)) = self.lazy_candidate {
            if candidate == address {
                self.lazy_candidate = None;
                if let Some(info) = self.lazy_basic(address, value)? {
                    return Ok(info);
                }
            }
        }
        // A contract with many credits below may be read inexactly: the read stops at the
        // count instead of walking them.
        let mut max_deltas = match (self.lazy_contracts, self.unobserved_except) {
            (true, Some(except)) if !except.contains(&address) => LAZY_CONTRACT_DELTAS - 1,
            _ => usize::MAX,
        };
        let view = loop {
            match self
                .shared
                .mv
                .read_account_within(&address, self.tx, max_deltas)
            {
                Ok(Ok(view)) => break view,
                Ok(Err(base)) => match self.lazy_contract_basic(address, base)? {
                    Some(info) => return Ok(info),
                    None => max_deltas = usize::MAX,
                },
                Err(blocked) => self.on_blocked(blocked)?,
            }
        };
        let base_version = match &view.base {
            AccountBase::PreState | AccountBase::Cached(_) => None,
            AccountBase::Written(v, _) => Some(*v),
        };
        let mut info = self.base_info(view.base, address)?;
        for (_, delta) in &view.credits {
            info = match apply_delta(info, delta) {
                Some(info) => Some(info),
                None => {
                    self.overflow = Some(address);
                    return Err(TxDbError::Overflow(address));
                }
            };
        }
        self.reads.push(Read::Account {
            address,
            base: base_version,
            credits: view.credits.iter().map(|(v, _)| *v).collect(),
        });
        if let Some(given) = &info {
            self.note_unobserved(address, given, self.reads.len() - 1, true);
        }
        Ok(info)
    }

    fn code_by_hash(&mut self, code_hash: B256) -> Result<Bytecode, TxDbError> {
        self.codes.get(self.shared.codes, self.shared.db, code_hash)
    }

    fn storage(&mut self, address: Address, index: StorageKey) -> Result<StorageValue, TxDbError> {
        self.check_live()?;
        let view = loop {
            match self.shared.mv.read_storage(&address, index, self.tx) {
                Ok(view) => break view,
                Err(blocked) => self.on_blocked(blocked)?,
            }
        };
        let value = match view.value() {
            Some(v) => v,
            None => self
                .shared
                .db
                .storage_ref(address, index)
                .map_err(|e| TxDbError::Db(e.to_string()))?,
        };
        self.reads.push(Read::Storage {
            address,
            slot: index,
            written: view.written.map(|(v, _)| v),
            reset: view.reset,
        });
        Ok(value)
    }

    fn block_hash(&mut self, number: u64) -> Result<B256, TxDbError> {
        self.shared
            .db
            .block_hash_ref(number)
            .map_err(|e| TxDbError::Db(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use revm::database::{CacheDB, EmptyDB};

    fn same_code(a: &Bytecode, b: &Bytecode) {
        assert_eq!(a.original_byte_slice(), b.original_byte_slice());
        assert_eq!(a.bytecode(), b.bytecode());
        assert_eq!(a.len(), b.len());
        assert_eq!(a.hash_slow(), b.hash_slow());
        assert_eq!(a.legacy_jump_table(), b.legacy_jump_table());
    }

    #[test]
    fn own_copies_equal_the_shared_code() {
        // PUSH1 4, JUMP, INVALID, JUMPDEST, PUSH2 (truncated: padded by the analysis).
        let shared =
            Bytecode::new_legacy(Bytes::from_static(&[0x60, 0x04, 0x56, 0xfe, 0x5b, 0x61]));
        let own = own_copy(&shared);
        same_code(&shared, &own);
        assert_ne!(
            own.bytecode_ptr(),
            shared.bytecode_ptr(),
            "the copy shares the bytes"
        );
        assert!(own
            .legacy_jump_table()
            .is_some_and(|j| j.is_valid(4) && !j.is_valid(2)));
        let empty = empty_code();
        same_code(&Bytecode::new(), &empty);
        assert!(empty.is_empty() && !empty.is_default());
        assert_eq!(empty.hash_slow(), KECCAK_EMPTY);
    }

    #[test]
    fn a_worker_copies_code_on_its_second_use() {
        let code = Bytecode::new_legacy(Bytes::from_static(&[0x60, 0x01, 0x00]));
        let hash = code.hash_slow();
        let mut db = CacheDB::new(EmptyDB::default());
        db.cache.contracts.insert(hash, code.clone());
        let shared = CodeCache::new();
        let mut worker = WorkerCodes::new();
        assert!(!worker.knows(&hash));
        let first = worker.get(&shared, &db, hash).expect("code");
        assert!(worker.knows(&hash));
        let in_cache = shared.cached(&hash).expect("cached for the others");
        assert_eq!(
            first.bytecode_ptr(),
            in_cache.bytecode_ptr(),
            "first use: shared"
        );
        let second = worker.get(&shared, &db, hash).expect("code");
        same_code(&code, &second);
        assert_ne!(
            second.bytecode_ptr(),
            in_cache.bytecode_ptr(),
            "second use: own copy"
        );
        let third = worker.get(&shared, &db, hash).expect("code");
        assert_eq!(second.bytecode_ptr(), third.bytecode_ptr(), "copied once");
        assert!(worker
            .get(&shared, &db, KECCAK_EMPTY)
            .expect("empty")
            .is_empty());
    }

    /// A database that serves code only with its account, not by hash (as the blockchain
    /// tests' state view does).
    struct InlineCodeOnly(CacheDB<EmptyDB>);

    impl DatabaseRef for InlineCodeOnly {
        type Error = std::convert::Infallible;
        fn basic_ref(&self, address: Address) -> Result<Option<AccountInfo>, Self::Error> {
            Ok(self.0.cache.accounts.get(&address).map(|a| a.info.clone()))
        }
        fn code_by_hash_ref(&self, _: B256) -> Result<Bytecode, Self::Error> {
            Ok(Bytecode::default())
        }
        fn storage_ref(&self, _: Address, _: StorageKey) -> Result<StorageValue, Self::Error> {
            Ok(U256::ZERO)
        }
        fn block_hash_ref(&self, _: u64) -> Result<B256, Self::Error> {
            Ok(B256::ZERO)
        }
    }

    #[test]
    fn code_loaded_with_its_account_is_kept_by_hash() {
        let code = Bytecode::new_legacy(Bytes::from_static(&[0x60, 0x01, 0x00]));
        let hash = code.hash_slow();
        let address = Address::with_last_byte(7);
        let mut cache = CacheDB::new(EmptyDB::default());
        cache.insert_account_info(
            address,
            AccountInfo::new(U256::from(1), 1, hash, code.clone()),
        );
        cache.cache.contracts.clear();
        let db = InlineCodeOnly(cache);
        let codes = CodeCache::new();
        let info = pre_account(&db, &codes, address)
            .expect("loads")
            .expect("exists");
        assert!(info.code.is_none(), "cached without its code");
        let mut worker = WorkerCodes::new();
        let got = worker.get(&codes, &db, info.code_hash).expect("code");
        same_code(&code, &got);
    }
}
