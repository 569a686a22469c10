//! Block-STM parallel block execution (Gelashvili et al., "Block-STM: Scaling Blockchain
//! Execution by Turning Ordering Curse to a Performance Blessing", 2022) on top of
//! [`EmberEvm`](crate::EmberEvm).
//!
//! [`execute_block`] runs a block's transactions speculatively on several threads against a
//! multi-version memory (module `mvmemory`), validates every execution's reads, re-executes on
//! conflict, and produces exactly what [`execute_block_sequential`] (one transaction after the
//! other over revm's `State`) produces: the same results, gas, logs and state changes.
//!
//! Two kinds of balance updates are *lazy*, recorded as credits instead of read-modify-writes,
//! so that they do not serialise the block: the fee every transaction pays the beneficiary, and
//! the value of a plain transfer to an account without code. A transaction that reads such an
//! account's balance (as the sender, via `BALANCE`/`SELFBALANCE`, as a call target…) sees the
//! exact value: its read walks every earlier credit and depends on all of them.
//!
//! The sender of such a plain transfer (before Prague) is lazy too: revm is handed the
//! transaction's nonce and a balance above anything it can spend, and the transaction records a
//! *debit* (what it needed: the nonce and its maximum spending; what it did: fees and value
//! taken, nonce bumped) instead of a read-modify-write, so a chain of transfers from one sender
//! (an exchange's withdrawals, a pool's payouts) does not serialise the block. Exact readers see
//! the debits like credits; the fold checks each debit's nonce and balance against the state
//! before it, and a block where one does not hold, or which ends in an invalid transaction,
//! runs again sequentially for the exact error.
//!
//! The sender account of every other transaction whose sender sends several transactions in the
//! block is marked as an ESTIMATE of that transaction before execution starts (every valid
//! transaction writes it), so the sender's next transaction waits for it instead of running on
//! a stale nonce: a read that hits an ESTIMATE
//! suspends the reader until that transaction has run again (the paper's dependency list), or,
//! with [`ParallelOptions::wait_on_running`], waits on a condition variable while that
//! transaction is being executed.
//!
//! Small blocks, blocks of mostly plain transfers, blocks of one dominant sender, and blocks
//! where a hazard is detected run sequentially; [`ParallelStats`] says which and why.
//!
//! The worker threads are kept from block to block (a pool per thread count, created on first
//! use), and the calling thread is one of the workers.
//!
//! Debugging: with `EMBER_PARALLEL_STALL_MS=<ms>` in the environment, a worker that finds no
//! work for that long while the block is not done prints the scheduler's state (indexes, active
//! tasks, every transaction's status and dependents) to stderr.

mod changes;
mod db;
mod executor;
mod handler;
pub(crate) mod mvmemory;
mod pool;
mod scheduler;
mod sequential;
mod speculate;
mod writes;

pub use changes::{changes_to_evm_state, AccountChange, AccountState};
pub use executor::execute_block;
pub use sequential::execute_block_sequential;

use revm::context_interface::result::{
    EVMError, ExecutionResult, HaltReason, InvalidHeader, InvalidTransaction,
};
use revm::primitives::Address;

