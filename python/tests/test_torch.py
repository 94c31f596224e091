"""The torch layer on several ranks bootstrapped through a gloo process
group: the custom ops' results, the same bits under torch.compile (one graph,
no breaks) and, on a GPU, under CUDA graph capture. Skipped without PyTorch;
the CUDA cases run where a GPU is visible (under MPS: scripts/gpu-check.sh)."""

import contextlib
import functools
import os
import tempfile

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402

import tpcoll.torch  # noqa: E402
from ranks import run_ranks  # noqa: E402

# Ranks share the cores: one thread and one compile worker each (spawned
# ranks import this module again, so this holds in them too).
torch.set_num_threads(1)
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

HAS_CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no GPU"))]
FLOATS = (torch.bfloat16, torch.float16, torch.float32)
GATHERED = (torch.bfloat16, torch.int64, torch.float8_e4m3fn)  # compared as bytes


@contextlib.contextmanager
def gloo_communicator(device, rank, world, job):
    if device == "cuda":
        torch.cuda.set_device(0)  # every rank on GPU 0, sharing it
    init = f"file://{os.path.join(tempfile.gettempdir(), job)}"
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        with tpcoll.torch.Communicator.from_process_group(device=device if device == "cpu" else "cuda:0") as comm:
            yield comm
    finally:
        dist.destroy_process_group()


def run(world, fn, device, *args):
    # Spawned, CPU cases too: HAS_CUDA's query marks this process's forks as
    # unable to use CUDA, and torch.compile in a rank on the CPU still saves
    # the CUDA RNG state wherever a GPU is visible (it failed in forked ranks).
    return run_ranks(world, fn, device, *args, make_comm=functools.partial(gloo_communicator, device),
                     start="spawn", timeout=300)


def data(seed, shape, dtype, device="cpu"):
    generator = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        return torch.randn(shape, generator=generator).to(dtype).to(device)
    return torch.randint(-1000, 1000, shape, generator=generator, dtype=dtype).to(device)


def rank_order_sum(inputs):
    total = inputs[0].float()
    for x in inputs[1:]:
        total = total + x.float()
    return total.to(inputs[0].dtype)


def eager_ops(comm, device):
    reduced = [comm.all_reduce(data(comm.rank, (16, 96), dtype, device)).cpu() for dtype in FLOATS]
    gathered = [comm.all_gather(data(comm.rank, (3, 4, 5), dtype, device), dim).cpu().view(torch.uint8)
                for dtype in GATHERED for dim in (0, 1, -1)]
    fused = []
    for dtype in FLOATS:
        x, residual = data(comm.rank, (8, 512), dtype, device), data(100, (8, 512), dtype, device)
        weight = data(101, (512,), dtype, device)
        out, s = comm.fused_allreduce_residual_rmsnorm(x, residual, weight, 1e-5)
        # The same through the generic DLPack API: all-reduce, then add + RMSNorm.
        halves = comm.comm.add_rmsnorm(comm.all_reduce(x), residual, weight, 1e-5)
        fused.append((out.cpu(), s.cpu(), halves[0].cpu(), halves[1].cpu()))
    fp8 = []
    for dtype in FLOATS:
        x, residual = data(comm.rank, (8, 512), dtype, device), data(100, (8, 512), dtype, device)
        weight = data(101, (512,), dtype, device)
        out, s = comm.fused_allreduce_residual_rmsnorm(x, residual, weight, 1e-5)
        for scale in (None, 0.05):
            codes, row_scales, s8 = comm.fused_allreduce_residual_rmsnorm_fp8(x, residual, weight, 1e-5, scale)
            assert codes.dtype == torch.float8_e4m3fn
            # As bytes: float8 tensors do not survive the trip back from a spawned rank.
            fp8.append((out.cpu(), s.cpu(), codes.view(torch.uint8).cpu(), row_scales.cpu(), s8.cpu()))
    return reduced, gathered, fused, fp8


