"""``preview.png``: axial, coronal and sagittal panels of LR input, output, HR reference,
segmentation overlay and uncertainty -- the picture a user checks before trusting a result.

An uncertainty column carries a colour bar whose label is the map's unit (``units``): a calibrated
probability that the label is wrong, or the expected absolute error as a fraction of the intensity
range (:mod:`JointSRSegLib.calibration`), else "uncalibrated score".

All panels are drawn on the output grid (the LR input shown by nearest-neighbour on that grid),
so the same row shows the same anatomy in every column.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np

from .geometry import orientation_code
from .vocabulary import RAW_UNCERTAINTY_UNIT
from .volume import Volume

VIEWS = (("axial", "S"), ("coronal", "P"), ("sagittal", "L"))


def _view_axis(volume: Volume, letter: str) -> int:
    """The voxel axis that points along the anatomical axis of ``letter`` (S, P or L)."""
    code = orientation_code(volume.direction)
    pairs = {"S": "SI", "P": "PA", "L": "LR"}[letter]
    return next(i for i, c in enumerate(code) if c in pairs)


def _slice(array: np.ndarray, axis: int, index: int | None = None) -> np.ndarray:
    index = array.shape[axis] // 2 if index is None else index
    return np.rot90(np.take(array, index, axis=axis))


def render_preview(
    panels: dict[str, Volume | None],
    seg_reference: Volume | None = None,
    title: str = "",
    units: Mapping[str, tuple[str, float]] | None = None,
) -> bytes:
    """PNG bytes of a views x panels grid; ``panels`` maps column titles to volumes (or None).

    Keys named ``"segmentation"`` are drawn as a colour overlay on ``seg_reference``; keys starting
    with ``"uncertainty"`` use the perceptual ``magma`` colour map from 0 to the top of their scale and
    get a colour bar labelled with their unit: ``units[key] = (unit, top)`` (default: raw 0-1 score).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [(name, vol) for name, vol in panels.items() if vol is not None]
    size = (2.6 * len(columns), 2.6 * len(VIEWS) + 0.5)
    fig, axes = plt.subplots(len(VIEWS), len(columns), figsize=size, squeeze=False, layout="constrained")
    any_volume = columns[0][1]
    for row, (view, letter) in enumerate(VIEWS):
        axis = _view_axis(any_volume, letter)
        for col, (name, vol) in enumerate(columns):
            ax = axes[row][col]
            ax.axis("off")
            if row == 0:
                ax.set_title(name, fontsize=9)
            if name == "segmentation" and seg_reference is not None:
                ax.imshow(_slice(seg_reference.array[0], axis), cmap="gray")
                labels = np.ma.masked_equal(_slice(vol.array[0], axis), 0)
                ax.imshow(labels, cmap="tab10", vmin=0, vmax=9, alpha=0.5, interpolation="nearest")
            elif name.startswith("uncertainty"):
                unit, top = (units or {}).get(name, (RAW_UNCERTAINTY_UNIT, 1.0))
                shown = ax.imshow(_slice(vol.array[0], axis), cmap="magma", vmin=0.0, vmax=top)
                if row == len(VIEWS) - 1:
                    bar = fig.colorbar(shown, ax=axes[:, col].tolist(), orientation="horizontal", fraction=0.04,
                                       pad=0.02)
                    bar.set_label(unit, fontsize=7)
                    bar.ax.tick_params(labelsize=6)
            else:
                image = _slice(vol.array[0].astype(np.float32), axis)
                lo, hi = np.percentile(any_volume.array[0], [0.5, 99.5])
                ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            if col == 0:
                ax.text(2, 8, view, color="yellow", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()
