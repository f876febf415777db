#!/usr/bin/env bash
# Tests of the CUDA backend (crates/kcap-cuda) with NVRTC available, so the
# kernel-compilation test runs for real on a machine without a GPU (CI):
# installs NVRTC and the CUDA headers from PyPI wheels (scripts/nvrtc-setup.sh),
# puts them on LD_LIBRARY_PATH / KCAP_CUDA_INCLUDE, and runs the crate's
# tests. GPU tests skip visibly ("SKIPPED: …") where no NVIDIA driver/GPU is.
# Extra arguments go to `cargo test` (e.g. -- --nocapture).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/nvrtc-setup.sh)"
echo "test-cuda: LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >&2
echo "test-cuda: KCAP_CUDA_INCLUDE=$KCAP_CUDA_INCLUDE" >&2
cargo test --release -p kcap-cuda "$@"
