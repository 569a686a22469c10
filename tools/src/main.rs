//! The `ember` command-line tool.

use clap::{Parser, Subcommand};
use ember_compiler::{JitRegistry, OptLevel};
use ember_tools::exec::{self, Mode};
use ember_tools::fixture::Fixture;
use revm::primitives::hardfork::SpecId;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser)]
#[command(name = "ember", version, about = "Ember: EVM JIT/AOT compiler toolchain")]
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
    },
}

fn parse_spec(s: &str) -> Result<SpecId, String> {
    let mut c = s.chars();
    let title: String = match c.next() {
        Some(f) => f.to_uppercase().chain(c.flat_map(|x| x.to_lowercase())).collect(),
        None => String::new(),
    };
    title.parse::<SpecId>().map_err(|_| format!("unknown fork {s:?}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.cmd {
        Cmd::Run { fixture, mode, repeat, check, opt, spec } => {
            let fx = Fixture::load(&fixture).map_err(|e| e.to_string())?;
            let mut reg = JitRegistry::new(opt).map_err(|e| e.to_string())?;
            if mode == Mode::Jit {
                let t = Instant::now();
                for e in exec::compile_fixture(&fx, spec, &mut reg) {
                    eprintln!("warning: not compiled (runs in the interpreter): {e}");
                }
                println!("compile: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
            }
            let once = || match mode {
                Mode::Interp => exec::run_interp(&fx, spec),
                Mode::Jit => exec::run_with(&fx, spec, &reg),
            };
            let out = once()?;
            let t = Instant::now();
            for _ in 1..repeat.max(1) {
                once()?;
            }
            let per = if repeat > 1 { t.elapsed() / (repeat - 1) } else { t.elapsed() };
            let r = &out.result.result;
            println!("status: {}", exec::status(r));
            println!("gas used: {}", r.tx_gas_used());
            println!("output: 0x{}", hex::encode(r.output().cloned().unwrap_or_default()));
            println!("frames: {} native, {} interpreted", out.native_runs, out.interpreted_runs);
            if repeat > 1 {
                println!("time per call: {:.3} us", per.as_secs_f64() * 1e6);
            }
            if check {
                let i = exec::run_interp(&fx, spec)?;
                let d = exec::diff(&i.result, &out.result);
                if !d.is_empty() {
                    println!("DIFFERENCE (interpreter vs {mode:?}):\n{d}");
                    return Ok(ExitCode::FAILURE);
                }
                println!("check: identical to the interpreter");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
