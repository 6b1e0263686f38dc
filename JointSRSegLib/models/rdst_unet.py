"""The 2D segmentation U-Net behind RDST's segmentation-based perceptual losses (Sec. 3.2, Fig. 2).

The paper pre-trains a U-Net (Ronneberger et al. 2015) on the HR training images and their labels
with a Dice loss (Eq. 7), then reads its feature maps to define ``L_E(i)`` (the ``i``-th of 5
encoder blocks, Eq. 8), ``L_D`` (the decoder output, Eq. 9) and ``L_HRL`` (the predicted labels,
Eq. 10).  :class:`SegmentationUNet` is MONAI's :class:`~monai.networks.nets.BasicUNet` (5 encoder
levels, 64 channels doubled after each block as in Sec. 4.3) whose forward returns all of those.

Deviation: the paper's U-Net (Segmentation-Models-PyTorch) has ResNet encoder blocks; BasicUNet
uses the original double-conv blocks.  So ``E1`` is two 3x3 conv + BN + ReLU at full resolution
(receptive field 5 px), not the ResNet stem's 7x7 stride-2 conv at half resolution: our ``L_E(1)`` is
a finer, pixel-level feature distance than the paper's.  Not a registry architecture (it is a loss
component).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets import BasicUNet

ENCODER_KEYS = ("E1", "E2", "E3", "E4", "E5")


class SegmentationUNet(BasicUNet):
    """2D U-Net returning ``{"E1".."E5", "D", "seg"}``: encoder block outputs, decoder output, logits.

    Any ``H, W`` is accepted: the input is replicate-padded to a multiple of 16 (four 2x poolings)
    and every map is cropped back to the extent of the unpadded image at its own resolution
    (``ceil(H / 2**(i-1))`` for ``E_i``), so padding never enters a perceptual loss.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 4,
        features: Sequence[int] = (64, 128, 256, 512, 1024, 64),
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple = ("batch", {"affine": True}),
        upsample: str = "deconv",
    ):
        super().__init__(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=out_channels,
            features=features,
            act=act,
            norm=norm,
            upsample=upsample,
        )
        self.in_channels = in_channels
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (-w) % 16, 0, (-h) % 16), mode="replicate")
        x0 = self.conv_0(x)
        x1 = self.down_1(x0)
        x2 = self.down_2(x1)
        x3 = self.down_3(x2)
        x4 = self.down_4(x3)
        u4 = self.upcat_4(x4, x3)
        u3 = self.upcat_3(u4, x2)
        u2 = self.upcat_2(u3, x1)
        u1 = self.upcat_1(u2, x0)
        logits = self.final_conv(u1)
        out = {}
        for level, (key, fmap) in enumerate(zip(ENCODER_KEYS, (x0, x1, x2, x3, x4))):
            f = 2**level
            out[key] = fmap[..., : -(-h // f), : -(-w // f)]
        out["D"] = u1[..., :h, :w]
        out["seg"] = logits[..., :h, :w]
        return out


__all__ = ["ENCODER_KEYS", "SegmentationUNet"]
