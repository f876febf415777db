#!/usr/bin/env bash
# Runs on a GPU machine without a Rust toolchain: the CUDA test binaries and
# the benchmark staged in .dev/cuda (by scripts/stage-cuda.sh), then the
# PyTorch baseline, in one job, logging to ${OUT:-out/cuda}.
#   .dev/cuda/{nvrtc,gpu,unit,kcap-cuda-bench,kcap-cuda-proc,kcap,bench/torch_baseline.py}
# NVRTC and the CUDA headers are taken from the Python nvidia-cuda-nvrtc /
# nvidia-cuda-runtime wheels if present, else from /usr/local/cuda.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-out/cuda}"
mkdir -p "$OUT"
SP=$(python3 -c 'import site; print(site.getsitepackages()[0])' 2>/dev/null || true)
for d in "$SP/nvidia/cu13/lib" /usr/local/cuda/lib64; do
    if [ -e "$d/libnvrtc.so.13" ]; then export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; break; fi
done
for d in "$SP/nvidia/cu13/include" /usr/local/cuda/include; do
    if [ -e "$d/cuda_fp16.h" ]; then export KCAP_CUDA_INCLUDE="$d"; break; fi
done
echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-} KCAP_CUDA_INCLUDE=${KCAP_CUDA_INCLUDE:-}" | tee "$OUT/env.txt"
{ date -u; nvidia-smi; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; } > "$OUT/device.txt" 2>&1
head -20 "$OUT/device.txt"
status=0
for t in unit nvrtc gpu; do
    if [ -x ".dev/cuda/$t" ]; then
        echo "== test $t"
        ".dev/cuda/$t" --test-threads "${TEST_THREADS:-4}" 2>&1 | tee "$OUT/test-$t.log" | grep -E "^test |SKIPPED|panicked|test result|assert" | grep -v "\.\.\. ok$" || true
        [ "${PIPESTATUS[0]}" = 0 ] || status=1
    fi
done
if [ -x .dev/cuda/kcap-cuda-bench ]; then
    echo "== kcap-cuda-bench"
    .dev/cuda/kcap-cuda-bench ${BENCH_ARGS:-} 2>&1 | tee "$OUT/bench-kcap.log" || status=1
fi
# The scenarios of BENCH.md through the CLI, on the GPU and, for the
# crossover, on this machine's CPU cores. Each list is "SCENARIOS:FLAGS;…"
# (GPU_RUNS="" / CPU_RUNS="" skip them).
run_list() { # $1 = device, $2 = list
    local i=0 item sc flags
    local -a items
    IFS=';' read -ra items <<< "$2"
    for item in "${items[@]}"; do
        i=$((i + 1))
        sc="${item%%:*}" flags="${item#*:}"
        echo "== kcap bench $sc $flags --device $1"
        .dev/cuda/kcap bench $sc $flags --device "$1" --json "$OUT/bench-$1-$i.json" 2>&1 | tee "$OUT/bench-$1-$i.log" || status=1
    done
}
if [ -x .dev/cuda/kcap ]; then
    run_list cuda "${GPU_RUNS-project-1e6 completion-1e5 merge-1e5 lazy-1e9 explicit-250k procedural-1e7 procedural-1e9:--repeat 3;procedural-1e11:--steps 2 --repeat 1}"
    run_list cpu "${CPU_RUNS-project-1e6 completion-1e5 merge-1e5 lazy-1e9 explicit-250k procedural-1e7:--repeat 3;procedural-1e9:--steps 2 --repeat 1;--compare-engines:}"
fi
# The procedural scenarios step by step, with per-phase times (PROC="" skips them).
if [ -x .dev/cuda/kcap-cuda-proc ]; then
    for sc in ${PROC-procedural-1e9:10}; do
        echo "== kcap-cuda-proc ${sc%%:*} --steps ${sc##*:}"
        .dev/cuda/kcap-cuda-proc "${sc%%:*}" --steps "${sc##*:}" 2>&1 | tee "$OUT/proc-${sc%%:*}.log" || status=1
    done
fi
# Optional tuning sweep: SWEEP="1 2 4" reruns the named scenarios with
# KCAP_TOPK_PASS_BLOCKS_PER_SM set to each value.
for v in ${SWEEP:-}; do
    echo "== kcap-cuda-bench, KCAP_TOPK_PASS_BLOCKS_PER_SM=$v"
    KCAP_TOPK_PASS_BLOCKS_PER_SM=$v .dev/cuda/kcap-cuda-bench --no-check ${SWEEP_ARGS:-} 2>&1 | tee "$OUT/sweep-$v.log" | grep -E "^\| topk" || status=1
done
# Optional per-kernel times: NCU_ARGS="--only topk-1e9-f16 --reps 1 --no-check".
if [ -n "${NCU_ARGS:-}" ] && command -v ncu >/dev/null; then
    echo "== ncu kernel durations"
    ncu --metrics gpu__time_duration.sum -k regex:topk --csv --print-units base .dev/cuda/kcap-cuda-bench $NCU_ARGS > "$OUT/ncu.csv" 2> "$OUT/ncu.err" || echo "ncu failed: $(tail -3 "$OUT/ncu.err")"
    python3 - "$OUT/ncu.csv" <<'PY' || true
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
if rows:
    h = rows[0]; ki = h.index("Kernel Name"); vi = h.index("Metric Value")
    for r in rows[1:]:
        print(f"{r[ki][:40]:40s} {float(r[vi].replace(',', '')) / 1e3:10.1f} us")
PY
fi
echo "== torch baseline"
PYTHONUNBUFFERED=1 python3 .dev/cuda/bench/torch_baseline.py ${TORCH_ARGS:-} 2>&1 | tee "$OUT/bench-torch.log" || status=1
exit $status
