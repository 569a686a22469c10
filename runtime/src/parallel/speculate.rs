//! Speculative chunks: the block cut into one run of consecutive transactions per thread, each
//! run executed sequentially from the pre-state on its own thread, kept only if no chunk read a
//! location an earlier chunk wrote.
//!
//! Block-STM pays for every transaction's reads and writes in the multi-version memory, for
//! validating them and for folding them: on a block of independent ERC-20 transfers the two
//! workers spent about 1.35 times the CPU of sequential execution, so two threads could not
//! pass ~1.45x however well they were balanced. A chunk instead runs like sequential execution
//! (revm's `State` caches what it loaded; one change set per chunk) and notes only its
//! *first loads* from the pre-state and, after each transaction, the locations it wrote, in a
//! shared table of marks. A chunk's execution is exactly sequential execution's if none of its
//! first loads is of a location an earlier chunk writes: every value it read is then the
//! pre-state's in both, or one its own earlier transactions wrote. Whichever of the write and
//! the read is marked second sees the other, so a conflict is found as soon as both happened,
//! and every chunk stops at once; [`run`] then returns `None` and the block runs in Block-STM
//! from the start.
//!
//! The beneficiary is the one location all chunks write: a chunk after the first pays every fee
//! as a lazy credit (the handler Block-STM uses), added to the beneficiary after the chunks
//! before it, and abandons the speculation if anything loads the beneficiary's account (a read
//! of its balance, a transaction from it, a zero fee that only touches it).
//!
//! Any error (an invalid transaction, a database failure) also abandons the speculation:
//! Block-STM or sequential execution then reports it exactly.

use super::changes::{AccountChange, ChangeSet};
use super::handler::LazyRewardHandler;
use super::mvmemory::MvMemory;
use super::writes::{extract_writes, Location, TxWrites};
use super::{pool, BlockOutput, ParallelStats, TxOutput};
use crate::evm::{EmberEvm, MemoProvider, NativeProvider};
use crossbeam_utils::CachePadded;
use revm::context::{BlockEnv, CfgEnv, Context, ContextSetters, TxEnv};
use revm::context_interface::result::{EVMError, ExecutionResult, HaltReason, InvalidTransaction};
use revm::database::State;
use revm::database_interface::{DBErrorMarker, DatabaseCommit, DatabaseRef};
use revm::handler::{ExecuteEvm, Handler, MainBuilder, MainContext};
use revm::primitives::{Address, StorageKey, StorageValue, B256, U256};
use revm::state::{AccountInfo, Bytecode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Shards of the mark table (locks).
const MARK_SHARDS: usize = 64;

/// Most chunks (one bit per chunk in a mark).
pub(crate) const MAX_CHUNKS: usize = 64;

/// Per location, the chunks that wrote it and the chunks whose first load it was (one bit
/// each).
#[derive(Clone, Copy, Default)]
struct Mark {
    writers: u64,
    readers: u64,
}

/// A location with its hash, computed once for both the shard and the map.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key(u64, Location);

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.0);
    }
}

/// Hands a [`Key`]'s precomputed hash to the map.
#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (by `Key`); fold anything else in anyway.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type MarkMap = std::collections::HashMap<Key, Mark, std::hash::BuildHasherDefault<KeyHasher>>;

/// The shared table of marks.
struct Marks {
    shards: Box<[CachePadded<Mutex<MarkMap>>]>,
}

impl Marks {
    fn new(capacity: usize) -> Self {
        let per_shard = capacity / MARK_SHARDS + 1;
        Self {
            shards: (0..MARK_SHARDS)
                .map(|_| {
                    CachePadded::new(Mutex::new(MarkMap::with_capacity_and_hasher(
                        per_shard,
                        Default::default(),
                    )))
                })
                .collect(),
        }
    }

    fn update(&self, location: Location, f: impl FnOnce(&mut Mark) -> bool) -> bool {
        let hash = MvMemory::location_hash(&location);
        // Middle bits pick the shard: the map uses the low ones for buckets and the top seven
        // as tags.
        let mut map = self.shards[(hash >> 32) as usize % MARK_SHARDS]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(map.entry(Key(hash, location)).or_default())
    }

    /// Marks `location` as a first load of `chunk`; whether an earlier chunk wrote it.
    fn read(&self, chunk: usize, location: Location) -> bool {
        self.update(location, |m| {
            m.readers |= 1 << chunk;
            m.writers & ((1u64 << chunk) - 1) != 0
        })
    }

