"""Classical GM/WM segmentation of a volume on its own grid: ANTs Atropos (optional extra ``atropos``).

The peer every segmentation package must beat (``--model atropos`` / ``--seg-model atropos``).
Steps, all on the input grid with its exact spacing, origin and direction:

1. **Brain mask**: by default learned (:mod:`JointSRSegLib.brain_extraction`, made exact at the input's
   resolution by :func:`refine_learned_mask`: whole heads cut at the card's probability, chosen on
   validation maps, skull-stripped inputs the foreground near the 0.5 mask); without its weights, for a
   field of view too small to be a head, or with ``mask_method="classical"``, the rules of
   :func:`brain_mask`, from the image alone, classical and deterministic.  The *head*:
   the image smoothed by a 0.5 mm Gaussian, thresholded a quarter of the way from the background level
   to the foreground median (both from Otsu's split) -- this works for zero and for noisy backgrounds;
   largest component, holes filled.  The *dark gap*: voxels below the lowest of three Otsu thresholds
   inside the head -- the skull in every MR contrast (and CSF in T1 and FLAIR).  The *brain*: the head
   without the dark gap, eroded by ``erosion_mm`` (6 mm) so the brain comes apart from scalp, face and
   neck; of the components at least a quarter of the largest, the one highest in the head (largest mean
   physical superior coordinate, from the grid's direction: the neck and face muscles lie below the
   brain); grown back by ``1.5 x erosion_mm`` inside the not-dark head, largest component, grown by 2 mm
   inside the head (the partial-volume edge), holes filled; then cut at the brain's half-maximum
   (half-way from the background to the brain's median), largest component, holes filled (ventricles,
   sulci) -- partial-volume voxels at the edge would otherwise form a class of their own.  Distances
   are Euclidean in millimetres (anisotropic voxels included).  The growth is not larger because a thin
   (3 mm) skull then lets the scalp back in; on a skull-stripped image the erosion and growth would be an
   opening that cuts the tips of gyri off (GM Dice 0.807 -> 0.771 on the real-anatomy T1 x4 phantom), so
   when less than a fifth of the brain's volume lies in the head more than 4 mm outside the brain
   (skull-stripped), the brain is the foreground opened by 4 mm instead (the mask before the dark gap).
2. **N4** bias correction inside the mask (``n4=True``; off by default: see the README's measurement).
3. **Template priors** (``priors="template"``, the default; :func:`template_priors`): the shipped MNI152
   brain (``Resources/SampleData``: T1 and its GM/WM probability maps) registered to the masked image by
   ANTs, affine then SyN, Mattes mutual information (any MR contrast), on a 2.5 mm copy (about 25 s on
   2 threads); its GM/WM maps (CSF = the rest of the mask) warped onto the image grid.  The mean image
   intensity under each prior gives the contrast before any clustering.  Where CSF is darkest (T1- and
   FLAIR-like, the template's own order) Atropos is initialised from the priors and weighs them by
   ``prior_weight`` (0.25, the weight of ANTs' brain-segmentation pipeline); elsewhere (T2/PD-like:
   bright CSF; the weighted run lost grey matter there, subject-19 T2 GM 0.801 -> 0.704) it runs k-means
   and the priors only say which class is which (:func:`_match_priors`).  Measured at x4 from B-spline on
   the report's subjects (never trained on), mean GM/WM Dice k-means -> template: s19 T1 stripped 0.821 ->
   0.850, s20 T1 stripped 0.837 -> 0.854, s20 FLAIR stripped 0.173 -> 0.805 (k-means took it for T1),
   s19 T2 stripped 0.827 -> 0.827, s19 T1 whole head 0.478 -> 0.590, s20 PD whole head 0.080 -> 0.676.
   When the registered template brain overlaps the brain mask by less than ``MIN_TEMPLATE_OVERLAP``
   (Dice), the registration is taken as failed and step 4 runs alone; so it does, unregistered, on a brain
   mask under ``MIN_TEMPLATE_BRAIN_ML`` (a partial field of view); the report says which path ran.
4. **Atropos** without priors (``priors="none"`` or a failed registration): k-means initialised, 3 classes,
   MRF ``[0.1,1x1x1]``, inside the mask.  **Which class is which** -- detected, not assumed
   (:func:`assign_tissues`).  Grey matter is the
   middle class by intensity in T1 (CSF<GM<WM), T2 and PD (WM<GM<CSF).  Of the two extreme classes,
   white matter is the one with the larger *summed* distance to the mask boundary: it is both large
   and deep, while CSF is either shallow (sulci, the outer rim, edge partial volume) or small (the
   ventricles, when the mask leaves the outer CSF out).  The
   report says which was found: ``T1-like`` (WM brightest) or ``T2-like`` (WM darkest).  An intensity
   rule (CSF = the extreme class farther from the middle one) was tried and failed on x4 thick slices,
   where blurred CSF moves towards GM.  FLAIR (CSF<WM<GM, GM not in the middle) is not handled: the
   rule "WM = the deepest of all three classes, GM = the brightest when WM is the middle one" was tried
   and turned every T2 phantom into FLAIR (its GM shell outweighs the WM core in summed depth).

Output: uint8 labels 0 background (and CSF), 1 grey matter, 2 white matter
(:mod:`JointSRSegLib.tissue_classes`), and optionally the uncertainty: the calibrated probability that a
voxel's label is wrong (:mod:`JointSRSegLib.calibration`: posterior, label disagreement, closeness to a
boundary and to the mask edge, combined by a logistic model fitted on calibration cases).
Determinism: Atropos runs with a constant seed (``-r 0``) and the registration with ``--random-seed``;
the k-means path gives the same labels bit for bit.  The registered-template path does not:
antsRegistration's multi-threaded metric differs run to run (the same small brain twice: Dice 0.975 on
2 threads, 0.996 on 1; ITK's Platform threader 0.986), and so do copies of a scan in other voxel
orders (0.96-0.98) -- the report's orientation agreement (0.975-0.98) is that, not the geometry.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .errors import InputError
from .foreground import largest_component
from .tissue_classes import BACKGROUND, GREY_MATTER, WHITE_MATTER
from .volume import Volume

INSTALL_HINT = "pip install antspyx (or pip install 'jointsrseg[atropos]')"
DEFAULT_MRF = "[0.1,1x1x1]"
DEFAULT_ITERATIONS = 5
DEFAULT_EROSION_MM = 6.0
DARK_THRESHOLDS = 3  # Otsu thresholds inside the head; below the lowest: skull, air cells, (T1) CSF
BRAIN_MIN_COMPONENT_FRACTION = 0.25
EDGE_MM = 2.0
# Growth of the eroded brain core (x erosion): 2 re-attached a 3 mm-skull phantom's scalp, 1 lost 12 % of
# a real-anatomy brain's GM/WM (gyri beyond the core); 1.5 loses 4.7 % (JointSRSegLib docs, atropos).
REACH_FACTOR = 1.5
# Skull-stripped input: less head than STRIPPED_FRACTION of the brain lies over STRIPPED_MARGIN_MM outside it;
# then the foreground, opened by STRIPPED_EROSION_MM, is the brain (the mask before the dark gap).
STRIPPED_MARGIN_MM = 4.0
# 0.2, not 0.1: a sharper SR (self-SR of subject-19 T1 stripped, +4 dB) darkens the sulcal CSF, the dark-gap
# core loses cortex and the ratio rose to 0.133 -- taken for a whole head, 25 % of the brain was cut (Atropos
# Dice 0.852 on B-spline, 0.798 on the sharper SR).  Measured ratios: skull-stripped 0.000-0.133 (synthetic
# s19/s20 T1/FLAIR, MNI, self-SR), real whole heads 0.30-1.51 (ds000011 T1 1.2-1.5, 5 mm T2 0.30-0.34,
# clinical 5.5 mm T2 0.57).
STRIPPED_FRACTION = 0.2
STRIPPED_EROSION_MM = 4.0
LEARNED_REACH_MM = 6.0  # skull-stripped input: the foreground this near the learned mask is brain
# ... or the dark class is a deep, mid-grey tissue, not a skull shell: its median depth in the head over
# DEEP_DARK_RATIO x the head's median depth and its mean over DEEP_DARK_LEVEL of the way from the background
# to the head's median.  That is white matter of a skull-stripped T2/PD brain (subject-19 T2: 1.42 / 0.68);
# skull and T1 CSF are shallow or near the background (real and synthetic heads: <= 0.88 / <= 0.56, the
# skull phantom of the tests 1.18 / 0.22).  Without this rule the T2 brain's white matter was cut out as
# "skull" (atropos Dice 0.077 on the subject-19 T2 stripped case at x4).
DEEP_DARK_RATIO = 1.15
DEEP_DARK_LEVEL = 0.6
RANDOM_SEED = "19650218"
TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "Resources" / "SampleData"
TEMPLATE_FILES = {"t1": "MNI152_T1_1mm.nii.gz", "gm": "MNI152_gm_prob_1mm.nii.gz", "wm": "MNI152_wm_prob_1mm.nii.gz"}
TEMPLATE_PROBABILITY_SCALE = 255.0  # the probability maps are stored as uint8 = 255 p
PRIOR_MODES = ("template", "none")
# Brain mask: "learned" (JointSRSegLib.brain_extraction, when its weights are installed -- the default) or
# "classical" (brain_mask below).
MASK_MODES = ("learned", "classical")
DEFAULT_MASK = "learned"
DEFAULT_PRIORS = "template"
DEFAULT_PRIOR_WEIGHT = 0.25
REGISTRATION_SPACING_MM = 2.5
# Affine: iterations per level (shrink 4, 2, 1 of the 2.5 mm copy); SyN: iterations per level.  SyN (60, 30, 0)
# gave 0.850 mean Dice, (100, 70, 30) 0.861 (24 s) on the subject-19 T1 stripped case.
AFFINE_ITERATIONS = (500, 300, 100)
SYN_ITERATIONS = (100, 70, 30)
MIN_TEMPLATE_OVERLAP = 0.6
# The template is a whole brain (~1500 mL inside the mask; adult brains here 1000+): registered onto a partial
# field of view it is squeezed into it and its priors mislead.  A 64 mm block of the sample (175 mL) got GM /
# WM Dice 0.45-0.63 / 0.67-0.72 through the template (overlap 0.72, run to run) and 0.73 / 0.86 by k-means.
MIN_TEMPLATE_BRAIN_ML = 700.0
CT_AIR_HU = (-1100.0, -900.0)  # air in a CT's Hounsfield units
CT_AIR_FRACTION = 0.02  # the abdominal CT examples: 31-32 % of the voxels; no MR has any there
SMOOTHING_MM = 0.5
FOREGROUND_FRACTION = 0.25


@dataclass
class TissueSegmentation:
    labels: np.ndarray  # (I, J, K) uint8: 0 background / CSF, 1 GM, 2 WM
    uncertainty: np.ndarray | None  # (I, J, K) float32 in [0, 1]: calibrated P(label wrong)
    report: dict = field(default_factory=dict)
    signals: np.ndarray | None = None  # (F, I, J, K) raw calibration signals (``signals=True``)


def import_ants():
    """The ``ants`` module, or one clear :class:`InputError` naming the package to install."""
    try:
        import ants
    except ImportError:
        problem = f"needs the optional package antspyx, which is not installed: {INSTALL_HINT}"
        raise InputError("atropos", problem) from None
    return ants


def _smooth(array: np.ndarray, spacing, sigma_mm: float) -> np.ndarray:
    return ndimage.gaussian_filter(array, sigma=[sigma_mm / s for s in spacing], mode="nearest")


def _otsu(values: np.ndarray, thresholds: int = 1) -> list[float]:
    image = sitk.GetImageFromArray(values.astype(np.float32).reshape(1, 1, -1))
    f = sitk.OtsuMultipleThresholdsImageFilter()
    f.SetNumberOfThresholds(thresholds)
    f.SetNumberOfHistogramBins(256)
    f.Execute(image)
    return sorted(float(t) for t in f.GetThresholds())


def _erode(mask: np.ndarray, spacing, mm: float) -> np.ndarray:
    return ndimage.distance_transform_edt(mask, sampling=spacing) > mm


def _dilate(mask: np.ndarray, spacing, mm: float) -> np.ndarray:
    return ndimage.distance_transform_edt(~mask, sampling=spacing) <= mm


def _background_level(smooth: np.ndarray) -> tuple[float, float]:
    """The background level (mean below Otsu's split) and the foreground median (above it)."""
    split = _otsu(smooth)[0]
    return float(np.mean(smooth[smooth < split])), float(np.median(smooth[smooth >= split]))


def _head_of(smooth: np.ndarray, background: float, level: float) -> np.ndarray:
    """Voxels a quarter of the way from the background to the foreground median, largest component, filled."""
    foreground = smooth > background + FOREGROUND_FRACTION * (level - background)
    return ndimage.binary_fill_holes(largest_component(foreground))


def head_mask(array: np.ndarray, spacing) -> np.ndarray:
    """Everything that is not background (zero or noisy), largest component, holes filled."""
    smooth = _smooth(array.astype(np.float32), spacing, SMOOTHING_MM)
    return _head_of(smooth, *_background_level(smooth))


def _superior_component(core: np.ndarray, grid, min_fraction: float = BRAIN_MIN_COMPONENT_FRACTION) -> np.ndarray:
    """Of the components at least ``min_fraction`` of the largest, the one highest in the head (largest mean
    physical superior coordinate): the brain, not the neck or face muscles below it."""
    labels, n = ndimage.label(core)
    if n <= 1:
        return core.astype(bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    big = np.flatnonzero(sizes >= min_fraction * sizes.max())
    direction = np.asarray(grid.direction_matrix, dtype=float)
    step = direction[2] * np.asarray(grid.spacing, dtype=float)  # LPS z (superior) per voxel step, per axis
    shape = core.shape
    superior = sum(step[a] * np.arange(shape[a]).reshape([-1 if b == a else 1 for b in range(3)]) for a in range(3))
    height = ndimage.mean(np.broadcast_to(superior, shape), labels, big)
    return labels == big[int(np.argmax(height))]


def _dark_is_deep_tissue(smooth: np.ndarray, head: np.ndarray, bright: np.ndarray, spacing, background: float) -> bool:
    """True when the dark class is deep, mid-grey brain tissue rather than a skull shell (``DEEP_DARK_RATIO``)."""
    dark = head & ~bright
    if not dark.any():
        return False
    depth = ndimage.distance_transform_edt(head, sampling=spacing)
    median = float(np.median(smooth[head]))
    level = (float(smooth[dark].mean()) - background) / max(median - background, 1e-6)
    deep = float(np.median(depth[dark])) > DEEP_DARK_RATIO * float(np.median(depth[head]))
    return deep and level > DEEP_DARK_LEVEL


def brain_mask(
    array: np.ndarray,
    spacing,
    erosion_mm: float = DEFAULT_EROSION_MM,
    grid=None,
    reach_mm: float | None = None,
) -> np.ndarray:
    """The brain without skull, scalp and neck, cut at the brain's half-maximum (module docstring, step 1).

    ``grid`` (the volume's :class:`~JointSRSegLib.volume.Grid`) says which way is up; without it the
    largest component is kept.  ``reach_mm`` (default ``1.5 * erosion_mm``): how far beyond the eroded
    core the brain is grown back.
    """
    spacing = tuple(float(s) for s in spacing)
    reach = REACH_FACTOR * erosion_mm if reach_mm is None else float(reach_mm)
    smooth = _smooth(array.astype(np.float32), spacing, SMOOTHING_MM)
    background, level = _background_level(smooth)
    foreground = smooth > background + FOREGROUND_FRACTION * (level - background)  # also the stripped branch's
    head = _head_of(smooth, background, level)
    dark = _otsu(smooth[head], DARK_THRESHOLDS)[0]  # skull (and T1/FLAIR CSF): dark in every MR contrast
    bright = head & (smooth > dark)
    dark_is_tissue = _dark_is_deep_tissue(smooth, head, bright, spacing, background)
    core = _erode(bright, spacing, erosion_mm)
    if not core.any():  # too thin to erode: the largest bright component
        core = bright if bright.any() else head
    seed = _superior_component(core, grid) if grid is not None else largest_component(core)
    brain = largest_component(_dilate(seed, spacing, reach) & bright)
    brain = ndimage.binary_fill_holes(_dilate(brain, spacing, EDGE_MM) & head)  # partial-volume edge back
    beyond = head & ~_dilate(brain, spacing, STRIPPED_MARGIN_MM)
    if dark_is_tissue or np.count_nonzero(beyond) < STRIPPED_FRACTION * np.count_nonzero(brain):
        # skull-stripped: nothing but CSF around the brain -- no opening, which would cut gyri off
        core = _erode(foreground, spacing, STRIPPED_EROSION_MM)
        seed = largest_component(core) if core.any() else largest_component(foreground)
        brain = ndimage.binary_fill_holes(_dilate(seed, spacing, STRIPPED_EROSION_MM) & foreground)
    return _half_maximum_cut(smooth, background, brain)


def refine_learned_mask(array: np.ndarray, spacing, probability: np.ndarray, cut: float) -> np.ndarray | None:
    """The learned brain mask (:mod:`JointSRSegLib.brain_extraction`'s ``probability``, a 3 mm view) made exact
    at the input's resolution; None when it holds no brain.  Skull-stripped input (less of the head than
    ``STRIPPED_FRACTION`` of the inclusive mask, cut at 0.5, lies over ``STRIPPED_MARGIN_MM`` outside it): the
    brain is the foreground near that mask -- the coarse view lost the cortical rim there (subject-20 T1 kept
    91 % of GM/WM); whole head: the mask cut at ``cut`` (the card's: the 0.5 level lies on the skull / CSF
    rim).  Then the half-maximum cut (:func:`_half_maximum_cut`; kept whole if the cut leaves nothing)."""
    from .brain_extraction import THRESHOLD, mask_from_probability

    spacing = tuple(float(s) for s in spacing)
    inclusive = mask_from_probability(probability, spacing, THRESHOLD)
    if inclusive is None:
        return None
    smooth = _smooth(array.astype(np.float32), spacing, SMOOTHING_MM)
    background, level = _background_level(smooth)
    head = _head_of(smooth, background, level)
    beyond = head & ~_dilate(inclusive, spacing, STRIPPED_MARGIN_MM)
    if np.count_nonzero(beyond) < STRIPPED_FRACTION * np.count_nonzero(inclusive):
        learned = ndimage.binary_fill_holes(largest_component(head & _dilate(inclusive, spacing, LEARNED_REACH_MM)))
    else:
        tight = mask_from_probability(probability, spacing, max(cut, THRESHOLD))
        learned = tight if tight is not None else inclusive
    cut_mask = _half_maximum_cut(smooth, background, learned)
    return cut_mask if cut_mask.any() else learned


def learned_mask(volume: Volume) -> np.ndarray | None:
    """The brain mask Atropos uses by default: the network's probability made exact by
    :func:`refine_learned_mask`; None without weights, for a field of view too small to be a head, or when
    no brain is found (then the classical rules).  A network mask larger than any brain (an abdomen)
    is refused (:func:`_check_brain_size`)."""
    from .brain_extraction import brain_probability, threshold

    probability = brain_probability(volume)
    if probability is None:
        return None
    _check_brain_size(volume, probability)
    return refine_learned_mask(volume.array[0], volume.spacing, probability, threshold())


def check_brain_present(volume: Volume) -> None:
    """:func:`_check_brain_size` on the input itself, so that an abdomen is refused before minutes
    of SR work (the segmentation checks its own input again); nothing without the weights."""
    from .brain_extraction import brain_probability

    probability = brain_probability(volume)
    if probability is not None:
        _check_brain_size(volume, probability)


def check_brain_mr(volume: Volume) -> None:
    """Refuse what no grey/white-matter segmenter should label -- a CT (:func:`check_mr_intensities`), an MR
    whose "brain" is larger than any adult brain (:func:`check_brain_present`) -- whichever segmenter follows."""
    check_mr_intensities(volume.array[0], volume.source)
    check_brain_present(volume)


def _check_brain_size(volume: Volume, probability: np.ndarray) -> None:
    """The size check of :func:`JointSRSegLib.brain_extraction.check_brain_shape` on the network's own mask
    (cut at the card's threshold), not on the refined one: the refinement grows a skull-stripped-looking mask
    to the foreground near it (a neck's 120 x 107 mm became 138 x 125 mm), so it would measure a brain too big."""
    from .brain_extraction import check_brain_shape, mask_from_probability, threshold

    mask = mask_from_probability(probability, volume.spacing, threshold())
    if mask is not None:
        check_brain_shape(mask, volume.grid, volume.source)


def _half_maximum_cut(smooth: np.ndarray, background: float, brain: np.ndarray) -> np.ndarray:
    """``brain`` without its edge voxels darker than half-way from the background to the brain's median
    (partial volume with air or skull, which would form an Atropos class of their own), holes filled."""
    edge = background + 0.5 * (float(np.median(smooth[brain])) - background)
    return ndimage.binary_fill_holes(largest_component(brain & (smooth > edge)))


def assign_tissues(classes: np.ndarray, means: np.ndarray, mask: np.ndarray, spacing) -> tuple[dict[int, int], str]:
    """Map Atropos class values (1..3, any order) to tissue labels; returns the map and the contrast.

    GM = the middle class by intensity; WM = the extreme class with the larger summed distance to the
    mask boundary (large and deep), CSF = the other one (module docstring, step 4).
    """
    order = [int(c) for c in np.argsort(means) + 1]  # class values, darkest first
    depth = ndimage.distance_transform_edt(mask, sampling=spacing)
    extremes = (order[0], order[-1])
    total_depth = {c: float(depth[classes == c].sum()) for c in extremes}
    wm = max(extremes, key=lambda c: total_depth[c])
    csf = extremes[1] if wm == extremes[0] else extremes[0]
    contrast = "T1-like" if wm == order[-1] else "T2-like"
    return {csf: BACKGROUND, order[1]: GREY_MATTER, wm: WHITE_MATTER}, contrast


def template_priors(image, mask: np.ndarray, ants) -> tuple[np.ndarray, np.ndarray, float] | None:
    """The MNI152 GM and WM probability maps registered onto ``image`` (an ANTs image on the volume's grid),
    and the Dice of the registered template brain with ``mask``; None when the template is not installed."""
    paths = {key: TEMPLATE_DIR / name for key, name in TEMPLATE_FILES.items()}
    if not all(path.is_file() for path in paths.values()):
        return None
    template = ants.image_read(str(paths["t1"]))
    fixed = image * ants.from_numpy(mask.astype(np.float32), origin=image.origin, spacing=image.spacing,
                                    direction=image.direction)
    fixed = ants.resample_image(fixed, (REGISTRATION_SPACING_MM,) * 3, use_voxels=False, interp_type=0)
    registration = ants.registration(
        fixed, template, type_of_transform="SyN", aff_metric="mattes", syn_metric="mattes",
        aff_iterations=AFFINE_ITERATIONS, aff_shrink_factors=(4, 2, 1), aff_smoothing_sigmas=(2, 1, 0),
        reg_iterations=SYN_ITERATIONS,
    )
    warped = []
    for key in ("gm", "wm"):
        probability = ants.image_read(str(paths[key])) / TEMPLATE_PROBABILITY_SCALE
        moved = ants.apply_transforms(image, probability, registration["fwdtransforms"], interpolator="linear")
        warped.append(np.clip(moved.numpy(), 0.0, 1.0).astype(np.float32))
    for path in {*registration["fwdtransforms"], *registration["invtransforms"]}:
        Path(path).unlink(missing_ok=True)  # ANTs leaves its transforms in the temp folder
    brain = (warped[0] + warped[1]) > 0.5
    overlap = 2.0 * float((brain & mask).sum()) / max(float(brain.sum() + mask.sum()), 1.0)
    return warped[0], warped[1], overlap


def ants_geometry(volume: Volume) -> dict:
    """``origin`` / ``spacing`` / ``direction`` for ANTs images of ``volume``, rounded to float32.

    ANTsPy hands the priors to Atropos as NIfTI files (float32 geometry), and ITK refuses to add them to the
    in-memory image when the origins differ by more than 1e-6 of a voxel -- a real 0.87 mm scan failed so.
    The labels go back onto the input's exact grid; ANTs' geometry only places the template.
    """
    return {"origin": [float(np.float32(v)) for v in volume.origin],
            "spacing": [float(np.float32(v)) for v in volume.spacing],
            "direction": np.asarray(volume.direction, dtype=np.float32).astype(np.float64)}


def _prior_means(image: np.ndarray, prior_stack: np.ndarray) -> dict[str, float]:
    """Mean intensity under each registered prior (CSF, GM, WM): the contrast, before any clustering."""
    weights = prior_stack.reshape(3, -1)
    values = image.reshape(-1)
    return {name: float(weights[k] @ values / max(float(weights[k].sum()), 1e-6))
            for k, name in enumerate(("csf", "gm", "wm"))}


def _match_priors(classes: np.ndarray, prior_stack: np.ndarray) -> dict[int, int]:
    """k-means classes 1..3 -> tissue: the one-to-one assignment with the largest summed mean prior."""
    from itertools import permutations

    score = np.array([[float(prior_stack[t][classes == c].mean()) if (classes == c).any() else 0.0
                       for t in range(3)] for c in (1, 2, 3)])
    best = max(permutations(range(3)), key=lambda order: sum(score[c, order[c]] for c in range(3)))
    tissues = (BACKGROUND, GREY_MATTER, WHITE_MATTER)
    return {c + 1: tissues[best[c]] for c in range(3)}


def contrast_name(means: dict[str, float]) -> str:
    """The contrast the tissue means show: ``T1-like`` (WM brightest), ``T2-like`` (WM darkest, CSF brightest),
    ``FLAIR-like`` (GM brightest, CSF darkest), else ``other``."""
    order = sorted(means, key=means.get)  # darkest first
    return {("csf", "gm", "wm"): "T1-like", ("wm", "gm", "csf"): "T2-like",
            ("csf", "wm", "gm"): "FLAIR-like"}.get(tuple(order), "other")


def check_mr_intensities(array: np.ndarray, source) -> None:
    """Refuse CT: grey/white matter are brain-MR classes, and on a CT the learned mask still finds a
    "brain" (an abdominal CT: 2 L, 1.1 L of it called grey matter).  CT is recognised by its air in
    Hounsfield units: a share of the voxels at -1000 HU, where no MR intensity lies."""
    air = np.count_nonzero((array >= CT_AIR_HU[0]) & (array <= CT_AIR_HU[1])) / max(array.size, 1)
    if air >= CT_AIR_FRACTION:
        raise InputError(source, f"looks like CT ({air:.0%} of the voxels at air's -1000 HU); the tissue "
                                 "segmentation (grey/white matter) is for brain MR only")


def segment_tissues(
    volume: Volume,
    n4: bool = False,
    mrf: str = DEFAULT_MRF,
    iterations: int = DEFAULT_ITERATIONS,
    erosion_mm: float = DEFAULT_EROSION_MM,
    threads: int | None = None,
    uncertainty: bool = False,
    priors: str = DEFAULT_PRIORS,
    prior_weight: float = DEFAULT_PRIOR_WEIGHT,
    signals: bool = False,
    slab: tuple[int, int, str] | None = None,
    mask_method: str = DEFAULT_MASK,
) -> TissueSegmentation:
    """GM/WM labels of a single-channel ``volume`` on its own grid (module docstring).

    ``uncertainty``: also the calibrated P(label wrong); ``signals``: also its raw inputs
    (:func:`JointSRSegLib.calibration.seg_features`), for fitting the calibration; ``slab``:
    ``(axis, factor, protocol)`` when ``volume`` is an SR / interpolation output (one of its signals);
    ``mask_method``: ``learned`` (:mod:`JointSRSegLib.brain_extraction`; the classical rules when its weights
    are not installed) or ``classical`` (:func:`brain_mask`).
    """
    if priors not in PRIOR_MODES:
        raise InputError("atropos", f"priors must be one of {', '.join(PRIOR_MODES)}, not {priors!r}")
    if mask_method not in MASK_MODES:
        raise InputError("atropos", f"the brain mask must be one of {', '.join(MASK_MODES)}, not {mask_method!r}")
    if not 0.0 <= float(prior_weight) <= 1.0:
        raise InputError("atropos", f"the prior weight must lie in [0, 1], not {prior_weight!r}")
    ants = import_ants()
    if volume.channels != 1:
        raise InputError(volume.source, f"atropos segments one image; the input has {volume.channels} channels")
    os.environ["ANTS_RANDOM_SEED"] = RANDOM_SEED
    # ANTsPy passes --random-seed to antsRegistration only when its config holds one (the metric's sample
    # points); the run-to-run variation that remains on several threads is the metric's threading (docstring).
    ants.config._random_seed = int(RANDOM_SEED)
    if threads:  # ITK reads it when its thread pool is first made: set it before the first ANTs call
        os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(int(threads))
    array = volume.array[0].astype(np.float32)
    check_mr_intensities(array, volume.source)
    spacing = tuple(float(s) for s in volume.spacing)
    mask, mask_used = None, "classical"
    if mask_method == "learned":
        mask = learned_mask(volume)
        if mask is not None:
            mask_used = "learned"
        else:  # no weights, a field of view too small to be a head, or no brain found in it
            mask_used = "classical (the learned mask found no brain to judge)"
    if mask is None:
        mask = brain_mask(array, spacing, erosion_mm, grid=volume.grid)
    if np.count_nonzero(mask) < 64:
        raise InputError(volume.source, "atropos found no head in the image (the foreground mask is empty)")
    inside = array[mask]
    low, high = np.percentile(inside, [0.5, 99.5])
    scaled = np.clip((array - low) / max(float(high - low), 1e-6), 0.0, 1.0).astype(np.float32)

    geometry = ants_geometry(volume)

    def to_ants(a: np.ndarray):
        return ants.from_numpy(np.ascontiguousarray(a), **geometry)

    image, ants_mask = to_ants(scaled), to_ants(mask.astype(np.float32))
    if n4:
        image = ants.n4_bias_field_correction(image, mask=ants_mask, shrink_factor=2)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    partial_view = float(mask.sum()) * voxel_ml < MIN_TEMPLATE_BRAIN_ML
    registered = template_priors(image, mask, ants) if priors == "template" and not partial_view else None
    used_priors = registered is not None and registered[2] >= MIN_TEMPLATE_OVERLAP
    weighted = False
    if used_priors:
        gm, wm = registered[0] * mask, registered[1] * mask
        csf = np.clip(1.0 - gm - wm, 0.0, 1.0) * mask
        prior_stack = np.stack([csf, gm, wm])  # class 1 CSF, 2 GM, 3 WM
        contrast = contrast_name(_prior_means(image.numpy(), prior_stack))
        weighted = contrast in ("T1-like", "FLAIR-like")  # CSF darkest, as in the template (step 3)
    if weighted:
        initial = [to_ants(p) for p in prior_stack]
        result = ants.atropos(a=image, x=ants_mask, i=initial, m=mrf, c=f"[{int(iterations)},0]",
                              priorweight=float(prior_weight), r=0)
    else:
        result = ants.atropos(a=image, x=ants_mask, i="kmeans[3]", m=mrf, c=f"[{int(iterations)},0]",
                              priorweight=0.0, r=0)
    classes = result["segmentation"].numpy().astype(np.int64)
    posteriors = np.stack([p.numpy() for p in result["probabilityimages"]]).astype(np.float32)
    corrected = image.numpy()
    means = np.array([float(corrected[classes == c].mean()) if (classes == c).any() else 0.0 for c in (1, 2, 3)])
    if weighted:
        mapping = {1: BACKGROUND, 2: GREY_MATTER, 3: WHITE_MATTER}
    elif used_priors:
        mapping = _match_priors(classes, prior_stack)
        tissue_of = {BACKGROUND: "csf", GREY_MATTER: "gm", WHITE_MATTER: "wm"}
        contrast = contrast_name({tissue_of[t]: means[c - 1] for c, t in mapping.items()})
    else:
        mapping, contrast = assign_tissues(classes, means, mask, spacing)
    lut = np.zeros(4, dtype=np.uint8)
    for c, tissue in mapping.items():
        lut[c] = tissue
    labels = lut[classes] * mask
    unit = raw = unit_summary = None
    map_started = time.perf_counter()
    if uncertainty or signals:
        from .calibration import calibrated_summary, calibration_entry, error_probability, seg_features

        raw = seg_features(posteriors, labels, mask, spacing, GREY_MATTER, WHITE_MATTER,
                           priors=prior_stack if used_priors else None, slab=slab)
        if uncertainty:
            unit = error_probability(calibration_entry("atropos"), raw)
            unit_summary = calibrated_summary(unit, "uncertainty_seg", mask, "brain", "atropos")
    map_seconds = time.perf_counter() - map_started
    report = {
        "contrast": contrast,
        "priors": ("template-weighted" if weighted else "template-identity") if used_priors else "none",
        **({"prior_weight": float(prior_weight)} if weighted else {}),
        **({"template_overlap": round(float(registered[2]), 4)} if registered is not None else {}),
        **({"template_skipped": f"a partial brain (mask < {MIN_TEMPLATE_BRAIN_ML:.0f} mL): the template is a "
                                "whole brain"} if priors == "template" and partial_view else {}),
        "brain_mask": mask_used,
        "n4": bool(n4),
        "mrf": mrf,
        "classes": 3,
        "iterations": int(iterations),
        "mask_ml": round(float(mask.sum()) * voxel_ml, 2),
        "class_means": {
            {BACKGROUND: "csf", GREY_MATTER: "gm", WHITE_MATTER: "wm"}[t]: round(float(means[c - 1]), 4)
            for c, t in mapping.items()
        },
        "volumes_ml": {
            "gm": round(float((labels == GREY_MATTER).sum()) * voxel_ml, 2),
            "wm": round(float((labels == WHITE_MATTER).sum()) * voxel_ml, 2),
        },
        **({"uncertainty": {"uncertainty_seg": unit_summary},
            "uncertainty_seconds": round(map_seconds, 3)} if unit_summary is not None else {}),
    }
    return TissueSegmentation(labels.astype(np.uint8), unit, report, raw if signals else None)