def fp8_reference(out, scale):
    """The FP8 rule in torch: its float32 -> float8_e4m3fn cast rounds to
    nearest even (it saturates only to NaN, but these values stay below 448)."""
    v = out.float()
    if scale is not None:
        return (v / scale).to(torch.float8_e4m3fn), torch.empty(0)
    row_scales = v.abs().amax(dim=-1) / 448
    divisor = torch.where(row_scales == 0, torch.ones_like(row_scales), row_scales)
    return (v / divisor[:, None]).to(torch.float8_e4m3fn), row_scales


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("world", [2, 3])
def test_custom_ops_give_the_contract_bits(world, device):
    results = run(world, eager_ops, device)
    for i, dtype in enumerate(FLOATS):
        expected = rank_order_sum([data(r, (16, 96), dtype) for r in range(world)])
        for rank, (reduced, _, _, _) in enumerate(results):
            assert torch.equal(reduced[i], expected), f"rank {rank}, {dtype}"
    cases = [(dtype, dim) for dtype in GATHERED for dim in (0, 1, -1)]
    for i, (dtype, dim) in enumerate(cases):
        expected = torch.cat([data(r, (3, 4, 5), dtype) for r in range(world)], dim=dim).view(torch.uint8)
        for rank, (_, gathered, _, _) in enumerate(results):
            assert torch.equal(gathered[i], expected), f"rank {rank}, {dtype} dim {dim}"
    for i, dtype in enumerate(FLOATS):
        out0, s0, _, _ = results[0][2][i]
        for rank, (_, _, fused, _) in enumerate(results):
            out, s, halves_out, halves_s = fused[i]
            assert torch.equal(out, halves_out) and torch.equal(s, halves_s), f"rank {rank}, {dtype}"
            assert torch.equal(out, out0) and torch.equal(s, s0), f"rank {rank} differs from rank 0"
    for rank, (_, _, _, fp8) in enumerate(results):
        for i, (out, s, codes, row_scales, s8) in enumerate(fp8):
            scale = (None, 0.05)[i % 2]
            expected_codes, expected_scales = fp8_reference(out, scale)
            assert torch.equal(s8, s), f"rank {rank}, case {i}"
            assert torch.equal(codes, expected_codes.view(torch.uint8)), f"rank {rank}, case {i}"
            assert torch.equal(row_scales, expected_scales), f"rank {rank}, case {i}"


def step(comm, x, residual, weight):
    """A tensor-parallel tail: reduce, fused norm, gather along the last dim."""
    h = comm.all_reduce(x * 2)
    out, s = comm.fused_allreduce_residual_rmsnorm(h, residual, weight, 1e-5)
    return comm.all_gather(out, dim=-1), s


def step_inputs(rank, device):
    return (data(rank, (4, 256), torch.bfloat16, device), data(100, (4, 256), torch.bfloat16, device),
            data(101, (256,), torch.bfloat16, device))


def compiled_and_eager(comm, device):
    inputs = step_inputs(comm.rank, device)
    eager = step(comm, *inputs)
    # fullgraph=True: a graph break would raise instead of running.
    compiled = torch.compile(functools.partial(step, comm), fullgraph=True)(*inputs)
    return [t.cpu() for t in eager], [t.cpu() for t in compiled]


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_runs_the_ops_in_one_graph_with_the_same_bits(device):
    results = run(2, compiled_and_eager, device)
    for rank, (eager, compiled) in enumerate(results):
        assert eager[0].shape == (4, 512)
        for e, c in zip(eager, compiled):
            assert torch.equal(e, c), f"rank {rank}: compiled differs from eager"
        assert torch.equal(eager[0], results[0][0][0]), f"rank {rank} differs from rank 0"


def scatter_step(comm, x, residual_share, weight):
    """A sequence-parallel tail: reduce-scatter, then the fused one on its rows."""
    return comm.reduce_scatter(x * 2), *comm.fused_reduce_scatter_residual_rmsnorm(x, residual_share, weight, 1e-5)


