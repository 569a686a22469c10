//! Builtins: the Rust functions generated code calls through [`Builtins`].
//!
//! Host-level opcodes run revm's own instruction functions (the same code the interpreter
//! runs), against the interpreter state that generated code shares: gas, stack and memory are
//! synchronised in and out around each call, so results are bit-exact by construction. Pure
//! arithmetic that LLVM cannot lower well (256-bit division) has dedicated builtins.

use crate::abi::{Builtins, EvmContext};
use crate::observe;
use crate::opcodes;
use revm::bytecode::opcode as op;
use revm::context_interface::Host;
use revm::interpreter::{
    instructions::{
        arithmetic, bitwise, block_info, contract, control, host, i256, memory, stack, system,
        tx_info,
    },
    interpreter::EthInterpreter,
    interpreter_types::Jumps,
    InstructionContext, InstructionExecResult, InstructionResult, Interpreter,
};
use revm::primitives::U256;

/// The interpreter type compiled code runs against.
pub type Interp = Interpreter<EthInterpreter>;
/// The host as builtins see it.
pub type DynHost = dyn Host;
type OpFn = for<'a> fn(InstructionContext<'a, DynHost, EthInterpreter>) -> InstructionExecResult;

/// The builtin table handed to every compiled function.
pub static BUILTINS: Builtins = Builtins {
    op: builtin_op,
    section_fail: builtin_section_fail,
    div: builtin_div,
    sdiv: builtin_sdiv,
    rem: builtin_rem,
    smod: builtin_smod,
    addmod: builtin_addmod,
    mulmod: builtin_mulmod,
};

/// revm's instruction function for every opcode compiled through the `op` builtin.
static OP_TABLE: [Option<OpFn>; 256] = {
    let mut t: [Option<OpFn>; 256] = [None; 256];
    t[op::EXP as usize] = Some(arithmetic::exp);
    t[op::KECCAK256 as usize] = Some(system::keccak256);
    t[op::ADDRESS as usize] = Some(system::address);
    t[op::BALANCE as usize] = Some(observe::balance_op::<DynHost>);
    t[op::ORIGIN as usize] = Some(tx_info::origin);
    t[op::CALLER as usize] = Some(system::caller);
    t[op::CALLVALUE as usize] = Some(system::callvalue);
    t[op::CALLDATALOAD as usize] = Some(system::calldataload);
    t[op::CALLDATASIZE as usize] = Some(system::calldatasize);
    t[op::CALLDATACOPY as usize] = Some(system::calldatacopy);
    t[op::CODESIZE as usize] = Some(system::codesize);
    t[op::CODECOPY as usize] = Some(system::codecopy);
    t[op::GASPRICE as usize] = Some(tx_info::gasprice);
    t[op::EXTCODESIZE as usize] = Some(host::extcodesize);
    t[op::EXTCODECOPY as usize] = Some(host::extcodecopy);
    t[op::RETURNDATASIZE as usize] = Some(system::returndatasize);
    t[op::RETURNDATACOPY as usize] = Some(system::returndatacopy);
    t[op::EXTCODEHASH as usize] = Some(host::extcodehash);
    t[op::BLOCKHASH as usize] = Some(host::blockhash);
    t[op::COINBASE as usize] = Some(block_info::coinbase);
    t[op::TIMESTAMP as usize] = Some(block_info::timestamp);
    t[op::NUMBER as usize] = Some(block_info::block_number);
    t[op::DIFFICULTY as usize] = Some(block_info::difficulty);
    t[op::GASLIMIT as usize] = Some(block_info::gaslimit);
    t[op::CHAINID as usize] = Some(block_info::chainid);
    t[op::SELFBALANCE as usize] = Some(observe::selfbalance_op::<DynHost>);
    t[op::BASEFEE as usize] = Some(block_info::basefee);
    t[op::BLOBHASH as usize] = Some(tx_info::blob_hash);
    t[op::BLOBBASEFEE as usize] = Some(block_info::blob_basefee);
    t[op::SLOTNUM as usize] = Some(block_info::slot_num);
    t[op::MLOAD as usize] = Some(memory::mload);
    t[op::MSTORE as usize] = Some(memory::mstore);
    t[op::MSTORE8 as usize] = Some(memory::mstore8);
    t[op::SLOAD as usize] = Some(host::sload);
    t[op::SSTORE as usize] = Some(host::sstore);
    t[op::GAS as usize] = Some(system::gas);
    t[op::TLOAD as usize] = Some(host::tload);
    t[op::TSTORE as usize] = Some(host::tstore);
    t[op::MCOPY as usize] = Some(memory::mcopy);
    t[op::LOG0 as usize] = Some(host::log::<0, DynHost>);
    t[op::LOG1 as usize] = Some(host::log::<1, DynHost>);
    t[op::LOG2 as usize] = Some(host::log::<2, DynHost>);
    t[op::LOG3 as usize] = Some(host::log::<3, DynHost>);
    t[op::LOG4 as usize] = Some(host::log::<4, DynHost>);
    t[op::CREATE as usize] = Some(contract::create::<false, EthInterpreter, DynHost>);
    t[op::CALL as usize] = Some(contract::call::<{ op::CALL }, EthInterpreter, DynHost>);
    t[op::CALLCODE as usize] = Some(contract::call::<{ op::CALLCODE }, EthInterpreter, DynHost>);
    t[op::RETURN as usize] = Some(control::ret);
    t[op::DELEGATECALL as usize] =
        Some(contract::call::<{ op::DELEGATECALL }, EthInterpreter, DynHost>);
    t[op::CREATE2 as usize] = Some(contract::create::<true, EthInterpreter, DynHost>);
    t[op::STATICCALL as usize] =
        Some(contract::call::<{ op::STATICCALL }, EthInterpreter, DynHost>);
    t[op::REVERT as usize] = Some(control::revert);
    t[op::SELFDESTRUCT as usize] = Some(observe::selfdestruct_op::<DynHost>);
    // Opcodes that are normally inlined but are routed here when inactive in a fork, so revm
    // reports exactly its own error (NotActivated, or a static-call violation first).
    t[op::SHL as usize] = Some(bitwise::shl);
    t[op::SHR as usize] = Some(bitwise::shr);
    t[op::SAR as usize] = Some(bitwise::sar);
    t[op::CLZ as usize] = Some(bitwise::clz);
    t[op::PUSH0 as usize] = Some(stack::push0);
    t[op::DUPN as usize] = Some(stack::dupn);
    t[op::SWAPN as usize] = Some(stack::swapn);
    t[op::EXCHANGE as usize] = Some(stack::exchange);
    t
};

