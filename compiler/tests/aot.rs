//! AOT libraries: build, load, and every refusal the loader promises.

use ember_compiler::aot::{
    build_library, compile_objects, link, AotContract, AotOptions, Linker, ObjectSet, TargetCpu,
};
use ember_compiler::OptLevel;
use ember_runtime::aot::{verify, AotError, HostTarget, Manifest};
use ember_runtime::{AotLibrary, NativeProvider};
use revm::primitives::{hardfork::SpecId, keccak256};
use std::path::{Path, PathBuf};

fn contracts() -> Vec<AotContract> {
    let c = |hex: &str, spec| AotContract {
        code: hex::decode(hex).unwrap(),
        spec,
    };
    vec![
        // PUSH1 1 PUSH1 2 ADD PUSH1 0 MSTORE PUSH1 32 PUSH1 0 RETURN
        c("600160020160005260206000f3", SpecId::CANCUN),
        // a loop with a jump
        c("5b600160005401600055600056", SpecId::CANCUN),
        // the same code for another fork: a distinct entry
        c("600160020160005260206000f3", SpecId::LONDON),
        // a duplicate: compiled once
        c("600160020160005260206000f3", SpecId::CANCUN),
        // EOF: not compiled, reported
        c("ef000101000402000100010400000000800000fe", SpecId::CANCUN),
    ]
}

