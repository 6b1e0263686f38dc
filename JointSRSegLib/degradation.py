"""The degradation protocols as code (DEVELOPERS.md "standard degradation protocols").

* :func:`simulate_thick_slices` -- **sr protocol**: Gaussian slice profile of FWHM = R HR voxels
  along the through-plane axis, LR slice ``i`` centred on HR slices ``iR ... iR+R-1``.
* :func:`simulate_slice_gaps` -- **interp protocol**: LR slice ``i`` is HR slice ``iR``.
* :func:`simulate_inplane_bicubic` -- the RDST paper's in-plane protocol (section 4.1, eq. 13):
  ``I_lr = (I_hr * k_bicubic) downsampled by s + n``.

All return a :class:`Volume` on the protocol's LR grid (see :mod:`JointSRSegLib.geometry`) so
that an SR/interpolation output built with ``subdivide_grid``/``insert_grid`` lands exactly
on the HR grid.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .geometry import continuous_index, gapped_grid, thick_slice_grid
from .vocabulary import check_axis, check_factor
from .volume import Grid, Volume

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
PROFILE_TRUNCATE_SIGMAS = 4.0


def slice_profile_fwhm(factor: int) -> float:
    """FWHM (in HR voxels) of the thick-slice profile for factor ``R``: ``R`` itself."""
    return float(factor)


def thick_slice_weights(n_hr: int, factor: int) -> np.ndarray:
    """Matrix ``W`` (n_lr x n_hr) with ``LR = W @ HR`` along the slice axis for the sr protocol.

    Row ``i`` holds Gaussian weights ``exp(-(j - c_i)^2 / 2 sigma^2)`` for HR slices ``j`` with
    ``c_i = iR + (R-1)/2`` (the centre of the block ``iR ... iR+R-1``), ``sigma = FWHM / 2.3548``,
    truncated at 4 sigma and renormalised over the HR slices that exist (edges of the volume).
    """
    factor = check_factor(factor)
    sigma = slice_profile_fwhm(factor) * FWHM_TO_SIGMA
    n_lr = n_hr // factor
    j = np.arange(n_hr, dtype=float)
    centres = np.arange(n_lr, dtype=float) * factor + (factor - 1) / 2.0
    d = j[None, :] - centres[:, None]
    w = np.exp(-0.5 * (d / sigma) ** 2)
    w[np.abs(d) > PROFILE_TRUNCATE_SIGMAS * sigma] = 0.0
    return w / w.sum(axis=1, keepdims=True)


def _apply_along_axis(array: np.ndarray, matrix: np.ndarray, axis: int) -> np.ndarray:
    """Apply ``matrix`` (m x n) along spatial ``axis`` of a (C, I, J, K) array."""
    moved = np.moveaxis(array, axis + 1, -1).astype(np.float64, copy=False)
    out = moved @ matrix.T
    return np.moveaxis(out, -1, axis + 1)


def simulate_thick_slices(volume: Volume, factor: int, axis: int) -> Volume:
    """sr protocol: thick slices of ``factor`` HR voxels along voxel ``axis``.

    Returns ``floor(n / R)`` slices; trailing HR slices that do not fill a whole slab are
    dropped (the SR output grid then covers the first ``R * floor(n / R)`` HR slices exactly).
    """
    factor, axis = check_factor(factor, volume.source), check_axis(axis, volume.source)
    n = volume.shape[axis]
    if n < factor:
        raise ValueError(f"{volume.source}: {n} slices along axis {axis} cannot make one slab of {factor}")
    weights = thick_slice_weights(n, factor)
    lr = _apply_along_axis(volume.array, weights, axis).astype(np.float32)
    return volume.with_grid(lr, thick_slice_grid(volume.grid, factor, axis))


def simulate_slice_gaps(volume: Volume, factor: int, axis: int) -> Volume:
    """interp protocol: keep every ``factor``-th slice (``0, R, 2R, ...``) along voxel ``axis``."""
    factor, axis = check_factor(factor, volume.source), check_axis(axis, volume.source)
    index = [slice(None)] * 4
    index[axis + 1] = slice(0, None, factor)
    lr = np.ascontiguousarray(volume.array[tuple(index)])
    return volume.with_grid(lr, gapped_grid(volume.grid, factor, axis))


def inplane_axes(through_axis: int) -> tuple[int, int]:
    return tuple(a for a in range(3) if a != through_axis)


def simulate_inplane_bicubic(
    volume: Volume,
    factor: int,
    through_axis: int,
    noise_std: float = 0.01,
    seed: int = 0,
) -> Volume:
    """RDST protocol: bicubic (anti-aliased, as MATLAB ``imresize``) downsampling by ``factor``
    in the two in-plane axes, plus additive Gaussian noise.

    ``noise_std`` is relative to the intensity range of the volume (the paper does not state a
    level; 0.01 of the range matches the training-augmentation noise we use elsewhere).  Each LR
    pixel covers HR pixels ``iR ... iR+R-1`` in both in-plane axes, so the geometry follows the
    same block convention as the sr protocol.
    """
    factor, through_axis = check_factor(factor, volume.source), check_axis(through_axis, volume.source)
    a, b = inplane_axes(through_axis)
    array = np.moveaxis(volume.array.astype(np.float32), (a + 1, b + 1), (-2, -1))
    lead = array.shape[:-2]
    h, w = array.shape[-2:]
    h_lr, w_lr = h // factor, w // factor
    cropped = torch.from_numpy(np.ascontiguousarray(array[..., : h_lr * factor, : w_lr * factor]))
    flat = cropped.reshape(-1, 1, h_lr * factor, w_lr * factor)
    low = F.interpolate(flat, size=(h_lr, w_lr), mode="bicubic", antialias=True, align_corners=False)
    low = low.reshape(*lead, h_lr, w_lr).numpy()
    if noise_std > 0:
        value_range = float(volume.array.max() - volume.array.min()) or 1.0
        rng = np.random.default_rng(seed)
        low = low + rng.normal(0.0, noise_std * value_range, size=low.shape).astype(np.float32)
    low = np.moveaxis(low, (-2, -1), (a + 1, b + 1))
    grid = volume.grid
    grid = thick_slice_grid(thick_slice_grid(grid, factor, a), factor, b)
    return volume.with_grid(np.ascontiguousarray(low.astype(np.float32)), grid)


def crop_to_grid(volume: Volume, grid: Grid) -> Volume:
    """Crop ``volume`` to a sub-grid that shares its voxel centres (e.g. the HR reference to the
    part an SR output covers after trailing slices were dropped)."""
    start = continuous_index(volume.grid, np.asarray([grid.origin]))[0]
    start_int = np.rint(start).astype(int)
    if np.abs(start - start_int).max() > 1e-3:
        raise ValueError("grids do not share voxel centres")
    index = [slice(None)] + [slice(s, s + n) for s, n in zip(start_int, grid.size)]
    out = volume.array[tuple(index)]
    if out.shape[1:] != tuple(grid.size):
        raise ValueError("grid is not inside the volume")
    return volume.with_grid(np.ascontiguousarray(out), grid)
