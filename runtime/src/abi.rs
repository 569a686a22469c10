//! The one ABI shared by generated code and Rust.
//!
//! Generated code receives a single pointer to [`EvmContext`] and returns a `u8`: `0` means
//! "keep going" (only ever seen by builtins), anything else is an
//! [`InstructionResult`](revm::interpreter::InstructionResult) discriminant. Every field offset the
//! code generator uses comes from the [`field`] indexes; tests assert them against
//! `core::mem::offset_of!`, so the layout is written down exactly once.

use core::ffi::c_void;
use revm::primitives::U256;

/// Signature of a compiled contract: `fn(ctx) -> InstructionResult as u8`.
pub type NativeFn = unsafe extern "C" fn(ctx: *mut EvmContext) -> u8;

/// Execution state shared between a compiled function and the runtime.
///
/// The stack and memory are the interpreter's own buffers, so a frame that suspends for a call
/// or create is resumed by revm exactly as an interpreted frame would be.
#[repr(C)]
#[derive(Debug)]
pub struct EvmContext {
    /// Base of the interpreter's stack buffer (capacity [`STACK_LIMIT`] words).
    pub stack: *mut U256,
    /// Number of live words on the stack; written by generated code before every builtin call.
    pub stack_len: u64,
    /// Gas left; written by generated code before every builtin call, reread after.
    pub gas_remaining: u64,
    /// Base of the current frame's memory. Invalidated by any builtin that can resize memory;
    /// generated code reloads it after every builtin call.
    pub memory: *mut u8,
    /// Length in bytes of the current frame's memory (always a multiple of 32).
    pub memory_len: u64,
    /// Program counter to resume at: `0` for a fresh frame, otherwise the pc after the
    /// CALL/CREATE that suspended the frame.
    pub resume_pc: u64,
    /// The builtin table generated code calls through.
    pub builtins: *const Builtins,
    /// `*mut Interpreter<EthInterpreter>`; opaque to generated code.
    pub interpreter: *mut c_void,
    /// `*mut &mut dyn Host`; opaque to generated code.
    pub host: *mut c_void,
    /// Calldata base pointer (read-only for generated code).
    pub calldata: *const u8,
    /// Calldata length in bytes.
    pub calldata_len: u64,
    /// Set by generated code before calling [`Builtins::section_fail`]: the failed section's
    /// first pc in the high 32 bits and last pc in the low 32 bits.
    pub fail_section: u64,
    /// Set with `fail_section`: the stack height below which every word is known to be written
    /// (words above it may still be in registers); the runtime reports at most this height.
    pub fail_safe_len: u64,
}

/// Maximum EVM stack depth in words.
pub const STACK_LIMIT: u64 = 1024;

/// Builtin entry points, called by generated code through [`EvmContext::builtins`].
///
/// Calling through a table (instead of by symbol) means JIT and AOT code need no symbol
/// resolution at all: a shared object compiled by Ember imports nothing.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Builtins {
    /// Runs one host-level opcode (`opcode`, at program counter `pc`) with revm's own
    /// instruction semantics against the interpreter state; returns 0 or a halt code.
    pub op: unsafe extern "C" fn(ctx: *mut EvmContext, opcode: u32, pc: u32) -> u8,
    /// Called when a section's up-front gas/stack check fails; returns the exact halt reason
    /// the interpreter would have produced, walking the section in `ctx.fail_section` op by op
    /// from `ctx.gas_remaining` and `ctx.stack_len`. Afterwards `ctx.stack_len` is at most
    /// `ctx.fail_safe_len`.
    pub section_fail: unsafe extern "C" fn(ctx: *mut EvmContext) -> u8,
    /// `s[0] = s[1] / s[0]` (unsigned, 0 on division by zero); `s` points at the second operand.
    pub div: unsafe extern "C" fn(s: *mut U256),
    /// Signed division.
    pub sdiv: unsafe extern "C" fn(s: *mut U256),
    /// Unsigned modulo.
    pub rem: unsafe extern "C" fn(s: *mut U256),
    /// Signed modulo.
    pub smod: unsafe extern "C" fn(s: *mut U256),
    /// `s[0] = (s[2] + s[1]) % s[0]`.
    pub addmod: unsafe extern "C" fn(s: *mut U256),
    /// `s[0] = (s[2] * s[1]) % s[0]`.
    pub mulmod: unsafe extern "C" fn(s: *mut U256),
}

/// Indexes of [`Builtins`] entries, in declaration order (each entry is one pointer).
#[allow(missing_docs)]
pub mod builtin_index {
    pub const OP: u32 = 0;
    pub const SECTION_FAIL: u32 = 1;
    pub const DIV: u32 = 2;
    pub const SDIV: u32 = 3;
    pub const REM: u32 = 4;
    pub const SMOD: u32 = 5;
    pub const ADDMOD: u32 = 6;
    pub const MULMOD: u32 = 7;
    pub const COUNT: u32 = 8;
}

