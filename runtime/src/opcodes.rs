//! The opcode table: the one description of every legacy opcode that the analyzer, the code
//! generator, the section-failure resolver, the disassembler and the tests all read.
//!
//! Names, stack inputs/outputs and immediate sizes come from revm's `OPCODE_INFO`; static gas
//! per fork from revm's `gas_table_spec`; what is ours is the fork each opcode activates in (it
//! mirrors the `check!` calls in revm's instruction functions) and how Ember compiles it
//! ([`OpClass`]).

use revm::bytecode::opcode::{self, OpCodeInfo, OPCODE_INFO};
use revm::interpreter::{instructions::gas_table_spec, InstructionResult};
use revm::primitives::hardfork::SpecId;

/// Highest fork Ember compiles for. Later forks (Amsterdam: EIP-8037 state gas, DUPN/SWAPN/
/// EXCHANGE, SLOTNUM) are refused by the compiler and run in the interpreter, reported as such.
pub const MAX_SPEC: SpecId = SpecId::OSAKA;

/// How the code generator lowers an opcode, and what it may do at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpClass {
    /// Lowered to inline LLVM IR (or a pure arithmetic builtin); static gas only; cannot halt
    /// except by gas or stack checks, which are done per section.
    Pure,
    /// Reads the environment through the `op` builtin; static gas only; cannot halt (other than
    /// by a fatal database error, which aborts the transaction anyway).
    Env,
    /// May charge dynamic gas or halt for its own reasons: ends a gas/stack section. Memory
    /// loads/stores have an inline fast path; everything else calls the `op` builtin.
    Dynamic,
    /// JUMP / JUMPI: ends a basic block.
    Jump,
    /// Ends execution of the frame (STOP, RETURN, REVERT, INVALID, SELFDESTRUCT, unknown
    /// opcodes, opcodes not active in the fork).
    Terminal,
    /// CALL-family and CREATE-family opcodes: suspend the frame for a child frame and resume
    /// after it.
    Suspend,
}

/// revm's static information for `op` (name, stack inputs/outputs, immediate size).
#[inline]
pub fn info(op: u8) -> Option<OpCodeInfo> {
    OPCODE_INFO[op as usize]
}

/// Opcode mnemonic, or `UNKNOWN(0x..)`.
pub fn name(op: u8) -> String {
    match info(op) {
        Some(i) => i.name().to_string(),
        None => format!("UNKNOWN(0x{op:02x})"),
    }
}

/// Size of the immediate that follows `op` in legacy code (only PUSH1..PUSH32 have one; revm's
/// jump-destination analysis treats every other byte as a one-byte instruction).
#[inline]
pub fn immediate_size(op: u8) -> usize {
    if (opcode::PUSH1..=opcode::PUSH32).contains(&op) {
        (op - opcode::PUSH1 + 1) as usize
    } else {
        0
    }
}

/// The fork in which `op` becomes active, or `None` for bytes that are not opcodes at all.
pub fn first_spec(op: u8) -> Option<SpecId> {
    use opcode::*;
    info(op)?;
    Some(match op {
        DELEGATECALL => SpecId::HOMESTEAD,
        REVERT | RETURNDATASIZE | RETURNDATACOPY | STATICCALL => SpecId::BYZANTIUM,
        SHL | SHR | SAR | CREATE2 | EXTCODEHASH => SpecId::PETERSBURG,
        CHAINID | SELFBALANCE => SpecId::ISTANBUL,
        BASEFEE => SpecId::LONDON,
        PUSH0 => SpecId::SHANGHAI,
        TLOAD | TSTORE | MCOPY | BLOBHASH | BLOBBASEFEE => SpecId::CANCUN,
        CLZ => SpecId::OSAKA,
        DUPN | SWAPN | EXCHANGE | SLOTNUM => SpecId::AMSTERDAM,
        _ => SpecId::FRONTIER,
    })
}

/// Whether `op` is an active opcode in `spec`.
#[inline]
pub fn enabled(op: u8, spec: SpecId) -> bool {
    first_spec(op).is_some_and(|s| spec.is_enabled_in(s))
}

/// The static gas revm charges for `op` in `spec` before executing it (also for inactive and
/// unknown opcodes, exactly as the interpreter does).
#[inline]
pub fn static_gas(op: u8, spec: SpecId) -> u64 {
    gas_table_spec(spec)[op as usize] as u64
}

/// Static gas table for a whole fork.
pub fn gas_table(spec: SpecId) -> [u16; 256] {
    gas_table_spec(spec)
}

/// Stack words `(inputs, outputs)` of `op` as seen by the stack checks. Inactive and unknown
/// opcodes are `(0, 0)`: they halt before touching the stack.
pub fn stack_io(op: u8, spec: SpecId) -> (u8, u8) {
    if !enabled(op, spec) {
        return (0, 0);
    }
    let i = info(op).expect("enabled opcodes have info");
    (i.inputs(), i.outputs())
}

