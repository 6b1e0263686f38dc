"""Per-epoch validation on whole (centre-cropped) validation cases: PSNR, SSIM, Dice, HD95.

Images are compared in the normalised intensity space the network works in, against the HR
reference cropped to the protocol's output grid; labels as class indices, HD95 in mm with the
case's spacing (model frame).  The same metric code (``JointSRSegLib.metrics``) scores the
packages in ``evaluate.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from monai.transforms import Compose

from JointSRSegLib.metrics import dice as dice_score
from JointSRSegLib.metrics import hd95, psnr, ssim

from .data import synthetic_contrast


def validation_items(cfg: dict, cached, adapter) -> list[dict]:
    """Deterministic validation inputs (LR, HR, labels) prepared once per run."""
    limit = cfg["data"]["max_val_cases"] or len(cached)
    transform = Compose(adapter.validation_transforms())
    items = []
    for index in range(min(limit, len(cached))):
        item = dict(cached[index])
        if cfg["data"]["sample_synthetic_validation"] and "label" in item:
            item = synthetic_contrast(item, seed=cfg["run"]["seed"] + index)
        items.append(transform(item))
    return items


def case_metrics(prediction: dict, item: dict, num_classes: int) -> dict[str, float]:
    """PSNR/SSIM of the image head, mean Dice/HD95 over the foreground classes of the label head."""
    out: dict[str, float] = {}
    image = prediction.get("image")
    if image is not None:
        reference = item["hr_image"].numpy().astype(np.float32)
        image = np.asarray(image, np.float32)[..., : reference.shape[-1]]
        data_range = float(reference.max() - reference.min()) or 1.0
        out["psnr"] = float(np.mean([psnr(p, r, data_range) for p, r in zip(image, reference)]))
        out["ssim"] = float(np.mean([ssim(p, r, data_range) for p, r in zip(image, reference)]))
    labels = prediction.get("labels")
    if labels is not None and "hr_label" in item:
        reference = item["hr_label"].numpy()[0]
        labels = np.asarray(labels)[..., : reference.shape[-1]]
        spacing = [float(s) for s in item["spacing"]]
        dices, distances = [], []
        for c in range(1, num_classes):
            dices.append(dice_score(labels, reference, c))
            distance = hd95(labels, reference, spacing, c)
            if math.isfinite(distance):
                distances.append(distance)
        out["dice"] = float(np.mean(dices)) if dices else float("nan")
        out["hd95"] = float(np.mean(distances)) if distances else float("nan")
    return out


def validate(adapter, items: Sequence[dict], logger, step: int, previews: bool) -> dict[str, float]:
    """Mean metrics over the validation items; writes one preview per case when asked."""
    per_case = []
    with torch.no_grad():
        for item in items:
            prediction = adapter.predict_case(item)
            per_case.append(case_metrics(prediction, item, adapter.info.num_classes))
            if previews:
                logger.preview(step, str(item.get("id", "case")), {
                    "LR input": item["lr_image"][0].numpy(),
                    "prediction": None if prediction.get("image") is None else prediction["image"][0],
                    "reference": item["hr_image"][0].numpy(),
                    "seg prediction": prediction.get("labels"),
                    "seg reference": item["hr_label"][0].numpy() if "hr_label" in item else None,
                })
    keys = sorted({k for metrics in per_case for k in metrics})
    return {k: float(np.nanmean([m.get(k, float("nan")) for m in per_case])) for k in keys}


def monitored(metrics: dict[str, float], monitor: str) -> tuple[str, float | None, bool]:
    """(name, value, higher_is_better) of the model-selection metric (``auto``: psnr, else dice)."""
    if monitor == "auto":
        monitor = "psnr" if "psnr" in metrics else "dice" if "dice" in metrics else ""
    maximise = not monitor.startswith("-")
    name = monitor.lstrip("-")
    value = metrics.get(name)
    if value is None or not math.isfinite(value):
        return name, None, maximise
    return name, value, maximise
