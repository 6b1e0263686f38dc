"""The SwinSR-UNETR joint loss (``shared/papers/swinsr-unetr.txt``, Sec. 3.2 "Loss Function").

    L_total = 1/(2 sigma_1^2) L_seg + 1/(2 sigma_2^2) L_sr + log sigma_1 + log sigma_2

with ``L_seg`` the Dice loss and ``L_sr`` the L1 loss.  Writing ``s_t = log sigma_t^2`` this is
exactly :class:`~JointSRSegLib.losses.balancing.KendallWeighting`
(``0.5 exp(-s_t) L_t + 0.5 s_t``), whose log-variances are learnable and clamped to ``[-10, 10]``.

Aleatoric option (not in the paper; Kendall & Gal, NeurIPS 2017): when the network also predicts a
per-voxel log-variance ``s`` of the SR output, the L1 term is replaced by the heteroscedastic
*Laplace* negative log-likelihood (the L1 counterpart of the Gaussian form), see
:func:`laplace_nll`.  That term already learns its own noise scale per voxel -- a homoscedastic
weight on top would be redundant and, because the NLL can be negative, would drive its
``s_sr`` to the clamp -- so it enters the total with unit weight and only the segmentation term
keeps its Kendall weight.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from monai.losses import DiceLoss

from .balancing import KendallWeighting

_SQRT2 = math.sqrt(2.0)


def laplace_nll(prediction: torch.Tensor, log_var: torch.Tensor, target: torch.Tensor,
                beta: float = 0.0) -> torch.Tensor:
    """Mean heteroscedastic Laplace NLL with ``log_var = log Var`` per voxel (constant dropped).

    A Laplace law with scale ``b`` has variance ``2 b^2``; with ``s' = log b = (s - log 2) / 2`` the
    NLL is Kendall & Gal's ``|y - y_hat| exp(-s') + s'``.  In terms of the log-variance ``s`` this is
    ``sqrt(2) |y - y_hat| exp(-s/2) + s/2`` (up to the constant ``-log(2)/2``), so ``exp(s/2)`` is a
    standard deviation in image units.

    ``beta > 0`` is the beta-NLL of Seitzer et al. (ICLR 2022): each voxel's NLL is multiplied by
    its *detached* standard deviation to the power ``beta``.  Why: the plain NLL scales the
    prediction's gradient by ``1/std``, so once the variance head is confident the SR term's
    gradients grow by orders of magnitude and drown every other task on the shared trunk (the
    segmentation then stops learning).  With ``beta = 1`` the prediction's gradient is exactly the
    L1 gradient (times sqrt 2) whatever the predicted variance; the variance's optimum is unchanged.
    """
    nll = _SQRT2 * (target - prediction).abs() * torch.exp(-0.5 * log_var) + 0.5 * log_var
    if beta:
        nll = nll * torch.exp(0.5 * beta * log_var.detach())
    return nll.mean()


def _as_label_map(seg_target: torch.Tensor) -> torch.Tensor:
    """Accept ``(B, X, Y, Z)`` or ``(B, 1, X, Y, Z)`` integer labels; return the latter."""
    if seg_target.ndim == 4:
        seg_target = seg_target.unsqueeze(1)
    if seg_target.ndim != 5 or seg_target.shape[1] != 1:
        raise ValueError(f"seg_target must be (B, X, Y, Z) or (B, 1, X, Y, Z) labels, got {tuple(seg_target.shape)}")
    return seg_target


class SwinSRUNETRLoss(nn.Module):
    """Dice (softmax, one-hot targets) + L1 (or Laplace NLL), balanced by Kendall uncertainty weighting."""

    def __init__(self, num_classes: int, aleatoric: bool = False, include_background: bool = True,
                 clamp: float = 10.0, nll_beta: float = 0.0):
        super().__init__()
        self.num_classes = num_classes
        self.aleatoric = aleatoric
        self.nll_beta = float(nll_beta)
        self.dice = DiceLoss(include_background=include_background, to_onehot_y=True, softmax=True)
        self.weighting = KendallWeighting(1 if aleatoric else 2, clamp=clamp)

    def forward(
        self, outputs: dict[str, torch.Tensor], sr_target: torch.Tensor, seg_target: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the total loss and its detached parts (for logging)."""
        logits, sr = outputs["seg"], outputs["sr"]
        if logits.shape[1] != self.num_classes:
            raise ValueError(f"expected {self.num_classes} segmentation channels, got {logits.shape[1]}")
        if sr.shape != sr_target.shape:
            raise ValueError(f"SR output {tuple(sr.shape)} and target {tuple(sr_target.shape)} differ")
        seg_loss = self.dice(logits, _as_label_map(seg_target))
        l1 = (sr - sr_target).abs().mean()
        parts = {"seg_dice": seg_loss.detach(), "sr_l1": l1.detach()}
        if self.aleatoric:
            if "sr_log_var" not in outputs:
                raise KeyError("aleatoric loss needs outputs['sr_log_var'] (build the model with aleatoric=True)")
            sr_loss = laplace_nll(sr, outputs["sr_log_var"], sr_target, self.nll_beta)
            total = self.weighting([seg_loss]) + sr_loss
            parts["sr_nll"] = sr_loss.detach()
            parts["weight_seg"] = self.weighting.task_weights()[0]
        else:
            total = self.weighting([seg_loss, l1])
            weights = self.weighting.task_weights()
            parts["weight_seg"], parts["weight_sr"] = weights[0], weights[1]
        parts["total"] = total.detach()
        return total, parts


__all__ = ["SwinSRUNETRLoss", "laplace_nll"]
