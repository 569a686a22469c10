//! Regression tests for JIT/interpreter divergences found by the opcode and differential
//! tests; each case is the minimal reproduction that exposed the bug.

use ember_compiler::OptLevel;
use ember_tools::program::{compare, compare_entry, Entry};
use revm::primitives::hardfork::SpecId;

fn check(code_hex: &str, spec: SpecId, gas: u64, entry: Entry) {
    let code = hex::decode(code_hex).unwrap();
    for opt in [OptLevel::O0, OptLevel::O2] {
        if let Err(d) = compare_entry(&code, &[], spec, gas, opt, entry) {
            panic!("divergence at {opt:?}:\n{d}");
        }
    }
}

/// D1: CALL/CREATE as the last instruction; the frame resumes at the end of code (STOP).
#[test]
fn suspend_as_last_instruction_resumes_into_stop() {
    check("600060006000f0", SpecId::CANCUN, 1_000_000, Entry::Direct); // CREATE
    check(
        "6000600060006000600060006000f1",
        SpecId::CANCUN,
        1_000_000,
        Entry::Direct,
    ); // CALL
    check(
        "600060006000600060006000fa",
        SpecId::CANCUN,
        1_000_000,
        Entry::Direct,
    ); // STATICCALL
}

/// D2: LOGn with only offset/length on the stack: revm charges the (failing) memory cost
/// before it pops the topics, so the halt is OutOfGas, not StackUnderflow.
#[test]
fn log_pops_topics_after_charging() {
    let max = "7f".to_string() + &"ff".repeat(32);
    for log in ["a1", "a2", "a3", "a4"] {
        check(
            &format!("{max}{max}{log}"),
            SpecId::CANCUN,
            1_000_000,
            Entry::Direct,
        );
    }
    // Enough gas and memory, still short of topics: StackUnderflow after the charge.
    check("60206000a2", SpecId::CANCUN, 1_000_000, Entry::Direct);
}

/// D3: CREATE2 with three operands: revm meters the init code before popping the salt.
#[test]
fn create2_pops_salt_after_metering() {
    let max = "7f".to_string() + &"ff".repeat(32);
    check(
        &format!("{max}{max}{max}f5"),
        SpecId::CANCUN,
        1_000_000,
        Entry::Direct,
    );
    check("600060006000f5", SpecId::CANCUN, 1_000_000, Entry::Direct);
}

/// CALL with a value inside a static call and only three operands: revm reports the static
/// violation before popping the memory ranges.
#[test]
fn call_value_in_static_context_before_ranges() {
    check("600160016001f1", SpecId::CANCUN, 1_000_000, Entry::Static);
}

#[test]
fn plain_compare_smoke() {
    compare(
        &[0x60, 0x01, 0x60, 0x02, 0x01, 0x00],
        &[],
        SpecId::CANCUN,
        100_000,
        OptLevel::O0,
    )
    .unwrap();
}
