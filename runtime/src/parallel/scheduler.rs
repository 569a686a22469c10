//! The Block-STM collaborative scheduler (Gelashvili et al., 2022, algorithms 4 and 5):
//! execution and validation indexes that only move down when work must be redone, per-transaction
//! status with incarnation numbers, and dependency lists of transactions suspended on an
//! ESTIMATE.
//!
//! Two optional or small departures from the paper: with `wait_on_running`, a read that hits
//! the ESTIMATE of a transaction that is being executed right now waits for it on a condition
//! variable instead of abandoning its execution (the chain of such waits strictly descends in
//! transaction index and ends at a running execution, so it cannot deadlock); and an idle
//! worker spins for at most `ParallelOptions::idle_spin`, then sleeps on a condition variable
//! until the scheduler's state changes, instead of spinning indefinitely.

use super::mvmemory::{Incarnation, TxIdx, Version};
use crossbeam_utils::CachePadded;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    ReadyToExecute(Incarnation),
    Executing(Incarnation),
    Executed(Incarnation),
    Aborting(Incarnation),
}

/// A unit of work handed to a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Task {
    Execute(Version),
    Validate(Version),
}

/// What a read that hit an ESTIMATE should do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DependencyOutcome {
    /// The blocking transaction has finished an execution: read again.
    Retry,
    /// The reader was registered as a dependent and must abandon its execution.
    Suspended,
}

struct TxState {
    status: Mutex<Status>,
    changed: Condvar,
    /// Workers blocked on `changed`, counted under the `status` lock. std's futex `Condvar`
    /// makes a `FUTEX_WAKE` system call on every notification, waiter or not; status changes
    /// happen several times per execution and a waiter is rare, so notifiers check this first
    /// (profile of a parallel ERC-20 block: those wake-ups were 4% of the workers' time).
    waiters: AtomicUsize,
    dependents: Mutex<Vec<TxIdx>>,
}

