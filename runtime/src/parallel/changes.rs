//! The block's state changes: per-transaction writes folded over the pre-state, in transaction
//! order, into one deterministic list of account changes.

use super::writes::{
    apply_credit, apply_debit, AccountWriteKind, Debit, Location, TxWrites, WriteValue,
};
use super::BlockError;
use revm::bytecode::Bytecode;
use revm::database_interface::DatabaseRef;
use revm::primitives::{Address, Bytes, B256, KECCAK_EMPTY, U256};
use revm::state::{Account, AccountInfo, EvmState, EvmStorageSlot, TransactionId};
use std::collections::BTreeMap;

/// An account as it stands at the end of the block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountState {
    /// Balance in wei.
    pub balance: U256,
    /// Nonce.
    pub nonce: u64,
    /// keccak256 of the code ([`KECCAK_EMPTY`] for none).
    pub code_hash: B256,
    /// The code bytes, when the code hash differs from the pre-state's (code deployed in this
    /// block); `None` otherwise.
    pub code: Option<Bytes>,
}

/// How one account changed over the block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountChange {
    /// The account.
    pub address: Address,
    /// The account at the end of the block; `None` when it does not exist then.
    pub account: Option<AccountState>,
    /// Some transaction created it (CREATE/CREATE2, or, before Spurious Dragon, a touched
    /// account that did not exist).
    pub created: bool,
    /// Some transaction destroyed it (SELFDESTRUCT, or EIP-161 removal of a touched empty
    /// account).
    pub destroyed: bool,
    /// Storage slots, sorted. When [`AccountChange::storage_cleared`], the pre-state storage is
    /// gone and these are every non-zero slot written after the last wipe; otherwise every slot
    /// whose final value differs from the pre-state's.
    pub storage: Vec<(U256, U256)>,
}

impl AccountChange {
    /// Whether the account's pre-state storage was wiped during the block (created or destroyed
    /// at some point).
    pub fn storage_cleared(&self) -> bool {
        self.created || self.destroyed
    }
}

/// A block's changes as revm's [`EvmState`], ready for [`DatabaseCommit::commit`] on the
/// database the block ran on (a `revm::database::State`, say), which then holds the block's
/// post-state: destroyed accounts are self-destructed, accounts whose storage was wiped
/// (created, or destroyed and created again) are newly created with their final storage, the
/// others changed. `db` is that database before the commit (pre-block values: the code of
/// accounts whose code did not change, the original values of changed slots).
///
/// [`DatabaseCommit::commit`]: revm::database_interface::DatabaseCommit::commit
pub fn changes_to_evm_state<DB: DatabaseRef>(
    changes: &[AccountChange],
    db: &DB,
) -> Result<EvmState, DB::Error> {
    let mut out = EvmState::default();
    for c in changes {
        let before = db.basic_ref(c.address)?;
        let mut account = match &before {
            Some(info) => Account::from(info.clone()),
            None => Account::new_not_existing(TransactionId::ZERO),
        };
        account.mark_touch();
        match &c.account {
            None => account.mark_selfdestruct(),
            Some(state) => {
                let code = match &state.code {
                    Some(bytes) => Some(Bytecode::new_raw(bytes.clone())),
                    None => before.as_ref().and_then(|b| b.code.clone()),
                };
                account.info = AccountInfo {
                    balance: state.balance,
                    nonce: state.nonce,
                    code_hash: state.code_hash,
                    code,
                    account_id: None,
                };
                let cleared = c.storage_cleared();
                if cleared {
                    account.mark_created();
                }
                for (slot, value) in &c.storage {
                    let original = if cleared {
                        U256::ZERO
                    } else {
                        db.storage_ref(c.address, *slot)?
                    };
                    account.storage.insert(
                        *slot,
                        EvmStorageSlot::new_changed(original, *value, TransactionId::ZERO),
                    );
                }
            }
        }
        out.insert(c.address, account);
    }
    Ok(out)
}

/// What the block did to one account, before it is compared with the pre-state.
#[derive(Default)]
pub(crate) struct Pending {
    /// Latest written state; `None` while only the pre-state is known.
    pub(crate) info: Option<Option<AccountInfo>>,
    pub(crate) created: bool,
    pub(crate) destroyed: bool,
    pub(crate) storage_reset: bool,
    /// Final slot values (after the last wipe, if any), each with whether it equals the
    /// pre-state's value once that is known ([`ChangeSet::settle`]).
    pub(crate) slots: BTreeMap<U256, (U256, Option<bool>)>,
    /// The pre-state account, once read.
    pre: Option<Option<AccountInfo>>,
}

impl Pending {
    /// An account with nothing applied yet whose pre-state is `pre` if already known.
    pub(crate) fn with_pre_state(pre: Option<Option<AccountInfo>>) -> Self {
        Self {
            pre,
            ..Self::default()
        }
    }

    /// The pre-state account, read from `db` once.
    fn pre_state<DB: DatabaseRef>(
        &mut self,
        db: &DB,
        address: Address,
    ) -> Result<Option<AccountInfo>, DB::Error> {
        if let Some(pre) = &self.pre {
            return Ok(pre.clone());
        }
        let pre = db.basic_ref(address)?;
        self.pre = Some(pre.clone());
        Ok(pre)
    }

