//! Bytecode analysis: decode, basic blocks, gas/stack sections, static jump resolution and
//! reachability.
//!
//! What it proves, and the code generator relies on:
//! - every block starts at pc 0, at a JUMPDEST, or right after a JUMP/JUMPI/terminating/
//!   suspending instruction, so a resumed frame (pc after CALL/CREATE) enters at a block start;
//! - a *section* is a run of instructions in which only the last may charge dynamic gas or halt
//!   for its own reasons; its static gas and stack bounds are checked once at its start, and a
//!   failed check is resolved op by op at run time (`section_fail`), so halt reasons are exactly
//!   the interpreter's;
//! - a jump whose target is a constant within its block (pushed, or computed from pushed
//!   constants through DUP/SWAP/POP and simple arithmetic) is resolved to a block, or to an
//!   invalid-jump halt; every other jump goes through the checked dynamic dispatch.

use ember_runtime::opcodes::{self, OpClass};
use revm::bytecode::opcode as op;
use revm::primitives::{hardfork::SpecId, U256};
use std::fmt;

/// One decoded instruction.
#[derive(Clone, Debug)]
pub struct Inst {
    /// Program counter.
    pub pc: u32,
    /// Opcode byte.
    pub op: u8,
    /// Immediate value of a PUSH (zero-padded on the right when truncated by the end of code,
    /// exactly as revm's padded bytecode reads it).
    pub imm: U256,
    /// How it is compiled in this spec.
    pub class: OpClass,
    /// Static gas in this spec.
    pub gas: u64,
    /// Stack inputs and outputs (0/0 for inactive opcodes).
    pub io: (u8, u8),
}

/// A gas/stack section: instructions `[first, last]`.
#[derive(Clone, Debug)]
pub struct Section {
    /// Index of the first instruction.
    pub first: usize,
    /// Index of the last instruction (inclusive).
    pub last: usize,
    /// Sum of static gas.
    pub gas: u64,
    /// Minimum stack height required at entry.
    pub stack_req: u64,
    /// Maximum height reached above the entry height (may be negative).
    pub stack_max: i64,
    /// Net stack change.
    pub stack_diff: i64,
}

/// Where a jump goes, as far as analysis can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JumpTarget {
    /// A constant target that is a valid JUMPDEST: the index of its block.
    Block(usize),
    /// A constant target that is not a valid JUMPDEST: the jump halts with InvalidJump.
    Invalid,
    /// Not known statically: checked dispatch at run time.
    Dynamic,
}

/// How a block ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Terminator {
    /// Falls through into the next block.
    Fallthrough,
    /// Unconditional jump.
    Jump(JumpTarget),
    /// Conditional jump; otherwise falls through.
    JumpI(JumpTarget),
    /// Halts the frame (STOP, RETURN, REVERT, INVALID, SELFDESTRUCT, unknown/inactive opcode).
    Halt,
    /// CALL/CREATE family: suspends, then continues at the next block.
    Suspend,
}

/// A basic block.
#[derive(Clone, Debug)]
pub struct Block {
    /// Index of the first instruction.
    pub first: usize,
    /// Index of the last instruction (inclusive).
    pub last: usize,
    /// Sections, in order.
    pub sections: Vec<Section>,
    /// How the block ends.
    pub term: Terminator,
    /// Reachable from the entry, a resume point or (if any dynamic jump is reachable) dispatch.
    pub reachable: bool,
}

/// The result of analysing one contract for one spec.
#[derive(Clone, Debug)]
pub struct Analysis {
    /// The spec analysed for.
    pub spec: SpecId,
    /// Length of the bytecode.
    pub code_len: usize,
    /// Decoded instructions.
    pub insts: Vec<Inst>,
    /// Basic blocks, in pc order.
    pub blocks: Vec<Block>,
    /// Block index of each JUMPDEST pc (sorted by pc).
    pub jumpdests: Vec<(u32, usize)>,
    /// Whether any reachable jump needs the dynamic dispatch.
    pub has_dynamic_jumps: bool,
}

/// Counters describing an analysis.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnalysisStats {
    /// Instructions decoded.
    pub instructions: usize,
    /// Basic blocks.
    pub blocks: usize,
    /// Blocks proven unreachable (not compiled).
    pub unreachable_blocks: usize,
    /// Gas/stack sections.
    pub sections: usize,
    /// Jumps resolved to a block at compile time.
    pub static_jumps: usize,
    /// Jumps resolved to an invalid destination at compile time.
    pub invalid_jumps: usize,
    /// Jumps through the dynamic dispatch.
    pub dynamic_jumps: usize,
    /// Instructions lowered inline.
    pub inline_ops: usize,
    /// Instructions executed through the `op` builtin (revm's instruction semantics).
    pub builtin_ops: usize,
    /// JUMPDESTs.
    pub jumpdests: usize,
}

