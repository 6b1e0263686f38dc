"""Calibrated uncertainty maps: raw per-voxel signals -> a map with a stated unit.

A raw map (1 - max posterior, the disagreement of two plane families) ranks voxels but has no
unit: 0.3 means nothing a user can act on.  Here a few cheap signals of each method are combined by
a small generalised linear model fitted **once** on calibration cases (label-map subjects 17-18 and
ds002748 subject 23 -- never trained on by a shipped network and never in a report, whose cases are
19-20 and 21-22/24) and stored in ``Resources/Calibration/uncertainty_calibration.json``:

* **Segmentation** (``atropos``): the map is the **probability that the voxel's label is wrong**
  (``UNIT_TEXT["seg"]``), a logistic regression on: the Atropos posterior (1 - max, and 1 - the margin
  between the two largest), the label disagreement of the 3x3x3 neighbourhood, the closeness to the
  nearest other label and to the brain mask's edge (inside and outside the mask, where a cut-off gyrus
  is a wrong background label the posterior never sees), and the label itself.
* **SR / interpolation** (``self``, ``adapt``): the map is the **expected absolute error as a fraction
  of the scan's robust intensity range** (the 0.5-99.5 percentile spread; ``UNIT_TEXT["sr"]``), clipped
  to [0, 1]; a log-linear model ``E|error| = exp(w . x)`` fitted by Poisson quasi-likelihood (the
  maximum-likelihood estimate of a conditional mean) on: the log disagreement of the two plane families,
  the log gradient magnitude of the output in-plane and through-plane, and the position inside the
  thick slab (error grows towards the slab's ends).

Each is fitted twice on a fixed-seed subsample of the calibration voxels -- as a linear model by Newton's
method (:func:`fit_logistic`, :func:`fit_log_linear`) and as a small ReLU network trained on the same
likelihood (:func:`fit_mlp`) -- and the one that ranks a left-out calibration case's errors better is
stored; ``benchmarks/uncertainty_calibration.py`` does it and writes the weights with their provenance.
``benchmarks/uncertainty.py`` scores the result on the report's cases.

Tried and not used (2026-12-07): the SR spread over 5 input flips x 2 plane families instead of the two
families alone.  Its raw rank correlation with |error| rose (adapt on the calibration cases 0.29-0.35 ->
0.37-0.44; self 0.12 -> 0.33-0.41) but the fitted map's held-out Spearman did not (adapt 0.436 -> 0.440),
for 4 more network applications per run (about +20 s on 256^3); the output gradients already carry it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from .errors import InputError
from .vocabulary import CALIBRATED_UNITS, DISPLAY_MAXIMUM, LIKELY_WRONG_THRESHOLD, RAW_UNCERTAINTY_UNIT

CALIBRATION_FILE = Path(__file__).resolve().parents[1] / "Resources" / "Calibration" / "uncertainty_calibration.json"
FORMAT = "jointsrseg-uncertainty-calibration/1"
# What a calibrated map's value means, by task family (the legend of preview.png and of Slicer says it).
UNIT_TEXT = {"seg": CALIBRATED_UNITS["uncertainty_seg"], "sr": CALIBRATED_UNITS["uncertainty_sr"]}
SEG_FEATURES = ("one_minus_max", "one_minus_margin", "label_mixing", "boundary_closeness", "edge_inside",
                "edge_outside", "inside", "is_gm", "is_wm", "prior_disagreement", "slab_end")
SR_FEATURES = ("log_spread", "log_spread_smooth", "log_grad_through", "log_grad_through_smooth", "log_grad_inplane",
               "log_curvature_through_smooth", "log_lr_residual_smooth", "log_local_std_smooth", "slab_end",
               "slab_end_sq")
MLP_HIDDEN = (32, 16)
MLP_EPOCHS = 8
MLP_BATCH = 4096
MLP_LEARNING_RATE = 3e-3
APPLY_CHUNK = 1_000_000  # voxels per matrix product when a network entry is applied
LOG_FLOOR = 1e-3  # normalised units: below this a spread or gradient is noise
EDGE_MM = 2.0  # closeness to the mask edge: exp(-d / EDGE_MM)


# ------------------------------------------------------------------------------------ segmentation
def boundary_closeness(labels: np.ndarray, spacing) -> np.ndarray:
    """``1 / (1 + d)``, d = distance in mm to the nearest voxel with another label (a feature here, and the
    boundary baseline every segmentation map must beat in ``benchmarks/uncertainty.py``)."""
    distance = np.full(labels.shape, np.inf, dtype=np.float32)
    for value in np.unique(labels):
        inside = labels == value
        distance[inside] = ndimage.distance_transform_edt(inside, sampling=spacing)[inside]
    return (1.0 / (1.0 + distance)).astype(np.float32)


def seg_features(posteriors: np.ndarray, labels: np.ndarray, mask: np.ndarray, spacing,
                 grey: int = 1, white: int = 2, priors: np.ndarray | None = None,
                 slab: tuple[int, int, str] | None = None) -> np.ndarray:
    """``(len(SEG_FEATURES), I, J, K)`` float32 signals of one segmentation (module docstring).

    ``posteriors``: ``(C, I, J, K)`` class probabilities inside ``mask`` (anything outside it);
    ``labels``: the segmentation; ``mask``: where the method segmented; ``priors``: the registered
    template's ``(3, I, J, K)`` probabilities of background/CSF, GM and WM (None: no template, the
    feature is 0); ``slab``: ``(axis, factor, protocol)`` when the image is an SR / interpolation output
    (None: an acquired grid, the feature is 0).
    """
    spacing = tuple(float(s) for s in spacing)
    mask = np.asarray(mask, dtype=bool)
    ordered = np.sort(posteriors, axis=0)
    one_minus_max = np.where(mask, 1.0 - ordered[-1], 0.0)
    one_minus_margin = np.where(mask, 1.0 - (ordered[-1] - ordered[-2]), 0.0)
    mixing = np.zeros(labels.shape, dtype=np.float32)
    for value in np.unique(labels):
        same = ndimage.uniform_filter((labels == value).astype(np.float32), size=3, mode="nearest")
        mixing = np.where(labels == value, 1.0 - same, mixing)
    inside_distance = ndimage.distance_transform_edt(mask, sampling=spacing)
    outside_distance = ndimage.distance_transform_edt(~mask, sampling=spacing)
    edge_inside = np.where(mask, np.exp(-inside_distance / EDGE_MM), 0.0)
    edge_outside = np.where(mask, 0.0, np.exp(-outside_distance / EDGE_MM))
    disagreement = np.zeros(labels.shape, dtype=np.float32)
    if priors is not None:
        assigned = np.where(labels == grey, priors[1], np.where(labels == white, priors[2], priors[0]))
        disagreement = np.where(mask, 1.0 - assigned, 0.0)
    slab_end = np.zeros(labels.shape, dtype=np.float32)
    if slab is not None:
        axis, factor, protocol = slab
        shape = [1, 1, 1]
        shape[axis] = -1
        slab_end = np.broadcast_to(slab_position(labels.shape[axis], factor, protocol).reshape(shape), labels.shape)
    stack = [one_minus_max, one_minus_margin, mixing, boundary_closeness(labels, spacing), edge_inside,
             edge_outside, mask, labels == grey, labels == white, disagreement, slab_end]
    return np.stack([np.asarray(s, dtype=np.float32) for s in stack])


# -------------------------------------------------------------------------------------------- SR
def slab_position(n_out: int, factor: int, protocol: str) -> np.ndarray:
    """Per output slice, the distance to the middle of its thick slab (sr) or to the nearest acquired
    slice (interp), as a fraction of half the slab: 0 at the middle / on an acquired slice, ~1 at the ends."""
    k = np.arange(n_out, dtype=np.float64)
    half = factor / 2.0
    if protocol == "interp":
        phase = k % factor
        return (np.minimum(phase, factor - phase) / half).astype(np.float32)
    centre = (k % factor) + 0.5 - half
    return (np.abs(centre) / half).astype(np.float32)


def _nearest_acquired(lr: np.ndarray, axis: int, factor: int, protocol: str, n_out: int) -> np.ndarray:
    """The acquired slice nearest to each output slice (its own thick slab for sr), on the output grid."""
    k = np.arange(n_out)
    index = k // factor if protocol == "sr" else np.rint(k / factor).astype(int)
    return np.take(lr, np.minimum(index, lr.shape[axis] - 1), axis=axis)


def sr_features(output: np.ndarray, spread: np.ndarray, lr: np.ndarray, axis: int, factor: int,
                protocol: str) -> np.ndarray:
    """``(len(SR_FEATURES), I, J, K)`` float32 signals of one SR output (module docstring).

    ``output``, ``spread`` and ``lr`` are ``(I, J, K)`` in normalised units (1 = the robust intensity
    range): the fused prediction, half the difference of the two plane families, and the acquired input.
    Errors are spatially smooth where the measurement noise is not, so each signal also enters smoothed
    (Gaussian, 1 voxel): the smoothed plane spread alone ranks |error| better than the raw one.
    """
    output = np.asarray(output, dtype=np.float32)

    def smooth(a):
        return ndimage.gaussian_filter(a, sigma=1.0)

    def derivative(order_through: int, b: int | None = None):
        order = [order_through if a == axis else 0 for a in range(3)]
        if b is not None:
            order[b] = 1
        return ndimage.gaussian_filter(output, sigma=1.0, order=order)

    through = np.abs(derivative(1))
    inplane = np.sqrt(sum(derivative(0, b) ** 2 for b in range(3) if b != axis))
    curvature = np.abs(derivative(2))
    acquired = _nearest_acquired(np.asarray(lr, np.float32), axis, factor, protocol, output.shape[axis])
    residual = np.abs(output - acquired)
    mean = ndimage.uniform_filter(output, 3)
    local_std = np.sqrt(np.maximum(ndimage.uniform_filter(output * output, 3) - mean * mean, 0.0))
    spread = np.asarray(spread, dtype=np.float32)
    shape = [1, 1, 1]
    shape[axis] = -1
    slab = np.broadcast_to(slab_position(output.shape[axis], factor, protocol).reshape(shape), output.shape)
    logs = [spread, smooth(spread), through, smooth(through), inplane, smooth(curvature), smooth(residual),
            smooth(local_std)]
    stack = [np.log(a + LOG_FLOOR) for a in logs] + [slab, slab * slab]
    return np.stack([np.asarray(a, dtype=np.float32) for a in stack])


# ---------------------------------------------------------------------------------------- fitting
def _design(features: np.ndarray) -> np.ndarray:
    """``(N, F)`` features plus an intercept column, float64."""
    return np.concatenate([np.asarray(features, dtype=np.float64), np.ones((len(features), 1))], axis=1)


def _newton(x: np.ndarray, gradient_hessian, ridge: float, iterations: int) -> np.ndarray:
    w = np.zeros(x.shape[1])
    penalty = ridge * np.eye(x.shape[1])
    penalty[-1, -1] = 0.0  # the intercept is not shrunk
    for _ in range(iterations):
        g, h = gradient_hessian(w)
        step = np.linalg.solve(h + penalty, g + penalty @ w)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return w


def fit_logistic(features: np.ndarray, target: np.ndarray, ridge: float = 1e-3, iterations: int = 50) -> np.ndarray:
    """Weights (intercept last) of ``P(target) = sigmoid(w . x)``, maximum likelihood with a small ridge."""
    x, y = _design(features), np.asarray(target, dtype=np.float64)
    n = len(y)

    def gradient_hessian(w):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -30, 30)))
        return x.T @ (p - y) / n, (x * (p * (1 - p))[:, None]).T @ x / n

    return _newton(x, gradient_hessian, ridge, iterations)


def fit_log_linear(features: np.ndarray, target: np.ndarray, ridge: float = 1e-3, iterations: int = 50) -> np.ndarray:
    """Weights (intercept last) of ``E[target] = exp(w . x)`` by Poisson quasi-likelihood (``target >= 0``)."""
    x, y = _design(features), np.asarray(target, dtype=np.float64)
    n = len(y)
    w0 = np.zeros(x.shape[1])
    w0[-1] = np.log(max(float(y.mean()), 1e-9))

    def gradient_hessian(w):
        mu = np.exp(np.clip(x @ (w + w0), -30, 30))
        return x.T @ (mu - y) / n, (x * mu[:, None]).T @ x / n

    return _newton(x, gradient_hessian, ridge, iterations) + w0


def fit_mlp(features: np.ndarray, target: np.ndarray, link: str, hidden: Sequence[int] = MLP_HIDDEN,
            epochs: int = MLP_EPOCHS, seed: int = 0) -> dict:
    """A small ReLU network from standardised signals to the link's scale, as a storable entry.

    ``link="logit"``: trained by binary cross-entropy, so ``sigmoid(output)`` is P(target); ``"log"``: by
    the Poisson deviance, so ``exp(output)`` is E[target].  Both are proper scoring rules: on the data it
    is fitted to, the output is calibrated, while the hidden layers combine the signals non-linearly.  With
    each calibration case left out in turn it ranked that case's errors better than the linear model
    (segmentation AUROC 0.79 vs 0.73; adapt Spearman 0.44 vs 0.43; self 0.50 vs 0.50: the stored file).
    Deterministic: fixed seed, one thread, a fixed batch order.
    """
    import torch

    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    x = np.asarray(features, dtype=np.float32)
    mean, std = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-6)
    inputs = torch.tensor((x - mean) / std)
    y = torch.tensor(np.asarray(target, dtype=np.float32))
    sizes = [x.shape[1], *hidden, 1]
    layers: list = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers[:-1])
    if link == "log":
        with torch.no_grad():
            net[-1].bias.fill_(float(np.log(max(float(y.mean()), 1e-9))))
    optimizer = torch.optim.Adam(net.parameters(), lr=MLP_LEARNING_RATE)
    rng = np.random.default_rng(seed)
    for _ in range(int(epochs)):
        order = torch.from_numpy(rng.permutation(len(y)))
        for start in range(0, len(y), MLP_BATCH):
            batch = order[start:start + MLP_BATCH]
            out = net(inputs[batch])[:, 0]
            if link == "logit":
                loss = torch.nn.functional.binary_cross_entropy_with_logits(out, y[batch])
            else:
                loss = (torch.exp(out) - y[batch] * out).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    torch.set_num_threads(threads)
    linear = [m for m in net if isinstance(m, torch.nn.Linear)]
    return {"model": "mlp", "link": link, "mean": mean.round(6).tolist(), "std": std.round(6).tolist(),
            "layers": [{"weight": m.weight.detach().numpy().round(6).tolist(),
                        "bias": m.bias.detach().numpy().round(6).tolist()} for m in linear]}


# --------------------------------------------------------------------------------------- applying
@lru_cache(maxsize=4)
def _load(path: str) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def calibration_entry(method: str, path: Path | str | None = None) -> dict:
    """The stored model of ``method`` (``atropos``, ``self``, ``adapt``); one clear error when missing."""
    path = Path(path) if path is not None else CALIBRATION_FILE
    if not path.is_file():
        raise InputError(path, "the uncertainty calibration file is missing (reinstall the extension)")
    data = _load(str(path))
    if data.get("format") != FORMAT or method not in data.get("methods", {}):
        raise InputError(path, f"holds no uncertainty calibration for {method!r}")
    return data["methods"][method]


def _predictor(entry: Mapping, features: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """The entry's output on the link scale (logit or log), per voxel: linear weights or a small network."""
    if tuple(entry["features"]) != tuple(names):
        raise InputError(CALIBRATION_FILE, f"calibration features {entry['features']} are not {list(names)}")
    shape = features.shape[1:]
    flat = features.reshape(len(names), -1)
    if entry.get("model", "linear") != "mlp":
        w = np.asarray(entry["weights"], dtype=np.float32)
        return (np.tensordot(w[:-1], flat, axes=(0, 0)) + w[-1]).astype(np.float32).reshape(shape)
    mean = np.asarray(entry["mean"], dtype=np.float32)[:, None]
    std = np.asarray(entry["std"], dtype=np.float32)[:, None]
    layers = [(np.asarray(la["weight"], np.float32), np.asarray(la["bias"], np.float32)) for la in entry["layers"]]
    out = np.empty(flat.shape[1], dtype=np.float32)
    for start in range(0, flat.shape[1], APPLY_CHUNK):
        h = (flat[:, start:start + APPLY_CHUNK] - mean) / std
        for i, (weight, bias) in enumerate(layers):
            h = weight @ h + bias[:, None]
            if i < len(layers) - 1:
                np.maximum(h, 0.0, out=h)
        out[start:start + APPLY_CHUNK] = h[0]
    return out.reshape(shape)


