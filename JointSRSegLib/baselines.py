"""Classical interpolation baselines, usable anywhere a model is (CLI ``--model bspline``).

Images: ``nearest``, ``linear``, ``bspline`` (cubic B-spline) and ``lanczos`` (windowed sinc),
all evaluated by SimpleITK's resampler at the output grid's physical points.  Label maps:
``nearest`` and ``contour`` -- morphological contour interpolation (Albu et al., IEEE TBME 2008),
the label baseline REHRSeg compares with, through ITK's MorphologicalContourInterpolation
(optional extra ``labels``).

``atropos`` (ANTs Atropos, :mod:`JointSRSegLib.atropos`) is the classical segmentation baseline:
B-spline SR, then 3-class Atropos on the SR grid.

Output grids come from :mod:`JointSRSegLib.geometry`; in-plane axes coincide with the input
voxel centres, so only the through-plane axis is really interpolated.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .geometry import continuous_index, output_grid
from .io import volume_to_sitk
from .vocabulary import IMAGE_BASELINES, IMAGE_TASKS, LABEL_METHODS, SEGMENTATION_BASELINES, TASKS, check_choice
from .volume import Grid, Volume

# SimpleITK's interpolator for each of the vocabulary's IMAGE_BASELINES (the names are defined there).
IMAGE_INTERPOLATORS = {
    "nearest": sitk.sitkNearestNeighbor,
    "linear": sitk.sitkLinear,
    "bspline": sitk.sitkBSpline,  # cubic B-spline with ITK's interpolating prefilter
    "lanczos": sitk.sitkLanczosWindowedSinc,
}


def baseline_tasks(name: str) -> tuple[str, ...]:
    """The tasks a baseline serves (``jointsrseg models``): Atropos also segments."""
    return TASKS if name in SEGMENTATION_BASELINES else IMAGE_TASKS


def _reference(grid: Grid, pixel_type: int) -> sitk.Image:
    ref = sitk.Image([int(s) for s in grid.size], pixel_type)
    ref.SetSpacing(grid.spacing)
    ref.SetOrigin(grid.origin)
    ref.SetDirection(tuple(grid.direction_matrix.ravel()))
    return ref


def _clamped_source(volume: Volume, grid: Grid) -> tuple[Volume, Grid]:
    """Pad the input by edge replication so output points up to half a voxel beyond the first
    or last slice centre (the sr protocol's outer sub-slices) are interpolated, not zeroed."""
    ci = continuous_index(volume.grid, np.asarray([grid.origin, grid.physical_points([np.array(grid.size) - 1])[0]]))
    pad = [int(np.ceil(max(0.0, -ci.min(axis=0)[a], ci.max(axis=0)[a] - (volume.shape[a] - 1)))) for a in range(3)]
    pad = [p + 3 if p else 0 for p in pad]  # room for the cubic/sinc support
    if not any(pad):
        return volume, grid
    array = np.pad(volume.array, [(0, 0)] + [(p, p) for p in pad], mode="edge")
    origin = np.asarray(volume.origin) - volume.direction @ (np.asarray(volume.spacing) * np.asarray(pad))
    return Volume(array, volume.spacing, origin, volume.direction, source=volume.source), grid


LANCZOS_RADIUS = 3


def _single_axis_positions(volume: Volume, grid: Grid) -> tuple[int, np.ndarray] | None:
    """If ``grid`` differs from the input grid only along one voxel axis (true for both
    protocols), return that axis and the output slices' fractional input indices."""
    if not np.allclose(grid.direction_matrix, volume.direction, atol=1e-6):
        return None
    differing = [
        a for a in range(3) if grid.size[a] != volume.shape[a] or abs(grid.spacing[a] - volume.spacing[a]) > 1e-9
    ]
    if len(differing) != 1:
        return None
    axis = differing[0]
    points = np.zeros((grid.size[axis], 3))
    points[:, axis] = np.arange(grid.size[axis])
    ci = continuous_index(volume.grid, grid.physical_points(points))
    others = [a for a in range(3) if a != axis]
    if np.abs(ci[:, others]).max() > 1e-4:
        return None
    return axis, ci[:, axis]


def lanczos_weights(positions: np.ndarray, n: int, radius: int = LANCZOS_RADIUS) -> np.ndarray:
    """Matrix (m x n) of Lanczos-``radius`` windowed-sinc weights, edge samples replicated,
    each row normalised to sum to one so constant images stay constant."""
    j = np.arange(-radius, n + radius)
    x = positions[:, None] - j[None, :]
    w = np.sinc(x) * np.sinc(x / radius) * (np.abs(x) < radius)
    folded = np.zeros((len(positions), n))
    np.add.at(folded.T, np.clip(j, 0, n - 1), w.T)
    return folded / folded.sum(axis=1, keepdims=True)


def resample_to_grid(volume: Volume, grid: Grid, method: str = "bspline") -> Volume:
    """Interpolate every channel of ``volume`` at the voxel centres of ``grid``.

    ``lanczos`` along a single axis (both protocols) uses a separable 1D windowed-sinc matrix:
    SimpleITK's 3D windowed-sinc evaluates a 6x6x6 kernel per voxel and takes minutes on a brain.
    """
    check_choice(method, IMAGE_BASELINES, "interpolation")
    single_axis = _single_axis_positions(volume, grid) if method == "lanczos" else None
    if single_axis is not None:
        axis, positions = single_axis
        weights = lanczos_weights(positions, volume.shape[axis]).astype(np.float32)
        moved = np.moveaxis(volume.array.astype(np.float32), axis + 1, -1)
        array = np.ascontiguousarray(np.moveaxis(moved @ weights.T, -1, axis + 1))
        return Volume.from_grid(array, grid, source=volume.source, channel_names=volume.channel_names)
    if method == "nearest" and np.issubdtype(volume.array.dtype, np.integer):
        return _nearest_exact(volume, grid)
    source, grid = _clamped_source(volume, grid)
    channels = []
    for c in range(source.channels):
        image = volume_to_sitk(source.channel(c).with_array(source.array[c : c + 1].astype(np.float32)))
        ref = _reference(grid, sitk.sitkFloat32)
        out = sitk.Resample(image, ref, sitk.Transform(), IMAGE_INTERPOLATORS[method], 0.0, sitk.sitkFloat32)
        channels.append(sitk.GetArrayFromImage(out).transpose(2, 1, 0))
    array = np.stack(channels)
    if np.issubdtype(volume.array.dtype, np.integer) and method == "nearest":
        array = array.astype(volume.array.dtype)
    return Volume.from_grid(array, grid, source=volume.source, channel_names=volume.channel_names)


def upsample_image(volume: Volume, protocol: str, factor: int, axis: int, method: str = "bspline") -> Volume:
    """Baseline SR (``protocol="sr"``) or slice interpolation (``"interp"``) of an image."""
    return resample_to_grid(volume, output_grid(volume.grid, protocol, factor, axis), method)


def upsample_labels(labels: Volume, protocol: str, factor: int, axis: int, method: str = "nearest") -> Volume:
    """Baseline upsampling of a label map onto the protocol's output grid."""
    check_choice(method, LABEL_METHODS, "label interpolation")
    grid = output_grid(labels.grid, protocol, factor, axis)
    if method == "nearest":
        dtype = _label_dtype(labels)
        array = labels.array if np.issubdtype(labels.array.dtype, np.integer) else np.rint(labels.array).astype(dtype)
        return _nearest_exact(labels.with_array(array), grid)
    return _contour_interpolation(labels, grid, protocol, factor, axis)


def _label_dtype(labels: Volume) -> np.dtype:
    """The input's integer dtype, kept exactly; float label maps become uint8 only when their values fit."""
    if np.issubdtype(labels.array.dtype, np.integer):
        return labels.array.dtype
    finite = labels.array[np.isfinite(labels.array)]
    if finite.size != labels.array.size or (finite.size and (finite.min() < -0.5 or finite.max() > 255.5)):
        raise InputError(
            labels.source, "label map has values outside 0-255 (or NaN); store it as an integer image to keep them"
        )
    return np.dtype(np.uint8)


def _nearest_exact(volume: Volume, grid: Grid) -> Volume:
    """Nearest-neighbour resampling of integer voxels that keeps every value and the dtype exactly:
    ITK resamples the index of each value among the distinct ones (exact in float32), not the value
    (float32 rounds above 2**24 and turns int64 extremes into INT64_MIN)."""
    channels = []
    for c in range(volume.channels):
        values, inverse = np.unique(volume.array[c], return_inverse=True)
        if values.size > 2**24:
            raise InputError(volume.source, f"{values.size} distinct values; nearest resampling keeps at most 2**24")
        index = inverse.reshape(volume.shape).astype(np.float32)[None]
        source, clamped = _clamped_source(volume.channel(c).with_array(index), grid)
        image = volume_to_sitk(source)
        ref = _reference(clamped, sitk.sitkFloat32)
        out = sitk.Resample(image, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0, sitk.sitkFloat32)
        picked = np.rint(sitk.GetArrayFromImage(out).transpose(2, 1, 0)).astype(np.int64)
        channels.append(values[np.clip(picked, 0, values.size - 1)])
    array = np.stack(channels).astype(volume.array.dtype, copy=False)
    return Volume.from_grid(array, grid, source=volume.source, channel_names=volume.channel_names)


def _contour_interpolation(labels: Volume, grid: Grid, protocol: str, factor: int, axis: int) -> Volume:
    """Place LR label slices on the HR grid and let ITK's MorphologicalContourInterpolator fill
    the slices in between.  sr protocol: an LR slice sits at the centre of its slab (rounded
    down by half an HR voxel for even factors, documented in docs/baselines.md); slices beyond the
    outermost LR centres copy the nearest LR slice."""
    try:
        import itk
    except ImportError:
        raise InputError(
            None, "label method 'contour' needs the optional extra: pip install 'jointsrseg[labels]'"
        ) from None
    lr = labels.array[0]
    if not np.issubdtype(lr.dtype, np.integer):
        lr = np.rint(lr).astype(np.int32)
    if lr.size and (int(lr.min()) < 0 or int(lr.max()) > np.iinfo(np.uint16).max):
        raise InputError(
            labels.source,
            f"label values {int(lr.min())}-{int(lr.max())} are outside 0-65535, the range contour interpolation "
            "keeps; use --model nearest or relabel",
        )
    n_lr = lr.shape[axis]
    offset = (factor - 1) // 2 if protocol == "sr" else 0
    positions = offset + factor * np.arange(n_lr)
    sparse = np.zeros(grid.size, dtype=np.uint16)
    for i, p in enumerate(positions):
        dst = [slice(None)] * 3
        dst[axis] = p
        src = [slice(None)] * 3
        src[axis] = i
        sparse[tuple(dst)] = lr[tuple(src)]
    image = itk.image_from_array(np.ascontiguousarray(sparse.transpose(2, 1, 0)))
    filled = itk.morphological_contour_interpolator(image, axis=int(axis))
    dense = np.asarray(itk.array_from_image(filled)).transpose(2, 1, 0).copy()
    for i, p in enumerate(positions):  # MCI must never change an annotated slice
        dst = [slice(None)] * 3
        dst[axis] = p
        src = [slice(None)] * 3
        src[axis] = i
        dense[tuple(dst)] = lr[tuple(src)]
    first, last = positions[0], positions[-1]
    dense_moved = np.moveaxis(dense, axis, 0)
    dense_moved[:first] = dense_moved[first]
    dense_moved[last + 1 :] = dense_moved[last]
    out = np.moveaxis(dense_moved, 0, axis).astype(_label_dtype(labels))
    return Volume.from_grid(out[None], grid, source=labels.source)
