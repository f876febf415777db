#!/usr/bin/env bash
# Builds the CUDA crate's test binaries, the GPU benchmarks and the kcap CLI
# (release) and copies them, stripped, to .dev/cuda (git-ignored) under fixed
# names, with the PyTorch baseline, for a GPU machine that has no Rust
# toolchain (scripts/cuda-device-job.sh runs them there). Stays well under
# the device tool's 64 MiB carry limit. CARGO_TARGET_DIR is honoured.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .dev/cuda/bench
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
cargo build --release -p kcap-cli 2>/dev/null
t="${CARGO_TARGET_DIR:-target}/release"
cp "$t/kcap-cuda-bench" "$t/kcap-cuda-proc" "$t/kcap" .dev/cuda/
strip .dev/cuda/gpu .dev/cuda/nvrtc .dev/cuda/unit .dev/cuda/kcap-cuda-bench .dev/cuda/kcap-cuda-proc .dev/cuda/kcap
cp bench/torch_baseline.py .dev/cuda/bench/
du -sh .dev/cuda
