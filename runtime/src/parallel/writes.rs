//! What one transaction wrote, in a form both execution modes share: the locations of the
//! multi-version memory and the values written there, extracted from revm's finalized
//! [`EvmState`].
//!
//! The extraction mirrors how revm's own `State` applies an `EvmState` (untouched accounts are
//! skipped, self-destructed ones removed, created ones get fresh storage, touched empty ones are
//! removed under EIP-161, the journal's `finalize` has already normalised the pre-Spurious-Dragon
//! cases), so folding these writes over the pre-state gives exactly the state revm's `State`
//! holds after the same transactions.

use revm::primitives::ruint::UintTryFrom;
use revm::primitives::{Address, B256, U128, U256};
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
    /// A lazy sender's change: the transaction took its fees and value from the account, and
    /// bumped its nonce, without reading its balance or nonce.
    Debit(Debit),
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

/// A contract account revm was handed exactly, whose read is recorded as depending on the
/// account's code only if the execution did not observe its balance
/// ([`observe`](crate::observe)): its write is then a credit of whatever the execution added to
/// the balance, applied over the account's final state by the fold and by exact readers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct UnobservedBalance {
    /// The account.
    pub(crate) address: Address,
    /// The balance revm was given.
    pub(crate) balance: U256,
    /// The nonce revm was given.
    pub(crate) nonce: u64,
    /// Its code hash (never the empty code's).
    pub(crate) code_hash: B256,
    /// The position of the read among the execution's reads.
    pub(crate) read: usize,
    /// Whether revm was given the exact balance (with every credit below the reader). If not
    /// (an account with many credits, given its last full write's balance: see
    /// [`TxDb`](super::db::TxDb)), an execution that observed the balance must run again.
    pub(crate) exact: bool,
    /// What the execution added to the balance ([`unobserved_credit`], set after it ran).
    pub(crate) credit: U256,
}

/// What an execution that did not observe `given`'s balance added to it, or `None` if the
/// account changed in another way (created, destroyed, a new nonce or code, a lower balance):
/// then the read stays exact.
pub(crate) fn unobserved_credit(
    account: &revm::state::Account,
    given: &UnobservedBalance,
) -> Option<U256> {
    if account.is_selfdestructed()
        || account.is_created()
        || account.info.nonce != given.nonce
        || account.info.code_hash != given.code_hash
    {
        return None;
    }
    account.info.balance.checked_sub(given.balance)
}

/// A plain transfer's change to its sender, recorded without reading the sender's balance and
/// nonce: what the transaction needed of them and what it did to them.
///
/// Only the transaction's own sender is debited this way, and only when nothing but the
/// transfer runs (the recipient has no code), so nothing in the transaction observed the
/// balance beyond revm's pre-execution check, which `required` and `nonce` repeat.
///
/// The amounts are 128-bit (in 64-bit limbs: `u128` would align the whole write to 16 bytes): a
/// lazy sender's maximum spending is below 2^128 and bounds both, and the write stays as small as
/// an account write (every entry of the memory has that size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Debit {
    /// The balance the sender must hold before the transaction (revm's
    /// `max_balance_spending`: gas limit times maximum fee, plus value and blob fee).
    pub(crate) required: U128,
    /// The nonce the sender must have before the transaction (one more after it).
    pub(crate) nonce: u64,
    /// Taken from the balance: fees and, if the transfer happened, the value.
    pub(crate) sub: U128,
    /// Added to the balance after `sub` (the fee reward when the sender is the beneficiary,
    /// which revm then pays at once).
    pub(crate) add: U128,
}

/// A word as a 128-bit amount, if it fits.
pub(crate) fn narrow(x: U256) -> Option<U128> {
    U128::uint_try_from(x).ok()
}

/// A change an account read applies over the account's last full write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delta {
    /// A lazy credit.
    Credit(U256),
    /// A lazy sender's debit.
    Debit(Debit),
}

/// A lazy debit did not fit the account it applies to: the sender's nonce differed from the
/// transaction's, its balance was below the transaction's maximum spending, or it did not exist
/// (the block is invalid as given; sequential execution reports the transaction's error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Unmet;

/// Applies a lazy debit exactly, as the fold does: `Unmet` unless the account exists with the
/// transaction's nonce and at least its required balance; `Ok(None)` if adding the reward
/// overflowed (the caller falls back to sequential execution, as for an overflowing credit).
pub(crate) fn apply_debit(
    account: Option<AccountInfo>,
    debit: &Debit,
) -> Result<Option<AccountInfo>, Unmet> {
    let mut info = account.ok_or(Unmet)?;
    if info.nonce != debit.nonce || info.balance < U256::from(debit.required) {
        return Err(Unmet);
    }
    // `required` covers `sub`: the maximum spending bounds fees plus value.
    info.balance = info.balance.saturating_sub(U256::from(debit.sub));
    info.nonce = info.nonce.wrapping_add(1);
    Ok(info
        .balance
        .checked_add(U256::from(debit.add))
        .map(|balance| {
            info.balance = balance;
            info
        }))
}

