"""REHRSeg segmentation network: nnU-Net 3D with an LR and an HR head (sections 3.3, 4.2).

REHRSeg keeps nnU-Net-3D's default network for LR segmentation and adds "an additional HR
segmentation head consisting of an upsampling layer ... just before the original LR segmentation
head" (section 3.3), implemented as "interpolate the features before the last layer and use two
convolutions with a ReLU activation in between" (section 4.2).  The backbone is MONAI's
:class:`~monai.networks.nets.DynUNet`, MONAI's nnU-Net re-implementation (conv-IN-LeakyReLU x2 per
stage, strided-conv down-sampling, transposed-conv up-sampling); its kernels and strides follow
nnU-Net's anisotropy rule, derived from the per-axis scale (see :func:`nnunet_plan`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.nets import DynUNet

__all__ = ["REHRSegSegmenter", "nnunet_plan"]


def nnunet_plan(scale: Sequence[int], num_stages: int) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """Kernels and strides per stage from nnU-Net's rule for anisotropic spacing.

    The LR voxel spacing is taken proportional to ``scale`` (thick axes have ``scale > 1``).  At
    every stage an axis is pooled only while its current spacing is less than twice the smallest
    one, and gets kernel 1 while it is at least twice the smallest after pooling (nnU-Net v2
    ``get_pool_and_conv_props``, without its patch-size caps, since we pad instead).
    """
    spacing = [float(s) for s in scale]
    kernels, strides = [], []
    for stage in range(num_stages):
        smallest = min(spacing)
        stride = (1, 1, 1) if stage == 0 else tuple(2 if s / smallest < 2 else 1 for s in spacing)
        spacing = [s * k for s, k in zip(spacing, stride)]
        # Kernels act at the stage's (post-pooling) resolution; a pooled axis always gets 3 here.
        kernels.append(tuple(1 if s / min(spacing) >= 2 else 3 for s in spacing))
        strides.append(stride)
    return kernels, strides


class REHRSegSegmenter(nn.Module):
    """nnU-Net-3D segmenter producing LR and HR segmentations from an LR volume.

    Args:
        in_channels: image channels.
        num_classes: segmentation classes including background.
        scale: HR/LR size ratio per spatial axis ``(sx, sy, sz)``, e.g. ``(1, 1, 4)`` for 4x thinner
            slices along ``Z``; also used as the relative LR spacing for :func:`nnunet_plan`.
        features: channels per U-Net stage (nnU-Net default ``(32, 64, 128, 256, 320, 320)``).
        hr_interpolation: ``"trilinear"`` (``align_corners=False``, centred exactly like the
            subdivided HR grid) or ``"nearest"`` (LR voxel ``i`` -> HR voxels ``i*R .. i*R+R-1``).

    ``forward(x)`` with ``x (B, in_channels, X, Y, Z)`` of any size returns ``"seg_lr"``
    ``(B, num_classes, X, Y, Z)``, ``"seg"`` ``(B, num_classes, X*sx, Y*sy, Z*sz)`` (logits) and
    ``"features"`` ``(B, features[0], X, Y, Z)``: the decoder output ``F^seg`` shared by both heads,
    used for structural distillation (section 3.5).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        scale: Sequence[int] = (1, 1, 4),
        features: Sequence[int] = (32, 64, 128, 256, 320, 320),
        hr_interpolation: str = "trilinear",
    ):
        super().__init__()
        if len(scale) != 3 or any(int(s) < 1 for s in scale):
            raise ValueError(f"scale must give three positive integers (X, Y, Z), got {scale}")
        if hr_interpolation not in ("trilinear", "nearest"):
            raise ValueError(f"hr_interpolation must be 'trilinear' or 'nearest', got {hr_interpolation!r}")
        self.scale = tuple(int(s) for s in scale)
        self.hr_interpolation = hr_interpolation
        kernels, strides = nnunet_plan(self.scale, len(features))
        self.unet = DynUNet(
            3,
            in_channels,
            num_classes,
            kernel_size=kernels,
            strides=strides,
            upsample_kernel_size=strides[1:],
            filters=list(features),
            norm_name=("instance", {"affine": True}),
            act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
        )
        self.divisor = tuple(math.prod(s[a] for s in strides) for a in range(3))
        width = int(features[0])
        self.hr_head = nn.Sequential(
            Convolution(3, width, width, kernel_size=3, act=("relu", {"inplace": False}), norm=None),
            Convolution(3, width, num_classes, kernel_size=1, conv_only=True),
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 5:
            raise ValueError(f"expected (B, C, X, Y, Z), got {tuple(x.shape)}")
        size = x.shape[2:]
        # Pad at the far end to the U-Net's total stride, keeping >= 2 voxels at the bottleneck
        # (instance norm needs more than one voxel); cropping back keeps voxel i at index i.
        padded = [d * max(2, math.ceil(n / d)) for n, d in zip(size, self.divisor)]
        pad = [p for n, t in zip(reversed(size), reversed(padded)) for p in (0, t - n)]
        features = self.unet.skip_layers(F.pad(x, pad, mode="replicate"))
        features = features[:, :, : size[0], : size[1], : size[2]]
        seg_lr = self.unet.output_block(features)
        hr_size = tuple(n * s for n, s in zip(size, self.scale))
        if self.hr_interpolation == "trilinear":
            upsampled = F.interpolate(features, size=hr_size, mode="trilinear", align_corners=False)
        else:
            upsampled = F.interpolate(features, size=hr_size, mode="nearest")
        return {"seg_lr": seg_lr, "seg": self.hr_head(upsampled), "features": features}
