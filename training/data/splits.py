"""Patient-level train/validation/test splits.

Cases of one patient (several scans, timepoints) are strongly correlated; putting them in two
subsets leaks test anatomy into training.  Splits therefore assign *patients*, never cases, and
are stored as ``{subset: {patient_id: [case_id, ...]}}`` so the check needs nothing else.
The default ratios 7:1:2 follow the TASC-SwinMT paper.  The assignment depends only on the
sorted patient ids and the seed, so it is reproducible across machines and file orders.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from JointSRSegLib.errors import InputError

SUBSETS = ("train", "validation", "test")
DEFAULT_RATIOS = (7.0, 1.0, 2.0)

Splits = dict[str, dict[str, list[str]]]


def subset_sizes(n_patients: int, ratios: Sequence[float] = DEFAULT_RATIOS) -> list[int]:
    """Patients per subset by largest remainder; every subset with a positive ratio gets at least
    one patient when there are enough patients (a validation set of zero breaks model selection)."""
    ratios = np.asarray(ratios, dtype=float)
    if ratios.shape != (len(SUBSETS),) or np.any(ratios < 0) or ratios.sum() <= 0:
        raise ValueError(f"ratios {tuple(ratios)} must be three non-negative numbers (train, validation, test)")
    exact = ratios / ratios.sum() * n_patients
    sizes = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - sizes), kind="stable")[: n_patients - sizes.sum()]:
        sizes[i] += 1
    wanted = np.flatnonzero(ratios > 0)
    if n_patients >= len(wanted):
        for i in wanted:
            if sizes[i] == 0:
                sizes[int(np.argmax(sizes))] -= 1
                sizes[i] = 1
    return [int(s) for s in sizes]


def make_splits(cases: Sequence[dict], ratios: Sequence[float] = DEFAULT_RATIOS, seed: int = 0) -> Splits:
    """Shuffle patients with ``seed`` and cut them into train/validation/test by ``ratios``.

    Cases that carry a fixed ``subset`` (the realistic label-map layout: the split is by subject
    number, see :mod:`training.data.realistic`) keep it; ``ratios`` and ``seed`` are then unused.
    """
    if cases and all(case.get("subset") in SUBSETS for case in cases):
        fixed: Splits = {subset: {} for subset in SUBSETS}
        for case in cases:
            fixed[case["subset"]].setdefault(str(case["patient"]), []).append(str(case["id"]))
        check_splits(fixed)
        return fixed
    by_patient: dict[str, list[str]] = {}
    for case in cases:
        by_patient.setdefault(str(case["patient"]), []).append(str(case["id"]))
    patients = sorted(by_patient)
    order = np.random.default_rng(seed).permutation(len(patients))
    sizes = subset_sizes(len(patients), ratios)
    splits: Splits = {}
    start = 0
    for subset, size in zip(SUBSETS, sizes):
        chosen = sorted(patients[i] for i in order[start : start + size])
        splits[subset] = {p: sorted(by_patient[p]) for p in chosen}
        start += size
    check_splits(splits)
    return splits


def check_splits(splits: Splits) -> None:
    """Raise if a patient (or a case) appears in two subsets."""
    seen_patients: dict[str, str] = {}
    seen_cases: dict[str, str] = {}
    for subset, patients in splits.items():
        for patient, case_ids in patients.items():
            if patient in seen_patients:
                raise ValueError(f"patient {patient!r} is in both {seen_patients[patient]!r} and {subset!r}")
            seen_patients[patient] = subset
            for case_id in case_ids:
                if case_id in seen_cases:
                    raise ValueError(f"case {case_id!r} is in both {seen_cases[case_id]!r} and {subset!r}")
                seen_cases[case_id] = subset


def select_cases(cases: Sequence[dict], splits: Splits, subset: str) -> list[dict]:
    """The case dicts of one subset, in the order of ``cases``."""
    if subset not in splits:
        raise KeyError(f"no subset {subset!r} in splits (have {', '.join(splits)})")
    wanted = {case_id for case_ids in splits[subset].values() for case_id in case_ids}
    return [case for case in cases if case["id"] in wanted]


def save_splits(splits: Splits, path: str | Path) -> Path:
    """Write the splits as JSON (atomically, so an interrupted run never leaves half a file)."""
    check_splits(splits)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "w") as out:
        json.dump(splits, out, indent=2, sort_keys=True)
    os.replace(temp, path)
    return path


def load_splits(path: str | Path) -> Splits:
    """Read and check splits written by :func:`save_splits`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(path, f"cannot read splits ({error})") from None
    if not isinstance(data, dict) or not all(
        isinstance(v, dict) and all(isinstance(c, list) for c in v.values()) for v in data.values()
    ):
        raise InputError(path, "expected {subset: {patient_id: [case_id, ...]}}")
    try:
        check_splits(data)
    except ValueError as error:
        raise InputError(path, str(error)) from None
    return data