    /// Records an account write's kind.
    pub(crate) fn mark(&mut self, kind: AccountWriteKind) {
        match kind {
            AccountWriteKind::Created => self.created = true,
            AccountWriteKind::Destroyed | AccountWriteKind::Removed => self.destroyed = true,
            AccountWriteKind::Changed => {}
        }
    }

    /// The latest state, taken out of `self.info` (the pre-state if none was written).
    fn take_latest<DB: DatabaseRef>(
        &mut self,
        db: &DB,
        address: Address,
    ) -> Result<Option<AccountInfo>, FoldError> {
        match self.info.take() {
            Some(info) => Ok(info),
            None => self
                .pre_state(db, address)
                .map_err(|e| FoldError::Db(e.to_string())),
        }
    }

    /// Adds a lazy credit on top of the latest state (the pre-state if none was written).
    pub(crate) fn credit<DB: DatabaseRef>(
        &mut self,
        db: &DB,
        address: Address,
        amount: U256,
    ) -> Result<(), FoldError> {
        let current = self.take_latest(db, address)?;
        match apply_credit(current, amount) {
            Some(credited) => {
                self.info = Some(Some(credited));
                Ok(())
            }
            None => Err(FoldError::Overflow(address)),
        }
    }

    /// Applies a lazy sender's debit on top of the latest state, checking that the sender's
    /// nonce and balance allowed its transaction.
    pub(crate) fn debit<DB: DatabaseRef>(
        &mut self,
        db: &DB,
        address: Address,
        debit: &Debit,
    ) -> Result<(), FoldError> {
        let current = self.take_latest(db, address)?;
        match apply_debit(current, debit) {
            Ok(Some(debited)) => {
                self.info = Some(Some(debited));
                Ok(())
            }
            Ok(None) => Err(FoldError::Overflow(address)),
            Err(_) => Err(FoldError::Unmet(address)),
        }
    }

    /// The account's change over the block, or `None` if its final state equals the
    /// pre-state (and it was neither created nor destroyed).
    pub(crate) fn finish<DB: DatabaseRef>(
        mut self,
        db: &DB,
        address: Address,
    ) -> Result<Option<AccountChange>, BlockError> {
        let mut storage = Vec::new();
        for (slot, (value, same_as_pre)) in std::mem::take(&mut self.slots) {
            let unchanged = match (self.storage_reset, same_as_pre) {
                (true, _) => value.is_zero(),
                (false, Some(same)) => same,
                (false, None) => {
                    value == db.storage_ref(address, slot).map_err(state_error::<DB>)?
                }
            };
            if !unchanged {
                storage.push((slot, value));
            }
        }
        self.finish_with_storage(db, address, storage)
    }

    /// [`Pending::finish`] with the storage part already worked out (the parallel fold compares
    /// slots with the pre-state in another phase): `storage` is every slot whose final value
    /// differs from the pre-state's (after a wipe: every non-zero one), sorted; `self.slots` is
    /// not looked at.
    pub(crate) fn finish_with_storage<DB: DatabaseRef>(
        mut self,
        db: &DB,
        address: Address,
        storage: Vec<(U256, U256)>,
    ) -> Result<Option<AccountChange>, BlockError> {
        let db_err = state_error::<DB>;
        let pre = self.pre_state(db, address).map_err(db_err)?;
        let info = match self.info {
            Some(info) => info,
            None => pre.clone(),
        };
        if info == pre && !self.created && !self.destroyed && storage.is_empty() {
            return Ok(None);
        }
        let account = match info {
            None => None,
            Some(info) => {
                let pre_hash = pre.as_ref().map_or(KECCAK_EMPTY, |p| p.code_hash);
                let code = if info.code_hash != pre_hash && info.code_hash != KECCAK_EMPTY {
                    let code = match info.code {
                        Some(code) => code,
                        None => db.code_by_hash_ref(info.code_hash).map_err(db_err)?,
                    };
                    Some(Bytecode::original_bytes(&code))
                } else {
                    None
                };
                Some(AccountState {
                    balance: info.balance,
                    nonce: info.nonce,
                    code_hash: info.code_hash,
                    code,
                })
            }
        };
        Ok(Some(AccountChange {
            address,
            account,
            created: self.created,
            destroyed: self.destroyed,
            storage,
        }))
    }
}

/// Two slot maps merged, `later`'s value winning where both have a slot.
fn merge_sorted_slots<V>(
    earlier: BTreeMap<U256, V>,
    later: BTreeMap<U256, V>,
) -> BTreeMap<U256, V> {
    let mut a = earlier.into_iter().peekable();
    let mut b = later.into_iter().peekable();
    std::iter::from_fn(|| match (a.peek(), b.peek()) {
        (Some((ka, _)), Some((kb, _))) => match ka.cmp(kb) {
            std::cmp::Ordering::Less => a.next(),
            std::cmp::Ordering::Greater => b.next(),
            std::cmp::Ordering::Equal => {
                a.next();
                b.next()
            }
        },
        (Some(_), None) => a.next(),
        (None, _) => b.next(),
    })
    .collect()
}

