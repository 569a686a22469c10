//! Ahead-of-time libraries: the manifest Ember embeds in a shared object, and the loader that
//! verifies a library before any of its code can run.
//!
//! A library is an ELF shared object holding one function per (code hash, spec), each with
//! the [`NativeFn`] ABI, plus a non-loaded section [`MANIFEST_SECTION`] holding a JSON
//! [`Manifest`]. [`AotLibrary::load`] checks, in this order and *before* the dynamic loader
//! sees the file (so not even an initializer can run):
//!
//! 1. the file is a complete ELF shared object for this machine's architecture;
//! 2. it carries a manifest whose format version, Ember version, runtime ABI version, target
//!    triple and CPU features match this process and host;
//! 3. it has no initializers or finalizers (`DT_INIT`, `DT_INIT_ARRAY`, `DT_PREINIT_ARRAY`,
//!    `DT_FINI`, `DT_FINI_ARRAY`), needs no other library (`DT_NEEDED`) and imports nothing
//!    but the memory primitives in [`ALLOWED_IMPORTS`];
//! 4. every manifest entry names a defined, non-empty function symbol, and no (code hash,
//!    spec) appears twice.
//!
//! Only then is it opened (`dlopen` with `RTLD_NOW | RTLD_LOCAL`, through the already-open
//! file descriptor, so the file checked is the file loaded) and its symbols resolved. Loaded
//! libraries are never unloaded, and their descriptors never closed: function pointers handed
//! out stay valid for the life of the process (each load costs one file descriptor).
//!
//! What an embedder links: nothing beyond this crate. Generated code reaches every builtin
//! through the table in [`EvmContext::builtins`](crate::EvmContext), which the runtime fills
//! in for each call, so a library imports no Ember symbol; the only imports LLVM may emit are
//! `memcpy`/`memmove`/`memset`/`memcmp`/`bcmp`, which the C library of any Rust process
//! exports.
//!
//! These checks establish that a library was built by this Ember for this ABI and host and
//! cannot run code at load time; they do not establish who built it. Distribute libraries over
//! a channel you trust (or sign them): a deliberately crafted library can still contain
//! arbitrary code behind a valid manifest.

use crate::abi::{NativeFn, ABI_VERSION};
use crate::evm::NativeProvider;
use object::elf;
use object::read::elf::{Dyn, ElfFile64, FileHeader, ProgramHeader};
use object::{Object, ObjectSection, ObjectSymbol, ReadRef, SymbolKind};
use revm::primitives::{hardfork::SpecId, B256};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Name of the ELF section holding the JSON manifest (not loaded into memory).
pub const MANIFEST_SECTION: &str = ".ember_manifest";

/// Version of the manifest format and library layout.
pub const MANIFEST_FORMAT: u32 = 1;

/// The Ember version that builds and loads libraries; a library from any other version is
/// refused (code generation and builtin semantics may differ between versions).
pub const EMBER_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Largest manifest the loader parses.
pub const MAX_MANIFEST_BYTES: usize = 256 << 20;

/// The only undefined symbols a library may have: memory primitives LLVM lowers large copies
/// and fills to.
pub const ALLOWED_IMPORTS: &[&str] = &["memcpy", "memmove", "memset", "memcmp", "bcmp"];

/// The symbol Ember gives the function for `code_hash` under `spec`.
pub fn symbol_name(code_hash: &B256, spec: SpecId) -> String {
    format!(
        "ember_{}_{}",
        spec.to_string().to_ascii_lowercase(),
        hex_digits(code_hash.as_slice())
    )
}

