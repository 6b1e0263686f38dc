"""Swin-UNet pieces of TASC-SwinMT: encoder stages, PatchExpand, PixelShuffle heads, position FiLM.

Built from MONAI's Swin blocks (``SwinTransformerBlock``, ``PatchMergingV2``, ``compute_mask``),
``PatchEmbed`` and ``SubpixelUpsample``; sections refer to ``tasc-swinmt.txt``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from monai.networks.blocks import PatchEmbed, SubpixelUpsample
from monai.networks.nets.diffusion_model_unet import get_timestep_embedding
from monai.networks.nets.swin_unetr import PatchMergingV2, SwinTransformerBlock, compute_mask, get_window_size

from .tasc_blocks import TALA

__all__ = ["PatchExpand", "PixelShuffleHead", "PositionFiLM", "SwinStage", "TASCEncoder"]


class SwinStage(nn.Module):
    """``depth`` MONAI Swin blocks on a channel-first map (section 3.2.3: 8x8 windows, shifted windows).

    Unlike MONAI's ``BasicLayer`` the first block's shift is selectable: the paper (Table 2) uses one
    block per stage, so stages alternate plain/shifted windows (``shift_first``) to keep the
    shifted-window connectivity the paper describes.
    """

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, shift_first: bool = False,
                 mlp_ratio: float = 4.0):
        super().__init__()
        window = (window_size, window_size)
        shift = (window_size // 2, window_size // 2)
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(dim, num_heads, window, shift if (i + int(shift_first)) % 2 else (0, 0),
                                 mlp_ratio=mlp_ratio, qkv_bias=True)
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = rearrange(x, "b c h w -> b h w c")
        for blk in self.blocks:
            window, shift = get_window_size((h, w), blk.window_size, blk.shift_size)
            mask = None
            if any(s > 0 for s in shift):
                padded = [-(-n // ws) * ws for n, ws in zip((h, w), window)]
                mask = compute_mask(padded, window, shift, x.device).to(x.dtype)
            x = blk(x, mask)
        return rearrange(x, "b h w c -> b c h w")


class PatchExpand(nn.Module):
    """Swin-UNet PatchExpand (section 3.2.6): ``Linear(C -> 2C)``, rearrange to 2x size, C/2, LayerNorm."""

    def __init__(self, dim: int):
        super().__init__()
        self.expand = nn.Linear(dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(dim // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.expand(rearrange(x, "b c h w -> b h w c"))
        x = rearrange(x, "b h w (p1 p2 c) -> b (h p1) (w p2) c", p1=2, p2=2)
        return rearrange(self.norm(x), "b h w c -> b c h w")


class PixelShuffleHead(nn.Module):
    """Output head with sub-pixel upsampling (section 3.2.9).

    ``F_up1 = PS(Conv3x3(F, C->4C))``, ``F_up2 = PS(GELU(Conv3x3(F_up1, C->4C)))``, ``Conv3x3(F_up2 -> out)``.
    One x2 MONAI ``SubpixelUpsample`` (ICNR init, no blur) per factor of two of the patch size;
    GELU commutes with PixelShuffle, so it is applied after the shuffle.
    """

    def __init__(self, channels: int, out_channels: int, upscale: int = 4):
        super().__init__()
        steps = upscale.bit_length() - 1
        if 2**steps != upscale:
            raise ValueError(f"patch size must be a power of two for the PixelShuffle head, got {upscale}")
        self.ups = nn.ModuleList(
            SubpixelUpsample(2, channels, channels, scale_factor=2, apply_pad_pool=False)
            for _ in range(steps)
        )
        self.out = nn.Conv2d(channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, up in enumerate(self.ups):
            x = up(x)
            if i > 0:
                x = F.gelu(x)
        return self.out(x)


class PositionFiLM(nn.Module):
    """FiLM of the fractional slice position ``t`` (our extension for factors R > 2, not in the paper).

    Why: the paper only predicts the midpoint (t = 0.5). For R > 2 the R-1 intermediate slices are
    predicted one at a time by feeding ``t = k / R``; a sinusoidal embedding of ``t`` (MONAI
    ``get_timestep_embedding``) goes through a small MLP to per-channel ``(gamma, beta)`` applied as
    ``F * (1 + gamma) + beta`` after every decoder stage of both decoders.
    """

    def __init__(self, channels: Sequence[int], num_streams: int = 2, embed_dim: int = 32):
        super().__init__()
        self.channels = [int(c) for c in channels]
        self.num_streams = num_streams
        self.embed_dim = embed_dim
        out = 2 * num_streams * sum(self.channels)
        hidden = 2 * embed_dim
        self.mlp = nn.Sequential(nn.Linear(embed_dim, hidden), nn.SiLU(), nn.Linear(hidden, out))

    def forward(self, t: torch.Tensor) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        """``result[stream][stage] = (gamma, beta)``, each (B, C_stage, 1, 1)."""
        params = self.mlp(get_timestep_embedding(t * 1000.0, self.embed_dim).to(t.dtype))
        chunks = params.split([2 * c for _ in range(self.num_streams) for c in self.channels], dim=1)
        result: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
        for s in range(self.num_streams):
            stage = []
            for i in range(len(self.channels)):
                gamma, beta = chunks[s * len(self.channels) + i][:, :, None, None].chunk(2, dim=1)
                stage.append((gamma, beta))
            result.append(stage)
        return result


class TASCEncoder(nn.Module):
    """Shared encoder (section 3.2.7, Algorithm 1 lines 2-11).

    ``PatchEmbed`` (4x4 conv, stride 4), then per stage: Swin block(s), ``F + TALA(F)`` (section 3.2.4),
    record the skip, ``PatchMergingV2`` (all but the last stage). Returns the four skips S1..S4.
    """

    def __init__(self, in_channels: int, embed_dim: int, depths: Sequence[int], num_heads: Sequence[int],
                 window_size: int, patch_size: int, use_tala: bool = True, tala_reduction: int = 4,
                 mlp_ratio: float = 4.0):
        super().__init__()
        self.patch_embed = PatchEmbed(patch_size, in_channels, embed_dim, norm_layer=None, spatial_dims=2)
        dims = [embed_dim * 2**i for i in range(len(depths))]
        self.stages = nn.ModuleList(
            SwinStage(d, n, h, window_size, shift_first=i % 2 == 1, mlp_ratio=mlp_ratio)
            for i, (d, n, h) in enumerate(zip(dims, depths, num_heads))
        )
        self.talas = nn.ModuleList(TALA(d, tala_reduction) for d in dims) if use_tala else None
        self.merges = nn.ModuleList(PatchMergingV2(d, spatial_dims=2) for d in dims[:-1])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        skips = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if self.talas is not None:
                x = x + self.talas[i](x)
            skips.append(x)
            if i < len(self.merges):
                x = rearrange(self.merges[i](rearrange(x, "b c h w -> b h w c")), "b h w c -> b c h w")
        return skips

    def last_stage_parameters(self) -> list[nn.Parameter]:
        """Parameters of the deepest shared stage (GradNorm's ``W``)."""
        params = list(self.stages[-1].parameters())
        if self.talas is not None:
            params += list(self.talas[-1].parameters())
        return params
