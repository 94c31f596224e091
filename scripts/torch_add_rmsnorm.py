#!/usr/bin/env python3
"""PyTorch's residual add + RMSNorm, the baseline of tpcoll's world-size-1
fused op: `x + r` then `F.rms_norm`, eager and under torch.compile, bf16,
timed like `tpcoll bench` (CUDA-graph replays of many back-to-back calls,
median over replays). Usage: torch_add_rmsnorm.py [--json PATH]"""
import argparse
import json
import statistics

import torch
import torch.nn.functional as F

SHAPES = [(1, 4096), (8, 4096), (128, 8192), (512, 8192), (2048, 8192)]
CALLS, REPLAYS, EPS = 50, 20, 1e-6


def add_rmsnorm(x, r, w):
    s = x + r
    return F.rms_norm(s, (s.shape[-1],), w, EPS), s


def time_us(fn, *args):
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn(*args)  # warm-up (and compilation) outside the graph
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        for _ in range(CALLS):
            fn(*args)
    times = []
    for _ in range(REPLAYS):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) * 1000.0 / CALLS)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--json")
    args = parser.parse_args()
    compiled = torch.compile(add_rmsnorm, dynamic=False)
    rows = []
    print(f"{'tokens':>6} {'hidden':>6} {'eager(us)':>10} {'compile(us)':>12}")
    for tokens, hidden in SHAPES:
        x, r = (torch.randn(tokens, hidden, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        w = torch.randn(hidden, device="cuda", dtype=torch.bfloat16)
        row = {"tokens": tokens, "hidden": hidden, "dtype": "bfloat16", "device": torch.cuda.get_device_name(),
               "eager_us": time_us(add_rmsnorm, x, r, w), "compile_us": time_us(compiled, x, r, w)}
        rows.append(row)
        print(f"{tokens:>6} {hidden:>6} {row['eager_us']:>10.2f} {row['compile_us']:>12.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
