"""Image-quality and segmentation metrics, one definition each, shared by tests, CLI and benchmarks.

Definitions (documented here once, used everywhere):

* **PSNR** = ``10 log10(data_range^2 / MSE)`` with ``data_range = max(ref) - min(ref)`` unless
  given (MONAI ``PSNRMetric``).
* **SSIM**: Wang et al. 2004 with a Gaussian window (size 11, sigma 1.5), ``K1 = 0.01``,
  ``K2 = 0.03``, the same ``data_range``; computed in 2D for 2D inputs and **volumetrically in 3D**
  (11^3 window) for volumes, averaged over the valid (unpadded) window positions (MONAI
  ``compute_ssim_and_cs``).
* **NMSE** = ``||pred - ref||^2 / ||ref||^2``.
* **EdgeSSIM** (TASC-SwinMT section 4.1.1): the mean of the SSIM map over edge voxels, the edge
  mask being the Sobel gradient magnitude of the reference above 10 % of its maximum (the paper
  does not state its threshold).
* **Dice, IoU, precision, recall** per foreground label, from the confusion counts.
* **HD95**: 95th percentile of the symmetric surface distances in millimetres (voxel spacing
  applied; MONAI ``compute_hausdorff_distance``); ``inf`` when exactly one mask is empty.
* **TCS** (TASC-SwinMT section 4.1.2): ``mean(1 - |Y2 - (Y1 + Y3) / 2|)`` over consecutive
  triplets of binary masks along an axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import PSNRMetric, compute_hausdorff_distance
from monai.metrics.regression import compute_ssim_and_cs
from monai.transforms import SobelGradients

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
EDGE_THRESHOLD = 0.1


def _as_tensor(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def _data_range(reference: np.ndarray, data_range: float | None) -> float:
    if data_range is not None:
        return float(data_range)
    value = float(np.max(reference) - np.min(reference))
    return value if value > 0 else 1.0


def psnr(prediction: np.ndarray, reference: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB (``inf`` for identical inputs)."""
    metric = PSNRMetric(max_val=_data_range(reference, data_range), reduction="mean")
    value = metric(_as_tensor(prediction)[None, None], _as_tensor(reference)[None, None])
    return float(value.item())