/// Knobs of [`execute_block`]. Every field documents its default.
#[derive(Clone, Debug)]
pub struct ParallelOptions {
    /// Worker threads. Default: the machine's available parallelism. Below 2 the block runs
    /// sequentially.
    pub threads: usize,
    /// Blocks with fewer transactions run sequentially (the threads would cost more than they
    /// save). Default: [`ParallelOptions::DEFAULT_MIN_TRANSACTIONS`].
    pub min_transactions: usize,
    /// Blocks whose transactions' gas limits add up to less run sequentially. Default:
    /// [`ParallelOptions::DEFAULT_MIN_GAS`].
    pub min_gas: u64,
    /// Blocks whose *contract gas* — the gas limits of the transactions that create a
    /// contract or carry input data — adds up to less than this, or to less than
    /// [`ParallelOptions::min_contract_gas_per_tx`] per transaction, run sequentially: they
    /// are mostly plain transfers. Default: [`ParallelOptions::DEFAULT_MIN_CONTRACT_GAS`].
    pub min_contract_gas: u64,
    /// See [`ParallelOptions::min_contract_gas`]. Default:
    /// [`ParallelOptions::DEFAULT_MIN_CONTRACT_GAS_PER_TX`].
    pub min_contract_gas_per_tx: u64,
    /// Record the beneficiary's fee as a lazy credit. Default `true`; `false` makes every
    /// transaction depend on the previous one through the beneficiary's balance.
    pub lazy_beneficiary: bool,
    /// Record the value of a plain transfer to an account without code as a lazy credit, and
    /// (before Prague) the transfer's change to its sender as a lazy debit.
    /// Default `true`.
    pub lazy_transfers: bool,
    /// Before Prague, record an exact read of a contract account (other than the sender's and
    /// the beneficiary's) as depending on its code only when the execution did not observe the
    /// account's balance (`BALANCE`, `SELFBALANCE`, `SELFDESTRUCT`, a value transfer out of it),
    /// and the value it received as a lazy credit: deposits into one contract (WETH) then no
    /// longer conflict with each other or with the contract's other callers. Default `true`.
    pub lazy_contract_balances: bool,
    /// Fall back to sequential execution when a contract's storage is wiped by more than one
    /// transaction (self-destruct and redeploy at the same address, create then destroy in a
    /// later transaction), detected as soon as the second wipe is recorded. Default `false`:
    /// the multi-version memory models these cases exactly (wipes are a location of their own,
    /// read by every storage read of the account), and measured on the three mainnet blocks
    /// where this happens (`ember block ... --compare` with and without `--wipe-fallback`),
    /// the fallback cost 0.67-0.80x of sequential time on two of them where the parallel path
    /// gained 1.16-1.38x (the third, 116525, is small and below 1x either way).
    pub fallback_on_repeated_wipe: bool,
    /// Before execution, mark the sender account of every transaction whose sender sends
    /// several transactions in the block as an ESTIMATE of that transaction (every valid
    /// transaction writes it), so the sender's next transaction waits for the writer instead
    /// of executing on a stale nonce and being re-executed. Default `true`.
    pub seed_sender_estimates: bool,
    /// Blocks where one sender sends more than this share of the transactions run
    /// sequentially: each of its transactions waits for the previous one (nonce and balance),
    /// so the block is mostly a chain. Default:
    /// [`ParallelOptions::DEFAULT_MAX_SENDER_SHARE`].
    pub max_sender_share: f64,
    /// A read that hits the ESTIMATE of a transaction being executed right now waits for that
    /// execution to finish (then reads its result) instead of abandoning the reading execution
    /// and registering as its dependent (the paper's behaviour). Default `false`: measured on
    /// the mainnet blocks with two threads, waiting idles a core for the rest of the blocking
    /// transaction (491 waits over the 68 blocks) and was about 12% slower than suspending
    /// (three alternating runs each), which lets the worker run other transactions meanwhile
    /// at the cost of more re-executions.
    pub wait_on_running: bool,
    /// How long a worker that finds no work spins, watching the scheduler, before it sleeps on
    /// a condition variable. Default [`ParallelOptions::DEFAULT_IDLE_SPIN`]; zero sleeps at once.
    pub idle_spin: std::time::Duration,
    /// Which blocks run first as speculative chunks: one run of consecutive transactions per
    /// thread, each executed sequentially from the pre-state, kept if no chunk read a
    /// location an earlier chunk wrote; on the first such conflict every chunk stops and the
    /// block runs as it would have without speculation. Default [`Speculation::Transfers`].
    pub speculation: Speculation,
}

/// See [`ParallelOptions::speculation`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Speculation {
    /// Never.
    Off,
    /// Blocks of plain transfers (no input, to accounts without code) whose chunks share no
    /// account (sender or recipient), checked against the pre-state before execution: such
    /// chunks cannot conflict. The heuristics run these blocks sequentially otherwise
    /// (Block-STM's per-transaction cost is about that of a transfer).
    Transfers,
    /// Every block with two or more transactions and threads, whatever the heuristics say
    /// (tests: the randomized blocks exercise conflicts and abandoned speculations). Measured
    /// on the mainnet blocks, abandoned speculations cost more than the successful ones gain.
    Always,
}

