"""Train the brain-extraction network of :mod:`JointSRSegLib.brain_extraction` (SynthStrip principle).

    OMP_NUM_THREADS=2 python -m training.brain_mask --minutes 35 --out Resources/BrainMask

Data: the SynthSeg whole-head label maps 1-16 (training) and 17-18 (validation; 19-20 are the report's test
subjects and are refused).  Each map is reduced once to *fractions*: for every working-grid voxel
(``WORKING_SPACING_MM``, isotropic, RAS voxel order) the fraction of its 1 mm voxels carrying each label
group.  An image is then the fraction-weighted sum of per-group intensities drawn by
:func:`training.data.realistic.draw_contrast` (T1/T2/FLAIR/PD-like or any random order; whole head or
skull-stripped), which is exactly the area average of a 1 mm image with constant label intensities --
the partial volume the inference's box filter produces.  Per sample: per-group texture noise, bias field,
gamma, Gaussian blur, a thick-slice blur along a random axis (the B-spline or SR output of thick-slice
scans), Rician-like noise, random zoom (head size), L-R flips and sometimes any axis permutation, and
either the head's bounding box (what inference sees) or a random partial field of view.  Target: the
fraction of brain labels (1-499: tissue and the CSF around it), soft.  Loss: BCE + soft Dice.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from scipy import ndimage

from JointSRSegLib.brain_extraction import (
    CARD_FILE,
    DIVISOR,
    FEATURES,
    WEIGHTS_FILE,
    WORKING_SPACING_MM,
    build_network,
    normalise,
    pad_for_network,
    predict_probability,
    working_shape,
)
from JointSRSegLib.foreground import bounding_box
from JointSRSegLib.io import read_volume

from .data.realistic import EXTRA_CEREBRAL, _group, draw_contrast, reorient_to_ras

ROOT = Path(__file__).resolve().parents[1]
DATA = Path("/work/shared/data") if Path("/work/shared/data").is_dir() else ROOT.parent / "shared" / "data"
LABELS = DATA / "synthseg_labels"
TRAIN_SUBJECTS = tuple(range(1, 17))
VALIDATION_SUBJECTS = (17, 18)
TEST_SUBJECTS = (19, 20)
VALIDATION_SEQUENCES = ("T1", "T2", "FLAIR", "PD")


class Fractions:
    """One label map on the working grid: ``fractions[g]`` = share of group ``groups[g]`` per voxel."""

    def __init__(self, path: Path, working_mm: float = WORKING_SPACING_MM):
        volume = read_volume(path)
        labels, spacing, _, _ = reorient_to_ras(volume.array.astype(np.int32), volume.spacing, volume.origin,
                                                volume.direction)
        labels = labels[0]
        values = np.unique(labels)
        self.groups = sorted({int(_group(int(v))) for v in values})
        group_index = np.array([self.groups.index(int(_group(int(v)))) for v in values])
        index = group_index[np.searchsorted(values, labels)]
        shape = working_shape(labels.shape, spacing, working_mm)
        blocks = [np.minimum((np.arange(n) * s / working_mm).astype(int), m - 1)
                  for n, s, m in zip(labels.shape, spacing, shape)]
        flat_block = np.ravel_multi_index(np.ix_(*blocks), shape)
        n_blocks, n_groups = int(np.prod(shape)), len(self.groups)
        counts = np.bincount((flat_block * n_groups + index).ravel(), minlength=n_blocks * n_groups)
        counts = counts.reshape(n_blocks, n_groups).astype(np.float32)
        counts /= np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
        self.fractions = np.ascontiguousarray(counts.T.reshape(n_groups, *shape)).astype(np.float16)
        self.brain = np.array([0 < g < EXTRA_CEREBRAL for g in self.groups])
        self.name = path.name
        self.head_box = bounding_box(self.fractions[[g != 0 for g in self.groups]].astype(np.float32).sum(0) > 0.5)


def synthesize(fr: Fractions, rng: np.random.RandomState, box: tuple[slice, ...] | None = None,
               sequence: str | None = None, skull_stripped: bool | None = None,
               augment: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One (image, brain fraction) pair of the working-grid ``box`` (module docstring)."""
    stripped = bool(rng.rand() < 0.3) if skull_stripped is None else skull_stripped
    contrast = draw_contrast(fr.groups, rng, sequence=sequence, skull_stripped=stripped, std_range=(0.0, 0.08))
    means = np.array([contrast.means.get(g, 0.0) for g in fr.groups], np.float32)
    stds = np.array([contrast.stds.get(g, 0.0) for g in fr.groups], np.float32)
    f = fr.fractions[(slice(None), *(box or fr.head_box))].astype(np.float32)
    shape = f.shape[1:]
    image = np.tensordot(means, f, axes=1)
    texture = np.tensordot(stds, f, axes=1) * rng.standard_normal(shape).astype(np.float32)
    image = image + ndimage.gaussian_filter(texture, 0.5)
    target = f[fr.brain].sum(axis=0)
    if augment:
        bias = rng.normal(0.0, rng.uniform(0.0, 0.3), (4, 4, 4))
        image = image * np.exp(ndimage.zoom(bias, [n / 4 for n in shape], order=1, mode="nearest"))
        sigma = [float(rng.uniform(0.0, 0.6))] * 3
        if rng.rand() < 0.5:  # thick slices (3-8 mm FWHM) along one axis
            sigma[rng.randint(3)] = float(rng.uniform(3.0, 8.0)) / WORKING_SPACING_MM / 2.355
        image = ndimage.gaussian_filter(image, sigma, mode="nearest")
        image = np.clip(image, 0.0, None) ** float(np.exp(rng.normal(0.0, 0.2)))
        image = np.abs(image + rng.normal(0.0, rng.uniform(0.0, 0.05), shape).astype(np.float32))
    if stripped:
        image = image * (target > 0.5)
    return image.astype(np.float32), target


