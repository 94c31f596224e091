"""Runs the tensor-parallel decoder layer of model.py on every rank, checks
it, and times it for 1, 8, 32 and 128 tokens.

  tpcoll run -n 4 -- python examples/tp_decoder/run.py                 # tpcoll's collectives
  torchrun --nproc-per-node 4 examples/tp_decoder/run.py --collectives torch   # torch.distributed (NCCL)

Ranks go to GPU (local rank mod GPU count): one per GPU, or all sharing one
(run MPS then; NCCL refuses shared GPUs, tpcoll does not). Without a GPU, the
CPU backend runs a small layer. Checks, per token count:
  - the logits match those of the TP=1 layer built from the same seed, to
    within a stated bound (the TP split changes how matmuls add up);
  - every rank has the same logits, bit for bit;
  - on a GPU, CUDA graph replays of the step's collectives (on stand-in
    inputs) give the bits of the same calls made eagerly;
  - on a GPU, a replay of the whole step gives the bits of an eager step on
    the capture stream. That needs PyTorch's deterministic algorithms, which
    the script turns on: without them the attention's kernel at 32 and 128
    tokens gave other bits from one eager call to the next (up to 5.7e-3 of
    the largest logit on an H100, TP=1 included), with or without graphs.
Every rank runs every check, so that collectives stay in step; all exit 1
if a check failed on any rank.
"""

import argparse
import faulthandler
import os
import signal
import sys
import tempfile

import torch
import torch.distributed as dist

from collectives import TorchCollectives, TpcollCollectives
from model import CPU_SHAPE, GPU_SHAPE, DecoderLayer
from timing import TimedCollectives, capture_graph, time_in_calls, time_per_call

TOKENS = (1, 8, 32, 128)
# Largest |TP=n - TP=1| over the largest |TP=1 logit|: a few roundings of
# each matmul's partial sums at the dtype's precision, with margin.
BOUNDS = {torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 5e-3}


def launch():
    """rank, world size, local rank and torch.distributed's init method, from
    `tpcoll run` (TPCOLL_*), torchrun (RANK, ...) or neither (one rank)."""
    env = os.environ
    if "TPCOLL_JOB" in env:
        rank, world = int(env["TPCOLL_RANK"]), int(env["TPCOLL_WORLD_SIZE"])
        store = os.path.join(tempfile.gettempdir(), f"tp-decoder-{env['TPCOLL_JOB']}")
        return rank, world, int(env.get("TPCOLL_LOCAL_RANK", rank)), f"file://{store}"
    if "RANK" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)), "env://"
    return 0, 1, 0, f"file://{tempfile.mkdtemp()}/store"


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--collectives", choices=("tpcoll", "torch"), default="tpcoll")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--dtype", choices=("bfloat16", "float16", "float32"),
                   help="default: bfloat16 on a GPU, float32 on the CPU")
    p.add_argument("--small", action="store_true", help="the CPU's small layer on a GPU too")
    p.add_argument("--iters", type=int, help="timed steps per measurement (default: 100 GPU, 10 CPU)")
    return p.parse_args()


def relative_deviation(x, reference):
    return ((x.float() - reference.float()).abs().max() / reference.float().abs().max()).item()


def check(coll, world, logits, expected, dtype):
    """[(what, passed)]: the TP=n logits against the TP=1 layer's, and the
    same bits on every rank."""
    deviation = relative_deviation(logits, expected)
    every = coll.all_gather(logits.unsqueeze(0), 0) if world > 1 else logits.unsqueeze(0)
    return [(f"TP={world} vs TP=1 logits, max |diff| / max |logit| = {deviation:.2e} (bound {BOUNDS[dtype]:.0e})",
             deviation <= BOUNDS[dtype]),
            (f"logits bit-identical on all {world} ranks", all(torch.equal(every[r], every[0]) for r in range(world)))]


