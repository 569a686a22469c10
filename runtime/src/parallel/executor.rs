//! The parallel executor: worker threads taking tasks from the [`Scheduler`], executing
//! transactions against the [`MvMemory`] and validating their reads.

use super::changes::AccountChange;
use super::db::{pre_account, CodeCache, SenderCandidate, Shared, TxDb, TxDbError, WithCodes};
use super::handler::LazyRewardHandler;
use super::mvmemory::{FoldFailure, MvMemory, Read, SlotFold, SlotWrite, TxIdx, Version};
use super::pool;
use super::scheduler::{Scheduler, Task};
use super::writes::{extract_writes, narrow, unobserved_credit, Location, TxWrites, WriteValue};
use super::{
    sequential, speculate, BlockError, BlockOutput, FallbackReason, ParallelOptions, ParallelStats,
    Speculation, TxOutput,
};
use crate::evm::{EmberEvm, MemoProvider, NativeProvider};
use crate::observe;
use crossbeam_utils::CachePadded;
use revm::bytecode::opcode;
use revm::context::{BlockEnv, CfgEnv, Context, ContextSetters, TxEnv};
use revm::context_interface::result::{EVMError, ExecutionResult, HaltReason, InvalidTransaction};
use revm::database_interface::DatabaseRef;
use revm::handler::{ExecuteEvm, Handler, MainBuilder, MainContext, MainnetContext};
use revm::interpreter::Instruction;
use revm::precompile::{PrecompileSpecId, Precompiles};
use revm::primitives::{hardfork::SpecId, Address, HashMap, TxKind, B256, KECCAK_EMPTY, U256};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

type TxResult = Result<ExecutionResult<HaltReason>, BlockError>;

/// One shard's account changes, or why they could not be folded.
type FoldedShard = Result<Vec<AccountChange>, FoldFailure>;

/// One shard's final slot writes, sorted by the shard of their account, or why they could not
/// be folded.
type FoldedSlots = Result<SlotFold, FoldFailure>;

/// Most shards of the multi-version memory (locks, and units of the final fold).
const MAX_SHARDS: usize = 64;

/// Shards for a block of `transactions`: one per eight transactions, a power of two from 8 to
/// [`MAX_SHARDS`]. Every shard costs the fold a fixed amount of work (two passes, locks,
/// tables), which 64 shards made 8-15% of the workers' time on a 60-transaction block; two
/// workers rarely meet on one of 8 shards.
fn shard_count(transactions: usize) -> usize {
    (transactions / 8).next_power_of_two().clamp(8, MAX_SHARDS)
}

/// Adds one to a counter when dropped, including during a panic's unwinding.
struct CountOnDrop<'a>(&'a AtomicUsize);

impl Drop for CountOnDrop<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Release);
    }
}

/// The EVM a worker runs all its executions on (building one per execution would allocate
/// revm's frame stack and interpreter buffers every time): its database is re-aimed at each
/// transaction with [`TxDb::begin`], its context gets each transaction with `set_tx`.
type WorkerEvm<'s, DB, P> = EmberEvm<MainnetContext<TxDb<'s, DB>>, MemoProvider<&'s P>>;

/// Executes a block's transactions in parallel (Block-STM) on top of the read-only pre-state
/// `db`, every transaction through [`EmberEvm`] with native code from `provider`.
///
/// The result is identical to [`execute_block_sequential`](super::execute_block_sequential)'s:
/// the same per-transaction results and cumulative gas, the same state changes, and for a block
/// with an invalid transaction the same error (the first invalid transaction's). Blocks that
/// the heuristics of [`ParallelOptions`] deem too small, or where a hazard is detected, run
/// sequentially; [`ParallelStats::fallback`] says why.
pub fn execute_block<DB, P>(
    cfg: &CfgEnv,
    block: &BlockEnv,
    txs: &[TxEnv],
    db: &DB,
    provider: &P,
    opts: &ParallelOptions,
) -> Result<BlockOutput, BlockError>
where
    DB: DatabaseRef + Sync,
    P: NativeProvider + Sync,
{
    let threads = opts.threads.min(txs.len());
    let gas: u64 = txs.iter().map(|t| t.gas_limit).fold(0, u64::saturating_add);
    let mut senders = HashMap::default();
    let reason = if opts.threads < 2 {
        Some(FallbackReason::SingleThread)
    } else if txs.len() < opts.min_transactions.max(2) {
        Some(FallbackReason::TooFewTransactions {
            transactions: txs.len(),
        })
    } else if gas < opts.min_gas {
        Some(FallbackReason::TooLittleGas { gas })
    } else if let Some(reason) = mostly_transfers(txs, opts) {
        Some(reason)
    } else {
        senders = sender_counts(txs);
        sender_chain(&senders, txs.len(), opts.max_sender_share)
    };
    let mut abandoned = None;
    let speculate = threads >= 2
        && match opts.speculation {
            Speculation::Off => false,
            Speculation::Always => true,
            Speculation::Transfers => {
                txs.len() >= opts.min_transactions
                    && gas >= opts.min_gas
                    && speculate::independent_transfers(
                        txs,
                        db,
                        block.beneficiary,
                        Precompiles::new(PrecompileSpecId::from_spec_id(cfg.spec)),
                        threads,
                    )
            }
        };
    if speculate {
        match speculate::run(cfg, block, txs, db, provider, threads) {
            Ok(output) => return Ok(output),
            Err(time) => abandoned = Some(time),
        }
    }
    if let Some(reason) = reason {
        let mut output = sequential::run(cfg, block, txs, db, provider, reason)?;
        if let Some(time) = abandoned {
            output.stats.abandoned_speculations += 1;
            output.stats.abandoned_speculation_time += time;
        }
        return Ok(output);
    }
    let executor = Executor::new(cfg, block, txs, db, provider, opts);
    if opts.seed_sender_estimates {
        executor.seed_estimates(&senders);
    }
    if let Err(e) = pool::run_workers(threads, |_| executor.work()) {
        let reason = FallbackReason::NoThreads(e.to_string());
        return sequential::run(cfg, block, txs, db, provider, reason);
    }
    let mut stats = executor.stats(threads);
    if let Some(time) = abandoned {
        stats.abandoned_speculations += 1;
        stats.abandoned_speculation_time += time;
    }
    match executor.finish() {
        Ok((transactions, changes)) => Ok(BlockOutput {
            transactions,
            changes,
            stats,
        }),
        Err(Finish::Error(e)) => Err(e),
        Err(Finish::Fallback(reason)) => {
            let mut output = sequential::run(cfg, block, txs, db, provider, reason)?;
            stats.fallback = output.stats.fallback.take();
            stats.native_runs += output.stats.native_runs;
            stats.interpreted_runs += output.stats.interpreted_runs;
            output.stats = stats;
            Ok(output)
        }
    }
}

