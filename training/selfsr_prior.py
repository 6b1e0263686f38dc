"""Train the prior of ``--model adapt``: the self-SR network pre-trained on many real and synthetic heads.

    OMP_NUM_THREADS=1 python -m training.selfsr_prior --protocol sr --factor 4 --steps 3000 \\
        --out Resources/Priors/selfsr-sr-x4

``self`` (SMORE) starts every scan from a cubic interpolation and has a few hundred CPU steps to learn
the correction; ``adapt`` starts from this prior and only fine-tunes it on the scan's own slices
(docs/selfsr.md).  The prior is the very network ``self`` trains (:mod:`JointSRSegLib.selfsr_net`, same
input normalisation, same pairs from :class:`~JointSRSegLib.selfsr_data.InplanePatchSampler`), trained on
2D slices along all three axes of

* real HR T1 scans with skull, OpenNeuro ds002748 subjects 1-16 (real texture, noise and intensities), and
* synthetic images of the SynthSeg label maps 1-16, one random contrast each (T1/T2/FLAIR/PD-like or any
  ordering of the tissue means; skull-stripped or whole-head) drawn by :mod:`training.data.realistic`,
  so the prior does not assume T1 contrast.

Label-map subjects 17-18 and real subjects 17-18 give the validation loss that picks the exported step;
label maps 19-20 and real scans 21-24 (the report's test subjects) are refused here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from JointSRSegLib.io import read_volume
from JointSRSegLib.selfsr import robust_normalization, snapshot, validation_l1
from JointSRSegLib.selfsr_data import InplanePatchSampler
from JointSRSegLib.selfsr_net import build_network, cosine_lr
from JointSRSegLib.selfsr_prior import PRIOR_FILE, WEIGHTS_FILE, prior_name
from JointSRSegLib.vocabulary import THROUGH_PLANE_PROTOCOLS

from .data.realistic import draw_contrast, synthesize_image

ROOT = Path(__file__).resolve().parents[1]
DATA = Path("/work/shared/data") if Path("/work/shared/data").is_dir() else ROOT.parent / "shared" / "data"
REAL = DATA / "openneuro_ds002748_t1w"
LABELS = DATA / "synthseg_labels"
TRAIN_SUBJECTS = tuple(range(1, 17))
VALIDATION_SUBJECTS = (17, 18)
TEST_SUBJECTS = {"labels": (19, 20), "real": (21, 22, 23, 24)}
PLANES_PER_AXIS = 12  # slices kept per axis and volume (memory: ~3 copies of each in the sampler)
VALIDATION_PATCHES = 256
CPU = torch.device("cpu")


def _check_subjects(subjects) -> None:
    banned = set(TEST_SUBJECTS["labels"]) | set(TEST_SUBJECTS["real"])
    if banned & set(subjects):
        raise SystemExit(f"subjects {sorted(banned & set(subjects))} are the report's test subjects: never trained on")


def _head_planes(norm: np.ndarray, rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """``count`` random slices per voxel axis through the head (the non-background bounding box),
    each as ``(S, 1, P, Q)`` cropped to the head plus a 16-voxel margin."""
    support = norm[0] > 0.05
    box = [np.flatnonzero(support.any(axis=tuple(a for a in range(3) if a != k))) for k in range(3)]
    lo = [max(int(b[0]) - 16, 0) for b in box]
    hi = [min(int(b[-1]) + 17, n) for b, n in zip(box, norm.shape[1:])]
    head = norm[:, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    stacks = []
    for axis in range(3):
        n = head.shape[axis + 1]
        margin = n // 8  # skip the outermost slices (mostly background)
        idx = np.sort(rng.choice(np.arange(margin, n - margin), size=min(count, n - 2 * margin), replace=False))
        stacks.append(np.ascontiguousarray(np.moveaxis(np.take(head, idx, axis=axis + 1), axis + 1, 0)))
    return stacks


def load_volumes(subjects, rng: np.random.Generator, synthetic: bool, real: bool,
                 log=print, contrasts: int = 1) -> list[tuple[str, np.ndarray]]:
    """Normalised ``(1, I, J, K)`` images: the real T1 of each subject and ``contrasts`` synthetic contrasts of
    its label map."""
    out = []
    for s in subjects:
        first = len(out)
        if real and (REAL / f"sub-{s:02d}_T1w.nii.gz").exists():
            vol = read_volume(REAL / f"sub-{s:02d}_T1w.nii.gz")
            out.append((f"real-sub{s:02d}", robust_normalization(vol.array.astype(np.float32))[0]))
        label = read_volume(LABELS / f"training_seg_{s:02d}.nii.gz").array[0].astype(np.int32) if synthetic else None
        for _ in range(contrasts if synthetic else 0):
            seed = np.random.RandomState(int(rng.integers(2**31)))
            stripped = bool(seed.rand() < 0.5)
            contrast = draw_contrast(np.unique(label), seed, skull_stripped=stripped)
            image = synthesize_image(label, seed, contrast, skull_stripped=stripped)
            tag = f"synth{s:02d}-{contrast.sequence}-{'stripped' if stripped else 'head'}"
            out.append((tag, robust_normalization(image[None])[0]))
        log(f"loaded subject {s}: {', '.join(name for name, _ in out[first:])}")
    return out


class MixedSampler:
    """Batches drawn uniformly over the (volume, slice axis) samplers."""

    def __init__(self, volumes, protocol: str, factor: int, patch_hr: int, rng: np.random.Generator,
                 planes_per_axis: int = PLANES_PER_AXIS):
        self.rng = rng
        self.samplers = []
        for _, norm in volumes:
            for planes in _head_planes(norm, rng, planes_per_axis):
                self.samplers.append(InplanePatchSampler(planes, protocol, factor, patch_hr=patch_hr, rng=rng))
        width = min(s.m for s in self.samplers)
        height = min(s.height for s in self.samplers)
        for s in self.samplers:  # one patch shape for every sampler so batches stack
            s.m, s.height = width, height
            s.hr_width = width * factor if protocol == "sr" else (width - 1) * factor + 1

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self.samplers[int(self.rng.integers(len(self.samplers)))]._one() for _ in range(batch)]
        lr = torch.from_numpy(np.ascontiguousarray(np.stack([p[0] for p in pairs])))
        hr = torch.from_numpy(np.ascontiguousarray(np.stack([p[1] for p in pairs])))
        return lr, hr


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", choices=THROUGH_PLANE_PROTOCOLS, default="sr")
    parser.add_argument("--factor", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--patch-hr", type=int, default=48)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--validate-every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--planes-per-axis", type=int, default=PLANES_PER_AXIS,
                        help="training slices per voxel axis and volume (validation keeps the fixed set)")
    parser.add_argument("--contrasts", type=int, default=1,
                        help="synthetic contrasts drawn per training label map")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    _check_subjects(TRAIN_SUBJECTS + VALIDATION_SUBJECTS)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    out = args.out or ROOT / "Resources" / "Priors" / prior_name(args.protocol, args.factor)
    started = time.perf_counter()

    train = MixedSampler(load_volumes(TRAIN_SUBJECTS, rng, True, True, contrasts=args.contrasts), args.protocol,
                         args.factor, args.patch_hr, rng, planes_per_axis=args.planes_per_axis)
    val_rng = np.random.default_rng(10_000 + args.seed)
    val_sampler = MixedSampler(load_volumes(VALIDATION_SUBJECTS, val_rng, True, True), args.protocol, args.factor,
                               args.patch_hr, val_rng)
    val = [val_sampler.sample(32) for _ in range(VALIDATION_PATCHES // 32)]
    ready = time.perf_counter() - started
    print(f"{len(train.samplers)} training slice stacks, data ready in {ready:.0f} s", flush=True)

    net, net_cfg = build_network("cnn", 1, args.factor, args.protocol)
    optimizer = torch.optim.Adam(net.parameters(), lr=args.learning_rate)
    cubic_l1 = validation_l1(net, val, CPU)  # the zero-initialised tail: the network is exactly cubic
    best = snapshot(net, 0, cubic_l1)
    history = [{"step": 0, "validation_l1": round(cubic_l1, 6)}]
    print(f"step 0: validation L1 {cubic_l1:.5f} (cubic)", flush=True)
    window = []
    for step in range(1, args.steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(args.learning_rate, (step - 1) / args.steps)
        lr_patch, hr_patch = train.sample(args.batch_size)
        loss = (net(lr_patch)[..., : hr_patch.shape[-1]] - hr_patch).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        window.append(float(loss.detach()))
        if step % args.validate_every == 0 or step == args.steps:
            l1 = validation_l1(net, val, CPU)
            history.append({"step": step, "train_l1": round(float(np.mean(window)), 6), "validation_l1": round(l1, 6),
                            "seconds": round(time.perf_counter() - started, 1)})
            window = []
            if l1 < best["l1"]:
                best = snapshot(net, step, l1)
            print(f"step {step}: train L1 {history[-1]['train_l1']:.5f}, validation L1 {l1:.5f} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)

    out.mkdir(parents=True, exist_ok=True)
    weights = out / WEIGHTS_FILE
    save_file({k: v.contiguous() for k, v in best["state"].items()}, str(weights))
    weights.chmod(0o644)  # safetensors writes 0600; the prior is installed read-only for every user
    record = {
        "format": "jointsrseg-selfsr-prior/1",
        "name": out.name,
        "protocol": args.protocol,
        "factor": args.factor,
        "network": net_cfg,
        "normalization": "robust percentiles 0.5/99.5 per scan (JointSRSegLib.selfsr.robust_normalization)",
        "weights_sha256": sha256(weights),
        "training": {
            "data": {
                "real": f"OpenNeuro ds002748 T1w subjects {TRAIN_SUBJECTS[0]}-{TRAIN_SUBJECTS[-1]} (CC0)",
                "synthetic": f"SynthSeg label maps {TRAIN_SUBJECTS[0]}-{TRAIN_SUBJECTS[-1]} (Apache-2.0), "
                             f"{args.contrasts} random contrast(s) each "
                             "(training.data.realistic.draw_contrast / synthesize_image)",
                "slices": f"{args.planes_per_axis} random slices per voxel axis and volume, head bounding box",
                "validation": f"subjects {VALIDATION_SUBJECTS} of both sources, {VALIDATION_PATCHES} fixed patches",
                "never_used": TEST_SUBJECTS,
            },
            "steps": args.steps,
            "exported_step": best["step"],
            "batch_size": args.batch_size,
            "patch_hr": args.patch_hr,
            "optimizer": "Adam",
            "learning_rate": args.learning_rate,
            "schedule": "linear warm-up 2 %, cosine decay to 2 %",
            "loss": "L1",
            "seed": args.seed,
            "threads": args.threads,
            "seconds": round(time.perf_counter() - started, 1),
            "validation_l1_cubic": round(cubic_l1, 6),
            "validation_l1": round(best["l1"], 6),
            "history": history,
        },
        "command": "python -m training.selfsr_prior " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    tmp = out / (PRIOR_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out / PRIOR_FILE)
    print(f"wrote {out} (step {best['step']}, validation L1 {best['l1']:.5f} vs cubic {cubic_l1:.5f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
