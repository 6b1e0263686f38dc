"""Calibrated uncertainty maps (issue #17): the fits, the signals, the stored calibration and its units."""

from __future__ import annotations

import numpy as np
import pytest

from JointSRSegLib import calibration as c
from JointSRSegLib.errors import InputError
from JointSRSegLib.preview import render_preview
from JointSRSegLib.vocabulary import CALIBRATED_UNITS, RAW_UNCERTAINTY_UNIT
from JointSRSegLib.volume import Volume


def test_fit_logistic_recovers_the_generating_model():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40_000, 3))
    truth = np.array([1.0, -2.0, 0.5, 0.3])  # intercept last
    y = rng.random(len(x)) < 1.0 / (1.0 + np.exp(-(x @ truth[:3] + truth[3])))
    np.testing.assert_allclose(c.fit_logistic(x, y), truth, atol=0.08)


def test_fit_log_linear_recovers_the_conditional_mean():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40_000, 3))
    truth = np.array([0.3, -0.2, 0.1, -2.0])
    y = rng.exponential(np.exp(x @ truth[:3] + truth[3]))  # any positive noise with that mean
    np.testing.assert_allclose(c.fit_log_linear(x, y), truth, atol=0.05)


def test_slab_position_is_zero_in_the_middle_and_one_at_the_ends():
    np.testing.assert_allclose(c.slab_position(8, 4, "sr"), [0.75, 0.25, 0.25, 0.75] * 2)
    np.testing.assert_allclose(c.slab_position(5, 4, "interp"), [0.0, 0.5, 1.0, 0.5, 0.0])  # acquired: 0


def test_seg_features_on_a_known_segmentation():
    labels = np.zeros((12, 12, 12), np.uint8)
    labels[2:10, 2:10, 2:10] = 1
    labels[4:8, 4:8, 4:8] = 2
    mask = np.zeros_like(labels, bool)
    mask[1:11, 1:11, 1:11] = True
    posteriors = np.zeros((3, *labels.shape), np.float32)
    posteriors[0], posteriors[1], posteriors[2] = 0.6, 0.3, 0.1
    f = dict(zip(c.SEG_FEATURES, c.seg_features(posteriors, labels, mask, (1.0, 1.0, 1.0))))
    assert f["one_minus_max"][5, 5, 5] == pytest.approx(0.4) and f["one_minus_max"][0, 0, 0] == 0.0
    assert f["one_minus_margin"][5, 5, 5] == pytest.approx(0.7)
    assert f["label_mixing"][5, 5, 5] == 0.0  # deep inside the WM cube
    assert f["label_mixing"][4, 5, 5] == pytest.approx(9 / 27)  # a face of the cube: a 3x3 slab is GM
    assert f["boundary_closeness"][4, 5, 5] == pytest.approx(0.5)  # 1 mm from GM
    assert f["edge_inside"][1, 5, 5] == pytest.approx(np.exp(-1 / c.EDGE_MM))
    assert f["edge_outside"][0, 5, 5] == pytest.approx(np.exp(-1 / c.EDGE_MM)) and f["edge_inside"][0, 5, 5] == 0
    assert f["is_gm"][3, 3, 3] == 1 and f["is_wm"][5, 5, 5] == 1 and f["inside"][0, 0, 0] == 0


def test_sr_features_follow_the_spread_the_acquired_slice_and_the_slab():
    output = np.zeros((8, 8, 16), np.float32)
    output[:, :, 4:8] = 0.5  # the second slab is brighter than the slice it came from
    lr = np.zeros((8, 8, 4), np.float32)
    spread = np.full_like(output, 0.01)
    f = dict(zip(c.SR_FEATURES, c.sr_features(output, spread, lr, axis=2, factor=4, protocol="sr")))
    assert f["log_spread"][0, 0, 0] == pytest.approx(np.log(0.01 + c.LOG_FLOOR))
    assert f["log_spread_smooth"][3, 3, 3] == pytest.approx(np.log(0.01 + c.LOG_FLOOR), abs=1e-5)
    assert f["log_grad_inplane"].max() == pytest.approx(np.log(c.LOG_FLOOR), abs=1e-4)  # flat in-plane
    assert f["log_grad_through"][4, 4, 4] > f["log_grad_through"][4, 4, 14]  # at the step, not far from it
    residual = f["log_lr_residual_smooth"][4, 4]
    assert residual[6] == pytest.approx(np.log(0.5 * 0.9545 + c.LOG_FLOOR), abs=0.05)  # slab 1 differs from lr
    assert residual[13] == pytest.approx(np.log(c.LOG_FLOOR), abs=1e-3)  # slab 3 equals its acquired slice
    np.testing.assert_allclose(f["slab_end"][0, 0, :4], [0.75, 0.25, 0.25, 0.75])


def test_calibrated_maps_apply_their_entry_and_refuse_a_foreign_one():
    n = len(c.SR_FEATURES)
    entry = {"features": list(c.SR_FEATURES), "weights": [1.0] + [0.0] * n}  # E = exp(log spread)
    features = np.stack([np.log(np.full((2, 2, 2), 0.04))] + [np.zeros((2, 2, 2))] * (n - 1))
    np.testing.assert_allclose(c.expected_error(entry, features), 0.04, rtol=1e-5)
    seg_entry = {"features": list(c.SEG_FEATURES), "weights": [0.0] * len(c.SEG_FEATURES) + [0.0]}
    np.testing.assert_allclose(c.error_probability(seg_entry, np.zeros((len(c.SEG_FEATURES), 2, 2, 2))), 0.5)
    with pytest.raises(InputError, match="calibration features"):
        c.error_probability(entry, features)


