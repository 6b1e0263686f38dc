"""Grid arithmetic for the two standard protocols (see DEVELOPERS.md).

*sr (thick slices)*: LR slice ``i`` is centred on HR slices ``iR ... iR+R-1``.  The SR output
**subdivides** every LR slab into ``R`` slices, so its first slice sits ``(R-1)/2`` HR voxels
before the first LR slice centre, and the output grid is exactly the HR grid.

*interp (gapped thin slices)*: LR slice ``i`` is HR slice ``iR``; the interpolated output
**inserts** ``R-1`` slices between neighbours: ``(n-1)R+1`` slices, same origin.

Everything works for any voxel axis and any direction matrix, because shifts are applied along
the axis' direction column in physical space.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .vocabulary import check_axis, check_factor
from .volume import Grid, Volume

TIE_TOLERANCE = 0.01


def through_plane_axis(volume: Volume | Grid, axis: int | str | None = None) -> int:
    """The voxel axis with the largest spacing (the slice axis of an anisotropic scan).

    ``axis`` may be given explicitly (0, 1, 2) to bypass detection; ``None`` or ``"auto"``
    detects it and refuses to guess when the two largest spacings are within 1 %.
    """
    grid = volume.grid if isinstance(volume, Volume) else volume
    source = volume.source if isinstance(volume, Volume) else None
    if axis is not None and axis != "auto":
        return check_axis(axis, source)
    spacing = np.asarray(grid.spacing)
    order = np.argsort(spacing)[::-1]
    largest, second = spacing[order[0]], spacing[order[1]]
    if largest - second <= TIE_TOLERANCE * largest:
        raise InputError(
            source,
            f"cannot detect the through-plane axis: spacing {tuple(round(float(s), 4) for s in spacing)} "
            f"has no single largest value; give the axis explicitly (--axis 0, 1 or 2)",
        )
    return int(order[0])


def anisotropy(grid: Grid) -> float:
    """Ratio of the largest to the smallest spacing."""
    return float(max(grid.spacing) / min(grid.spacing))


def orientation_code(direction: np.ndarray) -> str:
    """Three-letter LPS-convention code of the voxel axes' directions, e.g. ``"LPS"`` or ``"RAS"``.

    Each letter is the anatomical direction the corresponding voxel axis points *towards*
    (ITK convention, as shown by Slicer's "Volume information").
    """
    letters = (("L", "R"), ("P", "A"), ("S", "I"))
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    code = []
    for col in range(3):
        v = d[:, col]
        k = int(np.argmax(np.abs(v)))
        code.append(letters[k][0] if v[k] > 0 else letters[k][1])
    return "".join(code)


def _shift_along(grid: Grid, axis: int, voxels: float, spacing: float) -> tuple[float, float, float]:
    d = grid.direction_matrix[:, axis]
    return tuple(np.asarray(grid.origin) + d * spacing * voxels)


def _with_axis(values, axis: int, value):
    out = list(values)
    out[axis] = value
    return tuple(out)


def subdivide_grid(lr: Grid | Volume, factor: int, axis: int) -> Grid:
    """Output grid of the sr protocol: each LR slab along ``axis`` becomes ``factor`` slices."""
    grid = lr.grid if isinstance(lr, Volume) else lr
    factor, axis = check_factor(factor), check_axis(axis)
    hr_spacing = grid.spacing[axis] / factor
    return Grid.create(
        _with_axis(grid.size, axis, grid.size[axis] * factor),
        _with_axis(grid.spacing, axis, hr_spacing),
        _shift_along(grid, axis, -(factor - 1) / 2.0, hr_spacing),
        grid.direction,
    )


def insert_grid(lr: Grid | Volume, factor: int, axis: int) -> Grid:
    """Output grid of the interp protocol: ``factor - 1`` slices inserted between LR slices."""
    grid = lr.grid if isinstance(lr, Volume) else lr
    factor, axis = check_factor(factor), check_axis(axis)
    return Grid.create(
        _with_axis(grid.size, axis, (grid.size[axis] - 1) * factor + 1),
        _with_axis(grid.spacing, axis, grid.spacing[axis] / factor),
        grid.origin,
        grid.direction,
    )


def thick_slice_grid(hr: Grid | Volume, factor: int, axis: int) -> Grid:
    """LR grid of the sr protocol: ``floor(n / R)`` slices centred on blocks of ``R`` HR slices."""
    grid = hr.grid if isinstance(hr, Volume) else hr
    factor, axis = check_factor(factor), check_axis(axis)
    return Grid.create(
        _with_axis(grid.size, axis, grid.size[axis] // factor),
        _with_axis(grid.spacing, axis, grid.spacing[axis] * factor),
        _shift_along(grid, axis, (factor - 1) / 2.0, grid.spacing[axis]),
        grid.direction,
    )


def gapped_grid(hr: Grid | Volume, factor: int, axis: int) -> Grid:
    """LR grid of the interp protocol: HR slices ``0, R, 2R, ...`` (same origin)."""
    grid = hr.grid if isinstance(hr, Volume) else hr
    factor, axis = check_factor(factor), check_axis(axis)
    return Grid.create(
        _with_axis(grid.size, axis, (grid.size[axis] - 1) // factor + 1),
        _with_axis(grid.spacing, axis, grid.spacing[axis] * factor),
        grid.origin,
        grid.direction,
    )


def output_grid(lr: Grid | Volume, protocol: str, factor: int, axis: int) -> Grid:
    """The grid an SR (``protocol="sr"``) or interpolation (``"interp"``) output lives on."""
    if protocol == "sr":
        return subdivide_grid(lr, factor, axis)
    if protocol == "interp":
        return insert_grid(lr, factor, axis)
    raise ValueError(f"unknown protocol {protocol!r} (expected 'sr' or 'interp')")


def continuous_index(grid: Grid, points: np.ndarray) -> np.ndarray:
    """Fractional voxel indices in ``grid`` of ``(N, 3)`` LPS points (inverse of ``physical_points``)."""
    m = grid.index_to_physical_matrix()
    return (np.asarray(points, dtype=float) - m[:3, 3]) @ np.linalg.inv(m[:3, :3]).T
