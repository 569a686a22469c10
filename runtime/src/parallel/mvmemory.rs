//! Multi-version memory: for every location, the value each transaction (incarnation) wrote,
//! or an ESTIMATE marker where an aborted transaction is expected to write again.
//!
//! Reads by transaction `j` see the highest writer below `j`. An account read resolves lazy
//! credits: it walks down through every credit to the last full write (or the pre-state) and
//! records all of them, so the reader depends on every earlier writer, exactly as sequential
//! execution would see the balance.

use super::changes::{AccountChange, FoldError, Pending};
use super::writes::{Delta, Location, TxWrites, WriteValue};
use super::BlockError;
use crossbeam_utils::CachePadded;
use revm::database_interface::DatabaseRef;
use revm::primitives::{Address, HashMap, HashSet, B256, KECCAK_EMPTY, U256};
use revm::state::AccountInfo;
use smallvec::SmallVec;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

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
    /// No full write below the reader: the pre-state, not read yet in this block.
    PreState,
    /// No full write below the reader: the pre-state, as an earlier read cached it (without
    /// its code), so the reader does not look it up again.
    Cached(Option<AccountInfo>),
    /// A full write.
    Written(Version, Option<AccountInfo>),
}

impl AccountBase {
    fn version(&self) -> Option<Version> {
        match self {
            AccountBase::PreState | AccountBase::Cached(_) => None,
            AccountBase::Written(v, _) => Some(*v),
        }
    }
}

/// An account as seen by a reader: a base plus the deltas (credits, debits) above it, lowest
/// first.
#[derive(Clone, Debug)]
pub(crate) struct AccountView {
    pub(crate) base: AccountBase,
    pub(crate) credits: Vec<(Version, Delta)>,
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
    /// An exact account read: its base and every delta (credit, debit) applied over it.
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

/// What a transaction's last recorded execution read and wrote. The vectors are recycled: a
/// worker's buffers are swapped in when it records an execution, and the old contents (cleared)
/// go back to the worker for its next one.
#[derive(Default)]
struct TxRecord {
    reads: Vec<Read>,
    locations: Vec<Location>,
}

/// A transaction's lazy fee credit to the block's beneficiary, kept per transaction rather than
/// in the beneficiary's shard: every transaction writes one, and a shared vector behind one
/// lock made the two workers take turns on every recording (profile of a parallel block of
/// plain transfers: inserting into versions, mostly that vector's, was half of the recording
/// time).
#[derive(Clone, Copy, Debug, Default)]
enum Fee {
    #[default]
    None,
    /// The transaction was aborted after crediting a fee: it is expected to write again.
    Estimate,
    Credit(Incarnation, U256),
}

/// One location's entries, sorted by transaction: vectors rather than trees, because most
/// locations have one writer and transactions are recorded in roughly ascending order, so
/// inserts append. The first entry is stored inline: a location with one writer costs no
/// allocation.
struct ByTx<E> {
    entries: SmallVec<[(TxIdx, E); 1]>,
}

impl<E> Default for ByTx<E> {
    fn default() -> Self {
        Self {
            entries: SmallVec::new(),
        }
    }
}

impl<E> std::ops::Deref for ByTx<E> {
    type Target = [(TxIdx, E)];

    fn deref(&self) -> &Self::Target {
        &self.entries
    }
}

impl<E> ByTx<E> {
    /// Inserts `tx`'s entry, or replaces it and returns the old one.
    fn insert(&mut self, tx: TxIdx, entry: E) -> Option<E> {
        match self.entries.binary_search_by_key(&tx, |(t, _)| *t) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, entry)),
            Err(i) => {
                self.entries.insert(i, (tx, entry));
                None
            }
        }
    }

    /// Removes `tx`'s entry; whether there was one.
    fn remove(&mut self, tx: TxIdx) -> bool {
        match self.entries.binary_search_by_key(&tx, |(t, _)| *t) {
            Ok(i) => {
                self.entries.remove(i);
                true
            }
            Err(_) => false,
        }
    }

    fn get(&self, tx: TxIdx) -> Option<&E> {
        self.entries
            .binary_search_by_key(&tx, |(t, _)| *t)
            .ok()
            .map(|i| &self.entries[i].1)
    }

    /// The entries below `tx`, lowest first.
    fn below(&self, tx: TxIdx) -> &[(TxIdx, E)] {
        &self.entries[..self.entries.partition_point(|(t, _)| *t < tx)]
    }

    /// The highest entry below `tx`.
    fn last_below(&self, tx: TxIdx) -> Option<&(TxIdx, E)> {
        self.below(tx).last()
    }
}

/// An account location's entries, with the transactions whose entry is not a credit (full
/// writes and ESTIMATEs) indexed separately: a lazy read or an exact read finds the last full
/// write below it without walking every credit (a popular recipient or the beneficiary
/// collects one credit per transaction). The first two full writers are stored inline.
#[derive(Default)]
struct Versions {
    entries: ByTx<Entry>,
    full: SmallVec<[TxIdx; 2]>,
}

fn is_full(entry: &Entry) -> bool {
    !matches!(
        entry,
        Entry::Data(_, WriteValue::Credit(_) | WriteValue::Debit(_))
    )
}

impl Versions {
    fn insert(&mut self, tx: TxIdx, entry: Entry) {
        let full = is_full(&entry);
        let was_full = self.entries.insert(tx, entry).map(|old| is_full(&old));
        if was_full != Some(full) {
            self.set_full(tx, full);
        }
    }

