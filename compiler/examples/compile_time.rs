//! Prints the compile-time breakdown for bytecode.
//!
//! `cargo run --release -p ember-compiler --example compile_time -- FILE [OPT]`
//!
//! FILE holds one hex-encoded contract per line (a single-contract `.hex` file works too).
//! With more than one contract, prints the 25 slowest and the totals.

use ember_compiler::{JitCompiler, OptLevel};
use revm::primitives::hardfork::SpecId;
use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: compile_time FILE [OPT]");
    let opt: OptLevel = args
        .next()
        .map(|s| s.parse().expect("opt level"))
        .unwrap_or_default();
    let text = std::fs::read_to_string(&path).expect("read file");
    let codes: Vec<Vec<u8>> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| hex::decode(l.trim_start_matches("0x")).expect("hex"))
        .collect();
    let mut c = JitCompiler::new(opt).expect("llvm");
    let mut rows = Vec::new();
    let mut total = Duration::ZERO;
    for (i, code) in codes.iter().enumerate() {
        match c.compile(code, SpecId::CANCUN) {
            Ok((_, s)) => {
                total += s.total_time;
                rows.push((s.total_time, format!(
                    "#{i}: {} bytes, {} blocks, {} sections: analysis {:?} codegen {:?} opt {:?} emit {:?} total {:?}",
                    s.code_len, s.analysis.blocks, s.analysis.sections, s.analysis_time, s.codegen_time, s.opt_time, s.emit_time, s.total_time
                )));
            }
            Err(e) => println!("#{i}: error: {e}"),
        }
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.0));
    let all = args.next().is_some_and(|a| a == "all");
    for (_, r) in rows.iter().take(if all { usize::MAX } else { 25 }) {
        println!("{r}");
    }
    if codes.len() > 1 {
        println!("{} contracts, total {total:?}", rows.len());
    }
}
