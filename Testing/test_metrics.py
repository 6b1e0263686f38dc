"""Each metric against a value computed by hand (or by an independent formula)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from JointSRSegLib import metrics as M


def test_psnr_and_nmse_by_hand():
    ref = np.array([[0.0, 1.0], [2.0, 4.0]])
    pred = ref + np.array([[1.0, -1.0], [0.0, 0.0]])
    mse = 0.5
    assert M.psnr(pred, ref) == pytest.approx(10 * math.log10(4.0**2 / mse))
    assert M.psnr(pred, ref, data_range=1.0) == pytest.approx(10 * math.log10(1 / mse))
    assert M.nmse(pred, ref) == pytest.approx(2.0 / 21.0)


def _gaussian_ssim_reference(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    """Independent 2D SSIM: separable Gaussian (11, sigma 1.5), valid windows, K1=0.01, K2=0.03."""
    r = np.arange(11) - 5
    g = np.exp(-(r**2) / (2 * 1.5**2))
    g /= g.sum()

    def filt(a):
        a = np.apply_along_axis(lambda v: np.convolve(v, g, mode="valid"), 0, a)
        return np.apply_along_axis(lambda v: np.convolve(v, g, mode="valid"), 1, a)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = filt(x), filt(y)
    sxx, syy, sxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(s.mean())


def test_ssim_matches_the_definition():
    rng = np.random.default_rng(0)
    x = rng.random((24, 20))
    y = 0.8 * x + 0.1 * rng.random((24, 20))
    assert M.ssim(y, x) == pytest.approx(_gaussian_ssim_reference(y, x, float(x.max() - x.min())), abs=1e-6)
    assert M.ssim(x, x) == pytest.approx(1.0)
    vol = rng.random((14, 13, 12))
    assert M.ssim(vol, vol) == pytest.approx(1.0)
    assert M.ssim(vol * 0.5, vol) < 0.95


def test_edge_ssim_uses_only_edges():
    ref = np.zeros((30, 30))
    ref[:, 15:] = 1.0  # one vertical edge
    damaged = ref.copy()
    damaged[:, 13:18] = 0.5  # blur the edge only
    flat_damaged = ref.copy()
    flat_damaged[2:8, 20:28] = 0.7  # damage far from the edge
    assert M.edge_ssim(damaged, ref) < M.ssim(damaged, ref)
    assert M.edge_ssim(flat_damaged, ref) > M.ssim(flat_damaged, ref)
    mask = M.edge_mask(ref)
    assert mask[:, 14:16].all() and not mask[:, :12].any()


def test_overlap_metrics_by_hand():
    ref = np.zeros((4, 4), int)
    ref[0, :4] = 1  # 4 voxels
    pred = np.zeros((4, 4), int)
    pred[0, 2:4] = 1
    pred[1, 0:2] = 1  # 4 voxels, 2 overlap
    assert M.dice(pred, ref) == pytest.approx(2 * 2 / 8)
    assert M.iou(pred, ref) == pytest.approx(2 / 6)
    assert M.precision(pred, ref) == pytest.approx(0.5)
    assert M.recall(pred, ref) == pytest.approx(0.5)
    assert M.dice(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0


def test_hd95_in_millimetres():
    a = np.zeros((10, 10, 10), bool)
    b = np.zeros((10, 10, 10), bool)
    a[2, 5, 5] = True
    b[5, 5, 5] = True  # 3 voxels apart along axis 0
    assert M.hd95(a, b, spacing=(2.0, 1.0, 1.0)) == pytest.approx(6.0)
    assert M.hd95(a, b) == pytest.approx(3.0)
    assert M.hd95(a, np.zeros_like(b)) == math.inf


def test_temporal_consistency_by_hand():
    frames = np.zeros((3, 2, 2))
    frames[0] = 1
    frames[1] = [[1, 0], [0, 0]]
    # M = (1 + 0)/2 = 0.5 everywhere; E = |Y2 - M| = 0.5 everywhere -> TCS = 0.5
    assert M.temporal_consistency(frames) == pytest.approx(0.5)
    smooth = np.stack([np.ones((2, 2)), np.ones((2, 2)), np.ones((2, 2))])
    assert M.temporal_consistency(smooth) == 1.0
