//! Benchmark programs that ship with Ember, so `ember bench` has something to measure on a
//! machine without `../shared`. Each is a small hand-assembled contract plus the call that
//! drives it (see [`all`]); all run for millions of gas and return a result word that the
//! tests check against a Rust model.
//!
//! The code is written as hex with one instruction per comment line; `pc` offsets are given so
//! the jump targets can be checked by eye.

use crate::fixture::{Contract, Fixture};
use revm::primitives::{Address, Bytes, U256};

/// Address every embedded contract is deployed at.
pub const CONTRACT: Address = Address::new([
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0xe1, 0xbe,
]);

/// Gas limit of every embedded call (far above what they use).
pub const GAS_LIMIT: u64 = 30_000_000;

/// Iterative Fibonacci: `n` = calldata word 0; returns `fib(n) mod 2^256`.
/// About 55 gas per iteration. Stack in the loop: `[n, a, b]` (b on top).
pub const FIBONACCI: &str = concat!(
    "6000", // 0x00 PUSH1 0
    "35",   // 0x02 CALLDATALOAD        [n]
    "6000", // 0x03 PUSH1 0             [n, a=0]
    "6001", // 0x05 PUSH1 1             [n, a, b=1]
    "5b",   // 0x07 JUMPDEST loop
    "82",   // 0x08 DUP3                [n, a, b, n]
    "15",   // 0x09 ISZERO
    "6019", // 0x0a PUSH1 end
    "57",   // 0x0c JUMPI               [n, a, b]
    "80",   // 0x0d DUP1                [n, a, b, b]
    "91",   // 0x0e SWAP2               [n, b, b, a]
    "01",   // 0x0f ADD                 [n, b, a+b]
    "91",   // 0x10 SWAP2               [a+b, b, n]
    "6001", // 0x11 PUSH1 1
    "90",   // 0x13 SWAP1               [a+b, b, 1, n]
    "03",   // 0x14 SUB                 [a+b, b, n-1]
    "91",   // 0x15 SWAP2               [n-1, b, a+b]
    "6007", // 0x16 PUSH1 loop
    "56",   // 0x18 JUMP
    "5b",   // 0x19 JUMPDEST end        [0, a, b]
    "50",   // 0x1a POP                 [0, a]
    "6000", // 0x1b PUSH1 0
    "52",   // 0x1d MSTORE              mem[0] = a
    "6020", // 0x1e PUSH1 32
    "6000", // 0x20 PUSH1 0
    "f3",   // 0x22 RETURN              mem[0..32]
);

/// Keccak chain: `mem[0]` = calldata word 0, then `count` (calldata word 1) times
/// `mem[0] = keccak256(mem[0..32])`; returns the last hash. About 88 gas per iteration.
pub const KECCAK: &str = concat!(
    "6000", // 0x00 PUSH1 0
    "35",   // 0x02 CALLDATALOAD        [seed]
    "6000", // 0x03 PUSH1 0
    "52",   // 0x05 MSTORE              mem[0] = seed
    "6020", // 0x06 PUSH1 32
    "35",   // 0x08 CALLDATALOAD        [i = count]
    "5b",   // 0x09 JUMPDEST loop
    "80",   // 0x0a DUP1
    "15",   // 0x0b ISZERO
    "601e", // 0x0c PUSH1 end
    "57",   // 0x0e JUMPI               [i]
    "6020", // 0x0f PUSH1 32            size
    "6000", // 0x11 PUSH1 0             offset
    "20",   // 0x13 KECCAK256           [i, h]
    "6000", // 0x14 PUSH1 0
    "52",   // 0x16 MSTORE              mem[0] = h
    "6001", // 0x17 PUSH1 1
    "90",   // 0x19 SWAP1
    "03",   // 0x1a SUB                 [i-1]
    "6009", // 0x1b PUSH1 loop
    "56",   // 0x1d JUMP
    "5b",   // 0x1e JUMPDEST end
    "6020", // 0x1f PUSH1 32
    "6000", // 0x21 PUSH1 0
    "f3",   // 0x23 RETURN              mem[0..32]
);

/// Storage loop: for `n` = calldata word 0 down to 1, `slot = n & 31;
/// sstore(slot, sload(slot) + n)`; returns `sload(0)`. 32 cold slots (22,100 gas each the
/// first time), then about 260 gas per iteration of warm SLOAD/SSTORE.
pub const STORAGE: &str = concat!(
    "6000", // 0x00 PUSH1 0
    "35",   // 0x02 CALLDATALOAD        [n]
    "5b",   // 0x03 JUMPDEST loop
    "80",   // 0x04 DUP1
    "15",   // 0x05 ISZERO
    "601a", // 0x06 PUSH1 end
    "57",   // 0x08 JUMPI               [n]
    "80",   // 0x09 DUP1                [n, n]
    "601f", // 0x0a PUSH1 31
    "16",   // 0x0c AND                 [n, slot]
    "80",   // 0x0d DUP1                [n, slot, slot]
    "54",   // 0x0e SLOAD               [n, slot, v]
    "82",   // 0x0f DUP3                [n, slot, v, n]
    "01",   // 0x10 ADD                 [n, slot, v+n]
    "90",   // 0x11 SWAP1               [n, v+n, slot]
    "55",   // 0x12 SSTORE              storage[slot] = v+n
    "6001", // 0x13 PUSH1 1
    "90",   // 0x15 SWAP1
    "03",   // 0x16 SUB                 [n-1]
    "6003", // 0x17 PUSH1 loop
    "56",   // 0x19 JUMP
    "5b",   // 0x1a JUMPDEST end
    "6000", // 0x1b PUSH1 0
    "54",   // 0x1d SLOAD
    "6000", // 0x1e PUSH1 0
    "52",   // 0x20 MSTORE
    "6020", // 0x21 PUSH1 32
    "6000", // 0x23 PUSH1 0
    "f3",   // 0x25 RETURN              mem[0..32]
);

