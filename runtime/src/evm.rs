//! The revm 43 integration: an EVM whose `frame_run` runs a registered native function for the
//! frame's code hash and spec, and revm's interpreter otherwise.

use crate::abi::{EvmContext, NativeFn, STACK_LIMIT};
use crate::builtins::{instruction_result_from_u8, refresh_memory, DynHost, Interp, BUILTINS};
use core::cell::Cell;
use core::ffi::c_void;
use revm::context::{ContextSetters, ContextTr, FrameStack, JournalTr};
use revm::context_interface::result::{
    EVMError, ExecutionResult, HaltReason, InvalidTransaction, ResultAndState,
};
use revm::database_interface::{Database, DatabaseCommit};
use revm::handler::instructions::EthInstructions;
use revm::handler::{
    evm::{ContextDbError, FrameInitResult, FrameTr},
    EthFrame, EthPrecompiles, EvmTr, ExecuteCommitEvm, ExecuteEvm, FrameInitOrResult, Handler,
    MainnetEvm, MainnetHandler, SystemCallCommitEvm, SystemCallEvm, SystemCallTx,
};
use revm::interpreter::{
    interpreter::EthInterpreter,
    interpreter_types::{Jumps, LoopControl},
    InterpreterAction,
};
use revm::primitives::{hardfork::SpecId, Address, Bytes, B256};
use revm::state::EvmState;

/// Answers "native function for this code hash and spec, if any". Implemented by the JIT
/// registry and (later) the AOT library loader and the hot-contract cache.
pub trait NativeProvider {
    /// The compiled function for `code_hash` under `spec`, if one is available.
    fn native_fn(&self, code_hash: &B256, spec: SpecId) -> Option<NativeFn>;
}

/// A provider with nothing in it: every frame runs in the interpreter.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoNative;

impl NativeProvider for NoNative {
    fn native_fn(&self, _: &B256, _: SpecId) -> Option<NativeFn> {
        None
    }
}

impl<P: NativeProvider + ?Sized> NativeProvider for &P {
    fn native_fn(&self, code_hash: &B256, spec: SpecId) -> Option<NativeFn> {
        (**self).native_fn(code_hash, spec)
    }
}

impl<P: NativeProvider + ?Sized> NativeProvider for std::sync::Arc<P> {
    fn native_fn(&self, code_hash: &B256, spec: SpecId) -> Option<NativeFn> {
        (**self).native_fn(code_hash, spec)
    }
}

/// A provider that remembers, for its own lifetime, what `inner` answered for each (code hash,
/// spec), so each contract is asked for once.
///
/// Shared providers take a lock per question (the JIT cache does) and two threads asking at
/// every frame bounce that lock's cache line between cores; the parallel block executor gives
/// each worker one of these over the shared provider for the block. A function that becomes
/// available after the first question (a hot contract compiled in the background) is used
/// from the next `MemoProvider` on, i.e. from the next block; and a provider that counts
/// questions to count frames sees one per contract.
#[derive(Debug)]
pub struct MemoProvider<P> {
    inner: P,
    memo: core::cell::RefCell<revm::primitives::HashMap<(B256, SpecId), Option<NativeFn>>>,
}

impl<P> MemoProvider<P> {
    /// Remembers `inner`'s answers.
    pub fn new(inner: P) -> Self {
        Self {
            inner,
            memo: Default::default(),
        }
    }
}

impl<P: NativeProvider> NativeProvider for MemoProvider<P> {
    fn native_fn(&self, code_hash: &B256, spec: SpecId) -> Option<NativeFn> {
        let key = (*code_hash, spec);
        if let Some(known) = self.memo.borrow().get(&key) {
            return *known;
        }
        let answer = self.inner.native_fn(code_hash, spec);
        self.memo.borrow_mut().insert(key, answer);
        answer
    }
}

/// Counts of frame runs, so tools can say how much ran natively and how much fell back.
#[derive(Debug, Default, Clone)]
pub struct ExecStats {
    /// `frame_run` calls served by a native function (a suspended frame resumed counts again).
    pub native_runs: Cell<u64>,
    /// `frame_run` calls served by revm's interpreter.
    pub interpreted_runs: Cell<u64>,
}

