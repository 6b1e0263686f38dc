"""Checks of :func:`JointSRSegLib.api.predict`'s arguments: every bad one is an :class:`InputError`
(a ``ValueError``) saying what was given and what fits, never a bare TypeError/AttributeError deep
inside, and a misspelt keyword is refused instead of silently ignored."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .volume import Volume

# The keyword options predict() documents, and what reads them.
PREDICT_OPTIONS: Mapping[str, str] = {
    "seg_model": "segment the SR/interp output with a classical method ('atropos')",
    "threads": "CPU threads for the network (a positive integer)",
    "uncertainty_method": "auto, tta or mc_dropout (model packages)",
    "samples": "test-time samples for tta / mc_dropout",
    "roi_size": "sliding-window size (three integers)",
    "batch_size": "sliding-window batch size",
    "foreground_only": "False runs the network on the whole field of view",
    "time_budget": "ceiling in seconds for model='self' / 'adapt' (training stops earlier when it converges)",
    "seed": "random seed of the self-supervised modes",
    "max_steps": "step limit of the self-supervised modes (0: apply the start network untrained)",
    "n4": "N4 bias correction before Atropos",
    "atropos_iterations": "EM iterations of Atropos",
    "atropos_priors": "template (registered MNI152 GM/WM priors, the default) or none (k-means) for Atropos",
    "atropos_prior_weight": "weight of the template priors in Atropos, 0-1 (default 0.25)",
}


def _is_integer(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_inputs(inputs: Any) -> None:
    if isinstance(inputs, Volume):
        return
    if isinstance(inputs, str | Path):
        if not str(inputs).strip():
            raise InputError(None, "inputs is an empty path; give a volume file, a DICOM folder or a Volume")
        return
    ok = isinstance(inputs, Sequence) and not isinstance(inputs, bytes) and len(inputs) > 0
    if not ok or not all(isinstance(p, str | Path) and str(p).strip() for p in inputs):
        raise InputError(None, f"inputs must be a Volume, a file path or a list of file paths, got {_describe(inputs)}")


def check_tasks(tasks: Any) -> None:
    if isinstance(tasks, str):
        return
    if not isinstance(tasks, Sequence) or not all(isinstance(t, str) for t in tasks):
        raise InputError(None, f"tasks must be a string like 'sr,seg' or a list of task names, got {_describe(tasks)}")


def check_scale(scale: Any) -> None:
    number = _is_integer(scale) or (isinstance(scale, float | np.floating) and math.isfinite(float(scale)))
    if not number:
        raise InputError(None, f"scale must be an integer factor (2-8), got {_describe(scale)}")


def check_axis(axis: Any) -> None:
    if axis is None or (isinstance(axis, str) and axis == "auto"):
        return
    if _is_integer(axis) and int(axis) in (0, 1, 2):
        return
    raise InputError(None, f"axis must be 0, 1, 2 or 'auto', got {_describe(axis)}")


def check_options(options: Mapping[str, Any]) -> None:
    unknown = [key for key in options if key not in PREDICT_OPTIONS]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), PREDICT_OPTIONS, n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise InputError(None, f"unknown option(s) {', '.join(hints)}; predict() takes {', '.join(PREDICT_OPTIONS)}")
    threads = options.get("threads")
    if threads is not None and not (_is_integer(threads) and threads >= 1):
        raise InputError(None, f"threads must be a positive integer, got {_describe(threads)}")


def check_predict_arguments(
    inputs: Any,
    model: Any,
    tasks: Any,
    scale: Any,
    axis: Any,
    device: Any,
    uncertainty: Any,
    progress: Any,
    cancel: Any,
    options: Mapping[str, Any],
) -> None:
    """Raise InputError for the first argument of :func:`predict` that cannot be right."""
    check_inputs(inputs)
    if not isinstance(model, str | Path) or not str(model).strip():
        raise InputError(None, f"model must be a model id, a package path or a baseline name, got {_describe(model)}")
    check_tasks(tasks)
    check_scale(scale)
    check_axis(axis)
    if not isinstance(device, str) and type(device).__name__ != "device":
        raise InputError(None, f"device must be 'auto', 'cpu', 'cuda' or 'mps', got {_describe(device)}")
    if not isinstance(uncertainty, bool | np.bool_):
        raise InputError(None, f"uncertainty must be True or False, got {_describe(uncertainty)}")
    if progress is not None and not callable(progress):
        raise InputError(None, f"progress must be a callable (fraction, stage), got {_describe(progress)}")
    if cancel is not None and not callable(getattr(cancel, "raise_if_cancelled", None)):
        raise InputError(None, f"cancel must be a CancelToken, got {_describe(cancel)}")
    check_options(options)


__all__ = ["PREDICT_OPTIONS", "check_predict_arguments"]
