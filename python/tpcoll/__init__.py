"""tpcoll: collectives for tensor-parallel inference on one host.

The communicator works on any DLPack array: NumPy arrays with a CPU
communicator, CUDA arrays of any framework with a CUDA one. `tpcoll.torch`
adds PyTorch custom ops (eager, CUDA graphs, torch.compile).
"""

from tpcoll._tpcoll import Algo, DType, Error, Op, PlanInfo, Result
from tpcoll.communicator import Communicator

__all__ = ["Algo", "Communicator", "DType", "Error", "Op", "PlanInfo", "Result"]
