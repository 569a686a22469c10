//! Multi-version memory: for every location, the value each transaction (incarnation) wrote,
//! or an ESTIMATE marker where an aborted transaction is expected to write again.
//!
//! Reads by transaction `j` see the highest writer below `j`. An account read resolves lazy
//! credits: it walks down through every credit to the last full write (or the pre-state) and
//! records all of them, so the reader depends on every earlier writer, exactly as sequential
//! execution would see the balance.

use super::changes::{AccountChange, FoldError, Pending};
use super::writes::{Location, TxWrites, WriteValue};
use super::BlockError;
use revm::database_interface::DatabaseRef;
use revm::primitives::{Address, HashMap, HashSet, B256, KECCAK_EMPTY, U256};
use revm::state::AccountInfo;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A transaction's position in the block.
pub(crate) type TxIdx = usize;
/// How many times a transaction was (re-)executed before this execution.
pub(crate) type Incarnation = usize;

/// One execution of one transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Version {
    pub(crate) tx: TxIdx,
    pub(crate) incarnation: Incarnation,
}

/// A read hit an ESTIMATE written by this transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Blocked(pub(crate) TxIdx);

#[derive(Clone, Debug)]
enum Entry {
    Data(Incarnation, WriteValue),
    Estimate,
}

/// Where the base of an account read came from.
#[derive(Clone, Debug)]
pub(crate) enum AccountBase {
    /// No full write below the reader: the pre-state.
    PreState,
    /// A full write.
    Written(Version, Option<AccountInfo>),
}

impl AccountBase {
    fn version(&self) -> Option<Version> {
        match self {
            AccountBase::PreState => None,
            AccountBase::Written(v, _) => Some(*v),
        }
    }
}

/// An account as seen by a reader: a base plus the credits above it, lowest first.
#[derive(Clone, Debug)]
pub(crate) struct AccountView {
    pub(crate) base: AccountBase,
    pub(crate) credits: Vec<(Version, U256)>,
}

/// A storage slot as seen by a reader.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StorageView {
    /// Highest write of the slot below the reader.
    pub(crate) written: Option<(Version, U256)>,
    /// Highest storage wipe of the account below the reader.
    pub(crate) reset: Option<Version>,
}

impl StorageView {
    /// The value, or `None` when it comes from the pre-state.
    pub(crate) fn value(&self) -> Option<U256> {
        match (self.written, self.reset) {
            (Some((w, v)), Some(r)) if w.tx >= r.tx => Some(v),
            (_, Some(_)) => Some(U256::ZERO),
            (Some((_, v)), None) => Some(v),
            (None, None) => None,
        }
    }
}

/// One read of a transaction's execution, with what it depended on.
#[derive(Clone, Debug)]
pub(crate) enum Read {
    /// An exact account read: its base and every credit applied over it.
    Account {
        address: Address,
        base: Option<Version>,
        credits: Vec<Version>,
    },
    /// A lazy recipient read: only the code hash mattered.
    AccountCode { address: Address, code_hash: B256 },
    /// A storage read.
    Storage {
        address: Address,
        slot: U256,
        written: Option<Version>,
        reset: Option<Version>,
    },
}

#[derive(Default)]
struct TxRecord {
    reads: Arc<Vec<Read>>,
    locations: Arc<Vec<Location>>,
}

/// The entries of one location, sorted by transaction, with the transactions whose entry is
/// not a credit (full writes and ESTIMATEs) indexed separately: a lazy read or an exact read
/// finds the last full write below it without walking every credit (a popular recipient or the
/// beneficiary collects one credit per transaction).
///
/// Sorted vectors rather than trees: most locations have one writer, and transactions are
/// recorded in roughly ascending order, so inserts append.
#[derive(Default)]
struct Versions {
    entries: Vec<(TxIdx, Entry)>,
    full: Vec<TxIdx>,
}

fn is_full(entry: &Entry) -> bool {
    !matches!(entry, Entry::Data(_, WriteValue::Credit(_)))
}