/// Whether the `op` builtin can execute `opcode`.
pub fn op_builtin_supports(opcode: u8) -> bool {
    OP_TABLE[opcode as usize].is_some()
}

/// Converts a status byte returned by generated code or a builtin back to an
/// [`InstructionResult`]. Unknown values map to `FatalExternalError`.
pub fn instruction_result_from_u8(v: u8) -> InstructionResult {
    use InstructionResult::*;
    const ALL: [InstructionResult; 39] = [
        Stop,
        Return,
        SelfDestruct,
        Suspend,
        Revert,
        CallTooDeep,
        OutOfFunds,
        CreateInitCodeStartingEF00,
        InvalidEOFInitCode,
        InvalidExtDelegateCallTarget,
        OutOfGas,
        MemoryOOG,
        MemoryLimitOOG,
        PrecompileOOG,
        InvalidOperandOOG,
        ReentrancySentryOOG,
        OpcodeNotFound,
        CallNotAllowedInsideStatic,
        StateChangeDuringStaticCall,
        InvalidFEOpcode,
        InvalidJump,
        NotActivated,
        StackUnderflow,
        StackOverflow,
        OutOfOffset,
        CreateCollision,
        OverflowPayment,
        PrecompileError,
        NonceOverflow,
        CreateContractSizeLimit,
        CreateContractStartingWithEF,
        CreateInitCodeSizeLimit,
        FatalExternalError,
        InvalidImmediateEncoding,
        // padding entries never match a real discriminant twice
        FatalExternalError,
        FatalExternalError,
        FatalExternalError,
        FatalExternalError,
        FatalExternalError,
    ];
    ALL.iter()
        .copied()
        .find(|r| *r as u8 == v)
        .unwrap_or(FatalExternalError)
}

/// Re-reads the frame's memory base and length into `ctx` after anything that may have
/// resized (and so reallocated) it.
///
/// # Safety
/// `ctx.interpreter` must point to a live interpreter not otherwise borrowed.
#[inline]
pub(crate) unsafe fn refresh_memory(ctx: &mut EvmContext) {
    // SAFETY: guaranteed by the caller.
    let interp = unsafe { &mut *(ctx.interpreter as *mut Interp) };
    let mut mem = interp.memory.context_memory_mut();
    ctx.memory = mem.as_mut_ptr();
    ctx.memory_len = mem.len() as u64;
}

/// # Safety
/// Called only by generated code with the context the runtime built for this frame.
unsafe extern "C" fn builtin_op(ctx: *mut EvmContext, opcode: u32, pc: u32) -> u8 {
    // SAFETY: the runtime passes a valid, exclusive context; its `interpreter` and `host`
    // pointers were created from exclusive borrows that outlive the native call.
    let ctx = unsafe { &mut *ctx };
    let interp = unsafe { &mut *(ctx.interpreter as *mut Interp) };
    let host: &mut DynHost = unsafe { &mut **(ctx.host as *mut &mut DynHost) };
    let Some(f) = OP_TABLE[(opcode & 0xff) as usize] else {
        return InstructionResult::FatalExternalError as u8;
    };
    // SAFETY: generated code only writes initialised words below `stack_len`, within the
    // STACK_LIMIT capacity the interpreter reserved.
    unsafe { interp.stack.data_mut().set_len(ctx.stack_len as usize) };
    interp.gas.set_remaining(ctx.gas_remaining);
    // The pc after this opcode: where a suspended frame resumes, and what revm's own
    // instructions would observe.
    interp.bytecode.absolute_jump(pc as usize + 1);
    let r = f(InstructionContext {
        interpreter: interp,
        host,
    });
    ctx.stack_len = interp.stack.len() as u64;
    ctx.gas_remaining = interp.gas.remaining();
    // SAFETY: `interp` is not used below; `refresh_memory` reborrows it.
    unsafe { refresh_memory(ctx) };
    match r {
        Ok(()) => 0,
        Err(e) => e as u8,
    }
}

