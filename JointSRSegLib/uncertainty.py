"""Per-voxel uncertainty maps, every one float32 in [0, 1] so they share one colour scale.

Segmentation: the predictive entropy of the class probabilities (total uncertainty) and the
BALD mutual information across MC-dropout / test-time-augmentation samples (the part due to
the model, Gal et al. 2017), both divided by ``log K`` so 1 means "uniform over all classes".

Images (SR / interpolation): the spread of several predictions (``sample_variance_map``) or
a heteroscedastic head's log-variance (``aleatoric_to_unit``).  A standard deviation has image
units, so it is mapped to [0, 1] by ``u = sigma / (sigma + c)`` with ``c`` a fixed fraction
(``relative_scale``, default 5 %) of the image's robust intensity range (0.5-99.5 percentile
spread).  Then ``u = 0.5`` means "the prediction is uncertain by a twentieth of the image's
dynamic range" -- a fraction of typical tissue-contrast steps, so values above 0.5 flag errors
that start to blur tissue boundaries -- with the same meaning in every case and for every
model, so maps and their summaries can be compared.  A data-driven ``c`` such as the median
standard deviation would instead put half of the voxels above 0.5 by construction and make
every summary look alike.  ``u`` grows monotonically with ``sigma``, is 0 for ``sigma = 0``
and approaches 1 only for errors much larger than the contrast.

Functions take numpy arrays or torch tensors and return the same kind.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn as nn

from .errors import InputError

ArrayLike = TypeVar("ArrayLike", np.ndarray, torch.Tensor)
DEFAULT_RELATIVE_SCALE = 0.05
ROBUST_PERCENTILES = (0.5, 99.5)
DROPOUT_TYPES: tuple[type[nn.Module], ...] = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)
_MAX_PERCENTILE_SAMPLES = 1_000_000


def _as_tensor(x: Any) -> tuple[torch.Tensor, bool]:
    """A float tensor view of ``x`` and whether ``x`` was a tensor (to return the same kind)."""
    if isinstance(x, torch.Tensor):
        return (x if x.is_floating_point() else x.float()), True
    t = torch.as_tensor(np.asarray(x))
    return (t if t.is_floating_point() else t.double()), False


def _unit(t: torch.Tensor, was_tensor: bool) -> Any:
    """Clamp to [0, 1] and return float32 of the caller's kind."""
    t = t.clamp(0.0, 1.0).to(torch.float32)
    return t if was_tensor else t.cpu().numpy()


def _normalized_entropy(p: torch.Tensor, axis: int) -> torch.Tensor:
    """Entropy along ``axis`` divided by its maximum; one channel means a sigmoid (binary)."""
    p = p.clamp(0.0, 1.0)
    if p.shape[axis] == 1:
        q = p.squeeze(axis)
        h = -(torch.special.xlogy(q, q) + torch.special.xlogy(1 - q, 1 - q))
        return h / math.log(2.0)
    h = -torch.special.xlogy(p, p).sum(dim=axis)
    return h / math.log(p.shape[axis])


def predictive_entropy(probs: ArrayLike, axis: int = 0) -> ArrayLike:
    """Entropy of class probabilities along ``axis``, divided by ``log K`` (K = 1: binary, log 2).

    0 for a one-hot prediction, 1 for uniform probabilities.  ``axis`` is removed.
    """
    p, was_tensor = _as_tensor(probs)
    return _unit(_normalized_entropy(p, axis), was_tensor)


def mutual_information(prob_samples: ArrayLike, sample_axis: int = 0, class_axis: int = 1) -> ArrayLike:
    """BALD mutual information from N sampled probability maps, divided by ``log K``.

    ``H(mean_n p_n) - mean_n H(p_n)``: high where the samples are each confident but disagree
    (model uncertainty), ~0 where they agree, even if they agree on an uncertain answer.
    ``class_axis`` indexes ``prob_samples``; both axes are removed.
    """
    p, was_tensor = _as_tensor(prob_samples)
    if sample_axis % p.ndim == class_axis % p.ndim:
        raise ValueError("sample_axis and class_axis must differ")
    p = torch.movedim(p, (sample_axis, class_axis), (0, 1))
    total = _normalized_entropy(p.mean(dim=0), axis=0)
    expected = _normalized_entropy(p, axis=1).mean(dim=0)
    return _unit(total - expected, was_tensor)


def active_dropout_layers(model: nn.Module, extra_types: Sequence[type[nn.Module]] = ()) -> list[nn.Module]:
    """The dropout layers MC dropout would switch on (p > 0); empty means it cannot sample."""
    types = DROPOUT_TYPES + tuple(extra_types)
    return [m for m in model.modules() if isinstance(m, types) and getattr(m, "p", 1.0) > 0]


@contextmanager
def enable_mc_dropout(model: nn.Module, extra_types: Sequence[type[nn.Module]] = ()) -> Iterator[nn.Module]:
    """Switch only the dropout layers to training mode (MC dropout); restore every flag on exit.

    Batch norm and everything else stay as they were, so sampling does not update running
    statistics.  Refuses a model without active dropout (p > 0): its "samples" would all be
    identical and the uncertainty map falsely zero.  Dropout inside ``nn.MultiheadAttention``
    follows that module's own flag and is not switched.
    """
    layers = active_dropout_layers(model, extra_types)
    if not layers:
        raise InputError(
            type(model).__name__,
            "has no active dropout layer, so MC dropout would give identical samples; use flip TTA instead",
        )
    previous = [m.training for m in layers]
    try:
        for layer in layers:
            layer.train(True)
        yield model
    finally:
        for layer, was_training in zip(layers, previous):
            layer.train(was_training)


