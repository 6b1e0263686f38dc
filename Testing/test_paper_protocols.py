"""The papers' own protocols (training/configs/paper/): stated values, per-stage optimisers, He init,
the in-plane noise option and SwinSR-UNETR's isotropic scale on the training side."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from JointSRSegLib.models import build
from JointSRSegLib.models.tasc_blocks import CTCI
from training.config import ConfigError, resolve
from training.data.pairs import degrade_array
from training.engine.loop import stage_batch_size, stage_list, stage_optim
from training.engine.schedules import build_optimizer, build_scheduler, lr_factor
from training.tasks.base import TaskAdapter
from training.tasks.joint3d import lr_patch_size, model_scale
from training.tasks.transforms import ThickVoxelsd

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "training" / "configs" / "paper"


def paper(name: str, *overrides: str) -> dict:
    return resolve(PAPER / f"{name}.yaml", list(overrides))


def test_every_paper_config_resolves_with_the_papers_numbers():
    names = {p.stem for p in PAPER.glob("*.yaml")}
    assert {"swinsr_unetr", "tasc_swinmt", "rdst", "rdst_e", "disentangled_sr_x2", "disentangled_sr_x4"} <= names
    tasc = paper("tasc_swinmt")
    assert tasc["data"]["patch_size"][:2] == [512, 512] and tasc["data"]["batch_size"] == 2
    assert tasc["model"]["overrides"]["init"] == "he" and tasc["data"]["factor"] == 2
    assert (tasc["optim"]["lr"], tasc["optim"]["weight_decay"]) == (1e-4, 1e-5)
    rdst = paper("rdst")
    assert (rdst["data"]["protocol"], rdst["data"]["factor"]) == ("inplane", 4)
    planes = rdst["data"]["batch_size"] * rdst["loss"]["planes_per_patch"]
    assert planes == 32 and rdst["data"]["patch_size"][:2] == [96, 96]
    assert [s["steps"] for s in rdst["stages"]] == [100000, 100000, 20000]
    assert rdst["stages"][2]["schedule"]["milestones"] == [10000, 15000, 17500]
    swin = paper("swinsr_unetr")
    assert model_scale(swin) == (2, 2, 2) and lr_patch_size([96, 96, 96], "sr", 2, (2, 2, 2)) == [48, 48, 48]
    for factor in (2, 4):
        cnn = paper(f"disentangled_sr_x{factor}")
        assert (cnn["data"]["protocol"], cnn["data"]["factor"], cnn["data"]["inplane_noise_std"]) == (
            "inplane", factor, 0.0)


def test_tasc_swinmt_defaults_train_what_their_comment_says():
    for name in ("tasc_swinmt", "tasc_swinmt_small"):
        cfg = resolve(ROOT / "training" / "configs" / f"{name}.yaml")
        assert cfg["data"]["patch_size"] == [512, 512, 3] and cfg["data"]["batch_size"] == 2, name


def test_per_stage_optimisers_are_built_as_the_cnn_vit_paper_states():
    """ViT: AdamW (batch 6); SR: Adam beta1 0.9 with weight decay 0.1 (batch 256), Sec. 4.1."""
    cfg = paper("disentangled_sr_x2")
    stages = {s["name"]: s for s in stage_list(cfg)}
    params = [torch.nn.Parameter(torch.zeros(3))]
    vit = build_optimizer(params, stage_optim(cfg, stages["vit"]), 1e-4, 0.0)
    sr_stage = stages["sr"]
    sr = build_optimizer(params, stage_optim(cfg, sr_stage), 1e-4, float(sr_stage["weight_decay"]))
    ae = build_optimizer(params, stage_optim(cfg, stages["autoencoder"]), 1e-4, 0.0)
    assert isinstance(vit, torch.optim.AdamW)
    assert type(sr) is torch.optim.Adam and sr.param_groups[0]["betas"] == (0.9, 0.999)
    assert sr.param_groups[0]["weight_decay"] == 0.1
    assert type(ae) is torch.optim.Adam and ae.param_groups[0]["betas"] == (0.5, 0.999)
    planes = cfg["loss"]["planes_per_patch"]
    assert stage_batch_size(cfg, stages["vit"]) * planes == 6
    assert stage_batch_size(cfg, stages["sr"]) * planes == 256
    assert stage_batch_size(cfg, stages["autoencoder"]) == cfg["data"]["batch_size"]


def test_rehrseg_segmenter_trains_with_nnunets_nesterov_sgd_and_poly_schedule():
    """Sec. 4.2: the segmenter has nnU-Net-3D's default setting: SGD 0.01, Nesterov 0.99, wd 3e-5, poly 0.9."""
    for name in ("rehrseg", "rehrseg_small"):
        cfg = resolve(ROOT / "training" / "configs" / f"{name}.yaml")
        stages = {s["name"]: s for s in stage_list(cfg)}
        seg = stages["segmentation"]
        params = [torch.nn.Parameter(torch.ones(2))]
        sgd = build_optimizer(params, stage_optim(cfg, seg), float(seg["lr"]), float(seg["weight_decay"]))
        group = sgd.param_groups[0]
        assert type(sgd) is torch.optim.SGD and group["nesterov"] is True, name
        assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.01, 0.99, 3e-5), name
        assert seg["steps"] == 250_000 and stage_batch_size(cfg, seg) == 2, name
        assert type(build_optimizer(params, stage_optim(cfg, stages["self_sr"]), 1e-4, 0.0)) is torch.optim.Adam
    schedule = {"name": "poly", "power": 0.9}
    assert lr_factor(0, 100, schedule, 0.01) == 1.0
    assert lr_factor(50, 100, schedule, 0.01) == pytest.approx(0.5 ** 0.9)  # 0.5359
    assert lr_factor(100, 100, schedule, 0.01) == 0.0
    # Nesterov's step by hand: v = mu v + g; p -= lr (g + mu v)  (torch's form), g = 2 p for p^2
    p = torch.nn.Parameter(torch.tensor([1.0]))
    opt = build_optimizer([p], {"name": "sgd", "momentum": 0.5, "nesterov": True}, 0.1, 0.0)
    scheduler = build_scheduler(opt, schedule, 4, 0.1)
    (p ** 2).sum().backward()
    opt.step()
    scheduler.step()
    assert float(p.detach()) == pytest.approx(1.0 - 0.1 * (2.0 + 0.5 * 2.0))  # 0.7
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.75 ** 0.9)