impl ParallelOptions {
    /// Default of [`ParallelOptions::min_transactions`].
    ///
    /// Measured (interpreter, release build, when threads were spawned per block; the workers
    /// are now kept in a pool, which removed most of the thread part): a parallel run costs a
    /// fixed ~100 µs (thread start and join, per-block tables; a two-transfer block takes
    /// ~0.1 ms in parallel) plus
    /// 2-5 µs of CPU per transaction (multi-version bookkeeping and validation) over
    /// sequential execution, which runs a plain transfer in ~5 µs and a mainnet transaction in
    /// ~20 µs on average (797 Mgas of the 68 mainnet blocks in ~0.37 s). Blocks this small
    /// never pay for that; [`ParallelOptions::DEFAULT_MIN_GAS`] is the stronger bound.
    pub const DEFAULT_MIN_TRANSACTIONS: usize = 8;
    /// Default of [`ParallelOptions::min_gas`] (the sum of the transactions' gas limits, known
    /// before execution). Measured with `ember block ../shared/mainnet --compare --threads 2`:
    /// the five mainnet blocks whose limits add up to less than 4M gas (0.4-1.9M gas used,
    /// under 1 ms of sequential work) ran at 0.23-0.72x in parallel, the fixed cost of a
    /// parallel run (threads, per-block tables, the fold) being a large part of their time;
    /// the next ones (4.3M and more) broke even or gained.
    pub const DEFAULT_MIN_GAS: u64 = 4_000_000;
    /// Default of [`ParallelOptions::min_contract_gas_per_tx`], measured with two threads on
    /// the 2-core benchmark machine. A plain transfer costs Block-STM about twice the CPU of
    /// sequential execution (reads through the multi-version memory, recording, validation,
    /// the fold: 40,460 against 19,680 perf samples for the same 300 runs of the synthetic
    /// 100 Mgas transfer block), so two threads cannot gain on a block of transfers. With
    /// `ember block ../shared/mainnet --compare -t 2 --always-parallel`, two runs: every block
    /// whose contract gas was under 20k per transaction ran at 0.28-1.00x in parallel except
    /// one at 0.93-1.25x (15274915). Of the blocks above both bounds, the lowest were 4370000
    /// (0.81-1.04x), 19929064 (0.95-1.19x), the one-transaction 15537393 (0.99-1.00x) and
    /// 9069000 (1.01-1.19x), the rest 1.02x or better, apart from blocks other defaults
    /// already run sequentially (1796867 and 12520364: one dominant sender; 2688148: four
    /// transactions; 2675000: under 4M gas). More threads would divide the per-transaction
    /// overhead further; that is not measured here, so lower this when running with more.
    pub const DEFAULT_MIN_CONTRACT_GAS_PER_TX: u64 = 20_000;
    /// Default of [`ParallelOptions::min_contract_gas`]: the 14 mainnet blocks with less
    /// contract gas than this (0-2.3M) ran at 0.28-0.98x in parallel (two runs, as above); of
    /// those with 2-2.3M, 116525 ran at 0.59-0.73x, 3356896 at 0.71-0.91x, 2674998 at
    /// 0.81-0.93x, each well under a millisecond of sequential work.
    pub const DEFAULT_MIN_CONTRACT_GAS: u64 = 3_000_000;
    /// Default of [`ParallelOptions::max_sender_share`]. Measured on the 68 mainnet blocks: the
    /// blocks of one dominant sender (mining-pool payouts from the beneficiary, exchange
    /// withdrawals: 91-99% of their transactions from one account) ran 2-6x slower in parallel
    /// with two threads. Below them: 1796867 (57%, 0.59-0.61x in parallel), 2675000 (40%,
    /// sequential anyway: too little gas), 4370000 (33%: its chain of 32 transactions is a
    /// third of the block; 0.81-1.18x across sessions, and 0.81x, 0.99x, 1.02x in three
    /// `--compare -t 2 --repeat 15` runs of 2026-11-22, so it gains nothing on average and was
    /// the one block run in parallel that kept falling below 0.95x), then 22% and less in
    /// blocks of at most 9 transactions (sequential anyway), 16% (4330482, mostly transfers)
    /// and 14% (8038679, 1.35x in parallel). 0.3 separates the two groups.
    pub const DEFAULT_MAX_SENDER_SHARE: f64 = 0.3;
    /// Default of [`ParallelOptions::idle_spin`]: work usually appears within microseconds
    /// (another worker finishing an execution or a validation), and a sleep costs a futex
    /// wake-up and a context switch on both sides. Measured with `ember block ../shared/mainnet
    /// --threads 2 --repeat 3 --idle-spin N`, alternating processes: 0 µs 2,395 Mgas/s (mean
    /// of 6 runs), 20 µs 2,444 (8 runs), 100 µs 2,593 (5 runs), with ±10% between runs.
    pub const DEFAULT_IDLE_SPIN: std::time::Duration = std::time::Duration::from_micros(100);

