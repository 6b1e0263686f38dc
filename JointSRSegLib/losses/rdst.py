"""RDST's two-stage SR objective (Sec. 3.2): pixel L1, then segmentation-U-Net perceptual fine-tuning.

* Stage 1: ``L_1`` (Eq. 6), the mean absolute error between SR and HR images.
* Stage 2: ``L_SR = alpha * L_1 + lambda * L_U`` (Eq. 12; paper: ``alpha = 1``, ``lambda = 10``),
  where ``L_U`` is one or a sum of

  - ``L_E(i)`` (Eq. 8): L1 between the ``i``-th encoder block outputs of a pre-trained, frozen
    segmentation U-Net for ``I_sr`` and ``I_hr`` (``"E1"`` .. ``"E5"``; ``L_E(1)`` is the paper's
    default, Sec. 4.3; our ``E1`` is BasicUNet's full-resolution double 3x3 conv, not the paper's
    ResNet stem, see :mod:`~JointSRSegLib.models.rdst_unet`),
  - ``L_D`` (Eq. 9): L1 between the decoder outputs (``"D"``),
  - ``L_HRL`` (Eqs. 10-11): ``1 - Dice`` between the U-Net's predictions on ``I_sr`` and on
    ``I_hr`` (``"HRL"``).

The U-Net (:class:`~JointSRSegLib.models.rdst_unet.SegmentationUNet`) is frozen for good:
``requires_grad_(False)`` and kept in eval mode even when the loss module is put in train mode, so
its batch-norm statistics never move; gradients flow *through* it to the SR image only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
from monai.losses import DiceLoss

from ..models.rdst_unet import ENCODER_KEYS
from .balancing import FixedWeighting

PERCEPTUAL_TERMS = (*ENCODER_KEYS, "D", "HRL")


def l1_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference (Eq. 6; also the feature-map distance of Eqs. 8-9)."""
    return (a - b).abs().mean()


def hard_label_dice_loss(sr_logits: torch.Tensor, hr_logits: torch.Tensor) -> torch.Tensor:
    """``L_HRL = 1 - Dice(U(I_sr), U(I_hr))`` (Eqs. 10-11).

    The HR prediction is turned into hard labels (arg-max, or ``> 0`` for a single sigmoid
    channel) as Eq. 11's binary ``Y``; the SR side stays soft (softmax/sigmoid) so the loss is
    differentiable.  Soft Dice over batch and pixels per class (MONAI ``DiceLoss``, smoothing
    ``1e-5``), averaged over classes including background.
    """
    hr_logits = hr_logits.detach()
    if sr_logits.shape[1] == 1:
        target = (hr_logits > 0).to(sr_logits.dtype)
        dice = DiceLoss(sigmoid=True, batch=True)
    else:
        target = hr_logits.argmax(dim=1, keepdim=True)
        dice = DiceLoss(softmax=True, to_onehot_y=True, batch=True)
    return dice(sr_logits, target)


def unet_pretraining_loss(out_channels: int) -> nn.Module:
    """The U-Net's own training loss (Eq. 7): Dice against integer label maps ``(B, 1, H, W)``."""
    if out_channels == 1:
        return DiceLoss(sigmoid=True, batch=True)
    return DiceLoss(softmax=True, to_onehot_y=True, batch=True)


class SegmentationPerceptualLoss(nn.Module):
    """``L_U``: the sum of the chosen segmentation-based perceptual terms (Sec. 3.2, Eqs. 8-10).

    ``unet``: a pre-trained ``models.rdst_unet.SegmentationUNet`` (or a module with its output dict).
    ``forward(sr, hr)`` returns ``{term: value for term in terms}`` plus ``"perceptual"`` (their
    sum).  The HR features are computed without autograd (they are constant targets).
    """

    def __init__(self, unet: nn.Module, terms: Sequence[str] = ("E1",)):
        super().__init__()
        terms = tuple(terms)
        unknown = [t for t in terms if t not in PERCEPTUAL_TERMS]
        if not terms or unknown:
            raise ValueError(f"terms must be a non-empty subset of {PERCEPTUAL_TERMS}, got {terms}")
        self.terms = terms
        self.unet = unet
        self._freeze()

    def _freeze(self) -> None:
        self.unet.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> SegmentationPerceptualLoss:
        """Keep the U-Net in eval mode whatever the loss module's mode (frozen BN statistics)."""
        super().train(mode)
        self._freeze()
        return self

    def requires_grad_(self, requires_grad: bool = True) -> SegmentationPerceptualLoss:
        """Never un-freeze the U-Net, even when a trainer toggles gradients on the whole loss."""
        super().requires_grad_(requires_grad)
        self._freeze()
        return self

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> dict[str, torch.Tensor]:
        # Re-assert the freeze: a parent module's train()/requires_grad_() reaches the U-Net directly.
        self._freeze()
        with torch.no_grad():
            target = self.unet(hr)
        pred = self.unet(sr)
        out: dict[str, torch.Tensor] = {}
        for term in self.terms:
            if term == "HRL":
                out[term] = hard_label_dice_loss(pred["seg"], target["seg"])
            else:
                out[term] = l1_distance(pred[term], target[term])
        out["perceptual"] = torch.stack([out[t] for t in self.terms]).sum()
        return out


class RDSTLoss(nn.Module):
    """``L_SR = alpha * L_1 + lambda * L_U`` (Eq. 12); without a perceptual loss, stage 1's ``alpha * L_1``.

    ``forward(prediction, hr)`` accepts the network's output dict (uses ``"sr"``) or the SR tensor
    and returns ``{"loss", "l1"}`` plus the perceptual terms when fine-tuning.
    """

    def __init__(
        self, perceptual: SegmentationPerceptualLoss | None = None, alpha: float = 1.0, lam: float = 10.0
    ):
        super().__init__()
        self.perceptual = perceptual
        self.weighting = FixedWeighting([alpha, lam] if perceptual is not None else [alpha])

    def forward(
        self, prediction: torch.Tensor | Mapping[str, torch.Tensor], hr: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        sr = prediction["sr"] if isinstance(prediction, Mapping) else prediction
        out = {"l1": l1_distance(sr, hr)}
        if self.perceptual is None:
            out["loss"] = self.weighting([out["l1"]])
            return out
        out.update(self.perceptual(sr, hr))
        out["loss"] = self.weighting([out["l1"], out["perceptual"]])
        return out


__all__ = [
    "PERCEPTUAL_TERMS",
    "RDSTLoss",
    "SegmentationPerceptualLoss",
    "hard_label_dice_loss",
    "l1_distance",
    "unet_pretraining_loss",
]
