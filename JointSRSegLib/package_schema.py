"""The ``model.json`` schema (version 1) of a model package, checked field by field.

A package travels between machines and users, so nothing in it is trusted: every field is
checked for presence and type before a network is built, and every problem becomes one
:class:`InputError` line naming ``model.json`` and saying what would fit.  The field list is
documented in ``docs/model-packages.md``; keys not listed there are kept and ignored (authors,
citation...), so a package can carry extra provenance without a schema change.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import InputError
from .normalization import validate_spec
from .terminology import snomed_problem
from .tissue_classes import TISSUE_NAMES
from .vocabulary import (
    AUTO,
    RESERVED_MODEL_IDS,
    TASKS,
    UASR,
    UNCERTAINTY_METHODS,
    check_choice,
    check_protocol,
    declared_uncertainty,
)

SCHEMA_VERSION = 1
FACTOR_AXES = ("through_plane", "in_plane", "all", "none")
REQUIRED_FIELDS: dict[str, type | tuple[type, ...]] = {
    "schema_version": int,
    "id": str,
    "version": str,
    "name": str,
    "description": str,
    "architecture": str,
    "preset": str,
    "config": dict,
    "tasks": list,
    "scale": (list, dict),
    "protocol": str,
    "inputs": list,
    "intensity_normalization": dict,
    "labels": list,
    "training_data": dict,
    "metrics": dict,
    "license": str,
    "intended_use": str,
    "uncertainty": list,
    "expected_runtime": dict,
    "weights_sha256": str,
}
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
_TYPE_NAMES = {int: "an integer", str: "a string", dict: "an object", list: "a list"}


@dataclass(frozen=True)
class ScaleSpec:
    """Which magnifications a model supports, along which axes of its own frame.

    The model frame puts the through-plane axis last (the inference engine moves the detected
    slice axis there).  ``factors`` lists the supported integer factors; ``factor_axis`` says
    where they apply: ``through_plane`` (``[1, 1, R]``), ``in_plane`` (``[R, R, 1]``), ``all``
    (``[R, R, R]``) or ``none`` (``[1, 1, 1]``, e.g. a segmentation-only model).
    """

    factors: tuple[int, ...]
    factor_axis: str

    @staticmethod
    def parse(value: Any, source: str | None = None) -> ScaleSpec:
        """Read ``scale`` from model.json: a per-axis list or ``{"factors", "factor_axis"}``."""
        if isinstance(value, list):
            if len(value) != 3 or not all(_is_int(v) and v >= 1 for v in value):
                raise InputError(source, f"scale must list 3 positive integers (e.g. [1, 1, 4]), got {value!r}")
            factors = {v for v in value if v != 1}
            if not factors:
                return ScaleSpec((1,), "none")
            axes = tuple(i for i, v in enumerate(value) if v != 1)
            axis_name = {(2,): "through_plane", (0, 1): "in_plane", (0, 1, 2): "all"}.get(axes)
            if len(factors) != 1 or axis_name is None:
                raise InputError(
                    source,
                    f"scale {value!r} is not one factor through-plane [1, 1, R], in-plane [R, R, 1] or "
                    "isotropic [R, R, R]",
                )
            return ScaleSpec((factors.pop(),), axis_name)
        if isinstance(value, Mapping):
            factors, axis = value.get("factors"), value.get("factor_axis")
            unknown = sorted(set(value) - {"factors", "factor_axis"})
            _require(not unknown, source, f"scale has unknown key(s) {unknown}; it takes factors and factor_axis")
            if not isinstance(factors, list) or not factors or not all(_is_int(f) and f >= 1 for f in factors):
                raise InputError(source, f"scale.factors must be a non-empty list of integers >= 1, not {factors!r}")
            if axis not in FACTOR_AXES:
                raise InputError(source, f"scale.factor_axis must be one of {', '.join(FACTOR_AXES)}, got {axis!r}")
            if (axis == "none") != (set(factors) == {1}):
                raise InputError(source, 'scale: factor_axis "none" goes with factors [1] and only with them')
            return ScaleSpec(tuple(sorted(set(factors))), axis)
        raise InputError(source, f"scale must be a list like [1, 1, 4] or an object with factors, got {value!r}")

    def per_axis(self, factor: int) -> tuple[int, int, int]:
        """The per-axis magnification in the model frame for one supported ``factor``."""
        if factor not in self.factors:
            raise ValueError(f"factor {factor} is not among {self.factors}")
        return {
            "through_plane": (1, 1, factor),
            "in_plane": (factor, factor, 1),
            "all": (factor, factor, factor),
            "none": (1, 1, 1),
        }[self.factor_axis]

    def describe(self) -> str:
        if self.factor_axis == "none":
            return "no magnification"
        where = self.factor_axis.replace("_", "-")
        return f"{where} factor {' or '.join(f'x{f}' for f in self.factors)}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require(condition: bool, source: str | None, problem: str) -> None:
    if not condition:
        raise InputError(source, problem)


def validate_metadata(
    meta: Any, source: str | None = None, known_architectures: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Check a parsed model.json (schema 1); return it unchanged or raise InputError naming ``source``.

    ``known_architectures`` maps architecture names to their specs (``models.ARCHITECTURES``);
    when given, the architecture and preset must exist in this version of the library.
    """
    _require(isinstance(meta, Mapping), source, "model.json must hold a JSON object")
    version = meta.get("schema_version")
    _require("schema_version" in meta, source, f"missing schema_version (this JointSRSeg reads {SCHEMA_VERSION})")
    _require(_is_int(version), source, f"schema_version must be an integer, got {version!r}")
    if version != SCHEMA_VERSION:
        newer = "; update JointSRSeg to read it" if version > SCHEMA_VERSION else ""
        raise InputError(source, f"unknown schema_version {version} (this JointSRSeg reads {SCHEMA_VERSION}){newer}")
    missing = [name for name in REQUIRED_FIELDS if name not in meta]
    _require(not missing, source, f"missing required field(s): {', '.join(missing)} (see docs/model-packages.md)")
    for name, expected in REQUIRED_FIELDS.items():
        value = meta[name]
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            kinds = expected if isinstance(expected, tuple) else (expected,)
            wanted = " or ".join(_TYPE_NAMES[k] for k in kinds)
            raise InputError(source, f"{name} must be {wanted}, got {type(value).__name__} {value!r:.60}")

    _require(bool(ID_PATTERN.match(meta["id"])), source, f"id {meta['id']!r} must be letters, digits, '.', '_' or '-'")
    reserved = f"id {meta['id']!r} is reserved for a classical baseline or the self-supervised mode"
    _require(meta["id"] not in RESERVED_MODEL_IDS, source, reserved)
    for name in ("version", "name"):
        _require(bool(meta[name].strip()), source, f"{name} must not be empty")
    sha = meta["weights_sha256"]
    problem = f"weights_sha256 must be 64 lowercase hex digits, not {sha!r:.70}"
    _require(bool(SHA256_PATTERN.match(sha)), source, problem)

    _check_architecture(meta, source, known_architectures)
    _check_tasks(meta, source)
    ScaleSpec.parse(meta["scale"], source)
    check_protocol(meta["protocol"], source)
    _check_inputs(meta, source)
    validate_spec(meta["intensity_normalization"], source)
    _check_labels(meta["labels"], "seg" in meta["tasks"], source)
    _check_uncertainty(meta["uncertainty"], meta["tasks"], source)
    _check_inference(meta.get("inference"), source)
    return dict(meta)


