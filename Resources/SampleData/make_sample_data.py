"""Regenerate the sample data from the MNI ICBM152 2009a files (run once; kept for provenance).

    python Resources/SampleData/make_sample_data.py /path/to/shared/data/mni152

Writes ``MNI152_T1_1mm.nii.gz`` (T1, uint8, cropped to the head with a 2-voxel margin) and
``MNI152_tissue_1mm.nii.gz`` (0 = background/CSF, 1 = grey matter, 2 = white matter: the
tissue with the largest probability among GM, WM and "neither", as long as it exceeds 0.5
for GM/WM), plus ``MNI152_gm_prob_1mm.nii.gz`` / ``MNI152_wm_prob_1mm.nii.gz`` (the template's GM
and WM probabilities as uint8, value = round(255 p): the partial-volume synthesis of the training
package draws images from them).  The crop keeps the 1 mm grid, so geometry stays exact (the origin
moves with it).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from JointSRSegLib.io import read_volume, write_volume  # noqa: E402

PREFIX = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"


def _as_probability(stored: np.ndarray) -> np.ndarray:
    """A template probability map in [0, 1]: uint8 files hold ``round(255 p)``, float files ``p``."""
    if stored.dtype == np.uint8:
        return stored.astype(np.float32) / 255.0
    return stored.astype(np.float32)


def _as_uint8_probability(p: np.ndarray) -> np.ndarray:
    """Probability in [0, 1] -> uint8 ``round(255 p)``: 1/510 quantisation, a quarter of the file size."""
    return np.rint(np.clip(p, 0.0, 1.0) * 255.0).astype(np.uint8)


def main(source: Path) -> None:
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
    here = Path(__file__).resolve().parent
    for array, name in (
        (t1.array[crop].astype(np.uint8), "MNI152_T1_1mm.nii.gz"),
        (labels[None], "MNI152_tissue_1mm.nii.gz"),
        (_as_uint8_probability(g)[None], "MNI152_gm_prob_1mm.nii.gz"),
        (_as_uint8_probability(w)[None], "MNI152_wm_prob_1mm.nii.gz"),
    ):
        vol = type(t1)(array, t1.spacing, origin, t1.direction)
        write_volume(vol, here / name)
        print(name, vol.shape, vol.origin)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
