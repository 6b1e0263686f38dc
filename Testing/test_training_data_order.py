"""Distributed training, dataset errors and patient-level splits of training runs."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose

from training.config import resolve
from training.data import check_splits
from training.engine.checkpoint import LAST, load_checkpoint
from training.engine.data import EpochSamples, StepBatches, prepare_cases
from training.engine.loop import run_training
from training.train import main as train_main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "training" / "configs"


def torchrun(tmp_path: Path, config: str, port: int, *overrides: str, processes: int = 2) -> dict:
    """Train ``config`` with ``torchrun --nproc_per_node processes`` (gloo); its summary.json."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
               "--master_port", str(port), str(ROOT / "training" / "train.py"), "--config",
               str(CONFIGS / f"{config}.yaml"), f"run.out_dir={tmp_path}", "train.progress=false",
               "train.previews=false", *overrides]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / config / "summary.json").read_text())
    assert summary["world_size"] == processes
    return summary


def train_losses(run_dir: Path) -> list[float]:
    rows = csv.DictReader((run_dir / "metrics.csv").open())
    return [float(r["value"]) for r in rows if r["split"] == "train" and r["metric"] == "loss"]


def test_two_process_gloo_gradnorm_run_keeps_ranks_identical(tmp_path):
    """torchrun, 2 CPU processes (gloo), TASC with GradNorm: its autograd.grad on the shared layer runs
    before the one DDP backward; both ranks end with the same weights and the loss falls."""
    summary = torchrun(tmp_path, "tasc_swinmt_tiny", 29517, "train.max_steps=6", "train.steps_per_epoch=6",
                       "data.batch_size=1", "loss.balancing=gradnorm")
    assert summary["step"] == 6
    digests = summary["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    losses = train_losses(tmp_path / "tasc_swinmt_tiny")
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-2:]) < np.mean(losses[:2]), losses
    rows = list(csv.DictReader((tmp_path / "tasc_swinmt_tiny" / "metrics.csv").open()))
    weights = [float(r["value"]) for r in rows if r["metric"] == "weight_interp"]
    assert weights[-1] != pytest.approx(1.0), "GradNorm weights never moved"


def test_two_processes_equal_one_process_with_the_double_batch(tmp_path):
    """DDP + DistributedSampler: 2 ranks x batch 1 see the samples 1 process x batch 2 sees, and the
    averaged gradients make the same updates (loss curve and weights equal up to float rounding).

    RDST: no batch-dependent layers (TASC's BatchNorm uses per-rank statistics under DDP)."""
    common = ["stages=[]", "train.max_steps=3", "train.steps_per_epoch=2", "train.val_every=0"]
    torchrun(tmp_path / "ddp", "rdst_tiny", 29518, "data.batch_size=1", *common)
    cfg = resolve(CONFIGS / "rdst_tiny.yaml", [f"run.out_dir={tmp_path / 'single'}", "data.batch_size=2",
                                               "train.progress=false", *common])
    run_training(cfg)
    ddp, single = tmp_path / "ddp" / "rdst_tiny", tmp_path / "single" / "rdst_tiny"
    assert train_losses(ddp) == pytest.approx(train_losses(single), rel=1e-4)
    a, b = load_checkpoint(ddp / LAST)["modules"], load_checkpoint(single / LAST)["modules"]
    assert a.keys() == b.keys() and not any(k.startswith("module.") for k in a)
    for key, value in a.items():
        torch.testing.assert_close(value, b[key], rtol=1e-4, atol=1e-5, msg=key)  # measured: 2e-6


