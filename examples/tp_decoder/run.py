"""Runs the tensor-parallel decoder layer of model.py on every rank, checks
it, and times it for 1, 8, 32 and 128 tokens.

  tpcoll run -n 4 -- python examples/tp_decoder/run.py                 # tpcoll's collectives
  torchrun --nproc-per-node 4 examples/tp_decoder/run.py --collectives torch   # torch.distributed (NCCL)

Ranks go to GPU (local rank mod GPU count): one per GPU, or all sharing one
(run MPS then; NCCL refuses shared GPUs, tpcoll does not). Without a GPU, the
CPU backend runs a small layer. Checks, per token count:
  - the logits match those of the TP=1 layer built from the same seed, to
    within a stated bound (the TP split changes how matmuls add up);
  - on a GPU, a replay of the CUDA graph of the step gives the eager bits;
  - every rank has the same logits, bit for bit.
Exits 1 if a check fails.
"""

import argparse
import os
import sys
import tempfile

import torch
import torch.distributed as dist

from collectives import TorchCollectives, TpcollCollectives
from model import CPU_SHAPE, GPU_SHAPE, DecoderLayer
from timing import capture_graph, time_per_call

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


def main():
    args = parse()
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
    reference = DecoderLayer(shape, TpcollCollectives.single_rank(device), 0, 1, seed=1, device=device, dtype=dtype)

    say = print if rank == 0 else (lambda *a, **k: None)
    say(f"TP={world} {coll.name} on {device} ({torch.cuda.get_device_name(device) if on_gpu else 'CPU backend'}), "
        f"{dtype}, {shape}")
    failed = []
    rows = []
    for tokens in TOKENS:
        hidden = torch.randn(tokens, shape.hidden, generator=torch.Generator(device).manual_seed(2), device=device)
        hidden = hidden.to(dtype)
        cache = layer.kv_cache(tokens, rank, world, seed=3, device=device)
        logits = layer.forward(hidden, cache)
        expected = reference.forward(hidden, reference.kv_cache(tokens, 0, 1, seed=3, device=device))

        deviation = ((logits.float() - expected.float()).abs().max() / expected.float().abs().max()).item()
        ok = deviation <= BOUNDS[dtype]
        say(f"  {tokens:4d} tokens: TP={world} vs TP=1 logits: max |diff| / max |logit| = {deviation:.2e} "
            f"(bound {BOUNDS[dtype]:.0e}) {'PASS' if ok else 'FAIL'}")
        failed += [] if ok else [f"{tokens} tokens: TP={world} vs TP=1"]

        every = coll.all_gather(logits.unsqueeze(0), 0)
        same = all(torch.equal(every[r], every[0]) for r in range(world))
        say(f"  {tokens:4d} tokens: logits bit-identical on all {world} ranks: {'PASS' if same else 'FAIL'}")
        failed += [] if same else [f"{tokens} tokens: ranks differ"]

        step = lambda: layer.forward(hidden, cache)  # noqa: E731
        partial = torch.randn_like(hidden)
        logits_shard = torch.randn(tokens, shape.vocab // world, device=device).to(dtype)
        comm_only = lambda: layer.communication(partial, hidden, logits_shard)  # noqa: E731
        dist.barrier()
        row = {"tokens": tokens, "eager": time_per_call(step, iters, on_gpu), "eager_comm": time_per_call(comm_only, iters, on_gpu)}
        if on_gpu:
            graph, replayed = capture_graph(step)
            graph.replay()
            identical = torch.equal(replayed, logits)
            say(f"  {tokens:4d} tokens: CUDA graph replay bit-identical to eager: {'PASS' if identical else 'FAIL'}")
            failed += [] if identical else [f"{tokens} tokens: graph differs from eager"]
            comm_graph, _ = capture_graph(comm_only)
            row["graph"] = time_per_call(graph.replay, iters, on_gpu)
            row["graph_comm"] = time_per_call(comm_graph.replay, iters, on_gpu)
        rows.append(row)

    say(f"\nstep times, TP={world}, {coll.name} (collectives: the step's collectives alone, same shapes)")
    say(f"{'tokens':>6} | {'eager step':>11} {'collectives':>11} {'share':>6}" +
        (f" | {'graph step':>11} {'collectives':>11} {'share':>6}" if on_gpu else ""))
    for r in rows:
        line = f"{r['tokens']:>6} | {r['eager'] * 1e6:9.1f}us {r['eager_comm'] * 1e6:9.1f}us {r['eager_comm'] / r['eager']:6.1%}"
        if on_gpu:
            line += f" | {r['graph'] * 1e6:9.1f}us {r['graph_comm'] * 1e6:9.1f}us {r['graph_comm'] / r['graph']:6.1%}"
        say(line)
    if not on_gpu:
        say("(no CUDA graphs on the CPU: the graph check and columns run on a GPU)")

    dist.barrier()
    dist.destroy_process_group()
    if failed:
        print(f"rank {rank}: FAILED: {'; '.join(failed)}", file=sys.stderr)
        return 1
    say(f"TP={world}: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
