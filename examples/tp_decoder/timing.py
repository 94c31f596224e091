"""Step timing and CUDA graph capture for run.py."""

import statistics
import time

import torch


def _elapsed(fn, iters, on_gpu):
    """Seconds for iters back-to-back calls of fn."""
    if not on_gpu:
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        return time.perf_counter() - start
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def time_per_call(fn, iters, on_gpu, repeats=5):
    """Seconds per call of fn: the median over repeats of iters back-to-back
    calls, after a warm-up."""
    for _ in range(3):
        fn()
    return statistics.median(_elapsed(fn, iters, on_gpu) / iters for _ in range(repeats))


def time_in_calls(step, timed, iters, on_gpu):
    """(seconds per step, seconds per step inside timed's calls), over iters
    steps that run their collectives through timed."""
    step()
    timed.take_seconds()  # the warm-up's calls do not count
    total = _elapsed(step, iters, on_gpu)
    return total / iters, timed.take_seconds() / iters


def capture_graph(fn):
    """A CUDA graph of fn, the output its replays write, and the output of
    an eager call of fn (the warm-up) on the stream the graph is captured on:
    PyTorch's cuBLAS workspace is per stream, so that eager call is the
    closest reference a replay has."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the default stream, as capture requires
        eager = fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=side):
        out = fn()
    return graph, out, eager


class TimedCollectives:
    """Wraps a layer's collectives and adds up the time spent inside their
    calls (waiting for peers included): CUDA events around each call on a GPU,
    the wall clock on the CPU, whose ops are synchronous."""

    def __init__(self, inner, on_gpu):
        self.inner, self.on_gpu, self.spans = inner, on_gpu, []

    def _timed(self, fn, *args):
        if not self.on_gpu:
            start = time.perf_counter()
            out = fn(*args)
            self.spans.append(time.perf_counter() - start)
            return out
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn(*args)
        end.record()
        self.spans.append((start, end))
        return out

    def fused_allreduce_residual_rmsnorm(self, x, residual, weight, eps):
        return self._timed(self.inner.fused_allreduce_residual_rmsnorm, x, residual, weight, eps)

    def all_gather(self, x, dim):
        return self._timed(self.inner.all_gather, x, dim)

    def take_seconds(self):
        """Seconds in the calls since the last take."""
        if self.on_gpu:
            torch.cuda.synchronize()
            seconds = sum(start.elapsed_time(end) for start, end in self.spans) / 1e3
        else:
            seconds = sum(self.spans)
        self.spans = []
        return seconds
