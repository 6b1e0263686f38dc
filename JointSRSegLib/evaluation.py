"""Compare a prediction with a reference volume (``jointsrseg eval``, benchmarks, training).

The two must share voxel centres.  When the prediction covers only part of the reference --
the sr protocol drops trailing HR slices that do not fill a whole slab -- the reference is
cropped to the prediction's grid; anything else is refused rather than silently resampled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .degradation import crop_to_grid
from .errors import InputError
from .geometry import through_plane_axis
from .io import read_volume
from .metrics import image_metrics, label_metrics
from .volume import Volume


def align_reference(prediction: Volume, reference: Volume) -> Volume:
    """The reference on the prediction's grid (identical, or a crop sharing voxel centres)."""
    if prediction.grid.almost_equal(reference.grid, tol=1e-4):
        return reference
    same_axes = np.allclose(prediction.spacing, reference.spacing, atol=1e-5) and np.allclose(
        prediction.direction, reference.direction, atol=1e-5
    )
    if same_axes:
        try:
            return crop_to_grid(reference, prediction.grid)
        except ValueError:
            pass
    raise InputError(
        prediction.source,
        f"grid (size {prediction.shape}, spacing {tuple(round(s, 4) for s in prediction.spacing)}) does not "
        f"share voxel centres with the reference {reference.source} (size {reference.shape}); "
        "resample one onto the other first",
    )


def evaluate_volumes(prediction: Volume, reference: Volume, labels: bool = False, axis: int | None = None) -> dict:
    reference = align_reference(prediction, reference)
    if labels:
        if axis is None:
            try:
                axis = through_plane_axis(reference)
            except InputError:
                axis = 2  # isotropic reference: consecutive frames along the last voxel axis
        return {
            "kind": "labels",
            "spacing": list(prediction.spacing),
            "temporal_axis": axis,
            **label_metrics(prediction.array[0], reference.array[0], prediction.spacing, temporal_axis=axis),
        }
    if prediction.channels != reference.channels:
        raise InputError(prediction.source, f"has {prediction.channels} channels, the reference {reference.channels}")
    per_channel = [
        image_metrics(prediction.array[c].astype(np.float64), reference.array[c].astype(np.float64))
        for c in range(prediction.channels)
    ]
    result = {"kind": "image", **per_channel[0]}
    if len(per_channel) > 1:
        result["per_channel"] = per_channel
    return result


def evaluate_files(prediction: str | Path, reference: str | Path, labels: bool = False) -> dict:
    """Metrics of two files as plain JSON values: non-finite voxels are refused, ``labels`` needs
    integer-valued label maps, and an undefined metric (PSNR of identical images, SSIM of a constant
    volume) is ``None`` (JSON ``null``), never NaN or Infinity."""
    pred, ref = read_volume(prediction), read_volume(reference)
    for volume in (pred, ref):
        check_finite(volume)
        if labels:
            check_integer_labels(volume)
    result = {"prediction": str(prediction), "reference": str(reference), **evaluate_volumes(pred, ref, labels)}
    return json_safe(result)


def check_finite(volume: Volume) -> None:
    finite = np.isfinite(volume.array)
    if not finite.all():
        raise InputError(volume.source, f"{int((~finite).sum())} voxel(s) are NaN or Inf; metrics need finite values")


def check_integer_labels(volume: Volume) -> None:
    """A label map holds integers (an integer dtype, or floats that are all whole numbers)."""
    array = volume.array
    if np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.bool_):
        return
    fractional = array != np.rint(array)
    if fractional.any():
        raise InputError(
            volume.source,
            f"is not a label map: {int(fractional.sum())} voxel(s) are not whole numbers (e.g. "
            f"{float(array[fractional][0]):.4g}); drop --labels to compare images",
        )


def json_safe(value):
    """NaN and +-Infinity become None (JSON null); numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
