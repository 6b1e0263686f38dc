"""``--model auto`` (the CLI default) and ``predict(model="auto")`` run the path the real-scan report
measured best for the request (JointSRSegLib.defaults.choose_for_input), and say so in report.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from JointSRSegLib import predict
from JointSRSegLib.cli import main
from JointSRSegLib.defaults import choose_default, choose_for_input
from JointSRSegLib.degradation import crop_to_grid, simulate_thick_slices
from JointSRSegLib.geometry import subdivide_grid
from JointSRSegLib.io import read_volume, write_volume
from JointSRSegLib.metrics import psnr
from JointSRSegLib.volume import Volume


def _hr_head(seed: int = 0) -> Volume:
    """A textured ellipsoid 'head' on an empty background, 1 mm isotropic."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:28, :26, :32].astype(np.float32)
    inside = ((z - 13.5) / 11) ** 2 + ((y - 12.5) / 10) ** 2 + ((x - 15.5) / 13) ** 2 < 1
    array = np.where(inside, 60 + 30 * np.sin(z / 2) * np.cos(x / 3) + rng.normal(0, 1, z.shape), 0)
    return Volume(array[None].astype(np.float32), (1.0, 1.0, 1.0), (3.0, -2.0, 1.0))


def _head(tmp_path: Path, name: str = "thick.nii.gz", seed: int = 0) -> Path:
    """Its sr-protocol x4 thick-slice acquisition along axis 2."""
    return write_volume(simulate_thick_slices(_hr_head(seed), 4, 2), tmp_path / name)


def test_choice_follows_the_defaults_rule():
    """The CLI gets exactly what the Slicer panel preselects, with the classical fallbacks."""
    for tasks in (("sr",), ("interp",), ("sr", "seg")):
        for factor in (2, 3, 4, 7):
            panel = choose_default(tasks, None, factor, fallback="atropos" if "seg" in tasks else "bspline")
            assert choose_for_input(tasks, factor) == panel
    sr_seg = choose_for_input(("sr", "seg"), 4)
    assert choose_for_input(("seg",), 4).seg_model == sr_seg.seg_model  # seg alone reads the same best SR
    assert choose_for_input(("seg",), 1).model == "atropos"  # the input grid: only Atropos segments it
    assert choose_for_input(("sr",), 4, channels=2).model == "bspline"  # self-trained modes are one-channel
    mine = choose_for_input(("sr", "seg"), 4, seg_model="atropos")
    assert mine.seg_model is None and mine.model == choose_default(("sr",), None, 4).model


def test_cli_default_runs_the_chosen_model_on_the_protocol_grid(tmp_path, capsys):
    path = _head(tmp_path)
    out = tmp_path / "auto"
    assert main(["run", "--input", str(path), "--tasks", "sr", "--scale", "4", "--time-budget", "10",
                 "--out-dir", str(out)]) == 0  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    expected = choose_for_input(("sr",), 4)
    assert report["model_choice"] == {"requested": "auto", "model": expected.model, "seg_model": None,
                                      "reason": expected.reason}  # fmt: skip
    assert report["model"]["id"] == expected.model
    sr = read_volume(out / "sr.nii.gz")
    assert sr.grid.almost_equal(subdivide_grid(read_volume(path).grid, 4, 2), tol=1e-5)
    hr = crop_to_grid(_hr_head(), sr.grid).array
    bspline = predict(read_volume(path), model="bspline", tasks=("sr",), scale=4).outputs["sr"].array
    assert psnr(sr.array, hr) > psnr(bspline, hr) - 1.0  # an SR of this scan (the report measures gains)
    assert abs(float(sr.array[0, :2].mean())) < 1.0  # the empty border stays empty


def test_several_inputs_and_label_maps_fall_back_to_the_classical_methods(tmp_path):
    paths = [str(_head(tmp_path, f"c{i}.nii.gz", seed=i)) for i in range(2)]
    two = predict(paths, model="auto", tasks=("sr",), scale=4)
    assert two.report["model_choice"]["model"] == "bspline" and "one-channel" in two.report["model_choice"]["reason"]
    assert np.array_equal(two.outputs["sr"].array, predict(paths, model="bspline", tasks=("sr",), scale=4)
                          .outputs["sr"].array)  # fmt: skip
    labels = read_volume(paths[0])
    labels = labels.with_array((labels.array > 50).astype(np.uint8) + (labels.array > 80).astype(np.uint8))
    auto = predict(labels, model="auto", tasks=("sr",), scale=4)
    assert auto.report["model_choice"]["model"] == "bspline"
    assert np.array_equal(auto.outputs["sr"].array, predict(labels, model="bspline", tasks=("sr",), scale=4)
                          .outputs["sr"].array)  # fmt: skip
    assert set(np.unique(auto.outputs["sr"].array)) <= {0, 1, 2}  # labels stay labels
