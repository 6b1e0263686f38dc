"""``--model adapt`` and the self-SR engine's budget rules: the shipped prior, its checks, early stopping,
and the head box the network runs on."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from scipy.ndimage import gaussian_filter

from JointSRSegLib import selfsr_prior
from JointSRSegLib.api import predict
from JointSRSegLib.degradation import crop_to_grid, simulate_thick_slices
from JointSRSegLib.errors import InputError
from JointSRSegLib.foreground import head_mask, mask_on_grid
from JointSRSegLib.geometry import subdivide_grid
from JointSRSegLib.io import read_volume
from JointSRSegLib.metrics import psnr
from JointSRSegLib.selfsr import (
    _apply,
    cubic_along,
    network_box,
    robust_normalization,
    self_supervised_sr,
)
from JointSRSegLib.selfsr_net import build_network
from JointSRSegLib.selfsr_prior import PRIORS_DIR, available_priors, load_prior, prior_name
from JointSRSegLib.volume import Volume

FAST = {"batch_size": 4, "patch_hr": 16, "network_options": {"features": 8, "blocks": 1}}
SAMPLE_T1 = PRIORS_DIR.parent / "SampleData" / "MNI152_T1_1mm.nii.gz"


def _head_in_empty_field(shape=(96, 96, 20), seed=0) -> Volume:
    """A smooth textured ball in an exactly empty field: what a skull-stripped scan looks like."""
    rng = np.random.default_rng(seed)
    texture = gaussian_filter(rng.normal(size=shape), 1.5)
    grid = np.indices(shape).astype(float)
    centre = (np.array(shape) - 1) / 2
    radius = np.sqrt(sum(((g - c) / (0.25 * n)) ** 2 for g, c, n in zip(grid, centre, shape)))
    image = np.where(radius < 1.0, 60 + 400 * (texture - texture.min()) / np.ptp(texture), 0.0)
    return Volume(image[None].astype(np.float32), spacing=(1.0, 1.0, 4.0), origin=(3.0, -2.0, 10.0))


def _randomised(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A network whose residual is far from zero (the zero-initialised tail would make it cubic)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    return net.eval()


def test_network_box_changes_nothing_inside_the_head():
    """Running the network on the head box only (cubic elsewhere) must give the whole-field result
    wherever the head mask is: the margin covers the receptive field."""
    vol = _head_in_empty_field()
    norm, _, _ = robust_normalization(vol.array)
    box = network_box(vol)
    assert box[2] == slice(0, 20) and box[0].start > 0 and box[0].stop < 96  # the field is cropped in-plane
    net = _randomised(build_network("cnn", 1, 4, "sr", features=8, blocks=2)[0])
    full, _ = _apply(net, norm, 2, 80, torch.device("cpu"))
    inner = np.ascontiguousarray(norm[(slice(None), *box)])
    boxed = cubic_along(norm, 2, "sr", 4, 80)
    part, _ = _apply(net, inner, 2, (box[2].stop - box[2].start) * 4, torch.device("cpu"))
    boxed[:, box[0], box[1], box[2].start * 4: box[2].stop * 4] = part
    mask = mask_on_grid(head_mask(vol), vol.grid, subdivide_grid(vol, 4, 2))
    assert mask.sum() > 1000
    np.testing.assert_allclose(boxed[0][mask], full[0][mask], atol=1e-5)
    assert np.abs(boxed - full).max() > 1e-3  # outside the box the two really differ (cubic vs network)


def test_cubic_along_is_the_networks_base():
    vol = _head_in_empty_field()
    norm, _, _ = robust_normalization(vol.array)
    net = build_network("cnn", 1, 4, "sr")[0].eval()  # zero tail: exactly cubic
    full, _ = _apply(net, norm, 2, 80, torch.device("cpu"))
    np.testing.assert_allclose(cubic_along(norm, 2, "sr", 4, 80), full, atol=1e-5)


def test_early_stop_keeps_the_best_weights():
    """A diverging rate: validation never improves on the start, training stops after `patience`
    checks and the start network (cubic) is applied, not the diverged one."""
    vol = _head_in_empty_field()
    stopped, report = self_supervised_sr(vol, "sr", 4, 2, time_budget=60, max_steps=200, learning_rate=5.0,
                                         validate_every=2, patience=2, **FAST)
    cubic, _ = self_supervised_sr(vol, "sr", 4, 2, time_budget=60, max_steps=0, **FAST)
    validation = report["training"]["validation"]
    assert validation["stopped_early"] and report["training"]["steps"] == 4
    assert validation["best_step"] == 0
    np.testing.assert_allclose(stopped.array, cubic.array, atol=1e-4)


def test_patience_zero_trains_to_the_step_limit():
    vol = _head_in_empty_field()
    _, report = self_supervised_sr(vol, "sr", 4, 2, time_budget=60, max_steps=12, validate_every=2, patience=0,
                                   **FAST)
    assert report["training"]["steps"] == 12 and not report["training"]["validation"]["stopped_early"]
    assert [v["step"] for v in report["training"]["validation"]["curve"]] == list(range(0, 13, 2))


def test_shipped_prior_is_listed_and_verified():
    assert {("sr", 2), ("sr", 4)} <= set(available_priors())
    net, record, cfg = load_prior("sr", 4, 1)
    assert record["factor"] == 4 and record["protocol"] == "sr" and cfg["scale"] == [1, 4]
    assert float(net.tail.conv.weight.detach().abs().max()) > 0  # trained: not the zero-initialised cubic start
    never = record["training"]["data"]["never_used"]
    assert set(never["labels"]) == {19, 20} and set(never["real"]) == {21, 22, 23, 24}
    assert record["training"]["validation_l1"] < record["training"]["validation_l1_cubic"]


@pytest.fixture(scope="module")
def sample_case():
    """The bundled MNI152 T1 (never seen by the prior), a 56 mm block, thick slices x4 along axis 1."""
    t1 = read_volume(SAMPLE_T1)
    block = Volume(t1.array[:, 60:116, 80:136, 60:116].astype(np.float32), spacing=t1.spacing, origin=t1.origin,
                   direction=t1.direction)  # the block's origin is irrelevant here
    lr = simulate_thick_slices(block, 4, 1)
    return block, lr


def test_the_untrained_prior_beats_bspline_on_a_scan_it_never_saw(sample_case):
    hr, lr = sample_case
    bspline = predict(lr, model="bspline", tasks=("sr",), scale=4, axis=1).outputs["sr"]
    adapted = predict(lr, model="adapt", tasks=("sr",), scale=4, axis=1, max_steps=0, time_budget=120)
    out = adapted.outputs["sr"]
    ref = crop_to_grid(hr, out.grid)
    assert out.grid.almost_equal(bspline.grid)
    gain = psnr(out.array, ref.array, data_range=float(np.ptp(ref.array))) - psnr(
        bspline.array, ref.array, data_range=float(np.ptp(ref.array)))
    assert gain > 1.0, gain
    model = adapted.report["model"]
    assert model["id"] == "adapt" and model["source"] == "adapted prior"
    prior = model["training"]["sr"]["prior"]
    check = prior["start_check"]
    assert check["used"] == "prior" and check["prior_l1"] < check["cubic_l1"]
    assert model["weights_sha256"] == json.loads((PRIORS_DIR / prior_name("sr", 4) / "prior.json").read_text())[
        "weights_sha256"]


def _copy_prior(tmp_path, monkeypatch):
    shutil.copytree(PRIORS_DIR / prior_name("sr", 4), tmp_path / prior_name("sr", 4), dirs_exist_ok=True)
    monkeypatch.setattr(selfsr_prior, "PRIORS_DIR", tmp_path)
    return tmp_path / prior_name("sr", 4)


def test_missing_prior_is_one_clear_line(sample_case, tmp_path, monkeypatch):
    _copy_prior(tmp_path, monkeypatch)  # the x4 prior only
    _, lr = sample_case
    with pytest.raises(InputError, match=r"no shipped adaptation prior for the interp protocol x3 \(shipped: sr x4\)"):
        predict(lr, model="adapt", tasks=("interp",), scale=3, axis=1, max_steps=0)


def test_tampered_prior_weights_are_refused(tmp_path, monkeypatch):
    folder = _copy_prior(tmp_path, monkeypatch)
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(InputError, match="do not match the sha256"):
        load_prior("sr", 4, 1)


def test_prior_for_other_channel_counts_is_refused():
    with pytest.raises(InputError, match="trained on 1-channel images, this scan has 2"):
        load_prior("sr", 4, 2)


def test_a_prior_worse_than_cubic_on_this_scan_is_not_used(tmp_path, monkeypatch):
    """The start check: a (here deliberately broken) prior that loses to cubic interpolation on the
    scan's own held-back patches is replaced by the cubic start, and the report says so."""
    folder = _copy_prior(tmp_path, monkeypatch)
    net, record, _ = load_prior("sr", 4, 1)
    _randomised(net, seed=3)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / "model.safetensors"))
    import hashlib

    record["weights_sha256"] = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    (folder / "prior.json").write_text(json.dumps(record), encoding="utf-8")
    vol = _head_in_empty_field()
    out, report = self_supervised_sr(vol, "sr", 4, 2, time_budget=60, max_steps=0, start="prior")
    cubic, _ = self_supervised_sr(vol, "sr", 4, 2, time_budget=60, max_steps=0)
    assert report["prior"]["start_check"]["used"] == "cubic"
    np.testing.assert_allclose(out.array, cubic.array, atol=1e-4)