@pytest.mark.parametrize(("stage", "message"), [
    ("{name: a, steps: 1, optim: {name: sgd, momentum: 1.5}}", r"stages\[0\].optim.momentum must be a number"),
    ("{name: a, steps: 1, optim: {name: sgd, momentum: 0, nesterov: true}}", r"optim.nesterov needs momentum > 0"),
    ("{name: a, steps: 1, optim: {nesterov: 1}}", r"stages\[0\].optim.nesterov must be true or false"),
    ("{name: a, steps: 1, optim: {name: lamb}}", r"stages\[0\].optim.name is 'lamb'"),
    ("{name: a, steps: 1, optim: {lr: 1}}", r"stages\[0\].optim has unknown key\(s\) \['lr'\]"),
    ("{name: a, steps: 1, optim: {betas: [0.9]}}", r"stages\[0\].optim.betas must be two numbers"),
    ("{name: a, steps: 1, batch_size: 0}", r"stages\[0\].batch_size must be a positive integer"),
])
def test_bad_stage_optimisers_are_refused_naming_the_stage(stage, message):
    with pytest.raises(ConfigError, match=message):
        resolve(overrides=[f"stages=[{stage}]", "train.max_steps=1"])


def test_a_stage_nesterov_is_checked_against_the_sections_momentum():
    with pytest.raises(ConfigError, match=r"stages\[0\].optim.nesterov needs momentum > 0"):
        resolve(overrides=["optim.momentum=0", "stages=[{name: a, steps: 1, optim: {name: sgd, nesterov: true}}]",
                           "train.max_steps=1"])


