//! Ahead-of-time compilation: object code for many contracts, compiled in parallel (one LLVM
//! module per contract), linked into one shared object with an embedded
//! [`Manifest`]. The runtime's
//! [`AotLibrary`](ember_runtime::AotLibrary) verifies and loads it.
//!
//! **Linker.** Ember drives LLVM's `ld.lld` directly (from `$LLVM_SYS_221_PREFIX/bin`,
//! `/usr/lib/llvm-22/bin`, `ld.lld-22` or `ld.lld` on `PATH`; `EMBER_LINKER` overrides): it is
//! part of the same LLVM release as the code generator, needs no C toolchain or C runtime
//! files, links thousands of objects in well under a second, and with no start files the
//! library has no initializers for the loader to refuse. When no `ld.lld` exists, the system
//! C compiler driver (`cc -shared -nostdlib`, i.e. GNU ld) is used and named in the manifest.
//! The manifest itself is a small ELF object written with the `object` crate.

use crate::jit::{build_module, discard_value_names, effective_opt_with, init_llvm, llvm_opt};
use crate::{CompileError, CompileStats, OptLevel};
use ember_runtime::aot::{
    abi_version_string, symbol_name, Manifest, ManifestEntry, OptInfo, TargetInfo, EMBER_VERSION,
    MANIFEST_FORMAT, MANIFEST_SECTION,
};
use inkwell::context::Context;
use inkwell::targets::{CodeModel, FileType, RelocMode, Target, TargetMachine};
use revm::primitives::{hardfork::SpecId, keccak256, B256};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Which CPU AOT code is generated for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TargetCpu {
    /// The architecture's baseline (portable: any x86-64 machine).
    #[default]
    Generic,
    /// This machine's CPU and features (fastest; refused on hosts lacking a feature).
    Native,
}

impl std::str::FromStr for TargetCpu {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "generic" => Ok(Self::Generic),
            "native" => Ok(Self::Native),
            _ => Err(format!(
                "invalid target CPU {s:?} (expected generic or native)"
            )),
        }
    }
}

/// Settings of an AOT build.
#[derive(Clone, Debug)]
pub struct AotOptions {
    /// Requested optimisation level.
    pub opt: OptLevel,
    /// Contracts with more sections than this use the fast tier (see
    /// [`effective_opt_with`]).
    pub fast_above: usize,
    /// CPU to generate code for.
    pub target_cpu: TargetCpu,
    /// Worker threads.
    pub jobs: usize,
}

