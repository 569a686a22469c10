//! Whole-block execution: loading mainnet block directories (the format of
//! `../shared/mainnet`), executing them sequentially or in parallel (Block-STM, see
//! [`ember_runtime::parallel`]) with the interpreter or native code, and checking the results
//! against the block header. This is the library side of `ember block`.
//!
//! A block directory holds:
//! - `block.json`: `eth_getBlockByNumber(n, true)`, the header with full transactions (each
//!   with its `from`);
//! - `pre_state.json`: `{ "<address>": { "balance", "nonce", "code_hash"?, "storage"? } }`, the
//!   state the block reads (an absent account does not exist, an absent slot is zero);
//! - `block_hashes.json`: `{ "<number>": "<hash>" }`, the `BLOCKHASH` values it may read;
//!
//! and the code of every `code_hash` comes from a `bytecodes.json` map
//! (`{ "<code hash>": "0x<code>" }`) in the block directory or its parent, or from a file given
//! explicitly.
//!
//! What is checked against the header: `gasUsed` and `logsBloom` on every block, and from
//! Byzantium on `receiptsRoot` (the ordered trie of EIP-2718 receipts). Earlier receipts embed
//! intermediate state roots, and the state root itself cannot be checked from a partial
//! pre-state.

use alloy_primitives::{Bloom, Log};
use alloy_rlp::Encodable;
use ember_compiler::JitCache;
use ember_runtime::parallel::{
    execute_block, execute_block_sequential, BlockOutput, ParallelOptions, ParallelStats,
};
use ember_runtime::{NativeProvider, NoNative};
use revm::bytecode::Bytecode;
use revm::context::{BlockEnv, CfgEnv, TxEnv};
use revm::context_interface::block::BlobExcessGasAndPrice;
use revm::context_interface::transaction::{AccessList, AccessListItem};
use revm::database::{CacheDB, EmptyDB};
use revm::primitives::{hardfork::SpecId, keccak256, Address, Bytes, TxKind, B256, U256};
use revm::state::AccountInfo;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Environment variable naming the mainnet data directory (default: `../shared/mainnet` next to
/// the workspace).
pub const MAINNET_DIR_ENV: &str = "EMBER_MAINNET_DIR";

/// Largest `excessBlobGas` accepted (a blob base fee of about e^40 wei).
const MAX_EXCESS_BLOB_GAS: u64 = 1 << 27;

/// The pre-state a block executes on: read-only and shareable between threads.
pub type PreState = CacheDB<EmptyDB>;

/// The mainnet data directory: `$EMBER_MAINNET_DIR`, else `../shared/mainnet` relative to the
/// workspace root (`tools/../../shared/mainnet`). It may not exist.
pub fn mainnet_dir() -> PathBuf {
    std::env::var_os(MAINNET_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/mainnet"))
}

/// What the header (or a synthetic workload's construction) says the execution must produce.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    /// The header's `gasUsed`.
    pub gas_used: Option<u64>,
    /// The header's `logsBloom`.
    pub logs_bloom: Option<Bloom>,
    /// The header's `receiptsRoot` (from Byzantium on).
    pub receipts_root: Option<B256>,
    /// Every transaction must succeed (synthetic workloads).
    pub all_successful: bool,
}

/// A block ready to execute.
#[derive(Clone, Debug)]
pub struct Block {
    /// What reports call it: the block number, or the workload's name.
    pub name: String,
    /// Block number.
    pub number: u64,
    /// Fork the block executes under.
    pub spec: SpecId,
    /// Chain configuration (chain id 1, `spec`).
    pub cfg: CfgEnv,
    /// The block environment.
    pub env: BlockEnv,
    /// The transactions, in block order.
    pub txs: Vec<TxEnv>,
    /// Each transaction's EIP-2718 type (receipt encoding).
    pub tx_types: Vec<u8>,
    /// The state the block reads.
    pub db: PreState,
    /// The values the execution is checked against.
    pub expected: Expected,
}

impl Block {
    /// Every contract of the pre-state (code hash and code), once each, sorted by hash.
    pub fn contracts(&self) -> Vec<(B256, Bytes)> {
        let mut out: Vec<(B256, Bytes)> = self
            .db
            .cache
            .contracts
            .iter()
            .filter(|(_, c)| !c.is_empty())
            .map(|(h, c)| (*h, c.original_bytes()))
            .collect();
        out.sort_by_key(|(h, _)| *h);
        out
    }

    /// Sum of the transactions' gas limits.
    pub fn gas_limit_sum(&self) -> u64 {
        self.txs
            .iter()
            .map(|t| t.gas_limit)
            .fold(0, u64::saturating_add)
    }
}

/// Contract code by hash, read from a `bytecodes.json` map, decoded and analysed once per
/// hash.
#[derive(Debug)]
pub struct CodeStore {
    path: PathBuf,
    hex: HashMap<B256, String>,
    decoded: HashMap<B256, Bytecode>,
}

impl CodeStore {
    /// Reads the `{ "<code hash>": "0x<code>" }` map at `path`.
    pub fn load(path: &Path) -> Result<Self, String> {
        let name = path.display();
        let v = read_json(path)?;
        let obj = v
            .as_object()
            .ok_or_else(|| format!("{name}: expected an object mapping code hashes to code"))?;
        let mut hex = HashMap::with_capacity(obj.len());
        for (k, code) in obj {
            let hash =
                B256::from_str(k).map_err(|_| format!("{name}: key {k:?} is not a code hash"))?;
            let code = code
                .as_str()
                .ok_or_else(|| format!("{name}: entry {k}: code is not a string"))?;
            hex.insert(hash, code.to_string());
        }
        Ok(Self {
            path: path.to_path_buf(),
            hex,
            decoded: HashMap::new(),
        })
    }

    /// An empty store (blocks without contracts, synthetic blocks).
    pub fn empty() -> Self {
        Self {
            path: PathBuf::from("(no bytecodes file)"),
            hex: HashMap::new(),
            decoded: HashMap::new(),
        }
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.hex.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.hex.is_empty()
    }

    /// The analysed code whose keccak256 is `hash`; an error when it is missing, not hex, or
    /// hashes to something else.
    pub fn get(&mut self, hash: B256) -> Result<Bytecode, String> {
        if let Some(c) = self.decoded.get(&hash) {
            return Ok(c.clone());
        }
        let name = self.path.display();
        let text = self
            .hex
            .get(&hash)
            .ok_or_else(|| format!("{name}: no code for code hash {hash}"))?;
        let code =
            crate::input::decode_hex(text).map_err(|e| format!("{name}: code of {hash}: {e}"))?;
        let actual = keccak256(&code);
        if actual != hash {
            return Err(format!(
                "{name}: the code listed under {hash} hashes to {actual}"
            ));
        }
        let code = Bytecode::new_raw_checked(Bytes::from(code))
            .map_err(|e| format!("{name}: code of {hash}: {e}"))?;
        self.decoded.insert(hash, code.clone());
        Ok(code)
    }
}

/// The block directories under `path`: `path` itself when it holds a `block.json`, else its
/// subdirectories that do, sorted by name as a number (then as text).
pub fn block_dirs(path: &Path) -> Result<Vec<PathBuf>, String> {
    if !path.is_dir() {
        return Err(format!("{}: not a directory", path.display()));
    }
    if path.join("block.json").exists() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries =
        std::fs::read_dir(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut dirs = Vec::new();
    for e in entries {
        let p = e
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .path();
        if p.is_dir() && p.join("block.json").exists() {
            dirs.push(p);
        }
    }
    if dirs.is_empty() {
        return Err(format!(
            "{}: neither a block directory (block.json, pre_state.json, block_hashes.json) nor \
             a directory of block directories",
            path.display()
        ));
    }
    let key = |p: &PathBuf| {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (name.parse::<u64>().unwrap_or(u64::MAX), name)
    };
    dirs.sort_by_key(key);
    Ok(dirs)
}

/// The `bytecodes.json` used for a block directory: the one inside it, else its parent's.
pub fn default_bytecodes(block_dir: &Path) -> Option<PathBuf> {
    let inside = block_dir.join("bytecodes.json");
    if inside.is_file() {
        return Some(inside);
    }
    let parent = block_dir.parent()?.join("bytecodes.json");
    parent.is_file().then_some(parent)
}

/// Loads every block under `paths` (see [`block_dirs`]), with code from `bytecodes` or from
/// each block's [`default_bytecodes`]. Each bytecodes file is read once.
pub fn load_blocks(paths: &[PathBuf], bytecodes: Option<&Path>) -> Result<Vec<Block>, String> {
    let mut stores: HashMap<PathBuf, CodeStore> = HashMap::new();
    let mut empty = CodeStore::empty();
    let mut blocks = Vec::new();
    for p in paths {
        for dir in block_dirs(p)? {
            let file = match bytecodes {
                Some(f) => Some(f.to_path_buf()),
                None => default_bytecodes(&dir),
            };
            let store = match file {
                Some(f) => {
                    if !stores.contains_key(&f) {
                        let s = CodeStore::load(&f)?;
                        stores.insert(f.clone(), s);
                    }
                    stores.get_mut(&f).unwrap_or(&mut empty)
                }
                None => &mut empty,
            };
            blocks.push(load_block(&dir, store)?);
        }
    }
    Ok(blocks)
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: not valid JSON: {e}", path.display()))
}

/// Field accessors that name the file and field in their errors.
struct Fields<'a> {
    file: &'a str,
    what: String,
    v: &'a Value,
}

impl<'a> Fields<'a> {
    fn new(file: &'a str, what: impl Into<String>, v: &'a Value) -> Result<Self, String> {
        let what = what.into();
        if !v.is_object() {
            return Err(format!("{file}: {what} is not an object"));
        }
        Ok(Self { file, what, v })
    }

    fn err(&self, key: &str, problem: &str) -> String {
        if self.what.is_empty() {
            format!("{}: `{key}` {problem}", self.file)
        } else {
            format!("{}: {}: `{key}` {problem}", self.file, self.what)
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.v.get(key).filter(|v| !v.is_null())
    }

    fn str(&self, key: &str) -> Result<&'a str, String> {
        match self.get(key) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(self.err(key, "is not a string")),
            None => Err(self.err(key, "is missing")),
        }
    }

    fn opt_u256(&self, key: &str) -> Result<Option<U256>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => quantity(v)
                .map(Some)
                .ok_or_else(|| self.err(key, "is not a quantity")),
        }
    }

    fn u256(&self, key: &str) -> Result<U256, String> {
        self.opt_u256(key)?
            .ok_or_else(|| self.err(key, "is missing"))
    }

    fn u64(&self, key: &str) -> Result<u64, String> {
        u64::try_from(self.u256(key)?).map_err(|_| self.err(key, "does not fit in 64 bits"))
    }

    fn opt_u64(&self, key: &str) -> Result<Option<u64>, String> {
        self.opt_u256(key)?
            .map(|v| u64::try_from(v).map_err(|_| self.err(key, "does not fit in 64 bits")))
            .transpose()
    }

    fn opt_u128(&self, key: &str) -> Result<Option<u128>, String> {
        self.opt_u256(key)?
            .map(|v| u128::try_from(v).map_err(|_| self.err(key, "does not fit in 128 bits")))
            .transpose()
    }

    fn address(&self, key: &str) -> Result<Address, String> {
        Address::from_str(self.str(key)?).map_err(|_| self.err(key, "is not an address"))
    }

    fn b256(&self, key: &str) -> Result<B256, String> {
        B256::from_str(self.str(key)?).map_err(|_| self.err(key, "is not a 32-byte hex value"))
    }

    fn bytes(&self, key: &str) -> Result<Bytes, String> {
        Bytes::from_str(self.str(key)?).map_err(|_| self.err(key, "is not hex bytes"))
    }

    fn array(&self, key: &str) -> Result<&'a Vec<Value>, String> {
        match self.get(key) {
            Some(Value::Array(a)) => Ok(a),
            Some(_) => Err(self.err(key, "is not an array")),
            None => Err(self.err(key, "is missing")),
        }
    }
}

