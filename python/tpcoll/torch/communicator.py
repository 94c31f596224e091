"""A tpcoll communicator for PyTorch code: the ops as methods that dispatch
through torch.ops.tpcoll (so torch.compile and CUDA graphs see them)."""

import torch

import tpcoll
from tpcoll.torch import ops
from tpcoll.torch.process_group import process_group_allgather
from tpcoll.torch.registry import register, unregister


def _default_device():
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class Communicator:
    """Wraps a tpcoll.Communicator (`.comm`, for plan() and the rest of the
    API) and registers it for the custom ops."""

    def __init__(self, comm):
        self.comm = comm
        self.handle = register(comm)

    @classmethod
    def from_env(cls, device=None):
        """Ranks started by `tpcoll run`; device: a torch.device or string
        (default: the current GPU if any, else the CPU)."""
        rank, world_size, _, job_id = tpcoll._tpcoll.config_from_env()
        device = torch.device(device) if device is not None else _default_device()
        return cls(tpcoll.Communicator(rank, world_size, device=str(device), job_id=job_id))

    @classmethod
    def from_process_group(cls, group=None, device=None):
        """Bootstraps through an existing torch.distributed group (any backend,
        gloo included) instead of a job id: every rank of the group must call
        it. device as in from_env; ranks must be on one host."""
        import torch.distributed as dist

        device = torch.device(device) if device is not None else _default_device()
        allgather = process_group_allgather(group)
        comm = tpcoll.Communicator(dist.get_rank(group), dist.get_world_size(group), device=str(device),
                                   allgather=allgather)
        return cls(comm)

    @property
    def rank(self):
        return self.comm.rank

    @property
    def world_size(self):
        return self.comm.world_size

    def close(self):
        unregister(self.handle)
        self.comm.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def all_reduce(self, x):
        return ops.all_reduce(x, self.handle)

    def all_gather(self, x, dim=0):
        return ops.all_gather(x, self.handle, dim)

    def fused_allreduce_residual_rmsnorm(self, x, residual, weight, eps=1e-6):
        return ops.fused_allreduce_residual_rmsnorm(x, residual, weight, self.handle, eps)

    def fused_allreduce_residual_rmsnorm_fp8(self, x, residual, weight, eps=1e-6, scale=None):
        """(out_fp8 as torch.float8_e4m3fn, row_scales, s): static scaling with
        `scale`, else per token (see torch.ops.tpcoll.fused_allreduce_residual_rmsnorm_fp8)."""
        return ops.fused_allreduce_residual_rmsnorm_fp8(x, residual, weight, self.handle, eps, scale)

    def reduce_scatter(self, x):
        return ops.reduce_scatter(x, self.handle)

    def fused_reduce_scatter_residual_rmsnorm(self, x, residual, weight, eps=1e-6):
        return ops.fused_reduce_scatter_residual_rmsnorm(x, residual, weight, self.handle, eps)
