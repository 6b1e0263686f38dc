"""Intensity normalisation declared by a model package, and its exact inverse.

A network only sees intensities in the range it was trained on, so every package states how
its inputs were normalised (``model.json`` field ``intensity_normalization``) and the inference
engine applies the same mapping, then maps SR outputs back to scanner units with the inverse.
Every method is a per-channel affine map ``y = (x - offset) / scale``; ``normalize`` returns
the offsets and scales it used (``params``, plain JSON) so ``denormalize`` is its exact inverse
and the values can be recorded next to the outputs.

Methods (``spec["method"]``):

``none``
    identity (for inputs that are already normalised, e.g. probability maps).
``zscore``
    ``(x - mean) / std``; ``"nonzero": true`` takes the statistics over non-zero voxels only
    (the BraTS convention for skull-stripped images, where the zero background would dominate).
``percentile``
    maps the ``lower`` and ``upper`` percentiles (default 0.5 and 99.5) to 0 and 1; robust to
    the few very bright voxels (vessels, fat) that make min-max unstable in MR.  ``nonzero``
    as above.
``minmax``
    maps the minimum and maximum to 0 and 1.
``window``
    a fixed window ``low``..``high`` mapped to 0..1, e.g. CT in Hounsfield units, where the
    units are physical and per-image statistics would throw that information away.

``percentile``, ``minmax`` and ``window`` accept ``"clip": true`` to clip the result to [0, 1];
clipping is the only lossy option (``denormalize`` cannot restore clipped values).  A constant
channel (zero spread) uses ``scale = 1`` so nothing is divided by zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import InputError

METHODS = ("none", "zscore", "percentile", "minmax", "window")
_OPTIONS = {
    "none": set(),
    "zscore": {"nonzero"},
    "percentile": {"lower", "upper", "nonzero", "clip"},
    "minmax": {"nonzero", "clip"},
    "window": {"low", "high", "clip"},
}
_MIN_SCALE = 1e-12


def validate_spec(spec: Any, source: str | None = None) -> dict[str, Any]:
    """Check a normalisation spec and return it with defaults filled in (raises InputError)."""
    where = "intensity_normalization"
    if not isinstance(spec, Mapping) or not isinstance(spec.get("method"), str):
        raise InputError(source, f'{where} must be an object with a "method" (one of {", ".join(METHODS)})')
    method = spec["method"]
    if method not in METHODS:
        raise InputError(source, f"{where}: unknown method {method!r}; use one of {', '.join(METHODS)}")
    unknown = set(spec) - {"method"} - _OPTIONS[method]
    if unknown:
        allowed = ", ".join(sorted(_OPTIONS[method])) or "no options"
        raise InputError(source, f"{where}: method {method!r} has no option {', '.join(sorted(unknown))} ({allowed})")
    out: dict[str, Any] = {"method": method}
    for flag in ("nonzero", "clip"):
        if flag in _OPTIONS[method]:
            value = spec.get(flag, False)
            if not isinstance(value, bool):
                raise InputError(source, f"{where}.{flag} must be true or false, got {value!r}")
            out[flag] = value
    if method == "percentile":
        lower, upper = spec.get("lower", 0.5), spec.get("upper", 99.5)
        if not (_is_number(lower) and _is_number(upper) and 0 <= lower < upper <= 100):
            raise InputError(source, f"{where}: need 0 <= lower < upper <= 100, got lower={lower!r} upper={upper!r}")
        out.update(lower=float(lower), upper=float(upper))
    if method == "window":
        low, high = spec.get("low"), spec.get("high")
        if not (_is_number(low) and _is_number(high) and low < high):
            problem = f"{where}: window needs numbers low < high (e.g. -1000 and 2000 HU), got {low!r}, {high!r}"
            raise InputError(source, problem)
        out.update(low=float(low), high=float(high))
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def normalize(
    array: np.ndarray, spec: Mapping[str, Any], channel_axis: int | None = 0, dtype: Any = np.float32
) -> tuple[np.ndarray, dict[str, Any]]:
    """Normalise ``array`` per channel (along ``channel_axis``; ``None``: one channel) by ``spec``.

    Returns ``(normalized, params)``; ``params`` holds the per-channel ``offset`` and ``scale``
    that :func:`denormalize` inverts.  Statistics are computed in float64.
    """
    spec = validate_spec(spec)
    x = np.asarray(array)
    channels = [x] if channel_axis is None else [np.take(x, c, axis=channel_axis) for c in range(x.shape[channel_axis])]
    offsets, scales = zip(*(_affine(np.asarray(c, dtype=np.float64), spec) for c in channels))
    params = {
        "method": spec["method"],
        "offset": [float(o) for o in offsets],
        "scale": [float(s) for s in scales],
        "channel_axis": channel_axis,
        "clipped": bool(spec.get("clip", False)),
    }
    y = (x.astype(np.float64) - _broadcast(params["offset"], x.ndim, channel_axis)) / _broadcast(
        params["scale"], x.ndim, channel_axis
    )
    if params["clipped"]:
        y = np.clip(y, 0.0, 1.0)
    return y.astype(dtype, copy=False), params


def denormalize(array: np.ndarray, params: Mapping[str, Any], dtype: Any = np.float32) -> np.ndarray:
    """Map normalised values back to the original units: ``x = y * scale + offset`` per channel.

    Output channels must be laid out like the input was (same ``channel_axis``), or the array
    may have a single channel which then uses channel 0's parameters (e.g. a 1-channel SR
    output of a 1-channel input).
    """
    y = np.asarray(array, dtype=np.float64)
    axis = params.get("channel_axis")
    offset, scale = list(params["offset"]), list(params["scale"])
    if axis is not None and y.shape[axis] != len(offset):
        raise ValueError(f"array has {y.shape[axis]} channels on axis {axis}; the parameters are for {len(offset)}")
    return (y * _broadcast(scale, y.ndim, axis) + _broadcast(offset, y.ndim, axis)).astype(dtype, copy=False)


def _broadcast(values: list[float], ndim: int, axis: int | None) -> np.ndarray | float:
    if axis is None:
        return float(values[0])
    shape = [1] * ndim
    shape[axis] = len(values)
    return np.asarray(values, dtype=np.float64).reshape(shape)


def _affine(channel: np.ndarray, spec: Mapping[str, Any]) -> tuple[float, float]:
    """(offset, scale) of one channel; a zero spread falls back to scale 1."""
    method = spec["method"]
    if method == "none":
        return 0.0, 1.0
    if method == "window":
        return spec["low"], spec["high"] - spec["low"]
    values = channel[channel != 0] if spec.get("nonzero") else channel.ravel()
    if values.size == 0:  # an all-zero channel with "nonzero": use every voxel
        values = channel.ravel()
    if method == "zscore":
        offset, spread = float(values.mean()), float(values.std())
    elif method == "minmax":
        offset, spread = float(values.min()), float(values.max() - values.min())
    else:
        low, high = np.percentile(values, [spec["lower"], spec["upper"]])
        offset, spread = float(low), float(high - low)
    return offset, (spread if spread > _MIN_SCALE else 1.0)


__all__ = ["METHODS", "denormalize", "normalize", "validate_spec"]
