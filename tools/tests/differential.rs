//! Randomized differential test: random but valid-ish programs from a weighted instruction
//! grammar, run by Ember's JIT and revm's interpreter, compared with `exec::diff` (plus frame
//! counts and "the program ran natively", see `program::Checker::check`).
//!
//! The grammar: pushes of edge values, arithmetic/bitwise/comparison opcodes (missing operands
//! are pushed first), DUP/SWAP/POP, environment opcodes, memory opcodes (MLOAD, MSTORE,
//! MSTORE8, MCOPY, KECCAK256, CALLDATACOPY, CODECOPY, RETURNDATACOPY, EXTCODECOPY) with offsets
//! mostly small and sometimes huge, LOG0-4, SLOAD/SSTORE/TLOAD/TSTORE, jumps to labels (forward
//! and backward, conditional and not) and to invalid targets, bounded loops (a counter in
//! memory), CALL/CALLCODE/DELEGATECALL/STATICCALL to the helper contracts, to the program
//! itself and to precompiles with random memory ranges, CREATE/CREATE2 with small init codes,
//! raw random bytes, and a terminator (STOP, RETURN, REVERT, INVALID, SELFDESTRUCT, falling off
//! the end). Forks: all of Frontier..Osaka; O0 and O2; direct calls and (from Byzantium)
//! calls under STATICCALL, of any program (static-context violations) or of read-only ones
//! (so the static call can succeed).
//!
//! Each program is compiled once and run with its random gas limit, then with a sweep of
//! limits below what the interpreter spent (so out-of-gas is hit at many points).
//!
//! `EMBER_DIFF_CASES` sets the number of programs per test (default 2000 in each of the two
//! tests), `EMBER_DIFF_SEED` fixes the seed (a random one is printed otherwise). Failures show
//! the program hex, fork, optimisation level, gas limit, entry and the differences.

use ember_compiler::OptLevel;
use ember_tools::program::{self, Asm, Checker, Entry};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use revm::bytecode::opcode as op;
use revm::primitives::hardfork::SpecId;
use revm::primitives::{Address, U256};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// A known JIT/interpreter divergence, scoped out until fixed. Every entry names a reported
/// bug (see `tests/opcodes.rs` for the same list with reproductions); remove it when fixed.
struct Known {
    /// Reported bug.
    what: &'static str,
    /// Whether a failure (program, reported difference) is this bug.
    matches: fn(&[u8], &str) -> bool,
}

/// None at present: D1 (resume after a trailing CALL/CREATE) and D2/D3 (staged pops of
/// LOGn/CREATE2/CALL) were fixed; `tests/regressions.rs` keeps their reproductions.
const KNOWN_DIVERGENCES: &[Known] = &[];

fn u(v: u64) -> U256 {
    U256::from(v)
}

fn pow2(n: usize) -> U256 {
    U256::from(1) << n
}

fn addr_word(a: Address) -> U256 {
    U256::from_be_slice(a.as_slice())
}

fn word() -> BoxedStrategy<U256> {
    prop_oneof![
        4 => (0u64..70).prop_map(u),
        3 => prop::sample::select(vec![
            U256::ZERO,
            u(1),
            u(2),
            u(31),
            u(32),
            u(255),
            u(256),
            pow2(64),
            u(u64::MAX),
            pow2(128),
            pow2(255),
            pow2(255) - u(1),
            U256::MAX,
            U256::MAX - u(1),
        ]),
        2 => any::<[u8; 32]>().prop_map(U256::from_be_bytes),
        1 => (0usize..256).prop_map(pow2),
    ]
    .boxed()
}

fn huge() -> BoxedStrategy<U256> {
    prop::sample::select(vec![
        pow2(32),
        pow2(32) - u(1),
        pow2(64),
        u(u64::MAX),
        pow2(255),
        U256::MAX,
    ])
    .boxed()
}

fn offset() -> BoxedStrategy<U256> {
    prop_oneof![60 => (0u64..256).prop_map(u), 6 => (0u64..0x2000).prop_map(u), 1 => huge()].boxed()
}

fn length() -> BoxedStrategy<U256> {
    prop_oneof![60 => (0u64..100).prop_map(u), 6 => (0u64..0x1000).prop_map(u), 1 => huge()].boxed()
}