def test_tasc_he_init_has_gain_sqrt2_and_mixed_gain_1():
    """Sec. 3.3.2 He normal: std sqrt(2 / fan_in); the default keeps gain 1 off the SiLU cascade."""
    ratios = {}
    for init in ("he", "mixed"):
        torch.manual_seed(0)
        net = build("tasc_swinmt", "small", init=init)
        dilated = {id(m) for c in net.modules() if isinstance(c, CTCI) for m in c.dilated}
        conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.numel() >= 4096
                    and id(m) not in dilated)
        ratios[init] = float(conv.weight.detach().std()) * math.sqrt(conv.weight[0].numel())
    assert ratios["he"] == pytest.approx(math.sqrt(2), rel=0.06)
    assert ratios["mixed"] == pytest.approx(1.0, rel=0.06)
    with pytest.raises(ValueError, match="init must be one of he, mixed"):
        build("tasc_swinmt", "tiny", init="xavier")


def test_inplane_noise_std_comes_from_the_config():
    for value in (0.0, 0.03):
        cfg = resolve(overrides=[f"data.inplane_noise_std={value}"])
        fake = SimpleNamespace(cfg=cfg)
        assert TaskAdapter.inplane_noise_std(fake, "inplane") == value
        assert TaskAdapter.inplane_noise_std(fake, "sr") == 0.0


def test_thick_voxels_make_every_lr_voxel_the_block_it_covers():
    """Isotropic x2: LR is the sr protocol along all three axes; a ramp along x keeps its block centre
    (2i + 0.5), so the LR voxel sits on the centre of the HR voxels it came from."""
    rng = np.random.default_rng(0)
    hr = rng.random((1, 12, 10, 8)).astype(np.float32)
    lr_z = degrade_array(hr, "sr", 2, 2)
    out = ThickVoxelsd(2, (0, 1))({"lr_image": torch.from_numpy(lr_z), "hr_image": torch.from_numpy(hr),
                                   "hr_label": torch.zeros(1, 12, 10, 8, dtype=torch.long),
                                   "lr_label": torch.zeros(1, 12, 10, 4, dtype=torch.long)})
    expected = degrade_array(degrade_array(lr_z, "sr", 2, 0), "sr", 2, 1)
    assert tuple(out["lr_image"].shape) == (1, 6, 5, 4) and tuple(out["lr_label"].shape) == (1, 6, 5, 4)
    np.testing.assert_allclose(out["lr_image"].numpy(), expected, rtol=1e-6)
    assert tuple(out["hr_image"].shape) == (1, 12, 10, 8)
    ramp = np.broadcast_to(np.arange(16, dtype=np.float32)[None, :, None, None], (1, 16, 16, 16)).copy()
    lr = ThickVoxelsd(2, (0, 1))({"lr_image": torch.from_numpy(degrade_array(ramp, "sr", 2, 2))})["lr_image"]
    np.testing.assert_allclose(lr[0, 2:6, 4, 2].numpy(), 2 * np.arange(2, 6) + 0.5, atol=1e-4)


def test_scale_is_checked_against_factor_and_architecture():
    with pytest.raises(ConfigError, match=r"data.scale must be three integers, each 1 or data.factor \(2\)"):
        resolve(overrides=["data.factor=2", "data.scale=[2, 3, 2]"])
    with pytest.raises(ConfigError, match="swinsr_unetr with data.protocol=sr only, not rdst"):
        resolve(overrides=["model.architecture=rdst", "data.factor=2", "data.scale=[2, 2, 2]"])
    assert model_scale(resolve(overrides=["data.factor=3"])) == (1, 1, 3)