impl Versions {
    fn insert(&mut self, tx: TxIdx, entry: Entry) {
        let full = is_full(&entry);
        match self.entries.binary_search_by_key(&tx, |(t, _)| *t) {
            Ok(i) => {
                let was_full = is_full(&self.entries[i].1);
                self.entries[i].1 = entry;
                if was_full != full {
                    self.set_full(tx, full);
                }
            }
            Err(i) => {
                self.entries.insert(i, (tx, entry));
                if full {
                    self.set_full(tx, true);
                }
            }
        }
    }

    fn remove(&mut self, tx: TxIdx) {
        if let Ok(i) = self.entries.binary_search_by_key(&tx, |(t, _)| *t) {
            self.entries.remove(i);
            self.set_full(tx, false);
        }
    }

    fn set_full(&mut self, tx: TxIdx, full: bool) {
        match (self.full.binary_search(&tx), full) {
            (Err(i), true) => self.full.insert(i, tx),
            (Ok(i), false) => {
                self.full.remove(i);
            }
            _ => {}
        }
    }

    fn get(&self, tx: TxIdx) -> Option<&Entry> {
        self.entries
            .binary_search_by_key(&tx, |(t, _)| *t)
            .ok()
            .map(|i| &self.entries[i].1)
    }

    /// The entries below `tx`, lowest first.
    fn below(&self, tx: TxIdx) -> &[(TxIdx, Entry)] {
        &self.entries[..self.entries.partition_point(|(t, _)| *t < tx)]
    }

    /// The highest entry below `tx`.
    fn last_below(&self, tx: TxIdx) -> Option<&(TxIdx, Entry)> {
        self.below(tx).last()
    }

    /// The highest full write or ESTIMATE below `tx`.
    fn last_full_below(&self, tx: TxIdx) -> Option<(TxIdx, &Entry)> {
        let i = self.full.partition_point(|t| *t < tx);
        let t = *self.full[..i].last()?;
        self.get(t).map(|e| (t, e))
    }
}

type Shard = HashMap<Location, Versions>;

/// The multi-version memory of one block.
pub(crate) struct MvMemory {
    shards: Box<[Mutex<Shard>]>,
    records: Box<[Mutex<TxRecord>]>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another worker panicked; the data is still consistent for
    // reading, and the panic is propagated by the thread scope.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The locations of `a` that `b` lacks, lazily (a caller that only asks whether there is one
/// stops at the first). Linear for the usual handful of locations, one hash set of `b` beyond.
fn missing_from<'a>(
    a: &'a [Location],
    b: &'a [Location],
) -> impl Iterator<Item = &'a Location> + 'a {
    let set: Option<HashSet<&Location>> = (a.len() * b.len() > 256).then(|| b.iter().collect());
    a.iter().filter(move |l| match &set {
        Some(set) => !set.contains(l),
        None => !b.contains(l),
    })
}

impl MvMemory {
    pub(crate) fn new(block_size: usize, shards: usize) -> Self {
        Self {
            shards: (0..shards.max(1)).map(|_| Mutex::default()).collect(),
            records: (0..block_size).map(|_| Mutex::default()).collect(),
        }
    }

    fn shard_index(&self, address: &Address) -> usize {
        let b = address.0 .0;
        let mut h = 0xcbf2_9ce4_8422_2325_u64;
        for byte in b {
            h = (h ^ byte as u64).wrapping_mul(0x0100_0000_01b3);
        }
        (h % self.shards.len() as u64) as usize
    }

