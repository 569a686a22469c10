//! Real mainnet blocks (`../shared/mainnet`, Frontier to Cancun, each with the pre-state it
//! reads): sequential execution must reproduce the header's `gasUsed`, `logsBloom` and (from
//! Byzantium on) `receiptsRoot`, and parallel execution must reproduce sequential execution
//! exactly, results and state changes.
//!
//! The data folder is `$EMBER_SHARED/mainnet` (default: `../shared` next to the workspace, then
//! `/work/shared`). When it is absent the test says so and checks nothing; set
//! `EMBER_REQUIRE_MAINNET=1` to make that a failure.

use alloy_primitives::{Bloom, Log};
use alloy_rlp::Encodable;
use ember_runtime::parallel::{
    execute_block, execute_block_sequential, BlockOutput, ParallelOptions,
};
use ember_runtime::NoNative;
use revm::bytecode::Bytecode;
use revm::context::{BlockEnv, CfgEnv, TxEnv};
use revm::context_interface::block::BlobExcessGasAndPrice;
use revm::context_interface::transaction::{AccessList, AccessListItem};
use revm::database::{CacheDB, EmptyDB};
use revm::primitives::{hardfork::SpecId, Address, Bytes, TxKind, B256, U256};
use revm::state::AccountInfo;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

fn data_dir() -> Option<PathBuf> {
    let candidates = [
        std::env::var("EMBER_SHARED").ok().map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared")),
        Some(PathBuf::from("/work/shared")),
    ];
    candidates
        .into_iter()
        .flatten()
        .map(|p| p.join("mainnet"))
        .find(|p| p.join("index.json").is_file())
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn u256(v: &Value, key: &str) -> U256 {
    field(v, key).map_or(U256::ZERO, |s| U256::from_str(s).expect("hex quantity"))
}

fn u64f(v: &Value, key: &str) -> u64 {
    u256(v, key).to::<u64>()
}

fn u128f(v: &Value, key: &str) -> u128 {
    u256(v, key).to::<u128>()
}

fn address(s: &str) -> Address {
    Address::from_str(s).expect("address")
}

fn b256(s: &str) -> B256 {
    B256::from_str(s).expect("32-byte hex")
}

fn bytes(s: &str) -> Bytes {
    Bytes::from_str(s).expect("hex bytes")
}

/// The fork of a block, by number up to the Merge and by timestamp after (shared/mainnet
/// README).
fn spec_of(number: u64, timestamp: u64) -> SpecId {
    if timestamp >= 1_710_338_135 {
        SpecId::CANCUN
    } else if timestamp >= 1_681_338_455 {
        SpecId::SHANGHAI
    } else if number >= 15_537_394 {
        SpecId::MERGE
    } else if number >= 12_965_000 {
        SpecId::LONDON
    } else if number >= 12_244_000 {
        SpecId::BERLIN
    } else if number >= 9_069_000 {
        SpecId::ISTANBUL
    } else if number >= 7_280_000 {
        SpecId::PETERSBURG
    } else if number >= 4_370_000 {
        SpecId::BYZANTIUM
    } else if number >= 2_675_000 {
        SpecId::SPURIOUS_DRAGON
    } else if number >= 2_463_000 {
        SpecId::TANGERINE
    } else if number >= 1_150_000 {
        SpecId::HOMESTEAD
    } else {
        SpecId::FRONTIER
    }
}

fn tx_env(t: &Value) -> (u8, TxEnv) {
    let tx_type = u64f(t, "type") as u8;
    let access_list = t
        .get("accessList")
        .and_then(Value::as_array)
        .map(|items| {
            AccessList(
                items
                    .iter()
                    .map(|item| AccessListItem {
                        address: address(field(item, "address").expect("address")),
                        storage_keys: item["storageKeys"]
                            .as_array()
                            .expect("storage keys")
                            .iter()
                            .map(|k| b256(k.as_str().expect("key")))
                            .collect(),
                    })
                    .collect(),
            )
        })
        .unwrap_or_default();
    let (gas_price, gas_priority_fee) = if tx_type >= 2 {
        (
            u128f(t, "maxFeePerGas"),
            Some(u128f(t, "maxPriorityFeePerGas")),
        )
    } else {
        (u128f(t, "gasPrice"), None)
    };
    let tx = TxEnv {
        tx_type,
        caller: address(field(t, "from").expect("from")),
        gas_limit: u64f(t, "gas"),
        gas_price,
        kind: match field(t, "to") {
            Some(to) => TxKind::Call(address(to)),
            None => TxKind::Create,
        },
        value: u256(t, "value"),
        data: bytes(field(t, "input").unwrap_or("0x")),
        nonce: u64f(t, "nonce"),
        chain_id: field(t, "chainId").map(|_| u64f(t, "chainId")),
        access_list,
        gas_priority_fee,
        blob_hashes: t
            .get("blobVersionedHashes")
            .and_then(Value::as_array)
            .map(|h| h.iter().map(|x| b256(x.as_str().expect("hash"))).collect())
            .unwrap_or_default(),
        max_fee_per_blob_gas: u128f(t, "maxFeePerBlobGas"),
        ..TxEnv::default()
    };
    (tx_type, tx)
}

struct MainnetBlock {
    number: u64,
    cfg: CfgEnv,
    block: BlockEnv,
    txs: Vec<TxEnv>,
    tx_types: Vec<u8>,
    db: CacheDB<EmptyDB>,
    gas_used: u64,
    logs_bloom: Bloom,
    receipts_root: Option<B256>,
}

fn load_block(dir: &Path, number: u64, codes: &HashMap<String, String>) -> MainnetBlock {
    let block_dir = dir.join(number.to_string());
    let header = read_json(&block_dir.join("block.json"));
    let timestamp = u64f(&header, "timestamp");
    let spec = spec_of(number, timestamp);
    let mut cfg = CfgEnv::new_with_spec(spec);
    cfg.chain_id = 1;
    let block = BlockEnv {
        number: U256::from(number),
        beneficiary: address(field(&header, "miner").expect("miner")),
        timestamp: U256::from(timestamp),
        gas_limit: u64f(&header, "gasLimit"),
        basefee: u64f(&header, "baseFeePerGas"),
        difficulty: u256(&header, "difficulty"),
        prevrandao: spec
            .is_enabled_in(SpecId::MERGE)
            .then(|| b256(field(&header, "mixHash").expect("mixHash"))),
        blob_excess_gas_and_price: spec
            .is_enabled_in(SpecId::CANCUN)
            .then(|| BlobExcessGasAndPrice::new_with_spec(u64f(&header, "excessBlobGas"), spec)),
        ..BlockEnv::default()
    };
    let (tx_types, txs) = header["transactions"]
        .as_array()
        .expect("full transactions")
        .iter()
        .map(tx_env)
        .unzip();

    let mut db = CacheDB::new(EmptyDB::default());
    let pre = read_json(&block_dir.join("pre_state.json"));
    for (addr, account) in pre.as_object().expect("pre-state object") {
        let addr = address(addr);
        let mut info = AccountInfo {
            balance: u256(account, "balance"),
            nonce: account["nonce"].as_u64().expect("nonce"),
            ..AccountInfo::default()
        };
        if let Some(hash) = field(account, "code_hash") {
            let code = codes
                .get(hash)
                .unwrap_or_else(|| panic!("code {hash} missing"));
            let code = Bytecode::new_raw(bytes(code));
            info.code_hash = b256(hash);
            info.code = Some(code);
        }
        db.insert_account_info(addr, info);
        if let Some(storage) = account.get("storage").and_then(Value::as_object) {
            for (slot, value) in storage {
                let slot = U256::from_str(slot).expect("slot");
                let value = U256::from_str(value.as_str().expect("value")).expect("value");
                db.insert_account_storage(addr, slot, value)
                    .expect("in-memory");
            }
        }
    }
    let hashes = read_json(&block_dir.join("block_hashes.json"));
    for (n, hash) in hashes.as_object().expect("block hashes") {
        let n: u64 = n.parse().expect("block number");
        db.cache
            .block_hashes
            .insert(U256::from(n), b256(hash.as_str().expect("hash")));
    }
    MainnetBlock {
        number,
        cfg,
        block,
        txs,
        tx_types,
        db,
        gas_used: u64f(&header, "gasUsed"),
        logs_bloom: Bloom::from_str(field(&header, "logsBloom").expect("bloom")).expect("bloom"),
        receipts_root: spec
            .is_enabled_in(SpecId::BYZANTIUM)
            .then(|| b256(field(&header, "receiptsRoot").expect("receiptsRoot"))),
    }
}

/// Process CPU time (user + system), from /proc/self/stat (zero where unavailable).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn bloom_of(logs: &[Log]) -> Bloom {
    let mut bloom = Bloom::default();
    for log in logs {
        bloom.accrue_log(log);
    }
    bloom
}

