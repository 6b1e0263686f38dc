"""Brain masks on cases never trained on: the learned brain extraction against the classical rules.

    OMP_NUM_THREADS=2 python -m benchmarks.brain_mask --write

For every label-map test case of the real-scans report (subjects 19-20, T1/T2/FLAIR/PD-like, whole head and
skull-stripped; ``benchmarks.realistic_cases``) the brain mask Atropos would use -- from the HR image and
from the x4 thick-slice input upsampled by B-spline (sr protocol, coronal thick slices) -- is scored against
the label map's brain (labels 1-499): Dice, the fraction of the brain kept, and the mask's volume outside
the brain in ml (scalp, skull, neck: where Atropos would paint tissue).  Seconds per mask on this machine.
Orientation: the same scan in RAS and PSR voxel order must give the same mask (Dice between them).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from JointSRSegLib import atropos
from JointSRSegLib.brain_extraction import card, learned_brain_mask
from JointSRSegLib.degradation import simulate_thick_slices

from .common import environment
from .realistic_cases import FACTOR, generate_cases, reorient

RESULTS = Path(__file__).resolve().parent / "results" / "brain_mask.json"


def _bspline(lr, axis: int):
    from JointSRSegLib.api import predict

    return predict(lr, model="bspline", tasks=("sr",), scale=FACTOR, axis=axis, device="cpu").outputs["sr"]


def masks(volume) -> dict[str, tuple[np.ndarray, float]]:
    out = {}
    started = time.perf_counter()
    learned = atropos.learned_mask(volume)
    if learned is not None:
        out["learned"] = (learned, time.perf_counter() - started)
    started = time.perf_counter()
    out["classical"] = (atropos.brain_mask(volume.array[0], volume.spacing, grid=volume.grid),
                        time.perf_counter() - started)
    return out


def scores(mask: np.ndarray, brain: np.ndarray, voxel_ml: float) -> dict:
    inter = float((mask & brain).sum())
    return {"dice": round(2 * inter / max(float(mask.sum() + brain.sum()), 1.0), 4),
            "brain_kept": round(inter / max(float(brain.sum()), 1.0), 4),
            "outside_brain_ml": round(float((mask & ~brain).sum()) * voxel_ml, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subset", default="full", choices=("quick", "full"))
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS.relative_to(RESULTS.parents[2])}")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    rows, agreement = [], []
    for case in generate_cases(args.subset, "brain", orientations=("LIA",), only=args.only):
        if case["kind"] != "labelmap":
            continue
        hr, brain = case["hr"], case["brain"]
        voxel_ml = float(np.prod(hr.spacing)) / 1000.0
        lr = simulate_thick_slices(hr, FACTOR, case["axis"])
        up = _bspline(lr, case["axis"])
        for source, volume in (("hr", hr), ("bspline_x4", up)):
            for method, (mask, seconds) in masks(volume).items():
                rows.append({"case": case["name"], "contrast": case["contrast"], "variant": case["variant"],
                             "input": source, "method": method, "seconds": round(seconds, 2),
                             **scores(mask, brain, voxel_ml)})
                print(json.dumps(rows[-1]), flush=True)
        if case["contrast"] == "t1" and case["variant"] == "head":
            reference = learned_brain_mask(hr)
            for code in ("RAS", "PSR"):
                moved = reorient(hr, code)
                other = learned_brain_mask(moved)
                back = reorient(moved.with_array(other[None].astype(np.uint8)), "LIA").array[0].astype(bool)
                dice = 2 * float((back & reference).sum()) / max(float(back.sum() + reference.sum()), 1.0)
                agreement.append({"case": case["name"], "orientation": code, "dice_vs_LIA": round(dice, 5)})
                print(json.dumps(agreement[-1]), flush=True)
    summary = {}
    for method in sorted({r["method"] for r in rows}):
        for source in ("hr", "bspline_x4"):
            for variant in ("head", "stripped"):
                sel = [r for r in rows if r["method"] == method and r["input"] == source and r["variant"] == variant]
                if sel:
                    summary[f"{method}|{source}|{variant}"] = {
                        k: round(float(np.mean([r[k] for r in sel])), 4)
                        for k in ("dice", "brain_kept", "outside_brain_ml", "seconds")} | {
                        "min_dice": min(r["dice"] for r in sel), "cases": len(sel)}
    payload = {"benchmark": "brain_mask", "command": "python -m benchmarks.brain_mask " + " ".join(argv or []),
               "model": (card() or {}).get("network"), "rows": rows, "orientation_agreement": agreement,
               "summary": summary, "environment": environment()}
    text = json.dumps(payload, indent=1) + "\n"
    for path in ([RESULTS] if args.write else []) + ([args.out] if args.out else []):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for key, value in summary.items():
        print(key, value)


if __name__ == "__main__":
    main()
