"""The partially shared decoder of SwinSR-UNETR (``shared/papers/swinsr-unetr.txt``, Sec. 3.2).

"The decoder began with two shared Residual Convolutional Refinement Units (RCRU). [...] After the
shared RCRU layers, the decoder split into two branches [...] the remainder of the decoder
architecture followed a standard UNETR-style structure, utilizing transposed convolutions, skip
connections, and normalization layers."

* RCRU = MONAI :class:`UnetrUpBlock` with ``res_block=True`` (2x transposed convolution, concatenation
  with the encoder skip, residual 3x3x3 conv block with instance norm): the unit Swin UNETR's decoder
  is built from.  The two deepest up-steps are shared by both tasks.
* Each branch continues with its own UNETR up-blocks down to the LR grid, then a task head maps the
  LR grid to the HR (output) grid:

  - :class:`SegmentationHead`: transposed convolution with kernel = stride = ``scale`` per axis, a
    residual conv block, 1x1x1 logits (``C_seg`` channels).
  - :class:`SuperResolutionHead`: per-axis sub-pixel convolution, a residual conv block, 1x1x1
    output (``C_in`` channels) and, optionally, a 1x1x1 per-voxel log-variance map.

  Both heads map LR voxel ``i`` to HR voxels ``i*R .. i*R+R-1`` along an axis magnified by ``R``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import UnetOutBlock, UnetResBlock, UnetrUpBlock
from monai.networks.blocks.dynunet_block import get_conv_layer

from .swinsr_subpixel import AnisotropicSubpixelUpsample, Scale3


def rcru(in_channels: int, out_channels: int, norm_name: str | tuple) -> UnetrUpBlock:
    """Residual Convolutional Refinement Unit: Swin UNETR's residual up-block (Sec. 3.2)."""
    return UnetrUpBlock(3, in_channels, out_channels, kernel_size=3, upsample_kernel_size=2,
                        norm_name=norm_name, res_block=True)


class UpPath(nn.Module):
    """A chain of RCRUs, deepest first; consumes one skip per block."""

    def __init__(self, level_channels: Sequence[int], levels: Sequence[int], norm_name: str | tuple):
        super().__init__()
        self.levels = tuple(levels)
        self.blocks = nn.ModuleList(rcru(level_channels[i + 1], level_channels[i], norm_name) for i in self.levels)

    def forward(self, x: torch.Tensor, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        for level, block in zip(self.levels, self.blocks):
            x = block(x, skips[level])
        return x


class SegmentationHead(nn.Module):
    """LR features -> HR segmentation logits (transposed conv keeps the UNETR-style up-sampling)."""

    def __init__(self, in_channels: int, hr_channels: int, out_channels: int, scale: Scale3,
                 norm_name: str | tuple, dropout: float):
        super().__init__()
        self.up = get_conv_layer(3, in_channels, hr_channels, kernel_size=scale, stride=scale,
                                 conv_only=True, is_transposed=True)
        self.refine = UnetResBlock(3, hr_channels, hr_channels, kernel_size=3, stride=1, norm_name=norm_name,
                                   dropout=dropout or None)
        self.out = UnetOutBlock(3, hr_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.refine(self.up(x)))


class SuperResolutionHead(nn.Module):
    """LR features -> HR image (sub-pixel convolution) and, when aleatoric, its log-variance."""

    def __init__(self, in_channels: int, hr_channels: int, out_channels: int, scale: Scale3,
                 norm_name: str | tuple, dropout: float, aleatoric: bool, log_var_bound: float):
        super().__init__()
        self.up = AnisotropicSubpixelUpsample(in_channels, hr_channels, scale)
        self.refine = UnetResBlock(3, hr_channels, hr_channels, kernel_size=3, stride=1, norm_name=norm_name,
                                   dropout=dropout or None)
        self.out = UnetOutBlock(3, hr_channels, out_channels)
        self.log_var = UnetOutBlock(3, hr_channels, out_channels) if aleatoric else None
        self.log_var_bound = float(log_var_bound)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.refine(self.up(x))
        result = {"sr": self.out(features)}
        if self.log_var is not None:
            # Soft bound b*tanh(s/b): keeps exp(-s) finite in the heteroscedastic loss without the dead
            # gradients of a hard clamp.
            bound = self.log_var_bound
            result["sr_log_var"] = bound * torch.tanh(self.log_var(features) / bound)
        return result


class PartiallySharedDecoder(nn.Module):
    """Two shared RCRUs, then a segmentation branch and a super-resolution branch (Sec. 3.2, Fig. 1)."""

    def __init__(
        self,
        level_channels: Sequence[int],
        in_channels: int,
        seg_channels: int,
        scale: Scale3,
        hr_channels: int,
        norm_name: str | tuple = "instance",
        dropout: float = 0.0,
        aleatoric: bool = False,
        log_var_bound: float = 10.0,
        num_shared: int = 2,
    ):
        super().__init__()
        deepest = len(level_channels) - 2  # level of the first up-block's skip
        if not 0 < num_shared <= deepest:
            raise ValueError(f"num_shared={num_shared} needs at least {num_shared + 1} encoder levels")
        shared_levels = list(range(deepest, deepest - num_shared, -1))
        branch_levels = list(range(deepest - num_shared, -1, -1))
        self.shared = UpPath(level_channels, shared_levels, norm_name)
        self.seg_branch = UpPath(level_channels, branch_levels, norm_name)
        self.sr_branch = UpPath(level_channels, branch_levels, norm_name)
        self.seg_head = SegmentationHead(level_channels[0], hr_channels, seg_channels, scale, norm_name, dropout)
        self.sr_head = SuperResolutionHead(level_channels[0], hr_channels, in_channels, scale, norm_name, dropout,
                                           aleatoric, log_var_bound)

    def forward(self, skips: Sequence[torch.Tensor], lr_shape: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
        """``lr_shape`` crops the LR-grid branch features to the unpadded extent before the HR heads,
        so the (costly) HR grid is never computed for padding."""
        shared = self.shared(skips[-1], skips)
        sr_features = self.sr_branch(shared, skips)
        seg_features = self.seg_branch(shared, skips)
        if lr_shape is not None:
            x, y, z = lr_shape
            sr_features, seg_features = sr_features[:, :, :x, :y, :z], seg_features[:, :, :x, :y, :z]
        outputs = self.sr_head(sr_features)
        outputs["seg"] = self.seg_head(seg_features)
        return outputs


__all__ = ["PartiallySharedDecoder", "SegmentationHead", "SuperResolutionHead", "UpPath", "rcru"]
