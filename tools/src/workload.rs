//! Synthetic blocks for measuring block execution: independent and contended transactions of a
//! few kinds, sized in gas. The contracts are hand-assembled (see [`token_code`] and
//! [`pool_code`]) and the pre-state holds everything the transactions need, so every
//! transaction succeeds.
//!
//! | kind         | transaction i                                               | conflicts        |
//! |--------------|-------------------------------------------------------------|------------------|
//! | `transfers`  | sender i sends 1 wei to a fresh account i (21,000 gas)      | none             |
//! | `erc20`      | sender i calls `transfer(recipient i, 1)` on one token      | none             |
//! | `swaps`      | sender i swaps on its own pool i (token0 -> token1)         | none             |
//! | `hot-pool`   | sender i swaps on pool 0                                    | every pair       |
//! | `hot-sender` | sender 0 (nonce i) calls `transfer(recipient i, 1)`         | every pair       |
//! | `deposits`   | sender i sends 0.01 ether to one WETH-style vault (deposit) | none (*)         |
//!
//! (*) Every deposit changes the vault's balance, and every deposit runs the vault's code,
//! which needs its account: they are independent only because the executor records the
//! vault's balance change as a lazy credit and its read as depending on the code alone (the
//! vault never reads its own balance; `ParallelOptions::lazy_contract_balances`).
//! The pools are constant-product pools (0.3% fee) over two shared ERC-20-style tokens: a swap
//! reads both reserves, pulls `amountIn` of token0 from the caller with `transferFrom`, sends
//! the output of token1 with `transfer`, writes both reserves and logs. Independent swaps touch
//! different storage slots of the shared tokens (the caller's and the pool's balances), so they
//! do not conflict.

use crate::block::{Block, Expected, RunOptions};
use revm::bytecode::opcode as op;
use revm::bytecode::Bytecode;
use revm::context::{BlockEnv, CfgEnv, TxEnv};
use revm::context_interface::block::BlobExcessGasAndPrice;
use revm::database::{CacheDB, EmptyDB};
use revm::primitives::{hardfork::SpecId, keccak256, Address, Bytes, TxKind, B256, U256};
use revm::state::AccountInfo;
use std::collections::HashMap;

/// The kinds of synthetic blocks (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum WorkloadKind {
    /// Independent plain value transfers.
    Transfers,
    /// Independent ERC-20 transfers on one token.
    Erc20,
    /// Independent swaps, each on its own pool.
    Swaps,
    /// Swaps all on the same pool.
    HotPool,
    /// ERC-20 transfers all from the same sender.
    HotSender,
    /// Independent deposits of ether into one WETH-style vault.
    Deposits,
}

impl WorkloadKind {
    /// Every kind, in documentation order.
    pub const ALL: [WorkloadKind; 6] = [
        WorkloadKind::Transfers,
        WorkloadKind::Erc20,
        WorkloadKind::Swaps,
        WorkloadKind::HotPool,
        WorkloadKind::HotSender,
        WorkloadKind::Deposits,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Transfers => "transfers",
            WorkloadKind::Erc20 => "erc20",
            WorkloadKind::Swaps => "swaps",
            WorkloadKind::HotPool => "hot-pool",
            WorkloadKind::HotSender => "hot-sender",
            WorkloadKind::Deposits => "deposits",
        }
    }
}

impl std::fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Parses a gas amount: a number with an optional `k`, `M` or `G` suffix (`100M`, `1G`,
/// `2500000`).
pub fn parse_gas(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1_000u64),
        Some((i, 'm' | 'M')) => (&t[..i], 1_000_000),
        Some((i, 'g' | 'G')) => (&t[..i], 1_000_000_000),
        _ => (t, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("invalid gas amount {s:?} (e.g. 100M, 1G, 2500000)"))
}

