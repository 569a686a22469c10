//! LLVM IR generation for one analysed contract.
//!
//! One function per contract: `i8 @name(ptr %ctx)` (see `ember_runtime::abi`). The EVM stack
//! lives in the interpreter's buffer; within a block, stack words are kept in SSA values (a
//! virtual stack) and written back at block ends and before builtin calls that read them. Stack
//! height and gas live in allocas that `mem2reg` turns into registers. Every memory access is
//! bounds-checked against the frame's memory length reloaded from the context after every
//! builtin call (any builtin may resize memory).

use crate::analysis::{Analysis, Inst, JumpTarget, Section, Terminator};
use crate::CompileError;
use ember_runtime::abi::{builtin_index, field, STACK_LIMIT};
use ember_runtime::builtins::op_builtin_supports;
use ember_runtime::opcodes::OpClass;
use inkwell::basic_block::BasicBlock;
use inkwell::builder::Builder;
use inkwell::context::Context;
use inkwell::intrinsics::Intrinsic;
use inkwell::module::{Linkage, Module};
use inkwell::types::{FunctionType, IntType, PointerType};
use inkwell::values::{
    BasicMetadataValueEnum, BasicValue, FunctionValue, IntValue, PointerValue, ValueKind,
};
use inkwell::{AddressSpace, IntPredicate};
use revm::bytecode::opcode as op;
use revm::interpreter::InstructionResult as IR;
use revm::primitives::U256;
use std::collections::BTreeMap;
use std::num::NonZeroU32;

/// Whether `inst` is executed through the `op` builtin (revm's instruction semantics) rather
/// than lowered inline. Memory loads/stores count as inline: only their expansion slow path
/// calls the builtin.
pub fn uses_op_builtin(inst: &Inst) -> bool {
    match inst.class {
        OpClass::Env | OpClass::Suspend => true,
        OpClass::Dynamic => !matches!(inst.op, op::MLOAD | op::MSTORE | op::MSTORE8),
        OpClass::Terminal => {
            !matches!(inst.op, op::STOP | op::INVALID) && op_builtin_supports(inst.op)
        }
        OpClass::Pure | OpClass::Jump => false,
    }
}

type R<T> = Result<T, CompileError>;

fn llvm<T, E: std::fmt::Display>(r: Result<T, E>) -> R<T> {
    r.map_err(|e| CompileError::Llvm(e.to_string()))
}

/// Virtual stack of one block: SSA values for words pushed or touched in this block, indexed
/// by offset from the block's entry height `h`.
struct VStack<'ctx> {
    h: IntValue<'ctx>,
    cur: i64,
    dirty: BTreeMap<i64, IntValue<'ctx>>,
}

/// Translates analysed code into one LLVM function.
pub(crate) struct FnCodegen<'a, 'ctx> {
    cx: &'ctx Context,
    module: &'a Module<'ctx>,
    b: Builder<'ctx>,
    f: FunctionValue<'ctx>,
    a: &'a Analysis,
    i8t: IntType<'ctx>,
    i32t: IntType<'ctx>,
    i64t: IntType<'ctx>,
    w: IntType<'ctx>,
    ptr: PointerType<'ctx>,
    ctx: PointerValue<'ctx>,
    stack_base: PointerValue<'ctx>,
    len_slot: PointerValue<'ctx>,
    gas_slot: PointerValue<'ctx>,
    jump_slot: PointerValue<'ctx>,
    bbs: Vec<Option<BasicBlock<'ctx>>>,
    dispatch: Option<BasicBlock<'ctx>>,
    invalid_jump: Option<BasicBlock<'ctx>>,
    fail_tail: Option<BasicBlock<'ctx>>,
    /// Shared tail returning a builtin's non-zero status.
    ret_tail: Option<(BasicBlock<'ctx>, inkwell::values::PhiValue<'ctx>)>,
    op_fn_ty: FunctionType<'ctx>,
    fail_fn_ty: FunctionType<'ctx>,
    arith_fn_ty: FunctionType<'ctx>,
}

/// Emits `name` for `a` into `module`.
pub(crate) fn translate<'ctx>(
    cx: &'ctx Context,
    module: &Module<'ctx>,
    a: &Analysis,
    name: &str,
) -> R<FunctionValue<'ctx>> {
    let i8t = cx.i8_type();
    let ptr = cx.ptr_type(AddressSpace::default());
    let fn_ty = i8t.fn_type(&[ptr.into()], false);
    let f = module.add_function(name, fn_ty, Some(Linkage::External));
    // The context pointer never aliases anything else the function touches through other
    // pointers it derives itself.
    let noalias = cx.create_enum_attribute(
        inkwell::attributes::Attribute::get_named_enum_kind_id("noalias"),
        0,
    );
    f.add_attribute(inkwell::attributes::AttributeLoc::Param(0), noalias);
    let nounwind = cx.create_enum_attribute(
        inkwell::attributes::Attribute::get_named_enum_kind_id("nounwind"),
        0,
    );
    f.add_attribute(inkwell::attributes::AttributeLoc::Function, nounwind);
    let i32t = cx.i32_type();
    let i64t = cx.i64_type();
    let w = cx
        .custom_width_int_type(NonZeroU32::new(256).unwrap())
        .map_err(|e| CompileError::Llvm(e.to_string()))?;
    let mut g = FnCodegen {
        cx,
        module,
        b: cx.create_builder(),
        f,
        a,
        i8t,
        i32t,
        i64t,
        w,
        ptr,
        ctx: f.get_nth_param(0).unwrap().into_pointer_value(),
        stack_base: ptr.const_null(),
        len_slot: ptr.const_null(),
        gas_slot: ptr.const_null(),
        jump_slot: ptr.const_null(),
        bbs: Vec::new(),
        dispatch: None,
        invalid_jump: None,
        fail_tail: None,
        ret_tail: None,
        op_fn_ty: i8t.fn_type(&[ptr.into(), i32t.into(), i32t.into()], false),
        fail_fn_ty: i8t.fn_type(&[ptr.into()], false),
        arith_fn_ty: cx.void_type().fn_type(&[ptr.into()], false),
    };
    g.emit()?;
    Ok(f)
}

