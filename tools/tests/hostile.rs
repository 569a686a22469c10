//! Hostile inputs: maximum-size (24,576-byte) contracts built to stress the compiler (huge
//! numbers of jump targets and blocks, long straight-line stack code, random bytes). Each must
//! compile, or be refused with a clean `CompileError`, within [`COMPILE_BOUND`]; then it is run
//! once in both engines with a moderate gas limit and compared.
//!
//! Every program is compiled and run in a child process (this test binary re-run with
//! `EMBER_HOSTILE_WORKER` set), killed when it exceeds the bound, so a pathological compile is
//! reported as a failure instead of hanging the test or slowing the others. Compile times are
//! printed, with the worst.
//!
//! Programs in [`KNOWN_SLOW`] are skipped (and listed) unless `EMBER_HOSTILE_ALL=1`;
//! `EMBER_HOSTILE_DEADLINE=<seconds>` changes when a child is killed (default: bound + 30 s).

use ember_compiler::OptLevel;
use ember_tools::program::{Checker, Entry, SPECS};
use revm::bytecode::opcode as op;
use revm::primitives::hardfork::SpecId;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Largest deployable contract (EIP-170).
const SIZE: usize = 24_576;
/// Time allowed for one compilation.
const COMPILE_BOUND: Duration = Duration::from_secs(60);
/// Gas limit of the comparison run.
const GAS: u64 = 2_000_000;

/// Known compile-time problems, scoped out until fixed: (program name, opt level, what).
/// These are skipped unless `EMBER_HOSTILE_ALL=1`. Every entry names a reported bug; remove it
/// when the bug is fixed.
const KNOWN_SLOW: &[(&str, OptLevel, &str)] = &[];

/// Environment variable that turns the `hostile_worker` test into the child process.
const WORKER_ENV: &str = "EMBER_HOSTILE_WORKER";

