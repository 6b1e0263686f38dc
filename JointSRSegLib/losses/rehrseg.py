"""REHRSeg losses (Song et al., sections 3.4-3.6, Eqs. 6-11).

Self-SR stage (Fig. 2a), :class:`REHRSegSRLoss`:
    image: ``L1`` (first phase), then the uncertainty-aware ``L_u^sr = L1 / U + log U`` (Eq. 6)
    for the final part of training only (section 4.2: last 20k of 150k iterations);
    annotation: cross entropy + Dice, never uncertainty-weighted (section 3.4).

Segmentation stage (Fig. 2b), :class:`REHRSegSegmentationLoss` (Eq. 11):
    ``L_u^seg`` uncertainty-weighted CE on the LR output (Eq. 7) + CE + Dice on the HR output
    + ``lambda * (L_corr + L_spatial)`` structural distillation (Eqs. 8-10), ``lambda = 1``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.losses import DiceCELoss

__all__ = [
    "UncertaintyAwareL1Loss",
    "REHRSegSRLoss",
    "normalize_uncertainty",
    "decimate_slices",
    "UncertaintyWeightedCELoss",
    "AffinityCorrelationLoss",
    "SpatialCosineLoss",
    "REHRSegSegmentationLoss",
]

_MIN_UNCERTAINTY = 1e-3  # keeps 1/U finite; U = sigmoid(.) can underflow in float32


class UncertaintyAwareL1Loss(nn.Module):
    """Eq. 6: ``mean(L1 / U + log U)``; the optimum ``U = L1`` makes ``U`` a map of reconstruction error.

    ``L1`` is the voxel-wise absolute error averaged over image channels; ``U`` is clamped to
    ``[1e-3, 1]`` (deviation: numerical guard, not in the paper).
    """

    def forward(
        self, prediction: torch.Tensor, target: torch.Tensor, uncertainty: torch.Tensor
    ) -> torch.Tensor:
        pixel = (prediction - target).abs().mean(dim=1, keepdim=True)
        u = uncertainty.clamp(_MIN_UNCERTAINTY, 1.0)
        return (pixel / u + torch.log(u)).mean()


class REHRSegSRLoss(nn.Module):
    """Self-SR training loss with the paper's schedule for the uncertainty term (section 4.2).

    Args:
        total_iterations: length of self-SR training (paper: 130k + 20k = 150k).
        uncertainty_iterations: final iterations that use Eq. 6 instead of plain L1 (paper: 20k).
        annotation_weight: weight of the annotation CE + Dice term (not given; 1).

    Call :meth:`set_iteration` each step (or set ``uncertainty_enabled``).  ``forward(outputs,
    target_image, target_label)`` takes the ``REHRSegSR`` output dict, the HR image and the HR
    integer labels ``(B, 1, ...)`` and returns a dict with ``"loss"``, ``"image"``, ``"annotation"``.
    """

    def __init__(
        self,
        total_iterations: int = 150_000,
        uncertainty_iterations: int = 20_000,
        annotation_weight: float = 1.0,
    ):
        super().__init__()
        self.uncertainty_start = int(total_iterations) - int(uncertainty_iterations)
        self.annotation_weight = float(annotation_weight)
        self.uncertainty_enabled = False
        self.uncertainty_l1 = UncertaintyAwareL1Loss()
        self.dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)

    def set_iteration(self, iteration: int) -> bool:
        """Switch Eq. 6 on for the final ``uncertainty_iterations``; returns whether it is on."""
        self.uncertainty_enabled = int(iteration) >= self.uncertainty_start
        return self.uncertainty_enabled

    def forward(
        self, outputs: dict[str, torch.Tensor], target_image: torch.Tensor, target_label: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        if self.uncertainty_enabled:
            image = self.uncertainty_l1(outputs["sr"], target_image, outputs["sr_uncertainty"])
        else:
            image = F.l1_loss(outputs["sr"], target_image)
        annotation = self.dice_ce(outputs["seg"], target_label)
        return {"loss": image + self.annotation_weight * annotation, "image": image, "annotation": annotation}


def normalize_uncertainty(uncertainty: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``norm(U)`` of Eq. 7: per-sample min-max scaling to ``[0, 1]`` (a constant map becomes 0)."""
    flat = uncertainty.flatten(1)
    low = flat.min(dim=1).values.view(-1, *([1] * (uncertainty.ndim - 1)))
    high = flat.max(dim=1).values.view(-1, *([1] * (uncertainty.ndim - 1)))
    return (uncertainty - low) / (high - low).clamp_min(eps)


