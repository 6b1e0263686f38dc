"""Shared test setup: deterministic, single-threaded torch so timings never matter and results repeat."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "Testing" / "Data"
SAMPLE = ROOT / "Resources" / "SampleData"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def _seed_torch():
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        yield
        return
    torch.manual_seed(0)
    yield