/// `transfer(address,uint256)`.
pub const TRANSFER: [u8; 4] = [0xa9, 0x05, 0x9c, 0xbb];
/// `transferFrom(address,address,uint256)`.
pub const TRANSFER_FROM: [u8; 4] = [0x23, 0xb8, 0x72, 0xdd];
/// `balanceOf(address)`.
pub const BALANCE_OF: [u8; 4] = [0x70, 0xa0, 0x82, 0x31];

/// `swap(uint256)`: the pool's one function.
pub fn swap_selector() -> [u8; 4] {
    let h = keccak256(b"swap(uint256)");
    [h[0], h[1], h[2], h[3]]
}

/// A minimal assembler: opcodes, minimal pushes, and labels resolved to `PUSH2` targets.
struct Asm {
    code: Vec<u8>,
    labels: HashMap<&'static str, usize>,
    fixups: Vec<(usize, &'static str)>,
}

impl Asm {
    fn new() -> Self {
        Self {
            code: Vec::new(),
            labels: HashMap::new(),
            fixups: Vec::new(),
        }
    }

    fn ops(&mut self, ops: &[u8]) -> &mut Self {
        self.code.extend_from_slice(ops);
        self
    }

    /// `PUSHn` of `bytes` (1 to 32 of them).
    fn push(&mut self, bytes: &[u8]) -> &mut Self {
        debug_assert!((1..=32).contains(&bytes.len()));
        self.code.push(op::PUSH1 + bytes.len() as u8 - 1);
        self.code.extend_from_slice(bytes);
        self
    }

    fn push_u(&mut self, v: u64) -> &mut Self {
        let b = v.to_be_bytes();
        let first = b.iter().position(|&x| x != 0).unwrap_or(7);
        self.push(&b[first..])
    }

    /// A 32-byte word holding `selector` in its top four bytes (for `MSTORE`).
    fn push_selector_word(&mut self, selector: [u8; 4]) -> &mut Self {
        let mut w = [0u8; 32];
        w[..4].copy_from_slice(&selector);
        self.push(&w)
    }

    fn push_label(&mut self, label: &'static str) -> &mut Self {
        self.code.push(op::PUSH2);
        self.fixups.push((self.code.len(), label));
        self.code.extend_from_slice(&[0, 0]);
        self
    }

    fn jump_to(&mut self, label: &'static str) -> &mut Self {
        self.push_label(label).ops(&[op::JUMP])
    }

    fn jumpi_to(&mut self, label: &'static str) -> &mut Self {
        self.push_label(label).ops(&[op::JUMPI])
    }

    fn label(&mut self, label: &'static str) -> &mut Self {
        self.labels.insert(label, self.code.len());
        self.code.push(op::JUMPDEST);
        self
    }

    /// Loads the 160-bit address argument at calldata offset `offset`.
    fn address_arg(&mut self, offset: u64) -> &mut Self {
        self.push_u(offset)
            .ops(&[op::CALLDATALOAD])
            .push_u(96)
            .ops(&[op::SHL])
            .push_u(96)
            .ops(&[op::SHR])
    }