fn hex_digits(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The runtime ABI version as written in manifests.
pub fn abi_version_string() -> String {
    format!("{ABI_VERSION:#018x}")
}

/// The description of a library, embedded in it at [`MANIFEST_SECTION`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`] of the writer.
    pub format: u32,
    /// [`EMBER_VERSION`] of the writer.
    pub ember_version: String,
    /// LLVM version that generated the code (informational).
    pub llvm_version: String,
    /// [`abi_version_string`] of the writer: a hash of the context layout and builtin table.
    pub abi_version: String,
    /// What the code was compiled for.
    pub target: TargetInfo,
    /// Optimisation settings.
    pub opt: OptInfo,
    /// The linker that produced the shared object (informational).
    pub linker: String,
    /// One entry per compiled function.
    pub entries: Vec<ManifestEntry>,
}

/// Target of a library's code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetInfo {
    /// LLVM target triple, e.g. `x86_64-pc-linux-gnu`.
    pub triple: String,
    /// CPU name code was tuned and specialised for (`generic` for portable code).
    pub cpu: String,
    /// LLVM feature string the code may use (`+feature` entries are required of the host;
    /// empty for the architecture's baseline).
    pub features: String,
}

/// Optimisation settings of a library.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptInfo {
    /// Requested level (`O0`..`O3`, `Fast`).
    pub level: String,
    /// Contracts with more gas/stack sections than this were compiled in the fast tier.
    pub fast_above: usize,
}

/// One compiled contract.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestEntry {
    /// keccak256 of the bytecode.
    pub code_hash: B256,
    /// Fork the code was compiled for (revm's name, e.g. `Cancun`).
    pub spec: String,
    /// Symbol of the function.
    pub symbol: String,
    /// Bytecode length in bytes.
    pub code_len: usize,
    /// Optimisation level actually used for this contract.
    pub opt: String,
}

impl ManifestEntry {
    /// The entry's fork, if it names one revm knows.
    pub fn spec_id(&self) -> Option<SpecId> {
        self.spec.parse().ok()
    }
}

/// Why a library was refused. Every variant names what did not match.
#[derive(Debug, thiserror::Error)]
pub enum AotError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The library path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not an ELF file at all.
    #[error("not an ELF shared object (bad magic: {0})")]
    NotElf(String),
    /// An ELF file that cannot be parsed (truncated or corrupt).
    #[error("truncated or corrupt ELF file: {0}")]
    Malformed(String),
    /// An ELF file of the wrong kind or for another machine.
    #[error("{field} mismatch: library has {library}, this host needs {host}")]
    Mismatch {
        /// The field that differs (e.g. `ELF machine`, `abi_version`, `target.triple`).
        field: &'static str,
        /// The library's value.
        library: String,
        /// What this process accepts.
        host: String,
    },
    /// No manifest section: not a library built by Ember.
    #[error("no {MANIFEST_SECTION} section: not an Ember AOT library")]
    NoManifest,
    /// The manifest is not valid.
    #[error("invalid manifest: {0}")]
    BadManifest(String),
    /// The library would run code or pull in other libraries when loaded.
    #[error("refused: the library {0}")]
    Unsafe(String),
    /// A manifest entry whose symbol is missing or not a function.
    #[error("entry {code_hash} ({spec}): {problem}")]
    BadEntry {
        /// The entry's code hash.
        code_hash: B256,
        /// The entry's fork.
        spec: String,
        /// What is wrong.
        problem: String,
    },
    /// The dynamic loader failed.
    #[error("dynamic loader: {0}")]
    Loader(String),
}

/// What the host offers, checked against a library's target.
#[derive(Clone, Debug)]
pub struct HostTarget {
    /// Architecture as Rust names it (`std::env::consts::ARCH`).
    pub arch: String,
    /// Operating system as Rust names it (`std::env::consts::OS`).
    pub os: String,
    /// LLVM names of the CPU features the host has (without `+`), or `None` to detect them
    /// (see [`detect_cpu_features`]).
    pub cpu_features: Option<HashSet<String>>,
}

impl Default for HostTarget {
    fn default() -> Self {
        Self {
            arch: std::env::consts::ARCH.to_string(),
            os: std::env::consts::OS.to_string(),
            cpu_features: None,
        }
    }
}

