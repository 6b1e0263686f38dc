"""Protocol grids on the eight orientation volumes: outputs land voxel-for-voxel on the HR grid."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DATA

from JointSRSegLib.baselines import resample_to_grid, upsample_image
from JointSRSegLib.degradation import simulate_slice_gaps, simulate_thick_slices
from JointSRSegLib.errors import InputError
from JointSRSegLib.geometry import (
    insert_grid,
    orientation_code,
    subdivide_grid,
    through_plane_axis,
)
from JointSRSegLib.io import read_volume
from JointSRSegLib.volume import Grid, Volume

ORIENTATIONS = ("ASL", "IRP", "LAS", "LPS", "PIR", "RAS", "RPI", "SAL")


@pytest.fixture(scope="module")
def volumes():
    return {name: read_volume(DATA / "orientation" / f"{name}.nii.gz") for name in ORIENTATIONS}


def test_orientation_codes_match_file_names(volumes):
    """The files are named after the direction each voxel axis points towards; so is our code."""
    for name, vol in volumes.items():
        assert orientation_code(vol.direction) == name


def test_all_orientations_hold_the_same_anatomy(volumes):
    """Resampling each file onto the RAS file's grid (nearest) gives the RAS voxels exactly."""
    reference = volumes["RAS"]
    for vol in volumes.values():
        on_ref = resample_to_grid(vol, reference.grid, "nearest")
        np.testing.assert_array_equal(on_ref.array, reference.array)


@pytest.mark.parametrize("name", ORIENTATIONS)
@pytest.mark.parametrize("factor", (2, 3))
def test_protocol_outputs_coincide_with_hr_grid(volumes, name, factor):
    hr = volumes[name]
    hr_points = hr.grid.all_physical_points()
    for axis in range(3):
        # sr protocol: the output subdivides every LR slab; its voxels are HR voxel centres.
        lr = simulate_thick_slices(hr, factor, axis)
        out = upsample_image(lr, "sr", factor, axis, "bspline")
        n = lr.shape[axis] * factor
        assert out.shape[axis] == n
        expected = np.take(hr_points, np.arange(n), axis=axis)
        np.testing.assert_allclose(out.grid.all_physical_points(), expected, atol=1e-4)
        # Resampling the output back onto the LR grid reproduces the LR input.
        back = resample_to_grid(out, lr.grid, "linear").array
        scale = float(lr.array.max() - lr.array.min())
        assert np.abs(back - lr.array).mean() < 0.02 * scale
        assert np.abs(back - lr.array).max() < 0.25 * scale

        # interp protocol: the output inserts slices; every R-th output slice is an LR slice.
        gapped = simulate_slice_gaps(hr, factor, axis)
        out = upsample_image(gapped, "interp", factor, axis, "bspline")
        m = (gapped.shape[axis] - 1) * factor + 1
        assert out.shape[axis] == m
        np.testing.assert_allclose(
            out.grid.all_physical_points(), np.take(hr_points, np.arange(m), axis=axis), atol=1e-4
        )
        back = resample_to_grid(out, gapped.grid, "linear").array
        np.testing.assert_allclose(back, gapped.array, atol=1e-3 * scale)


def _oblique_grid(size=(7, 6, 5), spacing=(0.8, 1.1, 3.0)) -> Grid:
    a, b = 0.3, -0.5
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    return Grid.create(size, spacing, (10.0, -20.0, 5.5), rz @ rx)


@pytest.mark.parametrize("factor", range(2, 9))
@pytest.mark.parametrize("axis", (0, 1, 2))
def test_subdivide_and_insert_for_any_factor_axis_and_direction(factor, axis):
    grid = _oblique_grid()
    step = grid.direction_matrix[:, axis] * grid.spacing[axis]
    sub = subdivide_grid(grid, factor, axis)
    assert sub.size[axis] == grid.size[axis] * factor
    # The mean of each block of R output slices is the LR slice centre (subdivision).
    pts = sub.all_physical_points()
    blocks = np.take(pts, np.arange(sub.size[axis]), axis=axis)
    lr_pts = grid.all_physical_points()
    shape = list(blocks.shape)
    shape[axis : axis + 1] = [grid.size[axis], factor]
    np.testing.assert_allclose(blocks.reshape(shape).mean(axis=axis + 1), lr_pts, atol=1e-9)
    np.testing.assert_allclose(np.asarray(sub.origin), np.asarray(grid.origin) - step * (factor - 1) / (2 * factor))

    ins = insert_grid(grid, factor, axis)
    assert ins.size[axis] == (grid.size[axis] - 1) * factor + 1
    assert ins.origin == grid.origin
    every_r = np.take(ins.all_physical_points(), np.arange(0, ins.size[axis], factor), axis=axis)
    np.testing.assert_allclose(every_r, lr_pts, atol=1e-9)


def test_through_plane_axis_detection_and_ties():
    vol = Volume(np.zeros((4, 5, 6), np.float32), (1.0, 4.0, 1.0), (0, 0, 0))
    assert through_plane_axis(vol) == 1
    assert through_plane_axis(vol, axis=2) == 2
    iso = Volume(np.zeros((4, 5, 6), np.float32), (1.0, 1.005, 1.0), (0, 0, 0), source="iso.nii.gz")
    with pytest.raises(InputError, match="iso.nii.gz: cannot detect the through-plane axis"):
        through_plane_axis(iso)
    tie = Volume(np.zeros((4, 5, 6), np.float32), (3.0, 1.0, 3.02), (0, 0, 0))
    with pytest.raises(InputError, match="give the axis explicitly"):
        through_plane_axis(tie)


@pytest.mark.parametrize("bad", (1, 9, 2.5, 0))
def test_factor_outside_range_is_refused(bad):
    with pytest.raises(InputError, match="scale factor"):
        subdivide_grid(_oblique_grid(), bad, 0)
