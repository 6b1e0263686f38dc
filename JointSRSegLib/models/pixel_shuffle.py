"""Per-axis sub-pixel shuffle (Shi et al., CVPR 2016), shared by every SR head of the zoo.

``torch.nn.functional.pixel_shuffle`` and MONAI's ``pixelshuffle`` take one factor for all axes;
through-plane SR needs ``(1, R)`` or ``(1, 1, R)``.  Channel ``c * prod(r) + offset`` of LR voxel
``i`` lands on HR voxel ``i * r + offset`` along every axis, so LR voxel ``i`` owns HR voxels
``iR ... iR+R-1`` -- exactly the sr protocol's ``subdivide_grid``.  For equal factors the
channel order equals MONAI's ``pixelshuffle``.
"""

from __future__ import annotations

import torch
from einops import rearrange


def pixel_shuffle_2d(x: torch.Tensor, factors: tuple[int, int]) -> torch.Tensor:
    """``(B, C*rh*rw, H, W) -> (B, C, H*rh, W*rw)``."""
    rh, rw = factors
    return rearrange(x, "b (c rh rw) h w -> b c (h rh) (w rw)", rh=rh, rw=rw)


def pixel_shuffle_3d(x: torch.Tensor, factors: tuple[int, int, int]) -> torch.Tensor:
    """``(B, C*sx*sy*sz, X, Y, Z) -> (B, C, X*sx, Y*sy, Z*sz)``."""
    sx, sy, sz = factors
    return rearrange(x, "b (c rx ry rz) x y z -> b c (x rx) (y ry) (z rz)", rx=sx, ry=sy, rz=sz)


__all__ = ["pixel_shuffle_2d", "pixel_shuffle_3d"]
