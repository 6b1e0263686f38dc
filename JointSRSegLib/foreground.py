"""The head (foreground) mask of a scan, and the same mask on an output grid.

Why: a network run on empty background costs time and invents tissue there (instance-normalised
windows of air look like anything).  The engine crops every input to this mask's bounding box, skips
windows without a mask voxel, and outside the mask gives the classical answer: B-spline for the image,
background for the segmentation.  The mask is generous on purpose (a low threshold, holes filled, a
margin): a false "background" would cut anatomy, a false "head" only costs a little time.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .geometry import continuous_index
from .volume import Grid, Volume

THRESHOLD_FRACTION = 0.08  # of the robust intensity range (0.5-99.5 percentiles) above its low end
MARGIN_MM = 4.0  # grown around the thresholded head, in millimetres
SMOOTH_MM = 2.0  # Gaussian sigma before thresholding: noise specks do not pass, thin tissue does
MIN_COMPONENT_FRACTION = 0.01  # components smaller than this fraction of the largest are noise


def head_mask(volume: Volume) -> np.ndarray:
    """Boolean ``(I, J, K)`` mask of everything that is not empty background.

    Works on skull-stripped scans (background exactly 0) and whole-head scans (noisy air around
    the head) alike; multi-channel inputs are combined by the voxel-wise maximum of their
    range-normalised channels.
    """
    spacing = np.asarray(volume.spacing, dtype=float)
    combined = None
    for channel in volume.array:
        x = channel.astype(np.float32, copy=False)
        low, high = np.percentile(x, [0.5, 99.5])
        if not high > low:
            continue
        unit = (x - low) / (high - low)
        combined = unit if combined is None else np.maximum(combined, unit)
    if combined is None:  # constant volume: nothing to tell apart
        return np.ones(volume.shape, dtype=bool)
    smooth = ndimage.gaussian_filter(combined, sigma=SMOOTH_MM / spacing, mode="nearest")
    mask = smooth > THRESHOLD_FRACTION
    labels, count = ndimage.label(mask)
    if count > 1:
        sizes = np.bincount(labels.ravel())[1:]
        keep = np.flatnonzero(sizes >= MIN_COMPONENT_FRACTION * sizes.max()) + 1
        mask = np.isin(labels, keep)
    mask = ndimage.binary_fill_holes(mask)
    for axis in range(3):  # holes open to one side in 3D (ventricles at a cut, the skull base) per slice
        mask = np.stack([ndimage.binary_fill_holes(s) for s in np.moveaxis(mask, axis, 0)], axis=axis)
    grow = np.maximum(1, np.ceil(MARGIN_MM / spacing)).astype(int)
    return _dilate_box(mask, grow)


def _dilate_box(mask: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Separable box dilation by ``radius`` voxels per axis (cheap on 256^3)."""
    out = mask
    for axis, r in enumerate(radius):
        out = ndimage.maximum_filter1d(out.astype(np.uint8), size=2 * int(r) + 1, axis=axis, mode="constant") > 0
    return out


def mask_on_grid(mask: np.ndarray, source: Grid, target: Grid) -> np.ndarray:
    """The mask of ``source`` sampled (nearest voxel) at the voxel centres of ``target``.

    Both grids share their direction (true of every protocol grid), so the mapping separates per
    axis and costs three 1D look-ups, not one per voxel.
    """
    if not np.allclose(source.direction_matrix, target.direction_matrix, atol=1e-6):
        raise ValueError("mask_on_grid needs grids with the same direction")
    indices = []
    for axis in range(3):
        steps = np.zeros((target.size[axis], 3))
        steps[:, axis] = np.arange(target.size[axis])
        position = continuous_index(source, target.physical_points(steps))[:, axis]
        # a point exactly between two source voxels (never at protocol grids' centres) goes to the lower one
        indices.append(np.clip(np.ceil(position - 0.5 - 1e-9), 0, source.size[axis] - 1).astype(int))
    return mask[np.ix_(*indices)]


def bounding_box(mask: np.ndarray, minimum: tuple[int, ...] = (1, 1, 1)) -> tuple[slice, slice, slice]:
    """Smallest box around the mask, widened (centred, within the array) to at least ``minimum``."""
    if not mask.any():
        return tuple(slice(0, min(m, n)) for m, n in zip(minimum, mask.shape))
    box = []
    for axis, n in enumerate(mask.shape):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        start, stop = int(hit[0]), int(hit[-1]) + 1
        need = min(int(minimum[axis]), n) - (stop - start)
        if need > 0:
            start = max(0, start - need // 2)
            stop = min(n, start + max(stop - start, min(int(minimum[axis]), n)))
            start = max(0, stop - max(stop - start, min(int(minimum[axis]), n)))
        box.append(slice(start, stop))
    return tuple(box)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of ``mask`` (face connectivity); ``mask`` itself when it has one or none."""
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))
