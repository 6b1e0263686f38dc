"""Data-parallel training with ``torch.distributed`` (``torchrun``; NCCL on GPUs, gloo on CPU).

Every rank holds the same modules (same seed); after each backward the gradients of every
trainable parameter are averaged with one all-reduce per bucket, and floating buffers (BatchNorm
statistics) are broadcast from rank 0 -- what ``DistributedDataParallel`` does, but applied to
all of an adapter's modules at once: REHRSeg and the disentangled GAN train several networks,
GradNorm differentiates task losses with ``autograd.grad`` before ``backward``, which DDP's
one-forward-one-backward contract does not cover.  Rank 0 logs and writes checkpoints.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistributedContext:
    """Join the process group described by torchrun's environment (``WORLD_SIZE`` > 1), else single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistributedContext()
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=10))
    return DistributedContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def average_gradients(params: Iterable[torch.nn.Parameter], ctx: DistributedContext) -> None:
    """Mean of every gradient over the ranks (one flattened all-reduce)."""
    if not ctx.enabled:
        return
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:  # a parameter unused on this rank still takes part in the all-reduce
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= ctx.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_module(module: torch.nn.Module, ctx: DistributedContext, buffers_only: bool = False) -> None:
    """Rank 0's parameters and/or floating buffers on every rank."""
    if not ctx.enabled:
        return
    tensors = [] if buffers_only else list(module.parameters())
    tensors += [b for b in module.buffers() if b.is_floating_point()]
    for tensor in tensors:
        dist.broadcast(tensor.data, src=0)


def all_reduce_flag(flag: bool, ctx: DistributedContext, device: torch.device | str = "cpu") -> bool:
    """True on every rank when it is true on any (a NaN on one rank stops all of them)."""
    if not ctx.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value)
    return bool(value.item() > 0)


def barrier(ctx: DistributedContext) -> None:
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: DistributedContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def gather_objects(value, ctx: DistributedContext) -> list:
    """``value`` of every rank, in rank order (a one-element list without distribution)."""
    if not ctx.enabled:
        return [value]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, value)
    return out
