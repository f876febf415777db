#!/usr/bin/env bash
# The whole test suite: Rust (all crates) and, where present, Python.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --workspace
if [ -x scripts/test-cuda.sh ]; then scripts/test-cuda.sh; fi
if [ -x scripts/test-python.sh ]; then
    scripts/test-python.sh
fi
