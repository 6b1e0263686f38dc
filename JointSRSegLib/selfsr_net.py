"""Networks for self-supervised through-plane SR (:mod:`JointSRSegLib.selfsr`).

Both networks map a 2D image whose *width* axis is low-resolution by ``R`` to ``R`` times the
width, ``(B, C, H, W) -> (B, C, H, W * R)``, with LR pixel ``w`` producing HR pixels
``wR .. wR + R - 1`` (the per-axis sub-pixel shuffle of :mod:`JointSRSegLib.models.rdst`).
They predict a *residual* over a fixed cubic interpolation along the width axis placed exactly
on the protocol's positions, so an untrained network already equals a classical cubic
interpolation and the short self-training only has to learn the correction (deblurring for
the sr protocol, edge-aware in-betweening for interp).

* ``cnn`` (default): an EDSR-style compact residual CNN (MONAI ``Convolution`` /
  ``ResidualUnit`` blocks, no normalisation) that runs at LR width, then one ``(1, R)``
  sub-pixel stage.  Chosen because it trains fastest per CPU second (docs/selfsr.md).
* ``rdst``: the model zoo's RDST ``tiny`` preset with an anisotropic ``(1, R)`` scale.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
from monai.networks.blocks import Convolution, ResidualUnit

from .models import build
from .models.rdst import AnisotropicSubpixelUpsample

NETWORKS = ("cnn", "rdst")
CNN_DEFAULTS = {"features": 32, "blocks": 6}


def keys_cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys' cubic convolution kernel (Catmull-Rom for ``a = -0.5``)."""
    x = np.abs(x)
    out = np.zeros_like(x)
    near, far = x <= 1, (x > 1) & (x < 2)
    out[near] = (a + 2) * x[near] ** 3 - (a + 3) * x[near] ** 2 + 1
    out[far] = a * x[far] ** 3 - 5 * a * x[far] ** 2 + 8 * a * x[far] - 4 * a
    return out


def output_positions(n_lr: int, protocol: str, factor: int) -> np.ndarray:
    """LR coordinates of the ``n_lr * R`` network outputs along the upsampled axis.

    sr: output ``iR + r`` is the ``r``-th sub-slice of slab ``i``, at ``i + (2r + 1 - R) / 2R``
    (``subdivide_grid``); interp: output ``j`` is at ``j / R`` (``insert_grid``; the last
    ``R - 1`` outputs lie beyond the last LR slice and are cropped by the caller).
    """
    j = np.arange(n_lr * factor, dtype=float)
    if protocol == "sr":
        return (j + 0.5) / factor - 0.5
    return j / factor


def cubic_matrix(n_lr: int, protocol: str, factor: int) -> np.ndarray:
    """Matrix ``(n_lr R, n_lr)`` of cubic weights at :func:`output_positions`, edges replicated."""
    pos = output_positions(n_lr, protocol, factor)
    base = np.floor(pos).astype(int)
    m = np.zeros((len(pos), n_lr))
    for offset in (-1, 0, 1, 2):
        taps = base + offset
        w = keys_cubic(pos - taps)
        np.add.at(m, (np.arange(len(pos)), np.clip(taps, 0, n_lr - 1)), w)
    return m / m.sum(axis=1, keepdims=True)


class CubicBase(nn.Module):
    """Fixed cubic upsampling along the last axis (cached matrix per width)."""

    def __init__(self, protocol: str, factor: int):
        super().__init__()
        self.protocol, self.factor = protocol, factor
        self._cache: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.shape[-1], x.device, x.dtype)
        if key not in self._cache:
            m = cubic_matrix(x.shape[-1], self.protocol, self.factor)
            self._cache[key] = torch.as_tensor(m.T, dtype=x.dtype, device=x.device).contiguous()
        return x @ self._cache[key]


class CompactSRNet(nn.Module):
    """EDSR-like residual CNN at LR width + one ``(1, R)`` sub-pixel stage + cubic global skip."""

    def __init__(self, channels: int, factor: int, protocol: str, features: int = 32, blocks: int = 6):
        super().__init__()
        self.base = CubicBase(protocol, factor)
        self.head = Convolution(2, channels, features, conv_only=True)
        self.body = nn.Sequential(
            *(
                ResidualUnit(2, features, features, subunits=2, act="RELU", norm=None, last_conv_only=True)
                for _ in range(blocks)
            ),
            Convolution(2, features, features, conv_only=True),
        )
        self.up = AnisotropicSubpixelUpsample(features, (1, factor))
        self.tail = Convolution(2, features, channels, conv_only=True)
        nn.init.zeros_(self.tail.conv.weight)  # start exactly at the cubic interpolation
        nn.init.zeros_(self.tail.conv.bias)
        self.trunk_dtype: torch.dtype | None = None  # set by inference: the residual in bfloat16 (base stays fp32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = self.base(x)
        dtype, enabled = self.trunk_dtype or torch.bfloat16, self.trunk_dtype is not None
        with torch.autocast(x.device.type, dtype=dtype, enabled=enabled):
            f = self.head(x)
            f = f + self.body(f)
            residual = self.tail(self.up(f))
        return base + residual.float()


class RDSTResidual(nn.Module):
    """The zoo's RDST (``tiny``) with a ``(1, R)`` scale, predicting a residual over cubic."""

    def __init__(self, channels: int, factor: int, protocol: str, preset: str = "tiny"):
        super().__init__()
        self.base = CubicBase(protocol, factor)
        self.net = build("rdst", preset=preset, in_channels=channels, scale=(1, factor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.net(x)["sr"]


def build_network(name: str, channels: int, factor: int, protocol: str, **options) -> tuple[nn.Module, dict]:
    """Instantiate a self-SR network and return it with the configuration recorded in the report."""
    if name == "cnn":
        cfg = {**CNN_DEFAULTS, **options}
        net = CompactSRNet(channels, factor, protocol, **cfg)
    elif name == "rdst":
        cfg = {"preset": "tiny", **options}
        net = RDSTResidual(channels, factor, protocol, **cfg)
    else:
        raise ValueError(f"unknown self-SR network {name!r}; choose from {', '.join(NETWORKS)}")
    params = sum(p.numel() for p in net.parameters())
    return net, {"name": name, **cfg, "channels": channels, "scale": [1, factor], "parameters": int(params)}


def fast_inference_dtype(device: torch.device) -> torch.dtype | None:
    """bfloat16 for the residual trunk where the hardware computes it natively (CUDA with bf16, CPUs with
    AVX512-BF16 or AMX), else None (float32).  Measured on this project's 2-core AVX512-BF16 CPU: 2.3x
    faster, mean |difference| 4e-4 of the intensity range (docs/selfsr.md)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        cpu = torch.cpu
        native = getattr(cpu, "_is_avx512_bf16_supported", lambda: False)() or getattr(
            cpu, "_is_amx_tile_supported", lambda: False)()
        return torch.bfloat16 if native else None
    return None


def cosine_lr(base_lr: float, progress: float, warmup: float = 0.02, floor: float = 0.02) -> float:
    """Learning rate at training ``progress`` in [0, 1]: linear warm-up then cosine decay to ``floor``."""
    progress = min(max(progress, 0.0), 1.0)
    if progress < warmup:
        return base_lr * max(progress / warmup, 0.05)
    t = (progress - warmup) / (1.0 - warmup)
    return base_lr * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t)))
