//! The database revm sees during one speculative execution: reads come from the multi-version
//! memory (writes of lower transactions) or else from the pre-state, and every read is recorded
//! with the version it saw, for validation.

use super::mvmemory::{AccountBase, Blocked, MvMemory, Read, TxIdx};
use super::scheduler::{DependencyOutcome, Scheduler};
use super::writes::{apply_credit, LazyRecipient};
use revm::bytecode::Bytecode;
use revm::database_interface::{DBErrorMarker, Database, DatabaseRef};
use revm::primitives::{Address, HashMap, StorageKey, StorageValue, B256, KECCAK_EMPTY, U256};
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

    pub(crate) fn insert(&self, hash: B256, code: Bytecode) {
        self.codes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(hash, code);
    }

    fn get<DB: DatabaseRef>(&self, db: &DB, hash: B256) -> Result<Bytecode, TxDbError> {
        if hash == KECCAK_EMPTY {
            return Ok(Bytecode::default());
        }
        if let Some(code) = self
            .codes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&hash)
        {
            return Ok(code.clone());
        }
        let code = db
            .code_by_hash_ref(hash)
            .map_err(|e| TxDbError::Db(e.to_string()))?;
        self.insert(hash, code.clone());
        Ok(code)
    }
}

/// The block-wide state an execution reads.
pub(crate) struct Shared<'a, DB> {
    pub(crate) db: &'a DB,
    pub(crate) mv: &'a MvMemory,
    pub(crate) scheduler: &'a Scheduler,
    pub(crate) codes: &'a CodeCache,
}

/// Pre-state account with its code loaded.
pub(crate) fn pre_account<DB: DatabaseRef>(
    db: &DB,
    codes: &CodeCache,
    address: Address,
) -> Result<Option<AccountInfo>, TxDbError> {
    let info = db
        .basic_ref(address)
        .map_err(|e| TxDbError::Db(e.to_string()))?;
    info.map(|info| with_code(codes, db, info)).transpose()
}

fn with_code<DB: DatabaseRef>(
    codes: &CodeCache,
    db: &DB,
    mut info: AccountInfo,
) -> Result<AccountInfo, TxDbError> {
    if info.code.is_none() {
        info.code = Some(codes.get(db, info.code_hash)?);
    }
    Ok(info)
}

/// The database of one execution of transaction `tx`.
pub(crate) struct TxDb<'a, DB> {
    shared: &'a Shared<'a, DB>,
    tx: TxIdx,
    /// The transaction's plain-transfer recipient, read lazily if it has no code.
    lazy_candidate: Option<(Address, U256)>,
    /// The recipient, if it was read lazily.
    pub(crate) lazy: Option<LazyRecipient>,
    /// Every read, in order.
    pub(crate) reads: Vec<Read>,
    /// The transaction whose ESTIMATE suspended the execution, set even if revm swallowed the
    /// error. From then on every read fails without consulting the multi-version memory or the
    /// scheduler: see [`TxDb::check_live`].
    pub(crate) suspended: Option<TxIdx>,
    /// Set when credits overflowed a balance.
    pub(crate) overflow: Option<Address>,
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
            reads: Vec::new(),
            suspended: None,
            overflow: None,
        }
    }

    /// Starts an execution of transaction `tx` with this database (a worker reuses one EVM,
    /// and so one database, for all its executions): forgets the previous execution's reads,
    /// lazy recipient, suspension and overflow.
    pub(crate) fn begin(&mut self, tx: TxIdx, lazy_candidate: Option<(Address, U256)>) {
        self.tx = tx;
        self.lazy_candidate = lazy_candidate;
        self.lazy = None;
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

    fn base_info(
        &self,
        base: AccountBase,
        address: Address,
    ) -> Result<Option<AccountInfo>, TxDbError> {
        match base {
            AccountBase::Written(_, info) => info
                .map(|i| with_code(self.shared.codes, self.shared.db, i))
                .transpose(),
            AccountBase::Cached(info) => Ok(info),
            AccountBase::PreState => self.shared.mv.pre_account(&address, || {
                pre_account(self.shared.db, self.shared.codes, address)
            }),
        }
    }

    /// A lazy read of the recipient: `Some` if it has no code (then only that is recorded).
    fn lazy_basic(
        &mut self,
        address: Address,
        value: U256,
    ) -> Result<Option<Option<AccountInfo>>, TxDbError> {
        self.check_live()?;
        let base = loop {
            match self.shared.mv.read_account_base(&address, self.tx) {
                Ok(base) => break base,
                Err(blocked) => self.on_blocked(blocked)?,
            }
        };
        let info = self.base_info(base, address)?;
        let code_hash = info.as_ref().map_or(KECCAK_EMPTY, |i| i.code_hash);
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
        if let Some((candidate, value)) = self.lazy_candidate {
            if candidate == address {
                self.lazy_candidate = None;
                if let Some(info) = self.lazy_basic(address, value)? {
                    return Ok(info);
                }
            }
        }
        let view = loop {
            match self.shared.mv.read_account(&address, self.tx) {
                Ok(view) => break view,
                Err(blocked) => self.on_blocked(blocked)?,
            }
        };
        let base_version = match &view.base {
            AccountBase::PreState | AccountBase::Cached(_) => None,
            AccountBase::Written(v, _) => Some(*v),
        };
        let mut info = self.base_info(view.base, address)?;
        for (_, amount) in &view.credits {
            info = match apply_credit(info, *amount) {
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
        Ok(info)
    }

    fn code_by_hash(&mut self, code_hash: B256) -> Result<Bytecode, TxDbError> {
        self.shared.codes.get(self.shared.db, code_hash)
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