/// A JSON quantity: a `0x` hex string, a decimal string, or a non-negative integer.
fn quantity(v: &Value) -> Option<U256> {
    match v {
        Value::String(s) => U256::from_str(s).ok(),
        Value::Number(n) => n.as_u64().map(U256::from),
        _ => None,
    }
}

/// The fork of a mainnet block: by number up to the Merge, by timestamp after.
pub fn mainnet_spec(number: u64, timestamp: u64) -> SpecId {
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

fn tx_env(file: &str, index: usize, t: &Value) -> Result<(u8, TxEnv), String> {
    let f = Fields::new(file, format!("transaction {index}"), t)?;
    let tx_type = f.opt_u64("type")?.unwrap_or(0);
    let tx_type = match tx_type {
        0..=3 => tx_type as u8,
        other => {
            return Err(f.err(
                "type",
                &format!("is {other}: only legacy, EIP-2930, EIP-1559 and EIP-4844 transactions are supported"),
            ))
        }
    };
    let mut access_list = Vec::new();
    if let Some(items) = f.get("accessList") {
        let items = items
            .as_array()
            .ok_or_else(|| f.err("accessList", "is not an array"))?;
        for (i, item) in items.iter().enumerate() {
            let a = Fields::new(
                file,
                format!("transaction {index}: access list item {i}"),
                item,
            )?;
            let storage_keys = a
                .array("storageKeys")?
                .iter()
                .map(|k| {
                    k.as_str()
                        .and_then(|k| B256::from_str(k).ok())
                        .ok_or_else(|| a.err("storageKeys", "holds a value that is not a key"))
                })
                .collect::<Result<_, _>>()?;
            access_list.push(AccessListItem {
                address: a.address("address")?,
                storage_keys,
            });
        }
    }
    let (gas_price, gas_priority_fee) = if tx_type >= 2 {
        (
            f.opt_u128("maxFeePerGas")?
                .ok_or_else(|| f.err("maxFeePerGas", "is missing"))?,
            Some(
                f.opt_u128("maxPriorityFeePerGas")?
                    .ok_or_else(|| f.err("maxPriorityFeePerGas", "is missing"))?,
            ),
        )
    } else {
        (
            f.opt_u128("gasPrice")?
                .ok_or_else(|| f.err("gasPrice", "is missing"))?,
            None,
        )
    };
    let blob_hashes = match f.get("blobVersionedHashes") {
        None => Vec::new(),
        Some(_) => f
            .array("blobVersionedHashes")?
            .iter()
            .map(|h| {
                h.as_str()
                    .and_then(|h| B256::from_str(h).ok())
                    .ok_or_else(|| f.err("blobVersionedHashes", "holds a value that is not a hash"))
            })
            .collect::<Result<_, _>>()?,
    };
    let kind = match f.get("to") {
        None => TxKind::Create,
        Some(_) => TxKind::Call(f.address("to")?),
    };
    let data = match f.get("input") {
        None => Bytes::new(),
        Some(_) => f.bytes("input")?,
    };
    let tx = TxEnv {
        tx_type,
        caller: f.address("from")?,
        gas_limit: f.u64("gas")?,
        gas_price,
        kind,
        value: f.opt_u256("value")?.unwrap_or_default(),
        data,
        nonce: f.u64("nonce")?,
        chain_id: f.opt_u64("chainId")?,
        access_list: AccessList(access_list),
        gas_priority_fee,
        blob_hashes,
        max_fee_per_blob_gas: f.opt_u128("maxFeePerBlobGas")?.unwrap_or_default(),
        ..TxEnv::default()
    };
    Ok((tx_type, tx))
}

/// Loads one block directory (see the module docs), taking code from `codes`.
pub fn load_block(dir: &Path, codes: &mut CodeStore) -> Result<Block, String> {
    let header_path = dir.join("block.json");
    let header_file = header_path.display().to_string();
    let header = read_json(&header_path)?;
    let h = Fields::new(&header_file, "", &header)?;
    let number = h.u64("number")?;
    let timestamp = h.u64("timestamp")?;
    let spec = mainnet_spec(number, timestamp);
    let mut cfg = CfgEnv::new_with_spec(spec);
    cfg.chain_id = 1;
    let env = BlockEnv {
        number: U256::from(number),
        beneficiary: h.address("miner")?,
        timestamp: U256::from(timestamp),
        gas_limit: h.u64("gasLimit")?,
        basefee: h.opt_u64("baseFeePerGas")?.unwrap_or(0),
        difficulty: h.opt_u256("difficulty")?.unwrap_or_default(),
        prevrandao: if spec.is_enabled_in(SpecId::MERGE) {
            Some(h.b256("mixHash")?)
        } else {
            None
        },
        blob_excess_gas_and_price: if spec.is_enabled_in(SpecId::CANCUN) {
            let excess = h.opt_u64("excessBlobGas")?.unwrap_or(0);
            // revm's blob price computation overflows far above any real value (mainnet's
            // highest is in the tens of millions).
            if excess > MAX_EXCESS_BLOB_GAS {
                return Err(h.err(
                    "excessBlobGas",
                    &format!("is {excess}: above {MAX_EXCESS_BLOB_GAS}, not a plausible value"),
                ));
            }
            Some(BlobExcessGasAndPrice::new_with_spec(excess, spec))
        } else {
            None
        },
        ..BlockEnv::default()
    };
    let mut txs = Vec::new();
    let mut tx_types = Vec::new();
    for (i, t) in h.array("transactions")?.iter().enumerate() {
        if t.is_string() {
            return Err(format!(
                "{header_file}: transaction {i} is a hash: the block must hold full transactions \
                 (eth_getBlockByNumber(n, true))"
            ));
        }
        let (ty, tx) = tx_env(&header_file, i, t)?;
        tx_types.push(ty);
        txs.push(tx);
    }
    let logs_bloom = Bloom::from_str(h.str("logsBloom")?)
        .map_err(|_| h.err("logsBloom", "is not a 256-byte bloom"))?;
    let expected = Expected {
        gas_used: Some(h.u64("gasUsed")?),
        logs_bloom: Some(logs_bloom),
        receipts_root: if spec.is_enabled_in(SpecId::BYZANTIUM) {
            Some(h.b256("receiptsRoot")?)
        } else {
            None
        },
        all_successful: false,
    };

    let mut db = CacheDB::new(EmptyDB::default());
    let pre_path = dir.join("pre_state.json");
    let pre_file = pre_path.display().to_string();
    let pre = read_json(&pre_path)?;
    let pre = pre
        .as_object()
        .ok_or_else(|| format!("{pre_file}: expected an object mapping addresses to accounts"))?;
    for (addr, account) in pre {
        let address = Address::from_str(addr)
            .map_err(|_| format!("{pre_file}: key {addr:?} is not an address"))?;
        let a = Fields::new(&pre_file, format!("account {addr}"), account)?;
        let mut info = AccountInfo {
            balance: a.opt_u256("balance")?.unwrap_or_default(),
            nonce: a.opt_u64("nonce")?.unwrap_or(0),
            ..AccountInfo::default()
        };
        if a.get("code_hash").is_some() {
            let hash = a.b256("code_hash")?;
            info.code = Some(
                codes
                    .get(hash)
                    .map_err(|e| format!("{pre_file}: account {addr}: {e}"))?,
            );
            info.code_hash = hash;
        }
        db.insert_account_info(address, info);
        if let Some(storage) = a.get("storage") {
            let storage = storage
                .as_object()
                .ok_or_else(|| a.err("storage", "is not an object"))?;
            for (slot, value) in storage {
                let key = U256::from_str(slot).map_err(|_| {
                    a.err(
                        "storage",
                        &format!("has a slot {slot:?} that is not a number"),
                    )
                })?;
                let value = quantity(value).ok_or_else(|| {
                    a.err(
                        "storage",
                        &format!("slot {slot} holds a value that is not a number"),
                    )
                })?;
                db.insert_account_storage(address, key, value)
                    .map_err(|e| format!("{pre_file}: {e}"))?;
            }
        }
    }

    let hashes_path = dir.join("block_hashes.json");
    let hashes_file = hashes_path.display().to_string();
    let hashes = read_json(&hashes_path)?;
    let hashes: &Map<String, Value> = hashes
        .as_object()
        .ok_or_else(|| format!("{hashes_file}: expected an object mapping numbers to hashes"))?;
    for (n, hash) in hashes {
        let n: u64 = n
            .parse()
            .map_err(|_| format!("{hashes_file}: key {n:?} is not a block number"))?;
        let hash = hash
            .as_str()
            .and_then(|s| B256::from_str(s).ok())
            .ok_or_else(|| {
                format!("{hashes_file}: the hash of block {n} is not a 32-byte hex value")
            })?;
        db.cache.block_hashes.insert(U256::from(n), hash);
    }
    Ok(Block {
        name: number.to_string(),
        number,
        spec,
        cfg,
        env,
        txs,
        tx_types,
        db,
        expected,
    })
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
    let mut payload = Vec::new();
    success.encode(&mut payload);
    cumulative.encode(&mut payload);
    bloom_of(logs).encode(&mut payload);
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

/// The `logsBloom` of an execution: the OR of every receipt's bloom.
pub fn logs_bloom(out: &BlockOutput) -> Bloom {
    let mut bloom = Bloom::default();
    for t in &out.transactions {
        bloom |= bloom_of(t.result.logs());
    }
    bloom
}

/// The `receiptsRoot` of an execution (post-Byzantium receipts with a status field);
/// `tx_types` gives each transaction's EIP-2718 type.
pub fn receipts_root(out: &BlockOutput, tx_types: &[u8]) -> B256 {
    let receipts: Vec<Vec<u8>> = out
        .transactions
        .iter()
        .enumerate()
        .map(|(i, t)| {
            encode_receipt(
                tx_types.get(i).copied().unwrap_or(0),
                t.result.is_success(),
                t.cumulative_gas_used,
                t.result.logs(),
            )
        })
        .collect();
    alloy_trie::root::ordered_trie_root_encoded(&receipts)
}

/// Checks an execution against the block's [`Expected`] values: one message per mismatching
/// field (`gasUsed`, `logsBloom`, `receiptsRoot`, `status`), empty when everything matches.
pub fn verify(block: &Block, out: &BlockOutput) -> Vec<String> {
    let mut failures = Vec::new();
    let e = &block.expected;
    if let Some(expected) = e.gas_used {
        if out.gas_used() != expected {
            failures.push(format!(
                "gasUsed: expected {expected}, got {}",
                out.gas_used()
            ));
        }
    }
    if let Some(expected) = e.logs_bloom {
        if logs_bloom(out) != expected {
            failures.push("logsBloom: differs from the header's".to_string());
        }
    }
    if let Some(expected) = e.receipts_root {
        let root = receipts_root(out, &block.tx_types);
        if root != expected {
            failures.push(format!("receiptsRoot: expected {expected}, got {root}"));
        }
    }
    if e.all_successful {
        if let Some((i, t)) = out
            .transactions
            .iter()
            .enumerate()
            .find(|(_, t)| !t.result.is_success())
        {
            failures.push(format!("status: transaction {i} failed: {:?}", t.result));
        }
    }
    failures
}

/// The first difference between a reference execution and another one: a transaction's result
/// or cumulative gas, or a state change. `None` when they agree on everything.
pub fn first_difference(reference: &BlockOutput, out: &BlockOutput) -> Option<String> {
    for (i, (r, o)) in reference
        .transactions
        .iter()
        .zip(&out.transactions)
        .enumerate()
    {
        if r != o {
            return Some(format!(
                "transaction {i}: expected {:?} (cumulative gas {}), got {:?} (cumulative gas {})",
                r.result, r.cumulative_gas_used, o.result, o.cumulative_gas_used
            ));
        }
    }
    if reference.transactions.len() != out.transactions.len() {
        return Some(format!(
            "{} transaction results instead of {}",
            out.transactions.len(),
            reference.transactions.len()
        ));
    }
    for (r, o) in reference.changes.iter().zip(&out.changes) {
        if r != o {
            return Some(format!("state change: expected {r:?}, got {o:?}"));
        }
    }
    if reference.changes.len() != out.changes.len() {
        let (longer, which) = if out.changes.len() > reference.changes.len() {
            (&out.changes[reference.changes.len()], "extra")
        } else {
            (&reference.changes[out.changes.len()], "missing")
        };
        return Some(format!(
            "{} state changes instead of {}; first {which}: {longer:?}",
            out.changes.len(),
            reference.changes.len()
        ));
    }
    None
}

/// How to execute blocks.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Parallel executor options; `threads` below 2 runs [`execute_block_sequential`].
    pub parallel: ParallelOptions,
    /// Also execute sequentially with the interpreter (untimed) and compare every
    /// transaction's result and the state changes.
    pub check: bool,
    /// Timed executions per block (the fastest is reported; every one is verified to produce
    /// the same outcome).
    pub repeat: u32,
}

impl RunOptions {
    /// `threads` workers with [`ParallelOptions`]' default heuristics, one timed run, no check.
    pub fn new(threads: usize) -> Self {
        Self {
            parallel: ParallelOptions {
                threads,
                ..ParallelOptions::default()
            },
            check: false,
            repeat: 1,
        }
    }
}

/// What happened to one block.
#[derive(Clone, Debug)]
pub struct BlockReport {
    /// [`Block::name`].
    pub name: String,
    /// Block number.
    pub number: u64,
    /// Fork.
    pub spec: SpecId,
    /// Transactions.
    pub txs: usize,
    /// Gas used by the execution (0 when it failed).
    pub gas_used: u64,
    /// What did not match, or why execution failed; empty when the block passed.
    pub failures: Vec<String>,
    /// Wall time of the (fastest) timed execution, in seconds.
    pub seconds: f64,
    /// The timed execution's statistics (absent when it failed).
    pub stats: Option<ParallelStats>,
    /// Whether the result was compared with sequential interpreter execution.
    pub checked: bool,
}

impl BlockReport {
    /// Whether every check passed.
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// The names of the failed checks (`gasUsed`, `execution`, `check`...).
    pub fn failed_fields(&self) -> Vec<&str> {
        self.failures
            .iter()
            .map(|f| f.split(':').next().unwrap_or(f))
            .collect()
    }
}

fn execute(
    block: &Block,
    provider: &(dyn NativeProvider + Sync),
    opts: &ParallelOptions,
) -> Result<BlockOutput, String> {
    let r = if opts.threads < 2 {
        execute_block_sequential(
            &block.cfg, &block.env, &block.txs, &block.db, &provider, opts,
        )
    } else {
        execute_block(
            &block.cfg, &block.env, &block.txs, &block.db, &provider, opts,
        )
    };
    r.map_err(|e| e.to_string())
}

/// Executes `block` with native code from `provider` as `opts` says, verifies the result
/// ([`verify`], and with [`RunOptions::check`] [`first_difference`] against sequential
/// interpretation) and times it.
pub fn run_block(
    block: &Block,
    provider: &(dyn NativeProvider + Sync),
    opts: &RunOptions,
) -> BlockReport {
    let mut report = BlockReport {
        name: block.name.clone(),
        number: block.number,
        spec: block.spec,
        txs: block.txs.len(),
        gas_used: 0,
        failures: Vec::new(),
        seconds: 0.0,
        stats: None,
        checked: false,
    };
    let mut best: Option<(Duration, BlockOutput)> = None;
    for _ in 0..opts.repeat.max(1) {
        let start = Instant::now();
        let r = execute(block, provider, &opts.parallel);
        let time = start.elapsed();
        match r {
            Err(e) => {
                report.seconds = time.as_secs_f64();
                report.failures.push(format!("execution: {e}"));
                return report;
            }
            Ok(out) => match &best {
                Some((t, first)) => {
                    if let Some(d) = first_difference(first, &out) {
                        report.failures.push(format!("repeat: runs differ: {d}"));
                        return report;
                    }
                    if time < *t {
                        best = Some((time, out));
                    }
                }
                None => best = Some((time, out)),
            },
        }
    }
    let Some((time, out)) = best else {
        return report;
    };
    report.seconds = time.as_secs_f64();
    report.gas_used = out.gas_used();
    report.failures = verify(block, &out);
    if opts.check {
        report.checked = true;
        match execute(
            block,
            &NoNative,
            &ParallelOptions {
                threads: 1,
                ..opts.parallel.clone()
            },
        ) {
            Err(e) => report
                .failures
                .push(format!("check: sequential interpretation failed: {e}")),
            Ok(reference) => {
                if let Some(d) = first_difference(&reference, &out) {
                    report.failures.push(format!(
                        "check: differs from sequential interpretation: {d}"
                    ));
                }
            }
        }
    }
    report.stats = Some(out.stats);
    report
}

/// Outcome of compiling the blocks' contracts ahead of timing.
#[derive(Clone, Debug, Default)]
pub struct CompileSummary {
    /// Distinct (code hash, fork) pairs requested.
    pub contracts: usize,
    /// Of those, compiled (now or earlier, by this cache).
    pub compiled: usize,
    /// Those that failed, with the reason (they run in the interpreter).
    pub failures: Vec<(B256, SpecId, String)>,
    /// Wall time.
    pub wall: Duration,
}

/// Every (code hash, code, fork) the blocks' pre-states hold, once each, largest code first.
pub fn contract_keys(blocks: &[Block]) -> Vec<(B256, Bytes, SpecId)> {
    let mut seen = HashSet::new();
    let mut work: Vec<(B256, Bytes, SpecId)> = Vec::new();
    for b in blocks {
        for (hash, code) in b.contracts() {
            if seen.insert((hash, b.spec)) {
                work.push((hash, code, b.spec));
            }
        }
    }
    work.sort_by_key(|(_, code, _)| std::cmp::Reverse(code.len()));
    work
}

/// Counts, per (code hash, fork), the frame runs that ask for native code, and provides none:
/// a warm-up pass with it finds the contracts a set of blocks really executes, and how often.
#[derive(Debug, Default)]
struct RecordingProvider {
    asked: std::sync::Mutex<HashMap<(B256, SpecId), u64>>,
}

impl RecordingProvider {
    fn add(&self, key: (B256, SpecId), n: u64) {
        let mut asked = self.asked.lock().unwrap_or_else(|p| p.into_inner());
        let runs = asked.entry(key).or_default();
        *runs = runs.saturating_add(n);
    }
}

impl NativeProvider for RecordingProvider {
    fn native_fn(&self, code_hash: &B256, spec: SpecId) -> Option<ember_runtime::NativeFn> {
        self.add((*code_hash, spec), 1);
        None
    }
}

/// The entries of [`contract_keys`] that executing the blocks (sequentially, interpreted,
/// untimed: the JIT warm-up pass) runs as frames at least `min_runs` times (a frame resumed
/// after a call counts again), in [`contract_keys`]' order. With `min_runs` 1 these are the
/// contracts that run at all; the rest of a pre-state's code is only read (`EXTCODE*`, an account's balance)
/// and compiling it would be wasted. A higher `min_runs` is what a node's hot-contract cache
/// does: compile only what runs often. Code deployed within a block is in no pre-state and
/// stays interpreted. A block that fails to execute keeps all its pre-state's contracts.
pub fn executed_contract_keys(blocks: &[Block], min_runs: u64) -> Vec<(B256, Bytes, SpecId)> {
    let rec = RecordingProvider::default();
    let sequential = ParallelOptions {
        threads: 1,
        ..ParallelOptions::default()
    };
    for b in blocks {
        if execute(b, &rec, &sequential).is_err() {
            for (hash, _) in b.contracts() {
                rec.add((hash, b.spec), min_runs);
            }
        }
    }
    let runs = rec.asked.into_inner().unwrap_or_else(|p| p.into_inner());
    contract_keys(blocks)
        .into_iter()
        .filter(|(hash, _, spec)| {
            runs.get(&(*hash, *spec))
                .is_some_and(|n| *n >= min_runs.max(1))
        })
        .collect()
}

/// Compiles `work` (see [`contract_keys`]) into `cache` on `jobs` threads; `progress` is
/// called with the number done so far.
pub fn compile_contracts(
    work: &[(B256, Bytes, SpecId)],
    cache: &JitCache,
    jobs: usize,
    progress: &(dyn Fn(usize) + Sync),
) -> CompileSummary {
    let start = Instant::now();
    // Largest first (see contract_keys): the long compilations start early and the threads
    // finish together.
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1).min(work.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((hash, code, spec)) = work.get(i) else {
                    break;
                };
                if let Err(e) = cache.get_or_compile(*hash, code, *spec) {
                    failures
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((*hash, *spec, e));
                }
                progress(done.fetch_add(1, Ordering::Relaxed) + 1);
            });
        }
    });
    let failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    CompileSummary {
        contracts: work.len(),
        compiled: work.len() - failures.len(),
        failures,
        wall: start.elapsed(),
    }
}

