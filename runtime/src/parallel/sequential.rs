//! The reference: transactions one after the other with [`EmberEvm`] over revm's `State`.

use super::changes::{ChangeSet, FoldError};
use super::writes::{extract_writes, TxWrites};
use super::{BlockError, BlockOutput, FallbackReason, ParallelOptions, ParallelStats, TxOutput};
use crate::evm::{EmberEvm, NativeProvider};
use revm::context::{BlockEnv, CfgEnv, Context, TxEnv};
use revm::database::State;
use revm::database_interface::bal::EvmDatabaseError;
use revm::database_interface::{DatabaseCommit, DatabaseRef};
use revm::handler::{ExecuteEvm, MainBuilder, MainContext};

/// Executes `txs` in order on top of `db` with [`EmberEvm`] over a `revm::database::State`:
/// the reference [`execute_block`](super::execute_block) must match exactly.
///
/// Stops at the first invalid transaction and returns its error.
pub fn execute_block_sequential<DB, P>(
    cfg: &CfgEnv,
    block: &BlockEnv,
    txs: &[TxEnv],
    db: &DB,
    provider: &P,
    _opts: &ParallelOptions,
) -> Result<BlockOutput, BlockError>
where
    DB: DatabaseRef,
    P: NativeProvider,
{
    run(cfg, block, txs, db, provider, FallbackReason::Requested)
}

/// Sequential execution, reporting `reason` in the statistics.
pub(crate) fn run<DB, P>(
    cfg: &CfgEnv,
    block: &BlockEnv,
    txs: &[TxEnv],
    db: &DB,
    provider: &P,
    reason: FallbackReason,
) -> Result<BlockOutput, BlockError>
where
    DB: DatabaseRef,
    P: NativeProvider,
{
    let mut state = State::builder().with_database_ref(db).build();
    let mut changes = ChangeSet::new(db);
    let mut transactions = Vec::with_capacity(txs.len());
    let mut stats = ParallelStats {
        threads: 1,
        fallback: Some(reason),
        ..ParallelStats::default()
    };
    let mut cumulative_gas_used = 0u64;
    // One EVM for the whole block, as revm's own `transact_many`: building one per transaction
    // would allocate its frame stack every time.
    let ctx = Context::mainnet()
        .with_block(block.clone())
        .with_cfg(cfg.clone())
        .with_db(&mut state);
    // The provider is asked at every frame (not through a `MemoProvider`): uncontended here,
    // and providers that count frames (the JIT warm-up of `ember block`) rely on it.
    let mut evm = EmberEvm::new(ctx.build_mainnet(), provider);
    let mut writes = TxWrites::default();
    for (index, tx) in txs.iter().enumerate() {
        let outcome = evm.transact(tx.clone());
        stats.executions += 1;
        stats.native_runs += evm.stats.native_runs.replace(0);
        stats.interpreted_runs += evm.stats.interpreted_runs.replace(0);
        let outcome = outcome.map_err(|e| {
            BlockError::from_evm(index, e, |e| match e {
                EvmDatabaseError::Database(e) => e.to_string(),
                other => other.to_string(),
            })
        })?;
        writes.entries.clear();
        extract_writes(&outcome.state, &[], None, None, &[], &mut writes).map_err(|_| {
            BlockError::Custom {
                index,
                message: "internal: lazy write without a lazy read".to_string(),
            }
        })?;
        changes.apply(&writes).map_err(|e| match e {
            FoldError::Overflow(a) => BlockError::Custom {
                index,
                message: format!("internal: credit overflow at {a}"),
            },
            FoldError::Unmet(a) => BlockError::Custom {
                index,
                message: format!("internal: lazy debit at {a} without a lazy read"),
            },
            FoldError::Db(message) => BlockError::Database { index, message },
        })?;
        evm.inner.ctx.journaled_state.database.commit(outcome.state);
        cumulative_gas_used = cumulative_gas_used.saturating_add(outcome.result.tx_gas_used());
        transactions.push(TxOutput {
            result: outcome.result,
            cumulative_gas_used,
        });
    }
    Ok(BlockOutput {
        transactions,
        changes: changes.finish()?,
        stats,
    })
}
