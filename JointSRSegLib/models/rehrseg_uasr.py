"""Uncertainty-aware super-resolution (UASR) head (REHRSeg section 3.4, Eqs. 2-5, Fig. 3).

The head turns the backbone features of a window of ``D`` LR slices into ``R`` HR slices.  It
predicts ``N`` candidate images and annotations, lets a softmax attention choose between them
voxel by voxel, and reads the *uncertainty* off that attention: where the candidates disagree and
no hypothesis dominates, reconstruction is hard (typically ROI boundaries).

* Eq. 2  ``F_m = LReLU(conv(merge(F_o; depth -> channels)))``; ``split(F_m; channels -> depth)``
  gives ``R`` output slices; 3D convolutions ``W_I^j`` (tanh) and ``W_Y^j`` give ``P_I^j``, ``P_Y^j``.
* Eq. 3  ``P_A^j = softmax_j(W_A^j * split(F_m))``.
* Eq. 4  ``I_HR = sum_j P_A^j * P_I^j``,  ``Y_HR = sum_j P_A^j * P_Y^j``.
* Eq. 5  ``U = sigmoid(conv([P_A^1, ..., P_A^N]))``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from einops import rearrange
from monai.networks.blocks import Convolution

__all__ = ["UASRHead"]

_MERGE_SLOPE = 0.2  # FLAVR's LeakyReLU(0.2) after its depth-merging "feature_fuse" convolution


class UASRHead(nn.Module):
    """UASR head: ``(B, C, D, H, W)`` window features -> ``R`` HR slices with uncertainty.

    Args:
        in_channels: ``C``, channels of the backbone output ``F_o^sr``.
        num_input_slices: ``D``, the window length the backbone saw (merged into channels).
        scale: ``R``, output slices per window (the slice-thickness reduction factor).
        image_channels: channels of the super-resolved image.
        num_classes: classes of the super-resolved annotation (logits, background included).
        num_hypotheses: ``N`` intermediate images/annotations (not given in the paper).
        mid_channels: channels per output slice of ``F_m``; defaults to ``in_channels``.
        kernel_size: kernel of the 3D convolutions ``W_I``, ``W_Y``, ``W_A`` and of Eq. 5.

    ``forward`` returns ``image (B, image_channels, R, H, W)`` in ``[-1, 1]``,
    ``annotation (B, num_classes, R, H, W)`` logits, ``uncertainty (B, 1, R, H, W)`` in
    ``(0, 1)`` and ``attention (B, N, R, H, W)`` (sums to one over ``N``).
    """

    def __init__(
        self,
        in_channels: int,
        num_input_slices: int,
        scale: int,
        image_channels: int = 1,
        num_classes: int = 2,
        num_hypotheses: int = 4,
        mid_channels: int | None = None,
        kernel_size: int = 3,
    ):
        super().__init__()
        self.scale, self.num_hypotheses = int(scale), int(num_hypotheses)
        self.image_channels, self.num_classes = int(image_channels), int(num_classes)
        mid = int(mid_channels or in_channels)
        # Eq. 2: 2D convolution on the depth-merged features (FLAVR's 1x1 "feature_fuse").
        self.merge_conv = Convolution(
            2,
            in_channels * num_input_slices,
            mid * self.scale,
            kernel_size=1,
            act=("leakyrelu", {"negative_slope": _MERGE_SLOPE}),
            norm=None,
        )
        n = self.num_hypotheses
        self.image_conv = Convolution(
            3, mid, n * self.image_channels, kernel_size=kernel_size, conv_only=True
        )
        self.annotation_conv = Convolution(
            3, mid, n * self.num_classes, kernel_size=kernel_size, conv_only=True
        )
        self.attention_conv = Convolution(3, mid, n, kernel_size=kernel_size, conv_only=True)
        self.uncertainty_conv = Convolution(3, n, 1, kernel_size=kernel_size, conv_only=True)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        merged = rearrange(features, "b c d h w -> b (d c) h w")  # merge(F; 2; 1)
        fm = rearrange(self.merge_conv(merged), "b (r c) h w -> b c r h w", r=self.scale)  # split(F_m; 1; 2)
        n = self.num_hypotheses
        images = torch.tanh(self.image_conv(fm)).unflatten(1, (n, self.image_channels))  # P_I^j
        annotations = self.annotation_conv(fm).unflatten(1, (n, self.num_classes))  # P_Y^j
        attention = torch.softmax(self.attention_conv(fm), dim=1)  # P_A^j, Eq. 3
        image = (attention.unsqueeze(2) * images).sum(dim=1)  # Eq. 4
        annotation = (attention.unsqueeze(2) * annotations).sum(dim=1)
        uncertainty = torch.sigmoid(self.uncertainty_conv(attention))  # Eq. 5
        return {"image": image, "annotation": annotation, "uncertainty": uncertainty, "attention": attention}
