"""SwinSR-UNETR: joint 3D super-resolution and segmentation with a shared Swin encoder.

Vianto, Yeom, Lee & Yang, "SwinSR-UNETR: Multi-Task Learning of Brain Tumor Segmentation and Image
Super-Resolution via Shared Swin Transformer Encoding" (``shared/papers/swinsr-unetr.txt``).

Network (Sec. 3, Fig. 1)::

    LR (B, C_in, X, Y, Z) --pad--> SwinSREncoder (Sec. 3.1: residual conv stem, no patch embedding,
        4 Swin stages) --skips--> PartiallySharedDecoder (Sec. 3.2: 2 shared RCRUs, then a
        segmentation branch and an SR branch) --crop--> {"sr", "seg"[, "sr_log_var"]} on the HR grid

* Magnification is per axis, ``scale=(sx, sy, sz)``: the paper's isotropic ``(2, 2, 2)``
  (48^3 -> 96^3) or a through-plane ``(1, 1, R)``.  LR voxel ``i`` maps to HR voxels
  ``i*R .. i*R+R-1``; the segmentation is predicted on the same HR grid.
* Any input size: the input is replicate-padded at the far end of each axis to a multiple of the
  total down-sampling factor, and so that the bottleneck holds at least two voxels (instance norm
  of one voxel is undefined; PyTorch refuses it in training).  The LR-grid decoder features are
  cropped back to the input extent before the HR heads: outputs are exactly ``size * scale``.
  Window alignment is MONAI's (``SwinTransformerBlock`` pads windows internally, as Swin does).
* ``aleatoric=True`` adds a per-voxel log-variance of the SR output (Kendall & Gal 2017), used by
  :class:`JointSRSegLib.losses.swinsr_unetr.SwinSRUNETRLoss`.
* ``dropout`` is active in every Swin block (projection + MLP) and in the HR refinement blocks, so
  MC-dropout can sample the whole network; ``drop_path`` is the stochastic-depth rate.

Deviations from the paper are documented in ``docs/architectures/swinsr_unetr.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.utils import ensure_tuple_rep

from .registry import ArchitectureSpec
from .swinsr_decoder import PartiallySharedDecoder
from .swinsr_encoder import SwinSREncoder
from .swinsr_subpixel import as_scale_triple


def padded_shape(shape: Sequence[int], multiple: int) -> tuple[int, ...]:
    """Smallest shape >= ``shape`` divisible by ``multiple`` whose bottleneck holds >= 2 voxels."""
    padded = [max(multiple, math.ceil(s / multiple) * multiple) for s in shape]
    if all(p == multiple for p in padded):  # 1 voxel at the bottleneck: grow the longest axis
        longest = max(range(len(shape)), key=lambda i: shape[i])
        padded[longest] += multiple
    return tuple(padded)


def cubic_upsample(x: torch.Tensor, scale: Sequence[int], a: float = -0.5) -> torch.Tensor:
    """Keys cubic convolution along every axis magnified by ``scale`` (``(B, C, X, Y, Z)``).

    Output voxel ``o`` samples input coordinate ``(o + 0.5) / R - 0.5`` (``align_corners=False``: LR
    voxel ``i`` sits at the centre of HR voxels ``iR .. iR+R-1``); taps beyond the ends are clamped.
    """
    for dim, factor in zip((2, 3, 4), scale):
        if factor == 1:
            continue
        n = x.shape[dim]
        u = (torch.arange(n * factor, dtype=x.dtype, device=x.device) + 0.5) / factor - 0.5
        base = torch.floor(u)
        frac = u - base
        out = 0
        for tap in (-1, 0, 1, 2):
            d = (frac - tap).abs()
            w = torch.where(d <= 1, (a + 2) * d**3 - (a + 3) * d**2 + 1,
                            torch.where(d < 2, a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a, torch.zeros_like(d)))
            index = (base + tap).clamp(0, n - 1).long()
            shape = [1] * x.ndim
            shape[dim] = -1
            out = out + x.index_select(dim, index) * w.view(shape)
        x = out
    return x


class SwinSRUNETR(nn.Module):
    """Shared Swin encoder + partially shared decoder for joint SR and segmentation (Sec. 3)."""

    def __init__(
        self,
        in_channels: int = 4,
        seg_channels: int = 4,
        scale: int | Sequence[int] = (2, 2, 2),
        feature_size: int = 48,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int | Sequence[int] = 7,
        dropout: float = 0.0,
        attn_dropout: float = 0.0,
        drop_path: float = 0.0,
        patch_embedding: bool = False,
        aleatoric: bool = False,
        hr_channels: int | None = None,
        mlp_ratio: float = 4.0,
        norm_name: str | tuple = "instance",
        normalize: bool = True,
        log_var_bound: float = 10.0,
        global_residual: bool = False,
        residual_interpolation: str = "linear",
    ):
        """
        Args:
            in_channels: image channels ``C_in`` (4 MRI sequences in BraTS); also the SR output channels.
            seg_channels: segmentation classes ``C_seg`` including background (softmax logits).
            scale: per-axis magnification ``(sx, sy, sz)`` or one int for all axes.
            feature_size: Swin embedding width ``F`` (stage i works with ``2^(i-1) F`` channels).
            depths / num_heads: Swin blocks and attention heads per stage.
            window_size: attention window (int or per-axis triple).
            dropout: dropout in Swin blocks and HR refinement blocks (MC-dropout knob).
            attn_dropout: dropout on attention weights.
            drop_path: maximal stochastic-depth rate (linearly increasing over blocks).
            patch_embedding: restore Swin UNETR's 2x patch embedding (the paper's ablation, Sec. 3.1).
            aleatoric: also predict the per-voxel SR log-variance ``"sr_log_var"``.
            hr_channels: width of the HR-grid heads (default ``feature_size``); smaller is cheaper.
            log_var_bound: the log-variance is soft-bounded to ``(-bound, bound)``.
            global_residual: add the input, linearly interpolated onto the HR grid, to ``"sr"`` (the
                network then predicts a residual over linear interpolation; the SR output convolution is
                zero-initialised, so training starts from linear interpolation).  Not in the paper
                (default False); it lets a short CPU training beat classical interpolation.
            residual_interpolation: the interpolation of that residual base: ``"linear"`` (trilinear) or
                ``"cubic"`` (Keys cubic convolution, a = -0.5, along each magnified axis).
        """
        super().__init__()
        self.in_channels = in_channels
        self.seg_channels = seg_channels
        self.scale = as_scale_triple(scale)
        self.aleatoric = aleatoric
        self.global_residual = bool(global_residual)
        if residual_interpolation not in ("linear", "cubic"):
            raise ValueError(f"residual_interpolation must be 'linear' or 'cubic', got {residual_interpolation!r}")
        self.residual_interpolation = residual_interpolation
        self.encoder = SwinSREncoder(
            in_channels=in_channels,
            feature_size=feature_size,
            depths=depths,
            num_heads=num_heads,
            window_size=ensure_tuple_rep(window_size, 3),
            dropout=dropout,
            attn_dropout=attn_dropout,
            drop_path=drop_path,
            patch_embedding=patch_embedding,
            mlp_ratio=mlp_ratio,
            norm_name=norm_name,
            normalize=normalize,
        )
        self.decoder = PartiallySharedDecoder(
            level_channels=self.encoder.level_channels,
            in_channels=in_channels,
            seg_channels=seg_channels,
            scale=self.scale,
            hr_channels=hr_channels or feature_size,
            norm_name=norm_name,
            dropout=dropout,
            aleatoric=aleatoric,
            log_var_bound=log_var_bound,
        )
        if self.global_residual:  # start exactly at linear interpolation; the network learns the residual
            nn.init.zeros_(self.decoder.sr_head.out.conv.conv.weight)
            nn.init.zeros_(self.decoder.sr_head.out.conv.conv.bias)

    def output_shape(self, spatial_shape: Sequence[int]) -> tuple[int, int, int]:
        """HR spatial shape produced for an LR input of ``spatial_shape``."""
        return tuple(int(s) * r for s, r in zip(spatial_shape, self.scale))  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, C_in, X, Y, Z)`` -> ``{"sr": (B, C_in, sx X, sy Y, sz Z), "seg": (B, C_seg, ...)}``
        plus ``"sr_log_var"`` (same shape as ``"sr"``) when ``aleatoric``."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, {self.in_channels}, X, Y, Z), got {tuple(x.shape)}")
        shape = tuple(x.shape[2:])
        lr = x
        padded = padded_shape(shape, self.encoder.size_multiple)
        pads = [p - s for s, p in zip(shape, padded)]
        if any(pads):
            x = F.pad(x, (0, pads[2], 0, pads[1], 0, pads[0]), mode="replicate")
        # Far-end padding + cropping the LR features keeps LR voxel i -> HR voxels i*R .. i*R+R-1.
        out = self.decoder(self.encoder(x), lr_shape=shape)
        if self.global_residual:
            # align_corners=False puts LR voxel i at the centre of HR voxels i*R .. i*R+R-1 (the
            # subdivided grid of the sr protocol), replicating at the ends.
            if self.residual_interpolation == "cubic":
                base = cubic_upsample(lr, self.scale)
            else:
                base = F.interpolate(lr, size=out["sr"].shape[2:], mode="trilinear", align_corners=False)
            out["sr"] = out["sr"] + base
        return out


_BASE = {
    "in_channels": 4,
    "seg_channels": 4,
    "scale": (2, 2, 2),
    "feature_size": 48,
    "depths": (2, 2, 2, 2),
    "num_heads": (3, 6, 12, 24),
    "window_size": 7,
}
_SMALL = {**_BASE, "feature_size": 24, "window_size": 5, "hr_channels": 12}
_TINY = {**_BASE, "feature_size": 4, "num_heads": (1, 1, 2, 4), "window_size": 3, "hr_channels": 4}

SPECS = (
    ArchitectureSpec(
        name="swinsr_unetr",
        builder=SwinSRUNETR,
        presets={"tiny": _TINY, "small": _SMALL, "base": _BASE},
        tasks=("sr", "seg"),
        dims=3,
        paper="swinsr-unetr.txt",
        description="Swin UNETR without patch embedding, shared encoder, 2 shared RCRUs, SR + seg branches",
        extra={"uncertainty": ("aleatoric", "mc_dropout"), "paper_params_base": None},
    ),
)

__all__ = ["SPECS", "SwinSRUNETR", "cubic_upsample", "padded_shape"]
