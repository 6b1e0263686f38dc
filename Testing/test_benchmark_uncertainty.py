"""The calibration benchmark's figures (``benchmarks/uncertainty.py``), checked against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.uncertainty import (
    auroc,
    average_precision,
    boundary_closeness,
    decile_error_rates,
    error_calibration,
    markdown,
    merge_payloads,
    seg_scores,
    sr_scores,
    top_overlap,
)


def test_auroc_ranks_with_ties_averaged():
    positive = np.array([0, 0, 1, 1], bool)
    assert auroc(np.array([0.1, 0.2, 0.8, 0.9]), positive) == 1.0
    assert auroc(np.array([0.9, 0.8, 0.2, 0.1]), positive) == 0.0
    assert auroc(np.full(4, 0.5), positive) == 0.5
    # pairs (pos, neg): (0.35 > 0.1), (0.35 < 0.4), (0.8 > both) -> 3 of 4
    assert auroc(np.array([0.1, 0.4, 0.35, 0.8]), positive) == pytest.approx(0.75)
    assert np.isnan(auroc(np.array([0.1, 0.2]), np.array([True, True])))


def test_average_precision_by_hand():
    score = np.array([0.9, 0.8, 0.7, 0.6])
    # positives at ranks 1 and 3: precision 1/1 and 2/3
    assert average_precision(score, np.array([1, 0, 1, 0], bool)) == pytest.approx((1 + 2 / 3) / 2)
    # tied scores share one precision: both in one group of 4 with 2 positives -> 0.5
    assert average_precision(np.full(4, 0.3), np.array([1, 0, 1, 0], bool)) == pytest.approx(0.5)


def test_error_calibration_is_zero_when_the_map_is_the_error_rate():
    rng = np.random.default_rng(0)
    probability = rng.uniform(0, 1, 200_000)
    error = rng.uniform(0, 1, probability.size) < probability  # errors happen with the stated probability
    ece, table = error_calibration(probability, error)
    assert ece < 0.01 and len(table) == 10
    assert all(abs(t["mean_map"] - t["error_rate"]) < 0.02 for t in table)
    ece, _ = error_calibration(np.zeros(1000), np.arange(1000) < 300)  # says "never wrong", wrong 30 %
    assert ece == pytest.approx(0.3)


def test_decile_and_top_overlap():
    score = np.arange(100.0)
    error = score >= 90
    assert decile_error_rates(score, error) == [0.0] * 9 + [1.0]
    assert top_overlap(score, score) == 1.0  # the map is the error: every large error in the top tenth
    assert top_overlap(-score, score) == 0.0


def test_boundary_closeness_is_highest_at_label_boundaries():
    labels = np.zeros((1, 1, 9), np.uint8)
    labels[..., 5:] = 1
    close = boundary_closeness(labels, (1.0, 1.0, 2.0))[0, 0]
    # voxel 4 (label 0) and 5 (label 1) touch the boundary: distance one voxel = 2 mm -> 1 / 3
    assert close[4] == pytest.approx(1 / 3) and close[5] == pytest.approx(1 / 3)
    assert close[0] < close[3] < close[4] and close[8] < close[5]


def test_seg_and_sr_scores_on_a_map_that_knows_the_errors():
    rng = np.random.default_rng(1)
    reference = rng.integers(0, 3, (20, 20, 20)).astype(np.uint8)
    labels = reference.copy()
    wrong = rng.uniform(size=labels.shape) < 0.2
    labels[wrong] = (labels[wrong] + 1) % 3
    mask = np.ones(labels.shape, bool)
    mask[0] = False
    knows = np.where(wrong, 0.9, 0.05).astype(np.float32)
    s = seg_scores(knows, labels, reference, mask)
    assert s["auroc"] == 1.0 and s["ap"] == 1.0 and s["voxels"] == int(mask.sum())
    assert s["error_rate"] == pytest.approx(float(wrong[mask].mean()), abs=1e-4)
    hr = rng.normal(size=labels.shape).astype(np.float32)
    noise = rng.normal(size=labels.shape).astype(np.float32) * np.where(wrong, 1.0, 0.01)
    r = sr_scores(np.abs(noise), hr + noise, hr, mask)
    assert r["spearman"] == pytest.approx(1.0) and r["top5_in_top10"] == 1.0
    r = sr_scores(rng.uniform(size=labels.shape), hr + noise, hr, mask)
    assert abs(r["spearman"]) < 0.05 and r["top5_in_top10"] < 0.2
    r = sr_scores(np.abs(noise) / 4.0, hr + noise, hr, mask, intensity_range=4.0)  # calibrated in range units
    assert r["mean_map"] == pytest.approx(r["mean_relative_error"], rel=1e-5)
    assert r["mean_relative_error"] == pytest.approx(float(np.abs(noise[mask]).mean() / 4.0), rel=1e-5)


def test_markdown_lists_every_scored_row_and_failure():
    seg = {"error_rate": 0.2, "auroc": 0.91, "ap": 0.5, "ece": 0.04}
    rows = [{"case": "c1", "method": "atropos:auto", "seconds": 10.0, "overhead": 1.0, "seg": seg,
             "seg_baseline": {**seg, "auroc": 0.8}},
            {"case": "c1", "method": "self:auto", "seconds": 60.0,
             "sr": {"spearman": 0.4, "top5_in_top10": 0.3}, "sr_baseline": {"spearman": 0.2, "top5_in_top10": 0.1}},
            {"case": "c2", "method": "x:auto", "error": "InputError: nope"}]
    text = markdown({"command": "python -m benchmarks.uncertainty", "threads": 2, "date": "2026-12-02",
                     "cases": ["c1", "c2"], "rows": rows, "environment": {}})
    assert "| c1 | `atropos:auto` | 0.200 | 0.910 | 0.800 |" in text
    assert "| c1 | `self:auto` | 0.400 | 0.200 | 0.300 | 0.100 | – | – | 60 (–×) |" in text
    assert "c2 `x:auto`: InputError: nope" in text
    assert "| c1 | `atropos:auto` | none |" in text  # meets every target
    assert "| c1 | `self:auto` | Spearman 0.400 < 0.5 |" in text


def test_merge_replaces_a_re_run_row_and_keeps_the_rest():
    base = {"threads": 2, "date": "d", "environment": {}, "wall_s": 1.0}
    first = {**base, "command": "run 1", "cases": ["a", "b"], "methods": ["m:auto", "n:auto"],
             "rows": [{"case": "a", "method": "m:auto", "seconds": 1.0},
                      {"case": "b", "method": "m:auto", "error": "x"},
                      {"case": "b", "method": "n:auto", "seconds": 2.0}]}
    redo = {**base, "command": "run 2", "cases": ["b"], "methods": ["m:auto"],
            "rows": [{"case": "b", "method": "m:auto", "seconds": 3.0}]}
    merged = merge_payloads([first, redo])
    assert merged["command"] == "run 1 ; run 2" and merged["wall_s"] == 2.0
    assert [(r["case"], r["method"], r.get("seconds")) for r in merged["rows"]] == [
        ("a", "m:auto", 1.0), ("b", "m:auto", 3.0), ("b", "n:auto", 2.0)]
