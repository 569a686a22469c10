//! Reading bytecode given on the command line: a hex string (with or without `0x`), a file
//! holding hex, a binary file, a fixture JSON file (every contract in its pre-state), or `-`
//! for standard input.

use crate::fixture::Fixture;
use std::io::Read;
use std::path::Path;

/// One piece of bytecode to work on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeInput {
    /// Where it came from (empty for a single code; the address list for fixture contracts).
    pub label: String,
    /// The bytecode.
    pub code: Vec<u8>,
}

/// Decodes hex text: surrounding and embedded ASCII whitespace is ignored, a `0x`/`0X` prefix is
/// optional. Errors name the offending character or the odd digit count.
pub fn decode_hex(text: &str) -> Result<Vec<u8>, String> {
    let t = text.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    let digits: String = t.chars().filter(|c| !c.is_whitespace()).collect();
    if let Some((i, c)) = digits
        .chars()
        .enumerate()
        .find(|(_, c)| !c.is_ascii_hexdigit())
    {
        return Err(format!("invalid hex character {c:?} at digit {i}"));
    }
    if !digits.len().is_multiple_of(2) {
        return Err(format!("odd number of hex digits ({})", digits.len()));
    }
    hex::decode(&digits).map_err(|e| e.to_string())
}

/// Whether file contents should be read as hex text rather than raw bytes: a `0x` prefix, or
/// nothing but hex digits and whitespace.
fn looks_like_hex(bytes: &[u8]) -> bool {
    let t = bytes.trim_ascii();
    if t.starts_with(b"0x") || t.starts_with(b"0X") {
        return true;
    }
    !t.is_empty()
        && t.iter()
            .all(|b| b.is_ascii_hexdigit() || b.is_ascii_whitespace())
}

fn from_contents(name: &str, bytes: Vec<u8>) -> Result<Vec<CodeInput>, String> {
    if looks_like_hex(&bytes) {
        let text =
            std::str::from_utf8(&bytes).map_err(|_| format!("{name}: not valid UTF-8 hex"))?;
        let code = decode_hex(text).map_err(|e| format!("{name}: {e}"))?;
        return Ok(vec![CodeInput {
            label: String::new(),
            code,
        }]);
    }
    Ok(vec![CodeInput {
        label: String::new(),
        code: bytes,
    }])
}

fn from_fixture(path: &Path) -> Result<Vec<CodeInput>, String> {
    let fx = Fixture::load(path).map_err(|e| e.to_string())?;
    if fx.codes.is_empty() {
        return Err(format!(
            "{}: no contract code in the fixture's pre-state",
            path.display()
        ));
    }
    Ok(fx
        .codes
        .iter()
        .map(|c| {
            let addrs: Vec<String> = fx.addresses_of(c).iter().map(|a| a.to_string()).collect();
            CodeInput {
                label: addrs.join(", "),
                code: c.to_vec(),
            }
        })
        .collect())
}

/// Reads the bytecode named by `arg` (see the module docs). Errors are one line.
pub fn read_code(arg: &str) -> Result<Vec<CodeInput>, String> {
    if arg == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        return from_contents("standard input", bytes);
    }
    if arg.trim().is_empty() {
        return Err("empty bytecode argument (give hex, a file, or -)".into());
    }
    let path = Path::new(arg);
    if path.is_dir() {
        return Err(format!("{arg} is a directory, not bytecode"));
    }
    if path.is_file() {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {arg}: {e}"))?;
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
            || bytes.trim_ascii_start().starts_with(b"{");
        if is_json {
            return from_fixture(path);
        }
        return from_contents(arg, bytes);
    }
    match decode_hex(arg) {
        Ok(code) => Ok(vec![CodeInput {
            label: String::new(),
            code,
        }]),
        Err(hex_err) => {
            let path_like = arg.contains(['/', '\\', '.']) || arg.is_empty();
            if path_like {
                Err(format!("cannot read {arg}: no such file"))
            } else {
                Err(format!(
                    "{arg:?} is neither a file nor hex bytecode: {hex_err}"
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_forms() {
        assert_eq!(decode_hex("0x6001").unwrap(), vec![0x60, 0x01]);
        assert_eq!(decode_hex(" 60 01\n").unwrap(), vec![0x60, 0x01]);
        assert_eq!(decode_hex("0X").unwrap(), Vec::<u8>::new());
        assert!(decode_hex("0x600").unwrap_err().contains("odd"));
        assert!(decode_hex("60zz").unwrap_err().contains("'z'"));
    }

    #[test]
    fn argument_forms() {
        assert_eq!(read_code("6001").unwrap()[0].code, vec![0x60, 0x01]);
        assert!(read_code("/nonexistent/x.bin")
            .unwrap_err()
            .contains("cannot read"));
        assert!(read_code("hello").unwrap_err().contains("neither"));
        let dir = std::env::temp_dir().join(format!("ember-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let hexf = dir.join("c.hex");
        std::fs::write(&hexf, "0x6001600101\n").unwrap();
        assert_eq!(
            read_code(hexf.to_str().unwrap()).unwrap()[0].code,
            vec![0x60, 0x01, 0x60, 0x01, 0x01]
        );
        let bin = dir.join("c.bin");
        std::fs::write(&bin, [0x60, 0x01, 0x00]).unwrap();
        assert_eq!(
            read_code(bin.to_str().unwrap()).unwrap()[0].code,
            vec![0x60, 0x01, 0x00]
        );
        let odd = dir.join("odd.hex");
        std::fs::write(&odd, "0x601").unwrap();
        assert!(read_code(odd.to_str().unwrap())
            .unwrap_err()
            .contains("odd"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
