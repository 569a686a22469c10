//! The `ember` command-line tool: run, benchmark, analyse and inspect EVM bytecode with Ember.
//!
//! Every failure ends in one `error: ...` line on stderr and a non-zero exit status.

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: the parallel executor allocates per transaction on
/// several threads and frees on others (the final fold), where glibc's arenas spent ~20% of
/// the time of an ERC-20 block (measured with perf: `_int_free`, `unlink_chunk`,
/// `malloc_consolidate`). Embedders choose their own allocator; the library does not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use ember_compiler::{JitRegistry, OptLevel};
use ember_tools::bench::{self, BenchConfig, BenchResult};
use ember_tools::exec::{self, Mode};
use ember_tools::fixture::Fixture;
use ember_tools::{embedded, input};
use revm::primitives::hardfork::SpecId;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "ember",
    version,
    about = "Ember: an EVM JIT compiler on LLVM, plugged into revm"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Execute a fixture (format of ../shared/bench/revmc/*.json).
    Run {
        /// Fixture file.
        fixture: PathBuf,
        /// Execution mode.
        #[arg(long, value_enum, default_value = "jit")]
        mode: Mode,
        /// Number of timed calls.
        #[arg(long, default_value_t = 1)]
        repeat: u32,
        /// Also run the interpreter and fail on any difference.
        #[arg(long)]
        check: bool,
        /// LLVM optimisation level (0-3).
        #[arg(long, default_value = "2")]
        opt: OptLevel,
        /// Fork to run under.
        #[arg(long, default_value = "cancun", value_parser = parse_spec)]
        spec: SpecId,
        /// AOT library to load (`--mode aot`; built with `ember compile`).
        #[arg(long, value_name = "LIB.so")]
        lib: Option<PathBuf>,
    },
    /// Interpreter vs JIT time per call, with a result check, for fixtures.
    ///
    /// With no FIXTURE, benchmarks every *.json in $EMBER_BENCH_DIR (default
    /// ../shared/bench/revmc), or the embedded programs when that is missing.
    Bench {
        /// Fixture files, directories of fixtures, or names of embedded programs.
        fixtures: Vec<PathBuf>,
        /// Benchmark the embedded programs (fibonacci, keccak and storage loops).
        #[arg(long)]
        embedded: bool,
        /// Print a JSON array (name, interp_ns, jit_ns, ratio, compile_ms) instead of a table.
        #[arg(long)]
        json: bool,
        /// Measure exactly N calls per mode (instead of a time budget).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        repeat: Option<u32>,
        /// Time budget per mode per fixture, in seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 0.5, value_parser = parse_budget)]
        time: f64,
        /// Fewest measured calls per mode under the time budget.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
        min_iters: u32,
        /// LLVM optimisation level (0-3).
        #[arg(long, default_value = "2")]
        opt: OptLevel,
        /// Fork to run under.
        #[arg(long, default_value = "cancun", value_parser = parse_spec)]
        spec: SpecId,
        /// Skip the AOT column (by default the fixtures' contracts are first compiled into a
        /// temporary library for this CPU, in parallel).
        #[arg(long)]
        no_aot: bool,
        /// Use this AOT library for the AOT column instead of building one.
        #[arg(long, value_name = "LIB.so", conflicts_with = "no_aot")]
        lib: Option<PathBuf>,
    },
    /// Run GeneralStateTests-format files (directories recursively) in interp/JIT modes.
    ///
    /// Checks every case's post-state root, logs hash and expected exception; prints
    /// `N passed, M failed, K skipped` and exits non-zero on any failure.
    Statetest {
        #[command(flatten)]
        args: ConformanceArgs,
    },
    /// Run BlockchainTests-format files (directories recursively) in interp/JIT modes.
    ///
    /// Checks every block's gas used and state root, expected-invalid blocks,
    /// `lastblockhash` and `postState`.
    Blocktest {
        #[command(flatten)]
        args: ConformanceArgs,
    },
    /// Print Ember's analysis of a contract: blocks, gas/stack sections, resolved jumps, stats.
    Analyze {
        /// Hex bytecode (0x optional), a file holding hex or raw bytes, a fixture JSON, or -.
        code: String,
        /// Fork to analyse for.
        #[arg(long, default_value = "cancun", value_parser = parse_spec)]
        spec: SpecId,
    },
    /// Compile contracts ahead of time into one verified shared object.
    ///
    /// Inputs: hex or binary bytecode files, `{code_hash: code}` JSON maps (such as
    /// ../shared/mainnet/bytecodes.json), fixture or test JSON files (every contract in `pre`),
    /// or directories of those. Duplicate code is compiled once; contracts that fail are
    /// reported and left out.
    Compile {
        /// Input files or directories.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Library to write.
        #[arg(short = 'o', long = "output", value_name = "LIB.so")]
        output: PathBuf,
        /// Worker threads (default: available cores).
        #[arg(long, short = 'j')]
        jobs: Option<usize>,
        /// Fork to compile for.
        #[arg(long, default_value = "cancun", value_parser = parse_spec)]
        spec: SpecId,
        /// LLVM optimisation level (0-3, fast).
        #[arg(long, default_value = "2")]
        opt: OptLevel,
        /// Compile contracts with more gas/stack sections than this in the fast tier.
        #[arg(long, default_value_t = ember_compiler::jit::DEFAULT_FAST_ABOVE, value_name = "SECTIONS")]
        fast_above: usize,
        /// CPU to generate code for: `generic` (portable) or `native` (this machine only).
        #[arg(long, default_value = "generic")]
        target_cpu: ember_compiler::aot::TargetCpu,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Execute whole blocks (mainnet block directories or synthetic workloads), sequentially
    /// or in parallel (Block-STM), and check them against their headers.
    ///
    /// Checks gasUsed, logsBloom and, from Byzantium on, receiptsRoot (synthetic blocks: every
    /// transaction succeeds); exits 1 when a block fails. Times exclude loading and compiling.
    Block {
        #[command(flatten)]
        args: BlockArgs,
    },
    /// Print an AOT library's manifest and entries, and whether this host would load it.
    Inspect {
        /// The library.
        lib: PathBuf,
        /// Print the manifest as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the optimised LLVM IR Ember generates for a contract.
    Ir {
        /// Hex bytecode (0x optional), a file holding hex or raw bytes, a fixture JSON, or -.
        code: String,
        /// LLVM optimisation level (0-3).
        #[arg(long, default_value = "2")]
        opt: OptLevel,
        /// Fork to compile for.
        #[arg(long, default_value = "cancun", value_parser = parse_spec)]
        spec: SpecId,
    },
}

/// Options of `ember block`.
#[derive(clap::Args)]
struct BlockArgs {
    /// Block directories (block.json, pre_state.json, block_hashes.json) or directories of
    /// them, such as ../shared/mainnet.
    #[arg(required_unless_present = "synthetic")]
    dirs: Vec<PathBuf>,
    /// Execution mode: the interpreter, contracts JIT-compiled before timing, or an AOT
    /// library (`--lib`).
    #[arg(long, value_enum, default_value = "interp")]
    mode: Mode,
    /// AOT library to load (`--mode aot`; built with `ember compile`).
    #[arg(long, value_name = "LIB.so")]
    lib: Option<PathBuf>,
    /// Worker threads: 1 executes sequentially, more in parallel (default: available cores).
    #[arg(long, short = 't')]
    threads: Option<usize>,
    /// Also execute sequentially with the interpreter (untimed) and compare every
    /// transaction's result and the state changes.
    #[arg(long)]
    check: bool,
    /// Print `{"blocks": [{"number", "gas_used", "ok", "seconds"}], "total": {"gas",
    /// "seconds", "gas_per_sec"}}` instead of the table.
    #[arg(long)]
    json: bool,
    /// JIT optimisation level (0-3, fast).
    #[arg(long, default_value = "2")]
    opt: OptLevel,
    /// JIT: compile contracts with more gas/stack sections than this in the fast tier.
    #[arg(long, default_value_t = ember_compiler::jit::DEFAULT_FAST_ABOVE, value_name = "SECTIONS")]
    fast_above: usize,
    /// Contract code map to use instead of the bytecodes.json in or next to each block
    /// directory.
    #[arg(long, value_name = "FILE")]
    bytecodes: Option<PathBuf>,
    /// Synthetic workload(s) instead of block directories (comma-separated or repeated).
    #[arg(
        long,
        value_enum,
        value_name = "KIND",
        value_delimiter = ',',
        conflicts_with = "dirs"
    )]
    synthetic: Vec<ember_tools::workload::WorkloadKind>,
    /// Gas of each synthetic block (suffixes k, M, G).
    #[arg(long, default_value = "100M", value_parser = ember_tools::workload::parse_gas, requires = "synthetic")]
    gas: u64,
    /// Timed executions per block; the fastest is reported.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Execute every block in parallel, even those the heuristics would run sequentially
    /// (fewer than 8 transactions or 4M gas, mostly plain transfers — contract transactions'
    /// gas limits under 3M or 20k per transaction — or one sender sending more than 30% of
    /// the transactions).
    #[arg(long)]
    always_parallel: bool,
    /// Execute every block sequentially and with `--threads` workers, with the interpreter and
    /// (with `--mode jit|aot`) with native code, interleaved in one run, and report each
    /// mode's gas/s, its ratio to sequential interpretation and its frames run natively and
    /// interpreted. `--repeat` rounds, fastest per mode. With `--json`: `{"modes", "blocks":
    /// [{"number", "gas_used", "ok", "seconds", "native_frames", "interpreted_frames"}],
    /// "total": {"gas", "seconds", "gas_per_sec", "ratio"}}`, per-mode arrays.
    #[arg(long, conflicts_with = "check")]
    compare: bool,
    /// Fall back to sequential execution when two transactions wipe one contract's storage
    /// (`ParallelOptions::fallback_on_repeated_wipe`; off by default: the executor handles it,
    /// and measured faster).
    #[arg(long)]
    wipe_fallback: bool,
    /// JIT: compile every contract in the blocks' pre-states, not only those a warm-up pass
    /// (sequential interpretation, untimed) runs.
    #[arg(long, conflicts_with = "hot")]
    compile_all: bool,
    /// JIT: compile only the contracts the warm-up pass runs as at least this many frames
    /// (what a node's hot-contract cache would compile); the others run in the interpreter,
    /// and the report's frame counts say how much that is.
    #[arg(long, default_value_t = 1, value_name = "RUNS")]
    hot: u64,
    /// Microseconds an idle parallel worker spins before it sleeps
    /// (`ParallelOptions::idle_spin`; default 100).
    #[arg(long, value_name = "MICROS")]
    idle_spin: Option<u64>,
    /// Which blocks run first as speculative chunks, one run of consecutive transactions per
    /// thread, kept if no chunk read what an earlier one wrote (`ParallelOptions::speculation`)
    #[arg(long, value_enum, default_value_t = SpeculationArg::Transfers)]
    speculation: SpeculationArg,
}

/// `--speculation` values.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SpeculationArg {
    /// Never
    Off,
    /// Blocks of plain transfers whose chunks share no account (they cannot conflict)
    Transfers,
    /// Every block (abandoned on the first conflict: on the mainnet blocks, slower)
    Always,
}

/// Options shared by `statetest` and `blocktest`.
#[derive(clap::Args)]
struct ConformanceArgs {
    /// Test files or directories (searched recursively for *.json).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Execution mode(s): `all` runs interp, then jit, then aot.
    #[arg(long, value_enum, default_value = "all")]
    mode: ModeArg,
    /// Worker threads (default: available cores).
    #[arg(long, short = 'j')]
    jobs: Option<usize>,
    /// Only tests whose file path or test name contains this text.
    #[arg(long)]
    filter: Option<String>,
    /// Write the full JSON report (every failure, skip and file error) to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// On a compiled-mode failure that passes in the interpreter, locate the first diverging
    /// frame (gas, stack, memory) and print the interpreter's EIP-3155 trace tail.
    #[arg(long)]
    diff: bool,
    /// JIT optimisation level (0-3, fast).
    #[arg(long, default_value = "2")]
    opt: OptLevel,
    /// Compile contracts with more gas/stack sections than this in the fast tier (light IR
    /// pipeline, fast register allocation): each test contract runs a few times, so compile
    /// time dominates for the rare huge ones.
    #[arg(long, default_value_t = 128, value_name = "SECTIONS")]
    fast_above: usize,
    /// AOT library to use for `--mode aot` (default: compile the tests' contracts into a
    /// temporary library first).
    #[arg(long, value_name = "LIB.so")]
    lib: Option<PathBuf>,
    /// Also run tests skipped only for their run time (CALLBlake2f_MaxRounds: ~46 s).
    #[arg(long)]
    include_slow: bool,
    /// Failures printed in full (all are in the JSON report).
    #[arg(long, default_value_t = 20)]
    max_failures: usize,
    /// `blocktest` only: execute each block's transactions with the parallel executor
    /// (Block-STM, even for tiny blocks) on this many threads and commit its state changes,
    /// instead of one transaction after the other.
    #[arg(long, value_name = "THREADS")]
    parallel: Option<usize>,
}

/// `--mode` of the conformance commands.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ModeArg {
    Interp,
    Jit,
    Aot,
    All,
}

fn cmd_conformance(kind: &str, a: ConformanceArgs) -> Result<ExitCode, String> {
    use ember_tools::conformance::{self, TestMode};
    let modes = match a.mode {
        ModeArg::Interp => vec![TestMode::Interp],
        ModeArg::Jit => vec![TestMode::Jit],
        ModeArg::Aot => vec![TestMode::Aot],
        ModeArg::All => vec![TestMode::Interp, TestMode::Jit, TestMode::Aot],
    };
    let jobs = a
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if jobs == 0 {
        return Err("--jobs must be at least 1".into());
    }
    let opts = conformance::Options {
        modes,
        jobs,
        filter: a.filter,
        opt: a.opt,
        fast_above: a.fast_above,
        diff: a.diff,
        progress: true,
        include_slow: a.include_slow,
        aot_lib: a.lib,
        block_threads: a.parallel.unwrap_or(0),
    };
    if kind == "statetest" && a.parallel.is_some() {
        return Err("--parallel applies to blocktest only".into());
    }
    if a.parallel.is_some_and(|t| t < 2) {
        return Err("--parallel needs at least 2 threads".into());
    }
    let report = if kind == "statetest" {
        conformance::statetest::run(&a.paths, &opts)?
    } else {
        conformance::blocktest::run(&a.paths, &opts)?
    };
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| format!("cannot encode the report: {e}"))?;
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    emit(&format!("{}\n", report.render(a.max_failures)))?;
    Ok(if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Accepts fork names case-insensitively (`cancun`, `Prague`, `paris`, ...).
fn parse_spec(s: &str) -> Result<SpecId, String> {
    let want = s.trim().to_ascii_lowercase();
    let alias = match want.as_str() {
        "paris" => "merge",
        "spuriousdragon" | "spurious_dragon" => "spurious",
        "tangerinewhistle" => "tangerine",
        other => other,
    };
    (0..=u8::MAX)
        .filter_map(SpecId::try_from_u8)
        .find(|id| <&'static str>::from(*id).eq_ignore_ascii_case(alias))
        .ok_or_else(|| format!("unknown fork {s:?}"))
}

fn parse_budget(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 3600.0 => Ok(v),
        _ => Err(format!("invalid time budget {s:?} (seconds, > 0)")),
    }
}

fn main() -> ExitCode {
    // Last line of defence: a bug must still end in one `error:` line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "error: internal error (please report): {}{at}",
            msg.replace('\n', " ")
        );
    }));
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                let _ = e.print();
                return ExitCode::from(2);
            }
            let text = e.to_string();
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments");
            let first = first.trim_start_matches("error: ");
            eprintln!("error: {first} (see ember --help)");
            return ExitCode::from(2);
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", e.replace('\n', " "));
            ExitCode::from(2)
        }
    }
}

/// Writes `text` to stdout; a closed pipe (`ember ir ... | head`) is not an error.
fn emit(text: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(format!("cannot write output: {e}")),
    }
}

/// Refuses forks the compiler does not support, before any work.
fn check_spec(spec: SpecId) -> Result<(), String> {
    ember_compiler::check_input(&[], spec).map_err(|e| e.to_string())
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.cmd {
        Cmd::Statetest { args } => cmd_conformance("statetest", args),
        Cmd::Block { args } => cmd_block(args),
        Cmd::Blocktest { args } => cmd_conformance("blocktest", args),
        Cmd::Run {
            fixture,
            mode,
            repeat,
            check,
            opt,
            spec,
            lib,
        } => cmd_run(&fixture, mode, repeat, check, opt, spec, lib.as_deref()),
        Cmd::Compile {
            inputs,
            output,
            jobs,
            spec,
            opt,
            fast_above,
            target_cpu,
            json,
        } => {
            check_spec(spec)?;
            let jobs =
                jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            if jobs == 0 {
                return Err("--jobs must be at least 1".into());
            }
            let opts = ember_compiler::aot::AotOptions {
                opt,
                fast_above,
                target_cpu,
                jobs,
            };
            cmd_compile(&inputs, &output, spec, &opts, json)
        }
        Cmd::Inspect { lib, json } => cmd_inspect(&lib, json),
        Cmd::Bench {
            fixtures,
            embedded,
            json,
            repeat,
            time,
            min_iters,
            opt,
            spec,
            no_aot,
            lib,
        } => {
            check_spec(spec)?;
            let mut cfg = BenchConfig {
                spec,
                opt,
                budget: Duration::from_secs_f64(time),
                min_iterations: min_iters,
                iterations: repeat,
                aot: None,
            };
            let aot = if no_aot {
                AotChoice::None
            } else if let Some(l) = lib {
                AotChoice::Load(l)
            } else {
                AotChoice::Build
            };
            cmd_bench(fixtures, embedded, json, &mut cfg, aot)
        }
        Cmd::Analyze { code, spec } => {
            check_spec(spec)?;
            let inputs = input::read_code(&code)?;
            let multi = inputs.len() > 1 || !inputs[0].label.is_empty();
            let mut text = String::new();
            for c in &inputs {
                let a =
                    ember_compiler::analyze(&c.code, spec).map_err(|e| label_err(&c.label, e))?;
                if multi {
                    text.push_str(&format!("=== contract {} ===\n", c.label));
                }
                text.push_str(&a.to_string());
                if multi {
                    text.push('\n');
                }
            }
            emit(&text)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Ir { code, opt, spec } => {
            check_spec(spec)?;
            let inputs = input::read_code(&code)?;
            let multi = inputs.len() > 1 || !inputs[0].label.is_empty();
            let mut text = String::new();
            for c in &inputs {
                let ir = ember_compiler::jit::emit_ir(&c.code, spec, opt)
                    .map_err(|e| label_err(&c.label, e))?;
                if multi {
                    text.push_str(&format!("; === contract {} ===\n", c.label));
                }
                text.push_str(&ir);
            }
            emit(&text)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn cmd_block(a: BlockArgs) -> Result<ExitCode, String> {
    use ember_runtime::parallel::ParallelOptions;
    use ember_tools::block::{self, RunOptions};
    use ember_tools::workload;
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    if a.lib.is_some() && a.mode != Mode::Aot {
        return Err("--lib is only used with --mode aot".into());
    }
    if a.mode == Mode::Aot && a.lib.is_none() {
        return Err("--mode aot needs --lib LIB.so (build one with `ember compile`)".into());
    }
    // Informational lines go to stderr under --json (stdout holds only the JSON).
    let json = a.json;
    let say = |line: String| -> Result<(), String> {
        if json {
            eprintln!("{line}");
            Ok(())
        } else {
            emit(&(line + "\n"))
        }
    };
    let t_load = Instant::now();
    let blocks = if a.synthetic.is_empty() {
        block::load_blocks(&a.dirs, a.bytecodes.as_deref())?
    } else {
        let mut v = Vec::new();
        for &kind in &a.synthetic {
            v.push(workload::block_for_gas(kind, a.gas)?);
        }
        v
    };
    let txs: usize = blocks.iter().map(|b| b.txs.len()).sum();
    say(format!(
        "loaded {} block(s), {txs} transactions, in {:.2} s",
        blocks.len(),
        t_load.elapsed().as_secs_f64()
    ))?;
    let mut jit = None;
    let mut aot = None;
    match a.mode {
        Mode::Interp => {}
        Mode::Jit => {
            let cache = ember_compiler::JitCache::new(a.opt)
                .map_err(|e| format!("JIT unavailable: {e}"))?
                .with_fast_above(a.fast_above);
            let all = block::contract_keys(&blocks);
            let in_pre_state = all.len();
            let work = if a.compile_all {
                all
            } else {
                let t = Instant::now();
                let w = block::executed_contract_keys(&blocks, a.hot);
                say(format!(
                    "jit: warm-up pass (sequential interpretation, not timed) in {:.1} s: {} of \
                     the pre-states' {in_pre_state} (contract, fork) pair(s) run as {} frame(s); \
                     compiling those (--compile-all for every one)",
                    t.elapsed().as_secs_f64(),
                    w.len(),
                    if a.hot > 1 {
                        format!("at least {}", a.hot)
                    } else {
                        "one or more".to_string()
                    }
                ))?;
                w
            };
            let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
            let bar = ember_tools::aot::progress_bar(work.len(), !json);
            let summary =
                block::compile_contracts(&work, &cache, jobs, &|n| bar.set_position(n as u64));
            bar.finish_and_clear();
            let st = cache.stats();
            say(format!(
                "jit: {} of {} contract(s) compiled at {:?} in {:.1} s wall ({:.1} s CPU, {} in a \
                 faster tier by size; not timed){}",
                summary.compiled,
                summary.contracts,
                a.opt,
                summary.wall.as_secs_f64(),
                st.compile_time.as_secs_f64(),
                st.tiered_down,
                if summary.failures.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; {} not compiled, run in the interpreter",
                        summary.failures.len()
                    )
                }
            ))?;
            for (hash, spec, e) in summary.failures.iter().take(10) {
                eprintln!("warning: {hash} ({spec}) not compiled: {e}");
            }
            jit = Some(cache);
        }
        Mode::Aot => {
            let path = a.lib.as_deref().unwrap_or(std::path::Path::new(""));
            let lib = ember_runtime::AotLibrary::load(path, &ember_tools::aot::host())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let work = block::contract_keys(&blocks);
            let covered = work
                .iter()
                .filter(|(h, _, spec)| lib.contains(h, *spec))
                .count();
            say(format!(
                "aot: {} ({} functions); {covered} of the blocks' {} (contract, fork) pair(s) are \
                 in it, the others run in the interpreter",
                path.display(),
                lib.len(),
                work.len()
            ))?;
            aot = Some(lib);
        }
    }
    let provider: &(dyn ember_runtime::NativeProvider + Sync) = match (&jit, &aot) {
        (Some(c), _) => c,
        (None, Some(l)) => l,
        (None, None) => &ember_runtime::NoNative,
    };
    let mut opts = RunOptions::new(threads);
    if a.always_parallel {
        opts.parallel = ember_runtime::parallel::ParallelOptions::always_parallel(threads);
    }
    if a.wipe_fallback {
        opts.parallel.fallback_on_repeated_wipe = true;
    }
    if let Some(us) = a.idle_spin {
        opts.parallel.idle_spin = std::time::Duration::from_micros(us);
    }
    opts.parallel.speculation = match a.speculation {
        SpeculationArg::Off => ember_runtime::parallel::Speculation::Off,
        SpeculationArg::Transfers => ember_runtime::parallel::Speculation::Transfers,
        SpeculationArg::Always => ember_runtime::parallel::Speculation::Always,
    };
    opts.check = a.check;
    opts.repeat = a.repeat;
    block::warm_up();
    if a.compare {
        if threads < 2 {
            return Err("--compare needs --threads of at least 2".into());
        }
        let native = match a.mode {
            Mode::Interp => None,
            Mode::Jit => Some("jit"),
            Mode::Aot => Some("aot"),
        };
        let mut modes = Vec::new();
        for t in [1, threads] {
            let kind = if t == 1 {
                "seq".to_string()
            } else {
                format!("par{t}")
            };
            let parallel = ParallelOptions {
                threads: t,
                ..opts.parallel.clone()
            };
            modes.push(block::CompareMode {
                name: format!("{kind}-interp"),
                provider: &ember_runtime::NoNative,
                parallel: parallel.clone(),
            });
            if let Some(n) = native {
                modes.push(block::CompareMode {
                    name: format!("{kind}-{n}"),
                    provider,
                    parallel,
                });
            }
        }
        // Order: seq-interp, seq-native, par-interp, par-native.
        let mut reports = Vec::with_capacity(blocks.len());
        for b in &blocks {
            let r = block::compare_block(b, &modes, a.repeat);
            for f in &r.failures {
                eprintln!("block {}: FAIL {f}", r.name);
            }
            reports.push(r);
        }
        if json {
            let text = serde_json::to_string_pretty(&block::compare_json(&modes, &reports))
                .map_err(|e| e.to_string())?;
            emit(&(text + "\n"))?;
        } else {
            emit(&format!(
                "fastest of {} interleaved round(s) per mode\n{}\n",
                a.repeat,
                block::compare_table(&modes, &reports)
            ))?;
        }
        let failed = reports.iter().filter(|r| !r.failures.is_empty()).count();
        if failed > 0 {
            eprintln!("error: {failed} of {} block(s) failed", reports.len());
            return Ok(ExitCode::FAILURE);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !json {
        emit(&format!(
            "mode {:?}, {}{}\n{}\n",
            a.mode,
            if threads == 1 {
                "sequential".to_string()
            } else {
                format!("{threads} threads")
            },
            if a.repeat > 1 {
                format!(", fastest of {} runs", a.repeat)
            } else {
                String::new()
            },
            block::table_header()
        ))?;
    }
    let mut reports = Vec::with_capacity(blocks.len());
    for b in &blocks {
        let r = block::run_block(b, provider, &opts);
        if json {
            for f in &r.failures {
                eprintln!("block {}: FAIL {f}", r.name);
            }
        } else {
            emit(&(block::table_row(&r) + "\n"))?;
        }
        reports.push(r);
    }
    if json {
        let text = serde_json::to_string_pretty(&block::json_report(&reports))
            .map_err(|e| e.to_string())?;
        emit(&(text + "\n"))?;
    } else {
        emit(&(block::totals(&reports) + "\n"))?;
    }
    let failed = reports.iter().filter(|r| !r.ok()).count();
    if failed > 0 {
        eprintln!("error: {failed} of {} block(s) failed", reports.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn label_err(label: &str, e: impl std::fmt::Display) -> String {
    if label.is_empty() {
        e.to_string()
    } else {
        format!("contract {label}: {e}")
    }
}

fn cmd_run(
    fixture: &std::path::Path,
    mode: Mode,
    repeat: u32,
    check: bool,
    opt: OptLevel,
    spec: SpecId,
    lib: Option<&std::path::Path>,
) -> Result<ExitCode, String> {
    let fx = Fixture::load(fixture).map_err(|e| e.to_string())?;
    if lib.is_some() && mode != Mode::Aot {
        return Err("--lib is only used with --mode aot".into());
    }
    let mut aot = None;
    if mode == Mode::Aot {
        let path = lib.ok_or("--mode aot needs --lib LIB.so (build one with `ember compile`)")?;
        let l = ember_runtime::AotLibrary::load(path, &ember_tools::aot::host())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let st = l.load_stats();
        println!(
            "library: {} ({} functions, {} bytes), loaded and verified in {:.1} ms",
            path.display(),
            l.len(),
            l.file_size(),
            st.total().as_secs_f64() * 1e3
        );
        let missing: Vec<_> = fx
            .codes
            .iter()
            .filter(|c| !l.contains(&revm::primitives::keccak256(c), spec))
            .collect();
        if !missing.is_empty() {
            println!(
                "not in the library for {spec} ({}), these run in the interpreter:",
                missing.len()
            );
            for c in missing {
                println!("  {} ({} bytes)", revm::primitives::keccak256(c), c.len());
            }
        }
        aot = Some(l);
    }
    let mut reg = None;
    if mode == Mode::Jit {
        check_spec(spec)?;
        let mut r = JitRegistry::new(opt).map_err(|e| e.to_string())?;
        let report = exec::compile_fixture_report(&fx, spec, &mut r);
        println!(
            "compile: {} contract(s) in {:.1} ms at {opt:?}",
            report.compiled,
            report.time.as_secs_f64() * 1e3
        );
        if !report.failures.is_empty() {
            println!(
                "not compiled ({}), these run in the interpreter:",
                report.failures.len()
            );
            for f in &report.failures {
                println!("  {f}");
            }
        }
        reg = Some(r);
    }
    let once = || match (&reg, &aot) {
        (Some(r), _) => exec::run_with(&fx, spec, r),
        (None, Some(l)) => exec::run_with(&fx, spec, l),
        (None, None) => exec::run_interp(&fx, spec),
    };
    let out = once()?;
    let t = Instant::now();
    for _ in 1..repeat.max(1) {
        once()?;
    }
    let per = if repeat > 1 {
        t.elapsed() / (repeat - 1)
    } else {
        t.elapsed()
    };
    let r = &out.result.result;
    println!("status: {}", exec::status(r));
    println!("gas used: {}", r.tx_gas_used());
    println!(
        "output: 0x{}",
        hex::encode(r.output().cloned().unwrap_or_default())
    );
    match mode {
        Mode::Interp => println!("frames: {} interpreted (--mode interp)", out.interpreted_runs),
        Mode::Jit | Mode::Aot if out.interpreted_runs == 0 => println!("frames: {} native, 0 interpreted", out.native_runs),
        Mode::Jit | Mode::Aot => println!(
            "frames: {} native, {} interpreted (FALLBACK: initcode/create frames or contracts not compiled ran in \
             the interpreter)",
            out.native_runs, out.interpreted_runs
        ),
    }
    if repeat > 1 {
        println!(
            "time per call: {:.3} us (mean of {} calls after the first)",
            per.as_secs_f64() * 1e6,
            repeat - 1
        );
    }
    if check {
        let i = exec::run_interp(&fx, spec)?;
        let d = exec::diff(&i.result, &out.result);
        if !d.is_empty() {
            println!("DIFFERENCE (interpreter vs {mode:?}):\n{d}");
            eprintln!("error: {} differs from the interpreter", fx.name);
            return Ok(ExitCode::FAILURE);
        }
        println!("check: identical to the interpreter");
    }
    Ok(ExitCode::SUCCESS)
}

/// The fixtures `ember bench` runs, in order, all loaded before anything is measured (a bad
/// file is an error up front). A FIXTURE argument that is not a path may name an embedded
/// program.
fn bench_fixtures(paths: Vec<PathBuf>, embedded: bool) -> Result<Vec<Fixture>, String> {
    let mut out = Vec::new();
    if embedded {
        out.extend(embedded::all());
    }
    if paths.is_empty() && !embedded {
        match bench::default_dir() {
            Ok(dir) => {
                eprintln!("fixtures: {}", dir.display());
                let files = bench::fixtures_in(&dir)?;
                if files.is_empty() {
                    return Err(format!("no *.json fixtures in {}", dir.display()));
                }
                for f in files {
                    out.push(Fixture::load(&f).map_err(|e| e.to_string())?);
                }
            }
            Err(missing) => {
                eprintln!(
                    "WARNING: benchmark fixtures not found at {} (set {} to a directory of fixture JSON files).",
                    missing.display(),
                    bench::BENCH_DIR_ENV
                );
                eprintln!("WARNING: falling back to Ember's embedded programs.");
                out.extend(embedded::all());
            }
        }
    }
    for p in paths {
        if p.is_dir() {
            for f in bench::fixtures_in(&p)? {
                out.push(Fixture::load(&f).map_err(|e| e.to_string())?);
            }
        } else if let Some(prog) = p
            .to_str()
            .filter(|_| !p.exists())
            .and_then(embedded::by_name)
        {
            out.push(prog.fixture());
        } else {
            out.push(Fixture::load(&p).map_err(|e| e.to_string())?);
        }
    }
    Ok(out)
}

/// Where `ember bench` gets its AOT column from.
enum AotChoice {
    None,
    Load(PathBuf),
    Build,
}

fn cmd_bench(
    paths: Vec<PathBuf>,
    embedded: bool,
    json: bool,
    cfg: &mut BenchConfig,
    aot: AotChoice,
) -> Result<ExitCode, String> {
    let fixtures = bench_fixtures(paths, embedded)?;
    let mut _aot_dir = None;
    let lib = match aot {
        AotChoice::None => None,
        AotChoice::Load(path) => Some(
            ember_runtime::AotLibrary::load(&path, &ember_tools::aot::host())
                .map_err(|e| format!("{}: {e}", path.display()))?,
        ),
        AotChoice::Build => {
            let codes: Vec<Vec<u8>> = fixtures
                .iter()
                .flat_map(|f| f.codes.iter().map(|c| c.to_vec()))
                .collect();
            let contracts = ember_tools::aot::contracts_for(&codes, cfg.spec);
            let dir = tempfile::Builder::new()
                .prefix("ember-bench-aot-")
                .tempdir()
                .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
            let opts = ember_compiler::aot::AotOptions {
                opt: cfg.opt,
                target_cpu: ember_compiler::aot::TargetCpu::Native,
                ..Default::default()
            };
            let out = dir.path().join("bench.so");
            let (r, lib) = ember_tools::aot::build_and_load(&contracts, &opts, &out, !json)?;
            eprintln!(
                "aot: {} contract(s) compiled for this CPU in {:.1} s wall ({:.1} s CPU), linked in {:.2} s{}",
                r.set.objects.len(),
                r.set.wall.as_secs_f64(),
                r.set.compile_time().as_secs_f64(),
                r.link.time.as_secs_f64(),
                if r.set.failures.is_empty() { String::new() } else { format!("; {} not compiled", r.set.failures.len()) }
            );
            _aot_dir = Some(dir);
            Some(lib)
        }
    };
    cfg.aot = lib.map(std::sync::Arc::new);
    let cfg = &*cfg;
    let mut results: Vec<BenchResult> = Vec::new();
    let mut failed = 0usize;
    let mut mismatches = Vec::new();
    if !json {
        let how = match cfg.iterations {
            Some(n) => format!("{n} calls per mode"),
            None => format!(
                "median over >= {:.2} s and >= {} calls per mode",
                cfg.budget.as_secs_f64(),
                cfg.min_iterations
            ),
        };
        println!("ember bench: spec {:?}, opt {:?}, {how}", cfg.spec, cfg.opt);
        println!("{}", bench::table_header());
    }
    for fx in fixtures {
        let r = match bench::bench_fixture(&fx, cfg) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {}: {e}", fx.name);
                failed += 1;
                continue;
            }
        };
        for f in &r.compile_failures {
            eprintln!(
                "warning: {}: not compiled, runs in the interpreter: {f}",
                r.name
            );
        }
        if !r.mismatch.is_empty() {
            eprintln!(
                "MISMATCH: {}: the JIT or AOT result differs from the interpreter's:",
                r.name
            );
            for line in r.mismatch.lines() {
                eprintln!("MISMATCH:   {line}");
            }
            mismatches.push(r.name.clone());
        }
        if !json {
            println!("{}", bench::table_row(&r));
        }
        results.push(r);
    }
    if json {
        let arr: Vec<serde_json::Value> = results.iter().map(BenchResult::to_json).collect();
        let text = serde_json::to_string_pretty(&arr).map_err(|e| e.to_string())?;
        emit(&(text + "\n"))?;
    } else if !results.is_empty() {
        println!(
            "geometric mean ratio: {:.2}x over {} fixture(s)",
            bench::geomean_ratio(&results),
            results.len()
        );
        if cfg.aot.is_some() {
            println!(
                "geometric mean AOT ratio: {:.2}x",
                bench::geomean_aot_ratio(&results)
            );
        }
    }
    if !mismatches.is_empty() {
        eprintln!(
            "error: {} fixture(s) where compiled code differs from the interpreter: {}",
            mismatches.len(),
            mismatches.join(", ")
        );
        return Ok(ExitCode::FAILURE);
    }
    if failed > 0 {
        eprintln!("error: {failed} fixture(s) could not be benchmarked");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_compile(
    inputs: &[PathBuf],
    output: &std::path::Path,
    spec: SpecId,
    opts: &ember_compiler::aot::AotOptions,
    json: bool,
) -> Result<ExitCode, String> {
    let t0 = Instant::now();
    let read = ember_tools::aot::read_inputs(inputs)?;
    for w in &read.warnings {
        eprintln!("warning: {w}");
    }
    let contracts = ember_tools::aot::contracts_for(&read.codes, spec);
    // Loaded back before reporting: what we ship must pass the loader's checks.
    let (built, lib) = ember_tools::aot::build_and_load(&contracts, opts, output, !json)?;
    let (set, manifest, link, linker) = (
        &built.set,
        &built.manifest,
        &built.link,
        &built.manifest.linker,
    );
    let st = lib.load_stats();
    let load_secs = st.total().as_secs_f64();
    let wall = t0.elapsed().as_secs_f64();
    let tiered = set
        .objects
        .iter()
        .filter(|o| o.stats.effective_opt != opts.opt)
        .count();
    let slowest = set.slowest().map(|(e, t)| (e.clone(), t.as_secs_f64()));
    if json {
        let v = serde_json::json!({
            "library": output.display().to_string(),
            "size_bytes": link.size,
            "inputs": read.files,
            "contracts": contracts.len(),
            "duplicates": set.duplicates,
            "compiled": set.objects.len(),
            "tiered_down": tiered,
            "failed": set.failures.iter().map(|f| serde_json::json!({
                "code_hash": f.code_hash, "spec": f.spec.to_string(),
                "code_len": f.code_len, "reason": f.reason,
            })).collect::<Vec<_>>(),
            "compile_wall_secs": set.wall.as_secs_f64(),
            "compile_cpu_secs": set.compile_time().as_secs_f64(),
            "slowest": slowest.as_ref().map(|(e, t)| serde_json::json!({
                "code_hash": e.code_hash, "code_len": e.code_len, "opt": e.opt, "secs": t,
            })),
            "link_secs": link.time.as_secs_f64(),
            "linker": linker,
            "load_verify_secs": load_secs,
            "wall_secs": wall,
            "target": manifest.target,
            "opt": manifest.opt,
        });
        emit(&(serde_json::to_string_pretty(&v).map_err(|e| e.to_string())? + "\n"))?;
    } else {
        let mut t = String::new();
        t.push_str(&format!(
            "compiled {} of {} contract(s) from {} file(s) for {spec} at {:?} ({} duplicate(s) \
             compiled once, {} moved to a faster tier by size)\n",
            set.objects.len(),
            contracts.len() - set.duplicates,
            read.files,
            opts.opt,
            set.duplicates,
            tiered
        ));
        t.push_str(&format!(
            "compile: {:.1} s wall on {} thread(s), {:.1} s CPU",
            set.wall.as_secs_f64(),
            opts.jobs,
            set.compile_time().as_secs_f64()
        ));
        if let Some((e, secs)) = &slowest {
            t.push_str(&format!(
                "; slowest {} ({} bytes, {}) {:.2} s",
                e.code_hash, e.code_len, e.opt, secs
            ));
        }
        t.push('\n');
        t.push_str(&format!(
            "link: {:.2} s with {}\n",
            link.time.as_secs_f64(),
            linker
        ));
        t.push_str(&format!(
            "library: {} ({:.1} MiB, {} functions, target {} cpu {}), loaded and verified in {:.1} ms\n",
            output.display(),
            link.size as f64 / (1 << 20) as f64,
            lib.len(),
            manifest.target.triple,
            manifest.target.cpu,
            load_secs * 1e3
        ));
        if !set.failures.is_empty() {
            t.push_str(&format!(
                "NOT COMPILED ({}), these run in the interpreter:\n",
                set.failures.len()
            ));
            for f in &set.failures {
                t.push_str(&format!(
                    "  {} ({} bytes): {}\n",
                    f.code_hash, f.code_len, f.reason
                ));
            }
        }
        t.push_str(&format!("total: {wall:.1} s\n"));
        emit(&t)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_inspect(lib: &std::path::Path, json: bool) -> Result<ExitCode, String> {
    use ember_runtime::aot;
    let data = std::fs::read(lib).map_err(|e| format!("cannot read {}: {e}", lib.display()))?;
    let manifest = aot::read_manifest(&data).map_err(|e| format!("{}: {e}", lib.display()))?;
    let verdict = aot::verify(&data, &ember_tools::aot::host());
    if json {
        let v = serde_json::json!({
            "manifest": manifest,
            "loadable": verdict.is_ok(),
            "refused": verdict.as_ref().err().map(|e| e.to_string()),
        });
        emit(&(serde_json::to_string_pretty(&v).map_err(|e| e.to_string())? + "\n"))?;
    } else {
        let m = &manifest;
        let mut t = String::new();
        t.push_str(&format!(
            "library:       {} ({} bytes)\n",
            lib.display(),
            data.len()
        ));
        t.push_str(&format!("format:        {}\n", m.format));
        t.push_str(&format!("ember version: {}\n", m.ember_version));
        t.push_str(&format!("llvm version:  {}\n", m.llvm_version));
        t.push_str(&format!("abi version:   {}\n", m.abi_version));
        t.push_str(&format!(
            "target:        {} cpu {} features {}\n",
            m.target.triple,
            m.target.cpu,
            if m.target.features.is_empty() {
                "(baseline)"
            } else {
                &m.target.features
            }
        ));
        t.push_str(&format!(
            "opt:           {} (fast tier above {} sections)\n",
            m.opt.level, m.opt.fast_above
        ));
        t.push_str(&format!("linker:        {}\n", m.linker));
        match &verdict {
            Ok(_) => t.push_str("this host:     loads (every check passed)\n"),
            Err(e) => t.push_str(&format!("this host:     REFUSED: {e}\n")),
        }
        t.push_str(&format!("entries:       {}\n", m.entries.len()));
        t.push_str(&format!(
            "  {:<66} {:<10} {:>6} {:<5} symbol\n",
            "code hash", "spec", "bytes", "opt"
        ));
        for e in &m.entries {
            t.push_str(&format!(
                "  {:<66} {:<10} {:>6} {:<5} {}\n",
                e.code_hash.to_string(),
                e.spec,
                e.code_len,
                e.opt,
                e.symbol
            ));
        }
        emit(&t)?;
    }
    Ok(if verdict.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