impl Default for AotOptions {
    fn default() -> Self {
        Self {
            opt: OptLevel::O2,
            fast_above: crate::jit::DEFAULT_FAST_ABOVE,
            target_cpu: TargetCpu::Generic,
            jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// One contract to compile.
#[derive(Clone, Debug)]
pub struct AotContract {
    /// The bytecode.
    pub code: Vec<u8>,
    /// Fork to compile for.
    pub spec: SpecId,
}

/// A compiled contract: its manifest entry and object file.
#[derive(Clone, Debug)]
pub struct CompiledObject {
    /// The manifest entry.
    pub entry: ManifestEntry,
    /// ELF relocatable object defining `entry.symbol`.
    pub object: Vec<u8>,
    /// What compiling it cost.
    pub stats: CompileStats,
}

/// A contract that did not compile (left out of the library; it runs in the interpreter).
#[derive(Clone, Debug)]
pub struct AotFailure {
    /// keccak256 of the bytecode.
    pub code_hash: B256,
    /// Fork.
    pub spec: SpecId,
    /// Bytecode length.
    pub code_len: usize,
    /// Why.
    pub reason: String,
}

/// The objects of an AOT build, before linking.
#[derive(Debug)]
pub struct ObjectSet {
    /// What the code targets.
    pub target: TargetInfo,
    /// Optimisation settings.
    pub opt: OptInfo,
    /// Compiled contracts, in input order (duplicates removed).
    pub objects: Vec<CompiledObject>,
    /// Contracts that failed, in input order.
    pub failures: Vec<AotFailure>,
    /// Inputs that repeated an earlier (code hash, spec).
    pub duplicates: usize,
    /// Wall time of the parallel compilation.
    pub wall: Duration,
}

impl ObjectSet {
    /// Sum of per-contract compile times (CPU time across workers).
    pub fn compile_time(&self) -> Duration {
        self.objects.iter().map(|o| o.stats.total_time).sum()
    }

    /// The slowest contract: its entry and compile time.
    pub fn slowest(&self) -> Option<(&ManifestEntry, Duration)> {
        self.objects
            .iter()
            .max_by_key(|o| o.stats.total_time)
            .map(|o| (&o.entry, o.stats.total_time))
    }

    /// The manifest describing these objects, linked by `linker`.
    pub fn manifest(&self, linker: &Linker) -> Manifest {
        let (major, minor, patch) = inkwell::support::get_llvm_version();
        Manifest {
            format: MANIFEST_FORMAT,
            ember_version: EMBER_VERSION.to_string(),
            llvm_version: format!("{major}.{minor}.{patch}"),
            abi_version: abi_version_string(),
            target: self.target.clone(),
            opt: self.opt.clone(),
            linker: linker.description.clone(),
            entries: self.objects.iter().map(|o| o.entry.clone()).collect(),
        }
    }
}

/// A target machine for AOT code at the machine-code level of `opt`.
fn aot_target_machine(cpu: TargetCpu, opt: OptLevel) -> Result<TargetMachine, CompileError> {
    init_llvm()?;
    let triple = TargetMachine::get_default_triple();
    let target = Target::from_triple(&triple).map_err(|e| CompileError::Llvm(e.to_string()))?;
    let (cpu_name, features) = match cpu {
        TargetCpu::Generic => ("generic".to_string(), String::new()),
        TargetCpu::Native => (
            TargetMachine::get_host_cpu_name().to_string(),
            TargetMachine::get_host_cpu_features().to_string(),
        ),
    };
    target
        .create_target_machine(
            &triple,
            &cpu_name,
            &features,
            llvm_opt(opt),
            RelocMode::PIC,
            CodeModel::Default,
        )
        .ok_or_else(|| CompileError::Llvm("could not create a target machine".into()))
}

/// This host's CPU features as LLVM names them (`+a,-b,...`), for verifying native libraries.
pub fn host_cpu_features() -> Result<String, CompileError> {
    init_llvm()?;
    Ok(TargetMachine::get_host_cpu_features().to_string())
}

/// The target description a build with `cpu` records.
pub fn target_info(cpu: TargetCpu) -> Result<TargetInfo, CompileError> {
    let tm = aot_target_machine(cpu, OptLevel::O0)?;
    Ok(TargetInfo {
        triple: tm.get_triple().as_str().to_string_lossy().into_owned(),
        cpu: tm.get_cpu().to_string(),
        features: tm.get_feature_string().to_string_lossy().into_owned(),
    })
}

/// Per-worker LLVM state: a context (recreated every [`CONTEXT_REUSE`] modules, since
/// constants and types live as long as their context) and one target machine per level.
struct Worker {
    cx: Option<Box<Context>>,
    used: usize,
    machines: Vec<(OptLevel, TargetMachine)>,
    cpu: TargetCpu,
}

const CONTEXT_REUSE: usize = 256;

impl Worker {
    fn compile(
        &mut self,
        c: &AotContract,
        hash: B256,
        opts: &AotOptions,
    ) -> Result<CompiledObject, CompileError> {
        let t_start = Instant::now();
        let a = crate::analyze(&c.code, c.spec)?;
        let analysis_time = t_start.elapsed();
        let opt = effective_opt_with(&a, opts.opt, opts.fast_above);
        // One target machine per machine-code level (O0/Fast share "none").
        let key = match opt {
            OptLevel::Fast => OptLevel::O0,
            o => o,
        };
        let tm_index = match self.machines.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                self.machines
                    .push((key, aot_target_machine(self.cpu, opt)?));
                self.machines.len() - 1
            }
        };
        if self.cx.is_none() || self.used >= CONTEXT_REUSE {
            self.cx = None;
            let cx = Box::new(Context::create());
            discard_value_names(&cx);
            self.cx = Some(cx);
            self.used = 0;
        }
        self.used += 1;
        let cx = self.cx.as_deref().expect("created above");
        let tm = &self.machines[tm_index].1;
        let symbol = symbol_name(&hash, c.spec);
        let module = cx.create_module(&symbol);
        let phases = build_module(cx, &module, &a, &symbol, tm, opt)?;
        let t_emit = Instant::now();
        let buf = tm
            .write_to_memory_buffer(&module, FileType::Object)
            .map_err(|e| CompileError::Llvm(e.to_string()))?;
        let object = buf.as_slice().to_vec();
        drop(module);
        let emit_time = t_emit.elapsed();
        let stats = CompileStats::new(
            &a,
            opt,
            c.code.len(),
            t_start,
            analysis_time,
            phases,
            emit_time,
        );
        Ok(CompiledObject {
            entry: ManifestEntry {
                code_hash: hash,
                spec: c.spec.to_string(),
                symbol,
                code_len: c.code.len(),
                opt: format!("{opt:?}"),
            },
            object,
            stats,
        })
    }
}

/// Compiles `contracts` to object code on `opts.jobs` threads, largest first. `on_done` is
/// called after each contract (with the number finished so far) for progress reporting.
/// Contracts that fail are listed in [`ObjectSet::failures`]; the rest are still compiled.
pub fn compile_objects(
    contracts: &[AotContract],
    opts: &AotOptions,
    on_done: &(dyn Fn(usize) + Sync),
) -> Result<ObjectSet, CompileError> {
    let t0 = Instant::now();
    let target = target_info(opts.target_cpu)?;
    // Deduplicate by (code hash, spec), keeping input order.
    let mut seen = HashSet::new();
    let mut work: Vec<(usize, B256)> = Vec::with_capacity(contracts.len());
    for (i, c) in contracts.iter().enumerate() {
        let h = keccak256(&c.code);
        if seen.insert((h, c.spec)) {
            work.push((i, h));
        }
    }
    let duplicates = contracts.len() - work.len();
    // Largest first, so the long poles start early and the workers finish together.
    let mut order: Vec<usize> = (0..work.len()).collect();
    order.sort_by_key(|&w| std::cmp::Reverse(contracts[work[w].0].code.len()));
    let results: Mutex<Vec<(usize, Result<CompiledObject, String>)>> =
        Mutex::new(Vec::with_capacity(work.len()));
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.max(1).min(work.len().max(1)) {
            s.spawn(|| {
                let mut worker = Worker {
                    cx: None,
                    used: 0,
                    machines: Vec::new(),
                    cpu: opts.target_cpu,
                };
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&w) = order.get(k) else { break };
                    let (i, h) = work[w];
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        worker.compile(&contracts[i], h, opts)
                    }));
                    let r = match r {
                        Ok(Ok(o)) => Ok(o),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(p) => {
                            // The context may be in any state after a panic: start afresh.
                            worker.cx = None;
                            worker.machines.clear();
                            Err(format!("internal compiler error: {}", panic_message(&p)))
                        }
                    };
                    results
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((w, r));
                    on_done(done.fetch_add(1, Ordering::Relaxed) + 1);
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_by_key(|(w, _)| *w);
    let mut objects = Vec::new();
    let mut failures = Vec::new();
    for (w, r) in results {
        let (i, h) = work[w];
        match r {
            Ok(o) => objects.push(o),
            Err(reason) => failures.push(AotFailure {
                code_hash: h,
                spec: contracts[i].spec,
                code_len: contracts[i].code.len(),
                reason,
            }),
        }
    }
    Ok(ObjectSet {
        target,
        opt: OptInfo {
            level: format!("{:?}", opts.opt),
            fast_above: opts.fast_above,
        },
        objects,
        failures,
        duplicates,
        wall: t0.elapsed(),
    })
}