def error_probability(entry: Mapping, features: np.ndarray) -> np.ndarray:
    """Calibrated P(label wrong) from :func:`seg_features` with a stored entry, float32 in [0, 1]."""
    eta = _predictor(entry, features, SEG_FEATURES)
    return (1.0 / (1.0 + np.exp(-np.clip(eta, -30, 30)))).astype(np.float32)


def expected_error(entry: Mapping, features: np.ndarray) -> np.ndarray:
    """Calibrated E|error| / intensity range from :func:`sr_features` with a stored entry, in [0, 1]."""
    eta = _predictor(entry, features, SR_FEATURES)
    return np.clip(np.exp(np.minimum(eta, 0.0)), 0.0, 1.0).astype(np.float32)


def fraction_above(unit_map: np.ndarray, threshold: float, mask: np.ndarray | None = None) -> float:
    """Share of the voxels of ``mask`` (all when None) whose map value is at or above ``threshold``."""
    values = np.asarray(unit_map)
    if mask is not None:
        values = values[np.asarray(mask, dtype=bool)]
    return float(np.count_nonzero(values >= threshold) / max(values.size, 1))


def calibrated_summary(unit_map: np.ndarray, key: str, mask: np.ndarray, region: str,
                       method: str) -> dict:
    """The report's summary of a calibrated map: its unit, the default "likely wrong" threshold and the
    fraction of ``region`` (``brain``: the segmented mask, ``head``: the SR's foreground) at or above it."""
    threshold = LIKELY_WRONG_THRESHOLD[key]
    values = np.asarray(unit_map, dtype=np.float64)[np.asarray(mask, dtype=bool)]
    if values.size == 0:
        values = np.zeros(1)
    return {"unit": CALIBRATED_UNITS[key], "calibration": method, "threshold": threshold,
            f"fraction_of_{region}_above_threshold": round(fraction_above(values, threshold), 5),
            f"mean_in_{region}": round(float(values.mean()), 5),
            f"p95_in_{region}": round(float(np.percentile(values, 95)), 5)}


