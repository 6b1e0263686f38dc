"""Self-supervised SR (``--model self``) against B-spline on the MNI sample, sr protocol x4.

    OMP_NUM_THREADS=2 python -m benchmarks.selfsr --out benchmarks/results/selfsr.json

The HR MNI152 T1 is degraded with :func:`~JointSRSegLib.degradation.simulate_thick_slices`
(thick axial slices along voxel axis 2); self-SR trains on that LR volume alone within the time
budget; PSNR/SSIM (3D, :mod:`JointSRSegLib.metrics`) are computed against the HR volume cropped
to the output grid, next to B-spline and linear on the same input.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from JointSRSegLib.baselines import upsample_image
from JointSRSegLib.degradation import crop_to_grid, simulate_thick_slices
from JointSRSegLib.io import read_volume
from JointSRSegLib.metrics import psnr, ssim
from JointSRSegLib.report import peak_rss_mb
from JointSRSegLib.selfsr import self_supervised_sr

from .common import ROOT, environment, write_result

SAMPLE = ROOT / "Resources" / "SampleData" / "MNI152_T1_1mm.nii.gz"


def _scores(prediction: np.ndarray, reference: np.ndarray) -> dict:
    return {"psnr_db": round(psnr(prediction, reference), 4), "ssim": round(ssim(prediction[0], reference[0]), 5)}


def run(factor: int, axis: int, time_budget: float, seed: int, network: str) -> dict:
    hr = read_volume(SAMPLE)
    lr = simulate_thick_slices(hr, factor, axis)
    results: dict[str, dict] = {}
    reference = None
    for method in ("linear", "bspline"):
        start = time.perf_counter()
        out = upsample_image(lr, "sr", factor, axis, method)
        seconds = time.perf_counter() - start
        if reference is None:
            reference = crop_to_grid(hr, out.grid)
        results[method] = {**_scores(out.array, reference.array), "seconds": round(seconds, 3)}
    start = time.perf_counter()
    out, report = self_supervised_sr(lr, "sr", factor, axis, time_budget=time_budget, seed=seed, network=network)
    seconds = time.perf_counter() - start
    assert out.grid.almost_equal(reference.grid), "self-SR output is not on the protocol grid"
    results["self"] = {**_scores(out.array, reference.array), "seconds": round(seconds, 3)}
    return {
        "benchmark": "selfsr",
        "command": f"python -m benchmarks.selfsr --time-budget {time_budget:g} --seed {seed} --network {network}",
        "input": {
            "hr": str(SAMPLE.relative_to(ROOT)),
            "hr_shape": list(hr.shape),
            "protocol": "sr (simulate_thick_slices)",
            "factor": factor,
            "axis": axis,
            "lr_shape": list(lr.shape),
            "output_shape": list(out.shape),
            "reference": "HR cropped to the output grid (degradation.crop_to_grid)",
        },
        "time_budget_s": time_budget,
        "results": results,
        "gain_over_bspline_db": round(results["self"]["psnr_db"] - results["bspline"]["psnr_db"], 4),
        "gain_over_linear_db": round(results["self"]["psnr_db"] - results["linear"]["psnr_db"], 4),
        "self_report": report,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "environment": environment(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/selfsr.json"))
    parser.add_argument("--time-budget", type=float, default=300.0)
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--axis", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--network", choices=("cnn", "rdst"), default="cnn")
    args = parser.parse_args()
    payload = run(args.factor, args.axis, args.time_budget, args.seed, args.network)
    write_result(args.out, payload)
    r = payload["results"]
    print(
        f"bspline {r['bspline']['psnr_db']:.2f} dB / {r['bspline']['ssim']:.4f}; "
        f"self ({args.network}, {payload['self_report']['training']['steps']} steps, {r['self']['seconds']:.0f} s) "
        f"{r['self']['psnr_db']:.2f} dB / {r['self']['ssim']:.4f}; gain {payload['gain_over_bspline_db']:+.2f} dB"
    )


if __name__ == "__main__":
    main()
