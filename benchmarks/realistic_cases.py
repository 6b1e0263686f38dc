"""Cases of the realistic benchmark (``benchmarks/realistic.py``), generated on the fly and deterministic.

Three kinds, none of them the data the shipped models trained on except the last:

* ``labelmap``: FreeSurfer label maps of SynthSeg's training subjects 19 and 20
  (``../shared/data/synthseg_labels``, 256^3 1 mm LIA, whole head with extra-cerebral labels >= 500)
  turned into images in four contrasts by the fixed tables below (per-label mean and std, a Gaussian
  partial-volume blur, a fixed smooth bias field, Gaussian noise), each **skull-stripped** (everything
  outside the brain labels exactly 0) and **whole-head** (extra-cerebral labels per their own table,
  background low magnitude noise); reference segmentation
  :func:`JointSRSegLib.tissue_classes.tissue_classes` of the labels.  Every such case exists in three
  voxel orientations, the native ``LIA``, ``RAS`` and ``PSR``: exact permutations / flips of the same
  voxels with the direction and origin changed to match (:func:`reorient`), so the physical scan is
  identical.  The crop is applied before the reorientation and the extent along the thick-slice axis is
  a multiple of the factor, so the thick slabs cover the same physical tissue in every orientation.
* ``real``: real HR T1 scans with skull (OpenNeuro ds002748 subjects 21-24); no labels, so image
  metrics only (and the background error of a segmentation against an intensity head mask).
* ``mni``: the whole MNI152 sample (``Resources/SampleData``) with its tissue map -- the template the
  packages trained on, reported separately as a sanity reference, never in the held-out means.

The thick-slice axis is the same **anatomical** axis everywhere (``THROUGH``: anterior-posterior, i.e.
coronal slices), whatever voxel axis it falls on in a given orientation.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from scipy import ndimage

from JointSRSegLib.geometry import orientation_code
from JointSRSegLib.io import read_volume
from JointSRSegLib.orientation import reorient_volume
from JointSRSegLib.tissue_classes import GREY_MATTER_LABELS, WHITE_MATTER_LABELS, tissue_classes
from JointSRSegLib.volume import Volume

ROOT = Path(__file__).resolve().parents[1]
DATA = Path("/work/shared/data") if Path("/work/shared/data").is_dir() else ROOT.parent / "shared" / "data"
LABEL_MAPS = DATA / "synthseg_labels"
REAL_T1 = DATA / "openneuro_ds002748_t1w"
MNI_T1 = ROOT / "Resources" / "SampleData" / "MNI152_T1_1mm.nii.gz"
MNI_TISSUE = ROOT / "Resources" / "SampleData" / "MNI152_tissue_1mm.nii.gz"

FACTOR = 4
THROUGH = "A"  # thick slices along the anterior-posterior axis (coronal slices) in every case
ORIENTATIONS = ("LIA", "RAS", "PSR")
MARGIN = 8  # voxels around the head's bounding box (--crop brain)
SCALE = 1000.0  # scanner-like units of the synthetic images
BLUR_SIGMA = 0.6  # voxels: partial-volume blur of the synthetic images
NOISE_STD = 0.01  # of SCALE, everywhere (whole-head background included)
EXTRA_CEREBRAL = 500  # labels >= this are outside the brain (skull, scalp, eyes, ...)

SUBSETS = {
    "quick": {"subjects": (19,), "contrasts": ("t1", "t2"), "real": (21, 22), "mni": True},
    "full": {"subjects": (19, 20), "contrasts": ("t1", "t2", "flair", "pd"), "real": (21, 22, 23, 24), "mni": True},
    # benchmarks/uncertainty_calibration.py fits the uncertainty maps on these (never in a report's figures):
    "calibration": {"subjects": (17, 18), "contrasts": ("t1", "t2", "flair", "pd"), "real": (23,), "mni": False},
}
# --crop brain still keeps these full-field-of-view label-map cases (the empty background must be tested):
FULL_FOV_CASES = {"quick": (("t1", "stripped"),), "full": (("t1", "stripped"), ("t2", "head")), "calibration": ()}

# ---------------------------------------------------------------------------- intensity tables
CORTEX = (3, 42, 8, 47)
DEEP_GM = tuple(label for label in GREY_MATTER_LABELS if label not in CORTEX)
CSF = (4, 5, 14, 15, 24, 43, 44, 72)  # ventricles, CSF, 5th ventricle
CHOROID = (31, 63)
VESSEL = (30, 62)
# Mean intensity (fraction of SCALE) of each brain class per contrast; other brain labels (< 500) get "other".
CONTRAST_MEANS: dict[str, dict[str, float]] = {
    "t1": {"wm": 0.80, "cortex": 0.55, "deep_gm": 0.65, "csf": 0.15, "choroid": 0.45, "vessel": 0.50, "other": 0.40},
    "t2": {"wm": 0.35, "cortex": 0.55, "deep_gm": 0.50, "csf": 0.95, "choroid": 0.70, "vessel": 0.20, "other": 0.50},
    "flair": {"wm": 0.45, "cortex": 0.65, "deep_gm": 0.60, "csf": 0.08, "choroid": 0.50, "vessel": 0.20, "other": 0.40},
    "pd": {"wm": 0.62, "cortex": 0.75, "deep_gm": 0.72, "csf": 0.80, "choroid": 0.70, "vessel": 0.30, "other": 0.60},
}
CONTRAST_NAMES = {"t1": "T1-like", "t2": "T2-like", "flair": "FLAIR-like", "pd": "PD-like"}
# Documented tissue order of each contrast (mean of the tissue class, brightest first); tested.
TISSUE_ORDER = {"t1": ("wm", "cortex", "csf"), "t2": ("csf", "cortex", "wm"), "flair": ("cortex", "wm", "csf"),
                "pd": ("csf", "cortex", "wm")}
BRAIN_STD = 0.03  # per-label std (fraction of SCALE) inside the brain
# Extra-cerebral labels of the SynthSeg maps (whole-head cases): fixed mean per contrast; others get "default".
EXTRA_MEANS: dict[str, dict[int | str, float]] = {
    "t1": {502: 0.90, 506: 0.30, 507: 0.45, 508: 0.70, 509: 0.20, 511: 0.60, 512: 0.35, 514: 0.15, 515: 0.50,
           516: 0.85, 530: 0.25, "default": 0.40},
    "t2": {502: 0.60, 506: 0.80, 507: 0.40, 508: 0.30, 509: 0.15, 511: 0.50, 512: 0.70, 514: 0.10, 515: 0.45,
           516: 0.65, 530: 0.90, "default": 0.40},
    "flair": {502: 0.70, 506: 0.25, 507: 0.50, 508: 0.55, 509: 0.15, 511: 0.45, 512: 0.30, 514: 0.10, 515: 0.40,
              516: 0.75, 530: 0.20, "default": 0.35},
    "pd": {502: 0.75, 506: 0.70, 507: 0.55, 508: 0.60, 509: 0.25, 511: 0.65, 512: 0.60, 514: 0.20, 515: 0.55,
           516: 0.70, 530: 0.80, "default": 0.50},
}
EXTRA_STD = 0.06
# Multiplicative bias field exp(sum c * term) over the native voxel grid scaled to [-1, 1] (max about +-15 %).
BIAS_COEFFS = {"x": 0.07, "y": -0.05, "z": 0.06, "xx": -0.04, "yz": 0.03}
CONTRAST_SEEDS = {"t1": 1, "t2": 2, "flair": 3, "pd": 4}
VARIANT_SEEDS = {"stripped": 0, "head": 1}



_LETTER_VECTORS = {"L": (1, 0, 0), "R": (-1, 0, 0), "P": (0, 1, 0), "A": (0, -1, 0), "S": (0, 0, 1), "I": (0, 0, -1)}


# ----------------------------------------------------------------------------------- geometry
def reorient(volume: Volume, code: str) -> Volume:
    """The same voxels (permuted / flipped) on a grid whose axes point as ``code`` says, e.g. ``"RAS"``:
    the engine's own exact reorientation (:func:`JointSRSegLib.orientation.reorient_volume`)."""
    out = reorient_volume(volume, code)
    assert orientation_code(out.direction) == code.upper()
    return out


