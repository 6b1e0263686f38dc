"""TASC-SwinMT's three collaboration modules: TALA, MSTAF and CTCI.

Sun, Yang & Bao, "TASC-SwinMT: Task-Adaptive Synergistic Cross-Task Swin Multi-Task Framework for CT and
MRI Image Interpolation and Segmentation", Tomography 12(6):80, 2026 (``tasc-swinmt.txt``).

* :class:`TALA`  -- Task-Aware Lightweight Adapter, section 3.2.1 (used residually, section 3.2.4).
* :class:`MSTAF` -- Multi-Scale Task Alignment Fusion, section 3.2.2 (one per skip fusion).
* :class:`CTCI`  -- Cross-Task Collaborative Interaction, section 3.2.5 (between the decoders).

All FFTs use ``norm="ortho"`` and run in float32 (half-precision FFTs only exist for powers of two on
CUDA); the deviations from the printed equations are listed in docs/architectures/tasc_swinmt.md.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from monai.networks.blocks import ChannelSELayer

__all__ = ["CTCI", "MSTAF", "TALA"]


def _fft2(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2D FFT over the last two axes, always in float32 (see module docstring)."""
    return torch.fft.fft2(x.float(), norm="ortho")


class TALA(nn.Module):
    """Task-Aware Lightweight Adapter (section 3.2.1, Figure 2).

    Why: the shared encoder's features are task-agnostic and local; TALA adds a cheap local
    dual-bottleneck branch and a global FFT-magnitude branch, fuses them (concat-BN-SiLU-1x1) and
    scales the result with a parameter-free channel gate ``sigmoid(SiLU(GAP(F_in)))`` (step 4).
    Returns ``F_fusion * alpha``; the caller adds it to its input (``F_out = F_tala + F_mlp``, 3.2.4).
    """

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        mid = max(1, channels // reduction)
        # Step 1: spatial dual bottleneck.
        self.down = nn.Conv2d(channels, mid, 1, bias=False)
        self.main = nn.Conv2d(mid, mid, 1, bias=False)
        self.aux = nn.Conv2d(mid, mid, 3, padding=1, bias=False)
        # Step 3: fusion of the spatial (mid) and frequency (C) channels.
        self.norm = nn.BatchNorm2d(mid + channels)
        self.act = nn.SiLU()
        self.fuse = nn.Conv2d(mid + channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        down = self.down(x)
        spatial = self.main(down) + self.aux(down)  # F_spatial = F_main + F_aux
        freq = F.gelu(_fft2(x).abs()).to(x.dtype)  # F_freq = GELU(|FFT2(F_in)|)
        fusion = self.fuse(self.act(self.norm(torch.cat([spatial, freq], dim=1))))
        alpha = torch.sigmoid(F.silu(F.adaptive_avg_pool2d(x, 1)))  # alpha_tala, (B, C, 1, 1)
        return fusion * alpha


class MSTAF(nn.Module):
    """Multi-Scale Task Alignment Fusion (section 3.2.2, Figure 3).

    Why: decoder (upsampled) and encoder (skip) features differ in distribution and alignment; MSTAF
    lets each attend to the other globally, mixes 1/3/5 receptive fields, re-weights the spectrum and
    fuses with a learned two-way gate. The paper's ``F_inter``/``F_seg`` are the two streams it fuses:
    in the decoder these are ``f_dec`` and ``f_skip`` (Algorithm 1 lines 17/20, "decoder upsampling
    feature f_dec ... skip feature f_skip").

    Faithful: bidirectional multi-head cross attention (``A1``: dec queries skip, ``A2``: skip queries
    dec) with the paper's ``W_q`` / ``W_kv`` projections and no output projection (``Conv1x1(Concat(A1,
    A2))`` plays that role; MONAI's ``CrossAttentionBlock`` would add one per direction), parallel
    1x1/3x3/5x5 convs + 1x1 fusion, magnitude-only 1x1 spectral filter with the phase kept, gate
    ``Softmax(W_soft SiLU(GAP(Conv1x1(F_seg))) + b_soft)``, residual 1x1 convs giving ``Out_int`` and
    ``Out_seg``.

    Deviation: as printed, ``F_freq(inter) = F_freq(seg) = F_freq`` so ``W1 F + W2 F = F`` and the gate
    cancels itself (its parameters would never learn). We give each gated term its own spectral
    filter (``M_k = Conv1x1_k(M)``), so ``W1``/``W2`` choose between two different frequency
    enhancements.
    """

    def __init__(self, channels: int, num_heads: int = 1, kernel_sizes: tuple[int, ...] = (1, 3, 5)):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.q1, self.kv1 = nn.Linear(channels, channels), nn.Linear(channels, 2 * channels)
        self.q2, self.kv2 = nn.Linear(channels, channels), nn.Linear(channels, 2 * channels)
        self.attn_fuse = nn.Conv2d(2 * channels, channels, 1)
        self.multi_scale = nn.ModuleList(
            nn.Conv2d(channels, channels, k, padding=k // 2) for k in kernel_sizes
        )
        self.multi_fuse = nn.Conv2d(len(kernel_sizes) * channels, channels, 1)
        self.spectral = nn.Conv2d(channels, 2 * channels, 1)  # two magnitude filters, see class docstring
        self.gate_conv = nn.Conv2d(channels, channels, 1)
        self.gate_fc = nn.Linear(channels, 2)  # W_soft, b_soft
        self.res_dec = nn.Conv2d(channels, channels, 1)
        self.res_skip = nn.Conv2d(channels, channels, 1)

    def _attend(
        self, q: nn.Linear, kv: nn.Linear, queries: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        """``Softmax(Q K^T / sqrt(d_k)) V`` over all tokens (global, multi-head); tokens (B, N, C)."""
        split = "b n (h d) -> b h n d"
        k, v = kv(context).chunk(2, dim=-1)
        q, k, v = (rearrange(z, split, h=self.num_heads) for z in (q(queries), k, v))
        return rearrange(F.scaled_dot_product_attention(q, k, v), "b h n d -> b n (h d)")

    def gate_weights(self, f_skip: torch.Tensor) -> torch.Tensor:
        """``(W1, W2)`` per sample, shape (B, 2), rows summing to one."""
        g = F.silu(F.adaptive_avg_pool2d(self.gate_conv(f_skip), 1).flatten(1))
        return torch.softmax(self.gate_fc(g), dim=1)

    def frequency_branches(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two spectrally re-weighted copies of ``f``: ``iFFT(Conv1x1_k(|FFT f|) e^{j angle(FFT f)})``."""
        spec = torch.fft.rfft2(f.float(), norm="ortho")
        mag = spec.abs()
        phase = spec / mag.clamp_min(1e-8)  # e^{jP} without atan2's undefined gradient at 0
        new_mag = self.spectral(mag)
        h, w = f.shape[-2:]
        m1, m2 = new_mag.chunk(2, dim=1)
        out1 = torch.fft.irfft2(m1 * phase, s=(h, w), norm="ortho").to(f.dtype)
        out2 = torch.fft.irfft2(m2 * phase, s=(h, w), norm="ortho").to(f.dtype)
        return out1, out2

    def forward(self, f_dec: torch.Tensor, f_skip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w = f_dec.shape
        dec_tokens = f_dec.flatten(2).transpose(1, 2)
        skip_tokens = f_skip.flatten(2).transpose(1, 2)
        a1 = self._attend(self.q1, self.kv1, dec_tokens, skip_tokens)
        a2 = self._attend(self.q2, self.kv2, skip_tokens, dec_tokens)
        attn = torch.cat([a1, a2], dim=2).transpose(1, 2).reshape(b, 2 * c, h, w)
        f_att = self.attn_fuse(attn)
        f_multi = self.multi_fuse(torch.cat([conv(f_att) for conv in self.multi_scale], dim=1))
        freq_dec, freq_skip = self.frequency_branches(f_multi)
        weights = self.gate_weights(f_skip)[:, :, None, None, None]
        fusion = weights[:, 0] * freq_dec + weights[:, 1] * freq_skip
        return fusion + self.res_dec(f_dec), fusion + self.res_skip(f_skip)


class CTCI(nn.Module):
    """Cross-Task Collaborative Interaction (section 3.2.5, Figure 4).

    Why: the interpolation and segmentation decoders should inform each other after every stage.
    ``X_s`` = cascaded dilated 3x3 convs (d = 1, 2, 3) on ``F_interp``; ``X_t`` = zero-lag
    cross-correlation ``F_interp * Conv1x1(F_seg)``; ``F_align`` = magnitude of their cross-power
    spectrum; BN + channel attention (MONAI squeeze-excitation); ``F_cat = F_ca * F_align``; gate
    ``G = sigmoid(GELU(Conv1x1(F_cat)))``; ``F_gate = G * F_align``; one 1x1 conv gives both outputs.

    Deviations: ``F_align`` is ``log1p(|.|)`` -- the raw cross-power magnitude grows with H*W (its DC
    term is ``H W mean(X_s) mean(X_t)``) and would swamp the decoder features; the channel-attention
    descriptor is pooled from ``F_align`` and re-weights ``F_bn`` (after training-mode BN every
    channel's spatial mean is just BN's shift, so squeezing ``F_bn`` itself gives the excitation no
    input and its first layer no gradient); and the outputs are added to the inputs (residual)
    because the frequency-coordinate map alone carries no spatial layout to decode an image from.
    """

    def __init__(self, channels: int, dilations: tuple[int, ...] = (1, 2, 3), se_reduction: int = 4):
        super().__init__()
        layers: list[nn.Module] = []
        for d in dilations:
            layers += [nn.Conv2d(channels, channels, 3, padding=d, dilation=d), nn.SiLU()]
        self.dilated = nn.Sequential(*layers)
        self.corr_proj = nn.Conv2d(channels, channels, 1)
        self.norm = nn.BatchNorm2d(channels)
        r = min(se_reduction, channels)
        self.channel_attention = ChannelSELayer(2, channels, r=r, acti_type_1="swish")
        self.gate = nn.Conv2d(channels, channels, 1)
        self.out = nn.Conv2d(channels, 2 * channels, 1)

    def alignment(self, f_interp: torch.Tensor, f_seg: torch.Tensor) -> torch.Tensor:
        """``F_align = log1p |FFT(X_s) * conj(FFT(X_t))|`` in frequency coordinates, (B, C, H, W)."""
        x_s = self.dilated(f_interp)
        x_t = f_interp * self.corr_proj(f_seg)
        cross = _fft2(x_s) * torch.conj(_fft2(x_t))
        return torch.log1p(cross.abs()).to(f_interp.dtype)

    def forward(self, f_interp: torch.Tensor, f_seg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f_align = self.alignment(f_interp, f_seg)
        se = self.channel_attention  # MONAI squeeze-excitation: squeeze F_align, excite F_bn
        f_ca = self.norm(f_align) * se.fc(se.avg_pool(f_align).flatten(1))[:, :, None, None]
        g = torch.sigmoid(F.gelu(self.gate(f_ca * f_align)))
        d_interp, d_seg = self.out(g * f_align).chunk(2, dim=1)
        return f_interp + d_interp, f_seg + d_seg