    /// Defaults with `threads` workers and no sequential fallback for small blocks (tests,
    /// benchmarks).
    pub fn always_parallel(threads: usize) -> Self {
        Self {
            threads,
            min_transactions: 0,
            min_gas: 0,
            min_contract_gas: 0,
            min_contract_gas_per_tx: 0,
            max_sender_share: 1.0,
            ..Self::default()
        }
    }
}

impl Default for ParallelOptions {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            min_transactions: Self::DEFAULT_MIN_TRANSACTIONS,
            min_gas: Self::DEFAULT_MIN_GAS,
            min_contract_gas: Self::DEFAULT_MIN_CONTRACT_GAS,
            min_contract_gas_per_tx: Self::DEFAULT_MIN_CONTRACT_GAS_PER_TX,
            lazy_beneficiary: true,
            lazy_transfers: true,
            lazy_contract_balances: true,
            fallback_on_repeated_wipe: false,
            seed_sender_estimates: true,
            max_sender_share: Self::DEFAULT_MAX_SENDER_SHARE,
            wait_on_running: false,
            idle_spin: Self::DEFAULT_IDLE_SPIN,
            speculation: Speculation::Transfers,
        }
    }
}

/// One transaction's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxOutput {
    /// What revm returned: status, gas, logs, output or halt reason.
    pub result: ExecutionResult<HaltReason>,
    /// Gas used by this and every earlier transaction of the block (the receipt's cumulative
    /// gas).
    pub cumulative_gas_used: u64,
}

/// A block's outcome.
#[derive(Clone, Debug)]
pub struct BlockOutput {
    /// Per transaction, in block order.
    pub transactions: Vec<TxOutput>,
    /// The block's state changes, sorted by address.
    pub changes: Vec<AccountChange>,
    /// How the block was executed.
    pub stats: ParallelStats,
}

impl BlockOutput {
    /// Gas used by the whole block.
    pub fn gas_used(&self) -> u64 {
        self.transactions
            .last()
            .map_or(0, |t| t.cumulative_gas_used)
    }

    /// Whether two outputs agree on everything but the statistics.
    pub fn same_outcome(&self, other: &BlockOutput) -> bool {
        self.transactions == other.transactions && self.changes == other.changes
    }
}