@pytest.mark.parametrize(("config", "port", "stages"), [
    ("rehrseg_tiny", 29519, "stages=[{name: self_sr, steps: 3, loss: {objective: self_sr, uncertainty_steps: 1}}, "
                            "{name: segmentation, steps: 2, loss: {objective: segmentation}}]"),
    ("disentangled_sr_tiny", 29520, "stages=[{name: vit, steps: 1, loss: {objective: vit}}, "
                                    "{name: autoencoder, steps: 2, loss: {objective: autoencoder}}, "
                                    "{name: sr, steps: 2, loss: {objective: sr}}]"),
])
def test_two_process_multi_network_stages_keep_ranks_identical(tmp_path, config, port, stages):
    """One DDP per trained network and stage: REHRSeg (uncertainty head unused before Eq. 6 ->
    find_unused_parameters) and the GAN stages (discriminator run twice before one backward)."""
    steps = 5
    summary = torchrun(tmp_path, config, port, stages, f"train.max_steps={steps}", "train.steps_per_epoch=5",
                       "train.val_every=0")
    assert summary["step"] == steps
    digests = summary["rank_weight_digests"]
    assert digests[0] == digests[1]
    assert all(math.isfinite(v) for v in train_losses(tmp_path / config))


def test_sampler_shards_the_epoch_and_resumes_inside_it():
    """DistributedSampler's permutation, sharded over ranks; a window starts inside an epoch."""
    samples = EpochSamples([{"x": torch.zeros(1)}], Compose([]), seed=3, length=12)

    def keys(start: int, stop: int, rank: int) -> list[list[int]]:
        batches = StepBatches(samples, start, stop, steps_per_epoch=3, batch_size=2, rank=rank, world_size=2,
                              num_workers=0)
        return [b["sample_key"].tolist() for b in batches]

    full = [keys(0, 7, rank) for rank in (0, 1)]
    epoch0 = [k for rank in (0, 1) for batch in full[rank][:3] for k in batch]
    assert sorted(i for _, i in epoch0) == list(range(12))  # the ranks share the epoch without overlap
    assert full[0][3:6] != [[[1, i] for _, i in b] for b in full[0][:3]]  # set_epoch: a new permutation
    assert keys(4, 7, 0) == full[0][4:7] and keys(2, 4, 1) == full[1][2:4]  # resume = uninterrupted tail
    assert len(full[0]) == 7 and all(len(b) == 2 for b in full[0])


def write_case(folder: Path, name: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(rng.random((16, 16, 8)).astype(np.float32), affine), str(folder / "images" / name))
    nib.save(nib.Nifti1Image((rng.random((16, 16, 8)) > 0.5).astype(np.uint8), affine), str(folder / "labels" / name))


def test_corrupt_case_is_reported_by_file_name(tmp_path, capsys):
    data = tmp_path / "data"
    write_case(data, "c1.nii.gz", 0)
    broken = data / "images" / "c1.nii.gz"
    broken.write_bytes(broken.read_bytes()[:200])  # truncated gzip stream
    code = train_main(["--config", str(CONFIGS / "swinsr_unetr_tiny.yaml"), f"data.root={data}",
                       f"run.out_dir={tmp_path / 'runs'}", "train.max_steps=1", "train.progress=false"])
    err = capsys.readouterr().err
    assert code == 2 and "c1.nii.gz" in err and "Traceback" not in err
    assert err.count("\n") == 1


def test_run_splits_are_patient_level(tmp_path):
    data = tmp_path / "data"
    names = ["p1_a", "p1_b", "p1_c", "p2", "p3", "p4", "p5", "p6", "p7", "p8"]
    for i, name in enumerate(names):
        write_case(data, f"{name}.nii.gz", i)
    (data / "patients.csv").write_text("case_id,patient_id\np1_a,P1\np1_b,P1\np1_c,P1\n")
    cfg = resolve(CONFIGS / "swinsr_unetr_tiny.yaml", [f"data.root={data}", "data.split_seed=3"])
    _, info = prepare_cases(cfg, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "splits.json").read_text())
    check_splits(saved)
    subsets = [s for s, patients in saved.items() if "P1" in patients]
    assert len(subsets) == 1 and sorted(saved[subsets[0]]["P1"]) == ["p1_a", "p1_b", "p1_c"]
    assert [len(saved[s]) for s in ("train", "validation", "test")] == [5, 1, 2]  # 7:1:2 of 8
    assert info.summary["subjects"] == 8