    /// Marks `location` as written by `chunk`; whether a later chunk loaded it.
    fn write(&self, chunk: usize, location: Location) -> bool {
        self.update(location, |m| {
            m.writers |= 1 << chunk;
            m.readers >> chunk >> 1 != 0
        })
    }
}

/// What ended a speculation early.
#[derive(Debug, thiserror::Error)]
enum SpecError {
    /// A conflict (or another chunk's failure) abandoned the speculation.
    #[error("speculation abandoned")]
    Abandoned,
    /// The pre-state database failed.
    #[error("{0}")]
    Db(String),
}

impl DBErrorMarker for SpecError {}

/// What the chunks share.
struct Shared<'a, DB> {
    db: &'a DB,
    marks: Marks,
    beneficiary: Address,
    abandoned: AtomicBool,
    chunks: usize,
}

impl<DB> Shared<'_, DB> {
    fn abandon(&self) -> SpecError {
        self.abandoned.store(true, Ordering::SeqCst);
        SpecError::Abandoned
    }

    fn live(&self) -> Result<(), SpecError> {
        if self.abandoned.load(Ordering::Relaxed) {
            Err(SpecError::Abandoned)
        } else {
            Ok(())
        }
    }
}

/// The pre-state as one chunk sees it: every first load is marked (chunks after the first).
struct ChunkDb<'s, 'a, DB> {
    shared: &'s Shared<'a, DB>,
    chunk: usize,
}

impl<DB: DatabaseRef> ChunkDb<'_, '_, DB> {
    fn note(&self, location: Location) -> Result<(), SpecError> {
        if self.chunk > 0 && self.shared.marks.read(self.chunk, location) {
            return Err(self.shared.abandon());
        }
        Ok(())
    }
}

impl<DB: DatabaseRef> DatabaseRef for ChunkDb<'_, '_, DB> {
    type Error = SpecError;

    fn basic_ref(&self, address: Address) -> Result<Option<AccountInfo>, SpecError> {
        self.shared.live()?;
        if self.chunk > 0 && address == self.shared.beneficiary {
            return Err(self.shared.abandon());
        }
        self.note(Location::Account(address))?;
        self.shared.db.basic_ref(address).map_err(db_error)
    }

    fn code_by_hash_ref(&self, code_hash: B256) -> Result<Bytecode, SpecError> {
        self.shared.live()?;
        self.shared.db.code_by_hash_ref(code_hash).map_err(db_error)
    }

    fn storage_ref(&self, address: Address, index: StorageKey) -> Result<StorageValue, SpecError> {
        self.shared.live()?;
        // A wipe of the account's storage by an earlier chunk (creation, self-destruct) is not
        // looked for here: it comes with a write of the account, and revm's `State` loads a
        // slot only of an account this chunk loaded (first-loaded, so marked) before.
        self.note(Location::Storage(address, index))?;
        self.shared.db.storage_ref(address, index).map_err(db_error)
    }

    fn block_hash_ref(&self, number: u64) -> Result<B256, SpecError> {
        self.shared.live()?;
        self.shared.db.block_hash_ref(number).map_err(db_error)
    }
}

fn db_error(e: impl std::fmt::Display) -> SpecError {
    SpecError::Db(e.to_string())
}

/// One chunk's outcome.
struct ChunkOutput<'a, DB> {
    results: Vec<ExecutionResult<HaltReason>>,
    changes: ChangeSet<'a, DB>,
    /// The fees paid to the beneficiary as lazy credits.
    credit: U256,
    native_runs: u64,
    interpreted_runs: u64,
    time: Duration,
}

