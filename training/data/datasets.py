"""Dataset readers: turn a folder on disk into a list of case dicts plus dataset metadata.

Every reader returns the same case dict, so splits, loading and pair generation never care
about the layout::

    {"id": case_id, "patient": patient_id, "images": [path per modality], "label": path | None,
     "modalities": [name per modality], "lr_only": bool}

Layouts: Medical Segmentation Decathlon (``dataset.json`` + ``imagesTr``/``labelsTr``; a
multi-modal MSD case is one 4D file, so ``images`` holds a single path while ``modalities``
lists several names -- the loader splits the channels), BraTS (one folder per case, 2018-2021
and 2023 file names), a generic ``images/`` + ``labels/`` folder (nnU-Net ``_0000`` channel
suffixes for multi-modal data) and LR-only annotated data (generic layout, ``lr_only=True``:
no HR image exists, so no HR target may ever be made from it).

Patient ids default to the case id (MSD/folder: file stem without channel suffix; BraTS: folder
name without the BraTS 2023 timepoint ``-NNN``); a ``patients.csv`` (``case_id,patient_id``)
groups several cases of one patient so that splits never separate them.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from JointSRSegLib.errors import InputError
from JointSRSegLib.io import READ_SUFFIXES, strip_volume_suffix, volume_suffix

LAYOUTS = ("msd", "brats", "folder", "lr_only", "synthseg")
PATIENTS_CSV = "patients.csv"
CHANNEL_SUFFIX = re.compile(r"^(?P<stem>.+)_(?P<channel>\d{4})$")

# BraTS file-name endings per canonical modality: 2018-2021 names first, BraTS 2023 second.
BRATS_MODALITIES: dict[str, tuple[str, str]] = {
    "T1": ("_t1", "-t1n"),
    "T1ce": ("_t1ce", "-t1c"),
    "T2": ("_t2", "-t2w"),
    "FLAIR": ("_flair", "-t2f"),
}
BRATS_SEG = ("_seg", "-seg")
BRATS_LABELS = {0: "background", 1: "NCR", 2: "ED", 3: "ET"}
BRATS_REGIONS = ("WT", "TC", "ET")
# BraTS 2023 case names are BraTS-<cohort>-<5-digit subject>-<3-digit timepoint>.
BRATS_2023_CASE = re.compile(r"^(?P<patient>BraTS-[A-Za-z]+-\d+)-\d{3}$")


@dataclass
class DatasetIndex:
    """The cases of one dataset and what their channels and label values mean."""

    layout: str
    root: Path
    cases: list[dict]
    modalities: list[str]
    label_names: dict[int, str] = field(default_factory=dict)

    @property
    def patients(self) -> list[str]:
        return sorted({case["patient"] for case in self.cases})


def make_case(
    case_id: str,
    images: list[Path],
    label: Path | None,
    modalities: list[str],
    lr_only: bool = False,
    patient: str | None = None,
) -> dict:
    """The one case-dict shape every reader returns (paths as strings so they hash and pickle)."""
    return {
        "id": case_id,
        "patient": patient or case_id,
        "images": [str(p) for p in images],
        "label": str(label) if label is not None else None,
        "modalities": list(modalities),
        "lr_only": bool(lr_only),
    }


# --------------------------------------------------------------------------- helpers


def _is_volume_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and volume_suffix(path) in READ_SUFFIXES


def _volume_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if _is_volume_file(p)) if folder.is_dir() else []


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(path, f"cannot read JSON ({error})") from None
    if not isinstance(data, dict):
        raise InputError(path, "expected a JSON object")
    return data


def _label_names(raw: dict | None, source: Path) -> dict[int, str]:
    """Label names from MSD (``{"0": "background"}``) or nnU-Net v2 (``{"background": 0}``) style."""
    if not raw:
        return {}
    names: dict[int, str] = {}
    for key, value in raw.items():
        if str(key).lstrip("-").isdigit():
            names[int(key)] = str(value)
        elif isinstance(value, int):
            names[value] = str(key)
        else:
            raise InputError(source, f"label entry {key!r}: {value!r} maps no integer value to a name")
    return dict(sorted(names.items()))


def _channel_names(raw: dict | None, count: int) -> list[str]:
    if raw and all(str(k).isdigit() for k in raw):
        names = [str(raw[k]) for k in sorted(raw, key=lambda k: int(k))]
        if len(names) == count:
            return names
    return ["image"] if count == 1 else [f"channel{i}" for i in range(count)]


def read_patients_csv(path: str | Path) -> dict[str, str]:
    """``case_id -> patient_id`` from a two-column CSV with header ``case_id,patient_id``."""
    path = Path(path)
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise InputError(path, f"cannot read ({error})") from None
    mapping: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        case_id, patient = (row.get("case_id") or "").strip(), (row.get("patient_id") or "").strip()
        if not case_id or not patient:
            raise InputError(path, f"line {line}: needs columns case_id and patient_id (header 'case_id,patient_id')")
        if mapping.get(case_id, patient) != patient:
            raise InputError(path, f"line {line}: case {case_id!r} is given two patients")
        mapping[case_id] = patient
    return mapping


def apply_patients(cases: list[dict], mapping: dict[str, str]) -> list[dict]:
    """Group cases of one patient (cases absent from ``mapping`` keep their default patient id)."""
    return [{**case, "patient": mapping.get(case["id"], case["patient"])} for case in cases]


# --------------------------------------------------------------------------- MSD


def read_msd(root: str | Path) -> DatasetIndex:
    """Medical Segmentation Decathlon: ``dataset.json`` lists the labelled training cases."""
    root = Path(root)
    meta_path = root / "dataset.json"
    meta = _read_json(meta_path)
    if not isinstance(meta.get("training"), list):
        raise InputError(meta_path, "has no 'training' list (not a Medical Segmentation Decathlon dataset)")
    modalities = _channel_names(meta.get("modality"), len(meta.get("modality") or {}) or 1)
    cases = []
    for entry in meta["training"]:
        if not isinstance(entry, dict) or "image" not in entry:
            raise InputError(meta_path, f"training entry {entry!r} has no 'image'")
        image = (root / entry["image"]).resolve()
        label = (root / entry["label"]).resolve() if entry.get("label") else None
        for path in (image, label):
            if path is not None and not path.is_file():
                raise InputError(meta_path, f"lists {path.relative_to(root.resolve())} which does not exist")
        case_id = strip_volume_suffix(image)
        match = CHANNEL_SUFFIX.match(case_id)
        cases.append(make_case(case_id, [image], label, modalities, patient=match.group("stem") if match else None))
    return DatasetIndex("msd", root, cases, modalities, _label_names(meta.get("labels"), meta_path))


# --------------------------------------------------------------------------- BraTS


def brats_regions(label_array: np.ndarray) -> np.ndarray:
    """BraTS labels -> the nested evaluation regions as channels ``(3, ...)``: WT, TC, ET.

    BraTS 2023: 1 = NCR, 2 = ED, 3 = ET, so WT = {1, 2, 3}, TC = {1, 3}, ET = {3}.  The 2018-2021
    releases code ET as 4 (3 is unused), which is accepted as ET too.  A leading channel axis of
    size 1 is dropped so ``(1, I, J, K)`` and ``(I, J, K)`` both give ``(3, I, J, K)``.
    """
    label = np.asarray(label_array)
    if label.ndim == 4 and label.shape[0] == 1:
        label = label[0]
    label = np.rint(label).astype(np.int64) if label.dtype.kind == "f" else label.astype(np.int64)
    et = (label == 3) | (label == 4)
    tc = (label == 1) | et
    wt = tc | (label == 2)
    return np.stack([wt, tc, et]).astype(np.uint8)


class BraTSRegionsd(MapTransform):
    """Dict version of :func:`brats_regions` so the region conversion can sit in a MONAI Compose."""

    def __init__(self, keys: KeysCollection = "label", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            regions = brats_regions(value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value)
            d[key] = torch.from_numpy(regions) if isinstance(value, torch.Tensor) else regions
        return d


def _find_ending(files: list[Path], endings: tuple[str, ...]) -> Path | None:
    matches = [p for p in files if strip_volume_suffix(p).lower().endswith(endings)]
    if len(matches) > 1:
        raise InputError(matches[0].parent, f"several files match one modality: {', '.join(p.name for p in matches)}")
    return matches[0] if matches else None


def _is_brats_case(folder: Path) -> bool:
    files = _volume_files(folder)
    return all(_find_ending(files, BRATS_MODALITIES[name]) is not None for name in ("T1", "FLAIR"))


def brats_patient(case_id: str) -> str:
    """Patient of a BraTS case: the folder name, without the BraTS 2023 timepoint suffix."""
    match = BRATS_2023_CASE.match(case_id)
    return match.group("patient") if match else case_id


def read_brats(root: str | Path) -> DatasetIndex:
    """BraTS: one folder per case with ``<case>_t1/_t1ce/_t2/_flair/_seg`` or 2023 ``-t1n/-t1c/-t2w/-t2f/-seg``."""
    root = Path(root)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    cases = []
    for folder in folders:
        files = _volume_files(folder)
        if not files:
            continue
        images = []
        for name, endings in BRATS_MODALITIES.items():
            path = _find_ending(files, endings)
            if path is None:
                raise InputError(folder, f"missing {name} image (a file ending in {' or '.join(endings)}.nii.gz)")
            images.append(path)
        label = _find_ending(files, BRATS_SEG)
        cases.append(make_case(folder.name, images, label, list(BRATS_MODALITIES), patient=brats_patient(folder.name)))
    if not cases:
        raise InputError(root, "no BraTS case folders (with *_t1/_flair or *-t1n/-t2f images) found")
    return DatasetIndex("brats", root, cases, list(BRATS_MODALITIES), dict(BRATS_LABELS))


# --------------------------------------------------------------------------- generic folder


def _group_channels(files: list[Path], folder: Path) -> dict[str, list[Path]]:
    """``case -> [channel files]``; all files use nnU-Net ``_0000`` suffixes or none does."""
    stems = {p: strip_volume_suffix(p) for p in files}
    suffixed = {p: CHANNEL_SUFFIX.match(s) for p, s in stems.items()}
    if not any(suffixed.values()):
        return {stems[p]: [p] for p in files}
    if not all(suffixed.values()):
        plain = next(p for p, m in suffixed.items() if m is None)
        raise InputError(plain, "has no _0000-style channel suffix while other images in the folder do")
    groups: dict[str, dict[int, Path]] = {}
    for path, match in suffixed.items():
        groups.setdefault(match.group("stem"), {})[int(match.group("channel"))] = path
    counts = {len(channels) for channels in groups.values()}
    out = {}
    for case_id, channels in sorted(groups.items()):
        if sorted(channels) != list(range(max(counts))):
            raise InputError(
                folder / case_id, f"has channels {sorted(channels)}; every case needs channels 0..{max(counts) - 1}"
            )
        out[case_id] = [channels[i] for i in range(len(channels))]
    return out


def read_folder(root: str | Path, lr_only: bool = False) -> DatasetIndex:
    """Generic ``images/`` + ``labels/`` with matching names; an optional ``dataset.json`` names
    channels (``"channel_names"`` or ``"modality"``) and labels.  ``lr_only`` marks LR-only data."""
    root = Path(root)
    images_dir, labels_dir = root / "images", root / "labels"
    files = _volume_files(images_dir)
    if not files:
        raise InputError(images_dir, "no images found (expected images/<case>.nii.gz or images/<case>_0000.nii.gz)")
    meta = _read_json(root / "dataset.json") if (root / "dataset.json").is_file() else {}
    groups = _group_channels(files, images_dir)
    count = len(next(iter(groups.values())))
    modalities = _channel_names(meta.get("channel_names") or meta.get("modality"), count)
    labels = {strip_volume_suffix(p): p for p in _volume_files(labels_dir)}
    cases = []
    for case_id, images in groups.items():
        label = labels.get(case_id)
        if lr_only and label is None:
            raise InputError(images[0], f"LR-only data must be annotated: no labels/{case_id}.nii.gz")
        cases.append(make_case(case_id, images, label, modalities, lr_only=lr_only))
    unmatched = sorted(set(labels) - set(groups))
    if unmatched:
        raise InputError(labels[unmatched[0]], "label has no matching image in images/")
    layout = "lr_only" if lr_only else "folder"
    return DatasetIndex(layout, root, cases, modalities, _label_names(meta.get("labels"), root / "dataset.json"))


# --------------------------------------------------------------------------- entry point


def detect_layout(root: str | Path) -> str:
    """``msd`` (dataset.json with 'training'), ``folder``/``lr_only`` (images/; ``"lr_only": true`` in
    dataset.json marks LR-only data) or ``brats`` (case folders with BraTS file names)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "dataset folder not found")
    meta = _read_json(root / "dataset.json") if (root / "dataset.json").is_file() else {}
    if isinstance(meta.get("training"), list) and (root / "imagesTr").is_dir():
        return "msd"
    if (root / "images").is_dir():
        return "lr_only" if meta.get("lr_only") is True else "folder"
    if any(_is_brats_case(p) for p in root.iterdir() if p.is_dir()):
        return "brats"
    raise InputError(
        root,
        "cannot detect the dataset layout: expected dataset.json + imagesTr/ (MSD), images/ + labels/, "
        "or BraTS case folders",
    )


