"""3D models over whole volumes: MONAI sliding-window inference with Gaussian blending.

One pass yields every head at its own resolution (HR SR image, HR or LR segmentation logits):
MONAI infers each output's zoom from its size.  Window steps are integers in LR voxels, so with
integer magnifications every window lands on whole HR voxels and no seam appears.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from monai.data.utils import dense_patch_slices
from monai.inferers import sliding_window_inference
from monai.inferers.utils import _get_scan_interval

from .devices import autocast


def count_windows(image_size: Sequence[int], roi_size: Sequence[int], overlap: float) -> int:
    roi = [min(r, s) for r, s in zip(roi_size, image_size)]
    interval = _get_scan_interval(image_size, roi, len(image_size), [overlap] * len(image_size))
    return len(dense_patch_slices(image_size, roi, interval))


def sliding_window_predict(
    net: torch.nn.Module,
    image: torch.Tensor,
    roi_size: Sequence[int],
    keys: Sequence[str],
    device: torch.device,
    overlap: float = 0.25,
    sw_batch_size: int = 1,
    on_window: Callable[[int, int], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Run ``net`` over ``image`` (1, C, X, Y, Z) window by window; outputs stitched on the CPU.

    ``on_window(done, total)`` is called after every window (progress and cancellation).
    """
    size = tuple(image.shape[2:])
    roi = tuple(min(int(r), s) for r, s in zip(roi_size, size))
    total = count_windows(size, roi, overlap)
    done = [0]

    def predictor(window: torch.Tensor) -> dict[str, torch.Tensor]:
        with autocast(device):
            out = net(window)
        done[0] += window.shape[0]
        if on_window is not None:
            on_window(min(done[0], total), total)
        return {k: out[k].float() for k in keys}

    with torch.inference_mode():
        result = sliding_window_inference(
            image,
            roi,
            sw_batch_size,
            predictor,
            overlap=overlap,
            mode="gaussian",
            padding_mode="replicate",
            sw_device=device,
            device=torch.device("cpu"),
        )
    return {k: torch.as_tensor(v) for k, v in result.items()}
