//! revm's mainnet handler with one change: the beneficiary's fee is recorded as a lazy credit
//! instead of a read-modify-write of the beneficiary's balance, so transactions do not all
//! depend on each other through the coinbase.

use core::cell::Cell;
use core::marker::PhantomData;
use revm::context_interface::result::HaltReason;
use revm::context_interface::{Block, Cfg, ContextTr, JournalTr, Transaction};
use revm::handler::{evm::FrameTr, post_execution, EvmTr, EvmTrError, FrameResult, Handler};
use revm::interpreter::interpreter_action::FrameInit;
use revm::primitives::{hardfork::SpecId, Address, U256};
use revm::state::EvmState;

/// The mainnet handler with a lazy beneficiary reward.
pub(crate) struct LazyRewardHandler<EVM, ERROR, FRAME> {
    /// Whether the reward may be lazy at all.
    lazy: bool,
    /// The credit recorded instead of the transfer (beneficiary, non-zero amount).
    pub(crate) credit: Cell<Option<(Address, U256)>>,
    _phantom: PhantomData<(EVM, ERROR, FRAME)>,
}

impl<EVM, ERROR, FRAME> LazyRewardHandler<EVM, ERROR, FRAME> {
    pub(crate) fn new(lazy: bool) -> Self {
        Self {
            lazy,
            credit: Cell::new(None),
            _phantom: PhantomData,
        }
    }
}

/// The fee revm's `post_execution::reward_beneficiary` pays the beneficiary (same formula).
pub(crate) fn beneficiary_reward<CTX: ContextTr>(ctx: &CTX, gas: &revm::interpreter::Gas) -> U256 {
    let basefee = ctx.block().basefee() as u128;
    let effective_gas_price = ctx.tx().effective_gas_price(basefee);
    let coinbase_gas_price = if ctx.cfg().spec().into().is_enabled_in(SpecId::LONDON) {
        effective_gas_price.saturating_sub(basefee)
    } else {
        effective_gas_price
    };
    let effective_used = gas.used().saturating_sub(gas.reservoir());
    // revm multiplies without a check (wrapping in release builds); do the same, explicitly.
    U256::from(coinbase_gas_price.wrapping_mul(effective_used as u128))
}

impl<EVM, ERROR, FRAME> Handler for LazyRewardHandler<EVM, ERROR, FRAME>
where
    EVM: EvmTr<Context: ContextTr<Journal: JournalTr<State = EvmState>>, Frame = FRAME>,
    ERROR: EvmTrError<EVM>,
    FRAME: FrameTr<FrameResult = FrameResult, FrameInit = FrameInit>,
{
    type Evm = EVM;
    type Error = ERROR;
    type HaltReason = HaltReason;

    fn reward_beneficiary(
        &self,
        evm: &mut Self::Evm,
        exec_result: &mut FrameResult,
    ) -> Result<(), Self::Error> {
        let ctx = evm.ctx();
        if !self.lazy || ctx.cfg().is_fee_charge_disabled() {
            return post_execution::reward_beneficiary(ctx, exec_result.gas()).map_err(From::from);
        }
        let beneficiary = ctx.block().beneficiary();
        // If the transaction loaded the beneficiary it already read its exact balance: pay
        // eagerly. A zero reward only touches the account, which under EIP-161 can remove it:
        // that depends on its exact state, so it is eager too.
        let loaded = ctx
            .journal_ref()
            .db_and_state()
            .1
            .contains_key(&beneficiary);
        let reward = beneficiary_reward(&*ctx, exec_result.gas());
        if loaded || reward.is_zero() {
            return post_execution::reward_beneficiary(ctx, exec_result.gas()).map_err(From::from);
        }
        self.credit.set(Some((beneficiary, reward)));
        Ok(())
    }
}