/// The message of a caught panic (`&str` or `String` payloads; `"panic"` otherwise).
pub fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

/// How the linker is driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkerKind {
    /// LLVM's `ld.lld`, called directly.
    Lld,
    /// The system C compiler driver (`cc -shared -nostdlib`).
    Cc,
}

/// The linker an AOT build uses.
#[derive(Clone, Debug)]
pub struct Linker {
    /// Program to run.
    pub program: PathBuf,
    /// How to drive it.
    pub kind: LinkerKind,
    /// First line of its `--version` output (recorded in the manifest).
    pub description: String,
}

impl Linker {
    /// Finds a linker (see the module docs for the search order).
    pub fn detect() -> Result<Self, CompileError> {
        let mut candidates: Vec<(PathBuf, LinkerKind)> = Vec::new();
        if let Some(p) = std::env::var_os("EMBER_LINKER") {
            let p = PathBuf::from(p);
            let kind = if p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().contains("lld"))
            {
                LinkerKind::Lld
            } else {
                LinkerKind::Cc
            };
            return Self::probe(&p, kind).ok_or_else(|| {
                CompileError::Llvm(format!(
                    "EMBER_LINKER={} does not run (`--version` failed)",
                    p.display()
                ))
            });
        }
        if let Some(prefix) = std::env::var_os("LLVM_SYS_221_PREFIX") {
            candidates.push((PathBuf::from(prefix).join("bin/ld.lld"), LinkerKind::Lld));
        }
        candidates.push(("/usr/lib/llvm-22/bin/ld.lld".into(), LinkerKind::Lld));
        candidates.push(("ld.lld-22".into(), LinkerKind::Lld));
        candidates.push(("ld.lld".into(), LinkerKind::Lld));
        candidates.push(("cc".into(), LinkerKind::Cc));
        candidates
            .iter()
            .find_map(|(p, k)| Self::probe(p, *k))
            .ok_or_else(|| {
                CompileError::Llvm(
                    "no linker found: install lld-22 (apt-get install lld-22) or a C compiler, \
                     or set EMBER_LINKER"
                        .into(),
                )
            })
    }

    fn probe(program: &Path, kind: LinkerKind) -> Option<Self> {
        let out = Command::new(program).arg("--version").output().ok()?;
        if !out.status.success() {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let first = text.lines().next().unwrap_or("").trim().to_string();
        Some(Self {
            program: program.to_path_buf(),
            kind,
            description: format!("{} ({})", first, program.display()),
        })
    }
}