fn state_error<DB: DatabaseRef>(e: DB::Error) -> BlockError {
    BlockError::State {
        message: e.to_string(),
    }
}

/// Folds transaction writes, in order, over a pre-state.
pub(crate) struct ChangeSet<'a, DB> {
    db: &'a DB,
    accounts: BTreeMap<Address, Pending>,
}

/// Why a fold failed.
pub(crate) enum FoldError {
    /// A lazy credit overflowed the balance.
    Overflow(Address),
    /// A lazy sender's nonce or balance did not allow its transaction.
    Unmet(Address),
    /// The pre-state database failed.
    Db(String),
}

impl<'a, DB: DatabaseRef> ChangeSet<'a, DB> {
    pub(crate) fn new(db: &'a DB) -> Self {
        Self {
            db,
            accounts: BTreeMap::new(),
        }
    }

    /// Applies one transaction's writes.
    pub(crate) fn apply(&mut self, writes: &TxWrites) -> Result<(), FoldError> {
        for (location, value) in &writes.entries {
            let pending = self.accounts.entry(*location.address()).or_default();
            match (location, value) {
                (Location::Account(_), WriteValue::Account(info, kind)) => {
                    pending.info = Some(info.clone());
                    pending.mark(*kind);
                }
                (Location::Account(address), WriteValue::Credit(amount)) => {
                    pending.credit(self.db, *address, *amount)?;
                }
                (Location::Account(address), WriteValue::Debit(debit)) => {
                    pending.debit(self.db, *address, debit)?;
                }
                (Location::StorageReset(_), _) => {
                    pending.storage_reset = true;
                    pending.slots.clear();
                }
                (Location::Storage(_, slot), WriteValue::Storage(v)) => {
                    pending.slots.insert(*slot, (*v, None));
                }
                // The extraction never pairs other locations and values.
                _ => {}
            }
        }
        Ok(())
    }

    /// Adds a lazy credit to `address` on top of everything applied so far.
    pub(crate) fn credit(&mut self, address: Address, amount: U256) -> Result<(), FoldError> {
        self.accounts
            .entry(address)
            .or_default()
            .credit(self.db, address, amount)
    }

    /// Applies `later`, the writes of the transactions that follow the ones applied so far,
    /// folded over the same pre-state without lazy credits or debits, as if each of its
    /// transactions' writes were applied here in order.
    pub(crate) fn merge(&mut self, later: ChangeSet<'a, DB>) {
        for (address, next) in later.accounts {
            match self.accounts.entry(address) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(next);
                }
                std::collections::btree_map::Entry::Occupied(o) => {
                    let pending = o.into_mut();
                    if next.info.is_some() {
                        pending.info = next.info;
                    }
                    pending.created |= next.created;
                    pending.destroyed |= next.destroyed;
                    if next.storage_reset || pending.slots.is_empty() {
                        pending.storage_reset |= next.storage_reset;
                        pending.slots = next.slots;
                    } else if !next.slots.is_empty() {
                        // Both sorted: one merge (the later value wins) and a bulk build,
                        // instead of an insert per slot.
                        let earlier = std::mem::take(&mut pending.slots);
                        pending.slots = merge_sorted_slots(earlier, next.slots);
                    }
                    if pending.pre.is_none() {
                        pending.pre = next.pre;
                    }
                }
            }
        }
    }

    /// Compares every slot written so far with the pre-state (without a wipe: after one, only
    /// zero counts as unchanged, and nothing is looked up), so that [`ChangeSet::finish`] need
    /// not: a speculative chunk does this on its own thread before the chunks are merged.
    pub(crate) fn settle(&mut self) -> Result<(), DB::Error> {
        for (address, pending) in &mut self.accounts {
            if pending.storage_reset {
                continue;
            }
            for (slot, (value, same_as_pre)) in pending.slots.iter_mut() {
                if same_as_pre.is_none() {
                    *same_as_pre = Some(*value == self.db.storage_ref(*address, *slot)?);
                }
            }
        }
        Ok(())
    }

    /// Splits off the accounts at and above `address` (into a change set over the same
    /// pre-state).
    pub(crate) fn split_off(&mut self, address: &Address) -> Self {
        Self {
            db: self.db,
            accounts: self.accounts.split_off(address),
        }
    }

    /// The addresses with changes, in order.
    pub(crate) fn addresses(&self) -> impl Iterator<Item = &Address> {
        self.accounts.keys()
    }

    /// The pre-state.
    pub(crate) fn db(&self) -> &'a DB {
        self.db
    }

    /// How many accounts have changes.
    pub(crate) fn len(&self) -> usize {
        self.accounts.len()
    }

    /// The block's account changes, sorted by address. Accounts whose final state equals the
    /// pre-state (and were neither created nor destroyed) are left out.
    pub(crate) fn finish(self) -> Result<Vec<AccountChange>, BlockError> {
        let mut out = Vec::with_capacity(self.accounts.len());
        for (address, pending) in self.accounts {
            out.extend(pending.finish(self.db, address)?);
        }
        Ok(out)
    }
}