/// Field indexes of [`EvmContext`] as the code generator addresses them (struct GEP indexes).
#[allow(missing_docs)]
pub mod field {
    pub const STACK: u32 = 0;
    pub const STACK_LEN: u32 = 1;
    pub const GAS_REMAINING: u32 = 2;
    pub const MEMORY: u32 = 3;
    pub const MEMORY_LEN: u32 = 4;
    pub const RESUME_PC: u32 = 5;
    pub const BUILTINS: u32 = 6;
    pub const INTERPRETER: u32 = 7;
    pub const HOST: u32 = 8;
    pub const CALLDATA: u32 = 9;
    pub const CALLDATA_LEN: u32 = 10;
    pub const FAIL_SECTION: u32 = 11;
    pub const FAIL_SAFE_LEN: u32 = 12;
    pub const COUNT: u32 = 13;
}

/// Every field of [`EvmContext`] is pointer-sized; the code generator declares the struct as
/// `COUNT` 64-bit slots. This is checked by the layout tests below.
pub const CONTEXT_SLOT_BYTES: usize = 8;

/// A hash of the ABI: the context layout and the builtin table. Embedded in AOT artifacts and
/// checked on load.
pub const ABI_VERSION: u64 = {
    // FNV-1a over a description of the layout; bump the string when semantics change.
    let desc: &[u8] = b"ember-abi-3;ctx:stack,stack_len,gas_remaining,memory,memory_len,resume_pc,builtins,interpreter,host,calldata,calldata_len,fail_section,fail_safe_len;builtins:op,section_fail,div,sdiv,rem,smod,addmod,mulmod";
    let mut h: u64 = 0xcbf29ce484222325;
    let mut i = 0;
    while i < desc.len() {
        h ^= desc[i] as u64;
        h = h.wrapping_mul(0x100000001b3);
        i += 1;
    }
    h
};

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn context_layout_matches_field_indexes() {
        let offsets = [
            (field::STACK, offset_of!(EvmContext, stack)),
            (field::STACK_LEN, offset_of!(EvmContext, stack_len)),
            (field::GAS_REMAINING, offset_of!(EvmContext, gas_remaining)),
            (field::MEMORY, offset_of!(EvmContext, memory)),
            (field::MEMORY_LEN, offset_of!(EvmContext, memory_len)),
            (field::RESUME_PC, offset_of!(EvmContext, resume_pc)),
            (field::BUILTINS, offset_of!(EvmContext, builtins)),
            (field::INTERPRETER, offset_of!(EvmContext, interpreter)),
            (field::HOST, offset_of!(EvmContext, host)),
            (field::CALLDATA, offset_of!(EvmContext, calldata)),
            (field::CALLDATA_LEN, offset_of!(EvmContext, calldata_len)),
            (field::FAIL_SECTION, offset_of!(EvmContext, fail_section)),
            (field::FAIL_SAFE_LEN, offset_of!(EvmContext, fail_safe_len)),
        ];
        assert_eq!(offsets.len() as u32, field::COUNT);
        for (idx, off) in offsets {
            assert_eq!(idx as usize * CONTEXT_SLOT_BYTES, off, "field {idx}");
        }
        assert_eq!(
            size_of::<EvmContext>(),
            field::COUNT as usize * CONTEXT_SLOT_BYTES
        );
    }

    #[test]
    fn builtin_table_layout() {
        assert_eq!(offset_of!(Builtins, op), builtin_index::OP as usize * 8);
        assert_eq!(
            offset_of!(Builtins, section_fail),
            builtin_index::SECTION_FAIL as usize * 8
        );
        assert_eq!(offset_of!(Builtins, div), builtin_index::DIV as usize * 8);
        assert_eq!(offset_of!(Builtins, sdiv), builtin_index::SDIV as usize * 8);
        assert_eq!(offset_of!(Builtins, rem), builtin_index::REM as usize * 8);
        assert_eq!(offset_of!(Builtins, smod), builtin_index::SMOD as usize * 8);
        assert_eq!(
            offset_of!(Builtins, addmod),
            builtin_index::ADDMOD as usize * 8
        );
        assert_eq!(
            offset_of!(Builtins, mulmod),
            builtin_index::MULMOD as usize * 8
        );
        assert_eq!(size_of::<Builtins>(), builtin_index::COUNT as usize * 8);
    }

    #[test]
    fn u256_is_four_little_endian_limbs() {
        // Generated code treats a stack word as an LLVM i256 in memory.
        assert_eq!(size_of::<U256>(), 32);
        let v = U256::from(0x0102u64);
        // SAFETY: U256 is 32 plain bytes.
        let bytes: [u8; 32] = unsafe { core::mem::transmute(v) };
        assert_eq!(bytes[0], 0x02);
        assert_eq!(bytes[1], 0x01);
    }
}
