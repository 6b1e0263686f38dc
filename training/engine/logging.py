"""Run logs: TensorBoard, a long-format CSV (step, stage, split, metric, value) and PNG previews.

Only rank 0 writes; other ranks get a logger that does nothing.  The CSV has a fixed header
whatever the metrics are, so resumed runs append to it and spreadsheets read it directly.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

CSV_HEADER = ("step", "stage", "split", "metric", "value")


class RunLogger:
    """Scalars to TensorBoard (``<run>/tensorboard``) and ``<run>/metrics.csv``; previews to ``<run>/previews``."""

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.run_dir, self.enabled = Path(run_dir), enabled
        self._writer = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        self.csv_path = self.run_dir / "metrics.csv"
        if not self.csv_path.exists():
            with self.csv_path.open("w", newline="") as handle:
                csv.writer(handle).writerow(CSV_HEADER)

    def scalars(self, step: int, stage: str, split: str, values: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        with self.csv_path.open("a", newline="") as handle:
            writer = csv.writer(handle)
            for name, value in values.items():
                writer.writerow((step, stage, split, name, f"{value:.6g}"))
                if math.isfinite(value):
                    self._writer.add_scalar(f"{split}/{name}", value, step)
        self._writer.flush()

    def preview(self, step: int, case_id: str, panels: Mapping[str, np.ndarray | None]) -> Path | None:
        """One PNG per validation case: the central plane containing the through-plane axis."""
        if not self.enabled:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        shown = {k: v for k, v in panels.items() if v is not None}
        fig, axes = plt.subplots(1, len(shown), figsize=(2.4 * len(shown), 2.8), squeeze=False)
        for ax, (title, array) in zip(axes[0], shown.items()):
            plane = array[..., array.shape[-2] // 2, :] if array.ndim == 3 else array
            is_label = title.startswith("seg")
            ax.imshow(np.rot90(plane), cmap="tab10" if is_label else "gray", interpolation="nearest",
                      **({"vmin": 0, "vmax": 9} if is_label else {}))
            ax.set_title(title, fontsize=8)
            ax.axis("off")
        fig.suptitle(f"{case_id} step {step}", fontsize=8)
        fig.tight_layout()
        path = self.run_dir / "previews" / f"step{step:07d}_{case_id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=80)
        plt.close(fig)
        return path

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
