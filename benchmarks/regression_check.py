"""Measure (and optionally record) a package's regression check on the held-out sample crop.

    OMP_NUM_THREADS=2 python -m benchmarks.regression_check Resources/Models/swinsr-unetr-brain-small --write

The crop (start [106, 45, 40], size [32, 96, 64] voxels of the MNI152 sample) lies in the test slab
x >= 104 that sample-mode training never sees.  The LR input is made by the package's protocol
(``sr`` thick slices or ``interp`` gapped slices, x``factor`` along voxel axis 2; ``inplane``: RDST's
anti-aliased bicubic x``factor`` of both in-plane axes + 1 % noise, seed 0, with ``bspline`` run along
each in-plane axis in turn); the package's output is scored against the HR crop next to ``bspline``:
PSNR (data range of the reference), their difference, and the mean GM/WM Dice of its segmentation.
A segmentation-only package (REHRSeg) is scored by its HR segmentation alone: mean and per-label Dice
and mean HD95 (no PSNR fields).
``--write`` stores the figures in ``model.json`` under ``metrics.regression_check``;
``Testing/test_default_models.py`` then requires the gain minus 0.5 dB and the Dice minus 0.05
(``Testing/test_default_model_rehrseg.py``: the Dice within 0.05).  Only metadata changes: the
weights' hash stays valid.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
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
from JointSRSegLib.metrics import dice, hd95, psnr
from JointSRSegLib.packaging import load_package
from JointSRSegLib.volume import Volume

from .common import ROOT

SAMPLE = ROOT / "Resources" / "SampleData" / "MNI152_T1_1mm.nii.gz"
TISSUE = ROOT / "Resources" / "SampleData" / "MNI152_tissue_1mm.nii.gz"
CROP_START, CROP_SIZE = [106, 45, 40], [32, 96, 64]
NOTE = ("MNI152 sample crop in the held-out test slab (never trained on); Testing/test_default_models.py "
        "requires gain >= this - 0.5 dB")
INPLANE_NOTE = ("MNI152 sample crop in the held-out test slab (x >= 104, never trained on); LR = "
                "simulate_inplane_bicubic(crop, {factor}, 2, noise_std=0.01, seed=0); bspline = the API's bspline "
                "along axis 0 then axis 1; Testing/test_default_model_rdst_e.py requires gain >= this - 0.5 dB")
INPLANE_NOISE_STD, INPLANE_NOISE_SEED, AXIS = 0.01, 0, 2
SEG_NOTE = ("MNI152 sample crop in the held-out test slab (never trained on); HR segmentation from the LR input "
            "(segmentation-only package: no image output to score); its test requires the mean Dice within 0.05")


def crop(volume: Volume, start, size) -> Volume:
    """``volume`` cut to ``start:start+size`` with the origin moved to the first voxel (geometry kept)."""
    index = tuple(slice(a, a + n) for a, n in zip(start, size))
    origin = volume.grid.physical_points(np.array([start], dtype=float))[0]
    return Volume(np.ascontiguousarray(volume.array[(slice(None), *index)]), volume.spacing, tuple(origin),
                  volume.direction, source=volume.source)


def measure(package: str | Path, protocol: str, factor: int, start=CROP_START, size=CROP_SIZE) -> dict:
    """PSNR of the package and of bspline on the crop, the gain, and the package's mean GM/WM Dice.

    A segmentation-only package (REHRSeg: HR labels from the LR input) has no image to score: its
    record is the mean GM/WM Dice, the Dice per label and the mean HD95 (mm) on the HR grid."""
    task = "interp" if protocol == "interp" else "sr"
    hr = read_volume(SAMPLE)
    hr = crop(hr.with_array(hr.array.astype(np.float32)), start, size)
    tissue = crop(read_volume(TISSUE), start, size)
    if protocol == "inplane":
        return _measure_inplane(package, factor, start, size, hr)
    lr = simulate_thick_slices(hr, factor, AXIS) if protocol == "sr" else simulate_slice_gaps(hr, factor, AXIS)
    if tuple(load_package(package, verify_weights=False).tasks) == ("seg",):
        return _measure_segmentation(package, protocol, factor, start, size, hr, tissue, lr)
    ours = predict(lr, model=str(package), tasks=(task, "seg"), scale=factor, axis=AXIS, device="cpu").outputs
    base = predict(lr, model="bspline", tasks=(task,), scale=factor, axis=AXIS).outputs[task]
    if not ours[task].grid.almost_equal(base.grid):
        raise RuntimeError(f"{package}: output grid differs from bspline's")
    reference = crop_to_grid(hr, base.grid).array[0]
    data_range = float(reference.max() - reference.min())
    ours_db, base_db = psnr(ours[task].array[0], reference, data_range), psnr(base.array[0], reference, data_range)
    labels = crop_to_grid(tissue, ours["seg"].grid).array[0]
    mean_dice = float(np.mean([dice(ours["seg"].array[0], labels, v) for v in (1, 2)]))
    return {"protocol": protocol, "factor": factor, "crop_start": list(start), "crop_size": list(size),
            "psnr_db": round(ours_db, 3), "bspline_psnr_db": round(base_db, 3),
            "psnr_gain_over_bspline_db": round(ours_db - base_db, 2), "dice_mean": round(mean_dice, 3),
            "note": NOTE}


def _measure_inplane(package, factor: int, start, size, hr: Volume) -> dict:
    """In-plane SISR (RDST protocol): image only, against B-spline applied along each in-plane axis."""
    lr = simulate_inplane_bicubic(hr, factor, AXIS, noise_std=INPLANE_NOISE_STD, seed=INPLANE_NOISE_SEED)
    ours = predict(lr, model=str(package), tasks=("sr",), scale=factor, axis=AXIS, device="cpu").outputs["sr"]
    base = lr
    for axis in inplane_axes(AXIS):
        base = predict(base, model="bspline", tasks=("sr",), scale=factor, axis=axis).outputs["sr"]
    if not ours.grid.almost_equal(base.grid):
        raise RuntimeError(f"{package}: output grid differs from bspline's")
    reference = crop_to_grid(hr, ours.grid).array[0]
    data_range = float(reference.max() - reference.min())
    ours_db, base_db = psnr(ours.array[0], reference, data_range), psnr(base.array[0], reference, data_range)
    return {"protocol": "inplane", "factor": factor, "through_plane_axis": AXIS, "noise_std": INPLANE_NOISE_STD,
            "noise_seed": INPLANE_NOISE_SEED, "crop_start": list(start), "crop_size": list(size),
            "psnr_db": round(ours_db, 3), "bspline_psnr_db": round(base_db, 3),
            "psnr_gain_over_bspline_db": round(ours_db - base_db, 2), "note": INPLANE_NOTE.format(factor=factor)}


def _measure_segmentation(package, protocol, factor, start, size, hr: Volume, tissue: Volume, lr: Volume) -> dict:
    seg = predict(lr, model=str(package), tasks=("seg",), scale=factor, axis=2, device="cpu").outputs["seg"]
    if not seg.grid.almost_equal(crop_to_grid(hr, seg.grid).grid):
        raise RuntimeError(f"{package}: segmentation grid is not on the HR grid")
    labels = crop_to_grid(tissue, seg.grid).array[0]
    dices = {v: float(dice(seg.array[0], labels, v)) for v in (1, 2)}
    distances = [float(hd95(seg.array[0], labels, seg.spacing, v)) for v in (1, 2)]
    return {"protocol": protocol, "factor": factor, "crop_start": list(start), "crop_size": list(size),
            "dice_mean": round(float(np.mean(list(dices.values()))), 3), "dice_1": round(dices[1], 3),
            "dice_2": round(dices[2], 3), "hd95_mean_mm": round(float(np.mean(distances)), 3), "note": SEG_NOTE}


def write_check(package: Path, check: dict) -> None:
    """Store ``check`` in the package's model.json atomically (temp file + rename)."""
    write_check_key(package, "regression_check", check)


def write_check_key(package: Path, key: str, record: dict, filename: str = "model.json") -> None:
    """Store ``record`` as ``metrics[key]`` in the package's model.json (or a prior's prior.json) atomically
    (temp file + rename)."""
    path = package / filename
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta.setdefault("metrics", {})[key] = record
    fd, tmp = tempfile.mkstemp(dir=package, prefix=f".{filename}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(meta, indent=2) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("package", type=Path)
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--write", action="store_true", help="store the result in model.json")
    args = parser.parse_args()
    protocol = load_package(args.package).protocol
    check = measure(args.package, protocol, args.factor)
    print(json.dumps(check, indent=2))
    if args.write:
        write_check(args.package, check)
        load_package(args.package)  # the edited metadata still passes the schema and the weights' hash
        print(f"wrote {args.package / 'model.json'}")


if __name__ == "__main__":
    main()
