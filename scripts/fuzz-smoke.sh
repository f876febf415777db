#!/usr/bin/env bash
# Bounded fuzzing of hostile input (issue 7), for CI: the experiment-file
# target and the checkpoint target of fuzz/ (see fuzz/README.md), each for
# FUZZ_SECONDS (default 45) seconds.
#
# 1. Builds the stable `replay` driver (reusing the workspace's release build
#    in target/), runs both targets over their seed corpora (examples/*.toml,
#    fuzz/corpus/experiment, and checkpoints saved by this build, which must
#    load) and writes the checkpoint seeds for libFuzzer.
# 2. Coverage-guided: installs cargo-fuzz if missing (`cargo install
#    cargo-fuzz --locked`, about a minute on 2 cores) and runs
#    `cargo fuzz run -s none` on the stable toolchain (no sanitizer, so no
#    nightly compiler is needed; panics and aborts are still caught).
#    Where cargo-fuzz cannot be installed or built, the replay driver fuzzes
#    instead (random mutations, not coverage-guided) for the same time.
# A finding (panic, abort, timeout) fails the script; the input is saved
# under fuzz/artifacts/TARGET/ with the command that reproduces it.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET="${FUZZ_SECONDS:-45}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

echo "== fuzz-smoke: building the replay driver"
cargo build --release --quiet --manifest-path fuzz/Cargo.toml --target-dir target \
    --no-default-features --features replay --bin replay
REPLAY=target/release/replay
"$REPLAY" experiment --iterations 0 examples fuzz/corpus/experiment
"$REPLAY" checkpoint --iterations 0
"$REPLAY" checkpoint --emit-seeds "$WORK/seeds-checkpoint"

have_cargo_fuzz() { cargo fuzz --version >/dev/null 2>&1; }
if ! have_cargo_fuzz; then
    echo "== fuzz-smoke: installing cargo-fuzz"
    cargo install cargo-fuzz --locked --quiet || echo "fuzz-smoke: cargo-fuzz could not be installed"
fi

coverage_guided=false
if have_cargo_fuzz; then
    echo "== fuzz-smoke: building the libFuzzer targets (stable, no sanitizer)"
    if cargo fuzz build -s none -O; then
        coverage_guided=true
    else
        echo "fuzz-smoke: cargo fuzz build failed; falling back to the replay driver"
    fi
fi

for target in experiment checkpoint; do
    if [ "$target" = experiment ]; then
        seeds=(fuzz/corpus/experiment examples)
    else
        seeds=("$WORK/seeds-checkpoint")
    fi
    if $coverage_guided; then
        echo "== fuzz-smoke: cargo fuzz run $target (${SECONDS_PER_TARGET} s)"
        mkdir -p "$WORK/corpus-$target"
        # New inputs go into the first (temporary) folder; the seeds stay as they are.
        log="$WORK/$target.log"
        if ! cargo fuzz run -s none -O "$target" "$WORK/corpus-$target" "${seeds[@]}" -- \
            -max_total_time="$SECONDS_PER_TARGET" -timeout=20 -rss_limit_mb=4096 \
            -print_final_stats=1 >"$log" 2>&1; then
            tail -n 60 "$log" >&2
            echo "fuzz-smoke: FAILED: cargo fuzz run $target found an input that crashes, aborts or hangs (above; saved in fuzz/artifacts/$target)" >&2
            exit 1
        fi
        grep -E "^#[0-9]+ +(INITED|DONE)|stat::number_of_executed_units" "$log" || true
    else
        echo "== fuzz-smoke: replay $target (${SECONDS_PER_TARGET} s of mutations)"
        "$REPLAY" "$target" --seconds "$SECONDS_PER_TARGET" "${seeds[@]}"
    fi
done
echo "fuzz-smoke: no finding"