/// Whether the block's contract gas is below [`ParallelOptions::min_contract_gas`]'s bounds.
fn mostly_transfers(txs: &[TxEnv], opts: &ParallelOptions) -> Option<FallbackReason> {
    let bound = opts.min_contract_gas.max(
        opts.min_contract_gas_per_tx
            .saturating_mul(txs.len() as u64),
    );
    if bound == 0 {
        return None;
    }
    let contract_gas = txs
        .iter()
        .filter(|t| t.kind.is_create() || !t.data.is_empty())
        .map(|t| t.gas_limit)
        .fold(0, u64::saturating_add);
    (contract_gas < bound).then_some(FallbackReason::MostlyTransfers { contract_gas })
}

/// Transactions per sender.
///
/// Plain transfers count too, although their senders are read lazily and a chain of them does
/// not serialise the block: on the mainnet blocks where one sender sends most transactions
/// (mining pools paying out, 650-1,400 transfers), parallel execution still measured 0.7-0.8x
/// of sequential, from the per-transaction bookkeeping on transactions this cheap.
fn sender_counts(txs: &[TxEnv]) -> HashMap<Address, usize> {
    let mut counts: HashMap<Address, usize> = HashMap::default();
    for tx in txs {
        *counts.entry(tx.caller).or_default() += 1;
    }
    counts
}

/// The sender of a plain transfer whose recipient may be read lazily
/// ([`Executor::lazy_candidate`]), with its nonce and maximum spending, if the executor may read
/// that sender lazily too: no input, before Prague (from then on an account without code can be
/// given code and spend its balance through it), with every pre-execution check on, and a
/// maximum spending below 2^128. The executor reads it lazily only if the recipient turns out
/// to have no code.
fn lazy_sender_shape(cfg: &CfgEnv, tx: &TxEnv) -> Option<SenderCandidate> {
    use revm::context_interface::{Cfg, Transaction};
    let eligible = tx.data.is_empty()
        && !cfg.spec.is_enabled_in(SpecId::PRAGUE)
        && !cfg.is_nonce_check_disabled()
        && !cfg.is_balance_check_disabled()
        && !cfg.is_fee_charge_disabled()
        && !cfg.is_eip3607_disabled();
    if !eligible {
        return None;
    }
    let required = narrow(tx.max_balance_spending().ok()?)?;
    Some(SenderCandidate {
        address: tx.caller,
        nonce: tx.nonce,
        required,
    })
}

/// The block's dominant sender, if one sends more than `max_share` of its `transactions`.
fn sender_chain(
    senders: &HashMap<Address, usize>,
    transactions: usize,
    max_share: f64,
) -> Option<FallbackReason> {
    if max_share >= 1.0 {
        return None;
    }
    let (sender, sent) = senders.iter().max_by_key(|(a, n)| (**n, **a))?;
    (*sent as f64 > max_share * transactions as f64).then_some(FallbackReason::SenderChain {
        sender: *sender,
        transactions: *sent,
    })
}

/// Debug knob: with `EMBER_PARALLEL_STALL_MS=<ms>` set, a worker that finds no work for that
/// long while the block is not done prints the scheduler's state (indexes, active tasks, every
/// transaction's status and dependents) to stderr, once per block. Off by default.
fn stall_report_after() -> Option<Duration> {
    static LIMIT: OnceLock<Option<Duration>> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        std::env::var("EMBER_PARALLEL_STALL_MS")
            .ok()
            .and_then(|ms| ms.trim().parse().ok())
            .map(Duration::from_millis)
    })
}

