//! Post-state commitments the test formats check: the state trie root (through `alloy-trie`),
//! the logs hash, and a first-difference description between two post-states.

use alloy_trie::root::{state_root_unhashed, storage_root_unhashed};
use alloy_trie::TrieAccount;
use revm::database::{CacheState, PlainAccount};
use revm::primitives::{keccak256, Address, Log, B256, U256};
use std::collections::BTreeMap;

/// keccak256 of the RLP list of `logs` (the `logs` field of state tests).
pub fn logs_hash(logs: &[Log]) -> B256 {
    let mut out = Vec::with_capacity(alloy_rlp::list_length(logs));
    alloy_rlp::encode_list(logs, &mut out);
    keccak256(out)
}

/// Storage trie root of one account (zero-valued slots are absent from the trie).
pub fn storage_root(account: &PlainAccount) -> B256 {
    storage_root_unhashed(
        account
            .storage
            .iter()
            .filter(|(_, v)| !v.is_zero())
            .map(|(k, v)| (B256::from(k.to_be_bytes::<32>()), *v)),
    )
}

/// State trie root of every existing account in `cache`.
pub fn state_root(cache: &CacheState) -> B256 {
    state_root_unhashed(cache.trie_account().into_iter().map(|(address, acc)| {
        (
            address,
            TrieAccount {
                nonce: acc.info.nonce,
                balance: acc.info.balance,
                storage_root: storage_root(acc),
                code_hash: acc.info.code_hash,
            },
        )
    }))
}

/// One account as the state trie sees it: nonce, balance, code hash, non-zero storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlatAccount {
    /// Nonce.
    pub nonce: u64,
    /// Balance.
    pub balance: U256,
    /// Code hash.
    pub code_hash: B256,
    /// Non-zero storage slots.
    pub storage: BTreeMap<U256, U256>,
}

impl FlatAccount {
    /// An account from its fields; zero-valued slots are dropped (they are not in the trie).
    pub fn new<'a>(
        nonce: u64,
        balance: U256,
        code_hash: B256,
        storage: impl IntoIterator<Item = (&'a U256, &'a U256)>,
    ) -> Self {
        Self {
            nonce,
            balance,
            code_hash,
            storage: storage
                .into_iter()
                .filter(|(_, v)| !v.is_zero())
                .map(|(k, v)| (*k, *v))
                .collect(),
        }
    }
}

/// The trie view of a post-state, ordered by address.
pub fn flatten(cache: &CacheState) -> BTreeMap<Address, FlatAccount> {
    cache
        .trie_account()
        .into_iter()
        .map(|(address, acc)| {
            (
                address,
                FlatAccount::new(
                    acc.info.nonce,
                    acc.info.balance,
                    acc.info.code_hash,
                    &acc.storage,
                ),
            )
        })
        .collect()
}

/// The first account or slot (in address, then slot order) where `expected` and `actual`
/// differ, described for a report; `None` when they are the same.
pub fn first_difference(
    expected: &BTreeMap<Address, FlatAccount>,
    actual: &BTreeMap<Address, FlatAccount>,
) -> Option<String> {
    let mut addresses: Vec<&Address> = expected.keys().chain(actual.keys()).collect();
    addresses.sort();
    addresses.dedup();
    for a in addresses {
        match (expected.get(a), actual.get(a)) {
            (Some(_), None) => return Some(format!("account {a}: exists in expected, missing")),
            (None, Some(_)) => return Some(format!("account {a}: missing in expected, exists")),
            (Some(e), Some(x)) => {
                if e.nonce != x.nonce {
                    return Some(format!("account {a}: nonce {} vs {}", e.nonce, x.nonce));
                }
                if e.balance != x.balance {
                    return Some(format!(
                        "account {a}: balance {} vs {}",
                        e.balance, x.balance
                    ));
                }
                if e.code_hash != x.code_hash {
                    return Some(format!(
                        "account {a}: code hash {} vs {}",
                        e.code_hash, x.code_hash
                    ));
                }
                let mut slots: Vec<&U256> = e.storage.keys().chain(x.storage.keys()).collect();
                slots.sort();
                slots.dedup();
                for s in slots {
                    let (ve, vx) = (
                        e.storage.get(s).copied().unwrap_or_default(),
                        x.storage.get(s).copied().unwrap_or_default(),
                    );
                    if ve != vx {
                        return Some(format!("account {a}: slot {s:#x}: {ve:#x} vs {vx:#x}"));
                    }
                }
            }
            (None, None) => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use revm::state::AccountInfo;

    #[test]
    fn empty_roots_are_the_well_known_constants() {
        // keccak256(rlp("")) and keccak256(rlp([])).
        let empty_trie: B256 = "0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421"
            .parse()
            .unwrap();
        let empty_list: B256 = "0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347"
            .parse()
            .unwrap();
        assert_eq!(state_root(&CacheState::new()), empty_trie);
        assert_eq!(logs_hash(&[]), empty_list);
    }

    #[test]
    fn zero_slots_do_not_change_the_root() {
        let mut a = CacheState::new();
        let mut b = CacheState::new();
        let info = AccountInfo {
            balance: U256::from(7),
            nonce: 1,
            ..Default::default()
        };
        let mut with_zero = revm::primitives::HashMap::default();
        with_zero.insert(U256::from(1), U256::from(2));
        let mut plain = with_zero.clone();
        with_zero.insert(U256::from(3), U256::ZERO);
        a.insert_account_with_storage(Address::ZERO, info.clone(), with_zero);
        b.insert_account_with_storage(Address::ZERO, info.clone(), plain.clone());
        assert_eq!(state_root(&a), state_root(&b));
        plain.insert(U256::from(3), U256::from(4));
        let mut c = CacheState::new();
        c.insert_account_with_storage(Address::ZERO, info, plain);
        assert_ne!(state_root(&a), state_root(&c));
        let d = first_difference(&flatten(&a), &flatten(&c)).unwrap();
        assert!(d.contains("slot 0x3"), "{d}");
    }
}
