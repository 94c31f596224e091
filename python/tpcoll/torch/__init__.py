"""PyTorch integration: custom ops (torch.ops.tpcoll.*) that run eagerly,
under CUDA graph capture and under torch.compile without graph breaks, and a
communicator that bootstraps through a torch.distributed process group.

Importing this module needs PyTorch; `import tpcoll` alone does not.
"""

from tpcoll.torch.communicator import Communicator
from tpcoll.torch.ops import (all_gather, all_reduce, fused_allreduce_residual_rmsnorm,
                              fused_allreduce_residual_rmsnorm_fp8)

__all__ = ["Communicator", "all_gather", "all_reduce", "fused_allreduce_residual_rmsnorm",
           "fused_allreduce_residual_rmsnorm_fp8"]
