"""TASC-SwinMT training objective (``tasc-swinmt.txt`` section 3.3.1, ablations of sections 4.4.2 / 4.6).

* interpolation: ``alpha * L1 + (1 - alpha) * MSE`` with ``alpha = 0.4``;
* segmentation: BCE over the three frames' masks (the paper); for ``K > 1`` classes cross-entropy;
  Dice can be added (the paper deliberately leaves it out, so it is off by default);
* balancing: the paper's learnable dynamic weighting in the bounded form ``exp(-s) L + s``
  (:class:`~JointSRSegLib.losses.balancing.DynamicWeighting`; the printed ``- (theta_1 + theta_2)``
  is unbounded below), or fixed / Kendall / GradNorm / DWA for the ablation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.losses import DiceLoss

from .balancing import DWAWeighting, DynamicWeighting, FixedWeighting, GradNormWeighting, KendallWeighting

__all__ = ["BALANCINGS", "TASCSwinMTLoss", "hybrid_interpolation_loss", "segmentation_loss"]

BALANCINGS = ("dynamic", "fixed", "kendall", "gradnorm", "dwa")


def hybrid_interpolation_loss(pred: torch.Tensor, target: torch.Tensor, alpha: float = 0.4) -> torch.Tensor:
    """``L_interp = alpha * L1(X2_hat, X2) + (1 - alpha) * MSE(X2_hat, X2)`` (section 3.3.1)."""
    return alpha * F.l1_loss(pred, target) + (1.0 - alpha) * F.mse_loss(pred, target)


def _labels(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Targets as (B, 3, H, W) class indices or (B, 3, 1, H, W) binary masks matching ``logits``."""
    if target.ndim == logits.ndim - 1:
        target = target.unsqueeze(2)
    if target.shape[:2] != logits.shape[:2] or target.shape[-2:] != logits.shape[-2:] or target.shape[2] != 1:
        raise ValueError(f"segmentation target {tuple(target.shape)} does not match logits {tuple(logits.shape)}")
    return target


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, use_dice: bool = False) -> torch.Tensor:
    """Segmentation loss over the three frames.

    ``logits`` (B, 3, K, H, W). K = 1: ``target`` holds {0, 1} masks, BCE on ``sigmoid(logits)``
    (section 3.3.1, computed stably with logits). K > 1: ``target`` holds class indices, cross-entropy.
    ``use_dice`` adds MONAI's Dice loss (sigmoid resp. softmax) per frame.
    """
    target = _labels(target, logits)
    b, f, k, h, w = logits.shape
    flat_logits = logits.reshape(b * f, k, h, w)
    flat_target = target.reshape(b * f, 1, h, w)
    if k == 1:
        loss = F.binary_cross_entropy_with_logits(flat_logits, flat_target.to(flat_logits.dtype))
        dice = DiceLoss(sigmoid=True) if use_dice else None
    else:
        loss = F.cross_entropy(flat_logits, flat_target[:, 0].long())
        dice = DiceLoss(softmax=True, to_onehot_y=True) if use_dice else None
    if dice is not None:
        loss = loss + dice(flat_logits, flat_target)
    return loss


class TASCSwinMTLoss(nn.Module):
    """``L_total`` of section 3.3.1 with a selectable balancing (``balancing`` in :data:`BALANCINGS`).

    ``forward(outputs, targets)`` takes the network's dict and ``{"interp": (B, C, H, W), "seg": masks}``
    and returns ``(total, parts)`` with ``parts = {"interp", "seg", "total"}`` (detached).
    The balancing module's parameters (``dynamic``, ``kendall``, ``gradnorm``) must be given to the
    optimizer; for ``gradnorm`` call :meth:`gradnorm_step` before ``backward`` and
    ``self.balancer.renormalize()`` after ``optimizer.step()``; for ``dwa`` call ``self.balancer.end_epoch()``.
    """

    def __init__(
        self,
        alpha: float = 0.4,
        use_dice: bool = False,
        balancing: str = "dynamic",
        fixed_weights: Sequence[float] = (1.0, 1.0),
        gradnorm_alpha: float = 1.5,
        dwa_temperature: float = 2.0,
    ):
        super().__init__()
        if balancing not in BALANCINGS:
            raise ValueError(f"balancing must be one of {BALANCINGS}, got {balancing!r}")
        self.alpha = alpha
        self.use_dice = use_dice
        self.balancing = balancing
        balancers = {
            "dynamic": lambda: DynamicWeighting(2),
            "fixed": lambda: FixedWeighting(fixed_weights),
            "kendall": lambda: KendallWeighting(2),
            "gradnorm": lambda: GradNormWeighting(2, alpha=gradnorm_alpha),
            "dwa": lambda: DWAWeighting(2, temperature=dwa_temperature),
        }
        self.balancer = balancers[balancing]()
        self._last_losses: list[torch.Tensor] | None = None

    def task_losses(
        self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
    ) -> list[torch.Tensor]:
        """``[L_interp, L_seg]`` before balancing."""
        return [
            hybrid_interpolation_loss(outputs["interp"], targets["interp"], self.alpha),
            segmentation_loss(outputs["seg"], targets["seg"], self.use_dice),
        ]

    def forward(
        self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        losses = self.task_losses(outputs, targets)
        self._last_losses = losses
        total = self.balancer(losses)
        parts = {"interp": losses[0].detach(), "seg": losses[1].detach(), "total": total.detach()}
        return total, parts

    def gradnorm_step(self, shared_parameters: Sequence[torch.Tensor]) -> torch.Tensor:
        """GradNorm: set the weights' gradient from the last forward's task losses (before ``backward``)."""
        if not isinstance(self.balancer, GradNormWeighting):
            raise RuntimeError("gradnorm_step needs balancing='gradnorm'")
        if self._last_losses is None:
            raise RuntimeError("call the loss before gradnorm_step")
        return self.balancer.update_gradients(self._last_losses, shared_parameters)

    def task_weights(self) -> torch.Tensor:
        """Current multiplier of ``[L_interp, L_seg]`` (for logging)."""
        return self.balancer.task_weights()