/// Stack words `op` needs before it can fail for any other reason.
///
/// revm pops the operands of some opcodes in stages and charges gas or checks the static flag
/// in between (LOGn pops offset/length, charges, then pops the topics; CREATE2 pops the salt
/// after metering the init code; CALL pops gas/address/value, checks a value transfer in a
/// static call, then pops the memory ranges). For these, Ember's up-front stack check only
/// requires the first stage; revm's own instruction function then reports any later
/// underflow exactly as the interpreter does.
pub fn stack_check_inputs(op: u8, spec: SpecId) -> u8 {
    let (inputs, _) = self::stack_io(op, spec);
    if !enabled(op, spec) {
        return inputs;
    }
    use opcode::{CALL, CALLCODE, CREATE, CREATE2, DELEGATECALL, LOG0, LOG4, STATICCALL};
    match op {
        LOG0..=LOG4 => 2,
        CREATE | CREATE2 | CALL | CALLCODE => 3,
        DELEGATECALL | STATICCALL => 2,
        _ => inputs,
    }
}

/// How `op` is compiled in `spec`.
pub fn class(op: u8, spec: SpecId) -> OpClass {
    use opcode::*;
    if !enabled(op, spec) {
        return OpClass::Terminal;
    }
    match op {
        STOP | RETURN | REVERT | INVALID | SELFDESTRUCT => OpClass::Terminal,
        JUMP | JUMPI => OpClass::Jump,
        CALL | CALLCODE | DELEGATECALL | STATICCALL | CREATE | CREATE2 => OpClass::Suspend,
        ADD | MUL | SUB | DIV | SDIV | MOD | SMOD | ADDMOD | MULMOD | SIGNEXTEND | LT | GT
        | SLT | SGT | EQ | ISZERO | AND | OR | XOR | NOT | BYTE | SHL | SHR | SAR | CLZ | POP
        | JUMPDEST | PC | MSIZE => OpClass::Pure,
        _ if (PUSH0..=PUSH32).contains(&op) => OpClass::Pure,
        _ if (DUP1..=DUP16).contains(&op) => OpClass::Pure,
        _ if (SWAP1..=SWAP16).contains(&op) => OpClass::Pure,
        ADDRESS | ORIGIN | CALLER | CALLVALUE | CALLDATALOAD | CALLDATASIZE | CODESIZE
        | GASPRICE | RETURNDATASIZE | COINBASE | TIMESTAMP | NUMBER | DIFFICULTY | GASLIMIT
        | CHAINID | SELFBALANCE | BASEFEE | BLOBHASH | BLOBBASEFEE | BLOCKHASH | TLOAD => {
            OpClass::Env
        }
        _ => OpClass::Dynamic,
    }
}

/// Whether `op` refuses to run in a static call *before* it looks at the stack
/// (revm's `require_non_staticcall!` comes first in these instruction functions).
pub fn static_check_first(op: u8) -> bool {
    use opcode::*;
    matches!(
        op,
        SSTORE | TSTORE | LOG0 | LOG1 | LOG2 | LOG3 | LOG4 | CREATE | CREATE2 | SELFDESTRUCT
    )
}

/// The stack error revm reports for `op` executed with `len` words on the stack, if any.
///
/// Mirrors revm 43 exactly, including its quirk that DUPn on a too-short stack reports
/// `StackOverflow` (its `Stack::dup` folds both checks into one).
pub fn stack_error(op: u8, spec: SpecId, len: u64) -> Option<InstructionResult> {
    let (inputs, outputs) = stack_io(op, spec);
    let (inputs, outputs) = (inputs as u64, outputs as u64);
    if (opcode::DUP1..=opcode::DUP16).contains(&op) && enabled(op, spec) {
        return (len < inputs || len + 1 > crate::abi::STACK_LIMIT)
            .then_some(InstructionResult::StackOverflow);
    }
    if len < stack_check_inputs(op, spec) as u64 {
        return Some(InstructionResult::StackUnderflow);
    }
    if len >= inputs && len - inputs + outputs > crate::abi::STACK_LIMIT {
        return Some(InstructionResult::StackOverflow);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_matches_revm_names() {
        assert!(!enabled(opcode::PUSH0, SpecId::MERGE));
        assert!(enabled(opcode::PUSH0, SpecId::SHANGHAI));
        assert!(!enabled(opcode::CLZ, SpecId::PRAGUE));
        assert!(enabled(opcode::CLZ, SpecId::OSAKA));
        assert!(!enabled(0x0c, SpecId::OSAKA));
    }

    #[test]
    fn dup_underflow_is_reported_as_overflow_like_revm() {
        assert_eq!(
            stack_error(opcode::DUP2, SpecId::CANCUN, 1),
            Some(InstructionResult::StackOverflow)
        );
        assert_eq!(
            stack_error(opcode::SWAP1, SpecId::CANCUN, 1),
            Some(InstructionResult::StackUnderflow)
        );
        assert_eq!(
            stack_error(opcode::PUSH1, SpecId::CANCUN, 1024),
            Some(InstructionResult::StackOverflow)
        );
    }
}