def test_isotropic_swinsr_unetr_trains_and_validates_on_the_isotropic_grid(tmp_path):
    """Two steps of SwinSR-UNETR tiny at data.scale [2, 2, 2]: the network upsamples every axis and the
    validation case (LR 15 x 24 x 24 of an HR 30 x 48 x 48 crop) is predicted on the HR grid (PSNR computed there)."""
    from training.engine.checkpoint import LAST, load_checkpoint
    from training.engine.loop import Trainer

    cfg = resolve(ROOT / "training" / "configs" / "swinsr_unetr_tiny.yaml", [
        f"run.out_dir={tmp_path}", "train.progress=false", "run.threads=1", "train.previews=false",
        "data.factor=2", "data.scale=[2, 2, 2]", "data.patch_size=[32, 32, 32]", "data.val_crop=[48, 48, 48]",
        "train.max_steps=2", "train.steps_per_epoch=2"])
    trainer = Trainer(cfg, tmp_path / cfg["run"]["name"])
    assert trainer.adapter.network.jointsrseg_config["config"]["scale"] in ([2, 2, 2], (2, 2, 2))
    item = trainer.val_items[0]  # the sample's validation slab is 30 voxels wide along x
    hr_shape = tuple(item["hr_image"].shape[1:])
    assert hr_shape == (30, 48, 48) and tuple(item["lr_image"].shape[1:]) == (15, 24, 24)
    prediction = trainer.adapter.predict_case(item)
    assert prediction["image"].shape[1:] == hr_shape and prediction["labels"].shape == hr_shape
    summary = trainer.fit()
    assert summary["step"] == 2 and math.isfinite(summary["history"][-1]["psnr"])
    assert load_checkpoint(tmp_path / cfg["run"]["name"] / LAST)["config"]["data"]["scale"] == [2, 2, 2]
    meta = trainer.adapter.export_metadata()
    assert meta["scale"] == [2, 2, 2] and meta["protocol"] == "sr"
    # packaging and inference: the exported package super-resolves a 16^3 LR crop onto its 32^3 HR grid
    from JointSRSegLib import predict
    from JointSRSegLib.degradation import simulate_thick_slices
    from JointSRSegLib.io import read_volume
    from JointSRSegLib.packaging import load_package
    from JointSRSegLib.volume import Volume
    from training.export import export_run

    package = export_run(tmp_path / cfg["run"]["name"], tmp_path / "package")
    stored = load_package(package).metadata
    assert stored["scale"] == [2, 2, 2] and stored["inference"]["roi_size"] == [16, 16, 16]
    mni = read_volume(ROOT / "Resources" / "SampleData" / "MNI152_T1_1mm.nii.gz")
    hr = Volume(np.ascontiguousarray(mni.array[:, 60:92, 70:102, 60:92]), mni.spacing,
                mni.grid.physical_points([[60, 70, 60]])[0], mni.direction)
    lr = hr
    for axis in (0, 1, 2):
        lr = simulate_thick_slices(lr, 2, axis)
    out = predict(lr, model=package, tasks=("sr", "seg"), scale=2, axis=2).outputs
    for key in ("sr", "seg"):
        assert out[key].shape == (32, 32, 32) and out[key].spacing == pytest.approx(hr.spacing, abs=1e-12)
        np.testing.assert_allclose(out[key].origin, hr.origin, rtol=0, atol=1e-9)


