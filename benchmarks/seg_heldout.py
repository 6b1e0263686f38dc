"""Held-out segmentation check: HR GM/WM segmentation from x4 thick-slice input, per package.

    OMP_NUM_THREADS=1 python -m benchmarks.seg_heldout --model rehrseg-brain-small \
        --model swinsr-unetr-brain-small --out benchmarks/results/seg_heldout.json

Data never used in training or checkpoint selection (sample mode trains on voxel x < 74 and
validates on 74-103 of the MNI152 sample):

* ``crop``: the regression crop of ``Testing/test_default_models.py`` / ``test_default_model_rehrseg.py``
  (start [106, 45, 40], size [32, 96, 64] voxels of the test slab, T1);
* ``T1`` and ``synth101..103``: the whole test slab x >= 104 as :func:`benchmarks.quality.validation_cases`
  builds it (the T1 and three fixed SynthSeg-style contrasts drawn from the slab's labels).

Each case is made x4 thick-slice along voxel axis 2 (``simulate_thick_slices``), segmented through
:func:`JointSRSegLib.api.predict` with ``--uncertainty`` (the user path), and scored on the HR grid:
Dice and HD95 (mm) of GM (1) and WM (2) and their means.  The uncertainty map is summarised by its
mean over misclassified and over correctly classified voxels (voxels either labelling calls tissue),
i.e. whether it is higher where the segmentation is wrong, and over reference label boundaries vs
the rest of that region (the UASR map is trained to follow reconstruction error, mostly at edges).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from JointSRSegLib.api import predict
from JointSRSegLib.degradation import crop_to_grid, simulate_thick_slices
from JointSRSegLib.io import read_volume
from JointSRSegLib.metrics import dice, hd95
from JointSRSegLib.volume import Volume

from .common import environment, write_result
from .quality import validation_cases
from .regression_check import CROP_SIZE, CROP_START, SAMPLE, TISSUE, crop

FACTOR, AXIS, LABELS = 4, 2, (1, 2)


def cases(n_synth: int) -> list[dict]:
    hr = read_volume(SAMPLE)
    hr = hr.with_array(hr.array.astype(np.float32))
    tissue = crop(read_volume(TISSUE), CROP_START, CROP_SIZE)
    out = [{"name": "crop", "hr": crop(hr, CROP_START, CROP_SIZE), "labels": tissue.array[0].astype(np.int16)}]
    return out + validation_cases(n_synth)


def score(model: str, case: dict) -> dict:
    hr = case["hr"]
    lr = simulate_thick_slices(hr, FACTOR, AXIS)
    started = time.perf_counter()
    result = predict(lr, model=model, tasks=("seg",), scale=FACTOR, axis=AXIS, device="cpu", uncertainty=True)
    seconds = time.perf_counter() - started
    seg = result.outputs["seg"]
    reference = crop_to_grid(Volume(case["labels"][None], hr.spacing, hr.origin, hr.direction), seg.grid)
    pred, ref = seg.array[0], reference.array[0]
    row = {
        "model": model,
        "case": case["name"],
        "shape": list(pred.shape),
        "seconds": round(seconds, 2),
        "on_hr_grid": bool(seg.grid.almost_equal(hr.grid)),
    }
    for label in LABELS:
        row[f"dice_{label}"] = round(float(dice(pred, ref, label)), 4)
        row[f"hd95_{label}"] = round(float(hd95(pred, ref, seg.spacing, label)), 3)
    row["dice_mean"] = round(float(np.mean([row[f"dice_{v}"] for v in LABELS])), 4)
    row["hd95_mean"] = round(float(np.mean([row[f"hd95_{v}"] for v in LABELS])), 3)
    u = result.outputs.get("uncertainty_seg")
    if u is not None:
        unit = u.array[0]
        region = (ref > 0) | (pred > 0)
        wrong = region & (pred != ref)
        right = region & (pred == ref)
        row["uncertainty_kind"] = result.report["model"].get("uncertainty_kinds", {}).get("uncertainty_seg")
        row["uncertainty_range"] = [round(float(unit.min()), 4), round(float(unit.max()), 4)]
        row["uncertainty_mean_wrong"] = round(float(unit[wrong].mean()), 4) if wrong.any() else None
        row["uncertainty_mean_right"] = round(float(unit[right].mean()), 4) if right.any() else None
        boundary = np.zeros_like(region)
        for axis in range(3):  # voxels whose reference label differs from a face neighbour's
            step = np.diff(ref, axis=axis) != 0
            lo = [slice(None)] * 3
            hi = [slice(None)] * 3
            lo[axis], hi[axis] = slice(None, -1), slice(1, None)
            boundary[tuple(lo)] |= step
            boundary[tuple(hi)] |= step
        row["uncertainty_mean_boundary"] = round(float(unit[boundary].mean()), 4)
        row["uncertainty_mean_interior"] = round(float(unit[region & ~boundary].mean()), 4)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.seg_heldout", description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="package id or path (repeatable)")
    parser.add_argument("--synth", type=int, default=3, help="synthetic contrasts of the test slab (default 3)")
    parser.add_argument("--out", type=Path, default=None, help="JSON result file")
    args = parser.parse_args(argv)
    rows = []
    for case in cases(args.synth):
        for model in args.model:
            rows.append(score(model, case))
            print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for model in args.model:
        slab = [r for r in rows if r["model"] == model and r["case"] != "crop"]
        summary[model] = {
            "slab_dice_mean": round(float(np.mean([r["dice_mean"] for r in slab])), 4),
            "slab_hd95_mean": round(float(np.mean([r["hd95_mean"] for r in slab])), 3),
            "slab_cases": len(slab),
        }
    print(json.dumps(summary))
    if args.out:
        write_result(
            args.out, {"environment": environment(), "factor": FACTOR, "axis": AXIS, "rows": rows, "summary": summary}
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
