"""The protocols as code, checked against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from JointSRSegLib.degradation import simulate_inplane_bicubic, simulate_slice_gaps, simulate_thick_slices
from JointSRSegLib.geometry import subdivide_grid
from JointSRSegLib.volume import Volume


def _volume(shape=(6, 5, 19), axis_spacing=1.0) -> Volume:
    rng = np.random.default_rng(7)
    return Volume(rng.random((1, *shape)).astype(np.float32), (0.9, 1.2, axis_spacing), (3.0, -4.0, 10.0))


@pytest.mark.parametrize("factor", (2, 3, 4, 5))
@pytest.mark.parametrize("axis", (0, 2))
def test_sr_protocol_is_gaussian_weighted_block_average(factor, axis):
    hr = _volume(shape=(13, 5, 19))
    lr = simulate_thick_slices(hr, factor, axis)
    n = hr.shape[axis]
    assert lr.shape[axis] == n // factor
    sigma = factor / (2 * math.sqrt(2 * math.log(2)))  # FWHM = R HR voxels
    for i in range(n // factor):
        centre = i * factor + (factor - 1) / 2  # middle of HR slices iR .. iR+R-1
        total, norm = 0.0, 0.0
        for j in range(n):
            if abs(j - centre) <= 4 * sigma:
                w = math.exp(-((j - centre) ** 2) / (2 * sigma**2))
                total = total + w * np.take(hr.array[0].astype(np.float64), j, axis=axis)
                norm += w
        np.testing.assert_allclose(np.take(lr.array[0], i, axis=axis), total / norm, rtol=1e-5, atol=1e-6)
    # LR slice i is centred on its block: LR origin = HR origin + (R-1)/2 HR voxels along the axis.
    shift = np.zeros(3)
    shift[axis] = (factor - 1) / 2 * hr.spacing[axis]
    np.testing.assert_allclose(lr.origin, np.asarray(hr.origin) + shift, atol=1e-9)
    assert lr.spacing[axis] == pytest.approx(hr.spacing[axis] * factor)
    # ...so the SR output grid is exactly the HR grid (cropped to whole slabs).
    out = subdivide_grid(lr.grid, factor, axis)
    assert np.allclose(out.origin, hr.origin) and np.allclose(out.spacing, hr.spacing)


def test_interp_protocol_keeps_every_rth_slice():
    hr = _volume()
    lr = simulate_slice_gaps(hr, 4, 2)
    assert lr.shape[2] == (19 - 1) // 4 + 1
    np.testing.assert_array_equal(lr.array[0, :, :, 3], hr.array[0, :, :, 12])
    assert lr.origin == hr.origin and lr.spacing[2] == 4.0


def test_constant_volume_stays_constant_through_thick_slices():
    hr = Volume(np.full((1, 4, 4, 17), 5.0, np.float32), (1, 1, 1), (0, 0, 0))
    np.testing.assert_allclose(simulate_thick_slices(hr, 3, 2).array, 5.0, rtol=1e-6)


def test_rdst_inplane_protocol():
    rng = np.random.default_rng(0)
    hr = Volume(rng.random((1, 32, 24, 5)).astype(np.float32) * 100, (1.0, 1.0, 4.0), (0.0, 0.0, 0.0))
    lr = simulate_inplane_bicubic(hr, 4, through_axis=2, noise_std=0.0)
    assert lr.shape == (8, 6, 5)
    assert lr.spacing == (4.0, 4.0, 4.0)
    np.testing.assert_allclose(lr.origin, (1.5, 1.5, 0.0))
    # Anti-aliased bicubic of a constant block is that constant.
    flat = Volume(np.full((1, 32, 24, 5), 7.0, np.float32), (1.0, 1.0, 4.0), (0.0, 0.0, 0.0))
    np.testing.assert_allclose(simulate_inplane_bicubic(flat, 4, 2, noise_std=0.0).array, 7.0, rtol=1e-5)
    noisy = simulate_inplane_bicubic(hr, 4, through_axis=2, noise_std=0.01, seed=1)
    residual = noisy.array - lr.array
    assert residual.std() == pytest.approx(0.01 * float(hr.array.max() - hr.array.min()), rel=0.2)
