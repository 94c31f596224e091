"""The Python API across processes on the CPU backend: every rank gets the
contract's exact bits, the fused op equals its two halves, errors reach every
rank, and the all-gather callback bootstraps a second communicator."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import tpcoll
from ranks import run_ranks
from references import rank_input, rank_order_sum

WORLDS = [2, 3, 4]


def all_reduce_cases(comm, cases):
    out = []
    for shape, dtype in cases:
        x = rank_input(comm.rank, shape, dtype)
        out.append((comm.all_reduce(x, np.empty_like(x)), comm.all_reduce(x.copy())))  # out of place, in place
    return out


@pytest.mark.parametrize("world", WORLDS)
def test_all_reduce_is_the_rank_order_sum_on_every_rank(world):
    # 3 elements, a few KiB, and 1.5 MiB: more than one staging chunk (1 MiB).
    cases = [((3,), np.float32), ((64, 33), np.float16), ((3 << 17,), np.float32), ((5, 7, 11), np.float16)]
    results = run_ranks(world, all_reduce_cases, cases)
    for i, (shape, dtype) in enumerate(cases):
        expected = rank_order_sum([rank_input(r, shape, dtype) for r in range(world)])
        for rank, per_case in enumerate(results):
            out_of_place, in_place = per_case[i]
            assert out_of_place.dtype == dtype and out_of_place.shape == shape
            assert out_of_place.tobytes() == expected.tobytes(), f"rank {rank}, case {shape} {dtype.__name__}"
            assert in_place.tobytes() == expected.tobytes()


def all_gather_cases(comm, cases):
    return [comm.all_gather(rank_input(comm.rank, shape, dtype), dim=dim) for shape, dtype, dim in cases]


@pytest.mark.parametrize("world", WORLDS)
def test_all_gather_concatenates_along_any_dim(world):
    cases = [((2, 3, 5), dtype, dim) for dtype in (np.float64, np.int8, np.uint8, np.int32, np.int64, np.float16)
             for dim in (0, 1, 2, -1)]
    cases.append(((8, 50000), np.float32, -1))  # logits-like: the last dim of a large array, chunked
    results = run_ranks(world, all_gather_cases, cases)
    for i, (shape, dtype, dim) in enumerate(cases):
        expected = np.concatenate([rank_input(r, shape, dtype) for r in range(world)], axis=dim)
        for rank, per_case in enumerate(results):
            assert per_case[i].shape == expected.shape
            assert per_case[i].tobytes() == expected.tobytes(), f"rank {rank}, {dtype.__name__} dim {dim}"


def fused_against_halves(comm, tokens, hidden, dtype):
    x = rank_input(comm.rank, (tokens, hidden), dtype)
    residual = rank_input(100, (tokens, hidden), dtype)  # the same on every rank, as the op requires
    weight = rank_input(101, (hidden,), dtype)
    halves = comm.add_rmsnorm(comm.all_reduce(x, np.empty_like(x)), residual, weight, eps=1e-5)
    runs = {}
    for algo in (None, "oneshot", "twoshot", "unfused"):
        comm.force_algo(algo)
        runs[algo] = comm.fused_allreduce_residual_rmsnorm(x, residual, weight, eps=1e-5)
    comm.force_algo(None)
    no_residual, _ = comm.fused_allreduce_residual_rmsnorm(x, None, weight, eps=1e-5)
    zero = np.zeros_like(residual)
    no_residual_halves, _ = comm.add_rmsnorm(comm.all_reduce(x, np.empty_like(x)), zero, weight, eps=1e-5)
    return halves, runs, (no_residual, no_residual_halves)


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("tokens,hidden,dtype", [(1, 4096, np.float16), (5, 320, np.float32), (64, 2880, np.float16)])
def test_fused_op_is_all_reduce_then_add_rmsnorm_bit_for_bit(world, tokens, hidden, dtype):
    results = run_ranks(world, fused_against_halves, tokens, hidden, dtype)
    (out0, s0), _, _ = results[0]
    expected_s = rank_order_sum([rank_input(r, (tokens, hidden), dtype) for r in range(world)]).astype(np.float32)
    expected_s = (expected_s + rank_input(100, (tokens, hidden), dtype).astype(np.float32)).astype(dtype)
    assert s0.tobytes() == expected_s.tobytes()
    for rank, ((out, s), runs, (no_res, no_res_halves)) in enumerate(results):
        assert out.tobytes() == out0.tobytes() and s.tobytes() == s0.tobytes(), f"rank {rank} differs from rank 0"
        for algo, (fused_out, fused_s) in runs.items():
            assert fused_out.tobytes() == out.tobytes(), f"rank {rank}, algorithm {algo}"
            assert fused_s.tobytes() == s.tobytes(), f"rank {rank}, algorithm {algo}"
        # Without a residual the sum is added to zeros, which keeps every bit (-0 + 0 aside, absent here).
        assert no_res.tobytes() == no_res_halves.tobytes()


def scatter_against_full_ops(comm, shape, dtype):
    x = rank_input(comm.rank, shape, dtype)
    share = shape[0] // comm.world_size
    mine = slice(comm.rank * share, (comm.rank + 1) * share)
    reduced = comm.all_reduce(x, np.empty_like(x))[mine]
    scattered = comm.reduce_scatter(x)
    in_place = x.copy()
    comm.reduce_scatter(in_place, in_place[mine])
    comm.force_algo("fallback")
    fallback = comm.reduce_scatter(x)
    comm.force_algo(None)
    # The fused ops on x as [tokens, hidden]: rank r's rows are its share.
    residual = rank_input(100, shape, dtype)
    weight = rank_input(101, (shape[-1],), dtype)
    full = comm.fused_allreduce_residual_rmsnorm(x, residual, weight, eps=1e-5)
    fused = comm.fused_reduce_scatter_residual_rmsnorm(x, residual[mine].copy(), weight, eps=1e-5)
    full_no_residual, _ = comm.fused_allreduce_residual_rmsnorm(x, None, weight, eps=1e-5)
    fused_no_residual, none = comm.fused_reduce_scatter_residual_rmsnorm(x, None, weight, eps=1e-5)
    return ((reduced, scattered, in_place[mine], fallback),
            ((full[0][mine], full[1][mine]), fused, (full_no_residual[mine], fused_no_residual, none)))


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("shape,dtype", [((12, 5), np.float32), ((24, 2880), np.float16), ((12 << 14, 16), np.float32)])
def test_reduce_scatter_is_the_all_reduce_share_bit_for_bit(world, shape, dtype):
    for rank, (plain, fused) in enumerate(run_ranks(world, scatter_against_full_ops, shape, dtype)):
        reduced, scattered, in_place, fallback = plain
        assert scattered.shape == (shape[0] // world, shape[1]) and scattered.dtype == dtype
        for got, what in ((scattered, "out of place"), (in_place, "in place"), (fallback, "fallback")):
            assert got.tobytes() == reduced.tobytes(), f"rank {rank}, {what}"
        (full_out, full_s), (out, s), (full_no_residual, no_residual, none) = fused
        assert out.tobytes() == full_out.tobytes() and s.tobytes() == full_s.tobytes(), f"rank {rank}, fused"
        assert no_residual.tobytes() == full_no_residual.tobytes() and none is None, f"rank {rank}, no residual"


def uneven_share(comm):
    try:
        comm.reduce_scatter(np.ones((comm.world_size + 1, 4), np.float32))
    except tpcoll.Error as e:
        return e.code, str(e)
    return None


def test_a_dim_0_that_does_not_split_evenly_is_refused():
    for error in run_ranks(2, uneven_share):
        assert error is not None
        code, message = error
        assert code == tpcoll.Result.INVALID_ARGUMENT
        assert "[3, 4]" in message and "2 equal shares" in message, message


def mismatched_then_usable(comm):
    count = 16 if comm.rank == 0 else 32
    try:
        comm.all_reduce(np.ones(count, np.float32))
        error = None
    except tpcoll.Error as e:
        error = (e.code, str(e))
    after = comm.all_reduce(np.ones(8, np.float32))
    return error, after


def test_ranks_that_disagree_all_get_the_mismatch():
    for rank, (error, after) in enumerate(run_ranks(2, mismatched_then_usable)):
        assert error is not None, f"rank {rank} raised nothing"
        code, message = error
        assert code == tpcoll.Result.MISMATCH, message
        assert "16" in message and "32" in message, "the message names both calls"
        assert after.tolist() == [2.0] * 8, "the communicator stays usable"


def aborted_by_rank_0(comm):
    if comm.rank == 0:
        comm.abort()
    try:
        comm.all_reduce(np.ones(8, np.float32))
    except tpcoll.Error as e:
        return e.code, str(e)
    return None


def test_an_abort_fails_every_rank():
    for rank, error in enumerate(run_ranks(3, aborted_by_rank_0)):
        assert error is not None, f"rank {rank} raised nothing"
        code, message = error
        assert code == tpcoll.Result.ABORTED, message
        assert "rank 0" in message, message


def nested_through_callback(comm):
    # A framework's process group, played by a first communicator.
    def allgather(data):
        return comm.all_gather(np.frombuffer(data, np.uint8)).tobytes()

    with tpcoll.Communicator(comm.rank, comm.world_size, allgather=allgather) as inner:
        x = rank_input(comm.rank, (1000,), np.float32)
        auto = inner.all_reduce(x, np.empty_like(x))
        inner.force_algo("fallback")  # the fallback engine exchanges through the callback too
        fallback = inner.all_reduce(x, np.empty_like(x))
        plan = inner.plan("all_reduce", "float32", [1000])
    return auto, fallback, plan.backend


@pytest.mark.parametrize("world", [2, 3])
def test_allgather_callback_bootstraps_across_processes(world):
    expected = rank_order_sum([rank_input(r, (1000,), np.float32) for r in range(world)])
    for rank, (auto, fallback, backend) in enumerate(run_ranks(world, nested_through_callback)):
        assert auto.tobytes() == expected.tobytes(), f"rank {rank}"
        assert fallback.tobytes() == expected.tobytes(), f"rank {rank} (fallback)"
        assert backend == "cpu-fallback"


def plans(comm):
    # Which algorithm the built-in CPU table picks is measured data
    # (bench/results/cpu-2core-tune-x*.json), so only agreement and the reason are asserted.
    return [(p.algorithm, p.reason) for p in (comm.plan("all_reduce", "float32", [n]) for n in (256, 1 << 23))] + [
        comm.plan("fused_allreduce_rmsnorm", "float32", [8, 4096]).reason,
        comm.plan("reduce_scatter", "bfloat16", [1 << 20]).algorithm,
        comm.plan("fused_reduce_scatter_rmsnorm", "float16", [8, 4096]).algorithm]


def test_plans_agree_across_ranks_and_name_the_table():
    results = run_ranks(4, plans)
    assert all(r == results[0] for r in results)
    small, large, fused_reason, scatter, fused_scatter = results[0]
    assert (scatter, fused_scatter) == ("oneshot", "unfused")
    for algorithm, reason in (small, large):
        assert algorithm in ("oneshot", "twoshot") and reason.startswith(algorithm + ": table cpu-builtin")
    assert "world 4" in fused_reason


FROM_ENV = """
import numpy as np, tpcoll
with tpcoll.Communicator.from_env() as comm:
    x = np.full(4, comm.rank + 1, np.float32)
    print("sum", comm.rank, comm.world_size, comm.all_reduce(x).tolist())
"""


def test_from_env_under_the_launcher():
    # The build's launcher (ctest sets TPCOLL_CLI), else an installed one.
    launcher = os.environ.get("TPCOLL_CLI") or shutil.which("tpcoll")
    if launcher is None:
        pytest.skip("no tpcoll launcher: set TPCOLL_CLI or put tpcoll on PATH")
    run = subprocess.run([launcher, "run", "-n", "3", "--", sys.executable, "-c", FROM_ENV],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = sorted(line for line in run.stdout.splitlines() if "sum" in line)
    assert lines == [f"[{r}] sum {r} 3 [6.0, 6.0, 6.0, 6.0]" for r in range(3)]