/// Writes the ELF object holding `manifest` in [`MANIFEST_SECTION`] (not loaded at run time),
/// for the architecture of `like` (an object it is linked with) or else of the manifest's
/// triple.
pub fn manifest_object(manifest: &Manifest, like: Option<&[u8]>) -> Result<Vec<u8>, CompileError> {
    use object::write::Object;
    use object::{Architecture, BinaryFormat, Endianness, Object as _, SectionKind};
    let from_object = like
        .and_then(|o| object::File::parse(o).ok())
        .map(|f| f.architecture());
    let arch = match from_object {
        Some(a) => a,
        None => match manifest.target.triple.split('-').next() {
            Some("x86_64") => Architecture::X86_64,
            Some("aarch64") => Architecture::Aarch64,
            Some("riscv64") => Architecture::Riscv64,
            other => {
                return Err(CompileError::Unsupported(format!(
                    "AOT libraries for architecture {other:?}"
                )))
            }
        },
    };
    let json = serde_json::to_vec(manifest)
        .map_err(|e| CompileError::Llvm(format!("cannot encode the manifest: {e}")))?;
    let mut obj = Object::new(BinaryFormat::Elf, arch, Endianness::Little);
    let id = obj.add_section(
        Vec::new(),
        MANIFEST_SECTION.as_bytes().to_vec(),
        SectionKind::Other,
    );
    obj.append_section_data(id, &json, 1);
    obj.write()
        .map_err(|e| CompileError::Llvm(format!("cannot write the manifest object: {e}")))
}

/// What linking produced.
#[derive(Clone, Debug)]
pub struct LinkReport {
    /// The library written.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Time spent writing objects and linking.
    pub time: Duration,
}