/// A tiny abstract value for jump resolution.
#[derive(Clone, Copy, Debug)]
enum AVal {
    Const(U256),
    Unknown,
}

impl Analysis {
    /// Analyses legacy `code` for `spec`.
    pub fn new(code: &[u8], spec: SpecId) -> Self {
        let insts = decode(code, spec);
        let jump_table = jumpdest_bitmap(code);
        // Block starts.
        let mut starts = vec![false; insts.len() + 1];
        if !insts.is_empty() {
            starts[0] = true;
        }
        for (i, inst) in insts.iter().enumerate() {
            if inst.op == op::JUMPDEST && inst.class != OpClass::Terminal {
                starts[i] = true;
            }
            match inst.class {
                OpClass::Jump | OpClass::Terminal | OpClass::Suspend => starts[i + 1] = true,
                _ => {}
            }
        }
        let mut blocks = Vec::new();
        let mut i = 0;
        while i < insts.len() {
            let mut j = i;
            while j + 1 < insts.len() && !starts[j + 1] {
                j += 1;
            }
            blocks.push(Block {
                first: i,
                last: j,
                sections: Vec::new(),
                term: Terminator::Fallthrough,
                reachable: false,
            });
            i = j + 1;
        }
        let mut jumpdests = Vec::new();
        for (bi, b) in blocks.iter().enumerate() {
            let inst = &insts[b.first];
            if inst.op == op::JUMPDEST && jump_table.get(inst.pc as usize).copied().unwrap_or(false)
            {
                jumpdests.push((inst.pc, bi));
            }
        }
        let block_of_dest = |target: U256| -> JumpTarget {
            if target >= U256::from(code.len()) {
                return JumpTarget::Invalid;
            }
            let t = target.to::<u64>() as u32;
            match jumpdests.binary_search_by_key(&t, |(pc, _)| *pc) {
                Ok(k) => JumpTarget::Block(jumpdests[k].1),
                Err(_) => JumpTarget::Invalid,
            }
        };
        for b in blocks.iter_mut() {
            b.sections = sections(&insts[b.first..=b.last], b.first, spec);
            let last = &insts[b.last];
            b.term = match last.class {
                OpClass::Terminal => Terminator::Halt,
                OpClass::Suspend => Terminator::Suspend,
                OpClass::Jump => {
                    let target = match const_top(&insts[b.first..b.last]) {
                        AVal::Const(v) => block_of_dest(v),
                        AVal::Unknown => JumpTarget::Dynamic,
                    };
                    if last.op == op::JUMP {
                        Terminator::Jump(target)
                    } else {
                        Terminator::JumpI(target)
                    }
                }
                _ => Terminator::Fallthrough,
            };
        }
        let mut a = Analysis {
            spec,
            code_len: code.len(),
            insts,
            blocks,
            jumpdests,
            has_dynamic_jumps: false,
        };
        a.mark_reachable();
        a
    }

    fn mark_reachable(&mut self) {
        let n = self.blocks.len();
        if n == 0 {
            return;
        }
        let mut work = vec![0usize];
        let mut dispatch_added = false;
        while let Some(b) = work.pop() {
            if self.blocks[b].reachable {
                continue;
            }
            self.blocks[b].reachable = true;
            let mut succ = Vec::new();
            let mut dynamic = false;
            match self.blocks[b].term {
                Terminator::Fallthrough | Terminator::Suspend => succ.push(b + 1),
                Terminator::Jump(t) | Terminator::JumpI(t) => {
                    if matches!(self.blocks[b].term, Terminator::JumpI(_)) {
                        succ.push(b + 1);
                    }
                    match t {
                        JumpTarget::Block(x) => succ.push(x),
                        JumpTarget::Dynamic => dynamic = true,
                        JumpTarget::Invalid => {}
                    }
                }
                Terminator::Halt => {}
            }
            if dynamic {
                self.has_dynamic_jumps = true;
                if !dispatch_added {
                    dispatch_added = true;
                    succ.extend(self.jumpdests.iter().map(|(_, bi)| *bi));
                }
            }
            work.extend(succ.into_iter().filter(|&s| s < n));
        }
    }

