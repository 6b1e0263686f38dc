"""REHRSeg's self-SR data (Song et al., Sec. 3.2-3.3): isotropic pre-interpolation and Eq. 1 pseudo LR scans.

Sec. 3.2, first step: before the self-supervised pairs are drawn, the LR image and its annotation are
interpolated to isotropic spacing (B-spline for images, nearest neighbour for annotations), so the
frames the self-SR network sees in training (planes spanned by the other in-plane axis and the slice
axis) have the in-plane spacing of the frames it reads at inference.  :class:`IsotropicInterpolated`
does that onto the sr protocol's subdivided grid (slice axis x R), by :mod:`JointSRSegLib.baselines`.

Sec. 3.3, Eq. 1: the self-SR output ``I~_HR`` (``Z R`` slices on the subdivided grid) is degraded
again by the protocol the LR data came from (thick slices: Gaussian profile with FWHM ``R``,
decimation by ``R``) starting at HR slice ``k``: pseudo LR scan ``k`` has slice ``i`` covering HR
slices ``k + iR ... k + iR + R - 1``, i.e. its grid is the real LR grid shifted by ``k / R`` of a slice.
``k = 0 .. R-1`` give ``R`` pseudo LR scans per LR scan (the paper's "r x the amount of LR data").
Labels: the LR label of pseudo scan ``k`` is the pseudo HR label (the teacher's arg-max) reduced by
the protocol's LR-label rule (block majority of the ``R`` HR slices, the rule that made the real LR
labels, :func:`training.data.pairs.degrade_label`), and its HR target is the pseudo HR label on
slices ``k ... k + nR - 1`` -- the HR slices the segmenter's HR head covers from that input.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.transforms import Transform

from JointSRSegLib.baselines import upsample_image, upsample_labels
from JointSRSegLib.losses.rehrseg import decimate_slices
from JointSRSegLib.vocabulary import check_axis, check_factor
from JointSRSegLib.volume import Volume

from .pairs import degrade_array, degrade_label, lr_length, to_numpy

__all__ = ["IsotropicInterpolated", "pseudo_lr_pair", "pseudo_lr_batch", "pseudo_lr_uncertainty", "shift_lr_grid"]


class IsotropicInterpolated(Transform):
    """Sec. 3.2 step 1: upsample ``image`` (B-spline) and ``label`` (nearest) along ``slice_axis`` by ``factor``.

    The output lives on the subdivided grid of the sr protocol (LR slice ``i`` -> slices ``iR ... iR+R-1``),
    so with slices ``R`` times thicker than the in-plane spacing (the protocol's LR data) it is isotropic.
    """

    def __init__(self, factor: int, slice_axis: int = 2, image_key: str = "image", label_key: str = "label"):
        self.factor, self.slice_axis = check_factor(factor), check_axis(slice_axis)
        self.image_key, self.label_key = image_key, label_key

    def __call__(self, data):
        d = dict(data)
        spacing = tuple(float(self.factor) if a == self.slice_axis else 1.0 for a in range(3))
        image = Volume(to_numpy(d[self.image_key]).astype(np.float32), spacing, (0.0, 0.0, 0.0))
        d[self.image_key] = torch.from_numpy(upsample_image(image, "sr", self.factor, self.slice_axis).array)
        if d.get(self.label_key) is not None:
            label = to_numpy(d[self.label_key])
            label = np.rint(label).astype(np.int64) if label.dtype.kind == "f" else label.astype(np.int64)
            labels = Volume(label, spacing, (0.0, 0.0, 0.0))
            hr = upsample_labels(labels, "sr", self.factor, self.slice_axis, "nearest").array
            d[self.label_key] = torch.from_numpy(np.ascontiguousarray(hr))
        return d


def _from_offset(array: np.ndarray, offset: int, factor: int, axis: int) -> np.ndarray:
    """HR slices ``offset ... offset + nR - 1`` of a ``(C, X, Y, Z)`` array (``n`` whole slabs)."""
    n = lr_length(array.shape[axis + 1] - offset, "sr", factor)
    if n < 1:
        raise ValueError(f"{array.shape[axis + 1]} HR slices cannot make a slab of {factor} from slice {offset}")
    index = [slice(None)] * 4
    index[axis + 1] = slice(offset, offset + n * factor)
    return np.ascontiguousarray(array[tuple(index)])


def pseudo_lr_pair(
    sr_image: np.ndarray, sr_label: np.ndarray, factor: int, axis: int, offset: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eq. 1 at starting index ``offset``: ``(pseudo LR image, its LR label, its HR label)``.

    ``sr_image`` ``(C, X, Y, Z R)`` and ``sr_label`` ``(1, X, Y, Z R)`` are the self-SR image and annotation.
    """
    factor, axis = check_factor(factor), check_axis(axis)
    if not 0 <= offset < factor:
        raise ValueError(f"offset {offset} must lie in [0, {factor})")
    image = _from_offset(np.asarray(sr_image, np.float32), offset, factor, axis)
    label = _from_offset(np.asarray(sr_label), offset, factor, axis)
    return degrade_array(image, "sr", factor, axis), degrade_label(label, "sr", factor, axis), label


def pseudo_lr_batch(
    sr_image: torch.Tensor, sr_label: torch.Tensor, factor: int, axis: int, offset: int
) -> dict[str, torch.Tensor]:
    """:func:`pseudo_lr_pair` for every item of a batch ``(B, C, X, Y, Z R)``; tensors on the input's device."""
    items = [pseudo_lr_pair(to_numpy(i), to_numpy(y), factor, axis, offset) for i, y in zip(sr_image, sr_label)]
    stack = lambda k, dtype: torch.from_numpy(np.stack([item[k] for item in items])).to(sr_image.device, dtype)  # noqa: E731
    return {"lr_image": stack(0, torch.float32), "lr_label": stack(1, torch.long), "hr_label": stack(2, torch.long)}


def pseudo_lr_uncertainty(uncertainty: torch.Tensor, factor: int, axis: int, offset: int) -> torch.Tensor:
    """Eq. 7's ``{U} down_z^r`` on pseudo LR scan ``offset``'s grid: the HR slice nearest each LR slice's centre.

    Pseudo LR slice ``i`` covers HR slices ``offset + iR ... offset + iR + R - 1``; of those, slice
    ``offset + iR + floor(R/2)`` is the nearest to its centre (the real scan's rule at ``offset = 0``).
    """
    n = lr_length(uncertainty.shape[2 + axis] - offset, "sr", factor)
    cropped = uncertainty.narrow(2 + axis, offset, n * factor)
    return decimate_slices(cropped, factor, axis, factor // 2)


def shift_lr_grid(features: torch.Tensor, factor: int, axis: int, offset: int) -> torch.Tensor:
    """LR-grid features ``(B, C, X, Y, Z)`` resampled on pseudo LR scan ``offset``'s grid (linear along ``axis``).

    Pseudo slice ``i`` sits at real LR position ``i + offset / R``, between real slices ``i`` and ``i + 1``:
    ``(1 - t) F[i] + t F[i + 1]`` with ``t = offset / R`` (the paper aligns feature maps by interpolation).
    """
    n = lr_length(features.shape[2 + axis] * factor - offset, "sr", factor)
    if offset == 0:
        return features.narrow(2 + axis, 0, n)
    t = offset / factor
    return (1.0 - t) * features.narrow(2 + axis, 0, n) + t * features.narrow(2 + axis, 1, n)
