"""Python overhead of the drop-in API on the project-1e6 scenario.

project-1e6: n = 1e6, k = 1000, p = 0.001, beta = 0.05; one step stim → A,
then 24 steps stim → A with A → A (25 steps). The same scenario is timed

  python-loop  driven step by step from Python with the drop-in API
               (``brain.project({"stim": ["A"]}, {"A": ["A"]})`` 24 times),
  rust-call    in one Rust call (``kcap.project_rounds(brain, "stim", "A", 25)``),

each repetition building a fresh brain with the same seed (setup included in
both, and identical: the two runs compute the same winners, checked). The
repetitions are interleaved so that machine noise hits both alike; medians
are reported, with their ratio (the issue's target: python-loop within 10%
of rust-call) and the overhead per ``project()`` call. If the ``kcap``
command-line tool is found (``KCAP_BIN`` or ``PATH``), its own
``kcap bench project-1e6`` median is printed as a third, separate-process
reference (its scenario file may use another seed).

    python crates/kcap-py/bench/bench_project.py [--repeat 31] [--json out.json] [--check]

``--check`` exits with status 1 if the ratio exceeds 1.10.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import kcap

N, K, P, BETA, STEPS = 1_000_000, 1000, 0.001, 0.05, 25


def _brain(seed):
    b = kcap.Brain(P, seed=seed)
    b.add_stimulus("stim", K)
    b.add_area("A", N, K, BETA)
    return b


def python_loop(seed):
    """The scenario as a reference script drives it; returns (seconds, winners)."""
    t0 = time.perf_counter()
    b = _brain(seed)
    b.project({"stim": ["A"]}, {})
    for _ in range(STEPS - 1):
        b.project({"stim": ["A"]}, {"A": ["A"]})
    dt = time.perf_counter() - t0
    return dt, b.area_by_name["A"].winners


def rust_call(seed):
    """The scenario in one call into the library; returns (seconds, winners)."""
    t0 = time.perf_counter()
    b = _brain(seed)
    w = kcap.project_rounds(b, "stim", "A", STEPS)
    dt = time.perf_counter() - t0
    return dt, w.tolist()


def cli_median(repeat):
    """`kcap bench project-1e6` median (seconds), or None without the tool."""
    exe = os.environ.get("KCAP_BIN") or shutil.which("kcap")
    if not exe:
        return None
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "bench.json")
        r = subprocess.run([exe, "bench", "project-1e6", "--repeat", str(repeat), "--json", out],
                           capture_output=True, text=True)
        if r.returncode != 0:
            print(f"(kcap bench failed: {r.stderr.strip()[:200]})", file=sys.stderr)
            return None
        with open(out) as f:
            return json.load(f)["scenarios"][0]["median_seconds"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=31, help="timed repetitions of each variant (default 31)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--check", action="store_true", help="exit 1 if python-loop / rust-call > 1.10")
    ap.add_argument("--no-cli", action="store_true", help="skip the kcap command-line reference")
    args = ap.parse_args()

    _, w_py = python_loop(args.seed)
    _, w_rs = rust_call(args.seed)
    assert w_py == w_rs, "the Python loop and the Rust call must compute the same winners"
    for _ in range(args.warmup):
        python_loop(args.seed)
        rust_call(args.seed)

    py_times, rs_times = [], []
    for i in range(args.repeat):
        # Alternate the order so neither variant always runs first.
        order = (python_loop, rust_call) if i % 2 == 0 else (rust_call, python_loop)
        for f in order:
            dt, _ = f(args.seed)
            (py_times if f is python_loop else rs_times).append(dt)

    py_med, rs_med = statistics.median(py_times), statistics.median(rs_times)
    ratio = py_med / rs_med
    overhead_us = (py_med - rs_med) / STEPS * 1e6
    events_per_step = 2 * K * N * P  # firing neurons x expected out-synapses into A
    cli = None if args.no_cli else cli_median(max(5, args.repeat // 3))

    print(f"project-1e6 (n={N:.0e}, k={K}, p={P}, beta={BETA}, {STEPS} steps, seed {args.seed}), "
          f"{args.repeat} interleaved repetitions, medians, setup included")
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, kcap {kcap.__version__}")
    print(f"  python-loop (drop-in project() x {STEPS}): {py_med * 1e3:8.2f} ms  "
          f"({py_med / STEPS * 1e6:6.1f} us/step, {events_per_step * STEPS / py_med:.2e} synaptic events/s)")
    print(f"  rust-call   (kcap.project_rounds)       : {rs_med * 1e3:8.2f} ms  "
          f"({rs_med / STEPS * 1e6:6.1f} us/step, {events_per_step * STEPS / rs_med:.2e} synaptic events/s)")
    if cli is not None:
        print(f"  kcap bench project-1e6 (CLI, own process): {cli * 1e3:8.2f} ms")
    print(f"  ratio python-loop / rust-call: {ratio:.3f}  (target <= 1.10); "
          f"overhead {overhead_us:+.1f} us per project() call")
    spread = (statistics.quantiles(py_times, n=4), statistics.quantiles(rs_times, n=4))
    print(f"  quartiles ms: python-loop {[round(q * 1e3, 2) for q in spread[0]]}, "
          f"rust-call {[round(q * 1e3, 2) for q in spread[1]]}")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({
                "scenario": "project-1e6", "n": N, "k": K, "p": P, "beta": BETA, "steps": STEPS,
                "seed": args.seed, "repetitions": args.repeat,
                "python_loop_seconds": py_times, "rust_call_seconds": rs_times,
                "python_loop_median": py_med, "rust_call_median": rs_med, "ratio": ratio,
                "overhead_us_per_call": overhead_us, "cli_median": cli,
                "machine": {"arch": platform.machine(), "cores": os.cpu_count(),
                            "python": platform.python_version()},
            }, f, indent=2)
    if args.check and ratio > 1.10:
        print("FAIL: Python-driven run is more than 10% slower than the Rust call", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
