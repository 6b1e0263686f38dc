"""How much of ``adapt`` is the prior and how much the fine-tuning, per scan source; and a candidate prior
against the shipped one.

    OMP_NUM_THREADS=1 python -m benchmarks.adapt_prior --priors Resources/Priors /tmp/new/Priors --steps 0 100
    # writes benchmarks/results/adapt_prior.json

Why: the real-scan report runs ``adapt`` under its 60 s budget, so the step count follows the machine's
load and the prior's share is hidden.  Here every run has a fixed step count (``0`` = the prior applied
untrained; load-independent), and the same cases are scored for each prior directory (a folder holding
``selfsr-sr-x4/``; :func:`JointSRSegLib.selfsr_prior.load_prior`'s ``directory``).  Cases, all never
trained on, sr protocol x4 along the anterior-posterior axis, cropped to the head: the real ds002748 T1s
21, 22, 24 (the prior's own scanner: its real training scans are ds002748 1-16), real ds000011 T1s of
subjects 2 and 5 (another scanner and voxel size, 1 x 1.33 x 1.33 mm, never used anywhere in training),
the synthetic label-map subject-19 T1 skull-stripped and T2 whole head, and MNI152.  Scores as the
report's (:func:`benchmarks.realistic.image_scores`): head PSNR gain over B-spline and head SSIM.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from JointSRSegLib.degradation import crop_to_grid, simulate_thick_slices

from .common import ROOT, environment, write_result
from .realistic import FACTOR, _predict, image_scores
from .realistic_cases import (
    DATA,
    anatomical_axis,
    crop,
    crop_box,
    generate_cases,
    head_mask_from_intensity,
)

OUT = ROOT / "benchmarks" / "results" / "adapt_prior.json"
REPORT_CASES = ("real-sub21-brain", "real-sub22-brain", "real-sub24-brain", "s19-t1-stripped-brain-LIA",
                "s19-t2-head-brain-LIA", "mni-brain")
OTHER_SCANNER = ("openfmri_ds000011/sub-02_T1w.nii.gz", "openfmri_ds000011/sub-05_T1w.nii.gz")


def other_scanner_cases(paths=OTHER_SCANNER):
    """ds000011 T1s as report-style cases: the head's box (+8 voxels, whole slabs), an intensity head mask."""
    from JointSRSegLib.io import read_volume

    for relative in paths:
        volume = read_volume(DATA / relative)
        volume = volume.with_array(volume.array.astype(np.float32))
        head = head_mask_from_intensity(volume.array[0])
        box = crop_box(head, volume.shape, anatomical_axis(volume))
        hr = crop(volume, box)
        mask = crop(volume.with_array(head[None].astype(np.uint8)), box).array[0].astype(bool)
        name = "ds000011-" + Path(relative).name.split("_")[0]
        yield {"name": name, "hr": hr, "head": mask, "axis": anatomical_axis(hr), "source": relative}


def head_psnr_ssim(output, case: dict) -> dict:
    hr = case["hr"]
    reference = crop_to_grid(hr, output.grid).array[0]
    head = crop_to_grid(hr.with_array(case["head"][None].astype(np.uint8)), output.grid).array[0].astype(bool)
    return image_scores(output.array[0], reference, head, float(hr.array.max() - hr.array.min()) or 1.0)


def run(prior_dirs: list[Path], steps: list[int], cases, threads: int, log=print) -> list[dict]:
    import JointSRSegLib.selfsr_prior as prior_module

    shipped_loader = prior_module.load_prior
    rows = []
    try:
        for case in cases:
            lr = simulate_thick_slices(case["hr"], FACTOR, case["axis"])
            started = time.perf_counter()
            bspline = head_psnr_ssim(_predict(lr, "bspline", ("sr",), case["axis"], threads)["sr"], case)
            rows.append({"case": case["name"], "method": "bspline", "psnr_head": bspline["psnr_head"],
                         "ssim_head": bspline["ssim_head"], "seconds": round(time.perf_counter() - started, 2)})
            for directory in prior_dirs:
                def load_from(*args, _directory=directory, **kwargs):
                    return shipped_loader(*args, **{**kwargs, "directory": _directory})

                prior_module.load_prior = load_from
                for count in steps:
                    started = time.perf_counter()
                    output = _predict(lr, "adapt", ("sr",), case["axis"], threads, max_steps=count, seed=0,
                                      time_budget=1e6)["sr"]
                    scores = head_psnr_ssim(output, case)
                    row = {"case": case["name"], "method": "adapt", "prior": str(directory), "steps": count,
                           "psnr_head": scores["psnr_head"], "ssim_head": scores["ssim_head"],
                           "gain_vs_bspline_db": round(scores["psnr_head"] - bspline["psnr_head"], 3),
                           "seconds": round(time.perf_counter() - started, 2)}
                    rows.append(row)
                    log(f"{case['name']:28s} {directory} steps {count:4d}: {row['gain_vs_bspline_db']:+.3f} dB, "
                        f"SSIM {row['ssim_head']:.4f} (B-spline {bspline['ssim_head']:.4f}), {row['seconds']:.0f} s")
    finally:
        prior_module.load_prior = shipped_loader
    return rows


def summary(rows: list[dict]) -> list[dict]:
    """Mean gain per (prior, steps) over each case group: the prior's scanner, another scanner, synthetic."""
    def group(name: str) -> str:
        return "ds002748" if name.startswith("real-") else "ds000011" if name.startswith("ds000011") else \
            "mni" if name.startswith("mni") else "synthetic"

    out: dict = {}
    for row in rows:
        if row["method"] != "adapt":
            continue
        key = (row["prior"], row["steps"], group(row["case"]))
        out.setdefault(key, []).append(row["gain_vs_bspline_db"])
    return [{"prior": p, "steps": s, "group": g, "cases": len(v), "mean_gain_db": round(float(np.mean(v)), 3)}
            for (p, s, g), v in sorted(out.items())]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--priors", nargs="+", type=Path, default=[ROOT / "Resources" / "Priors"],
                        help="folders holding selfsr-sr-x4/ (the shipped one first)")
    parser.add_argument("--steps", nargs="+", type=int, default=[0, 100])
    parser.add_argument("--only", nargs="+", default=None, help="case names to keep")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    def cases():
        for case in other_scanner_cases():
            if not args.only or case["name"] in args.only:
                yield case
        wanted = [c for c in REPORT_CASES if not args.only or c in args.only]
        if wanted:
            yield from (c for c in generate_cases("full", "brain", only=wanted) if c["name"] in wanted)

    rows = run(args.priors, args.steps, cases(), args.threads)
    write_result(args.out, {
        "benchmark": "adapt_prior",
        "command": "python -m benchmarks.adapt_prior " + " ".join(sys.argv[1:] if argv is None else argv),
        "protocol": "sr", "factor": FACTOR, "through_plane": "anterior-posterior",
        "priors": [str(p) for p in args.priors], "steps": args.steps, "rows": rows, "summary": summary(rows),
        "wall_s": round(time.perf_counter() - started, 1), "environment": environment(),
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