    fn remove(&mut self, tx: TxIdx) {
        if self.entries.remove(tx) {
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

    /// The entries below `tx`, lowest first.
    fn below(&self, tx: TxIdx) -> &[(TxIdx, Entry)] {
        self.entries.below(tx)
    }

    /// The highest entry below `tx`.
    fn last_below(&self, tx: TxIdx) -> Option<&(TxIdx, Entry)> {
        self.entries.last_below(tx)
    }

    /// The highest full write or ESTIMATE below `tx`.
    fn last_full_below(&self, tx: TxIdx) -> Option<(TxIdx, &Entry)> {
        let i = self.full.partition_point(|t| *t < tx);
        let t = *self.full[..i].last()?;
        self.entries.get(t).map(|e| (t, e))
    }
}

/// Everything the memory holds about one account: the versions of the account and of its
/// storage wipes, and its pre-state once read. Its storage slots live apart, in the shards of
/// their (address, slot) pairs.
#[derive(Default)]
struct AccountEntry {
    account: Versions,
    reset: Versions,
    /// The pre-state account (without its code: readers attach their own copy), cached on
    /// first read: every execution, validation and the fold would otherwise ask the database
    /// again.
    pre: Option<Option<AccountInfo>>,
}

impl AccountEntry {
    /// The base of a read that finds no full write below it.
    fn pre_base(&self) -> AccountBase {
        match &self.pre {
            Some(pre) => AccountBase::Cached(pre.clone()),
            None => AccountBase::PreState,
        }
    }
}

/// One shard: the accounts whose address hashes to it and the storage slots whose (address,
/// slot) pair does.
///
/// Slots are sharded apart from their account so that the slots of one contract spread over
/// every shard: in a block where every transaction calls the same token, keying slots by
/// address put all of them behind one lock, and the two workers spent ~7% of their time
/// spinning on it (profile of a parallel ERC-20 block).
#[derive(Default)]
struct Shard {
    accounts: HashMap<Address, AccountEntry>,
    slots: HashMap<(Address, U256), SlotVersions>,
}

impl Shard {
    fn account_versions_mut(&mut self, location: &Location) -> Option<&mut Versions> {
        match location {
            Location::Account(a) => self.accounts.get_mut(a).map(|e| &mut e.account),
            Location::StorageReset(a) => self.accounts.get_mut(a).map(|e| &mut e.reset),
            Location::Storage(..) => None,
        }
    }

    /// Inserts (or replaces) `tx`'s entry at `location`.
    fn insert(&mut self, location: &Location, tx: TxIdx, entry: Entry) {
        match location {
            Location::Account(a) => self
                .accounts
                .entry(*a)
                .or_default()
                .account
                .insert(tx, entry),
            Location::StorageReset(a) => {
                self.accounts.entry(*a).or_default().reset.insert(tx, entry)
            }
            Location::Storage(a, slot) => {
                self.slots
                    .entry((*a, *slot))
                    .or_default()
                    .insert(tx, SlotEntry::from(entry));
            }
        }
    }

    /// Removes `tx`'s entry at `location`, if any.
    fn remove(&mut self, location: &Location, tx: TxIdx) {
        match location {
            Location::Storage(a, slot) => {
                if let Some(versions) = self.slots.get_mut(&(*a, *slot)) {
                    versions.remove(tx);
                }
            }
            _ => {
                if let Some(versions) = self.account_versions_mut(location) {
                    versions.remove(tx);
                }
            }
        }
    }

    /// Turns `tx`'s entry at `location` into an ESTIMATE (where the location has entries).
    fn mark_estimate(&mut self, location: &Location, tx: TxIdx) {
        match location {
            Location::Storage(a, slot) => {
                if let Some(versions) = self.slots.get_mut(&(*a, *slot)) {
                    versions.insert(tx, SlotEntry::Estimate);
                }
            }
            _ => {
                if let Some(versions) = self.account_versions_mut(location) {
                    versions.insert(tx, Entry::Estimate);
                }
            }
        }
    }
}

/// A storage slot's entry: the value written, or an ESTIMATE.
#[derive(Clone, Copy, Debug)]
enum SlotEntry {
    Data(Incarnation, U256),
    Estimate,
}

impl From<Entry> for SlotEntry {
    fn from(entry: Entry) -> Self {
        match entry {
            Entry::Estimate => SlotEntry::Estimate,
            Entry::Data(inc, WriteValue::Storage(value)) => SlotEntry::Data(inc, value),
            // The write extraction pairs slots with storage values only.
            Entry::Data(inc, other) => {
                debug_assert!(false, "a slot written with {other:?}");
                SlotEntry::Data(inc, U256::ZERO)
            }
        }
    }
}

/// A storage slot's entries. Apart from [`Versions`]: a slot takes no credits and its value
/// is one word, so an entry is 48 bytes instead of 112. A busy contract has thousands of
/// written slots, and recording, reads and the fold all walk them.
type SlotVersions = ByTx<SlotEntry>;

/// A slot's final write in the block, from the first phase of the fold (the slot's shard) for
/// the second (its account's shard).
pub(crate) struct SlotWrite {
    /// The shard of the account.
    shard: u32,
    address: Address,
    slot: U256,
    /// The writing transaction (a storage wipe by a later one drops the write).
    tx: TxIdx,
    value: U256,
    /// Whether `value` equals the pre-state's; `None` when not looked up because the account's
    /// storage was wiped in the block (then only zero counts as unchanged).
    same_as_pre: Option<bool>,
}

/// One shard's slot writes from the first phase of the fold, sorted by (account shard,
/// address, slot), read in place by the second phase.
pub(crate) struct SlotFold {
    writes: Vec<SlotWrite>,
    /// `starts[k]..starts[k + 1]`: the writes of the addresses of account shard `k`.
    starts: Vec<u32>,
}

impl SlotFold {
    /// The writes of the addresses of account shard `k`, sorted by (address, slot).
    pub(crate) fn run(&self, k: usize) -> &[SlotWrite] {
        &self.writes[self.starts[k] as usize..self.starts[k + 1] as usize]
    }
}

/// The multi-version memory of one block.
///
/// Shards and per-transaction entries each sit on cache lines of their own: the workers run
/// neighbouring transactions at the same time, and entries sharing a line would bounce it
/// between cores at every lock.
pub(crate) struct MvMemory {
    shards: Box<[CachePadded<Mutex<Shard>>]>,
    records: Box<[CachePadded<Mutex<TxRecord>>]>,
    /// The account whose credits live in `fees` (the beneficiary, when its fee is lazy).
    fee_account: Option<Address>,
    /// Per transaction, its credit to `fee_account`.
    fees: Box<[CachePadded<Mutex<Fee>>]>,
    /// How many of `fees` are ESTIMATEs: a lazy read of the fee account (a plain transfer from
    /// the beneficiary: mining pools pay out from it) looks for one below it only if there is
    /// any, instead of locking every transaction's fee below it.
    fee_estimates: AtomicUsize,
    /// One bit (of 64, by address hash) per address whose storage wipe was ever recorded, set
    /// before the wipe is inserted. A storage read of an address whose bit is clear needs only
    /// the slot's shard, not also its account's: on mainnet most blocks create a contract
    /// somewhere, and one flag for the whole block made every storage read take two locks.
    reset_filter: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another worker panicked; the data is still consistent for
    // reading, and the panic is propagated by the thread scope.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Locks a shard, spinning longer than std's `Mutex` does before it sleeps.
///
/// Shard critical sections are a few hash lookups, but the two workers meet on the shard of
/// a contract every transaction calls (a token, WETH). std spins briefly and then sleeps in the
/// kernel, and a futex sleep and wake-up cost microseconds of both workers' time where the
/// holder releases the lock within a fraction of one (profile of a parallel ERC-20 block: the
/// sleeps and wake-ups were ~3% of the workers' time). This tries for ~10 µs (100 rounds of
/// `try_lock` and four pause instructions: 10 µs on this development machine's Zen 3 cores)
/// and then blocks as usual, so a descheduled holder costs a bounded spin.
fn spin_lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    const SPINS: usize = 100;
    for _ in 0..SPINS {
        match m.try_lock() {
            Ok(guard) => return guard,
            Err(std::sync::TryLockError::Poisoned(e)) => return e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                for _ in 0..4 {
                    std::hint::spin_loop();
                }
            }
        }
    }
    lock(m)
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
    /// The memory of a block of `block_size` transactions, sharded `shards` ways (accounts by
    /// address, storage slots by address and slot).
    /// Credits to `fee_account` (the beneficiary, when its fee is lazy) are kept per
    /// transaction instead of in its shard.
    pub(crate) fn new(block_size: usize, shards: usize, fee_account: Option<Address>) -> Self {
        let shards = shards.max(1);
        // Most transactions touch two or three addresses (sender, recipient, contract) and
        // a few slots.
        let per_shard = block_size * 3 / shards;
        Self {
            shards: (0..shards)
                .map(|_| {
                    CachePadded::new(Mutex::new(Shard {
                        accounts: HashMap::with_capacity_and_hasher(per_shard, Default::default()),
                        slots: HashMap::with_capacity_and_hasher(per_shard, Default::default()),
                    }))
                })
                .collect(),
            records: (0..block_size).map(|_| CachePadded::default()).collect(),
            fee_account,
            fees: (0..block_size).map(|_| CachePadded::default()).collect(),
            fee_estimates: AtomicUsize::new(0),
            reset_filter: AtomicU64::new(0),
        }
    }

    /// All 20 bytes of an address folded into a word (before mixing).
    fn address_word(address: &Address) -> u64 {
        let b = &address.0 .0;
        let word = |r: std::ops::Range<usize>| {
            let mut w = [0u8; 8];
            w[..r.len()].copy_from_slice(&b[r]);
            u64::from_le_bytes(w)
        };
        word(0..8) ^ word(8..16).rotate_left(21) ^ word(16..20).rotate_left(42)
    }

    /// splitmix64's finalizer.
    fn mix(mut h: u64) -> u64 {
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }

    /// A word mixed and reduced to a shard.
    fn mix_to_shard(&self, h: u64) -> usize {
        (Self::mix(h) % self.shards.len() as u64) as usize
    }

    /// The shard of an account. All 20 bytes through splitmix64's finalizer: addresses are
    /// hashes on mainnet but counters in one byte range in tests and synthetic blocks, and both
    /// must spread. A few multiplies instead of a byte-wise hash: this runs for every read,
    /// write and validation.
    fn shard_index(&self, address: &Address) -> usize {
        self.mix_to_shard(Self::address_word(address))
    }

    /// The shard of a storage slot: slots are small counters in simple contracts and hashes
    /// (mapping entries) in most, so all four limbs go into the mix as well.
    fn slot_index(&self, address: &Address, slot: &U256) -> usize {
        self.mix_to_shard(Self::slot_word(address, slot))
    }

    /// An (address, slot) pair folded into a word (before mixing).
    fn slot_word(address: &Address, slot: &U256) -> u64 {
        let [l0, l1, l2, l3] = *slot.as_limbs();
        Self::address_word(address).rotate_left(7)
            ^ l0
            ^ l1.rotate_left(17)
            ^ l2.rotate_left(33)
            ^ l3.rotate_left(49)
    }

    /// A location mixed into a word (the mark table of speculative chunks shards by it too).
    pub(crate) fn location_hash(location: &Location) -> u64 {
        Self::mix(match location {
            Location::Account(a) | Location::StorageReset(a) => Self::address_word(a),
            Location::Storage(a, slot) => Self::slot_word(a, slot),
        })
    }

    fn location_index(&self, location: &Location) -> usize {
        match location {
            Location::Account(a) | Location::StorageReset(a) => self.shard_index(a),
            Location::Storage(a, slot) => self.slot_index(a, slot),
        }
    }

    fn shard(&self, address: &Address) -> MutexGuard<'_, Shard> {
        spin_lock(&self.shards[self.shard_index(address)])
    }

