"""``jointsrseg demo``: the bundled MNI152 sample made x4 thick-slice (sr protocol), restored by
the best available model, scored against the HR original next to B-spline, and previewed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .api import predict
from .baselines import upsample_image
from .calibration import display_scale, map_units
from .defaults import SEGMENTATION_PEER, choose_default, realistic_record, shipped_packages, shipped_priors
from .degradation import crop_to_grid, simulate_thick_slices
from .evaluation import evaluate_volumes
from .io import read_volume
from .outputs import write_outputs
from .preview import render_preview
from .progress import TqdmProgress
from .vocabulary import RAW_UNCERTAINTY_UNIT

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
    """SR by the built-in package (or ``adapt``, the shipped prior fine-tuned on the scan) with the best
    *measured* gain over B-spline -- unless the real-scan
    report shows the self-supervised mode (``self``, trained on the scan itself; docs/selfsr.md) gaining
    more -- else by ``self``; segmentation by the built-in package that beats ``atropos`` on the
    real-scan report, else by ``atropos`` on the SR output.  Both come from
    :func:`JointSRSegLib.defaults.choose_default`, the rule the Slicer module uses."""
    sr = choose_default(("sr",), "sr", factor, require_gain=True, fallback="self")
    seg = choose_default(("seg",), "sr", factor, fallback=None)
    seg_model = seg.seg_model or seg.model  # chained (a method's SR segmented by Atropos): Atropos on the demo's SR
    if sr.model != "self" and sr.gain_db is not None:
        candidates = {p.id: p for p in [*shipped_packages(), *shipped_priors()]}  # adapt's record is in prior.json
        real = realistic_record(candidates[sr.model].metadata, "sr", factor) if sr.model in candidates else None
        self_gain = (real or {}).get("self_gain_over_bspline_db")
        if isinstance(self_gain, (int, float)) and self_gain > sr.gain_db:
            return DemoPlan("self", seg_model, f"self gains {self_gain:+.2f} dB over B-spline on the real-scan "
                            f"report, more than {sr.model} ({sr.gain_db:+.2f} dB), at x{factor}")  # fmt: skip
        return DemoPlan(sr.model, seg_model, f"{sr.model} recorded +{sr.gain_db:.2f} dB over B-spline at x{factor}")
    return DemoPlan("self", seg_model, f"no built-in SR package recorded a gain over B-spline at x{factor}")


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
    # the classical peer segments the SR output itself (on self-SR it beats B-spline input: docs/benchmarks.md)
    chained = {"seg_model": SEGMENTATION_PEER} if plan.seg_model == SEGMENTATION_PEER else {}
    joint = joint or bool(chained)
    with TqdmProgress(force=show_progress or None) as bar:
        tasks = ("sr", "seg") if joint else ("sr",)
        result = predict(
            lr, model=plan.sr_model, tasks=tasks, progress=bar, time_budget=time_budget, **chained, **common
        )
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
    key = "uncertainty_sr" if "uncertainty_sr" in outputs else "uncertainty_seg"
    uncertainty = outputs.get(key)
    units = {**map_units(seg.report if seg is not None else {}), **map_units(result.report)}
    png = render_preview(
        {
            f"LR x{DEMO_FACTOR} input": lr_on_grid,
            f"output ({model})": output,
            "HR reference": reference,
            "segmentation": outputs.get("seg"),
            "uncertainty": uncertainty,
        },
        seg_reference=output,
        units={"uncertainty": display_scale(key, units.get(key, RAW_UNCERTAINTY_UNIT))},
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
