"""Export a training run as a model package: ``python training/export.py RUN_DIR --out PACKAGE``.

The package (docs/model-packages.md) carries the weights of the best (or last) checkpoint, the
builder config, the complete training config (``training_config``), label names and colours,
the intensity normalisation used in training, a training-data summary and the validation
metrics, so ``jointsrseg run --model PACKAGE`` applies it exactly as it was trained.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from JointSRSegLib.errors import InputError  # noqa: E402
from JointSRSegLib.packaging import save_package  # noqa: E402
from training.engine.checkpoint import BEST, LAST, load_checkpoint  # noqa: E402
from training.engine.data import DataInfo  # noqa: E402
from training.tasks import adapter_class  # noqa: E402
from training.tasks.joint3d import lr_patch_size, model_scale  # noqa: E402


def package_metadata(cfg: dict, info: DataInfo, adapter, checkpoint: dict) -> dict:
    """``model.json`` fields for the run (``save_package`` adds architecture, config, hash)."""
    arch, export = cfg["model"]["architecture"], cfg["export"]
    described = adapter.export_metadata()
    network_arch = adapter.export_network().jointsrseg_config["architecture"]
    default_id = re.sub(r"[^A-Za-z0-9._-]", "-", f"{network_arch}-{cfg['run']['name']}")[:100]
    package_id = export["id"] or default_id
    best = checkpoint.get("best") or {}
    # The validation of the exported weights: the checkpoint's own step when it was validated (the
    # last checkpoint of a multi-stage run is not the best one), else the best validation.
    own = [h for h in checkpoint.get("history", []) if h.get("step") == checkpoint["step"]]
    validation = {k: v for k, v in own[-1].items() if k not in ("step", "stage")} if own else best.get("metrics", {})
    metrics = {"validation": validation, "monitor": best.get("metric"),
               "step": checkpoint["step"] if own else checkpoint.get("best_step") or checkpoint["step"],
               "validation_set": f"{info.summary.get('validation_cases', '?')} case(s) of the run's validation "
                                 f"split, centre crop {cfg['data']['val_crop'] or 'whole case'}, "
                                 "normalised intensities"}
    meta = {
        "id": package_id,
        "version": export["version"],
        "name": export["name"] or f"{arch} ({cfg['model']['preset']}) {cfg['run']['name']}",
        "description": export["description"] or f"{arch} trained with training/train.py, run {cfg['run']['name']}.",
        **described,
        "inputs": [{"name": m, "modality": cfg["data"]["modality"]} for m in info.modalities],
        "intensity_normalization": dict(cfg["data"]["normalization"]),
        "labels": info.package_labels() if "seg" in described["tasks"] else [],
        "training_data": {**info.summary, "steps": checkpoint["step"]},
        "metrics": metrics,
        "license": export["license"],
        "intended_use": export["intended_use"],
        "expected_runtime": {"training_device": "see training_config.run.device",
                             "training_processes": checkpoint.get("world_size", 1)},
        "training_config": cfg,
    }
    if network_arch in ("swinsr_unetr", "rehrseg_seg", "rehrseg_seg_uasr"):
        # keep what the adapter records (e.g. the voxel orientation of its training data) beside the window
        meta["inference"] = {**(described.get("inference") or {}),
                             "roi_size": lr_patch_size(cfg["data"]["patch_size"], "sr", cfg["data"]["factor"],
                                                       model_scale(cfg))}
    return meta


def export_run(run_dir: str | Path, out: str | Path, which: str = "best", zip: bool = False,
               overwrite: bool = False) -> Path:
    """Write the package of ``run_dir``'s best (or last) checkpoint to ``out``; returns its path."""
    run_dir = Path(run_dir)
    path = run_dir / (BEST if which == "best" else LAST)
    if which == "best" and not path.exists():
        path = run_dir / LAST  # runs without validation have no best checkpoint
    checkpoint = load_checkpoint(path)
    cfg = checkpoint["config"]
    info = DataInfo(**checkpoint["data_info"])
    import torch

    adapter = adapter_class(cfg["model"]["architecture"])(cfg, info, torch.device("cpu"))
    adapter.modules.load_state_dict(checkpoint["modules"])
    network = adapter.export_network().eval()
    return save_package(network, out, package_metadata(cfg, info, adapter, checkpoint), zip=zip, overwrite=overwrite)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="export.py", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="run folder written by train.py")
    parser.add_argument("--out", type=Path, required=True, help="package folder (or .zip with --zip)")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best",
                        help="best validation checkpoint (default) or the last one")
    parser.add_argument("--zip", action="store_true", help="write a .zip package")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing package")
    args = parser.parse_args(argv)
    try:
        path = export_run(args.run_dir, args.out, args.checkpoint, args.zip, args.overwrite)
    except (InputError, FileNotFoundError, ValueError, KeyError) as error:
        print(f"export.py: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
