"""The Python API in one process (world size 1): results, argument checks the
binding adds, and errors carrying the library's message and code."""

import numpy as np
import pytest

import tpcoll
from references import quantise_fp8, rank_input, rmsnorm64


@pytest.fixture
def comm():
    with tpcoll.Communicator(0, 1) as c:
        yield c


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_all_reduce_of_one_rank_is_the_input(comm, dtype):
    x = rank_input(0, (3, 5), dtype)
    out = comm.all_reduce(x, np.zeros_like(x))
    assert out.tobytes() == x.tobytes()


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, np.int8, np.uint8, np.int32, np.int64])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_all_gather_of_one_rank_copies_every_dtype(comm, dtype, dim):
    x = rank_input(0, (4, 6), dtype)
    out = comm.all_gather(x, dim=dim)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.tobytes() == x.tobytes()


@pytest.mark.parametrize("dtype,tolerance", [(np.float32, 1e-5), (np.float16, 2e-3)])
def test_add_rmsnorm_matches_fp64(comm, dtype, tolerance):
    x, residual = rank_input(0, (7, 96), dtype), rank_input(1, (7, 96), dtype)
    weight = rank_input(2, (96,), dtype)
    out, s = comm.add_rmsnorm(x, residual, weight, eps=1e-6)
    assert s.tobytes() == (x.astype(np.float32) + residual.astype(np.float32)).astype(dtype).tobytes()
    expected = rmsnorm64(s, weight, 1e-6)
    assert np.max(np.abs(out - expected)) <= tolerance * np.max(np.abs(expected))


def test_fused_op_of_one_rank_in_place(comm):
    x, residual = rank_input(0, (4, 64), np.float32), rank_input(1, (4, 64), np.float32)
    weight = rank_input(2, (64,), np.float32)
    expected_out, expected_s = comm.add_rmsnorm(x, residual, weight)
    out, s = comm.fused_allreduce_residual_rmsnorm(x, residual, weight, out=x, residual_out=residual)
    assert out is x and s is residual
    assert x.tobytes() == expected_out.tobytes() and residual.tobytes() == expected_s.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("scale", [None, 0.004])
@pytest.mark.parametrize("with_out", [False, True])
def test_fp8_op_is_the_fused_op_quantised(comm, dtype, scale, with_out):
    x, residual = rank_input(0, (5, 64), dtype), rank_input(1, (5, 64), dtype)
    x[2] = 0
    residual[2] = 0  # an all-zero row: scale 0, codes +-0
    weight = rank_input(2, (64,), dtype)
    expected_out, expected_s = comm.fused_allreduce_residual_rmsnorm(x, residual, weight)
    expected_codes, expected_scales = quantise_fp8(expected_out, scale)
    codes = np.full(x.shape, 0xA5, np.uint8)
    out = np.zeros_like(x) if with_out else None
    got_codes, row_scales, got_out, s = comm.fused_allreduce_residual_rmsnorm_fp8(
        x, residual, weight, scale=scale, out_fp8=codes, out=out)
    assert got_codes is codes and codes.tobytes() == expected_codes.tobytes()
    assert s.tobytes() == expected_s.tobytes()
    if with_out:
        assert got_out.tobytes() == expected_out.tobytes()
    if scale is None:
        assert row_scales.tobytes() == expected_scales.tobytes() and row_scales[2] == 0
    else:
        assert row_scales is None


def test_fp8_op_refuses_bad_scales_and_shapes(comm):
    x, weight = np.ones((2, 8), np.float32), np.ones(8, np.float32)
    codes = np.zeros((2, 8), np.uint8)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(tpcoll.Error, match="static_scale") as info:
            comm.fused_allreduce_residual_rmsnorm_fp8(x, None, weight, scale=bad, out_fp8=codes)
        assert info.value.code == tpcoll.Result.INVALID_ARGUMENT
    with pytest.raises(tpcoll.Error, match="out_fp8"):
        comm.fused_allreduce_residual_rmsnorm_fp8(x, None, weight, scale=1.0, out_fp8=np.zeros((2, 4), np.uint8))
    with pytest.raises(tpcoll.Error, match="row_scales"):
        comm.fused_allreduce_residual_rmsnorm_fp8(x, None, weight, out_fp8=codes, row_scales=np.zeros(3, np.float32))


