"""Atropos on real anatomy (the figures in docs/cli.md), one JSON line per case.

    OMP_NUM_THREADS=1 python scripts/atropos_real_anatomy.py t1-strip-x4 t1-whole-x4 ds000011 ...

CASE = contrast-head-input: contrast t1|t2|flair, head strip|whole, input x4|hr; or ds000011 (the real
thick-slice T2).  Phantom: the SynthSeg label map training_seg_19 with an intensity per label (CONTRAST),
reference = JointSRSegLib.tissue_classes.  --mask: the brain mask's quality only (no Atropos).
Data: /work/shared/data (synthseg_labels, openfmri_ds000011).
"""

import json
import sys
import time

import numpy as np
from scipy import ndimage

from JointSRSegLib import atropos, predict, read_volume
from JointSRSegLib.baselines import upsample_image
from JointSRSegLib.degradation import simulate_thick_slices
from JointSRSegLib.foreground import head_mask
from JointSRSegLib.metrics import dice
from JointSRSegLib.tissue_classes import tissue_classes
from JointSRSegLib.volume import Volume

CSF_LABELS = (4, 5, 14, 15, 24, 43, 44)
# brain tissue / CSF values, and the extra-cerebral labels (>= 500): along rays from the brain outwards the
# map runs CSF (24) -> 514 -> 515 (4 mm: skull) -> 516 (inside the skull: marrow) -> 507 (4 mm) -> 511 (skin) -> air
CONTRAST = {  # csf, other brain, gm, wm, skull, fat (511 scalp, 516 marrow), other extra-cerebral
    "t1": (0.2, 0.5, 0.6, 0.9, 0.1, 0.8, 0.4),
    "t2": (0.9, 0.5, 0.6, 0.4, 0.1, 0.7, 0.3),
    "flair": (0.1, 0.5, 0.7, 0.5, 0.1, 0.8, 0.35),
}
_lab = None


def labels():
    global _lab
    if _lab is None:
        _lab = read_volume("/work/shared/data/synthseg_labels/training_seg_19.nii.gz")
    return _lab


def phantom(contrast, whole):
    lab = labels()
    L = np.rint(lab.array[0]).astype(np.int64)
    extra = L >= 500
    tc = tissue_classes(np.where(extra, 0, L))
    csf, other, gm, wm, skull, fat, rest = CONTRAST[contrast]
    img = np.zeros(L.shape, np.float32)
    img[(L > 0) & ~extra] = other
    img[np.isin(L, CSF_LABELS)] = csf
    img[tc == 1] = gm
    img[tc == 2] = wm
    if whole:
        img[extra] = rest
        img[L == 515] = skull
        img[np.isin(L, (511, 516))] = fat
    img = ndimage.gaussian_filter(img, 0.5) + np.random.default_rng(0).normal(0, 0.02, img.shape).astype(np.float32)
    region = (L > 0) if whole else ((L > 0) & ~extra)
    nz = np.argwhere(region)
    lo = np.maximum(nz.min(0) - 10, 0)
    hi = np.minimum(nz.max(0) + 11, L.shape)
    hi[2] = lo[2] + (hi[2] - lo[2]) // 4 * 4
    sl = tuple(slice(a, b) for a, b in zip(lo, hi))
    origin = lab.grid.physical_points(lo[None])[0]
    hr = Volume(img[sl], lab.spacing, origin, lab.direction, source=f"synth_{contrast}")
    brain = ((L > 0) & ~extra)[sl]
    return hr, tc[sl], brain, (L > 0)[sl]


def run_case(case, mask_only):
    if case == "ds000011":
        t2 = read_volume("/work/shared/data/openfmri_ds000011/sub-01_inplaneT2.nii.gz")
        t0 = time.time()
        r = predict(t2, model="atropos", tasks=("sr", "seg"), scale=4, axis="auto")
        sr, seg = r.outputs["sr"], r.outputs["seg"].array[0]
        head = head_mask(sr)
        head = head[0] if head.ndim == 4 else head
        tissue = seg > 0
        rep = r.report["model"]["seg_model"]
        return {
            "case": case,
            "input": list(t2.shape),
            "spacing": [round(s, 3) for s in t2.spacing],
            "sr_shape": list(sr.shape),
            "head_ml": round(float(head.sum()) * float(np.prod(sr.spacing)) / 1000, 1),
            "gm_fraction_of_head": round(float((seg == 1)[head].mean()), 4),
            "wm_fraction_of_head": round(float((seg == 2)[head].mean()), 4),
            "gm_wm_ratio": round(float((seg == 1).sum() / max(1, (seg == 2).sum())), 3),
            "tissue_outside_head_voxels": int((tissue & ~head).sum()),
            "seconds": round(time.time() - t0),
            "report": rep,
        }
    contrast, head, inp = case.split("-")
    hr, truth, brain, headtruth = phantom(contrast, head == "whole")
    if inp == "x4":
        vol, kw = simulate_thick_slices(hr, 4, 2), dict(scale=4, axis=2)
    else:
        vol, kw = hr, dict(scale=1)
    out = {"case": case, "shape": list(hr.shape)}
    t0 = time.time()
    if mask_only:
        src = upsample_image(vol, "sr", 4, 2) if inp == "x4" else vol
        m = atropos.brain_mask(src.array[0], tuple(src.spacing))
        out.update(
            mask_dice_vs_brain=round(dice(m.astype(np.uint8), brain.astype(np.uint8), 1), 4),
            mask_outside_brain_ml=round(float((m & ~brain).sum()) / 1000, 1),
            brain_missed_ml=round(float((~m & brain).sum()) / 1000, 1),
        )
    else:
        r = predict(vol, model="atropos", tasks=("seg",), **kw)
        s = r.outputs["seg"].array[0]
        assert r.outputs["seg"].grid.almost_equal(hr.grid), case
        g, w = dice(s, truth, 1), dice(s, truth, 2)
        out.update(
            gm=round(g, 3),
            wm=round(w, 3),
            mean=round((g + w) / 2, 3),
            tissue_outside_brain_ml=round(float(((s > 0) & ~brain).sum()) / 1000, 1),
            tissue_outside_head_voxels=int(((s > 0) & ~headtruth).sum()),
            contrast=r.report["model"]["seg_model"]["contrast"],
            mask_ml=r.report["model"]["seg_model"]["mask_ml"],
            true_brain_ml=round(float(brain.sum()) / 1000, 1),
        )
    out["seconds"] = round(time.time() - t0)
    return out


if __name__ == "__main__":
    mask_only = "--mask" in sys.argv
    for case in [a for a in sys.argv[1:] if not a.startswith("--")]:
        print(json.dumps(run_case(case, mask_only)), flush=True)