/// One-time process setup that must not be timed: the KZG trusted setup (loaded on first use
/// of the point-evaluation precompile).
pub fn warm_up() {
    let _ = revm::precompile::kzg_point_evaluation::verify_kzg_proof(
        &[0; 48], &[0; 32], &[0; 32], &[0; 48],
    );
}

fn mgas_per_sec(gas: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        gas as f64 / seconds / 1e6
    } else {
        0.0
    }
}

/// The header line of the text report.
pub fn table_header() -> String {
    format!(
        "{:>10} {:<15} {:>6} {:>11} {:<8} {:>9} {:>9} {:>8} {:>21}  parallel",
        "block",
        "fork",
        "txs",
        "gas",
        "result",
        "seconds",
        "Mgas/s",
        "re-exec",
        "frames native/interp"
    )
}

/// One block's line of the text report, followed by one indented line per failure.
pub fn table_row(r: &BlockReport) -> String {
    let result = if r.ok() {
        if r.checked { "ok+chk" } else { "ok" }.to_string()
    } else {
        "FAIL".to_string()
    };
    let (reexec, frames, parallel) = match &r.stats {
        Some(s) => (
            s.reexecutions.to_string(),
            format!("{}/{}", s.native_runs, s.interpreted_runs),
            match &s.fallback {
                None => format!("{} threads", s.threads),
                Some(ember_runtime::parallel::FallbackReason::Requested) => "sequential".into(),
                Some(f) => format!("sequential: {f}"),
            },
        ),
        None => ("-".into(), "-".into(), "-".into()),
    };
    let mut line = format!(
        "{:>10} {:<15} {:>6} {:>11} {:<8} {:>9.4} {:>9.1} {:>8} {:>21}  {}",
        r.name,
        r.spec.to_string(),
        r.txs,
        r.gas_used,
        result,
        r.seconds,
        mgas_per_sec(r.gas_used, r.seconds),
        reexec,
        frames,
        parallel
    );
    for f in &r.failures {
        line.push_str(&format!("\n{:>10} FAIL {f}", ""));
    }
    line
}

