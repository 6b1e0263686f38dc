"""Distributed training, dataset errors and patient-level splits of training runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from training.config import resolve
from training.data import check_splits
from training.engine.data import prepare_cases
from training.train import main as train_main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "training" / "configs"


def test_two_process_gloo_run_keeps_ranks_identical(tmp_path):
    """torchrun, 2 CPU processes (gloo): gradients averaged, BN buffers broadcast -> same weights."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
               str(ROOT / "training" / "train.py"), "--config", str(CONFIGS / "tasc_swinmt_tiny.yaml"),
               f"run.out_dir={tmp_path}", "train.max_steps=3", "train.steps_per_epoch=3", "data.batch_size=1",
               "train.progress=false", "train.previews=false"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "tasc_swinmt_tiny" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["step"] == 3
    digests = summary["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]


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
