"""TASC-SwinMT: slice pairs -> middle slice + masks of the three frames (Sun et al., Sec. 3.3).

A sample is an HR slab of ``R + 1`` slices: the gapped protocol keeps slices 0 and R (the pair),
the target is slice ``r`` (random in 1 ... R-1) with ``t = r / R`` -- exactly how the inference
engine calls the network for factor R -- and the labels of slices 0, r and R.
Loss: ``TASCSwinMTLoss`` with ``loss.balancing`` dynamic (paper), fixed, kendall, gradnorm or dwa.
GradNorm: ``autograd.grad`` of each task loss on the shared layer runs after the forward and
before the single ``backward`` (it runs no gradient-accumulation hooks, so DDP is not disturbed);
its ``L_grad``, which depends on the task weights only, is added to the backpropagated tensor, so
the weights' gradient is averaged by DDP with the others (and unscaled by AMP's GradScaler).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.transforms import Randomizable, Transform

from JointSRSegLib.inference.slicewise import pairwise_interpolation
from JointSRSegLib.losses.tasc_swinmt import TASCSwinMTLoss
from training.tasks.base import TaskAdapter, as_parts
from training.tasks.transforms import SelectKeysd


class RandMiddleSliced(Randomizable, Transform):
    """Pair ``(2C, X, Y)``, target slice ``(C, X, Y)``, frame labels ``(3, X, Y)`` and ``t``."""

    def __init__(self, factor: int):
        self.factor = factor
        self._r = 1

    def randomize(self, data=None) -> None:
        self._r = int(self.R.randint(1, self.factor))

    def __call__(self, data):
        self.randomize()
        d = dict(data)
        lr, hr, r = d["lr_image"], d["hr_image"], self._r
        d["pair"] = torch.cat([lr[..., 0], lr[..., -1]], dim=0).float()
        d["middle"] = hr[..., r].float()
        if "hr_label" in d:
            label = d["hr_label"][0]
            d["frames"] = torch.stack([label[..., 0], label[..., r], label[..., -1]]).long()
        d["t"] = torch.tensor(r / self.factor, dtype=torch.float32)
        return d


class Interp2DAdapter(TaskAdapter):
    """``tasc_swinmt`` with the gapped-slice (``interp``) protocol."""

    architectures = ("tasc_swinmt",)

    def setup(self) -> None:
        if self.protocol != "interp":
            raise ValueError(f"tasc_swinmt interpolates gapped slices: set data.protocol=interp, not {self.protocol!r}")
        self.modules["net"] = self.build_network(in_channels=self.info.in_channels,
                                                 seg_channels=self.info.num_classes)
        options = {k: v for k, v in self.loss_options.items()
                   if k in ("alpha", "use_dice", "balancing", "fixed_weights", "gradnorm_alpha", "dwa_temperature")}
        self.modules["criterion"] = TASCSwinMTLoss(**options)
        self._gradnorm_loss: torch.Tensor | None = None  # L_grad of the last training_loss (gradnorm)

    def train_transforms(self, stage: str) -> list:
        px, py, _ = self.cfg["data"]["patch_size"]
        return [*self.patch_transforms([px, py, self.factor + 1]), RandMiddleSliced(self.factor),
                SelectKeysd(["pair", "middle", "frames", "t"])]

    def training_loss(self, batch: dict, stage: str, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        outputs = self.forward_module("net")(batch["pair"], batch["t"])
        targets = {"interp": batch["middle"], "seg": batch["frames"]}
        criterion = self.modules["criterion"]
        total, parts = self.forward_module("criterion")(outputs, targets)
        weights = criterion.task_weights()
        parts = {**as_parts(parts), "weight_interp": float(weights[0]), "weight_seg": float(weights[1])}
        if criterion.balancing == "gradnorm":
            self._gradnorm_loss = criterion.balancer.gradnorm_loss(criterion.task_losses(outputs, targets),
                                                                   self.network.shared_parameters())
            parts["gradnorm_loss"] = float(self._gradnorm_loss.detach())
        return total, parts

    def before_backward(self, loss: torch.Tensor) -> torch.Tensor:
        """GradNorm: ``loss + L_grad``; ``L_grad`` reaches only the task weights (the total loss uses
        them detached, ``L_grad`` the detached gradient norms), so the network's gradient is unchanged."""
        extra, self._gradnorm_loss = self._gradnorm_loss, None
        return loss if extra is None else loss + extra

    def after_step(self) -> None:
        if self.modules["criterion"].balancing == "gradnorm":
            self.modules["criterion"].balancer.renormalize()

    def end_epoch(self) -> None:
        if self.modules["criterion"].balancing == "dwa":
            self.modules["criterion"].balancer.end_epoch()

    def predict_case(self, case: dict) -> dict[str, Any]:
        net = self.network.eval()
        image, probs = pairwise_interpolation(net, case["lr_image"].float(), self.factor, self.device, batch=4)
        labels = None if probs is None else probs.argmax(0).numpy().astype(np.uint8)
        return {"image": image.numpy(), "labels": labels}

    def export_metadata(self) -> dict[str, Any]:
        return {"tasks": ["interp", "seg"], "scale": [1, 1, self.factor], "protocol": "interp",
                "uncertainty": ["seg_entropy"]}