/// Resolves the exact halt of a gas/stack section whose up-front check failed by replaying
/// its static effects op by op, as the interpreter would have executed them.
unsafe extern "C" fn builtin_section_fail(ctx: *mut EvmContext) -> u8 {
    // SAFETY: see `builtin_op`.
    let ctx = unsafe { &mut *ctx };
    let interp = unsafe { &mut *(ctx.interpreter as *mut Interp) };
    let spec = interp.runtime_flag.spec_id;
    let is_static = interp.runtime_flag.is_static;
    let code = interp.bytecode.bytes_slice();
    let gas_table = opcodes::gas_table(spec);
    let start_pc = (ctx.fail_section >> 32) as u32;
    let end_pc = ctx.fail_section as u32;
    let safe_len = ctx.fail_safe_len;
    let (r, gas, len) = resolve_section(
        code,
        &gas_table,
        spec,
        is_static,
        ctx.gas_remaining,
        ctx.stack_len,
        start_pc,
        end_pc,
    );
    ctx.gas_remaining = gas;
    ctx.stack_len = len.min(safe_len);
    r as u8
}

/// Pure core of [`Builtins::section_fail`]: returns the halt, the gas left and stack length
/// at the failing opcode.
#[allow(clippy::too_many_arguments)]
pub fn resolve_section(
    code: &[u8],
    gas_table: &[u16; 256],
    spec: revm::primitives::hardfork::SpecId,
    is_static: bool,
    mut gas: u64,
    mut len: u64,
    start_pc: u32,
    end_pc: u32,
) -> (InstructionResult, u64, u64) {
    let mut pc = start_pc as usize;
    while pc <= end_pc as usize {
        let opcode = code.get(pc).copied().unwrap_or(op::STOP);
        let g = gas_table[opcode as usize] as u64;
        if gas < g {
            return (InstructionResult::OutOfGas, 0, len);
        }
        gas -= g;
        if !opcodes::enabled(opcode, spec) {
            let r = if opcodes::info(opcode).is_none() {
                InstructionResult::OpcodeNotFound
            } else if is_static && opcodes::static_check_first(opcode) {
                InstructionResult::StateChangeDuringStaticCall
            } else {
                InstructionResult::NotActivated
            };
            return (r, gas, len);
        }
        if is_static && opcodes::static_check_first(opcode) {
            return (InstructionResult::StateChangeDuringStaticCall, gas, len);
        }
        if let Some(e) = opcodes::stack_error(opcode, spec, len) {
            return (e, gas, len);
        }
        let (i, o) = opcodes::stack_io(opcode, spec);
        len = len - i as u64 + o as u64;
        pc += 1 + opcodes::immediate_size(opcode);
    }
    // The up-front check was conservative and nothing in the section actually fails: this
    // would be a compiler bug, surfaced loudly rather than guessed.
    (InstructionResult::FatalExternalError, gas, len)
}

macro_rules! binop_builtin {
    ($(#[$m:meta])* $name:ident, |$a:ident, $b:ident| $body:expr) => {
        $(#[$m])*
        unsafe extern "C" fn $name(s: *mut U256) {
            // SAFETY: generated code passes a pointer to two live stack words.
            let (b_slot, $a) = unsafe { (&mut *s, *s.add(1)) };
            let $b = *b_slot;
            *b_slot = $body;
        }
    };
}

binop_builtin!(builtin_div, |a, b| if b.is_zero() {
    U256::ZERO
} else {
    a.wrapping_div(b)
});
binop_builtin!(builtin_sdiv, |a, b| i256::i256_div(a, b));
binop_builtin!(builtin_rem, |a, b| if b.is_zero() {
    U256::ZERO
} else {
    a.wrapping_rem(b)
});
binop_builtin!(builtin_smod, |a, b| i256::i256_mod(a, b));

unsafe extern "C" fn builtin_addmod(s: *mut U256) {
    // SAFETY: generated code passes a pointer to three live stack words.
    let (n, b, a) = unsafe { (*s, *s.add(1), *s.add(2)) };
    unsafe { *s = a.add_mod(b, n) };
}

unsafe extern "C" fn builtin_mulmod(s: *mut U256) {
    // SAFETY: generated code passes a pointer to three live stack words.
    let (n, b, a) = unsafe { (*s, *s.add(1), *s.add(2)) };
    unsafe { *s = a.mul_mod(b, n) };
}