fn opts() -> AotOptions {
    AotOptions {
        opt: OptLevel::O1,
        jobs: 2,
        ..AotOptions::default()
    }
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ember-aot-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn objects() -> ObjectSet {
    compile_objects(&contracts(), &opts(), &|_| {}).unwrap()
}

/// Links `set` with its manifest changed by `edit`, and tries to load the result.
fn load_tampered(name: &str, edit: impl FnOnce(&mut Manifest)) -> Result<AotLibrary, AotError> {
    let set = objects();
    let linker = Linker::detect().unwrap();
    let mut m = set.manifest(&linker);
    edit(&mut m);
    let objs: Vec<&[u8]> = set.objects.iter().map(|o| o.object.as_slice()).collect();
    let out = tmp(name);
    link(&objs, &m, &linker, &out).unwrap();
    AotLibrary::load(&out, &HostTarget::default())
}

fn expect_mismatch(r: Result<AotLibrary, AotError>, want: &str) -> String {
    match r {
        Err(e @ AotError::Mismatch { field, .. }) if field == want => e.to_string(),
        Err(e) => panic!("expected a {want} mismatch, got: {e}"),
        Ok(_) => panic!("expected a {want} mismatch, the library loaded"),
    }
}

#[test]
fn builds_and_loads_a_library() {
    let out = tmp("ok.so");
    let progress = std::sync::atomic::AtomicUsize::new(0);
    let r = build_library(&contracts(), &opts(), &out, &|n| {
        progress.store(n, std::sync::atomic::Ordering::Relaxed)
    })
    .unwrap();
    assert_eq!(r.set.objects.len(), 3);
    assert_eq!(r.set.duplicates, 1);
    assert_eq!(r.set.failures.len(), 1);
    assert!(
        r.set.failures[0].reason.contains("EOF"),
        "{:?}",
        r.set.failures
    );
    assert_eq!(progress.load(std::sync::atomic::Ordering::Relaxed), 4);
    assert!(r.link.size > 0);
    let lib = AotLibrary::load(&out, &HostTarget::default()).unwrap();
    assert_eq!(lib.len(), 3);
    assert_eq!(lib.manifest(), &r.manifest);
    let cs = contracts();
    let h0 = keccak256(&cs[0].code);
    assert!(lib.native_fn(&h0, SpecId::CANCUN).is_some());
    assert!(lib.native_fn(&h0, SpecId::LONDON).is_some());
    assert!(lib.native_fn(&h0, SpecId::SHANGHAI).is_none());
    assert!(lib
        .native_fn(&keccak256(&cs[4].code), SpecId::CANCUN)
        .is_none());
    // Loading twice is fine (the second load maps its own copy).
    let again = AotLibrary::load(&out, &HostTarget::default()).unwrap();
    assert_eq!(again.len(), 3);
    // Native builds load on the machine that built them, given its LLVM feature list.
    let native = tmp("native.so");
    let o = AotOptions {
        target_cpu: TargetCpu::Native,
        ..opts()
    };
    let r = build_library(&contracts()[..1], &o, &native, &|_| {}).unwrap();
    assert!(!r.manifest.target.features.is_empty());
    let host = HostTarget::with_llvm_features(&r.manifest.target.features);
    AotLibrary::load(&native, &host).unwrap();
}

/// Regression: libraries are opened through `/proc/self/fd/N`; the dynamic loader matches
/// already-loaded objects by that name, so a reused descriptor number once returned the
/// previous library and every symbol of the next one failed to resolve.
#[test]
fn loads_many_different_libraries_in_one_process() {
    for (i, c) in contracts().into_iter().take(3).enumerate() {
        let out = tmp(&format!("many{i}.so"));
        let r = build_library(std::slice::from_ref(&c), &opts(), &out, &|_| {}).unwrap();
        assert_eq!(r.set.objects.len(), 1);
        let lib = AotLibrary::load(&out, &HostTarget::default())
            .unwrap_or_else(|e| panic!("library {i}: {e}"));
        assert!(lib.native_fn(&keccak256(&c.code), c.spec).is_some());
    }
}

#[test]
fn refuses_truncated_and_non_elf_files() {
    let out = tmp("full.so");
    build_library(&contracts()[..2], &opts(), &out, &|_| {}).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    for cut in [0, 3, 10, 64, bytes.len() / 2, bytes.len() - 1] {
        let p = tmp(&format!("cut{cut}.so"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let e = AotLibrary::load(&p, &HostTarget::default()).unwrap_err();
        assert!(
            matches!(
                e,
                AotError::NotElf(_) | AotError::Malformed(_) | AotError::NoManifest
            ),
            "cut at {cut}: {e}"
        );
    }
    let p = tmp("text.so");
    std::fs::write(&p, "this is not a library\n").unwrap();
    let e = AotLibrary::load(&p, &HostTarget::default()).unwrap_err();
    assert!(e.to_string().contains("not an ELF"), "{e}");
    let e = AotLibrary::load(Path::new("/nonexistent/lib.so"), &HostTarget::default()).unwrap_err();
    assert!(e.to_string().contains("cannot read"), "{e}");
    // A shared object without a manifest: not Ember's.
    let e = verify(
        &std::fs::read(find_system_so()).unwrap(),
        &HostTarget::default(),
    )
    .unwrap_err();
    assert!(matches!(e, AotError::NoManifest), "{e}");
    // A relocatable object is not a shared object.
    let set = compile_objects(&contracts()[..1], &opts(), &|_| {}).unwrap();
    let e = verify(&set.objects[0].object, &HostTarget::default()).unwrap_err();
    assert!(e.to_string().contains("ELF type"), "{e}");
}

fn find_system_so() -> PathBuf {
    for p in [
        "/usr/lib/x86_64-linux-gnu/libz.so.1",
        "/lib/x86_64-linux-gnu/libz.so.1",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
        "/lib/x86_64-linux-gnu/libm.so.6",
    ] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("no system shared object found to test with");
}

#[test]
fn refuses_other_versions_and_targets() {
    let msg = expect_mismatch(
        load_tampered("abi.so", |m| m.abi_version = "0x0000000000000001".into()),
        "abi_version",
    );
    assert!(msg.contains("0x0000000000000001"), "{msg}");
    expect_mismatch(
        load_tampered("ver.so", |m| m.ember_version = "0.0.1".into()),
        "ember_version",
    );
    expect_mismatch(load_tampered("fmt.so", |m| m.format = 99), "format");
    expect_mismatch(
        load_tampered("triple.so", |m| {
            m.target.triple = "aarch64-unknown-linux-gnu".into()
        }),
        "target.triple",
    );
    // A CPU feature the host does not have.
    let out = tmp("feat.so");
    let set = objects();
    let linker = Linker::detect().unwrap();
    let mut m = set.manifest(&linker);
    m.target.features = "+sse2,+amx-tile".into();
    let objs: Vec<&[u8]> = set.objects.iter().map(|o| o.object.as_slice()).collect();
    link(&objs, &m, &linker, &out).unwrap();
    let host = HostTarget::with_llvm_features("+sse2,+avx2");
    let e = AotLibrary::load(&out, &host).unwrap_err();
    assert!(e.to_string().contains("amx-tile"), "{e}");
    // An ELF file for another machine (e_machine patched to AArch64).
    let good = tmp("machine-src.so");
    build_library(&contracts()[..1], &opts(), &good, &|_| {}).unwrap();
    let mut bytes = std::fs::read(&good).unwrap();
    bytes[18..20].copy_from_slice(&183u16.to_le_bytes());
    let p = tmp("machine.so");
    std::fs::write(&p, bytes).unwrap();
    expect_mismatch(AotLibrary::load(&p, &HostTarget::default()), "ELF machine");
}

#[test]
fn refuses_bad_entries() {
    let e = load_tampered("missing.so", |m| {
        m.entries[1].symbol = "ember_cancun_does_not_exist".into()
    })
    .unwrap_err();
    assert!(
        matches!(&e, AotError::BadEntry { problem, .. } if problem.contains("missing")),
        "{e}"
    );
    let e = load_tampered("dup.so", |m| {
        let first = m.entries[0].clone();
        m.entries.push(first)
    })
    .unwrap_err();
    assert!(e.to_string().contains("twice"), "{e}");
    let e = load_tampered("spec.so", |m| m.entries[0].spec = "Atlantis".into()).unwrap_err();
    assert!(e.to_string().contains("unknown spec"), "{e}");
}

#[test]
fn refuses_libraries_that_run_code_on_load() {
    use object::write::Object;
    use object::{Architecture, BinaryFormat, Endianness, SectionKind};
    let set = objects();
    let linker = Linker::detect().unwrap();
    let m = set.manifest(&linker);
    // An object with a (null) .init_array entry: the linked library gets DT_INIT_ARRAY.
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    let id = obj.add_section(
        Vec::new(),
        b".init_array".to_vec(),
        SectionKind::Elf(object::elf::SHT_INIT_ARRAY),
    );
    obj.section_mut(id).flags = object::SectionFlags::Elf {
        sh_flags: u64::from(object::elf::SHF_ALLOC | object::elf::SHF_WRITE),
    };
    obj.append_section_data(id, &[0u8; 8], 8);
    let init = obj.write().unwrap();
    let mut objs: Vec<&[u8]> = set.objects.iter().map(|o| o.object.as_slice()).collect();
    objs.push(&init);
    let out = tmp("init.so");
    link(&objs, &m, &linker, &out).unwrap();
    let e = AotLibrary::load(&out, &HostTarget::default()).unwrap_err();
    assert!(e.to_string().contains("initializers"), "{e}");

    // An object that imports a libc function other than the memory primitives.
    let cx = inkwell::context::Context::create();
    let module = cx.create_module("evil");
    let i32t = cx.i32_type();
    let getpid = module.add_function("getpid", i32t.fn_type(&[], false), None);
    let f = module.add_function("evil", i32t.fn_type(&[], false), None);
    let b = cx.create_builder();
    b.position_at_end(cx.append_basic_block(f, "entry"));
    let v = b.build_call(getpid, &[], "pid").unwrap();
    b.build_return(Some(&v.try_as_basic_value().basic().unwrap()))
        .unwrap();
    inkwell::targets::Target::initialize_native(&Default::default()).unwrap();
    let triple = inkwell::targets::TargetMachine::get_default_triple();
    let tm = inkwell::targets::Target::from_triple(&triple)
        .unwrap()
        .create_target_machine(
            &triple,
            "generic",
            "",
            inkwell::OptimizationLevel::None,
            inkwell::targets::RelocMode::PIC,
            inkwell::targets::CodeModel::Default,
        )
        .unwrap();
    let evil = tm
        .write_to_memory_buffer(&module, inkwell::targets::FileType::Object)
        .unwrap();
    let mut objs: Vec<&[u8]> = set.objects.iter().map(|o| o.object.as_slice()).collect();
    objs.push(evil.as_slice());
    let out = tmp("import.so");
    link(&objs, &m, &linker, &out).unwrap();
    let e = AotLibrary::load(&out, &HostTarget::default()).unwrap_err();
    assert!(e.to_string().contains("getpid"), "{e}");
}

#[test]
fn a_failed_link_keeps_the_previous_library() {
    let out = tmp("keep.so");
    build_library(&contracts()[..1], &opts(), &out, &|_| {}).unwrap();
    let before = std::fs::read(&out).unwrap();
    let set = objects();
    let linker = Linker::detect().unwrap();
    let m = set.manifest(&linker);
    let garbage: &[u8] = b"not an object";
    assert!(link(&[garbage], &m, &linker, &out).is_err());
    assert_eq!(std::fs::read(&out).unwrap(), before);
    AotLibrary::load(&out, &HostTarget::default()).unwrap();
}
