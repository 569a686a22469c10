//! Prints the compile-time breakdown for hex-encoded bytecode files.
//!
//! `cargo run --release -p ember-compiler --example compile_time -- FILE.hex [OPT]`

use ember_compiler::{JitCompiler, OptLevel};
use revm::primitives::hardfork::SpecId;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: compile_time FILE.hex [OPT]");
    let opt: OptLevel = args
        .next()
        .map(|s| s.parse().expect("opt level"))
        .unwrap_or_default();
    let text = std::fs::read_to_string(&path).expect("read file");
    let code = hex::decode(text.trim().trim_start_matches("0x")).expect("hex");
    let mut c = JitCompiler::new(opt).expect("llvm");
    match c.compile(&code, SpecId::CANCUN) {
        Ok((_, s)) => println!(
            "{path}: {} bytes, {} blocks, {} sections: analysis {:?} codegen {:?} opt {:?} emit {:?} total {:?}",
            s.code_len, s.analysis.blocks, s.analysis.sections, s.analysis_time, s.codegen_time, s.opt_time, s.emit_time, s.total_time
        ),
        Err(e) => println!("{path}: error: {e}"),
    }
}