def anatomical_axis(volume: Volume, letter: str = THROUGH) -> int:
    """The voxel axis that runs along the anatomical axis of ``letter`` (either sense)."""
    dots = volume.direction.T @ np.asarray(_LETTER_VECTORS[letter], dtype=float)
    return int(np.argmax(np.abs(dots)))


def crop(volume: Volume, box: list[tuple[int, int]]) -> Volume:
    """``volume[box]`` with the origin moved to the first kept voxel."""
    index = tuple(slice(a, b) for a, b in box)
    origin = volume.grid.physical_points(np.array([[a for a, _ in box]], dtype=float))[0]
    return Volume(np.ascontiguousarray(volume.array[(slice(None), *index)]), volume.spacing, tuple(origin),
                  volume.direction, source=volume.source)


def crop_box(mask: np.ndarray | None, shape, through_axis: int, factor: int = FACTOR,
             margin: int = MARGIN) -> list[tuple[int, int]]:
    """Bounding box of ``mask`` plus ``margin`` (the whole field of view when ``mask`` is None), its extent
    along ``through_axis`` made a multiple of ``factor`` (grown inside the volume if it can, else shrunk)."""
    box = []
    for axis, n in enumerate(shape):
        if mask is None:
            lo, hi = 0, n
        else:
            hit = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(3) if a != axis)))
            lo, hi = max(0, int(hit[0]) - margin), min(n, int(hit[-1]) + 1 + margin)
        if axis == through_axis and (hi - lo) % factor:
            grow = factor - (hi - lo) % factor
            if hi + grow <= n:
                hi += grow
            elif lo - grow >= 0:
                lo -= grow
            else:
                hi -= (hi - lo) % factor
        box.append((lo, hi))
    return box


