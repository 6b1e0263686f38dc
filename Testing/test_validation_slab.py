"""Selection cases come from the validation slab only, and candidates are scored against bspline."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.quality import SAMPLE, SYNTH_SEEDS, TEST_START, slab_cases
from benchmarks.validation_slab import SELECTION_SEEDS, VALIDATION_SLAB, score
from JointSRSegLib.geometry import continuous_index
from JointSRSegLib.io import read_volume


@pytest.fixture(scope="module")
def cases() -> list[dict]:
    return slab_cases(*VALIDATION_SLAB, SELECTION_SEEDS[:1], crop=[30, 48, 48])


def test_selection_never_touches_the_test_slab_or_its_contrasts(cases):
    start, stop = VALIDATION_SLAB
    assert stop <= TEST_START and not set(SELECTION_SEEDS) & set(SYNTH_SEEDS)
    t1, synthetic = cases
    assert t1["hr"].shape[0] == stop - start  # the whole slab along x, nothing beyond it
    sample = read_volume(SAMPLE).grid
    corners = t1["hr"].grid.physical_points(np.array([[0, 0, 0], [stop - start - 1, 0, 0]], dtype=float))
    sample_x = continuous_index(sample, corners)[:, 0]  # where the slab lies in the sample, in voxels
    np.testing.assert_allclose(sample_x, [start, stop - 1], atol=1e-4)
    assert synthetic["name"] == f"synth{SELECTION_SEEDS[0]}" and synthetic["hr"].grid.almost_equal(t1["hr"].grid)
    assert not np.allclose(synthetic["hr"].array, t1["hr"].array)
    np.testing.assert_array_equal(synthetic["labels"], t1["labels"])


def test_score_reports_gain_over_bspline_per_case(cases):
    own = score("bspline", "sr", 4, cases)
    assert own["gain_over_bspline_db"] == 0 and own["dice_mean"] is None
    linear = score("linear", "sr", 4, cases)
    assert [c["case"] for c in linear["cases"]] == ["T1", f"synth{SELECTION_SEEDS[0]}"]
    assert all(c["gain_over_bspline_db"] < 0 for c in linear["cases"])  # linear is blurrier than B-spline
    per_case = [c["gain_over_bspline_db"] for c in linear["cases"]]
    assert linear["gain_over_bspline_db"] == pytest.approx(np.mean(per_case), abs=1e-3)
    with pytest.raises(ValueError, match="does not apply to protocol inplane"):
        score("linear", "inplane", 4, cases)
