"""One training adapter per architecture family (how to batch, compute the loss, validate, export)."""

from __future__ import annotations

from training.tasks.base import TaskAdapter
from training.tasks.disentangled import DisentangledAdapter
from training.tasks.interp2d import Interp2DAdapter
from training.tasks.joint3d import Joint3DAdapter, SegmenterAdapter
from training.tasks.rehrseg import REHRSegAdapter
from training.tasks.sr2d import SR2DAdapter

ADAPTERS: tuple[type[TaskAdapter], ...] = (
    Joint3DAdapter, SegmenterAdapter, Interp2DAdapter, SR2DAdapter, REHRSegAdapter, DisentangledAdapter,
)


def adapter_class(architecture: str) -> type[TaskAdapter]:
    """The adapter that trains ``architecture`` (REHRSeg's two networks share one two-stage adapter)."""
    for adapter in ADAPTERS:
        if architecture in adapter.architectures:
            return adapter
    known = sorted(a for adapter in ADAPTERS for a in adapter.architectures)
    raise KeyError(f"no training adapter for architecture {architecture!r}; trainable: {', '.join(known)}")


__all__ = ["ADAPTERS", "TaskAdapter", "adapter_class"]