/// The state of a frame at the end of one `frame_run` (when it returns, halts, or suspends at a
/// CALL/CREATE). Recorded by [`EmberEvm`] when [`EmberEvm::record_frames`] is on, so that a
/// native run and an interpreter run of the same transaction can be compared segment by
/// segment: both suspend at exactly the same points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameRecord {
    /// Call depth (0 for the transaction's frame).
    pub depth: usize,
    /// Code hash of the frame's bytecode (zero when unknown).
    pub code_hash: B256,
    /// Whether this segment ran native code.
    pub native: bool,
    /// Program counter where the segment stopped (after a suspending CALL/CREATE: the next
    /// instruction).
    pub pc: usize,
    /// Gas remaining.
    pub gas_remaining: u64,
    /// Gas refund counter.
    pub gas_refunded: i64,
    /// The operand stack, bottom first.
    pub stack: Vec<revm::primitives::U256>,
    /// Memory size in bytes.
    pub memory_len: usize,
    /// keccak256 of memory.
    pub memory_hash: B256,
    /// What the frame asked for: `call`, `create`, `return (<result>)`.
    pub action: String,
}

/// revm's mainnet EVM with Ember's native-code hook.
///
/// ```ignore
/// let evm = Context::mainnet().with_db(db).build_mainnet();
/// let mut evm = EmberEvm::new(evm, jit_registry);
/// let result = evm.transact(tx)?;
/// ```
#[derive(Debug)]
pub struct EmberEvm<CTX, P> {
    /// The wrapped revm EVM (context, instructions, precompiles, frame stack).
    pub inner: MainnetEvm<CTX>,
    /// Where native functions come from.
    pub provider: P,
    /// Frame-run counters.
    pub stats: ExecStats,
    /// When `Some`, every `frame_run` appends a [`FrameRecord`] (debugging divergences; costs
    /// a stack copy and a memory hash per segment).
    pub record_frames: Option<Vec<FrameRecord>>,
}

impl<CTX, P> EmberEvm<CTX, P> {
    /// Wraps a revm mainnet EVM (e.g. `Context::mainnet().with_db(db).build_mainnet()`).
    pub fn new(inner: MainnetEvm<CTX>, provider: P) -> Self {
        Self {
            inner,
            provider,
            stats: ExecStats::default(),
            record_frames: None,
        }
    }
}

