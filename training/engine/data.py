"""Cases, splits and batches of a run, built on :mod:`training.data`.

Data order: an epoch is ``train.steps_per_epoch`` steps; its ``steps_per_epoch * B * world_size``
samples are a virtual dataset (:class:`EpochSamples`: sample ``i`` is a random patch of case
``i mod N``), shuffled and sharded over the ranks by ``torch.utils.data.DistributedSampler``
(``set_epoch`` every epoch).  Everything random in a sample -- patch, augmentation -- is seeded by
``(run seed, epoch, index)``, and :class:`ResumableDistributedSampler` can start inside the epoch's
permutation, so a run resumed at step ``s`` sees exactly the batches an uninterrupted run sees, on
any number of workers, with no saved sampler state (the step is the position).

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
from JointSRSegLib.terminology import with_terminology
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
    uses_partial_volume,
)
from training.tasks.transforms import CropRegiond, LabelIndicesd, ModelFramed, NormalizeIntensityd

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_IMAGE = ROOT / "Resources" / "SampleData" / "MNI152_T1_1mm.nii.gz"
SAMPLE_LABEL = ROOT / "Resources" / "SampleData" / "MNI152_tissue_1mm.nii.gz"
SAMPLE_PROBABILITIES = [ROOT / "Resources" / "SampleData" / f"MNI152_{t}_prob_1mm.nii.gz" for t in ("gm", "wm")]
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
        """``model.json`` labels: class ``i`` is the ``i``-th listed value (background excluded); tissue
        names carry their SNOMED CT codes (Slicer's terminology, DICOM SEG export)."""
        return with_terminology([{"value": int(v), "name": self.label_names.get(v, f"label {v}"),
                                  "color": list(self.label_colors[v])} for v in self.label_values[1:]])


def sample_cases(split_axis: int, probabilities: bool = False) -> tuple[list[dict], dict]:
    """The MNI sample as three slab cases (train hemisphere, validation, test) and their splits
    (``probabilities``: with the GM/WM probability maps, for partial-volume synthesis)."""
    size = read_volume(SAMPLE_IMAGE).shape[split_axis]
    half, val_end = size // 2, size // 2 + int(0.4 * (size - size // 2))
    bounds = {"train": (0, half), "validation": (half, val_end), "test": (val_end, size)}
    cases, splits = [], {}
    for subset, (start, stop) in bounds.items():
        region = [[0, 10_000]] * 3
        region[split_axis] = [start, stop]
        case = make_case(f"MNI152_{subset}", [SAMPLE_IMAGE], SAMPLE_LABEL, ["T1"], patient=f"MNI152_{subset}_slab")
        case["region"] = region
        if probabilities:
            case["probs"] = [str(p) for p in SAMPLE_PROBABILITIES]
        cases.append(case)
        splits[subset] = {case["patient"]: [case["id"]]}
    check_splits(splits)
    return cases, splits


def prepare_cases(cfg: dict, run_dir: Path) -> tuple[list[dict], DataInfo]:
    """Read the dataset (or the sample), make or reuse the patient-level split, save it with the run."""
    data = cfg["data"]
    partial_volume = uses_partial_volume(cfg["augment"])
    if partial_volume and data["root"] != "sample":
        raise InputError(data["root"], "augment.synthesis_partial_volume needs tissue probability maps, which only "
                                       "the bundled sample (data.root: sample) provides; set it to false")
    if data["root"] == "sample":
        cases, splits = sample_cases(data["sample_split_axis"], partial_volume)
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


VALIDATION_MIN_CONTRAST = 0.15


def synthetic_contrast(item: dict, seed: int) -> dict:
    """A fixed SynthSeg contrast of a validation case (seeded, so every validation sees the same).

    Tissues differ by at least :data:`VALIDATION_MIN_CONTRAST` (a draw with two equal tissues is
    no MR contrast and cannot be segmented by any method)."""
    synth = SynthesizeImageFromLabels(background_zero=True, bias_field_prob=0.0, min_contrast=VALIDATION_MIN_CONTRAST)
    synth.set_random_state(seed=seed)
    out = synth(dict(item))
    out["image"] = out["image"].repeat(item["image"].shape[0], 1, 1, 1)
    return out


class EpochSamples(torch.utils.data.Dataset):
    """The ``length`` samples of an epoch, keyed by ``(epoch, index)``: a patch of case ``index mod N``.

    Why a key and not an index: every random draw of a sample is seeded by ``(seed, epoch, index)``,
    so a sample is the same whichever rank, worker or (resumed) process draws it.
    """

    def __init__(self, cases, transform: Compose, seed: int, length: int):
        self.cases, self.transform, self.seed, self.length = cases, transform, int(seed), int(length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, index = (int(k) for k in key)
        rng = np.random.default_rng([self.seed, epoch, index])
        item = dict(self.cases[index % len(self.cases)])
        self.transform.set_random_state(seed=int(rng.integers(2**31 - 1)))
        out = self.transform(item)
        out["sample_key"] = torch.tensor([epoch, index])
        return out


class ResumableDistributedSampler(torch.utils.data.DistributedSampler):
    """``DistributedSampler`` that yields the part ``[begin, end)`` of this rank's share of the epoch.

    The epoch's permutation and the rank sharding are ``DistributedSampler``'s (seeded by
    ``seed + epoch``); the window lets a stage or a resumed run start and stop inside an epoch.
    Items are ``(epoch, index)`` keys for :class:`EpochSamples`.
    """

    def __init__(self, dataset: EpochSamples, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.begin, self.end = 0, self.num_samples

    def set_window(self, begin: int, end: int) -> None:
        if not 0 <= begin <= end <= self.num_samples:
            raise ValueError(f"window [{begin}, {end}) outside this rank's {self.num_samples} samples")
        self.begin, self.end = begin, end

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        indices = list(super().__iter__())[self.begin : self.end]
        return iter([(self.epoch, index) for index in indices])

    def __len__(self) -> int:
        return self.end - self.begin


class StepBatches:
    """Batches of steps ``start ... stop-1`` of a stage: epoch ``e`` holds steps
    ``e*steps_per_epoch ...``; each epoch calls ``set_epoch`` and iterates the DataLoader over the
    window of steps it contributes (one DataLoader per stage, its workers kept between epochs)."""

    def __init__(self, samples: EpochSamples, start: int, stop: int, steps_per_epoch: int, batch_size: int,
                 rank: int, world_size: int, num_workers: int, collate: Callable | None = None):
        self.start, self.stop, self.steps_per_epoch, self.batch_size = start, stop, steps_per_epoch, batch_size
        self.sampler = ResumableDistributedSampler(samples, world_size, rank, samples.seed)
        # Its own generator: creating an iterator never draws from the global torch RNG (a resumed
        # run iterates more loaders than an uninterrupted one).
        self.loader = torch.utils.data.DataLoader(
            samples, batch_size=batch_size, sampler=self.sampler, num_workers=num_workers,
            persistent_workers=num_workers > 0, generator=torch.Generator().manual_seed(0),
            **({"collate_fn": collate} if collate else {}))

    def __iter__(self) -> Iterator[dict]:
        step = self.start
        while step < self.stop:
            epoch, first = divmod(step, self.steps_per_epoch)
            last = min(self.stop - epoch * self.steps_per_epoch, self.steps_per_epoch)
            self.sampler.set_epoch(epoch)
            self.sampler.set_window(first * self.batch_size, last * self.batch_size)
            yield from self.loader
            step = epoch * self.steps_per_epoch + last

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def training_batches(cases, transform: Compose, seed: int, start: int, stop: int, steps_per_epoch: int,
                     batch_size: int, rank: int, world_size: int, num_workers: int,
                     collate: Callable | None = None) -> StepBatches:
    """The batches of global steps ``[start, stop)`` for this rank (``batch_size`` samples each)."""
    samples = EpochSamples(cases, transform, seed, steps_per_epoch * batch_size * world_size)
    return StepBatches(samples, start, stop, steps_per_epoch, batch_size, rank, world_size, num_workers, collate)