/// A worker's buffers, recycled from execution to execution, and its counters.
#[derive(Default)]
struct Buffers {
    writes: TxWrites,
    locations: Vec<Location>,
    /// Added to the block's totals when the worker ends: shared counters bumped at every
    /// execution would bounce their cache line between the cores.
    counters: ParallelStats,
}

/// A transaction's latest completed execution: its result, and how long it took (ns; the
/// executions that count, against which [`ParallelStats::wasted_execution_time`] is
/// measured). One cache line per transaction, written by whichever worker executed it.
#[derive(Default)]
struct ResultSlot {
    result: Mutex<Option<TxResult>>,
    duration: AtomicU64,
}

enum Finish {
    Error(BlockError),
    Fallback(FallbackReason),
}

/// What one execution produced (its reads stay in the worker's database until recorded).
enum Outcome {
    Done(TxResult),
    Suspended,
    LazyMisuse,
    Hazard(FallbackReason),
}

struct Executor<'a, DB, P> {
    cfg: &'a CfgEnv,
    block: &'a BlockEnv,
    txs: &'a [TxEnv],
    db: &'a DB,
    provider: &'a P,
    opts: &'a ParallelOptions,
    precompiles: &'static Precompiles,
    mv: MvMemory,
    scheduler: Scheduler,
    codes: CodeCache,
    /// Per transaction, its latest execution's result and duration (on cache lines of their
    /// own).
    results: Box<[CachePadded<ResultSlot>]>,
    no_lazy: Box<[AtomicBool]>,
    /// Whether an execution read its sender lazily: an invalid transaction then ends the block
    /// in a sequential fallback (a lazily read sender's nonce or balance is only checked by the
    /// fold, which an invalid block does not reach, and an earlier transaction may be the
    /// invalid one).
    lazy_senders: AtomicBool,
    hazard: Mutex<Option<FallbackReason>>,
    /// Per address, the transaction whose execution wiped a contract there (early detection of
    /// [`ParallelOptions::fallback_on_repeated_wipe`]'s hazard).
    contract_wipes: Mutex<HashMap<Address, TxIdx>>,
    /// Whether the block completed so that its changes can be folded (decided once, by the
    /// first worker to finish).
    fold_allowed: OnceLock<bool>,
    /// The next shard whose slots a worker folds (first phase of the fold), and how many
    /// shards are done with that phase.
    next_slot_shard: AtomicUsize,
    slot_shards_done: AtomicUsize,
    /// Per shard, its slots' final writes by account shard (first phase of the fold; set once,
    /// read in place by the second phase).
    folded_slots: Box<[OnceLock<FoldedSlots>]>,
    /// Per account shard, its slot writes in all shards (the fold order's weights).
    slot_weights: Box<[AtomicUsize]>,
    /// The order in which the workers fold the shards' accounts (decided once, by the first
    /// worker to get there).
    fold_order: OnceLock<Vec<usize>>,
    next_shard: AtomicUsize,
    next_records: AtomicUsize,
    /// Per shard of the multi-version memory, its folded account changes.
    folded: Box<[Mutex<Option<FoldedShard>>]>,
    stall_reported: AtomicBool,
    /// The workers' counters, added up as each worker ends.
    totals: Mutex<ParallelStats>,
}

