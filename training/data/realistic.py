"""Realistic training data: real FreeSurfer label maps (SynthSeg principle) and real HR T1 images.

Why: a network trained on one MNI152 template (one hemisphere, RAS voxel order, thick slices always
axial) paints tissue over the background of a real scan.  This module builds training samples that
look like real scans:

* **Dataset** (``data.root: "synthseg:LABELS_DIR[?options]"``, see :func:`parse_realistic_root`):
  ``training_seg_XX.nii.gz`` whole-head FreeSurfer label maps (extra-cerebral labels >= 500) and,
  optionally, real HR T1w images (``sub-XX_T1w.nii.gz``) for the SR head.  The split is fixed by
  subject number, never random: label-map subjects 17-18 select checkpoints, 19-20 are test
  subjects; T1 subjects 21-24 are test subjects.  :func:`check_subjects` refuses any of them in
  the training list (and test subjects in the validation list).
* **Voxel order**: every case is reoriented to RAS voxel order once, at load
  (:func:`reorient_to_ras`, an exact axis permutation and flip from the direction matrix); the
  exported package records ``inference.orientation = "RAS"``.
* **Samples** (:class:`RealisticPatchd`): crop first, synthesise after -- a patch (plus margin for
  the deformation) is cut from the label map, then deformed (affine + smooth elastic field,
  nearest neighbour), then an image is drawn from *all* its labels (:func:`synthesize_image`), and
  the segmentation target is ``tissue_classes`` of the deformed label patch.  Before cropping, the
  three voxel axes are permuted and flipped at random (``orientation_prob``), so the thick-slice
  axis (always ``data.axis`` = 2 of the model frame) can be axial, coronal or sagittal anatomy.
  Patches are centred in the brain, at the head border or anywhere in the (zero-padded) field of
  view, so empty backgrounds are seen too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from monai.transforms import MapTransform, Randomizable
from scipy import ndimage

from JointSRSegLib.errors import InputError
from JointSRSegLib.geometry import orientation_code
from JointSRSegLib.tissue_classes import GREY_MATTER_LABELS, WHITE_MATTER_LABELS, tissue_classes

from .pairs import to_numpy

PREFIX = "synthseg:"
EXTRA_CEREBRAL = 500  # labels >= 500 in the SynthSeg training maps: skull, scalp, eyes, ...
LABEL_FILE = "training_seg_{:02d}.nii.gz"
T1_FILE = "sub-{:02d}_T1w.nii.gz"
# Subjects that must never be trained on: label maps 17-18 select checkpoints and 19-20 are test
# subjects; T1 images 17-20 may validate, 21-24 are test subjects.
LABEL_HELD_OUT = {"validation": frozenset({17, 18}), "test": frozenset({19, 20})}
T1_HELD_OUT = {"validation": frozenset({17, 18, 19, 20}), "test": frozenset({21, 22, 23, 24})}
DEFAULTS = {"train": "1-16", "validation": "17-18", "t1": "", "t1_train": "1-7", "t1_validation": ""}

# --------------------------------------------------------------------------- dataset


@dataclass
class RealisticSpec:
    """What ``data.root: synthseg:...`` names: folders and subject numbers per subset."""

    labels_dir: Path
    train: list[int]
    validation: list[int]
    t1_dir: Path | None = None
    t1_train: list[int] = field(default_factory=list)
    t1_validation: list[int] = field(default_factory=list)


def parse_subjects(text: str) -> list[int]:
    """``"1-16"``, ``"1,3,5-7"`` or ``""`` -> sorted subject numbers."""
    out: set[int] = set()
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise ValueError(f"subject list {text!r}: {part!r} is not N or N-M")
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        out.update(range(low, high + 1))
    return sorted(out)


def check_subjects(train: Sequence[int], validation: Sequence[int], held_out: dict, what: str) -> None:
    """Refuse held-out subjects in the training list (any) and test subjects in the validation list."""
    bad = sorted(set(train) & (held_out["validation"] | held_out["test"]))
    if bad:
        raise ValueError(f"{what} subject(s) {bad} are held out (validation {sorted(held_out['validation'])}, "
                         f"test {sorted(held_out['test'])}) and must never be trained on")
    bad = sorted(set(validation) & held_out["test"])
    if bad:
        raise ValueError(f"{what} subject(s) {bad} are test subjects and must not select checkpoints")
    both = sorted(set(train) & set(validation))
    if both:
        raise ValueError(f"{what} subject(s) {both} are in both the training and the validation list")


def parse_realistic_root(root: str) -> RealisticSpec:
    """``synthseg:LABELS_DIR?train=1-16&validation=17-18&t1=T1_DIR&t1_train=1-7&t1_validation=``.

    Every option has the default of :data:`DEFAULTS` (no real T1 images unless ``t1`` is given).
    """
    text = str(root)
    if not text.startswith(PREFIX):
        raise ValueError(f"{text!r} does not start with {PREFIX!r}")
    path, _, query = text[len(PREFIX):].partition("?")
    options = dict(DEFAULTS)
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if not sep or key not in DEFAULTS:
            raise ValueError(f"{text!r}: unknown option {item!r} (use {', '.join(DEFAULTS)})")
        options[key] = value
    spec = RealisticSpec(Path(path), parse_subjects(options["train"]), parse_subjects(options["validation"]),
                         Path(options["t1"]) if options["t1"] else None,
                         parse_subjects(options["t1_train"]) if options["t1"] else [],
                         parse_subjects(options["t1_validation"]) if options["t1"] else [])
    check_subjects(spec.train, spec.validation, LABEL_HELD_OUT, "label-map")
    check_subjects(spec.t1_train, spec.t1_validation, T1_HELD_OUT, "T1")
    if not spec.train:
        raise ValueError(f"{text!r}: no training label maps")
    return spec


def is_realistic_root(root) -> bool:
    return str(root).startswith(PREFIX)


def realistic_cases(spec: RealisticSpec) -> list[dict]:
    """Case dicts with a fixed ``subset``: label-map cases (no image) and T1 cases (no label)."""
    cases = []
    for subset, subjects in (("train", spec.train), ("validation", spec.validation)):
        for subject in subjects:
            path = spec.labels_dir / LABEL_FILE.format(subject)
            if not path.is_file():
                raise InputError(path, "label map not found")
            cases.append({"id": f"synthseg_{subject:02d}", "patient": f"synthseg_{subject:02d}", "images": [],
                          "label": str(path), "modalities": ["T1"], "lr_only": False, "kind": "labelmap",
                          "subset": subset, "reorient": "RAS"})
    if spec.t1_dir is not None:
        for subset, subjects in (("train", spec.t1_train), ("validation", spec.t1_validation)):
            for subject in subjects:
                path = spec.t1_dir / T1_FILE.format(subject)
                if not path.is_file():
                    raise InputError(path, "T1 image not found")
                cases.append({"id": f"t1w_{subject:02d}", "patient": f"ds002748_sub-{subject:02d}",
                              "images": [str(path)], "label": None, "modalities": ["T1"], "lr_only": False,
                              "kind": "image", "subset": subset, "reorient": "RAS"})
    return cases


# --------------------------------------------------------------------------- orientation


def ras_permutation(direction: np.ndarray) -> tuple[list[int], list[bool]]:
    """``(order, flips)``: RAS voxel axis ``t`` is source axis ``order[t]``, reversed where ``flips[t]``.

    ``direction`` is the LPS direction matrix (columns = voxel axes); the letter code of
    :func:`orientation_code` says which way each voxel axis points.
    """
    code = orientation_code(direction)
    targets = ("R", "A", "S")
    opposite = {"R": "L", "A": "P", "S": "I"}
    order, flips = [], []
    for letter in targets:
        found = [a for a, c in enumerate(code) if c in (letter, opposite[letter])]
        if len(found) != 1:
            raise ValueError(f"orientation {code!r} is not a permutation of the RAS axes")
        order.append(found[0])
        flips.append(code[found[0]] != letter)
    return order, flips


def reorient_to_ras(array: np.ndarray, spacing, origin, direction):
    """Reorient ``(C, I, J, K)`` voxels to RAS voxel order; returns ``(array, spacing, origin, direction)``.

    Exact: a permutation and flips of the voxel axes, with the geometry updated so that every voxel
    keeps its physical (LPS) position.
    """
    direction = np.asarray(direction, float).reshape(3, 3)
    spacing, origin = np.asarray(spacing, float), np.asarray(origin, float)
    order, flips = ras_permutation(direction)
    out = np.transpose(array, [0] + [a + 1 for a in order])
    new_dir = direction[:, order].copy()
    new_spacing = spacing[order]
    new_origin = origin.copy()
    index = [slice(None)] * 4
    for t, flip in enumerate(flips):
        if flip:
            index[t + 1] = slice(None, None, -1)
            new_origin = new_origin + new_dir[:, t] * new_spacing[t] * (out.shape[t + 1] - 1)
            new_dir[:, t] = -new_dir[:, t]
    return np.ascontiguousarray(out[tuple(index)]), new_spacing, new_origin, new_dir


def random_axes(rng: np.random.RandomState) -> tuple[list[int], list[bool]]:
    """A random permutation and flips of three voxel axes."""
    return [int(a) for a in rng.permutation(3)], [bool(f) for f in rng.rand(3) < 0.5]


def apply_axes(array: np.ndarray, order: Sequence[int], flips: Sequence[bool]) -> np.ndarray:
    """Permute then flip the last three axes of ``array`` (a view)."""
    lead = array.ndim - 3
    out = np.transpose(array, list(range(lead)) + [lead + a for a in order])
    index = [slice(None)] * lead + [slice(None, None, -1) if f else slice(None) for f in flips]
    return out[tuple(index)]


# --------------------------------------------------------------------------- synthesis

# Right-hemisphere labels share the intensity of their left twin (one tissue, one contrast).
RIGHT_TO_LEFT = {41: 2, 42: 3, 43: 4, 44: 5, 46: 7, 47: 8, 49: 10, 50: 11, 51: 12, 52: 13, 53: 17, 54: 18,
                 58: 26, 60: 28, 62: 30, 63: 31}
CSF_LABELS = (4, 5, 14, 15, 24)
# Grey-matter structures whose intensity lies between cortex and white matter in most sequences
# (fraction of the way from the GM mean to the WM mean), and the like for the brainstem.
TOWARDS_OTHER = {10: (0.2, 0.7), 13: (0.3, 0.8), 28: (0.2, 0.7), 11: (0.0, 0.3), 12: (0.0, 0.4), 17: (0.0, 0.3),
                 18: (0.0, 0.3), 26: (0.0, 0.3), 16: (0.0, 0.4)}
# Class mean ranges (CSF, GM, WM) of common sequences on a 0-1 scale (the brightest tissue near 1).
SEQUENCES = {
    "T1": ((0.05, 0.3), (0.4, 0.6), (0.7, 0.95)),
    "T2": ((0.8, 1.0), (0.45, 0.65), (0.25, 0.45)),
    "FLAIR": ((0.0, 0.15), (0.5, 0.75), (0.3, 0.5)),
    "PD": ((0.65, 0.9), (0.55, 0.75), (0.35, 0.55)),
}


def _group(label: int) -> int:
    return RIGHT_TO_LEFT.get(label, label)


@dataclass
class Contrast:
    """The drawn intensities: mean and std per label group, and the class means."""

    means: dict[int, float]
    stds: dict[int, float]
    gm: float
    wm: float
    csf: float
    sequence: str


def draw_contrast(labels: Sequence[int], rng: np.random.RandomState, sequence: str | None = None,
                  sequence_prob: float = 0.5, min_contrast: float = 0.1, skull_stripped: bool = True,
                  std_range: tuple[float, float] = (0.0, 0.05)) -> Contrast:
    """Means/stds for every label group of ``labels``.

    ``sequence``: one of :data:`SEQUENCES` (or ``"random"``); ``None`` draws a named sequence with
    probability ``sequence_prob``, else a random contrast.  GM and WM class means differ by at least
    ``min_contrast`` (redrawn otherwise).  The brightest mean of the map is scaled to 0.85-1 (as the
    percentile normalisation of a real scan puts its brightest tissue near 1).
    """
    if sequence is None:
        sequence = str(rng.choice(list(SEQUENCES))) if rng.rand() < sequence_prob else "random"
    for _ in range(100):
        if sequence == "random":
            csf, gm, wm = (float(v) for v in rng.uniform(0.0, 1.0, 3))
        else:
            csf, gm, wm = (float(rng.uniform(*r)) for r in SEQUENCES[sequence])
        if abs(gm - wm) >= min_contrast:
            break
    groups = sorted({_group(int(v)) for v in labels})
    means, stds = {}, {}
    for g in groups:
        if g in TOWARDS_OTHER:
            t = float(rng.uniform(*TOWARDS_OTHER[g]))
            own, other = (wm, gm) if g in WHITE_MATTER_LABELS else (gm, wm)
            mean = own + t * (other - own) + rng.normal(0, 0.02)
        elif g in GREY_MATTER_LABELS:
            mean = gm + rng.normal(0, 0.02 if g == 3 else 0.04)
        elif g in WHITE_MATTER_LABELS and g != 77:
            mean = wm + rng.normal(0, 0.02)
        elif g in CSF_LABELS:
            mean = csf + rng.normal(0, 0.03)
        elif g == 0:
            mean = rng.uniform(0.0, 0.1)  # air is dark in every MR sequence
        else:  # WM hypointensities, vessels, choroid plexus, extra-cerebral tissue: anything
            mean = rng.uniform(0.0, 1.0)
        means[g] = float(np.clip(mean, 0.0, 1.0))
        stds[g] = float(rng.uniform(*std_range))
    if skull_stripped:
        for g in groups:
            if g == 0 or g >= EXTRA_CEREBRAL:
                means[g], stds[g] = 0.0, 0.0
    brightest = max(means.values()) if means else 1.0
    if brightest > 0:
        scale = float(rng.uniform(0.85, 1.0)) / brightest
        means = {g: m * scale for g, m in means.items()}
        stds = {g: s * scale for g, s in stds.items()}
        gm, wm, csf = gm * scale, wm * scale, csf * scale
    return Contrast(means, stds, gm, wm, csf, sequence)


def smooth_upsample(coarse: np.ndarray, shape) -> np.ndarray:
    """``(C, a, b, c)`` control values -> ``(C, *shape)`` by trilinear interpolation (corners aligned)."""
    tensor = torch.from_numpy(np.ascontiguousarray(coarse, dtype=np.float32))[None]
    return torch.nn.functional.interpolate(tensor, size=tuple(int(s) for s in shape), mode="trilinear",
                                           align_corners=True)[0].numpy()


def _bias_field(shape, rng: np.random.RandomState, coeff: float) -> np.ndarray:
    """A smooth multiplicative field ``exp(f)``, ``f`` an upsampling of 4^3 N(0, coeff) values."""
    return np.exp(smooth_upsample(rng.normal(0.0, coeff, (1, 4, 4, 4)), shape)[0]).astype(np.float32)


def synthesize_image(label: np.ndarray, rng: np.random.RandomState, contrast: Contrast,
                     skull_stripped: bool = True, blur_sigma: float | None = None, bias_coeff: float = 0.1,
                     noise_std: float | None = None, gamma: float | None = None) -> np.ndarray:
    """A ``(I, J, K)`` float32 image drawn from an integer label patch.

    Gaussian intensity per label, partial-volume blur (sigma in [0, 1] voxel), bias field,
    gamma, Gaussian noise; non-negative.  ``skull_stripped``: background and extra-cerebral labels
    are exactly 0 (as in a brain-masked scan), after blur and noise.
    """
    label = np.asarray(label)
    values = np.unique(label)
    groups = np.array([_group(int(v)) for v in values])
    mean_lut = np.array([contrast.means.get(int(g), 0.0) for g in groups], np.float32)
    std_lut = np.array([contrast.stds.get(int(g), 0.0) for g in groups], np.float32)
    index = np.searchsorted(values, label)
    image = mean_lut[index] + std_lut[index] * rng.standard_normal(label.shape).astype(np.float32)
    sigma = float(rng.uniform(0.0, 1.0)) if blur_sigma is None else float(blur_sigma)
    if sigma > 0.05:
        image = ndimage.gaussian_filter(image, sigma, mode="nearest")
    if bias_coeff > 0:
        image = image * _bias_field(label.shape, rng, float(rng.uniform(0.0, bias_coeff)))
    image = np.clip(image, 0.0, None)
    g = float(np.exp(rng.normal(0.0, 0.1))) if gamma is None else float(gamma)
    if abs(g - 1.0) > 1e-6:
        image = image**g
    noise = float(rng.uniform(0.0, 0.03)) if noise_std is None else float(noise_std)
    if noise > 0:
        image = np.abs(image + rng.normal(0.0, noise, label.shape).astype(np.float32))
    if skull_stripped:
        image[(label == 0) | (label >= EXTRA_CEREBRAL)] = 0.0
    return image.astype(np.float32)


# --------------------------------------------------------------------------- patches


def _bbox(mask: np.ndarray) -> np.ndarray:
    lo, hi = [], []
    for axis in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        lo.append(int(hit[0]) if hit.size else 0)
        hi.append(int(hit[-1]) if hit.size else mask.shape[axis] - 1)
    return np.array([lo, hi])


def case_regions(volume: np.ndarray, labelled: bool, samples: int = 4096, seed: int = 0):
    """``(head box (2, 3), tissue voxels (N, 3), label values)`` of a case.

    Label maps: head = labels > 0, tissue = GM/WM voxels; images (0-1 normalised): head = > 0.05,
    tissue = > 0.2.  ``samples`` tissue voxels are kept (patch centres are drawn from them).
    """
    if labelled:
        head_mask, tissue = volume > 0, tissue_classes(volume) > 0
        values = [int(v) for v in np.unique(volume)]
    else:
        head_mask, tissue, values = volume > 0.05, volume > 0.2, []
    points = np.argwhere(tissue)
    if len(points) == 0:
        points = np.array([[n // 2 for n in volume.shape]])
    rng = np.random.RandomState(seed)
    points = points[rng.choice(len(points), min(samples, len(points)), replace=False)]
    return _bbox(head_mask), points, values


def _boxes(label: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Head box (labels > 0), brain box (0 < labels < 500) as ``(2, 3)`` [lo, hi] and the label values."""
    return _bbox(label > 0), _bbox((label > 0) & (label < EXTRA_CEREBRAL)), [int(v) for v in np.unique(label)]