/// Deterministic pseudo-random bytes (splitmix64).
fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut s = seed;
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        v.extend_from_slice(&z.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// Repeats `unit` to exactly `SIZE` bytes (a unit cut short at the end stays as it is: a
/// truncated PUSH immediate is legal).
fn repeat(unit: &[u8]) -> Vec<u8> {
    unit.iter().copied().cycle().take(SIZE).collect()
}

fn programs() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = Vec::new();
    v.push(("jumpdest x24576".into(), vec![op::JUMPDEST; SIZE]));
    v.push((
        "PUSH1 0 JUMP (invalid target) x8192".into(),
        repeat(&[op::PUSH1, 0, op::JUMP]),
    ));
    v.push((
        "JUMPDEST PUSH1 0 JUMP (loop to 0) x6144".into(),
        repeat(&[op::JUMPDEST, op::PUSH1, 0, op::JUMP]),
    ));
    // Every block jumps to the next one: 4915 blocks in a chain.
    let mut chain = Vec::with_capacity(SIZE);
    while chain.len() + 5 <= SIZE {
        let next = (chain.len() + 5) as u16;
        chain.extend_from_slice(&[
            op::JUMPDEST,
            op::PUSH2,
            (next >> 8) as u8,
            next as u8,
            op::JUMP,
        ]);
    }
    chain.resize(SIZE, op::JUMPDEST);
    v.push(("JUMPDEST PUSH2 next JUMP chain".into(), chain));
    // Every block jumps back to the previous one (the first to itself): a loop at the start.
    let mut back = Vec::with_capacity(SIZE);
    while back.len() + 5 <= SIZE {
        let prev = back.len().saturating_sub(5) as u16;
        back.extend_from_slice(&[
            op::JUMPDEST,
            op::PUSH2,
            (prev >> 8) as u8,
            prev as u8,
            op::JUMP,
        ]);
    }
    back.resize(SIZE, op::JUMPDEST);
    v.push(("JUMPDEST PUSH2 prev JUMP chain".into(), back));
    v.push((
        "PUSH1 x JUMPI (underflow) x8192".into(),
        repeat(&[op::PUSH1, 0x5b, op::JUMPI]),
    ));
    // Conditional branches (not taken) to pseudo-random JUMPDESTs all over the code.
    let mut br = Vec::with_capacity(SIZE);
    let targets = random_bytes(7, SIZE);
    let unit = 7;
    let blocks = SIZE / unit;
    for i in 0..blocks {
        let t = (u16::from_le_bytes([targets[2 * i], targets[2 * i + 1]]) as usize % blocks * unit)
            as u16;
        br.extend_from_slice(&[
            op::JUMPDEST,
            op::PUSH1,
            0,
            op::PUSH2,
            (t >> 8) as u8,
            t as u8,
            op::JUMPI,
        ]);
    }
    br.resize(SIZE, op::JUMPDEST);
    v.push(("JUMPDEST PUSH1 0 PUSH2 random JUMPI x3510".into(), br));
    // The same with taken branches (condition CALLVALUE... is 0; use GAS, never 0).
    let mut taken = Vec::with_capacity(SIZE);
    for i in 0..blocks {
        let t = (u16::from_le_bytes([targets[2 * i + 1], targets[2 * i]]) as usize % blocks * unit)
            as u16;
        taken.extend_from_slice(&[
            op::JUMPDEST,
            op::GAS,
            op::PUSH2,
            (t >> 8) as u8,
            t as u8,
            op::JUMPI,
            op::JUMPDEST,
        ]);
    }
    taken.resize(SIZE, op::JUMPDEST);
    v.push(("JUMPDEST GAS PUSH2 random JUMPI x3510".into(), taken));
    // Deep DUP chains: 16 items, then DUP16 until the end (overflows at 1024 items).
    let mut dups = [op::PUSH1, 1].repeat(16);
    dups.resize(SIZE, op::DUP16);
    v.push(("PUSH1 x16 then DUP16 x24544".into(), dups));
    // DUP/POP pairs: the stack stays at 16 items for 12k instructions.
    let mut duppop = [op::PUSH1, 1].repeat(16);
    while duppop.len() + 2 <= SIZE {
        duppop.extend_from_slice(&[op::DUP16, op::POP]);
    }
    duppop.resize(SIZE, op::STOP);
    v.push(("PUSH1 x16 then (DUP16 POP) x12272".into(), duppop));
    // SWAP chains: 17 items, then SWAP16 until the end.
    let mut swaps = [op::PUSH1, 1].repeat(17);
    swaps.resize(SIZE, op::SWAP16);
    v.push(("PUSH1 x17 then SWAP16 x24542".into(), swaps));
    // Straight-line constant pushes with arithmetic: (PUSH1 c, ADD).
    let mut adds = vec![op::PUSH1, 1];
    while adds.len() + 3 <= SIZE {
        adds.extend_from_slice(&[op::PUSH1, 3, op::ADD]);
    }
    adds.resize(SIZE, op::STOP);
    v.push(("PUSH1 1 then (PUSH1 3 ADD) x8191".into(), adds));
    // Only PC: constant pushes until overflow.
    v.push(("PC x24576".into(), vec![op::PC; SIZE]));
    // Memory: MSTORE/MLOAD on constant offsets.
    let mut mem = Vec::new();
    let mut i = 0u16;
    while mem.len() + 8 <= SIZE {
        mem.extend_from_slice(&[op::PUSH1, 7, op::PUSH2, (i >> 8) as u8, i as u8, op::MSTORE]);
        i = i.wrapping_add(32) % 0x2000;
    }
    mem.resize(SIZE, op::STOP);
    v.push(("(PUSH1 7 PUSH2 off MSTORE) x4096".into(), mem));
    for seed in [1u64, 2, 3, 0xdead_beef] {
        let mut r = random_bytes(seed, SIZE);
        if r[0] == 0xef {
            r[0] = op::JUMPDEST;
        }
        v.push((format!("random bytes seed {seed}"), r));
    }
    // Random bytes, mostly JUMPDEST and JUMP/JUMPI: a dense, irregular jump graph.
    let mut dense = random_bytes(99, SIZE);
    for b in dense.iter_mut() {
        *b = match *b % 8 {
            0..=2 => op::JUMPDEST,
            3 => op::JUMP,
            4 => op::JUMPI,
            5 => op::PC,
            6 => op::DUP1,
            _ => op::PUSH1,
        };
    }
    v.push(("random JUMPDEST/JUMP/JUMPI/PC/DUP1/PUSH1".into(), dense));
    // Deep but legal stacks in one long block: 1008 constants (or DUPs) pushed then popped,
    // again and again (no overflow, so nothing can be cut short).
    let mut pcpop = Vec::new();
    while pcpop.len() + 2016 <= SIZE {
        pcpop.extend([op::PC].repeat(1008));
        pcpop.extend([op::POP].repeat(1008));
    }
    v.push(("(PC x1008 then POP x1008) x12".into(), pcpop));
    let mut duppop = [op::PUSH1, 1].repeat(16);
    while duppop.len() + 2000 <= SIZE {
        duppop.extend([op::DUP16].repeat(1000));
        duppop.extend([op::POP].repeat(1000));
    }
    v.push((
        "PUSH1 x16 then (DUP16 x1000 then POP x1000) x12".into(),
        duppop,
    ));
    // Just under 3000 blocks (the compiler drops to O0 above some number of sections).
    v.push(("jumpdest x2900".into(), vec![op::JUMPDEST; 2900]));
    let mut chain = Vec::new();
    for _ in 0..2900 {
        let next = (chain.len() + 5) as u16;
        chain.extend_from_slice(&[
            op::JUMPDEST,
            op::PUSH2,
            (next >> 8) as u8,
            next as u8,
            op::JUMP,
        ]);
    }
    v.push(("JUMPDEST PUSH2 next JUMP chain x2900".into(), chain));
    let mut br = Vec::new();
    for i in 0..2900usize {
        let t = ((i * 7919) % 2900 * 7) as u16;
        br.extend_from_slice(&[
            op::JUMPDEST,
            op::GAS,
            op::PUSH2,
            (t >> 8) as u8,
            t as u8,
            op::JUMPI,
            op::JUMPDEST,
        ]);
    }
    v.push(("JUMPDEST GAS PUSH2 random JUMPI x2900".into(), br));
    // Stack overflow inside one block of constant pushes or DUPs (these once wrote past the
    // 1024-word stack: heap corruption, "double free or corruption"), statically and after a
    // loop has filled part of the stack.
    v.push(("PUSH1 1 x1025".into(), [op::PUSH1, 1].repeat(1025)));
    let mut dup1 = vec![op::CALLDATASIZE];
    dup1.resize(1025, op::DUP1);
    v.push(("CALLDATASIZE then DUP1 x1024".into(), dup1));
    for fill in [500u16, 1000, 1023] {
        // PUSH2 fill; loop: JUMPDEST PC SWAP1 PUSH1 1 SWAP1 SUB DUP1 PUSH2 loop JUMPI; POP
        let mut f = vec![op::PUSH2, (fill >> 8) as u8, fill as u8];
        f.extend_from_slice(&[
            op::JUMPDEST,
            op::PC,
            op::SWAP1,
            op::PUSH1,
            1,
            op::SWAP1,
            op::SUB,
        ]);
        f.extend_from_slice(&[op::DUP1, op::PUSH2, 0, 3, op::JUMPI, op::POP]);
        let mut pushes = f.clone();
        pushes.extend([op::PUSH1, 1].repeat(600));
        v.push((format!("loop-fill {fill} then PUSH1 1 x600"), pushes));
        f.push(op::CALLDATASIZE);
        f.extend([op::DUP1].repeat(600));
        v.push((format!("loop-fill {fill} then CALLDATASIZE DUP1 x600"), f));
    }
    v
}