/// Runs `txs` (chunk `chunk` of the block) sequentially; `None` if the speculation was
/// abandoned.
fn run_chunk<'a, DB, P>(
    shared: &Shared<'a, DB>,
    cfg: &CfgEnv,
    block: &BlockEnv,
    txs: &[TxEnv],
    provider: &P,
    chunk: usize,
) -> Option<ChunkOutput<'a, DB>>
where
    DB: DatabaseRef,
    P: NativeProvider,
{
    let start = Instant::now();
    let chunk_db = ChunkDb { shared, chunk };
    let mut state = State::builder().with_database_ref(chunk_db).build();
    let mut out = ChunkOutput {
        results: Vec::with_capacity(txs.len()),
        changes: ChangeSet::new(shared.db),
        credit: U256::ZERO,
        native_runs: 0,
        interpreted_runs: 0,
        time: Duration::ZERO,
    };
    let ctx = Context::mainnet()
        .with_block(block.clone())
        .with_cfg(cfg.clone())
        .with_db(&mut state);
    let mut evm = EmberEvm::new(ctx.build_mainnet(), MemoProvider::new(provider));
    let mut writes = TxWrites::default();
    let marks_writes = chunk + 1 < shared.chunks;
    for tx in txs {
        if shared.live().is_err() {
            return None;
        }
        evm.inner.ctx.set_tx(tx.clone());
        let mut handler =
            LazyRewardHandler::<_, EVMError<_, InvalidTransaction>, _>::new(chunk > 0);
        let result = handler.run(&mut evm);
        let state = evm.finalize();
        out.native_runs += evm.stats.native_runs.replace(0);
        out.interpreted_runs += evm.stats.interpreted_runs.replace(0);
        // An error (a conflict surfaces as a database error; an invalid transaction) ends the
        // speculation; so does a conflict revm did not report.
        let (Ok(result), true) = (result, shared.live().is_ok()) else {
            shared.abandon();
            return None;
        };
        if let Some((_, fee)) = handler.credit.get() {
            match out.credit.checked_add(fee) {
                Some(credit) => out.credit = credit,
                None => {
                    shared.abandon();
                    return None;
                }
            }
        }
        writes.entries.clear();
        if extract_writes(&state, &[], None, None, &[], &mut writes).is_err()
            || out.changes.apply(&writes).is_err()
        {
            shared.abandon();
            return None;
        }
        if marks_writes {
            // Later chunks never load the beneficiary (they abandon instead), and never mark
            // storage wipes (a wipe comes with a write of the account, which they do mark).
            let beneficiary = Location::Account(shared.beneficiary);
            let marked =
                |l: &Location| *l != beneficiary && !matches!(l, Location::StorageReset(_));
            for (location, _) in writes.entries.iter().filter(|(l, _)| marked(l)) {
                if shared.marks.write(chunk, *location) {
                    shared.abandon();
                    return None;
                }
            }
        }
        evm.inner.ctx.journaled_state.database.commit(state);
        out.results.push(result);
    }
    // The slots' comparison with the pre-state, here rather than in the merge.
    if out.changes.settle().is_err() {
        shared.abandon();
        return None;
    }
    out.time = start.elapsed();
    Some(out)
}

/// Whether every transaction is a plain transfer (a call without input, to an account
/// without code in the pre-state, not one of the fork's precompiles, no EIP-7702
/// authorizations) and no account (sender, recipient) belongs to two of the chunks [`run`]
/// makes on `threads` threads, nor is the beneficiary. Such chunks read and write only their
/// own accounts, and the beneficiary's fees lazily: they cannot conflict. One pre-state lookup
/// per recipient.
pub(crate) fn independent_transfers<DB: DatabaseRef>(
    txs: &[TxEnv],
    db: &DB,
    beneficiary: Address,
    precompiles: &revm::precompile::Precompiles,
    threads: usize,
) -> bool {
    let starts = chunk_starts(txs, threads.clamp(1, MAX_CHUNKS));
    if starts.len() < 2 {
        return false;
    }
    let mut owner: revm::primitives::HashMap<Address, usize> =
        revm::primitives::HashMap::with_capacity_and_hasher(txs.len() * 2, Default::default());
    let mut chunk = 0;
    for (i, tx) in txs.iter().enumerate() {
        if starts.get(chunk + 1) == Some(&i) {
            chunk += 1;
        }
        let revm::primitives::TxKind::Call(to) = tx.kind else {
            return false;
        };
        if !tx.data.is_empty()
            || !tx.authorization_list.is_empty()
            || to == beneficiary
            || tx.caller == beneficiary
            || precompiles.contains(&to)
        {
            return false;
        }
        match db.basic_ref(to) {
            Ok(None) => {}
            Ok(Some(info)) if info.code_hash == revm::primitives::KECCAK_EMPTY => {}
            _ => return false,
        }
        for address in [tx.caller, to] {
            if *owner.entry(address).or_insert(chunk) != chunk {
                return false;
            }
        }
    }
    true
}

