"""The words every door accepts, defined once: tasks, protocols, scale factors, axes, classical
models, output formats, devices, uncertainty methods and the kinds of map each produces.

Why one module: the API, the CLI, the inference engine, the package schema, the defaults, the
training data and the Slicer panel each kept their own copy of these lists, and the copies drifted
(the panel offered uncertainty methods the engine refused).  Every door now takes its choices from
here and validates with the ``check_*`` functions below, so a bad value fails the same way
everywhere: one :class:`~JointSRSegLib.errors.InputError` (a ``ValueError``) naming the value given
and the values allowed.  It imports only numpy, so Slicer's process, the worker and the package
schema use it without starting torch or SimpleITK.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

# --------------------------------------------------------------------------- tasks and protocols

TASKS = ("sr", "interp", "seg")
IMAGE_TASKS = ("sr", "interp")  # tasks whose output is an image on a protocol grid (a run serves one)
TASK_TEXT: Mapping[str, str] = {"sr": "super-resolution", "interp": "slice interpolation", "seg": "segmentation"}
# How the low-resolution input was made (README "The standard degradation protocols").
PROTOCOLS = ("sr", "interp", "inplane")
PROTOCOL_TEXT: Mapping[str, str] = {"sr": "thick slices", "interp": "gapped slices", "inplane": "in-plane"}
PROTOCOL_OF_TASK: Mapping[str, str] = {"sr": "sr", "interp": "interp"}  # sr subdivides slices, interp inserts them
THROUGH_PLANE_PROTOCOLS = ("sr", "interp")  # what the classical interpolators and the self-supervised mode serve

# --------------------------------------------------------------------------- scale factors and axes

MIN_FACTOR, MAX_FACTOR = 2, 8
SCALE_FACTORS = tuple(range(MIN_FACTOR, MAX_FACTOR + 1))  # the factors R the protocols are defined for
INPUT_GRID_FACTOR = 1  # scale 1: segment an HR input on its own grid (segmentation-only Atropos)
AUTO = "auto"  # the through-plane axis detected from the spacing; also the default device and method
AXES = (0, 1, 2)  # voxel axes in ITK order (I, J, K)

# --------------------------------------------------------------------------- models that need no package

IMAGE_BASELINES = ("nearest", "linear", "bspline", "lanczos")  # classical interpolation of images
LABEL_BASELINES = ("contour",)  # morphological contour interpolation: label maps only
LABEL_METHODS = ("nearest", "contour")  # how a label-map input is upsampled
SEGMENTATION_BASELINES = ("atropos",)  # classical GM/WM segmentation (B-spline SR first as --model)
BASELINE_NAMES = IMAGE_BASELINES + LABEL_BASELINES + SEGMENTATION_BASELINES
DEFAULT_BASELINE = "bspline"  # the reference every model must beat, and the fallback model
SELF_SUPERVISED = "self"  # self-supervised SR trained on the scan itself
ADAPTATION = "adapt"  # the shipped self-SR prior fine-tuned on the scan (JointSRSegLib.selfsr_prior)
SELF_TRAINED = (SELF_SUPERVISED, ADAPTATION)  # models trained on the scan itself, no package needed
RESERVED_MODEL_IDS = BASELINE_NAMES + SELF_TRAINED  # no package may take these ids

# --------------------------------------------------------------------------- outputs and devices

OUTPUT_FORMATS = ("nii.gz", "nrrd")
DEVICES = ("auto", "cpu", "cuda", "mps")  # auto: CUDA, then Apple MPS, then the CPU
TRAINING_DEVICES = ("auto", "cpu", "cuda")  # the training loop has no MPS path
_GPU_INDEX = re.compile(r"^cuda:(\d+)$")

# --------------------------------------------------------------------------- uncertainty

# How an uncertainty map is estimated (``--uncertainty-method``, predict's ``uncertainty_method``,
# the panel's Method menu).
# ``uasr`` is REHRSeg's teacher map on request only: on held-out scans it ranks label errors at chance
# (AUROC 0.49 / 0.53, docs/benchmarks.md), so ``auto`` gives REHRSeg packages the softmax entropy.
UASR = "uasr"
UNCERTAINTY_METHODS = ("auto", "tta", "mc_dropout", UASR)
SAMPLING_METHODS = ("tta", "mc_dropout")  # several forwards of a network: packages only
UNCERTAINTY_METHOD_TEXT: Mapping[str, str] = {
    "auto": "the model's own maps: SR variance head, softmax entropy",
    "tta": "flip test-time augmentation: the spread over the four in-plane flips, identity included",
    "mc_dropout": "Monte-Carlo dropout samples (packages whose network has dropout)",
    UASR: "REHRSeg's UASR map of its self-SR teacher (REHRSeg packages; no signal for label errors measured)",
}
# The kind of map each method gives per task (``model.uncertainty_kinds`` of the run report): a
# package's own heads under ``auto``, the sample spread and the mutual information when sampling.
KINDS_OF_METHOD: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "auto": {"sr": ("aleatoric",), "interp": ("aleatoric",), "seg": ("entropy",)},
    "tta": {"sr": ("sample_variance",), "interp": ("sample_variance",), "seg": ("mutual_information",)},
    "mc_dropout": {"sr": ("sample_variance",), "interp": ("sample_variance",), "seg": ("mutual_information",)},
    UASR: {"sr": ("aleatoric",), "interp": ("aleatoric",), "seg": ("uasr",)},
}
# What the value of an uncertainty map means (the legend's unit in preview.png and in Slicer).  The
# calibrated maps of atropos, self and adapt (JointSRSegLib.calibration) have a unit; a package's own
# heads are raw scores on 0-1 (RAW_UNCERTAINTY_UNIT) until a calibration of theirs is fitted.
CALIBRATED_UNITS: Mapping[str, str] = {
    "uncertainty_seg": "P(label wrong)",
    "uncertainty_sr": "expected |error| / intensity range",
}
RAW_UNCERTAINTY_UNIT = "uncalibrated score, 0 certain - 1 uncertain"
# The top of the colour scale of each calibrated map (its unit's value drawn brightest); raw scores use 1.
DISPLAY_MAXIMUM: Mapping[str, float] = {"uncertainty_seg": 1.0, "uncertainty_sr": 0.2}
# "Likely wrong" by default: a label more likely wrong than right; an intensity off by 5 % of the range.
LIKELY_WRONG_THRESHOLD: Mapping[str, float] = {"uncertainty_seg": 0.5, "uncertainty_sr": 0.05}
# What a package may declare in model.json ``uncertainty`` as "<task>_<kind>": every kind a method makes.
UNCERTAINTY_KINDS: Mapping[str, tuple[str, ...]] = {
    task: tuple(dict.fromkeys(kind for method in UNCERTAINTY_METHODS for kind in KINDS_OF_METHOD[method][task]))
    for task in TASKS
}
# What one unit of each map means (the web panel's colour legend): every map is unitless in [0, 1]
# (JointSRSegLib.uncertainty), 0 = certain; "posterior" is ANTs Atropos' 1 - max posterior.
UNCERTAINTY_KIND_TEXT: Mapping[str, str] = {
    "aleatoric": "σ/(σ+c), σ the predicted SD, c = 5 % of the robust intensity range",
    "sample_variance": "σ/(σ+c), σ the SD over the samples, c = 5 % of the robust intensity range",
    "entropy": "softmax entropy / log K (K classes)",
    "mutual_information": "mutual information over the samples / log K (K classes)",
    "uasr": "REHRSeg's UASR map (sigmoid of the SR teacher's error)",
    "posterior": "1 − max class posterior (Atropos)",
}


def uncertainty_unit_text(kind: str | None) -> str:
    """The legend's unit line for a map of ``kind`` (the run report's ``model.uncertainty_kinds``)."""
    meaning = UNCERTAINTY_KIND_TEXT.get(kind or "")
    return "unitless, 0 = certain … 1 = uncertain" + (f"; {meaning}" if meaning else "")


# --------------------------------------------------------------------------- validation


def describe_value(value: Any) -> str:
    """``repr`` cut to 60 characters, for messages about a value that may be huge."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def is_integer(value: Any) -> bool:
    """A Python or numpy integer, not a bool (``True`` is no axis and no factor)."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _listed(allowed: Sequence[Any]) -> str:
    return ", ".join(str(a) for a in allowed)


def check_choice(value: Any, allowed: Sequence[str], what: str, source: str | Path | None = None) -> str:
    """``value`` when it is one of ``allowed``; else InputError "unknown <what> 'x'; choose from a, b"."""
    if isinstance(value, str) and value in allowed:
        return value
    raise InputError(source, f"unknown {what} {describe_value(value)}; choose from {_listed(allowed)}")


def parse_tasks(tasks: Any, source: str | Path | None = None, allow_empty: bool = False) -> tuple[str, ...]:
    """``"sr,seg"`` or ``["SR", "seg"]`` -> ``("sr", "seg")``: order kept, duplicates dropped.

    At least one task unless ``allow_empty`` (the panel asks for a default model with nothing ticked).
    """
    if isinstance(tasks, str):
        items = tasks.split(",")
    elif isinstance(tasks, Sequence) and not isinstance(tasks, bytes) and all(isinstance(t, str) for t in tasks):
        items = list(tasks)
    else:
        raise InputError(
            source, f"tasks must be a string like 'sr,seg' or a list of task names, got {describe_value(tasks)}"
        )
    wanted = tuple(dict.fromkeys(t.strip().lower() for t in items if t.strip()))
    unknown = [t for t in wanted if t not in TASKS]
    if unknown:
        names = ", ".join(repr(t) for t in unknown)
        raise InputError(source, f"unknown task(s) {names}; choose from {_listed(TASKS)}")
    if not wanted and not allow_empty:
        raise InputError(source, f"no task given; choose from {_listed(TASKS)}")
    return wanted


def check_protocol(protocol: Any, source: str | Path | None = None) -> str:
    return check_choice(protocol, PROTOCOLS, "protocol", source)


def check_scale(scale: Any, source: str | Path | None = None) -> None:
    """A finite number: what an API caller may pass as ``scale`` before the request says which
    factors fit (``scale=1`` is the input grid of segmentation-only Atropos)."""
    finite = is_integer(scale) or (isinstance(scale, float | np.floating) and math.isfinite(float(scale)))
    if not finite:
        raise InputError(
            source, f"scale must be an integer factor {MIN_FACTOR}-{MAX_FACTOR}, got {describe_value(scale)}"
        )


def check_factor(factor: Any, source: str | Path | None = None) -> int:
    """An integer factor R in 2-8 (an integral float such as the CLI's ``4.0`` counts)."""
    check_scale(factor, source)
    if not float(factor).is_integer():
        raise InputError(source, f"scale factor {factor} must be an integer between {MIN_FACTOR} and {MAX_FACTOR}")
    if int(factor) not in SCALE_FACTORS:
        raise InputError(source, f"scale factor {factor} is outside {MIN_FACTOR}-{MAX_FACTOR}")
    return int(factor)


def check_axis(axis: Any, source: str | Path | None = None) -> int:
    """An explicit voxel axis 0, 1 or 2 (integers only: 1.5 is no axis)."""
    if is_integer(axis) and int(axis) in AXES:
        return int(axis)
    raise InputError(source, f"axis {describe_value(axis)} is not a voxel axis; choose from {_listed(AXES)}")


def check_axis_choice(axis: Any, source: str | Path | None = None) -> int | str:
    """What the API takes as ``axis``: ``"auto"`` (or None) to detect it, else 0, 1 or 2."""
    if axis is None or (isinstance(axis, str) and axis == AUTO):
        return AUTO
    if is_integer(axis) and int(axis) in AXES:
        return int(axis)
    raise InputError(source, f"axis must be 0, 1, 2 or 'auto', got {describe_value(axis)}")


def parse_axis(text: str) -> int | str:
    """The CLI's ``--axis`` text: ``auto``, ``0``, ``1`` or ``2``."""
    if text == AUTO:
        return AUTO
    if text in tuple(str(a) for a in AXES):
        return int(text)
    raise InputError(None, f"--axis {text!r} must be 0, 1, 2 or auto")


def check_device(device: Any, source: str | Path | None = None, gpu_index: bool = False) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``mps`` (any case), lower-cased; with ``gpu_index`` also
    ``cuda:N`` (the panel and the worker pick GPU N through ``CUDA_VISIBLE_DEVICES``)."""
    text = device.strip().lower() if isinstance(device, str) else None
    if text in DEVICES or (gpu_index and text is not None and _GPU_INDEX.match(text)):
        return text
    allowed = DEVICES + (("cuda:N",) if gpu_index else ())
    raise InputError(source, f"unknown device {describe_value(device)}; choose from {_listed(allowed)}")


def device_choices(gpus: int) -> tuple[str, ...]:
    """A device menu for ``gpus`` GPUs: auto, cpu, cuda (GPU 0), cuda:1 ... cuda:<gpus-1>, mps."""
    return ("auto", "cpu", "cuda") + tuple(f"cuda:{i}" for i in range(1, gpus)) + ("mps",)


def check_output_format(fmt: Any, source: str | Path | None = None) -> str:
    return check_choice(fmt, OUTPUT_FORMATS, "output format", source)


def check_segmentation_model(name: Any, source: str | Path | None = None) -> str:
    """A classical method that segments another model's SR output (predict's ``seg_model``)."""
    return check_choice(name, SEGMENTATION_BASELINES, "segmentation model", source)


def check_uncertainty_method(method: Any, source: str | Path | None = None) -> str:
    return check_choice(method, UNCERTAINTY_METHODS, "uncertainty method", source)


def check_method_applies(method: str, model: str, applicable: Sequence[str], why: str) -> None:
    """Refuse, in one line, an uncertainty method the model cannot use (``why`` says what it lacks)."""
    if method in applicable:
        return
    fix = f"choose {' or '.join(applicable)}" if applicable else "untick uncertainty (--uncertainty)"
    raise InputError(model, f"uncertainty method {method!r} does not apply: {why}; {fix}")


def declared_uncertainty(tasks: Sequence[str]) -> tuple[str, ...]:
    """The ``"<task>_<kind>"`` entries a package with ``tasks`` may list in model.json ``uncertainty``."""
    return tuple(f"{task}_{kind}" for task in tasks for kind in UNCERTAINTY_KINDS[task])


__all__ = [
    "ADAPTATION",
    "AUTO",
    "AXES",
    "BASELINE_NAMES",
    "DEFAULT_BASELINE",
    "DEVICES",
    "IMAGE_BASELINES",
    "IMAGE_TASKS",
    "INPUT_GRID_FACTOR",
    "KINDS_OF_METHOD",
    "LABEL_BASELINES",
    "LABEL_METHODS",
    "MAX_FACTOR",
    "MIN_FACTOR",
    "OUTPUT_FORMATS",
    "PROTOCOLS",
    "PROTOCOL_OF_TASK",
    "PROTOCOL_TEXT",
    "RESERVED_MODEL_IDS",
    "SAMPLING_METHODS",
    "SCALE_FACTORS",
    "SEGMENTATION_BASELINES",
    "SELF_SUPERVISED",
    "SELF_TRAINED",
    "TASKS",
    "TASK_TEXT",
    "THROUGH_PLANE_PROTOCOLS",
    "TRAINING_DEVICES",
    "UNCERTAINTY_KINDS",
    "UNCERTAINTY_KIND_TEXT",
    "UASR",
    "UNCERTAINTY_METHODS",
    "UNCERTAINTY_METHOD_TEXT",
    "check_axis",
    "check_axis_choice",
    "check_choice",
    "check_device",
    "check_factor",
    "check_method_applies",
    "check_output_format",
    "check_protocol",
    "check_scale",
    "check_segmentation_model",
    "check_uncertainty_method",
    "declared_uncertainty",
    "describe_value",
    "device_choices",
    "is_integer",
    "parse_axis",
    "parse_tasks",
    "uncertainty_unit_text",
]