fn address() -> BoxedStrategy<U256> {
    let mut v: Vec<U256> = [
        program::TARGET,
        program::RETURNER,
        program::REVERTER,
        program::LOGGER,
        program::SUICIDER,
        program::EMPTY,
        program::DELEGATED,
        program::NONEXISTENT,
        program::CALLER,
        program::COINBASE,
    ]
    .into_iter()
    .map(addr_word)
    .collect();
    v.extend([
        u(1),
        u(2),
        u(3),
        u(4),
        u(5),
        u(9),
        u(0x0a),
        u(0x100),
        addr_word(program::RETURNER) | pow2(200),
    ]);
    prop_oneof![8 => prop::sample::select(v), 1 => word()].boxed()
}

fn slot() -> BoxedStrategy<U256> {
    prop_oneof![4 => (0u64..6).prop_map(u), 1 => Just(U256::MAX), 1 => word()].boxed()
}

fn call_gas() -> BoxedStrategy<U256> {
    prop_oneof![
        3 => (0u64..100_000).prop_map(u),
        1 => prop::sample::select(vec![U256::ZERO, u(2300), u(u64::MAX), U256::MAX])
    ]
    .boxed()
}

fn value() -> BoxedStrategy<U256> {
    prop_oneof![6 => Just(U256::ZERO), 2 => (1u64..1000).prop_map(u), 1 => Just(U256::MAX)].boxed()
}

/// Whether `o` is an opcode of `spec` (only steers generation: inactive opcodes are still
/// generated, rarely; both engines are compared whatever happens).
fn active(o: u8, spec: SpecId) -> bool {
    if revm::bytecode::opcode::OPCODE_INFO[o as usize].is_none() {
        return false;
    }
    let first = match o {
        op::DELEGATECALL => SpecId::HOMESTEAD,
        op::REVERT | op::RETURNDATASIZE | op::RETURNDATACOPY | op::STATICCALL => SpecId::BYZANTIUM,
        op::SHL | op::SHR | op::SAR | op::CREATE2 | op::EXTCODEHASH => SpecId::PETERSBURG,
        op::CHAINID | op::SELFBALANCE => SpecId::ISTANBUL,
        op::BASEFEE => SpecId::LONDON,
        op::PUSH0 => SpecId::SHANGHAI,
        op::TLOAD | op::TSTORE | op::MCOPY | op::BLOBHASH | op::BLOBBASEFEE => SpecId::CANCUN,
        op::CLZ => SpecId::OSAKA,
        op::DUPN | op::SWAPN | op::EXCHANGE | op::SLOTNUM => SpecId::AMSTERDAM,
        _ => SpecId::FRONTIER,
    };
    spec.is_enabled_in(first)
}

/// Opcodes that change state (not allowed under STATICCALL).
fn writes_state(o: u8) -> bool {
    matches!(
        o,
        op::SSTORE | op::TSTORE | op::LOG0..=op::LOG4 | op::CREATE | op::CREATE2 | op::SELFDESTRUCT
    )
}

/// A weighted choice among the strategies whose opcode is active in `spec` (and, when
/// `read_only`, does not change state).
fn union_active<T: std::fmt::Debug + 'static>(
    spec: SpecId,
    read_only: bool,
    v: Vec<(u32, u8, BoxedStrategy<T>)>,
) -> BoxedStrategy<T> {
    let v: Vec<(u32, BoxedStrategy<T>)> = v
        .into_iter()
        .filter(|(_, o, _)| active(*o, spec) && !(read_only && writes_state(*o)))
        .map(|(w, _, s)| (w, s))
        .collect();
    proptest::strategy::Union::new_weighted(v).boxed()
}