/// EIP-2718 receipt: `type ++ rlp([status, cumulative gas, bloom, logs])` (no prefix for
/// legacy transactions).
fn encode_receipt(tx_type: u8, success: bool, cumulative: u64, logs: &[Log]) -> Vec<u8> {
    let bloom = bloom_of(logs);
    let mut payload = Vec::new();
    success.encode(&mut payload);
    cumulative.encode(&mut payload);
    bloom.encode(&mut payload);
    alloy_rlp::encode_list::<Log, Log>(logs, &mut payload);
    let mut out = Vec::new();
    if tx_type != 0 {
        out.push(tx_type);
    }
    alloy_rlp::Header {
        list: true,
        payload_length: payload.len(),
    }
    .encode(&mut out);
    out.extend_from_slice(&payload);
    out
}

/// Checks the header's values against an execution's receipts.
fn check_header(b: &MainnetBlock, out: &BlockOutput) {
    assert_eq!(out.gas_used(), b.gas_used, "block {}: gasUsed", b.number);
    let mut bloom = Bloom::default();
    for t in &out.transactions {
        bloom |= bloom_of(t.result.logs());
    }
    assert_eq!(bloom, b.logs_bloom, "block {}: logsBloom", b.number);
    if let Some(expected) = b.receipts_root {
        let receipts: Vec<Vec<u8>> = out
            .transactions
            .iter()
            .zip(&b.tx_types)
            .map(|(t, ty)| {
                encode_receipt(
                    *ty,
                    t.result.is_success(),
                    t.cumulative_gas_used,
                    t.result.logs(),
                )
            })
            .collect();
        let root = alloy_trie::root::ordered_trie_root_encoded(&receipts);
        assert_eq!(root, expected, "block {}: receiptsRoot", b.number);
    }
}

