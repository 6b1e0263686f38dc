"""Speed benchmark (SwinSR-UNETR paper's claim): joint SR+segmentation from a low-resolution input
versus segmentation-only at full resolution.

* ours: SwinSR-UNETR ``small``, 4-channel 120x120x78 LR input -> isotropic x2 SR + segmentation
  (240x240x156 outputs), sliding window 48^3 (LR voxels).
* baseline: MONAI ``SwinUNETR(feature_size=24)`` segmentation only on the 4x240x240x156 HR volume,
  sliding window 96^3 (HR voxels): the same physical field of view per window, same overlap.

Untrained weights: speed does not depend on their values.  Run: ``python -m benchmarks.speed``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks.common import emit_case, environment, run_case, write_result

OVERLAP = 0.25


def _case_ours(params: dict) -> None:
    from JointSRSegLib.inference.devices import select_device
    from JointSRSegLib.inference.sliding import sliding_window_predict
    from JointSRSegLib.models import build

    device = select_device(params["device"])
    net = build("swinsr_unetr", "small", in_channels=4, seg_channels=4, scale=(2, 2, 2)).to(device).eval()
    image = torch.rand(1, 4, 120, 120, 78)
    started = time.perf_counter()
    out = sliding_window_predict(net, image, (48, 48, 48), ["sr", "seg"], device, OVERLAP)
    assert tuple(out["sr"].shape[2:]) == (240, 240, 156)
    emit_case("swinsr_unetr_small_joint", params, started)


def _case_baseline(params: dict) -> None:
    from monai.networks.nets import SwinUNETR

    from JointSRSegLib.inference.devices import select_device
    from JointSRSegLib.inference.sliding import sliding_window_predict

    device = select_device(params["device"])
    seg = SwinUNETR(in_channels=4, out_channels=4, feature_size=24, spatial_dims=3).to(device).eval()

    class AsDict(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return {"seg": self.net(x)}

    image = torch.rand(1, 4, 240, 240, 156)
    started = time.perf_counter()
    out = sliding_window_predict(AsDict(seg), image, (96, 96, 96), ["seg"], device, OVERLAP)
    assert tuple(out["seg"].shape[2:]) == (240, 240, 156)
    emit_case("swinunetr24_seg_only_hr", params, started)


CASES = {"ours": _case_ours, "baseline": _case_baseline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", choices=sorted(CASES))
    parser.add_argument("--params", default="{}")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/speed.json"))
    args = parser.parse_args()
    if args.case:
        CASES[args.case](json.loads(args.params))
        return
    params = {"device": args.device}
    ours, baseline = run_case("speed", "ours", params), run_case("speed", "baseline", params)
    ratio = ours["wall_s"] / baseline["wall_s"] if "wall_s" in ours and "wall_s" in baseline else None
    write_result(
        args.out,
        {
            "benchmark": "speed",
            "environment": environment(),
            "overlap": OVERLAP,
            "results": [ours, baseline],
            "time_ratio_ours_over_baseline": ratio,
            "targets": {"time_ratio_max": 1.0, "peak_rss_mb_max": 6144, "gpu_seconds_max": 5.0},
        },
    )


if __name__ == "__main__":
    main()
