"""FLAVR backbone of REHRSeg's self-SR model (REHRSeg section 3.2; Kalluri et al., WACV 2023).

REHRSeg initialises its self-SR backbone from FLAVR, a 3D U-Net for video frame interpolation
whose encoder is a 3D ResNet-18 (R3D-18) that *never strides along time*, so every input frame
keeps its own feature map down to the bottleneck.  In REHRSeg the "frames" are the thick MR
slices, so the slice axis plays the role of time.  No video-pretrained weights are shipped with
JointSRSeg: the backbone trains from scratch (the "FLAVR from scratch" variant of Table 2/5).

Layout follows FLAVR's ``UNet_3D_3D`` exactly (tensor ``(B, C, T, H, W)``, ``T`` = frames):

* stem: conv ``(3, 7, 7)`` stride ``(1, 2, 2)`` + ReLU                         -> ``x0`` (H/2)
* layer1..4: two gated residual blocks each, spatial strides ``1, 2, 2, 1``    -> ``x1..x4``
* decoder: conv, up, up, conv, up (each followed by feature gating and LeakyReLU(0.2)),
  concatenating the encoder features at every scale ("concat" join)            -> ``(B, C0, T, H, W)``

Built from MONAI blocks: :class:`monai.networks.blocks.UnetResBlock` (residual unit),
:class:`monai.networks.blocks.Convolution` (stem, decoder convolutions and transposed convolutions).
FLAVR's spatio-temporal feature gating (a 1x1x1 convolution + sigmoid on globally pooled features,
without SE's channel reduction) has no MONAI counterpart and is defined here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution, UnetResBlock

__all__ = ["FLAVRBackbone", "FeatureGating", "GatedResBlock", "FLAVR_SPATIAL_STRIDE"]

#: In-plane down-sampling of the backbone (stem, layer2 and layer3 each halve H and W).
FLAVR_SPATIAL_STRIDE = 8
_DECODER_SLOPE = 0.2  # FLAVR's nn.LeakyReLU(0.2) between decoder stages


class FeatureGating(nn.Module):
    """FLAVR's spatio-temporal feature gating: ``x * sigmoid(conv1x1(avgpool(x)))``.

    Lets the network re-weight channels using global context (FLAVR section 3.2); unlike
    squeeze-and-excitation it has no bottleneck, so it is not MONAI's ``ChannelSELayer``.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.attention = Convolution(
            3, channels, channels, kernel_size=1, act="sigmoid", norm=None, bias=True
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(self.pool(x))


class GatedResBlock(UnetResBlock):
    """R3D-18 basic block with FLAVR's feature gating applied to the residual branch.

    MONAI's :class:`UnetResBlock` gives conv-act-conv + (strided 1x1x1) shortcut; FLAVR inserts
    the gate just before the addition, which is the only change made here.  FLAVR trains without
    normalisation (``batchnorm=False``), so ``norm_name=""`` (identity) by default.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: Sequence[int] | int = 1, norm_name: str = ""
    ):
        super().__init__(
            3,
            in_channels,
            out_channels,
            kernel_size=3,
            stride=stride,
            norm_name=norm_name,
            act_name=("relu", {"inplace": False}),
        )
        self.gate = FeatureGating(out_channels)

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        out = self.norm2(self.conv2(self.lrelu(self.norm1(self.conv1(inp)))))
        out = self.gate(out)
        residual = inp
        if hasattr(self, "conv3"):
            residual = self.norm3(self.conv3(inp))
        return self.lrelu(out + residual)


class _GatedDecoderStage(nn.Sequential):
    """FLAVR ``Conv_3d`` / ``upConv3D``: (transposed) convolution, feature gating, LeakyReLU(0.2)."""

    def __init__(self, in_channels: int, out_channels: int, upsample: bool):
        conv = (
            Convolution(
                3,
                in_channels,
                out_channels,
                strides=(1, 2, 2),
                kernel_size=(3, 4, 4),
                padding=(1, 1, 1),
                output_padding=0,
                is_transposed=True,
                conv_only=True,
            )
            if upsample
            else Convolution(3, in_channels, out_channels, kernel_size=3, conv_only=True)
        )
        super().__init__(conv, FeatureGating(out_channels), nn.LeakyReLU(_DECODER_SLOPE))


class FLAVRBackbone(nn.Module):
    """FLAVR 3D U-Net (R3D encoder with temporal stride 1 + gated transposed-conv decoder).

    Args:
        in_channels: channels per frame (REHRSeg: image channels + one-hot annotation channels).
        features: widths of layer1..layer4, FLAVR uses ``(64, 128, 256, 512)``.  The stem has
            ``features[0]`` channels and the decoder mirrors FLAVR's ``nf = reversed(features)``.
        blocks_per_layer: residual blocks per encoder layer, ``(2, 2, 2, 2)`` for R3D-18.

    Input ``(B, in_channels, T, H, W)`` with ``H`` and ``W`` multiples of
    :data:`FLAVR_SPATIAL_STRIDE`; output ``F_o^sr`` of shape ``(B, features[0], T, H, W)``
    (REHRSeg Eq. 2 notation ``C x D x H x W``).
    """

    def __init__(
        self,
        in_channels: int,
        features: Sequence[int] = (64, 128, 256, 512),
        blocks_per_layer: Sequence[int] = (2, 2, 2, 2),
        norm_name: str = "",
    ):
        super().__init__()
        if len(features) != 4 or len(blocks_per_layer) != 4:
            raise ValueError("FLAVR has four encoder layers: give four features and four block counts")
        f0, f1, f2, f3 = (int(f) for f in features)
        self.out_channels = f0
        self.stem = Convolution(
            3,
            in_channels,
            f0,
            strides=(1, 2, 2),
            kernel_size=(3, 7, 7),
            act=("relu", {"inplace": False}),
            norm=None,
        )
        strides = ((1, 1, 1), (1, 2, 2), (1, 2, 2), (1, 1, 1))  # temporal stride always 1 (FLAVR)
        widths = (f0, f1, f2, f3)
        layers, previous = [], f0
        for width, stride, count in zip(widths, strides, blocks_per_layer):
            blocks = [GatedResBlock(previous, width, stride, norm_name)]
            blocks += [GatedResBlock(width, width, 1, norm_name) for _ in range(int(count) - 1)]
            layers.append(nn.Sequential(*blocks))
            previous = width
        self.encoder = nn.ModuleList(layers)
        # FLAVR decoder with "concat" joins: nf = [f3, f2, f1, f0], growth 2.
        self.decoder = nn.ModuleList(
            [
                _GatedDecoderStage(f3, f2, upsample=False),  # joins x3 (f2 channels)
                _GatedDecoderStage(2 * f2, f1, upsample=True),  # joins x2
                _GatedDecoderStage(2 * f1, f0, upsample=True),  # joins x1
                _GatedDecoderStage(2 * f0, f0, upsample=False),  # joins x0
                _GatedDecoderStage(2 * f0, f0, upsample=True),  # back to full resolution
            ]
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x0 = self.stem(frames)
        x1 = self.encoder[0](x0)
        x2 = self.encoder[1](x1)
        x3 = self.encoder[2](x2)
        x4 = self.encoder[3](x3)
        d = torch.cat([self.decoder[0](x4), x3], dim=1)
        d = torch.cat([self.decoder[1](d), x2], dim=1)
        d = torch.cat([self.decoder[2](d), x1], dim=1)
        d = torch.cat([self.decoder[3](d), x0], dim=1)
        return self.decoder[4](d)
