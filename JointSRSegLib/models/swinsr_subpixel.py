"""Per-axis 3D sub-pixel up-sampling for the SwinSR-UNETR super-resolution branch.

SwinSR-UNETR (``shared/papers/swinsr-unetr.txt``, Sec. 3.2) reconstructs the high-resolution
image in its SR branch.  MONAI's :class:`~monai.networks.blocks.SubpixelUpsample` only knows one
integer factor for every axis; the clinical through-plane case needs ``(1, 1, R)``.  This module is
the same operation (a 3x3x3 convolution to ``C * sx * sy * sz`` channels, ICNR initialisation,
pixel shuffle; Shi et al. 2016, Aitken et al. 2017) with one factor per axis.  For an isotropic
factor it is numerically identical to ``SubpixelUpsample(..., apply_pad_pool=False)`` (tested).

Grid convention (our SR protocol): LR voxel ``i`` maps to HR voxels ``i*R .. i*R+R-1`` along an
axis magnified by ``R``.  MONAI's optional pad-and-average-pool blur is left out because it shifts
that grid by ``(R-1)/2`` HR voxels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv

from .pixel_shuffle import pixel_shuffle_3d

Scale3 = tuple[int, int, int]


def as_scale_triple(scale: int | Sequence[int]) -> Scale3:
    """Normalise an ``int`` or ``(sx, sy, sz)`` magnification to a triple of positive ints."""
    triple = (int(scale),) * 3 if isinstance(scale, int) else tuple(int(s) for s in scale)
    if len(triple) != 3 or min(triple) < 1:
        raise ValueError(f"scale must be a positive int or a triple (sx, sy, sz) of positive ints, got {scale!r}")
    return triple  # type: ignore[return-value]


def icnr_init_(conv: nn.Conv3d, scale: Scale3) -> None:
    """ICNR (Aitken et al. 2017): every sub-pixel of one output channel starts with the same kernel,
    so the freshly initialised up-sampler is a nearest-neighbour resize (no checkerboard)."""
    factor = scale[0] * scale[1] * scale[2]
    out_channels = conv.weight.shape[0] // factor
    base = torch.empty(out_channels, *conv.weight.shape[1:])
    nn.init.kaiming_normal_(base)
    with torch.no_grad():
        conv.weight.copy_(base.repeat_interleave(factor, dim=0))


class AnisotropicSubpixelUpsample(nn.Module):
    """3x3x3 convolution to ``out_channels * sx*sy*sz`` channels, then a per-axis pixel shuffle."""

    def __init__(self, in_channels: int, out_channels: int, scale: int | Sequence[int], bias: bool = True):
        super().__init__()
        self.scale = as_scale_triple(scale)
        factor = self.scale[0] * self.scale[1] * self.scale[2]
        self.conv = Conv[Conv.CONV, 3](in_channels, out_channels * factor, kernel_size=3, padding=1, bias=bias)
        icnr_init_(self.conv, self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_shuffle_3d(self.conv(x), self.scale)


__all__ = ["AnisotropicSubpixelUpsample", "Scale3", "as_scale_triple", "icnr_init_", "pixel_shuffle_3d"]
