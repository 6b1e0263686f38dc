"""CPU time of joint SR x4 + segmentation on a real 256^3 field of view, with and without skipping background.

    OMP_NUM_THREADS=2 python -m benchmarks.fov_timing --out benchmarks/results/fov_timing.json

Why a second timing: the quality report's 256^3 brain is the template resampled to fill the volume,
so it has no background to skip.  A FreeSurfer-conformed scan is 256^3 with the head in the middle;
skull-stripped, most of it is empty.  Cases: label-map subject 19 (never trained on), T1-like,
skull-stripped and whole-head (``benchmarks.realistic_cases.synthesize``), stored LIA as FreeSurfer
writes it, x4 thick coronal slices (the sr protocol).  Methods, each in a fresh process (its own peak
RSS): ``bspline``; the shipped joint package with the engine's head mask (crop + window skipping,
the default) and without it (``foreground_only=False``, the engine before the mask: the baseline);
``atropos`` (B-spline + ANTs Atropos); ``adapt`` (the shipped self-SR prior fine-tuned on the scan, 60 s
ceiling, SR only) and ``adapt+atropos``.  Same machine, same run, 2 threads.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks.common import emit_case, environment, run_case, write_result

PACKAGE = "swinsr-unetr-brain-small"
VARIANTS = ("stripped", "head")
METHODS = ("bspline", "package", "package_whole_fov", "atropos", "adapt", "adapt+atropos")
ADAPT_BUDGET_S = 60.0  # the ceiling of --model adapt (it stops earlier when its held-back loss stops improving)


def _lr_case(variant: str):
    from benchmarks.realistic_cases import CONTRAST_SEEDS, LABEL_MAPS, VARIANT_SEEDS, synthesize
    from JointSRSegLib.degradation import simulate_thick_slices
    from JointSRSegLib.io import read_volume

    labels = read_volume(LABEL_MAPS / "training_seg_19.nii.gz")
    image = synthesize(
        labels.array[0].astype(np.int64), "t1", variant, CONTRAST_SEEDS["t1"] * 100 + VARIANT_SEEDS[variant]
    )
    hr = labels.with_array(image[None])
    return simulate_thick_slices(hr, 4, 2)  # LIA: axis 2 points anterior, i.e. coronal thick slices


def _case(method: str, params: dict) -> None:
    from JointSRSegLib import predict

    lr = _lr_case(params["variant"])
    threads = int(params["threads"])
    started = time.perf_counter()
    if method == "bspline":
        result = predict(lr, model="bspline", tasks=("sr",), scale=4)
    elif method == "atropos":
        result = predict(lr, model="atropos", tasks=("sr", "seg"), scale=4, threads=threads)
    elif method == "adapt":
        result = predict(lr, model="adapt", tasks=("sr",), scale=4, threads=threads, time_budget=ADAPT_BUDGET_S)
    elif method == "adapt+atropos":
        result = predict(lr, model="adapt", tasks=("sr", "seg"), scale=4, threads=threads, seg_model="atropos",
                         time_budget=ADAPT_BUDGET_S)
    else:
        result = predict(
            lr, model=PACKAGE, tasks=("sr", "seg"), scale=4, threads=threads, foreground_only=method == "package"
        )
    extra = {"foreground": result.report["model"].get("foreground"), "lr_shape": list(lr.shape)}
    emit_case(method, params, started, **extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fov_timing.json"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--params", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        import json

        _case(args.case, json.loads(args.params))
        return
    rows = []
    for variant in args.variants:
        for method in args.methods:
            row = run_case("fov_timing", method, {"variant": variant, "threads": args.threads})
            rows.append(row)
            print(f"{variant:9s} {method:18s} {row.get('wall_s', row.get('error'))} s, {row.get('peak_rss_mb')} MB")
    write_result(args.out, {"environment": environment(), "threads": args.threads, "rows": rows})


if __name__ == "__main__":
    main()