class _Flip:
    """Flip the given (negative) dims of a tensor or array; its own inverse."""

    def __init__(self, dims: tuple[int, ...]):
        self.dims = dims

    def __call__(self, x: ArrayLike) -> ArrayLike:
        if not self.dims:
            return x
        if isinstance(x, torch.Tensor):
            return torch.flip(x, self.dims)
        return np.ascontiguousarray(np.flip(x, axis=self.dims))

    def __repr__(self) -> str:
        return f"Flip(dims={self.dims})"


def flip_tta_transforms(
    spatial_dims: int, axes: Sequence[int] | None = None
) -> list[tuple[Callable[[Any], Any], Callable[[Any], Any]]]:
    """(forward, inverse) pairs for flip test-time augmentation, the identity first.

    Arrays are ``(..., *spatial)`` with the last ``spatial_dims`` axes spatial (e.g. ``(B, C,
    I, J, K)``); ``axes`` restricts which spatial axes (0-based among them) may flip.  All
    ``2**len(axes)`` combinations are returned.  Flips commute with both slice protocols (the
    output grid is symmetric), so ``inverse(model(forward(x)))`` is aligned with ``model(x)``.
    """
    if spatial_dims not in (1, 2, 3):
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")
    axes = tuple(range(spatial_dims)) if axes is None else tuple(axes)
    if any(a not in range(spatial_dims) for a in axes):
        raise ValueError(f"axes {axes} must lie in 0..{spatial_dims - 1}")
    pairs = []
    for count in range(len(axes) + 1):
        for subset in itertools.combinations(axes, count):
            flip = _Flip(tuple(a - spatial_dims for a in subset))
            pairs.append((flip, flip))
    return pairs


def robust_intensity_range(image: ArrayLike) -> float:
    """The 0.5-99.5 percentile spread of ``image`` (>= tiny), the reference for image maps.

    Large images are subsampled on a regular stride (deterministic) to at most 1e6 voxels.
    """
    values = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    values = values.ravel()
    if values.size > _MAX_PERCENTILE_SAMPLES:
        values = values[:: int(math.ceil(values.size / _MAX_PERCENTILE_SAMPLES))]
    low, high = np.percentile(values.astype(np.float64), ROBUST_PERCENTILES)
    return max(float(high - low), 1e-12)


def sample_variance_map(
    samples: ArrayLike,
    axis: int = 0,
    intensity_range: float | None = None,
    relative_scale: float = DEFAULT_RELATIVE_SCALE,
) -> ArrayLike:
    """Spread of N image predictions (MC dropout / TTA) as ``std / (std + c)`` in [0, 1].

    ``std`` is the sample standard deviation along ``axis`` (N - 1 denominator);
    ``c = relative_scale * intensity_range``, the range defaulting to the robust range of the
    sample mean (see the module docstring for why).  ``axis`` is removed.
    """
    s, was_tensor = _as_tensor(samples)
    if s.shape[axis] < 2:
        raise ValueError(f"need at least 2 samples along axis {axis}, got {s.shape[axis]}")
    std = s.std(dim=axis, correction=1)
    reference = robust_intensity_range(s.mean(dim=axis)) if intensity_range is None else float(intensity_range)
    c = relative_scale * reference
    if c <= 0:
        raise ValueError(f"relative_scale * intensity_range must be positive, got {c}")
    return _unit(std / (std + c), was_tensor)


def aleatoric_to_unit(
    log_var: ArrayLike, intensity_range: float = 1.0, relative_scale: float = DEFAULT_RELATIVE_SCALE
) -> ArrayLike:
    """A heteroscedastic head's ``log sigma^2`` as ``sigma / (sigma + c)`` in [0, 1].

    Same transform and ``c = relative_scale * intensity_range`` as :func:`sample_variance_map`,
    so the two maps are comparable.  ``intensity_range`` is in the units the head predicts in:
    the default 1.0 fits outputs in percentile-normalised units (robust range mapped to 0..1);
    pass the robust range of the image for outputs in scanner units.  Computed as
    ``sigmoid(0.5 * log_var - log c)``, which is exact and never overflows.
    """
    v, was_tensor = _as_tensor(log_var)
    c = relative_scale * float(intensity_range)
    if c <= 0:
        raise ValueError(f"relative_scale * intensity_range must be positive, got {c}")
    return _unit(torch.sigmoid(0.5 * v - math.log(c)), was_tensor)


def summarize(uncertainty_map: ArrayLike, mask: ArrayLike | None = None) -> dict[str, float]:
    """Mean, 95th percentile (linear interpolation) and fraction of voxels strictly above 0.5.

    ``mask`` (same shape, non-zero = inside) restricts the summary, e.g. to the head.
    """
    values = uncertainty_map.detach().cpu().numpy() if isinstance(uncertainty_map, torch.Tensor) else uncertainty_map
    values = np.asarray(values, dtype=np.float64)
    if mask is not None:
        m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        values = values[m.astype(bool)]
    values = values.ravel()
    if values.size == 0:
        raise ValueError("cannot summarise an empty uncertainty map (is the mask empty?)")
    return {
        "mean": float(values.mean()),
        "p95": float(np.percentile(values, 95)),
        "fraction_above_0.5": float(np.count_nonzero(values > 0.5) / values.size),
    }


__all__ = [
    "DEFAULT_RELATIVE_SCALE",
    "DROPOUT_TYPES",
    "active_dropout_layers",
    "aleatoric_to_unit",
    "enable_mc_dropout",
    "flip_tta_transforms",
    "mutual_information",
    "predictive_entropy",
    "robust_intensity_range",
    "sample_variance_map",
    "summarize",
]
