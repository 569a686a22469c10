#!/usr/bin/env bash
# Ember demo: check/install LLVM 22, build in release, then benchmark interpreter vs JIT on the
# embedded programs and on ../shared/bench/revmc (or $EMBER_BENCH_DIR) when present.
# Extra arguments go to every `ember bench` call (e.g. --json, --time 1, --opt 3).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
ensure_llvm
ensure_cargo

echo "== building (release) =="
cargo build --release -p ember-tools
EMBER=./target/release/ember

echo
echo "== embedded programs =="
"$EMBER" bench --embedded "$@"

DIR="${EMBER_BENCH_DIR:-../shared/bench/revmc}"
echo
if [ -d "$DIR" ]; then
    echo "== fixtures in $DIR =="
    EMBER_BENCH_DIR="$DIR" "$EMBER" bench "$@"
else
    echo "NOTE: $DIR not found; set EMBER_BENCH_DIR to benchmark the revmc fixtures too."
fi
