"""Fit the uncertainty calibration once, on calibration cases never used for a report.

    OMP_NUM_THREADS=1 python -m benchmarks.uncertainty_calibration collect --threads 1   # slow: runs the methods
    python -m benchmarks.uncertainty_calibration fit        # seconds: writes Resources/Calibration/...json

Cases (``CALIBRATION_CASES``): T1- and T2-like synthetic images of the FreeSurfer label maps of subjects 17
and 18 (the self-SR prior's validation subjects: used to pick its export step, never trained on; no other
shipped network saw them) and the real T1 of ds002748 subject 23 (never used, SR only); each degraded by the sr
protocol x4 along the anterior-posterior axis as in the report.  The report's cases (``benchmarks/uncertainty.py``:
subjects 19-20, ds002748 21/22/24) are never used here.

``collect`` runs, per case: B-spline and ``adapt`` SR each segmented by Atropos (the raw signals of
:func:`JointSRSegLib.calibration.seg_features` and the voxel's error, label != reference), and ``adapt`` and
``self`` SR (:func:`JointSRSegLib.calibration.sr_features` and |SR - HR| / the LR input's robust range).  A
fixed-seed subsample of each crop (``SAMPLES`` voxels) goes to ``benchmarks/results/uncertainty_calibration/``.
``fit`` fits the logistic (segmentation) and log-linear (SR) models of :mod:`JointSRSegLib.calibration` on all
of it, prints the in-sample and leave-one-case-out figures, and writes the coefficients with their provenance.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

from JointSRSegLib.calibration import (
    CALIBRATION_FILE,
    FORMAT,
    SEG_FEATURES,
    SR_FEATURES,
    UNIT_TEXT,
    error_probability,
    expected_error,
    fit_log_linear,
    fit_logistic,
    fit_mlp,
)
from JointSRSegLib.degradation import simulate_thick_slices

from .common import ROOT, write_result
from .realistic_cases import FACTOR, generate_cases

DATA_DIR = ROOT / "benchmarks" / "results" / "uncertainty_calibration"
# Each contrast on both subjects, so that a case left out is a subject not fitted on in its contrast.
CALIBRATION_CASES = ("s17-t1-stripped-brain-LIA", "s17-t2-stripped-brain-LIA", "s18-t1-stripped-brain-LIA",
                     "s18-t2-stripped-brain-LIA", "real-sub23-brain")
SAMPLES = 300_000  # voxels kept per case and run
HEAD_SHARE = 0.8
SEG_SR_SOURCES = ("bspline", "adapt")  # the SR that Atropos segments (B-spline: --model atropos; adapt: the default)
SR_METHODS = ("adapt", "self")
SELF_BUDGET = 60.0  # seconds, as benchmarks/uncertainty.py runs self


def _pick(head: np.ndarray, seed: int) -> np.ndarray:
    """Flat indices: ``HEAD_SHARE`` of ``SAMPLES`` inside the head (the voxels the report scores), the rest
    around it (the map must stay low there too)."""
    rng = np.random.default_rng(seed)
    inside, outside = np.flatnonzero(head.ravel()), np.flatnonzero(~head.ravel())
    n_in = min(inside.size, int(HEAD_SHARE * SAMPLES))
    n_out = min(outside.size, SAMPLES - n_in)
    return np.sort(np.r_[rng.choice(inside, n_in, replace=False), rng.choice(outside, n_out, replace=False)])


def _self_sr(lr, method: str, axis: int, threads: int):
    import torch

    from JointSRSegLib.selfsr import self_supervised_sr

    torch.set_num_threads(threads)
    extra: dict = {"signals": None}
    budget = SELF_BUDGET if method == "self" else None
    sr, _ = self_supervised_sr(lr, "sr", FACTOR, axis, time_budget=budget, seed=0, uncertainty_out=extra,
                               start="prior" if method == "adapt" else "scratch")
    return sr, extra["signals"]


def collect_case(case: dict, threads: int, seg_sources=SEG_SR_SOURCES, log=print) -> None:
    from JointSRSegLib.api import predict
    from JointSRSegLib.atropos import segment_tissues
    from JointSRSegLib.selfsr import robust_normalization

    hr, axis = case["hr"], case["axis"]
    lr = simulate_thick_slices(hr, FACTOR, axis)
    intensity_range = float(robust_normalization(lr.array)[2][0])
    pick = _pick(case["head"], seed=len(case["name"]))
    srs = {}
    for method in SR_METHODS:
        started = time.perf_counter()
        sr, signals = _self_sr(lr, method, axis, threads)
        srs[method] = sr
        error = np.abs(sr.array[0] - hr.array[0]) / intensity_range
        np.savez_compressed(DATA_DIR / f"{case['name']}__sr_{method}.npz",
                            x=signals.reshape(len(SR_FEATURES), -1)[:, pick].T,
                            y=error.ravel()[pick].astype(np.float32), head=case["head"].ravel()[pick])
        log(f"  sr {method}: {time.perf_counter() - started:.0f} s, mean |error| {error[case['head']].mean():.4f}")
    if case["labels"] is None:
        return
    srs["bspline"] = predict(lr, model="bspline", tasks=("sr",), scale=FACTOR, axis=axis, device="cpu").outputs["sr"]
    for source in seg_sources:
        started = time.perf_counter()
        result = segment_tissues(srs[source], threads=threads, signals=True, slab=(axis, FACTOR, "sr"))
        error = result.labels != case["labels"]
        np.savez_compressed(DATA_DIR / f"{case['name']}__seg_{source}.npz",
                            x=result.signals.reshape(len(SEG_FEATURES), -1)[:, pick].T, y=error.ravel()[pick],
                            head=case["head"].ravel()[pick])
        log(f"  atropos on {source}: {time.perf_counter() - started:.0f} s, error rate in head "
            f"{error[case['head']].mean():.3f}")


def collect(names, threads: int, seg_sources=SEG_SR_SOURCES) -> None:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    for case in generate_cases("calibration", "brain", orientations=("LIA",), only=list(names)):
        if case["name"] in names:
            print(f"case {case['name']}: HR {case['hr'].shape}", flush=True)
            collect_case(case, threads, seg_sources, log=lambda text: print(text, flush=True))


# ------------------------------------------------------------------------------------------------ fit
def _load(kind: str) -> dict[str, dict]:
    """``{case: {"x", "y", "head"}}`` of one kind (``seg_bspline``, ``sr_adapt``, ...)."""
    out = {}
    for path in sorted(DATA_DIR.glob(f"*__{kind}.npz")):
        with np.load(path) as data:
            out[path.name.split("__")[0]] = {key: data[key] for key in data.files}
    return out


def _auroc(score, positive) -> float:
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    ranks = stats.rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / max(n_pos * n_neg, 1))


def _ece(probability, error, bins: int = 10) -> float:
    index = np.minimum((np.asarray(probability) * bins).astype(int), bins - 1)
    return float(sum(abs(probability[index == b].mean() - error[index == b].mean()) * np.mean(index == b)
                     for b in range(bins) if np.any(index == b)))


def _finite(value: float, digits: int = 4) -> float | None:
    """Rounded, or None for NaN (a constant map has no rank correlation; JSON has no NaN)."""
    return round(float(value), digits) if np.isfinite(value) else None


def _seg_scores(entry, data) -> dict:
    p = error_probability(entry, data["x"].T)
    head = data["head"].astype(bool)
    y = data["y"].astype(bool)
    return {"auroc_head": round(_auroc(p[head], y[head]), 4), "ece_head": round(_ece(p[head], y[head]), 4),
            "raw_auroc_head": round(_auroc(data["x"][head, 0], y[head]), 4)}


def _sr_scores(entry, data) -> dict:
    e = expected_error(entry, data["x"].T)
    head = data["head"].astype(bool)
    return {"spearman_head": _finite(stats.spearmanr(e[head], data["y"][head]).statistic),
            "raw_spearman_head": _finite(stats.spearmanr(data["x"][head, 0], data["y"][head]).statistic),
            "mean_predicted_head": round(float(e[head].mean()), 5),
            "mean_error_head": round(float(data["y"][head].mean()), 5)}


def fit_method(kinds: list[str], features, linear_fitter, link: str, scorer, metric: str) -> dict:
    """Fit the linear model and the small network on every case of ``kinds``, score both with each case
    left out in turn, and keep the one with the better mean held-out ``metric`` (the other's figures stay
    in the entry, ``alternative``)."""
    pooled = {f"{case}/{kind}": data for kind in kinds for case, data in _load(kind).items()}
    if not pooled:
        raise SystemExit(f"no calibration data for {kinds} in {DATA_DIR}: run 'collect' first")
    fitters = {"linear": lambda x, y: {"model": "linear", "weights": [round(float(w), 6) for w in linear_fitter(x, y)]},
               "mlp": lambda x, y: fit_mlp(x, y, link)}
    cases = sorted({name.split("/")[0] for name in pooled})
    entries = {}
    for model, fitter in fitters.items():
        def fitted(parts, fitter=fitter):
            x = np.concatenate([d["x"] for d in parts])
            y = np.concatenate([d["y"] for d in parts]).astype(np.float64)
            return {"features": list(features), **fitter(x, y)}

        entry = fitted(list(pooled.values()))
        entry["in_sample"] = {name: scorer(entry, data) for name, data in pooled.items()}
        entry["leave_one_case_out"] = {}
        for case in cases if len(cases) > 1 else ():
            held = fitted([d for n, d in pooled.items() if not n.startswith(case)])
            entry["leave_one_case_out"].update({n: scorer(held, d) for n, d in pooled.items() if n.startswith(case)})
        scores = entry["leave_one_case_out"] or entry["in_sample"]
        entry["held_out_mean"] = round(float(np.mean([v[metric] for v in scores.values()])), 4)
        entry["fitted_on"] = sorted(pooled)
        entries[model] = entry
        print(f"{kinds} {model}: mean held-out {metric} {entry['held_out_mean']}", flush=True)
    best = max(entries, key=lambda m: entries[m]["held_out_mean"])
    other = next(m for m in entries if m != best)
    return {**entries[best], "alternative": {k: v for k, v in entries[other].items()
                                             if k in ("model", "held_out_mean", "leave_one_case_out", "in_sample")}}


def fit(out: Path) -> None:
    methods = {
        "atropos": fit_method([f"seg_{s}" for s in SEG_SR_SOURCES], SEG_FEATURES, fit_logistic, "logit", _seg_scores,
                              "auroc_head"),
        **{m: fit_method([f"sr_{m}"], SR_FEATURES, fit_log_linear, "log", _sr_scores, "spearman_head")
           for m in SR_METHODS},
    }
    for method, entry in methods.items():
        print(method, json.dumps({"in_sample": entry["in_sample"], "held_out": entry["leave_one_case_out"]}, indent=1))
    payload = {"format": FORMAT, "command": "python -m benchmarks.uncertainty_calibration " + " ".join(sys.argv[1:]),
               "date": time.strftime("%Y-%m-%d"), "cases": list(CALIBRATION_CASES),
               "protocol": f"sr x{FACTOR}, thick slices along anterior-posterior", "self_budget_s": SELF_BUDGET,
               "units": {"atropos": UNIT_TEXT["seg"], "self": UNIT_TEXT["sr"], "adapt": UNIT_TEXT["sr"]},
               "methods": methods}
    write_result(out, payload)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("step", choices=("collect", "fit"))
    parser.add_argument("--only", nargs="+", default=list(CALIBRATION_CASES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seg-sources", nargs="+", default=list(SEG_SR_SOURCES), choices=SEG_SR_SOURCES,
                        help="the SR outputs Atropos segments (collect)")
    parser.add_argument("--out", type=Path, default=CALIBRATION_FILE)
    args = parser.parse_args(argv)
    if args.step == "collect":
        collect(args.only, args.threads, tuple(args.seg_sources))
    else:
        fit(args.out)


if __name__ == "__main__":
    main()