    fn shard(&self, address: &Address) -> MutexGuard<'_, Shard> {
        lock(&self.shards[self.shard_index(address)])
    }

    /// Marks `location` as ESTIMATE for `tx` before it first runs: a transaction known to write
    /// there (its sender's account) makes later readers wait for it instead of reading a stale
    /// value and failing validation. The marker is a write of the transaction, so its first
    /// recorded execution replaces or removes it.
    pub(crate) fn seed_estimate(&self, tx: TxIdx, location: Location) {
        self.shard(location.address())
            .entry(location)
            .or_default()
            .insert(tx, Entry::Estimate);
        let mut record = lock(&self.records[tx]);
        if !record.locations.contains(&location) {
            let mut locations = record.locations.as_ref().clone();
            locations.push(location);
            record.locations = Arc::new(locations);
        }
    }

    /// Records an execution's reads and writes; returns whether it wrote a location the previous
    /// incarnation did not.
    pub(crate) fn record(&self, version: Version, reads: Vec<Read>, writes: TxWrites) -> bool {
        let tx = version.tx;
        let previous = Arc::clone(&lock(&self.records[tx]).locations);
        let locations: Vec<Location> = writes.entries.iter().map(|(l, _)| *l).collect();
        for (location, value) in writes.entries {
            self.shard(location.address())
                .entry(location)
                .or_default()
                .insert(tx, Entry::Data(version.incarnation, value));
        }
        let wrote_new = if previous.is_empty() {
            !locations.is_empty()
        } else {
            for stale in missing_from(&previous, &locations) {
                if let Some(versions) = self.shard(stale.address()).get_mut(stale) {
                    versions.remove(tx);
                }
            }
            missing_from(&locations, &previous).next().is_some()
        };
        *lock(&self.records[tx]) = TxRecord {
            reads: Arc::new(reads),
            locations: Arc::new(locations),
        };
        wrote_new
    }

    /// Marks every location the transaction's last execution wrote as ESTIMATE.
    pub(crate) fn convert_writes_to_estimates(&self, tx: TxIdx) {
        let locations = Arc::clone(&lock(&self.records[tx]).locations);
        for location in locations.iter() {
            if let Some(versions) = self.shard(location.address()).get_mut(location) {
                versions.insert(tx, Entry::Estimate);
            }
        }
    }

    /// An account as transaction `tx` sees it: exact, with every credit below it.
    pub(crate) fn read_account(
        &self,
        address: &Address,
        tx: TxIdx,
    ) -> Result<AccountView, Blocked> {
        let shard = self.shard(address);
        let mut credits = Vec::new();
        let mut base = AccountBase::PreState;
        if let Some(versions) = shard.get(&Location::Account(*address)) {
            let floor = match versions.last_full_below(tx) {
                None => 0,
                Some((idx, Entry::Estimate)) => return Err(Blocked(idx)),
                Some((idx, Entry::Data(inc, WriteValue::Account(info, _)))) => {
                    base = AccountBase::Written(version(idx, *inc), info.clone());
                    idx + 1
                }
                // Only account writes and credits are recorded at account locations.
                Some((idx, Entry::Data(..))) => idx + 1,
            };
            for (idx, entry) in versions.below(tx) {
                if *idx < floor {
                    continue;
                }
                if let Entry::Data(inc, WriteValue::Credit(amount)) = entry {
                    credits.push((version(*idx, *inc), *amount));
                }
            }
        }
        Ok(AccountView { base, credits })
    }

    /// The last full write of an account below `tx`, skipping credits (a lazy read).
    pub(crate) fn read_account_base(
        &self,
        address: &Address,
        tx: TxIdx,
    ) -> Result<AccountBase, Blocked> {
        let shard = self.shard(address);
        let Some(versions) = shard.get(&Location::Account(*address)) else {
            return Ok(AccountBase::PreState);
        };
        match versions.last_full_below(tx) {
            None => Ok(AccountBase::PreState),
            Some((idx, Entry::Estimate)) => Err(Blocked(idx)),
            Some((idx, Entry::Data(inc, WriteValue::Account(info, _)))) => {
                Ok(AccountBase::Written(version(idx, *inc), info.clone()))
            }
            Some((_, Entry::Data(..))) => Ok(AccountBase::PreState),
        }
    }

    /// A storage slot as transaction `tx` sees it.
    pub(crate) fn read_storage(
        &self,
        address: &Address,
        slot: U256,
        tx: TxIdx,
    ) -> Result<StorageView, Blocked> {
        let shard = self.shard(address);
        let latest = |location: Location| -> Result<Option<(Version, Option<U256>)>, Blocked> {
            let Some((idx, entry)) = shard.get(&location).and_then(|m| m.last_below(tx)) else {
                return Ok(None);
            };
            match entry {
                Entry::Estimate => Err(Blocked(*idx)),
                Entry::Data(inc, WriteValue::Storage(v)) => {
                    Ok(Some((version(*idx, *inc), Some(*v))))
                }
                Entry::Data(inc, _) => Ok(Some((version(*idx, *inc), None))),
            }
        };
        let written = latest(Location::Storage(*address, slot))?
            .map(|(v, value)| (v, value.unwrap_or_default()));
        let reset = latest(Location::StorageReset(*address))?.map(|(v, _)| v);
        Ok(StorageView { written, reset })
    }

    /// Whether every read of the transaction's last execution would read the same now.
    /// `pre_code_hash` gives an account's code hash in the pre-state (`None` on a database
    /// error, which fails the validation).
    pub(crate) fn validate(
        &self,
        tx: TxIdx,
        pre_code_hash: impl Fn(&Address) -> Option<B256>,
    ) -> bool {
        let reads = Arc::clone(&lock(&self.records[tx]).reads);
        reads.iter().all(|read| match read {
            Read::Account {
                address,
                base,
                credits,
            } => match self.read_account(address, tx) {
                Ok(view) => {
                    view.base.version() == *base
                        && view.credits.len() == credits.len()
                        && view.credits.iter().zip(credits).all(|((v, _), c)| v == c)
                }
                Err(Blocked(_)) => false,
            },
            Read::AccountCode { address, code_hash } => {
                let now = match self.read_account_base(address, tx) {
                    Ok(AccountBase::Written(_, info)) => {
                        Some(info.map_or(KECCAK_EMPTY, |i| i.code_hash))
                    }
                    Ok(AccountBase::PreState) => pre_code_hash(address),
                    Err(Blocked(_)) => None,
                };
                now == Some(*code_hash)
            }
            Read::Storage {
                address,
                slot,
                written,
                reset,
            } => match self.read_storage(address, *slot, tx) {
                Ok(view) => view.written.map(|(v, _)| v) == *written && view.reset == *reset,
                Err(Blocked(_)) => false,
            },
        })
    }
}

