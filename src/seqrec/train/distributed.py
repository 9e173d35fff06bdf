"""torchrun / DistributedDataParallel setup, detected from the environment (RANK, WORLD_SIZE, LOCAL_RANK)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_type: str) -> DistInfo:
    """Initialise the process group when launched by torchrun (gloo on CPU; on GPUs NCCL for CUDA tensors plus gloo
    for the small CPU tensors of the loop's bookkeeping: stop flags and evaluation sums)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if device_type == "cuda" else "gloo")
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank if `flag` is True on any rank (keeps stop decisions in lock-step)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def from_rank0(obj, info: DistInfo):
    """Rank 0's value of `obj` on every rank (e.g. a default output folder named by the time of day)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj, info: DistInfo) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank (e.g. the ranks' RNG states for a checkpoint)."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_parameters(module: torch.nn.Module, info: DistInfo) -> None:
    """Rank 0's parameters and buffers on every rank (what DDP does at wrap time, for a model it does not wrap)."""
    if not info.enabled:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def average_gradients(params) -> None:
    """Average the gradients of `params` over the process group, in place (one all-reduce).

    For updates that DDP's reducer does not see: the trainer's manual-optimisation handle calls it after each
    backward of a model that runs several backward passes over different parameter subsets (MCLRec). A parameter
    without a gradient counts as a zero gradient, so every rank reduces the same buffer. No-op outside torchrun.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    world = dist.get_world_size()
    if world == 1:
        return
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n