def map_units(report: Mapping) -> dict[str, str]:
    """``{output: unit}`` of the uncertainty maps a run report describes (its model and the chained
    segmentation model); a map without a stated unit is a raw score."""
    model = report.get("model", {}) or {}
    found = {}
    for part in (model, model.get("seg_model") or {}):
        for key, summary in (part.get("uncertainty") or {}).items():
            found[key] = summary.get("unit", RAW_UNCERTAINTY_UNIT)
    return found


def display_scale(key: str, unit: str) -> tuple[str, float]:
    """``(unit, top of the colour scale)`` for the map ``key``: a calibrated map's fixed top
    (:data:`~JointSRSegLib.vocabulary.DISPLAY_MAXIMUM`), 1 for a raw score."""
    calibrated = CALIBRATED_UNITS.get(key) == unit
    return unit, (DISPLAY_MAXIMUM[key] if calibrated else 1.0)


__all__ = ["CALIBRATION_FILE", "SEG_FEATURES", "SR_FEATURES", "UNIT_TEXT", "boundary_closeness",
           "calibrated_summary", "calibration_entry",
           "display_scale", "error_probability", "expected_error", "fit_log_linear", "fit_logistic", "fit_mlp",
           "fraction_above", "map_units", "seg_features", "slab_position", "sr_features"]