    /// Dispatches on the selector: jumps to the label of the matching entry, reverts otherwise.
    fn dispatch(&mut self, entries: &[([u8; 4], &'static str)]) -> &mut Self {
        self.push_u(0)
            .ops(&[op::CALLDATALOAD])
            .push_u(0xe0)
            .ops(&[op::SHR]);
        for (selector, label) in entries {
            self.ops(&[op::DUP1])
                .push(selector)
                .ops(&[op::EQ])
                .jumpi_to(label);
        }
        self.jump_to("fail")
    }

    fn finish(mut self) -> Vec<u8> {
        for (at, label) in std::mem::take(&mut self.fixups) {
            let target = self.labels[label] as u16;
            self.code[at..at + 2].copy_from_slice(&target.to_be_bytes());
        }
        self.code
    }
}

/// keccak256("Transfer(address,address,uint256)").
fn transfer_topic() -> B256 {
    keccak256(b"Transfer(address,address,uint256)")
}

/// keccak256("Swap(address,uint256,uint256)").
fn swap_topic() -> B256 {
    keccak256(b"Swap(address,uint256,uint256)")
}

/// An ERC-20-style token with Solidity's storage layout (balances: mapping at slot 0,
/// allowances: mapping of mappings at slot 1): `transfer`, `transferFrom` (with an allowance
/// check and decrement) and `balanceOf`; both transfers log `Transfer` and return `true`, and
/// revert on insufficient balance or allowance.
pub fn token_code() -> Vec<u8> {
    let mut a = Asm::new();
    a.dispatch(&[
        (TRANSFER, "transfer"),
        (TRANSFER_FROM, "transfer_from"),
        (BALANCE_OF, "balance_of"),
    ]);
    // transfer(to, amount): move(ret = ok, amount, to, from = caller).
    a.label("transfer").ops(&[op::POP]).push_label("ok");
    a.push_u(36).ops(&[op::CALLDATALOAD]).address_arg(4);
    a.ops(&[op::CALLER]).jump_to("move");
    // transferFrom(from, to, amount): allowance slot keccak(caller ++ keccak(from ++ 1)).
    a.label("transfer_from").ops(&[op::POP]);
    a.address_arg(4).push_u(0).ops(&[op::MSTORE]);
    a.push_u(1).push_u(32).ops(&[op::MSTORE]);
    a.push_u(64).push_u(0).ops(&[op::KECCAK256]);
    a.push_u(32).ops(&[op::MSTORE]);
    a.ops(&[op::CALLER]).push_u(0).ops(&[op::MSTORE]);
    a.push_u(64).push_u(0).ops(&[op::KECCAK256]); // [aslot]
    a.ops(&[op::DUP1, op::SLOAD]); // [aslot, allowance]
    a.push_u(68).ops(&[op::CALLDATALOAD]); // [aslot, allowance, amount]
    a.ops(&[op::DUP1, op::DUP3, op::LT]).jumpi_to("fail"); // allowance < amount
    a.ops(&[op::SWAP1, op::SUB, op::SWAP1, op::SSTORE]); // allowance - amount
    a.push_label("ok");
    a.push_u(68)
        .ops(&[op::CALLDATALOAD])
        .address_arg(36)
        .address_arg(4);
    a.jump_to("move");
    // balanceOf(owner).
    a.label("balance_of").ops(&[op::POP]);
    a.address_arg(4).push_u(0).ops(&[op::MSTORE]);
    a.push_u(0).push_u(32).ops(&[op::MSTORE]);
    a.push_u(64).push_u(0).ops(&[op::KECCAK256, op::SLOAD]);
    a.push_u(0)
        .ops(&[op::MSTORE])
        .push_u(32)
        .push_u(0)
        .ops(&[op::RETURN]);
    // move: [ret, amount, to, from] -> balances updated, Transfer logged, jump to ret.
    a.label("move");
    a.ops(&[op::DUP1]).push_u(0).ops(&[op::MSTORE]);
    a.push_u(0).push_u(32).ops(&[op::MSTORE]);
    a.push_u(64).push_u(0).ops(&[op::KECCAK256]); // [.., from, fslot]
    a.ops(&[op::DUP1, op::SLOAD]); // [.., from, fslot, fbal]
    a.ops(&[op::DUP5, op::DUP2, op::LT]).jumpi_to("fail"); // fbal < amount
    a.ops(&[op::DUP5, op::SWAP1, op::SUB, op::SWAP1, op::SSTORE]); // fbal - amount
    a.ops(&[op::DUP2]).push_u(0).ops(&[op::MSTORE]); // mem[0] = to
    a.push_u(64).push_u(0).ops(&[op::KECCAK256]); // [.., from, tslot]
    a.ops(&[
        op::DUP1,
        op::SLOAD,
        op::DUP5,
        op::ADD,
        op::SWAP1,
        op::SSTORE,
    ]);
    a.ops(&[op::DUP3]).push_u(0).ops(&[op::MSTORE]); // mem[0] = amount
    a.ops(&[op::DUP2, op::DUP2])
        .push(transfer_topic().as_slice())
        .push_u(32)
        .push_u(0)
        .ops(&[op::LOG3]);
    a.ops(&[op::POP, op::POP, op::POP, op::JUMP]);
    a.label("ok");
    a.push_u(1).push_u(0).ops(&[op::MSTORE]);
    a.push_u(32).push_u(0).ops(&[op::RETURN]);
    a.label("fail").push_u(0).ops(&[op::DUP1, op::REVERT]);
    a.finish()
}

/// A constant-product pool: reserves in slots 0 and 1, token0 and token1 addresses in slots 2
/// and 3. `swap(amountIn)` computes `out = in·997·r1 / (r0·1000 + in·997)`, updates the
/// reserves, pulls `amountIn` of token0 from the caller (`transferFrom`, needs an allowance),
/// sends `out` of token1 (`transfer`), logs `Swap(caller, in, out)` and returns `out`.
pub fn pool_code() -> Vec<u8> {
    let mut a = Asm::new();
    a.dispatch(&[(swap_selector(), "swap")]);
    a.label("swap").ops(&[op::POP]);
    a.push_u(4).ops(&[op::CALLDATALOAD]); // [in]
    a.push_u(0).ops(&[op::SLOAD]).push_u(1).ops(&[op::SLOAD]); // [in, r0, r1]
    a.ops(&[op::DUP3]).push_u(997).ops(&[op::MUL]); // [in, r0, r1, inF]
    a.ops(&[op::DUP1, op::DUP3, op::MUL, op::SWAP1]); // [in, r0, r1, num, inF]
    a.ops(&[op::DUP4]).push_u(1000).ops(&[op::MUL, op::ADD]); // [in, r0, r1, num, den]
    a.ops(&[op::SWAP1, op::DIV]); // [in, r0, r1, out]
    a.ops(&[op::DUP1, op::ISZERO]).jumpi_to("fail");
    a.ops(&[op::DUP4, op::DUP4, op::ADD])
        .push_u(0)
        .ops(&[op::SSTORE]);
    a.ops(&[op::DUP1, op::DUP3, op::SUB])
        .push_u(1)
        .ops(&[op::SSTORE]);
    // token0.transferFrom(caller, this, in)
    a.push_selector_word(TRANSFER_FROM)
        .push_u(0x80)
        .ops(&[op::MSTORE]);
    a.ops(&[op::CALLER]).push_u(0x84).ops(&[op::MSTORE]);
    a.ops(&[op::ADDRESS]).push_u(0xa4).ops(&[op::MSTORE]);
    a.ops(&[op::DUP4]).push_u(0xc4).ops(&[op::MSTORE]);
    a.push_u(32).push_u(0).push_u(0x64).push_u(0x80).push_u(0);
    a.push_u(2)
        .ops(&[op::SLOAD, op::GAS, op::CALL, op::ISZERO])
        .jumpi_to("fail");
    // token1.transfer(caller, out)
    a.push_selector_word(TRANSFER)
        .push_u(0x80)
        .ops(&[op::MSTORE]);
    a.ops(&[op::CALLER]).push_u(0x84).ops(&[op::MSTORE]);
    a.ops(&[op::DUP1]).push_u(0xa4).ops(&[op::MSTORE]);
    a.push_u(32).push_u(0).push_u(0x44).push_u(0x80).push_u(0);
    a.push_u(3)
        .ops(&[op::SLOAD, op::GAS, op::CALL, op::ISZERO])
        .jumpi_to("fail");
    // Swap(caller, in, out)
    a.ops(&[op::DUP4]).push_u(0).ops(&[op::MSTORE]);
    a.ops(&[op::DUP1]).push_u(32).ops(&[op::MSTORE]);
    a.ops(&[op::CALLER])
        .push(swap_topic().as_slice())
        .push_u(64)
        .push_u(0)
        .ops(&[op::LOG2]);
    a.ops(&[op::DUP1]).push_u(0).ops(&[op::MSTORE]);
    a.push_u(32).push_u(0).ops(&[op::RETURN]);
    a.label("fail").push_u(0).ops(&[op::DUP1, op::REVERT]);
    a.finish()
}

/// keccak256("Deposit(address,uint256)").
fn deposit_topic() -> B256 {
    keccak256(b"Deposit(address,uint256)")
}

/// A WETH-style vault's deposit: a call without calldata adds its value to the caller's
/// balance (a mapping at slot 0, Solidity's layout) and logs `Deposit(caller, value)`; a call
/// with calldata reverts. Like WETH's `deposit`, it never reads the vault's own balance.
pub fn vault_code() -> Vec<u8> {
    let mut a = Asm::new();
    a.ops(&[op::CALLDATASIZE]).jumpi_to("fail");
    // balance_slot(caller) = keccak256(caller ++ 0)
    a.ops(&[op::CALLER]).push_u(0).ops(&[op::MSTORE]);
    a.push_u(0).push_u(32).ops(&[op::MSTORE]);
    a.push_u(64).push_u(0).ops(&[op::KECCAK256]); // [slot]
    a.ops(&[
        op::DUP1,
        op::SLOAD,
        op::CALLVALUE,
        op::ADD,
        op::SWAP1,
        op::SSTORE,
    ]);
    a.ops(&[op::CALLVALUE]).push_u(0).ops(&[op::MSTORE]);
    a.ops(&[op::CALLER])
        .push(deposit_topic().as_slice())
        .push_u(32)
        .push_u(0)
        .ops(&[op::LOG2, op::STOP]);
    a.label("fail").push_u(0).ops(&[op::DUP1, op::REVERT]);
    a.finish()
}

/// An address in a namespace of its own: `tag` in the first byte, `i` in the last eight.
fn addr(tag: u8, i: u64) -> Address {
    let mut b = [0u8; 20];
    b[0] = tag;
    b[12..].copy_from_slice(&i.to_be_bytes());
    Address::from(b)
}

fn sender(i: u64) -> Address {
    addr(0xa0, i)
}
fn recipient(i: u64) -> Address {
    addr(0xb0, i)
}
fn pool(i: u64) -> Address {
    addr(0xc0, i)
}
fn token(i: u64) -> Address {
    addr(0xd0, i)
}
fn vault() -> Address {
    addr(0xe0, 0)
}

/// Solidity's `mapping(address => ...)` slot at `base`.
fn map_slot(key: Address, base: U256) -> U256 {
    let mut buf = [0u8; 64];
    buf[12..32].copy_from_slice(key.as_slice());
    buf[32..].copy_from_slice(&base.to_be_bytes::<32>());
    U256::from_be_bytes(keccak256(buf).0)
}

/// Storage slot of `balanceOf[owner]` in [`token_code`].
pub fn balance_slot(owner: Address) -> U256 {
    map_slot(owner, U256::ZERO)
}

/// Storage slot of `allowance[owner][spender]` in [`token_code`].
pub fn allowance_slot(owner: Address, spender: Address) -> U256 {
    map_slot(spender, map_slot(owner, U256::from(1)))
}

fn word(a: Address) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[12..].copy_from_slice(a.as_slice());
    w
}

fn calldata(selector: [u8; 4], args: &[[u8; 32]]) -> Bytes {
    let mut d = selector.to_vec();
    for a in args {
        d.extend_from_slice(a);
    }
    Bytes::from(d)
}

const ETHER: u128 = 1_000_000_000_000_000_000;
const BASEFEE: u64 = 1_000_000_000;

/// Deploys `code` at `at` (nonce 1, no balance) in a pre-state.
pub fn insert_code(db: &mut CacheDB<EmptyDB>, at: Address, code: &[u8]) {
    let code = Bytecode::new_raw(Bytes::copy_from_slice(code));
    db.insert_account_info(
        at,
        AccountInfo {
            nonce: 1,
            code_hash: code.hash_slow(),
            code: Some(code),
            ..AccountInfo::default()
        },
    );
}

fn insert_eoa(db: &mut CacheDB<EmptyDB>, at: Address, balance: U256) {
    db.insert_account_info(
        at,
        AccountInfo {
            balance,
            ..AccountInfo::default()
        },
    );
}

fn set(db: &mut CacheDB<EmptyDB>, at: Address, slot: U256, value: U256) {
    // In-memory insertion into an account inserted just before cannot fail.
    let _ = db.insert_account_storage(at, slot, value);
}

/// A block of exactly `n` transactions of `kind` (Cancun, chain id 1).
pub fn block_of(kind: WorkloadKind, n: u64) -> Block {
    let spec = SpecId::CANCUN;
    let mut cfg = CfgEnv::new_with_spec(spec);
    cfg.chain_id = 1;
    let env = BlockEnv {
        number: U256::from(20_000_000u64),
        beneficiary: addr(0xfe, 0),
        timestamp: U256::from(1_720_000_000u64),
        gas_limit: 1 << 40,
        basefee: BASEFEE,
        difficulty: U256::ZERO,
        prevrandao: Some(B256::with_last_byte(1)),
        blob_excess_gas_and_price: Some(BlobExcessGasAndPrice::new_with_spec(0, spec)),
        ..BlockEnv::default()
    };
    let mut db = CacheDB::new(EmptyDB::default());
    let big = U256::from(10u128.pow(30));
    let uses_token = matches!(kind, WorkloadKind::Erc20 | WorkloadKind::HotSender);
    let uses_pools = matches!(kind, WorkloadKind::Swaps | WorkloadKind::HotPool);
    let pools = match kind {
        WorkloadKind::Swaps => n,
        WorkloadKind::HotPool => 1,
        _ => 0,
    };
    let senders = if kind == WorkloadKind::HotSender {
        1
    } else {
        n
    };
    if uses_token || uses_pools {
        insert_code(&mut db, token(0), &token_code());
    }
    if kind == WorkloadKind::Deposits {
        insert_code(&mut db, vault(), &vault_code());
    }
    if uses_pools {
        insert_code(&mut db, token(1), &token_code());
        let code = pool_code();
        let reserve = U256::from(1_000_000 * ETHER);
        for p in 0..pools {
            insert_code(&mut db, pool(p), &code);
            set(&mut db, pool(p), U256::ZERO, reserve);
            set(&mut db, pool(p), U256::from(1), reserve);
            set(
                &mut db,
                pool(p),
                U256::from(2),
                U256::from_be_bytes(word(token(0))),
            );
            set(
                &mut db,
                pool(p),
                U256::from(3),
                U256::from_be_bytes(word(token(1))),
            );
            // The pool's token1 holdings back its reserve.
            set(&mut db, token(1), balance_slot(pool(p)), big);
        }
    }
    for s in 0..senders {
        let who = sender(s);
        insert_eoa(&mut db, who, U256::from(1_000_000 * ETHER));
        if uses_token {
            set(&mut db, token(0), balance_slot(who), big);
        }
        if uses_pools {
            let p = if kind == WorkloadKind::Swaps { s } else { 0 };
            set(&mut db, token(0), balance_slot(who), big);
            set(&mut db, token(0), allowance_slot(who, pool(p)), big);
        }
    }
    let swap = swap_selector();
    let one = U256::from(1).to_be_bytes::<32>();
    let amount_in = U256::from(ETHER).to_be_bytes::<32>();
    let txs: Vec<TxEnv> = (0..n)
        .map(|i| {
            let (caller, nonce) = if kind == WorkloadKind::HotSender {
                (sender(0), i)
            } else {
                (sender(i), 0)
            };
            let (to, value, data, gas_limit) = match kind {
                WorkloadKind::Transfers => (recipient(i), U256::from(1), Bytes::new(), 21_000),
                WorkloadKind::Erc20 | WorkloadKind::HotSender => (
                    token(0),
                    U256::ZERO,
                    calldata(TRANSFER, &[word(recipient(i)), one]),
                    100_000,
                ),
                WorkloadKind::Swaps => (pool(i), U256::ZERO, calldata(swap, &[amount_in]), 200_000),
                WorkloadKind::HotPool => {
                    (pool(0), U256::ZERO, calldata(swap, &[amount_in]), 200_000)
                }
                WorkloadKind::Deposits => (vault(), U256::from(ETHER / 100), Bytes::new(), 100_000),
            };
            TxEnv {
                tx_type: 2,
                caller,
                gas_limit,
                gas_price: 2 * u128::from(BASEFEE),
                gas_priority_fee: Some(u128::from(BASEFEE)),
                kind: TxKind::Call(to),
                value,
                data,
                nonce,
                chain_id: Some(1),
                ..TxEnv::default()
            }
        })
        .collect();
    let n_txs = txs.len();
    Block {
        name: kind.name().to_string(),
        number: 20_000_000,
        spec,
        cfg,
        env,
        tx_types: vec![2; n_txs],
        txs,
        db,
        expected: Expected {
            gas_used: (kind == WorkloadKind::Transfers).then_some(21_000 * n),
            all_successful: true,
            ..Expected::default()
        },
    }
}

/// Gas one more transaction of `kind` adds to a block (measured by executing blocks of one
/// and two transactions: in the contended kinds the first transaction pays for storage the
/// later ones only update).
pub fn gas_per_tx(kind: WorkloadKind) -> Result<u64, String> {
    let gas = |n| {
        let b = block_of(kind, n);
        let r = crate::block::run_block(&b, &ember_runtime::NoNative, &RunOptions::new(1));
        if r.ok() && r.gas_used > 0 {
            Ok(r.gas_used)
        } else {
            Err(format!(
                "internal: the {kind} workload does not execute: {}",
                r.failures.join("; ")
            ))
        }
    };
    let (one, two) = (gas(1)?, gas(2)?);
    Ok(two.saturating_sub(one).max(1))
}

/// A block of `kind` using about `gas` gas (at least one transaction).
pub fn block_for_gas(kind: WorkloadKind, gas: u64) -> Result<Block, String> {
    let per = gas_per_tx(kind)?;
    Ok(block_of(kind, gas.div_ceil(per).max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gas_suffixes() {
        assert_eq!(parse_gas("100M").unwrap(), 100_000_000);
        assert_eq!(parse_gas("1G").unwrap(), 1_000_000_000);
        assert_eq!(parse_gas("2500k").unwrap(), 2_500_000);
        assert_eq!(parse_gas("21000").unwrap(), 21_000);
        assert!(parse_gas("0").is_err());
        assert!(parse_gas("M").is_err());
        assert!(parse_gas("99999999999G").is_err());
        assert!(parse_gas("-5").is_err());
    }

    fn storage_of(out: &ember_runtime::parallel::BlockOutput, at: Address) -> HashMap<U256, U256> {
        out.changes
            .iter()
            .find(|c| c.address == at)
            .map(|c| c.storage.iter().copied().collect())
            .unwrap_or_default()
    }

    fn execute(b: &Block) -> ember_runtime::parallel::BlockOutput {
        ember_runtime::parallel::execute_block_sequential(
            &b.cfg,
            &b.env,
            &b.txs,
            &b.db,
            &ember_runtime::NoNative,
            &Default::default(),
        )
        .expect("executes")
    }

    #[test]
    fn tokens_and_pools_do_what_they_say() {
        let n = 3;
        let big = U256::from(10u128.pow(30));
        // ERC-20 transfers: every recipient holds 1, every sender 1 less.
        let out = execute(&block_of(WorkloadKind::Erc20, n));
        assert!(out.transactions.iter().all(|t| t.result.is_success()));
        assert!(out.transactions.iter().all(|t| t.result.logs().len() == 1));
        let s = storage_of(&out, token(0));
        for i in 0..n {
            assert_eq!(s[&balance_slot(recipient(i))], U256::from(1));
            assert_eq!(s[&balance_slot(sender(i))], big - U256::from(1));
        }
        // One sender: its balance drops by n, its nonce reaches n.
        let out = execute(&block_of(WorkloadKind::HotSender, n));
        let s = storage_of(&out, token(0));
        assert_eq!(s[&balance_slot(sender(0))], big - U256::from(n));
        let acc = out.changes.iter().find(|c| c.address == sender(0)).unwrap();
        assert_eq!(acc.account.as_ref().unwrap().nonce, n);
        // Swaps on one pool: the constant-product formula, applied n times in order.
        let out = execute(&block_of(WorkloadKind::HotPool, n));
        let (mut r0, mut r1) = (U256::from(1_000_000 * ETHER), U256::from(1_000_000 * ETHER));
        let amount_in = U256::from(ETHER);
        let mut outs = U256::ZERO;
        for t in &out.transactions {
            let fee_in = amount_in * U256::from(997);
            let o = fee_in * r1 / (r0 * U256::from(1000) + fee_in);
            assert_eq!(t.result.output().map(|b| U256::from_be_slice(b)), Some(o));
            assert_eq!(t.result.logs().len(), 3, "two Transfer logs and a Swap");
            r0 += amount_in;
            r1 -= o;
            outs += o;
        }
        let p = storage_of(&out, pool(0));
        assert_eq!((p[&U256::ZERO], p[&U256::from(1)]), (r0, r1));
        let t0 = storage_of(&out, token(0));
        assert_eq!(t0[&balance_slot(pool(0))], amount_in * U256::from(n));
        assert_eq!(t0[&allowance_slot(sender(1), pool(0))], big - amount_in);
        let t1 = storage_of(&out, token(1));
        assert_eq!(t1[&balance_slot(pool(0))], big - outs);
        // A swap without allowance reverts.
        let mut b = block_of(WorkloadKind::Swaps, 1);
        let _ =
            b.db.insert_account_storage(token(0), allowance_slot(sender(0), pool(0)), U256::ZERO);
        let out = execute(&b);
        assert!(!out.transactions[0].result.is_success());
        // Deposits: the vault holds every deposit, each depositor its own, one log each; a
        // call with calldata reverts.
        let out = execute(&block_of(WorkloadKind::Deposits, n));
        assert!(out.transactions.iter().all(|t| t.result.logs().len() == 1));
        let v = storage_of(&out, vault());
        let deposit = U256::from(ETHER / 100);
        for i in 0..n {
            assert_eq!(v[&balance_slot(sender(i))], deposit);
        }
        let acc = out.changes.iter().find(|c| c.address == vault()).unwrap();
        assert_eq!(
            acc.account.as_ref().unwrap().balance,
            deposit * U256::from(n)
        );
        let mut b = block_of(WorkloadKind::Deposits, 1);
        b.txs[0].data = Bytes::from_static(&[1]);
        let out = execute(&b);
        assert!(!out.transactions[0].result.is_success());
    }

    #[test]
    fn labels_resolve_to_jumpdests() {
        for code in [token_code(), pool_code(), vault_code()] {
            let b = Bytecode::new_raw(Bytes::from(code.clone()));
            let jumps = b.legacy_jump_table().expect("legacy code");
            let mut i = 0;
            while i < code.len() {
                let c = code[i];
                if c == op::PUSH2 && matches!(code.get(i + 3), Some(&op::JUMP | &op::JUMPI)) {
                    let target = u16::from_be_bytes([code[i + 1], code[i + 2]]) as usize;
                    assert!(jumps.is_valid(target), "jump to {target}");
                }
                i += 1 + if (op::PUSH1..=op::PUSH32).contains(&c) {
                    (c - op::PUSH0) as usize
                } else {
                    0
                };
            }
        }
    }
}
