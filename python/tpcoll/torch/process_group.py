"""The all-gather of bytes that tpcoll's bootstrap asks for, done by a
torch.distributed process group (the C API's user-supplied all-gather)."""

import torch
import torch.distributed as dist


def _transfer_device(group):
    # A group whose only backend is NCCL moves CUDA tensors only.
    backend = str(dist.get_backend(group))
    if "nccl" in backend and "gloo" not in backend:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def process_group_allgather(group=None):
    """A callable: this rank's bytes -> every rank's bytes in rank order."""
    world_size = dist.get_world_size(group)
    device = _transfer_device(group)

    def allgather(data):
        mine = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device)
        every = [torch.empty_like(mine) for _ in range(world_size)]
        dist.all_gather(every, mine, group=group)
        return torch.cat(every).cpu().numpy().tobytes()

    return allgather
