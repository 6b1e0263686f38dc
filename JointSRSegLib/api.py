"""The Python API: ``predict`` takes a volume and returns outputs on the protocol grids.

>>> from JointSRSegLib import predict, read_volume                       # doctest: +SKIP
>>> result = predict(read_volume("thick.nii.gz"), model="bspline", tasks=("sr",), scale=4)
>>> result.outputs["sr"].spacing                                          # doctest: +SKIP

The Slicer module and the CLI call exactly this function.  Every problem the user can fix is
raised as :class:`~JointSRSegLib.errors.InputError` before any heavy work starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .arguments import check_predict_arguments
from .baselines import upsample_image, upsample_labels
from .errors import CancelledError, InputError
from .geometry import through_plane_axis
from .io import check_image_content, read_volumes
from .report import StageTimer, describe_grid, describe_volume, package_versions, peak_rss_mb
from .vocabulary import (
    AUTO,
    BASELINE_NAMES,
    DEFAULT_BASELINE,
    IMAGE_TASKS,
    INPUT_GRID_FACTOR,
    PROTOCOL_OF_TASK,
    SEGMENTATION_BASELINES,
    SELF_TRAINED,
    check_factor,
    check_method_applies,
    check_segmentation_model,
    parse_tasks,
)
from .volume import Volume

ProgressCallback = Callable[[float, str], None]


class CancelToken:
    """Set by the caller (e.g. the Slicer Cancel button); checked by long work between steps."""

    def __init__(self):
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def raise_if_cancelled(self) -> None:
        if self.cancelled:
            raise CancelledError("cancelled by the user")


@dataclass
class Prediction:
    """Outputs by name (``sr``, ``interp``, ``seg``, ``uncertainty_sr``, ``uncertainty_seg``) and the
    provenance report that goes to ``report.json``."""

    outputs: dict[str, Volume] = field(default_factory=dict)
    report: dict = field(default_factory=dict)


def load_inputs(inputs: Volume | str | Path | Sequence[str | Path]) -> Volume:
    if isinstance(inputs, Volume):
        return inputs
    paths = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    return read_volumes(paths)


def is_label_map(volume: Volume) -> bool:
    """Integer volume with few distinct values: treated as a label map by the label baselines."""
    if not np.issubdtype(volume.array.dtype, np.integer) or volume.channels != 1:
        return False
    return np.unique(volume.array).size <= 64


def predict(
    inputs: Volume | str | Path | Sequence[str | Path],
    model: str | Path = "bspline",
    tasks: str | Sequence[str] = ("sr",),
    scale: int = 4,
    axis: int | str | None = "auto",
    device: str = "auto",
    uncertainty: bool = False,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    **options,
) -> Prediction:
    """Super-resolve / interpolate / segment ``inputs`` with ``model`` (an id, a path or a baseline).

    ``scale`` is the through-plane factor R (2-8) and ``axis`` the through-plane voxel axis
    (``"auto"``: the largest spacing).  Outputs lie exactly on the protocol grids: ``sr`` on
    ``subdivide_grid``, ``interp`` on ``insert_grid``.

    ``model="auto"`` runs what :func:`JointSRSegLib.defaults.choose_for_input` picks for the request -- the
    path the real-scan report measured best (e.g. SR x4: ``adapt``; SR + segmentation x4: ``adapt`` SR
    segmented by Atropos) -- and the report's ``model_choice`` says what and why.
    ``seg_model="atropos"`` segments the SR/interp output of ``model`` with ANTs Atropos
    (:mod:`JointSRSegLib.atropos`); ``model="atropos"`` is ``model="bspline", seg_model="atropos"``.
    ``scale=1`` with ``tasks=("seg",)`` and Atropos segments an HR input on its own grid.
    Atropos options: ``n4`` (bias correction first), ``atropos_iterations`` (EM iterations, default 5),
    ``atropos_priors`` (``"template"``: registered MNI152 GM/WM priors, the default; ``"none"``: k-means),
    ``atropos_prior_weight`` (default 0.25), ``atropos_mask`` (``"learned"``: the brain-extraction network, the
    default; ``"classical"``: intensity rules).
    """
    check_predict_arguments(inputs, model, tasks, scale, axis, device, uncertainty, progress, cancel, options)
    started = time.perf_counter()
    timer = StageTimer()
    notify = progress or (lambda fraction, stage: None)
    token = cancel or CancelToken()
    seg_model = options.pop("seg_model", None)
    model_name = str(model)
    choice = None
    if model_name == AUTO:  # the path the real-scan report measured best for this request (defaults.py)
        from .defaults import choose_for_input

        choice = choose_for_input(tasks, scale, channels=_channel_count(inputs), seg_model=seg_model)
        model = model_name = str(choice.model)
        seg_model = seg_model or choice.seg_model
    if model_name in SEGMENTATION_BASELINES:
        model_name, seg_model = DEFAULT_BASELINE, model_name
    if seg_model is not None:
        check_segmentation_model(seg_model)
    task_list = parse_tasks(tasks)
    if uncertainty:
        _check_uncertainty_method(str(model), str(options.get("uncertainty_method", AUTO)))
    with timer.stage("checking input"):
        notify(0.0, "checking input")
        volume = load_inputs(inputs)
        own_grid = seg_model is not None and task_list == ("seg",) and scale == INPUT_GRID_FACTOR
        factor = INPUT_GRID_FACTOR if own_grid else check_factor(scale, volume.source)
        label_input = is_label_map(volume)
        if not label_input:
            check_image_content(volume)
        elif choice is not None and model_name not in BASELINE_NAMES:  # auto on a label map: label upsampling
            model = model_name = DEFAULT_BASELINE
            seg_model = None
        elif seg_model is not None:
            raise InputError(volume.source, f"{seg_model} segments images; the input is a label map")
        through_axis = None if own_grid else _through_axis(volume, axis, model_name)
    token.raise_if_cancelled()
    if seg_model is not None:
        outputs, model_report = _run_with_atropos(
            volume, model_name, task_list, factor, through_axis, device, uncertainty, notify, token, timer, **options
        )
    elif model_name in BASELINE_NAMES:
        outputs, model_report = _run_baseline(volume, model_name, task_list, factor, through_axis, label_input, timer)
    else:
        from .inference import run_model_package  # imported lazily: torch start-up only when needed

        outputs, model_report = run_model_package(
            volume, model, task_list, factor, through_axis, device, uncertainty, notify, token, timer, **options
        )
    token.raise_if_cancelled()
    notify(1.0, "done")
    report = {
        "inputs": describe_volume(volume),
        "tasks": list(task_list),
        "scale": factor,
        "through_plane_axis": through_axis,
        "model": model_report,
        **({"model_choice": {"requested": AUTO, "model": model_name, "seg_model": seg_model,
                             "reason": choice.reason}} if choice is not None else {}),
        "outputs": {name: describe_grid(vol.grid) for name, vol in outputs.items()},
        "timings_s": {**timer.seconds, "total": round(time.perf_counter() - started, 4)},
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "versions": package_versions(),
    }
    return Prediction(outputs=outputs, report=report)


def _through_axis(volume: Volume, axis, model: str) -> int | None:
    """The through-plane axis; None for an isotropic ``[R, R, R]`` package on a scan without a single largest
    spacing (it magnifies every axis, so there is no slice axis to ask for)."""
    try:
        return through_plane_axis(volume, axis)
    except InputError:
        if axis not in (None, AUTO) or model in BASELINE_NAMES or model in SELF_TRAINED:
            raise
        from .packaging import resolve_model

        package = resolve_model(model)
        if isinstance(package, str) or package.scale.factor_axis != "all":
            raise
        return None


def _channel_count(inputs) -> int:
    """Channels the inputs will have (a Volume's, or one per file), known before reading them."""
    if isinstance(inputs, Volume):
        return int(inputs.array.shape[0])
    return 1 if isinstance(inputs, str | Path) else len(inputs)


def _check_uncertainty_method(model: str, method: str) -> None:
    """Sampling methods (tta, mc_dropout) need a network: refused for the classical methods before any
    work (Atropos maps its own posterior); the engine checks packages and ``self``."""
    if model in BASELINE_NAMES:
        why = "a classical method has no network to sample (Atropos maps its own posterior)"
        check_method_applies(method, model, (AUTO,), why)


def _run_baseline(
    volume: Volume, method: str, tasks: tuple[str, ...], factor: int, axis: int, label_input: bool, timer: StageTimer
) -> tuple[dict[str, Volume], dict]:
    if "seg" in tasks:
        raise InputError(
            method, "a classical interpolation cannot segment; choose a model with the 'seg' task (jointsrseg models)"
        )
    if method == "contour" and not label_input:
        raise InputError(volume.source, "model 'contour' interpolates label maps; the input is not a label map")
    outputs = {}
    with timer.stage("running"):
        for task in tasks:
            protocol = PROTOCOL_OF_TASK[task]
            if label_input:
                label_method = "contour" if method == "contour" else "nearest"
                outputs[task] = upsample_labels(volume, protocol, factor, axis, label_method)
            else:
                outputs[task] = upsample_image(volume, protocol, factor, axis, method)
    kind = "label" if label_input else "image"
    used = ("contour" if method == "contour" else "nearest") if label_input else method
    return outputs, {"id": used, "source": "baseline", "kind": kind, "weights_sha256": None, "device": "cpu"}


def _run_with_atropos(
    volume: Volume, model: str, tasks, factor, axis, device, uncertainty, notify, token, timer, **options
) -> tuple[dict[str, Volume], dict]:
    """``model`` does SR/interp (B-spline for ``model="atropos"``), Atropos segments its output on the
    same grid; ``tasks=("seg",)`` alone segments the sr protocol grid (``factor=1``: the input grid)."""
    from .atropos import (
        DEFAULT_ITERATIONS,
        DEFAULT_MASK,
        DEFAULT_PRIOR_WEIGHT,
        DEFAULT_PRIORS,
        check_brain_mr,
        check_mr_intensities,
        import_ants,
        segment_tissues,
    )

    import_ants()  # a missing antspyx is reported before any SR work
    image_tasks = tuple(t for t in tasks if t != "seg") or (("sr",) if factor > 1 else ())
    if "seg" in tasks:
        if image_tasks and (options.get("atropos_mask") or DEFAULT_MASK) == "learned":
            check_brain_mr(volume)  # a CT or an abdomen MR is refused before any SR work
        else:
            check_mr_intensities(volume.array[0], volume.source)
    outputs: dict[str, Volume] = {}
    report: dict = {"id": "none", "source": "input grid"}
    if image_tasks:
        if model in BASELINE_NAMES:
            outputs, report = _run_baseline(volume, model, image_tasks, factor, axis, False, timer)
        else:
            from .inference import run_model_package

            outputs, report = run_model_package(
                volume, model, image_tasks, factor, axis, device, uncertainty, notify, token, timer, **options
            )
    token.raise_if_cancelled()
    source = outputs.get("interp") or outputs.get("sr") or volume
    seg_report = None
    if "seg" in tasks:
        with timer.stage("segmenting (atropos)"):
            notify(0.8, "segmenting (atropos)")
            result = segment_tissues(
                source,
                n4=bool(options.get("n4", False)),
                iterations=int(options.get("atropos_iterations", DEFAULT_ITERATIONS)),
                threads=options.get("threads"),
                uncertainty=uncertainty,
                priors=options.get("atropos_priors") or DEFAULT_PRIORS,
                prior_weight=float(options.get("atropos_prior_weight", DEFAULT_PRIOR_WEIGHT)),
                mask_method=options.get("atropos_mask") or DEFAULT_MASK,
                slab=None if source is volume else (axis, factor, "interp" if "interp" in outputs else "sr"),
            )
        outputs["seg"] = Volume.from_grid(result.labels[None], source.grid, source=volume.source)
        if result.uncertainty is not None:
            outputs["uncertainty_seg"] = Volume.from_grid(result.uncertainty[None], source.grid, source=volume.source)
        seg_report = {"id": "atropos", "source": "baseline", "kind": "segmentation", **result.report}
    for name in [n for n in outputs if n in IMAGE_TASKS and n not in tasks]:
        outputs.pop(name)  # the SR that was only made to be segmented
        outputs.pop("uncertainty_sr", None)
    report = {**report, "seg_model": seg_report}
    return outputs, report
