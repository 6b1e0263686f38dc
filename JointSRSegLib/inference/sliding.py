"""3D models over whole volumes: sliding windows with Gaussian blending, skipping empty background.

One pass yields every head at its own resolution (HR SR image, HR or LR segmentation logits); each
head's zoom is read from its size.  Window steps are integers in LR voxels, so with integer
magnifications every window lands on whole HR voxels and no seam appears.  Window positions and the
Gaussian weights are MONAI's (``dense_patch_slices``, ``compute_importance_map``); the loop is ours
because a window without one foreground voxel must not run at all: it costs time and, blended in,
its invented tissue would leak into its neighbours.  Voxels no window covered stay 0 (the engine
gives them the classical answer).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from monai.data.utils import compute_importance_map, dense_patch_slices
from monai.inferers.utils import _get_scan_interval

from .devices import autocast

GAUSSIAN_SIGMA_SCALE = 0.125  # MONAI's default for mode="gaussian"


def window_slices(image_size: Sequence[int], roi_size: Sequence[int], overlap: float) -> list[tuple[slice, ...]]:
    roi = [min(int(r), int(s)) for r, s in zip(roi_size, image_size)]
    interval = _get_scan_interval(tuple(image_size), roi, len(image_size), [overlap] * len(image_size))
    return list(dense_patch_slices(tuple(image_size), roi, interval))


def count_windows(image_size: Sequence[int], roi_size: Sequence[int], overlap: float) -> int:
    return len(window_slices(image_size, roi_size, overlap))


def sliding_window_predict(
    net: torch.nn.Module,
    image: torch.Tensor,
    roi_size: Sequence[int],
    keys: Sequence[str],
    device: torch.device,
    overlap: float = 0.25,
    sw_batch_size: int = 1,
    on_window: Callable[[int, int], None] | None = None,
    mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Run ``net`` over ``image`` (1, C, X, Y, Z) window by window; outputs stitched on the CPU.

    ``mask`` (X, Y, Z), optional: windows holding no ``True`` voxel are skipped.
    ``on_window(done, total)`` is called after every window that runs (progress and cancellation).
    """
    size = tuple(int(s) for s in image.shape[2:])
    slices = window_slices(size, roi_size, overlap)
    if mask is not None:
        slices = [s for s in slices if bool(mask[s].any())]
    total = len(slices)
    sums: dict[str, torch.Tensor] = {}
    weights: dict[str, torch.Tensor] = {}
    zooms: dict[str, tuple[int, ...]] = {}
    importance: dict[tuple[int, ...], torch.Tensor] = {}
    with torch.inference_mode():
        for start in range(0, total, max(1, int(sw_batch_size))):
            batch = slices[start : start + max(1, int(sw_batch_size))]
            windows = torch.cat([image[(slice(None), slice(None)) + s] for s in batch]).to(device)
            with autocast(device):
                out = net(windows)
            for key in keys:
                head = out[key].float().cpu()
                if key not in sums:
                    zooms[key] = tuple(int(o) // int(w) for o, w in zip(head.shape[2:], windows.shape[2:]))
                    full = (head.shape[1],) + tuple(n * z for n, z in zip(size, zooms[key]))
                    sums[key] = torch.zeros(full)
                    weights[key] = torch.zeros(full[1:])
                shape = tuple(head.shape[2:])
                if shape not in importance:
                    importance[shape] = compute_importance_map(
                        shape, mode="gaussian", sigma_scale=GAUSSIAN_SIGMA_SCALE, device="cpu"
                    ).float()
                w = importance[shape]
                for b, s in enumerate(batch):
                    target = tuple(slice(r.start * z, r.start * z + n) for r, z, n in zip(s, zooms[key], shape))
                    sums[key][(slice(None),) + target] += head[b] * w
                    weights[key][target] += w
            if on_window is not None:
                on_window(min(start + len(batch), total), total)
    result = {}
    for key in keys:
        if key not in sums:  # nothing ran: every window was empty background
            continue
        covered = weights[key] > 0
        result[key] = torch.where(covered, sums[key] / weights[key].clamp_min(1e-12), torch.zeros(()))[None]
    return result