def _check_inference(section: Any, source: str | None) -> None:
    """Optional ``inference`` section: ``roi_size`` (three positive integers) and ``orientation``
    (the voxel orientation the package was trained in, e.g. ``"RAS"``)."""
    if section is None:
        return
    _require(isinstance(section, Mapping), source, "inference must be a JSON object")
    roi = section.get("roi_size")
    if roi is not None:
        ok = isinstance(roi, list) and len(roi) == 3 and all(_is_int(r) and 0 < r <= 1024 for r in roi)
        _require(ok, source, f"inference.roi_size must be three integers in 1-1024, got {roi!r:.60}")
    if section.get("orientation") is not None:
        from .orientation import check_orientation_code

        try:
            check_orientation_code(section["orientation"])
        except ValueError as error:
            raise InputError(source, f"inference.orientation: {error}") from None


def _check_architecture(meta: Mapping, source: str | None, known: Mapping[str, Any] | None) -> None:
    if known is None:
        return
    arch, preset = meta["architecture"], meta["preset"]
    _require(
        arch in known,
        source,
        f"unknown architecture {arch!r}; this JointSRSeg has {', '.join(sorted(known))} (a newer version may have it)",
    )
    presets = getattr(known[arch], "presets", None)
    if presets is not None:
        _require(preset in presets, source, f"architecture {arch!r} has no preset {preset!r}; it has {sorted(presets)}")


def _check_tasks(meta: Mapping, source: str | None) -> None:
    tasks = meta["tasks"]
    _require(bool(tasks), source, f"tasks must list at least one of {', '.join(TASKS)}")
    for task in tasks:
        check_choice(task, TASKS, "task", source)
    _require(len(set(tasks)) == len(tasks), source, f"tasks lists a task twice: {tasks}")


