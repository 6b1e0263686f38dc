"""Cases, splits and batches of a run, built on :mod:`training.data`.

Reproducible data order without saved iterator state: sample ``slot`` of step ``step`` is drawn
with a generator seeded by ``(run seed, step, slot)`` -- which case, which patch, which
augmentation.  A run resumed at step ``s`` therefore sees exactly the batches an uninterrupted
run sees, on any number of workers, and DDP rank ``r`` takes slots ``r*B ... r*B+B-1`` of each
step (a distributed sampler whose shards depend only on the step, so resuming mid-epoch needs no
sampler state).

Sample mode (``data.root: sample``): the single MNI152 subject is cut along
``data.sample_split_axis`` into slabs -- one hemisphere trains, the first 40 % of the other
validates, the rest is the test set -- so a split exists with one patient; the slabs stand in
for patients in ``splits.json``.  ``data.sample_synthetic_validation`` validates on fixed,
seeded SynthSeg contrasts of the held-out slab instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from monai.transforms import Compose

from JointSRSegLib.errors import InputError
from JointSRSegLib.io import read_volume
from training.data import (
    SynthesizeImageFromLabels,
    build_dataset,
    check_splits,
    load_dataset,
    load_splits,
    make_case,
    make_splits,
    save_splits,
    select_cases,
)
from training.tasks.transforms import CropRegiond, LabelIndicesd, ModelFramed, NormalizeIntensityd

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_IMAGE = ROOT / "Resources" / "SampleData" / "MNI152_T1_1mm.nii.gz"
SAMPLE_LABEL = ROOT / "Resources" / "SampleData" / "MNI152_tissue_1mm.nii.gz"
SAMPLE_LABELS = {0: "background", 1: "Grey matter", 2: "White matter"}
DEFAULT_COLORS = [(128, 174, 128), (241, 214, 145), (177, 122, 101), (111, 184, 210), (216, 101, 79),
                  (221, 130, 101), (144, 238, 144), (192, 104, 88)]


@dataclass
class DataInfo:
    """What the adapters and the package need to know about the data."""

    modalities: list[str]
    label_values: list[int]
    label_names: dict[int, str]
    label_colors: dict[int, list[int]]
    splits: dict
    summary: dict = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        return len(self.modalities)

    @property
    def num_classes(self) -> int:
        return len(self.label_values)

    def package_labels(self) -> list[dict]:
        """``model.json`` labels: class ``i`` is the ``i``-th listed value (background excluded)."""
        return [{"value": int(v), "name": self.label_names.get(v, f"label {v}"), "color": list(self.label_colors[v])}
                for v in self.label_values[1:]]


def sample_cases(split_axis: int) -> tuple[list[dict], dict]:
    """The MNI sample as three slab cases (train hemisphere, validation, test) and their splits."""
    size = read_volume(SAMPLE_IMAGE).shape[split_axis]
    half, val_end = size // 2, size // 2 + int(0.4 * (size - size // 2))
    bounds = {"train": (0, half), "validation": (half, val_end), "test": (val_end, size)}
    cases, splits = [], {}
    for subset, (start, stop) in bounds.items():
        region = [[0, 10_000]] * 3
        region[split_axis] = [start, stop]
        case = make_case(f"MNI152_{subset}", [SAMPLE_IMAGE], SAMPLE_LABEL, ["T1"], patient=f"MNI152_{subset}_slab")
        case["region"] = region
        cases.append(case)
        splits[subset] = {case["patient"]: [case["id"]]}
    check_splits(splits)
    return cases, splits


def prepare_cases(cfg: dict, run_dir: Path) -> tuple[list[dict], DataInfo]:
    """Read the dataset (or the sample), make or reuse the patient-level split, save it with the run."""
    data = cfg["data"]
    if data["root"] == "sample":
        cases, splits = sample_cases(data["sample_split_axis"])
        modalities, names, summary = ["T1"], dict(SAMPLE_LABELS), {
            "datasets": ["MNI152 2009c T1 + tissue labels (bundled sample)"], "subjects": 1,
            "split": f"sample mode: slabs along axis {data['sample_split_axis']} (train hemisphere / "
                     "validation / test)"}
    else:
        index = load_dataset(data["root"], data["layout"])
        cases, modalities, names = index.cases, index.modalities, dict(index.label_names)
        if data["splits_file"]:
            splits = load_splits(data["splits_file"])
        else:
            splits = make_splits(cases, data["ratios"], data["split_seed"])
        summary = {"datasets": [str(index.root)], "layout": index.layout, "subjects": len(index.patients),
                   "cases": len(cases), "split": f"patient-level {data['ratios']} seed {data['split_seed']}"}
    save_splits(splits, run_dir / "splits.json")
    for subset, patients in splits.items():
        summary[f"{subset}_cases"] = sum(len(v) for v in patients.values())
    names.update({int(k): str(v) for k, v in data["label_names"].items()})
    values = sorted({0, *names})
    names.setdefault(0, "background")
    colors = {v: list(data["label_colors"].get(v, data["label_colors"].get(str(v),
                                                                         DEFAULT_COLORS[i % len(DEFAULT_COLORS)])))
              for i, v in enumerate(values)}
    summary["intensity_normalization"] = data["normalization"]
    summary["protocol"] = f"{data['protocol']} x{data['factor']}"
    return cases, DataInfo(list(modalities), values, names, colors, splits, summary)


def cached_cases(cfg: dict, cases: Sequence[dict], info: DataInfo, run_dir: Path, subset: str):
    """MONAI cache of the deterministic per-case work: load, region, model frame, normalise, label indices.

    Corrupt files raise ``InputError`` naming the file here, while the cache fills.
    """
    chosen = select_cases(cases, info.splits, subset)
    if not chosen:
        raise InputError(run_dir / "splits.json", f"the {subset} subset is empty; add cases or change data.ratios")
    data = cfg["data"]
    prep = [CropRegiond(), ModelFramed(data["axis"]), NormalizeIntensityd(data["normalization"]),
            LabelIndicesd(info.label_values)]
    cache_dir = None
    if data["cache"] == "disk":
        cache_dir = Path(data["cache_dir"] or run_dir / "cache") / subset
    rate = 0.0 if data["cache"] == "none" else 1.0
    return build_dataset(chosen, prep, cache_dir=cache_dir, cache_rate=rate, num_workers=1)


def synthetic_contrast(item: dict, seed: int) -> dict:
    """A fixed SynthSeg contrast of a validation case (seeded, so every validation sees the same)."""
    synth = SynthesizeImageFromLabels(background_zero=True, bias_field_prob=0.0)
    synth.set_random_state(seed=seed)
    out = synth(dict(item))
    out["image"] = out["image"].repeat(item["image"].shape[0], 1, 1, 1)
    return out


class SeededSamples(torch.utils.data.Dataset):
    """Training samples keyed by ``(step, slot)``; everything random is seeded by the key."""

    def __init__(self, cases, transform: Compose, seed: int):
        self.cases, self.transform, self.seed = cases, transform, int(seed)

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        step, slot = key
        rng = np.random.default_rng([self.seed, int(step), int(slot)])
        item = dict(self.cases[int(rng.integers(len(self.cases)))])
        self.transform.set_random_state(seed=int(rng.integers(2**31 - 1)))
        out = self.transform(item)
        out["sample_key"] = torch.tensor([int(step), int(slot)])
        return out


class StepBatchSampler(torch.utils.data.Sampler):
    """Batches for steps ``start ... stop-1``: this rank's ``batch_size`` slots of each step."""

    def __init__(self, start: int, stop: int, batch_size: int, rank: int = 0):
        self.start, self.stop, self.batch_size, self.rank = start, stop, batch_size, rank

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.stop):
            yield [(step, self.rank * self.batch_size + j) for j in range(self.batch_size)]

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def training_loader(samples: SeededSamples, start: int, stop: int, batch_size: int, rank: int,
                    num_workers: int, collate: Callable | None = None) -> torch.utils.data.DataLoader:
    """DataLoader over steps; its own generator so creating it never draws from the global torch RNG
    (a resumed run creates one more loader than an uninterrupted one)."""
    return torch.utils.data.DataLoader(
        samples,
        batch_sampler=StepBatchSampler(start, stop, batch_size, rank),
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(0),
        **({"collate_fn": collate} if collate else {}),
    )
