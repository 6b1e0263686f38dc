"""``jointsrseg demo``: the bundled MNI152 sample made x4 thick-slice (sr protocol), restored by
the best available model, scored against the HR original next to B-spline, and previewed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .api import predict
from .baselines import upsample_image
from .defaults import choose_default
from .degradation import crop_to_grid, simulate_thick_slices
from .evaluation import evaluate_volumes
from .io import read_volume
from .outputs import write_outputs
from .preview import render_preview
from .progress import TqdmProgress

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "Resources" / "SampleData"
SAMPLE_T1 = SAMPLE_DIR / "MNI152_T1_1mm.nii.gz"
SAMPLE_TISSUE = SAMPLE_DIR / "MNI152_tissue_1mm.nii.gz"
DEMO_FACTOR = 4
DEMO_AXIS = 2  # the sample's superior-inferior axis: thick axial slices, as acquired clinically


DEMO_SELF_BUDGET_S = 60.0  # seconds of self-supervised training when no shipped SR model beats B-spline


@dataclass(frozen=True)
class DemoPlan:
    """Which method does what in the demo, and why (recorded in report.json)."""

    sr_model: str
    seg_model: str | None
    reason: str


def demo_plan(factor: int = DEMO_FACTOR) -> DemoPlan:
    """SR by the built-in package with the best *measured* gain over B-spline, or else by the
    self-supervised mode (it trains on the scan and beats B-spline; docs/selfsr.md); segmentation
    by the built-in package that segments thick-slice input at ``factor`` (best recorded Dice first).
    Both come from :func:`JointSRSegLib.defaults.choose_default`, the rule the Slicer module uses."""
    sr = choose_default(("sr",), "sr", factor, require_gain=True, fallback="self")
    seg = choose_default(("seg",), "sr", factor, fallback=None)
    if sr.model != "self" and sr.gain_db is not None:
        return DemoPlan(sr.model, seg.model, f"{sr.model} recorded +{sr.gain_db:.2f} dB over B-spline at x{factor}")
    return DemoPlan("self", seg.model, f"no built-in SR package recorded a gain over B-spline at x{factor}")


def run_demo(
    out_dir: Path, device: str = "auto", show_progress: bool = False, time_budget: float = DEMO_SELF_BUDGET_S
) -> dict[str, Path]:
    hr = read_volume(SAMPLE_T1)
    hr = hr.with_array(hr.array.astype(np.float32))
    tissue = read_volume(SAMPLE_TISSUE)
    lr = simulate_thick_slices(hr, DEMO_FACTOR, DEMO_AXIS)
    plan = demo_plan()
    common = {"scale": DEMO_FACTOR, "axis": DEMO_AXIS, "device": device, "uncertainty": True}
    joint = plan.seg_model is not None and plan.seg_model == plan.sr_model  # one joint run, not two
    with TqdmProgress(force=show_progress or None) as bar:
        tasks = ("sr", "seg") if joint else ("sr",)
        result = predict(lr, model=plan.sr_model, tasks=tasks, progress=bar, time_budget=time_budget, **common)
        seg = result if joint else None
        if plan.seg_model and not joint:
            seg = predict(lr, model=plan.seg_model, tasks=("seg",), progress=bar, **common)
    output = result.outputs["sr"]
    model = plan.sr_model
    baseline = upsample_image(lr, "sr", DEMO_FACTOR, DEMO_AXIS, "bspline")
    reference = crop_to_grid(hr, output.grid)
    scores = {model: evaluate_volumes(output, reference), "bspline": evaluate_volumes(baseline, reference)}
    outputs = dict(result.outputs)
    if seg is not None:
        outputs["seg"] = seg.outputs["seg"]
        if "uncertainty_seg" in seg.outputs:
            outputs["uncertainty_seg"] = seg.outputs["uncertainty_seg"]
        tissue_on_grid = crop_to_grid(tissue, outputs["seg"].grid)
        scores["segmentation"] = evaluate_volumes(outputs["seg"], tissue_on_grid, labels=True)
        if not joint:  # a joint run's report is this report
            result.report["segmentation_run"] = seg.report
    result.report["demo"] = {
        "sample": str(SAMPLE_T1.name),
        "protocol": "sr",
        "factor": DEMO_FACTOR,
        "axis": DEMO_AXIS,
        "sr_model": model,
        "seg_model": plan.seg_model,
        "choice": plan.reason,
        "metrics_vs_hr": scores,
    }
    lr_on_grid = upsample_image(lr, "sr", DEMO_FACTOR, DEMO_AXIS, "nearest")
    uncertainty = outputs.get("uncertainty_sr") or outputs.get("uncertainty_seg")
    png = render_preview(
        {
            f"LR x{DEMO_FACTOR} input": lr_on_grid,
            f"output ({model})": output,
            "HR reference": reference,
            "segmentation": outputs.get("seg"),
            "uncertainty": uncertainty,
        },
        seg_reference=output,
        title=f"{model}: PSNR {scores[model]['psnr']:.2f} dB (B-spline {scores['bspline']['psnr']:.2f} dB)",
    )
    volumes = {"input_lr": lr, **outputs}
    written = write_outputs(Path(out_dir), volumes, "nii.gz", result.report, extras={"preview.png": png})
    print(
        f"demo: {model} PSNR {scores[model]['psnr']:.2f} dB, SSIM {scores[model]['ssim']:.4f}; "
        f"B-spline PSNR {scores['bspline']['psnr']:.2f} dB, SSIM {scores['bspline']['ssim']:.4f}"
    )
    if "segmentation" in scores:
        print(f"segmentation ({plan.seg_model}): mean tissue Dice {scores['segmentation']['mean_dice']:.3f}")
    for name, path in written.items():
        print(f"{name}: {path}")
    return written
