#!/usr/bin/env bash
# The Python module's test suite, from nothing: creates the virtual
# environment .venv (if missing), installs maturin, numpy and pytest, builds
# the `kcap` extension module into it (release mode) and runs pytest on
# crates/kcap-py/tests. Extra arguments go to pytest (e.g. -k subclass).
# Exits non-zero if any step or test fails.
set -euo pipefail
cd "$(dirname "$0")/.."

# A target folder of its own, so building the module never waits on (or
# invalidates) the workspace's `cargo build`/`cargo test` artefacts.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/py}"
PYTHON="${PYTHON:-python3}"
VENV="$PWD/.venv"

if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
echo "== installing build and test tools"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "maturin>=1.9,<2" "numpy>=1.26,<3" "pytest>=8,<10"

echo "== building the kcap module (maturin develop --release)"
VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH" \
    "$VENV/bin/maturin" develop --release --quiet -m crates/kcap-py/Cargo.toml

# kcap.run() drives the command-line tool; point it at a built one if any.
if [ -z "${KCAP_BIN:-}" ]; then
    for candidate in target/release/kcap target/py/release/kcap; do
        if [ -x "$candidate" ]; then export KCAP_BIN="$PWD/$candidate"; break; fi
    done
fi

echo "== pytest"
"$VENV/bin/python" -m pytest crates/kcap-py/tests "$@"