# ---------------------------------------------------------------------------------- synthesis
def label_class_table(contrast: str, max_label: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-label mean and std (fractions of SCALE) of one contrast, as lookup tables over label values."""
    means, extra = CONTRAST_MEANS[contrast], EXTRA_MEANS[contrast]
    size = max(max_label, 600) + 1
    mean = np.full(size, means["other"], dtype=np.float32)
    std = np.full(size, BRAIN_STD, dtype=np.float32)
    mean[list(WHITE_MATTER_LABELS)] = means["wm"]
    mean[list(CORTEX)] = means["cortex"]
    mean[list(DEEP_GM)] = means["deep_gm"]
    mean[list(CSF)] = means["csf"]
    mean[list(CHOROID)] = means["choroid"]
    mean[list(VESSEL)] = means["vessel"]
    mean[EXTRA_CEREBRAL:] = extra["default"]
    std[EXTRA_CEREBRAL:] = EXTRA_STD
    for label, value in extra.items():
        if label != "default":
            mean[int(label)] = value
    mean[0], std[0] = 0.0, 0.0
    return mean, std


def bias_field(shape) -> np.ndarray:
    """The fixed smooth multiplicative bias field on a native voxel grid (float32)."""
    x, y, z = (np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape)
    x, y, z = x[:, None, None], y[None, :, None], z[None, None, :]
    c = BIAS_COEFFS
    return np.exp(c["x"] * x + c["y"] * y + c["z"] * z + c["xx"] * x * x + c["yz"] * y * z).astype(np.float32)


def synthesize(labels: np.ndarray, contrast: str, variant: str, seed: int) -> np.ndarray:
    """A synthetic image (float32, SCALE units) of a FreeSurfer label map; ``variant`` ``stripped`` or ``head``."""
    rng = np.random.default_rng(seed)
    mean, std = label_class_table(contrast, int(labels.max()))
    brain = (labels > 0) & (labels < EXTRA_CEREBRAL)
    image = mean[labels] + std[labels] * rng.standard_normal(labels.shape, dtype=np.float32)
    if variant == "stripped":
        image[~brain] = 0.0
    image = ndimage.gaussian_filter(image, BLUR_SIGMA, mode="nearest")
    image *= bias_field(labels.shape)
    image += NOISE_STD * rng.standard_normal(labels.shape, dtype=np.float32)
    if variant == "stripped":
        image[~brain] = 0.0
    else:
        np.abs(image, out=image)  # magnitude image: background is low positive noise
    return (image * SCALE).astype(np.float32)


def head_mask_from_intensity(image: np.ndarray) -> np.ndarray:
    """Head mask of a real scan: above 5 % of the 99.5th percentile, closed, holes filled, largest component."""
    mask = image > 0.05 * np.percentile(image, 99.5)
    mask = ndimage.binary_closing(mask, iterations=2)
    mask = ndimage.binary_fill_holes(mask)
    components, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum(mask, components, index=np.arange(1, n + 1))
        mask = components == (1 + int(np.argmax(sizes)))
    return mask


# --------------------------------------------------------------------------------------- cases
def _case(name: str, hr: Volume, labels: np.ndarray | None, head: np.ndarray, **info) -> dict:
    return {"name": name, "hr": hr, "labels": labels, "head": head, "axis": anatomical_axis(hr),
            "orientation": orientation_code(hr.direction), "shape": list(hr.shape), **info}


def _label_source(subject: int) -> tuple:
    source = read_volume(LABEL_MAPS / f"training_seg_{subject}.nii.gz")
    return source, source.array[0].astype(np.int32)


def _label_group(source: Volume, labels: np.ndarray, subject: int, contrast: str, variant: str, fov: str,
                 orientations, wanted) -> Iterator[dict]:
    """One synthetic image of a label map, cropped (``fov`` ``brain`` or ``full``), in each orientation."""
    codes = [code for code in orientations if wanted(f"s{subject}-{contrast}-{variant}-{fov}-{code}")]
    if not codes:
        return
    head = labels > 0
    seed = 1000 * subject + 10 * CONTRAST_SEEDS[contrast] + VARIANT_SEEDS[variant]
    image = synthesize(labels, contrast, variant, seed)  # on the whole native grid: every crop is the same data
    mask = head if variant == "head" else (head & (labels < EXTRA_CEREBRAL))
    box = crop_box(head if fov == "brain" else None, labels.shape, anatomical_axis(source))
    native = crop(source.with_array(image[None]), box)
    label_crop = crop(source.with_array(labels[None]), box)
    mask_crop = crop(source.with_array(mask[None].astype(np.uint8)), box)
    brain_crop = crop(source.with_array((head & (labels < EXTRA_CEREBRAL))[None].astype(np.uint8)), box)
    del image
    for code in codes:
        yield _case(
            f"s{subject}-{contrast}-{variant}-{fov}-{code}", reorient(native, code),
            tissue_classes(reorient(label_crop, code).array[0]), reorient(mask_crop, code).array[0].astype(bool),
            brain=reorient(brain_crop, code).array[0].astype(bool),
            kind="labelmap", subject=subject, contrast=contrast, variant=variant, fov=fov,
            group=f"s{subject}-{contrast}-{variant}-{fov}",
            source=f"synthseg_labels/training_seg_{subject}.nii.gz, seed {seed}")


def case_plan(subset: str, crop_mode: str) -> list[tuple]:
    """The order cases are measured in: the most different ones first, so a run cut short still covers
    three orientations, the full field of view, a real scan, both contrasts and variants, then MNI.

    Steps: ``("label", subject, contrast, variant, fov)`` (every orientation), ``("real", subject)``, ``("mni",)``.
    """
    spec = SUBSETS[subset]
    fov = "full" if crop_mode == "full" else "brain"
    groups = []
    for subject in spec["subjects"]:
        for k in range(2):  # contrast j takes variant order stripped/head (j even) or head/stripped (j odd)
            for j, contrast in enumerate(spec["contrasts"]):
                variant = ("stripped", "head")[(k + j) % 2]
                groups.append(("label", subject, contrast, variant, fov))
    others = [("real", subject) for subject in spec["real"]]
    full_fov = [("label", subject, c, v, "full") for subject in spec["subjects"] for c, v in FULL_FOV_CASES[subset]
                if c in spec["contrasts"]] if crop_mode == "brain" else []
    plan: list[tuple] = []
    for i, group in enumerate(groups):
        plan.append(group)
        if i == 0:
            plan += full_fov[:1] + others[:1]
        if i == 1:
            plan += ([("mni",)] if spec["mni"] else []) + full_fov[1:]
    if len(groups) < 2:
        plan += ([("mni",)] if spec["mni"] else []) + full_fov[1:]
    return plan + others[1:]


def _real_case(subject: int, crop_mode: str) -> dict:
    vol = read_volume(REAL_T1 / f"sub-{subject:02d}_T1w.nii.gz")
    vol = vol.with_array(vol.array.astype(np.float32))
    head = head_mask_from_intensity(vol.array[0])
    box = crop_box(head if crop_mode == "brain" else None, vol.shape, anatomical_axis(vol))
    hr = crop(vol, box)
    mask = crop(vol.with_array(head[None].astype(np.uint8)), box).array[0].astype(bool)
    return _case(f"real-sub{subject:02d}-{crop_mode}", hr, None, mask, kind="real", subject=subject, contrast="real-t1",
                 variant="head", fov=crop_mode, group=None, source=f"openneuro_ds002748_t1w/sub-{subject:02d}_T1w")


def _mni_case(crop_mode: str) -> dict:
    vol = read_volume(MNI_T1)
    vol = vol.with_array(vol.array.astype(np.float32))
    tissue = read_volume(MNI_TISSUE).array[0].astype(np.uint8)  # already 0 bg / 1 GM / 2 WM
    head = head_mask_from_intensity(vol.array[0]) | (tissue > 0)
    box = crop_box(head if crop_mode == "brain" else None, vol.shape, anatomical_axis(vol))
    hr = crop(vol, box)
    as_volume = vol.with_array
    return _case(f"mni-{crop_mode}", hr, crop(as_volume(tissue[None]), box).array[0],
                 crop(as_volume(head[None].astype(np.uint8)), box).array[0].astype(bool), kind="mni", subject=None,
                 contrast="mni-t1", variant="head", fov=crop_mode, group=None, trained_on=True,
                 source="Resources/SampleData/MNI152_T1_1mm (the training template)")


def generate_cases(subset: str = "quick", crop_mode: str = "brain", orientations=ORIENTATIONS,
                   only: list[str] | None = None) -> Iterator[dict]:
    """Every case of ``subset`` one at a time in :func:`case_plan` order (each is large); ``only``: keep names
    containing one of these."""

    def wanted(name: str) -> bool:
        return not only or any(part in name for part in only)

    sources: dict[int, tuple] = {}
    for step in case_plan(subset, crop_mode):
        if step[0] == "label":
            _, subject, contrast, variant, fov = step
            codes = orientations if fov == "brain" or crop_mode == "full" else tuple(orientations)[:1]
            if not any(wanted(f"s{subject}-{contrast}-{variant}-{fov}-{code}") for code in codes):
                continue
            if subject not in sources:
                sources = {subject: _label_source(subject)}  # one label map in memory at a time
            yield from _label_group(*sources[subject], subject, contrast, variant, fov, codes, wanted)
        elif step[0] == "real" and wanted(f"real-sub{step[1]:02d}-{crop_mode}"):
            yield _real_case(step[1], crop_mode)
        elif step[0] == "mni" and wanted(f"mni-{crop_mode}"):
            yield _mni_case(crop_mode)


def planned_names(subset: str = "quick", crop_mode: str = "brain", only: list[str] | None = None,
                  orientations=ORIENTATIONS) -> list[str]:
    """The names :func:`generate_cases` yields, in order, without generating anything."""
    names = []
    for step in case_plan(subset, crop_mode):
        if step[0] == "label":
            _, subject, contrast, variant, fov = step
            codes = orientations if fov == "brain" or crop_mode == "full" else tuple(orientations)[:1]
            names += [f"s{subject}-{contrast}-{variant}-{fov}-{code}" for code in codes]
        elif step[0] == "real":
            names.append(f"real-sub{step[1]:02d}-{crop_mode}")
        else:
            names.append(f"mni-{crop_mode}")
    return [n for n in names if not only or any(part in n for part in only)]
