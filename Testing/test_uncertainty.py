"""Uncertainty maps: hand-computed entropies and MI, [0, 1] range, MC dropout switching, flip TTA, summaries."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from JointSRSegLib.errors import InputError
from JointSRSegLib.uncertainty import (
    aleatoric_to_unit,
    enable_mc_dropout,
    flip_tta_transforms,
    mutual_information,
    predictive_entropy,
    robust_intensity_range,
    sample_variance_map,
    summarize,
)

# H([0.9, 0.1]) / log 2 = -(0.9 ln 0.9 + 0.1 ln 0.1) / ln 2
H_09 = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1)) / math.log(2)


def test_entropy_hand_values():
    probs = np.array([[1.0, 0.0, 0.5, 0.9], [0.0, 1.0, 0.5, 0.1]])  # (K=2, voxels)
    h = predictive_entropy(probs, axis=0)
    assert h.dtype == np.float32 and h.shape == (4,)
    assert np.allclose(h, [0.0, 0.0, 1.0, H_09], atol=1e-6)
    assert abs(H_09 - 0.4689956) < 1e-6
    sigmoid = predictive_entropy(np.array([[1.0, 0.0, 0.5, 0.9]]), axis=0)  # K = 1: binary entropy
    assert np.allclose(sigmoid, h, atol=1e-6)
    three = predictive_entropy(torch.full((2, 3, 5), 1 / 3), axis=1)
    assert isinstance(three, torch.Tensor) and three.dtype == torch.float32 and three.shape == (2, 5)
    assert torch.allclose(three, torch.ones(2, 5))


def test_mutual_information_agreement_and_disagreement():
    agree = np.tile(np.array([[0.7], [0.3]]), (5, 1, 1))  # (N=5, K=2, 1 voxel), all samples equal
    assert mutual_information(agree)[0] == pytest.approx(0.0, abs=1e-6)
    opposite = np.array([[[1.0], [0.0]], [[0.0], [1.0]]])  # each confident, they disagree: MI = 1
    assert mutual_information(opposite)[0] == pytest.approx(1.0, abs=1e-6)
    soft = np.array([[[0.9], [0.1]], [[0.1], [0.9]]])  # H(mean) = 1, mean H = H_09
    assert mutual_information(soft)[0] == pytest.approx(1.0 - H_09, abs=1e-6)
    # class axis first, samples second, as a torch tensor
    t = torch.tensor(soft).permute(1, 0, 2)
    assert float(mutual_information(t, sample_axis=1, class_axis=0)[0]) == pytest.approx(1.0 - H_09, abs=1e-6)


def test_all_maps_lie_in_unit_interval():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4), size=(6, 50)).transpose(0, 2, 1)  # (N, K, voxels)
    samples = rng.normal(100, 30, size=(6, 50)) * rng.uniform(0, 3, size=50)
    maps = [
        predictive_entropy(probs[0], axis=0),
        mutual_information(probs),
        sample_variance_map(samples),
        aleatoric_to_unit(rng.normal(0, 20, 50)),
        aleatoric_to_unit(np.array([-1e6, 1e6, np.finfo(np.float32).max])),
    ]
    for m in maps:
        assert m.dtype == np.float32 and np.all((m >= 0) & (m <= 1)) and np.all(np.isfinite(m))


def test_sample_variance_map_transform():
    same = np.ones((4, 3, 3)) * 5
    assert np.all(sample_variance_map(same) == 0)
    # two samples m - d, m + d: std (N - 1) = d * sqrt(2); with c = std the map is exactly 0.5
    d = 0.1
    samples = np.stack([np.full(3, 1 - d), np.full(3, 1 + d)])
    u = sample_variance_map(samples, intensity_range=1.0, relative_scale=d * math.sqrt(2))
    assert np.allclose(u, 0.5, atol=1e-6)
    # default reference: the robust range of the sample mean
    mean = np.linspace(0, 200, 1000)
    noisy = np.stack([mean - 5, mean + 5])
    c = 0.05 * robust_intensity_range(mean)
    expected = 5 * math.sqrt(2) / (5 * math.sqrt(2) + c)
    assert np.allclose(sample_variance_map(noisy), expected, atol=1e-6)
    with pytest.raises(ValueError, match="at least 2 samples"):
        sample_variance_map(np.ones((1, 3)))


def test_aleatoric_matches_sample_convention():
    c = 0.05
    log_var = torch.tensor([2 * math.log(c), -50.0, 50.0])  # sigma = c -> 0.5
    u = aleatoric_to_unit(log_var)
    assert isinstance(u, torch.Tensor)
    assert u[0].item() == pytest.approx(0.5, abs=1e-6) and u[1].item() < 1e-6 and u[2].item() == pytest.approx(1.0)
    assert float(aleatoric_to_unit(np.array([2 * math.log(10.0)]), intensity_range=200)[0]) == pytest.approx(0.5)


def test_enable_mc_dropout_switches_only_dropout():
    model = nn.Sequential(nn.Linear(16, 64), nn.BatchNorm1d(64), nn.Dropout(0.5), nn.Linear(64, 4)).eval()
    x = torch.randn(8, 16)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        with enable_mc_dropout(model) as m:
            assert m is model and model[2].training and not model[1].training and not model.training
            assert not torch.equal(model(x), model(x))
    assert not any(layer.training for layer in model.modules())
    with pytest.raises(RuntimeError), enable_mc_dropout(model):
        raise RuntimeError("inference failed")
    assert not model[2].training  # restored even after an error
    model.train()
    with enable_mc_dropout(model):
        pass
    assert all(layer.training for layer in model.modules())  # previous state, not blanket eval


def test_enable_mc_dropout_refuses_models_without_dropout():
    with pytest.raises(InputError, match="Sequential: has no active dropout"):
        with enable_mc_dropout(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.0))):
            pass


def test_flip_tta_pairs():
    pairs = flip_tta_transforms(3)
    assert len(pairs) == 8 and pairs[0][0].dims == ()
    x = torch.arange(2 * 3 * 4 * 5).reshape(1, 2, 3, 4, 5).float()
    arr = x.numpy()

    def model(t):  # nearest 2x through-plane upsampling: flip-equivariant like the protocols' grids
        return t.repeat_interleave(2, dim=-1)

    for forward, inverse in pairs:
        assert torch.equal(inverse(forward(x)), x)
        assert np.array_equal(inverse(forward(arr)), arr)
        assert torch.equal(inverse(model(forward(x))), model(x))
    assert len(flip_tta_transforms(3, axes=[0, 1])) == 4
    assert flip_tta_transforms(2)[1][0].dims == (-2,)
    with pytest.raises(ValueError, match="axes"):
        flip_tta_transforms(2, axes=[2])


def test_summary_hand_values():
    u = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    s = summarize(u)
    # mean 0.5; p95 at index 0.95 * 5 = 4.75 -> 0.8 + 0.75 * 0.2 = 0.95; 3 of 6 values > 0.5
    assert s == pytest.approx({"mean": 0.5, "p95": 0.95, "fraction_above_0.5": 0.5})
    masked = summarize(torch.tensor(u), mask=np.array([1, 1, 1, 0, 0, 1]))
    assert masked == pytest.approx({"mean": 0.4, "p95": 0.91, "fraction_above_0.5": 0.25})
    with pytest.raises(ValueError, match="empty"):
        summarize(u, mask=np.zeros(6))
