"""Step timing and CUDA graph capture for run.py."""

import statistics
import time

import torch


def time_per_call(fn, iters, on_gpu, repeats=5):
    """Seconds per call of fn: the median over repeats of iters back-to-back
    calls, after a warm-up. On a GPU, CUDA events around the calls."""
    for _ in range(3):
        fn()
    samples = []
    for _ in range(repeats):
        if on_gpu:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(iters):
                fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / 1e3 / iters)
        else:
            t0 = time.perf_counter()
            for _ in range(iters):
                fn()
            samples.append((time.perf_counter() - t0) / iters)
    return statistics.median(samples)


def capture_graph(fn):
    """A CUDA graph of fn and the output tensor its replays write."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the default stream, as capture requires
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out
