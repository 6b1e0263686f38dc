"""Classical baselines: exactness where interpolation must be exact, and label interpolation."""

from __future__ import annotations

import numpy as np
import pytest

from JointSRSegLib.baselines import lanczos_weights, upsample_image, upsample_labels
from JointSRSegLib.volume import Volume


def _ramp(n=9) -> Volume:
    k = np.arange(n, dtype=np.float32)
    array = np.broadcast_to(3.0 * k + 2.0, (5, 4, n)).copy()
    return Volume(array[None], (1.0, 1.0, 4.0), (0.0, 0.0, 0.0))


@pytest.mark.parametrize("method", ("linear", "bspline", "lanczos", "nearest"))
def test_interp_keeps_the_acquired_slices(method):
    lr = _ramp()
    out = upsample_image(lr, "interp", 4, 2, method)
    assert out.shape == (5, 4, 33)
    np.testing.assert_allclose(out.array[0, :, :, ::4], lr.array[0], atol=1e-3)


def test_linear_interp_of_a_ramp_is_the_ramp():
    out = upsample_image(_ramp(), "interp", 4, 2, "linear")
    expected = 3.0 * (np.arange(33) / 4.0) + 2.0
    np.testing.assert_allclose(out.array[0, 2, 1], expected, atol=1e-4)


@pytest.mark.parametrize("method", ("nearest", "linear", "bspline", "lanczos"))
def test_sr_outer_subslices_are_interpolated_not_zeroed(method):
    lr = Volume(np.full((1, 4, 4, 6), 10.0, np.float32), (1.0, 1.0, 3.0), (0.0, 0.0, 0.0))
    out = upsample_image(lr, "sr", 3, 2, method)
    assert out.shape == (4, 4, 18)
    np.testing.assert_allclose(out.array, 10.0, atol=1e-3)


def test_lanczos_weights_rows_sum_to_one_and_hit_samples():
    w = lanczos_weights(np.array([0.0, 1.0, 2.5, 3.0]), 4)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    np.testing.assert_allclose(w[1], [0, 1, 0, 0], atol=1e-12)


def _disc(radius: float, size: int = 41) -> np.ndarray:
    y, x = np.mgrid[:size, :size] - size // 2
    return (x**2 + y**2 <= radius**2).astype(np.uint8)


def test_contour_interpolation_morphs_between_label_shapes():
    lr = np.zeros((41, 41, 2), np.uint8)
    lr[..., 0] = _disc(6)
    lr[..., 1] = _disc(14)
    labels = Volume(lr[None], (1.0, 1.0, 4.0), (0.0, 0.0, 0.0))
    out = upsample_labels(labels, "interp", 4, 2, "contour")
    areas = [int(out.array[0, :, :, k].sum()) for k in range(5)]
    assert areas[0] == _disc(6).sum() and areas[4] == _disc(14).sum()
    assert areas[0] < areas[1] < areas[2] < areas[3] < areas[4]
    nearest = upsample_labels(labels, "interp", 4, 2, "nearest")
    assert int(nearest.array[0, :, :, 1].sum()) == _disc(6).sum()  # nearest just copies a neighbour
    assert nearest.array.dtype == np.uint8