def field_of_view(fr: Fractions, rng: np.random.RandomState) -> tuple[slice, ...]:
    """The head's bounding box (as inference crops), sometimes a random part of it (a partial scan)."""
    box = list(fr.head_box)
    if rng.rand() < 0.35:
        for a in range(3):
            n = box[a].stop - box[a].start
            keep = int(rng.uniform(0.4, 1.0) * n) if rng.rand() < 0.6 else n
            start = box[a].start + int(rng.randint(0, n - keep + 1))
            box[a] = slice(start, start + keep)
    return tuple(box)


def augment_geometry(image: np.ndarray, target: np.ndarray, rng: np.random.RandomState):
    zoom = float(rng.uniform(0.85, 1.15))
    size = [max(DIVISOR, int(round(n * zoom))) for n in image.shape]
    pair = torch.from_numpy(np.stack([image, target]))[None]
    pair = torch.nn.functional.interpolate(pair, size=size, mode="trilinear", align_corners=False)[0].numpy()
    image, target = pair[0], pair[1]
    if rng.rand() < 0.5:
        image, target = image[::-1], target[::-1]
    if rng.rand() < 0.2:
        order = [int(a) for a in rng.permutation(3)]
        image, target = image.transpose(order), target.transpose(order)
        for a in range(3):
            if rng.rand() < 0.5:
                image, target = np.flip(image, a), np.flip(target, a)
    return np.ascontiguousarray(image), np.ascontiguousarray(target)


def dice(probability: np.ndarray, target: np.ndarray) -> float:
    p, t = probability > 0.5, target > 0.5
    return float(2.0 * (p & t).sum() / max(p.sum() + t.sum(), 1))


