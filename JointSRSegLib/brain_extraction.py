"""Learned brain extraction (the SynthStrip principle): which voxels are brain, in any MR contrast.

Why: Atropos segments whatever its mask holds.  The classical mask (:func:`JointSRSegLib.atropos.brain_mask`,
erosion, dark-gap and growth rules) works on skull-stripped scans but not on whole heads: on the
report's subject-19 synthetic whole heads at HR it kept the whole head (T2-like, 3.5 L) or a piece of
scalp (T1-like, 2.7 % of the brain), and Atropos then painted grey matter over scalp and muscle (GM Dice
0.40 / 0.007).  A small 3D U-Net trained on images drawn from the SynthSeg label maps with random
contrasts (Hoopes et al., SynthStrip, NeuroImage 2022: the label maps give the brain mask for free, the
random intensities teach contrast independence) finds the brain where intensity rules cannot.

It runs on a coarse working grid (``WORKING_SPACING_MM``, isotropic) -- a brain mask needs no finer
detail, and a 3D U-Net at 1 mm costs minutes on a CPU:

1. voxel axes permuted/flipped to RAS (exact), the head's bounding box cut out
   (:func:`JointSRSegLib.foreground.head_mask`);
2. box-filtered (a Gaussian with the box's width, ``factor / sqrt(12)`` input voxels) and sampled at the
   working grid's voxel centres -- the area average the training data has by construction;
3. range-normalised (0.5 / 99.5 percentiles -> 0 / 1), the network's brain probability;
4. the probability sampled back at every input voxel (trilinear), cut at the card's threshold (chosen on
   the validation label maps at full resolution: the 3 mm view errs outwards), largest component, holes filled.

The output lies on the input grid, exactly; only the network's view is coarse.  Weights:
``Resources/BrainMask`` (trained by ``python -m training.brain_mask``; its JSON holds the validation Dice).
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from .errors import InputError
from .foreground import bounding_box, head_mask, largest_component
from .orientation import Reorientation
from .volume import Grid, Volume

WORKING_SPACING_MM = 3.0
FEATURES = (8, 16, 32, 64, 128, 8)  # MONAI BasicUNet: 1.4 M parameters
DIVISOR = 16  # four 2x poolings: the working array is padded to a multiple of this
PERCENTILES = (0.5, 99.5)
MODEL_DIR = Path(__file__).resolve().parents[1] / "Resources" / "BrainMask"
WEIGHTS_FILE = "brain_mask.safetensors"
CARD_FILE = "brain_mask.json"
THRESHOLD = 0.5  # the probability cut when the card records none (a chosen one: :func:`threshold`)
# The head's box must span this many working voxels (48 mm) on every axis for the network to judge it (a
# thinner slab, a spinal-cord or knee field of view is no head): below, None and the classical rules.
MIN_WORKING_VOXELS = 16
# ... and the brain found must be at least this large (an adult brain is ~1200 mL; partial FOVs keep less)
MIN_BRAIN_ML = 50.0
# The network marks a "brain" in any MR it is shown (a neck: 565 mL, an abdomen: 1.5 L, mean probability 0.95
# as on brains).  The two longest principal extents of its mask on 19 real and template brains here (ds002748
# 21-24, ds000011 T2 1-7 and T1 2, clinical 5.5-6.5 mm, MNI152) were 139-178 mm and 118-149 mm; on an
# abdominal MR 275 / 202, an abdominal CT 243 / 213: a mask larger than these limits (~20 % above the largest
# brain) is no brain.  A small mask is not refused: a partial field of view through a brain (a 64 mm block,
# skull-stripped slabs of 121 x 109 and 145 x 78 mm) measures what a cervical-cord T2* does (120 x 106), and
# refusing a real brain is worse than labelling a neck.
BRAIN_MAX_LENGTH_MM = 215.0
BRAIN_MAX_WIDTH_MM = 185.0
SHAPE_POINTS = 200_000  # mask voxels sampled for the principal axes


def build_network() -> torch.nn.Module:
    from monai.networks.nets import BasicUNet

    return BasicUNet(spatial_dims=3, in_channels=1, out_channels=1, features=FEATURES)


def normalise(array: np.ndarray) -> np.ndarray:
    """Percentile range -> [0, 1] (clipped at 1.5 above): the same for training and inference."""
    low, high = np.percentile(array, PERCENTILES)
    scaled = (array - low) / max(float(high - low), 1e-6)
    return np.clip(scaled, 0.0, 1.5).astype(np.float32)


def working_shape(shape, spacing, working_mm: float = WORKING_SPACING_MM) -> tuple[int, ...]:
    """Voxels of the working grid that cover ``shape`` x ``spacing`` (at least one per axis)."""
    return tuple(max(1, int(math.ceil(n * s / working_mm))) for n, s in zip(shape, spacing))


def _centres(n_out: int, step_mm: float, spacing: float) -> np.ndarray:
    """Fractional index, on a grid of ``spacing``, of the centres of ``n_out`` voxels of ``step_mm``; both
    grids start at the input's edge (step 2 one way, its inverse the other)."""
    return (np.arange(n_out) + 0.5) * step_mm / spacing - 0.5


