"""RDST and RDST-E: residual dense Swin transformers for 2D single-image super-resolution.

Zhu, Yang & Lió, "A residual dense vision transformer for medical image super-resolution with
segmentation-based perceptual loss fine-tuning" (``shared/papers/rdst.txt``).

Network (Sec. 3, Eq. 2, Fig. 1-a)::

    F_lr = H(I_lr)                              3x3 conv head
    F_d  = F_lr + C_3x3(R^n(F_lr))              n RDSTBs + 3x3 conv, global residual
    I_sr = U_s(F_d)                             sub-pixel up-sampler

* :class:`DenseSwinBlock` (DSTB, Eq. 4, Fig. 1-c): two successive Swin layers (regular then shifted
  windows, Eq. 3) on all ``d + k*g`` densely concatenated channels, an MLP bottleneck ``d+k*g -> g``
  and concatenation with the block input.
* :class:`ResidualDenseSwinBlock` (RDSTB, Eq. 5, Fig. 1-b): three DSTBs, a 3x3 convolution for
  local feature fusion ``3g + d -> d`` and a local residual connection.
* :class:`AnisotropicSubpixelUpsample`: the sub-pixel up-sampler for an ``(sh, sw)`` factor, so the
  same network also serves SMORE-style through-plane super-resolution with ``(1, R)``/``(R, 1)``.

The Swin layers are MONAI's :class:`~monai.networks.nets.swin_unetr.BasicLayer` (two
``SwinTransformerBlock``) with 2D windows.  ``RDST`` and ``RDST-E`` differ only in the number of
RDSTBs (8 and 4, Sec. 4.3).  Deviations from the paper are listed in ``docs/architectures/rdst.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.nets.swin_unetr import BasicLayer

from .pixel_shuffle import pixel_shuffle_2d
from .registry import ArchitectureSpec

ScaleArg = int | Sequence[int]


def as_scale_pair(scale: ScaleArg) -> tuple[int, int]:
    """Normalise an ``int`` or ``(sh, sw)`` magnification to a per-axis pair of positive ints."""
    pair = (int(scale), int(scale)) if isinstance(scale, int) else tuple(int(s) for s in scale)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"scale must be a positive int or a pair (sh, sw) of positive ints, got {scale!r}")
    return pair  # type: ignore[return-value]


def upsampling_stages(scale: tuple[int, int]) -> list[tuple[int, int]]:
    """Split a per-axis factor into sub-pixel stages: powers of two as repeated x2, others in one go.

    This is the EDSR/SwinIR convention the paper's up-sampler follows (x4 = two x2 sub-pixel
    stages, x3 = one x3 stage), applied independently per axis: ``(1, 4) -> [(1, 2), (1, 2)]``.
    """

    def factors(s: int) -> list[int]:
        if s == 1:
            return []
        if s & (s - 1) == 0:  # power of two
            return [2] * (s.bit_length() - 1)
        return [s]

    fh, fw = factors(scale[0]), factors(scale[1])
    n = max(len(fh), len(fw))
    fh, fw = fh + [1] * (n - len(fh)), fw + [1] * (n - len(fw))
    return list(zip(fh, fw))


class AnisotropicSubpixelUpsample(nn.Module):
    """One sub-pixel stage: 3x3 conv to ``C*sh*sw`` channels, then the per-axis shuffle.

    MONAI's ``SubpixelUpsample`` only supports one factor for every axis; SMORE-style through-plane
    SR needs ``(1, R)``, hence this per-axis generalisation.
    """

    def __init__(self, channels: int, scale: tuple[int, int]):
        super().__init__()
        self.scale = scale
        self.conv = nn.Conv2d(channels, channels * scale[0] * scale[1], kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_shuffle_2d(self.conv(x), self.scale)


class SubpixelUpsampler(nn.Sequential):
    """The paper's Up-Sampler ``U_s`` (Eq. 2): sub-pixel stages then a 3x3 conv to the image channels."""

    def __init__(self, channels: int, out_channels: int, scale: tuple[int, int]):
        stages = [AnisotropicSubpixelUpsample(channels, s) for s in upsampling_stages(scale)]
        super().__init__(*stages, nn.Conv2d(channels, out_channels, kernel_size=3, padding=1))


