//! Inputs of `ember compile` and the AOT helpers the other commands share.
//!
//! An input is a hex or binary bytecode file, a `{ "<code hash>": "0x<code>" }` map (the format
//! of `../shared/mainnet/bytecodes.json`), any JSON test or fixture file (every `code` of every
//! account in every `pre` object: revmc fixtures, GeneralStateTests, BlockchainTests), or a
//! directory searched recursively for `*.json`, `*.hex` and `*.bin` files.

use ember_compiler::aot::{build_library, AotContract, AotOptions, LibraryReport};
use ember_runtime::aot::HostTarget;
use ember_runtime::AotLibrary;
use indicatif::{ProgressBar, ProgressStyle};
use revm::primitives::{hardfork::SpecId, keccak256, B256};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Contracts read from the inputs, with what was noticed on the way.
#[derive(Debug, Default)]
pub struct Inputs {
    /// Bytecode, in input order (duplicates kept; the compiler removes them).
    pub codes: Vec<Vec<u8>>,
    /// Non-fatal findings (a code-hash map entry whose hash does not match its code).
    pub warnings: Vec<String>,
    /// Files read.
    pub files: usize,
}

/// Reads every contract named by `paths` (see the module docs). Errors name the file.
pub fn read_inputs(paths: &[PathBuf]) -> Result<Inputs, String> {
    let mut out = Inputs::default();
    for p in paths {
        if p.is_dir() {
            let mut files = Vec::new();
            walk(p, &mut files).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            files.sort();
            if files.is_empty() {
                return Err(format!(
                    "{}: no *.json, *.hex or *.bin files in this directory",
                    p.display()
                ));
            }
            for f in files {
                read_file(&f, &mut out)?;
            }
        } else {
            read_file(p, &mut out)?;
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "json" | "hex" | "bin"))
        {
            out.push(p);
        }
    }
    Ok(())
}

fn read_file(path: &Path, out: &mut Inputs) -> Result<(), String> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {name}: {e}"))?;
    out.files += 1;
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        || bytes.trim_ascii_start().starts_with(b"{");
    if !is_json {
        let arg = path
            .to_str()
            .ok_or_else(|| format!("{name}: path is not UTF-8"))?;
        for c in crate::input::read_code(arg)? {
            out.codes.push(c.code);
        }
        return Ok(());
    }
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{name}: not valid JSON: {e}"))?;
    let before = out.codes.len();
    if let Some(map) = code_hash_map(&v) {
        for (key, hex) in map {
            let code =
                crate::input::decode_hex(hex).map_err(|e| format!("{name}: entry {key}: {e}"))?;
            let actual = keccak256(&code);
            if actual != key {
                out.warnings.push(format!(
                    "{name}: entry {key} holds code whose keccak256 is {actual}; compiled under \
                     its real hash"
                ));
            }
            out.codes.push(code);
        }
    } else {
        collect_pre_codes(&v, &name, &mut out.codes)?;
    }
    if out.codes.len() == before {
        return Err(format!(
            "{name}: no contract code found (expected a {{code_hash: code}} map or accounts \
             with code in a `pre` object)"
        ));
    }
    Ok(())
}

/// `Some` when `v` is a non-empty object mapping 32-byte hashes to strings.
fn code_hash_map(v: &Value) -> Option<Vec<(B256, &str)>> {
    let obj = v.as_object().filter(|o| !o.is_empty())?;
    obj.iter()
        .map(|(k, v)| Some((k.parse::<B256>().ok()?, v.as_str()?)))
        .collect()
}

/// Every non-empty `code` of every account in every `pre` object under `v`.
fn collect_pre_codes(v: &Value, name: &str, out: &mut Vec<Vec<u8>>) -> Result<(), String> {
    match v {
        Value::Object(o) => {
            for (k, child) in o {
                if k == "pre" {
                    if let Some(accounts) = child.as_object() {
                        for (addr, acc) in accounts {
                            if let Some(code) = acc.get("code").and_then(Value::as_str) {
                                let code = crate::input::decode_hex(code)
                                    .map_err(|e| format!("{name}: code of {addr}: {e}"))?;
                                if !code.is_empty() {
                                    out.push(code);
                                }
                            }
                        }
                        continue;
                    }
                }
                collect_pre_codes(child, name, out)?;
            }
        }
        Value::Array(a) => {
            for child in a {
                collect_pre_codes(child, name, out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The host description used to verify libraries in this process: exact CPU features from
/// LLVM (this tool links it).
pub fn host() -> HostTarget {
    match ember_compiler::aot::host_cpu_features() {
        Ok(f) => HostTarget::with_llvm_features(&f),
        Err(_) => HostTarget::default(),
    }
}

/// A progress bar for `total` contracts (hidden when `show` is false).
pub fn progress_bar(total: usize, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(total as u64);
    b.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} contracts compiled ({eta} left)",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    b
}

/// Compiles `codes` for `spec` into a library at `out` and loads it back (verified).
pub fn build_and_load(
    contracts: &[AotContract],
    opts: &AotOptions,
    out: &Path,
    progress: bool,
) -> Result<(LibraryReport, AotLibrary), String> {
    let bar = progress_bar(contracts.len(), progress);
    let report = build_library(contracts, opts, out, &|n| bar.set_position(n as u64))
        .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    let lib = AotLibrary::load(out, &host()).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok((report, lib))
}

/// One contract per code, all for `spec`.
pub fn contracts_for(codes: &[Vec<u8>], spec: SpecId) -> Vec<AotContract> {
    codes
        .iter()
        .map(|c| AotContract {
            code: c.clone(),
            spec,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_maps_fixtures_and_hex() {
        let dir = std::env::temp_dir().join(format!("ember-aot-inputs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let code = vec![0x60, 0x01, 0x00];
        let map = dir.join("codes.json");
        std::fs::write(
            &map,
            format!(
                "{{\"{}\": \"0x600100\", \"{}\": \"0x6002\"}}",
                keccak256(&code),
                B256::ZERO
            ),
        )
        .unwrap();
        let fx = dir.join("fx.json");
        std::fs::write(
            &fx,
            r#"{"t": {"pre": {"0x01": {"code": "0x6003"}, "0x02": {"code": "0x"}}, "env": {}}}"#,
        )
        .unwrap();
        let hex = dir.join("c.hex");
        std::fs::write(&hex, "0x6004").unwrap();
        let r = read_inputs(std::slice::from_ref(&dir)).unwrap();
        assert_eq!(r.files, 3);
        assert_eq!(r.codes.len(), 4);
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
        let bad = dir.join("bad.json");
        std::fs::write(&bad, "{\"x\": 1}").unwrap();
        assert!(read_inputs(std::slice::from_ref(&bad))
            .unwrap_err()
            .contains("no contract code"));
        std::fs::write(&bad, "{not json").unwrap();
        assert!(read_inputs(&[bad]).unwrap_err().contains("not valid JSON"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
