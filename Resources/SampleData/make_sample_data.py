"""Regenerate the sample data from its sources (run once; kept for provenance).

    python Resources/SampleData/make_sample_data.py --mni152 /path/to/shared/data/mni152
    python Resources/SampleData/make_sample_data.py --ds000011 /path/to/shared/data/openfmri_ds000011

``--mni152`` (MNI ICBM152 2009a) writes ``MNI152_T1_1mm.nii.gz`` (T1, uint8, cropped to the head with
a 2-voxel margin) and ``MNI152_tissue_1mm.nii.gz`` (0 = background/CSF, 1 = grey matter, 2 = white
matter: the tissue with the largest probability among GM, WM and "neither", as long as it exceeds 0.5
for GM/WM), plus ``MNI152_gm_prob_1mm.nii.gz`` / ``MNI152_wm_prob_1mm.nii.gz`` (the template's GM
and WM probabilities as uint8, value = round(255 p): the partial-volume synthesis of the training
package draws images from them).  The crop keeps the 1 mm grid, so geometry stays exact (the origin
moves with it).

``--ds000011`` copies the real thick-slice scan: OpenNeuro/OpenfMRI ds000011 (public domain, PDDL 1.0),
subject 01's "inplane" T2 -- 128 x 128 x 30 voxels, 1.5625 x 1.5625 mm in plane, 5 mm axial slices,
610,742 bytes -- byte for byte as ``ds000011_sub-01_inplaneT2.nii.gz`` (no cropping or re-encoding, so the
header and its geometry are the original's), after checking the source's sha256 and licence.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from JointSRSegLib.io import read_volume, write_volume  # noqa: E402

PREFIX = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
HERE = Path(__file__).resolve().parent
THICK_SOURCE = "sub-01_inplaneT2.nii.gz"
THICK_FILE = "ds000011_sub-01_inplaneT2.nii.gz"
THICK_SHA256 = "a745d55f4b6eff0a5f6113c878357cdd040e52aaada322e288c1261e4f9a8b88"
THICK_LICENSE = "Public Domain Dedication and License"


def _as_probability(stored: np.ndarray) -> np.ndarray:
    """A template probability map in [0, 1]: uint8 files hold ``round(255 p)``, float files ``p``."""
    if stored.dtype == np.uint8:
        return stored.astype(np.float32) / 255.0
    return stored.astype(np.float32)


def _as_uint8_probability(p: np.ndarray) -> np.ndarray:
    """Probability in [0, 1] -> uint8 ``round(255 p)``: 1/510 quantisation, a quarter of the file size."""
    return np.rint(np.clip(p, 0.0, 1.0) * 255.0).astype(np.uint8)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy_thick_sample(source: Path) -> Path:
    """The ds000011 T2, unchanged; refuses a source whose bytes or licence differ from the recorded ones."""
    description = json.loads((source / "dataset_description.json").read_text(encoding="utf-8"))
    if THICK_LICENSE not in description.get("License", ""):
        raise SystemExit(f"{source}: dataset_description.json no longer states the {THICK_LICENSE}")
    digest = sha256(source / THICK_SOURCE)
    if digest != THICK_SHA256:
        raise SystemExit(f"{source / THICK_SOURCE}: sha256 {digest} is not the recorded {THICK_SHA256}")
    target = HERE / THICK_FILE
    shutil.copyfile(source / THICK_SOURCE, target)
    print(THICK_FILE, target.stat().st_size, "bytes")
    return target


def make_mni152(source: Path) -> None:
    t1, gm, wm = (read_volume(source / PREFIX.format(n)) for n in ("t1", "gm", "wm"))
    nonzero = np.argwhere(t1.array[0] > 0)
    lo = np.maximum(nonzero.min(axis=0) - 2, 0)
    hi = np.minimum(nonzero.max(axis=0) + 3, t1.shape)
    crop = (slice(None),) + tuple(slice(a, b) for a, b in zip(lo, hi))
    origin = np.asarray(t1.origin) + t1.direction @ (np.asarray(t1.spacing) * lo)
    # The template stores probabilities as uint8 0-255: scale them to [0, 1] before any threshold.
    g, w = (_as_probability(v.array[crop][0]) for v in (gm, wm))
    rest = np.clip(1.0 - g - w, 0.0, 1.0)
    labels = np.argmax(np.stack([rest, g, w]), axis=0).astype(np.uint8)
    labels[(labels == 1) & (g < 0.5)] = 0
    labels[(labels == 2) & (w < 0.5)] = 0
    for array, name in (
        (t1.array[crop].astype(np.uint8), "MNI152_T1_1mm.nii.gz"),
        (labels[None], "MNI152_tissue_1mm.nii.gz"),
        (_as_uint8_probability(g)[None], "MNI152_gm_prob_1mm.nii.gz"),
        (_as_uint8_probability(w)[None], "MNI152_wm_prob_1mm.nii.gz"),
    ):
        vol = type(t1)(array, t1.spacing, origin, t1.direction)
        write_volume(vol, HERE / name)
        print(name, vol.shape, vol.origin)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mni152", type=Path, help="folder with the MNI ICBM152 2009a files")
    parser.add_argument("--ds000011", type=Path, help="folder with OpenNeuro ds000011 (dataset_description.json)")
    args = parser.parse_args(argv)
    if not (args.mni152 or args.ds000011):
        parser.error("give --mni152 and/or --ds000011")
    if args.mni152:
        make_mni152(args.mni152)
    if args.ds000011:
        copy_thick_sample(args.ds000011)
    return 0


if __name__ == "__main__":
    sys.exit(main())