/// Opcodes whose operands are generated explicitly, by kind (top of stack first).
fn explicit(spec: SpecId, read_only: bool) -> BoxedStrategy<(u8, Vec<U256>)> {
    let w = word;
    let with = |wt: u32, o: u8, s: Vec<BoxedStrategy<U256>>| (wt, o, (Just(o), s).boxed());
    union_active(
        spec,
        read_only,
        vec![
            with(3, op::MLOAD, vec![offset()]),
            with(4, op::MSTORE, vec![offset(), w()]),
            with(2, op::MSTORE8, vec![offset(), w()]),
            with(2, op::MCOPY, vec![offset(), offset(), length()]),
            with(2, op::KECCAK256, vec![offset(), length()]),
            with(1, op::CALLDATACOPY, vec![offset(), offset(), length()]),
            with(1, op::CODECOPY, vec![offset(), offset(), length()]),
            with(
                2,
                op::RETURNDATACOPY,
                vec![
                    offset(),
                    (0u64..40).prop_map(u).boxed(),
                    (0u64..40).prop_map(u).boxed(),
                ],
            ),
            with(
                1,
                op::EXTCODECOPY,
                vec![address(), offset(), offset(), length()],
            ),
            with(1, op::BALANCE, vec![address()]),
            with(1, op::EXTCODESIZE, vec![address()]),
            with(1, op::EXTCODEHASH, vec![address()]),
            with(
                1,
                op::BLOCKHASH,
                vec![prop_oneof![
                    (program::BLOCK_NUMBER - 300..program::BLOCK_NUMBER + 2).prop_map(u),
                    w()
                ]
                .boxed()],
            ),
            with(1, op::CALLDATALOAD, vec![offset()]),
            with(
                1,
                op::BLOBHASH,
                vec![prop_oneof![(0u64..4).prop_map(u), w()].boxed()],
            ),
            with(3, op::SLOAD, vec![slot()]),
            with(
                3,
                op::SSTORE,
                vec![slot(), prop_oneof![(0u64..3).prop_map(u), w()].boxed()],
            ),
            with(2, op::TLOAD, vec![slot()]),
            with(2, op::TSTORE, vec![slot(), w()]),
            with(1, op::LOG0, vec![offset(), length()]),
            with(1, op::LOG1, vec![offset(), length(), w()]),
            with(1, op::LOG2, vec![offset(), length(), w(), w()]),
            with(1, op::LOG3, vec![offset(), length(), w(), w(), w()]),
            with(1, op::LOG4, vec![offset(), length(), w(), w(), w(), w()]),
        ],
    )
}

const STACK_OPS: &[u8] = &[
    op::ADD,
    op::MUL,
    op::SUB,
    op::DIV,
    op::SDIV,
    op::MOD,
    op::SMOD,
    op::ADDMOD,
    op::MULMOD,
    op::EXP,
    op::SIGNEXTEND,
    op::LT,
    op::GT,
    op::SLT,
    op::SGT,
    op::EQ,
    op::ISZERO,
    op::AND,
    op::OR,
    op::XOR,
    op::NOT,
    op::BYTE,
    op::SHL,
    op::SHR,
    op::SAR,
    op::CLZ,
    op::POP,
];

const ENV_OPS: &[u8] = &[
    op::ADDRESS,
    op::ORIGIN,
    op::CALLER,
    op::CALLVALUE,
    op::CALLDATASIZE,
    op::CODESIZE,
    op::GASPRICE,
    op::RETURNDATASIZE,
    op::COINBASE,
    op::TIMESTAMP,
    op::NUMBER,
    op::DIFFICULTY,
    op::GASLIMIT,
    op::CHAINID,
    op::SELFBALANCE,
    op::BASEFEE,
    op::BLOBBASEFEE,
    op::GAS,
    op::PC,
    op::MSIZE,
    op::PUSH0,
];

/// Init codes for CREATE/CREATE2 (at most 32 bytes each).
const INIT_CODES: &[&[u8]] = &[
    // Deploys one byte (STOP).
    &[0x60, 0x00, 0x60, 0x00, 0x53, 0x60, 0x01, 0x60, 0x00, 0xf3],
    // Reverts with one word.
    &[0x60, 0x07, 0x60, 0x00, 0x52, 0x60, 0x20, 0x60, 0x00, 0xfd],
    // Empty.
    &[],
    // SSTORE(1, 1), then deploys code starting with 0xEF.
    &[
        0x60, 0x01, 0x60, 0x01, 0x55, 0x60, 0xef, 0x60, 0x00, 0x53, 0x60, 0x01, 0x60, 0x00, 0xf3,
    ],
    // Loops until out of gas.
    &[0x5b, 0x60, 0x00, 0x56],
    // Self-destructs to its creator.
    &[0x33, 0xff],
    // Deploys 0x6001 (PUSH1 with its immediate cut short) and logs.
    &[
        0x60, 0x00, 0x60, 0x00, 0xa0, 0x61, 0x60, 0x01, 0x60, 0xf0, 0x1b, 0x60, 0x00, 0x52, 0x60,
        0x02, 0x60, 0x00, 0xf3,
    ],
];