def read_synthseg(root: str) -> DatasetIndex:
    """``synthseg:LABELS_DIR[?train=1-16&validation=17-18&t1=T1_DIR&t1_train=...]``: FreeSurfer label
    maps (synthesised into images per sample) plus optional real T1 images, with a split fixed by
    subject number (held-out subjects refused; :mod:`training.data.realistic`)."""
    from .realistic import parse_realistic_root, realistic_cases

    try:
        spec = parse_realistic_root(root)
    except ValueError as error:
        raise InputError(root, str(error)) from None
    if not spec.labels_dir.is_dir():
        raise InputError(spec.labels_dir, "label-map folder not found")
    cases = realistic_cases(spec)
    names = {0: "background", 1: "Grey matter", 2: "White matter"}
    return DatasetIndex("synthseg", spec.labels_dir, cases, ["T1"], names)


def load_dataset(root: str | Path, layout: str = "auto", patients_csv: str | Path | None = None) -> DatasetIndex:
    """Read a dataset of any supported layout; ``patients.csv`` in ``root`` (or ``patients_csv``)
    groups cases by patient.  A root ``synthseg:...`` is the realistic label-map layout."""
    if str(root).startswith("synthseg:") or layout == "synthseg":
        return read_synthseg(str(root) if str(root).startswith("synthseg:") else f"synthseg:{root}")
    root = Path(root)
    if layout == "auto":
        layout = detect_layout(root)
    if layout not in LAYOUTS:
        raise InputError(root, f"unknown layout {layout!r} (use auto, {', '.join(LAYOUTS)})")
    if not root.is_dir():
        raise InputError(root, "dataset folder not found")
    if layout == "msd":
        index = read_msd(root)
    elif layout == "brats":
        index = read_brats(root)
    else:
        index = read_folder(root, lr_only=layout == "lr_only")
    csv_path = Path(patients_csv) if patients_csv is not None else root / PATIENTS_CSV
    if patients_csv is not None or csv_path.is_file():
        index.cases = apply_patients(index.cases, read_patients_csv(csv_path))
    return index