impl<'a, DB, P> Executor<'a, DB, P>
where
    DB: DatabaseRef + Sync,
    P: NativeProvider + Sync,
{
    fn new(
        cfg: &'a CfgEnv,
        block: &'a BlockEnv,
        txs: &'a [TxEnv],
        db: &'a DB,
        provider: &'a P,
        opts: &'a ParallelOptions,
    ) -> Self {
        let n = txs.len();
        let shards = shard_count(n);
        let mv = MvMemory::new(
            n,
            shards,
            opts.lazy_beneficiary.then_some(block.beneficiary),
        );
        Self {
            cfg,
            block,
            txs,
            db,
            provider,
            opts,
            precompiles: Precompiles::new(PrecompileSpecId::from_spec_id(cfg.spec)),
            mv,
            scheduler: Scheduler::new(n, opts.wait_on_running),
            codes: CodeCache::new(),
            results: (0..n).map(|_| CachePadded::default()).collect(),
            no_lazy: (0..n).map(|_| AtomicBool::new(false)).collect(),
            lazy_senders: AtomicBool::new(false),
            hazard: Mutex::new(None),
            contract_wipes: Mutex::new(HashMap::default()),
            fold_allowed: OnceLock::new(),
            next_slot_shard: AtomicUsize::new(0),
            slot_shards_done: AtomicUsize::new(0),
            folded_slots: (0..shards).map(|_| OnceLock::new()).collect(),
            slot_weights: (0..shards).map(|_| AtomicUsize::new(0)).collect(),
            fold_order: OnceLock::new(),
            next_shard: AtomicUsize::new(0),
            next_records: AtomicUsize::new(0),
            folded: (0..shards).map(|_| Mutex::new(None)).collect(),
            stall_reported: AtomicBool::new(false),
            totals: Mutex::new(ParallelStats::default()),
        }
    }

    /// Runs `f` with a fresh worker EVM.
    fn with_worker<R>(&self, f: impl FnOnce(&mut WorkerEvm<'_, DB, P>) -> R) -> R {
        let shared = Shared {
            db: self.db,
            mv: &self.mv,
            scheduler: &self.scheduler,
            codes: &self.codes,
        };
        let ctx = Context::mainnet()
            .with_block(self.block.clone())
            .with_cfg(self.cfg.clone())
            .with_db(TxDb::new(&shared, 0, None));
        let mut evm = EmberEvm::new(ctx.build_mainnet(), MemoProvider::new(self.provider));
        // The instructions that read a balance note it (native code's builtins do the same).
        let table = evm.inner.instruction.instruction_table_mut();
        table[opcode::BALANCE as usize] = Instruction::new(observe::balance_op);
        table[opcode::SELFBALANCE as usize] = Instruction::new(observe::selfbalance_op);
        table[opcode::SELFDESTRUCT as usize] = Instruction::new(observe::selfdestruct_op);
        f(&mut evm)
    }

    /// A worker's loop: tasks until the block is done, then its share of the fold.
    fn work(&self) {
        let start = Instant::now();
        let mut buffers = Buffers::default();
        self.with_worker(|evm| self.work_with(evm, &mut buffers));
        let fold_start = Instant::now();
        self.fold();
        let counters = &mut buffers.counters;
        counters.fold_time += fold_start.elapsed();
        counters.worker_time += start.elapsed();
        self.totals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add(counters);
    }

    /// Marks the sender account of every transaction whose sender sends more than one
    /// transaction in the block as an ESTIMATE of that transaction
    /// ([`ParallelOptions::seed_sender_estimates`]). Runs before any worker starts: a marker
    /// placed after its transaction's first execution would overwrite that execution's write,
    /// and one placed after a later transaction read the account would not make that read
    /// fail validation.
    fn seed_estimates(&self, senders: &HashMap<Address, usize>) {
        for (index, tx) in self.txs.iter().enumerate() {
            if senders.get(&tx.caller).is_some_and(|&n| n > 1)
                && self.lazy_candidates(index).1.is_none()
            {
                self.mv.seed_estimate(index, Location::Account(tx.caller));
            }
        }
    }

    /// After the block: folds shards of the multi-version memory into account changes (each
    /// worker takes shards until none is left) and frees the per-transaction records, so
    /// neither the fold nor the freeing is a serial tail.
    fn fold(&self) {
        let allowed = *self.fold_allowed.get_or_init(|| {
            self.scheduler.violation().is_none()
                && self
                    .hazard
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .is_none()
                && self.scheduler.first_unexecuted().is_none()
                && self.results.iter().all(|r| {
                    matches!(
                        *r.result.lock().unwrap_or_else(PoisonError::into_inner),
                        Some(Ok(_))
                    )
                })
        });
        if !allowed {
            return;
        }
        // First phase: every shard's slots, sorted by the shard of their account.
        let shards = self.mv.shard_count();
        loop {
            let k = self.next_slot_shard.fetch_add(1, Ordering::Relaxed);
            if k >= shards {
                break;
            }
            // Counted as done even if this worker panics (the database may), so that the
            // other one does not wait at the barrier below forever and the panic propagates.
            let _done = CountOnDrop(&self.slot_shards_done);
            let r = self.mv.fold_slots(k, self.db);
            if let Ok(fold) = &r {
                for (j, weight) in self.slot_weights.iter().enumerate() {
                    let len = fold.run(j).len();
                    if len > 0 {
                        weight.fetch_add(len, Ordering::Relaxed);
                    }
                }
            }
            // Each shard is taken once (`next_slot_shard`), so this is the only value set.
            let _ = self.folded_slots[k].set(r);
        }
        // The second phase needs every slot: wait for the other worker's last shards (each a
        // fraction of the fold, and the waiting worker has just finished its own).
        let mut spins = 0u32;
        while self.slot_shards_done.load(Ordering::Acquire) < shards {
            spins += 1;
            if spins < 1_000 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        // Second phase, heaviest shards first: the shard of a contract every transaction wrote
        // (a token, with its thousands of slots) can take longer than all the others together,
        // and taken last it left one worker folding alone (1.2 ms of a 13 ms ERC-20 block).
        let order = self.fold_order.get_or_init(|| {
            // Accounts spread evenly over the shards (by hash) and are not counted: locking
            // every shard to count them cost more than ordering gained on mainnet blocks.
            let weights: Vec<usize> = self
                .slot_weights
                .iter()
                .map(|w| w.load(Ordering::Relaxed))
                .collect();
            let mut order: Vec<usize> = (0..weights.len()).collect();
            order.sort_by_key(|&k| std::cmp::Reverse(weights[k]));
            order
        });
        while let Some(&k) = order.get(self.next_shard.fetch_add(1, Ordering::Relaxed)) {
            // The first phase's results are final here, and read without locks.
            let runs: Vec<&[SlotWrite]> = self
                .folded_slots
                .iter()
                .filter_map(|slot| match slot.get() {
                    Some(Ok(fold)) => Some(fold.run(k)).filter(|run| !run.is_empty()),
                    _ => None,
                })
                .collect();
            // Repeated contract wipes need no check here: with the fallback on, the second
            // one to be recorded has already halted the block (`note_contract_wipe`).
            let db = WithCodes {
                db: self.db,
                codes: &self.codes,
            };
            let r = self.mv.fold_accounts(k, &db, &runs);
            *self.folded[k]
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(r);
        }
        const CHUNK: usize = 256;
        loop {
            let start = self.next_records.fetch_add(CHUNK, Ordering::Relaxed);
            if start >= self.mv.block_size() {
                break;
            }
            self.mv
                .clear_records(start..(start + CHUNK).min(self.mv.block_size()));
        }
    }

    /// Records a contract wipe by `tx` at `address`; a wipe by another transaction at the
    /// same address is the repeated-wipe hazard: stop now rather than after the whole block.
    fn note_contract_wipe(&self, tx: TxIdx, address: Address) -> Option<FallbackReason> {
        let mut wipes = self
            .contract_wipes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match wipes.entry(address) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(tx);
                None
            }
            std::collections::hash_map::Entry::Occupied(o) => {
                (*o.get() != tx).then_some(FallbackReason::RepeatedWipe(address))
            }
        }
    }

    fn work_with(&self, evm: &mut WorkerEvm<'_, DB, P>, buffers: &mut Buffers) {
        let mut task: Option<Task> = None;
        let stall = stall_report_after();
        let mut idle_since = None;
        while !self.scheduler.done() {
            task = match task {
                Some(Task::Execute(version)) => self.try_execute(evm, buffers, version),
                Some(Task::Validate(version)) => self.validate(version, &mut buffers.counters),
                None => {
                    let epoch = self.scheduler.idle_epoch();
                    let next = self.scheduler.next_task();
                    if next.is_none() && !self.scheduler.has_indexes_left() {
                        if let Some(limit) = stall {
                            self.report_stall(limit, &mut idle_since);
                        }
                        let idle_start = Instant::now();
                        self.scheduler.wait_for_work(epoch, self.opts.idle_spin);
                        buffers.counters.idle_time += idle_start.elapsed();
                    } else {
                        idle_since = None;
                    }
                    next
                }
            };
        }
    }

    /// Prints the scheduler's state once per block when a worker has found no work for
    /// `limit` (see [`stall_report_after`]).
    fn report_stall(&self, limit: Duration, idle_since: &mut Option<Instant>) {
        let since = *idle_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= limit && !self.stall_reported.swap(true, Ordering::Relaxed) {
            eprintln!(
                "ember parallel: a worker found no work for {limit:?} and the block is not done\n{}",
                self.scheduler.debug_state()
            );
        }
    }

    /// The recipient whose balance a plain transfer may credit lazily.
    fn lazy_candidate(&self, index: usize) -> Option<(Address, U256)> {
        let tx = &self.txs[index];
        if !self.opts.lazy_transfers || self.no_lazy[index].load(Ordering::Relaxed) {
            return None;
        }
        let TxKind::Call(to) = tx.kind else {
            return None;
        };
        let eligible = !tx.value.is_zero()
            && to != tx.caller
            && to != self.block.beneficiary
            && !self.cfg.spec.is_enabled_in(SpecId::AMSTERDAM)
            && tx.authorization_list.is_empty()
            && !self.precompiles.contains(&to);
        eligible.then_some((to, tx.value))
    }

    /// The recipient a plain transfer may credit lazily, and the sender it may debit lazily
    /// (both only if the recipient has no code).
    fn lazy_candidates(&self, index: usize) -> (Option<(Address, U256)>, Option<SenderCandidate>) {
        let recipient = self.lazy_candidate(index);
        let sender = recipient.and_then(|_| lazy_sender_shape(self.cfg, &self.txs[index]));
        (recipient, sender)
    }

    fn execute(
        &self,
        evm: &mut WorkerEvm<'_, DB, P>,
        writes: &mut TxWrites,
        counters: &mut ParallelStats,
        version: Version,
    ) -> Outcome {
        let index = version.tx;
        let (recipient, sender) = self.lazy_candidates(index);
        let unobserved_except = (self.opts.lazy_contract_balances
            && !self.cfg.spec.is_enabled_in(SpecId::PRAGUE))
        .then(|| [self.txs[index].caller, self.block.beneficiary]);
        let tracking = unobserved_except.map(|_| observe::Tracking::start());
        evm.inner.ctx.journaled_state.database.begin(
            index,
            recipient,
            sender,
            unobserved_except,
            !self.no_lazy[index].load(Ordering::Relaxed),
        );
        evm.inner.ctx.set_tx(self.txs[index].clone());
        // revm parks a database error raised inside an instruction in the context and takes it
        // at the end of execution; an execution that failed earlier on another database error
        // (a suspension by the beneficiary read, say) returns before that and leaves it parked.
        // The next execution on this EVM must not inherit it.
        evm.inner.ctx.error = Ok(());
        let mut handler = LazyRewardHandler::<_, EVMError<TxDbError, InvalidTransaction>, _>::new(
            self.opts.lazy_beneficiary,
        );
        let result = handler.run(evm);
        let state = evm.finalize();
        counters.native_runs += evm.stats.native_runs.replace(0);
        counters.interpreted_runs += evm.stats.interpreted_runs.replace(0);
        let db = &mut evm.inner.ctx.journaled_state.database;
        if db.suspended.is_some() {
            return Outcome::Suspended;
        }
        if let Some(address) = db.overflow {
            return Outcome::Hazard(FallbackReason::BalanceOverflow(address));
        }
        let lazy = db.lazy.take();
        let sender = db.lazy_sender.take();
        writes.entries.clear();
        // A lazy sender is only sound if nothing but the transfer ran: the recipient must have
        // been read lazily too (it could have changed between the two reads).
        if sender.is_some() && lazy.is_none() {
            return Outcome::LazyMisuse;
        }
        match result {
            Ok(result) => {
                if let (Some(tracking), false) = (&tracking, db.unobserved.is_empty()) {
                    // Contract reads whose balance the execution did not observe depend on the
                    // code only; their balance changes become credits.
                    tracking.take(&mut db.observed);
                    let observed = &db.observed;
                    let mut misused = false;
                    db.unobserved.retain_mut(|u| {
                        let credit = if observed.contains(&u.address) {
                            None
                        } else {
                            state
                                .get(&u.address)
                                .map_or(Some(U256::ZERO), |a| unobserved_credit(a, u))
                        };
                        // An inexact read whose balance mattered: run again, reading exactly.
                        misused |= credit.is_none() && !u.exact;
                        match credit {
                            Some(credit) => {
                                u.credit = credit;
                                true
                            }
                            None => false,
                        }
                    });
                    if misused {
                        return Outcome::LazyMisuse;
                    }
                    for u in db.unobserved.iter().filter(|u| u.exact) {
                        db.reads[u.read] = Read::AccountCode {
                            address: u.address,
                            code_hash: u.code_hash,
                        };
                    }
                }
                let credit = handler.credit.get();
                match extract_writes(
                    &state,
                    credit.as_slice(),
                    lazy.as_ref(),
                    sender.as_ref(),
                    &db.unobserved,
                    writes,
                ) {
                    Ok(()) => {
                        if sender.is_some() {
                            self.lazy_senders.store(true, Ordering::Relaxed);
                        }
                        Outcome::Done(Ok(result))
                    }
                    Err(_) => Outcome::LazyMisuse,
                }
            }
            Err(error) => Outcome::Done(Err(BlockError::from_evm(index, error, |e| e.to_string()))),
        }
    }

    fn try_execute(
        &self,
        evm: &mut WorkerEvm<'_, DB, P>,
        buffers: &mut Buffers,
        version: Version,
    ) -> Option<Task> {
        loop {
            buffers.counters.executions += 1;
            if version.incarnation > 0 {
                buffers.counters.reexecutions += 1;
            }
            let start = Instant::now();
            let outcome = self.execute(evm, &mut buffers.writes, &mut buffers.counters, version);
            let elapsed = start.elapsed();
            buffers.counters.execution_time += elapsed;
            match outcome {
                Outcome::Done(result) => {
                    let writes = &mut buffers.writes;
                    if self.opts.fallback_on_repeated_wipe {
                        let hazard = writes.entries.iter().find_map(|(location, value)| {
                            match (location, value) {
                                (Location::Account(a), WriteValue::Account(info, kind))
                                    if kind.is_contract_wipe(info.as_ref()) =>
                                {
                                    self.note_contract_wipe(version.tx, *a)
                                }
                                _ => None,
                            }
                        });
                        if let Some(reason) = hazard {
                            return self.halt_with(reason);
                        }
                    }
                    // Accounts are recorded without their code (readers attach their own copy:
                    // `WorkerCodes`); code deployed here goes to the shared cache first, for
                    // other workers and the fold.
                    let local = &evm.inner.ctx.journaled_state.database.codes;
                    for (_, value) in &mut writes.entries {
                        if let WriteValue::Account(Some(info), _) = value {
                            if let Some(code) = info.code.take() {
                                if info.code_hash != KECCAK_EMPTY && !local.knows(&info.code_hash) {
                                    self.codes.insert(info.code_hash, code);
                                }
                            }
                        }
                    }
                    let slot = &self.results[version.tx];
                    *slot.result.lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
                    slot.duration
                        .store(elapsed.as_nanos() as u64, Ordering::Relaxed);
                    let reads = &mut evm.inner.ctx.journaled_state.database.reads;
                    let record_start = Instant::now();
                    let wrote_new_path =
                        self.mv
                            .record(version, reads, writes, &mut buffers.locations);
                    buffers.counters.record_time += record_start.elapsed();
                    return self.scheduler.finish_execution(version, wrote_new_path);
                }
                Outcome::Suspended => return None,
                Outcome::LazyMisuse => {
                    self.no_lazy[version.tx].store(true, Ordering::Relaxed);
                    buffers.counters.lazy_retries += 1;
                }
                Outcome::Hazard(reason) => return self.halt_with(reason),
            }
        }
    }

    /// Stops the block for a sequential fallback.
    fn halt_with(&self, reason: FallbackReason) -> Option<Task> {
        self.hazard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(reason);
        self.scheduler.halt();
        None
    }

    fn pre_code_hash(&self, address: &Address) -> Option<B256> {
        self.mv
            .pre_account(address, || pre_account(self.db, &self.codes, *address))
            .ok()
            .map(|info| info.map_or(KECCAK_EMPTY, |i| i.code_hash))
    }

    fn validate(&self, version: Version, counters: &mut ParallelStats) -> Option<Task> {
        counters.validations += 1;
        let start = Instant::now();
        let valid = self.mv.validate(version.tx, |a| self.pre_code_hash(a));
        let aborted = !valid && self.scheduler.try_validation_abort(version);
        if aborted {
            counters.validation_failures += 1;
            self.mv.convert_writes_to_estimates(version.tx);
        }
        counters.validation_time += start.elapsed();
        self.scheduler.finish_validation(version.tx, aborted)
    }

    fn stats(&self, threads: usize) -> ParallelStats {
        let totals = self
            .totals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let kept: u64 = self
            .results
            .iter()
            .map(|slot| slot.duration.load(Ordering::Relaxed))
            .sum();
        ParallelStats {
            threads,
            fallback: None,
            dependency_waits: self.scheduler.waits.load(Ordering::Relaxed),
            dependency_suspensions: self.scheduler.suspensions.load(Ordering::Relaxed),
            wasted_execution_time: totals
                .execution_time
                .saturating_sub(Duration::from_nanos(kept)),
            ..totals
        }
    }

    /// Collects the committed results and folds the writes into the block's changes.
    fn finish(self) -> Result<(Vec<TxOutput>, Vec<AccountChange>), Finish> {
        if let Some(message) = self.scheduler.violation() {
            return Err(Finish::Error(BlockError::Custom { index: 0, message }));
        }
        if let Some(reason) = self
            .hazard
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
        {
            return Err(Finish::Fallback(reason));
        }
        if let Some(index) = self.scheduler.first_unexecuted() {
            return Err(Finish::Error(BlockError::Custom {
                index,
                message: format!(
                    "internal: the parallel scheduler finished with transaction {index} not \
                     executed\n{}",
                    self.scheduler.debug_state()
                ),
            }));
        }
        let mut transactions = Vec::with_capacity(self.txs.len());
        let mut cumulative_gas_used = 0u64;
        for (index, slot) in self.results.into_vec().into_iter().enumerate() {
            match slot
                .into_inner()
                .result
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner)
            {
                Some(Ok(result)) => {
                    cumulative_gas_used = cumulative_gas_used.saturating_add(result.tx_gas_used());
                    transactions.push(TxOutput {
                        result,
                        cumulative_gas_used,
                    });
                }
                Some(Err(_)) if self.lazy_senders.load(Ordering::Relaxed) => {
                    return Err(Finish::Fallback(FallbackReason::InvalidWithLazySenders(
                        index,
                    )))
                }
                Some(Err(error)) => return Err(Finish::Error(error)),
                None => {
                    return Err(Finish::Error(BlockError::Custom {
                        index,
                        message: "internal: transaction was never executed".to_string(),
                    }))
                }
            }
        }
        for slot in self.folded_slots.into_vec() {
            folded(slot.into_inner(), "storage")?;
        }
        let mut parts = Vec::with_capacity(self.folded.len());
        for slot in self.folded.into_vec() {
            parts.push(folded(
                slot.into_inner().unwrap_or_else(PoisonError::into_inner),
                "state",
            )?);
        }
        Ok((transactions, merge_sorted(parts)))
    }
}

