"""Scaling benchmark: a 512x512xN volume, x4 through-plane (sr protocol), for N in three sizes.

Wall time and peak RSS per case (each in a fresh process) show whether cost grows linearly with
the output size.  Methods: the ``bspline`` baseline and a model (``--model``, default: the best
built-in SR package, else ``linear`` so the benchmark always runs).
Run: ``python -m benchmarks.scale [--model ID]``.

``self`` / ``adapt`` train within a time budget, so their wall time is the budget, not the size; with
``--max-steps N`` they take exactly N optimisation steps (budget lifted), so the rows show how
preparation and inference (both per voxel) grow, with the stages from the run's own report:

    OMP_NUM_THREADS=2 python -m benchmarks.scale --model adapt --max-steps 50 \
        --sizes 256x256x16 256x256x32 256x256x64 --out benchmarks/results/scale_adapt.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import emit_case, environment, run_case, write_result
from benchmarks.realistic import write_section
from JointSRSegLib.vocabulary import SELF_TRAINED

SIZES = ((512, 512, 38), (512, 512, 75), (512, 512, 150))
FACTOR = 4


def _case(params: dict) -> None:
    from JointSRSegLib import predict
    from JointSRSegLib.volume import Volume

    rng = np.random.default_rng(0)
    size = tuple(params["size"])
    array = rng.normal(100, 20, size=(1, *size)).astype(np.float32)
    volume = Volume(array, (0.5, 0.5, 2.0), (0.0, 0.0, 0.0))
    options = {}
    if params.get("max_steps") is not None and params["model"] in SELF_TRAINED:
        options = {"max_steps": int(params["max_steps"]), "time_budget": 3600.0, "seed": 0}
    started = time.perf_counter()
    result = predict(volume, model=params["model"], tasks=("sr",), scale=FACTOR, axis=2, device=params["device"],
                     **options)
    out = result.outputs["sr"]
    stages = _find(result.report, "timings_s", "training")
    emit_case("scale", params, started, output_voxels=int(np.prod(out.shape)),
              **({"stages_s": stages} if stages else {}))


def _find(report, key: str, holding: str):
    """The first ``key`` in a nested report whose value holds ``holding`` (self-SR's stage timings sit in
    the model's report; the run's own ``timings_s`` names other stages)."""
    if isinstance(report, dict):
        if isinstance(report.get(key), dict) and holding in report[key]:
            return report[key]
        for value in report.values():
            found = _find(value, key, holding)
            if found is not None:
                return found
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", default=None)
    parser.add_argument("--params", default="{}")
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scale.json"))
    parser.add_argument("--sizes", nargs="+", default=None,
                        help="LR sizes, e.g. 256x256x16 (default 512x512x38/75/150)")
    parser.add_argument("--max-steps", type=int, default=None, help="self / adapt: exactly this many steps")
    parser.add_argument("--doc", type=Path, default=None, help="also write this result's section of this markdown")
    args = parser.parse_args()
    if args.case:
        _case(json.loads(args.params))
        return
    from JointSRSegLib.demo import demo_plan

    model = args.model or demo_plan(FACTOR).seg_model or "linear"
    methods = ["bspline"] + ([model] if model != "bspline" else ["linear"])
    sizes = [tuple(int(n) for n in text.split("x")) for text in args.sizes] if args.sizes else SIZES
    results = []
    for method in methods:
        for size in sizes:
            results.append(run_case("scale", "scale", {"model": method, "size": list(size), "device": args.device,
                                                       "max_steps": args.max_steps}))
    summary = {}
    for method in methods:
        rows = [r for r in results if r["params"]["model"] == method and "wall_s" in r]
        if len(rows) == len(sizes):
            voxels = np.array([r["output_voxels"] for r in rows], float)
            summary[method] = {
                "seconds_per_megavoxel": [round(r["wall_s"] / v * 1e6, 4) for r, v in zip(rows, voxels)],
                "rss_mb_per_megavoxel_increment": round(
                    (rows[-1]["peak_rss_mb"] - rows[0]["peak_rss_mb"]) / ((voxels[-1] - voxels[0]) / 1e6), 3
                ),
            }
            for stage in ("preparation", "training", "inference"):  # self / adapt: per-stage cost
                if all(stage in (r.get("stages_s") or {}) for r in rows):
                    summary[method][f"{stage}_seconds_per_megavoxel"] = [
                        round(r["stages_s"][stage] / v * 1e6, 4) for r, v in zip(rows, voxels)]
    payload = {
        "benchmark": "scale",
        "command": "python -m benchmarks.scale " + " ".join(sys.argv[1:]),
        "factor": FACTOR,
        "environment": environment(),
        "results": results,
        "linearity": summary,
    }
    write_result(args.out, payload)
    if args.doc is not None:
        begin, end = section_markers(args.out)
        write_section(args.doc, markdown(payload, begin, end), begin, end)


def section_markers(out: Path) -> tuple[str, str]:
    """One generated block of docs/benchmarks.md per result file (scale.json, scale_adapt.json, ...)."""
    return (f"<!-- {out.stem}:begin (generated by benchmarks/scale.py) -->", f"<!-- {out.stem}:end -->")


def markdown(payload: dict, begin: str, end: str) -> str:
    """Seconds and peak RSS per size and method, and seconds per output megavoxel (flat = linear)."""
    env = payload["environment"]
    methods = ", ".join(dict.fromkeys(f"`{r['params']['model']}`" for r in payload["results"]))
    lines = [begin, f"## Scaling with volume size ({methods})", "",
             f"`{payload['command']}` — {env['machine'].get('platform')}, {env['machine'].get('cpu_count')} "
             f"logical cores, device {env['device']}, {env['torch_threads']} torch thread(s), {env['date']}. "
             f"Random volumes (0.5 × 0.5 × 2 mm), sr ×{payload['factor']} along axis 2, each case in a fresh "
             "process. Flat seconds per megavoxel = time linear in size.", "",
             "| Method | LR size | Output megavoxels | Seconds | Seconds / megavoxel | Stages (s) | Peak RSS (MB) |",
             "|---|---|---|---|---|---|---|"]
    for r in payload["results"]:
        if "wall_s" not in r:
            lines.append(f"| `{r['params']['model']}` | {'×'.join(map(str, r['params']['size']))} | – | failed | "
                         "– | – | – |")
            continue
        mvox = r["output_voxels"] / 1e6
        stages = ", ".join(f"{k} {v:.1f}" for k, v in (r.get("stages_s") or {}).items()
                           if k in ("preparation", "training", "inference"))
        lines.append(f"| `{r['params']['model']}` | {'×'.join(map(str, r['params']['size']))} | {mvox:.1f} | "
                     f"{r['wall_s']:.1f} | {r['wall_s'] / mvox:.3f} | {stages or '–'} | {r['peak_rss_mb']:.0f} |")
    lines += ["", end]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