impl HostTarget {
    /// This host, with the CPU features given as an LLVM feature string (`+a,-b,+c`; what
    /// `LLVMGetHostCPUFeatures` returns). Tools that link LLVM use this for an exact answer.
    pub fn with_llvm_features(features: &str) -> Self {
        Self {
            cpu_features: Some(required_features(features).map(str::to_string).collect()),
            ..Self::default()
        }
    }
}

/// The `+feature` names of an LLVM feature string.
pub fn required_features(features: &str) -> impl Iterator<Item = &str> {
    features
        .split(',')
        .map(str::trim)
        .filter_map(|f| f.strip_prefix('+'))
        .filter(|f| !f.is_empty())
}

/// CPU features of this host that the runtime can detect without LLVM, by their LLVM names.
/// Features outside this set cannot be verified without LLVM: a library requiring one is
/// refused unless the embedder supplies [`HostTarget::cpu_features`].
pub fn detect_cpu_features() -> HashSet<String> {
    #[allow(unused_mut)]
    let mut set = HashSet::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! detect {
            ($($llvm:literal => $std:tt),* $(,)?) => {
                $( if std::arch::is_x86_feature_detected!($std) { set.insert($llvm.to_string()); } )*
            };
        }
        detect!(
            "sse" => "sse", "sse2" => "sse2", "sse3" => "sse3", "ssse3" => "ssse3",
            "sse4.1" => "sse4.1", "sse4.2" => "sse4.2", "sse4a" => "sse4a", "avx" => "avx",
            "avx2" => "avx2", "fma" => "fma", "f16c" => "f16c", "bmi" => "bmi1",
            "bmi2" => "bmi2", "lzcnt" => "lzcnt", "popcnt" => "popcnt", "adx" => "adx",
            "movbe" => "movbe", "aes" => "aes", "pclmul" => "pclmulqdq", "sha" => "sha",
            "rdrnd" => "rdrand", "rdseed" => "rdseed", "fxsr" => "fxsr", "xsave" => "xsave",
            "xsaveopt" => "xsaveopt", "xsavec" => "xsavec", "xsaves" => "xsaves",
            "cx16" => "cmpxchg16b", "avx512f" => "avx512f", "avx512cd" => "avx512cd",
            "avx512bw" => "avx512bw", "avx512dq" => "avx512dq", "avx512vl" => "avx512vl",
            "avx512ifma" => "avx512ifma", "avx512vbmi" => "avx512vbmi",
            "avx512vbmi2" => "avx512vbmi2", "avx512vnni" => "avx512vnni",
            "avx512bitalg" => "avx512bitalg", "avx512vpopcntdq" => "avx512vpopcntdq",
            "avx512bf16" => "avx512bf16", "avx512fp16" => "avx512fp16", "gfni" => "gfni",
            "vaes" => "vaes", "vpclmulqdq" => "vpclmulqdq", "tbm" => "tbm", "rtm" => "rtm",
            "ermsb" => "ermsb", "mmx" => "mmx",
        );
        // Architectural baseline of every x86-64 CPU.
        for f in ["64bit", "cmov", "cx8", "x87", "nopl"] {
            set.insert(f.to_string());
        }
    }
    set
}

/// The ELF machine number for a Rust architecture name.
fn elf_machine(arch: &str) -> Option<u16> {
    Some(match arch {
        "x86_64" => elf::EM_X86_64,
        "aarch64" => elf::EM_AARCH64,
        "riscv64" => elf::EM_RISCV,
        _ => return None,
    })
}

fn machine_name(m: u16) -> String {
    match m {
        elf::EM_X86_64 => "x86_64".into(),
        elf::EM_AARCH64 => "aarch64".into(),
        elf::EM_RISCV => "riscv".into(),
        elf::EM_386 => "i386".into(),
        elf::EM_ARM => "arm".into(),
        other => format!("machine {other}"),
    }
}