/// Why a block ran sequentially.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FallbackReason {
    /// [`execute_block_sequential`] was called.
    Requested,
    /// Fewer than two threads.
    SingleThread,
    /// Fewer transactions than [`ParallelOptions::min_transactions`].
    TooFewTransactions {
        /// Transactions in the block.
        transactions: usize,
    },
    /// Less gas than [`ParallelOptions::min_gas`].
    TooLittleGas {
        /// Sum of the transactions' gas limits.
        gas: u64,
    },
    /// Less contract gas than [`ParallelOptions::min_contract_gas`] allows: mostly plain
    /// transfers.
    MostlyTransfers {
        /// Sum of the gas limits of the transactions that create or carry input.
        contract_gas: u64,
    },
    /// One sender sends more than [`ParallelOptions::max_sender_share`] of the transactions.
    SenderChain {
        /// The sender.
        sender: Address,
        /// Its transactions.
        transactions: usize,
    },
    /// An account's storage was wiped by more than one transaction (see
    /// [`ParallelOptions::fallback_on_repeated_wipe`]).
    RepeatedWipe(Address),
    /// Lazy credits overflowed an account's balance (revm would keep the old balance, which
    /// lazy credits cannot reproduce).
    BalanceOverflow(Address),
    /// A plain transfer whose sender was read lazily needed another nonce or more balance
    /// than the sender had at that point of the block (the block is invalid as given:
    /// sequential execution reports the transaction's error).
    SenderState(Address),
    /// A transaction (this one) was invalid in a block where plain transfers read their senders
    /// lazily: an earlier transfer may be the invalid one (its sender's nonce and balance are
    /// only checked after the block), so sequential execution reports the block's error.
    InvalidWithLazySenders(usize),
    /// The worker threads could not be created (the error).
    NoThreads(String),
}

impl std::fmt::Display for FallbackReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FallbackReason::Requested => f.write_str("sequential execution requested"),
            FallbackReason::SingleThread => f.write_str("fewer than two threads"),
            FallbackReason::TooFewTransactions { transactions } => {
                write!(f, "only {transactions} transactions")
            }
            FallbackReason::TooLittleGas { gas } => write!(f, "only {gas} gas"),
            FallbackReason::MostlyTransfers { contract_gas } => {
                write!(
                    f,
                    "mostly transfers: {contract_gas} gas in contract transactions"
                )
            }
            FallbackReason::SenderChain {
                sender,
                transactions,
            } => write!(f, "{transactions} transactions from {sender}"),
            FallbackReason::RepeatedWipe(a) => {
                write!(f, "storage of {a} wiped by several transactions")
            }
            FallbackReason::BalanceOverflow(a) => write!(f, "balance overflow at {a}"),
            FallbackReason::SenderState(a) => {
                write!(
                    f,
                    "a lazily read sender ({a}) could not pay or had another nonce"
                )
            }
            FallbackReason::InvalidWithLazySenders(i) => write!(
                f,
                "transaction {i} invalid in a block with lazily read senders"
            ),
            FallbackReason::NoThreads(e) => write!(f, "no worker threads: {e}"),
        }
    }
}

/// Counters of one block execution.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParallelStats {
    /// Worker threads used (1 for sequential execution).
    pub threads: usize,
    /// Why the block ran sequentially, if it did (after a parallel attempt, the counters below
    /// still describe that attempt).
    pub fallback: Option<FallbackReason>,
    /// Transaction executions, re-executions included.
    pub executions: u64,
    /// Executions beyond the first of each transaction.
    pub reexecutions: u64,
    /// Validations run.
    pub validations: u64,
    /// Validations that failed and aborted the execution.
    pub validation_failures: u64,
    /// Reads that waited for a running execution of a lower transaction.
    pub dependency_waits: u64,
    /// Executions suspended on an ESTIMATE until the lower transaction re-ran.
    pub dependency_suspensions: u64,
    /// Executions repeated because a lazily read account (a transfer's recipient or sender, a
    /// contract with many credits) turned out to need an exact read.
    pub lazy_retries: u64,
    /// Frame runs served by native code.
    pub native_runs: u64,
    /// Frame runs served by the interpreter.
    pub interpreted_runs: u64,
    /// Time the workers spent executing transactions, summed over workers (zero when the block
    /// ran sequentially).
    pub execution_time: std::time::Duration,
    /// The part of `execution_time` lost to conflicts: executions that a later execution of
    /// the same transaction replaced (validation failed), or that were abandoned on reading an
    /// ESTIMATE (suspended until the lower transaction re-ran).
    pub wasted_execution_time: std::time::Duration,
    /// Time the workers spent recording executions' reads and writes in the multi-version
    /// memory, summed over workers.
    pub record_time: std::time::Duration,
    /// Time the workers spent validating read sets, summed over workers.
    pub validation_time: std::time::Duration,
    /// Time the workers spent idle, finding no task (waiting for other workers' executions or
    /// validations to open new work, or for the block's end), summed over workers.
    pub idle_time: std::time::Duration,
    /// Time the workers spent folding the multi-version memory into the block's state changes
    /// (and freeing it), summed over workers.
    pub fold_time: std::time::Duration,
    /// Time the workers were alive, summed over workers: execution, recording, validation,
    /// scheduling, idling and the final fold.
    /// `execution_time / worker_time` is how busy the threads were with useful or wasted
    /// (re-executed) transaction work.
    pub worker_time: std::time::Duration,
    /// Blocks run as speculative chunks ([`ParallelOptions::speculation`]), kept whole.
    pub speculated_blocks: u64,
    /// Speculations abandoned on a conflict (or an error) before the block ran otherwise.
    pub abandoned_speculations: u64,
    /// Wall time of the abandoned speculations.
    pub abandoned_speculation_time: std::time::Duration,
}

