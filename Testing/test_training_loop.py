"""Training loop, configs, export: every tiny config trains a few steps on the MNI sample.

The three architectures the inference engine serves (SwinSR-UNETR, TASC-SwinMT, RDST) are
exported and run through ``jointsrseg run``; REHRSeg and the disentangled SR train and
checkpoint.  Runs are a few steps on 48x48x24-sized patches, single-threaded.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from JointSRSegLib.cli import main as cli_main
from JointSRSegLib.packaging import load_package
from training.config import SCHEMA, ConfigError, options_help, resolve
from training.engine.checkpoint import LAST, load_checkpoint
from training.engine.loop import TrainingError, run_training
from training.export import export_run
from training.train import main as train_main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "training" / "configs"
SAMPLE = ROOT / "Resources" / "SampleData" / "MNI152_T1_1mm.nii.gz"
FAST = ["train.progress=false", "run.threads=1", "train.previews=false"]


def tiny(name: str, tmp_path: Path, *overrides: str) -> dict:
    return resolve(CONFIGS / f"{name}.yaml", [f"run.out_dir={tmp_path}", *FAST, *overrides])


def three_stage_rdst(steps=(1, 2, 1)) -> list[str]:
    stages = (f"stages=[{{name: unet, steps: {steps[0]}, loss: {{objective: unet}}}}, "
              f"{{name: l1, steps: {steps[1]}}}, {{name: finetune, steps: {steps[2]}, lr: 1.0e-3, "
              f"loss: {{objective: sr, perceptual_terms: [E1]}}}}]")
    return [stages, f"train.max_steps={sum(steps)}"]


@pytest.fixture(scope="module")
def lr_volume(tmp_path_factory) -> Path:
    """A 48x48x6 thick-slice (x4 along axis 2) crop of the MNI T1: small enough for seconds of inference."""
    folder = tmp_path_factory.mktemp("lr")
    image = nib.load(str(SAMPLE))
    hr = np.asarray(image.dataobj)[50:98, 60:108, 60:84].astype(np.float32)
    affine = image.affine.copy()
    affine[:3, 2] *= 4
    path = folder / "lr.nii.gz"
    nib.save(nib.Nifti1Image(hr.reshape(48, 48, 6, 4).mean(-1).astype(np.uint8), affine), str(path))
    return path


# --------------------------------------------------------------------------- config


def test_overrides_types_and_errors_name_the_key(tmp_path):
    cfg = tiny("swinsr_unetr_tiny", tmp_path, "optim.lr=2e-4", "data.patch_size=[32, 32, 16]", "loss.aleatoric=true")
    assert cfg["optim"]["lr"] == 2e-4 and cfg["data"]["patch_size"] == [32, 32, 16]
    assert cfg["loss"] == {"aleatoric": True}
    with pytest.raises(ConfigError, match="unknown key 'optim.lrr'.*optim.lr"):
        resolve(CONFIGS / "swinsr_unetr_tiny.yaml", ["optim.lrr=1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {max_steps: many}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: train.max_steps must be an integer"):
        resolve(bad)
    help_text = options_help()
    assert all(key in help_text for key in SCHEMA)


def test_every_config_resolves_and_stages_add_up():
    for path in sorted(CONFIGS.glob("*.yaml")):
        cfg = resolve(path)
        if cfg["stages"]:
            assert sum(s["steps"] for s in cfg["stages"]) == cfg["train"]["max_steps"], path.name


# --------------------------------------------------------------------------- train, export, run


@pytest.mark.parametrize(
    ("name", "tasks", "extra"),
    [
        ("swinsr_unetr_tiny", "sr,seg", ["train.max_steps=3", "train.steps_per_epoch=3"]),
        ("tasc_swinmt_tiny", "interp,seg", ["train.max_steps=3", "train.steps_per_epoch=3"]),
        ("rdst_tiny", "sr", [*three_stage_rdst(), "train.steps_per_epoch=4"]),
    ],
)
def test_tiny_config_trains_exports_and_runs(tmp_path, lr_volume, name, tasks, extra):
    summary = run_training(tiny(name, tmp_path, *extra))
    run_dir = Path(summary["run_dir"])
    assert summary["step"] == summary["history"][-1]["step"] and summary["stopped"] == "completed"
    for file in ("config.yaml", LAST, "best.pt", "splits.json", "metrics.csv", "summary.json"):
        assert (run_dir / file).is_file(), file
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert {"psnr", "ssim"} <= {r["metric"] for r in rows if r["split"] == "validation"}
    package = export_run(run_dir, tmp_path / "package")
    meta = load_package(package).metadata
    assert meta["training_config"]["model"]["architecture"] == name.replace("_tiny", "")
    assert meta["metrics"]["validation"]["psnr"] == pytest.approx(summary["best"]["metrics"]["psnr"])
    if "seg" in tasks:
        assert [label["name"] for label in meta["labels"]] == ["Grey matter", "White matter"]
        assert [label["snomed"]["type"]["code"] for label in meta["labels"]] == ["389081007", "389080008"]
    out = tmp_path / "out"
    code = cli_main(["run", "--input", str(lr_volume), "--model", str(package), "--tasks", tasks,
                     "--scale", "4", "--out-dir", str(out)])
    assert code == 0
    first = tasks.split(",")[0]
    produced = nib.load(str(out / f"{first}.nii.gz")).shape
    assert produced == ((48, 48, 24) if first == "sr" else (48, 48, 21))
    assert (out / "seg.nii.gz").is_file() == ("seg" in tasks)
    if name == "swinsr_unetr_tiny":  # fine-tuning start: model.init_weights loads the package strictly
        tuned = run_training(tiny(name, tmp_path / "tuned", *extra, "train.max_steps=1", "train.steps_per_epoch=1",
                                  "optim.lr=0.0", f"model.init_weights={package}"))
        tuned_pkg = export_run(Path(tuned["run_dir"]), tmp_path / "tuned_package")
        start, tuned_state = (load_package(p).build_model().state_dict() for p in (package, tuned_pkg))
        assert start.keys() == tuned_state.keys()
        assert all(torch.equal(start[k], tuned_state[k]) for k in start)
        with pytest.raises(ConfigError, match="init_weights"):
            run_training(tiny("tasc_swinmt_tiny", tmp_path / "wrong", *extra, f"model.init_weights={package}"))
    if name == "swinsr_unetr_tiny":  # evaluate.py: model vs baseline on the sample's test slab
        from training.evaluate import main as evaluate_main

        report = tmp_path / "evaluation"
        assert evaluate_main(["--model", str(package), "--data", "sample", "--baselines", "linear",
                              "--crop", "48", "48", "24", "--out", str(report)]) == 0
        rows = list(csv.DictReader((report / "results.csv").open()))
        assert [r["method"] for r in rows] == [meta["id"], "linear"] and float(rows[1]["psnr"]) > 20
        assert rows[0]["dice"] and (report / "psnr.png").is_file() and (report / "results.md").is_file()


@pytest.mark.parametrize("name", ["rehrseg_tiny", "disentangled_sr_tiny"])
def test_multi_network_configs_train_and_checkpoint(tmp_path, name):
    stages = {"rehrseg_tiny": "stages=[{name: self_sr, steps: 2, loss: {objective: self_sr}}, "
                              "{name: segmentation, steps: 1, loss: {objective: segmentation}}]",
              "disentangled_sr_tiny": "stages=[{name: vit, steps: 1, loss: {objective: vit}}, "
                                      "{name: autoencoder, steps: 1, loss: {objective: autoencoder}}, "
                                      "{name: sr, steps: 1, loss: {objective: sr}}]"}[name]
    steps = 3
    summary = run_training(tiny(name, tmp_path, stages, f"train.max_steps={steps}", "train.steps_per_epoch=2"))
    checkpoint = load_checkpoint(Path(summary["run_dir"]) / LAST)
    assert checkpoint["step"] == steps and checkpoint["stage_index"] == 1 + (name != "rehrseg_tiny")
    stages_logged = {r["stage"] for r in csv.DictReader((Path(summary["run_dir"]) / "metrics.csv").open())}
    assert len(stages_logged) == (2 if name == "rehrseg_tiny" else 3)


# --------------------------------------------------------------------------- loop behaviour


def test_tiny_model_loss_decreases_on_a_fixed_problem(tmp_path):
    """RDST tiny fits one fixed batch of planes: the L1 loss falls by more than half."""
    from monai.transforms import Compose

    from training.engine.data import EpochSamples, cached_cases, prepare_cases
    from training.tasks import adapter_class

    cfg = tiny("rdst_tiny", tmp_path, "augment.enabled=false", "stages=[]", "train.max_steps=1")
    cases, info = prepare_cases(cfg, tmp_path)
    adapter = adapter_class("rdst")(cfg, info, torch.device("cpu"))
    samples = EpochSamples(cached_cases(cfg, cases, info, tmp_path, "train"),
                           Compose(adapter.train_transforms("train")), seed=0, length=2)
    batch = torch.utils.data.default_collate([samples[(0, 0)], samples[(0, 1)]])
    optimizer = torch.optim.Adam(adapter.network.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss, _ = adapter.training_loss(batch, "train", 0)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses[::8]


def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
    common = ["train.max_steps=5", "train.steps_per_epoch=4", "train.checkpoint_every=2", "data.batch_size=1"]
    full = run_training(tiny("tasc_swinmt_tiny", tmp_path, "run.name=full", *common))
    interrupted = tiny("tasc_swinmt_tiny", tmp_path, "run.name=killed", *common)
    run_training(interrupted, stop_at_step=3)  # "killed" mid-epoch: step 3 ran but was never saved
    assert load_checkpoint(tmp_path / "killed" / LAST)["step"] == 2
    resumed = run_training(interrupted, resume_dir=tmp_path / "killed")
    a = load_checkpoint(Path(full["run_dir"]) / LAST)
    b = load_checkpoint(Path(resumed["run_dir"]) / LAST)
    assert a["step"] == b["step"] == 5
    for key, value in a["modules"].items():
        torch.testing.assert_close(value, b["modules"][key], rtol=1e-5, atol=1e-6, msg=key)
    assert [h["psnr"] for h in full["history"]] == pytest.approx([h["psnr"] for h in resumed["history"]])


def test_cli_pause_at_a_checkpoint_then_resume_with_another_option(tmp_path, capsys):
    """``--stop-at-step`` pauses at a saved step; ``--resume`` continues with a changed option (how the
    shipped packages' schedules were run) and the run folder records the change."""
    config = str(CONFIGS / "tasc_swinmt_tiny.yaml")
    common = [f"run.out_dir={tmp_path}", *FAST, "run.name=paused", "train.max_steps=4", "train.steps_per_epoch=4",
              "train.checkpoint_every=2", "data.batch_size=1"]
    assert train_main(["--config", config, "--stop-at-step", "3", *common]) == 2
    assert "must be a positive multiple of train.checkpoint_every (2)" in capsys.readouterr().err
    assert not (tmp_path / "paused").exists()
    assert train_main(["--config", config, "--stop-at-step", "2", *common]) == 0
    assert load_checkpoint(tmp_path / "paused" / LAST)["step"] == 2
    assert train_main(["--resume", str(tmp_path / "paused"), "augment.synthesis_prob=0.8"]) == 0
    assert load_checkpoint(tmp_path / "paused" / LAST)["step"] == 4
    saved = resolve(tmp_path / "paused" / "config.yaml", [])
    assert saved["augment"]["synthesis_prob"] == 0.8


def test_existing_run_is_not_overwritten_and_resume_needs_a_checkpoint(tmp_path, capsys):
    cfg = tiny("tasc_swinmt_tiny", tmp_path, "train.max_steps=1", "train.val_every=0")
    run_training(cfg)
    with pytest.raises(TrainingError, match="already exists"):
        run_training(cfg)
    assert train_main(["--resume", str(tmp_path / "missing")]) == 2
    assert "config.yaml: not found" in capsys.readouterr().err


def test_non_finite_loss_stops_naming_step_and_batch(tmp_path, monkeypatch):
    from training.tasks.interp2d import Interp2DAdapter

    original = Interp2DAdapter.training_loss

    def poisoned(self, batch, stage, step):
        loss, parts = original(self, batch, stage, step)
        return (loss * float("nan") if step >= 2 else loss), parts

    monkeypatch.setattr(Interp2DAdapter, "training_loss", poisoned)
    cfg = tiny("tasc_swinmt_tiny", tmp_path, "train.max_steps=4", "train.checkpoint_every=1", "train.val_every=0")
    # Step 3 = positions 4 and 5 of epoch 0's DistributedSampler permutation (batch 2, one rank).
    order = list(torch.utils.data.DistributedSampler(range(cfg["train"]["steps_per_epoch"] * 2), num_replicas=1,
                                                     rank=0, shuffle=True, seed=cfg["run"]["seed"]))
    with pytest.raises(TrainingError, match=rf"non-finite loss nan at step 3 .*samples \(epoch, index\) "
                                            rf"\(0, {order[4]}\), \(0, {order[5]}\).*last good checkpoint"):
        run_training(cfg)
    assert load_checkpoint(tmp_path / "tasc_swinmt_tiny" / LAST)["step"] == 2
    assert json.loads((tmp_path / "tasc_swinmt_tiny" / "splits.json").read_text())["train"]


def test_every_shipped_config_resolves_and_builds():
    """Every YAML in training/configs validates and names a registered architecture and preset."""
    from JointSRSegLib.models import ARCHITECTURES
    from training.config import resolve

    configs = sorted((ROOT / "training" / "configs").glob("*.yaml"))
    assert len(configs) >= 19
    names = {path.stem for path in configs}
    for arch in ("swinsr_unetr", "tasc_swinmt", "rdst", "rdst_e", "rehrseg", "disentangled_sr"):
        for suffix in ("", "_small", "_tiny"):
            assert f"{arch}{suffix}" in names, f"missing {arch}{suffix}.yaml"
    for path in configs:
        cfg = resolve(path)
        model = cfg["model"]
        assert model["architecture"] in ARCHITECTURES, path.name
        assert model["preset"] in ("tiny", "small", "base"), path.name


def test_rehrseg_package_holds_the_teacher_and_gives_the_uasr_map(tmp_path, lr_volume):
    """REHRSeg exports the segmenter with its self-SR teacher (``rehrseg_seg_uasr``), so ``jointsrseg run
    --uncertainty --uncertainty-method uasr`` writes the HR segmentation and the UASR map on one grid (the
    default map is the entropy); ``loss.export=segmenter`` exports the segmenter alone (entropy only)."""
    stages = ("stages=[{name: self_sr, steps: 1, loss: {objective: self_sr}}, "
              "{name: segmentation, steps: 1, loss: {objective: segmentation}}]")
    common = [stages, "train.max_steps=2", "train.steps_per_epoch=2"]
    summary = run_training(tiny("rehrseg_tiny", tmp_path / "both", *common))
    package = export_run(summary["run_dir"], tmp_path / "pkg", which="last")
    meta = load_package(package).metadata
    assert (meta["architecture"], meta["tasks"]) == ("rehrseg_seg_uasr", ["seg"])
    assert meta["uncertainty"] == ["seg_entropy", "seg_uasr"]
    out = tmp_path / "out"
    assert cli_main(["run", "--input", str(lr_volume), "--model", str(package), "--tasks", "seg", "--scale", "4",
                     "--axis", "2", "--uncertainty", "--uncertainty-method", "uasr", "--out-dir", str(out)]) == 0
    seg, u = nib.load(str(out / "seg.nii.gz")), nib.load(str(out / "uncertainty_seg.nii.gz"))
    assert seg.shape == u.shape == (48, 48, 24) and np.allclose(seg.affine, u.affine)
    values = np.asarray(u.dataobj)
    assert values.min() >= 0.0 and values.max() <= 1.0
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["uncertainty_kinds"] == {"uncertainty_seg": "uasr"}
    summary = run_training(tiny("rehrseg_tiny", tmp_path / "alone", *common, "loss.export=segmenter"))
    meta = load_package(export_run(summary["run_dir"], tmp_path / "seg-only", which="last")).metadata
    assert (meta["architecture"], meta["uncertainty"]) == ("rehrseg_seg", ["seg_entropy"])


def test_init_weights_transfers_between_factors_only_when_asked(tmp_path):
    """x4 weights into a x2 network: refused strictly (naming the file); non-strict loads every tensor
    whose name and shape match and reports exactly the ones left at their initialisation."""
    from safetensors.torch import save_file

    from JointSRSegLib.models import build
    from training.engine.checkpoint import load_initial_weights

    torch.manual_seed(0)
    source = build("swinsr_unetr", "tiny", in_channels=1, seg_channels=3, scale=(1, 1, 4))
    path = tmp_path / "x4.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    target = build("swinsr_unetr", "tiny", in_channels=1, seg_channels=3, scale=(1, 1, 2))
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ConfigError, match="x4.safetensors"):
        load_initial_weights(target, path)
    fresh = load_initial_weights(target, path, strict=False)
    src, now = source.state_dict(), target.state_dict()
    mismatched = sorted(k for k in now if k not in src or src[k].shape != now[k].shape)
    assert fresh == mismatched and 0 < len(fresh) < len(now) // 2
    for key, value in now.items():
        torch.testing.assert_close(value, before[key] if key in fresh else src[key], rtol=0, atol=0)
