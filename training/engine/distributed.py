"""Data-parallel training with ``torch.distributed`` (``torchrun``; NCCL on GPUs, gloo on CPU).

Every network a stage trains is wrapped in its own ``DistributedDataParallel`` (GANs: generator
and discriminator separately), which broadcasts rank 0's state when it is built, averages the
gradients during ``backward`` and broadcasts rank 0's buffers before every forward.  Modules a
stage does not train (frozen teachers, loss modules without parameters such as DWA) are not
wrapped -- DDP refuses modules without trainable parameters -- so their state is broadcast once per
stage and their floating buffers after every step, the part of DDP's ``broadcast_buffers`` that
DDP cannot do for them.  Rank 0 validates, logs and writes checkpoints.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


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


def wrap_trained_modules(targets: Mapping[str, torch.nn.Module], trained: Sequence[torch.nn.Parameter],
                         find_unused: Iterable[str], ctx: DistributedContext,
                         device: torch.device) -> dict[str, DistributedDataParallel]:
    """One DDP per module of ``targets`` that owns parameters of ``trained`` (the stage's optimizer).

    ``targets`` maps names to the modules DDP wraps (an adapter may restrict a network's outputs);
    ``find_unused`` names the modules that leave trainable parameters without gradient in some steps.
    A wrapped module must not hold trainable parameters outside ``trained``: DDP would wait for their
    gradients and average them for nothing.
    """
    if not ctx.enabled:
        return {}
    ids, unused = {id(p) for p in trained}, set(find_unused)
    wrappers: dict[str, DistributedDataParallel] = {}
    for name, module in targets.items():
        params = [p for p in module.parameters() if p.requires_grad]
        if not any(id(p) in ids for p in params):
            continue
        if not all(id(p) in ids for p in params):
            raise ValueError(f"module {name!r} has trainable parameters outside this stage's optimizer; "
                             "freeze them (requires_grad_(False)) in the adapter's start_stage")
        wrappers[name] = DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=name in unused, broadcast_buffers=True)
    return wrappers


def broadcast_module(module: torch.nn.Module, ctx: DistributedContext, buffers_only: bool = False) -> None:
    """Rank 0's parameters and/or floating buffers on every rank (for modules DDP does not wrap)."""
    if not ctx.enabled:
        return
    tensors = [] if buffers_only else list(module.parameters())
    tensors += [b for b in module.buffers() if b.is_floating_point()]
    for tensor in tensors:
        dist.broadcast(tensor.data, src=0)


def mean_over_ranks(values: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    """The mean of a 1-D tensor over the ranks (one all-reduce; the tensor itself without distribution)."""
    if not ctx.enabled:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / ctx.world_size


def all_reduce_flag(flag: bool, ctx: DistributedContext, device: torch.device | str = "cpu") -> bool:
    """True on every rank when it is true on any (early stopping decided on rank 0 stops all)."""
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