def _check_inputs(meta: Mapping, source: str | None) -> None:
    inputs = meta["inputs"]
    _require(bool(inputs), source, 'inputs must list at least one channel, e.g. [{"name": "T1", "modality": "MR"}]')
    for i, channel in enumerate(inputs):
        ok = isinstance(channel, Mapping) and all(
            isinstance(channel.get(k), str) and channel.get(k).strip() for k in ("name", "modality")
        )
        _require(ok, source, f'inputs[{i}] must be an object with non-empty "name" and "modality", got {channel!r}')
    names = [c["name"] for c in inputs]
    _require(len(set(names)) == len(names), source, f"inputs repeats a channel name: {names}")
    declared = meta["config"].get("in_channels")
    if _is_int(declared):
        _require(
            declared == len(inputs),
            source,
            f"inputs lists {len(inputs)} channel(s) ({', '.join(names)}) but config.in_channels is {declared}",
        )


def _check_labels(labels: Sequence, needed: bool, source: str | None) -> None:
    _require(bool(labels) or not needed, source, 'a "seg" model must list its labels ({"value", "name", "color"})')
    values = []
    for i, label in enumerate(labels):
        where = f"labels[{i}]"
        _require(isinstance(label, Mapping), source, f"{where} must be an object, got {label!r}")
        value, name, color = label.get("value"), label.get("name"), label.get("color")
        _require(_is_int(value) and value >= 0, source, f"{where}.value must be an integer >= 0, got {value!r}")
        _require(isinstance(name, str) and bool(name.strip()), source, f"{where}.name must be a non-empty string")
        _require(
            isinstance(color, list) and len(color) == 3 and all(_is_int(c) and 0 <= c <= 255 for c in color),
            source,
            f"{where}.color must be [r, g, b] with integers 0-255, got {color!r}",
        )
        if "snomed" in label:
            problem = snomed_problem(label["snomed"], f"{where}.snomed")
            _require(problem is None, source, problem or "")
        values.append(value)
    _require(len(set(values)) == len(values), source, f"labels repeats a value: {values}")


def _check_uncertainty(entries: Sequence, tasks: Sequence[str], source: str | None) -> None:
    allowed = declared_uncertainty(tasks)
    for entry in entries:
        _require(
            entry in allowed,
            source,
            f"uncertainty {entry!r} does not fit tasks {list(tasks)}; choose from {', '.join(allowed)}",
        )


def has_dropout(config: Mapping[str, Any]) -> bool:
    """Whether a package's ``config`` switches dropout on: a value > 0 under a key naming dropout
    (``dropout``, ``attn_dropout``, ``dropout_rate``), the knobs our architectures' builders take.
    Read from model.json alone, so the Slicer panel can tell before torch starts; the engine checks
    the built network's layers."""
    return any(
        "dropout" in str(key) and isinstance(value, int | float) and not isinstance(value, bool) and value > 0
        for key, value in config.items()
    )


def segments_brain_tissue(meta: Mapping[str, Any]) -> bool:
    """Whether a package segments grey/white matter of brain MR (its labels are exactly the tissue classes and
    every input is MR): such a package gets the brain-MR checks Atropos has (no CT, no brain larger than an adult's)."""
    names = {str(label.get("name")) for label in meta.get("labels") or []}
    inputs = meta.get("inputs") or []
    return names == set(TISSUE_NAMES.values()) and bool(inputs) and all(
        str(entry.get("modality", "")).upper() == "MR" for entry in inputs)


def uncertainty_methods(meta: Mapping[str, Any]) -> tuple[str, ...]:
    """The uncertainty methods that apply to a package: ``auto`` when it declares maps of its own,
    ``tta`` always (flips of any network), ``mc_dropout`` when its network has dropout, ``uasr`` when it
    carries REHRSeg's self-SR teacher (``seg_uasr``)."""
    declared = meta.get("uncertainty") or []
    applies = {AUTO: bool(declared), "tta": True, "mc_dropout": has_dropout(meta.get("config", {})),
               UASR: f"seg_{UASR}" in declared}
    return tuple(method for method in UNCERTAINTY_METHODS if applies[method])


__all__ = [
    "FACTOR_AXES",
    "REQUIRED_FIELDS",
    "SCHEMA_VERSION",
    "ScaleSpec",
    "has_dropout",
    "segments_brain_tissue",
    "uncertainty_methods",
    "validate_metadata",
]