/// The closing lines of the text report.
pub fn totals(reports: &[BlockReport]) -> String {
    let failed = reports.iter().filter(|r| !r.ok()).count();
    let gas: u64 = reports.iter().map(|r| r.gas_used).sum();
    let txs: usize = reports.iter().map(|r| r.txs).sum();
    let seconds: f64 = reports.iter().map(|r| r.seconds).sum();
    let mut by = BTreeMap::new();
    let mut sequential = 0usize;
    let mut sum = ParallelStats::default();
    for r in reports {
        if let Some(s) = &r.stats {
            sum.add(s);
            if let Some(f) = &s.fallback {
                sequential += 1;
                let key = match f {
                    ember_runtime::parallel::FallbackReason::TooFewTransactions { .. } => {
                        "too few transactions"
                    }
                    ember_runtime::parallel::FallbackReason::TooLittleGas { .. } => {
                        "too little gas"
                    }
                    ember_runtime::parallel::FallbackReason::SenderChain { .. } => {
                        "one dominant sender"
                    }
                    ember_runtime::parallel::FallbackReason::RepeatedWipe(_) => "repeated wipe",
                    ember_runtime::parallel::FallbackReason::BalanceOverflow(_) => {
                        "balance overflow"
                    }
                    ember_runtime::parallel::FallbackReason::SenderState(_)
                    | ember_runtime::parallel::FallbackReason::InvalidWithLazySenders(_) => {
                        "invalid transaction with lazy senders"
                    }
                    ember_runtime::parallel::FallbackReason::Requested => "requested",
                    ember_runtime::parallel::FallbackReason::SingleThread => "single thread",
                    ember_runtime::parallel::FallbackReason::NoThreads(_) => "no worker threads",
                    ember_runtime::parallel::FallbackReason::MostlyTransfers { .. } => {
                        "mostly transfers"
                    }
                };
                *by.entry(key).or_insert(0usize) += 1;
            }
        }
    }
    let reasons: Vec<String> = by.iter().map(|(k, n)| format!("{n} {k}")).collect();
    let ParallelStats {
        reexecutions: reexec,
        dependency_waits: waits,
        dependency_suspensions: suspensions,
        lazy_retries: retries,
        native_runs: native,
        interpreted_runs: interp,
        execution_time: exec_t,
        wasted_execution_time: wasted_t,
        record_time: record_t,
        validation_time: valid_t,
        idle_time: idle_t,
        fold_time: fold_t,
        worker_time: worker_t,
        speculated_blocks: speculated,
        abandoned_speculations: abandoned,
        abandoned_speculation_time: abandoned_t,
        ..
    } = sum;
    let share = |t: Duration| 100.0 * t.as_secs_f64() / worker_t.as_secs_f64();
    let workers = if worker_t.is_zero() {
        String::new()
    } else {
        format!(
            "\n       parallel workers' time: {:.0}% executing transactions, {:.0}% recording \
             them, {:.0}% validating, {:.0}% folding the state changes, {:.0}% idle (no task \
             available), {:.0}% scheduling; {:.0}% of the executing time was lost to conflicts \
             (executions replaced by a re-execution or abandoned on a dependency)",
            share(exec_t),
            share(record_t),
            share(valid_t),
            share(fold_t),
            share(idle_t),
            share(worker_t.saturating_sub(exec_t + record_t + valid_t + fold_t + idle_t)),
            100.0 * wasted_t.as_secs_f64() / exec_t.as_secs_f64().max(f64::MIN_POSITIVE),
        )
    };
    format!(
        "total: {} block(s), {} ok, {failed} failed; {txs} txs, {gas} gas in {seconds:.4} s: \
         {:.1} Mgas/s\n       {reexec} re-executions, {waits} dependency waits, {suspensions} suspensions, \
         {retries} re-runs of lazy reads; \
         {sequential} block(s) ran sequentially{}; \
         {speculated} block(s) ran as speculative chunks, {abandoned} speculation(s) \
         abandoned on a conflict ({:.1} ms); \
         frames: {native} native, {interp} interpreted",
        reports.len(),
        reports.len() - failed,
        mgas_per_sec(gas, seconds),
        if reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", reasons.join(", "))
        },
        abandoned_t.as_secs_f64() * 1e3,
    ) + &workers
}

