"""CNN + ViT super-resolution with disentangled structure/texture losses (generator side).

Paper: ``cnn-vit-disentangled-sr.txt`` ("Combining CNNs and vision transformers ... MR image
super-resolution").  This module holds the SR generator of Appendix E / Fig. 6(a) and the
registry entry; the networks that only exist to train it live in sibling modules:

* :mod:`.disentangled_autoencoder` -- swapped autoencoder of Sec. 3.3 / Appendix A,
* :mod:`.disentangled_discriminator` -- the discriminator of Fig. 6(b),
* :mod:`.disentangled_vit` -- the UNETR ViT feature extractor with the Sec. 3.2 pretext head,

and the losses (Eqs. 3-9, 21) in :mod:`JointSRSegLib.losses.disentangled_sr`.
:func:`build_disentangled_training_modules` builds all of them consistently for training code.

The paper works on 2D slices (Sec. 4: "due to using 2D images we get 500 x 96 training samples"),
so every network here is 2D.  ``scale`` may be per axis, e.g. ``(1, 4)`` for anisotropic
through-plane upsampling of a reformatted slice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution, ResidualUnit

from .disentangled_autoencoder import SwappingAutoencoder
from .disentangled_discriminator import SRGANDiscriminator
from .disentangled_vit import ViTFeatureExtractor
from .pixel_shuffle import pixel_shuffle_2d
from .registry import ArchitectureSpec

ScaleArg = int | Sequence[int]


def normalize_scale(scale: ScaleArg) -> tuple[int, int]:
    """Per-axis (H, W) integer upscaling factors from an int or a 2-sequence."""
    factors = (int(scale), int(scale)) if isinstance(scale, int) else tuple(int(s) for s in scale)
    if len(factors) != 2 or any(f < 1 for f in factors):
        raise ValueError(f"scale must be a positive int or a pair of positive ints, got {scale!r}")
    return factors  # type: ignore[return-value]


def _prime_factors(n: int) -> list[int]:
    factors, p = [], 2
    while n > 1:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    return factors


def upsampling_stages(scale: ScaleArg) -> list[tuple[int, int]]:
    """Split per-axis factors into sub-pixel stages.

    Appendix E: "a series of upsampling stages, where each stage doubles the input image size";
    a factor 4 becomes two x2 stages.  Factors that are not powers of two get one stage per prime
    factor (x3 -> one x3 stage), and an axis with fewer factors is padded with 1 (no change).
    """
    per_axis = [_prime_factors(f) for f in normalize_scale(scale)]
    n_stages = max(len(f) for f in per_axis)
    padded = [f + [1] * (n_stages - len(f)) for f in per_axis]
    return list(zip(*padded))


class SubpixelUpsampleStage(nn.Module):
    """One generator upsampling stage: 3x3 conv -> per-axis pixel shuffle -> ReLU (Fig. 6(a)).

    MONAI's ``SubpixelUpsample`` only supports one isotropic factor, so the shuffle is done by
    :func:`pixel_shuffle_2d`; the convolution is MONAI's and it is ICNR-initialised (Aitken et al.
    2017, as MONAI does) so the stage starts as nearest-neighbour upsampling, free of checkerboard.
    """

    def __init__(self, channels: int, factors: tuple[int, int]):
        super().__init__()
        self.factors = (int(factors[0]), int(factors[1]))
        n_sub = self.factors[0] * self.factors[1]
        self.conv = Convolution(2, channels, channels * n_sub, kernel_size=3, conv_only=True)
        with torch.no_grad():
            conv = self.conv.conv
            base = torch.empty(channels, *conv.weight.shape[1:])
            nn.init.kaiming_normal_(base)
            conv.weight.copy_(base.repeat_interleave(n_sub, dim=0))
            conv.bias.zero_()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(pixel_shuffle_2d(self.conv(x), self.factors))


class DisentangledSRGenerator(nn.Module):
    """SR generator of Appendix E / Fig. 6(a) (an SRResNet-style CNN).

    conv 3x3 + ReLU -> ``num_res_blocks`` residual blocks (two conv 3x3 - BN - ReLU each, identity
    skip; MONAI ``ResidualUnit``) -> conv + BN with a long skip (the "skip connections" of
    Fig. 6(a)) -> sub-pixel upsampling stages -> conv 3x3 to the output channels.  Fully
    convolutional with "same" padding, so any ``H x W`` (odd too) maps to exactly
    ``(H * rh) x (W * rw)``.  ``forward`` returns ``{"sr": tensor}``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        scale: ScaleArg = 2,
        features: int = 64,
        num_res_blocks: int = 16,
    ):
        super().__init__()
        self.scale = normalize_scale(scale)
        self.head = Convolution(2, in_channels, features, kernel_size=3, act="RELU", norm=None)
        self.body = nn.Sequential(
            *[
                ResidualUnit(2, features, features, kernel_size=3, subunits=2, adn_ordering="NA",
                             act="RELU", norm="BATCH")
                for _ in range(num_res_blocks)
            ]
        )
        self.body_tail = Convolution(2, features, features, kernel_size=3, adn_ordering="N", act=None,
                                     norm="BATCH")
        self.upsampler = nn.Sequential(
            *[SubpixelUpsampleStage(features, stage) for stage in upsampling_stages(self.scale)]
        )
        self.tail = Convolution(2, features, out_channels, kernel_size=3, conv_only=True)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        shallow = self.head(x)
        deep = self.body_tail(self.body(shallow)) + shallow
        return {"sr": self.tail(self.upsampler(deep))}


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"in_channels": 1, "out_channels": 1, "scale": 2, "features": 16, "num_res_blocks": 2},
    "small": {"in_channels": 1, "out_channels": 1, "scale": 2, "features": 32, "num_res_blocks": 8},
    # Appendix E: 64 feature maps; 16 residual blocks as in the SRGAN generator that Fig. 6(a) shows.
    "base": {"in_channels": 1, "out_channels": 1, "scale": 2, "features": 64, "num_res_blocks": 16},
}

