#!/usr/bin/env bash
# Ember test suite: check/install LLVM 22, then every test of the workspace in release mode
# (tests run JIT-compiled code, and release keeps the whole run short). Extra arguments go to
# `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
ensure_llvm
ensure_cargo

cargo test --workspace --release "$@"