/// What happened to one program.
struct Report {
    compile: Duration,
    outcome: Result<(), String>,
}

fn check_one(code: &[u8], spec: SpecId, opt: OptLevel) -> Report {
    let t = Instant::now();
    let checker = match Checker::new(code, spec, opt) {
        Ok(c) => c,
        Err(e) => {
            return Report {
                compile: t.elapsed(),
                outcome: Err(format!("refused: {e}")),
            }
        }
    };
    let compile = t.elapsed();
    let outcome = match checker.check(&[], GAS, Entry::Direct) {
        Ok(_) => Ok(()),
        Err(d) => Err(format!(
            "DIFF {} | {}",
            d.trim_end(),
            checker.repro(&[], GAS, Entry::Direct)
        )),
    };
    Report { compile, outcome }
}

/// The child process: runs the job in `WORKER_ENV` ("program index:spec index:opt level") and
/// prints one `HOSTILE-RESULT <compile seconds> <outcome>` line. A no-op in a normal test run.
#[test]
fn hostile_worker() {
    let Ok(job) = std::env::var(WORKER_ENV) else {
        return;
    };
    let parts: Vec<&str> = job.split(':').collect();
    let program = programs().swap_remove(parts[0].parse().unwrap());
    let spec = SPECS[parts[1].parse::<usize>().unwrap()];
    let opt: OptLevel = parts[2].parse().unwrap();
    let r = check_one(&program.1, spec, opt);
    let outcome = match r.outcome {
        Ok(()) => "identical".to_string(),
        Err(e) => e.replace('\n', " | "),
    };
    println!("HOSTILE-RESULT {} {outcome}", r.compile.as_secs_f64());
}