class DenseSwinBlock(nn.Module):
    """DSTB (Sec. 3.1, Eq. 4): ``cat[F, B_{C->g}(S^2(F))]`` -- two Swin layers, MLP bottleneck, dense concat.

    The Swin layers run on all ``C`` incoming channels (regular then shifted windows, Eq. 3); the
    bottleneck is a token-wise linear layer + LayerNorm compressing the new features to ``g``
    channels before they are concatenated to the input, so the width grows by ``g`` per DSTB.
    """

    def __init__(
        self,
        dim: int,
        growth_rate: int,
        num_layers: int = 2,
        num_heads: int = 6,
        window_size: int = 8,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        drop_path: Sequence[float] | None = None,
        use_flash_attention: bool = True,
    ):
        super().__init__()
        self.swin = BasicLayer(
            dim=dim,
            depth=num_layers,
            num_heads=num_heads,
            window_size=(window_size, window_size),
            drop_path=list(drop_path) if drop_path is not None else [0.0] * num_layers,
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            downsample=None,
            use_flash_attention=use_flash_attention,
        )
        self.bottleneck = nn.Sequential(nn.Linear(dim, growth_rate), nn.LayerNorm(growth_rate))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.swin(x)  # (B, C, H, W) in and out
        y = self.bottleneck(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return torch.cat([x, y], dim=1)


class ResidualDenseSwinBlock(nn.Module):
    """RDSTB (Sec. 3.1, Eq. 5): ``F + LFF_{3x3}(D^3(F))`` -- dense Swin blocks + local feature fusion."""

    def __init__(
        self,
        dim: int,
        growth_rate: int,
        num_dense_blocks: int = 3,
        num_layers: int = 2,
        num_heads: int = 6,
        window_size: int = 8,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        drop_path: Sequence[float] | None = None,
        use_flash_attention: bool = True,
    ):
        super().__init__()
        drop_path = list(drop_path) if drop_path is not None else [0.0] * (num_dense_blocks * num_layers)
        self.dense_blocks = nn.Sequential(
            *(
                DenseSwinBlock(
                    dim + k * growth_rate,
                    growth_rate,
                    num_layers=num_layers,
                    num_heads=num_heads,
                    window_size=window_size,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    drop_path=drop_path[k * num_layers : (k + 1) * num_layers],
                    use_flash_attention=use_flash_attention,
                )
                for k in range(num_dense_blocks)
            )
        )
        self.local_feature_fusion = nn.Conv2d(dim + num_dense_blocks * growth_rate, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.local_feature_fusion(self.dense_blocks(x))


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad H and W at the bottom/right up to a multiple of the window (SwinIR's ``check_image_size``).

    Reflection (as SwinIR) where the image is large enough, replication otherwise (reflection
    cannot pad by more than the image size minus one).
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


class RDST(nn.Module):
    """Residual Dense Swin Transformer for 2D SISR (Sec. 3, Eq. 2).

    ``forward((B, C, H, W)) -> {"sr": (B, C_out, H*sh, W*sw)}`` for any ``H, W``: the input is
    padded to a multiple of the window and the output cropped back exactly.  ``scale`` is an int
    or a per-axis ``(sh, sw)``; ``(1, R)``/``(R, 1)`` upsample a single axis (SMORE principle).
    ``num_blocks=8`` is RDST, ``num_blocks=4`` RDST-E (Sec. 4.3).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = None,
        scale: ScaleArg = 4,
        embed_dim: int = 60,
        growth_rate: int = 30,
        num_blocks: int = 8,
        num_dense_blocks: int = 3,
        num_layers: int = 2,
        num_heads: int = 6,
        window_size: int = 8,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        use_flash_attention: bool = True,
    ):
        super().__init__()
        for k in range(num_dense_blocks):
            if (embed_dim + k * growth_rate) % num_heads:
                raise ValueError(
                    f"num_heads={num_heads} must divide every DSTB width embed_dim + k*growth_rate "
                    f"(got {embed_dim + k * growth_rate} for k={k})"
                )
        self.in_channels = in_channels
        self.out_channels = out_channels or in_channels
        self.scale = as_scale_pair(scale)
        self.window_size = window_size

        self.head = nn.Conv2d(in_channels, embed_dim, 3, padding=1)
        # SwinIR's patch embedding/un-embedding norms (omitted from Fig. 1 "for a brief illustration").
        self.embed_norm = nn.LayerNorm(embed_dim)
        layers_per_block = num_dense_blocks * num_layers
        rates = torch.linspace(0, drop_path_rate, num_blocks * layers_per_block).tolist()
        self.blocks = nn.Sequential(
            *(
                ResidualDenseSwinBlock(
                    embed_dim,
                    growth_rate,
                    num_dense_blocks=num_dense_blocks,
                    num_layers=num_layers,
                    num_heads=num_heads,
                    window_size=window_size,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    drop_path=rates[i * layers_per_block : (i + 1) * layers_per_block],
                    use_flash_attention=use_flash_attention,
                )
                for i in range(num_blocks)
            )
        )
        self.body_norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, padding=1)
        self.upsampler = SubpixelUpsampler(embed_dim, self.out_channels, self.scale)

    @staticmethod
    def _channel_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        f_lr = self.head(pad_to_multiple(x, self.window_size))
        deep = self._channel_norm(self.embed_norm, f_lr)
        deep = self._channel_norm(self.body_norm, self.blocks(deep))
        f_d = f_lr + self.conv_after_body(deep)  # global residual, Eq. 2
        sr = self.upsampler(f_d)
        return {"sr": sr[..., : h * self.scale[0], : w * self.scale[1]]}


_COMMON = {"in_channels": 1, "scale": 4, "num_dense_blocks": 3, "num_layers": 2, "mlp_ratio": 2.0}
_TINY = {**_COMMON, "embed_dim": 12, "growth_rate": 6, "num_heads": 2, "window_size": 4}
_SMALL = {**_COMMON, "embed_dim": 48, "growth_rate": 24, "num_heads": 6, "window_size": 8}
_BASE = {**_COMMON, "embed_dim": 60, "growth_rate": 30, "num_heads": 6, "window_size": 8}

SPECS = (
    ArchitectureSpec(
        name="rdst",
        builder=RDST,
        presets={
            "tiny": {**_TINY, "num_blocks": 2},
            "small": {**_SMALL, "num_blocks": 4},
            "base": {**_BASE, "num_blocks": 8},
        },
        tasks=("sr",),
        dims=2,
        paper="rdst.txt",
        description="Residual Dense Swin Transformer: 2D SISR, 8 RDSTBs of dense Swin blocks (4.4 M params)",
        extra={"paper_params_base": 4.40e6},
    ),
    ArchitectureSpec(
        name="rdst_e",
        builder=RDST,
        presets={
            "tiny": {**_TINY, "num_blocks": 1},
            "small": {**_SMALL, "num_blocks": 2},
            "base": {**_BASE, "num_blocks": 4},
        },
        tasks=("sr",),
        dims=2,
        paper="rdst.txt",
        description="RDST-E: the efficient RDST with 4 RDSTBs (2.35 M params)",
        extra={"paper_params_base": 2.35e6},
    ),
)

__all__ = [
    "RDST",
    "SPECS",
    "AnisotropicSubpixelUpsample",
    "DenseSwinBlock",
    "ResidualDenseSwinBlock",
    "SubpixelUpsampler",
    "as_scale_pair",
    "pad_to_multiple",
    "pixel_shuffle_2d",
    "upsampling_stages",
]
