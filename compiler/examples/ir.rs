//! Prints optimised IR for a hex file: `ir FILE.hex [OPT]`.
use ember_compiler::OptLevel;
use revm::primitives::hardfork::SpecId;
fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: ir FILE.hex [OPT]");
    let opt: OptLevel = args
        .next()
        .map(|s| s.parse().expect("opt level"))
        .unwrap_or_default();
    let text = std::fs::read_to_string(&path).expect("read file");
    let code = hex::decode(text.trim().trim_start_matches("0x")).expect("hex");
    print!(
        "{}",
        ember_compiler::jit::emit_ir(&code, SpecId::CANCUN, opt).expect("compile")
    );
}
