"""Quality report: shipped model packages next to the classical baselines and the self-supervised mode.

    OMP_NUM_THREADS=2 python -m benchmarks.quality --out benchmarks/results/quality.json
    # also writes docs/benchmarks.md and docs/images/benchmarks/*.png (box plots)

Validation data never used in training.  The built-in packages train in sample mode on the
left hemisphere of the MNI152 sample (voxel x < 74, ``training.engine.data.sample_cases``);
voxels 74-103 are their validation slab (best-checkpoint selection), so this report uses only
the **test slab** x >= 104 of the right hemisphere, as

* ``T1``: the MNI152 T1 intensities of that slab;
* ``synth<k>``: fixed, seeded SynthSeg-style contrasts drawn from the tissue labels of the same slab
  (``training.engine.data.synthetic_contrast``: random per-tissue intensities, blur, noise,
  random contrast; seeds 101, 102, ...), so a model is not scored only on the contrast it trained on.

Every case is degraded with both standard protocols (``sr`` thick slices, ``interp`` gapped
slices) at each factor along voxel axis 2 (axial slices), reconstructed by every method through
:func:`JointSRSegLib.api.predict` (the user-facing path) and scored on the output grid against the
HR slab: PSNR / SSIM / EdgeSSIM (3D, data range of the reference).  Models that segment are also
scored (Dice / HD95 of GM = 1, WM = 2) from the LR input and from the HR input (the HR slab fed to
the same model at the same factor; its super-sampled labels are reduced back to the HR grid by a
majority vote over each voxel's sub-slices, interp outputs by taking the acquired positions; T1 case
only, to keep the run affordable).

Self-supervised mode (``self``) trains on each scan within ``--self-budget`` seconds (default 20 s,
on the ``T1`` case only unless ``--self-all``; ``benchmarks/selfsr.py`` measures it at 300 s).
``--timing`` (default on) measures CPU inference time and peak RSS of each model on a 256^3 brain
(the MNI T1 resampled to 256^3, made x4 thick-slice) in a fresh process per model.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from JointSRSegLib.api import predict
from JointSRSegLib.degradation import (
    crop_to_grid,
    inplane_axes,
    simulate_inplane_bicubic,
    simulate_slice_gaps,
    simulate_thick_slices,
)
from JointSRSegLib.io import read_volume
from JointSRSegLib.metrics import dice as dice_score
from JointSRSegLib.metrics import edge_ssim, hd95, psnr, ssim
from JointSRSegLib.vocabulary import IMAGE_BASELINES, PROTOCOLS, THROUGH_PLANE_PROTOCOLS
from JointSRSegLib.volume import Volume

from .common import ROOT, emit_case, environment, run_case, write_result

SAMPLE = ROOT / "Resources" / "SampleData" / "MNI152_T1_1mm.nii.gz"
TISSUE = ROOT / "Resources" / "SampleData" / "MNI152_tissue_1mm.nii.gz"
BASELINES = IMAGE_BASELINES
AXIS = 2
TEST_START = 104  # first voxel of the sample-mode test slab along axis 0 (train < 74 <= validation < 104)
SYNTH_SEEDS = (101, 102, 103)
DOC = ROOT / "docs" / "benchmarks.md"
PLOTS = ROOT / "docs" / "images" / "benchmarks"
LABELS = (1, 2)
PROTOCOL_ORDER = PROTOCOLS


# ------------------------------------------------------------------------------------------- data
def _slab(volume: Volume, start: int, crop: list[int] | None, stop: int | None = None) -> Volume:
    """``volume[start:stop, ...]`` (then an optional centred crop) with the origin moved accordingly."""
    index = [slice(start, stop), slice(None), slice(None)]
    shape = volume.array[(slice(None), *index)].shape[1:]
    if crop:
        for axis, (n, size) in enumerate(zip(shape, crop)):
            base = index[axis].start or 0
            first = base + max(0, (n - size) // 2)
            index[axis] = slice(first, first + min(size, n))
    origin = volume.grid.physical_points(np.array([[s.start or 0 for s in index]], dtype=float))[0]
    return Volume(np.ascontiguousarray(volume.array[(slice(None), *index)]), volume.spacing, tuple(origin),
                  volume.direction, source=volume.source)


def validation_cases(n_synth: int, crop: list[int] | None = None) -> list[dict]:
    """The held-out test slab as the T1 case plus ``n_synth`` fixed synthetic contrasts."""
    return slab_cases(TEST_START, None, SYNTH_SEEDS[:n_synth], crop)


def slab_cases(start: int, stop: int | None, seeds, crop: list[int] | None = None) -> list[dict]:
    """Sample slab ``x in [start, stop)`` as the T1 case plus one fixed synthetic contrast per seed."""
    from training.engine.data import synthetic_contrast

    hr = read_volume(SAMPLE)
    hr = hr.with_array(hr.array.astype(np.float32))
    tissue = read_volume(TISSUE)
    hr, tissue = _slab(hr, start, crop, stop), _slab(tissue, start, crop, stop)
    labels = tissue.array[0].astype(np.int16)
    cases = [{"name": "T1", "hr": hr, "labels": labels}]
    import torch

    for seed in seeds:
        lo, hi = np.percentile(hr.array, [0.5, 99.5])
        item = {"image": torch.as_tensor((hr.array - lo) / (hi - lo)), "label": torch.as_tensor(labels[None])}
        image = np.asarray(synthetic_contrast(item, seed)["image"], dtype=np.float32)
        image = image * 1000.0  # scanner-like units; every method sees the same input
        cases.append({"name": f"synth{seed}", "hr": hr.with_array(image), "labels": labels})
    return cases


def degrade(hr: Volume, protocol: str, factor: int) -> Volume:
    """The LR input of a protocol; ``inplane`` is RDST's (bicubic in both in-plane axes + 1 % noise, seed 0)."""
    if protocol == "inplane":
        return simulate_inplane_bicubic(hr, factor, AXIS, seed=0)
    return simulate_thick_slices(hr, factor, AXIS) if protocol == "sr" else simulate_slice_gaps(hr, factor, AXIS)