def _points_after(points: np.ndarray, shape, order, flips) -> np.ndarray:
    out = points[:, order].copy()
    for t, flip in enumerate(flips):
        if flip:
            out[:, t] = shape[order[t]] - 1 - out[:, t]
    return out


def _box_after(box: np.ndarray, shape, order, flips) -> np.ndarray:
    out = box[:, order].copy()
    for t, flip in enumerate(flips):
        if flip:
            n = shape[order[t]]
            out[:, t] = [n - 1 - out[1, t], n - 1 - out[0, t]]
    return out


def crop_padded(array: np.ndarray, start: Sequence[int], size: Sequence[int], fill=0) -> np.ndarray:
    """``array[..., start:start+size]`` over the last three axes, zero (``fill``) outside the array."""
    lead = array.shape[:-3]
    out = np.full(lead + tuple(int(s) for s in size), fill, dtype=array.dtype)
    src, dst = [slice(None)] * len(lead), [slice(None)] * len(lead)
    for axis, (a, s) in enumerate(zip(start, size)):
        n = array.shape[len(lead) + axis]
        lo, hi = max(int(a), 0), min(int(a) + int(s), n)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - int(a), hi - int(a)))
    out[tuple(dst)] = array[tuple(src)]
    return out


class RealisticPatchd(Randomizable, MapTransform):
    """A training sample from a label-map case (synthetic image) or a T1 case (real image, no label).

    Output keys: ``image`` (1, X, Y, Z) float32, ``label`` (1, X, Y, Z) tissue classes (uint8),
    ``seg_weight`` (1.0 for label-map cases, 0.0 for image cases: segmentation loss masked out).
    Steps: random voxel-axis permutation/flips (``orientation_prob``) -> patch centre in the brain,
    at the head border (``border_prob``) or anywhere in the padded field of view
    (``background_prob``) -> crop with margin -> affine/elastic deformation (``affine_prob``,
    ``elastic_prob``; nearest for labels, linear for images) -> synthesis (skull-stripped with
    ``skull_strip_prob``, else whole head) -> ``tissue_classes``.
    """

    def __init__(self, patch_size: Sequence[int], orientation_prob: float = 0.5, skull_strip_prob: float = 0.5,
                 affine_prob: float = 0.3, elastic_prob: float = 0.3, max_rotation_degrees: float = 15.0,
                 scale_range: tuple[float, float] = (0.9, 1.1), elastic_voxels: float = 3.0,
                 border_prob: float = 0.2, background_prob: float = 0.1, min_contrast: float = 0.1,
                 bias_coeff: float = 0.1, sequence_prob: float = 0.5):
        super().__init__(["label", "image"], allow_missing_keys=True)
        self.patch_size = [int(s) for s in patch_size]
        self.orientation_prob, self.skull_strip_prob = float(orientation_prob), float(skull_strip_prob)
        self.affine_prob, self.elastic_prob = float(affine_prob), float(elastic_prob)
        self.max_rotation = math.radians(max_rotation_degrees)
        self.scale_range, self.elastic_voxels = scale_range, float(elastic_voxels)
        self.border_prob, self.background_prob = float(border_prob), float(background_prob)
        self.min_contrast, self.bias_coeff, self.sequence_prob = float(min_contrast), float(bias_coeff), sequence_prob
        self._info: dict[str, tuple] = {}
        self.last: dict = {}  # what the last call drew (for tests and inspection)

    def randomize(self, data=None) -> None:  # every draw happens in __call__, from self.R
        return None

    def _case_info(self, key: str, volume: np.ndarray, labelled: bool) -> tuple:
        if key not in self._info:
            self._info[key] = case_regions(volume, labelled)
        return self._info[key]

    def _centre(self, shape, head: np.ndarray, tissue: np.ndarray) -> np.ndarray:
        u, half = self.R.rand(), np.array(self.patch_size) / 2
        if u < self.background_prob:
            return np.array([self.R.uniform(-h / 2, n + h / 2) for n, h in zip(shape, half)])
        if u < self.background_prob + self.border_prob:
            centre = np.array([self.R.uniform(lo, hi) for lo, hi in head.T], float)
            axis, side = int(self.R.randint(3)), int(self.R.randint(2))
            centre[axis] = head[side, axis] + self.R.uniform(-half[axis] / 2, half[axis] / 2)
            return centre
        return tissue[self.R.randint(len(tissue))].astype(float) + self.R.uniform(-0.5, 0.5, 3)

    def _coordinates(self) -> np.ndarray | None:
        """Sampling offsets ``(3, X, Y, Z)`` from the patch centre, or None (plain crop)."""
        affine, elastic = self.R.rand() < self.affine_prob, self.R.rand() < self.elastic_prob
        if not (affine or elastic):
            return None
        size = self.patch_size
        grid = np.stack(np.meshgrid(*[np.arange(s) - (s - 1) / 2 for s in size], indexing="ij")).astype(np.float32)
        if affine:
            angles = self.R.uniform(-self.max_rotation, self.max_rotation, 3)
            matrix = np.eye(3)
            for axis, angle in enumerate(angles):
                a, b = [i for i in range(3) if i != axis]
                rot = np.eye(3)
                rot[a, a] = rot[b, b] = math.cos(angle)
                rot[a, b], rot[b, a] = -math.sin(angle), math.sin(angle)
                matrix = rot @ matrix
            matrix = matrix @ np.diag(self.R.uniform(*self.scale_range, 3))
            grid = np.einsum("ij,j...->i...", matrix.astype(np.float32), grid)
        if elastic:
            amplitude = self.R.uniform(0, self.elastic_voxels)
            coarse = self.R.normal(0.0, amplitude / 2, (3, 5, 5, 5))
            grid = grid + smooth_upsample(coarse, size)
        return grid

    def __call__(self, data):
        d = dict(data)
        labelled = d.get("kind", "labelmap") == "labelmap"
        source = to_numpy(d["label"] if labelled else d["image"])
        volume = source[0]
        key = str(d.get("id", id(source)))
        head, tissue, values = self._case_info(key, volume, labelled)
        order, flips = [0, 1, 2], [False, False, False]
        if self.R.rand() < self.orientation_prob:
            order, flips = random_axes(self.R)
        view = apply_axes(volume, order, flips)
        head, tissue = _box_after(head, volume.shape, order, flips), _points_after(tissue, volume.shape, order, flips)
        centre = self._centre(view.shape, head, tissue)
        offsets = self._coordinates()
        size = np.array(self.patch_size)
        if offsets is None:
            start = np.floor(centre - (size - 1) / 2 + 0.5).astype(int)
            patch = crop_padded(view, start, size)
        else:
            coords = offsets + centre.reshape(3, 1, 1, 1).astype(np.float32)
            lo = np.floor(coords.reshape(3, -1).min(1)).astype(int) - 1
            hi = np.ceil(coords.reshape(3, -1).max(1)).astype(int) + 2
            block = crop_padded(view, lo, hi - lo)
            shifted = coords - lo.reshape(3, 1, 1, 1)
            patch = ndimage.map_coordinates(block, shifted, order=0 if labelled else 1, mode="constant", cval=0)
        skull_stripped = bool(self.R.rand() < self.skull_strip_prob)
        if labelled:
            label = patch.astype(np.int64)
            contrast = draw_contrast(values, self.R, sequence_prob=self.sequence_prob,
                                     min_contrast=self.min_contrast, skull_stripped=skull_stripped)
            image = synthesize_image(label, self.R, contrast, skull_stripped, bias_coeff=self.bias_coeff)
            target = tissue_classes(label)
            self.last = {"order": order, "flips": flips, "centre": centre, "skull_stripped": skull_stripped,
                         "contrast": contrast, "label_patch": label, "deformed": offsets is not None}
        else:
            image, target = patch.astype(np.float32), np.zeros(patch.shape, np.uint8)
            self.last = {"order": order, "flips": flips, "centre": centre, "deformed": offsets is not None}
        d["image"] = torch.from_numpy(np.ascontiguousarray(image[None], dtype=np.float32))
        d["label"] = torch.from_numpy(np.ascontiguousarray(target[None].astype(np.uint8)))
        d["seg_weight"] = torch.tensor(1.0 if labelled else 0.0)
        d.pop("probs", None)
        return d


