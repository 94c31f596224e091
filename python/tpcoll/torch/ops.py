"""The custom ops. Each allocates its results and enqueues on the current
CUDA stream, which is what CUDA graph capture records; a fake implementation
gives torch.compile the result shapes without running anything."""

from typing import Optional

import torch

from tpcoll.torch.registry import lookup


def _stream(t):
    return torch.cuda.current_stream(t.device).cuda_stream if t.is_cuda else 0


def _gathered_shape(x, comm, dim):
    shape = list(x.shape)
    shape[dim] *= lookup(comm).world_size
    return shape


def _share_shape(x, comm):
    shape = list(x.shape)
    world_size = lookup(comm).world_size
    if shape and shape[0] % world_size == 0:  # else the call names the problem
        shape[0] //= world_size
    return shape


@torch.library.custom_op("tpcoll::all_reduce", mutates_args=())
def all_reduce(x: torch.Tensor, comm: int) -> torch.Tensor:
    """Sum over the ranks of communicator handle `comm`, in rank order."""
    x = x.contiguous()
    out = torch.empty_like(x)
    lookup(comm)._all_reduce(x, out, _stream(x))
    return out


@all_reduce.register_fake
def _(x, comm):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("tpcoll::all_gather", mutates_args=())
def all_gather(x: torch.Tensor, comm: int, dim: int) -> torch.Tensor:
    """Every rank's x concatenated along dim, in rank order."""
    x = x.contiguous()
    out = x.new_empty(_gathered_shape(x, comm, dim))
    lookup(comm)._all_gather(x, out, dim, _stream(x))
    return out


@all_gather.register_fake
def _(x, comm, dim):
    return x.new_empty(_gathered_shape(x, comm, dim))


@torch.library.custom_op("tpcoll::fused_allreduce_residual_rmsnorm", mutates_args=())
def fused_allreduce_residual_rmsnorm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, comm: int,
                                     eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """s = all_reduce(x) + residual; returns (rmsnorm(s) * weight, s)."""
    x, residual, weight = x.contiguous(), residual.contiguous(), weight.contiguous()
    out, residual_out = torch.empty_like(x), torch.empty_like(residual)
    lookup(comm)._fused_allreduce_residual_rmsnorm(x, residual, weight, out, residual_out, eps, _stream(x))
    return out, residual_out


@fused_allreduce_residual_rmsnorm.register_fake
def _(x, residual, weight, comm, eps):
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            torch.empty_like(residual, memory_format=torch.contiguous_format))


def _fp8_results(x, scale):
    """out_fp8 and row_scales (empty for a static scale) of a call on x."""
    row_scales = x.new_empty(tuple(x.shape[:-1]) if scale is None else (0,), dtype=torch.float32)
    return x.new_empty(x.shape, dtype=torch.float8_e4m3fn), row_scales


@torch.library.custom_op("tpcoll::fused_allreduce_residual_rmsnorm_fp8", mutates_args=())
def fused_allreduce_residual_rmsnorm_fp8(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, comm: int,
                                         eps: float, scale: Optional[float]
                                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fused op with an FP8 E4M3 output: returns (out_fp8, row_scales, s).
    With `scale`, out_fp8 = e4m3(rmsnorm(s) * weight / scale) and row_scales
    is empty; without, per token: row_scales[t] = max|out[t]| / 448."""
    x, residual, weight = x.contiguous(), residual.contiguous(), weight.contiguous()
    out_fp8, row_scales = _fp8_results(x, scale)
    residual_out = torch.empty_like(residual)
    # The codes go through DLPack as bytes: not every torch exports float8.
    lookup(comm).fused_allreduce_residual_rmsnorm_fp8(
        x, residual, weight, eps, scale=scale, out_fp8=out_fp8.view(torch.uint8),
        row_scales=row_scales if scale is None else None, residual_out=residual_out, stream=_stream(x))
    return out_fp8, row_scales, residual_out


@fused_allreduce_residual_rmsnorm_fp8.register_fake
def _(x, residual, weight, comm, eps, scale):
    out_fp8, row_scales = _fp8_results(x, scale)
    return out_fp8, row_scales, torch.empty_like(residual, memory_format=torch.contiguous_format)


@torch.library.custom_op("tpcoll::reduce_scatter", mutates_args=())
def reduce_scatter(x: torch.Tensor, comm: int) -> torch.Tensor:
    """This rank's share along dim 0 of the sum over the ranks (the same bits
    as those rows of all_reduce)."""
    x = x.contiguous()
    out = x.new_empty(_share_shape(x, comm))
    lookup(comm)._reduce_scatter(x, out, _stream(x))
    return out


@reduce_scatter.register_fake
def _(x, comm):
    return x.new_empty(_share_shape(x, comm))


@torch.library.custom_op("tpcoll::fused_reduce_scatter_residual_rmsnorm", mutates_args=())
def fused_reduce_scatter_residual_rmsnorm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, comm: int,
                                          eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """s = reduce_scatter(x) + residual (this rank's rows); returns
    (rmsnorm(s) * weight, s)."""
    x, residual, weight = x.contiguous(), residual.contiguous(), weight.contiguous()
    out, residual_out = x.new_empty(_share_shape(x, comm)), torch.empty_like(residual)
    lookup(comm)._fused_reduce_scatter_residual_rmsnorm(x, residual, weight, out, residual_out, eps, _stream(x))
    return out, residual_out


@fused_reduce_scatter_residual_rmsnorm.register_fake
def _(x, residual, weight, comm, eps):
    return x.new_empty(_share_shape(x, comm)), torch.empty_like(residual, memory_format=torch.contiguous_format)