/// Iterations of the Fibonacci loop (about 2.75 Mgas).
pub const FIBONACCI_N: u64 = 50_000;
/// Hashes in the keccak chain (about 1.8 Mgas).
pub const KECCAK_N: u64 = 20_000;
/// Iterations of the storage loop (about 2 Mgas).
pub const STORAGE_N: u64 = 5_000;

/// An embedded benchmark program.
#[derive(Clone, Copy, Debug)]
pub struct Program {
    /// Name used in reports (like a fixture file stem).
    pub name: &'static str,
    /// What it exercises.
    pub description: &'static str,
    /// Runtime code as hex.
    pub code_hex: &'static str,
    /// Calldata words.
    pub args: &'static [u64],
}

/// The embedded programs.
pub const PROGRAMS: &[Program] = &[
    Program {
        name: "fibonacci_loop",
        description: "arithmetic and stack shuffling in a tight loop",
        code_hex: FIBONACCI,
        args: &[FIBONACCI_N],
    },
    Program {
        name: "keccak_loop",
        description: "KECCAK256 over memory, repeatedly",
        code_hex: KECCAK,
        args: &[0x1234_5678, KECCAK_N],
    },
    Program {
        name: "storage_loop",
        description: "SLOAD/SSTORE in a loop over 32 slots",
        code_hex: STORAGE,
        args: &[STORAGE_N],
    },
];

impl Program {
    /// The runtime code.
    pub fn code(&self) -> Bytes {
        // The constants above are valid hex; the tests decode every one of them.
        Bytes::from(hex::decode(self.code_hex).unwrap_or_default())
    }

    /// Calldata: each argument as a big-endian 32-byte word.
    pub fn calldata(&self) -> Bytes {
        self.args
            .iter()
            .flat_map(|&a| U256::from(a).to_be_bytes::<32>())
            .collect::<Vec<u8>>()
            .into()
    }

    /// The program as a fixture: the contract at [`CONTRACT`], called with [`Self::calldata`].
    pub fn fixture(&self) -> Fixture {
        let contract = Contract {
            address: CONTRACT,
            code: self.code(),
            storage: Vec::new(),
        };
        Fixture::synthetic(self.name, &[contract], CONTRACT, self.calldata(), GAS_LIMIT)
    }
}

/// Every embedded program as a fixture.
pub fn all() -> Vec<Fixture> {
    PROGRAMS.iter().map(Program::fixture).collect()
}

/// The embedded program called `name`, if any.
pub fn by_name(name: &str) -> Option<&'static Program> {
    PROGRAMS.iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec;
    use ember_compiler::{JitRegistry, OptLevel};
    use revm::context_interface::result::ExecutionResult;
    use revm::primitives::{hardfork::SpecId, keccak256};

    fn run(p: &Program) -> (U256, u64) {
        let out = exec::run_interp(&p.fixture(), SpecId::CANCUN).expect("runs");
        let r = &out.result.result;
        assert!(
            matches!(r, ExecutionResult::Success { .. }),
            "{}: {r:?}",
            p.name
        );
        let word = U256::from_be_slice(r.output().expect("output"));
        (word, r.tx_gas_used())
    }

    #[test]
    fn code_is_valid_hex() {
        for p in PROGRAMS {
            assert!(hex::decode(p.code_hex).is_ok(), "{}", p.name);
        }
    }

    #[test]
    fn fibonacci_matches_model() {
        let (mut a, mut b) = (U256::ZERO, U256::from(1));
        for _ in 0..FIBONACCI_N {
            (a, b) = (b, a.wrapping_add(b));
        }
        let (out, gas) = run(by_name("fibonacci_loop").unwrap());
        assert_eq!(out, a);
        assert!(gas > 1_000_000, "gas {gas}");
    }

    #[test]
    fn keccak_matches_model() {
        let mut h = U256::from(0x1234_5678u64).to_be_bytes::<32>();
        for _ in 0..KECCAK_N {
            h = keccak256(h).0;
        }
        let (out, gas) = run(by_name("keccak_loop").unwrap());
        assert_eq!(out, U256::from_be_bytes(h));
        assert!(gas > 1_000_000, "gas {gas}");
    }

    #[test]
    fn storage_matches_model() {
        let slot0: u64 = (1..=STORAGE_N).filter(|n| n & 31 == 0).sum();
        let (out, gas) = run(by_name("storage_loop").unwrap());
        assert_eq!(out, U256::from(slot0));
        assert!(gas > 1_000_000, "gas {gas}");
    }

    #[test]
    fn jit_matches_interpreter() {
        for p in PROGRAMS {
            let fx = p.fixture();
            let mut reg = JitRegistry::new(OptLevel::O2).expect("LLVM");
            let errs = exec::compile_fixture(&fx, SpecId::CANCUN, &mut reg);
            assert!(errs.is_empty(), "{}: {errs:?}", p.name);
            let want = exec::run_interp(&fx, SpecId::CANCUN).expect("interpreter");
            let got = exec::run_with(&fx, SpecId::CANCUN, &reg).expect("jit");
            assert_eq!(exec::diff(&want.result, &got.result), "", "{}", p.name);
            assert_eq!(
                (got.native_runs, got.interpreted_runs),
                (1, 0),
                "{}",
                p.name
            );
        }
    }
}
