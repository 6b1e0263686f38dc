"""Self-supervised SR (``--model self``): grids, data preservation, learning, cancel, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from JointSRSegLib.api import CancelToken
from JointSRSegLib.baselines import upsample_image
from JointSRSegLib.degradation import crop_to_grid, simulate_slice_gaps, simulate_thick_slices
from JointSRSegLib.errors import CancelledError
from JointSRSegLib.geometry import insert_grid, subdivide_grid
from JointSRSegLib.metrics import psnr
from JointSRSegLib.selfsr import self_supervised_sr
from JointSRSegLib.selfsr_net import cubic_matrix
from JointSRSegLib.volume import Volume

FAST = {"batch_size": 4, "patch_hr": 16, "network_options": {"features": 8, "blocks": 1}}


def _oblique() -> np.ndarray:
    a, b = np.deg2rad(20), np.deg2rad(-35)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    return rz @ rx


def _blobs(shape=(40, 40, 40), seed=0) -> np.ndarray:
    """Smooth, isotropic random structure: in-plane statistics equal through-plane ones."""
    rng = np.random.default_rng(seed)
    x = gaussian_filter(rng.normal(size=shape), 2.0)
    return ((x - x.min()) / (x.max() - x.min()) * 100.0).astype(np.float32)


@pytest.mark.parametrize("axis", [0, 2])
@pytest.mark.parametrize("protocol", ["sr", "interp"])
def test_output_grid_matches_protocol(axis, protocol):
    shape = [14, 12, 10]
    shape[axis] = 5
    vol = Volume(np.random.default_rng(1).random(shape, dtype=np.float32) * 50,
                 spacing=(0.9, 1.1, 1.0)[:axis] + (3.0,) + (0.9, 1.1, 1.0)[axis + 1:],
                 origin=(12.5, -30.0, 7.25), direction=_oblique())
    out, report = self_supervised_sr(vol, protocol, 3, axis, time_budget=30, max_steps=3, **FAST)
    expected = subdivide_grid(vol, 3, axis) if protocol == "sr" else insert_grid(vol, 3, axis)
    assert out.grid.almost_equal(expected)
    assert out.array.dtype == np.float32 and np.isfinite(out.array).all()
    assert report["training"]["steps"] == 3 and report["network"]["scale"] == [1, 3]


def test_interp_keeps_acquired_slices_exactly():
    hr = Volume(_blobs((24, 24, 17)).astype(np.int16), spacing=(1, 1, 1), origin=(0, 0, 0))
    lr = simulate_slice_gaps(hr, 4, 2)
    out, _ = self_supervised_sr(lr, "interp", 4, 2, time_budget=30, max_steps=5, **FAST)
    assert out.shape == (24, 24, 17)
    np.testing.assert_array_equal(out.array[..., ::4], lr.array.astype(np.float32))


def test_cubic_base_positions_follow_the_protocols():
    m = cubic_matrix(6, "interp", 3)
    np.testing.assert_allclose(m[::3], np.eye(6), atol=1e-12)  # acquired samples reproduced
    ramp = np.arange(6.0)
    sr = cubic_matrix(6, "sr", 2) @ ramp  # sub-slices of slab i at i -/+ 1/4 (cubic is exact on ramps)
    np.testing.assert_allclose(sr[3:9], ((np.arange(12) + 0.5) / 2 - 0.5)[3:9], atol=1e-12)


def test_short_self_training_beats_linear_interpolation():
    hr = Volume(_blobs(), spacing=(1, 1, 1), origin=(0, 0, 0))
    lr = simulate_thick_slices(hr, 4, 2)
    out, report = self_supervised_sr(
        lr, "sr", 4, 2, time_budget=60, max_steps=100, seed=0, batch_size=8, patch_hr=32,
        network_options={"features": 16, "blocks": 2},
    )
    ref = crop_to_grid(hr, out.grid).array
    linear = upsample_image(lr, "sr", 4, 2, "linear")
    assert linear.grid.almost_equal(out.grid)
    gain = psnr(out.array, ref) - psnr(linear.array, ref)
    assert gain > 1.0, f"self-SR gains only {gain:.2f} dB over linear"
    curve = report["training"]["curve"]
    assert curve[-1]["l1"] < curve[0]["l1"]


def test_cancellation_mid_training_raises():
    token = CancelToken()
    seen = []

    def progress(fraction, stage):
        seen.append(stage)
        if "training" in stage and fraction > 0.1:
            token.cancel()

    vol = Volume(_blobs((20, 20, 5)), spacing=(1, 1, 4), origin=(0, 0, 0))
    with pytest.raises(CancelledError):
        self_supervised_sr(vol, "sr", 4, 2, time_budget=60, max_steps=1000, progress=progress, cancel=token, **FAST)
    assert "self-SR: applying the network" not in seen


def test_fixed_seed_and_steps_are_deterministic_and_progress_is_monotonic():
    vol = Volume(_blobs((20, 18, 6)), spacing=(1, 1, 3), origin=(0, 0, 0))
    fractions: list[float] = []
    a, rep_a = self_supervised_sr(vol, "sr", 3, 2, time_budget=60, max_steps=12, seed=3,
                                  progress=lambda f, s: fractions.append(f), **FAST)
    b, rep_b = self_supervised_sr(vol, "sr", 3, 2, time_budget=60, max_steps=12, seed=3, **FAST)
    c, _ = self_supervised_sr(vol, "sr", 3, 2, time_budget=60, max_steps=12, seed=4, **FAST)
    np.testing.assert_array_equal(a.array, b.array)
    assert [p["l1"] for p in rep_a["training"]["curve"]] == [p["l1"] for p in rep_b["training"]["curve"]]
    assert not np.array_equal(a.array, c.array)
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert all(y >= x for x, y in zip(fractions, fractions[1:]))
    assert any(0.05 < f < 0.85 for f in fractions)


def test_time_budget_stops_training():
    vol = Volume(_blobs((20, 20, 5)), spacing=(1, 1, 4), origin=(0, 0, 0))
    _, report = self_supervised_sr(vol, "sr", 4, 2, time_budget=3.0, **FAST)
    assert report["training"]["steps"] > 0
    assert report["timings_s"]["total"] < 10.0


def test_a_machine_that_slows_down_mid_run_gets_a_larger_inference_reserve(monkeypatch):
    """The inference time is measured once, before training; when the held-back scoring later runs
    slower (a shared CPU), the reserve is scaled by that slowdown so the budget still holds."""
    import time as clock

    import JointSRSegLib.selfsr as selfsr

    calls = []
    original = selfsr.validation_l1

    def slower_after_the_first(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            clock.sleep(0.2)  # every later scoring takes far longer than the first
        return original(*args, **kwargs)

    monkeypatch.setattr(selfsr, "validation_l1", slower_after_the_first)
    vol = Volume(_blobs((20, 20, 5)), spacing=(1, 1, 4), origin=(0, 0, 0))
    _, report = self_supervised_sr(vol, "sr", 4, 2, time_budget=3.0, **{**FAST, "validate_every": 5,
                                                                         "patience": 0})  # fmt: skip
    training = report["training"]
    assert len(calls) > 1 and training["slowdown_at_last_check"] > 1.5
    assert training["slowdown_at_last_check"] <= selfsr.MAX_SLOWDOWN
    assert report["timings_s"]["total"] < 10.0
