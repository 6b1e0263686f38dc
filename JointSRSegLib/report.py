"""Provenance for every run: what went in, what ran where, how long, how much memory.

``report.json`` is the record a user attaches to a result; it must let someone else redo the
run (inputs with geometry, model id and weights hash, parameters, package versions).
"""

from __future__ import annotations

import platform
import resource
import sys
import time
from contextlib import contextmanager
from importlib import metadata

import numpy as np

from .geometry import anisotropy, orientation_code
from .volume import Grid, Volume

_VERSIONED_PACKAGES = ("jointsrseg", "torch", "monai", "SimpleITK", "nibabel", "numpy", "safetensors")


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def machine_description() -> dict[str, str]:
    import os

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": str(os.cpu_count()),
    }


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(peak / 1024.0 if sys.platform != "darwin" else peak / 1024.0 / 1024.0)


def describe_grid(grid: Grid) -> dict:
    return {
        "size": list(grid.size),
        "spacing": [round(s, 6) for s in grid.spacing],
        "origin": [round(o, 6) for o in grid.origin],
        "direction": [list(row) for row in grid.direction],
        "orientation": orientation_code(grid.direction_matrix),
        "anisotropy": round(anisotropy(grid), 4),
    }


def describe_volume(volume: Volume) -> dict:
    array = volume.array
    return {
        "source": volume.source,
        "channels": volume.channels,
        "channel_names": list(volume.channel_names) if volume.channel_names else None,
        "dtype": str(array.dtype),
        "range": [float(np.min(array)), float(np.max(array))] if array.size else None,
        **describe_grid(volume.grid),
    }


class StageTimer:
    """Wall-clock seconds per named stage, in order."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 4)