/// The `--json` report: `{"blocks": [{"number", "gas_used", "ok", "seconds"}], "total": {"gas",
/// "seconds", "gas_per_sec"}}`; seconds are execution only (no loading or compiling).
pub fn json_report(reports: &[BlockReport]) -> Value {
    let gas: u64 = reports.iter().map(|r| r.gas_used).sum();
    let seconds: f64 = reports.iter().map(|r| r.seconds).sum();
    serde_json::json!({
        "blocks": reports.iter().map(|r| serde_json::json!({
            "number": r.number,
            "gas_used": r.gas_used,
            "ok": r.ok(),
            "seconds": r.seconds,
        })).collect::<Vec<_>>(),
        "total": {
            "gas": gas,
            "seconds": seconds,
            "gas_per_sec": if seconds > 0.0 { gas as f64 / seconds } else { 0.0 },
        },
    })
}

/// One execution configuration of a comparison ([`compare_block`]).
pub struct CompareMode<'a> {
    /// Column name (`seq-interp`, `par2-jit`...).
    pub name: String,
    /// Native code (or [`NoNative`]).
    pub provider: &'a (dyn NativeProvider + Sync),
    /// Executor options (threads below 2: sequential).
    pub parallel: ParallelOptions,
}

/// One block executed in every mode of a comparison.
pub struct CompareReport {
    /// Block name and number.
    pub name: String,
    /// Block number.
    pub number: u64,
    /// Transactions.
    pub txs: usize,
    /// Gas used (the same in every mode, or the block failed).
    pub gas_used: u64,
    /// Per mode (in [`CompareMode`] order): fastest execution time in seconds.
    pub seconds: Vec<f64>,
    /// Per mode: whether the execution ran in parallel (no sequential fallback).
    pub parallel: Vec<bool>,
    /// Per mode: frame runs served by native code and by the interpreter (one execution).
    pub frames: Vec<(u64, u64)>,
    /// Every failure, prefixed by its mode.
    pub failures: Vec<String>,
}