# ---------------------------------------------------------------------------------------- scoring
def image_scores(output: Volume, hr: Volume) -> dict:
    reference = crop_to_grid(hr, output.grid) if not output.grid.almost_equal(hr.grid, tol=1e-4) else hr
    ref, pred = reference.array[0].astype(np.float32), output.array[0].astype(np.float32)
    data_range = float(ref.max() - ref.min()) or 1.0
    return {"psnr": psnr(pred, ref, data_range), "ssim": ssim(pred, ref, data_range),
            "edge_ssim": edge_ssim(pred, ref, data_range)}


def label_scores(prediction: np.ndarray, reference: np.ndarray, spacing) -> dict:
    out = {}
    for label in LABELS:
        out[f"dice_{label}"] = dice_score(prediction, reference, label)
        out[f"hd95_{label}"] = hd95(prediction, reference, spacing, label)
    out["dice_mean"] = float(np.mean([out[f"dice_{label}"] for label in LABELS]))
    out["hd95_mean"] = float(np.mean([out[f"hd95_{label}"] for label in LABELS]))
    return out


def labels_on(output: Volume, reference_grid_volume: Volume, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference labels cropped to the output grid (same voxel centres)."""
    ref = crop_to_grid(reference_grid_volume.with_array(labels[None]), output.grid).array[0]
    return output.array[0].astype(np.int16), ref.astype(np.int16)


def reduce_to_input_grid(seg: np.ndarray, protocol: str, factor: int, n_in: int) -> np.ndarray:
    """Labels predicted from an HR input back onto that input's grid along axis 2."""
    if protocol == "interp":
        return seg[..., ::factor][..., :n_in]
    sub = seg[..., : n_in * factor].reshape(*seg.shape[:2], n_in, factor)
    votes = np.stack([(sub == v).sum(-1) for v in range(int(seg.max()) + 1)], axis=0)
    return votes.argmax(0).astype(np.int16)


# ---------------------------------------------------------------------------------------- methods
def builtin_packages() -> list:
    from JointSRSegLib.packaging import available_models

    return [info for info in available_models() if info.source == "builtin"]


def run_method(method: str, lr: Volume, protocol: str, factor: int, self_budget: float, tasks=None) -> tuple:
    task = "interp" if protocol == "interp" else "sr"
    tasks = tasks or (task,)
    options = {"time_budget": self_budget, "seed": 0} if method == "self" else {}
    started = time.perf_counter()
    if protocol == "inplane" and method in BASELINES:
        # A baseline is separable: the sr-protocol upsampling along each in-plane axis in turn lands on
        # the HR grid (the in-plane LR pixel covers the same block of HR pixels as a thick slice).
        volume = lr
        for axis in inplane_axes(AXIS):
            volume = predict(volume, model=method, tasks=("sr",), scale=factor, axis=axis, device="cpu").outputs["sr"]
        return {"sr": volume}, time.perf_counter() - started
    result = predict(lr, model=method, tasks=tasks, scale=factor, axis=AXIS, device="cpu", **options)
    return result.outputs, time.perf_counter() - started


def package_tasks(info, protocol: str, factor: int) -> tuple[str, ...] | None:
    """The tasks a package is scored on for one protocol and factor (None: it does not apply)."""
    task = "interp" if protocol == "interp" else "sr"
    if not info.supports_factor(factor, protocol):
        return None
    if protocol == "inplane":
        return ("sr",) if "sr" in info.tasks else None
    if task in info.tasks:
        return tuple(t for t in (task, "seg") if t in info.tasks)
    if tuple(info.tasks) == ("seg",):  # segmentation-only (REHRSeg): HR labels from the LR input
        return ("seg",)
    return None


def evaluate(factors, protocols, n_synth, self_budget, self_all, crop, models, hr_seg: bool) -> list[dict]:
    rows: list[dict] = []
    cases = validation_cases(n_synth, crop)
    packages = builtin_packages() if models is None else [m for m in builtin_packages() if m.id in models]
    for case in cases:
        hr, labels = case["hr"], case["labels"]
        for protocol in protocols:
            task = "interp" if protocol == "interp" else "sr"
            for factor in factors:
                lr = degrade(hr, protocol, factor)
                methods: list[tuple[str, tuple]] = [(b, (task,)) for b in BASELINES]
                if self_budget > 0 and protocol != "inplane" and (self_all or case["name"] == "T1"):
                    methods.append(("self", (task,)))
                for info in packages:
                    tasks = package_tasks(info, protocol, factor)
                    if tasks:
                        methods.append((info.id, tasks))
                for method, tasks in methods:
                    row = {"case": case["name"], "protocol": protocol, "factor": factor, "method": method}
                    try:
                        outputs, seconds = run_method(method, lr, protocol, factor, self_budget, tasks)
                    except Exception as error:  # one failing method must not hide the rest of the report
                        row["error"] = f"{type(error).__name__}: {error}"
                        rows.append(row)
                        print(f"{case['name']} {protocol} x{factor} {method}: {row['error']}", file=sys.stderr)
                        continue
                    row["seconds"] = seconds
                    if task in outputs:
                        row.update(image_scores(outputs[task], hr))
                    if "seg" in outputs:
                        pred, ref = labels_on(outputs["seg"], hr, labels)
                        row.update({f"lr_{k}": v for k, v in label_scores(pred, ref, hr.spacing).items()})
                        if hr_seg and case["name"] == "T1":
                            hr_out = predict(hr, model=method, tasks=("seg",), scale=factor, axis=AXIS, device="cpu")
                            seg = reduce_to_input_grid(hr_out.outputs["seg"].array[0], protocol, factor, hr.shape[2])
                            n = seg.shape[2]
                            row.update({f"hr_{k}": v for k, v in
                                        label_scores(seg, labels[..., :n], hr.spacing).items()})
                    rows.append(row)
                    print(f"{case['name']:9s} {protocol:7s} x{factor} {method:28s} "
                          + (f"PSNR {row['psnr']:6.2f}  SSIM {row['ssim']:.4f}  EdgeSSIM {row['edge_ssim']:.4f}"
                             if "psnr" in row else "(segmentation only)")
                          + (f"  Dice(LR) {row['lr_dice_mean']:.3f}" if "lr_dice_mean" in row else "")
                          + (f"  Dice(HR) {row['hr_dice_mean']:.3f}" if "hr_dice_mean" in row else ""), flush=True)
    return rows


# ----------------------------------------------------------------------------------------- timing
def reset_peak_rss() -> bool:
    """Start a new peak-RSS window (Linux: ``VmHWM`` restarts at the current RSS); False where unsupported.

    Why: the process peak of the 256^3 timing is set by resampling the template, not by the model; the
    window opened after the input is built measures what inference itself needs."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def window_peak_rss_mb() -> float | None:
    """Peak RSS (MiB) since :func:`reset_peak_rss` (``VmHWM``); None where ``/proc`` does not report it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    return None


def timing_case(params: dict) -> None:
    """Child process: one model on a 256^3 brain, thick slices (x4, or the package's factor) along axis 2."""
    import gc

    from scipy.ndimage import zoom

    started = time.perf_counter()
    hr = read_volume(SAMPLE)
    array = zoom(hr.array[0].astype(np.float32), [256 / s for s in hr.shape], order=1)
    spacing = tuple(float(sp) * s / 256 for sp, s in zip(hr.spacing, hr.shape))
    big = Volume(array[None], spacing, hr.origin, hr.direction, source="MNI152 resampled to 256^3")
    protocol, factor = params.get("protocol", "sr"), int(params.get("factor", 4))
    lr = degrade(big, protocol, factor)
    del hr, array, big
    gc.collect()
    windowed = reset_peak_rss()
    model, tasks = params["model"], tuple(params["tasks"])
    options = {"time_budget": params.get("self_budget", 20.0)} if model == "self" else {}
    t0 = time.perf_counter()
    predict(lr, model=model, tasks=tasks, scale=factor, axis=AXIS, device="cpu", **options)
    emit_case("timing", params, started, inference_s=round(time.perf_counter() - t0, 2), lr_shape=list(lr.shape),
              inference_peak_rss_mb=window_peak_rss_mb() if windowed else None)


def timings(models: list[tuple[str, tuple, str, int]], self_budget: float) -> list[dict]:
    out = []
    for model, tasks, protocol, factor in models:
        params = {"model": model, "tasks": list(tasks), "protocol": protocol, "factor": factor,
                  "self_budget": self_budget}
        result = run_case("quality", "timing", params)
        out.append(result)
        print(f"256^3 timing {model} x{factor}: {result.get('inference_s', result.get('error'))} s, "
              f"peak RSS {result.get('peak_rss_mb')} MB (inference {result.get('inference_peak_rss_mb')} MB)",
              flush=True)
    return out


# ---------------------------------------------------------------------------------------- summary
def summarise(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if "error" not in row:
            groups.setdefault((row["protocol"], row["factor"], row["method"]), []).append(row)
    out = []
    for (protocol, factor, method), items in sorted(groups.items(), key=lambda kv: (PROTOCOL_ORDER.index(kv[0][0]),
                                                                                      kv[0][1])):
        entry = {"protocol": protocol, "factor": factor, "method": method, "cases": len(items)}
        for key in ("psnr", "ssim", "edge_ssim", "seconds", "lr_dice_mean", "lr_hd95_mean", "hr_dice_mean",
                    "hr_hd95_mean", "lr_dice_1", "lr_dice_2"):
            values = [r[key] for r in items if key in r and r[key] is not None and math.isfinite(r[key])]
            if values:
                entry[key] = float(np.mean(values))
                entry[key + "_std"] = float(np.std(values))
        bspline = {r["case"]: r["psnr"] for r in rows if r.get("method") == "bspline" and r["protocol"] == protocol
                   and r["factor"] == factor and "psnr" in r}
        gains = [r["psnr"] - bspline[r["case"]] for r in items if r["case"] in bspline and "psnr" in r]
        if gains:
            entry["gain_over_bspline_db"] = float(np.mean(gains))
        out.append(entry)
    return out


def box_plots(rows: list[dict], folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    keys = sorted({(r["protocol"], r["factor"]) for r in rows if "psnr" in r},
                  key=lambda k: (PROTOCOL_ORDER.index(k[0]), k[1]))
    for metric in ("psnr", "ssim"):
        fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 4), squeeze=False)
        for ax, (protocol, factor) in zip(axes[0], keys):
            items = [r for r in rows if r["protocol"] == protocol and r["factor"] == factor and metric in r]
            methods = list(dict.fromkeys(r["method"] for r in items))
            ax.boxplot([[r[metric] for r in items if r["method"] == m] for m in methods])
            ax.set_xticks(range(1, len(methods) + 1), [m.replace("-brain", "\n-brain") for m in methods],
                          rotation=60, fontsize=7)
            ax.set_title(f"{protocol} x{factor}")
            ax.set_ylabel(metric.upper())
        fig.tight_layout()
        path = folder / f"quality_{metric}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        written.append(path)
    return written


def _machine(machine) -> str:
    if isinstance(machine, dict):
        parts = ", ".join(f"{k} {v}" for k, v in machine.items() if k != "platform")
        return f"{parts} ({machine.get('platform', '')})"
    return str(machine)


def fmt(value, digits=2):
    return "–" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def markdown(payload: dict) -> str:
    p = payload
    lines = [
        "# Quality report",
        "",
        f"Generated by `{p['command']}` (part of `make bench`) on {p['environment']['date']}; "
        f"machine: {_machine(p['environment']['machine'])}, device {p['environment']['device']}, "
        f"{p['environment']['torch_threads']} torch threads. Raw numbers: `benchmarks/results/quality.json`.",
        "",
        "**Data.** " + p["data"],
        "",
        f"**Self-supervised mode** (`self`): time budget {p['self_budget_s']:g} s per scan"
        + ("" if p["self_all"] else ", on the T1 case only") + " (`benchmarks/selfsr.py` measures the 300 s "
        "default: +3.5 dB over B-spline at sr x4 on the whole sample).",
        "",
        "Built-in packages evaluated: " + (", ".join(f"`{m}`" for m in p["packages"]) or "none installed") + ".",
        "",
        "## Mean over cases",
        "",
        "PSNR dB (± std over cases) / SSIM / EdgeSSIM; gain = mean PSNR difference to `bspline` on the same cases.",
        "",
        "| Protocol | Factor | Method | Cases | PSNR | SSIM | EdgeSSIM | Gain vs bspline | Dice (LR in) "
        "| HD95 mm (LR in) | Dice (HR in) | HD95 mm (HR in) | Seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in p["summary"]:
        lines.append(
            f"| {e['protocol']} | ×{e['factor']} | `{e['method']}` | {e['cases']} | {fmt(e.get('psnr'))} ± "
            f"{fmt(e.get('psnr_std'))} | {fmt(e.get('ssim'), 4)} | {fmt(e.get('edge_ssim'), 4)} | "
            f"{fmt(e.get('gain_over_bspline_db')) if e['method'] != 'bspline' else '0'} | "
            f"{fmt(e.get('lr_dice_mean'), 3)} | {fmt(e.get('lr_hd95_mean'))} | {fmt(e.get('hr_dice_mean'), 3)} | "
            f"{fmt(e.get('hr_hd95_mean'))} | {fmt(e.get('seconds'), 1)} |")
    lines += ["", "## Targets of issue #7", ""]
    for target in p["targets"]:
        lines.append(f"- {target}")
    lines += ["", "## Per case", "",
              "| Case | Protocol | Factor | Method | PSNR | SSIM | EdgeSSIM | Dice GM / WM (LR in) | HD95 GM / WM | "
              "Dice mean (HR in) | Seconds |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in p["rows"]:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['protocol']} | ×{r['factor']} | `{r['method']}` | error: {r['error']} "
                         "| | | | | | |")
            continue
        dice_cell = (f"{fmt(r.get('lr_dice_1'), 3)} / {fmt(r.get('lr_dice_2'), 3)}" if "lr_dice_1" in r else "–")
        hd_cell = (f"{fmt(r.get('lr_hd95_1'))} / {fmt(r.get('lr_hd95_2'))}" if "lr_hd95_1" in r else "–")
        lines.append(f"| {r['case']} | {r['protocol']} | ×{r['factor']} | `{r['method']}` | {fmt(r.get('psnr'))} | "
                     f"{fmt(r.get('ssim'), 4)} | {fmt(r.get('edge_ssim'), 4)} | {dice_cell} | {hd_cell} | "
                     f"{fmt(r.get('hr_dice_mean'), 3)} | {fmt(r.get('seconds'), 1)} |")
    lines += ["", "## Box plots", ""]
    for path in p["plots"]:
        lines.append(f"![{Path(path).stem}]({Path(path).relative_to(ROOT / 'docs').as_posix()})")
    lines += ["", "## CPU inference on a 256³ brain (×4 along axis 2, or the package's own factor)", "",
              "Each model in a fresh process. *Peak RSS* is the whole process (Python, torch, resampling the "
              "template to 256³); *inference peak* is the peak during inference alone (Linux `VmHWM` reset once the "
              "LR input is ready and the resampling buffers are freed; what the process already held then is "
              "included).", "",
              "Protocol sr ×4: 256×256×64 thick slices → 256³; interp ×4: 64 gapped slices → 256×256×253; "
              "inplane ×4: 64×64×256 → 256³.", "",
              "| Model | Protocol | Factor | Tasks | Inference s | Peak RSS MB | Inference peak MB |",
              "|---|---|---|---|---|---|---|"]
    for t in p.get("timing_256", []):
        params = t.get("params", {})
        lines.append(f"| `{params.get('model')}` | {params.get('protocol', 'sr')} | ×{params.get('factor', 4)} | "
                     f"{','.join(params.get('tasks', []))} | "
                     f"{t.get('inference_s', 'error: ' + str(t.get('error')))} | {t.get('peak_rss_mb', '–')} | "
                     f"{fmt(t.get('inference_peak_rss_mb'), 1)} |")
    if not p.get("timing_256"):
        lines.append("| (not measured in this run: `--no-timing`) | | | | | | |")
    lines += ["", "## Caveats", "",
              "- One development subject: the test slab is a different part of the same MNI152 template the "
              "models trained on (spatial, not subject-level, separation), and the synthetic contrasts are drawn "
              "from that slab's own labels. Figures on real patients will be lower.",
              "- The template is smooth (an average of many brains), so interpolation does unusually well on it.",
              "- Segmentation from the HR input feeds an HR volume to a model trained on LR input (out of its "
              "training distribution); it is reported because the issue asks for it.", ""]
    return "\n".join(lines)


def targets(summary: list[dict]) -> list[str]:
    out = []
    by = {(e["protocol"], e["factor"], e["method"]): e for e in summary}
    pkgs = sorted({e["method"] for e in summary if e["method"] not in (*BASELINES, "self")})
    for m in pkgs:
        e = by.get(("sr", 4, m))
        if e and "gain_over_bspline_db" in e:
            ok = "met" if e["gain_over_bspline_db"] >= 1.5 else "NOT met"
            out.append(f"`{m}` sr ×4: {e['gain_over_bspline_db']:+.2f} dB over bspline (target ≥ +1.5 dB: {ok})")
        for protocol in ("interp", "inplane"):
            e = by.get((protocol, 4, m))
            if e and "gain_over_bspline_db" in e:
                out.append(f"`{m}` {protocol} ×4: {e['gain_over_bspline_db']:+.2f} dB over bspline")
        for protocol in THROUGH_PLANE_PROTOCOLS:
            e = by.get((protocol, 4, m))
            if e and "lr_dice_mean" in e:
                ok = "met" if e["lr_dice_mean"] >= 0.85 else "NOT met"
                out.append(f"`{m}` {protocol} ×4: mean tissue Dice from LR input {e['lr_dice_mean']:.3f} "
                           f"(target ≥ 0.85: {ok})")
    e = by.get(("sr", 4, "self"))
    if e and "gain_over_bspline_db" in e:
        out.append(f"`self` sr ×4 (reduced budget): {e['gain_over_bspline_db']:+.2f} dB over bspline")
    return out or ["no model package installed: only baselines were measured"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/quality.json"))
    parser.add_argument("--doc", type=Path, default=DOC, help="Markdown report (docs/benchmarks.md)")
    parser.add_argument("--factors", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS),
                        choices=PROTOCOLS)
    parser.add_argument("--synthetic", type=int, default=2, help="synthetic-contrast cases besides T1 (max 3)")
    parser.add_argument("--self-budget", type=float, default=20.0, help="seconds per self-SR run (0: skip self)")
    parser.add_argument("--self-all", action="store_true", help="run self on every case, not only T1")
    parser.add_argument("--crop", type=int, nargs=3, default=None, help="centred crop of the test slab (HR voxels)")
    parser.add_argument("--models", nargs="*", default=None, help="built-in package ids (default: all)")
    parser.add_argument("--no-hr-seg", action="store_true", help="skip segmentation from the HR input")
    parser.add_argument("--no-timing", action="store_true", help="skip the 256^3 timing")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case == "timing":
        timing_case(json.loads(args.params))
        return
    started = time.perf_counter()
    rows = evaluate(args.factors, args.protocols, args.synthetic, args.self_budget, args.self_all, args.crop,
                    args.models, not args.no_hr_seg)
    packages = sorted({r["method"] for r in rows if r["method"] not in (*BASELINES, "self")})
    timing = []
    if not args.no_timing:
        models = [("bspline", ("sr",), "sr", 4)]
        for info in builtin_packages():  # every selected package, also those outside --factors (x3)
            if args.models is None or info.id in args.models:
                protocol = info.protocols[0] if info.protocols else "sr"
                factor = 4 if info.supports_factor(4, protocol) else min(info.factors)
                tasks = package_tasks(info, protocol, factor)
                if tasks:
                    models.append((info.id, tasks, protocol, factor))
        timing = timings(models, args.self_budget)
    summary = summarise(rows)
    command = "python -m benchmarks.quality " + " ".join(sys.argv[1:]).replace(str(ROOT) + "/", "")
    payload = {
        "benchmark": "quality",
        "command": command.strip(),
        "data": (f"MNI152 T1 1 mm sample, test slab x ≥ {TEST_START} of the held-out right hemisphere "
                 f"(never trained on, never used for checkpoint selection)"
                 + (f", centred crop {args.crop}" if args.crop else "")
                 + f"; cases: T1 + {args.synthetic} fixed synthetic contrasts (seeds "
                 f"{', '.join(map(str, SYNTH_SEEDS[:args.synthetic]))}); degradation along voxel axis {AXIS}; "
                 f"protocols {', '.join(args.protocols)}; factors {', '.join(f'×{f}' for f in args.factors)}."),
        "self_budget_s": args.self_budget,
        "self_all": args.self_all,
        "packages": packages,
        "rows": rows,
        "summary": summary,
        "targets": targets(summary),
        "timing_256": timing,
        "plots": [str(p) for p in box_plots(rows, PLOTS)],
        "wall_s": round(time.perf_counter() - started, 1),
        "environment": environment(),
    }
    write_result(args.out, payload)
    args.doc.write_text(markdown(payload))
    print(f"wrote {args.doc}")
    if args.models is None and args.doc == DOC:  # a full report: the cards quote it (a partial one would not)
        from benchmarks.model_cards import update_cards

        for card in update_cards(payload):
            print(f"updated {card}")
    for line in payload["targets"]:
        print(line)


if __name__ == "__main__":
    main()
