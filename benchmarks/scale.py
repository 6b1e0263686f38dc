"""Scaling benchmark: a 512x512xN volume, x4 through-plane (sr protocol), for N in three sizes.

Wall time and peak RSS per case (each in a fresh process) show whether cost grows linearly with
the output size.  Methods: the ``bspline`` baseline and a model (``--model``, default: the best
built-in SR package, else ``linear`` so the benchmark always runs).
Run: ``python -m benchmarks.scale [--model ID]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.common import emit_case, environment, run_case, write_result

SIZES = ((512, 512, 38), (512, 512, 75), (512, 512, 150))
FACTOR = 4


def _case(params: dict) -> None:
    from JointSRSegLib import predict
    from JointSRSegLib.volume import Volume

    rng = np.random.default_rng(0)
    size = tuple(params["size"])
    array = rng.normal(100, 20, size=(1, *size)).astype(np.float32)
    volume = Volume(array, (0.5, 0.5, 2.0), (0.0, 0.0, 0.0))
    started = time.perf_counter()
    result = predict(volume, model=params["model"], tasks=("sr",), scale=FACTOR, axis=2, device=params["device"])
    out = result.outputs["sr"]
    emit_case("scale", params, started, output_voxels=int(np.prod(out.shape)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", default=None)
    parser.add_argument("--params", default="{}")
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scale.json"))
    args = parser.parse_args()
    if args.case:
        _case(json.loads(args.params))
        return
    from JointSRSegLib.demo import demo_plan

    model = args.model or demo_plan(FACTOR).seg_model or "linear"
    methods = ["bspline"] + ([model] if model != "bspline" else ["linear"])
    results = []
    for method in methods:
        for size in SIZES:
            results.append(run_case("scale", "scale", {"model": method, "size": list(size), "device": args.device}))
    summary = {}
    for method in methods:
        rows = [r for r in results if r["params"]["model"] == method and "wall_s" in r]
        if len(rows) == len(SIZES):
            voxels = np.array([r["output_voxels"] for r in rows], float)
            summary[method] = {
                "seconds_per_megavoxel": [round(r["wall_s"] / v * 1e6, 4) for r, v in zip(rows, voxels)],
                "rss_mb_per_megavoxel_increment": round(
                    (rows[-1]["peak_rss_mb"] - rows[0]["peak_rss_mb"]) / ((voxels[-1] - voxels[0]) / 1e6), 3
                ),
            }
    write_result(
        args.out,
        {
            "benchmark": "scale",
            "factor": FACTOR,
            "environment": environment(),
            "results": results,
            "linearity": summary,
        },
    )


if __name__ == "__main__":
    main()