/// Whether an LLVM triple names `arch` and `os`.
fn triple_matches(triple: &str, arch: &str, os: &str) -> bool {
    let mut parts = triple.split('-');
    let t_arch = parts.next().unwrap_or("");
    let arch_ok = t_arch == arch || (arch == "x86_64" && t_arch == "x86_64h");
    arch_ok && triple.split('-').skip(1).any(|p| p.starts_with(os))
}

/// The result of [`verify`]: a library that passed every check, not yet opened.
#[derive(Clone, Debug)]
pub struct Verified {
    /// The manifest.
    pub manifest: Manifest,
    /// Entries with their parsed specs, in manifest order.
    pub entries: Vec<(B256, SpecId, String)>,
    /// File size in bytes.
    pub file_size: u64,
}

/// Reads the manifest of the library in `data` after checking only that it is an ELF file
/// with a manifest section (for inspection: nothing else is verified).
pub fn read_manifest(data: &[u8]) -> Result<Manifest, AotError> {
    let file = parse_elf(data)?;
    manifest_of(&file)
}

type Elf<'data, R> = ElfFile64<'data, object::Endianness, R>;

fn parse_elf<'data, R: ReadRef<'data>>(data: R) -> Result<Elf<'data, R>, AotError> {
    let len = data
        .len()
        .map_err(|()| AotError::Malformed("cannot read the file".into()))?;
    let head = data
        .read_bytes_at(0, len.min(5))
        .map_err(|()| AotError::Malformed("cannot read the file header".into()))?;
    if !head.starts_with(&elf::ELFMAG) {
        let hex: String = head.iter().take(4).map(|b| format!("{b:02x}")).collect();
        return Err(AotError::NotElf(if head.is_empty() {
            "empty file".into()
        } else {
            format!("0x{hex}")
        }));
    }
    if head.get(4) != Some(&elf::ELFCLASS64) {
        return Err(AotError::Mismatch {
            field: "ELF class",
            library: "32-bit or unknown".into(),
            host: "64-bit".into(),
        });
    }
    ElfFile64::parse(data).map_err(|e| AotError::Malformed(e.to_string()))
}

fn manifest_of<'data, R: ReadRef<'data>>(file: &Elf<'data, R>) -> Result<Manifest, AotError> {
    let section = file
        .section_by_name(MANIFEST_SECTION)
        .ok_or(AotError::NoManifest)?;
    if section.size() as usize > MAX_MANIFEST_BYTES {
        return Err(AotError::BadManifest(format!(
            "{} bytes, more than the {MAX_MANIFEST_BYTES}-byte limit",
            section.size()
        )));
    }
    let bytes = section
        .data()
        .map_err(|e| AotError::Malformed(format!("manifest section: {e}")))?;
    serde_json::from_slice(bytes).map_err(|e| AotError::BadManifest(e.to_string()))
}

/// Checks the library in `data` against this process and `host` (see the module docs) without
/// loading it.
pub fn verify(data: &[u8], host: &HostTarget) -> Result<Verified, AotError> {
    verify_ref(data, host)
}

/// [`verify`] over any [`ReadRef`] (a byte slice, or a [`object::ReadCache`] over a file so
/// that only headers, symbol tables and the manifest are read).
pub fn verify_ref<'data, R: ReadRef<'data>>(
    data: R,
    host: &HostTarget,
) -> Result<Verified, AotError> {
    let file_size = data
        .len()
        .map_err(|()| AotError::Malformed("cannot read the file".into()))?;
    let file = parse_elf(data)?;
    let endian = file.endian();
    let header = file.elf_header();
    let e_type = header.e_type(endian);
    if e_type != elf::ET_DYN {
        return Err(AotError::Mismatch {
            field: "ELF type",
            library: match e_type {
                elf::ET_REL => "a relocatable object".into(),
                elf::ET_EXEC => "an executable".into(),
                t => format!("type {t}"),
            },
            host: "a shared object".into(),
        });
    }
    let machine = header.e_machine(endian);
    if elf_machine(&host.arch) != Some(machine) {
        return Err(AotError::Mismatch {
            field: "ELF machine",
            library: machine_name(machine),
            host: host.arch.clone(),
        });
    }
    let manifest = manifest_of(&file)?;
    check_manifest(&manifest, host)?;
    check_dynamic(&file, data)?;
    let entries = check_entries(&file, &manifest)?;
    Ok(Verified {
        manifest,
        entries,
        file_size,
    })
}

