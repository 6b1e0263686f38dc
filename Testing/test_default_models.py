"""The default model packages shipped in ``Resources/Models/`` (issue #7).

Each one loads, passes SHA-256 verification, carries a model card, and -- a regression guard, not a
timing test -- beats B-spline on a fixed crop of the held-out hemisphere of the MNI152 sample at x4 by
at least the margin recorded in its ``model.json`` (``metrics.regression_check``, also in its model
card) minus 0.5 dB.  The crop keeps the whole file well under 90 s on 2 CPU cores.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from JointSRSegLib.api import predict
from JointSRSegLib.degradation import crop_to_grid, simulate_slice_gaps, simulate_thick_slices
from JointSRSegLib.demo import demo_plan
from JointSRSegLib.errors import InputError
from JointSRSegLib.io import read_volume
from JointSRSegLib.metrics import dice, psnr
from JointSRSegLib.packaging import available_models, load_package
from JointSRSegLib.volume import Volume

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "Resources" / "Models"
SAMPLE = ROOT / "Resources" / "SampleData" / "MNI152_T1_1mm.nii.gz"
TISSUE = ROOT / "Resources" / "SampleData" / "MNI152_tissue_1mm.nii.gz"
SHIPPED = ["swinsr-unetr-brain-small", "tasc-swinmt-brain-small"]
MAX_BYTES = 25 * 1024 * 1024
TOLERANCE_DB = 0.5


def crop(volume: Volume, start, size) -> Volume:
    index = tuple(slice(a, a + n) for a, n in zip(start, size))
    origin = volume.grid.physical_points(np.array([start], dtype=float))[0]
    return Volume(np.ascontiguousarray(volume.array[(slice(None), *index)]), volume.spacing, tuple(origin),
                  volume.direction, source=volume.source)


def metadata(model_id: str) -> dict:
    return json.loads((MODELS / model_id / "model.json").read_text())


@pytest.mark.parametrize("model_id", SHIPPED)
def test_package_loads_verifies_and_documents(model_id, tmp_path):
    folder = MODELS / model_id
    package = load_package(folder)  # verifies the schema and the weights' SHA-256
    meta = metadata(model_id)
    assert package.id == model_id and meta["weights_sha256"]
    assert (folder / "model.safetensors").stat().st_size <= MAX_BYTES
    assert "not for diagnosis" in meta["intended_use"].lower()
    assert meta["license"]
    assert {label["value"]: label["name"] for label in meta["labels"]} == {1: "Grey matter", 2: "White matter"}
    assert (ROOT / "docs" / "models" / f"{model_id}.md").is_file()
    assert model_id in {info.id for info in available_models() if info.source == "builtin"}
    # Tampered weights are refused.
    copy = tmp_path / model_id
    shutil.copytree(folder, copy)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(InputError, match="(?i)sha-?256"):
        load_package(copy)


@pytest.mark.parametrize("model_id", SHIPPED)
def test_beats_bspline_on_sample_crop(model_id):
    check = metadata(model_id)["metrics"]["regression_check"]
    protocol, factor = check["protocol"], check["factor"]
    task = "sr" if protocol == "sr" else "interp"
    hr = read_volume(SAMPLE)
    hr = crop(hr.with_array(hr.array.astype(np.float32)), check["crop_start"], check["crop_size"])
    tissue = crop(read_volume(TISSUE), check["crop_start"], check["crop_size"])
    lr = simulate_thick_slices(hr, factor, 2) if protocol == "sr" else simulate_slice_gaps(hr, factor, 2)
    ours = predict(lr, model=model_id, tasks=(task, "seg"), scale=factor, axis=2, device="cpu").outputs
    base = predict(lr, model="bspline", tasks=(task,), scale=factor, axis=2).outputs[task]
    assert ours[task].grid.almost_equal(base.grid)
    reference = crop_to_grid(hr, base.grid).array[0]
    data_range = float(reference.max() - reference.min())
    gain = psnr(ours[task].array[0], reference, data_range) - psnr(base.array[0], reference, data_range)
    assert gain >= check["psnr_gain_over_bspline_db"] - TOLERANCE_DB, (
        f"{model_id}: {gain:+.2f} dB over bspline, recorded {check['psnr_gain_over_bspline_db']:+.2f} dB")
    labels = crop_to_grid(tissue, ours["seg"].grid).array[0]
    mean_dice = np.mean([dice(ours["seg"].array[0], labels, v) for v in (1, 2)])
    assert mean_dice >= check["dice_mean"] - 0.05, f"{model_id}: mean Dice {mean_dice:.3f}"


def test_demo_segments_with_a_shipped_package_and_picks_sr_by_measured_gain():
    """The demo segments with the shipped package; SR goes to a package only if its card records a
    gain over B-spline (none does yet), else to the self-supervised mode."""
    plan = demo_plan()
    assert plan.seg_model in SHIPPED
    assert plan.sr_model == "self" and "no built-in SR package" in plan.reason