/// Why a shard could not be folded into account changes.
#[derive(Debug)]
pub(crate) enum FoldFailure {
    /// Lazy credits overflowed a balance.
    Overflow(Address),
    /// The pre-state failed, or the memory was not final.
    Error(BlockError),
}

impl From<FoldError> for FoldFailure {
    fn from(e: FoldError) -> Self {
        match e {
            FoldError::Overflow(a) => FoldFailure::Overflow(a),
            FoldError::Db(message) => FoldFailure::Error(BlockError::State { message }),
        }
    }
}

impl MvMemory {
    /// Folds shard `k`'s final writes over the pre-state into the account changes of its
    /// addresses (sorted), exactly as folding every transaction's writes in block order would,
    /// and empties the shard (so it is freed by the worker that folds it).
    ///
    /// Only valid once the block is done: every location then holds the writes of each
    /// transaction's last incarnation and no ESTIMATE.
    pub(crate) fn fold_shard<DB: DatabaseRef>(
        &self,
        k: usize,
        db: &DB,
    ) -> Result<Vec<AccountChange>, FoldFailure> {
        let shard = std::mem::take(&mut *lock(&self.shards[k]));
        let not_final = |location: &Location, tx: TxIdx| {
            FoldFailure::Error(BlockError::Custom {
                index: tx,
                message: format!("internal: ESTIMATE left at {location:?} after the block"),
            })
        };
        let mut accounts: BTreeMap<Address, Pending> = BTreeMap::new();
        let mut last_reset: HashMap<Address, TxIdx> = HashMap::default();
        for (location, versions) in &shard {
            if let Location::StorageReset(address) = location {
                if let Some((tx, entry)) = versions.entries.last() {
                    if matches!(entry, Entry::Estimate) {
                        return Err(not_final(location, *tx));
                    }
                    last_reset.insert(*address, *tx);
                    accounts.entry(*address).or_default().storage_reset = true;
                }
            }
        }
        for (location, versions) in &shard {
            match location {
                Location::Account(address) => {
                    let pending = accounts.entry(*address).or_default();
                    for (tx, entry) in &versions.entries {
                        match entry {
                            Entry::Estimate => return Err(not_final(location, *tx)),
                            Entry::Data(_, WriteValue::Account(info, kind)) => {
                                pending.info = Some(info.clone());
                                pending.mark(*kind);
                            }
                            Entry::Data(_, WriteValue::Credit(amount)) => {
                                pending.credit(db, *address, *amount)?;
                            }
                            Entry::Data(..) => {}
                        }
                    }
                }
                Location::Storage(address, slot) => match versions.entries.last() {
                    Some((tx, Entry::Estimate)) => return Err(not_final(location, *tx)),
                    // A wipe by a later transaction drops the write; one by the same
                    // transaction came before its slot writes.
                    Some((tx, Entry::Data(_, WriteValue::Storage(value))))
                        if last_reset.get(address).is_none_or(|reset| tx >= reset) =>
                    {
                        accounts
                            .entry(*address)
                            .or_default()
                            .slots
                            .insert(*slot, *value);
                    }
                    _ => {}
                },
                Location::StorageReset(_) => {}
            }
        }
        let mut out = Vec::with_capacity(accounts.len());
        for (address, pending) in accounts {
            out.extend(pending.finish(db, address).map_err(FoldFailure::Error)?);
        }
        drop(shard);
        Ok(out)
    }