impl<'a, 'ctx> FnCodegen<'a, 'ctx> {
    fn emit(&mut self) -> R<()> {
        let entry = self.cx.append_basic_block(self.f, "entry");
        self.b.position_at_end(entry);
        self.len_slot = llvm(self.b.build_alloca(self.i64t, "len"))?;
        self.gas_slot = llvm(self.b.build_alloca(self.i64t, "gas"))?;
        self.jump_slot = llvm(self.b.build_alloca(self.w, "jump_target"))?;
        self.stack_base = self.load_ctx_ptr(field::STACK)?;
        let len0 = self.load_ctx_i64(field::STACK_LEN)?;
        llvm(self.b.build_store(self.len_slot, len0))?;
        let gas0 = self.load_ctx_i64(field::GAS_REMAINING)?;
        llvm(self.b.build_store(self.gas_slot, gas0))?;
        let resume = self.load_ctx_i64(field::RESUME_PC)?;

        // One LLVM block per reachable EVM block.
        self.bbs = self
            .a
            .blocks
            .iter()
            .enumerate()
            .map(|(i, b)| {
                b.reachable.then(|| {
                    let pc = self.a.insts[b.first].pc;
                    self.cx.append_basic_block(self.f, &format!("b{i}_pc{pc}"))
                })
            })
            .collect();

        let bad_resume = self.cx.append_basic_block(self.f, "bad_resume");
        let mut cases = Vec::new();
        if let Some(Some(b0)) = self.bbs.first() {
            cases.push((self.i64t.const_int(0, false), *b0));
        }
        let mut end_of_code = None;
        for (i, blk) in self.a.blocks.iter().enumerate() {
            if blk.reachable && blk.term == Terminator::Suspend {
                let pc = self.a.insts[blk.last].pc as u64 + 1;
                let dest = match self.bbs.get(i + 1) {
                    Some(Some(next)) => *next,
                    // CALL/CREATE as the last instruction: resuming runs off the end (STOP).
                    _ => *end_of_code
                        .get_or_insert_with(|| self.cx.append_basic_block(self.f, "resume_at_end")),
                };
                cases.push((self.i64t.const_int(pc, false), dest));
            }
        }
        if self.a.blocks.is_empty() {
            // Empty code: STOP.
            self.ret_code(IR::Stop as u8)?;
        } else {
            llvm(self.b.build_switch(resume, bad_resume, &cases))?;
        }
        self.b.position_at_end(bad_resume);
        self.ret_code(IR::FatalExternalError as u8)?;
        if let Some(end) = end_of_code {
            self.b.position_at_end(end);
            self.exit_with_slots(IR::Stop as u8)?;
        }

        if self.a.has_dynamic_jumps {
            self.dispatch = Some(self.cx.append_basic_block(self.f, "dispatch"));
        }
        for i in 0..self.a.blocks.len() {
            if self.bbs[i].is_some() {
                self.emit_block(i)?;
            }
        }
        if let Some(d) = self.dispatch {
            self.emit_dispatch(d)?;
        }
        if let Some(ij) = self.invalid_jump {
            self.b.position_at_end(ij);
            let len = self.load_i64(self.len_slot)?;
            self.store_ctx_i64(field::STACK_LEN, len)?;
            let gas = self.load_i64(self.gas_slot)?;
            self.store_ctx_i64(field::GAS_REMAINING, gas)?;
            self.ret_code(IR::InvalidJump as u8)?;
        }
        Ok(())
    }

