#!/usr/bin/env bash
# Builds the CUDA crate's test binaries and benchmark (release) and copies
# them to .dev/cuda (git-ignored) under fixed names, for a GPU machine that
# has no Rust toolchain (scripts/cuda-device-job.sh runs them there).
# CARGO_TARGET_DIR is honoured (default: target).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .dev/cuda
json=$(cargo test --release -p kcap-cuda --no-run --message-format=json 2>/dev/null)
pick() { # $1 = target name, $2 = kind
    echo "$json" | python3 -c '
import json, sys
name, kind = sys.argv[1], sys.argv[2]
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == name and kind in m["target"]["kind"] and m.get("executable"):
        print(m["executable"])' "$1" "$2" | tail -1
}
cp "$(pick gpu test)" .dev/cuda/gpu
cp "$(pick nvrtc test)" .dev/cuda/nvrtc
cp "$(pick kcap_cuda lib)" .dev/cuda/unit
cargo build --release -p kcap-cuda --bins 2>/dev/null
cp "${CARGO_TARGET_DIR:-target}/release/kcap-cuda-bench" "${CARGO_TARGET_DIR:-target}/release/kcap-cuda-proc" .dev/cuda/
ls -la .dev/cuda