impl ParallelStats {
    /// Adds `other`'s counters and times to these (`threads` and `fallback` stay): the totals
    /// of several workers, or of several blocks.
    pub fn add(&mut self, other: &ParallelStats) {
        self.executions += other.executions;
        self.reexecutions += other.reexecutions;
        self.validations += other.validations;
        self.validation_failures += other.validation_failures;
        self.dependency_waits += other.dependency_waits;
        self.dependency_suspensions += other.dependency_suspensions;
        self.lazy_retries += other.lazy_retries;
        self.native_runs += other.native_runs;
        self.interpreted_runs += other.interpreted_runs;
        self.execution_time += other.execution_time;
        self.wasted_execution_time += other.wasted_execution_time;
        self.record_time += other.record_time;
        self.validation_time += other.validation_time;
        self.idle_time += other.idle_time;
        self.fold_time += other.fold_time;
        self.worker_time += other.worker_time;
        self.speculated_blocks += other.speculated_blocks;
        self.abandoned_speculations += other.abandoned_speculations;
        self.abandoned_speculation_time += other.abandoned_speculation_time;
    }
}

/// Why a block could not be executed. Both execution modes return the same error for the same
/// block: the first invalid transaction's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// A transaction failed validation (nonce, balance, gas limit, fee...).
    #[error("transaction {index} is invalid: {error}")]
    InvalidTransaction {
        /// Position in the block.
        index: usize,
        /// revm's reason.
        error: InvalidTransaction,
    },
    /// The block environment is invalid for a transaction.
    #[error("transaction {index}: invalid block header: {error}")]
    InvalidHeader {
        /// Position in the block.
        index: usize,
        /// revm's reason.
        error: InvalidHeader,
    },
    /// The pre-state database failed while executing a transaction.
    #[error("transaction {index}: database error: {message}")]
    Database {
        /// Position in the block.
        index: usize,
        /// The database's error.
        message: String,
    },
    /// revm reported another failure (e.g. a fatal precompile error).
    #[error("transaction {index}: {message}")]
    Custom {
        /// Position in the block.
        index: usize,
        /// revm's message.
        message: String,
    },
    /// The pre-state database failed while assembling the state changes.
    #[error("database error while collecting state changes: {message}")]
    State {
        /// The database's error.
        message: String,
    },
}

impl BlockError {
    /// Converts revm's error for transaction `index`; `db` renders the database error.
    pub(crate) fn from_evm<E>(
        index: usize,
        error: EVMError<E, InvalidTransaction>,
        db: impl FnOnce(E) -> String,
    ) -> Self {
        match error {
            EVMError::Transaction(error) => BlockError::InvalidTransaction { index, error },
            EVMError::Header(error) => BlockError::InvalidHeader { index, error },
            EVMError::Database(e) => BlockError::Database {
                index,
                message: db(e),
            },
            EVMError::Custom(message) => BlockError::Custom { index, message },
            EVMError::CustomAny(e) => BlockError::Custom {
                index,
                message: e.to_string(),
            },
        }
    }
}
