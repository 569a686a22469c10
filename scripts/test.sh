#!/usr/bin/env bash
# Ember test suite: check/install LLVM 22, then every test of the workspace in release mode
# (tests run JIT-compiled code, and release keeps the whole run short). Extra arguments go to
# `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
ensure_llvm
ensure_cargo

# CI runs the randomized differential test with a fixed seed so a landing is reproducible;
# run it without EMBER_DIFF_SEED (or with another seed) to explore new programs.
export EMBER_DIFF_SEED="${EMBER_DIFF_SEED:-20261121}"
cargo test --workspace --release "$@"
