"""REHRSeg at inference with its UASR uncertainty map: the segmenter plus its self-SR teacher.

REHRSeg's HR segmentation comes from the segmenter alone (``rehrseg_seg``), but the paper's
uncertainty map ``U`` (Eq. 5, the UASR head of the self-SR network, trained by Eq. 6 to follow the
reconstruction error, high on tissue boundaries) lives in the self-SR network (``rehrseg_sr``),
which super-resolves *annotated* LR images.  A package that shows ``U`` therefore has to carry
both networks: :class:`REHRSegWithUASR` holds them and runs

1. the segmenter on the LR volume -> HR logits ``"seg"`` (and ``"seg_lr"``);
2. when the uncertainty is wanted, the frozen self-SR teacher on the same LR volume (rescaled from
   the package's ``[0, 1]`` normalisation to its ``[-1, 1]`` input range, as in training) with the
   segmenter's *own* LR segmentation (arg-max, one-hot: the form of the LR annotations it was
   trained on) as the annotation -> ``"sr_uncertainty"`` ``U`` in ``(0, 1)`` on the HR grid.

At training time the teacher reads the real LR annotations; at inference there are none, hence
step 2 uses the segmenter's.  ``select_heads`` lets the inference engine skip the teacher (most of
the cost) when no uncertainty map is requested.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .rehrseg_seg import REHRSegSegmenter
from .rehrseg_sr import REHRSegSR

__all__ = ["REHRSegWithUASR"]


class REHRSegWithUASR(nn.Module):
    """``rehrseg_seg`` + its ``rehrseg_sr`` teacher; outputs ``seg``, ``seg_lr`` and ``sr_uncertainty``.

    Args:
        segmenter: keyword arguments of :class:`~.rehrseg_seg.REHRSegSegmenter`.
        teacher: keyword arguments of :class:`~.rehrseg_sr.REHRSegSR`.

    The two must agree: same ``in_channels`` and ``num_classes``, ``scale`` ``(1, 1, R)`` for the
    segmenter and ``scale=R``, ``slice_axis=2`` for the teacher (the model frame puts the thick-slice
    axis last).  ``forward(x)``: ``x (B, in_channels, X, Y, Z)`` normalised to ``[0, 1]``; returns
    ``"seg"`` ``(B, K, X, Y, Z*R)`` and ``"seg_lr"`` ``(B, K, X, Y, Z)`` logits, and -- unless
    switched off by :meth:`select_heads` -- ``"sr_uncertainty"`` ``(B, 1, X, Y, Z*R)`` in ``(0, 1)``.
    """

    def __init__(self, segmenter: Mapping[str, Any], teacher: Mapping[str, Any]):
        super().__init__()
        self.segmenter = REHRSegSegmenter(**dict(segmenter))
        self.teacher = REHRSegSR(**dict(teacher))
        seg_scale, r = self.segmenter.scale, self.teacher.scale
        if tuple(seg_scale) != (1, 1, r) or self.teacher.slice_axis != 2:
            raise ValueError(
                f"segmenter scale {tuple(seg_scale)} and teacher scale {r} / slice_axis "
                f"{self.teacher.slice_axis} must describe the same thick-slice axis: (1, 1, R), R, 2"
            )
        seg_in, seg_classes = int(segmenter.get("in_channels", 1)), int(segmenter.get("num_classes", 2))
        if seg_in != self.teacher.in_channels or seg_classes != self.teacher.num_classes:
            raise ValueError(
                f"segmenter ({seg_in} channels, {seg_classes} classes) and teacher ({self.teacher.in_channels} "
                f"channels, {self.teacher.num_classes} classes) must agree"
            )
        self.num_classes = seg_classes
        self.uncertainty = True

    def select_heads(self, keys: Iterable[str] | None) -> None:
        """Compute ``sr_uncertainty`` (runs the teacher) only if ``keys`` asks for it (``None``: all)."""
        self.uncertainty = keys is None or "sr_uncertainty" in set(keys)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.segmenter(x)
        result = {"seg": out["seg"], "seg_lr": out["seg_lr"]}
        if self.uncertainty:
            annotation = F.one_hot(out["seg_lr"].argmax(1), self.num_classes).movedim(-1, 1).to(x.dtype)
            teacher = self.teacher(x * 2.0 - 1.0, annotation)
            result["sr_uncertainty"] = teacher["sr_uncertainty"]
        return result
