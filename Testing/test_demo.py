"""``jointsrseg demo`` end to end on the bundled sample: outputs on the HR grid, scores, preview."""

from __future__ import annotations

import json

import numpy as np
from conftest import SAMPLE
from scipy import ndimage

from JointSRSegLib.cli import main
from JointSRSegLib.degradation import crop_to_grid, simulate_thick_slices
from JointSRSegLib.demo import demo_plan
from JointSRSegLib.io import read_volume


def test_sample_data_and_licence_ship_with_the_repo():
    t1 = read_volume(SAMPLE / "MNI152_T1_1mm.nii.gz")
    tissue = read_volume(SAMPLE / "MNI152_tissue_1mm.nii.gz")
    assert t1.grid.almost_equal(tissue.grid) and t1.spacing == (1.0, 1.0, 1.0)
    assert set(np.unique(tissue.array)) == {0, 1, 2}
    assert "McConnell Brain Imaging Centre" in (SAMPLE / "LICENSE.txt").read_text()


def test_sample_tissue_labels_follow_the_probability_maps():
    """GM/WM = the tissue whose template probability is largest and at least 0.5, never outside the brain.

    Why: the template stores probabilities as uint8 0-255; reading them as 0-1 once labelled every voxel
    with any GM probability (CSF, voxels outside the brain mask) as grey matter."""
    t1 = read_volume(SAMPLE / "MNI152_T1_1mm.nii.gz").array[0]
    tissue = read_volume(SAMPLE / "MNI152_tissue_1mm.nii.gz").array[0]
    probs = [read_volume(SAMPLE / f"MNI152_{t}_prob_1mm.nii.gz") for t in ("gm", "wm")]
    assert all(p.array.dtype == np.uint8 and p.grid.almost_equal(read_volume(SAMPLE / "MNI152_T1_1mm.nii.gz").grid)
               for p in probs)
    gm, wm = (p.array[0].astype(np.float32) / 255.0 for p in probs)
    rest = np.clip(1.0 - gm - wm, 0.0, 1.0)
    expected = np.argmax(np.stack([rest, gm, wm]), axis=0)
    expected[(expected == 1) & (gm < 0.5)] = 0
    expected[(expected == 2) & (wm < 0.5)] = 0
    np.testing.assert_array_equal(tissue, expected)
    assert not np.any((tissue > 0) & (t1 == 0))  # no tissue outside the (skull-stripped) brain
    assert 0.9 < (tissue == 1).sum() / 1.08e6 < 1.1 and 0.9 < (tissue == 2).sum() / 6.32e5 < 1.1
    # the labels agree with the image: GM darker than WM in this T1 everywhere in the median
    assert np.median(t1[tissue == 1]) + 30 < np.median(t1[tissue == 2])


def test_demo_writes_outputs_report_and_preview(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out-dir", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    demo = report["demo"]
    assert demo["factor"] == 4 and demo["protocol"] == "sr"
    scores = demo["metrics_vs_hr"]
    assert 20 < scores["bspline"]["psnr"] < 50 and 0.5 < scores["bspline"]["ssim"] <= 1
    hr = read_volume(SAMPLE / "MNI152_T1_1mm.nii.gz")
    lr = read_volume(out / "input_lr.nii.gz")
    expected_lr = simulate_thick_slices(hr.with_array(hr.array.astype(np.float32)), 4, 2)
    assert lr.grid.almost_equal(expected_lr.grid, tol=1e-5)
    sr = read_volume(out / "sr.nii.gz")
    np.testing.assert_allclose(sr.origin, hr.origin, atol=1e-5)  # the SR grid is the HR grid
    assert sr.spacing == hr.spacing and sr.shape == (hr.shape[0], hr.shape[1], (hr.shape[2] // 4) * 4)
    png = (out / "preview.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    # segmentation by the default rule's package, on the SR grid, scored against the sample labels
    plan = demo_plan()
    assert demo["sr_model"] == plan.sr_model and demo["seg_model"] == plan.seg_model
    seg = read_volume(out / "seg.nii.gz")
    assert seg.grid.almost_equal(sr.grid, tol=1e-5) and set(np.unique(seg.array)) <= {0, 1, 2}
    # 0.925 whole sample with atropos on the self-SR output (its MNI152 priors are this very template: the
    # sample is the training template, an upper bound; docs/benchmarks.md has the unseen subjects)
    assert demo["metrics_vs_hr"]["segmentation"]["mean_dice"] > 0.85
    on_hr = crop_to_grid(hr, seg.grid).array[0]
    outside = ndimage.binary_dilation(on_hr > 0, iterations=2) == 0  # clearly outside the (skull-stripped) brain
    assert np.count_nonzero(seg.array[0][outside]) <= 1e-3 * np.count_nonzero(outside)