#[derive(Clone, Debug)]
enum Target {
    Label(usize),
    Pc(u16),
    Big(U256),
}

#[derive(Clone, Debug)]
enum Leaf {
    Push(U256),
    Stack(u8),
    Dup(u8),
    Swap(u8),
    Env(u8),
    Explicit(u8, Vec<U256>),
    Call {
        op: u8,
        gas: U256,
        addr: U256,
        value: U256,
        mem: [U256; 4],
    },
    Create {
        create2: bool,
        value: U256,
        init: usize,
        salt: U256,
    },
    Label,
    Jump {
        target: Target,
        cond: Option<U256>,
    },
    Raw(Vec<u8>),
}

#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)] // test-only generator data
enum Item {
    Leaf(Leaf),
    Loop { iters: u8, body: Vec<Leaf> },
}

#[derive(Clone, Debug)]
enum Terminator {
    Stop,
    Return(U256, U256),
    Revert(U256, U256),
    Invalid,
    SelfDestruct(U256),
    FallOff,
    Byte(u8),
}

#[derive(Clone, Debug)]
struct Case {
    items: Vec<Item>,
    term: Terminator,
    spec: SpecId,
    o2: bool,
    static_entry: bool,
    gas: u64,
    calldata: Vec<u8>,
}

/// A program item. `read_only` programs (for static entry) change no state, so that the
/// STATICCALL can succeed; other programs under static entry exercise the violations.
fn leaf(spec: SpecId, read_only: bool) -> BoxedStrategy<Leaf> {
    let target = prop_oneof![
        12 => any::<usize>().prop_map(Target::Label),
        1 => any::<u16>().prop_map(|p| Target::Pc(p % 512)),
        1 => huge().prop_map(Target::Big),
    ];
    let cond = prop_oneof![
        2 => Just(None),
        2 => Just(Some(U256::ZERO)),
        1 => word().prop_map(Some),
    ];
    let mem = [offset(), length(), offset(), length()];
    let pick =
        |ops: &[u8]| -> Vec<u8> { ops.iter().copied().filter(|o| active(*o, spec)).collect() };
    let calls = pick(&[op::CALL, op::CALLCODE, op::DELEGATECALL, op::STATICCALL]);
    // Opcodes (and unassigned bytes) that are not valid in this fork.
    let inactive: Vec<u8> = (0..=255u8).filter(|o| !active(*o, spec)).collect();
    let create2 = spec.is_enabled_in(SpecId::PETERSBURG);
    let call_value = if read_only {
        Just(U256::ZERO).boxed()
    } else {
        value()
    };
    let mut v: Vec<(u32, BoxedStrategy<Leaf>)> = vec![
        (20, word().prop_map(Leaf::Push).boxed()),
        (
            14,
            prop::sample::select(pick(STACK_OPS))
                .prop_map(Leaf::Stack)
                .boxed(),
        ),
        (4, (1u8..=16).prop_map(Leaf::Dup).boxed()),
        (4, (1u8..=16).prop_map(Leaf::Swap).boxed()),
        (
            8,
            prop::sample::select(pick(ENV_OPS))
                .prop_map(Leaf::Env)
                .boxed(),
        ),
        (
            22,
            explicit(spec, read_only)
                .prop_map(|(o, a)| Leaf::Explicit(o, a))
                .boxed(),
        ),
        (
            5,
            (
                prop::sample::select(calls),
                call_gas(),
                address(),
                call_value,
                mem,
            )
                .prop_map(|(op, gas, addr, value, mem)| Leaf::Call {
                    op,
                    gas,
                    addr,
                    value,
                    mem,
                })
                .boxed(),
        ),
        (5, Just(Leaf::Label).boxed()),
        (
            3,
            (target, cond)
                .prop_map(|(target, cond)| Leaf::Jump { target, cond })
                .boxed(),
        ),
        (
            1,
            prop::collection::vec(any::<u8>(), 1..6)
                .prop_map(Leaf::Raw)
                .boxed(),
        ),
        (
            1,
            prop::sample::select(inactive)
                .prop_map(|o| Leaf::Raw(vec![o]))
                .boxed(),
        ),
    ];
    if !read_only {
        v.push((
            2,
            (
                prop::bool::weighted(if create2 { 0.5 } else { 0.0 }),
                value(),
                0..INIT_CODES.len(),
                word(),
            )
                .prop_map(|(create2, value, init, salt)| Leaf::Create {
                    create2,
                    value,
                    init,
                    salt,
                })
                .boxed(),
        ));
    }
    proptest::strategy::Union::new_weighted(v).boxed()
}

