"""Choose the learned brain mask's probability cut once, on validation label maps never in a report.

    OMP_NUM_THREADS=2 python -m benchmarks.brain_mask_threshold --write   # ~10 min; writes the card's "threshold"

Why: the network sees a 3 mm view; sampled back to 1 mm its 0.5 level lies about one working voxel
outside the brain, on the skull / CSF rim next to the cortex (subject-19 whole heads: 390-430 mL outside
the brain at 0.5), which Atropos then paints grey matter.  The cut that best separates brain from the rest
at full resolution is chosen here, on the calibration cases of ``benchmarks.realistic_cases`` (label maps
17 and 18, the network's validation subjects: T1/T2/FLAIR/PD-like, whole head and skull-stripped), from
the HR image and from the x4 thick-slice input upsampled by B-spline (sr protocol, coronal thick slices):
the cut with the highest mean Dice against the brain (labels 1-499) on the whole heads.  Skull-stripped
inputs use the foreground near the mask instead of the mask itself
(:func:`JointSRSegLib.atropos.refine_learned_mask`), so they are checked, not fitted: the mask Atropos
uses at the chosen cut against the one at 0.5.  Subjects 19-20 stay for the report (``benchmarks/brain_mask.py``).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from JointSRSegLib.atropos import refine_learned_mask
from JointSRSegLib.brain_extraction import CARD_FILE, MODEL_DIR, THRESHOLD, brain_probability, mask_from_probability
from JointSRSegLib.degradation import simulate_thick_slices

from .brain_mask import _bspline
from .common import environment, write_result
from .realistic_cases import FACTOR, generate_cases

CUTS = tuple(round(c, 2) for c in np.arange(0.30, 0.96, 0.05))


def dice(mask: np.ndarray | None, brain: np.ndarray) -> float:
    if mask is None:
        return 0.0
    return 2.0 * float((mask & brain).sum()) / max(float(mask.sum() + brain.sum()), 1.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true",
                        help=f"record the chosen cut in Resources/BrainMask/{CARD_FILE}")
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows, probabilities = [], []
    for case in generate_cases("calibration", "brain", orientations=("LIA",), only=args.only):
        if case["kind"] != "labelmap":
            continue
        hr, brain = case["hr"], case["brain"]
        up = _bspline(simulate_thick_slices(hr, FACTOR, case["axis"]), case["axis"])
        for source, volume in (("hr", hr), ("bspline_x4", up)):
            probability = brain_probability(volume)
            scores = {str(c): round(dice(mask_from_probability(probability, volume.spacing, c), brain), 4)
                      for c in CUTS}
            rows.append({"case": case["name"], "variant": case["variant"], "input": source, "dice": scores})
            print(json.dumps(rows[-1]), flush=True)
            if case["variant"] == "stripped":
                probabilities.append((rows[-1], volume, probability, brain))
    head = {c: round(float(np.mean([r["dice"][c] for r in rows if r["variant"] == "head"])), 4) for c in map(str, CUTS)}
    stripped = {c: round(float(np.mean([r["dice"][c] for r in rows if r["variant"] == "stripped"])), 4)
                for c in map(str, CUTS)}
    best = max(head, key=lambda c: head[c])
    print("whole head: mean Dice per cut", head)
    print("skull-stripped (the raw mask)", stripped)
    print(f"chosen cut {best}: whole-head mean Dice {head[best]} (at {THRESHOLD}: {head[str(THRESHOLD)]})")
    check = []
    for row, volume, probability, brain in probabilities:  # what Atropos uses on skull-stripped input
        used = {c: dice(refine_learned_mask(volume.array[0], volume.spacing, probability, float(c)), brain)
                for c in (str(THRESHOLD), best)}
        check.append({"case": row["case"], "input": row["input"], **{f"mask_used_dice_at_{c}": round(v, 4)
                                                                      for c, v in used.items()}})
        print(json.dumps(check[-1]), flush=True)
    if args.write:
        path = MODEL_DIR / CARD_FILE
        payload = json.loads(path.read_text())
        payload["threshold"] = {
            "value": float(best),
            "chosen_by": "python -m benchmarks.brain_mask_threshold --write",
            "criterion": "highest mean Dice against the brain (labels 1-499) at full resolution, HR and x4 "
                         "B-spline inputs, on the whole-head calibration cases (label maps 17-18, four contrasts)",
            "mean_dice_whole_head": head, "mean_dice_skull_stripped_raw_mask": stripped,
            "skull_stripped_mask_used": check,
            "cases": len(rows), "seconds": round(time.perf_counter() - started, 1), "environment": environment(),
        }
        write_result(path, payload)


if __name__ == "__main__":
    main()
