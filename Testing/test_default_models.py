"""The default model packages shipped in ``Resources/Models/`` (issue #7).

Each one loads, passes SHA-256 verification, carries a model card, and -- a regression guard, not a
timing test -- beats B-spline on a fixed crop of the held-out hemisphere of the MNI152 sample at x4 by
at least the margin recorded in its ``model.json`` (``metrics.regression_check``, also in its model
card) minus 0.5 dB.  The crop keeps the whole file well under 90 s on 2 CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from package_factory import assert_tampered_weights_refused

from benchmarks.regression_check import measure
from JointSRSegLib.demo import demo_plan
from JointSRSegLib.packaging import available_models, load_package

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "Resources" / "Models"
SHIPPED = ["swinsr-unetr-brain-small", "swinsr-unetr-brain-small-x2", "swinsr-unetr-brain-small-x3",
           "tasc-swinmt-brain-small"]
MAX_BYTES = 25 * 1024 * 1024
TOLERANCE_DB = 0.5


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
    assert_tampered_weights_refused(folder, tmp_path)


@pytest.mark.parametrize("model_id", SHIPPED)
def test_beats_bspline_on_sample_crop(model_id):
    check = metadata(model_id)["metrics"]["regression_check"]
    measured = measure(MODELS / model_id, check["protocol"], check["factor"], check["crop_start"], check["crop_size"])
    assert measured["psnr_gain_over_bspline_db"] >= check["psnr_gain_over_bspline_db"] - TOLERANCE_DB, (
        f"{model_id}: {measured['psnr_gain_over_bspline_db']:+.2f} dB over bspline, "
        f"recorded {check['psnr_gain_over_bspline_db']:+.2f} dB")
    assert measured["dice_mean"] >= check["dice_mean"] - 0.05, f"{model_id}: mean Dice {measured['dice_mean']:.3f}"


def test_demo_segments_with_a_shipped_package_and_picks_sr_by_measured_gain():
    """The demo segments with a shipped package only where its real-scan record beats atropos, else
    with atropos; SR goes to the shipped sr-protocol package with the largest recorded gain over
    B-spline at x4 if that gain is positive, else to the self-supervised mode (packages without a
    real-scan record; ``test_slicer_defaults.test_demo_uses_the_same_rule`` covers those with one)."""
    plan = demo_plan()
    beating = []
    for folder in MODELS.iterdir():
        real = (json.loads((folder / "model.json").read_text()) if (folder / "model.json").is_file() else {}).get(
            "metrics", {}).get("realistic", {})  # fmt: skip
        pairs = [(real.get("dice_mean"), real.get("atropos_on_bspline_dice")),
                 (real.get("dice_mean_on_those_cases", real.get("dice_mean")), real.get("atropos_on_self_dice"))]
        pairs = [(mine, peer) for mine, peer in pairs if peer is not None]
        if real.get("factor") == 4 and pairs and all(mine is not None and mine > peer for mine, peer in pairs):
            beating.append(folder.name)
    assert plan.seg_model in beating if beating else plan.seg_model == "atropos"
    gains = {}
    for folder in MODELS.iterdir():
        meta = json.loads((folder / "model.json").read_text()) if (folder / "model.json").is_file() else {}
        if meta.get("metrics", {}).get("realistic"):
            return
        check = meta.get("metrics", {}).get("regression_check", {})
        if "sr" in meta.get("tasks", []) and meta.get("protocol") == "sr" and check.get("factor") == 4:
            gains[folder.name] = check["psnr_gain_over_bspline_db"]
    best = max(gains, key=gains.get) if gains else None
    if best is not None and gains[best] > 0:
        assert plan.sr_model == best and f"+{gains[best]:.2f} dB" in plan.reason
    else:
        assert plan.sr_model == "self" and "no built-in SR package" in plan.reason