    fn invalid_jump_bb(&mut self) -> BasicBlock<'ctx> {
        *self
            .invalid_jump
            .get_or_insert_with(|| self.cx.append_basic_block(self.f, "invalid_jump"))
    }

    fn emit_dispatch(&mut self, d: BasicBlock<'ctx>) -> R<()> {
        let ij = self.invalid_jump_bb();
        self.b.position_at_end(d);
        let t = llvm(self.b.build_load(self.w, self.jump_slot, "t"))?.into_int_value();
        let limit = self.w.const_int(self.a.code_len as u64, false);
        let in_range = llvm(
            self.b
                .build_int_compare(IntPredicate::ULT, t, limit, "in_range"),
        )?;
        let sw = self.cx.append_basic_block(self.f, "dispatch_switch");
        llvm(self.b.build_conditional_branch(in_range, sw, ij))?;
        self.b.position_at_end(sw);
        let t32 = llvm(self.b.build_int_truncate(t, self.i32t, "t32"))?;
        let cases: Vec<_> = self
            .a
            .jumpdests
            .iter()
            .filter_map(|(pc, bi)| {
                self.bbs[*bi].map(|bb| (self.i32t.const_int(*pc as u64, false), bb))
            })
            .collect();
        llvm(self.b.build_switch(t32, ij, &cases))?;
        Ok(())
    }

    // ---- context access -------------------------------------------------------------------

    fn ctx_field(&self, idx: u32) -> R<PointerValue<'ctx>> {
        // SAFETY (of the IR): every field is an 8-byte slot inside the context struct.
        unsafe {
            llvm(self.b.build_in_bounds_gep(
                self.i64t,
                self.ctx,
                &[self.i64t.const_int(idx as u64, false)],
                "ctx_field",
            ))
        }
    }

    fn load_ctx_i64(&self, idx: u32) -> R<IntValue<'ctx>> {
        let p = self.ctx_field(idx)?;
        Ok(llvm(self.b.build_load(self.i64t, p, "f"))?.into_int_value())
    }

    fn load_ctx_ptr(&self, idx: u32) -> R<PointerValue<'ctx>> {
        let p = self.ctx_field(idx)?;
        Ok(llvm(self.b.build_load(self.ptr, p, "p"))?.into_pointer_value())
    }

    fn store_ctx_i64(&self, idx: u32, v: IntValue<'ctx>) -> R<()> {
        let p = self.ctx_field(idx)?;
        llvm(self.b.build_store(p, v))?;
        Ok(())
    }

    fn load_i64(&self, p: PointerValue<'ctx>) -> R<IntValue<'ctx>> {
        Ok(llvm(self.b.build_load(self.i64t, p, "v"))?.into_int_value())
    }

    fn builtin_ptr(&self, idx: u32) -> R<PointerValue<'ctx>> {
        let table = self.load_ctx_ptr(field::BUILTINS)?;
        // SAFETY (of the IR): `idx` < builtin_index::COUNT.
        let p = unsafe {
            llvm(self.b.build_in_bounds_gep(
                self.ptr,
                table,
                &[self.i64t.const_int(idx as u64, false)],
                "builtin_slot",
            ))?
        };
        Ok(llvm(self.b.build_load(self.ptr, p, "builtin"))?.into_pointer_value())
    }

    fn ret_code(&self, code: u8) -> R<()> {
        llvm(
            self.b
                .build_return(Some(&self.i8t.const_int(code as u64, false))),
        )?;
        Ok(())
    }

    // ---- stack --------------------------------------------------------------------------

    fn slot(&self, vs: &VStack<'ctx>, off: i64) -> R<PointerValue<'ctx>> {
        let idx = llvm(
            self.b
                .build_int_add(vs.h, self.i64t.const_int(off as u64, true), "idx"),
        )?;
        // SAFETY (of the IR): section checks guarantee 0 <= h + off < STACK_LIMIT.
        unsafe {
            llvm(
                self.b
                    .build_in_bounds_gep(self.w, self.stack_base, &[idx], "slot"),
            )
        }
    }

    fn height(&self, vs: &VStack<'ctx>) -> R<IntValue<'ctx>> {
        llvm(
            self.b
                .build_int_add(vs.h, self.i64t.const_int(vs.cur as u64, true), "height"),
        )
    }

    fn load_word(&self, p: PointerValue<'ctx>) -> R<IntValue<'ctx>> {
        let v = llvm(self.b.build_load(self.w, p, "w"))?;
        if let Some(i) = v.as_instruction_value() {
            let _ = i.set_alignment(8);
        }
        Ok(v.into_int_value())
    }

    fn store_word(&self, p: PointerValue<'ctx>, v: IntValue<'ctx>) -> R<()> {
        let s = llvm(self.b.build_store(p, v))?;
        let _ = s.set_alignment(8);
        Ok(())
    }

    /// Value `n` words below the top (1 = top).
    fn peek(&self, vs: &mut VStack<'ctx>, n: i64) -> R<IntValue<'ctx>> {
        let off = vs.cur - n;
        if let Some(v) = vs.dirty.get(&off) {
            return Ok(*v);
        }
        // Not cached: a reload is cheap, while long-lived SSA copies of deep stack words
        // inflate register pressure on large blocks.
        self.load_word(self.slot(vs, off)?)
    }

    fn pop(&self, vs: &mut VStack<'ctx>) -> R<IntValue<'ctx>> {
        let v = self.peek(vs, 1)?;
        vs.cur -= 1;
        vs.dirty.remove(&vs.cur);
        Ok(v)
    }

    fn push(&self, vs: &mut VStack<'ctx>, v: IntValue<'ctx>) {
        vs.dirty.insert(vs.cur, v);
        vs.cur += 1;
    }

    fn set(&self, vs: &mut VStack<'ctx>, n: i64, v: IntValue<'ctx>) {
        vs.dirty.insert(vs.cur - n, v);
    }

    /// Writes every live virtual-stack value to memory, keeping them cached.
    fn store_dirty(&self, vs: &VStack<'ctx>) -> R<()> {
        for (&off, &v) in vs.dirty.range(..vs.cur) {
            self.store_word(self.slot(vs, off)?, v)?;
        }
        Ok(())
    }

    fn flush(&self, vs: &mut VStack<'ctx>) -> R<()> {
        self.store_dirty(vs)?;
        vs.dirty.clear();
        Ok(())
    }

    /// Snapshot of the live virtual-stack values (offset, value).
    fn live_values(&self, vs: &VStack<'ctx>) -> Vec<(i64, IntValue<'ctx>)> {
        vs.dirty.range(..vs.cur).map(|(o, v)| (*o, *v)).collect()
    }

    /// In a slow path after a builtin call: reload the words of `live` from memory, so no SSA
    /// stack value is live across the call (values live across calls in large functions make
    /// register allocation superlinear).
    fn reload_live(
        &self,
        vs: &VStack<'ctx>,
        live: &[(i64, IntValue<'ctx>)],
    ) -> R<Vec<IntValue<'ctx>>> {
        live.iter()
            .map(|(o, _)| self.load_word(self.slot(vs, *o)?))
            .collect()
    }

    /// At a join of a fast path (values in `live`) and a slow path (values in `reloaded`):
    /// phis for every live word.
    fn merge_live(
        &self,
        vs: &mut VStack<'ctx>,
        live: &[(i64, IntValue<'ctx>)],
        fast_end: BasicBlock<'ctx>,
        reloaded: &[IntValue<'ctx>],
        slow_end: BasicBlock<'ctx>,
    ) -> R<()> {
        for ((off, v), r) in live.iter().zip(reloaded) {
            let phi = llvm(self.b.build_phi(self.w, "sv"))?;
            phi.add_incoming(&[(v, fast_end), (r, slow_end)]);
            vs.dirty.insert(*off, phi.as_basic_value().into_int_value());
        }
        Ok(())
    }

    fn w_const(&self, v: U256) -> IntValue<'ctx> {
        self.w.const_int_arbitrary_precision(v.as_limbs())
    }

    fn bool_to_word(&self, c: IntValue<'ctx>) -> R<IntValue<'ctx>> {
        llvm(self.b.build_int_z_extend(c, self.w, "b"))
    }

    fn intrinsic(&self, name: &str) -> R<FunctionValue<'ctx>> {
        let i = Intrinsic::find(name)
            .ok_or_else(|| CompileError::Llvm(format!("no intrinsic {name}")))?;
        i.get_declaration(self.module, &[self.w.into()])
            .ok_or_else(|| CompileError::Llvm(format!("no declaration for {name}")))
    }

    fn call_value(
        &self,
        f: FunctionValue<'ctx>,
        args: &[BasicMetadataValueEnum<'ctx>],
    ) -> R<IntValue<'ctx>> {
        let c = llvm(self.b.build_call(f, args, "call"))?;
        match c.try_as_basic_value() {
            ValueKind::Basic(v) => Ok(v.into_int_value()),
            _ => Err(CompileError::Llvm("void intrinsic".into())),
        }
    }

    // ---- blocks ------------------------------------------------------------------------

    fn emit_block(&mut self, bi: usize) -> R<()> {
        let a = self.a;
        let blk = &a.blocks[bi];
        self.b.position_at_end(self.bbs[bi].unwrap());
        let h = self.load_i64(self.len_slot)?;
        let mut vs = VStack {
            h,
            cur: 0,
            dirty: BTreeMap::new(),
        };
        for sec in &blk.sections {
            if sec.stack_max > STACK_LIMIT as i64 || sec.stack_req > STACK_LIMIT {
                // No entry height can satisfy this section: the check always fails, so the
                // rest of the block is dead. Emitting it anyway is how a 24 KiB run of PC or
                // DUP16 became one block with 24,000 live values.
                return self.emit_always_failing_section(&vs, sec);
            }
            self.emit_section_check(&mut vs, sec)?;
            for idx in sec.first..=sec.last {
                let inst = &a.insts[idx];
                let is_last = idx == blk.last;
                if is_last && matches!(inst.class, OpClass::Jump) {
                    break;
                }
                self.emit_inst(&mut vs, inst, bi, is_last)?;
            }
        }
        let next = self.bbs.get(bi + 1).copied().flatten();
        match blk.term {
            Terminator::Fallthrough | Terminator::Suspend => self.goto_next(&mut vs, next)?,
            Terminator::Halt => {} // emitted by the terminal instruction
            Terminator::Jump(t) => {
                let target = self.pop(&mut vs)?;
                self.flush(&mut vs)?;
                let len = self.height(&vs)?;
                llvm(self.b.build_store(self.len_slot, len))?;
                let dest = self.jump_dest(t, target)?;
                llvm(self.b.build_unconditional_branch(dest))?;
            }
            Terminator::JumpI(t) => {
                let target = self.pop(&mut vs)?;
                let cond = self.pop(&mut vs)?;
                self.flush(&mut vs)?;
                let len = self.height(&vs)?;
                llvm(self.b.build_store(self.len_slot, len))?;
                let dest = self.jump_dest(t, target)?;
                let c = llvm(self.b.build_int_compare(
                    IntPredicate::NE,
                    cond,
                    self.w.const_zero(),
                    "c",
                ))?;
                let fall = match next {
                    Some(n) => n,
                    None => {
                        let stop = self.cx.append_basic_block(self.f, "end_of_code");
                        let cur = self.b.get_insert_block().unwrap();
                        self.b.position_at_end(stop);
                        self.exit_with_slots(IR::Stop as u8)?;
                        self.b.position_at_end(cur);
                        stop
                    }
                };
                llvm(self.b.build_conditional_branch(c, dest, fall))?;
            }
        }
        Ok(())
    }

    fn exit_with_slots(&self, code: u8) -> R<()> {
        let len = self.load_i64(self.len_slot)?;
        self.store_ctx_i64(field::STACK_LEN, len)?;
        let gas = self.load_i64(self.gas_slot)?;
        self.store_ctx_i64(field::GAS_REMAINING, gas)?;
        self.ret_code(code)
    }

    fn jump_dest(&mut self, t: JumpTarget, target: IntValue<'ctx>) -> R<BasicBlock<'ctx>> {
        Ok(match t {
            JumpTarget::Block(x) => self.bbs[x].expect("jump target marked reachable"),
            JumpTarget::Invalid => self.invalid_jump_bb(),
            JumpTarget::Dynamic => {
                llvm(self.b.build_store(self.jump_slot, target))?;
                self.dispatch.expect("dynamic jumps have a dispatch block")
            }
        })
    }

    fn goto_next(&mut self, vs: &mut VStack<'ctx>, next: Option<BasicBlock<'ctx>>) -> R<()> {
        self.flush(vs)?;
        let len = self.height(vs)?;
        llvm(self.b.build_store(self.len_slot, len))?;
        match next {
            Some(n) => {
                llvm(self.b.build_unconditional_branch(n))?;
            }
            None => self.exit_with_slots(IR::Stop as u8)?, // running off the end is STOP
        }
        Ok(())
    }

    /// Exits with `code`, writing the virtual stack, height and gas back to the context.
    fn exit_here(&self, vs: &VStack<'ctx>, code: u8) -> R<()> {
        self.store_dirty(vs)?;
        let len = self.height(vs)?;
        self.store_ctx_i64(field::STACK_LEN, len)?;
        let gas = self.load_i64(self.gas_slot)?;
        self.store_ctx_i64(field::GAS_REMAINING, gas)?;
        self.ret_code(code)
    }

    /// A section whose stack bounds can never hold: hand it to the resolver directly.
    fn emit_always_failing_section(&mut self, vs: &VStack<'ctx>, sec: &Section) -> R<()> {
        let gas = self.load_i64(self.gas_slot)?;
        let height = self.height(vs)?;
        let safe = if vs.cur < 0 { height } else { vs.h };
        self.store_ctx_i64(field::STACK_LEN, height)?;
        self.store_ctx_i64(field::GAS_REMAINING, gas)?;
        let first = self.a.insts[sec.first].pc as u64;
        let last = self.a.insts[sec.last].pc as u64;
        self.store_ctx_i64(
            field::FAIL_SECTION,
            self.i64t.const_int((first << 32) | last, false),
        )?;
        self.store_ctx_i64(field::FAIL_SAFE_LEN, safe)?;
        let tail = self.fail_tail()?;
        llvm(self.b.build_unconditional_branch(tail))?;
        Ok(())
    }

    fn emit_section_check(&mut self, vs: &mut VStack<'ctx>, sec: &Section) -> R<()> {
        let gas = self.load_i64(self.gas_slot)?;
        let g = self.i64t.const_int(sec.gas, false);
        let mut ok = llvm(
            self.b
                .build_int_compare(IntPredicate::UGE, gas, g, "gas_ok"),
        )?;
        let height = self.height(vs)?;
        if sec.stack_req > 0 {
            let r = self.i64t.const_int(sec.stack_req, false);
            let c = llvm(
                self.b
                    .build_int_compare(IntPredicate::UGE, height, r, "under_ok"),
            )?;
            ok = llvm(self.b.build_and(ok, c, "ok"))?;
        }
        if sec.stack_max > 0 {
            let lim = self
                .i64t
                .const_int(STACK_LIMIT - sec.stack_max as u64, false);
            let c = llvm(
                self.b
                    .build_int_compare(IntPredicate::ULE, height, lim, "over_ok"),
            )?;
            ok = llvm(self.b.build_and(ok, c, "ok"))?;
        }
        // Constant-true checks are folded by the builder; skip the branch entirely.
        if ok.get_zero_extended_constant() == Some(1) {
            let left = llvm(self.b.build_int_sub(gas, g, "gas"))?;
            llvm(self.b.build_store(self.gas_slot, left))?;
            return Ok(());
        }
        let fail = self.cx.append_basic_block(self.f, "section_fail");
        let cont = self.cx.append_basic_block(self.f, "section_ok");
        let br = llvm(self.b.build_conditional_branch(ok, cont, fail))?;
        self.set_likely(br)?;
        self.b.position_at_end(fail);
        // Only stores here, then one shared call: thousands of cold per-section calls made
        // register allocation much slower on large contracts.
        // Words between the entry height and the current height may not have been written
        // back; report only the part of the stack known to be initialised.
        let safe = if vs.cur < 0 { height } else { vs.h };
        self.store_ctx_i64(field::STACK_LEN, height)?;
        self.store_ctx_i64(field::GAS_REMAINING, gas)?;
        let first = self.a.insts[sec.first].pc as u64;
        let last = self.a.insts[sec.last].pc as u64;
        self.store_ctx_i64(
            field::FAIL_SECTION,
            self.i64t.const_int((first << 32) | last, false),
        )?;
        self.store_ctx_i64(field::FAIL_SAFE_LEN, safe)?;
        let tail = self.fail_tail()?;
        llvm(self.b.build_unconditional_branch(tail))?;
        self.b.position_at_end(cont);
        let left = llvm(self.b.build_int_sub(gas, g, "gas"))?;
        llvm(self.b.build_store(self.gas_slot, left))?;
        Ok(())
    }

    /// Branches to the shared `return status` tail when `status != 0`.
    fn ret_if_nonzero(&mut self, r: IntValue<'ctx>, likely_err: bool) -> R<()> {
        let (tail, phi) = match self.ret_tail {
            Some(t) => t,
            None => {
                let cur = self.b.get_insert_block().unwrap();
                let bb = self.cx.append_basic_block(self.f, "ret_status");
                self.b.position_at_end(bb);
                let phi = llvm(self.b.build_phi(self.i8t, "status"))?;
                llvm(self.b.build_return(Some(&phi.as_basic_value())))?;
                self.b.position_at_end(cur);
                self.ret_tail = Some((bb, phi));
                (bb, phi)
            }
        };
        let is_err =
            llvm(
                self.b
                    .build_int_compare(IntPredicate::NE, r, self.i8t.const_zero(), "err"),
            )?;
        let ok_bb = self.cx.append_basic_block(self.f, "ok");
        let br = llvm(self.b.build_conditional_branch(is_err, tail, ok_bb))?;
        if !likely_err {
            self.set_unlikely(br)?;
        }
        let here = self.b.get_insert_block().unwrap();
        phi.add_incoming(&[(&r, here)]);
        self.b.position_at_end(ok_bb);
        Ok(())
    }

    fn fail_tail(&mut self) -> R<BasicBlock<'ctx>> {
        if let Some(t) = self.fail_tail {
            return Ok(t);
        }
        let cur = self.b.get_insert_block().unwrap();
        let bb = self.cx.append_basic_block(self.f, "section_fail_tail");
        self.b.position_at_end(bb);
        let fp = self.builtin_ptr(builtin_index::SECTION_FAIL)?;
        let r = llvm(
            self.b
                .build_indirect_call(self.fail_fn_ty, fp, &[self.ctx.into()], "fail"),
        )?;
        let code = match r.try_as_basic_value() {
            ValueKind::Basic(v) => v.into_int_value(),
            _ => unreachable!("section_fail returns i8"),
        };
        llvm(self.b.build_return(Some(&code)))?;
        self.b.position_at_end(cur);
        self.fail_tail = Some(bb);
        Ok(bb)
    }

    fn set_likely(&self, br: inkwell::values::InstructionValue<'ctx>) -> R<()> {
        let md_kind = self.cx.get_kind_id("prof");
        let name = self.cx.metadata_string("branch_weights");
        let hi = self.i32t.const_int(2000, false);
        let lo = self.i32t.const_int(1, false);
        let node = self.cx.metadata_node(&[name.into(), hi.into(), lo.into()]);
        llvm(br.set_metadata(node, md_kind))?;
        Ok(())
    }

    /// Calls the `op` builtin for `inst`; on a non-zero status, returns it. Afterwards the
    /// stack words the builtin produced are in memory.
    fn call_op(&mut self, vs: &mut VStack<'ctx>, inst: &Inst) -> R<()> {
        self.flush(vs)?;
        let height = self.height(vs)?;
        self.store_ctx_i64(field::STACK_LEN, height)?;
        let gas = self.load_i64(self.gas_slot)?;
        self.store_ctx_i64(field::GAS_REMAINING, gas)?;
        let fp = self.builtin_ptr(builtin_index::OP)?;
        let r = llvm(self.b.build_indirect_call(
            self.op_fn_ty,
            fp,
            &[
                self.ctx.into(),
                self.i32t.const_int(inst.op as u64, false).into(),
                self.i32t.const_int(inst.pc as u64, false).into(),
            ],
            "op",
        ))?;
        let r = match r.try_as_basic_value() {
            ValueKind::Basic(v) => v.into_int_value(),
            _ => unreachable!("op returns i8"),
        };
        self.ret_if_nonzero(
            r,
            matches!(inst.class, OpClass::Terminal | OpClass::Suspend),
        )?;
        let gas = self.load_ctx_i64(field::GAS_REMAINING)?;
        llvm(self.b.build_store(self.gas_slot, gas))?;
        vs.cur = vs.cur - inst.io.0 as i64 + inst.io.1 as i64;
        Ok(())
    }

    fn set_unlikely(&self, br: inkwell::values::InstructionValue<'ctx>) -> R<()> {
        let md_kind = self.cx.get_kind_id("prof");
        let name = self.cx.metadata_string("branch_weights");
        let hi = self.i32t.const_int(1, false);
        let lo = self.i32t.const_int(2000, false);
        let node = self.cx.metadata_node(&[name.into(), hi.into(), lo.into()]);
        llvm(br.set_metadata(node, md_kind))?;
        Ok(())
    }

    fn call_arith(&mut self, vs: &mut VStack<'ctx>, idx: u32, n_in: i64) -> R<()> {
        self.flush(vs)?;
        let p = self.slot(vs, vs.cur - n_in)?;
        let fp = self.builtin_ptr(idx)?;
        llvm(
            self.b
                .build_indirect_call(self.arith_fn_ty, fp, &[p.into()], ""),
        )?;
        vs.cur -= n_in - 1;
        Ok(())
    }

    // ---- instructions ------------------------------------------------------------------

    fn emit_inst(&mut self, vs: &mut VStack<'ctx>, inst: &Inst, bi: usize, is_last: bool) -> R<()> {
        let o = inst.op;
        let b = &self.b;
        match inst.class {
            OpClass::Terminal => {
                match o {
                    op::STOP if inst.io == (0, 0) => return self.exit_here(vs, IR::Stop as u8),
                    op::INVALID => return self.exit_here(vs, IR::InvalidFEOpcode as u8),
                    _ if op_builtin_supports(o) => {
                        self.call_op(vs, inst)?;
                        // A terminal op that reports success would continue like the
                        // interpreter does.
                        let next = self.bbs.get(bi + 1).copied().flatten();
                        debug_assert!(is_last);
                        return self.goto_next(vs, next);
                    }
                    _ => {
                        let code = if ember_runtime::opcodes::info(o).is_none() {
                            IR::OpcodeNotFound
                        } else if o == op::STOP {
                            IR::Stop
                        } else {
                            IR::NotActivated
                        };
                        return self.exit_here(vs, code as u8);
                    }
                }
            }
            OpClass::Env | OpClass::Suspend => return self.call_op(vs, inst),
            OpClass::Dynamic => {
                return match o {
                    op::MLOAD => self.emit_mload(vs, inst),
                    op::MSTORE | op::MSTORE8 => self.emit_mstore(vs, inst),
                    _ => self.call_op(vs, inst),
                }
            }
            OpClass::Jump => unreachable!("jumps are block terminators"),
            OpClass::Pure => {}
        }
        let w = self.w;
        match o {
            _ if (op::PUSH0..=op::PUSH32).contains(&o) => {
                let c = self.w_const(inst.imm);
                self.push(vs, c);
            }
            _ if (op::DUP1..=op::DUP16).contains(&o) => {
                let v = self.peek(vs, (o - op::DUP1 + 1) as i64)?;
                self.push(vs, v);
            }
            _ if (op::SWAP1..=op::SWAP16).contains(&o) => {
                let n = (o - op::SWAP1 + 1) as i64;
                let top = self.peek(vs, 1)?;
                let other = self.peek(vs, n + 1)?;
                self.set(vs, 1, other);
                self.set(vs, n + 1, top);
            }
            op::POP => {
                self.pop(vs)?;
            }
            op::JUMPDEST => {}
            op::PC => {
                let c = w.const_int(inst.pc as u64, false);
                self.push(vs, c);
            }
            op::MSIZE => {
                let l = self.load_ctx_i64(field::MEMORY_LEN)?;
                let v = llvm(b.build_int_z_extend(l, w, "msize"))?;
                self.push(vs, v);
            }
            op::ADD
            | op::MUL
            | op::SUB
            | op::AND
            | op::OR
            | op::XOR
            | op::LT
            | op::GT
            | op::SLT
            | op::SGT
            | op::EQ
            | op::BYTE
            | op::SHL
            | op::SHR
            | op::SAR
            | op::SIGNEXTEND => {
                let a = self.pop(vs)?;
                let bv = self.pop(vs)?;
                let r = self.binop(o, a, bv)?;
                self.push(vs, r);
            }
            op::ISZERO => {
                let a = self.pop(vs)?;
                let c = llvm(b.build_int_compare(IntPredicate::EQ, a, w.const_zero(), "iszero"))?;
                let r = self.bool_to_word(c)?;
                self.push(vs, r);
            }
            op::NOT => {
                let a = self.pop(vs)?;
                let r = llvm(b.build_not(a, "not"))?;
                self.push(vs, r);
            }
            op::CLZ => {
                let a = self.pop(vs)?;
                let f = self.intrinsic("llvm.ctlz")?;
                let r = self.call_value(f, &[a.into(), self.cx.bool_type().const_zero().into()])?;
                self.push(vs, r);
            }
            op::DIV => self.emit_divlike(vs, builtin_index::DIV, false)?,
            op::SDIV => self.call_arith(vs, builtin_index::SDIV, 2)?,
            op::MOD => self.emit_divlike(vs, builtin_index::REM, true)?,
            op::SMOD => self.call_arith(vs, builtin_index::SMOD, 2)?,
            op::ADDMOD => self.call_arith(vs, builtin_index::ADDMOD, 3)?,
            op::MULMOD => self.call_arith(vs, builtin_index::MULMOD, 3)?,
            _ => {
                return Err(CompileError::Unsupported(format!(
                    "opcode {} at pc {}",
                    ember_runtime::opcodes::name(o),
                    inst.pc
                )))
            }
        }
        Ok(())
    }

    /// DIV / MOD with an inline fast path when both operands fit in 64 bits.
    fn emit_divlike(&mut self, vs: &mut VStack<'ctx>, idx: u32, rem: bool) -> R<()> {
        let a = self.peek(vs, 1)?;
        let d = self.peek(vs, 2)?;
        let w = self.w;
        let lim = w.const_int(u64::MAX, false);
        let a_small = llvm(self.b.build_int_compare(IntPredicate::ULE, a, lim, "a64"))?;
        let d_small = llvm(self.b.build_int_compare(IntPredicate::ULE, d, lim, "d64"))?;
        let d_nz = llvm(
            self.b
                .build_int_compare(IntPredicate::NE, d, w.const_zero(), "dnz"),
        )?;
        let both = llvm(self.b.build_and(a_small, d_small, "small"))?;
        let fast_ok = llvm(self.b.build_and(both, d_nz, "fast"))?;
        let fast = self.cx.append_basic_block(self.f, "div_fast");
        let slow = self.cx.append_basic_block(self.f, "div_slow");
        let join = self.cx.append_basic_block(self.f, "div_join");
        let live = self.live_values(vs);
        llvm(self.b.build_conditional_branch(fast_ok, fast, slow))?;
        // Fast path.
        self.b.position_at_end(fast);
        let a64 = llvm(self.b.build_int_truncate(a, self.i64t, "a"))?;
        let d64 = llvm(self.b.build_int_truncate(d, self.i64t, "d"))?;
        let q = if rem {
            llvm(self.b.build_int_unsigned_rem(a64, d64, "r"))?
        } else {
            llvm(self.b.build_int_unsigned_div(a64, d64, "q"))?
        };
        let q = llvm(self.b.build_int_z_extend(q, w, "qw"))?;
        llvm(self.b.build_unconditional_branch(join))?;
        // Slow path: builtin on the two words in memory.
        self.b.position_at_end(slow);
        self.store_dirty(vs)?;
        let p = self.slot(vs, vs.cur - 2)?;
        let fp = self.builtin_ptr(idx)?;
        llvm(
            self.b
                .build_indirect_call(self.arith_fn_ty, fp, &[p.into()], ""),
        )?;
        let s = self.load_word(p)?;
        let reloaded = self.reload_live(vs, &live)?;
        llvm(self.b.build_unconditional_branch(join))?;
        self.b.position_at_end(join);
        let phi = llvm(self.b.build_phi(w, "divres"))?;
        phi.add_incoming(&[(&q, fast), (&s, slow)]);
        self.merge_live(vs, &live, fast, &reloaded, slow)?;
        self.pop(vs)?;
        self.pop(vs)?;
        self.push(vs, phi.as_basic_value().into_int_value());
        Ok(())
    }

    fn binop(&self, o: u8, a: IntValue<'ctx>, bv: IntValue<'ctx>) -> R<IntValue<'ctx>> {
        let b = &self.b;
        let w = self.w;
        let c256 = w.const_int(256, false);
        Ok(match o {
            op::ADD => llvm(b.build_int_add(a, bv, "add"))?,
            op::MUL => llvm(b.build_int_mul(a, bv, "mul"))?,
            op::SUB => llvm(b.build_int_sub(a, bv, "sub"))?,
            op::AND => llvm(b.build_and(a, bv, "and"))?,
            op::OR => llvm(b.build_or(a, bv, "or"))?,
            op::XOR => llvm(b.build_xor(a, bv, "xor"))?,
            op::LT | op::GT | op::SLT | op::SGT | op::EQ => {
                let p = match o {
                    op::LT => IntPredicate::ULT,
                    op::GT => IntPredicate::UGT,
                    op::SLT => IntPredicate::SLT,
                    op::SGT => IntPredicate::SGT,
                    _ => IntPredicate::EQ,
                };
                let c = llvm(b.build_int_compare(p, a, bv, "cmp"))?;
                self.bool_to_word(c)?
            }
            // a = shift, bv = value
            op::SHL | op::SHR => {
                let in_range = llvm(b.build_int_compare(IntPredicate::ULT, a, c256, "inr"))?;
                let sh = llvm(b.build_select(in_range, a, w.const_zero(), "sh"))?.into_int_value();
                let r = if o == op::SHL {
                    llvm(b.build_left_shift(bv, sh, "shl"))?
                } else {
                    llvm(b.build_right_shift(bv, sh, false, "shr"))?
                };
                llvm(b.build_select(in_range, r, w.const_zero(), "shres"))?.into_int_value()
            }
            op::SAR => {
                let in_range = llvm(b.build_int_compare(IntPredicate::ULT, a, c256, "inr"))?;
                let sh = llvm(b.build_select(in_range, a, w.const_int(255, false), "sh"))?
                    .into_int_value();
                llvm(b.build_right_shift(bv, sh, true, "sar"))?
            }
            // a = byte index i, bv = value
            op::BYTE => {
                let in_range =
                    llvm(b.build_int_compare(IntPredicate::ULT, a, w.const_int(32, false), "inr"))?;
                let idx = llvm(b.build_select(in_range, a, w.const_zero(), "i"))?.into_int_value();
                let bits = llvm(b.build_int_mul(idx, w.const_int(8, false), "bits"))?;
                let sh = llvm(b.build_int_sub(w.const_int(248, false), bits, "sh"))?;
                let v = llvm(b.build_right_shift(bv, sh, false, "v"))?;
                let v = llvm(b.build_and(v, w.const_int(0xff, false), "byte"))?;
                llvm(b.build_select(in_range, v, w.const_zero(), "byteres"))?.into_int_value()
            }
            // a = byte index, bv = value
            op::SIGNEXTEND => {
                let in_range =
                    llvm(b.build_int_compare(IntPredicate::ULT, a, w.const_int(31, false), "inr"))?;
                let idx = llvm(b.build_select(in_range, a, w.const_zero(), "i"))?.into_int_value();
                let bits = llvm(b.build_int_mul(idx, w.const_int(8, false), "bits"))?;
                let sh = llvm(b.build_int_sub(w.const_int(248, false), bits, "sh"))?;
                let up = llvm(b.build_left_shift(bv, sh, "up"))?;
                let ext = llvm(b.build_right_shift(up, sh, true, "ext"))?;
                llvm(b.build_select(in_range, ext, bv, "sx"))?.into_int_value()
            }
            _ => unreachable!(),
        })
    }

    /// Checks `offset + size <= memory_len` without overflow; returns (in_bounds, offset as i64).
    fn mem_in_bounds(
        &self,
        offset: IntValue<'ctx>,
        size: u64,
    ) -> R<(IntValue<'ctx>, IntValue<'ctx>)> {
        let b = &self.b;
        let small = llvm(b.build_int_compare(
            IntPredicate::ULT,
            offset,
            self.w.const_int(1 << 32, false),
            "small",
        ))?;
        let off64 = llvm(b.build_int_truncate(offset, self.i64t, "off"))?;
        let end = llvm(b.build_int_add(off64, self.i64t.const_int(size, false), "end"))?;
        let mlen = self.load_ctx_i64(field::MEMORY_LEN)?;
        let fits = llvm(b.build_int_compare(IntPredicate::ULE, end, mlen, "fits"))?;
        let ok = llvm(b.build_and(small, fits, "inb"))?;
        Ok((ok, off64))
    }

    fn mem_ptr(&self, off64: IntValue<'ctx>) -> R<PointerValue<'ctx>> {
        let base = self.load_ctx_ptr(field::MEMORY)?;
        // SAFETY (of the IR): only used after `mem_in_bounds` proved the access in bounds.
        unsafe { llvm(self.b.build_in_bounds_gep(self.i8t, base, &[off64], "mp")) }
    }

    /// Slow path shared by memory ops: write back the stack, call the `op` builtin (revm's own
    /// instruction: expansion, gas, halts), then rejoin.
    fn mem_slow_call(&mut self, vs: &VStack<'ctx>, inst: &Inst) -> R<()> {
        self.store_dirty(vs)?;
        let height = self.height(vs)?;
        self.store_ctx_i64(field::STACK_LEN, height)?;
        let gas = self.load_i64(self.gas_slot)?;
        self.store_ctx_i64(field::GAS_REMAINING, gas)?;
        let fp = self.builtin_ptr(builtin_index::OP)?;
        let r = llvm(self.b.build_indirect_call(
            self.op_fn_ty,
            fp,
            &[
                self.ctx.into(),
                self.i32t.const_int(inst.op as u64, false).into(),
                self.i32t.const_int(inst.pc as u64, false).into(),
            ],
            "op",
        ))?;
        let r = match r.try_as_basic_value() {
            ValueKind::Basic(v) => v.into_int_value(),
            _ => unreachable!(),
        };
        self.ret_if_nonzero(r, false)?;
        let gas = self.load_ctx_i64(field::GAS_REMAINING)?;
        llvm(self.b.build_store(self.gas_slot, gas))?;
        Ok(())
    }

    fn emit_mload(&mut self, vs: &mut VStack<'ctx>, inst: &Inst) -> R<()> {
        let offset = self.peek(vs, 1)?;
        let (ok, off64) = self.mem_in_bounds(offset, 32)?;
        let fast = self.cx.append_basic_block(self.f, "mload_fast");
        let slow = self.cx.append_basic_block(self.f, "mload_slow");
        let join = self.cx.append_basic_block(self.f, "mload_join");
        let live = self.live_values(vs);
        let br = llvm(self.b.build_conditional_branch(ok, fast, slow))?;
        self.set_likely(br)?;
        self.b.position_at_end(fast);
        let p = self.mem_ptr(off64)?;
        let raw = llvm(self.b.build_load(self.w, p, "raw"))?;
        if let Some(i) = raw.as_instruction_value() {
            let _ = i.set_alignment(1);
        }
        let bswap = self.intrinsic("llvm.bswap")?;
        let v_fast = self.call_value(bswap, &[raw.into_int_value().into()])?;
        let fast_end = self.b.get_insert_block().unwrap();
        llvm(self.b.build_unconditional_branch(join))?;
        self.b.position_at_end(slow);
        self.mem_slow_call(vs, inst)?;
        let v_slow = self.load_word(self.slot(vs, vs.cur - 1)?)?;
        let reloaded = self.reload_live(vs, &live)?;
        let slow_end = self.b.get_insert_block().unwrap();
        llvm(self.b.build_unconditional_branch(join))?;
        self.b.position_at_end(join);
        let phi = llvm(self.b.build_phi(self.w, "mload"))?;
        phi.add_incoming(&[(&v_fast, fast_end), (&v_slow, slow_end)]);
        self.merge_live(vs, &live, fast_end, &reloaded, slow_end)?;
        self.set(vs, 1, phi.as_basic_value().into_int_value());
        Ok(())
    }

    fn emit_mstore(&mut self, vs: &mut VStack<'ctx>, inst: &Inst) -> R<()> {
        let offset = self.peek(vs, 1)?;
        let value = self.peek(vs, 2)?;
        let size = if inst.op == op::MSTORE8 { 1 } else { 32 };
        let (ok, off64) = self.mem_in_bounds(offset, size)?;
        let fast = self.cx.append_basic_block(self.f, "mstore_fast");
        let slow = self.cx.append_basic_block(self.f, "mstore_slow");
        let join = self.cx.append_basic_block(self.f, "mstore_join");
        let live = self.live_values(vs);
        let br = llvm(self.b.build_conditional_branch(ok, fast, slow))?;
        self.set_likely(br)?;
        self.b.position_at_end(fast);
        let p = self.mem_ptr(off64)?;
        if size == 1 {
            let byte = llvm(self.b.build_int_truncate(value, self.i8t, "b"))?;
            llvm(self.b.build_store(p, byte))?;
        } else {
            let bswap = self.intrinsic("llvm.bswap")?;
            let v = self.call_value(bswap, &[value.into()])?;
            let s = llvm(self.b.build_store(p, v))?;
            let _ = s.set_alignment(1);
        }
        llvm(self.b.build_unconditional_branch(join))?;
        let fast_end = self.b.get_insert_block().unwrap();
        self.b.position_at_end(slow);
        self.mem_slow_call(vs, inst)?;
        let reloaded = self.reload_live(vs, &live)?;
        let slow_end = self.b.get_insert_block().unwrap();
        llvm(self.b.build_unconditional_branch(join))?;
        self.b.position_at_end(join);
        self.merge_live(vs, &live, fast_end, &reloaded, slow_end)?;
        self.pop(vs)?;
        self.pop(vs)?;
        Ok(())
    }
}