class RealisticValidationd(MapTransform):
    """Deterministic validation sample of a label-map case: a fixed contrast (``sequence`` per case,
    T1/T2 alternating by subject number), skull-stripped, centred on the brain box, ``size`` voxels."""

    def __init__(self, size: Sequence[int] | None, seed: int = 0):
        super().__init__(["label"])
        self.size, self.seed = (None if size is None else [int(s) for s in size]), int(seed)

    def __call__(self, data):
        d = dict(data)
        if d.get("kind") != "labelmap":
            return d
        label = to_numpy(d["label"])[0].astype(np.int64)
        _, brain, values = _boxes(label)
        subject = int(re.sub(r"\D", "", str(d.get("id"))) or 0)
        rng = np.random.RandomState(self.seed + subject)
        if self.size is not None:
            centre = (brain[0] + brain[1]) / 2
            start = np.floor(centre - (np.array(self.size) - 1) / 2).astype(int)
            label = crop_padded(label, start, self.size)
        contrast = draw_contrast(values, rng, sequence="T1" if subject % 2 else "T2", min_contrast=0.15)
        image = synthesize_image(label, rng, contrast, True, blur_sigma=0.5, bias_coeff=0.0, noise_std=0.01,
                                 gamma=1.0)
        d["image"] = torch.from_numpy(image[None])
        d["label"] = torch.from_numpy(tissue_classes(label)[None])
        return d


__all__ = [
    "PREFIX",
    "RealisticPatchd",
    "RealisticSpec",
    "RealisticValidationd",
    "apply_axes",
    "case_regions",
    "check_subjects",
    "crop_padded",
    "draw_contrast",
    "is_realistic_root",
    "parse_realistic_root",
    "parse_subjects",
    "random_axes",
    "ras_permutation",
    "realistic_cases",
    "reorient_to_ras",
    "synthesize_image",
]
