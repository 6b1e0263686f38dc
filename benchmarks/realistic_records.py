"""Write each package's real-scan record (``metrics.realistic`` in model.json) from realistic reports.

    python -m benchmarks.realistic_records benchmarks/results/realistic.json [MORE.json ...] --write

Why: ``JointSRSegLib.defaults`` lets a package be a default only on what the real-scan report measured
(never on the template it was trained on), and the Slicer module and the CLI read model.json, not
benchmark output.  Every figure is a mean over the cases where the package *and* the method it is
compared with both ran (paired), so a partial run cannot flatter anyone:

* ``dice_mean`` / ``atropos_on_bspline_dice`` / ``atropos_on_self_dice``: mean GM/WM Dice from x4 LR on the
  label-map cases, of the package, of ``atropos`` and of ``self+atropos`` (the peer a package must beat);
* ``psnr_gain_over_bspline_db``, ``ssim`` / ``bspline_ssim`` (inside the head), ``self_gain_over_bspline_db``:
  on every case with a high-resolution reference (label-map, real T1, MNI).

Rows of several reports are merged (later files win for the same case and method).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .regression_check import write_check_key

SELF_METHODS = ("self+atropos", "self")  # either carries the self-supervised SR figures of a case


def merged_rows(reports: list[dict]) -> dict[tuple[str, str], dict]:
    rows: dict[tuple[str, str], dict] = {}
    for report in reports:
        for row in report["rows"]:
            if "skipped" not in row and "error" not in row:
                rows[(row["case"], row["method"])] = row
    return rows


def _cases(rows, *methods: str, kinds=None) -> list[str]:
    """Cases on which every one of ``methods`` has a row (of one of ``kinds``, if given)."""
    names = {case for case, _ in rows}
    return sorted(c for c in names if all((c, m) in rows and (not kinds or rows[(c, m)].get("kind") in kinds)
                                          for m in methods))  # fmt: skip


def _mean(rows, cases, method: str, key: str) -> float | None:
    values = [rows[(c, method)][key] for c in cases if key in rows[(c, method)]]
    return float(np.mean(values)) if values and len(values) == len(cases) else None


def package_record(rows, package: str, sources: list[str]) -> dict | None:
    """The package's record (module docstring), or None when no report ran it."""
    if not any(method == package for _, method in rows):
        return None
    record: dict = {"protocol": "sr", "factor": 4, "reports": sources}
    labelled = _cases(rows, package, "atropos", kinds=("labelmap",))
    if labelled and _mean(rows, labelled, package, "dice_mean") is not None:
        record.update(dice_mean=round(_mean(rows, labelled, package, "dice_mean"), 3),
                      atropos_on_bspline_dice=round(_mean(rows, labelled, "atropos", "dice_mean"), 3),
                      dice_cases=len(labelled))  # fmt: skip
    with_self = _cases(rows, package, "self+atropos", kinds=("labelmap",))
    if with_self and _mean(rows, with_self, package, "dice_mean") is not None:
        record.update(atropos_on_self_dice=round(_mean(rows, with_self, "self+atropos", "dice_mean"), 3),
                      dice_mean_on_those_cases=round(_mean(rows, with_self, package, "dice_mean"), 3),
                      atropos_on_self_cases=len(with_self))  # fmt: skip
    imaged = _cases(rows, package, "bspline")
    if imaged and _mean(rows, imaged, package, "psnr_head") is not None:
        record.update(psnr_gain_over_bspline_db=round(_mean(rows, imaged, package, "psnr_head")
                                                      - _mean(rows, imaged, "bspline", "psnr_head"), 2),
                      ssim=round(_mean(rows, imaged, package, "ssim_head"), 4),
                      bspline_ssim=round(_mean(rows, imaged, "bspline", "ssim_head"), 4),
                      image_cases=len(imaged))  # fmt: skip
    for method in SELF_METHODS:
        both = _cases(rows, package, method, "bspline")
        if both and _mean(rows, both, method, "psnr_head") is not None:
            record.update(self_gain_over_bspline_db=round(_mean(rows, both, method, "psnr_head")
                                                          - _mean(rows, both, "bspline", "psnr_head"), 2),
                          package_gain_on_those_cases_db=round(_mean(rows, both, package, "psnr_head")
                                                               - _mean(rows, both, "bspline", "psnr_head"), 2),
                          self_cases=len(both))  # fmt: skip
            break
    record["note"] = ("means over the real-scan report's cases (benchmarks/realistic.py), paired per comparison; "
                      "JointSRSegLib.defaults: a package segments by default only if dice_mean beats "
                      "atropos_on_self_dice")  # fmt: skip
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("--models", type=Path, default=Path(__file__).resolve().parents[1] / "Resources" / "Models")
    parser.add_argument("--write", action="store_true", help="store each record in the package's model.json")
    args = parser.parse_args()
    reports = [json.loads(p.read_text()) for p in args.reports]
    rows = merged_rows(reports)
    sources = [str(p) for p in args.reports]
    for folder in sorted(p for p in args.models.iterdir() if (p / "model.json").is_file()):
        record = package_record(rows, folder.name, sources)
        if record is None:
            continue
        print(folder.name, json.dumps(record))
        if args.write:
            write_check_key(folder, "realistic", record)


if __name__ == "__main__":
    main()