    fn location_shard(&self, location: &Location) -> MutexGuard<'_, Shard> {
        spin_lock(&self.shards[self.location_index(location)])
    }

    fn reset_bit(address: &Address) -> u64 {
        1 << (Self::mix(Self::address_word(address)) & 63)
    }

    /// Notes a storage wipe of `address` (before it is inserted).
    fn note_reset(&self, address: &Address) {
        self.reset_filter
            .fetch_or(Self::reset_bit(address), Ordering::Release);
    }

    /// Whether a storage wipe of `address` may have been recorded (no false negatives).
    fn maybe_reset(&self, address: &Address) -> bool {
        self.reset_filter.load(Ordering::Acquire) & Self::reset_bit(address) != 0
    }

    fn fee_location(&self) -> Option<Location> {
        self.fee_account.map(Location::Account)
    }

    /// The pre-state account at `address`, from the cache or else from `load` (called without
    /// any lock held; the first value stored wins, and every load returns the same anyway).
    pub(crate) fn pre_account<E>(
        &self,
        address: &Address,
        load: impl FnOnce() -> Result<Option<AccountInfo>, E>,
    ) -> Result<Option<AccountInfo>, E> {
        if let Some(Some(pre)) = self.shard(address).accounts.get(address).map(|e| &e.pre) {
            return Ok(pre.clone());
        }
        let info = load()?;
        self.shard(address)
            .accounts
            .entry(*address)
            .or_default()
            .pre
            .get_or_insert_with(|| info.clone());
        Ok(info)
    }

    /// Marks `location` as ESTIMATE for `tx` before it first runs: a transaction known to write
    /// there (its sender's account) makes later readers wait for it instead of reading a stale
    /// value and failing validation. The marker is a write of the transaction, so its first
    /// recorded execution replaces or removes it.
    pub(crate) fn seed_estimate(&self, tx: TxIdx, location: Location) {
        if let Location::StorageReset(address) = location {
            self.note_reset(&address);
        }
        self.location_shard(&location)
            .insert(&location, tx, Entry::Estimate);
        let mut record = lock(&self.records[tx]);
        if !record.locations.contains(&location) {
            record.locations.push(location);
        }
    }

    /// Records an execution's reads and writes; returns whether it wrote a location the previous
    /// incarnation did not.
    ///
    /// `reads` and `writes` are consumed (left empty, with the capacity of the previous
    /// execution's buffers); `scratch` is a buffer for the location list.
    pub(crate) fn record(
        &self,
        version: Version,
        reads: &mut Vec<Read>,
        writes: &mut TxWrites,
        scratch: &mut Vec<Location>,
    ) -> bool {
        let tx = version.tx;
        let mut record = lock(&self.records[tx]);
        scratch.clear();
        scratch.extend(writes.entries.iter().map(|(l, _)| *l));
        // Consecutive entries in one shard (an account's, or slots that hash together) share
        // one lock.
        let mut entries = writes.entries.drain(..).peekable();
        let fee_location = self.fee_location();
        let is_fee_credit = |(l, v): &(Location, WriteValue)| {
            Some(*l) == fee_location && matches!(v, WriteValue::Credit(_))
        };
        while let Some((location, value)) = entries.next() {
            // The beneficiary's fee credit lives in `fees`: its shard is only locked if a
            // previous incarnation wrote the account there (every transaction pays a fee, and
            // locking that one shard at every recording made the two workers meet on it).
            if let (true, WriteValue::Credit(amount)) = (Some(location) == fee_location, &value) {
                self.set_fee(tx, Fee::Credit(version.incarnation, *amount));
                if record.locations.contains(&location) {
                    self.location_shard(&location).remove(&location, tx);
                }
                continue;
            }
            let k = self.location_index(&location);
            let mut shard = spin_lock(&self.shards[k]);
            let mut next = Some((location, value));
            while let Some((location, value)) = next.take() {
                if let Location::StorageReset(address) = &location {
                    self.note_reset(address);
                }
                if Some(location) == fee_location {
                    // A full write of the beneficiary: no fee credit this time.
                    self.set_fee(tx, Fee::None);
                }
                shard.insert(&location, tx, Entry::Data(version.incarnation, value));
                next = entries.next_if(|e| self.location_index(&e.0) == k && !is_fee_credit(e));
            }
        }
        drop(entries);
        let previous = &record.locations;
        let wrote_new = if previous.is_empty() {
            !scratch.is_empty()
        } else {
            for stale in missing_from(previous, scratch) {
                self.location_shard(stale).remove(stale, tx);
                if Some(*stale) == self.fee_location() {
                    self.set_fee(tx, Fee::None);
                }
            }
            missing_from(scratch, previous).next().is_some()
        };
        let (read_count, location_count) = (reads.len(), scratch.len());
        std::mem::swap(&mut record.locations, scratch);
        std::mem::swap(&mut record.reads, reads);
        reads.clear();
        // The buffers handed back are the previous incarnation's: empty, without capacity,
        // after a first execution. Size them like this execution's in one allocation instead
        // of growing them read by read in the next.
        reads.reserve(read_count);
        scratch.reserve(location_count);
        wrote_new
    }

    /// Sets `tx`'s fee credit, keeping the count of ESTIMATEs.
    fn set_fee(&self, tx: TxIdx, fee: Fee) {
        let mut slot = lock(&self.fees[tx]);
        let was = matches!(*slot, Fee::Estimate);
        let is = matches!(fee, Fee::Estimate);
        *slot = fee;
        if was && !is {
            self.fee_estimates.fetch_sub(1, Ordering::AcqRel);
        } else if is && !was {
            self.fee_estimates.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Marks every location the transaction's last execution wrote as ESTIMATE.
    pub(crate) fn convert_writes_to_estimates(&self, tx: TxIdx) {
        let record = lock(&self.records[tx]);
        for location in &record.locations {
            if Some(*location) == self.fee_location() {
                let mut fee = lock(&self.fees[tx]);
                if matches!(*fee, Fee::Credit(..)) {
                    *fee = Fee::Estimate;
                    self.fee_estimates.fetch_add(1, Ordering::AcqRel);
                    continue;
                }
            }
            self.location_shard(location).mark_estimate(location, tx);
        }
    }

    /// The fee credits of transactions `range`, lowest first; `Blocked` at an ESTIMATE.
    fn fee_credits(
        &self,
        range: std::ops::Range<TxIdx>,
        credits: &mut Vec<(Version, Delta)>,
    ) -> Result<(), Blocked> {
        for idx in range {
            match *lock(&self.fees[idx]) {
                Fee::None => {}
                Fee::Estimate => return Err(Blocked(idx)),
                Fee::Credit(inc, amount) => {
                    credits.push((version(idx, inc), Delta::Credit(amount)))
                }
            }
        }
        Ok(())
    }

    /// An account as transaction `tx` sees it: exact, with every credit below it.
    pub(crate) fn read_account(
        &self,
        address: &Address,
        tx: TxIdx,
    ) -> Result<AccountView, Blocked> {
        Ok(match self.read_account_within(address, tx, usize::MAX)? {
            Ok(view) => view,
            Err(base) => AccountView {
                base,
                credits: Vec::new(),
            },
        })
    }

    /// As [`MvMemory::read_account`] if at most `max_deltas` deltas (credits) lie between the
    /// account's last full write and `tx`; otherwise (`Err`) only that write, as
    /// [`MvMemory::read_account_base`] finds it, without walking the deltas. Not for the
    /// beneficiary, whose fee credits are not counted.
    pub(crate) fn read_account_within(
        &self,
        address: &Address,
        tx: TxIdx,
        max_deltas: usize,
    ) -> Result<Result<AccountView, AccountBase>, Blocked> {
        let shard = self.shard(address);
        let mut credits = Vec::new();
        let mut base = AccountBase::PreState;
        let mut floor = 0;
        if let Some(entry) = shard.accounts.get(address) {
            let versions = &entry.account;
            floor = match versions.last_full_below(tx) {
                None => {
                    base = entry.pre_base();
                    0
                }
                Some((idx, Entry::Estimate)) => return Err(Blocked(idx)),
                Some((idx, Entry::Data(inc, WriteValue::Account(info, _)))) => {
                    base = AccountBase::Written(version(idx, *inc), info.clone());
                    idx + 1
                }
                // Only account writes and credits are recorded at account locations.
                Some((idx, Entry::Data(..))) => idx + 1,
            };
            let below = versions.below(tx);
            let above_floor = &below[below.partition_point(|(t, _)| *t < floor)..];
            if above_floor.len() > max_deltas {
                return Ok(Err(base));
            }
            for (idx, entry) in above_floor {
                match entry {
                    Entry::Data(inc, WriteValue::Credit(amount)) => {
                        credits.push((version(*idx, *inc), Delta::Credit(*amount)));
                    }
                    Entry::Data(inc, WriteValue::Debit(debit)) => {
                        credits.push((version(*idx, *inc), Delta::Debit(*debit)));
                    }
                    _ => {}
                }
            }
        }
        if Some(*address) == self.fee_account {
            let shard_credits = credits.len();
            self.fee_credits(floor..tx, &mut credits)?;
            if shard_credits > 0 {
                credits.sort_unstable_by_key(|(v, _)| v.tx);
            }
        }
        Ok(Ok(AccountView { base, credits }))
    }

    /// The last full write of an account below `tx`, skipping credits (a lazy read).
    pub(crate) fn read_account_base(
        &self,
        address: &Address,
        tx: TxIdx,
    ) -> Result<AccountBase, Blocked> {
        let shard = self.shard(address);
        let entry = shard.accounts.get(address);
        let (floor, base) = match entry.and_then(|entry| entry.account.last_full_below(tx)) {
            None => (
                0,
                entry.map_or(AccountBase::PreState, AccountEntry::pre_base),
            ),
            Some((idx, Entry::Estimate)) => return Err(Blocked(idx)),
            Some((idx, Entry::Data(inc, WriteValue::Account(info, _)))) => (
                idx + 1,
                AccountBase::Written(version(idx, *inc), info.clone()),
            ),
            Some((idx, Entry::Data(..))) => (idx + 1, AccountBase::PreState),
        };
        // An aborted credit may turn into a full write: it blocks lazy readers too.
        if Some(*address) == self.fee_account {
            let any = self.fee_estimates.load(Ordering::Acquire) > 0;
            if let Some(idx) = (floor..tx)
                .take_while(|_| any)
                .find(|i| matches!(*lock(&self.fees[*i]), Fee::Estimate))
            {
                return Err(Blocked(idx));
            }
        }
        Ok(base)
    }

    /// A storage slot as transaction `tx` sees it.
    pub(crate) fn read_storage(
        &self,
        address: &Address,
        slot: U256,
        tx: TxIdx,
    ) -> Result<StorageView, Blocked> {
        let written = {
            let shard = spin_lock(&self.shards[self.slot_index(address, &slot)]);
            match shard
                .slots
                .get(&(*address, slot))
                .and_then(|m| m.last_below(tx))
            {
                None => None,
                Some((idx, SlotEntry::Estimate)) => return Err(Blocked(*idx)),
                Some((idx, SlotEntry::Data(inc, value))) => Some((version(*idx, *inc), *value)),
            }
        };
        // A wipe recorded after the filter was read is one this read could also have missed by
        // coming first: validation, which runs after that recording, sees the bit and the wipe.
        let reset = if self.maybe_reset(address) {
            let shard = self.shard(address);
            match shard
                .accounts
                .get(address)
                .and_then(|e| e.reset.last_below(tx))
            {
                None => None,
                Some((idx, Entry::Estimate)) => return Err(Blocked(*idx)),
                Some((idx, Entry::Data(inc, _))) => Some(version(*idx, *inc)),
            }
        } else {
            None
        };
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
        let record = lock(&self.records[tx]);
        record.reads.iter().all(|read| match read {
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
                    Ok(AccountBase::Cached(info)) => {
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
    /// A lazy sender's nonce or balance did not allow its transaction.
    Unmet(Address),
    /// The pre-state failed, or the memory was not final.
    Error(BlockError),
}

impl From<FoldError> for FoldFailure {
    fn from(e: FoldError) -> Self {
        match e {
            FoldError::Overflow(a) => FoldFailure::Overflow(a),
            FoldError::Unmet(a) => FoldFailure::Unmet(a),
            FoldError::Db(message) => FoldFailure::Error(BlockError::State { message }),
        }
    }
}

fn not_final(location: Location, tx: TxIdx) -> FoldFailure {
    FoldFailure::Error(BlockError::Custom {
        index: tx,
        message: format!("internal: ESTIMATE left at {location:?} after the block"),
    })
}

impl MvMemory {
    /// First phase of the fold: takes shard `k`'s storage slots and returns their final writes,
    /// sorted by the shard of their account, address and slot, for
    /// [`MvMemory::fold_accounts`]. The sort runs here, on the worker that just produced the
    /// writes (in its cache); the second phase reads the runs in place. Each write is
    /// already compared with the pre-state, unless its account's storage was wiped in the
    /// block: these lookups are most of a busy contract's fold, and here they are spread over
    /// every shard.
    ///
    /// Only valid once the block is done: every location then holds the writes of each
    /// transaction's last incarnation and no ESTIMATE. Account entries must still be in place
    /// (the second phase starts when every shard's first phase has ended).
    pub(crate) fn fold_slots<DB: DatabaseRef>(
        &self,
        k: usize,
        db: &DB,
    ) -> Result<SlotFold, FoldFailure> {
        let slots = std::mem::take(&mut lock(&self.shards[k]).slots);
        let mut writes = Vec::with_capacity(slots.len());
        for ((address, slot), versions) in slots {
            let (tx, value) = match versions.last() {
                None => continue,
                Some((tx, SlotEntry::Estimate)) => {
                    return Err(not_final(Location::Storage(address, slot), *tx))
                }
                Some((tx, SlotEntry::Data(_, value))) => (*tx, *value),
            };
            let wiped = self.maybe_reset(&address)
                && self
                    .shard(&address)
                    .accounts
                    .get(&address)
                    .is_some_and(|e| !e.reset.entries.is_empty());
            let same_as_pre = if wiped {
                None
            } else {
                Some(value == storage_ref(db, address, slot)?)
            };
            writes.push(SlotWrite {
                shard: self.shard_index(&address) as u32,
                address,
                slot,
                tx,
                value,
                same_as_pre,
            });
        }
        writes.sort_unstable_by(|x, y| {
            (x.shard, &x.address, &x.slot).cmp(&(y.shard, &y.address, &y.slot))
        });
        let starts = (0..=self.shards.len() as u32)
            .map(|shard| writes.partition_point(|w| w.shard < shard) as u32)
            .collect();
        Ok(SlotFold { writes, starts })
    }

    /// Second phase of the fold: folds shard `k`'s accounts and `runs` (their slots' final
    /// writes: every shard's [`SlotFold::run`] for `k`) over the pre-state into account changes
    /// sorted by address, exactly as folding every transaction's writes in block order would,
    /// and empties the shard (so it is freed by the worker that folds it).
    pub(crate) fn fold_accounts<DB: DatabaseRef>(
        &self,
        k: usize,
        db: &DB,
        runs: &[&[SlotWrite]],
    ) -> Result<Vec<AccountChange>, FoldFailure> {
        let mut accounts = std::mem::take(&mut lock(&self.shards[k]).accounts);
        let fee_account = self.fee_account.filter(|a| self.shard_index(a) == k);
        // The writes in (address, slot) order, as positions in the runs: a token's shard has
        // thousands of slots, and sorting the writes themselves would move ~100 bytes per swap.
        // The stable sort finds the runs already sorted and merges them.
        let at = |(b, i): (u32, u32)| &runs[b as usize][i as usize];
        let mut order: Vec<(u32, u32)> = runs
            .iter()
            .enumerate()
            .flat_map(|(b, run)| (0..run.len() as u32).map(move |i| (b as u32, i)))
            .collect();
        order.sort_by(|&x, &y| {
            let (x, y) = (at(x), at(y));
            x.address.cmp(&y.address).then(x.slot.cmp(&y.slot))
        });
        let mut addresses: Vec<Address> = accounts
            .iter()
            .filter(|(_, e)| !e.account.entries.is_empty() || !e.reset.entries.is_empty())
            .map(|(a, _)| *a)
            .chain(fee_account)
            .collect();
        let mut previous = None;
        for &o in &order {
            let address = at(o).address;
            if previous != Some(address) {
                addresses.push(address);
                previous = Some(address);
            }
        }
        addresses.sort_unstable();
        addresses.dedup();
        let mut out = Vec::with_capacity(addresses.len());
        let mut writes = order.iter().map(|&o| at(o)).peekable();
        // Entries are folded in place: moving one out of the map (`remove`) copied the whole
        // entry, two inline versions and the cached pre-state, ~2% of a parallel transfers
        // block's samples on each worker. The map is freed as a whole at the end.
        let mut absent = AccountEntry::default();
        for address in addresses {
            let entry = match accounts.get_mut(&address) {
                Some(entry) => entry,
                None => &mut absent,
            };
            let fees = (Some(address) == fee_account).then_some(&*self.fees);
            let mut pending = Pending::with_pre_state(entry.pre.take());
            let last_reset = match entry.reset.entries.last() {
                Some((tx, Entry::Estimate)) => {
                    return Err(not_final(Location::StorageReset(address), *tx))
                }
                Some((tx, _)) => {
                    pending.storage_reset = true;
                    Some(*tx)
                }
                None => None,
            };
            fold_account(&mut pending, db, address, &entry.account.entries, fees)?;
            let mut storage = Vec::new();
            while let Some(w) = writes.next_if(|w| w.address == address) {
                // A wipe by a later transaction drops the write; one by the same transaction
                // came before its slot writes.
                if last_reset.is_some_and(|reset| w.tx < reset) {
                    continue;
                }
                let unchanged = if pending.storage_reset {
                    w.value.is_zero()
                } else {
                    match w.same_as_pre {
                        Some(same) => same,
                        None => w.value == storage_ref(db, address, w.slot)?,
                    }
                };
                if !unchanged {
                    storage.push((w.slot, w.value));
                }
            }
            out.extend(
                pending
                    .finish_with_storage(db, address, storage)
                    .map_err(FoldFailure::Error)?,
            );
        }
        Ok(out)
    }

    /// Number of shards.
    pub(crate) fn shard_count(&self) -> usize {
        self.shards.len()
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

/// Applies an account's writes in block order: the entries of its location and, for the fee
/// account, the per-transaction fee credits merged in by transaction index.
fn fold_account<DB: DatabaseRef>(
    pending: &mut Pending,
    db: &DB,
    address: Address,
    entries: &[(TxIdx, Entry)],
    fees: Option<&[CachePadded<Mutex<Fee>>]>,
) -> Result<(), FoldFailure> {
    let location = Location::Account(address);
    let mut fees = fees
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(tx, fee)| match *lock(fee) {
            Fee::None => None,
            Fee::Estimate => Some((tx, None)),
            Fee::Credit(_, amount) => Some((tx, Some(amount))),
        })
        .peekable();
    let mut entries = entries.iter().peekable();
    loop {
        let fee_first = match (entries.peek(), fees.peek()) {
            (None, None) => return Ok(()),
            (Some((tx, _)), Some((fee_tx, _))) => fee_tx < tx,
            (None, Some(_)) => true,
            (Some(_), None) => false,
        };
        if fee_first {
            match fees.next() {
                Some((tx, None)) => return Err(not_final(location, tx)),
                Some((_, Some(amount))) => pending.credit(db, address, amount)?,
                None => {}
            }
            continue;
        }
        let Some((tx, entry)) = entries.next() else {
            continue;
        };
        match entry {
            Entry::Estimate => return Err(not_final(location, *tx)),
            Entry::Data(_, WriteValue::Account(info, kind)) => {
                pending.info = Some(info.clone());
                pending.mark(*kind);
            }
            Entry::Data(_, WriteValue::Credit(amount)) => pending.credit(db, address, *amount)?,
            Entry::Data(_, WriteValue::Debit(debit)) => pending.debit(db, address, debit)?,
            Entry::Data(..) => {}
        }
    }
}

fn storage_ref<DB: DatabaseRef>(
    db: &DB,
    address: Address,
    slot: U256,
) -> Result<U256, FoldFailure> {
    db.storage_ref(address, slot).map_err(|e| {
        FoldFailure::Error(BlockError::State {
            message: e.to_string(),
        })
    })
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

    fn record(mv: &MvMemory, version: Version, mut reads: Vec<Read>, mut writes: TxWrites) -> bool {
        mv.record(version, &mut reads, &mut writes, &mut Vec::new())
    }

    /// Both phases of the fold over every shard, as the executor's workers run them.
    fn fold_all<DB: DatabaseRef>(mv: &MvMemory, db: &DB) -> Vec<AccountChange> {
        let n = mv.shard_count();
        let folds: Vec<SlotFold> = (0..n)
            .map(|k| mv.fold_slots(k, db).expect("final"))
            .collect();
        let mut out = Vec::new();
        for k in 0..n {
            let runs: Vec<&[SlotWrite]> = folds.iter().map(|f| f.run(k)).collect();
            out.extend(mv.fold_accounts(k, db, &runs).expect("final"));
        }
        out.sort_unstable_by_key(|c| c.address);
        out
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
        let mv = MvMemory::new(6, 4, None);
        let loc = Location::Account(a(1));
        record(&mv, v(0, 0), vec![], writes(vec![(loc, account(100))]));
        record(
            &mv,
            v(2, 0),
            vec![],
            writes(vec![(loc, WriteValue::Credit(U256::from(5)))]),
        );
        record(
            &mv,
            v(3, 1),
            vec![],
            writes(vec![(loc, WriteValue::Credit(U256::from(7)))]),
        );
        let view = mv.read_account(&a(1), 5).expect("no estimate");
        assert!(matches!(view.base, AccountBase::Written(w, _) if w == v(0, 0)));
        assert_eq!(
            view.credits,
            vec![
                (v(2, 0), Delta::Credit(U256::from(5))),
                (v(3, 1), Delta::Credit(U256::from(7)))
            ]
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

    /// The two-phase fold, with slots spread over every shard apart from their accounts, gives
    /// what folding every transaction's writes in block order does: unchanged slots left out,
    /// slots of addresses without an account write, writes dropped by a later wipe, zero after
    /// a wipe counted as unchanged.
    #[test]
    fn the_sharded_fold_matches_the_sequential_fold() {
        use crate::parallel::changes::ChangeSet;
        use revm::database::{CacheDB, EmptyDB};
        let mut db = CacheDB::new(EmptyDB::default());
        let (token, wiped, fresh) = (a(1), a(2), a(3));
        for address in [token, wiped] {
            db.insert_account_info(
                address,
                AccountInfo {
                    balance: U256::from(1),
                    ..AccountInfo::default()
                },
            );
        }
        for slot in 0..200u64 {
            db.insert_account_storage(token, U256::from(slot), U256::from(slot % 3))
                .expect("in memory");
        }
        db.insert_account_storage(wiped, U256::from(1), U256::from(3))
            .expect("in memory");
        let storage = |address, slot: u64, value: u64| {
            (
                Location::Storage(address, U256::from(slot)),
                WriteValue::Storage(U256::from(value)),
            )
        };
        let txs: Vec<TxWrites> = vec![
            // The token's slots: a third rewritten with their pre-state value, the others not,
            // some twice; no account write.
            writes(
                (0..200)
                    .map(|s| storage(token, s, s % 3 + u64::from(s % 3 != 0)))
                    .collect(),
            ),
            writes((100..150).map(|s| storage(token, s, s % 3)).collect()),
            writes(vec![
                storage(wiped, 1, 4),
                storage(wiped, 2, 4),
                storage(fresh, 7, 7),
            ]),
            // Wiped and created again: slot 1's earlier write is dropped, slot 2 back to zero
            // (unchanged after a wipe), slot 5 new.
            writes(vec![
                (Location::StorageReset(wiped), WriteValue::StorageReset),
                (
                    Location::Account(wiped),
                    WriteValue::Account(
                        Some(AccountInfo {
                            balance: U256::from(9),
                            ..AccountInfo::default()
                        }),
                        AccountWriteKind::Created,
                    ),
                ),
                storage(wiped, 2, 0),
                storage(wiped, 5, 9),
            ]),
            writes(vec![storage(fresh, 7, 0), storage(fresh, 8, 8)]),
        ];
        let mv = MvMemory::new(txs.len(), 64, None);
        let mut sequential = ChangeSet::new(&db);
        for (tx, w) in txs.into_iter().enumerate() {
            assert!(sequential.apply(&w).is_ok());
            record(&mv, v(tx, 0), vec![], w);
        }
        let expected = sequential.finish().expect("folds");
        let folded = fold_all(&mv, &db);
        assert_eq!(folded, expected);
        let token_change = folded.iter().find(|c| c.address == token).expect("changed");
        // 133 of the 200 slots are not multiples of 3, 34 of them in 100..150.
        assert_eq!(token_change.storage.len(), 133 - 34);
        let wiped_change = folded.iter().find(|c| c.address == wiped).expect("changed");
        assert_eq!(wiped_change.storage, vec![(U256::from(5), U256::from(9))]);
    }

    #[test]
    fn storage_reads_respect_wipes() {
        let mv = MvMemory::new(5, 4, None);
        let (slot, reset) = (
            Location::Storage(a(1), U256::from(9)),
            Location::StorageReset(a(1)),
        );
        record(
            &mv,
            v(0, 0),
            vec![],
            writes(vec![(slot, WriteValue::Storage(U256::from(3)))]),
        );
        record(
            &mv,
            v(2, 0),
            vec![],
            writes(vec![(reset, WriteValue::StorageReset)]),
        );
        record(
            &mv,
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
        let mv = MvMemory::new(3, 4, None);
        let loc = Location::Account(a(1));
        record(&mv, v(0, 0), vec![], writes(vec![(loc, account(1))]));
        let read = Read::Account {
            address: a(1),
            base: Some(v(0, 0)),
            credits: vec![],
        };
        assert!(!record(&mv, v(1, 0), vec![read], TxWrites::default()));
        assert!(mv.validate(1, |_| None));
        // Transaction 0 runs again: a new incarnation invalidates the read.
        assert!(!record(
            &mv,
            v(0, 1),
            vec![],
            writes(vec![(loc, account(1))])
        ));
        assert!(!mv.validate(1, |_| None));
        // Transaction 0's third run writes nothing: the read now comes from the pre-state.
        record(&mv, v(0, 2), vec![], TxWrites::default());
        assert!(matches!(
            mv.read_account(&a(1), 1).expect("ok").base,
            AccountBase::PreState
        ));
    }

    #[test]
    fn seeded_estimates_block_until_the_first_execution() {
        let mv = MvMemory::new(3, 4, None);
        mv.seed_estimate(0, Location::Account(a(1)));
        assert_eq!(mv.read_account(&a(1), 2).err(), Some(Blocked(0)));
        // An invalid transaction writes nothing: the seeded marker goes away.
        record(&mv, v(0, 0), vec![], TxWrites::default());
        assert!(mv.read_account(&a(1), 2).is_ok());
    }

    #[test]
    fn lazy_code_reads_are_validated_by_value() {
        let mv = MvMemory::new(3, 4, None);
        let read = Read::AccountCode {
            address: a(1),
            code_hash: KECCAK_EMPTY,
        };
        record(&mv, v(2, 0), vec![read], TxWrites::default());
        assert!(mv.validate(2, |_| Some(KECCAK_EMPTY)));
        // A balance change below does not matter; code appearing does.
        record(
            &mv,
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
        record(
            &mv,
            v(1, 0),
            vec![],
            writes(vec![(Location::Account(a(1)), code)]),
        );
        assert!(!mv.validate(2, |_| Some(KECCAK_EMPTY)));
    }

    #[test]
    fn fee_credits_merge_with_the_beneficiarys_other_writes() {
        use revm::database::{CacheDB, EmptyDB};
        let coinbase = a(9);
        let mv = MvMemory::new(6, 4, Some(coinbase));
        let loc = Location::Account(coinbase);
        let fee = |n| writes(vec![(loc, WriteValue::Credit(U256::from(n)))]);
        record(&mv, v(0, 0), vec![], fee(1));
        // Transaction 2 read the beneficiary: its reward, and so its write, is a full one.
        record(&mv, v(2, 0), vec![], writes(vec![(loc, account(100))]));
        record(&mv, v(3, 0), vec![], fee(5));
        record(&mv, v(4, 0), vec![], fee(7));
        let view = mv.read_account(&coinbase, 5).expect("no estimate");
        assert!(matches!(view.base, AccountBase::Written(w, _) if w == v(2, 0)));
        assert_eq!(
            view.credits,
            vec![
                (v(3, 0), Delta::Credit(U256::from(5))),
                (v(4, 0), Delta::Credit(U256::from(7)))
            ]
        );
        let view = mv.read_account(&coinbase, 2).expect("no estimate");
        assert!(matches!(view.base, AccountBase::PreState));
        assert_eq!(view.credits, vec![(v(0, 0), Delta::Credit(U256::from(1)))]);
        // An aborted fee blocks exact and lazy readers above it, not below.
        mv.convert_writes_to_estimates(3);
        assert_eq!(mv.read_account(&coinbase, 5).err(), Some(Blocked(3)));
        assert_eq!(mv.read_account_base(&coinbase, 5).err(), Some(Blocked(3)));
        assert!(mv.read_account(&coinbase, 3).is_ok());
        // Re-executed, transaction 3 pays eagerly (a full write), transaction 4 no fee at all.
        record(&mv, v(3, 1), vec![], writes(vec![(loc, account(200))]));
        record(&mv, v(4, 1), vec![], TxWrites::default());
        let view = mv.read_account(&coinbase, 5).expect("no estimate");
        assert!(matches!(view.base, AccountBase::Written(w, _) if w == v(3, 1)));
        assert!(view.credits.is_empty());
        record(&mv, v(5, 0), vec![], fee(11));
        // Folded in block order: 1 (pre-state 0 + 1), 100, 200, + 11.
        let db = CacheDB::new(EmptyDB::default());
        let changes = fold_all(&mv, &db);
        let change = changes
            .iter()
            .find(|c| c.address == coinbase)
            .expect("changed");
        assert_eq!(
            change.account.as_ref().map(|s| s.balance),
            Some(U256::from(211))
        );
    }

    #[test]
    fn shards_spread_counter_and_hash_addresses() {
        let mv = MvMemory::new(0, 64, None);
        let spread = |addresses: Vec<Address>| {
            let mut load = [0usize; 64];
            for a in &addresses {
                load[mv.shard_index(a)] += 1;
            }
            let mean = addresses.len() / 64;
            let max = *load.iter().max().expect("64 shards");
            assert!(max < 2 * mean, "{max} of {} in one shard", addresses.len());
        };
        // Synthetic blocks: a tag byte and a big-endian counter in the low bytes.
        let counter = |tag: u8, i: u64| {
            let mut b = [0u8; 20];
            b[0] = tag;
            b[12..].copy_from_slice(&i.to_be_bytes());
            Address::from(b)
        };
        spread((0..6400).map(|i| counter(0xa0, i)).collect());
        spread(
            (0..6400)
                .map(|i| Address::with_last_byte(i as u8))
                .take(256)
                .chain((0..6144).map(|i| counter(0xb0, i << 8)))
                .collect(),
        );
        // Mainnet: hashes.
        spread(
            (0..6400u64)
                .map(|i| Address::from_word(revm::primitives::keccak256(i.to_be_bytes())))
                .collect(),
        );
    }

    #[test]
    fn a_cached_pre_state_comes_back_with_the_read() {
        let mv = MvMemory::new(3, 4, None);
        assert!(matches!(
            mv.read_account(&a(1), 2).expect("ok").base,
            AccountBase::PreState
        ));
        let mut loads = 0;
        let mut load = || -> Result<Option<AccountInfo>, ()> {
            loads += 1;
            Ok(Some(AccountInfo {
                balance: U256::from(7),
                ..AccountInfo::default()
            }))
        };
        mv.pre_account(&a(1), &mut load).expect("loads");
        mv.pre_account(&a(1), &mut load).expect("cached");
        assert_eq!(loads, 1);
        assert!(matches!(
            mv.read_account(&a(1), 2).expect("ok").base,
            AccountBase::Cached(Some(info)) if info.balance == U256::from(7)
        ));
        assert!(matches!(
            mv.read_account_base(&a(1), 2),
            Ok(AccountBase::Cached(Some(_)))
        ));
        // A write below the reader still wins over the cached pre-state.
        record(
            &mv,
            v(0, 0),
            vec![],
            writes(vec![(Location::Account(a(1)), account(9))]),
        );
        assert!(matches!(
            mv.read_account(&a(1), 2).expect("ok").base,
            AccountBase::Written(w, _) if w == v(0, 0)
        ));
    }
}