    /// Frees the records of transactions `range` (after the block).
    pub(crate) fn clear_records(&self, range: std::ops::Range<TxIdx>) {
        for record in &self.records[range] {
            drop(std::mem::take(&mut *lock(record)));
        }
    }

    /// Number of transactions.
    pub(crate) fn block_size(&self) -> usize {
        self.records.len()
    }
}

fn version(tx: TxIdx, incarnation: Incarnation) -> Version {
    Version { tx, incarnation }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::writes::AccountWriteKind;

    fn a(n: u8) -> Address {
        Address::with_last_byte(n)
    }

    fn v(tx: TxIdx, incarnation: Incarnation) -> Version {
        Version { tx, incarnation }
    }

    fn writes(entries: Vec<(Location, WriteValue)>) -> TxWrites {
        TxWrites { entries }
    }

    fn account(balance: u64) -> WriteValue {
        WriteValue::Account(
            Some(AccountInfo {
                balance: U256::from(balance),
                ..AccountInfo::default()
            }),
            AccountWriteKind::Changed,
        )
    }

    #[test]
    fn account_reads_walk_credits_down_to_the_last_full_write() {
        let mv = MvMemory::new(6, 4);
        let loc = Location::Account(a(1));
        mv.record(v(0, 0), vec![], writes(vec![(loc, account(100))]));
        mv.record(
            v(2, 0),
            vec![],
            writes(vec![(loc, WriteValue::Credit(U256::from(5)))]),
        );
        mv.record(
            v(3, 1),
            vec![],
            writes(vec![(loc, WriteValue::Credit(U256::from(7)))]),
        );
        let view = mv.read_account(&a(1), 5).expect("no estimate");
        assert!(matches!(view.base, AccountBase::Written(w, _) if w == v(0, 0)));
        assert_eq!(
            view.credits,
            vec![(v(2, 0), U256::from(5)), (v(3, 1), U256::from(7))]
        );
        // Transaction 0 sees the pre-state; a lazy read skips the credits.
        assert!(matches!(
            mv.read_account(&a(1), 0).expect("ok").base,
            AccountBase::PreState
        ));
        assert!(matches!(
            mv.read_account_base(&a(1), 5),
            Ok(AccountBase::Written(w, _)) if w == v(0, 0)
        ));
        // An aborted credit blocks exact and lazy readers alike.
        mv.convert_writes_to_estimates(3);
        assert_eq!(mv.read_account(&a(1), 5).err(), Some(Blocked(3)));
        assert_eq!(mv.read_account_base(&a(1), 5).err(), Some(Blocked(3)));
        assert!(mv.read_account(&a(1), 3).is_ok());
    }

    #[test]
    fn storage_reads_respect_wipes() {
        let mv = MvMemory::new(5, 4);
        let (slot, reset) = (
            Location::Storage(a(1), U256::from(9)),
            Location::StorageReset(a(1)),
        );
        mv.record(
            v(0, 0),
            vec![],
            writes(vec![(slot, WriteValue::Storage(U256::from(3)))]),
        );
        mv.record(
            v(2, 0),
            vec![],
            writes(vec![(reset, WriteValue::StorageReset)]),
        );
        mv.record(
            v(3, 0),
            vec![],
            writes(vec![
                (reset, WriteValue::StorageReset),
                (slot, WriteValue::Storage(U256::from(8))),
            ]),
        );
        let value = |tx| {
            mv.read_storage(&a(1), U256::from(9), tx)
                .expect("ok")
                .value()
        };
        assert_eq!(value(0), None); // pre-state
        assert_eq!(value(1), Some(U256::from(3)));
        assert_eq!(value(2), Some(U256::from(3)));
        assert_eq!(value(3), Some(U256::ZERO)); // wiped by tx 2
        assert_eq!(value(4), Some(U256::from(8))); // written after tx 3's own wipe
    }

    #[test]
    fn validation_sees_new_versions_and_removed_writes() {
        let mv = MvMemory::new(3, 4);
        let loc = Location::Account(a(1));
        mv.record(v(0, 0), vec![], writes(vec![(loc, account(1))]));
        let read = Read::Account {
            address: a(1),
            base: Some(v(0, 0)),
            credits: vec![],
        };
        assert!(!mv.record(v(1, 0), vec![read], TxWrites::default()));
        assert!(mv.validate(1, |_| None));
        // Transaction 0 runs again: a new incarnation invalidates the read.
        assert!(!mv.record(v(0, 1), vec![], writes(vec![(loc, account(1))])));
        assert!(!mv.validate(1, |_| None));
        // Transaction 0's third run writes nothing: the read now comes from the pre-state.
        mv.record(v(0, 2), vec![], TxWrites::default());
        assert!(matches!(
            mv.read_account(&a(1), 1).expect("ok").base,
            AccountBase::PreState
        ));
    }

    #[test]
    fn seeded_estimates_block_until_the_first_execution() {
        let mv = MvMemory::new(3, 4);
        mv.seed_estimate(0, Location::Account(a(1)));
        assert_eq!(mv.read_account(&a(1), 2).err(), Some(Blocked(0)));
        // An invalid transaction writes nothing: the seeded marker goes away.
        mv.record(v(0, 0), vec![], TxWrites::default());
        assert!(mv.read_account(&a(1), 2).is_ok());
    }

    #[test]
    fn lazy_code_reads_are_validated_by_value() {
        let mv = MvMemory::new(3, 4);
        let read = Read::AccountCode {
            address: a(1),
            code_hash: KECCAK_EMPTY,
        };
        mv.record(v(2, 0), vec![read], TxWrites::default());
        assert!(mv.validate(2, |_| Some(KECCAK_EMPTY)));
        // A balance change below does not matter; code appearing does.
        mv.record(
            v(0, 0),
            vec![],
            writes(vec![(Location::Account(a(1)), account(5))]),
        );
        assert!(mv.validate(2, |_| Some(B256::ZERO)));
        let code = WriteValue::Account(
            Some(AccountInfo {
                code_hash: B256::repeat_byte(1),
                ..AccountInfo::default()
            }),
            AccountWriteKind::Created,
        );
        mv.record(
            v(1, 0),
            vec![],
            writes(vec![(Location::Account(a(1)), code)]),
        );
        assert!(!mv.validate(2, |_| Some(KECCAK_EMPTY)));
    }
}