/// Runs program `index` in a child process; `None` when it was killed at the deadline.
fn run_child(
    index: usize,
    spec: SpecId,
    opt: OptLevel,
    deadline: Duration,
) -> Option<(f64, String)> {
    let spec_index = SPECS.iter().position(|s| *s == spec).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "hostile_worker",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WORKER_ENV, format!("{index}:{spec_index}:{opt:?}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the worker");
    // Drain both pipes while the child runs (a full pipe would block it).
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let t = Instant::now();
    let status = loop {
        match child.try_wait().expect("wait for the worker") {
            Some(status) => break status,
            None if t.elapsed() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    // libtest prints "test hostile_worker ... " on the same line first.
    let line = out
        .lines()
        .find_map(|l| l.split_once("HOSTILE-RESULT ").map(|(_, r)| r));
    let Some(line) = line else {
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default();
        return Some((0.0, format!("worker crashed ({status}): {last}")));
    };
    let (secs, outcome) = line.split_once(' ').unwrap_or((line, ""));
    Some((secs.parse().unwrap_or(0.0), outcome.to_string()))
}

fn run_hostile(spec: SpecId, opt: OptLevel) {
    let all = std::env::var("EMBER_HOSTILE_ALL").is_ok_and(|v| v == "1");
    // The bound plus time for the comparison run; `EMBER_HOSTILE_DEADLINE` (seconds) raises it
    // to measure how slow a known-slow program really is.
    let deadline = std::env::var("EMBER_HOSTILE_DEADLINE")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(COMPILE_BOUND + Duration::from_secs(30), Duration::from_secs);
    let mut failures = Vec::new();
    let mut worst = (0.0, String::new());
    for (index, (name, code)) in programs().into_iter().enumerate() {
        assert!(code.len() <= SIZE, "{name} is {} bytes", code.len());
        let known = KNOWN_SLOW.iter().find(|(n, o, _)| *n == name && *o == opt);
        if let (Some((_, _, what)), false) = (known, all) {
            eprintln!("{spec:?} {opt:?} {name}: skipped, known slow ({what})");
            continue;
        }
        let Some((secs, outcome)) = run_child(index, spec, opt, deadline) else {
            eprintln!("{spec:?} {opt:?} {name}: killed after {deadline:?}");
            if known.is_none() {
                failures.push(format!(
                    "{name}: not done after {deadline:?} (compile bound {COMPILE_BOUND:?})"
                ));
            }
            continue;
        };
        eprintln!(
            "{spec:?} {opt:?} {name}: compile {secs:.3} s, {}",
            outcome.chars().take(300).collect::<String>()
        );
        if secs > worst.0 {
            worst = (secs, name.clone());
        }
        if secs > COMPILE_BOUND.as_secs_f64() && known.is_none() {
            failures.push(format!(
                "{name}: compile took {secs:.1} s (bound {COMPILE_BOUND:?})"
            ));
        }
        if outcome == "identical" {
            continue;
        }
        // A clean CompileError refusal is acceptable (and printed); anything else is not.
        if outcome.starts_with("refused: compile error:") {
            continue;
        }
        failures.push(format!("{name}: {outcome}"));
    }
    eprintln!(
        "{spec:?} {opt:?}: worst compile {:.3} s ({})",
        worst.0, worst.1
    );
    assert!(
        failures.is_empty(),
        "{} hostile-input failures ({spec:?}, {opt:?}):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn hostile_osaka_o2() {
    run_hostile(SpecId::OSAKA, OptLevel::O2);
}

#[test]
fn hostile_frontier_o0() {
    run_hostile(SpecId::FRONTIER, OptLevel::O0);
}

/// The harness reports results (a tiny program, in-process).
#[test]
fn hostile_harness_sanity() {
    let r = check_one(&[op::PUSH1, 1, op::STOP], SpecId::CANCUN, OptLevel::O0);
    assert!(r.outcome.is_ok(), "{:?}", r.outcome);
}