fn check_manifest(m: &Manifest, host: &HostTarget) -> Result<(), AotError> {
    let mismatch = |field, library: &str, host: &str| AotError::Mismatch {
        field,
        library: library.to_string(),
        host: host.to_string(),
    };
    if m.format != MANIFEST_FORMAT {
        return Err(mismatch(
            "format",
            &m.format.to_string(),
            &MANIFEST_FORMAT.to_string(),
        ));
    }
    if m.ember_version != EMBER_VERSION {
        return Err(mismatch("ember_version", &m.ember_version, EMBER_VERSION));
    }
    if m.abi_version != abi_version_string() {
        return Err(mismatch(
            "abi_version",
            &m.abi_version,
            &abi_version_string(),
        ));
    }
    if !triple_matches(&m.target.triple, &host.arch, &host.os) {
        return Err(mismatch(
            "target.triple",
            &m.target.triple,
            &format!("{}-*-{}", host.arch, host.os),
        ));
    }
    let have = host
        .cpu_features
        .clone()
        .unwrap_or_else(detect_cpu_features);
    let missing: Vec<&str> = required_features(&m.target.features)
        .filter(|f| !have.contains(*f))
        .collect();
    if !missing.is_empty() {
        let how = if host.cpu_features.is_some() {
            "this CPU lacks them"
        } else {
            "not present or not detectable without LLVM on this CPU"
        };
        return Err(AotError::Mismatch {
            field: "target.features",
            library: format!("+{} (cpu {})", missing.join(",+"), m.target.cpu),
            host: format!("{how}; rebuild with --target-cpu generic"),
        });
    }
    Ok(())
}

fn check_dynamic<'data, R: ReadRef<'data>>(file: &Elf<'data, R>, data: R) -> Result<(), AotError> {
    let endian = file.endian();
    let mut found = false;
    for ph in file.elf_program_headers() {
        let Some(dyns) = ph
            .dynamic(endian, data)
            .map_err(|e| AotError::Malformed(e.to_string()))?
        else {
            continue;
        };
        found = true;
        for d in dyns {
            let tag = d.tag(endian);
            let is = |t: i64| tag == t;
            let what = if is(elf::DT_NEEDED) {
                "needs another shared library (DT_NEEDED)"
            } else if is(elf::DT_INIT) || is(elf::DT_INIT_ARRAY) || is(elf::DT_PREINIT_ARRAY) {
                "has initializers that would run when it is loaded"
            } else if is(elf::DT_FINI) || is(elf::DT_FINI_ARRAY) {
                "has finalizers that would run at exit"
            } else {
                continue;
            };
            return Err(AotError::Unsafe(what.into()));
        }
    }
    if !found {
        return Err(AotError::Malformed("no dynamic segment".into()));
    }
    for sym in file.dynamic_symbols() {
        if !sym.is_undefined() {
            continue;
        }
        let name = sym.name().map_err(|e| AotError::Malformed(e.to_string()))?;
        if name.is_empty() || ALLOWED_IMPORTS.contains(&name) {
            continue;
        }
        return Err(AotError::Unsafe(format!(
            "imports {name:?} (only {} are allowed)",
            ALLOWED_IMPORTS.join(", ")
        )));
    }
    Ok(())
}