fn item(spec: SpecId, read_only: bool) -> BoxedStrategy<Item> {
    prop_oneof![
        30 => leaf(spec, read_only).prop_map(Item::Leaf),
        1 => (1u8..6, prop::collection::vec(leaf(spec, read_only), 1..10))
            .prop_map(|(iters, body)| Item::Loop { iters, body }),
    ]
    .boxed()
}

fn terminator(spec: SpecId, read_only: bool) -> BoxedStrategy<Terminator> {
    let mut v: Vec<(u32, BoxedStrategy<Terminator>)> = vec![
        (2, Just(Terminator::Stop).boxed()),
        (
            4,
            (offset(), length())
                .prop_map(|(o, l)| Terminator::Return(o, l))
                .boxed(),
        ),
        (1, Just(Terminator::Invalid).boxed()),
        (1, Just(Terminator::FallOff).boxed()),
        (1, any::<u8>().prop_map(Terminator::Byte).boxed()),
    ];
    if !read_only {
        v.push((1, address().prop_map(Terminator::SelfDestruct).boxed()));
    }
    if spec.is_enabled_in(SpecId::BYZANTIUM) {
        v.push((
            2,
            (offset(), length())
                .prop_map(|(o, l)| Terminator::Revert(o, l))
                .boxed(),
        ));
    }
    proptest::strategy::Union::new_weighted(v).boxed()
}

/// How a case enters the program: directly, under STATICCALL (any program), or under
/// STATICCALL with a read-only program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    Direct,
    Static,
    StaticReadOnly,
}

fn case(specs: &'static [SpecId]) -> impl Strategy<Value = Case> {
    let via = |spec: SpecId| {
        if spec.is_enabled_in(SpecId::BYZANTIUM) {
            prop_oneof![16 => Just(Via::Direct), 1 => Just(Via::Static), 2 => Just(Via::StaticReadOnly)]
                .boxed()
        } else {
            Just(Via::Direct).boxed()
        }
    };
    prop::sample::select(specs)
        .prop_flat_map(move |spec| (Just(spec), via(spec)))
        .prop_flat_map(|(spec, via)| {
            let read_only = via == Via::StaticReadOnly;
            let gas = prop_oneof![
                2 => 0u64..4_000,
                2 => 4_000u64..200_000,
                3 => 200_000u64..3_000_000,
            ];
            (
                prop::collection::vec(item(spec, read_only), 1..48),
                terminator(spec, read_only),
                prop::bool::weighted(0.3),
                gas,
                prop::collection::vec(any::<u8>(), 0..70),
            )
                .prop_map(move |(items, term, o2, gas, calldata)| Case {
                    items,
                    term,
                    spec,
                    o2,
                    static_entry: via != Via::Direct,
                    gas,
                    calldata,
                })
        })
}

/// Stack inputs of the stack-only opcodes.
fn inputs(o: u8) -> usize {
    revm::bytecode::opcode::OPCODE_INFO[o as usize].map_or(0, |i| i.inputs() as usize)
}

struct Assembler {
    a: Asm,
    depth: usize,
    labels: Vec<usize>,
    /// (position of a PUSH2 immediate, label index)
    fixups: Vec<(usize, usize)>,
    loops: usize,
    filler: u64,
}

impl Assembler {
    fn push(&mut self, v: U256) {
        self.a.push(v);
        self.depth += 1;
    }