def nmse(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Normalised mean squared error ``||p - r||^2 / ||r||^2``."""
    p, r = np.asarray(prediction, np.float64), np.asarray(reference, np.float64)
    return float(np.sum((p - r) ** 2) / max(np.sum(r**2), 1e-12))


def ssim_map(prediction: np.ndarray, reference: np.ndarray, data_range: float | None = None) -> np.ndarray:
    """Local SSIM at every valid window position (2D or 3D), shape ``input - (window - 1)``."""
    p, r = np.asarray(prediction), np.asarray(reference)
    dims = p.ndim
    if dims not in (2, 3) or p.shape != r.shape:
        raise ValueError(f"SSIM needs two 2D or 3D arrays of one shape; got {p.shape} and {r.shape}")
    window = [min(SSIM_WINDOW, s if s % 2 else s - 1) for s in p.shape]
    full, _ = compute_ssim_and_cs(
        _as_tensor(p)[None, None],
        _as_tensor(r)[None, None],
        spatial_dims=dims,
        kernel_size=window,
        kernel_sigma=[SSIM_SIGMA] * dims,
        data_range=_data_range(r, data_range),
    )
    return full[0, 0].numpy()


def ssim(prediction: np.ndarray, reference: np.ndarray, data_range: float | None = None) -> float:
    """Mean SSIM (2D for 2D inputs, volumetric for 3D inputs); see the module docstring."""
    return float(ssim_map(prediction, reference, data_range).mean())


def edge_mask(reference: np.ndarray, threshold: float = EDGE_THRESHOLD) -> np.ndarray:
    """Sobel edge mask of the reference: gradient magnitude above ``threshold`` x its maximum."""
    r = _as_tensor(reference)[None].float()
    gradients = SobelGradients(kernel_size=3, padding_mode="replicate")(r)
    magnitude = torch.sqrt((gradients**2).sum(dim=0)).numpy()
    peak = magnitude.max()
    return magnitude > threshold * peak if peak > 0 else np.zeros_like(magnitude, dtype=bool)


def edge_ssim(prediction: np.ndarray, reference: np.ndarray, data_range: float | None = None) -> float:
    """Mean SSIM over the reference's Sobel edge voxels (TASC-SwinMT EdgeSSIM)."""
    local = ssim_map(prediction, reference, data_range)
    mask = edge_mask(reference)
    crop = tuple(slice((m - s) // 2, (m - s) // 2 + s) for m, s in zip(mask.shape, local.shape))
    mask = mask[crop]
    if not mask.any():
        return float("nan")
    return float(local[mask].mean())


def _confusion(prediction: np.ndarray, reference: np.ndarray, label: int) -> tuple[int, int, int]:
    p, r = np.asarray(prediction) == label, np.asarray(reference) == label
    tp = int(np.count_nonzero(p & r))
    return tp, int(np.count_nonzero(p & ~r)), int(np.count_nonzero(~p & r))


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")


def dice(prediction: np.ndarray, reference: np.ndarray, label: int = 1) -> float:
    """Dice of one label; 1.0 when both masks are empty (nothing to find, nothing found)."""
    tp, fp, fn = _confusion(prediction, reference, label)
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def iou(prediction: np.ndarray, reference: np.ndarray, label: int = 1) -> float:
    tp, fp, fn = _confusion(prediction, reference, label)
    return 1.0 if tp + fp + fn == 0 else tp / (tp + fp + fn)


def precision(prediction: np.ndarray, reference: np.ndarray, label: int = 1) -> float:
    tp, fp, _ = _confusion(prediction, reference, label)
    return _ratio(tp, tp + fp)


def recall(prediction: np.ndarray, reference: np.ndarray, label: int = 1) -> float:
    tp, _, fn = _confusion(prediction, reference, label)
    return _ratio(tp, tp + fn)


def hd95(
    prediction: np.ndarray, reference: np.ndarray, spacing: Sequence[float] | None = None, label: int = 1
) -> float:
    """95th-percentile symmetric Hausdorff distance in mm (0 if both empty, inf if one is)."""
    p, r = np.asarray(prediction) == label, np.asarray(reference) == label
    if not p.any() and not r.any():
        return 0.0
    if not p.any() or not r.any():
        return float("inf")
    value = compute_hausdorff_distance(
        torch.from_numpy(p)[None, None],
        torch.from_numpy(r)[None, None],
        include_background=True,
        percentile=95,
        spacing=list(spacing) if spacing is not None else None,
    )
    return float(value.item())


def temporal_consistency(masks: np.ndarray, axis: int = 0) -> float:
    """TASC temporal-consistency score of binary masks stacked along ``axis`` (>= 3 frames)."""
    m = np.moveaxis(np.asarray(masks, dtype=np.float64), axis, 0)
    if m.shape[0] < 3:
        raise ValueError("temporal consistency needs at least three frames")
    error = np.abs(m[1:-1] - 0.5 * (m[:-2] + m[2:]))
    return float(np.mean(1.0 - error))


def image_metrics(prediction: np.ndarray, reference: np.ndarray, data_range: float | None = None) -> dict:
    """PSNR, SSIM, NMSE and EdgeSSIM of one image against its reference."""
    return {
        "psnr": psnr(prediction, reference, data_range),
        "ssim": ssim(prediction, reference, data_range),
        "nmse": nmse(prediction, reference),
        "edge_ssim": edge_ssim(prediction, reference, data_range),
    }


def label_metrics(
    prediction: np.ndarray,
    reference: np.ndarray,
    spacing: Sequence[float] | None = None,
    labels: Sequence[int] | None = None,
    temporal_axis: int | None = None,
) -> dict:
    """Per-label Dice, IoU, precision, recall, HD95 (mm) and, with ``temporal_axis``, TCS."""
    if labels is None:
        labels = sorted(int(v) for v in np.union1d(np.unique(prediction), np.unique(reference)) if v != 0)
    out = {}
    for label in labels:
        entry = {
            "dice": dice(prediction, reference, label),
            "iou": iou(prediction, reference, label),
            "precision": precision(prediction, reference, label),
            "recall": recall(prediction, reference, label),
            "hd95_mm": hd95(prediction, reference, spacing, label),
        }
        if temporal_axis is not None:
            entry["tcs"] = temporal_consistency(np.asarray(prediction) == label, temporal_axis)
        out[str(label)] = entry
    if labels:
        out["mean_dice"] = float(np.mean([out[str(l)]["dice"] for l in labels]))
    return out