def to_working_grid(array: np.ndarray, spacing, working_mm: float = WORKING_SPACING_MM) -> np.ndarray:
    """``(I, J, K)`` -> the area-averaged image on the coarse isotropic working grid (step 2)."""
    spacing = [float(s) for s in spacing]
    factor = [working_mm / s for s in spacing]
    sigma = [f / math.sqrt(12.0) if f > 1 else 0.0 for f in factor]
    smooth = ndimage.gaussian_filter(array.astype(np.float32), sigma, mode="nearest")
    shape = working_shape(array.shape, spacing, working_mm)
    return _separable_linear(smooth, [_centres(m, working_mm, s) for s, m in zip(spacing, shape)])


def _separable_linear(array: np.ndarray, positions: list[np.ndarray]) -> np.ndarray:
    """Linear interpolation of ``array`` at the outer product of per-axis positions (clamped at the edges)."""
    out = array
    for axis, pos in enumerate(positions):
        n = out.shape[axis]
        pos = np.clip(pos, 0.0, n - 1)
        low = np.floor(pos).astype(int)
        high = np.minimum(low + 1, n - 1)
        w = (pos - low).astype(np.float32)
        shape = [1] * out.ndim
        shape[axis] = -1
        out = np.take(out, low, axis=axis) * (1 - w).reshape(shape) + np.take(out, high, axis=axis) * w.reshape(shape)
    return out.astype(np.float32)


def from_working_grid(coarse: np.ndarray, shape, spacing, working_mm: float = WORKING_SPACING_MM) -> np.ndarray:
    """The coarse map sampled (linearly) at every input voxel centre: the inverse mapping of step 2."""
    return _separable_linear(coarse, [_centres(n, s, working_mm) for n, s in zip(shape, spacing)])


def card(directory: Path | None = None) -> dict | None:
    path = (Path(directory) if directory is not None else MODEL_DIR) / CARD_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def available() -> bool:
    return (MODEL_DIR / WEIGHTS_FILE).is_file()


@lru_cache(maxsize=1)
def _load(directory: str) -> torch.nn.Module:
    from safetensors.torch import load_file

    net = build_network()
    state = {k: v.float() for k, v in load_file(str(Path(directory) / WEIGHTS_FILE)).items()}
    net.load_state_dict(state)
    return net.eval()


def pad_for_network(array: np.ndarray) -> np.ndarray:
    """Zero-padded at the end of each axis to a multiple of ``DIVISOR``, at least two of them (the bottleneck
    keeps two voxels: instance norm needs more than one)."""
    return np.pad(array, [(0, max(2 * DIVISOR, n + (-n) % DIVISOR) - n) for n in array.shape], mode="constant")