/// Executes `block` in every mode, `repeat` rounds, the modes interleaved within each round
/// (so drift of a noisy machine hits them alike) and their order rotated from round to round
/// (running second, after another mode's execution, its verification and its output's
/// freeing, measured ~4% slower on small blocks), keeping each mode's fastest time. Every
/// execution is verified ([`verify`]), and every mode's outcome must equal the first one's.
pub fn compare_block(block: &Block, modes: &[CompareMode<'_>], repeat: u32) -> CompareReport {
    let mut report = CompareReport {
        name: block.name.clone(),
        number: block.number,
        txs: block.txs.len(),
        gas_used: 0,
        seconds: vec![f64::INFINITY; modes.len()],
        parallel: vec![false; modes.len()],
        frames: vec![(0, 0); modes.len()],
        failures: Vec::new(),
    };
    let mut reference: Option<(BlockOutput, &str)> = None;
    for round in 0..repeat.max(1) as usize {
        for k in 0..modes.len() {
            let i = (k + round) % modes.len();
            let mode = &modes[i];
            let start = Instant::now();
            let r = execute(block, mode.provider, &mode.parallel);
            let time = start.elapsed().as_secs_f64();
            match r {
                Err(e) => {
                    report
                        .failures
                        .push(format!("{}: execution: {e}", mode.name));
                    return report;
                }
                Ok(out) => {
                    for f in verify(block, &out) {
                        report.failures.push(format!("{}: {f}", mode.name));
                    }
                    match &reference {
                        None => {
                            report.gas_used = out.gas_used();
                            reference = Some((out.clone(), mode.name.as_str()));
                        }
                        Some((first, first_mode)) => {
                            if let Some(d) = first_difference(first, &out) {
                                report
                                    .failures
                                    .push(format!("{}: differs from {first_mode}: {d}", mode.name));
                            }
                        }
                    }
                    report.parallel[i] = out.stats.fallback.is_none();
                    report.frames[i] = (out.stats.native_runs, out.stats.interpreted_runs);
                    report.seconds[i] = report.seconds[i].min(time);
                }
            }
            if !report.failures.is_empty() {
                return report;
            }
        }
    }
    report
}

/// The text report of a comparison: per block and in total, each mode's Mgas/s and its ratio
/// to the first mode.
pub fn compare_table(modes: &[CompareMode<'_>], reports: &[CompareReport]) -> String {
    use std::fmt::Write;
    let mut out = format!("{:>10} {:>6} {:>11}", "block", "txs", "gas");
    for m in modes {
        let _ = write!(out, " {:>17}", format!("{} Mgas/s", m.name));
    }
    for m in &modes[1..] {
        let _ = write!(out, " {:>8}", format!("x{}", m.name));
    }
    out.push('\n');
    for r in reports {
        let _ = write!(out, "{:>10} {:>6} {:>11}", r.name, r.txs, r.gas_used);
        for (i, s) in r.seconds.iter().enumerate() {
            let mark = if r.parallel[i] || modes[i].parallel.threads < 2 {
                ' '
            } else {
                '*'
            };
            let _ = write!(out, " {:>16.1}{mark}", mgas_per_sec(r.gas_used, *s));
        }
        for s in &r.seconds[1..] {
            let _ = write!(out, " {:>8.2}", r.seconds[0] / s);
        }
        for f in &r.failures {
            let _ = write!(out, "\n{:>10} FAIL {f}", "");
        }
        out.push('\n');
    }
    let gas: u64 = reports.iter().map(|r| r.gas_used).sum();
    let _ = write!(
        out,
        "{:>10} {:>6} {:>11}",
        "total",
        reports.iter().map(|r| r.txs).sum::<usize>(),
        gas
    );
    let totals: Vec<f64> = (0..modes.len())
        .map(|i| reports.iter().map(|r| r.seconds[i]).sum())
        .collect();
    for t in &totals {
        let _ = write!(out, " {:>16.1} ", mgas_per_sec(gas, *t));
    }
    for t in &totals[1..] {
        let _ = write!(out, " {:>8.2}", totals[0] / t);
    }
    out.push('\n');
    let below: Vec<String> = modes[1..]
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let n = reports
                .iter()
                .filter(|r| r.seconds[0] / r.seconds[i + 1] < 0.95)
                .count();
            format!("{}: {n}", m.name)
        })
        .collect();
    let _ = write!(
        out,
        "ratios are to {} (same run, fastest per mode); * = the heuristics ran the block \
         sequentially; blocks below 0.95x: {}",
        modes[0].name,
        below.join(", ")
    );
    // How much of each mode really ran natively: a native mode's frames that were not compiled
    // (code created in the block, contracts missing from a library) ran in the interpreter.
    let frames: Vec<String> = modes
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let (native, interp) = reports
                .iter()
                .fold((0, 0), |(n, t), r| (n + r.frames[i].0, t + r.frames[i].1));
            format!("{}: {native}/{interp}", m.name)
        })
        .collect();
    let _ = write!(
        out,
        "\nframes run native/interpreted (one execution per block): {}",
        frames.join(", ")
    );
    out
}