    /// Makes sure `n` items are (statically) on the stack.
    fn need(&mut self, n: usize) {
        while self.depth < n {
            self.filler = self
                .filler
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v = match self.filler >> 61 {
                0 => U256::ZERO,
                1 => U256::MAX,
                2 => pow2(255),
                _ => u(self.filler >> 56),
            };
            self.push(v);
        }
    }

    fn apply(&mut self, o: u8) {
        let info = revm::bytecode::opcode::OPCODE_INFO[o as usize];
        let (i, out) = info.map_or((0, 0), |x| (x.inputs() as usize, x.outputs() as usize));
        self.depth = self.depth.saturating_sub(i) + out;
    }

    fn leaf(&mut self, l: &Leaf) {
        match l {
            Leaf::Push(v) => self.push(*v),
            Leaf::Stack(o) | Leaf::Env(o) => {
                self.need(inputs(*o));
                self.a.op(&[*o]);
                self.apply(*o);
            }
            Leaf::Dup(n) => {
                self.need(*n as usize);
                self.a.op(&[op::DUP1 + n - 1]);
                self.depth += 1;
            }
            Leaf::Swap(n) => {
                self.need(*n as usize + 1);
                self.a.op(&[op::SWAP1 + n - 1]);
            }
            Leaf::Explicit(o, args) => {
                for v in args.iter().rev() {
                    self.push(*v);
                }
                self.a.op(&[*o]);
                self.apply(*o);
            }
            Leaf::Call {
                op: o,
                gas,
                addr,
                value,
                mem,
            } => {
                for v in mem.iter().rev() {
                    self.push(*v);
                }
                if matches!(*o, op::CALL | op::CALLCODE) {
                    self.push(*value);
                }
                self.push(*addr);
                self.push(*gas);
                self.a.op(&[*o]);
                self.apply(*o);
            }
            Leaf::Create {
                create2,
                value,
                init,
                salt,
            } => {
                let code = INIT_CODES[*init];
                let mut padded = [0u8; 32];
                padded[..code.len()].copy_from_slice(code);
                self.push(U256::from_be_bytes(padded));
                self.push(U256::ZERO);
                self.a.op(&[op::MSTORE]);
                self.depth -= 2;
                if *create2 {
                    self.push(*salt);
                }
                self.push(u(code.len() as u64));
                self.push(U256::ZERO);
                self.push(*value);
                let o = if *create2 { op::CREATE2 } else { op::CREATE };
                self.a.op(&[o]);
                self.apply(o);
            }
            Leaf::Label => {
                self.labels.push(self.a.pc());
                self.a.op(&[op::JUMPDEST]);
            }
            Leaf::Jump { target, cond } => {
                if let Some(c) = cond {
                    self.push(*c);
                }
                match target {
                    Target::Label(i) => {
                        self.a.op(&[op::PUSH2, 0, 0]);
                        self.fixups.push((self.a.pc() - 2, *i));
                    }
                    Target::Pc(p) => {
                        self.a.push_n(2, u(*p as u64));
                    }
                    Target::Big(v) => {
                        self.a.push(*v);
                    }
                }
                self.depth += 1;
                let o = if cond.is_some() { op::JUMPI } else { op::JUMP };
                self.a.op(&[o]);
                self.apply(o);
            }
            Leaf::Raw(b) => {
                self.a.op(b);
            }
        }
    }

    fn item(&mut self, it: &Item) {
        match it {
            Item::Leaf(l) => self.leaf(l),
            Item::Loop { iters, body } => {
                let slot = u(0x800 + 32 * self.loops as u64);
                self.loops += 1;
                self.a.push_u64(0).push(slot).op(&[op::MSTORE]);
                let head = self.a.pc();
                self.a.op(&[op::JUMPDEST]);
                for l in body {
                    self.leaf(l);
                }
                // counter += 1; loop while counter < iters
                self.a
                    .push_u64(*iters as u64)
                    .push(slot)
                    .op(&[op::MLOAD])
                    .push_u64(1)
                    .op(&[op::ADD, op::DUP1]);
                self.a
                    .push(slot)
                    .op(&[op::MSTORE, op::LT])
                    .push_n(2, u(head as u64))
                    .op(&[op::JUMPI]);
            }
        }
    }

