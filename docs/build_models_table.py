"""Regenerate docs/models.md from the per-architecture notes (``make docs``).

Each ``docs/architectures/<name>.md`` ends with one summary-table row; this script collects the
rows under a common header and adds the measured parameter counts from the registry, so the
table can never disagree with the code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HEADER = (
    "| Paper | Paper sections | Our module / classes | Faithful | Deviations (and why) | Params tiny / small / base "
    "| Paper protocol, small CPU scale: ours vs paper |"
)
ORDER = ("swinsr_unetr", "tasc_swinmt", "rdst", "rehrseg", "disentangled_sr")
# The arms of benchmarks/paper_protocols.py behind each row (REHRSeg's protocol is not one of them).
PROTOCOL_ARMS = {"swinsr_unetr": ("swinsr_unetr",), "tasc_swinmt": ("tasc_swinmt",), "rdst": ("rdst", "rdst_e"),
                 "rehrseg": (), "disentangled_sr": ("disentangled_sr_x2", "disentangled_sr_x4")}
PROTOCOLS_JSON = ROOT / "benchmarks" / "results" / "paper_protocols.json"
SHOWN = {"psnr": ("PSNR", 2), "ssim": ("SSIM", 3), "dice": ("Dice", 3), "unet_dice_t": ("Dice-T", 3),
         "nmse": ("NMSE", 3)}


def summary_row(note: Path) -> str:
    rows = [line for line in note.read_text().splitlines() if line.startswith("| ") and not line.startswith("| Paper")]
    return rows[-1]


CLASSICAL = ("bicubic", "trilinear", "linear", "bspline")  # the papers' non-learned baselines, as they name them


def _paper_row(rows: list[dict], key: str, first: bool, hr: bool = False) -> tuple[str, float] | None:
    """(name, figure) of the paper's own method (first row), of its classical baseline or (``hr``) its HR row."""
    key = "dice_t" if key == "unet_dice_t" else key
    if first:
        rows = rows[:1]
    else:
        rows = [r for r in rows[1:] if (r["method"].startswith("HR") if hr else r["method"] in CLASSICAL)]
    found = [(row["method"].split(" ")[0], row[key]) for row in rows if key in row]
    return found[0] if found else None


def _paper_value(rows: list[dict], key: str, first: bool, hr: bool = False) -> float | None:
    found = _paper_row(rows, key, first, hr)
    return None if found is None else found[1]


REHRSEG_TABLE4_LR_DICE = (0.8155, 0.8213)  # rehrseg.txt Table 4: nnU-Net baseline -> "+Pseudo SR Data"


def rehrseg_ablation_cell() -> str:
    """REHRSeg's Eq. 1 ablation (``benchmarks/rehrseg_pseudo_lr.py``, one JSON per seed; each holds the
    package trained without (``..._off``) and with (``..._on``) pseudo LR scans) beside Table 4."""
    arms: dict[str, list[float]] = {"off": [], "on": []}
    for path in sorted((ROOT / "benchmarks" / "results").glob("rehrseg_pseudo_lr_seed*.json")):
        for row in json.loads(path.read_text(encoding="utf-8"))["rows"]:
            arm = "on" if "_on" in Path(row["model"]).name else "off" if "_off" in Path(row["model"]).name else None
            if arm and row.get("case") == "T1" and "lr_dice_mean" in row:
                arms[arm].append(row["lr_dice_mean"])
    if not arms["off"] or len(arms["off"]) != len(arms["on"]):
        return "Eq. 1 ablation not measured yet (`benchmarks/rehrseg_pseudo_lr.py`)"
    off, on = (sum(v) / len(v) for v in (arms["off"], arms["on"]))
    paper_off, paper_on = REHRSEG_TABLE4_LR_DICE
    return (f"Eq. 1 pseudo LR ablation, LR-head GM/WM Dice on the held-out slab ({len(arms['on'])} seeds): "
            f"{off:.3f} -> {on:.3f} vs Table 4 {paper_off:.4f} -> {paper_on:.4f} (within the seed spread; note)")