def predict_probability(net: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """Brain probability of a normalised working-grid image (padded by :func:`pad_for_network`, cropped back)."""
    padded = pad_for_network(image)
    with torch.inference_mode():
        logits = net(torch.from_numpy(np.ascontiguousarray(padded))[None, None])[0, 0]
    probability = torch.sigmoid(logits).numpy()
    return probability[tuple(slice(0, n) for n in image.shape)]


def brain_probability(volume: Volume, directory: Path | None = None) -> np.ndarray | None:
    """The network's brain probability at every voxel of ``volume``'s grid (float32, 0 outside the head);
    None when the weights are not installed or the head is too small for the network to judge
    (``MIN_WORKING_VOXELS``)."""
    directory = Path(directory) if directory is not None else MODEL_DIR
    if not (directory / WEIGHTS_FILE).is_file():
        return None
    net = _load(str(directory))
    reo = Reorientation.to_code(volume.grid, "RAS")
    ras = reo.apply(volume.array[:1])[0].astype(np.float32)
    spacing = np.asarray(volume.spacing, dtype=float)[list(reo.perm)]
    head = head_mask(Volume.from_grid(ras[None], reo.apply_grid(volume.grid)))
    box = bounding_box(head)
    crop = ras[box]
    if min(working_shape(crop.shape, spacing)) < MIN_WORKING_VOXELS:
        return None
    coarse = to_working_grid(crop, spacing)
    probability = np.zeros(ras.shape, dtype=np.float32)
    probability[box] = from_working_grid(predict_probability(net, normalise(coarse)), crop.shape, spacing) * head[box]
    return reo.invert(probability[None])[0]


def threshold(directory: Path | None = None) -> float:
    """The probability cut of the shipped weights: chosen on the validation label maps at full resolution
    (``python -m benchmarks.brain_mask_threshold --write`` records it in the card), else ``THRESHOLD``."""
    entry = (card(directory) or {}).get("threshold")
    return float(entry["value"]) if entry else THRESHOLD


def mask_from_probability(probability: np.ndarray, spacing, cut: float) -> np.ndarray | None:
    """``probability > cut``, its largest component, holes filled; None without ``MIN_BRAIN_ML`` of brain."""
    mask = probability > cut
    if float(mask.sum()) * float(np.prod(spacing)) / 1000.0 < MIN_BRAIN_ML:
        return None
    return ndimage.binary_fill_holes(largest_component(mask))


def learned_brain_mask(volume: Volume, directory: Path | None = None, cut: float | None = None) -> np.ndarray | None:
    """Boolean ``(I, J, K)`` brain mask of a single-channel ``volume`` on its own grid (:func:`brain_probability`
    cut at :func:`threshold` unless ``cut`` is given); None when the weights are not installed, the head is
    too small for the network to judge or no brain of ``MIN_BRAIN_ML`` is found."""
    probability = brain_probability(volume, directory)
    if probability is None:
        return None
    return mask_from_probability(probability, volume.spacing, threshold(directory) if cut is None else cut)


def principal_extents(mask: np.ndarray, grid: Grid) -> tuple[float, float, float]:
    """The extents in mm of ``mask`` along its three principal axes, longest first (rotation-invariant: a
    head tilted in the field of view measures the same)."""
    index = np.argwhere(mask)
    if len(index) < 4:
        return (0.0, 0.0, 0.0)
    points = grid.physical_points(index[:: max(1, len(index) // SHAPE_POINTS)])
    centred = points - points.mean(axis=0)
    _, axes = np.linalg.eigh(centred.T @ centred)
    projected = centred @ axes
    extents = np.sort(projected.max(axis=0) - projected.min(axis=0))[::-1]
    return tuple(float(e) for e in extents)


def check_brain_shape(mask: np.ndarray, grid: Grid, source) -> None:
    """Refuse a learned mask larger than any adult brain (``BRAIN_MAX_LENGTH_MM`` x ``BRAIN_MAX_WIDTH_MM``):
    grey and white matter painted over an abdomen is worse than no answer."""
    length, width, _ = principal_extents(mask, grid)
    if length <= BRAIN_MAX_LENGTH_MM and width <= BRAIN_MAX_WIDTH_MM:
        return
    raise InputError(source, f"no brain in the field of view: the brain-extraction mask measures "
                             f"{length:.0f} x {width:.0f} mm, larger than an adult brain (at most "
                             f"{BRAIN_MAX_LENGTH_MM:.0f} x {BRAIN_MAX_WIDTH_MM:.0f} mm); "
                             "the tissue segmentation (grey/white matter) is for brain MR only")
