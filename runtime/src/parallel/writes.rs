//! What one transaction wrote, in a form both execution modes share: the locations of the
//! multi-version memory and the values written there, extracted from revm's finalized
//! [`EvmState`].
//!
//! The extraction mirrors how revm's own `State` applies an `EvmState` (untouched accounts are
//! skipped, self-destructed ones removed, created ones get fresh storage, touched empty ones are
//! removed under EIP-161, the journal's `finalize` has already normalised the pre-Spurious-Dragon
//! cases), so folding these writes over the pre-state gives exactly the state revm's `State`
//! holds after the same transactions.

use revm::primitives::{Address, U256};
use revm::state::{AccountInfo, EvmState};

/// A location of the multi-version memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Location {
    /// An account's balance, nonce and code (and whether it exists).
    Account(Address),
    /// One storage slot.
    Storage(Address, U256),
    /// "The account's storage was wiped": written by the transaction that creates, destroys or
    /// EIP-161-removes the account, read by every storage read of that account.
    StorageReset(Address),
}

impl Location {
    /// The address the location belongs to (the memory is sharded by address).
    pub(crate) fn address(&self) -> &Address {
        match self {
            Location::Account(a) | Location::Storage(a, _) | Location::StorageReset(a) => a,
        }
    }
}

/// How a transaction changed an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AccountWriteKind {
    /// Balance, nonce or code changed.
    Changed,
    /// Created (CREATE/CREATE2, or an empty account materialised before Spurious Dragon).
    Created,
    /// Self-destructed.
    Destroyed,
    /// Removed as a touched empty account (EIP-161).
    Removed,
}

impl AccountWriteKind {
    /// Whether the write wipes storage a contract may have used: a self-destruct, or the
    /// creation of an account with code. Two such wipes of one address within a block
    /// (self-destruct and redeploy, create then destroy) are the hazard of
    /// [`ParallelOptions::fallback_on_repeated_wipe`](super::ParallelOptions). An empty account
    /// materialised before Spurious Dragon or removed under EIP-161 never had storage.
    pub(crate) fn is_contract_wipe(self, info: Option<&AccountInfo>) -> bool {
        match self {
            AccountWriteKind::Destroyed => true,
            AccountWriteKind::Created => {
                info.is_some_and(|i| i.code_hash != revm::primitives::KECCAK_EMPTY)
            }
            AccountWriteKind::Changed | AccountWriteKind::Removed => false,
        }
    }
}

/// A value written to a [`Location`].
#[derive(Clone, Debug)]
pub(crate) enum WriteValue {
    /// The account's new state (`None`: it does not exist any more).
    Account(Option<AccountInfo>, AccountWriteKind),
    /// A lazy balance credit (always non-zero): the transaction added this amount to the
    /// account's balance without reading it.
    Credit(U256),
    /// A storage slot's new value.
    Storage(U256),
    /// The account's storage was wiped before this transaction's slot writes.
    StorageReset,
}

/// A transaction's writes, grouped per account in the order they apply (account, storage
/// reset, slots).
#[derive(Clone, Debug, Default)]
pub(crate) struct TxWrites {
    /// The writes.
    pub(crate) entries: Vec<(Location, WriteValue)>,
}

/// An account revm was handed a speculative ("lazy") view of: only its code was exact.
#[derive(Clone, Debug)]
pub(crate) struct LazyRecipient {
    /// The account.
    pub(crate) address: Address,
    /// What the database returned for it.
    pub(crate) given: Option<AccountInfo>,
    /// The value the transaction sends it.
    pub(crate) value: U256,
}

/// The lazy recipient was used in a way that depends on its exact balance: the transaction must
/// run again with an exact read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LazyMisuse;