/// Where each chunk starts: `chunks` runs of consecutive transactions with about equal gas
/// limits, none empty.
fn chunk_starts(txs: &[TxEnv], chunks: usize) -> Vec<usize> {
    let total: u128 = txs.iter().map(|t| t.gas_limit as u128).sum();
    let mut starts = vec![0];
    let mut before: u128 = 0;
    for (i, tx) in txs.iter().enumerate() {
        let gas = tx.gas_limit as u128;
        // A chunk starts at the first transaction whose middle is past its share of the gas.
        let next = starts.len() as u128;
        if i > 0 && starts.len() < chunks && (2 * before + gas) * chunks as u128 >= 2 * total * next
        {
            starts.push(i);
        }
        before += gas;
    }
    starts
}

/// Runs `txs` as speculative chunks on `threads` threads; `None` (and how long the attempt
/// took) when the speculation was abandoned.
pub(crate) fn run<DB, P>(
    cfg: &CfgEnv,
    block: &BlockEnv,
    txs: &[TxEnv],
    db: &DB,
    provider: &P,
    threads: usize,
) -> Result<BlockOutput, Duration>
where
    DB: DatabaseRef + Sync,
    P: NativeProvider + Sync,
{
    let start = Instant::now();
    let starts = chunk_starts(txs, threads.clamp(1, MAX_CHUNKS));
    let chunks = starts.len();
    if chunks < 2 {
        return Err(start.elapsed());
    }
    let shared = Shared {
        db,
        marks: Marks::new(txs.len() * 4),
        beneficiary: block.beneficiary,
        abandoned: AtomicBool::new(false),
        chunks,
    };
    let outputs: Vec<Mutex<Option<ChunkOutput<'_, DB>>>> =
        (0..chunks).map(|_| Mutex::new(None)).collect();
    let ran = pool::run_workers(chunks, |c| {
        let end = starts.get(c + 1).copied().unwrap_or(txs.len());
        let out = run_chunk(&shared, cfg, block, &txs[starts[c]..end], provider, c);
        *outputs[c].lock().unwrap_or_else(PoisonError::into_inner) = out;
    });
    if ran.is_err() || shared.abandoned.load(Ordering::SeqCst) {
        return Err(start.elapsed());
    }
    let mut stats = ParallelStats {
        threads: chunks,
        speculated_blocks: 1,
        ..ParallelStats::default()
    };
    let mut results = Vec::with_capacity(txs.len());
    let mut sets = Vec::with_capacity(chunks);
    let mut credit = U256::ZERO;
    for out in outputs {
        let Some(out) = out.into_inner().unwrap_or_else(PoisonError::into_inner) else {
            return Err(start.elapsed());
        };
        stats.native_runs += out.native_runs;
        stats.interpreted_runs += out.interpreted_runs;
        stats.execution_time += out.time;
        stats.worker_time += out.time;
        results.extend(out.results);
        sets.push(out.changes);
        let Some(sum) = credit.checked_add(out.credit) else {
            return Err(start.elapsed());
        };
        credit = sum;
    }
    stats.executions = results.len() as u64;
    let Some(changes) = merge_and_finish(sets, block.beneficiary, credit, chunks) else {
        return Err(start.elapsed());
    };
    let mut cumulative_gas_used = 0u64;
    let transactions = results
        .into_iter()
        .map(|result| {
            cumulative_gas_used = cumulative_gas_used.saturating_add(result.tx_gas_used());
            TxOutput {
                result,
                cumulative_gas_used,
            }
        })
        .collect();
    Ok(BlockOutput {
        transactions,
        changes,
        stats,
    })
}