fn check_entries<'data, R: ReadRef<'data>>(
    file: &Elf<'data, R>,
    m: &Manifest,
) -> Result<Vec<(B256, SpecId, String)>, AotError> {
    let mut defined: HashMap<&str, (SymbolKind, u64)> = HashMap::new();
    for sym in file.dynamic_symbols() {
        if sym.is_undefined() {
            continue;
        }
        if let Ok(name) = sym.name() {
            defined.insert(name, (sym.kind(), sym.size()));
        }
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(m.entries.len());
    for e in &m.entries {
        let bad = |problem: String| AotError::BadEntry {
            code_hash: e.code_hash,
            spec: e.spec.clone(),
            problem,
        };
        let spec = e
            .spec_id()
            .ok_or_else(|| bad(format!("unknown spec {:?}", e.spec)))?;
        if !seen.insert((e.code_hash, spec)) {
            return Err(bad("listed twice".into()));
        }
        match defined.get(e.symbol.as_str()) {
            None => return Err(bad(format!("symbol {} is missing", e.symbol))),
            Some((kind, _)) if *kind != SymbolKind::Text => {
                return Err(bad(format!(
                    "symbol {} is not a function ({kind:?})",
                    e.symbol
                )))
            }
            Some((_, 0)) => return Err(bad(format!("symbol {} is empty", e.symbol))),
            Some(_) => {}
        }
        out.push((e.code_hash, spec, e.symbol.clone()));
    }
    Ok(out)
}

/// Timings of a load.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadStats {
    /// Reading the file.
    pub read: Duration,
    /// Every check of [`verify`].
    pub verify: Duration,
    /// `dlopen` and resolving every symbol.
    pub open: Duration,
}

/// A verified, loaded library; implements [`NativeProvider`].
pub struct AotLibrary {
    path: PathBuf,
    manifest: Manifest,
    fns: HashMap<(B256, SpecId), NativeFn>,
    file_size: u64,
    stats: LoadStats,
}

impl std::fmt::Debug for AotLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AotLibrary")
            .field("path", &self.path)
            .field("entries", &self.fns.len())
            .finish()
    }
}

impl AotLibrary {
    /// Verifies (see the module docs) and loads the library at `path`.
    pub fn load(path: &Path, host: &HostTarget) -> Result<Self, AotError> {
        let io = |source| AotError::Io {
            path: path.to_path_buf(),
            source,
        };
        let t0 = Instant::now();
        let file = std::fs::File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(AotError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other("not a regular file"),
            });
        }
        // Read only what verification needs (headers, dynamic table, symbols, manifest): a
        // library of thousands of contracts is hundreds of MiB of code.
        let cache = object::ReadCache::new(file);
        let t1 = Instant::now();
        let verified = verify_ref(&cache, host)?;
        let t2 = Instant::now();
        let file = cache.into_inner();
        // Load through the descriptor we read from: the inode that was verified is the one
        // mapped, even if the path is replaced in between.
        #[cfg(target_os = "linux")]
        let open_path = {
            use std::os::fd::AsRawFd;
            PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
        };
        #[cfg(not(target_os = "linux"))]
        let open_path = path.to_path_buf();
        let flags = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL;
        // SAFETY: the file was verified above to be a shared object for this machine with no
        // initializers, finalizers or library dependencies, importing only libc memory
        // primitives; opening it runs no code. It is never closed (see below).
        let lib = unsafe { libloading::os::unix::Library::open(Some(&open_path), flags) }
            .map_err(|e| AotError::Loader(e.to_string()))?;
        // The descriptor stays open for the life of the process, like the mapping: the
        // dynamic loader identifies loaded objects by the name they were opened under, so a
        // closed and reused descriptor number would make a later `/proc/self/fd/N` open
        // return this library instead of the new one.
        std::mem::forget(file);
        let mut fns = HashMap::with_capacity(verified.entries.len());
        for (hash, spec, symbol) in &verified.entries {
            // SAFETY: the manifest (checked against this ABI version) declares the symbol a
            // function with the `NativeFn` signature, and `verify` found it defined as a
            // function; the library stays mapped for the process lifetime.
            let f: NativeFn = unsafe {
                let s = lib
                    .get::<NativeFn>(symbol.as_bytes())
                    .map_err(|e| AotError::BadEntry {
                        code_hash: *hash,
                        spec: spec.to_string(),
                        problem: format!("cannot resolve {symbol}: {e}"),
                    })?;
                *s
            };
            fns.insert((*hash, *spec), f);
        }
        // Never unloaded: function pointers may be copied anywhere (caches, other threads).
        std::mem::forget(lib);
        Ok(Self {
            path: path.to_path_buf(),
            manifest: verified.manifest,
            fns,
            file_size: verified.file_size,
            stats: LoadStats {
                read: t1 - t0,
                verify: t2 - t1,
                open: t2.elapsed(),
            },
        })
    }

    /// The library's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Where it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of functions.
    pub fn len(&self) -> usize {
        self.fns.len()
    }

    /// Whether it holds no function.
    pub fn is_empty(&self) -> bool {
        self.fns.is_empty()
    }

    /// File size in bytes.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// How long reading, verifying and opening took.
    pub fn load_stats(&self) -> LoadStats {
        self.stats
    }

    /// Whether the library has a function for `code_hash` under `spec`.
    pub fn contains(&self, code_hash: &B256, spec: SpecId) -> bool {
        self.fns.contains_key(&(*code_hash, spec))
    }
}

