"""Optimizers and learning-rate schedules of one training stage.

Schedules are pure functions of the step within the stage (``LambdaLR``), so their state is just
that step and restores exactly; ``plateau`` is MONAI-free ``ReduceLROnPlateau`` on validation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch


def build_optimizer(params: Sequence[torch.nn.Parameter], optim: Mapping, lr: float,
                    weight_decay: float) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("this stage has no trainable parameters")
    name = optim["name"]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(optim["betas"]), weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=tuple(optim["betas"]), weight_decay=weight_decay)
    momentum = float(optim.get("momentum", 0.9))
    nesterov = bool(optim.get("nesterov", False))
    if nesterov and momentum <= 0:
        raise ValueError("optim.nesterov needs optim.momentum > 0")
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)


def lr_factor(step: int, total: int, schedule: Mapping, base_lr: float) -> float:
    """Multiplier of the base lr at ``step`` (0-based) of a stage of ``total`` steps."""
    warmup = int(schedule.get("warmup_steps", 0))
    if warmup and step < warmup:
        return (step + 1) / warmup
    name = schedule.get("name", "constant")
    if name == "cosine":
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        floor = float(schedule.get("min_lr", 0.0)) / base_lr if base_lr > 0 else 0.0
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if name == "poly":  # nnU-Net's schedule: (1 - t)^0.9 over the stage, 0 at its end
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return (1.0 - progress) ** float(schedule.get("power", 0.9))
    if name == "multistep":
        passed = sum(step >= int(m) for m in schedule.get("milestones", []))
        return float(schedule.get("gamma", 0.5)) ** passed
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: Mapping, total: int, base_lr: float):
    if schedule.get("name") == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max",
                                                          factor=float(schedule.get("gamma", 0.5)), patience=2)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, schedule, base_lr))
