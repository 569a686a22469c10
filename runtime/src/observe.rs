//! Which accounts' balances an execution observed.
//!
//! The parallel executor reads a contract account exactly (balance included) but records the
//! read as depending only on the account's code when the execution turned out not to depend on
//! the balance: then another transaction's deposit into that contract (WETH's, say) does not
//! invalidate it, and its own deposits become lazy credits. Whether the balance was observed is
//! decided here, at every point where revm reads an account's balance on behalf of code, for
//! the interpreter and native code alike:
//!
//! - `BALANCE` and `SELFBALANCE` (the account read) and `SELFDESTRUCT` (the destroyed account,
//!   whose balance moves, and its beneficiary): the instruction functions below, installed in
//!   the parallel workers' instruction table and in the builtins' table of native code;
//! - a value transfer out of an account (`CALL` and `CALLCODE` with value, `CREATE` with an
//!   endowment: revm checks the sender's balance) and a transfer so large that the recipient's
//!   balance could overflow: [`frame_input`], called by [`EmberEvm`](crate::EmberEvm) for every
//!   new frame.
//!
//! Everything else revm does with a balance concerns the transaction's sender and the block's
//! beneficiary, which the executor never reads this way, or empty accounts, which have no
//! code. Recording is per thread and off unless a parallel worker turned it on
//! ([`Tracking`]); otherwise every hook is one thread-local flag test.

use revm::interpreter::instructions::utility::IntoAddress;
use revm::interpreter::{
    instructions::host, interpreter::EthInterpreter, CallValue, FrameInput, InstructionContext,
    InstructionExecResult,
};
use revm::primitives::{Address, U256};
use std::cell::{Cell, RefCell};

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static OBSERVED: RefCell<Vec<Address>> = const { RefCell::new(Vec::new()) };
}

/// A transfer of at least this much marks its recipient as observed too: below it, an account
/// whose balance is under [`MAX_UNOBSERVED_BALANCE`] cannot overflow within one transaction's
/// transfers, so a transfer to it cannot fail on its balance.
pub(crate) const LARGE_TRANSFER: U256 = U256::from_limbs([0, 0, 1, 0]);

/// The largest balance (exclusive) an account read may have to be recorded as unobserved:
/// 2^128, far above any real balance (see [`LARGE_TRANSFER`]).
pub(crate) const MAX_UNOBSERVED_BALANCE: U256 = LARGE_TRANSFER;

/// Notes that the current execution observed `address`'s balance (no-op unless tracking).
#[inline]
pub(crate) fn balance(address: Address) {
    if ON.with(Cell::get) {
        OBSERVED.with(|o| o.borrow_mut().push(address));
    }
}

/// The balance observations of a new frame: the sender of a value transfer (revm checks its
/// balance), and the recipient of a transfer of at least [`LARGE_TRANSFER`].
#[inline]
pub(crate) fn frame_input(input: &FrameInput) {
    if !ON.with(Cell::get) {
        return;
    }
    match input {
        FrameInput::Call(inputs) => {
            if let CallValue::Transfer(value) = inputs.value {
                if !value.is_zero() {
                    balance(inputs.caller);
                    if value >= LARGE_TRANSFER {
                        balance(inputs.target_address);
                    }
                }
            }
        }
        FrameInput::Create(inputs) => {
            if !inputs.value().is_zero() {
                balance(inputs.caller());
            }
        }
        FrameInput::Empty => {}
    }
}

/// Records this thread's balance observations until dropped; [`Tracking::take`] hands them
/// over.
pub(crate) struct Tracking(());

impl Tracking {
    /// Starts recording on this thread (forgetting earlier observations).
    pub(crate) fn start() -> Self {
        OBSERVED.with(|o| o.borrow_mut().clear());
        ON.with(|on| on.set(true));
        Tracking(())
    }

    /// Moves the observations since the last call into `out` (cleared first).
    pub(crate) fn take(&self, out: &mut Vec<Address>) {
        out.clear();
        OBSERVED.with(|o| out.append(&mut o.borrow_mut()));
    }
}

impl Drop for Tracking {
    fn drop(&mut self) {
        ON.with(|on| on.set(false));
        OBSERVED.with(|o| o.borrow_mut().clear());
    }
}

/// `BALANCE`, noting the account read.
pub(crate) fn balance_op<H: revm::context_interface::Host + ?Sized>(
    context: InstructionContext<'_, H, EthInterpreter>,
) -> InstructionExecResult {
    if let Ok(top) = context.interpreter.stack.peek(0) {
        balance(top.into_address());
    }
    host::balance(context)
}

/// `SELFBALANCE`, noting the executing account.
pub(crate) fn selfbalance_op<H: revm::context_interface::Host + ?Sized>(
    context: InstructionContext<'_, H, EthInterpreter>,
) -> InstructionExecResult {
    use revm::interpreter::interpreter_types::InputsTr;
    balance(context.interpreter.input.target_address());
    host::selfbalance(context)
}

/// `SELFDESTRUCT`, noting the destroyed account and its beneficiary.
pub(crate) fn selfdestruct_op<H: revm::context_interface::Host + ?Sized>(
    context: InstructionContext<'_, H, EthInterpreter>,
) -> InstructionExecResult {
    use revm::interpreter::interpreter_types::InputsTr;
    balance(context.interpreter.input.target_address());
    if let Ok(top) = context.interpreter.stack.peek(0) {
        balance(top.into_address());
    }
    host::selfdestruct(context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_are_recorded_only_while_tracking() {
        let a = Address::repeat_byte(1);
        balance(a);
        let tracking = Tracking::start();
        let mut out = Vec::new();
        tracking.take(&mut out);
        assert!(out.is_empty(), "an observation before tracking was kept");
        balance(a);
        tracking.take(&mut out);
        assert_eq!(out, vec![a]);
        tracking.take(&mut out);
        assert!(out.is_empty());
        drop(tracking);
        balance(a);
        let tracking = Tracking::start();
        tracking.take(&mut out);
        assert!(out.is_empty(), "an observation after tracking was kept");
    }
}
