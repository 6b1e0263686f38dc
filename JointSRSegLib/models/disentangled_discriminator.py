"""Image discriminator ``D`` for the SR generator (Fig. 6(b)) and the swapped autoencoder (Eqs. 4-5).

``cnn-vit-disentangled-sr.txt`` Appendix E shows the SRGAN discriminator (Ledig et al. 2017):
conv(n64 s1) + LeakyReLU, then conv-BN-LeakyReLU blocks alternating stride 1 / 2 with
64, 64, 128, 128, 256, 256, 512, 512 filters, a 1024-unit dense layer, LeakyReLU and one output.
The paper gives no separate design for the autoencoder's ``D``, so the same class is used there.

``forward`` returns the *logit*; ``D(.) = sigmoid(logit)`` and the losses use ``softplus`` forms
of ``-log D`` for numerical stability.  SRGAN flattens a fixed 6x6 map (96x96 crops); an adaptive
average pool to ``pooled_size`` makes any input size legal (exactly SRGAN for 96x96 crops with
``pooled_size=6``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution

_LEAKY = ("leakyrelu", {"negative_slope": 0.2})


class SRGANDiscriminator(nn.Module):
    """SRGAN-style discriminator returning one real/fake logit per image, shape ``(B, 1)``."""

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (64, 64, 128, 128, 256, 256, 512, 512),
        dense_features: int = 1024,
        pooled_size: int = 6,
    ):
        super().__init__()
        layers = []
        prev = in_channels
        for i, ch in enumerate(channels):
            layers.append(
                Convolution(2, prev, ch, strides=1 if i % 2 == 0 else 2, kernel_size=3, act=_LEAKY,
                            norm=None if i == 0 else "BATCH")
            )
            prev = ch
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pooled_size)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(prev * pooled_size * pooled_size, dense_features),
            nn.LeakyReLU(0.2),
            nn.Linear(dense_features, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


__all__ = ["SRGANDiscriminator"]