    /// Counters for this analysis.
    pub fn stats(&self) -> AnalysisStats {
        let mut s = AnalysisStats {
            instructions: self.insts.len(),
            blocks: self.blocks.len(),
            jumpdests: self.jumpdests.len(),
            ..Default::default()
        };
        for b in &self.blocks {
            if !b.reachable {
                s.unreachable_blocks += 1;
                continue;
            }
            s.sections += b.sections.len();
            match b.term {
                Terminator::Jump(t) | Terminator::JumpI(t) => match t {
                    JumpTarget::Block(_) => s.static_jumps += 1,
                    JumpTarget::Invalid => s.invalid_jumps += 1,
                    JumpTarget::Dynamic => s.dynamic_jumps += 1,
                },
                _ => {}
            }
            for inst in &self.insts[b.first..=b.last] {
                if crate::codegen::uses_op_builtin(inst) {
                    s.builtin_ops += 1;
                } else {
                    s.inline_ops += 1;
                }
            }
        }
        s
    }

    /// Block index containing instruction `pc`, if any.
    pub fn block_at_pc(&self, pc: u32) -> Option<usize> {
        let i = self.insts.binary_search_by_key(&pc, |x| x.pc).ok()?;
        self.blocks.iter().position(|b| b.first <= i && i <= b.last)
    }
}

/// Decodes `code` into instructions for `spec`.
pub fn decode(code: &[u8], spec: SpecId) -> Vec<Inst> {
    let mut insts = Vec::with_capacity(code.len());
    let mut pc = 0usize;
    while pc < code.len() {
        let opc = code[pc];
        let n = opcodes::immediate_size(opc);
        let mut imm = U256::ZERO;
        if n > 0 {
            let mut buf = [0u8; 32];
            let avail = code.len().saturating_sub(pc + 1).min(n);
            buf[32 - n..32 - n + avail].copy_from_slice(&code[pc + 1..pc + 1 + avail]);
            imm = U256::from_be_bytes(buf);
        }
        insts.push(Inst {
            pc: pc as u32,
            op: opc,
            imm,
            class: opcodes::class(opc, spec),
            gas: opcodes::static_gas(opc, spec),
            io: opcodes::stack_io(opc, spec),
        });
        pc += 1 + n;
    }
    insts
}

/// revm's JUMPDEST bitmap (a JUMPDEST byte that is not inside PUSH data).
pub fn jumpdest_bitmap(code: &[u8]) -> Vec<bool> {
    let mut v = vec![false; code.len()];
    let mut pc = 0;
    while pc < code.len() {
        let opc = code[pc];
        if opc == op::JUMPDEST {
            v[pc] = true;
        }
        pc += 1 + opcodes::immediate_size(opc);
    }
    v
}

fn ends_section(class: OpClass) -> bool {
    !matches!(class, OpClass::Pure | OpClass::Env)
}

fn sections(insts: &[Inst], base: usize, spec: SpecId) -> Vec<Section> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < insts.len() {
        let mut end = start;
        while end + 1 < insts.len() && !ends_section(insts[end].class) {
            end += 1;
        }
        let (mut gas, mut cur, mut req, mut max) = (0u64, 0i64, 0i64, 0i64);
        for inst in &insts[start..=end] {
            gas = gas.saturating_add(inst.gas);
            let (i, o) = (inst.io.0 as i64, inst.io.1 as i64);
            // Staged pops (LOGn, CREATE2, CALL family) only need their first stage up front;
            // see `opcodes::stack_check_inputs`.
            let check = opcodes::stack_check_inputs(inst.op, spec) as i64;
            req = req.max(check - cur);
            cur = cur - i + o;
            max = max.max(cur);
        }
        out.push(Section {
            first: base + start,
            last: base + end,
            gas,
            stack_req: req.max(0) as u64,
            stack_max: max,
            stack_diff: cur,
        });
        start = end + 1;
    }
    out
}

/// Abstractly executes `insts` (a block without its final jump) and returns the top of stack.
fn const_top(insts: &[Inst]) -> AVal {
    let mut st: Vec<AVal> = Vec::new();
    // Values below the block entry are unknown; model them lazily.
    let pop = |st: &mut Vec<AVal>| st.pop().unwrap_or(AVal::Unknown);
    for inst in insts {
        let o = inst.op;
        match o {
            _ if (op::PUSH0..=op::PUSH32).contains(&o) && inst.class == OpClass::Pure => {
                st.push(AVal::Const(inst.imm))
            }
            _ if (op::DUP1..=op::DUP16).contains(&o) => {
                let n = (o - op::DUP1 + 1) as usize;
                let v = if st.len() >= n {
                    st[st.len() - n]
                } else {
                    AVal::Unknown
                };
                st.push(v);
            }
            _ if (op::SWAP1..=op::SWAP16).contains(&o) => {
                let n = (o - op::SWAP1 + 1) as usize;
                while st.len() < n + 1 {
                    st.insert(0, AVal::Unknown);
                }
                let l = st.len();
                st.swap(l - 1, l - 1 - n);
            }
            op::ADD | op::SUB | op::AND | op::OR | op::XOR | op::MUL => {
                let (a, b) = (pop(&mut st), pop(&mut st));
                st.push(match (a, b) {
                    (AVal::Const(a), AVal::Const(b)) => AVal::Const(match o {
                        op::ADD => a.wrapping_add(b),
                        op::SUB => a.wrapping_sub(b),
                        op::AND => a & b,
                        op::OR => a | b,
                        op::XOR => a ^ b,
                        _ => a.wrapping_mul(b),
                    }),
                    _ => AVal::Unknown,
                });
            }
            _ => {
                let (i, out) = inst.io;
                for _ in 0..i {
                    pop(&mut st);
                }
                for _ in 0..out {
                    st.push(AVal::Unknown);
                }
            }
        }
    }
    pop(&mut st)
}