    fn terminate(&mut self, t: &Terminator) {
        match t {
            Terminator::Stop => {
                self.a.op(&[op::STOP]);
            }
            Terminator::Return(o, l) | Terminator::Revert(o, l) => {
                self.a.push(*l).push(*o);
                self.a.op(&[if matches!(t, Terminator::Return(..)) {
                    op::RETURN
                } else {
                    op::REVERT
                }]);
            }
            Terminator::Invalid => {
                self.a.op(&[op::INVALID]);
            }
            Terminator::SelfDestruct(a) => {
                self.a.push(*a).op(&[op::SELFDESTRUCT]);
            }
            Terminator::FallOff => {}
            Terminator::Byte(b) => {
                self.a.op(&[*b]);
            }
        }
    }
}

fn assemble(c: &Case) -> Vec<u8> {
    let mut s = Assembler {
        a: Asm::new(),
        depth: 0,
        labels: Vec::new(),
        fixups: Vec::new(),
        loops: 0,
        filler: 7,
    };
    for it in &c.items {
        s.item(it);
    }
    s.terminate(&c.term);
    let labels = s.labels.clone();
    for (at, i) in s.fixups.clone() {
        // Without labels, jump to a byte that is not a JUMPDEST (PC 0 is never one here).
        let pc = if labels.is_empty() {
            0
        } else {
            labels[i % labels.len()]
        };
        s.a.patch_u16(at, pc as u16);
    }
    let mut code = s.a.finish();
    // EOF-prefixed code is not compiled by design; keep random programs legacy.
    if code.first() == Some(&0xef) {
        code.insert(0, op::JUMPDEST);
    }
    if code.is_empty() {
        code.push(op::STOP);
    }
    code
}

/// The known divergence a failure is, if any.
fn known(code: &[u8], d: &str) -> Option<&'static str> {
    KNOWN_DIVERGENCES
        .iter()
        .find(|k| (k.matches)(code, d))
        .map(|k| k.what)
}

thread_local! {
    /// Outcome counts of the runs (status -> count), for the summary.
    static OUTCOMES: RefCell<BTreeMap<String, u64>> = const { RefCell::new(BTreeMap::new()) };
}

fn count(what: String) {
    OUTCOMES.with(|o| *o.borrow_mut().entry(what).or_default() += 1);
}