impl NativeProvider for AotLibrary {
    fn native_fn(&self, code_hash: &B256, spec: SpecId) -> Option<NativeFn> {
        self.fns.get(&(*code_hash, spec)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbol_names() {
        let h = B256::repeat_byte(0xab);
        let s = symbol_name(&h, SpecId::CANCUN);
        assert_eq!(s, format!("ember_cancun_{}", "ab".repeat(32)));
        assert_eq!(
            symbol_name(&h, SpecId::SPURIOUS_DRAGON),
            format!("ember_spurious_{}", "ab".repeat(32))
        );
    }

    #[test]
    fn spec_names_round_trip() {
        for id in (0..=u8::MAX).filter_map(SpecId::try_from_u8) {
            let e = ManifestEntry {
                code_hash: B256::ZERO,
                spec: id.to_string(),
                symbol: String::new(),
                code_len: 0,
                opt: String::new(),
            };
            assert_eq!(e.spec_id(), Some(id), "{id:?}");
        }
    }

    #[test]
    fn triples() {
        assert!(triple_matches("x86_64-pc-linux-gnu", "x86_64", "linux"));
        assert!(triple_matches(
            "x86_64-unknown-linux-gnu",
            "x86_64",
            "linux"
        ));
        assert!(!triple_matches(
            "aarch64-unknown-linux-gnu",
            "x86_64",
            "linux"
        ));
        assert!(!triple_matches("x86_64-apple-darwin", "x86_64", "linux"));
    }

    #[test]
    fn features() {
        let f: Vec<&str> = required_features("+avx2,-avx512f,+bmi2,,+").collect();
        assert_eq!(f, ["avx2", "bmi2"]);
        #[cfg(target_arch = "x86_64")]
        assert!(detect_cpu_features().contains("sse2"));
    }

    #[test]
    fn refuses_non_elf_and_garbage() {
        assert!(matches!(
            verify(b"", &HostTarget::default()),
            Err(AotError::NotElf(_))
        ));
        assert!(matches!(
            verify(b"hello world", &HostTarget::default()),
            Err(AotError::NotElf(_))
        ));
        let mut junk = elf::ELFMAG.to_vec();
        junk.extend([elf::ELFCLASS64, 1, 1]);
        junk.resize(40, 0);
        assert!(matches!(
            verify(&junk, &HostTarget::default()),
            Err(AotError::Malformed(_))
        ));
    }
}
