"""The shipped in-plane x4 SISR package ``rdst-e-brain`` (issue #7, item 3).

It loads, passes SHA-256 verification (tampered weights are refused), carries a model card, and --
a regression guard, not a timing test -- beats B-spline under the RDST in-plane protocol (anti-aliased
bicubic x4 downsampling of both in-plane axes + noise, ``simulate_inplane_bicubic``) on a fixed crop of
the held-out hemisphere of the MNI152 sample by at least the margin recorded in its ``model.json``
(``metrics.regression_check``, also in its model card) minus 0.5 dB.  A few seconds on 2 CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path

from package_factory import assert_tampered_weights_refused

from benchmarks.regression_check import measure
from JointSRSegLib.packaging import available_models, load_package

ROOT = Path(__file__).resolve().parents[1]
MODEL_ID = "rdst-e-brain"
FOLDER = ROOT / "Resources" / "Models" / MODEL_ID
MAX_BYTES = 25 * 1024 * 1024
TOLERANCE_DB = 0.5
TEST_SLAB_START = 104  # sample mode: x >= 104 (axis 0) is the test slab, never trained on nor used for selection


def metadata() -> dict:
    return json.loads((FOLDER / "model.json").read_text())


def test_package_loads_verifies_and_documents(tmp_path):
    package = load_package(FOLDER)  # verifies the schema and the weights' SHA-256
    meta = metadata()
    assert package.id == MODEL_ID and meta["weights_sha256"]
    assert sum(f.stat().st_size for f in FOLDER.iterdir()) <= MAX_BYTES
    assert meta["architecture"] == "rdst_e" and meta["tasks"] == ["sr"]
    assert meta["protocol"] == "inplane" and meta["scale"] == [4, 4, 1] and meta["labels"] == []
    assert "not for diagnosis" in meta["intended_use"].lower()
    assert meta["license"] == "CC-BY-4.0"
    # Fine-tuned with the segmentation perceptual loss L_E(1) (RDST-E's recipe).
    stages = meta["training_config"]["stages"]
    assert any((stage.get("loss") or {}).get("perceptual_terms") == ["E1"] for stage in stages)
    assert (ROOT / "docs" / "models" / f"{MODEL_ID}.md").is_file()
    assert MODEL_ID in {info.id for info in available_models() if info.source == "builtin"}
    net = package.build_model("cpu")  # strict state-dict load
    assert sum(p.numel() for p in net.parameters()) > 0
    assert_tampered_weights_refused(FOLDER, tmp_path)


def test_beats_bspline_inplane_on_held_outcrop():
    check = metadata()["metrics"]["regression_check"]
    assert check["protocol"] == "inplane" and check["factor"] == 4
    assert check["crop_start"][0] >= TEST_SLAB_START
    measured = measure(FOLDER, "inplane", check["factor"], check["crop_start"], check["crop_size"])
    assert measured["noise_std"] == check["noise_std"] and measured["noise_seed"] == check["noise_seed"]
    assert abs(measured["bspline_psnr_db"] - check["bspline_psnr_db"]) < 0.05  # protocol and baseline unchanged
    gain = measured["psnr_gain_over_bspline_db"]
    assert gain >= check["psnr_gain_over_bspline_db"] - TOLERANCE_DB, (
        f"{MODEL_ID}: {gain:+.2f} dB over bspline, recorded {check['psnr_gain_over_bspline_db']:+.2f} dB")
