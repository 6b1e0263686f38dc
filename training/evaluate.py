"""Compare model packages with classical baselines on the test split.

``python training/evaluate.py --model PACKAGE --data ROOT|sample --baselines bspline,linear --out DIR``

Each test case is degraded by the package's protocol and factor (``JointSRSegLib.degradation``,
the training protocol), every method reconstructs it through ``JointSRSegLib.api.predict`` --
the user-facing path -- and is scored against the HR reference on the output grid: PSNR/SSIM in
scanner units (data range of the reference), Dice/HD95 for methods that segment (baselines do
not).  The test split is rebuilt from the package's training config (same ratios and seed, or
its splits file), so test patients were never seen in training.  Writes ``results.csv`` (one row
per case and method), ``results.md`` (mean +- std) and box plots ``psnr.png``, ``ssim.png``,
``dice.png``.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from JointSRSegLib.api import predict  # noqa: E402
from JointSRSegLib.degradation import simulate_slice_gaps, simulate_thick_slices  # noqa: E402
from JointSRSegLib.errors import InputError  # noqa: E402
from JointSRSegLib.evaluation import align_reference  # noqa: E402
from JointSRSegLib.metrics import dice, hd95, psnr, ssim  # noqa: E402
from JointSRSegLib.packaging import load_package  # noqa: E402
from JointSRSegLib.vocabulary import DEVICES  # noqa: E402
from JointSRSegLib.volume import Volume  # noqa: E402
from training.data import read_case_image, read_case_label, resolve_axis, select_cases  # noqa: E402
from training.engine.data import prepare_cases  # noqa: E402

METRICS = ("psnr", "ssim", "dice", "hd95")


def test_cases(training_config: dict, data_root: str, out: Path) -> list[dict]:
    """The test subset of ``data_root`` under the split the package was trained with."""
    cfg = {**training_config, "data": {**training_config["data"], "root": data_root}}
    cases, info = prepare_cases(cfg, out)
    return select_cases(cases, info.splits, "test")


def load_reference(case: dict, crop: list[int] | None) -> tuple[Volume, Volume | None]:
    """HR image and label of a case (its sample-mode region, then an optional centred crop)."""
    image = read_case_image(case)
    label = read_case_label(case, image) if case.get("label") else None
    index = [slice(None)] * 3
    for axis, (start, stop) in enumerate(case.get("region") or [[0, None]] * 3):
        index[axis] = slice(start, stop)
    if crop:
        shape = image.array[(slice(None), *index)].shape[1:]
        for axis, (n, size) in enumerate(zip(shape, crop)):
            base = index[axis].start or 0
            start = base + max(0, (n - size) // 2)
            index[axis] = slice(start, start + min(size, n))
    origin_index = np.array([s.start or 0 for s in index], dtype=float)
    origin = image.grid.physical_points(origin_index[None])[0]
    sub = (slice(None), *index)
    hr = Volume(np.ascontiguousarray(image.array[sub]), image.spacing, tuple(origin), image.direction,
                source=image.source)
    hr_label = None if label is None else Volume(np.ascontiguousarray(label[sub]), image.spacing, tuple(origin),
                                                 image.direction, source=case["label"])
    return hr, hr_label


def score(outputs: dict, protocol: str, hr: Volume, hr_label: Volume | None, label_values: list[int]) -> dict:
    row = {}
    image = outputs.get(protocol)
    if image is not None:
        reference = align_reference(image, hr)
        ref, pred = reference.array.astype(np.float32), image.array.astype(np.float32)
        data_range = float(ref.max() - ref.min()) or 1.0
        row["psnr"] = float(np.mean([psnr(p, r, data_range) for p, r in zip(pred, ref)]))
        row["ssim"] = float(np.mean([ssim(p, r, data_range) for p, r in zip(pred, ref)]))
    if "seg" in outputs and hr_label is not None:
        seg = outputs["seg"]
        reference = align_reference(seg, hr_label).array[0]
        values = [v for v in label_values if v != 0]
        row["dice"] = float(np.mean([dice(seg.array[0], reference, v) for v in values]))
        distances = [hd95(seg.array[0], reference, seg.spacing, v) for v in values]
        finite = [d for d in distances if math.isfinite(d)]
        row["hd95"] = float(np.mean(finite)) if finite else float("nan")
    return row


def evaluate(models: list[str], data_root: str, baselines: list[str], out: Path, crop: list[int] | None,
             max_cases: int, device: str) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    package = load_package(models[0])
    training_config = package.metadata.get("training_config")
    if not training_config:
        raise InputError(package.path, "has no training_config; export it with training/export.py")
    protocol, factor = package.protocol, int(package.scale.factors[0])
    if protocol == "inplane":
        raise InputError(package.path, "evaluate.py compares through-plane methods; in-plane packages are not "
                                       "comparable with the through-plane baselines")
    labels = [entry["value"] for entry in package.labels]
    rows = []
    for case in test_cases(training_config, data_root, out)[: max_cases or None]:
        hr, hr_label = load_reference(case, crop)
        axis = resolve_axis(training_config["data"]["axis"], hr.spacing, case["id"])
        lr = (simulate_thick_slices if protocol == "sr" else simulate_slice_gaps)(hr, factor, axis)
        lr = lr.with_array(np.clip(np.rint(lr.array), 0, 255).astype(np.uint8)) if hr.array.dtype == np.uint8 else lr
        for method in [*models, *baselines]:
            is_model = method in models
            tasks = [protocol] + (["seg"] if is_model and "seg" in load_package(method).tasks else [])
            prediction = predict(lr, model=method, tasks=tasks, scale=factor, axis=axis, device=device)
            name = load_package(method).id if is_model else method
            rows.append({"case": case["id"], "method": name,
                         **score(prediction.outputs, protocol, hr, hr_label, labels)})
    write_tables(rows, out)
    write_plots(rows, out)
    return rows


def write_tables(rows: list[dict], out: Path) -> None:
    with (out / "results.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["case", "method", *METRICS])
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in ["case", "method", *METRICS]})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = ["| method | cases | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        cells = []
        for metric in METRICS:
            values = [r[metric] for r in mine if metric in r and math.isfinite(r[metric])]
            cells.append(f"{np.mean(values):.4g} ± {np.std(values):.2g}" if values else "—")
        lines.append(f"| {method} | {len(mine)} | " + " | ".join(cells) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_plots(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in rows))
    for metric in ("psnr", "ssim", "dice"):
        data = [[r[metric] for r in rows if r["method"] == m and metric in r] for m in methods]
        shown = [(m, d) for m, d in zip(methods, data) if d]
        if not shown:
            continue
        fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(shown), 3.2))
        ax.boxplot([d for _, d in shown])
        ax.set_xticks(range(1, len(shown) + 1), [m for m, _ in shown], rotation=20, fontsize=7)
        ax.set_ylabel(metric.upper())
        fig.tight_layout()
        fig.savefig(out / f"{metric}.png", dpi=90)
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="evaluate.py", description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="model package (repeat for several)")
    parser.add_argument("--data", required=True, help="dataset folder or 'sample' (its test split is used)")
    parser.add_argument("--baselines", default="bspline,linear", help="comma-separated classical baselines")
    parser.add_argument("--out", type=Path, default=Path("evaluation"), help="folder for tables and plots")
    parser.add_argument("--crop", type=int, nargs=3, metavar=("X", "Y", "Z"), help="centred HR crop per case")
    parser.add_argument("--max-cases", type=int, default=0, help="evaluate at most N test cases (0: all)")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    args = parser.parse_args(argv)
    baselines = [b.strip() for b in args.baselines.split(",") if b.strip()]
    try:
        rows = evaluate(args.model, args.data, baselines, args.out, args.crop, args.max_cases, args.device)
    except (InputError, ValueError, KeyError) as error:
        print(f"evaluate.py: error: {error}", file=sys.stderr)
        return 2
    print((args.out / "results.md").read_text(encoding="utf-8"), end="")
    print(f"{len(rows)} rows -> {args.out / 'results.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