def test_network_entry_is_applied_as_stored():
    """A one-hidden-layer entry by hand: h = relu(W1 (x - mean) / std + b1), logit = W2 h + b2."""
    k = len(c.SEG_FEATURES)
    w1 = np.zeros((2, k))
    w1[0, 0], w1[1, 0] = 1.0, -1.0
    entry = {"model": "mlp", "features": list(c.SEG_FEATURES), "mean": [0.5] + [0.0] * (k - 1),
             "std": [0.25] + [1.0] * (k - 1),
             "layers": [{"weight": w1.tolist(), "bias": [0.0, 0.0]}, {"weight": [[2.0, 1.0]], "bias": [-1.0]}]}
    features = np.zeros((k, 3, 1, 1))
    features[0, :, 0, 0] = [0.25, 0.5, 1.0]  # standardised: -1, 0, 2 -> hidden (0, 1), (0, 0), (2, 0)
    logits = np.array([1.0 * 1 - 1.0, -1.0, 2.0 * 2 - 1.0])
    np.testing.assert_allclose(c.error_probability(entry, features)[:, 0, 0], 1 / (1 + np.exp(-logits)), rtol=1e-5)


def test_fit_mlp_is_calibrated_on_its_data_and_deterministic():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(20_000, len(c.SEG_FEATURES))).astype(np.float32)
    p = 1.0 / (1.0 + np.exp(-(2.0 * np.abs(x[:, 0]) - 2.0)))  # not linear in x: |x0|
    y = rng.random(len(x)) < p
    entry = {"features": list(c.SEG_FEATURES), **c.fit_mlp(x, y, "logit", epochs=60)}
    predicted = c.error_probability(entry, x.T.reshape(len(c.SEG_FEATURES), -1, 1, 1))[:, 0, 0]
    assert abs(float(predicted.mean()) - float(y.mean())) < 0.03
    assert np.corrcoef(predicted, p)[0, 1] > 0.95
    assert c.fit_mlp(x, y, "logit", epochs=60)["layers"] == entry["layers"]


def test_calibrated_summary_reports_the_fraction_of_the_region_above_threshold():
    unit = np.array([0.1, 0.6, 0.9, 0.7], np.float32)
    mask = np.array([True, True, True, False])
    summary = c.calibrated_summary(unit, "uncertainty_seg", mask, "brain", "atropos")
    assert summary["unit"] == CALIBRATED_UNITS["uncertainty_seg"] and summary["threshold"] == 0.5
    assert summary["fraction_of_brain_above_threshold"] == pytest.approx(2 / 3, abs=1e-5)
    assert summary["mean_in_brain"] == pytest.approx((0.1 + 0.6 + 0.9) / 3, abs=1e-5)


def test_map_units_and_display_scale():
    report = {"model": {"uncertainty": {"uncertainty_sr": {"unit": CALIBRATED_UNITS["uncertainty_sr"]}},
                        "seg_model": {"uncertainty": {"uncertainty_seg": {"mean": 0.2}}}}}
    units = c.map_units(report)
    assert units == {"uncertainty_sr": CALIBRATED_UNITS["uncertainty_sr"], "uncertainty_seg": RAW_UNCERTAINTY_UNIT}
    assert c.display_scale("uncertainty_sr", units["uncertainty_sr"]) == (CALIBRATED_UNITS["uncertainty_sr"], 0.2)
    assert c.display_scale("uncertainty_seg", RAW_UNCERTAINTY_UNIT) == (RAW_UNCERTAINTY_UNIT, 1.0)


def test_shipped_calibration_beats_its_raw_signal_on_held_out_calibration_cases():
    """Each stored model, refitted without one calibration case, ranks that case's errors at least as well
    as the raw signal it started from (1 - max posterior; the plane spread)."""
    for method, raw, fitted in (("atropos", "raw_auroc_head", "auroc_head"),
                                ("adapt", "raw_spearman_head", "spearman_head"),
                                ("self", "raw_spearman_head", "spearman_head")):
        entry = c.calibration_entry(method)
        assert entry["fitted_on"] and all("s19" not in n and "s20" not in n and "sub21" not in n
                                          for n in entry["fitted_on"])  # never a report's case
        held_out = entry["leave_one_case_out"]
        scored = [s for s in held_out.values() if s[raw] is not None]  # None: a constant raw map (no ranks)
        assert scored and np.mean([s[fitted] for s in scored]) > np.mean([s[raw] for s in scored])


def test_preview_draws_a_labelled_colour_bar():
    grid_volume = Volume(np.zeros((1, 6, 6, 6), np.float32), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))
    panels = {"output": grid_volume.with_array(np.random.default_rng(0).random((1, 6, 6, 6), dtype=np.float32)),
              "uncertainty": grid_volume.with_array(np.full((1, 6, 6, 6), 0.1, np.float32))}
    plain = render_preview(panels)
    labelled = render_preview(panels, units={"uncertainty": ("P(label wrong)", 1.0)})
    assert plain[:8] == labelled[:8] == b"\x89PNG\r\n\x1a\n" and plain != labelled
