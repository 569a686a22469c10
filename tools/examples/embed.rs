//! Embedding Ember: JIT-compile a contract and run a transaction through [`EmberEvm`].
//!
//! `cargo run --release -p ember-tools --example embed`

use ember_compiler::{JitRegistry, OptLevel};
use ember_runtime::EmberEvm;
use revm::context::{CfgEnv, Context, TxEnv};
use revm::context_interface::result::ExecutionResult;
use revm::database::{CacheDB, EmptyDB};
use revm::handler::{ExecuteEvm, MainBuilder, MainContext};
use revm::primitives::{address, hardfork::SpecId, Address, Bytes, TxKind, U256};
use revm::state::{AccountInfo, Bytecode};

/// Sums 1..=100 in a loop and returns the sum as one word.
const SUM_LOOP: &str = concat!(
    "6064", // 0x00 PUSH1 100          [n]
    "6000", // 0x02 PUSH1 0            [n, acc]
    "5b",   // 0x04 JUMPDEST loop
    "81",   // 0x05 DUP2               [n, acc, n]
    "15",   // 0x06 ISZERO
    "6015", // 0x07 PUSH1 end
    "57",   // 0x09 JUMPI              [n, acc]
    "81",   // 0x0a DUP2               [n, acc, n]
    "01",   // 0x0b ADD                [n, acc+n]
    "90",   // 0x0c SWAP1              [acc+n, n]
    "6001", // 0x0d PUSH1 1
    "90",   // 0x0f SWAP1              [acc+n, 1, n]
    "03",   // 0x10 SUB                [acc+n, n-1]
    "90",   // 0x11 SWAP1              [n-1, acc+n]
    "6004", // 0x12 PUSH1 loop
    "56",   // 0x14 JUMP
    "5b",   // 0x15 JUMPDEST end       [0, acc]
    "6000", // 0x16 PUSH1 0
    "52",   // 0x18 MSTORE
    "6020", // 0x19 PUSH1 32
    "6000", // 0x1b PUSH1 0
    "f3",   // 0x1d RETURN
);

const CONTRACT: Address = address!("0x00000000000000000000000000000000c0ffee00");
const CALLER: Address = address!("0x000000000000000000000000000000000000ca11");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let spec = SpecId::CANCUN;
    let code = Bytes::from(hex::decode(SUM_LOOP)?);

    // 1. Compile. The registry keys functions by code hash and spec and keeps them alive.
    let mut jit = JitRegistry::new(OptLevel::O2)?;
    let stats = jit.compile(&code, spec)?.expect("first compile");
    println!(
        "compiled {} bytes in {:?}",
        stats.code_len, stats.total_time
    );

    // 2. State: the contract in an in-memory database.
    let mut db = CacheDB::new(EmptyDB::default());
    let bytecode = Bytecode::new_raw(code);
    db.insert_account_info(
        CONTRACT,
        AccountInfo {
            code_hash: bytecode.hash_slow(),
            code: Some(bytecode),
            ..Default::default()
        },
    );

    // 3. A revm mainnet EVM wrapped by Ember; frames whose code is in `jit` run natively.
    let ctx = Context::mainnet()
        .with_db(db)
        .with_cfg(CfgEnv::new_with_spec(spec));
    let mut evm = EmberEvm::new(ctx.build_mainnet(), &jit);
    let tx = TxEnv {
        caller: CALLER,
        kind: TxKind::Call(CONTRACT),
        gas_limit: 1_000_000,
        ..Default::default()
    };
    let result = evm.transact(tx).map_err(|e| format!("{e:?}"))?;

    let ExecutionResult::Success { output, .. } = &result.result else {
        return Err(format!("transaction failed: {:?}", result.result).into());
    };
    let gas_used = result.result.tx_gas_used();
    let sum = U256::from_be_slice(output.data());
    println!("sum = {sum}, gas used = {gas_used}");
    println!(
        "frames: {} native, {} interpreted",
        evm.stats.native_runs.get(),
        evm.stats.interpreted_runs.get()
    );
    assert_eq!(sum, U256::from(5050));
    assert!(
        evm.stats.native_runs.get() > 0,
        "the contract frame must run natively"
    );
    Ok(())
}