def protocol_cell(name: str, results: dict | None) -> str:
    """Our small-scale figure next to the paper's, per arm, from benchmarks/results/paper_protocols.json."""
    arms = PROTOCOL_ARMS[name]
    if name == "rehrseg":
        return rehrseg_ablation_cell()
    if not arms:
        return "not an arm of `benchmarks/paper_protocols.py` (see the note)"
    if results is None:
        return "not measured yet (`benchmarks/paper_protocols.py`)"
    by_name = {arm["case"]: arm for arm in results["arms"]}
    parts = []
    for arm_name in arms:
        arm = by_name.get(arm_name)
        if arm is None or "summary" not in arm:
            parts.append(f"`{arm_name}`: not measured")
            continue
        paper_rows = results["paper"][arm_name]["rows"]
        ours, *baselines = arm["summary"]
        figures = []
        for key, (label, digits) in SHOWN.items():
            if key not in ours or _paper_value(paper_rows, key, True) is None:
                continue
            text = f"{label} {ours[key]:.{digits}f} vs {_paper_value(paper_rows, key, True):.{digits}f}"
            hr = key == "unet_dice_t"  # RDST's Dice-T is read beside the U-Net on the HR image
            base = next((b for b in baselines if key in b and b["method"].startswith("HR") == hr), None)
            paper_base = _paper_row(paper_rows, key, False, hr)
            if base is not None and key in ("psnr", "ssim", "nmse", "unet_dice_t"):
                text += f" ({'HR' if hr else base['method']} {base[key]:.{digits}f}" + (
                    f" vs the paper's {paper_base[0]} {paper_base[1]:.{digits}f})" if paper_base is not None
                    else "; no classical figure in the paper)")
            figures.append(text)
        parts.append(f"`paper/{arm_name}.yaml`, {arm['steps']} steps / {arm['train_seconds']:.0f} s: "
                     + "; ".join(figures))
    return "<br>".join(parts)


def parameter_counts() -> list[str]:
    from JointSRSegLib.models import ARCHITECTURES, build

    lines = ["| Registry name | Paper | Tasks | Dims | tiny | small | base |", "|---|---|---|---|---|---|---|"]
    for name, spec in ARCHITECTURES.items():
        counts = []
        for preset in ("tiny", "small", "base"):
            model = build(name, preset)
            counts.append(f"{sum(p.numel() for p in model.parameters()) / 1e6:.3f} M")
        lines.append(
            f"| `{name}` | {spec.paper} | {', '.join(spec.tasks)} | {spec.dims}D | " + " | ".join(counts) + " |"
        )
    return lines


def main() -> None:
    notes = ROOT / "docs" / "architectures"
    import json

    results = json.loads(PROTOCOLS_JSON.read_text()) if PROTOCOLS_JSON.exists() else None
    rows = [summary_row(notes / f"{name}.md").rstrip() + f" {protocol_cell(name, results)} |" for name in ORDER]
    text = [
        "# Model zoo: the five papers in code",
        "",
        "Generated by `make docs` from `docs/architectures/*.md` (one detailed note per paper: section-by-section",
        "mapping, the forward contract, every deviation and why) and from the registry (`JointSRSegLib.models`).",
        "",
        "```python",
        "from JointSRSegLib.models import ARCHITECTURES, build",
        'net = build("swinsr_unetr", preset="small", in_channels=1, seg_channels=3, scale=(1, 1, 4))',
        "```",
        "",
        "## Summary per paper",
        "",
        HEADER,
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Last column: each paper's own protocol (`training/configs/paper/<paper>.yaml`) trained for minutes on one",
        "CPU thread on the MNI152 sample and scored on never-trained cases (`benchmarks/paper_protocols.py`,",
        "section in `docs/benchmarks.md`); the paper's figure is its own data at full scale, in parentheses the",
        "classical baseline of the same run vs the paper's. It shows the protocol runs end to end, not that the",
        "paper's number is reached.",
        "",
        "Details: " + ", ".join(f"[{n}](architectures/{n}.md)" for n in ORDER) + ".",
        "",
        "## Measured parameter counts (registry defaults)",
        "",
        *parameter_counts(),
        "",
        "## Deviations shared by several models",
        "",
        "- **Bounded learnable loss weights.** Kendall weighting is `0.5·exp(-s)·L + 0.5·s`; TASC-SwinMT's dynamic",
        "  weighting is written `exp(-s)·L + s`. The TASC paper prints the sign of `s` so that the total loss is",
        "  unbounded below (growing `s` drives it to minus infinity); we use the bounded form and clamp `s` to ±10.",
        "- **Per-axis sub-pixel upsampling.** All SR heads map LR voxel `i` to HR voxels `iR … iR+R−1` along an",
        "  upscaled axis, so outputs land on `subdivide_grid` (the sr protocol) without any half-voxel shift.",
        "- **Any input size.** Networks pad internally (replicate/reflect) to what windows and merges need and crop",
        "  the outputs back exactly; the papers assume fixed patch sizes.",
        "- **No downloaded weights.** Every network (including the ViT feature extractor and video-pretrained",
        "  FLAVR backbone) trains from scratch on our data.",
        "",
    ]
    (ROOT / "docs" / "models.md").write_text("\n".join(text))
    print("wrote docs/models.md")


if __name__ == "__main__":
    main()
