"""``jointsrseg demo`` end to end on the bundled sample: outputs on the HR grid, scores, preview."""

from __future__ import annotations

import json

import numpy as np
from conftest import SAMPLE

from JointSRSegLib.cli import main
from JointSRSegLib.degradation import simulate_thick_slices
from JointSRSegLib.io import read_volume


def test_sample_data_and_licence_ship_with_the_repo():
    t1 = read_volume(SAMPLE / "MNI152_T1_1mm.nii.gz")
    tissue = read_volume(SAMPLE / "MNI152_tissue_1mm.nii.gz")
    assert t1.grid.almost_equal(tissue.grid) and t1.spacing == (1.0, 1.0, 1.0)
    assert set(np.unique(tissue.array)) == {0, 1, 2}
    assert "McConnell Brain Imaging Centre" in (SAMPLE / "LICENSE.txt").read_text()


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