/// Runs `f` on `interp`'s state with `host`, and turns its status into the interpreter action
/// revm expects from a frame run (exactly what `Interpreter::run_plain` would produce).
///
/// # Safety
/// `f` must be a function compiled by Ember for the bytecode in `interp` and the spec in
/// `interp.runtime_flag`, with this crate's ABI.
pub unsafe fn run_native(
    f: NativeFn,
    interp: &mut Interp,
    host: &mut (dyn revm::context_interface::Host + '_),
) -> InterpreterAction {
    let data = interp.stack.data_mut();
    if data.capacity() < STACK_LIMIT as usize {
        data.reserve_exact(STACK_LIMIT as usize - data.len());
    }
    let stack = data.as_mut_ptr();
    let stack_len = data.len() as u64;
    let (calldata, calldata_len) = (core::ptr::null(), 0);
    let resume_pc = interp.bytecode.pc() as u64;
    let gas_remaining = interp.gas.remaining();
    // Erase the host's lifetime: the pointer only lives for the duration of the call below.
    // SAFETY: `host` outlives the native call, and builtins reborrow it only during the call.
    let mut host_ref: &mut DynHost = unsafe {
        core::mem::transmute::<&mut (dyn revm::context_interface::Host + '_), &mut DynHost>(host)
    };
    let interp_ptr: *mut Interp = interp;
    let mut ctx = EvmContext {
        stack,
        stack_len,
        gas_remaining,
        memory: core::ptr::null_mut(),
        memory_len: 0,
        resume_pc,
        builtins: &BUILTINS,
        interpreter: interp_ptr as *mut c_void,
        host: (&mut host_ref) as *mut &mut DynHost as *mut c_void,
        calldata,
        calldata_len,
        fail_section: 0,
        fail_safe_len: 0,
    };
    // SAFETY: `ctx.interpreter` is the live interpreter, not otherwise borrowed now.
    unsafe { refresh_memory(&mut ctx) };
    // SAFETY: the caller guarantees `f` was compiled for this bytecode/spec with this ABI; the
    // context points at live, exclusively borrowed state for the duration of the call.
    let status = unsafe { f(&mut ctx) };
    // SAFETY: no other borrow of the interpreter is live; generated code wrote initialised
    // words below `stack_len` within capacity.
    let interp = unsafe { &mut *interp_ptr };
    unsafe { interp.stack.data_mut().set_len(ctx.stack_len as usize) };
    interp.gas.set_remaining(ctx.gas_remaining);
    let result = instruction_result_from_u8(status);
    if interp.bytecode.action().is_none() {
        interp.halt(result);
    }
    interp.take_next_action()
}

impl<CTX, P> EvmTr for EmberEvm<CTX, P>
where
    CTX: ContextTr,
    P: NativeProvider,
{
    type Context = CTX;
    type Instructions = EthInstructions<EthInterpreter, CTX>;
    type Precompiles = EthPrecompiles;
    type Frame = EthFrame<EthInterpreter>;

    fn all(
        &self,
    ) -> (
        &Self::Context,
        &Self::Instructions,
        &Self::Precompiles,
        &FrameStack<Self::Frame>,
    ) {
        self.inner.all()
    }

    fn all_mut(
        &mut self,
    ) -> (
        &mut Self::Context,
        &mut Self::Instructions,
        &mut Self::Precompiles,
        &mut FrameStack<Self::Frame>,
    ) {
        self.inner.all_mut()
    }

    fn frame_init(
        &mut self,
        frame_input: <Self::Frame as FrameTr>::FrameInit,
    ) -> Result<FrameInitResult<'_, Self::Frame>, ContextDbError<CTX>> {
        crate::observe::frame_input(&frame_input.frame_input);
        self.inner.frame_init(frame_input)
    }

    fn frame_run(&mut self) -> Result<FrameInitOrResult<Self::Frame>, ContextDbError<CTX>> {
        let frame = self.inner.frame_stack.get();
        let context = &mut self.inner.ctx;
        let spec = frame.interpreter.runtime_flag.spec_id;
        let native = frame
            .interpreter
            .bytecode
            .hash()
            .and_then(|h| self.provider.native_fn(&h, spec));
        let is_native = native.is_some();
        let action = match native {
            Some(f) => {
                self.stats.native_runs.set(self.stats.native_runs.get() + 1);
                // SAFETY: the provider returned `f` for exactly this code hash and spec.
                unsafe { run_native(f, &mut frame.interpreter, context) }
            }
            None => {
                self.stats
                    .interpreted_runs
                    .set(self.stats.interpreted_runs.get() + 1);
                let instructions = &self.inner.instruction;
                frame.interpreter.run_plain(
                    instructions.instruction_table(),
                    instructions.gas_table(),
                    context,
                )
            }
        };
        if let Some(records) = self.record_frames.as_mut() {
            use revm::interpreter::interpreter_types::MemoryTr;
            let it = &frame.interpreter;
            let mem = it.memory.slice(0..it.memory.size());
            records.push(FrameRecord {
                depth: frame.depth,
                code_hash: it.bytecode.hash().unwrap_or_default(),
                native: is_native,
                pc: it.bytecode.pc(),
                gas_remaining: it.gas.remaining(),
                gas_refunded: it.gas.refunded(),
                stack: it.stack.data().clone(),
                memory_len: mem.len(),
                memory_hash: revm::primitives::keccak256(&*mem),
                action: match &action {
                    InterpreterAction::NewFrame(revm::interpreter::FrameInput::Create(_)) => {
                        "create".to_string()
                    }
                    InterpreterAction::NewFrame(_) => "call".to_string(),
                    InterpreterAction::Return(r) => format!("return ({:?})", r.result),
                },
            });
        }
        frame.process_next_action(context, action).inspect(|i| {
            if i.is_result() {
                frame.set_finished(true);
            }
        })
    }

    fn frame_return_result(
        &mut self,
        result: <Self::Frame as FrameTr>::FrameResult,
    ) -> Result<Option<<Self::Frame as FrameTr>::FrameResult>, ContextDbError<Self::Context>> {
        self.inner.frame_return_result(result)
    }
}

impl<CTX, P> ExecuteEvm for EmberEvm<CTX, P>
where
    CTX: ContextTr<Journal: JournalTr<State = EvmState>> + ContextSetters,
    P: NativeProvider,
{
    type ExecutionResult = ExecutionResult<HaltReason>;
    type State = EvmState;
    type Error = EVMError<<CTX::Db as Database>::Error, InvalidTransaction>;
    type Tx = <CTX as ContextTr>::Tx;
    type Block = <CTX as ContextTr>::Block;

    fn set_block(&mut self, block: Self::Block) {
        self.inner.ctx.set_block(block);
    }

    fn transact_one(&mut self, tx: Self::Tx) -> Result<Self::ExecutionResult, Self::Error> {
        self.inner.ctx.set_tx(tx);
        MainnetHandler::default().run(self)
    }

    fn finalize(&mut self) -> Self::State {
        self.inner.ctx.journal_mut().finalize()
    }

    fn replay(&mut self) -> Result<ResultAndState<HaltReason>, Self::Error> {
        MainnetHandler::default()
            .run(self)
            .inspect_err(|_| {
                let _ = self.finalize();
            })
            .map(|result| {
                let state = self.finalize();
                ResultAndState::new(result, state)
            })
    }
}

impl<CTX, P> ExecuteCommitEvm for EmberEvm<CTX, P>
where
    CTX: ContextTr<Journal: JournalTr<State = EvmState>, Db: DatabaseCommit> + ContextSetters,
    P: NativeProvider,
{
    fn commit(&mut self, state: Self::State) {
        self.inner.ctx.db_mut().commit(state);
    }
}

impl<CTX, P> SystemCallEvm for EmberEvm<CTX, P>
where
    CTX: ContextTr<Journal: JournalTr<State = EvmState>, Tx: SystemCallTx> + ContextSetters,
    P: NativeProvider,
{
    fn system_call_one_with_caller(
        &mut self,
        caller: Address,
        system_contract_address: Address,
        data: Bytes,
    ) -> Result<Self::ExecutionResult, Self::Error> {
        self.inner.ctx.set_tx(CTX::Tx::new_system_tx_with_caller(
            caller,
            system_contract_address,
            data,
        ));
        MainnetHandler::default().run_system_call(self)
    }
}

impl<CTX, P> SystemCallCommitEvm for EmberEvm<CTX, P>
where
    CTX: ContextTr<Journal: JournalTr<State = EvmState>, Db: DatabaseCommit, Tx: SystemCallTx>
        + ContextSetters,
    P: NativeProvider,
{
    fn system_call_with_caller_commit(
        &mut self,
        caller: Address,
        system_contract_address: Address,
        data: Bytes,
    ) -> Result<Self::ExecutionResult, Self::Error> {
        self.system_call_with_caller(caller, system_contract_address, data)
            .map(|output| {
                self.inner.ctx.db_mut().commit(output.state);
                output.result
            })
    }
}

/// The spec a context runs under (convenience for providers and tools).
pub fn context_spec<CTX: ContextTr>(ctx: &CTX) -> SpecId {
    use revm::context_interface::Cfg;
    ctx.cfg().spec().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers "no function" and counts the questions.
    #[derive(Default)]
    struct Counting(Cell<u32>);

    impl NativeProvider for Counting {
        fn native_fn(&self, _: &B256, _: SpecId) -> Option<NativeFn> {
            self.0.set(self.0.get() + 1);
            None
        }
    }

    #[test]
    fn memo_provider_asks_once_per_code_hash_and_spec() {
        let inner = Counting::default();
        let memo = MemoProvider::new(&inner);
        let (a, b) = (B256::repeat_byte(1), B256::repeat_byte(2));
        for _ in 0..3 {
            assert!(memo.native_fn(&a, SpecId::CANCUN).is_none());
            assert!(memo.native_fn(&b, SpecId::CANCUN).is_none());
            assert!(memo.native_fn(&a, SpecId::SHANGHAI).is_none());
        }
        assert_eq!(inner.0.get(), 3);
    }
}