def validation_set(maps: list[Fractions]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    cases = []
    for k, fr in enumerate(maps):
        for j, sequence in enumerate(VALIDATION_SEQUENCES):
            for stripped in (False, True):
                rng = np.random.RandomState(1000 + 100 * k + 10 * j + int(stripped))
                image, target = synthesize(fr, rng, sequence=sequence, skull_stripped=stripped)
                cases.append((f"{fr.name}-{sequence}-{'stripped' if stripped else 'head'}", normalise(image), target))
    return cases


def evaluate(net: torch.nn.Module, cases) -> dict[str, float]:
    net.eval()
    scores = {name: dice(predict_probability(net, image), target) for name, image, target in cases}
    net.train()
    return scores


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(logits)
    return 1.0 - (2.0 * (p * target).sum() + 1.0) / (p.sum() + target.sum() + 1.0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=35.0, help="training budget (wall clock)")
    parser.add_argument("--steps", type=int, default=100000, help="at most this many steps")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--validate-every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, nargs="*", default=list(TRAIN_SUBJECTS))
    parser.add_argument("--out", type=Path, default=ROOT / "Resources" / "BrainMask")
    args = parser.parse_args(argv)
    if set(args.train) & (set(TEST_SUBJECTS) | set(VALIDATION_SUBJECTS)):
        sys.exit("training subjects must not include validation (17-18) or test (19-20) label maps")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.RandomState(args.seed)
    started = time.time()
    train = [Fractions(LABELS / f"training_seg_{s:02d}.nii.gz") for s in args.train]
    validation = validation_set([Fractions(LABELS / f"training_seg_{s:02d}.nii.gz") for s in VALIDATION_SUBJECTS])
    print(f"data ready in {time.time() - started:.0f} s: {len(train)} training maps, "
          f"{len(validation)} validation cases", flush=True)
    net = build_network()
    optimiser = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    budget = args.minutes * 60.0
    t0 = time.time()
    best, best_state, history, step = -1.0, None, [], 0
    while step < args.steps and time.time() - t0 < budget:
        progress = min(1.0, (time.time() - t0) / budget)
        for group in optimiser.param_groups:
            group["lr"] = args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))
        fr = train[rng.randint(len(train))]
        image, target = synthesize(fr, rng, field_of_view(fr, rng))
        image, target = augment_geometry(normalise(image), target, rng)
        x = torch.from_numpy(pad_for_network(image))[None, None]
        y = torch.from_numpy(pad_for_network(target))[None, None]
        logits = net(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y) + soft_dice_loss(logits, y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        step += 1
        if step % args.validate_every == 0 or time.time() - t0 >= budget:
            scores = evaluate(net, validation)
            mean = float(np.mean(list(scores.values())))
            history.append({"step": step, "seconds": round(time.time() - t0, 1), "loss": round(float(loss), 4),
                            "validation_dice": round(mean, 4), "validation_min": round(min(scores.values()), 4)})
            print(json.dumps(history[-1]), flush=True)
            if mean > best:
                best, best_scores = mean, scores
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    args.out.mkdir(parents=True, exist_ok=True)
    weights = {k: v.half().contiguous() for k, v in best_state.items()}
    tmp = args.out / (WEIGHTS_FILE + ".tmp")
    save_file(weights, str(tmp))
    tmp.chmod(0o644)
    tmp.replace(args.out / WEIGHTS_FILE)
    digest = hashlib.sha256((args.out / WEIGHTS_FILE).read_bytes()).hexdigest()
    card = {
        "name": "brain-mask",
        "what": "brain probability (tissue and the CSF around it) of any MR contrast, whole head or skull-stripped",
        "network": {"type": "monai.networks.nets.BasicUNet", "features": list(FEATURES), "working_spacing_mm":
                    WORKING_SPACING_MM, "orientation": "RAS", "weights_dtype": "float16", "sha256": digest},
        "training": {"command": "python -m training.brain_mask " + " ".join(argv if argv is not None else sys.argv[1:]),
                     "label_maps": [f"synthseg_labels/training_seg_{s:02d}" for s in args.train],
                     "steps": step, "seconds": round(time.time() - t0, 1), "threads": args.threads,
                     "device": "cpu", "seed": args.seed, "history": history},
        "validation": {"label_maps": [f"synthseg_labels/training_seg_{s:02d}" for s in VALIDATION_SUBJECTS],
                       "metric": "Dice of the brain mask on the working grid (synthetic T1/T2/FLAIR/PD-like, "
                                 "whole head and skull-stripped)",
                       "mean_dice": round(best, 4), "per_case": {k: round(v, 4) for k, v in best_scores.items()}},
        "licence": "trained on the SynthSeg label maps (Apache-2.0, Billot et al.)",
    }
    (args.out / CARD_FILE).write_text(json.dumps(card, indent=1) + "\n")
    print(f"wrote {args.out / WEIGHTS_FILE}: best validation Dice {best:.4f} after {step} steps", flush=True)


if __name__ == "__main__":
    main()
