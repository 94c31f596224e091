"""The layer's three collectives, from tpcoll or from torch.distributed
(NCCL on GPUs, one rank per GPU: NCCL refuses ranks that share a GPU)."""

import torch
import torch.distributed as dist
import torch.nn.functional as F

import tpcoll
import tpcoll.torch


class TpcollCollectives:
    """tpcoll's custom ops: capturable in CUDA graphs, traceable by torch.compile."""

    name = "tpcoll"

    def __init__(self, comm):
        self.comm = comm

    @classmethod
    def from_process_group(cls, device):
        return cls(tpcoll.torch.Communicator.from_process_group(device=device))

    @classmethod
    def single_rank(cls, device):
        """A world of one (the TP=1 reference): add + RMSNorm, no communication."""
        return cls(tpcoll.torch.Communicator(tpcoll.Communicator(0, 1, device=str(device))))

    def fused_allreduce_residual_rmsnorm(self, x, residual, weight, eps):
        return self.comm.fused_allreduce_residual_rmsnorm(x, residual, weight, eps)

    def all_gather(self, x, dim):
        return self.comm.all_gather(x, dim)

    def close(self):
        self.comm.close()


class TorchCollectives:
    """What a PyTorch program does without tpcoll: torch.distributed's
    all-reduce and all-gather, and PyTorch's add and rms_norm."""

    name = "torch.distributed"

    def __init__(self, group=None):
        self.group = group
        self.world_size = dist.get_world_size(group)

    def fused_allreduce_residual_rmsnorm(self, x, residual, weight, eps):
        x = x.clone()
        dist.all_reduce(x, group=self.group)
        s = x + residual
        return F.rms_norm(s, (s.shape[-1],), weight, eps), s

    def all_gather(self, x, dim):
        # Gathered along dim 0 (what every backend takes), then concatenated along dim.
        flat = x.new_empty((self.world_size * x.shape[0], *x.shape[1:]))
        dist.all_gather_into_tensor(flat, x.contiguous(), group=self.group)
        return torch.cat(flat.chunk(self.world_size, dim=0), dim=dim)

    def close(self):
        pass  # the process group is the caller's
