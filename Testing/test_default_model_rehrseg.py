"""The shipped REHRSeg package ``rehrseg-brain-small`` (``Resources/Models/``, issue #7 item 4).

It loads, passes SHA-256 verification (tampered weights are refused), carries a model card, and --
a regression guard of the shipped weights, not a timing test -- segments a fixed crop of the held-out
hemisphere of the MNI152 sample from x4 thick slices: the HR segmentation lies on the HR grid, its
mean GM/WM Dice is within 0.05 of the value recorded in ``model.json`` (``metrics.regression_check``,
also in the model card), and its UASR uncertainty map is in [0, 1] on the same grid.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from package_factory import assert_tampered_weights_refused

from benchmarks.regression_check import crop
from JointSRSegLib.api import predict
from JointSRSegLib.degradation import crop_to_grid, simulate_thick_slices
from JointSRSegLib.io import read_volume
from JointSRSegLib.metrics import dice
from JointSRSegLib.packaging import available_models, load_package

ROOT = Path(__file__).resolve().parents[1]
MODEL_ID = "rehrseg-brain-small"
FOLDER = ROOT / "Resources" / "Models" / MODEL_ID
SAMPLE = ROOT / "Resources" / "SampleData" / "MNI152_T1_1mm.nii.gz"
TISSUE = ROOT / "Resources" / "SampleData" / "MNI152_tissue_1mm.nii.gz"
MAX_BYTES = 25 * 1024 * 1024
DICE_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads((FOLDER / "model.json").read_text())


def test_package_loads_verifies_and_documents(meta, tmp_path):
    package = load_package(FOLDER)  # checks the schema and the weights' SHA-256
    assert package.id == MODEL_ID and package.tasks == ("seg",) and package.protocol == "sr"
    assert meta["architecture"] == "rehrseg_seg_uasr" and meta["uncertainty"] == ["seg_entropy", "seg_uasr"]
    assert package.scale.factors == (4,)
    assert (FOLDER / "model.safetensors").stat().st_size <= MAX_BYTES
    assert meta["intended_use"] == "Research use, not for diagnosis." and meta["license"] == "CC-BY-4.0"
    assert {label["value"]: label["name"] for label in meta["labels"]} == {1: "Grey matter", 2: "White matter"}
    assert (ROOT / "docs" / "models" / f"{MODEL_ID}.md").is_file()
    assert MODEL_ID in {info.id for info in available_models() if info.source == "builtin"}
    net = package.build_model("cpu")  # strict load of both networks
    assert {name.split(".")[0] for name, _ in net.named_parameters()} == {"segmenter", "teacher"}
    assert_tampered_weights_refused(FOLDER, tmp_path)


def test_hr_segmentation_and_uasr_map_on_held_outcrop(meta):
    check = meta["metrics"]["regression_check"]
    assert check["protocol"] == "sr" and check["factor"] == 4 and check["crop_start"][0] >= 104  # test slab
    hr = read_volume(SAMPLE)
    hr = crop(hr.with_array(hr.array.astype(np.float32)), check["crop_start"], check["crop_size"])
    tissue = crop(read_volume(TISSUE), check["crop_start"], check["crop_size"])
    lr = simulate_thick_slices(hr, 4, 2)
    result = predict(lr, model=MODEL_ID, tasks=("seg",), scale=4, axis=2, device="cpu", uncertainty=True,
                     uncertainty_method="uasr")
    seg, u = result.outputs["seg"], result.outputs["uncertainty_seg"]
    assert seg.grid.almost_equal(hr.grid) and u.grid.almost_equal(hr.grid)
    assert result.report["model"]["uncertainty_kinds"] == {"uncertainty_seg": "uasr"}
    assert np.isfinite(u.array).all() and u.array.min() >= 0.0 and u.array.max() <= 1.0
    labels = crop_to_grid(tissue, seg.grid).array[0]
    mean_dice = float(np.mean([dice(seg.array[0], labels, v) for v in (1, 2)]))
    assert abs(mean_dice - check["dice_mean"]) <= DICE_TOLERANCE, (
        f"mean Dice {mean_dice:.3f}, recorded {check['dice_mean']:.3f}"
    )