/// Applies a delta as a speculative read does: a debit whose requirement is not met is applied
/// anyway (saturating at zero). The read records the delta's version, so it fails validation
/// if the deltas below it change; if they are final, the fold finds the unmet requirement and
/// the block falls back to sequential execution. `None` on a balance overflow.
pub(crate) fn apply_delta(account: Option<AccountInfo>, delta: &Delta) -> Option<AccountInfo> {
    match delta {
        Delta::Credit(amount) => apply_credit(account, *amount),
        Delta::Debit(debit) => {
            let mut info = account.unwrap_or_default();
            info.balance = info.balance.saturating_sub(U256::from(debit.sub));
            info.balance = info.balance.checked_add(U256::from(debit.add))?;
            info.nonce = info.nonce.wrapping_add(1);
            Some(info)
        }
    }
}

/// A plain transfer's sender that revm was handed a speculative view of: the transaction's
/// nonce and [`LAZY_SENDER_BALANCE`], with its real code hash.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LazySender {
    /// The account.
    pub(crate) address: Address,
    /// The nonce it was given (the transaction's).
    pub(crate) nonce: u64,
    /// Its code hash.
    pub(crate) code_hash: B256,
    /// The balance the transaction requires.
    pub(crate) required: U128,
}

/// The balance a lazily read sender is given: above any maximum spending a lazy sender may
/// have (below 2^128), and far enough below 2^256 that the beneficiary reward cannot overflow
/// it.
pub(crate) const LAZY_SENDER_BALANCE: U256 = U256::from_limbs([0, 0, 0, 1]);

/// The lazy recipient was used in a way that depends on its exact balance: the transaction must
/// run again with an exact read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LazyMisuse;

/// Extracts the writes of one transaction from its finalized state.
///
/// `credits` are lazy balance credits recorded outside the state (the beneficiary fee);
/// `lazy` is the transaction's lazily read recipient, whose only admissible change is a credit of
/// exactly the transferred value; `unobserved` are the contract accounts whose balance the
/// execution did not observe, their credit computed by the caller ([`unobserved_credit`]): it
/// is written instead of the account.
///
/// The writes are appended to `out` (cleared by the caller; a worker reuses one buffer).
pub(crate) fn extract_writes(
    state: &EvmState,
    credits: &[(Address, U256)],
    lazy: Option<&LazyRecipient>,
    sender: Option<&LazySender>,
    unobserved: &[UnobservedBalance],
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
        if let Some(sender) = sender.filter(|s| s.address == *address) {
            lazy_debit(account, sender, entries)?;
            continue;
        }
        if !account.is_touched() {
            continue;
        }
        if let Some(u) = unobserved.iter().find(|u| u.address == *address) {
            if !u.credit.is_zero() {
                entries.push((Location::Account(*address), WriteValue::Credit(u.credit)));
            }
            push_slots(address, account, entries);
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

/// The lazy sender's write: its nonce one higher and its balance changed by the fees (and
/// value, and an eager beneficiary reward), as a debit; [`LazyMisuse`] for anything else.
fn lazy_debit(
    account: &revm::state::Account,
    sender: &LazySender,
    entries: &mut Vec<(Location, WriteValue)>,
) -> Result<(), LazyMisuse> {
    let untouched_storage = account.storage.values().all(|s| !s.is_changed());
    if account.is_selfdestructed()
        || account.is_created()
        || !untouched_storage
        || !account.is_touched()
        || account.info.code_hash != sender.code_hash
        || Some(account.info.nonce) != sender.nonce.checked_add(1)
    {
        return Err(LazyMisuse);
    }
    let given = LAZY_SENDER_BALANCE;
    let (sub, add) = if account.info.balance <= given {
        (given - account.info.balance, U256::ZERO)
    } else {
        (U256::ZERO, account.info.balance - given)
    };
    let (Some(sub), Some(add)) = (narrow(sub), narrow(add)) else {
        return Err(LazyMisuse);
    };
    entries.push((
        Location::Account(sender.address),
        WriteValue::Debit(Debit {
            required: sender.required,
            nonce: sender.nonce,
            sub,
            add,
        }),
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

    #[test]
    fn debits_check_nonce_and_balance_exactly_and_saturate_speculatively() {
        let debit = Debit {
            required: U128::from(100),
            nonce: 3,
            sub: U128::from(60),
            add: U128::from(5),
        };
        let sender = |balance: u64, nonce: u64| AccountInfo {
            balance: U256::from(balance),
            nonce,
            ..AccountInfo::default()
        };
        let after = apply_debit(Some(sender(100, 3)), &debit)
            .expect("met")
            .expect("no overflow");
        assert_eq!((after.balance, after.nonce), (U256::from(45), 4));
        // Below the maximum spending, another nonce, or no account: unmet.
        assert_eq!(apply_debit(Some(sender(99, 3)), &debit), Err(Unmet));
        assert_eq!(apply_debit(Some(sender(500, 2)), &debit), Err(Unmet));
        assert_eq!(apply_debit(None, &debit), Err(Unmet));
        // A speculative read applies it anyway, saturating at zero.
        let seen = apply_delta(Some(sender(10, 0)), &Delta::Debit(debit)).expect("no overflow");
        assert_eq!((seen.balance, seen.nonce), (U256::from(5), 1));
        assert_eq!(narrow(U256::from(U128::MAX)), Some(U128::MAX));
        assert_eq!(narrow(U256::from(1) << 128), None);
    }

    /// A debit is no larger than an account write: every entry of the multi-version memory
    /// has the size of the largest write.
    #[test]
    fn a_debit_write_is_no_larger_than_an_account_write() {
        assert!(std::mem::size_of::<Debit>() <= std::mem::size_of::<Option<AccountInfo>>());
        assert!(std::mem::align_of::<Debit>() <= 8);
    }
}
