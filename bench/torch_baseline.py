"""PyTorch baseline for kcap's GPU kernel benchmarks (crates/kcap-cuda,
src/bin/kcap-cuda-bench.rs): the same scenarios, timed the same way, printed
as the same table, so the two can be run in one job and compared line by line.

Scenarios: torch.topk (sorted=False) over uniform values (torch.rand(n) cast
to the dtype) for n = 1e9 (k = 31 623) and 1e8 (k = 10 000), f16 and f32; and
the dense PyTorch step of BENCH.md at n = 1e9: zero the f32 inputs,
index_add_ 31 623 x 1000 random events (unit weights), topk; and the
PyTorch stand-in for a procedural-1e9 step (2*10^10 random targets in chunks
of 10^8, index_add_, topk at k = 10^4). Timing: host
wall clock with torch.cuda.synchronize() before and after each call (the
sync is inside the timed region), median of --reps repetitions after a
warm-up call; GB/s = bytes of input read once / time (dense step: G events/s).

    python3 bench/torch_baseline.py [--reps N] [--only name,name]
"""
import argparse
import math
import time

import torch


def timed(fn, reps):
    fn()  # warm-up
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append((time.perf_counter() - t0) * 1e3)
    ts.sort()
    return ts[len(ts) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))
    want = lambda name: not only or name in only
    dev = "cuda"
    torch.manual_seed(0)
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    rows = []
    cases = [
        ("topk-1e9-f16", 10**9, 31_623, torch.float16),
        ("topk-1e9-f32", 10**9, 31_623, torch.float32),
        ("topk-1e8-f16", 10**8, 10_000, torch.float16),
        ("topk-1e8-f32", 10**8, 10_000, torch.float32),
    ]
    for name, n, k, dt in cases:
        if not want(name):
            continue
        v = torch.rand(n, device=dev, dtype=torch.float32).to(dt)
        ms = timed(lambda: torch.topk(v, k, sorted=False), args.reps)
        gbs = n * v.element_size() / (ms * 1e-3) / 1e9
        rows.append((name, n, k, f"torch.topk {str(dt)[6:]}", ms, gbs, ""))
        del v
        torch.cuda.empty_cache()
    if want("dense-step-1e9"):
        n, k, d = 10**9, 31_623, 1000
        m = k * d
        idx = torch.randint(0, n, (m,), device=dev, dtype=torch.int64)
        w = torch.ones(m, device=dev, dtype=torch.float32)
        out = torch.zeros(n, device=dev, dtype=torch.float32)

        def step():
            out.zero_()
            out.index_add_(0, idx, w)
            return torch.topk(out, k, sorted=False)

        ms = timed(step, min(args.reps, 10))
        rows.append(("dense-step-1e9", n, k, "torch zero+index_add_+topk f32", ms, m / (ms * 1e-3) / 1e9,
                     f"{m} events; rate column = G events/s"))
        del idx, w, out
        torch.cuda.empty_cache()
    if want("procedural-1e9-step"):
        # What a PyTorch user would write instead of kcap's procedural-1e9
        # step (BENCH.md): 2 fibers x 10^4 firing rows x 10^6 random targets
        # = 2*10^10 events, drawn in chunks of 10^8 (memory), summed with
        # index_add_, then the k-cap. Not even a fixed graph.
        n, k, events, chunk = 10**9, 10_000, 2 * 10**10, 10**8
        out = torch.zeros(n, device=dev, dtype=torch.float32)
        ones = torch.ones(chunk, device=dev, dtype=torch.float32)

        def pstep():
            out.zero_()
            for _ in range(events // chunk):
                out.index_add_(0, torch.randint(0, n, (chunk,), device=dev, dtype=torch.int64), ones)
            return torch.topk(out, k, sorted=False)

        ms = timed(pstep, min(args.reps, 3))
        rows.append(("procedural-1e9-step", n, k, "torch randint+index_add_ x200 +topk f32", ms,
                     events / (ms * 1e-3) / 1e9, f"{events} events; {1e3 / ms:.2f} steps/s; rate column = G events/s"))
        del out, ones
        torch.cuda.empty_cache()
    print()
    print("| scenario | n | k | implementation | median ms | GB/s (input read once) | notes |")
    print("|---|---|---|---|---|---|---|")
    for name, n, k, what, ms, gbs, note in rows:
        print(f"| {name} | {n:.0e} | {k} | {what} | {ms:.3f} | {gbs:.0f} | {note} |")


if __name__ == "__main__":
    main()