impl TxState {
    /// Wakes the workers waiting on this transaction's status. Call with the `status` lock
    /// held (waiters register under it, so none can be missed).
    fn notify(&self) {
        if self.waiters.load(Ordering::Relaxed) > 0 {
            self.changed.notify_all();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The scheduler of one block.
///
/// The counters every task moves are on cache lines of their own, apart from the read-mostly
/// fields (`done`, `epoch`...) that every worker loop reads.
pub(crate) struct Scheduler {
    block_size: usize,
    execution_idx: CachePadded<AtomicUsize>,
    validation_idx: CachePadded<AtomicUsize>,
    decrease_cnt: CachePadded<AtomicUsize>,
    num_active_tasks: CachePadded<AtomicUsize>,
    done: AtomicBool,
    /// Per transaction, on cache lines of its own (the workers run neighbouring transactions).
    txs: Box<[CachePadded<TxState>]>,
    /// Bumped whenever new work may have appeared.
    epoch: AtomicU64,
    /// Workers sleeping in [`Scheduler::wait_for_work`].
    sleepers: AtomicUsize,
    idle: Mutex<()>,
    idle_cv: Condvar,
    /// Blocking waits on a running execution.
    pub(crate) waits: AtomicU64,
    /// Executions suspended on an ESTIMATE.
    pub(crate) suspensions: AtomicU64,
    /// Whether a read that hits the ESTIMATE of a running execution waits for it (see
    /// `ParallelOptions::wait_on_running`).
    wait_on_running: bool,
    /// Set when an invariant was found broken (see [`Scheduler::release_task`]).
    violation: Mutex<Option<String>>,
}

impl Scheduler {
    pub(crate) fn new(block_size: usize, wait_on_running: bool) -> Self {
        Self {
            block_size,
            execution_idx: CachePadded::new(AtomicUsize::new(0)),
            validation_idx: CachePadded::new(AtomicUsize::new(0)),
            decrease_cnt: CachePadded::new(AtomicUsize::new(0)),
            num_active_tasks: CachePadded::new(AtomicUsize::new(0)),
            done: AtomicBool::new(block_size == 0),
            txs: (0..block_size)
                .map(|_| {
                    CachePadded::new(TxState {
                        status: Mutex::new(Status::ReadyToExecute(0)),
                        changed: Condvar::new(),
                        waiters: AtomicUsize::new(0),
                        dependents: Mutex::new(Vec::new()),
                    })
                })
                .collect(),
            epoch: AtomicU64::new(0),
            sleepers: AtomicUsize::new(0),
            idle: Mutex::new(()),
            idle_cv: Condvar::new(),
            waits: AtomicU64::new(0),
            suspensions: AtomicU64::new(0),
            wait_on_running,
            violation: Mutex::new(None),
        }
    }

    /// Whether all work is done (or [`Scheduler::halt`] was called).
    pub(crate) fn done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Stops every worker (used when the block must fall back to sequential execution).
    pub(crate) fn halt(&self) {
        self.done.store(true, Ordering::Release);
        self.wake_idle();
        for tx in self.txs.iter() {
            let _guard = lock(&tx.status);
            tx.notify();
        }
    }

    fn wake_idle(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = lock(&self.idle);
            self.idle_cv.notify_all();
        }
    }

    fn set_status(&self, tx: TxIdx, status: Status) {
        let state = &self.txs[tx];
        let mut current = lock(&state.status);
        *current = status;
        state.notify();
    }

    fn decrease_execution_idx(&self, target: TxIdx) {
        self.execution_idx.fetch_min(target, Ordering::SeqCst);
        self.decrease_cnt.fetch_add(1, Ordering::SeqCst);
        self.wake_idle();
    }

    fn decrease_validation_idx(&self, target: TxIdx) {
        self.validation_idx.fetch_min(target, Ordering::SeqCst);
        self.decrease_cnt.fetch_add(1, Ordering::SeqCst);
        self.wake_idle();
    }

    /// A task handed out by [`Scheduler::next_task`] (or passed on by `finish_*`) ended.
    ///
    /// Every task is released exactly once; releasing one twice would wrap the count around
    /// (the block would never be done) or zero it while a task still runs (the block would be
    /// done too early). A release without a task is a scheduler bug: record it, stop every
    /// worker, and let the block end in an error ([`Scheduler::violation`]) instead of hanging
    /// or returning wrong results.
    fn release_task(&self) {
        let before = self.num_active_tasks.fetch_sub(1, Ordering::SeqCst);
        if before == 0 {
            self.num_active_tasks.fetch_add(1, Ordering::SeqCst);
            let state = self.debug_state();
            lock(&self.violation).get_or_insert(format!(
                "internal: Block-STM released more tasks than it handed out\n{state}"
            ));
            self.halt();
        }
    }

    /// The invariant violation that stopped the block, if any.
    pub(crate) fn violation(&self) -> Option<String> {
        lock(&self.violation).clone()
    }

    /// The scheduler's state, for diagnostics: indexes, counters, every transaction's status
    /// and dependents.
    pub(crate) fn debug_state(&self) -> String {
        use std::fmt::Write;
        let mut out = format!(
            "block size {}, execution_idx {}, validation_idx {}, num_active_tasks {}, \
             decrease_cnt {}, done {}, sleepers {}",
            self.block_size,
            self.execution_idx.load(Ordering::SeqCst),
            self.validation_idx.load(Ordering::SeqCst),
            self.num_active_tasks.load(Ordering::SeqCst),
            self.decrease_cnt.load(Ordering::SeqCst),
            self.done(),
            self.sleepers.load(Ordering::SeqCst),
        );
        for (index, tx) in self.txs.iter().enumerate() {
            let status = *lock(&tx.status);
            let dependents = lock(&tx.dependents).clone();
            let _ = write!(out, "\n  tx {index}: {status:?}");
            if !dependents.is_empty() {
                let _ = write!(out, ", dependents {dependents:?}");
            }
        }
        out
    }

    /// The first transaction whose latest incarnation has not executed. `None` is a
    /// post-condition of [`Scheduler::done`] unless [`Scheduler::halt`] was called.
    pub(crate) fn first_unexecuted(&self) -> Option<TxIdx> {
        self.txs
            .iter()
            .position(|tx| !matches!(*lock(&tx.status), Status::Executed(_)))
    }

    fn check_done(&self) {
        let observed = self.decrease_cnt.load(Ordering::SeqCst);
        if self
            .execution_idx
            .load(Ordering::SeqCst)
            .min(self.validation_idx.load(Ordering::SeqCst))
            >= self.block_size
            && self.num_active_tasks.load(Ordering::SeqCst) == 0
            && observed == self.decrease_cnt.load(Ordering::SeqCst)
        {
            self.done.store(true, Ordering::Release);
            self.wake_idle();
        }
    }

    /// READY_TO_EXECUTE(i) -> EXECUTING(i). Does not touch the active-task count.
    fn try_incarnate(&self, tx: TxIdx) -> Option<Version> {
        if tx >= self.block_size {
            return None;
        }
        let state = &self.txs[tx];
        let mut status = lock(&state.status);
        if let Status::ReadyToExecute(incarnation) = *status {
            *status = Status::Executing(incarnation);
            return Some(Version { tx, incarnation });
        }
        None
    }

    fn next_version_to_execute(&self) -> Option<Version> {
        if self.execution_idx.load(Ordering::SeqCst) >= self.block_size {
            self.check_done();
            return None;
        }
        self.num_active_tasks.fetch_add(1, Ordering::SeqCst);
        let idx = self.execution_idx.fetch_add(1, Ordering::SeqCst);
        let version = self.try_incarnate(idx);
        if version.is_none() {
            self.release_task();
        }
        version
    }

    fn next_version_to_validate(&self) -> Option<Version> {
        if self.validation_idx.load(Ordering::SeqCst) >= self.block_size {
            self.check_done();
            return None;
        }
        self.num_active_tasks.fetch_add(1, Ordering::SeqCst);
        let idx = self.validation_idx.fetch_add(1, Ordering::SeqCst);
        if idx < self.block_size {
            if let Status::Executed(incarnation) = *lock(&self.txs[idx].status) {
                return Some(Version {
                    tx: idx,
                    incarnation,
                });
            }
        }
        self.release_task();
        None
    }

    /// The next task, or `None` when there is none right now.
    pub(crate) fn next_task(&self) -> Option<Task> {
        if self.validation_idx.load(Ordering::SeqCst) < self.execution_idx.load(Ordering::SeqCst) {
            self.next_version_to_validate().map(Task::Validate)
        } else {
            self.next_version_to_execute().map(Task::Execute)
        }
    }

    /// Whether a task index still points inside the block: then [`Scheduler::next_task`]
    /// failing only means that one attempt lost a race, and the worker should simply ask
    /// again.
    pub(crate) fn has_indexes_left(&self) -> bool {
        let execution = self.execution_idx.load(Ordering::SeqCst);
        execution < self.block_size
            || self.validation_idx.load(Ordering::SeqCst) < execution.min(self.block_size)
    }

    /// Returns once the scheduler's state may have changed since `seen` was read: spins for up
    /// to `spin`, then sleeps (bounded, so a missed wake-up costs at most a millisecond).
    pub(crate) fn wait_for_work(&self, seen: u64, spin: Duration) {
        // Spin briefly first (see `ParallelOptions::idle_spin`).
        let spin_until = Instant::now() + spin;
        loop {
            for _ in 0..64 {
                if self.epoch.load(Ordering::Acquire) != seen || self.done() {
                    return;
                }
                std::hint::spin_loop();
            }
            if Instant::now() >= spin_until {
                break;
            }
        }
        let guard = lock(&self.idle);
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        if self.epoch.load(Ordering::SeqCst) == seen && !self.done() {
            let _ = self
                .idle_cv
                .wait_timeout(guard, Duration::from_millis(1))
                .unwrap_or_else(PoisonError::into_inner);
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }

    /// The wake-up counter to pass to [`Scheduler::wait_for_work`] (read before looking for
    /// work, so a change in between is not missed).
    pub(crate) fn idle_epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// `tx` read an ESTIMATE of `blocking`: wait while `blocking` is executing, then either
    /// read again or register `tx` as its dependent (the paper's `add_dependency`).
    pub(crate) fn wait_or_suspend(&self, tx: TxIdx, blocking: TxIdx) -> DependencyOutcome {
        let state = &self.txs[blocking];
        {
            let mut status = lock(&state.status);
            let mut waited = false;
            loop {
                match *status {
                    Status::Executed(_) => return DependencyOutcome::Retry,
                    Status::Executing(_) if self.wait_on_running && !self.done() => {
                        if !waited {
                            self.waits.fetch_add(1, Ordering::Relaxed);
                            waited = true;
                        }
                        state.waiters.fetch_add(1, Ordering::Relaxed);
                        status = state
                            .changed
                            .wait(status)
                            .unwrap_or_else(PoisonError::into_inner);
                        state.waiters.fetch_sub(1, Ordering::Relaxed);
                    }
                    _ => break,
                }
            }
        }
        let mut dependents = lock(&state.dependents);
        if matches!(*lock(&state.status), Status::Executed(_)) {
            return DependencyOutcome::Retry;
        }
        {
            // Only the worker executing `tx` moves it out of EXECUTING, and a suspended
            // execution never consults the scheduler again (`TxDb` fails every later read), so
            // `tx` is EXECUTING here. Anything else would be a second suspension of the same
            // execution: registering it again would release its task twice.
            let own = &self.txs[tx];
            let mut status = lock(&own.status);
            let Status::Executing(incarnation) = *status else {
                debug_assert!(false, "tx {tx} suspended twice (status {:?})", *status);
                return DependencyOutcome::Suspended;
            };
            *status = Status::Aborting(incarnation);
            own.notify();
        }
        dependents.push(tx);
        drop(dependents);
        self.suspensions.fetch_add(1, Ordering::Relaxed);
        self.release_task();
        DependencyOutcome::Suspended
    }

    /// Starts executing `tx` as if [`Scheduler::next_task`] had handed it out.
    #[cfg(test)]
    pub(crate) fn start_execution_for_test(&self, tx: TxIdx) -> Version {
        let version = self
            .try_incarnate(tx)
            .expect("transaction ready to execute");
        self.num_active_tasks.fetch_add(1, Ordering::SeqCst);
        version
    }

    #[cfg(test)]
    pub(crate) fn active_tasks(&self) -> usize {
        self.num_active_tasks.load(Ordering::SeqCst)
    }

    #[cfg(test)]
    pub(crate) fn dependents_of(&self, tx: TxIdx) -> Vec<TxIdx> {
        lock(&self.txs[tx].dependents).clone()
    }

    /// ABORTING(i) -> READY_TO_EXECUTE(i + 1).
    fn set_ready_status(&self, tx: TxIdx) {
        let state = &self.txs[tx];
        let mut status = lock(&state.status);
        if let Status::Aborting(incarnation) = *status {
            *status = Status::ReadyToExecute(incarnation + 1);
        }
        state.notify();
    }

    /// An execution finished and its writes are recorded.
    pub(crate) fn finish_execution(&self, version: Version, wrote_new_path: bool) -> Option<Task> {
        let tx = version.tx;
        self.set_status(tx, Status::Executed(version.incarnation));
        let dependents = std::mem::take(&mut *lock(&self.txs[tx].dependents));
        if let Some(min) = dependents.iter().min().copied() {
            for dependent in dependents {
                self.set_ready_status(dependent);
            }
            self.decrease_execution_idx(min);
        }
        if self.validation_idx.load(Ordering::SeqCst) > tx {
            if wrote_new_path {
                self.decrease_validation_idx(tx);
            } else {
                return Some(Task::Validate(version));
            }
        }
        self.release_task();
        self.wake_idle();
        None
    }

    /// EXECUTED(i) -> ABORTING(i) if the version is still the current one.
    pub(crate) fn try_validation_abort(&self, version: Version) -> bool {
        let mut status = lock(&self.txs[version.tx].status);
        if *status == Status::Executed(version.incarnation) {
            *status = Status::Aborting(version.incarnation);
            return true;
        }
        false
    }

    /// A validation finished; an aborted transaction is handed back for re-execution.
    pub(crate) fn finish_validation(&self, tx: TxIdx, aborted: bool) -> Option<Task> {
        if aborted {
            self.set_ready_status(tx);
            self.decrease_validation_idx(tx + 1);
            if self.execution_idx.load(Ordering::SeqCst) > tx {
                if let Some(version) = self.try_incarnate(tx) {
                    return Some(Task::Execute(version));
                }
            }
        }
        self.release_task();
        self.wake_idle();
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releasing_a_task_never_handed_out_is_an_error_not_a_hang() {
        let s = Scheduler::new(2, false);
        assert_eq!(s.violation(), None);
        // A validation that was never handed out ends: the count must not wrap around.
        assert_eq!(s.finish_validation(0, false), None);
        assert_eq!(s.active_tasks(), 0);
        assert!(s.done());
        let message = s.violation().expect("violation recorded");
        assert!(message.contains("released more tasks"), "{message}");
    }

    fn v(tx: TxIdx, incarnation: Incarnation) -> Version {
        Version { tx, incarnation }
    }

    #[test]
    fn one_worker_executes_then_validates_everything() {
        let s = Scheduler::new(3, true);
        let mut order = Vec::new();
        let mut task = None;
        while !s.done() {
            task = match task {
                Some(Task::Execute(version)) => {
                    order.push(Task::Execute(version));
                    s.finish_execution(version, true)
                }
                Some(Task::Validate(version)) => {
                    order.push(Task::Validate(version));
                    s.finish_validation(version.tx, false)
                }
                None => s.next_task(),
            };
        }
        assert_eq!(
            order,
            vec![
                Task::Execute(v(0, 0)),
                Task::Validate(v(0, 0)),
                Task::Execute(v(1, 0)),
                Task::Validate(v(1, 0)),
                Task::Execute(v(2, 0)),
                Task::Validate(v(2, 0)),
            ]
        );
    }

    #[test]
    fn failed_validation_hands_back_the_next_incarnation() {
        let s = Scheduler::new(2, true);
        assert_eq!(s.next_task(), Some(Task::Execute(v(0, 0))));
        assert_eq!(s.finish_execution(v(0, 0), true), None);
        assert_eq!(s.next_task(), Some(Task::Validate(v(0, 0))));
        assert!(s.try_validation_abort(v(0, 0)));
        // A stale validation of the same version cannot abort twice.
        assert!(!s.try_validation_abort(v(0, 0)));
        assert_eq!(s.finish_validation(0, true), Some(Task::Execute(v(0, 1))));
        assert!(!s.done());
    }

    #[test]
    fn suspended_dependents_resume_when_the_blocker_finishes() {
        let s = Scheduler::new(2, true);
        assert_eq!(s.next_task(), Some(Task::Execute(v(0, 0))));
        // Validating 0 while it executes fails (a lost race, not a lack of work)...
        assert_eq!(s.next_task(), None);
        assert!(s.has_indexes_left());
        // ...and the retry executes the next transaction.
        assert_eq!(s.next_task(), Some(Task::Execute(v(1, 0))));
        // Transaction 1 reads an ESTIMATE of 0 while 0 executes on "another thread": make 0
        // look suspended-able by aborting it first, so the reader registers as a dependent.
        s.set_status(0, Status::Aborting(0));
        assert_eq!(s.wait_or_suspend(1, 0), DependencyOutcome::Suspended);
        s.set_ready_status(0);
        assert_eq!(s.try_incarnate(0), Some(v(0, 1)));
        s.num_active_tasks.fetch_add(1, Ordering::SeqCst);
        s.finish_execution(v(0, 1), false);
        // Transaction 1 is ready again with its next incarnation.
        assert_eq!(*lock(&s.txs[1].status), Status::ReadyToExecute(1));
        assert_eq!(s.wait_or_suspend(1, 0), DependencyOutcome::Retry);
    }

    #[test]
    fn a_reader_waiting_on_a_running_execution_is_woken_when_it_finishes() {
        // Notifications are skipped when no waiter is registered: a waiter that registered
        // must still be woken, every time (a missed wake-up would hang the reader).
        for _ in 0..200 {
            let s = Scheduler::new(2, true);
            assert_eq!(s.next_task(), Some(Task::Execute(v(0, 0))));
            assert_eq!(s.next_task(), None);
            assert_eq!(s.next_task(), Some(Task::Execute(v(1, 0))));
            std::thread::scope(|scope| {
                let reader = scope.spawn(|| s.wait_or_suspend(1, 0));
                // Finish 0 at some point before, during or after the reader's wait.
                std::thread::yield_now();
                s.finish_execution(v(0, 0), false);
                assert_eq!(reader.join().unwrap(), DependencyOutcome::Retry);
            });
            assert_eq!(s.txs[0].waiters.load(Ordering::SeqCst), 0);
        }
    }
}