def test_a_cpu_communicator_has_no_async_error(comm):
    comm.all_reduce(np.ones(4, np.float32))
    assert comm.check_async_error() is None  # CPU ops are synchronous: their errors raise at the call


def test_plan_says_what_and_why(comm):
    plan = comm.plan("all_reduce", "float32", [1 << 20])
    assert plan.backend == "cpu-shm" and plan.algorithm in ("oneshot", "twoshot")
    assert plan.algo == tpcoll.Algo[plan.algorithm.upper()]
    assert "world 1" in plan.reason
    gather = comm.plan(tpcoll.Op.ALL_GATHER, tpcoll.DType.INT8, [2, 3], dim=-1)
    assert gather.steps >= 1


def expect_error(code, fragment, fn, *args, **kwargs):
    with pytest.raises(tpcoll.Error) as info:
        fn(*args, **kwargs)
    assert info.value.code == code
    assert fragment in str(info.value)
    return info.value


def test_library_errors_arrive_with_message_and_code(comm):
    x = np.ones(8, np.int32)
    expect_error(tpcoll.Result.INVALID_ARGUMENT, "all_reduce does not support dtype int32", comm.all_reduce, x)
    expect_error(tpcoll.Result.INVALID_ARGUMENT, "job_id is empty", tpcoll.Communicator, 0, 2)
    expect_error(tpcoll.Result.INVALID_ARGUMENT, "rank 3 is outside 0..1", tpcoll.Communicator, 3, 2, job_id="j")
    assert issubclass(tpcoll.Error, RuntimeError)


def test_arrays_the_library_cannot_see_are_checked(comm):
    x = np.ones((4, 8), np.float32)
    expect_error(tpcoll.Result.INVALID_ARGUMENT, "not C-contiguous", comm.all_reduce, x[:, ::2])
    expect_error(tpcoll.Result.INVALID_ARGUMENT, "output has shape [8, 8] but the gathered input has shape [4, 8]",
                 comm.all_gather, x, 0, np.empty((8, 8), np.float32))
    expect_error(tpcoll.Result.INVALID_ARGUMENT, "output is float16 but input is float32",
                 comm.all_reduce, x, np.empty((4, 8), np.float16))
    expect_error(tpcoll.Result.INVALID_ARGUMENT, "weight has shape [4] but x's last dim has shape [8]",
                 comm.add_rmsnorm, x, x, np.ones(4, np.float32))
    expect_error(tpcoll.Result.INVALID_ARGUMENT, "dim 2 is out of range", comm.all_gather, x, 2)
    expect_error(tpcoll.Result.INVALID_ARGUMENT, "not one tpcoll supports", comm.all_gather, x.astype(np.complex64))
    with pytest.raises(TypeError):  # a read-only output is refused before the call
        y = x.copy()
        y.flags.writeable = False
        comm.all_reduce(x, y)


def test_a_closed_communicator_refuses_calls():
    c = tpcoll.Communicator(0, 1)
    c.close()
    assert c.closed
    expect_error(tpcoll.Result.INVALID_ARGUMENT, "closed", c.all_reduce, np.ones(4, np.float32))


def test_allgather_callback_bootstraps():
    seen = []

    def allgather(data):
        seen.append(bytes(data))
        return data

    with tpcoll.Communicator(0, 1, allgather=allgather) as c:
        assert c.all_reduce(np.full(4, 2.0, np.float32)).tolist() == [2.0] * 4
    assert seen, "creation exchanges settings through the callback"


def test_a_failing_allgather_callback_names_its_error():
    def broken(data):
        raise ValueError("the process group is gone")

    error = expect_error(tpcoll.Result.BOOTSTRAP_ERROR, "the process group is gone", tpcoll.Communicator, 0, 1,
                         allgather=broken)
    assert "user-supplied all-gather" in str(error)
    expect_error(tpcoll.Result.BOOTSTRAP_ERROR, "returned 3 bytes", tpcoll.Communicator, 0, 1,
                 allgather=lambda data: b"abc")