/// Extracts the writes of one transaction from its finalized state.
///
/// `credits` are lazy balance credits recorded outside the state (the beneficiary fee);
/// `lazy` is the transaction's lazily read recipient, whose only admissible change is a credit of
/// exactly the transferred value.
///
/// The writes are appended to `out` (cleared by the caller; a worker reuses one buffer).
pub(crate) fn extract_writes(
    state: &EvmState,
    credits: &[(Address, U256)],
    lazy: Option<&LazyRecipient>,
    out: &mut TxWrites,
) -> Result<(), LazyMisuse> {
    let mut addresses: Vec<&Address> = state.keys().collect();
    addresses.sort_unstable();
    let entries = &mut out.entries;
    for address in addresses {
        let account = &state[address];
        if let Some(lazy) = lazy.filter(|l| l.address == *address) {
            lazy_credit(account, lazy, entries)?;
            continue;
        }
        if !account.is_touched() {
            continue;
        }
        if account.is_selfdestructed() {
            entries.push((
                Location::Account(*address),
                WriteValue::Account(None, AccountWriteKind::Destroyed),
            ));
            entries.push((Location::StorageReset(*address), WriteValue::StorageReset));
            continue;
        }
        if account.is_created() {
            entries.push((
                Location::Account(*address),
                WriteValue::Account(Some(account.info.clone()), AccountWriteKind::Created),
            ));
            entries.push((Location::StorageReset(*address), WriteValue::StorageReset));
            push_slots(address, account, entries);
            continue;
        }
        if account.is_empty() {
            // EIP-161: a touched empty account is removed (before Spurious Dragon the journal's
            // `finalize` has already turned this case into "created" or "untouched"). An account
            // that did not exist stays absent: nothing to write.
            if !account.is_loaded_as_not_existing() {
                entries.push((
                    Location::Account(*address),
                    WriteValue::Account(None, AccountWriteKind::Removed),
                ));
                entries.push((Location::StorageReset(*address), WriteValue::StorageReset));
            }
            continue;
        }
        if account.info != account.original_info() || account.is_loaded_as_not_existing() {
            entries.push((
                Location::Account(*address),
                WriteValue::Account(Some(account.info.clone()), AccountWriteKind::Changed),
            ));
        }
        push_slots(address, account, entries);
    }
    for (address, amount) in credits {
        if !amount.is_zero() {
            entries.push((Location::Account(*address), WriteValue::Credit(*amount)));
        }
    }
    Ok(())
}

/// The lazy recipient's write: nothing if the transfer did not happen, a credit of exactly the
/// value if it did, and [`LazyMisuse`] for anything else.
fn lazy_credit(
    account: &revm::state::Account,
    lazy: &LazyRecipient,
    entries: &mut Vec<(Location, WriteValue)>,
) -> Result<(), LazyMisuse> {
    let given = lazy.given.clone().unwrap_or_default();
    let untouched_storage = account.storage.values().all(|s| !s.is_changed());
    if account.is_selfdestructed() || account.is_created() || !untouched_storage {
        return Err(LazyMisuse);
    }
    if account.info.nonce != given.nonce || account.info.code_hash != given.code_hash {
        return Err(LazyMisuse);
    }
    if account.info.balance == given.balance {
        // A touch without a balance change would make EIP-161 depend on the exact balance.
        return if account.is_touched() {
            Err(LazyMisuse)
        } else {
            Ok(())
        };
    }
    if given.balance.checked_add(lazy.value) != Some(account.info.balance) || lazy.value.is_zero() {
        return Err(LazyMisuse);
    }
    entries.push((
        Location::Account(lazy.address),
        WriteValue::Credit(lazy.value),
    ));
    Ok(())
}

fn push_slots(
    address: &Address,
    account: &revm::state::Account,
    entries: &mut Vec<(Location, WriteValue)>,
) {
    let mut slots: Vec<(U256, U256)> = account
        .changed_storage_slots()
        .map(|(k, s)| (*k, s.present_value))
        .collect();
    slots.sort_unstable_by_key(|(k, _)| *k);
    entries.extend(
        slots
            .into_iter()
            .map(|(k, v)| (Location::Storage(*address, k), WriteValue::Storage(v))),
    );
}

/// Adds a lazy credit to an account as revm's `incr_balance` would (the account is touched;
/// since the credit is non-zero the result is never empty, so EIP-161 never removes it).
/// `None` when the balance would overflow (revm would then leave the balance unchanged, which
/// the lazy model cannot reproduce: the caller falls back to sequential execution).
pub(crate) fn apply_credit(account: Option<AccountInfo>, amount: U256) -> Option<AccountInfo> {
    let mut info = account.unwrap_or_default();
    info.balance = info.balance.checked_add(amount)?;
    Some(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credits_create_accounts_and_detect_overflow() {
        let created = apply_credit(None, U256::from(5)).expect("no overflow");
        assert_eq!(created.balance, U256::from(5));
        assert_eq!(
            (created.nonce, created.code_hash),
            (0, revm::primitives::KECCAK_EMPTY)
        );
        let rich = AccountInfo {
            balance: U256::MAX,
            ..AccountInfo::default()
        };
        assert!(apply_credit(Some(rich), U256::from(1)).is_none());
    }
}