/// The chunks' change sets (in block order) merged, with `credit` added to the beneficiary, and
/// finished into the block's account changes, on `threads` threads (each an address range);
/// `None` if a credit overflows or the pre-state database fails (the fallback reports it).
fn merge_and_finish<DB>(
    mut sets: Vec<ChangeSet<'_, DB>>,
    beneficiary: Address,
    credit: U256,
    threads: usize,
) -> Option<Vec<AccountChange>>
where
    DB: DatabaseRef + Sync,
{
    // Address ranges with about as many accounts each: quantiles of a sample of every set's
    // addresses, each sampled in proportion to its size (chunks often own distinct address
    // ranges: the first set's quantiles alone left one range three times the other's).
    const SAMPLES: usize = 64;
    let total: usize = sets.iter().map(|s| s.len()).sum();
    let step = (total / SAMPLES).max(1);
    let mut sample: Vec<Address> = Vec::with_capacity(SAMPLES + sets.len());
    for set in &sets {
        sample.extend(set.addresses().step_by(step).copied());
    }
    sample.sort_unstable();
    let bounds: Vec<Address> = (1..threads)
        .filter_map(|t| sample.get(sample.len() * t / threads).copied())
        .collect();
    // parts[t]: every chunk's accounts in range t, in chunk order.
    let mut parts: Vec<Vec<ChangeSet<'_, DB>>> = (0..=bounds.len()).map(|_| Vec::new()).collect();
    for set in &mut sets {
        let mut pieces: Vec<ChangeSet<'_, DB>> =
            bounds.iter().rev().map(|b| set.split_off(b)).collect();
        pieces.reverse();
        let rest = std::mem::replace(set, ChangeSet::new(set.db()));
        parts[0].push(rest);
        for (t, piece) in pieces.into_iter().enumerate() {
            parts[t + 1].push(piece);
        }
    }
    let ranges = parts.len();
    let slots: Vec<Mutex<Option<Vec<ChangeSet<'_, DB>>>>> =
        parts.into_iter().map(|p| Mutex::new(Some(p))).collect();
    // Per range, its changes; `None` if it failed (or did not run).
    let done: Vec<Mutex<Option<Vec<AccountChange>>>> =
        (0..ranges).map(|_| Mutex::new(None)).collect();
    let in_range = |t: usize| {
        (t == 0 || bounds[t - 1] <= beneficiary) && (t == bounds.len() || beneficiary < bounds[t])
    };
    pool::run_workers(ranges, |t| {
        let Some(part) = slots[t]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return;
        };
        let mut part = part.into_iter();
        let Some(mut merged) = part.next() else {
            return;
        };
        for later in part {
            merged.merge(later);
        }
        if !credit.is_zero() && in_range(t) && merged.credit(beneficiary, credit).is_err() {
            return;
        }
        *done[t].lock().unwrap_or_else(PoisonError::into_inner) = merged.finish().ok();
    })
    .ok()?;
    let mut changes = Vec::new();
    for part in done {
        changes.extend(part.into_inner().unwrap_or_else(PoisonError::into_inner)?);
    }
    Some(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx(gas_limit: u64) -> TxEnv {
        TxEnv {
            gas_limit,
            ..TxEnv::default()
        }
    }

    #[test]
    fn chunks_split_by_gas_and_are_never_empty() {
        let txs: Vec<TxEnv> = [10, 10, 10, 10].map(tx).to_vec();
        assert_eq!(chunk_starts(&txs, 2), vec![0, 2]);
        assert_eq!(chunk_starts(&txs, 4), vec![0, 1, 2, 3]);
        assert_eq!(chunk_starts(&txs, 8), vec![0, 1, 2, 3]);
        let skewed: Vec<TxEnv> = [100, 1, 1, 1].map(tx).to_vec();
        assert_eq!(chunk_starts(&skewed, 2), vec![0, 1]);
        let late: Vec<TxEnv> = [1, 1, 1, 100].map(tx).to_vec();
        assert_eq!(chunk_starts(&late, 2), vec![0, 3]);
        assert_eq!(chunk_starts(&txs[..1], 2), vec![0]);
        assert_eq!(chunk_starts(&[], 2), vec![0]);
    }

    #[test]
    fn a_read_after_an_earlier_chunks_write_conflicts_and_the_reverse_too() {
        let marks = Marks::new(16);
        let a = Location::Account(Address::with_last_byte(1));
        let b = Location::Account(Address::with_last_byte(2));
        assert!(!marks.write(0, a));
        assert!(marks.read(1, a), "read after an earlier chunk's write");
        assert!(!marks.read(1, b));
        assert!(marks.write(0, b), "write after a later chunk's read");
        let c = Location::Storage(Address::with_last_byte(3), U256::from(7));
        assert!(!marks.read(0, c), "the first chunk never conflicts");
        assert!(
            !marks.write(1, c),
            "a later chunk's write after an earlier chunk's read"
        );
        assert!(!marks.read(1, c), "a chunk's own write");
        assert!(
            marks.read(2, c),
            "a later chunk reads an earlier chunk's write"
        );
    }
}