def test_adapt_refuses_segmentation_and_network_options(sample_case):
    _, lr = sample_case
    with pytest.raises(InputError, match="does sr and interp only"):
        predict(lr, model="adapt", tasks=("sr", "seg"), scale=4, axis=1)
    with pytest.raises(InputError, match="the adaptation prior is the default 'cnn' network"):
        self_supervised_sr(lr, "sr", 4, 1, time_budget=30, max_steps=0, start="prior", network="rdst")


def _prior_with_record(tmp_path, monkeypatch, gain: float, self_gain: float) -> None:
    folder = _copy_prior(tmp_path, monkeypatch)
    record = json.loads((folder / "prior.json").read_text(encoding="utf-8"))
    record["metrics"] = {"realistic": {"protocol": "sr", "factor": 4, "psnr_gain_over_bspline_db": gain,
                                       "ssim": 0.95, "bspline_ssim": 0.90, "self_gain_over_bspline_db": self_gain}}
    (folder / "prior.json").write_text(json.dumps(record), encoding="utf-8")


def test_adapt_competes_in_the_defaults_rule_by_its_real_scan_record(tmp_path, monkeypatch):
    """The prior's real-scan record (prior.json) ranks ``adapt`` next to the packages for image-only
    requests of its protocol and factor -- and nowhere else."""
    from JointSRSegLib.defaults import choose_default, shipped_packages, shipped_priors
    from JointSRSegLib.demo import demo_plan

    packages = {p.id: p for p in shipped_packages()}
    best_package = max(p.metadata["metrics"].get("realistic", {}).get("psnr_gain_over_bspline_db", -9)
                       for p in packages.values() if "sr" in p.tasks)
    _prior_with_record(tmp_path, monkeypatch, gain=best_package + 1.0, self_gain=best_package + 0.5)
    assert [m.id for m in shipped_priors()] == ["adapt"]
    choice = choose_default(("sr",), "sr", 4)
    assert choice.model == "adapt" and f"{best_package + 1.0:+.2f} dB" in choice.reason
    assert choose_default(("sr",), "sr", 3).model != "adapt"  # no x3 prior
    assert choose_default(("sr", "seg"), "sr", 4).model != "adapt"  # adapt does not segment
    plan = demo_plan()
    assert plan.sr_model == "adapt"
    _prior_with_record(tmp_path, monkeypatch, gain=best_package + 1.0, self_gain=best_package + 2.0)
    assert demo_plan().sr_model == "self"  # self measured more on the same cases


def test_adapt_without_a_record_is_never_the_demo_choice(tmp_path, monkeypatch):
    from JointSRSegLib.demo import demo_plan

    folder = _copy_prior(tmp_path, monkeypatch)
    record = json.loads((folder / "prior.json").read_text(encoding="utf-8"))
    record.pop("metrics", None)
    (folder / "prior.json").write_text(json.dumps(record), encoding="utf-8")
    assert demo_plan().sr_model != "adapt"