#[test]
fn mainnet_blocks_parallel_equals_sequential() {
    let Some(dir) = data_dir() else {
        assert!(
            std::env::var("EMBER_REQUIRE_MAINNET").is_err(),
            "mainnet data not found"
        );
        eprintln!("mainnet data not found: nothing checked");
        return;
    };
    let index = read_json(&dir.join("index.json"));
    let mut numbers: Vec<u64> = index["blocks"]
        .as_array()
        .expect("blocks")
        .iter()
        .map(|b| b["number"].as_u64().expect("number"))
        .collect();
    numbers.sort_unstable();
    if let Ok(only) = std::env::var("EMBER_MAINNET_BLOCK") {
        numbers.retain(|n| n.to_string() == only);
    }
    let codes: HashMap<String, String> =
        serde_json::from_value(read_json(&dir.join("bytecodes.json"))).expect("bytecodes");

    let (mut seq_time, mut par_time) = (Duration::ZERO, Duration::ZERO);
    let (mut seq_cpu, mut par_cpu) = (Duration::ZERO, Duration::ZERO);
    let (mut receipts_checked, mut txs, mut fallbacks) = (0, 0, 0);
    let sequential = |b: &MainnetBlock| {
        execute_block_sequential(
            &b.cfg,
            &b.block,
            &b.txs,
            &b.db,
            &NoNative,
            &ParallelOptions::default(),
        )
        .unwrap_or_else(|e| panic!("block {}: {e}", b.number))
    };
    for &number in &numbers {
        let b = load_block(&dir, number, &codes);
        // The first run also warms caches shared through the pre-state (lazily computed code
        // hashes): untimed.
        let seq = sequential(&b);
        check_header(&b, &seq);
        receipts_checked += usize::from(b.receipts_root.is_some());
        txs += b.txs.len();
        // 2 and 4 threads with the default knobs; then 2 threads without the hazard fallback,
        // so blocks that fell back are also checked through the parallel path.
        for (threads, wipe_fallback) in [(2, true), (4, true), (2, false)] {
            let opts = ParallelOptions {
                fallback_on_repeated_wipe: wipe_fallback,
                ..ParallelOptions::always_parallel(threads)
            };
            let (start, cpu) = (Instant::now(), cpu_time());
            let par = execute_block(&b.cfg, &b.block, &b.txs, &b.db, &NoNative, &opts)
                .unwrap_or_else(|e| panic!("block {number}, {threads} threads: {e}"));
            if threads == 2 && wipe_fallback {
                par_time += start.elapsed();
                par_cpu += cpu_time().saturating_sub(cpu);
                fallbacks += usize::from(par.stats.fallback.is_some());
            }
            if !wipe_fallback && b.txs.len() > 1 {
                assert_eq!(par.stats.fallback, None, "block {number}");
            }
            for (i, (s, p)) in seq.transactions.iter().zip(&par.transactions).enumerate() {
                assert_eq!(s, p, "block {number}, {threads} threads: transaction {i}");
            }
            assert_eq!(seq.transactions.len(), par.transactions.len());
            for (s, p) in seq.changes.iter().zip(&par.changes) {
                assert_eq!(s, p, "block {number}, {threads} threads: state change");
            }
            assert_eq!(seq.changes.len(), par.changes.len(), "block {number}");
            if threads == 2 && wipe_fallback && std::env::var("EMBER_MAINNET_VERBOSE").is_ok() {
                eprintln!("block {number}: {} txs, {:?}", b.txs.len(), par.stats);
            }
        }
        let (start, cpu) = (Instant::now(), cpu_time());
        let again = sequential(&b);
        seq_time += start.elapsed();
        seq_cpu += cpu_time().saturating_sub(cpu);
        assert!(
            again.same_outcome(&seq),
            "block {number}: sequential is not deterministic"
        );
    }
    eprintln!(
        "{} blocks, {txs} transactions, {receipts_checked} receipts roots checked, \
         {fallbacks} sequential fallbacks; sequential {seq_time:?} (cpu {seq_cpu:?}), \
         parallel (2 threads) {par_time:?} (cpu {par_cpu:?})",
        numbers.len()
    );
    if std::env::var("EMBER_MAINNET_BLOCK").is_err() {
        assert_eq!(numbers.len(), 68);
        assert_eq!(receipts_checked, 54);
    }
}
