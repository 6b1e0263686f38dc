"""Store a package's weights in float16 only where that costs (almost) nothing: measured, then applied.

    OMP_NUM_THREADS=2 python -m benchmarks.weights_precision Resources/Models/swinsr-unetr-brain-small --apply

Why: the shipped packages must stay small (all together <= 60 MB), and half precision halves them.
The package is re-saved with its floating-point tensors in float16 (the network still runs in float32:
``load_state_dict`` copies into float32 parameters), both versions are scored by the package's own
regression check (``benchmarks.regression_check.measure``: the held-out sample crop, the package's
protocol), and ``--apply`` replaces the package only when the half-precision copy loses less than
``MAX_PSNR_LOSS_DB`` PSNR and ``MAX_DICE_LOSS`` mean Dice.  The measurement is kept in model.json
(``metrics.weights_precision``) and the regression check is re-recorded from the float16 weights.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from JointSRSegLib.package_files import replace_dir, staging_dir
from JointSRSegLib.packaging import load_package, save_package

from .regression_check import measure

MAX_PSNR_LOSS_DB = 0.05
MAX_DICE_LOSS = 0.005


def halve(package: Path, out: Path) -> Path:
    """A copy of ``package`` at ``out`` with its floating-point tensors stored as float16."""
    loaded = load_package(package)
    net = loaded.build_model("cpu")
    for tensor in list(net.parameters()) + list(net.buffers()):
        if tensor.is_floating_point():
            tensor.data = tensor.data.to(torch.float16)
    meta = {k: v for k, v in loaded.metadata.items() if k not in ("weights_sha256", "schema_version")}
    return save_package(net, out, meta)


def compare(package: Path, factor: int | None = None) -> tuple[dict, dict, dict, Path]:
    """Regression checks of the float32 package and of its float16 copy, and their difference
    (at ``factor``, default: the factor its card's regression check used, else its largest)."""
    loaded = load_package(package)
    protocol = loaded.protocol
    recorded = (loaded.metadata.get("metrics") or {}).get("regression_check") or {}
    factor = int(factor or recorded.get("factor") or max(loaded.scale.factors))
    work = Path(tempfile.mkdtemp(prefix="jointsrseg-half-"))
    half = halve(package, work / package.name)
    full_check, half_check = measure(package, protocol, factor), measure(half, protocol, factor)
    delta = {
        key: round(half_check[key] - full_check[key], 4)
        for key in ("psnr_db", "dice_mean")
        if key in full_check and key in half_check
    }
    return full_check, half_check, delta, half


def acceptable(delta: dict) -> bool:
    return delta.get("psnr_db", 0.0) > -MAX_PSNR_LOSS_DB and delta.get("dice_mean", 0.0) > -MAX_DICE_LOSS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("package", type=Path)
    parser.add_argument("--factor", type=int, default=None)
    parser.add_argument("--apply", action="store_true", help="replace the package when the loss is within bounds")
    args = parser.parse_args()
    if "F16" in _tensor_dtypes(args.package):
        print(json.dumps({"package": str(args.package), "skipped": "weights are float16 already"}))
        return
    full_check, half_check, delta, half = compare(args.package, args.factor)
    verdict = acceptable(delta)
    record = {"float32": full_check, "float16": half_check, "delta": delta, "acceptable": verdict}
    print(json.dumps(record, indent=2))
    if args.apply and verdict:
        meta = json.loads((half / "model.json").read_text())
        metrics = meta.setdefault("metrics", {})
        metrics["regression_check"] = {**half_check, "note": full_check.get("note", half_check.get("note"))}
        previous = meta["version"]
        meta["version"] = _bump_patch(previous)  # new bytes, new version; the same network to 0.05 dB
        metrics["weights_precision"] = {
            "from_version": previous,
            "dtype": "float16",
            "psnr_delta_db": delta.get("psnr_db"),
            "dice_delta": delta.get("dice_mean"),
            "command": f"python -m benchmarks.weights_precision {args.package} --apply",
        }
        with staging_dir(args.package.parent, args.package.name) as staging:
            (staging / "model.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
            (staging / "model.safetensors").write_bytes((half / "model.safetensors").read_bytes())
            replace_dir(staging, args.package)
        load_package(args.package)
        print(f"replaced {args.package} with float16 weights")


def _bump_patch(version: str) -> str:
    parts = version.split(".")
    if len(parts) == 3 and parts[2].isdigit():
        return ".".join(parts[:2] + [str(int(parts[2]) + 1)])
    return version + ".1"


def _tensor_dtypes(package: Path) -> list[str]:
    """The dtypes in the safetensors header (the first 8 bytes give its length), without loading tensors."""
    with open(package / "model.safetensors", "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(length))
    return [entry["dtype"] for key, entry in header.items() if key != "__metadata__"]


if __name__ == "__main__":
    main()
