//! Loader for benchmark fixtures in the format of `../shared/bench/revmc/*.json`: one object
//! keyed by test name with `env`, `pre` and `transaction` (a list; the first is used).

use revm::context::{BlockEnv, CfgEnv, TxEnv};
use revm::database::{CacheDB, EmptyDB};
use revm::primitives::{hardfork::SpecId, Address, Bytes, TxKind, B256, U256};
use revm::state::{AccountInfo, Bytecode};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Errors loading a fixture.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// File path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not a fixture.
    #[error("{path}: invalid fixture JSON: {msg}")]
    Json {
        /// File path.
        path: String,
        /// What is wrong.
        msg: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEnv {
    current_coinbase: Option<Address>,
    current_gas_limit: Option<U256>,
    current_number: Option<U256>,
    current_timestamp: Option<U256>,
    current_base_fee: Option<U256>,
    current_difficulty: Option<U256>,
    current_random: Option<B256>,
}

#[derive(Deserialize)]
struct RawAccount {
    balance: Option<U256>,
    code: Option<Bytes>,
    nonce: Option<U256>,
    #[serde(default)]
    storage: BTreeMap<U256, U256>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTx {
    data: Option<Bytes>,
    gas_limit: U256,
    gas_price: Option<U256>,
    sender: Address,
    to: Option<Address>,
    value: Option<U256>,
}

#[derive(Deserialize)]
struct RawFixture {
    env: RawEnv,
    pre: BTreeMap<Address, RawAccount>,
    transaction: OneOrMany<RawTx>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    Many(Vec<T>),
    One(T),
}

/// A loaded fixture, ready to execute.
#[derive(Clone, Debug)]
pub struct Fixture {
    /// Name (the file stem).
    pub name: String,
    /// Pre-state.
    pub db: CacheDB<EmptyDB>,
    /// Block environment.
    pub block: BlockEnv,
    /// The transaction.
    pub tx: TxEnv,
    /// Every distinct non-empty contract code in `pre`.
    pub codes: Vec<Bytes>,
}

/// One contract of a hand-built fixture (see [`Fixture::synthetic`]).
#[derive(Clone, Debug)]
pub struct Contract {
    /// Where the contract lives.
    pub address: Address,
    /// Its runtime code.
    pub code: Bytes,
    /// Initial storage.
    pub storage: Vec<(U256, U256)>,
}

/// Sender of every synthetic fixture's transaction.
pub const SYNTHETIC_SENDER: Address = Address::new([
    0xa9, 0x4f, 0x53, 0x74, 0xfc, 0xe5, 0xed, 0xbc, 0x8e, 0x2a, 0x86, 0x97, 0xc1, 0x53, 0x31, 0x67,
    0x7e, 0x6e, 0xbf, 0x0b,
]);

fn u64_sat(v: U256) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

impl Fixture {
    /// Loads a fixture file.
    pub fn load(path: &Path) -> Result<Self, FixtureError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| FixtureError::Io {
            path: p.clone(),
            source,
        })?;
        let map: BTreeMap<String, RawFixture> =
            serde_json::from_str(&text).map_err(|e| FixtureError::Json {
                path: p.clone(),
                msg: e.to_string(),
            })?;
        let (_, raw) = map.into_iter().next().ok_or_else(|| FixtureError::Json {
            path: p.clone(),
            msg: "no test in file".into(),
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self::from_raw(name, raw).map_err(|msg| FixtureError::Json { path: p, msg })
    }

    fn from_raw(name: String, raw: RawFixture) -> Result<Self, String> {
        let mut db = CacheDB::new(EmptyDB::default());
        let mut codes = Vec::new();
        for (addr, acc) in raw.pre {
            let code = acc.code.unwrap_or_default();
            if code.len() > ember_compiler::MAX_CODE_SIZE {
                return Err(format!(
                    "account {addr}: code is {} bytes, larger than the {}-byte limit",
                    code.len(),
                    ember_compiler::MAX_CODE_SIZE
                ));
            }
            let bytecode = Bytecode::new_raw_checked(code.clone())
                .map_err(|e| format!("account {addr}: invalid code: {e}"))?;
            // EIP-7702 delegation designators are not executed themselves.
            if !code.is_empty() && !bytecode.is_eip7702() && !codes.contains(&code) {
                codes.push(code);
            }
            let info = AccountInfo {
                balance: acc.balance.unwrap_or_default(),
                nonce: u64_sat(acc.nonce.unwrap_or_default()),
                code_hash: bytecode.hash_slow(),
                code: Some(bytecode),
                ..Default::default()
            };
            db.insert_account_info(addr, info);
            for (k, v) in acc.storage {
                db.insert_account_storage(addr, k, v)
                    .map_err(|e| e.to_string())?;
            }
        }
        let e = raw.env;
        let mut block = BlockEnv {
            number: e.current_number.unwrap_or_default(),
            beneficiary: e.current_coinbase.unwrap_or_default(),
            timestamp: e.current_timestamp.unwrap_or_default(),
            gas_limit: u64_sat(e.current_gas_limit.unwrap_or(U256::from(u64::MAX))),
            basefee: u64_sat(e.current_base_fee.unwrap_or_default()),
            difficulty: e.current_difficulty.unwrap_or_default(),
            prevrandao: Some(e.current_random.unwrap_or_default()),
            ..Default::default()
        };
        block.set_blob_excess_gas_and_price(
            0,
            revm::primitives::eip4844::BLOB_BASE_FEE_UPDATE_FRACTION_PRAGUE,
        );
        let t = match raw.transaction {
            OneOrMany::Many(mut v) => {
                if v.is_empty() {
                    return Err("empty transaction list".into());
                }
                v.swap_remove(0)
            }
            OneOrMany::One(t) => t,
        };
        let tx = TxEnv {
            caller: t.sender,
            gas_limit: u64_sat(t.gas_limit),
            gas_price: u128::try_from(t.gas_price.unwrap_or_default()).unwrap_or(u128::MAX),
            kind: match t.to {
                Some(to) => TxKind::Call(to),
                None => TxKind::Create,
            },
            value: t.value.unwrap_or_default(),
            data: t.data.unwrap_or_default(),
            nonce: 0,
            chain_id: Some(1),
            ..Default::default()
        };
        Ok(Self {
            name,
            db,
            block,
            tx,
            codes,
        })
    }

    /// A fixture built in code: `contracts` in the pre-state, a funded sender, and one call to
    /// `to` with `calldata` and `gas_limit` (gas price 0, so balances do not change).
    pub fn synthetic(
        name: &str,
        contracts: &[Contract],
        to: Address,
        calldata: Bytes,
        gas_limit: u64,
    ) -> Self {
        let mut db = CacheDB::new(EmptyDB::default());
        let mut codes = Vec::new();
        db.insert_account_info(
            SYNTHETIC_SENDER,
            AccountInfo {
                balance: U256::from(10u64).pow(U256::from(24u64)),
                ..Default::default()
            },
        );
        for c in contracts {
            // Arbitrary bytes (even a malformed 0xef01 prefix) are accepted as legacy code.
            let bytecode = Bytecode::new_raw_checked(c.code.clone())
                .unwrap_or_else(|_| Bytecode::new_legacy(c.code.clone()));
            if !c.code.is_empty() && !bytecode.is_eip7702() && !codes.contains(&c.code) {
                codes.push(c.code.clone());
            }
            let info = AccountInfo {
                code_hash: bytecode.hash_slow(),
                code: Some(bytecode),
                ..Default::default()
            };
            db.insert_account_info(c.address, info);
            for &(k, v) in &c.storage {
                // Inserting into a CacheDB over EmptyDB cannot fail (the account exists).
                let _ = db.insert_account_storage(c.address, k, v);
            }
        }
        let mut block = BlockEnv {
            number: U256::from(1u64),
            timestamp: U256::from(1_700_000_000u64),
            gas_limit: u64::MAX,
            prevrandao: Some(B256::ZERO),
            ..Default::default()
        };
        block.set_blob_excess_gas_and_price(
            0,
            revm::primitives::eip4844::BLOB_BASE_FEE_UPDATE_FRACTION_PRAGUE,
        );
        let tx = TxEnv {
            caller: SYNTHETIC_SENDER,
            gas_limit,
            gas_price: 0,
            kind: TxKind::Call(to),
            data: calldata,
            nonce: 0,
            chain_id: Some(1),
            ..Default::default()
        };
        Self {
            name: name.to_string(),
            db,
            block,
            tx,
            codes,
        }
    }

    /// Addresses in the pre-state whose code is `code` (for reports).
    pub fn addresses_of(&self, code: &[u8]) -> Vec<Address> {
        let hash = revm::primitives::keccak256(code);
        let mut v: Vec<Address> = self
            .db
            .cache
            .accounts
            .iter()
            .filter(|(_, a)| a.info.code_hash == hash)
            .map(|(addr, _)| *addr)
            .collect();
        v.sort();
        v
    }

    /// The configuration fixtures run under: `spec`, nonce checks off (so a fixture can be
    /// repeated), no EIP-7825 transaction gas cap (fixtures use huge gas limits).
    pub fn cfg(&self, spec: SpecId) -> CfgEnv {
        let mut cfg = CfgEnv::new_with_spec(spec);
        cfg.disable_nonce_check = true;
        cfg.tx_gas_limit_cap = Some(u64::MAX);
        cfg
    }
}
