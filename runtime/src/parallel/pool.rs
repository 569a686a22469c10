//! Worker threads kept from block to block.
//!
//! Spawning and joining threads per block cost 130-280 µs on the 2-core benchmark machine
//! (occasionally 2.5 ms, when the kernel queues a new thread behind a running one), against
//! blocks of 1-2 ms; thread exit added 0.3-1 ms more (allocator heap teardown). The executor
//! runs its workers on a [`rayon`] pool per worker count, created on first use and kept for the
//! life of the process; the calling thread is worker 0, so a block needs `threads - 1` pool
//! threads and never waits for a pool thread to start before it makes progress.

use rayon::{ThreadPool, ThreadPoolBuildError, ThreadPoolBuilder};
use std::sync::{Arc, Mutex, PoisonError};

/// Pools by size, created on first use.
static POOLS: Mutex<Vec<(usize, Arc<ThreadPool>)>> = Mutex::new(Vec::new());

/// The process-wide pool of `size` threads.
fn pool(size: usize) -> Result<Arc<ThreadPool>, ThreadPoolBuildError> {
    let mut pools = POOLS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, pool)) = pools.iter().find(|(n, _)| *n == size) {
        return Ok(pool.clone());
    }
    let pool = Arc::new(
        ThreadPoolBuilder::new()
            .num_threads(size)
            .thread_name(|i| format!("ember-block-{i}"))
            .build()?,
    );
    pools.push((size, pool.clone()));
    Ok(pool)
}

/// Runs `work(0)` on the calling thread and `work(1)` .. `work(threads - 1)` on pool threads,
/// and returns when all have returned. Every worker index runs exactly once, but not
/// necessarily at the same time: a pool thread busy with another block's worker starts this
/// one later, so `work` must make progress with any subset of the workers running (Block-STM
/// does: any worker can finish the block alone).
///
/// A panic in any worker is propagated. Fails only when the pool's threads cannot be created
/// (then nothing ran).
pub(crate) fn run_workers(
    threads: usize,
    work: impl Fn(usize) + Sync,
) -> Result<(), ThreadPoolBuildError> {
    if threads <= 1 {
        work(0);
        return Ok(());
    }
    let pool = pool(threads - 1)?;
    let work = &work;
    pool.in_place_scope(|scope| {
        for worker in 1..threads {
            scope.spawn(move |_| work(worker));
        }
        work(0);
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_worker_index_runs_once_and_pools_are_reused() {
        for threads in [1, 2, 3, 8, 2] {
            let runs: Vec<AtomicUsize> = (0..threads).map(|_| AtomicUsize::new(0)).collect();
            run_workers(threads, |w| {
                runs[w].fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
            assert!(runs.iter().all(|r| r.load(Ordering::Relaxed) == 1));
        }
        let pools = POOLS.lock().unwrap();
        let mut sizes: Vec<usize> = pools.iter().map(|(n, _)| *n).collect();
        sizes.sort_unstable();
        sizes.dedup();
        assert_eq!(sizes.len(), pools.len(), "one pool per size");
    }
}
