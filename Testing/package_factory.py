"""Build small model packages on the fly for tests (untrained weights, real architectures)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from JointSRSegLib.errors import InputError
from JointSRSegLib.models import build
from JointSRSegLib.packaging import load_package, save_package

TISSUE_LABELS = [
    {"value": 1, "name": "Grey matter", "color": [230, 153, 51]},
    {"value": 2, "name": "White matter", "color": [242, 242, 204]},
]


def make_package(folder: Path, architecture: str, *, tasks, package_scale, protocol, labels=(), seed: int = 0,
                 uncertainty=(), preset: str = "tiny", **overrides) -> Path:
    torch.manual_seed(seed)
    model = build(architecture, preset, **overrides).eval()
    meta = {
        "id": f"{architecture.replace('_', '-')}-test",
        "version": "0.0.1",
        "name": f"{architecture} ({preset}, untrained)",
        "description": "Untrained network used by the tests",
        "tasks": list(tasks),
        "scale": package_scale,
        "protocol": protocol,
        "inputs": [{"name": "T1", "modality": "MR"}],
        "intensity_normalization": {"method": "percentile", "lower": 0.5, "upper": 99.5},
        "labels": list(labels),
        "training_data": {"datasets": ["none"], "subjects": 0},
        "metrics": {},
        "license": "Apache-2.0",
        "intended_use": "tests only",
        "uncertainty": list(uncertainty),
        "expected_runtime": {},
        "inference": {"roi_size": [16, 16, 16]},
    }
    return save_package(model, folder / meta["id"], meta)


def assert_tampered_weights_refused(folder: Path, tmp_path: Path) -> None:
    """A copy of the package with one weight byte flipped must be refused by its sha256 check."""
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(InputError, match="(?i)sha-?256"):
        load_package(copy)
