"""Training pairs for self-supervised SR, made from the scan's own in-plane slices (SMORE).

Every acquired slice is a high-resolution 2D image.  Degrading one of its in-plane axes with the
*through-plane* protocol gives (LR, HR) pairs with the same relation as the thick/gapped slices
and the wanted output:

* sr: the HR line ``offset + 0 .. offset + nR - 1`` is multiplied by
  :func:`~JointSRSegLib.degradation.thick_slice_weights` (Gaussian FWHM = R centred on each block
  of ``R`` pixels), so LR pixel ``p`` of a patch is formed from exactly the HR pixels
  ``pR .. pR + R - 1`` of the target patch: the slab structure of the sr protocol.
* interp: LR pixel ``p`` is HR pixel ``offset + pR``; the target covers ``(m - 1)R + 1`` pixels
  from the first to the last LR sample, as in ``insert_grid``.

Both in-plane axes are used (the image is transposed so the degraded axis is always the width),
every block phase ``offset = 0 .. R-1`` is precomputed, and patches are flipped at random along
both axes: with the transpose this covers the in-plane dihedral group (flips + 90° rotations)
without ever rotating the degraded axis into the height, which would break the LR/HR relation.
"""

from __future__ import annotations

import numpy as np
import torch

from .degradation import thick_slice_weights
from .vocabulary import THROUGH_PLANE_PROTOCOLS, check_choice

MIN_PATCH_STD = 0.02  # normalised units: skip (mostly) empty background patches


class InplanePatchSampler:
    """Random (LR, HR) patch pairs from in-plane slices ``planes`` of shape ``(S, C, P, Q)``."""

    def __init__(
        self,
        planes: np.ndarray,
        protocol: str,
        factor: int,
        patch_hr: int = 48,
        rng: np.random.Generator | None = None,
    ):
        check_choice(protocol, THROUGH_PLANE_PROTOCOLS, "self-supervised protocol")
        self.protocol, self.factor = protocol, int(factor)
        self.rng = rng or np.random.default_rng(0)
        r = self.factor
        # orientation 0: degrade Q (width); orientation 1: degrade P (transpose first)
        self.hr = [np.ascontiguousarray(planes, dtype=np.float32),
                   np.ascontiguousarray(np.swapaxes(planes, -1, -2), dtype=np.float32)]
        self.lr: list[list[np.ndarray]] = []
        for hr in self.hr:
            per_offset = []
            for offset in range(r):
                width = hr.shape[-1] - offset
                if protocol == "sr":
                    n = width // r
                    w = thick_slice_weights(n * r, r).astype(np.float32) if n else np.zeros((0, 0), np.float32)
                    per_offset.append(hr[..., offset : offset + n * r] @ w.T)
                else:
                    per_offset.append(np.ascontiguousarray(hr[..., offset::r]))
            self.lr.append(per_offset)
        n_min = min(lr.shape[-1] for per in self.lr for lr in per)
        if n_min < 2:
            raise ValueError(f"in-plane size {planes.shape[-2:]} is too small for factor {r}")
        self.height = int(min(patch_hr, planes.shape[-2], planes.shape[-1]))
        want = max(2, patch_hr // r if protocol == "sr" else (patch_hr - 1) // r + 1)
        self.m = int(min(want, n_min))
        self.hr_width = self.m * r if protocol == "sr" else (self.m - 1) * r + 1

    def _one(self) -> tuple[np.ndarray, np.ndarray]:
        r = self.factor
        for _ in range(10):
            o = int(self.rng.integers(2))
            offset = int(self.rng.integers(r))
            hr, lr = self.hr[o], self.lr[o][offset]
            s = int(self.rng.integers(hr.shape[0]))
            y = int(self.rng.integers(hr.shape[-2] - self.height + 1))
            p = int(self.rng.integers(lr.shape[-1] - self.m + 1))
            x0 = offset + p * r
            hr_patch = hr[s, :, y : y + self.height, x0 : x0 + self.hr_width]
            if hr_patch.std() >= MIN_PATCH_STD:
                break
        lr_patch = lr[s, :, y : y + self.height, p : p + self.m]
        if self.rng.random() < 0.5:
            lr_patch, hr_patch = lr_patch[..., ::-1, :], hr_patch[..., ::-1, :]
        if self.rng.random() < 0.5:
            lr_patch, hr_patch = lr_patch[..., ::-1], hr_patch[..., ::-1]
        return lr_patch, hr_patch

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch ``(B, C, h, m)`` of LR patches and their ``(B, C, h, hr_width)`` targets."""
        pairs = [self._one() for _ in range(batch)]
        lr = torch.from_numpy(np.ascontiguousarray(np.stack([p[0] for p in pairs])))
        hr = torch.from_numpy(np.ascontiguousarray(np.stack([p[1] for p in pairs])))
        return lr, hr