impl fmt::Display for Analysis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.stats();
        writeln!(
            f,
            "spec {:?}, {} bytes, {} instructions, {} blocks ({} unreachable), {} sections",
            self.spec, self.code_len, s.instructions, s.blocks, s.unreachable_blocks, s.sections
        )?;
        writeln!(
            f,
            "jumps: {} static, {} invalid, {} dynamic; {} jumpdests; ops: {} inline, {} via builtin",
            s.static_jumps, s.invalid_jumps, s.dynamic_jumps, s.jumpdests, s.inline_ops, s.builtin_ops
        )?;
        for (bi, b) in self.blocks.iter().enumerate() {
            let first = &self.insts[b.first];
            let last = &self.insts[b.last];
            writeln!(
                f,
                "\nblock {bi} pc {:#x}..={:#x}{} -> {}",
                first.pc,
                last.pc,
                if b.reachable { "" } else { " (unreachable)" },
                match b.term {
                    Terminator::Fallthrough => "fallthrough".to_string(),
                    Terminator::Halt => "halt".to_string(),
                    Terminator::Suspend => "suspend/resume".to_string(),
                    Terminator::Jump(t) => format!("jump {}", fmt_target(self, t)),
                    Terminator::JumpI(t) => format!("jumpi {}", fmt_target(self, t)),
                }
            )?;
            for sec in &b.sections {
                writeln!(
                    f,
                    "  section gas {} stack req {} max {:+} diff {:+}",
                    sec.gas, sec.stack_req, sec.stack_max, sec.stack_diff
                )?;
                for inst in &self.insts[sec.first..=sec.last] {
                    if opcodes::immediate_size(inst.op) > 0 {
                        writeln!(
                            f,
                            "    {:#06x} {} {:#x}",
                            inst.pc,
                            opcodes::name(inst.op),
                            inst.imm
                        )?;
                    } else {
                        writeln!(f, "    {:#06x} {}", inst.pc, opcodes::name(inst.op))?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn fmt_target(a: &Analysis, t: JumpTarget) -> String {
    match t {
        JumpTarget::Block(b) => format!("block {b} (pc {:#x})", a.insts[a.blocks[b].first].pc),
        JumpTarget::Invalid => "invalid (halts)".to_string(),
        JumpTarget::Dynamic => "dynamic".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_push_jump() {
        // PUSH1 4 JUMP INVALID JUMPDEST STOP
        let a = Analysis::new(&[0x60, 0x04, 0x56, 0xfe, 0x5b, 0x00], SpecId::CANCUN);
        assert_eq!(a.blocks[0].term, Terminator::Jump(JumpTarget::Block(2)));
        assert!(!a.blocks[1].reachable);
        assert!(a.blocks[2].reachable);
        assert!(!a.has_dynamic_jumps);
    }

    #[test]
    fn jump_into_push_data_is_invalid() {
        // PUSH1 3 JUMP PUSH1 0x5b
        let a = Analysis::new(&[0x60, 0x03, 0x56, 0x60, 0x5b], SpecId::CANCUN);
        assert_eq!(a.blocks[0].term, Terminator::Jump(JumpTarget::Invalid));
    }

    #[test]
    fn truncated_push_is_zero_padded() {
        let insts = decode(&[0x61, 0xab], SpecId::CANCUN);
        assert_eq!(insts.len(), 1);
        assert_eq!(insts[0].imm, U256::from(0xab00u64));
    }

    #[test]
    fn sections_end_after_dynamic_ops() {
        // PUSH1 0 MLOAD PUSH1 1 ADD STOP
        let a = Analysis::new(&[0x60, 0x00, 0x51, 0x60, 0x01, 0x01, 0x00], SpecId::CANCUN);
        let b = &a.blocks[0];
        assert_eq!(b.sections.len(), 2);
        assert_eq!(b.sections[0].gas, 3 + 3);
        assert_eq!(b.sections[1].stack_req, 1);
    }
}
