"""2D models over whole volumes, slice by slice along the right axis.

* In-plane SR networks (RDST, disentangled SR) trained for a ``(1, R)`` magnification are applied
  on the two families of planes that contain the through-plane axis and the results averaged --
  the SMORE principle (Zhao et al., IEEE TMI 2021): each plane family sees real in-plane
  resolution along one axis and upsamples the other.
* TASC-SwinMT runs over consecutive slice pairs along the through-plane axis, predicting the
  ``R - 1`` intermediate slices (conditioned on their fractional position) and masks for all frames.

Arrays here are in the *model frame*: ``(C, X, Y, Z)`` with the through-plane axis last.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .devices import autocast

Notify = Callable[[int, int], None]


def _batched(
    net,
    planes: torch.Tensor,
    device: torch.device,
    batch: int,
    key: str,
    notify: Notify | None,
    offset: int,
    total: int,
) -> torch.Tensor:
    outputs = []
    with torch.inference_mode():
        for start in range(0, planes.shape[0], batch):
            chunk = planes[start : start + batch].to(device)
            with autocast(device):
                outputs.append(net(chunk)[key].float().cpu())
            if notify is not None:
                notify(offset + min(start + batch, planes.shape[0]), total)
    return torch.cat(outputs)


def smore_sr(
    net, volume: torch.Tensor, device: torch.device, batch: int = 8, notify: Notify | None = None
) -> torch.Tensor:
    """Through-plane SR of ``volume`` (C, X, Y, Z) with a 2D ``(1, R)`` network; returns (C, X, Y, Z*R)."""
    c, x, y, z = volume.shape
    total = x + y
    # (X, Z) planes, one per Y position: batch over Y.
    planes_xz = volume.permute(2, 0, 1, 3).contiguous()  # (Y, C, X, Z)
    sr_xz = _batched(net, planes_xz, device, batch, "sr", notify, 0, total).permute(1, 2, 0, 3)  # (C, X, Y, ZR)
    planes_yz = volume.permute(1, 0, 2, 3).contiguous()  # (X, C, Y, Z)
    sr_yz = _batched(net, planes_yz, device, batch, "sr", notify, y, total).permute(1, 0, 2, 3)
    return 0.5 * (sr_xz + sr_yz)


def inplane_sr(
    net, volume: torch.Tensor, device: torch.device, batch: int = 8, notify: Notify | None = None
) -> torch.Tensor:
    """In-plane SR: the 2D network on every (X, Y) slice; returns (C, X*R, Y*R, Z)."""
    planes = volume.permute(3, 0, 1, 2).contiguous()  # (Z, C, X, Y)
    return _batched(net, planes, device, batch, "sr", notify, 0, volume.shape[3]).permute(1, 2, 3, 0)


def pairwise_interpolation(
    net, volume: torch.Tensor, factor: int, device: torch.device, batch: int = 4, notify: Notify | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """TASC-style interpolation of ``volume`` (C, X, Y, Z) to ``(Z-1)R+1`` slices.

    Returns the image (acquired slices kept exactly) and, when the network segments, class
    probabilities on the same grid: intermediate frames from the "middle" head, acquired frames
    averaged over the pairs that contain them.
    """
    c, x, y, z = volume.shape
    n_out = (z - 1) * factor + 1
    image = torch.zeros((c, x, y, n_out))
    image[..., ::factor] = volume
    probs, counts = None, torch.zeros(n_out)
    pairs = torch.stack([torch.cat([volume[..., k], volume[..., k + 1]], dim=0) for k in range(z - 1)])  # (P, 2C, X, Y)
    steps = [(r, r / factor) for r in range(1, factor)]
    total = (z - 1) * len(steps)
    done = 0
    with torch.inference_mode():
        for r, t in steps:
            for start in range(0, z - 1, batch):
                chunk = pairs[start : start + batch].to(device)
                tt = torch.full((chunk.shape[0],), t, device=device)
                with autocast(device):
                    out = net(chunk, tt)
                mid = out["interp"].float().cpu()
                for i in range(chunk.shape[0]):
                    k = start + i
                    image[..., k * factor + r] = mid[i]
                if "seg" in out:
                    seg = _probabilities(out["seg"].float().cpu())  # (B, 3, K, X, Y)
                    if probs is None:
                        probs = torch.zeros((seg.shape[2], x, y, n_out))
                    for i in range(chunk.shape[0]):
                        k = start + i
                        probs[..., k * factor + r] += seg[i, 1]
                        counts[k * factor + r] += 1
                        if r == 1:  # acquired frames: once per pair
                            probs[..., k * factor] += seg[i, 0]
                            probs[..., (k + 1) * factor] += seg[i, 2]
                            counts[k * factor] += 1
                            counts[(k + 1) * factor] += 1
                done += chunk.shape[0]
                if notify is not None:
                    notify(done, total)
    if probs is not None:
        probs = probs / counts.clamp(min=1)
    return image, probs


def _probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities along dim 2 (K=1: sigmoid turned into background/foreground)."""
    if logits.shape[2] == 1:
        p = torch.sigmoid(logits)
        return torch.cat([1 - p, p], dim=2)
    return torch.softmax(logits, dim=2)
