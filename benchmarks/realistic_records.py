"""Write each package's real-scan record (``metrics.realistic`` in model.json) from realistic reports.

    python -m benchmarks.realistic_records benchmarks/results/realistic.json [MORE.json ...] --write

Why: ``JointSRSegLib.defaults`` lets a package be a default only on what the real-scan report measured
(never on the template it was trained on), and the Slicer module and the CLI read model.json, not
benchmark output.  Every figure is a mean over the cases where the package *and* the method it is
compared with both ran (paired), so a partial run cannot flatter anyone:

* ``dice_mean`` / ``atropos_on_bspline_dice`` / ``atropos_on_self_dice``: mean GM/WM Dice from x4 LR on the
  label-map cases, of the package, of ``atropos`` and of ``self+atropos`` (the peer a package must beat);
* ``psnr_gain_over_bspline_db``, ``ssim`` / ``bspline_ssim`` (inside the head), ``self_gain_over_bspline_db``:
  on every case with a high-resolution reference (label-map, real T1, MNI);
* ``with_atropos_dice`` / ``with_atropos_peer_dice``: mean GM/WM Dice of ``<package>+atropos`` (Atropos on
  the package's SR output) and of ``atropos`` (on B-spline) on the label-map cases both ran -- what lets an
  SR method be the default SR of an SR + segmentation request with Atropos segmenting its output.

``adapt`` (the shipped self-SR prior fine-tuned on the scan) gets the same record in its ``prior.json``, so the
defaults rule can rank it next to the packages for image requests.

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
    """Rows by (case, method), later reports winning.  The voxel-permuted copies of a case (its RAS/PSR
    orientations, listed in ``orientation_agreement``) are left out: they are the same scan, and the
    report shows separately that they give the same answer, so counting them would weight that scan
    several times.  Cases a package was trained on (the MNI template) are left out too."""
    rows: dict[tuple[str, str], dict] = {}
    copies = {f"{a['group']}-{a['orientation']}" for report in reports for a in report.get("orientation_agreement", [])}
    for report in reports:
        for row in report["rows"]:
            if "skipped" not in row and "error" not in row and row["case"] not in copies and not row.get("trained_on"):
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
    chained = _cases(rows, f"{package}+atropos", "atropos", kinds=("labelmap",))
    if chained and _mean(rows, chained, f"{package}+atropos", "dice_mean") is not None:
        record.update(with_atropos_dice=round(_mean(rows, chained, f"{package}+atropos", "dice_mean"), 3),
                      with_atropos_peer_dice=round(_mean(rows, chained, "atropos", "dice_mean"), 3),
                      with_atropos_cases=len(chained))  # fmt: skip
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
                      "atropos_on_bspline_dice and (on its cases) atropos_on_self_dice")  # fmt: skip
    return record


CARDS = Path(__file__).resolve().parents[1] / "docs" / "models"
CARD_BEGIN = "<!-- real-scans:begin (generated by benchmarks/realistic_records.py from metrics.realistic) -->"
CARD_END = "<!-- real-scans:end -->"


def card_block(record: dict) -> str:
    """The model card's real-scan section: what the defaults rule reads, in words and figures."""
    def num(key, digits=3, signed=False):
        value = record.get(key)
        return "–" if value is None else (f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}")

    from JointSRSegLib.defaults import beats_segmentation_peer

    verdict = "beats" if beats_segmentation_peer({"metrics": {"realistic": record}}, "sr", 4)[0] else "does not beat"
    lines = [
        CARD_BEGIN,
        "",
        "## On real scans (the figures the defaults use)",
        "",
        f"From {', '.join(f'`{r}`' for r in record.get('reports', []))} (`benchmarks/realistic.py`: label-map "
        "subjects synthesised in several contrasts, skull-stripped and whole-head, in several voxel "
        "orientations, real ds002748 T1s, the MNI T1; x4 thick coronal slices; never trained on). Paired means:",
        "",
        "| | this package | peer |",
        "|---|---|---|",
        f"| Mean GM/WM Dice from x4 LR ({record.get('dice_cases', 0)} cases) | {num('dice_mean')} | "
        f"`atropos` on B-spline {num('atropos_on_bspline_dice')} |",
        f"| ... on the cases `self+atropos` ran ({record.get('atropos_on_self_cases', 0)}) | "
        f"{num('dice_mean_on_those_cases')} | `atropos` on `self` SR {num('atropos_on_self_dice')} |",
        f"| PSNR gain over B-spline inside the head ({record.get('image_cases', 0)} cases) | "
        f"{num('psnr_gain_over_bspline_db', 2, True)} dB | – |",
        f"| SSIM inside the head | {num('ssim', 4)} | B-spline {num('bspline_ssim', 4)} |",
        f"| PSNR gain over B-spline where `self` ran ({record.get('self_cases', 0)} cases) | "
        f"{num('package_gain_on_those_cases_db', 2, True)} dB | "
        f"`self` {num('self_gain_over_bspline_db', 2, True)} dB |",
        "",
        f"Verdict: on real scans this package **{verdict}** the classical segmentation peer, so "
        + ("it can be the segmentation default." if verdict == "beats" else
           "`atropos` is the segmentation default (`JointSRSegLib/defaults.py`).")  # fmt: skip
        + "",
        "",
        CARD_END,
    ]
    return "\n".join(lines)


def update_card(package_id: str, record: dict, folder: Path = CARDS) -> bool:
    """Replace (or add after the card's first table) the real-scan block; True when the card changed."""
    card = folder / f"{package_id}.md"
    if not card.is_file():
        return False
    text = card.read_text(encoding="utf-8")
    block = card_block(record)
    if CARD_BEGIN in text:
        head, rest = text.split(CARD_BEGIN, 1)
        new = head + block + rest.split(CARD_END, 1)[1]
    else:
        marker = "\n\n## "
        at = text.find(marker)
        new = text + "\n" + block + "\n" if at < 0 else text[:at] + "\n\n" + block + text[at:]
    if new != text:
        card.write_text(new, encoding="utf-8")
    return new != text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("--models", type=Path, default=Path(__file__).resolve().parents[1] / "Resources" / "Models")
    parser.add_argument("--write", action="store_true", help="store each record in the package's model.json")
    args = parser.parse_args()
    reports = [json.loads(p.read_text(encoding="utf-8")) for p in args.reports]
    rows = merged_rows(reports)
    sources = [str(p) for p in args.reports]
    for folder in sorted(p for p in args.models.iterdir() if (p / "model.json").is_file()):
        record = package_record(rows, folder.name, sources)
        if record is None:
            continue
        print(folder.name, json.dumps(record))
        if args.write:
            write_check_key(folder, "realistic", record)
            update_card(folder.name, record)
    from JointSRSegLib.selfsr_prior import PRIOR_FILE, PRIORS_DIR

    for folder in sorted(p.parent for p in PRIORS_DIR.glob(f"*/{PRIOR_FILE}")):  # the priors of model 'adapt'
        record = package_record(rows, "adapt", sources)
        prior = json.loads((folder / PRIOR_FILE).read_text(encoding="utf-8"))
        if record is None or (prior.get("protocol"), prior.get("factor")) != (record["protocol"], record["factor"]):
            continue  # the report measures sr x4: its figures belong to that prior only
        print(f"adapt ({folder.name})", json.dumps(record))
        if args.write:
            write_check_key(folder, "realistic", record, filename=PRIOR_FILE)


if __name__ == "__main__":
    main()