/// A shard's fold result (of the block's `what`: its storage or its state) as the block's
/// outcome: an overflow falls back to sequential execution, a missing result is an internal
/// error.
fn folded<T>(result: Option<Result<T, FoldFailure>>, what: &str) -> Result<T, Finish> {
    match result {
        Some(Ok(part)) => Ok(part),
        Some(Err(FoldFailure::Overflow(a))) => {
            Err(Finish::Fallback(FallbackReason::BalanceOverflow(a)))
        }
        Some(Err(FoldFailure::Unmet(a))) => Err(Finish::Fallback(FallbackReason::SenderState(a))),
        Some(Err(FoldFailure::Error(e))) => Err(Finish::Error(e)),
        None => Err(Finish::Error(BlockError::Custom {
            index: 0,
            message: format!("internal: a shard of the block's {what} was not folded"),
        })),
    }
}

/// Merges lists of account changes, each sorted by address (the shards' folds; an address
/// lives in one shard), into one sorted list, moving each change once.
fn merge_sorted(parts: Vec<Vec<AccountChange>>) -> Vec<AccountChange> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut out = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    let mut parts: Vec<_> = parts
        .into_iter()
        .map(|p| p.into_iter().peekable())
        .collect();
    let mut heads: BinaryHeap<Reverse<(Address, usize)>> = parts
        .iter_mut()
        .enumerate()
        .filter_map(|(i, p)| p.peek().map(|c| Reverse((c.address, i))))
        .collect();
    while let Some(Reverse((_, i))) = heads.pop() {
        out.extend(parts[i].next());
        if let Some(next) = parts[i].peek() {
            heads.push(Reverse((next.address, i)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evm::NoNative;
    use crate::parallel::mvmemory::TxIdx;
    use revm::bytecode::Bytecode;
    use revm::database::{CacheDB, EmptyDB};
    use revm::primitives::Bytes;
    use revm::state::AccountInfo;

    #[test]
    fn small_blocks_get_fewer_shards() {
        let counts: Vec<usize> = [0, 2, 60, 116, 256, 1980, 100_000]
            .into_iter()
            .map(shard_count)
            .collect();
        assert_eq!(counts, vec![8, 8, 8, 16, 32, 64, 64]);
    }

    #[test]
    fn merged_changes_are_sorted() {
        let change = |n: u8| AccountChange {
            address: Address::with_last_byte(n),
            account: None,
            created: false,
            destroyed: true,
            storage: Vec::new(),
        };
        let parts = vec![
            vec![change(1), change(4), change(9)],
            Vec::new(),
            vec![change(2), change(3)],
            vec![change(0), change(10)],
        ];
        let merged: Vec<u8> = merge_sorted(parts)
            .iter()
            .map(|c| c.address.0[19])
            .collect();
        assert_eq!(merged, vec![0, 1, 2, 3, 4, 9, 10]);
    }

    /// `sstore(0, balance(calldata[0..32]))`
    const READ_BALANCE: &[u8] = &[0x60, 0x00, 0x35, 0x31, 0x60, 0x00, 0x55, 0x00];

    fn tx(caller: Address, to: Address, value: u64, data: Vec<u8>, gas_limit: u64) -> TxEnv {
        TxEnv {
            caller,
            kind: TxKind::Call(to),
            value: U256::from(value),
            data: data.into(),
            gas_limit,
            gas_price: 7,
            chain_id: None,
            ..TxEnv::default()
        }
    }

    /// Regression test for a hang (and, with other tasks running, an early end of the block):
    /// revm keeps going after a database error in an instruction of the outermost frame and
    /// reads the beneficiary's account while paying its reward. That read hit a second
    /// ESTIMATE, and the already suspended execution was registered as a dependent again and
    /// released its active task a second time.
    #[test]
    fn a_suspended_execution_is_not_suspended_again_by_post_execution_reads() {
        let coinbase = Address::repeat_byte(0xc0);
        let (a, b, c, reader) = (
            Address::repeat_byte(0x0a),
            Address::repeat_byte(0x0b),
            Address::repeat_byte(0x0c),
            Address::repeat_byte(0x10),
        );
        let mut db = CacheDB::new(EmptyDB::default());
        for funded in [coinbase, a, c] {
            db.insert_account_info(
                funded,
                AccountInfo {
                    balance: U256::from(10u64.pow(18)),
                    ..AccountInfo::default()
                },
            );
        }
        let code = Bytecode::new_raw(Bytes::from_static(READ_BALANCE));
        db.insert_account_info(
            reader,
            AccountInfo {
                code_hash: code.hash_slow(),
                code: Some(code),
                ..AccountInfo::default()
            },
        );
        // London: the beneficiary is not warmed before execution. A gas price equal to the
        // base fee: a zero reward, which is paid eagerly, i.e. by reading the beneficiary.
        let cfg = CfgEnv::new_with_spec(SpecId::LONDON);
        let block = BlockEnv {
            beneficiary: coinbase,
            basefee: 7,
            gas_limit: 30_000_000,
            ..BlockEnv::default()
        };
        let word = B256::left_padding_from(a.as_slice()).to_vec();
        let txs = [
            // Seeded ESTIMATE on the beneficiary's account.
            tx(coinbase, b, 1, Vec::new(), 21_000),
            // Seeded ESTIMATE on `a`.
            tx(a, b, 1, Vec::new(), 21_000),
            // BALANCE(a) suspends on transaction 1, then the reward reads the beneficiary.
            tx(c, reader, 0, word, 100_000),
        ];
        let opts = ParallelOptions {
            seed_sender_estimates: true,
            ..ParallelOptions::always_parallel(2)
        };
        let executor = Executor::new(&cfg, &block, &txs, &db, &NoNative, &opts);
        // The markers `execute_block` seeds for senders of several transactions.
        executor.mv.seed_estimate(0, Location::Account(coinbase));
        executor.mv.seed_estimate(1, Location::Account(a));
        let version = executor.scheduler.start_execution_for_test(2);
        assert_eq!(
            executor.with_worker(|evm| executor.try_execute(evm, &mut Buffers::default(), version)),
            None
        );
        assert_eq!(executor.scheduler.active_tasks(), 0);
        assert_eq!(executor.scheduler.dependents_of(1), vec![2]);
        assert_eq!(executor.scheduler.dependents_of(0), Vec::<TxIdx>::new());
        assert_eq!(executor.scheduler.suspensions.load(Ordering::Relaxed), 1);
        assert!(!executor.scheduler.done());
    }
}
