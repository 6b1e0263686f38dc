"""REHRSeg Eq. 1 ablation: segmenters trained with and without pseudo LR scans, scored side by side on held-out data.

    OMP_NUM_THREADS=1 python -m benchmarks.rehrseg_pseudo_lr --model ARM_WITHOUT --model ARM_WITH \
        --synth 3 --out benchmarks/results/rehrseg_pseudo_lr.json

Cases: the MNI152 sample's test slab (x >= 104; sample mode trains on x < 74 and selects checkpoints on
74-103), T1 plus ``--synth`` fixed SynthSeg-style contrasts (:func:`benchmarks.quality.validation_cases`),
each made x4 thick-slice along voxel axis 2 (``simulate_thick_slices``, the training protocol).

* ``hr``: the HR segmentation through :func:`JointSRSegLib.api.predict` (the user path), Dice of GM (1)
  and WM (2) against the HR labels (as ``benchmarks.seg_heldout``) -- Table 4's DSC (HR).
* ``lr``: the segmenter's LR head (``seg_lr``) on the same LR scan normalised as the package normalises
  it, Dice against the protocol's LR labels (majority of each slab of 4 HR slices) -- Table 4's DSC (LR).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from JointSRSegLib.api import predict
from JointSRSegLib.degradation import crop_to_grid, simulate_thick_slices
from JointSRSegLib.inference.sliding import sliding_window_predict
from JointSRSegLib.metrics import dice
from JointSRSegLib.normalization import normalize
from JointSRSegLib.packaging import load_package
from JointSRSegLib.volume import Volume
from training.data import degrade_label

from .common import environment, write_result
from .quality import validation_cases

FACTOR, AXIS, LABELS = 4, 2, (1, 2)


def lr_segmentation(package_path: str, lr: Volume) -> np.ndarray:
    """Arg-max of the segmenter's LR head on ``lr`` (package normalisation, the package's inference window)."""
    package = load_package(package_path)
    net = package.build_model("cpu").eval()
    segmenter = getattr(net, "segmenter", net)  # rehrseg_seg_uasr holds the segmenter and its teacher
    x, _ = normalize(lr.array.astype(np.float32), package.intensity_normalization)
    roi = tuple(package.metadata.get("inference", {}).get("roi_size", (64, 64, 16)))
    out = sliding_window_predict(segmenter, torch.from_numpy(np.ascontiguousarray(x))[None], roi, ("seg_lr",),
                                 torch.device("cpu"))
    return out["seg_lr"][0].argmax(0).numpy()


def score(model: str, case: dict) -> dict:
    hr = case["hr"]
    lr = simulate_thick_slices(hr, FACTOR, AXIS)
    seg = predict(lr, model=model, tasks=("seg",), scale=FACTOR, axis=AXIS, device="cpu").outputs["seg"]
    reference = crop_to_grid(Volume(case["labels"][None], hr.spacing, hr.origin, hr.direction), seg.grid)
    lr_reference = degrade_label(case["labels"][None], "sr", FACTOR, AXIS)[0]
    lr_pred = lr_segmentation(model, lr)
    row = {"model": model, "case": case["name"], "hr_shape": list(seg.shape), "lr_shape": list(lr_pred.shape),
           "on_hr_grid": bool(seg.grid.almost_equal(hr.grid))}
    for grid, pred, ref in (("hr", seg.array[0], reference.array[0]), ("lr", lr_pred, lr_reference)):
        for label in LABELS:
            row[f"{grid}_dice_{label}"] = round(float(dice(pred, ref, label)), 4)
        row[f"{grid}_dice_mean"] = round(float(np.mean([row[f"{grid}_dice_{v}"] for v in LABELS])), 4)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks.rehrseg_pseudo_lr", description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="package path (repeatable)")
    parser.add_argument("--synth", type=int, default=3, help="synthetic contrasts of the test slab (default 3)")
    parser.add_argument("--out", type=Path, default=None, help="JSON result file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for case in validation_cases(args.synth):
        for model in args.model:
            rows.append(score(model, case))
            print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for model in args.model:
        mine = [r for r in rows if r["model"] == model]
        summary[model] = {f"{g}_dice_mean": round(float(np.mean([r[f"{g}_dice_mean"] for r in mine])), 4)
                          for g in ("hr", "lr")}
        summary[model]["cases"] = len(mine)
    print(json.dumps(summary))
    if args.out:
        write_result(args.out, {"environment": environment(), "factor": FACTOR, "axis": AXIS, "rows": rows,
                                "summary": summary})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