/// Links `objects` and the manifest into the shared object `out`. The library is written
/// next to `out` and renamed over it only once complete, so a failed link leaves any previous
/// file untouched.
pub fn link(
    objects: &[&[u8]],
    manifest: &Manifest,
    linker: &Linker,
    out: &Path,
) -> Result<LinkReport, CompileError> {
    let t0 = Instant::now();
    let err = |what: &str, e: &dyn std::fmt::Display| CompileError::Link(format!("{what}: {e}"));
    let dir = tempfile::Builder::new()
        .prefix("ember-aot-")
        .tempdir()
        .map_err(|e| err("cannot create a temporary directory", &e))?;
    let mut rsp = String::new();
    let mut write_obj = |name: String, bytes: &[u8]| -> Result<(), CompileError> {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).map_err(|e| err(&format!("cannot write {}", p.display()), &e))?;
        rsp.push_str(&quote_rsp(&p));
        rsp.push('\n');
        Ok(())
    };
    for (i, o) in objects.iter().enumerate() {
        write_obj(format!("c{i}.o"), o)?;
    }
    write_obj(
        "manifest.o".into(),
        &manifest_object(manifest, objects.first().copied())?,
    )?;
    let rsp_path = dir.path().join("objects.rsp");
    std::fs::write(&rsp_path, rsp).map_err(|e| err("cannot write the response file", &e))?;
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = out
        .file_name()
        .ok_or_else(|| CompileError::Link(format!("{} is not a file path", out.display())))?;
    let tmp_out = parent.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let mut cmd = Command::new(&linker.program);
    match linker.kind {
        LinkerKind::Lld => {
            cmd.args([
                "-shared",
                "--hash-style=gnu",
                "-z",
                "noexecstack",
                "-z",
                "relro",
            ]);
            cmd.args(["-z", "now", "--build-id=sha1", "-o"]);
        }
        LinkerKind::Cc => {
            cmd.args(["-shared", "-nostdlib", "-Wl,-z,noexecstack", "-Wl,-z,relro"]);
            cmd.args(["-Wl,-z,now", "-Wl,--build-id=sha1", "-o"]);
        }
    }
    cmd.arg(&tmp_out).arg(format!("@{}", rsp_path.display()));
    let output = cmd
        .output()
        .map_err(|e| err(&format!("cannot run {}", linker.program.display()), &e))?;
    if !output.status.success() {
        let _ = std::fs::remove_file(&tmp_out);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().take(20).collect();
        return Err(CompileError::Link(format!(
            "{} failed ({}): {}",
            linker.program.display(),
            output.status,
            tail.join("\n")
        )));
    }
    std::fs::rename(&tmp_out, out).map_err(|e| {
        let _ = std::fs::remove_file(&tmp_out);
        err(&format!("cannot move the library to {}", out.display()), &e)
    })?;
    let size = std::fs::metadata(out)
        .map_err(|e| err(&format!("cannot stat {}", out.display()), &e))?
        .len();
    Ok(LinkReport {
        path: out.to_path_buf(),
        size,
        time: t0.elapsed(),
    })
}

/// Quotes a path for an lld/GNU response file.
fn quote_rsp(p: &Path) -> String {
    let s = p.to_string_lossy();
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c))
    {
        s.into_owned()
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// A finished AOT build.
#[derive(Debug)]
pub struct LibraryReport {
    /// The compiled objects (object bytes dropped) and failures.
    pub set: ObjectSet,
    /// The manifest embedded in the library.
    pub manifest: Manifest,
    /// The link step.
    pub link: LinkReport,
}

/// Compiles `contracts` and links them into the shared object `out`.
pub fn build_library(
    contracts: &[AotContract],
    opts: &AotOptions,
    out: &Path,
    on_done: &(dyn Fn(usize) + Sync),
) -> Result<LibraryReport, CompileError> {
    let linker = Linker::detect()?;
    let mut set = compile_objects(contracts, opts, on_done)?;
    if set.objects.is_empty() {
        let first = set
            .failures
            .first()
            .map(|f| {
                format!(
                    " (first: {} ({} bytes): {})",
                    f.code_hash, f.code_len, f.reason
                )
            })
            .unwrap_or_default();
        return Err(CompileError::Link(format!(
            "none of the {} contract(s) compiled{first}; no library written",
            set.failures.len()
        )));
    }
    let manifest = set.manifest(&linker);
    let objects: Vec<&[u8]> = set.objects.iter().map(|o| o.object.as_slice()).collect();
    let link = link(&objects, &manifest, &linker, out)?;
    for o in &mut set.objects {
        o.object = Vec::new();
    }
    Ok(LibraryReport {
        set,
        manifest,
        link,
    })
}