def test_isotropic_package_output_lands_on_the_hr_input_in_physical_space(tmp_path):
    """An isotropic x2 SwinSR-UNETR package (scale [2, 2, 2]): the SR and label outputs of an LR volume made
    from an oblique HR volume by thick voxels along every axis lie exactly on that HR grid (spacing,
    origin, direction), whatever --axis says."""
    from conftest import DATA
    from package_factory import TISSUE_LABELS, make_package

    from JointSRSegLib import predict
    from JointSRSegLib.degradation import simulate_thick_slices
    from JointSRSegLib.io import read_volume
    from JointSRSegLib.volume import Volume

    source = read_volume(DATA / "orientation" / "PIR.nii.gz")
    start = [(s - n) // 2 for s, n in zip(source.shape, (24, 20, 16))]
    array = source.array[(slice(None),) + tuple(slice(a, a + n) for a, n in zip(start, (24, 20, 16)))]
    hr = Volume(np.ascontiguousarray(array), source.spacing, source.grid.physical_points([start])[0],
                source.direction)
    lr = hr
    for axis in (0, 1, 2):
        lr = simulate_thick_slices(lr, 2, axis)
    package = make_package(tmp_path, "swinsr_unetr", tasks=["sr", "seg"], package_scale=[2, 2, 2], protocol="sr",
                           labels=TISSUE_LABELS, in_channels=1, seg_channels=3, scale=(2, 2, 2))
    for axis in (0, 2):
        result = predict(lr, model=package, tasks=("sr", "seg"), scale=2, axis=axis)
        for key in ("sr", "seg"):
            out = result.outputs[key]
            assert out.shape == hr.shape, key
            assert out.spacing == pytest.approx(hr.spacing, abs=1e-12), key
            np.testing.assert_allclose(out.origin, hr.origin, rtol=0, atol=1e-9, err_msg=key)
            np.testing.assert_array_equal(np.asarray(out.direction), np.asarray(hr.direction))
        assert np.isfinite(result.outputs["sr"].array).all()


def test_slicer_checks_count_isotropic_output_voxels(tmp_path):
    """The panel's pre-run check: an isotropic x2 package makes R^3 output voxels per input voxel and needs
    no slice axis thicker than the others (no anisotropy warning); a through-plane one makes R and warns."""
    import sys
    from dataclasses import replace

    from package_factory import make_package

    from JointSRSegLib.packaging import load_package
    from JointSRSegLib.volume import Volume

    sys.path.insert(0, str(ROOT / "JointSRSeg"))
    from JointSRSegModule import checks

    package = make_package(tmp_path, "swinsr_unetr", tasks=["sr"], package_scale=[2, 2, 2], protocol="sr",
                           in_channels=1, seg_channels=3, scale=(2, 2, 2))
    iso = checks.describe_package(load_package(package))
    assert iso.factor_axis == "all" and iso.factors == (2,) and iso.scale_text() == "×2 (thick slices, every axis)"
    volume = Volume(np.zeros((1, 20, 20, 20), np.float32), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    thick = replace(iso, factor_axis="through_plane", expected_runtime={})
    iso = replace(iso, expected_runtime={})
    r_iso = checks.check_request(volume, iso, ("sr",), 2, 2, [None], "cpu", False)
    r_thick = checks.check_request(volume, thick, ("sr",), 2, 2, [None], "cpu", False)
    assert r_iso.warnings == [] and "not clearly thicker" in r_thick.warnings[0]
    per_voxel = checks.MODEL_BYTES_PER_OUTPUT_VOXEL
    assert r_iso.estimated_bytes == 8000 * 8 * per_voxel + volume.array.nbytes
    assert r_thick.estimated_bytes == 8000 * 2 * per_voxel + volume.array.nbytes


def test_isotropic_package_needs_no_slice_axis_on_an_isotropic_scan(tmp_path):
    """An isotropic [2, 2, 2] package magnifies every axis: a 1 mm isotropic scan (no single largest spacing)
    runs without --axis, every axis is subdivided, and the output covers the input in physical space; a
    through-plane package on the same scan is still refused with the one-line reason."""
    from package_factory import make_package

    from JointSRSegLib.api import predict
    from JointSRSegLib.errors import InputError
    from JointSRSegLib.geometry import subdivide_grid
    from JointSRSegLib.volume import Volume

    iso = make_package(tmp_path / "iso", "swinsr_unetr", tasks=["sr"], package_scale=[2, 2, 2], protocol="sr",
                       in_channels=1, seg_channels=3, scale=(2, 2, 2))
    thick = make_package(tmp_path / "thick", "swinsr_unetr", tasks=["sr"], package_scale=[1, 1, 2], protocol="sr",
                         in_channels=1, seg_channels=3, scale=(1, 1, 2))
    rng = np.random.default_rng(0)
    direction = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    volume = Volume(rng.random((1, 16, 12, 10)).astype(np.float32) + 1.0, (1.0, 1.0, 1.0), (4.0, -2.0, 7.0),
                    direction)
    result = predict(volume, model=str(iso), tasks=("sr",), scale=2, device="cpu")
    expected = volume.grid
    for a in range(3):
        expected = subdivide_grid(expected, 2, a)
    assert result.outputs["sr"].grid.almost_equal(expected)
    assert result.report["through_plane_axis"] is None
    assert np.isfinite(result.outputs["sr"].array).all()
    with pytest.raises(InputError, match="cannot detect the through-plane axis"):
        predict(volume, model=str(thick), tasks=("sr",), scale=2, device="cpu")
