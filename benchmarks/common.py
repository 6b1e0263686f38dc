"""Shared benchmark plumbing: every case runs in a fresh process so its peak RSS is its own.

A case is ``python -m benchmarks.<module> --case NAME [--json ARGS]``; it prints one JSON line
with its wall time and peak RSS.  ``run_case`` launches it and parses that line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from JointSRSegLib.report import machine_description, package_versions, peak_rss_mb

ROOT = Path(__file__).resolve().parents[1]


def run_case(module: str, case: str, params: dict, timeout: float = 3600) -> dict:
    cmd = [sys.executable, "-m", f"benchmarks.{module}", "--case", case, "--params", json.dumps(params)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=os.environ.copy())
    if proc.returncode != 0:
        return {"case": case, "params": params, "error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def emit_case(case: str, params: dict, started: float, **extra) -> None:
    print(
        json.dumps(
            {
                "case": case,
                "params": params,
                "wall_s": round(time.perf_counter() - started, 3),
                "peak_rss_mb": round(peak_rss_mb(), 1),
                **extra,
            }
        )
    )


def environment() -> dict:
    import torch

    device = "cpu"
    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.get_device_name(0)})"
    return {
        "machine": machine_description(),
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "versions": package_versions(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def write_result(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)
    print(f"wrote {path}")