def decimate_slices(volume: torch.Tensor, factor: int, axis: int, offset: int = 0) -> torch.Tensor:
    """``{.} down_z^r`` of Eqs. 1 and 7: every ``factor``-th slice along spatial ``axis`` from ``offset``.

    ``offset`` is the starting index used to draw the ``r`` pseudo-LR volumes of section 3.3; the
    uncertainty map must be decimated with the same offset as the image it weights.
    """
    if not 0 <= offset < factor:
        raise ValueError(f"offset {offset} must lie in [0, {factor})")
    index = torch.arange(offset, volume.shape[2 + axis], factor, device=volume.device)
    return volume.index_select(2 + axis, index)


class UncertaintyWeightedCELoss(nn.Module):
    """Eq. 7: voxel-wise cross entropy weighted by ``1 - norm(U)``, averaged over all voxels.

    ``uncertainty`` must already be on the logits' grid (use :func:`decimate_slices`); it is
    treated as a constant (no gradient flows into the teacher).
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor, uncertainty: torch.Tensor) -> torch.Tensor:
        if uncertainty.shape[2:] != logits.shape[2:]:
            raise ValueError(
                f"uncertainty grid {tuple(uncertainty.shape[2:])} differs from logits grid "
                f"{tuple(logits.shape[2:])}: decimate it first"
            )
        ce = F.cross_entropy(logits, target[:, 0].long(), reduction="none")
        weight = 1.0 - normalize_uncertainty(uncertainty.detach())[:, 0]
        return (ce * weight).mean()


def _pooled_nodes(features: torch.Tensor, granularity: Sequence[int]) -> torch.Tensor:
    """Eq. 8 ``F_p = avgPool(F)`` -> L2-normalised node vectors ``(B, C, n)``.

    Partial patches at odd borders are kept (``ceil_mode``); a patch never exceeds the map itself.
    """
    kernel = tuple(min(int(g), n) for g, n in zip(granularity, features.shape[2:]))
    pooled = F.avg_pool3d(features, kernel_size=kernel, stride=kernel, ceil_mode=True)
    return F.normalize(pooled.flatten(2), dim=1, eps=1e-8)


class AffinityCorrelationLoss(nn.Module):
    """Eqs. 8-9: squared difference of the cosine affinity graphs, ``(beta / DHW) sum_ij (a_sr - a_seg)^2``.

    ``beta / DHW`` is ``1 / n`` with ``n`` the number of graph nodes.  The ``n x n`` graphs are never
    formed: with unit node vectors ``S`` (teacher) and ``T`` (student),
    ``sum_ij (S^T S - T^T T)_ij^2 = |S S^T|^2 + |T T^T|^2 - 2 |S T^T|^2`` (Frobenius norms of
    channel Gram matrices), an exact identity evaluated in float64, so memory is ``O(C^2)`` instead
    of ``O(n^2)``.  ``granularity`` is the pooling patch; the paper's in-plane ``1 x 2 x 2`` for
    ``(D, H, W)`` is ``(2, 2, 1)`` in our ``(X, Y, Z)`` layout with thick slices along ``Z``.

    ``normalize_by="nodes"`` is Eq. 9 as printed (divide by ``n``: the loss grows with the patch);
    ``"pairs"`` divides by ``n^2`` like the structured-KD code REHRSeg's formula comes from, which
    keeps the term ``O(1)`` whatever the patch size (see docs/architectures/rehrseg.md).
    """

    def __init__(self, granularity: Sequence[int] = (2, 2, 1), normalize_by: str = "nodes"):
        super().__init__()
        if normalize_by not in ("nodes", "pairs"):
            raise ValueError(f"normalize_by must be 'nodes' (Eq. 9) or 'pairs', got {normalize_by!r}")
        self.granularity = tuple(int(g) for g in granularity)
        self.normalize_by = normalize_by

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        s = _pooled_nodes(teacher.detach(), self.granularity).double()
        t = _pooled_nodes(student, self.granularity).double()
        n = s.shape[-1]
        gram = lambda a, b: (a @ b.transpose(1, 2)).square().sum(dim=(1, 2))  # noqa: E731
        per_sample = (gram(s, s) + gram(t, t) - 2.0 * gram(s, t)).clamp_min(0.0)
        per_sample = per_sample / (n if self.normalize_by == "nodes" else n * n)
        return per_sample.mean().to(student.dtype)


class SpatialCosineLoss(nn.Module):
    """Eq. 10: ``1 - cos(h(F^seg), F^sr)`` per voxel, averaged; ``h`` is a 1x1x1 conv student adaptor.

    The adaptor (section 4.2: "a convolution layer", following GAN compression) lives in the loss
    because it is training-only; add this module's parameters to the optimiser.
    """

    def __init__(self, student_channels: int, teacher_channels: int):
        super().__init__()
        self.adaptor = nn.Conv3d(student_channels, teacher_channels, kernel_size=1)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return (1.0 - F.cosine_similarity(self.adaptor(student), teacher.detach(), dim=1, eps=1e-8)).mean()


class REHRSegSegmentationLoss(nn.Module):
    """Eq. 11: ``L_u^seg(Y_LR) + L_HR^seg(Y_HR) + lambda (L_corr + L_spatial)``.

    Args:
        student_channels: channels of the segmenter's ``"features"``.
        teacher_channels: channels of the self-SR ``"features"``.
        distillation_weight: ``lambda`` (paper: 1.0, Table 6).
        granularity, correlation_normalize_by: see :class:`AffinityCorrelationLoss`.

    ``forward(outputs, lr_label, hr_label, uncertainty=None, teacher_features=None)``: ``outputs``
    is the ``REHRSegSegmenter`` dict; labels are integer maps ``(B, 1, ...)`` on the LR and HR grids;
    ``uncertainty`` is the self-SR ``U`` already decimated to the LR grid (``None``: plain CE, the
    ablation without uncertainty guidance); ``teacher_features`` is ``F^sr``, resized trilinearly to
    ``F^seg``'s grid when they differ (``None``: no distillation).
    """

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        distillation_weight: float = 1.0,
        granularity: Sequence[int] = (2, 2, 1),
        correlation_normalize_by: str = "nodes",
    ):
        super().__init__()
        self.distillation_weight = float(distillation_weight)
        self.weighted_ce = UncertaintyWeightedCELoss()
        self.hr_dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)
        self.correlation = AffinityCorrelationLoss(granularity, correlation_normalize_by)
        self.spatial = SpatialCosineLoss(student_channels, teacher_channels)

    def forward(
        self,
        outputs: dict[str, torch.Tensor],
        lr_label: torch.Tensor,
        hr_label: torch.Tensor,
        uncertainty: torch.Tensor | None = None,
        teacher_features: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        logits_lr = outputs["seg_lr"]
        if uncertainty is None:
            lr = F.cross_entropy(logits_lr, lr_label[:, 0].long())
        else:
            lr = self.weighted_ce(logits_lr, lr_label, uncertainty)
        hr = self.hr_dice_ce(outputs["seg"], hr_label)
        terms = {"seg_lr": lr, "seg_hr": hr}
        total = lr + hr
        if teacher_features is not None:
            student = outputs["features"]
            if teacher_features.shape[2:] != student.shape[2:]:
                teacher_features = F.interpolate(
                    teacher_features, size=student.shape[2:], mode="trilinear", align_corners=False
                )
            terms["correlation"] = self.correlation(student, teacher_features)
            terms["spatial"] = self.spatial(student, teacher_features)
            total = total + self.distillation_weight * (terms["correlation"] + terms["spatial"])
        return {"loss": total, **terms}
