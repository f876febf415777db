#!/usr/bin/env bash
# Installs NVRTC (libnvrtc.so.13) and the CUDA headers (cuda_fp16.h, …) from
# PyPI wheels into a project folder, so the CUDA kernels of crates/kcap-cuda
# can be compiled on a machine without a GPU or a CUDA toolkit (CI).
#
#   scripts/nvrtc-setup.sh            # installs into .dev/nvrtc (git-ignored)
#   eval "$(scripts/nvrtc-setup.sh)"  # … and exports the variables below
#
# Output (stdout, one per line, ready for eval):
#   export LD_LIBRARY_PATH=<dir of libnvrtc.so.13>:$LD_LIBRARY_PATH
#   export KCAP_CUDA_INCLUDE=<dir of cuda_fp16.h>
# Progress and pip's messages go to stderr. Idempotent: an existing install of
# the pinned versions is reused. Override the folder with KCAP_NVRTC_DIR and
# the Python with PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="${KCAP_NVRTC_DIR:-$PWD/.dev/nvrtc}"
PY="${PYTHON:-python3}"
NVRTC_VER="13.0.*"
RUNTIME_VER="13.0.*"
LIB="$DEST/nvidia/cu13/lib"
INC="$DEST/nvidia/cu13/include"

if [ ! -e "$LIB/libnvrtc.so.13" ] || [ ! -e "$INC/cuda_fp16.h" ]; then
    echo "nvrtc-setup: installing nvidia-cuda-nvrtc==$NVRTC_VER nvidia-cuda-runtime==$RUNTIME_VER into $DEST" >&2
    mkdir -p "$DEST"
    # pip from a virtual environment of its own: a system Python may refuse
    # installs (PEP 668, "externally managed").
    if [ ! -x "$DEST/venv/bin/python" ]; then
        "$PY" -m venv "$DEST/venv" >&2
    fi
    "$DEST/venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --upgrade \
        --target "$DEST" "nvidia-cuda-nvrtc==$NVRTC_VER" "nvidia-cuda-runtime==$RUNTIME_VER" >&2
fi
if [ ! -e "$LIB/libnvrtc.so.13" ]; then
    echo "nvrtc-setup: libnvrtc.so.13 not found under $LIB after install" >&2
    exit 1
fi
if [ ! -e "$INC/cuda_fp16.h" ]; then
    echo "nvrtc-setup: cuda_fp16.h not found under $INC after install" >&2
    exit 1
fi
echo "export LD_LIBRARY_PATH=$LIB\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
echo "export KCAP_CUDA_INCLUDE=$INC"
