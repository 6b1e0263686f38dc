"""Checkpoint and package selection on the validation slab -- never on the test slab.

    OMP_NUM_THREADS=1 python -m benchmarks.validation_slab CANDIDATE [CANDIDATE ...] --protocol sr --factor 4

Why: every choice made while shipping a package (checkpoint, inference window, which fine-tune to
keep) must leave the quality report's test slab (x >= 104) unseen.  This scores candidates (package
folders, built-in ids) on the sample-mode validation split, x in [74, 104), as the T1 case plus six
fixed synthetic contrasts (seeds 201-206: three T2-like, GM brighter than WM, three T1-like, so neither
intensity order dominates the choice; the report uses 101-102, so no contrast is shared either):
the mean PSNR gain of the image output over ``bspline`` and the mean GM/WM Dice of the segmentation
from the LR input, per case and on average.  One JSON line per candidate (``--out`` writes them all).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import environment, write_result
from benchmarks.quality import degrade, image_scores, label_scores, labels_on, package_tasks, run_method, slab_cases
from JointSRSegLib.packaging import model_info
from JointSRSegLib.vocabulary import PROTOCOLS

VALIDATION_SLAB = (74, 104)  # sample mode: train x < 74 <= validation < 104 <= test
SELECTION_SEEDS = (201, 202, 203, 204, 205, 206)  # 3 draws with GM brighter than WM, 3 with WM brighter


def score(candidate: str, protocol: str, factor: int, cases: list[dict]) -> dict:
    """Mean gain over bspline (image output) and mean GM/WM Dice (segmentation) of one candidate."""
    info = model_info(candidate)
    tasks = package_tasks(info, protocol, factor)
    if tasks is None:
        raise ValueError(f"{candidate}: does not apply to protocol {protocol} x{factor}")
    image_task = "interp" if protocol == "interp" else "sr"
    per_case, gains, dices = [], [], []
    for case in cases:
        hr, labels = case["hr"], case["labels"]
        lr = degrade(hr, protocol, factor)
        outputs, seconds = run_method(candidate, lr, protocol, factor, 0.0, tasks)
        entry = {"case": case["name"], "seconds": round(seconds, 2)}
        if image_task in outputs:
            base, _ = run_method("bspline", lr, protocol, factor, 0.0, (image_task,))
            ours_db, base_db = image_scores(outputs[image_task], hr)["psnr"], image_scores(base[image_task], hr)["psnr"]
            entry.update(psnr=round(ours_db, 3), gain_over_bspline_db=round(ours_db - base_db, 3))
            gains.append(ours_db - base_db)
        if "seg" in outputs:
            prediction, reference = labels_on(outputs["seg"], hr, labels)
            scores = label_scores(prediction, reference, hr.spacing)
            entry.update(dice_mean=round(scores["dice_mean"], 4), dice_1=round(scores["dice_1"], 4),
                         dice_2=round(scores["dice_2"], 4))
            dices.append(scores["dice_mean"])
        per_case.append(entry)
    return {"candidate": str(candidate), "protocol": protocol, "factor": factor,
            "gain_over_bspline_db": round(float(np.mean(gains)), 3) if gains else None,
            "dice_mean": round(float(np.mean(dices)), 4) if dices else None, "cases": per_case}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("candidates", nargs="+", help="package folders or built-in ids")
    parser.add_argument("--protocol", default="sr", choices=PROTOCOLS)
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--synthetic", type=int, default=len(SELECTION_SEEDS),
                        help=f"synthetic contrasts besides T1 (max {len(SELECTION_SEEDS)})")
    parser.add_argument("--crop", type=int, nargs=3, default=None, help="centred crop of the slab (HR voxels)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file for all results")
    args = parser.parse_args()
    cases = slab_cases(*VALIDATION_SLAB, SELECTION_SEEDS[: args.synthetic], args.crop)
    results = []
    for candidate in args.candidates:
        result = score(candidate, args.protocol, args.factor, cases)
        results.append(result)
        print(json.dumps(result), flush=True)
    if args.out:
        write_result(args.out, {"benchmark": "validation_slab", "command": " ".join(sys.argv),
                                "slab": list(VALIDATION_SLAB), "seeds": list(SELECTION_SEEDS[: args.synthetic]),
                                "results": results, "environment": environment()})


if __name__ == "__main__":
    main()