# Everything the two-stage training needs (Sec. 3.2-3.3, 4.1), per size preset.  Only the
# ``base`` numbers come from the paper: AE 64-64-32-32 filters, 256x256 input, |z_tex| = 256,
# z_str 64x64; SRGAN discriminator; UNETR ViT-B/16 (K=768, L=12, 12 heads).
TRAINING_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {
        "autoencoder": {"channels": (8, 8, 4, 4), "structure_channels": 1, "texture_dim": 16,
                        "image_size": 32},
        "discriminator": {"channels": (8, 8, 16, 16), "dense_features": 32, "pooled_size": 1},
        "vit": {"img_size": 32, "patch_size": 8, "hidden_size": 32, "mlp_dim": 64, "num_layers": 2,
                "num_heads": 2, "num_classes": 4},
    },
    "small": {
        "autoencoder": {"channels": (32, 32, 16, 16), "structure_channels": 1, "texture_dim": 128,
                        "image_size": 128},
        "discriminator": {"channels": (32, 32, 64, 64, 128, 128), "dense_features": 256, "pooled_size": 1},
        "vit": {"img_size": 128, "patch_size": 16, "hidden_size": 192, "mlp_dim": 768, "num_layers": 6,
                "num_heads": 3, "num_classes": 8},
    },
    "base": {
        "autoencoder": {"channels": (64, 64, 32, 32), "structure_channels": 1, "texture_dim": 256,
                        "image_size": 256},
        "discriminator": {"channels": (64, 64, 128, 128, 256, 256, 512, 512), "dense_features": 1024,
                          "pooled_size": 6},
        "vit": {"img_size": 256, "patch_size": 16, "hidden_size": 768, "mlp_dim": 3072, "num_layers": 12,
                "num_heads": 12, "num_classes": 8},
    },
}


@dataclass
class DisentangledTrainingModules:
    """The five networks of the method; ``autoencoder``/``vit`` are pre-trained then frozen."""

    generator: DisentangledSRGenerator
    autoencoder: SwappingAutoencoder
    ae_discriminator: SRGANDiscriminator
    sr_discriminator: SRGANDiscriminator
    vit: ViTFeatureExtractor


def build_disentangled_training_modules(
    preset: str = "small", cfg: Mapping[str, Mapping[str, Any]] | None = None
) -> DisentangledTrainingModules:
    """Build generator, swapped AE, the two discriminators and the ViT extractor.

    ``cfg`` overrides per component: keys ``"generator"``, ``"autoencoder"``, ``"discriminator"``
    (both discriminators), ``"vit"``.  Image channels follow the generator's ``out_channels``.
    """
    if preset not in PRESETS:
        raise KeyError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    cfg = dict(cfg or {})
    unknown = set(cfg) - {"generator", "autoencoder", "discriminator", "vit"}
    if unknown:
        raise KeyError(f"unknown component(s) in cfg: {sorted(unknown)}")
    gen_cfg = {**PRESETS[preset], **cfg.get("generator", {})}
    channels = int(gen_cfg["out_channels"])
    ae_cfg = {"in_channels": channels, **TRAINING_PRESETS[preset]["autoencoder"],
              **cfg.get("autoencoder", {})}
    disc_cfg = {"in_channels": channels, **TRAINING_PRESETS[preset]["discriminator"],
                **cfg.get("discriminator", {})}
    vit_cfg = {"in_channels": channels, **TRAINING_PRESETS[preset]["vit"], **cfg.get("vit", {})}
    return DisentangledTrainingModules(
        generator=DisentangledSRGenerator(**gen_cfg),
        autoencoder=SwappingAutoencoder(**ae_cfg),
        ae_discriminator=SRGANDiscriminator(**disc_cfg),
        sr_discriminator=SRGANDiscriminator(**disc_cfg),
        vit=ViTFeatureExtractor(**vit_cfg),
    )


SPECS = (
    ArchitectureSpec(
        name="disentangled_sr",
        builder=DisentangledSRGenerator,
        presets=PRESETS,
        tasks=("sr",),
        dims=2,
        paper="cnn-vit-disentangled-sr.txt",
        description="SRResNet-style 2D SR generator trained with ViT + disentangled structure/texture losses",
        extra={"training_builder": build_disentangled_training_modules, "training_presets": TRAINING_PRESETS},
    ),
)

__all__ = [
    "SPECS",
    "PRESETS",
    "TRAINING_PRESETS",
    "DisentangledSRGenerator",
    "DisentangledTrainingModules",
    "SubpixelUpsampleStage",
    "build_disentangled_training_modules",
    "normalize_scale",
    "pixel_shuffle_2d",
    "upsampling_stages",
]