/// The `--compare --json` report: `{"modes": [names], "blocks": [{"number", "gas_used", "ok",
/// "seconds", "native_frames", "interpreted_frames" (each per mode)}], "total": {"gas",
/// "seconds", "gas_per_sec", "ratio" (each per mode, the ratio to the first)}}`.
pub fn compare_json(modes: &[CompareMode<'_>], reports: &[CompareReport]) -> Value {
    let gas: u64 = reports.iter().map(|r| r.gas_used).sum();
    let totals: Vec<f64> = (0..modes.len())
        .map(|i| reports.iter().map(|r| r.seconds[i]).sum())
        .collect();
    serde_json::json!({
        "modes": modes.iter().map(|m| m.name.clone()).collect::<Vec<_>>(),
        "blocks": reports.iter().map(|r| serde_json::json!({
            "number": r.number,
            "gas_used": r.gas_used,
            "ok": r.failures.is_empty(),
            "seconds": r.seconds.iter().map(|s| if s.is_finite() { *s } else { 0.0 }).collect::<Vec<_>>(),
            "native_frames": r.frames.iter().map(|f| f.0).collect::<Vec<_>>(),
            "interpreted_frames": r.frames.iter().map(|f| f.1).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "total": {
            "gas": gas,
            "seconds": totals,
            "gas_per_sec": totals.iter().map(|t| if *t > 0.0 { gas as f64 / t } else { 0.0 }).collect::<Vec<_>>(),
            "ratio": totals.iter().map(|t| totals[0] / t).collect::<Vec<_>>(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ember-block-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    const HEADER_TEMPLATE: &str = r#"{"number": "0x10", "timestamp": "0x5", "miner": "0x0000000000000000000000000000000000000001",
        "gasLimit": "0x1000000", "difficulty": "0x1", "gasUsed": "0x5208",
        "logsBloom": "BLOOM",
        "transactions": [{"type": "0x0", "from": "0x00000000000000000000000000000000000000aa",
            "to": "0x00000000000000000000000000000000000000bb", "gas": "0x5208", "gasPrice": "0x1",
            "value": "0x1", "nonce": "0x0", "input": "0x"}]}"#;

    fn header() -> String {
        HEADER_TEMPLATE.replace("BLOOM", &format!("0x{}", "00".repeat(256)))
    }

    #[test]
    fn loads_and_runs_a_small_block() {
        let d = scratch("ok");
        write(&d, "block.json", &header());
        write(
            &d,
            "pre_state.json",
            r#"{"0x00000000000000000000000000000000000000aa": {"balance": "0xffffffff", "nonce": 0}}"#,
        );
        write(&d, "block_hashes.json", "{}");
        let blocks = load_blocks(std::slice::from_ref(&d), None).unwrap();
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].spec, SpecId::FRONTIER);
        let r = run_block(
            &blocks[0],
            &NoNative,
            &RunOptions {
                check: true,
                ..RunOptions::new(1)
            },
        );
        assert!(r.ok(), "{:?}", r.failures);
        assert_eq!(r.gas_used, 21_000);
        // A wrong header value is reported by field.
        write(
            &d,
            "block.json",
            &header().replace("\"gasUsed\": \"0x5208\"", "\"gasUsed\": \"0x5209\""),
        );
        let blocks = load_blocks(std::slice::from_ref(&d), None).unwrap();
        let r = run_block(&blocks[0], &NoNative, &RunOptions::new(2));
        assert_eq!(r.failed_fields(), vec!["gasUsed"]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let d = scratch("bad");
        let load = |d: &Path| load_blocks(&[d.to_path_buf()], None).unwrap_err();
        assert!(load(&d).contains("neither a block directory"));
        write(&d, "block.json", "{not json");
        assert!(load(&d).contains("not valid JSON"), "{}", load(&d));
        write(&d, "block.json", &header().replace("\"0x10\"", "\"zz\""));
        assert!(
            load(&d).contains("`number` is not a quantity"),
            "{}",
            load(&d)
        );
        write(
            &d,
            "block.json",
            &header().replace("\"type\": \"0x0\"", "\"type\": \"0x7e\""),
        );
        assert!(load(&d).contains("only legacy"), "{}", load(&d));
        write(&d, "block.json", &header());
        assert!(load(&d).contains("pre_state.json"), "{}", load(&d));
        write(
            &d,
            "pre_state.json",
            r#"{"0x00000000000000000000000000000000000000aa": {"code_hash": "0x1111111111111111111111111111111111111111111111111111111111111111"}}"#,
        );
        write(&d, "block_hashes.json", "{}");
        assert!(load(&d).contains("no code for code hash"), "{}", load(&d));
        let codes = d.join("codes.json");
        std::fs::write(
            &codes,
            r#"{"0x1111111111111111111111111111111111111111111111111111111111111111": "0x00"}"#,
        )
        .unwrap();
        let e = load_blocks(std::slice::from_ref(&d), Some(&codes)).unwrap_err();
        assert!(e.contains("hashes to"), "{e}");
        // A truncated EIP-7702 delegation is refused, not a panic.
        let bad = [0xef, 0x01, 0x00, 0x12];
        let hash = keccak256(bad);
        std::fs::write(&codes, format!(r#"{{"{hash}": "0x{}"}}"#, hex::encode(bad))).unwrap();
        write(
            &d,
            "pre_state.json",
            &format!(
                r#"{{"0x00000000000000000000000000000000000000aa": {{"code_hash": "{hash}"}}}}"#
            ),
        );
        let e = load_blocks(std::slice::from_ref(&d), Some(&codes)).unwrap_err();
        assert!(e.contains("code of"), "{e}");
        write(&d, "pre_state.json", r#"{"0xaa": {}}"#);
        assert!(load(&d).contains("not an address"), "{}", load(&d));
        write(&d, "pre_state.json", "{}");
        write(&d, "block_hashes.json", r#"{"x": "0x00"}"#);
        assert!(load(&d).contains("not a block number"), "{}", load(&d));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
