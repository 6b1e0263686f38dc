"""Checks run before any heavy work, each failing with a message that says what to change.

TotalSegmentator and MONAIAuto3DSeg start the network and fail minutes later on a wrong
channel count or an out-of-memory error; here the same problems are found in milliseconds from
the model's ``model.json`` and the input geometry, and reported as one line the widget shows.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from JointSRSegLib.baselines import baseline_tasks
from JointSRSegLib.defaults import quality_text
from JointSRSegLib.errors import InputError
from JointSRSegLib.geometry import anisotropy, through_plane_axis
from JointSRSegLib.package_schema import uncertainty_methods
from JointSRSegLib.selfsr_prior import available_priors
from JointSRSegLib.terminology import GREY_MATTER_SNOMED, WHITE_MATTER_SNOMED
from JointSRSegLib.vocabulary import (
    ADAPTATION,
    AUTO,
    BASELINE_NAMES,
    DEFAULT_BASELINE,
    IMAGE_TASKS,
    PROTOCOL_TEXT,
    SCALE_FACTORS,
    SEGMENTATION_BASELINES,
    SELF_SUPERVISED,
    TASK_TEXT,
    THROUGH_PLANE_PROTOCOLS,
    UASR,
    check_factor,
    check_method_applies,
    check_uncertainty_method,
    device_choices,
)
from JointSRSegLib.volume import Volume

# The library's baselines (JointSRSegLib.vocabulary, the one list), B-spline first: the fallback model.
BASELINES = (DEFAULT_BASELINE,) + tuple(name for name in BASELINE_NAMES if name != DEFAULT_BASELINE)
# "Segment the SR output with" choices: none (the model's own segmentation, if any) or a classical method.
SEG_MODEL_NONE = "none"
SEG_MODELS = (SEG_MODEL_NONE,) + SEGMENTATION_BASELINES
TISSUE_LABELS = [
    {"value": 1, "name": "Grey matter", "color": [200, 120, 90], "snomed": GREY_MATTER_SNOMED},
    {"value": 2, "name": "White matter", "color": [240, 240, 200], "snomed": WHITE_MATTER_SNOMED},
]
# Why an uncertainty method does not apply to a model that lacks it (the panel's one-line refusal).
METHOD_NEEDS = {
    AUTO: "the model has no uncertainty map of its own",
    "tta": "flip test-time augmentation samples a trained network; this model is none",
    "mc_dropout": "its network has no dropout, so every Monte-Carlo sample would be the same",
    UASR: "the UASR map is REHRSeg's self-SR teacher's; this model carries none",
}
RESEARCH_USE = "Research use, not for diagnosis."
MODALITY_ALIASES = {"MRI": "MR", "MR": "MR", "CT": "CT", "PT": "PT", "PET": "PT"}
# Working memory per output voxel and task: float32 output + the resampler's float64 copy + input share.
BASELINE_BYTES_PER_OUTPUT_VOXEL = 16
# Activations of a 3D transformer/U-Net per output voxel when model.json gives no figure (measured order).
MODEL_BYTES_PER_OUTPUT_VOXEL = 200
GIB = 1024**3


@dataclass
class ModelDescription:
    """What the widget shows about a model before the user runs it (the texts are built here, without Qt)."""

    id: str
    name: str
    description: str  # the model card's summary (model.json ``description``)
    tasks: tuple[str, ...]
    inputs: tuple[tuple[str, str], ...]  # (channel name, modality)
    license: str = ""
    intended_use: str = ""
    version: str = ""
    labels: list[dict[str, Any]] = field(default_factory=list)
    uncertainty: tuple[str, ...] = ()
    expected_runtime: dict[str, Any] = field(default_factory=dict)
    factors: tuple[int, ...] = SCALE_FACTORS
    is_baseline: bool = False
    protocols: tuple[str, ...] = THROUGH_PLANE_PROTOCOLS  # input protocols the model serves (sr, interp, inplane)
    # Axes the factor magnifies (model.json scale: through_plane, in_plane, all = isotropic, none).
    factor_axis: str = "through_plane"
    # The uncertainty methods (JointSRSegLib.vocabulary.UNCERTAINTY_METHODS) that apply to this model.
    uncertainty_methods: tuple[str, ...] = ()
    source: str = ""  # builtin | user | "" (part of the module)
    quality: str = ""  # what the model card measured (JointSRSegLib.defaults.quality_text)

    def runtime_text(self) -> str:
        """e.g. "about 12 s on GPU (RTX 3090), about 300 s on CPU"."""
        runtime = self.expected_runtime
        if self.is_baseline:
            return "seconds on CPU (no GPU needed)"
        parts = []
        if "seconds_per_volume" in runtime:
            gpu = f" ({runtime['gpu']})" if runtime.get("gpu") else ""
            parts.append(f"about {runtime['seconds_per_volume']} s on GPU{gpu}")
        if "cpu_seconds_per_volume" in runtime:
            parts.append(f"about {runtime['cpu_seconds_per_volume']} s on CPU")
        return ", ".join(parts) or "not stated by the package"

    def intended_use_text(self) -> str:
        """The card's intended use; the module's research-use notice is added when the card lacks it."""
        use = self.intended_use.strip()
        if "not for diagnosis" in use.lower():
            return use
        return f"{use.rstrip('.')}. {RESEARCH_USE}" if use else RESEARCH_USE

    def scale_text(self) -> str:
        """e.g. "×4 (thick slices)", "×2 or ×4 (gapped slices)", "×2–×8 (thick slices, gapped slices)"."""
        steps = list(self.factors)
        contiguous = len(steps) > 2 and steps == list(range(steps[0], steps[-1] + 1))
        factors = f"×{steps[0]}–×{steps[-1]}" if contiguous else " or ".join(f"×{f}" for f in steps)
        where = ", ".join(PROTOCOL_TEXT.get(p, p) for p in self.protocols)
        if self.factor_axis == "all":
            where += ", every axis"
        return f"{factors} ({where})" if factors else where

    def menu_text(self) -> str:
        """The selector entry, name and id: "B-spline interpolation — bspline"."""
        return self.id if self.name in ("", self.id) else f"{self.name} — {self.id}"

    def card_text(self) -> str:
        """Name, card summary, licence and intended use (tooltip of the entry and the box under the selector)."""
        inputs = ", ".join(f"{name} ({modality})" for name, modality in self.inputs)
        version = f", version {self.version}" if self.version else ""
        lines = [
            f"{self.name or self.id} ({self.id}{version})",
            self.description,
            f"Tasks: {', '.join(TASK_TEXT.get(t, t) for t in self.tasks)}.  Scale: {self.scale_text()}.  "
            f"Inputs: {inputs}.",
        ]
        if self.quality:
            lines.append(self.quality)
        lines += [
            f"Expected time: {self.runtime_text()}.",
            f"Licence: {self.license or 'not stated'}.",
            f"Intended use: {self.intended_use_text()}",
        ]
        return "\n".join(lines)

    def summary(self) -> str:
        return self.card_text()


def describe_baseline(name: str) -> ModelDescription:
    label_only = name == "contour"
    segments = name in SEGMENTATION_BASELINES
    return ModelDescription(
        id=name,
        name={
            "nearest": "Nearest neighbour",
            "linear": "Linear interpolation",
            "bspline": "B-spline interpolation",
            "lanczos": "Lanczos-3 interpolation",
            "contour": "Contour interpolation (label maps)",
            "atropos": "B-spline + ANTs Atropos (GM/WM)",
        }.get(name, name),
        description={
            "nearest": "Nearest-neighbour interpolation (images or label maps).",
            "linear": "Linear interpolation.",
            "bspline": "Cubic B-spline interpolation: the classical reference every model must beat.",
            "lanczos": "Lanczos-3 windowed-sinc interpolation.",
            "contour": "Morphological contour interpolation of label maps (Albu et al. 2008).",
            "atropos": "Cubic B-spline SR, then 3-class ANTs Atropos (k-means + MRF) GM/WM segmentation inside "
            "a brain mask found from the image; T1-like or T2-like contrast detected (not FLAIR). "
            "Needs antspyx (pip install antspyx).",
        }.get(name, f"{name} (classical baseline)."),
        tasks=baseline_tasks(name),
        inputs=(("label map", "any"),) if label_only else (("image", "any"),),
        license="Apache-2.0 (part of JointSRSeg)",
        intended_use=(
            "Classical segmentation, the reference for the trained models. "
            if segments
            else "Classical interpolation, the reference for the trained models. "
        )
        + RESEARCH_USE,
        labels=list(TISSUE_LABELS) if segments else [],
        uncertainty=("seg_posterior",) if segments else (),  # calibrated P(label wrong) (JointSRSegLib.calibration)
        uncertainty_methods=(AUTO,) if segments else (),
        is_baseline=True,
    )


def describe_self_supervised() -> ModelDescription:
    """The library's self-supervised SR: trains on the input's own in-plane detail (SMORE-style)."""
    return ModelDescription(
        id=SELF_SUPERVISED,
        name="Self-supervised SR",
        description="Self-supervised super-resolution: learns from the volume's own high-resolution "
        "in-plane detail, so it needs no training data (Zhao et al. 2021, SMORE).",
        tasks=IMAGE_TASKS,
        inputs=(("image", "any"),),
        license="Apache-2.0 (part of JointSRSeg)",
        intended_use="Research use, not for diagnosis.",
        expected_runtime={"seconds_per_volume": 60, "cpu_seconds_per_volume": 300},
    )


def describe_adaptation() -> ModelDescription:
    """The shipped self-SR prior fine-tuned on the input: ``self`` started from a trained network; its
    tasks, protocols and factors are those of the priors shipped (``Resources/Priors``)."""
    priors = available_priors()
    protocols = tuple(p for p in IMAGE_TASKS if any(q == p for q, _ in priors)) or IMAGE_TASKS[:1]
    shipped = "; ".join(f"{p} x{', x'.join(str(f) for q, f in sorted(priors) if q == p)}" for p in protocols)
    return ModelDescription(
        id=ADAPTATION,
        name="Adapted SR (shipped prior + self-training)",
        description="Starts from a small SR network pre-trained on real and synthetic head scans and fine-tunes "
        "it on the volume's own in-plane detail; stops when its held-back loss stops improving. "
        f"One-channel images; priors shipped: {shipped or 'none'}.",
        tasks=protocols,
        inputs=(("image", "any"),),
        license="Apache-2.0 (part of JointSRSeg); prior trained on OpenNeuro ds002748 (CC0) and SynthSeg "
        "label maps (Apache-2.0)",
        intended_use="Research use, not for diagnosis.",
        expected_runtime={"seconds_per_volume": 60, "cpu_seconds_per_volume": 120},
        factors=tuple(sorted({f for _, f in priors})),
        protocols=protocols,
    )


def describe_package(package: Any, source: str = "") -> ModelDescription:
    meta = package.metadata
    return ModelDescription(
        id=package.id,
        name=meta["name"],
        description=meta["description"],
        tasks=tuple(meta["tasks"]),
        inputs=tuple((c["name"], c["modality"]) for c in meta["inputs"]),
        license=meta["license"],
        intended_use=meta["intended_use"],
        version=meta["version"],
        labels=list(meta["labels"]),
        uncertainty=tuple(meta["uncertainty"]),
        uncertainty_methods=uncertainty_methods(meta),
        expected_runtime=dict(meta["expected_runtime"]),
        factors=tuple(package.scale.factors),
        protocols=(meta["protocol"],),
        factor_axis=package.scale.factor_axis,
        source=source,
        quality=quality_text(meta),
    )


def normalized_modality(value: str | None) -> str | None:
    if not value:
        return None
    return MODALITY_ALIASES.get(value.strip().upper(), value.strip().upper())


@dataclass
class CheckResult:
    """Outcome of the pre-run checks: the through-plane axis to use and non-blocking warnings."""

    axis: int
    estimated_bytes: int
    warnings: list[str] = field(default_factory=list)


def check_request(
    volume: Volume,
    model: ModelDescription,
    tasks: tuple[str, ...],
    scale: int,
    axis: int | str,
    modalities: list[str | None],
    device: str,
    uncertainty: bool,
    available_bytes: int | None = None,
    protocol: str | None = None,
    uncertainty_method: str = AUTO,
) -> CheckResult:
    """Raise InputError (what to change) or return the axis, memory estimate and warnings.

    ``protocol`` is the kind of input the user asked for (sr: thick slices, interp: gapped slices,
    inplane: coarse pixels in each slice); None accepts whatever the model was made for.
    ``uncertainty_method`` (auto, tta, mc_dropout, uasr) must be one the model has when ``uncertainty`` is on.
    """
    source = volume.source
    if not tasks:
        raise InputError(None, "tick at least one task (super-resolution, slice interpolation or segmentation)")
    unsupported = [t for t in tasks if t not in model.tasks]
    if unsupported:
        raise InputError(
            model.id,
            f"this model does {', '.join(model.tasks)}, not {', '.join(unsupported)}; "
            "choose a model that lists the task or untick it",
        )
    _check_protocol(model, protocol)
    if volume.channels != len(model.inputs) and not model.is_baseline:
        names = ", ".join(name for name, _ in model.inputs)
        raise InputError(
            model.id,
            f"the model takes {len(model.inputs)} input volume(s) ({names}); {volume.channels} given -- "
            "select one co-registered volume per input, in that order, or choose another model",
        )
    if model.is_baseline and volume.channels != 1:
        raise InputError(model.id, f"classical interpolation takes one volume; {volume.channels} given")
    for (name, expected), actual in zip(model.inputs, modalities):
        wanted, found = normalized_modality(expected), normalized_modality(actual)
        if wanted not in (None, "ANY") and found is not None and wanted != found:
            raise InputError(
                source,
                f"input {name!r} must be {expected}, the selected volume is {actual}; "
                "select a matching volume or a model trained on this modality",
            )
    factor = check_factor(scale, source)
    if factor not in model.factors:
        supported = ", ".join(f"×{f}" for f in model.factors)
        raise InputError(model.id, f"the model supports scale {supported}, not ×{factor}; pick one of those")
    if uncertainty:
        _check_uncertainty(model, uncertainty_method)
    if axis in (None, "auto"):
        try:
            through = through_plane_axis(volume, "auto")
        except InputError:
            spacing = ", ".join(f"{s:.3g}" for s in volume.spacing)
            raise InputError(
                source,
                f"cannot tell the slice axis: the spacing ({spacing} mm) is nearly isotropic; "
                "choose the axis explicitly (I, J or K) or use an anisotropic (thick-slice) volume",
            ) from None
    else:
        through = through_plane_axis(volume, int(axis))
    inplane = (protocol or model.protocols[0]) == "inplane"
    isotropic = model.factor_axis == "all"  # e.g. SwinSR-UNETR's x2 in every axis: no slice axis to warn about
    warnings = [] if inplane or isotropic else _geometry_warnings(volume, through, factor)
    voxels_per_input_voxel = factor**3 if isotropic else factor * factor if inplane else factor
    estimate = estimate_memory_bytes(volume, tasks, voxels_per_input_voxel, model)
    _check_memory(estimate, device, model, available_bytes)
    return CheckResult(axis=through, estimated_bytes=estimate, warnings=warnings)


def _check_uncertainty(model: ModelDescription, method: str) -> None:
    check_uncertainty_method(method)
    if not model.uncertainty_methods:
        raise InputError(
            model.id, "this model provides no uncertainty map; untick Uncertainty or choose a model that lists one"
        )
    check_method_applies(method, model.id, model.uncertainty_methods, METHOD_NEEDS[method])


def _check_protocol(model: ModelDescription, protocol: str | None) -> None:
    if protocol is None or protocol in model.protocols:
        return
    if protocol == "inplane":
        raise InputError(
            model.id,
            "works through-plane (thick or gapped slices), not in-plane; choose an in-plane package "
            "or set SR direction to through-plane",
        )
    if "inplane" in model.protocols:
        raise InputError(
            model.id, "does in-plane super-resolution; set SR direction to in-plane or choose a through-plane model"
        )
    made_for = ", ".join(PROTOCOL_TEXT.get(p, p) for p in model.protocols)
    raise InputError(
        model.id, f"was made for {made_for}, not {PROTOCOL_TEXT.get(protocol, protocol)}; choose a model for this input"
    )


def _geometry_warnings(volume: Volume, axis: int, factor: int) -> list[str]:
    spacing = np.asarray(volume.spacing)
    in_plane = float(np.delete(spacing, axis).min())
    ratio = float(spacing[axis]) / in_plane
    warnings = []
    if ratio < 1.5:
        warnings.append(
            f"axis {'IJK'[axis]} is not clearly thicker than the others (anisotropy {anisotropy(volume.grid):.2f}); "
            "the output will have thinner slices than the in-plane pixels"
        )
    elif abs(ratio - factor) / ratio > 0.35:
        warnings.append(
            f"slices are {ratio:.1f}× thicker than the in-plane pixels; scale ×{factor} gives "
            f"{spacing[axis] / factor:.2f} mm slices -- ×{max(2, min(8, round(ratio)))} would make voxels isotropic"
        )
    return warnings


def estimate_memory_bytes(volume: Volume, tasks: tuple[str, ...], factor: int, model: ModelDescription) -> int:
    """Peak working memory of the run (outputs and intermediate copies), in bytes.

    ``factor`` is output voxels per input voxel: R through-plane, R² for in-plane SR, R³ isotropic.
    """
    output_voxels = int(np.prod(volume.shape)) * factor
    per_voxel = BASELINE_BYTES_PER_OUTPUT_VOXEL if model.is_baseline else MODEL_BYTES_PER_OUTPUT_VOXEL
    estimate = output_voxels * per_voxel * max(1, len(tasks)) + volume.array.nbytes
    stated = model.expected_runtime.get("peak_gpu_memory_gb")
    if isinstance(stated, (int, float)) and not model.is_baseline:
        estimate = max(estimate, int(stated * GIB))
    return int(estimate)


def available_ram_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # not POSIX (Windows): skip the check
        return None


def free_gpu_bytes() -> int | None:
    """Free CUDA memory, asked only of a PyTorch this process has already imported.

    The module never imports torch itself (opening the panel or pressing Apply must not start
    PyTorch or create a CUDA context inside Slicer): the panel's runs happen in a worker process,
    which checks its own device.  Console runs in-process import torch at their first model run.
    """
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    free, _ = torch.cuda.mem_get_info()
    return int(free)


def _check_memory(estimate: int, device: str, model: ModelDescription, available: int | None) -> None:
    auto_gpu = device == "auto" and not model.is_baseline and free_gpu_bytes() is not None
    on_gpu = device.startswith("cuda") or auto_gpu
    if on_gpu:
        free = available if available is not None else free_gpu_bytes()
        if free is not None and estimate > free:
            raise InputError(
                model.id,
                f"needs about {estimate / GIB:.1f} GiB of GPU memory, {free / GIB:.1f} GiB is free; "
                "choose device CPU, a smaller tile size, a smaller scale factor or crop the volume (Crop Volume)",
            )
        return
    free = available if available is not None else available_ram_bytes()
    if free is not None and estimate > free:
        raise InputError(
            model.id,
            f"needs about {estimate / GIB:.1f} GiB of memory, {free / GIB:.1f} GiB is free; "
            "crop the volume (Crop Volume module), use a smaller scale factor or a smaller tile size, "
            "or close other applications",
        )


DEVICES = device_choices(gpus=4)  # the panel's choices: auto, cpu, cuda (= GPU 0), cuda:1-3, mps


def resolve_device(device: str, model: ModelDescription) -> str:
    """The device a run will use: classical baselines always run on the CPU; ``auto`` stays ``auto``
    (the worker's PyTorch picks CUDA, then MPS, then the CPU) unless this process already has torch."""
    device = (device or AUTO).lower()
    if model.is_baseline or device == "cpu":
        return "cpu"
    if device == "cuda:0":
        return "cuda"
    if device.startswith("cuda") or device == "mps":
        return device
    if "torch" in sys.modules:
        return "cuda" if free_gpu_bytes() is not None else "cpu"
    return "auto"


def describe_device(device: str) -> str:
    """The device line, without importing torch: e.g. "CPU (8 threads)", "GPU 1 (CUDA)", "auto: ..."."""
    device = (device or "auto").lower()
    torch = sys.modules.get("torch")
    if device.startswith("cuda") and torch is not None and torch.cuda.is_available():
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if index < torch.cuda.device_count():
            props = torch.cuda.get_device_properties(index)
            return f"GPU {index}: {props.name} ({props.total_memory / GIB:.0f} GiB)"
        return f"GPU {index} requested but PyTorch sees {torch.cuda.device_count()} GPU(s)"
    if device.startswith("cuda"):
        index = device.split(":", 1)[1] if ":" in device else "0"
        return f"GPU {index} (CUDA; checked when the run starts)"
    if device == "mps":
        return "Apple GPU (MPS; checked when the run starts)"
    if device == "auto":
        return "auto: the GPU when PyTorch sees one (CUDA, then Apple MPS), else the CPU"
    threads = os.environ.get("OMP_NUM_THREADS") or str(os.cpu_count())
    return f"CPU ({threads} threads)"
