"""The shared Swin encoder of SwinSR-UNETR (``shared/papers/swinsr-unetr.txt``, Sec. 3.1).

The paper modifies the Swin UNETR encoder (Hatamizadeh et al. 2022): the input is already low
resolution, so the 2x patch embedding is *removed* and the volume enters the Swin stages right
after a shallow residual convolution.  Stage 1 therefore attends at the full LR resolution.  Both
decoders receive skip connections from every level.

Levels produced (``F`` = ``feature_size``, ``X`` = padded LR size, ``n`` = number of stages)::

    patch_embedding=False (paper)          patch_embedding=True (Swin UNETR, the paper's ablation)
    skip 0: stem(x)            F,  X       skip 0: encoder1(x)               F,   X
    skip 1: block(stage1)      2F, X/2     skip 1: encoder2(patch_embed(x))  F,   X/2
    ...                                    skip 2: block(stage1)             2F,  X/4
    skip n-1: stage n-1 (raw)              ...
    bottleneck: block(stage n) 2^n F       bottleneck: block(stage n)        2^n F, X/2^(n+1)

"block" is MONAI's residual :class:`UnetrBasicBlock` (Swin UNETR's ``encoder2..4`` and
``encoder10``); the deepest skip is passed raw, as in Swin UNETR.  Swin stages are MONAI's
:class:`~monai.networks.nets.swin_unetr.BasicLayer` (alternating regular / shifted-window blocks)
ending with :class:`PatchMergingV2`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import PatchEmbed, UnetrBasicBlock
from monai.networks.nets.swin_unetr import BasicLayer, PatchMergingV2


def channel_layer_norm(x: torch.Tensor) -> torch.Tensor:
    """Parameter-free layer norm over channels of a ``(B, C, X, Y, Z)`` map (Swin UNETR ``proj_out``)."""
    return F.layer_norm(x.movedim(1, -1), x.shape[1:2]).movedim(-1, 1)


class SwinSREncoder(nn.Module):
    """Residual conv stem (or patch embedding) + Swin stages + per-level skip refinement."""

    def __init__(
        self,
        in_channels: int,
        feature_size: int,
        depths: Sequence[int],
        num_heads: Sequence[int],
        window_size: Sequence[int],
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        drop_path: float = 0.0,
        patch_embedding: bool = False,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_name: str | tuple = "instance",
        normalize: bool = True,
    ):
        super().__init__()
        if len(depths) != len(num_heads) or len(depths) < 2:
            raise ValueError(f"depths {depths} and num_heads {num_heads} must have the same length >= 2")
        self.num_stages = len(depths)
        self.patch_embedding = patch_embedding
        self.normalize = normalize
        fs = feature_size

        def res_block(in_ch: int, out_ch: int) -> UnetrBasicBlock:
            return UnetrBasicBlock(3, in_ch, out_ch, kernel_size=3, stride=1, norm_name=norm_name, res_block=True)

        # Sec. 3.1: a shallow residual convolution replaces the patch embedding.  With the ablation
        # flag it is Swin UNETR's full-resolution ``encoder1`` and the patch embedding feeds Swin.
        self.stem = res_block(in_channels, fs)
        if patch_embedding:
            self.patch_embed = PatchEmbed(patch_size=2, in_chans=in_channels, embed_dim=fs, norm_layer=None,
                                          spatial_dims=3)
            self.embed_skip = res_block(fs, fs)
        self.token_dropout = nn.Dropout(dropout)  # Swin UNETR's ``pos_drop`` on the stage-1 tokens

        total = sum(depths)  # stochastic depth grows linearly over all blocks (Swin UNETR)
        rates = [drop_path * i / max(total - 1, 1) for i in range(total)]
        self.stages = nn.ModuleList(
            BasicLayer(
                dim=fs * 2**i,
                depth=depths[i],
                num_heads=num_heads[i],
                window_size=tuple(window_size),
                drop_path=rates[sum(depths[:i]) : sum(depths[: i + 1])],
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop=dropout,
                attn_drop=attn_dropout,
                norm_layer=nn.LayerNorm,
                downsample=PatchMergingV2,
            )
            for i in range(self.num_stages)
        )
        # Stage i (1-based) outputs 2^i F channels; stages 1..n-2 get a residual block, stage n-1 is
        # used raw and stage n is the bottleneck (Swin UNETR encoder3/encoder4, hidden[3], encoder10).
        self.skip_blocks = nn.ModuleList(res_block(fs * 2**i, fs * 2**i) for i in range(1, self.num_stages - 1))
        self.bottleneck = res_block(fs * 2**self.num_stages, fs * 2**self.num_stages)

        lead = [fs, fs] if patch_embedding else [fs]
        self.level_channels: tuple[int, ...] = tuple(lead + [fs * 2**i for i in range(1, self.num_stages + 1)])

    @property
    def size_multiple(self) -> int:
        """Each padded input size must be a multiple of this (one halving per merge / embedding)."""
        return 2 ** (self.num_stages + int(self.patch_embedding))

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return channel_layer_norm(x) if self.normalize else x

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the skips from the finest level to the bottleneck (last entry)."""
        stem = self.stem(x)
        if self.patch_embedding:
            tokens = self.patch_embed(x)
            skips = [stem, self.embed_skip(self._norm(tokens))]
        else:
            tokens = stem
            skips = [stem]
        tokens = self.token_dropout(tokens)
        hidden = []
        for stage in self.stages:
            tokens = stage(tokens.contiguous())
            hidden.append(self._norm(tokens))
        skips += [block(h) for block, h in zip(self.skip_blocks, hidden[:-2])]
        skips += [hidden[-2], self.bottleneck(hidden[-1])]
        return skips


__all__ = ["SwinSREncoder", "channel_layer_norm"]