/// Compiles the case's program and compares the engines at its gas limit and at a sweep of
/// limits below what the interpreter spent.
fn check_case(c: &Case) -> Result<(), TestCaseError> {
    let code = assemble(c);
    let opt = if c.o2 { OptLevel::O2 } else { OptLevel::O0 };
    let checker = Checker::new(&code, c.spec, opt).map_err(|e| {
        TestCaseError::fail(format!(
            "{e}\n{:?} {opt:?} code 0x{}",
            c.spec,
            hex::encode(&code)
        ))
    })?;
    let entry = if c.static_entry {
        Entry::Static
    } else {
        Entry::Direct
    };
    let intrinsic_guess = 21_000
        + 16 * c.calldata.len() as u64
        + if c.spec.is_enabled_in(SpecId::BERLIN) {
            6_700
        } else {
            0
        };
    let run = |gas: u64| -> Result<Option<u64>, TestCaseError> {
        match checker.check(&c.calldata, gas, entry) {
            Ok(Ok(o)) => {
                let r = &o.result.result;
                let mut s = ember_tools::exec::status(r);
                if entry == Entry::Static {
                    // The wrapper returns the STATICCALL's success flag first.
                    let ok = r.output().is_some_and(|b| b.len() >= 32 && b[31] == 1);
                    s = format!("static {}", if ok { "call ok" } else { "call failed" });
                }
                count(s);
                Ok(Some(r.gas().total_gas_spent()))
            }
            Ok(Err(_)) => {
                count("rejected (below intrinsic gas)".into());
                Ok(None)
            }
            Err(d) if known(&code, &d).is_some() => {
                count(format!("KNOWN {}", known(&code, &d).unwrap_or_default()));
                Ok(None)
            }
            Err(d) => Err(TestCaseError::fail(format!(
                "{d}{}",
                checker.repro(&c.calldata, gas, entry)
            ))),
        }
    };
    run(intrinsic_guess + c.gas)?;
    let big = 1_000_000;
    if let Some(spent) = run(big)? {
        if spent < big {
            // spent-1 .. spent-8, then doubling steps down to the intrinsic cost.
            let mut d = 1;
            while d < spent {
                if run(spent - d)?.is_none() {
                    break;
                }
                d = if d < 8 { d + 1 } else { d * 2 };
            }
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("EMBER_DIFF_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn seed() -> u64 {
    std::env::var("EMBER_DIFF_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            t.as_nanos() as u64 ^ (std::process::id() as u64) << 32
        })
}

fn run_differential(name: &str, specs: &'static [SpecId], salt: u64) {
    let env_seed = seed();
    let seed = env_seed ^ salt;
    eprintln!("{name}: EMBER_DIFF_SEED={env_seed} reproduces this run");
    let config = Config {
        cases: cases(),
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        max_shrink_iters: 400,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let t = std::time::Instant::now();
    let result = runner.run(&case(specs), |c| check_case(&c));
    let outcomes = OUTCOMES.with(|o| std::mem::take(&mut *o.borrow_mut()));
    eprintln!(
        "{name}: {:.1} s; run outcomes: {outcomes:?}",
        t.elapsed().as_secs_f64()
    );
    if let Err(e) = result {
        panic!("{name} (EMBER_DIFF_SEED={env_seed}): {e}");
    }
}

static OLD_SPECS: [SpecId; 7] = [
    SpecId::FRONTIER,
    SpecId::HOMESTEAD,
    SpecId::TANGERINE,
    SpecId::SPURIOUS_DRAGON,
    SpecId::BYZANTIUM,
    SpecId::PETERSBURG,
    SpecId::ISTANBUL,
];

static NEW_SPECS: [SpecId; 7] = [
    SpecId::BERLIN,
    SpecId::LONDON,
    SpecId::MERGE,
    SpecId::SHANGHAI,
    SpecId::CANCUN,
    SpecId::PRAGUE,
    SpecId::OSAKA,
];

#[test]
fn differential_frontier_to_istanbul() {
    run_differential("frontier..istanbul", &OLD_SPECS, 0);
}

#[test]
fn differential_berlin_to_osaka() {
    run_differential("berlin..osaka", &NEW_SPECS, 0x9e37_79b9);
}

/// Deep recursion: the program CALLs itself with (almost) all its gas and returns how many
/// nested calls succeeded. Before EIP-150 (Tangerine) this reaches the 1024-frame depth limit;
/// later the 63/64 rule runs it out of gas first. Every frame runs natively.
#[test]
fn deep_recursion() {
    let mut a = Asm::new();
    // CALL(GAS - 800, ADDRESS, 0, 0, 0, 0, 32): the child's answer lands in memory[0..32].
    a.push_u64(32)
        .push_u64(0)
        .push_u64(0)
        .push_u64(0)
        .push_u64(0)
        .op(&[op::ADDRESS]);
    a.push_u64(800).op(&[op::GAS, op::SUB, op::CALL]);
    // answer = child's answer + (1 if the call succeeded)
    a.push_u64(0)
        .op(&[op::MLOAD, op::ADD])
        .push_u64(0)
        .op(&[op::MSTORE]);
    a.push_u64(32).push_u64(0).op(&[op::RETURN]);
    let code = a.finish();
    for spec in program::SPECS {
        for opt in [OptLevel::O0, OptLevel::O2] {
            program::compare(&code, &[], spec, program::BLOCK_GAS_LIMIT, opt)
                .unwrap_or_else(|e| panic!("{spec:?} {opt:?}: {e}"));
        }
        let out = program::run_program(
            &code,
            &[],
            spec,
            program::BLOCK_GAS_LIMIT,
            program::ExecMode::Interp,
        )
        .unwrap();
        let depth = U256::from_be_slice(out.result.result.output().unwrap());
        if !spec.is_enabled_in(SpecId::TANGERINE) {
            assert_eq!(
                depth,
                u(1024),
                "{spec:?}: nested calls up to the depth limit"
            );
        } else {
            assert!(depth > u(100), "{spec:?}: only {depth} nested calls");
        }
    }
}
