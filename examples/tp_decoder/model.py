"""A tensor-parallel decoder layer and its vocabulary-parallel logits.

Per decode step, every token of the batch attends to its own sequence's
cached context. Weights are generated from a seed, whole, on every rank, and
each rank keeps its shard: so a TP=1 layer built from the same seed is the
reference for any TP degree.

  x = rmsnorm(h)                                   local
  a = attention(x)      QKV column-parallel (heads split), O row-parallel: a partial sum
  x, h = fused_allreduce_residual_rmsnorm(a, h)    collective
  m = down(silu(gate(x)) * up(x))                  gate/up column-parallel, down row-parallel
  x, h = fused_allreduce_residual_rmsnorm(m, h)    collective (the final norm)
  logits = all_gather(x @ lm_head_shard, dim=-1)   vocabulary-parallel, collective
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Shape:
    hidden: int
    heads: int
    ffn: int
    vocab: int
    context: int  # cached tokens each sequence attends to
    eps: float = 1e-5

    @property
    def head_dim(self):
        return self.hidden // self.heads

    def check(self, tp):
        for name, size in (("heads", self.heads), ("ffn", self.ffn), ("vocab", self.vocab)):
            if size % tp:
                raise ValueError(f"{name} = {size} is not divisible by TP = {tp}")


# Llama-3-8B's layer sizes (one layer), and a small one for the CPU.
GPU_SHAPE = Shape(hidden=4096, heads=32, ffn=14336, vocab=128256, context=256)
CPU_SHAPE = Shape(hidden=256, heads=8, ffn=512, vocab=1024, context=32)


def _weight(generator, rows, cols, device, dtype):
    # Scaled so that activations stay of order 1 through the layer.
    return (torch.randn(rows, cols, generator=generator, device=device) / rows**0.5).to(dtype)


class DecoderLayer:
    """Rank `rank` of a TP-`tp` layer; `coll` runs its collectives."""

    def __init__(self, shape, coll, rank, tp, *, seed, device, dtype):
        shape.check(tp)
        self.shape, self.coll, self.dtype = shape, coll, dtype
        g = torch.Generator(device).manual_seed(seed)
        h, heads_per_rank, ffn_per_rank, vocab_per_rank = shape.hidden, shape.heads // tp, shape.ffn // tp, shape.vocab // tp
        width = heads_per_rank * shape.head_dim

        def columns(w, per_rank):  # this rank's slice of a column-parallel weight
            return w[:, rank * per_rank:(rank + 1) * per_rank].contiguous()

        # Whole weights first, in a fixed order, so every TP degree draws the same numbers.
        q, k, v = (_weight(g, h, h, device, dtype) for _ in range(3))
        o = _weight(g, h, h, device, dtype)
        gate, up = _weight(g, h, shape.ffn, device, dtype), _weight(g, h, shape.ffn, device, dtype)
        down = _weight(g, shape.ffn, h, device, dtype)
        lm_head = _weight(g, h, shape.vocab, device, dtype)
        self.qkv = torch.cat([columns(w, width) for w in (q, k, v)], dim=1)
        self.o = o[rank * width:(rank + 1) * width].contiguous()  # row-parallel
        self.gate_up = torch.cat([columns(gate, ffn_per_rank), columns(up, ffn_per_rank)], dim=1)
        self.down = down[rank * ffn_per_rank:(rank + 1) * ffn_per_rank].contiguous()
        self.lm_head = columns(lm_head, vocab_per_rank)
        self.norms = [(1 + 0.1 * torch.randn(h, generator=g, device=device)).to(dtype) for _ in range(3)]
        self.heads, self.tp = heads_per_rank, tp

    def kv_cache(self, tokens, rank, tp, *, seed, device):
        """Each sequence's cached keys and values, [tokens, heads, context, head_dim],
        this rank's heads of the whole cache drawn from seed."""
        s = self.shape
        g = torch.Generator(device).manual_seed(seed)
        whole = torch.randn(2, tokens, s.heads, s.context, s.head_dim, generator=g, device=device).to(self.dtype)
        mine = whole[:, :, rank * self.heads:(rank + 1) * self.heads].contiguous()
        return mine[0], mine[1]

    def attention(self, x, cache):
        t, d = x.shape[0], self.shape.head_dim
        q, k, v = (y.view(t, self.heads, 1, d) for y in (x @ self.qkv).chunk(3, dim=1))
        keys, values = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        a = F.scaled_dot_product_attention(q, keys, values)  # the new token sees all its context
        return a.reshape(t, self.heads * d) @ self.o

    def mlp(self, x):
        gate, up = (x @ self.gate_up).chunk(2, dim=1)
        return (F.silu(gate) * up) @ self.down

    def forward(self, hidden, cache):
        eps = self.shape.eps
        x = F.rms_norm(hidden, (self.shape.hidden,), self.norms[0], eps)
        x, residual = self.coll.fused_allreduce_residual_rmsnorm(self.attention(x, cache), hidden, self.norms[1], eps)
        x, _ = self.coll.fused_allreduce_residual_rmsnorm(self.mlp(x), residual, self.norms[2], eps)
        return self.gather_logits(x @ self.lm_head)

    def gather_logits(self, shard):
        # One rank holds the whole vocabulary: nothing to gather.
        return shard if self.tp == 1 else self.coll.all_gather(shard, dim=-1)

    def communication(self, partial, residual, logits_shard):
        """forward's collectives alone, on stand-ins of the same shapes: what
        a step spends in them when nothing else runs. Returns every output,
        for run.py to compare graph replays with eager calls."""
        eps = self.shape.eps
        first = self.coll.fused_allreduce_residual_rmsnorm(partial, residual, self.norms[1], eps)
        second = self.coll.fused_allreduce_residual_rmsnorm(partial, first[1], self.norms[2], eps)
        return (*first, *second, self.gather_logits(logits_shard))