def scatter_ops(comm, device):
    x, residual, weight = step_inputs(comm.rank, device)
    rows = slice(comm.rank * 2, comm.rank * 2 + 2)  # 4 tokens, 2 ranks
    eager = scatter_step(comm, x, residual[rows], weight)
    compiled = torch.compile(functools.partial(scatter_step, comm), fullgraph=True)(x, residual[rows], weight)
    full_reduce = comm.all_reduce(x * 2)[rows]
    full_out, full_s = comm.fused_allreduce_residual_rmsnorm(x, residual, weight, 1e-5)
    return [t.cpu() for t in eager], [t.cpu() for t in compiled], [t.cpu() for t in (full_reduce, full_out[rows],
                                                                                      full_s[rows])]


@pytest.mark.parametrize("device", DEVICES)
def test_scatter_ops_are_the_full_ops_rows_eager_and_compiled(device):
    for rank, (eager, compiled, full) in enumerate(run(2, scatter_ops, device)):
        assert eager[0].shape == (2, 256) and eager[1].shape == (2, 256)
        for e, c, f in zip(eager, compiled, full):
            assert torch.equal(e, f), f"rank {rank}: differs from the full op's rows"
            assert torch.equal(e, c), f"rank {rank}: compiled differs from eager"


def graph_and_eager(comm, device):
    inputs = step_inputs(comm.rank, device)
    eager = [t.clone() for t in step(comm, *inputs)]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the default stream, as capture requires
        step(comm, *inputs)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step(comm, *inputs)
    replays = []
    for _ in range(3):
        graph.replay()
        replays.append([t.cpu() for t in captured])
    torch.cuda.synchronize()
    return [t.cpu() for t in eager], replays


@pytest.mark.skipif(not HAS_CUDA, reason="CUDA graphs need a GPU")
def test_cuda_graph_replays_give_the_eager_bits():
    for rank, (eager, replays) in enumerate(run(2, graph_and_eager, "cuda")):
        for replay in replays:
            for e, r in zip(eager, replay):
                assert torch.equal(e, r), f"rank {rank}: a replay differs from eager"


def test_a_closed_communicator_is_gone_from_the_ops():
    comm = tpcoll.torch.Communicator(tpcoll.Communicator(0, 1))
    x = torch.ones(4)
    assert torch.equal(comm.all_reduce(x), x)
    comm.close()
    with pytest.raises(ValueError, match="closed"):
        comm.all_reduce(x)


def fp8_step(comm, x, residual, weight):
    return comm.fused_allreduce_residual_rmsnorm_fp8(x, residual, weight, 1e-5)


def test_fp8_op_under_torch_compile_gives_the_eager_bits():
    with tpcoll.torch.Communicator(tpcoll.Communicator(0, 1)) as comm:
        inputs = step_inputs(0, "cpu")
        eager = fp8_step(comm, *inputs)
        compiled = torch.compile(functools.partial(fp8_step, comm), fullgraph=True)(*inputs)
        out, s = comm.fused_allreduce_residual_rmsnorm(*inputs, 1e-5)
        expected_codes, expected_scales = fp8_reference(out, None)
        assert torch.equal(eager[0].view(torch.uint8), expected_codes.view(torch.uint8))
        assert torch.equal(eager[1], expected_scales) and torch.equal(eager[2], s)
        for e, c in zip(eager, compiled):
            assert e.dtype == c.dtype and torch.equal(e.view(torch.uint8), c.view(torch.uint8))


def test_library_errors_reach_torch_callers():
    with tpcoll.torch.Communicator(tpcoll.Communicator(0, 1)) as comm:
        with pytest.raises(tpcoll.Error, match="all_reduce does not support dtype int32") as info:
            comm.all_reduce(torch.ones(4, dtype=torch.int32))
        assert info.value.code == tpcoll.Result.INVALID_ARGUMENT