def graph_checks(layer, step, hidden, logits, dtype):
    """([(what, passed)] for CUDA graph replays against eager calls on the
    capture stream, the step's graph, the graph of its collectives alone)."""
    graph, replayed, eager = capture_graph(step)
    graph.replay()
    # Filled stand-ins: uninitialised memory may hold NaNs, which equal nothing.
    partial = torch.randn_like(hidden)
    logits_shard = torch.randn(logits.shape[0], logits.shape[1] // layer.tp, device=logits.device).to(dtype)
    comm_graph, comm_replayed, comm_eager = capture_graph(lambda: layer.communication(partial, hidden, logits_shard))
    comm_graph.replay()
    return [("CUDA graph replay of the collectives bit-identical to eager",
             all(torch.equal(r, e) for r, e in zip(comm_replayed, comm_eager))),
            ("CUDA graph replay of the step bit-identical to eager", torch.equal(replayed, eager))], graph, comm_graph


def agree(checks, world):
    """[(what, ranks it failed on)]: every rank learns every rank's results,
    so that all report and exit alike."""
    results = [None] * world
    dist.all_gather_object(results, [ok for _, ok in checks])
    return [(what, [r for r in range(world) if not results[r][i]]) for i, (what, _) in enumerate(checks)]


def time_step(layer, step, iters, on_gpu):
    """Eager step time, then the share of a step inside the collective calls
    (timed in a second pass: the timing adds a little to the step)."""
    dist.barrier()
    row = {"eager": time_per_call(step, iters, on_gpu)}
    coll, layer.coll = layer.coll, TimedCollectives(layer.coll, on_gpu)
    row["timed"], row["in_calls"] = time_in_calls(step, layer.coll, iters, on_gpu)
    layer.coll = coll
    return row


def table(rows, world, name, on_gpu):
    lines = [f"\nstep times, TP={world}, {name}: eager (share: inside the collective calls, waits for peers "
             "included)" + (", CUDA graph (share: a graph of the step's collectives alone)" if on_gpu else "")]
    lines.append(f"{'tokens':>6} | {'eager step':>11} {'in calls':>11} {'share':>6}" +
                 (f" | {'graph step':>11} {'collectives':>11} {'share':>6}" if on_gpu else ""))
    for tokens, r in zip(TOKENS, rows):
        line = f"{tokens:>6} | {r['eager'] * 1e6:9.1f}us {r['in_calls'] * 1e6:9.1f}us {r['in_calls'] / r['timed']:6.1%}"
        if on_gpu:
            line += f" | {r['graph'] * 1e6:9.1f}us {r['graph_comm'] * 1e6:9.1f}us {r['graph_comm'] / r['graph']:6.1%}"
        lines.append(line)
    if not on_gpu:
        lines.append("(no CUDA graphs on the CPU: the graph check and columns run on a GPU)")
    return "\n".join(lines)


def main():
    # A rank that the launcher stops (a peer failed) prints where it was.
    faulthandler.register(signal.SIGTERM, all_threads=False, chain=True)
    args = parse()
    # Same inputs, same bits, eager or replayed (see the checks above).
    # cuBLAS reads its workspace setting when its first handle is made.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    rank, world, local_rank, init = launch()
    on_gpu = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if on_gpu:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))  # ranks share the cores
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if on_gpu else torch.float32)
    shape = GPU_SHAPE if on_gpu and not args.small else CPU_SHAPE
    iters = args.iters or (100 if on_gpu else 10)

    use_nccl = args.collectives == "torch" and on_gpu
    dist.init_process_group("nccl" if use_nccl else "gloo", init_method=init, rank=rank, world_size=world)
    coll = TorchCollectives() if args.collectives == "torch" else TpcollCollectives.from_process_group(device)
    layer = DecoderLayer(shape, coll, rank, world, seed=1, device=device, dtype=dtype)
    reference_coll = TpcollCollectives.single_rank(device)
    reference = DecoderLayer(shape, reference_coll, 0, 1, seed=1, device=device, dtype=dtype)

    say = print if rank == 0 else (lambda *a, **k: None)
    say(f"TP={world} {coll.name} on {device} ({torch.cuda.get_device_name(device) if on_gpu else 'CPU backend'}), "
        f"{dtype}, {shape}")
    failed, rows = [], []
    for tokens in TOKENS:
        hidden = torch.randn(tokens, shape.hidden, generator=torch.Generator(device).manual_seed(2), device=device)
        hidden = hidden.to(dtype)
        cache = layer.kv_cache(tokens, rank, world, seed=3, device=device)
        logits = layer.forward(hidden, cache)
        expected = reference.forward(hidden, reference.kv_cache(tokens, 0, 1, seed=3, device=device))
        checks = check(coll, world, logits, expected, dtype)
        step = lambda: layer.forward(hidden, cache)  # noqa: E731
        row = time_step(layer, step, iters, on_gpu)
        if on_gpu:
            more, graph, comm_graph = graph_checks(layer, step, hidden, logits, dtype)
            checks += more
            row["graph"] = time_per_call(graph.replay, iters, on_gpu)
            row["graph_comm"] = time_per_call(comm_graph.replay, iters, on_gpu)
        for name, ranks in agree(checks, world):
            say(f"  {tokens:4d} tokens: {name}: {f'FAIL on ranks {ranks}' if ranks else 'PASS'}")
            failed += [f"{tokens} tokens: {name}"] if ranks else []
        rows.append(row)
    say(table(rows, world, coll.name, on_gpu))

    # The communicators go first, while the process group they were made
    # through still exists; nothing is left to interpreter shutdown.
    coll.close()
    reference_coll.close()
    dist.barrier()
    dist.destroy_process_group()
    if failed:
        say(f"TP={world}: FAILED: {'; '.join(failed)}", file=sys.stderr)
        return 1
    say(f"TP={world}: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
