#!/usr/bin/env bash
# The whole test suite: Rust (all crates) and, where present, Python.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --workspace
# Bounded fuzzing of the experiment-file and checkpoint parsers (fuzz/README.md).
scripts/fuzz-smoke.sh
if [ -x scripts/test-cuda.sh ]; then scripts/test-cuda.sh; fi
if [ -x scripts/test-python.sh ]; then
    scripts/test-python.sh
fi
