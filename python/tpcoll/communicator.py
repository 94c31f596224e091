"""The Python communicator: the extension's checks and calls, plus results
allocated like the inputs when no output is given."""

from tpcoll import _tpcoll
from tpcoll.arrays import empty_like


def _device_ordinal(device):
    """"cpu" / None -> the CPU backend; an int, "cuda" or "cuda:N" -> a GPU."""
    if device is None or device == "cpu":
        return _tpcoll.CPU_DEVICE
    if isinstance(device, int):
        return device
    text = str(device)  # also takes a torch.device
    if text == "cuda":
        raise ValueError('device "cuda" names no GPU: pass "cuda:N" or an ordinal')
    if text.startswith("cuda:"):
        return int(text[len("cuda:"):])
    raise ValueError(f"device {device!r} is neither 'cpu' nor a CUDA device")


class Communicator(_tpcoll._Communicator):
    """One rank of a group. Every rank must call the same operations in the
    same order; a communicator is used by one thread at a time.

    Created with a job id (the ranks find each other through it, as
    `tpcoll run` arranges), or with `allgather`: a callable taking this rank's
    bytes and returning every rank's bytes concatenated in rank order (a
    framework's own process group). `stream` arguments are cudaStream_t
    values as ints (0: the default stream), and must be 0 on the CPU.
    """

    def __init__(self, rank, world_size, *, device="cpu", job_id="", allgather=None):
        super().__init__(rank, world_size, _device_ordinal(device), job_id, allgather)

    @classmethod
    def from_env(cls):
        """The rank, world size, device and job `tpcoll run` set (TPCOLL_*)."""
        rank, world_size, device, job_id = _tpcoll.config_from_env()
        return cls(rank, world_size, device=device, job_id=job_id)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def all_reduce(self, input, output=None, *, stream=0):
        """Sum over the ranks (fp32 accumulation, rank order); in place when
        output is None. Returns the result array."""
        output = input if output is None else output
        self._all_reduce(input, output, stream)
        return output

    def all_gather(self, input, dim=0, output=None, *, stream=0):
        """Every rank's input concatenated along dim, in rank order."""
        if output is None:
            shape = list(input.shape)
            if -len(shape) <= dim < len(shape):  # else the call below names the bad dim
                shape[dim] *= self.world_size
            output = empty_like(input, shape)
        self._all_gather(input, output, dim, stream)
        return output

    def fused_allreduce_residual_rmsnorm(self, x, residual, weight, eps=1e-6, *, out=None, residual_out=None,
                                         stream=0):
        """s = all_reduce(x) + residual; returns (rmsnorm(s) * weight, s).
        residual may be None (then s is not returned: (out, None)). Pass
        out=x, residual_out=residual to work in place."""
        out = empty_like(x) if out is None else out
        if residual is not None and residual_out is None:
            residual_out = empty_like(residual)
        self._fused_allreduce_residual_rmsnorm(x, residual, weight, out, residual_out, eps, stream)
        return out, residual_out

    def fused_allreduce_residual_rmsnorm_fp8(self, x, residual, weight, eps=1e-6, *, scale=None, out_fp8,
                                             row_scales=None, out=None, residual_out=None, stream=0):
        """The fused op with an FP8 E4M3 output (tpcoll.h defines it exactly):
        with `scale` (a positive float), out_fp8 = e4m3(out / scale); without,
        per token: row_scales[t] = max|out[t]| / 448 and out_fp8 = e4m3(out[t]
        / row_scales[t]). out_fp8: x's shape, float8_e4m3 or uint8 (NumPy has
        no FP8 type). row_scales (per token; allocated as float32 like x when
        None) has x's shape without its last dim. out is written only if
        given. Returns (out_fp8, row_scales or None, out, residual_out)."""
        if residual is not None and residual_out is None:
            residual_out = empty_like(residual)
        if scale is None:
            scaling = _tpcoll.Fp8Scaling.PER_TOKEN
            if row_scales is None:
                row_scales = empty_like(x, tuple(x.shape)[:-1], dtype="float32")
        else:
            scaling = _tpcoll.Fp8Scaling.STATIC
        self._fused_allreduce_residual_rmsnorm_fp8(x, residual, weight, out, residual_out, out_fp8, scaling,
                                                   1.0 if scale is None else float(scale), row_scales, eps, stream)
        return out_fp8, row_scales, out, residual_out

    def reduce_scatter(self, input, output=None, *, stream=0):
        """This rank's share along dim 0 of the sum over the ranks: the same
        bits as those rows of all_reduce. dim 0 must split into world_size
        equal shares; output is input[rank * n : (rank + 1) * n] in place."""
        if output is None:
            shape = list(input.shape)
            if shape and shape[0] % self.world_size == 0:  # else the call below names the problem
                shape[0] //= self.world_size
            output = empty_like(input, shape)
        self._reduce_scatter(input, output, stream)
        return output

    def fused_reduce_scatter_residual_rmsnorm(self, x, residual, weight, eps=1e-6, *, out=None, residual_out=None,
                                              stream=0):
        """The fused op on this rank's rows: x is [tokens, ..., hidden] on
        every rank; residual, out and residual_out are this rank's share of the
        tokens. s = reduce_scatter(x) + residual; returns (rmsnorm(s) * weight,
        s), the same bits as those rows of fused_allreduce_residual_rmsnorm.
        residual may be None (then (out, None))."""
        if out is None:
            shape = list(x.shape)
            if shape and shape[0] % self.world_size == 0:
                shape[0] //= self.world_size
            out = empty_like(x, shape)
        if residual is not None and residual_out is None:
            residual_out = empty_like(residual)
        self._fused_reduce_scatter_residual_rmsnorm(x, residual, weight, out, residual_out, eps, stream)
        return out, residual_out

    def add_rmsnorm(self, x, residual, weight, eps=1e-6, *, out=None, residual_out=None, stream=0):
        """The local half of the fused op: s = x + residual; returns
        (rmsnorm(s) * weight, s), with the fused op's rounding."""
        out = empty_like(x) if out is None else out
        residual_out = empty_like(residual) if residual_out is None else residual_out
        self._add_rmsnorm(x, residual, weight, out, residual_out, eps, stream)
        return out, residual_out

    def plan(self, op, dtype, shape, dim=0):
        """Which algorithm a call would use, and why (a PlanInfo). op and
        dtype take the enums or their names ("all_gather", "bfloat16")."""
        op = _tpcoll.Op[op.upper()] if isinstance(op, str) else op
        dtype = _tpcoll.DType[dtype.upper()] if isinstance(dtype, str) else dtype
        return self._plan(op, dtype, list(shape), dim)

    def force_algo(self, algo):
        """Forces an Algo (or its name) on every later call that can use it;
        None restores the measured choice. Every rank must force the same."""
        algo = _tpcoll.Algo[algo.upper()] if isinstance(algo, str) else algo
        self._force_algo(algo)
